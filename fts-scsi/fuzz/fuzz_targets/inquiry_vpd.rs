//! Standard INQUIRY data and VPD pages 0x00, 0x80, 0x83, 0xB0.
#![no_main]

use fts_scsi::{
    BlockLimits, DeviceIdentification, StandardInquiry, SupportedVpdPages, UnitSerialNumber,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = StandardInquiry::parse(data) {
        assert!(i.vendor.len() <= 8 && i.product.len() <= 16 && i.revision.len() <= 4);
        let _ = i.is_disk();
    }
    if let Ok(p) = SupportedVpdPages::parse(data) {
        let _ = p.supports(0x83);
    }
    if let Ok(s) = UnitSerialNumber::parse(data) {
        assert!(s.serial.is_ascii());
    }
    if let Ok(d) = DeviceIdentification::parse(data) {
        for x in &d.designators {
            let _ = x.to_id_string();
        }
        if let Some(id) = d.preferred_id() {
            assert!(!id.is_empty());
        }
    }
    let _ = BlockLimits::parse(data);
});
