//! Shared by the fuzz targets (included with `#[path]`).
#![allow(dead_code)]

use fts_layout::{crc32c_record, RecordKind, CRC_OFFSET, FORMAT_VERSION};

/// `data` turned into a `kind` record with a valid common header and CRC
/// (padded with zeros), so that the fuzzer reaches the field checks the
/// CRC otherwise hides. For the MCB the header's layout id is taken from
/// the layout uuid, as `Mcb::decode` requires.
pub fn sealed(data: &[u8], kind: RecordKind) -> Vec<u8> {
    let size = kind.size();
    let mut rec = vec![0u8; size];
    let n = data.len().min(size);
    rec[..n].copy_from_slice(&data[..n]);
    rec[..4].copy_from_slice(&kind.magic());
    rec[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    rec[6..8].copy_from_slice(&(size as u16).to_le_bytes());
    if kind == RecordKind::Mcb {
        rec[8..12].fill(0);
        let id: [u8; 8] = rec[32..40].try_into().unwrap_or_default();
        rec[16..24].copy_from_slice(&id);
    }
    rec[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
    let crc = crc32c_record(&rec, CRC_OFFSET);
    rec[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// Decoding `data` raw and sealed never panics; whatever decodes
/// re-encodes to a record that decodes to the same value.
#[macro_export]
macro_rules! round_trip_target {
    ($ty:ty, $kind:expr) => {
        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            use fts_layout::{Expect, Stamp};
            let _ = <$ty>::decode(data, Expect::any());
            let rec = common::sealed(data, $kind);
            if let Ok(v) = <$ty>::decode(&rec, Expect::any()) {
                let stamp = Stamp::new(
                    u64::from_le_bytes(rec[16..24].try_into().unwrap()),
                    u32::from_le_bytes(rec[8..12].try_into().unwrap()),
                );
                let again = <$ty>::decode(&v.encode(stamp), Expect::stamp(stamp));
                assert_eq!(again.as_ref(), Ok(&v));
            }
        });
    };
}
