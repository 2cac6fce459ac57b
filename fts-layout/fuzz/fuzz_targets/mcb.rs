//! `Mcb::decode` on arbitrary bytes, raw and behind a valid header; and
//! `Geometry::from_mcb` on what decodes.
//! The body is `common::mcb`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::mcb(data);
});
