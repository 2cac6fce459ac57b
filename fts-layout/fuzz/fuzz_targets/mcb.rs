//! `Mcb::decode` on arbitrary bytes, raw and behind a valid header; and
//! `Geometry::from_mcb` on what decodes.
#![no_main]

#[path = "common.rs"]
mod common;

use fts_layout::{Geometry, Mcb, RecordKind, SdtEntry};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Mcb::decode(data);
    let rec = common::sealed(data, RecordKind::Mcb);
    if let Ok(m) = Mcb::decode(&rec) {
        assert_eq!(Mcb::decode(&m.encode()).as_ref(), Ok(&m));
        let _ = m.timeouts();
        // Device sizes from the bytes after the record.
        let sizes = data.get(512..).unwrap_or(&[]);
        let sdt: Vec<SdtEntry> = (0..m.blk5_secondary_device_entrynum as usize)
            .map(|i| {
                let b = sizes.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]);
                SdtEntry {
                    device_bytes: u64::from_le_bytes(b.try_into().unwrap_or_default()),
                    sec_dev_id: m.device_uuids.get(i).copied().unwrap_or_default(),
                    ..SdtEntry::default()
                }
            })
            .collect();
        if let Ok(g) = Geometry::from_mcb(&m, &sdt) {
            let _ = g.extents();
        }
    }
});
