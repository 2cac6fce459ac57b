//! The fuzz inputs kept in the repository, replayed through the fuzz
//! targets' own bodies (`fuzz/fuzz_targets/common.rs`) by plain `cargo test`:
//!
//! - `fuzz/regressions/<target>/<name>`: inputs that once crashed a target
//!   or exposed a bug, kept under a name that says what they were. Each must
//!   run without panicking and give the outcome recorded next to it in
//!   `<name>.expected` (the error the library now reports, say). After
//!   adding one, write its `.expected` with
//!   `FTS_FUZZ_BLESS=1 cargo test -p fts-scsi --test fuzz_regressions`
//!   and check what it says before committing it.
//! - `fuzz/seeds/<target>/`: the committed seed corpus (`cargo xtask fuzz
//!   --seed-corpus`: responses of a real tgtd, see `tests/fuzz_seeds.rs`).
//!   No seed may panic, and every target must have seeds that get past its
//!   first checks: otherwise the fuzzer starts from
//!   inputs the code rejects at once, which is what the seeds are for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

include!("../../test-support/fuzz_replay.rs");
