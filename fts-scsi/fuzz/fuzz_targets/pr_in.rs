//! PERSISTENT RESERVE IN responses: READ KEYS, READ RESERVATION, REPORT
//! CAPABILITIES, READ FULL STATUS.
//! The body is `common::pr_in`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::pr_in(data);
});
