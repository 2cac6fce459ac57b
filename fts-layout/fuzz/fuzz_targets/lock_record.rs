//! `LockRecord::decode` on arbitrary bytes, raw and behind a valid header.
//! The body is `common::lock_record`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::lock_record(data);
});
