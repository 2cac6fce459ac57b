//! PERSISTENT RESERVE IN responses: READ KEYS, READ RESERVATION, REPORT
//! CAPABILITIES, READ FULL STATUS.
#![no_main]

use fts_scsi::{ReadFullStatus, ReadKeys, ReadReservation, ReportCapabilities};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = ReadKeys::parse(data) {
        assert!(8 + 8 * k.keys.len() <= data.len());
    }
    if let Ok(r) = ReadReservation::parse(data) {
        if let Some(res) = r.reservation {
            let _ = res.pr_type();
            assert!(res.scope < 16 && res.type_code < 16);
        }
    }
    if let Ok(c) = ReportCapabilities::parse(data) {
        let types = c.supported_types();
        assert!(c.tmv || types.is_empty());
    }
    if let Ok(s) = ReadFullStatus::parse(data) {
        let total: usize = s
            .descriptors
            .iter()
            .map(|d| 24 + d.transport_id.len())
            .sum();
        assert!(8 + total <= data.len());
    }
});
