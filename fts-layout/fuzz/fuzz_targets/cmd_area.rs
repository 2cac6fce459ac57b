//! `CmdArea::decode` on arbitrary bytes, raw and behind a valid header.
//! The body is `common::cmd_area`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::cmd_area(data);
});
