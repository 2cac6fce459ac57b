//! Sense data decoder (fixed and descriptor formats).
//! The body is `common::sense`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::sense(data);
});
