//! `check::check_master` / `check_secondary` on a raw control area (first
//! byte even) or on a real formatted one corrupted by the input (odd).
//! The body is `common::check_master`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::check_master(data);
});
