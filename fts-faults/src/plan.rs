//! What to inject and when: [`FaultPlan`], [`Rule`], [`Fault`], and the
//! textual plan syntax.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// fts's logical block (`fts_layout::LB`): the unit of `lbs=` ranges.
pub const FTS_LB: u64 = 4096;

/// A device operation, as rules select them and the log records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`BlockDevice::read_at`](fts_blockdev::BlockDevice::read_at).
    Read,
    /// [`BlockDevice::write_at`](fts_blockdev::BlockDevice::write_at).
    Write,
    /// [`BlockDevice::flush`](fts_blockdev::BlockDevice::flush).
    Flush,
}

impl Op {
    /// `read`, `write` or `flush`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a torn write ends once its prefix has reached the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TornEnd {
    /// The write fails (EIO): the caller knows, as after a path failure.
    #[default]
    Error,
    /// The write fails and the device is dead from then on for every
    /// handle of the wrapper, as if the host had crashed mid-write.
    Crash,
    /// The write reports success: a write the device acknowledged but only
    /// partly kept (power loss with a volatile cache, a misbehaving
    /// target). Only readers' checks can notice.
    Silent,
}

impl TornEnd {
    fn as_str(self) -> &'static str {
        match self {
            TornEnd::Error => "error",
            TornEnd::Crash => "crash",
            TornEnd::Silent => "silent",
        }
    }
}

impl fmt::Display for TornEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule does to an operation it fires on.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The operation fails with this `errno` (an
    /// [`fts_blockdev::Error::Io`], or [`fts_blockdev::Error::Flush`] for a
    /// flush) and does nothing. [`Fault::eio`] is the usual one.
    Fail {
        /// The OS error number, e.g. `libc::EIO`.
        errno: i32,
    },
    /// The operation is delayed this long before it runs (a slow or hung
    /// path). Several latency rules firing on one operation add up.
    Latency(Duration),
    /// Writes only: of a write of `n > 1` device blocks, only the first
    /// `keep` blocks reach the device (`None`: a seeded random number in
    /// `0..n`; a fixed `keep` is capped at `n - 1`), then it ends as
    /// `then` says. Single-block writes are atomic and never torn: the rule
    /// does not see them.
    Torn {
        /// Blocks of the write that reach the device.
        keep: Option<u32>,
        /// How the write ends.
        then: TornEnd,
    },
    /// Writes and flushes only: reported as done, nothing reaches the
    /// device (a lost write, a flush that was not).
    Drop,
    /// Reads and writes only: `bits` seeded random bits of the operation's
    /// data (within the rule's range, if it has one) are inverted: in the
    /// caller's buffer after a read, in the data that reaches the device
    /// for a write (the caller's buffer is left alone).
    Flip {
        /// How many bits to flip (distinct positions where the data allows).
        bits: u32,
    },
    /// The operation fails (EIO) and the device is dead from then on for
    /// every handle of the wrapper (every later operation fails with EIO)
    /// until [`Faults::revive`](crate::Faults::revive).
    Crash,
}

impl Fault {
    /// [`Fault::Fail`] with `EIO`.
    pub fn eio() -> Fault {
        Fault::Fail { errno: libc::EIO }
    }

    /// Whether this fault can act on `op` (a rule only counts operations
    /// its fault can act on).
    pub fn applies_to(&self, op: Op) -> bool {
        match self {
            Fault::Fail { .. } | Fault::Latency(_) | Fault::Crash => true,
            Fault::Torn { .. } => op == Op::Write,
            Fault::Drop => op != Op::Read,
            Fault::Flip { .. } => op != Op::Flush,
        }
    }

    /// Whether the fault decides the outcome of the operation (only one
    /// such fault acts on an operation: the first rule's).
    pub(crate) fn is_outcome(&self) -> bool {
        matches!(
            self,
            Fault::Fail { .. } | Fault::Torn { .. } | Fault::Drop | Fault::Crash
        )
    }
}

/// One line of a plan: which operations, when, and what to do to them.
///
/// An operation *matches* a rule when its kind is the rule's [`op`](Rule::op)
/// (or any kind the fault can act on, for `None`), it touches a byte of the
/// rule's [`range`](Rule::range) (if any), and the wrapper has existed for
/// at least [`after`](Rule::after). Matching operations are counted, over
/// every handle of the wrapper; the first [`skip`](Rule::skip) of them pass
/// untouched, then each fires with [`probability`](Rule::probability) (a
/// seeded draw), at most [`times`](Rule::times) times.
///
/// Rules are looked at in plan order, and every matching rule counts the
/// operation. Latencies and flips of every rule that fires apply; of the
/// faults that decide the outcome (fail, torn, drop, crash) only the first
/// that fires acts; later ones do not fire (and do not count as fired).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The operation kind, or `None` for every kind the fault acts on.
    pub op: Option<Op>,
    /// Byte range on the device the operation must touch (flushes have no
    /// range and never match a rule that has one).
    pub range: Option<Range<u64>>,
    /// Time since the wrapper was created before the rule matches anything.
    pub after: Option<Duration>,
    /// Matching operations that pass untouched before the rule may fire.
    pub skip: u64,
    /// Most times the rule fires (`None`: no limit).
    pub times: Option<u64>,
    /// Chance, from 0 to 1, that a matching operation past `skip` fires.
    pub probability: f64,
    /// What it does.
    pub fault: Fault,
}

impl Rule {
    /// A rule that fires `fault` on every operation it can act on.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            op: None,
            range: None,
            after: None,
            skip: 0,
            times: None,
            probability: 1.0,
            fault,
        }
    }

    /// Only operations of kind `op`.
    pub fn on(mut self, op: Op) -> Rule {
        self.op = Some(op);
        self
    }

    /// Only reads.
    pub fn reads(self) -> Rule {
        self.on(Op::Read)
    }

    /// Only writes.
    pub fn writes(self) -> Rule {
        self.on(Op::Write)
    }

    /// Only operations touching device bytes `range`.
    pub fn bytes(mut self, range: Range<u64>) -> Rule {
        self.range = Some(range);
        self
    }

    /// Only operations touching fts logical blocks ([`FTS_LB`] bytes)
    /// `range`.
    pub fn lbs(self, range: Range<u64>) -> Rule {
        self.bytes(range.start.saturating_mul(FTS_LB)..range.end.saturating_mul(FTS_LB))
    }

    /// Only once the wrapper has existed for `delay`.
    pub fn after(mut self, delay: Duration) -> Rule {
        self.after = Some(delay);
        self
    }

    /// Only the `n`-th matching operation (1-based): `skip(n - 1).times(1)`.
    pub fn nth(self, n: u64) -> Rule {
        self.skip(n.saturating_sub(1)).times(1)
    }

    /// Lets the first `n` matching operations pass.
    pub fn skip(mut self, n: u64) -> Rule {
        self.skip = n;
        self
    }

    /// Fires at most `n` times.
    pub fn times(mut self, n: u64) -> Rule {
        self.times = Some(n);
        self
    }

    /// Fires with probability `p` (0 to 1) on each matching operation.
    pub fn probability(mut self, p: f64) -> Rule {
        self.probability = p;
        self
    }

    pub(crate) fn validate(&self, index: usize) -> Result<(), Error> {
        let invalid = |reason: String| {
            Err(Error::Invalid {
                rule: index,
                reason,
            })
        };
        if !(0.0..=1.0).contains(&self.probability) {
            return invalid(format!(
                "probability {} is not between 0 and 1",
                self.probability
            ));
        }
        if let Some(op) = self.op {
            if !self.fault.applies_to(op) {
                return invalid(format!("{} cannot act on a {op}", self.fault));
            }
            if op == Op::Flush && self.range.is_some() {
                return invalid("a flush has no byte range".into());
            }
        }
        if let Some(r) = &self.range {
            if r.start >= r.end {
                return invalid(format!("empty byte range {}..{}", r.start, r.end));
            }
        }
        if self.times == Some(0) {
            return invalid("times=0 never fires".into());
        }
        match self.fault {
            Fault::Flip { bits: 0 } => invalid("flipping 0 bits does nothing".into()),
            Fault::Fail { errno } if errno <= 0 => {
                invalid(format!("errno {errno} is not an error number"))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn matches(&self, op: Op, offset: u64, len: usize, elapsed: Duration) -> bool {
        if !self.fault.applies_to(op) || self.op.is_some_and(|o| o != op) {
            return false;
        }
        if self.after.is_some_and(|a| elapsed < a) {
            return false;
        }
        match &self.range {
            None => true,
            Some(r) => {
                op != Op::Flush && offset < r.end && offset.saturating_add(len as u64) > r.start
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Fail { errno } if *errno == libc::EIO => f.write_str("eio"),
            Fault::Fail { errno } => write!(f, "errno={errno}"),
            Fault::Latency(d) => write!(f, "latency={}", fmt_duration(*d)),
            Fault::Torn { keep, then } => {
                f.write_str("torn")?;
                if let Some(k) = keep {
                    write!(f, " keep={k}")?;
                }
                write!(f, " then={then}")
            }
            Fault::Drop => f.write_str("drop"),
            Fault::Flip { bits } => write!(f, "flip bits={bits}"),
            Fault::Crash => f.write_str("crash"),
        }
    }
}

impl fmt::Display for Rule {
    /// The rule in the textual plan syntax (parses back to an equal rule).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fault)?;
        if let Some(op) = self.op {
            write!(f, " op={op}")?;
        }
        if let Some(r) = &self.range {
            write!(f, " bytes={}..{}", r.start, r.end)?;
        }
        if let Some(a) = self.after {
            write!(f, " after={}", fmt_duration(a))?;
        }
        if self.skip > 0 {
            write!(f, " skip={}", self.skip)?;
        }
        if let Some(t) = self.times {
            write!(f, " times={t}")?;
        }
        if self.probability < 1.0 {
            write!(f, " p={}", self.probability)?;
        }
        Ok(())
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else if d.as_nanos() % 1_000 == 0 {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Everything a [`FaultDevice`](crate::FaultDevice) does: a seed, rules and
/// an optional bandwidth cap.
///
/// Built in code with [`Rule`]'s builders or parsed from text (for an
/// environment variable or a command-line hook). The text is items
/// separated by `;` (blank items are ignored):
///
/// - `seed=N`: the seed of the random draws (default 0);
/// - `bandwidth=SIZE` (`/s` optional): the device moves at most SIZE bytes
///   per second, reads and writes together, over all handles;
/// - `log=PATH`: also append every injection, one line each, to PATH (a
///   child process's faults can then be checked by its parent);
/// - a rule: a fault, then `key=value` selectors, separated by spaces.
///
/// Faults: `eio`, `errno=N`, `latency=DUR`, `torn [keep=K] [then=error|crash|silent]`,
/// `drop`, `flip [bits=N]` (default 1), `crash`. Selectors: `op=read|write|flush|any`,
/// `bytes=A..B`, `lbs=A..B` ([`FTS_LB`]-byte blocks), `after=DUR`,
/// `nth=N`, `skip=N`, `times=N`, `p=F`. Numbers are decimal or `0x` hex;
/// SIZE takes K/M/G suffixes (powers of 1024, `iB` optional); DUR is a
/// number with `ns`, `us`, `ms` or `s`.
///
/// ```
/// use fts_faults::{Fault, FaultPlan, Op, Rule};
///
/// let plan: FaultPlan = "seed=7; flip bits=2 op=read lbs=8..11 p=0.5; torn keep=1 then=silent nth=3"
///     .parse()?;
/// assert_eq!(plan.seed, 7);
/// assert_eq!(plan.rules[0], Rule::new(Fault::Flip { bits: 2 }).reads().lbs(8..11).probability(0.5));
/// assert_eq!(plan.rules[1].skip, 2);
/// # Ok::<(), fts_faults::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    /// Seed of the random draws (probabilities, torn lengths, bit positions).
    pub seed: u64,
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// Bytes per second the device moves at most (`None`: no cap).
    pub bandwidth: Option<u64>,
    /// A file to append each injection to, one line each.
    pub log_file: Option<PathBuf>,
}

impl FaultPlan {
    /// An empty plan with `seed`: injects nothing until rules are added.
    pub fn new(seed: u64) -> FaultPlan {
        FaultPlan {
            seed,
            ..FaultPlan::default()
        }
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: Rule) -> FaultPlan {
        self.rules.push(rule);
        self
    }

    /// Caps the device at `bytes_per_second`.
    pub fn bandwidth(mut self, bytes_per_second: u64) -> FaultPlan {
        self.bandwidth = Some(bytes_per_second);
        self
    }

    /// Appends each injection to `path` as well.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> FaultPlan {
        self.log_file = Some(path.into());
        self
    }

    /// Checks every rule and setting.
    pub fn validate(&self) -> Result<(), Error> {
        if self.bandwidth == Some(0) {
            return Err(Error::Invalid {
                rule: usize::MAX,
                reason: "a bandwidth of 0 bytes/s never completes anything".into(),
            });
        }
        self.rules
            .iter()
            .enumerate()
            .try_for_each(|(i, r)| r.validate(i))
    }
}

impl FromStr for FaultPlan {
    type Err = Error;

    fn from_str(text: &str) -> Result<FaultPlan, Error> {
        let mut plan = FaultPlan::default();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let syntax = |reason: String| Error::Syntax {
                item: item.to_owned(),
                reason,
            };
            if let Some(v) = item.strip_prefix("seed=") {
                plan.seed = parse_u64(v).map_err(syntax)?;
            } else if let Some(v) = item.strip_prefix("bandwidth=") {
                let v = v.strip_suffix("/s").unwrap_or(v);
                plan.bandwidth = Some(parse_size(v).map_err(syntax)?);
            } else if let Some(v) = item.strip_prefix("log=") {
                plan.log_file = Some(PathBuf::from(v));
            } else {
                plan.rules.push(parse_rule(item).map_err(syntax)?);
            }
        }
        plan.validate()?;
        Ok(plan)
    }
}

impl fmt::Display for FaultPlan {
    /// The plan in the textual syntax (parses back to an equal plan).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed={}", self.seed)?;
        if let Some(b) = self.bandwidth {
            write!(f, "; bandwidth={b}")?;
        }
        if let Some(p) = &self.log_file {
            write!(f, "; log={}", p.display())?;
        }
        for r in &self.rules {
            write!(f, "; {r}")?;
        }
        Ok(())
    }
}

fn parse_rule(item: &str) -> Result<Rule, String> {
    let mut words = item.split_whitespace();
    let head = words.next().ok_or("empty rule")?;
    let (name, value) = match head.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (head, None),
    };
    let mut fault = match (name, value) {
        ("eio", None) => Fault::eio(),
        ("errno", Some(v)) => Fault::Fail {
            errno: i32::try_from(parse_u64(v)?).map_err(|_| format!("errno {v} too large"))?,
        },
        ("latency", Some(v)) => Fault::Latency(parse_duration(v)?),
        ("torn", None) => Fault::Torn {
            keep: None,
            then: TornEnd::Error,
        },
        ("drop", None) => Fault::Drop,
        ("flip", None) => Fault::Flip { bits: 1 },
        ("crash", None) => Fault::Crash,
        _ => {
            return Err(format!(
                "{head:?} is not a fault: expected eio, errno=N, latency=DUR, torn, drop, flip or crash"
            ))
        }
    };
    let mut rule = Rule::new(Fault::Drop);
    for word in words {
        let (key, v) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value"))?;
        match (key, &mut fault) {
            ("keep", Fault::Torn { keep, .. }) => {
                *keep =
                    Some(u32::try_from(parse_u64(v)?).map_err(|_| format!("keep={v} too large"))?)
            }
            ("then", Fault::Torn { then, .. }) => {
                *then = match v {
                    "error" => TornEnd::Error,
                    "crash" => TornEnd::Crash,
                    "silent" => TornEnd::Silent,
                    _ => return Err(format!("then={v}: expected error, crash or silent")),
                }
            }
            ("bits", Fault::Flip { bits }) => {
                *bits = u32::try_from(parse_u64(v)?).map_err(|_| format!("bits={v} too large"))?
            }
            ("op", _) => {
                rule.op = match v {
                    "read" => Some(Op::Read),
                    "write" => Some(Op::Write),
                    "flush" => Some(Op::Flush),
                    "any" => None,
                    _ => return Err(format!("op={v}: expected read, write, flush or any")),
                }
            }
            ("bytes", _) => rule = rule.bytes(parse_range(v)?),
            ("lbs", _) => rule = rule.lbs(parse_range(v)?),
            ("after", _) => rule.after = Some(parse_duration(v)?),
            ("nth", _) => {
                let n = parse_u64(v)?;
                if n == 0 {
                    return Err("nth counts from 1".into());
                }
                rule = rule.nth(n);
            }
            ("skip", _) => rule.skip = parse_u64(v)?,
            ("times", _) => rule.times = Some(parse_u64(v)?),
            ("p", _) => {
                rule.probability = v
                    .parse::<f64>()
                    .map_err(|_| format!("p={v} is not a number"))?
            }
            _ => return Err(format!("unknown setting {key:?} for {name}")),
        }
    }
    rule.fault = fault;
    Ok(rule)
}

fn parse_u64(v: &str) -> Result<u64, String> {
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse::<u64>(),
    };
    parsed.map_err(|_| format!("{v:?} is not a number"))
}

fn parse_range(v: &str) -> Result<Range<u64>, String> {
    let (a, b) = v
        .split_once("..")
        .ok_or_else(|| format!("{v:?} is not a range A..B"))?;
    Ok(parse_u64(a)?..parse_u64(b)?)
}

fn parse_size(v: &str) -> Result<u64, String> {
    let t = v
        .strip_suffix("iB")
        .or_else(|| v.strip_suffix('B'))
        .unwrap_or(v);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{v:?}: unknown size suffix {c:?} (K, M, G, T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    parse_u64(num)?
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{v:?} is too large"))
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("{v:?} has no unit (ns, us, ms, s)"))?;
    let (num, unit) = v.split_at(split);
    if let Ok(n) = num.parse::<u64>() {
        let exact = match unit {
            "ns" => Some(Duration::from_nanos(n)),
            "us" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            _ => None,
        };
        if let Some(d) = exact {
            return Ok(d);
        }
    }
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?}: {num:?} is not a number"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return Err(format!("{v:?}: unknown unit {unit:?} (ns, us, ms, s)")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{v:?}: {e}"))
}
