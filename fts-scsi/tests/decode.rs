//! Decoders against hand-built responses.

use fts_scsi::inquiry::{VPD_BLOCK_LIMITS, VPD_DEVICE_IDENTIFICATION};
use fts_scsi::{
    apply_changeable, asc_name, Association, BlockLimits, CachingPage, CodeSet, CommandResult,
    DesignatorType, DeviceIdentification, Error, ModeSense, PrType, ReadCapacity16, ReadFullStatus,
    ReadKeys, ReadReservation, ReportCapabilities, ScsiStatus, Sense, SenseKey, StandardInquiry,
    SupportedVpdPages, UnitSerialNumber,
};
use rstest::rstest;

// ---------------------------------------------------------------- sense

/// Fixed format, current, UNIT ATTENTION 2A/03, 18 bytes.
fn fixed_ua_preempted() -> Vec<u8> {
    vec![
        0x70, 0x00, 0x06, 0, 0, 0, 0, 0x0A, // key 6, additional length 10
        0, 0, 0, 0, // command-specific
        0x2A, 0x03, 0x00, 0, 0, 0,
    ]
}

#[test]
fn sense_fixed_unit_attention() {
    let s = Sense::parse(&fixed_ua_preempted()).unwrap();
    assert_eq!(s.response_code, 0x70);
    assert!(s.current);
    assert!(!s.descriptor_format);
    assert_eq!(s.key, SenseKey::UnitAttention);
    assert_eq!((s.asc, s.ascq), (0x2A, 0x03));
    assert_eq!(s.information, None);
    assert_eq!(s.command_specific, None);
    assert_eq!(s.sense_key_specific, None);
    assert!(s.is_unit_attention());
    assert_eq!(
        s.to_string(),
        "UNIT ATTENTION: RESERVATIONS PREEMPTED (2A/03)"
    );
}

#[test]
fn sense_fixed_medium_error_with_information_deferred() {
    let b = [
        0xF1, 0x00, 0x03, 0x00, 0x12, 0x34, 0x56, 0x0A, // VALID, 0x71, MEDIUM ERROR, info
        0, 0, 0, 7, // command-specific 7
        0x11, 0x00, 0x05, 0, 0, 0,
    ];
    let s = Sense::parse(&b).unwrap();
    assert_eq!(s.response_code, 0x71);
    assert!(!s.current);
    assert_eq!(s.key, SenseKey::MediumError);
    assert_eq!(s.information, Some(0x0012_3456));
    assert_eq!(s.command_specific, Some(7));
    assert_eq!(s.fru, Some(5));
    assert_eq!(
        s.to_string(),
        "MEDIUM ERROR: UNRECOVERED READ ERROR (11/00) [deferred]"
    );
}

#[test]
fn sense_fixed_invalid_field_in_cdb_with_field_pointer() {
    let b = [
        0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x24, 0x00, 0, //
        0xCB, 0x00, 0x02, // SKSV, C/D, BPV, bit 3; byte 2
    ];
    let s = Sense::parse(&b).unwrap();
    assert_eq!(s.key, SenseKey::IllegalRequest);
    let fp = s.sense_key_specific.unwrap().field_pointer();
    assert!(fp.in_cdb);
    assert_eq!(fp.byte, 2);
    assert_eq!(fp.bit, Some(3));
    assert_eq!(
        s.to_string(),
        "ILLEGAL REQUEST: INVALID FIELD IN CDB (24/00)"
    );
}

#[test]
fn sense_fixed_additional_length_limits_fields() {
    // Additional length 4: ASC/ASCQ at 12/13 lie beyond it and read as 0.
    let mut b = fixed_ua_preempted();
    b[7] = 4;
    let s = Sense::parse(&b).unwrap();
    assert_eq!(s.key, SenseKey::UnitAttention);
    assert_eq!((s.asc, s.ascq), (0, 0));
}

#[test]
fn sense_fixed_truncated_is_partial() {
    let s = Sense::parse(&[0x70, 0x00, 0x02]).unwrap();
    assert_eq!(s.key, SenseKey::NotReady);
    assert_eq!((s.asc, s.ascq), (0, 0));
}

#[test]
fn sense_descriptor_miscompare_with_information() {
    let b = [
        0x72, 0x0E, 0x1D, 0x00, 0, 0, 0, 0x0C, // MISCOMPARE 1D/00, 12 bytes of descriptors
        0x00, 0x0A, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0x01, 0x10, // information 0x110, VALID
    ];
    let s = Sense::parse(&b).unwrap();
    assert!(s.descriptor_format);
    assert!(s.current);
    assert_eq!(s.key, SenseKey::Miscompare);
    assert_eq!(s.information, Some(0x110));
    assert_eq!(
        s.to_string(),
        "MISCOMPARE: MISCOMPARE DURING VERIFY OPERATION (1D/00)"
    );
}

#[test]
fn sense_descriptor_several_descriptors() {
    let b = [
        0x73, 0x05, 0x26, 0x00, 0, 0, 0, 24, // deferred, ILLEGAL REQUEST 26/00
        0x02, 0x06, 0, 0, 0x80, 0x00, 0x10,
        0, // sense key specific: field ptr 0x10, param list
        0x05, 0x02, 0x00, 0x20, // block commands: ILI
        0x01, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, // command-specific 9
        0x7F, 0x00, // unknown, skipped (never reached: runs past additional length)
    ];
    let s = Sense::parse(&b).unwrap();
    assert!(!s.current);
    assert_eq!(s.key, SenseKey::IllegalRequest);
    assert_eq!((s.asc, s.ascq), (0x26, 0x00));
    let fp = s.sense_key_specific.unwrap().field_pointer();
    assert!(!fp.in_cdb);
    assert_eq!(fp.byte, 0x10);
    assert_eq!(fp.bit, None);
    assert!(s.ili);
    assert_eq!(s.command_specific, Some(9));
    assert_eq!(s.information, None);
}

#[test]
fn sense_descriptor_cut_short_is_partial() {
    // Additional length says 12 but only the header and half a descriptor arrived.
    let b = [0x72, 0x06, 0x29, 0x07, 0, 0, 0, 0x0C, 0x00, 0x0A, 0x80];
    let s = Sense::parse(&b).unwrap();
    assert_eq!(
        s.to_string(),
        "UNIT ATTENTION: I_T NEXUS LOSS OCCURRED (29/07)"
    );
    assert_eq!(s.information, None);
}

#[rstest]
#[case::empty(&[], true)]
#[case::not_sense(&[0x7F, 0, 0, 0], false)]
#[case::zero(&[0x00; 18], false)]
fn sense_rejects(#[case] b: &[u8], #[case] truncated: bool) {
    let e = Sense::parse(b).unwrap_err();
    assert_eq!(matches!(e, Error::Truncated { .. }), truncated, "{e}");
}

#[rstest]
#[case(0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION")]
#[case(0x04, 0x00, "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE")]
#[case(0x04, 0x01, "LOGICAL UNIT IS IN PROCESS OF BECOMING READY")]
#[case(0x04, 0x02, "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED")]
#[case(0x0C, 0x00, "WRITE ERROR")]
#[case(0x11, 0x00, "UNRECOVERED READ ERROR")]
#[case(0x1D, 0x00, "MISCOMPARE DURING VERIFY OPERATION")]
#[case(0x20, 0x00, "INVALID COMMAND OPERATION CODE")]
#[case(0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE")]
#[case(0x24, 0x00, "INVALID FIELD IN CDB")]
#[case(0x25, 0x00, "LOGICAL UNIT NOT SUPPORTED")]
#[case(0x26, 0x00, "INVALID FIELD IN PARAMETER LIST")]
#[case(0x29, 0x00, "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED")]
#[case(0x29, 0x07, "I_T NEXUS LOSS OCCURRED")]
#[case(0x2A, 0x01, "MODE PARAMETERS CHANGED")]
#[case(0x2A, 0x03, "RESERVATIONS PREEMPTED")]
#[case(0x2A, 0x04, "RESERVATIONS RELEASED")]
#[case(0x2A, 0x05, "REGISTRATIONS PREEMPTED")]
#[case(0x39, 0x00, "SAVING PARAMETERS NOT SUPPORTED")]
#[case(0x3A, 0x00, "MEDIUM NOT PRESENT")]
#[case(0x3F, 0x0E, "REPORTED LUNS DATA HAS CHANGED")]
fn asc_names(#[case] asc: u8, #[case] ascq: u8, #[case] name: &str) {
    assert_eq!(asc_name(asc, ascq), Some(name));
}

#[test]
fn asc_unknown_and_vendor_display() {
    assert_eq!(asc_name(0x2A, 0x7F), None);
    let mut b = fixed_ua_preempted();
    b[12] = 0x2A;
    b[13] = 0x7F;
    assert_eq!(
        Sense::parse(&b).unwrap().to_string(),
        "UNIT ATTENTION: UNKNOWN ASC/ASCQ (2A/7F)"
    );
    b[12] = 0x80;
    b[13] = 0x01;
    assert_eq!(
        Sense::parse(&b).unwrap().to_string(),
        "UNIT ATTENTION: VENDOR SPECIFIC (80/01)"
    );
}

#[test]
fn sense_key_codes_round_trip() {
    for code in 0..16u8 {
        assert_eq!(SenseKey::from_nibble(code).code(), code);
    }
    assert_eq!(SenseKey::from_nibble(0x16), SenseKey::UnitAttention);
}

// --------------------------------------------------------------- status

#[rstest]
#[case(0x00, ScsiStatus::Good, "GOOD")]
#[case(0x02, ScsiStatus::CheckCondition, "CHECK CONDITION")]
#[case(0x04, ScsiStatus::ConditionMet, "CONDITION MET")]
#[case(0x08, ScsiStatus::Busy, "BUSY")]
#[case(0x18, ScsiStatus::ReservationConflict, "RESERVATION CONFLICT")]
#[case(0x28, ScsiStatus::TaskSetFull, "TASK SET FULL")]
#[case(0x30, ScsiStatus::AcaActive, "ACA ACTIVE")]
#[case(0x40, ScsiStatus::TaskAborted, "TASK ABORTED")]
#[case(0x22, ScsiStatus::Other(0x22), "0x22")]
fn status_codes(#[case] b: u8, #[case] s: ScsiStatus, #[case] name: &str) {
    assert_eq!(ScsiStatus::from_u8(b), s);
    assert_eq!(ScsiStatus::from(b).code(), b);
    assert_eq!(s.to_string(), name);
}

#[test]
fn command_result_helpers() {
    let good = CommandResult::good();
    assert!(good.is_good());
    assert!(!good.is_reservation_conflict());
    assert!(!good.is_unit_attention());
    assert_eq!(good.clone().into_result().unwrap(), good);

    let conflict = CommandResult {
        status: ScsiStatus::ReservationConflict,
        sense: None,
        residual: 0,
    };
    assert!(conflict.is_reservation_conflict());
    let e = conflict.into_result().unwrap_err();
    assert!(e.is_reservation_conflict());
    assert_eq!(e.to_string(), "RESERVATION CONFLICT");

    let sense = Sense::parse(&fixed_ua_preempted()).unwrap();
    let ua = CommandResult {
        status: ScsiStatus::CheckCondition,
        sense: Some(sense.clone()),
        residual: 0,
    };
    assert!(ua.is_unit_attention());
    assert!(!ua.is_good());
    let e = ua.into_result().unwrap_err();
    assert!(e.is_unit_attention());
    assert_eq!(e.sense(), Some(&sense));
    assert_eq!(
        e.to_string(),
        "CHECK CONDITION: UNIT ATTENTION: RESERVATIONS PREEMPTED (2A/03)"
    );

    let cc = CommandResult {
        status: ScsiStatus::CheckCondition,
        sense: None,
        residual: 0,
    };
    assert!(!cc.is_unit_attention());
    assert_eq!(cc.into_result().unwrap_err(), Error::CheckConditionNoSense);

    let busy = CommandResult {
        status: ScsiStatus::Busy,
        sense: None,
        residual: 4,
    };
    let e = busy.into_result().unwrap_err();
    assert_eq!(
        e,
        Error::Status {
            status: ScsiStatus::Busy,
            sense: None
        }
    );
    assert_eq!(e.to_string(), "SCSI status BUSY");
}

// -------------------------------------------------------------- inquiry

fn std_inquiry() -> Vec<u8> {
    let mut b = vec![0u8; 36];
    b[0] = 0x00; // connected disk
    b[2] = 0x06; // SPC-4
    b[3] = 0x12; // HISUP, format 2
    b[4] = 31; // additional length
    b[5] = 0x19; // TPGS 1, 3PC, PROTECT
    b[6] = 0x10; // MULTIP
    b[7] = 0x02; // CMDQUE
    b[8..16].copy_from_slice(b"LIO-ORG ");
    b[16..32].copy_from_slice(b"fts-lun0        ");
    b[32..36].copy_from_slice(b"4.0\0");
    b
}

#[test]
fn standard_inquiry() {
    let i = StandardInquiry::parse(&std_inquiry()).unwrap();
    assert!(i.is_disk());
    assert_eq!(i.version, 6);
    assert!(i.hisup);
    assert_eq!(i.response_data_format, 2);
    assert_eq!(i.tpgs, 1);
    assert!(i.three_pc && i.protect && i.multip && i.cmdque);
    assert!(!i.removable && !i.encserv && !i.sccs);
    assert_eq!(i.vendor, "LIO-ORG");
    assert_eq!(i.product, "fts-lun0");
    assert_eq!(i.revision, "4.0");
}

#[test]
fn standard_inquiry_short_and_odd_bytes() {
    let e = StandardInquiry::parse(&std_inquiry()[..35]).unwrap_err();
    assert_eq!(
        e,
        Error::Truncated {
            what: "standard INQUIRY data",
            need: 36,
            got: 35
        }
    );
    let mut b = std_inquiry();
    b[0] = 0x7F; // qualifier 3, type 0x1F: no LU
    b[9] = 0xFF;
    let i = StandardInquiry::parse(&b).unwrap();
    assert!(!i.is_disk());
    assert_eq!(i.vendor, "L?O-ORG");
}

#[test]
fn vpd_supported_pages() {
    let b = [0x00, 0x00, 0x00, 0x05, 0x00, 0x80, 0x83, 0xB0, 0xB1];
    let p = SupportedVpdPages::parse(&b).unwrap();
    assert_eq!(p.pages, vec![0x00, 0x80, 0x83, 0xB0, 0xB1]);
    assert!(p.supports(0x83));
    assert!(!p.supports(0xB2));
    // Truncated: need 4 + page length.
    assert_eq!(
        SupportedVpdPages::parse(&b[..6]).unwrap_err(),
        Error::Truncated {
            what: "VPD page 0x00",
            need: 9,
            got: 6
        }
    );
    // Wrong page.
    assert!(matches!(
        SupportedVpdPages::parse(&[0, 0x80, 0, 0]),
        Err(Error::BadResponse { .. })
    ));
}

#[test]
fn vpd_unit_serial() {
    let mut b = vec![0x00, 0x80, 0x00, 0x10];
    b.extend_from_slice(b"  5d3f8a1b-c2  \0");
    let s = UnitSerialNumber::parse(&b).unwrap();
    assert_eq!(s.serial, "5d3f8a1b-c2");
}

/// VPD 0x83 as LIO reports it: NAA 6 (16 bytes), T10 vendor id, plus a
/// relative target port designator associated with the target port.
fn vpd83_naa_t10() -> Vec<u8> {
    let naa = [
        0x60, 0x01, 0x40, 0x55, 0xD3, 0xF8, 0x4A, 0x1B, 0x9C, 0x2D, 0x3E, 0x4F, 0x50, 0x61, 0x72,
        0x83,
    ];
    let t10 = b"LIO-ORG fts-lun0:5d3f8a1b";
    let mut p = Vec::new();
    // T10 vendor id first, to check the preference ordering.
    p.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
    p.extend_from_slice(t10);
    // NAA, binary, LU.
    p.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
    p.extend_from_slice(&naa);
    // Relative target port, binary, target port association, PIV, iSCSI (5).
    p.extend_from_slice(&[0x51, 0x94, 0x00, 0x04, 0, 0, 0, 1]);
    let mut b = vec![0x00, 0x83];
    b.extend_from_slice(&(p.len() as u16).to_be_bytes());
    b.extend_from_slice(&p);
    b
}

#[test]
fn vpd_device_identification() {
    let d = DeviceIdentification::parse(&vpd83_naa_t10()).unwrap();
    assert_eq!(d.designators.len(), 3);
    let t10 = &d.designators[0];
    assert_eq!(t10.designator_type, DesignatorType::T10VendorId);
    assert_eq!(t10.code_set, CodeSet::Ascii);
    assert_eq!(t10.association, Association::LogicalUnit);
    assert_eq!(
        t10.to_id_string().as_deref(),
        Some("t10.LIO-ORG fts-lun0:5d3f8a1b")
    );
    let naa = &d.designators[1];
    assert_eq!(naa.designator_type, DesignatorType::Naa);
    assert_eq!(naa.code_set, CodeSet::Binary);
    assert_eq!(naa.bytes.len(), 16);
    let port = &d.designators[2];
    assert_eq!(port.designator_type, DesignatorType::RelativeTargetPort);
    assert_eq!(port.association, Association::TargetPort);
    assert!(port.piv);
    assert_eq!(port.protocol_identifier, 5);
    assert_eq!(port.to_id_string(), None);
    assert_eq!(
        d.preferred_id().as_deref(),
        Some("naa.60014055d3f84a1b9c2d3e4f50617283")
    );
}

#[test]
fn vpd_device_identification_preferences() {
    fn page(descs: &[(u8, u8, &[u8])]) -> Vec<u8> {
        let mut p = Vec::new();
        for (cs, assoc_type, bytes) in descs {
            p.extend_from_slice(&[*cs, *assoc_type, 0, bytes.len() as u8]);
            p.extend_from_slice(bytes);
        }
        let mut b = vec![0x00, 0x83];
        b.extend_from_slice(&(p.len() as u16).to_be_bytes());
        b.extend_from_slice(&p);
        b
    }
    // EUI-64 beats SCSI name string and T10; NAA of the target port is ignored.
    let b = page(&[
        (0x03, 0x08, b"iqn.2003-01.org.example:lun0\0\0\0\0"),
        (0x02, 0x01, b"VENDOR  PRODUCT"),
        (0x01, 0x13, &[0x50, 0, 0, 0, 0, 0, 0, 1]),
        (
            0x01,
            0x02,
            &[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77],
        ),
    ]);
    let d = DeviceIdentification::parse(&b).unwrap();
    assert_eq!(d.preferred_id().as_deref(), Some("eui.0011223344556677"));
    // Without EUI-64: the SCSI name string, NULs trimmed.
    let b = page(&[
        (0x02, 0x01, b"VENDOR  PRODUCT"),
        (0x03, 0x08, b"iqn.2003-01.org.example:lun0\0\0\0\0"),
    ]);
    let d = DeviceIdentification::parse(&b).unwrap();
    assert_eq!(
        d.preferred_id().as_deref(),
        Some("iqn.2003-01.org.example:lun0")
    );
    // Two NAAs: the 16-byte one wins over the 8-byte one listed first.
    let b = page(&[
        (0x01, 0x03, &[0x50, 1, 2, 3, 4, 5, 6, 7]),
        (
            0x01,
            0x03,
            &[0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        ),
    ]);
    let d = DeviceIdentification::parse(&b).unwrap();
    assert_eq!(
        d.preferred_id().as_deref(),
        Some("naa.60000000000000000000000000000009")
    );
    // Nothing for the LU.
    let b = page(&[(0x01, 0x13, &[0x50, 0, 0, 0, 0, 0, 0, 1])]);
    assert_eq!(
        DeviceIdentification::parse(&b).unwrap().preferred_id(),
        None
    );
}

#[test]
fn vpd_device_identification_malformed() {
    let mut b = vpd83_naa_t10();
    // Make the last designator claim more bytes than the page has.
    let n = b.len();
    b[n - 5] = 0x20;
    assert!(matches!(
        DeviceIdentification::parse(&b),
        Err(Error::BadResponse { .. })
    ));
    let b = vpd83_naa_t10();
    let e = DeviceIdentification::parse(&b[..20]).unwrap_err();
    assert_eq!(
        e,
        Error::Truncated {
            what: "VPD page 0x83",
            need: b.len(),
            got: 20
        }
    );
    assert_eq!(VPD_DEVICE_IDENTIFICATION, b[1]);
}

#[test]
fn vpd_block_limits_full() {
    let mut b = vec![0u8; 64];
    b[1] = VPD_BLOCK_LIMITS;
    b[3] = 0x3C;
    b[4] = 0x01; // WSNZ
    b[5] = 0x01; // MAXIMUM COMPARE AND WRITE LENGTH
    b[6..8].copy_from_slice(&8u16.to_be_bytes());
    b[8..12].copy_from_slice(&0x0000_4000u32.to_be_bytes());
    b[12..16].copy_from_slice(&0x0000_0400u32.to_be_bytes());
    b[20..24].copy_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
    b[24..28].copy_from_slice(&1u32.to_be_bytes());
    b[28..32].copy_from_slice(&8u32.to_be_bytes());
    b[32..36].copy_from_slice(&0x8000_0002u32.to_be_bytes());
    b[36..44].copy_from_slice(&0x0001_0000_0000u64.to_be_bytes());
    let l = BlockLimits::parse(&b).unwrap();
    assert!(l.wsnz);
    assert_eq!(l.max_compare_and_write_length, 1);
    assert_eq!(l.optimal_transfer_length_granularity, 8);
    assert_eq!(l.max_transfer_length, 0x4000);
    assert_eq!(l.optimal_transfer_length, 0x400);
    assert_eq!(l.max_prefetch_length, 0);
    assert_eq!(l.max_unmap_lba_count, 0xFFFF_FFFF);
    assert_eq!(l.max_unmap_block_descriptor_count, 1);
    assert_eq!(l.optimal_unmap_granularity, 8);
    assert_eq!(l.unmap_granularity_alignment, Some(2));
    assert_eq!(l.max_write_same_length, 0x0001_0000_0000);
}

#[test]
fn vpd_block_limits_short_page() {
    // SBC-2 era page: length 0x0C, fields up to byte 15.
    let mut b = vec![0u8; 16];
    b[1] = 0xB0;
    b[3] = 0x0C;
    b[8..12].copy_from_slice(&0x200u32.to_be_bytes());
    let l = BlockLimits::parse(&b).unwrap();
    assert_eq!(l.max_transfer_length, 0x200);
    assert_eq!(l.max_unmap_lba_count, 0);
    assert_eq!(l.unmap_granularity_alignment, None);
    assert_eq!(l.max_write_same_length, 0);
}

// ------------------------------------------------------------- capacity

#[test]
fn read_capacity16() {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&0x0000_0000_01FF_FFFFu64.to_be_bytes());
    b[8..12].copy_from_slice(&512u32.to_be_bytes());
    b[12] = 0x03; // P_TYPE 1, PROT_EN
    b[13] = 0x03; // 8 logical per physical
    b[14] = 0xC0; // LBPME, LBPRZ
    let c = ReadCapacity16::parse(&b).unwrap();
    assert_eq!(c.last_lba, 0x01FF_FFFF);
    assert_eq!(c.block_count(), Some(0x0200_0000));
    assert_eq!(c.size_bytes(), Some(0x0200_0000 * 512));
    assert_eq!(c.block_length, 512);
    assert_eq!(c.protection_type(), Some(2));
    assert_eq!(c.logical_per_physical_exponent, 3);
    assert_eq!(c.logical_per_physical(), Some(8));
    assert!(c.lbpme && c.lbprz);
    assert_eq!(c.lowest_aligned_lba, 0);

    let mut b2 = b;
    b2[12] = 0;
    b2[14] = 0x01;
    b2[15] = 0x02;
    let c = ReadCapacity16::parse(&b2[..16]).unwrap();
    assert_eq!(c.protection_type(), None);
    assert_eq!(c.lowest_aligned_lba, 0x0102);
    assert!(!c.lbpme);

    let mut b3 = b;
    b3[0..8].copy_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(ReadCapacity16::parse(&b3).unwrap().block_count(), None);
    b3[8..12].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        ReadCapacity16::parse(&b3),
        Err(Error::BadResponse { .. })
    ));
    assert!(matches!(
        ReadCapacity16::parse(&b[..15]),
        Err(Error::Truncated { need: 16, .. })
    ));
}

// ------------------------------------------------------------------- pr

#[test]
fn pr_read_keys_two() {
    let b = [
        0, 0, 0, 7, // generation 7
        0, 0, 0, 16, // two keys
        0x46, 0x54, 0x53, 0, 0, 0, 0, 1, //
        0x46, 0x54, 0x53, 0, 0, 0, 0, 2,
    ];
    let k = ReadKeys::parse(&b).unwrap();
    assert_eq!(k.generation, 7);
    assert_eq!(k.keys, vec![0x4654_5300_0000_0001, 0x4654_5300_0000_0002]);
}

#[test]
fn pr_read_keys_none_truncated_and_bad() {
    let k = ReadKeys::parse(&[0, 0, 0, 1, 0, 0, 0, 0]).unwrap();
    assert!(k.keys.is_empty());
    // Allocation length 16, but 3 keys exist: need 8 + 24.
    let b = [0, 0, 0, 1, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(
        ReadKeys::parse(&b).unwrap_err(),
        Error::Truncated {
            what: "PR IN READ KEYS",
            need: 32,
            got: 16
        }
    );
    let b = [0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0];
    assert!(matches!(
        ReadKeys::parse(&b),
        Err(Error::BadResponse { .. })
    ));
    // Huge additional length must not overflow.
    let b = [0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF];
    assert!(matches!(ReadKeys::parse(&b), Err(Error::Truncated { .. })));
}

#[test]
fn pr_read_reservation_with_and_without_holder() {
    let none = ReadReservation::parse(&[0, 0, 0, 3, 0, 0, 0, 0]).unwrap();
    assert_eq!(none.generation, 3);
    assert_eq!(none.reservation, None);

    let mut b = vec![0, 0, 0, 4, 0, 0, 0, 0x10];
    b.extend_from_slice(&0x4654_5300_0000_0001u64.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0x00, 0x05, 0, 0]); // LU scope, WR_EX_RO
    let r = ReadReservation::parse(&b).unwrap();
    assert_eq!(r.generation, 4);
    let res = r.reservation.unwrap();
    assert_eq!(res.key, 0x4654_5300_0000_0001);
    assert_eq!(res.scope, 0);
    assert_eq!(res.pr_type(), Some(PrType::WriteExclusiveRegistrantsOnly));

    let mut odd = b.clone();
    odd[21] = 0x02; // obsolete type
    let res = ReadReservation::parse(&odd).unwrap().reservation.unwrap();
    assert_eq!(res.type_code, 2);
    assert_eq!(res.pr_type(), None);

    assert!(matches!(
        ReadReservation::parse(&b[..20]),
        Err(Error::Truncated { need: 24, .. })
    ));
    let bad = [0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0];
    assert!(matches!(
        ReadReservation::parse(&bad),
        Err(Error::BadResponse { .. })
    ));
}

#[test]
fn pr_report_capabilities() {
    // CRH, ATP_C, PTPL_C; TMV, ALLOW COMMANDS 1; type mask WR_EX, EX_AC,
    // WR_EX_RO, EX_AC_RO, WR_EX_AR, EX_AC_AR.
    let b = [0x00, 0x08, 0x15, 0x90, 0xEA, 0x01, 0, 0];
    let c = ReportCapabilities::parse(&b).unwrap();
    assert!(c.crh && c.atp_c && c.ptpl_c);
    assert!(!c.rlr_c && !c.sip_c && !c.ptpl_a);
    assert!(c.tmv);
    assert_eq!(c.allow_commands, 1);
    assert_eq!(c.supported_types(), PrType::ALL.to_vec());

    // Only WR_EX and EX_AC.
    let b = [0x00, 0x08, 0x00, 0x80, 0x0A, 0x00, 0, 0];
    let c = ReportCapabilities::parse(&b).unwrap();
    assert_eq!(
        c.supported_types(),
        vec![PrType::WriteExclusive, PrType::ExclusiveAccess]
    );
    assert_eq!(
        c.supports(PrType::ExclusiveAccessAllRegistrants),
        Some(false)
    );

    // TMV = 0: unknown.
    let b = [0x00, 0x08, 0x00, 0x00, 0xFF, 0xFF, 0, 0];
    let c = ReportCapabilities::parse(&b).unwrap();
    assert_eq!(c.supports(PrType::WriteExclusive), None);
    assert!(c.supported_types().is_empty());

    assert!(ReportCapabilities::parse(&b[..7]).is_err());
    assert!(ReportCapabilities::parse(&[0, 4, 0, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn pr_read_full_status() {
    let tid = b"\x05\x00\x00\x14iqn.2003-01.host-a\0\0"; // iSCSI TransportID, 24 bytes
    let mut d = Vec::new();
    d.extend_from_slice(&1u64.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0x00, 0x02]);
    d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
    d.extend_from_slice(tid);
    let mut b = vec![0, 0, 0, 9];
    b.extend_from_slice(&(d.len() as u32).to_be_bytes());
    b.extend_from_slice(&d);
    let s = ReadFullStatus::parse(&b).unwrap();
    assert_eq!(s.generation, 9);
    assert_eq!(s.descriptors.len(), 1);
    let d0 = &s.descriptors[0];
    assert_eq!(d0.key, 1);
    assert!(d0.r_holder && !d0.all_tg_pt);
    assert_eq!(d0.type_code, 1);
    assert_eq!(d0.relative_target_port, 2);
    assert_eq!(d0.transport_id, tid.to_vec());
}

// ----------------------------------------------------------------- mode

fn caching_bytes(wce: bool) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[0] = 0x88; // PS, page 8
    p[1] = 0x12;
    p[2] = if wce { 0x04 } else { 0 };
    p[4..6].copy_from_slice(&[0xFF, 0xFF]);
    p[8..10].copy_from_slice(&[0xFF, 0xFF]);
    p[10..12].copy_from_slice(&[0xFF, 0xFF]);
    p[13] = 0x14;
    p
}

#[rstest]
#[case::six_no_bd(false, false)]
#[case::six_with_bd(false, true)]
#[case::ten_no_bd(true, false)]
#[case::ten_with_bd(true, true)]
fn mode_sense_finds_caching_page(#[case] ten: bool, #[case] with_bd: bool) {
    // One short (mode parameter) block descriptor: 0 blocks, 512-byte blocks.
    let bd: &[u8] = if with_bd {
        &[0, 0, 0, 0, 0, 0x00, 0x02, 0x00]
    } else {
        &[]
    };
    // An extra page (Control, 0x0A) before the caching page.
    let control = [0x0A, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut body = Vec::new();
    body.extend_from_slice(bd);
    body.extend_from_slice(&control);
    body.extend_from_slice(&caching_bytes(true));
    let buf = if ten {
        let mut b = Vec::new();
        b.extend_from_slice(&((6 + body.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0x00, 0x10, 0, 0]); // medium, DPOFUA
        b.extend_from_slice(&(bd.len() as u16).to_be_bytes());
        b.extend_from_slice(&body);
        b
    } else {
        let mut b = vec![(3 + body.len()) as u8, 0x00, 0x90, bd.len() as u8]; // WP, DPOFUA
        b.extend_from_slice(&body);
        b
    };
    let m = if ten {
        ModeSense::parse10(&buf).unwrap()
    } else {
        ModeSense::parse6(&buf).unwrap()
    };
    assert_eq!(usize::from(m.header.block_descriptor_length), bd.len());
    assert!(m.header.dpofua());
    assert_eq!(m.header.write_protected(), !ten);
    assert_eq!(m.pages.len(), 2);
    assert_eq!(m.pages[0].page_code, 0x0A);
    assert!(m.page(0x0A, 0).is_some());
    assert!(m.pages[1].ps);
    let c = m.caching_page().unwrap();
    assert!(c.ps);
    assert!(c.wce);
    assert!(!c.rcd);
    assert_eq!(c.disable_prefetch_transfer_length, 0xFFFF);
    assert_eq!(c.maximum_prefetch, 0xFFFF);
    assert_eq!(c.number_of_cache_segments, 0x14);
    // Truncated (allocation length too small): asks for the whole thing.
    let cut = &buf[..buf.len() - 1];
    let e = if ten {
        ModeSense::parse10(cut)
    } else {
        ModeSense::parse6(cut)
    }
    .unwrap_err();
    assert_eq!(
        e,
        Error::Truncated {
            what: if ten {
                "MODE SENSE(10) data"
            } else {
                "MODE SENSE(6) data"
            },
            need: buf.len(),
            got: buf.len() - 1
        }
    );
}

#[test]
fn mode_sense_malformed() {
    // Mode data length shorter than the header.
    assert!(matches!(
        ModeSense::parse6(&[0x01, 0, 0, 0]),
        Err(Error::BadResponse { .. })
    ));
    // Block descriptor length past the end.
    assert!(matches!(
        ModeSense::parse6(&[0x03, 0, 0, 0x08]),
        Err(Error::BadResponse { .. })
    ));
    // Page runs past the end.
    assert!(matches!(
        ModeSense::parse6(&[0x07, 0, 0, 0, 0x08, 0x12, 0, 0]),
        Err(Error::BadResponse { .. })
    ));
    // No caching page.
    let m = ModeSense::parse6(&[0x05, 0, 0, 0, 0x0A, 0x00]).unwrap();
    assert!(matches!(m.caching_page(), Err(Error::BadResponse { .. })));
    // A subpage-format page 0x08 is not the caching page.
    let m = ModeSense::parse6(&[0x07, 0, 0, 0, 0x48, 0x01, 0x00, 0x00]).unwrap();
    assert_eq!(m.pages[0].subpage_code, 1);
    assert!(m.pages[0].spf);
    assert!(m.caching_page().is_err());
    // Caching page with a short page length.
    let mut p = caching_bytes(false);
    p[1] = 0x0A;
    assert!(matches!(
        CachingPage::decode(&p),
        Err(Error::BadResponse { .. })
    ));
}

#[test]
fn caching_page_round_trip() {
    for wce in [false, true] {
        let bytes = caching_bytes(wce);
        let page = CachingPage::decode(&bytes).unwrap();
        assert_eq!(page.wce, wce);
        assert_eq!(page.encode(), bytes);
        assert_eq!(page.encode_for_select()[0], 0x08);
    }
    // Every bit survives, unnamed ones included.
    let mut all = [0xFFu8; 20];
    all[0] = 0x88;
    all[1] = 0x12;
    let page = CachingPage::decode(&all).unwrap();
    assert_eq!(page.encode(), all);
    assert_eq!(page.byte12_other, 0x1E);
    assert_eq!(page.tail, [0xFF; 4]);
}

#[test]
fn apply_changeable_turns_off_wce() {
    let current = CachingPage::decode(&caching_bytes(true)).unwrap();
    let desired = CachingPage {
        wce: false,
        ..current
    };
    // WCE and RCD changeable.
    let mask = CachingPage {
        wce: true,
        rcd: true,
        ..CachingPage::default()
    };
    let (out, refused) = apply_changeable(&current, &desired, &mask);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(out, desired);
    assert!(out.ps, "PS comes from the current page");
}

#[test]
fn apply_changeable_reports_refused_fields() {
    let current = CachingPage::decode(&caching_bytes(true)).unwrap();
    let desired = CachingPage {
        wce: false,
        dra: true,
        maximum_prefetch: 0x00FF, // only the low byte may change
        write_retention_priority: 2,
        ..current
    };
    let mask = CachingPage {
        rcd: true,
        maximum_prefetch: 0x00FF,
        ..CachingPage::default()
    };
    let (out, refused) = apply_changeable(&current, &desired, &mask);
    assert_eq!(
        refused,
        vec![
            "WCE",
            "WRITE RETENTION PRIORITY",
            "MAXIMUM PRE-FETCH",
            "DRA"
        ]
    );
    assert!(out.wce);
    assert!(!out.dra);
    assert_eq!(out.write_retention_priority, 0);
    // Low byte already 0xFF in both; high byte refused and kept.
    assert_eq!(out.maximum_prefetch, 0xFFFF);
}
