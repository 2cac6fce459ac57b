//! Shared by the fts-ring test binaries.

use std::sync::atomic::{AtomicU64, Ordering};

/// A generation no earlier connection of this test binary used, counting
/// up from `base`: a real claim always bumps the slot's generation, and a
/// connection reusing the last one's generation on the same device could
/// take its stale acks and segments for its own.
pub fn fresh_gen(base: u64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    base + NEXT.fetch_add(1, Ordering::SeqCst)
}
