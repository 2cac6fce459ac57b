//! Bounded exponential backoff with jitter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bounded exponential backoff with jitter, for polling a shared resource
/// until a deadline.
///
/// The nominal delay starts at `initial` and doubles after every
/// [`wait`](Self::wait) up to `cap`; each actual sleep is drawn uniformly
/// from `[nominal / 2, nominal]` ("equal jitter"), so that processes that
/// collided once do not keep colliding in lock step. Sleeps never go past
/// the deadline, so the total time spent is bounded by the timeout given to
/// [`new`](Self::new) (plus one attempt).
///
/// Typical use, with one last attempt exactly at the deadline:
///
/// ```
/// use std::time::Duration;
/// use fts_lock::Backoff;
///
/// let mut tries = 0;
/// let mut backoff = Backoff::new(Duration::from_millis(5));
/// let got_it = loop {
///     tries += 1;
///     if tries == 3 {
///         break true; // the resource became free
///     }
///     if !backoff.wait() {
///         break false; // timed out; backoff.elapsed() says how long we waited
///     }
/// };
/// assert!(got_it);
/// ```
///
/// Polling is not fair: a waiter that sleeps may miss short windows in
/// which the resource is free. That suits locks that are held briefly and
/// taken rarely, like the Process Id Table lock.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Instant,
    /// `None` if the timeout is too large to represent: wait forever.
    deadline: Option<Instant>,
    nominal: Duration,
    cap: Duration,
    waits: u32,
    rng: u64,
}

impl Backoff {
    /// Default first nominal delay: 50 µs.
    pub const DEFAULT_INITIAL: Duration = Duration::from_micros(50);
    /// Default largest nominal delay: 20 ms.
    pub const DEFAULT_CAP: Duration = Duration::from_millis(20);

    /// A backoff that gives up `timeout` from now, with the default delays
    /// ([`DEFAULT_INITIAL`](Self::DEFAULT_INITIAL) doubling up to
    /// [`DEFAULT_CAP`](Self::DEFAULT_CAP)).
    pub fn new(timeout: Duration) -> Self {
        Self::with_delays(timeout, Self::DEFAULT_INITIAL, Self::DEFAULT_CAP)
    }

    /// A backoff that gives up `timeout` from now, with a first nominal
    /// delay of `initial` (at least 1 µs) doubling up to `cap` (at least
    /// `initial`).
    pub fn with_delays(timeout: Duration, initial: Duration, cap: Duration) -> Self {
        let start = Instant::now();
        let initial = initial.max(Duration::from_micros(1));
        Backoff {
            start,
            deadline: start.checked_add(timeout),
            nominal: initial,
            cap: cap.max(initial),
            waits: 0,
            rng: seed(),
        }
    }

    /// The next delay to sleep, with jitter, and advances the nominal delay.
    /// Does not look at the deadline (see [`wait`](Self::wait)).
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = nominal.saturating_mul(2).min(self.cap);
        let nanos = u64::try_from(nominal.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let jitter = self.next_random() % (nanos - half + 1);
        Duration::from_nanos(half + jitter)
    }

    /// Sleeps for the next delay, cut short at the deadline.
    ///
    /// Returns `false`, without sleeping, if the deadline has already
    /// passed: the caller should give up. Returns `true` after sleeping:
    /// the caller should try again (the attempt right after the sleep that
    /// reaches the deadline is the last).
    pub fn wait(&mut self) -> bool {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return false;
        }
        let delay = self.next_delay().min(remaining);
        std::thread::sleep(delay);
        self.waits = self.waits.saturating_add(1);
        true
    }

    /// Time since the backoff was created.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Time left until the deadline (zero once it has passed;
    /// [`Duration::MAX`] if the timeout was too large to represent).
    pub fn remaining(&self) -> Duration {
        match self.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        }
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// How many times [`wait`](Self::wait) has slept.
    pub fn waits(&self) -> u32 {
        self.waits
    }

    /// xorshift64*: plenty for jitter.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A seed that differs between processes (std's randomly keyed hasher),
/// threads and calls; never zero (xorshift would stay at zero).
fn seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let mut b = Backoff::with_delays(
            Duration::from_secs(1),
            Duration::from_micros(100),
            Duration::from_micros(1000),
        );
        let nominal = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for n in nominal {
            let d = b.next_delay();
            let n = Duration::from_micros(n);
            assert!(d >= n / 2 && d <= n, "{d:?} not in [{:?}, {n:?}]", n / 2);
        }
    }

    #[test]
    fn jitter_varies() {
        let mut b = Backoff::with_delays(
            Duration::from_secs(1),
            Duration::from_millis(10),
            Duration::from_millis(10),
        );
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn wait_stops_at_the_deadline() {
        let timeout = Duration::from_millis(30);
        let mut b = Backoff::new(timeout);
        let mut waits = 0;
        while b.wait() {
            waits += 1;
        }
        assert!(b.is_expired());
        assert!(b.elapsed() >= timeout);
        assert!(b.elapsed() < timeout + Duration::from_millis(500));
        assert_eq!(b.waits(), waits);
        assert!(waits >= 3, "only {waits} waits");
    }

    #[test]
    fn zero_timeout_never_sleeps() {
        let mut b = Backoff::new(Duration::ZERO);
        assert!(!b.wait());
        assert_eq!(b.waits(), 0);
    }

    #[test]
    fn huge_timeout_does_not_overflow() {
        let mut b = Backoff::with_delays(Duration::MAX, Duration::MAX, Duration::MAX);
        assert_eq!(b.remaining(), Duration::MAX);
        assert!(!b.is_expired());
        let d = b.next_delay();
        assert!(d > Duration::from_secs(1));
    }
}
