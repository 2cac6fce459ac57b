//! Sense data decoder (fixed and descriptor formats).
#![no_main]

use fts_scsi::{CommandResult, ScsiStatus, Sense};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sense) = Sense::parse(data) else {
        return;
    };
    assert!((0x70..=0x73).contains(&sense.response_code));
    assert_eq!(sense.descriptor_format, sense.response_code >= 0x72);
    let text = sense.to_string();
    assert!(text.contains(sense.key.name()));
    if let Some(sks) = sense.sense_key_specific {
        let _ = (sks.field_pointer(), sks.progress());
    }
    let r = CommandResult {
        status: ScsiStatus::CheckCondition,
        sense: Some(sense),
        residual: 0,
    };
    let unit_attention = r.is_unit_attention();
    let err = r.into_result().err();
    assert_eq!(
        err.as_ref().is_some_and(|e| e.is_unit_attention()),
        unit_attention
    );
    let _ = err.map(|e| e.to_string());
});
