//! Standard INQUIRY data and VPD pages 0x00, 0x80, 0x83, 0xB0.
//! The body is `common::inquiry_vpd`, which `tests/fuzz_regressions.rs` replays.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::inquiry_vpd(data);
});
