//! MODE SENSE(6)/(10) responses and the Caching mode page; a decoded page
//! must survive encode/decode unchanged.
//! The body is `common::mode_sense`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::mode_sense(data);
});
