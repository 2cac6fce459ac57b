//! Golden bytes for every CDB builder and parameter-list builder, written by
//! hand from the SPC-4 / SBC-3 (and SPC-2 for RESERVE/RELEASE) CDB layouts.

use fts_scsi::cdb::{self, Cdb, DataDirection};
use fts_scsi::{
    CachingPage, PageControl, PrInServiceAction, PrOutParams, PrOutServiceAction, PrType,
};
use rstest::rstest;

use DataDirection::{FromDevice, None as NoData, ToDevice};

#[rstest]
// TEST UNIT READY: opcode 0x00, 6 bytes of zero.
#[case::tur(cdb::test_unit_ready(), &[0x00, 0, 0, 0, 0, 0], NoData)]
// INQUIRY: 0x12, byte 1 bit 0 EVPD, byte 2 page code, bytes 3..5 allocation length (BE).
#[case::inquiry_std(cdb::inquiry(96), &[0x12, 0x00, 0x00, 0x00, 0x60, 0x00], FromDevice)]
#[case::inquiry_std_big(cdb::inquiry(0x1234), &[0x12, 0x00, 0x00, 0x12, 0x34, 0x00], FromDevice)]
#[case::inquiry_vpd80(cdb::inquiry_vpd(0x80, 255), &[0x12, 0x01, 0x80, 0x00, 0xFF, 0x00], FromDevice)]
#[case::inquiry_vpd83(cdb::inquiry_vpd(0x83, 0x0400), &[0x12, 0x01, 0x83, 0x04, 0x00, 0x00], FromDevice)]
// READ CAPACITY(16): 0x9E, SA 0x10 in byte 1, LBA 2..10 = 0, alloc length 10..14.
#[case::read_capacity16(
    cdb::read_capacity16(32),
    &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00],
    FromDevice
)]
// READ(16): 0x88, FUA = byte 1 bit 3, LBA 2..10 BE, transfer length 10..14 BE.
#[case::read16(
    cdb::read16(0x0102_0304_0506_0708, 0x0A0B_0C0D, false),
    &[0x88, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 0x0A, 0x0B, 0x0C, 0x0D, 0x00, 0x00],
    FromDevice
)]
#[case::read16_fua(
    cdb::read16(5, 8, true),
    &[0x88, 0x08, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 8, 0x00, 0x00],
    FromDevice
)]
// WRITE(16): 0x8A, same layout.
#[case::write16(
    cdb::write16(0xFFFF_FFFF_FFFF_FFFE, 1, false),
    &[0x8A, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 0, 1, 0x00, 0x00],
    ToDevice
)]
#[case::write16_fua(
    cdb::write16(0x10, 0x0100, true),
    &[0x8A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x01, 0x00, 0x00, 0x00],
    ToDevice
)]
// SYNCHRONIZE CACHE(10): 0x35, IMMED byte 1 bit 1, LBA 2..6, group 6, blocks 7..9.
#[case::sync10(
    cdb::synchronize_cache10(0, 0, false),
    &[0x35, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
    NoData
)]
#[case::sync10_immed(
    cdb::synchronize_cache10(0x1122_3344, 0x5566, true),
    &[0x35, 0x02, 0x11, 0x22, 0x33, 0x44, 0x00, 0x55, 0x66, 0x00],
    NoData
)]
// SYNCHRONIZE CACHE(16): 0x91, IMMED byte 1 bit 1, LBA 2..10, blocks 10..14.
#[case::sync16(
    cdb::synchronize_cache16(0, 0, false),
    &[0x91, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    NoData
)]
#[case::sync16_immed(
    cdb::synchronize_cache16(0x0000_0001_0000_0000, 0x8000_0001, true),
    &[0x91, 0x02, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 0, 0, 0x01, 0, 0],
    NoData
)]
// RESERVE/RELEASE(6): 0x16 / 0x17, rest zero.
#[case::reserve6(cdb::reserve6(), &[0x16, 0, 0, 0, 0, 0], NoData)]
#[case::release6(cdb::release6(), &[0x17, 0, 0, 0, 0, 0], NoData)]
// RESERVE/RELEASE(10): 0x56 / 0x57, no 3RDPTY, rest zero.
#[case::reserve10(cdb::reserve10(), &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], NoData)]
#[case::release10(cdb::release10(), &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], NoData)]
// PERSISTENT RESERVE IN: 0x5E, SA byte 1 bits 4..0, alloc length bytes 7..9.
#[case::prin_read_keys(
    cdb::persistent_reserve_in(PrInServiceAction::ReadKeys, 0x2000),
    &[0x5E, 0x00, 0, 0, 0, 0, 0, 0x20, 0x00, 0],
    FromDevice
)]
#[case::prin_read_reservation(
    cdb::persistent_reserve_in(PrInServiceAction::ReadReservation, 24),
    &[0x5E, 0x01, 0, 0, 0, 0, 0, 0x00, 0x18, 0],
    FromDevice
)]
#[case::prin_report_capabilities(
    cdb::persistent_reserve_in(PrInServiceAction::ReportCapabilities, 8),
    &[0x5E, 0x02, 0, 0, 0, 0, 0, 0x00, 0x08, 0],
    FromDevice
)]
#[case::prin_read_full_status(
    cdb::persistent_reserve_in(PrInServiceAction::ReadFullStatus, 0xFFFF),
    &[0x5E, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    FromDevice
)]
// PERSISTENT RESERVE OUT: 0x5F, SA byte 1 bits 4..0, scope<<4|type byte 2,
// parameter list length bytes 5..9 = 24.
#[case::prout_register(
    cdb::persistent_reserve_out(PrOutServiceAction::Register, None),
    &[0x5F, 0x00, 0x00, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
#[case::prout_reserve_we(
    cdb::persistent_reserve_out(PrOutServiceAction::Reserve, Some(PrType::WriteExclusive)),
    &[0x5F, 0x01, 0x01, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
#[case::prout_reserve_ea(
    cdb::persistent_reserve_out(PrOutServiceAction::Reserve, Some(PrType::ExclusiveAccess)),
    &[0x5F, 0x01, 0x03, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
#[case::prout_release_wero(
    cdb::persistent_reserve_out(PrOutServiceAction::Release, Some(PrType::WriteExclusiveRegistrantsOnly)),
    &[0x5F, 0x02, 0x05, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
#[case::prout_clear(
    cdb::persistent_reserve_out(PrOutServiceAction::Clear, None),
    &[0x5F, 0x03, 0x00, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
#[case::prout_preempt_earo(
    cdb::persistent_reserve_out(PrOutServiceAction::Preempt, Some(PrType::ExclusiveAccessRegistrantsOnly)),
    &[0x5F, 0x04, 0x06, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
#[case::prout_preempt_abort_wear(
    cdb::persistent_reserve_out(PrOutServiceAction::PreemptAndAbort, Some(PrType::WriteExclusiveAllRegistrants)),
    &[0x5F, 0x05, 0x07, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
#[case::prout_register_ignore_eaar(
    cdb::persistent_reserve_out(PrOutServiceAction::RegisterAndIgnoreExistingKey, Some(PrType::ExclusiveAccessAllRegistrants)),
    &[0x5F, 0x06, 0x08, 0, 0, 0, 0, 0, 0x18, 0],
    ToDevice
)]
// MODE SENSE(6): 0x1A, DBD byte 1 bit 3, PC byte 2 bits 7..6, page code bits 5..0,
// subpage byte 3, alloc length byte 4.
#[case::mode_sense6_current(
    cdb::mode_sense6(0x08, 0, PageControl::Current, false, 0xFF),
    &[0x1A, 0x00, 0x08, 0x00, 0xFF, 0x00],
    FromDevice
)]
#[case::mode_sense6_changeable_dbd(
    cdb::mode_sense6(0x08, 0, PageControl::Changeable, true, 36),
    &[0x1A, 0x08, 0x48, 0x00, 0x24, 0x00],
    FromDevice
)]
#[case::mode_sense6_default(
    cdb::mode_sense6(0x3F, 0xFF, PageControl::Default, false, 0xFF),
    &[0x1A, 0x00, 0xBF, 0xFF, 0xFF, 0x00],
    FromDevice
)]
#[case::mode_sense6_saved(
    cdb::mode_sense6(0x08, 0, PageControl::Saved, true, 0xFF),
    &[0x1A, 0x08, 0xC8, 0x00, 0xFF, 0x00],
    FromDevice
)]
// MODE SENSE(10): 0x5A, same bytes 1..4, alloc length bytes 7..9.
#[case::mode_sense10(
    cdb::mode_sense10(0x08, 0, PageControl::Current, true, 0x0200),
    &[0x5A, 0x08, 0x08, 0x00, 0, 0, 0, 0x02, 0x00, 0x00],
    FromDevice
)]
#[case::mode_sense10_changeable(
    cdb::mode_sense10(0x08, 0, PageControl::Changeable, false, 28),
    &[0x5A, 0x00, 0x48, 0x00, 0, 0, 0, 0x00, 0x1C, 0x00],
    FromDevice
)]
// MODE SELECT(6): 0x15, PF byte 1 bit 4, SP byte 1 bit 0, param list length byte 4.
#[case::mode_select6(cdb::mode_select6(false, 24), &[0x15, 0x10, 0, 0, 0x18, 0], ToDevice)]
#[case::mode_select6_sp(cdb::mode_select6(true, 24), &[0x15, 0x11, 0, 0, 0x18, 0], ToDevice)]
// MODE SELECT(10): 0x55, param list length bytes 7..9.
#[case::mode_select10(
    cdb::mode_select10(false, 28),
    &[0x55, 0x10, 0, 0, 0, 0, 0, 0x00, 0x1C, 0],
    ToDevice
)]
#[case::mode_select10_sp(
    cdb::mode_select10(true, 0x0102),
    &[0x55, 0x11, 0, 0, 0, 0, 0, 0x01, 0x02, 0],
    ToDevice
)]
// COMPARE AND WRITE: 0x89, FUA byte 1 bit 3, LBA 2..10, bytes 10..13 reserved,
// NUMBER OF LOGICAL BLOCKS byte 13.
#[case::compare_and_write(
    cdb::compare_and_write(0x0000_0000_0000_0006, 1, false),
    &[0x89, 0x00, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0x01, 0, 0],
    ToDevice
)]
#[case::compare_and_write_fua(
    cdb::compare_and_write(0xA1B2_C3D4_E5F6_0718, 0xFF, true),
    &[0x89, 0x08, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x07, 0x18, 0, 0, 0, 0xFF, 0, 0],
    ToDevice
)]
fn cdb_golden(#[case] cdb: Cdb, #[case] expected: &[u8], #[case] dir: DataDirection) {
    assert_eq!(cdb.as_bytes(), expected, "{cdb:?}");
    assert_eq!(cdb.len(), expected.len());
    assert_eq!(cdb.opcode(), expected[0]);
    assert_eq!(cdb.direction(), dir);
    assert!(!cdb.is_empty());
}

#[rstest]
#[case::zero(PrOutParams::default(), [0u8; 24])]
#[case::register_new_key(
    PrOutParams { service_action_reservation_key: 0x0123_4567_89AB_CDEF, ..Default::default() },
    [0, 0, 0, 0, 0, 0, 0, 0,
     0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF,
     0, 0, 0, 0, 0x00, 0, 0, 0]
)]
#[case::reserve_with_key(
    PrOutParams { reservation_key: 0x46_54_53_00_00_00_00_01, ..Default::default() },
    [0x46, 0x54, 0x53, 0, 0, 0, 0, 0x01,
     0, 0, 0, 0, 0, 0, 0, 0,
     0, 0, 0, 0, 0x00, 0, 0, 0]
)]
#[case::aptpl(
    PrOutParams { reservation_key: 1, service_action_reservation_key: 2, aptpl: true, ..Default::default() },
    [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0x01, 0, 0, 0]
)]
#[case::all_tg_pt(
    PrOutParams { all_tg_pt: true, ..Default::default() },
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0]
)]
#[case::spec_i_pt(
    PrOutParams { spec_i_pt: true, ..Default::default() },
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0]
)]
#[case::all_flags(
    PrOutParams { spec_i_pt: true, all_tg_pt: true, aptpl: true, ..Default::default() },
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0D, 0, 0, 0]
)]
fn pr_out_params_golden(#[case] p: PrOutParams, #[case] expected: [u8; 24]) {
    assert_eq!(p.to_bytes(), expected);
}

/// A caching page with WCE=1 and distinct values in every field, as a disk
/// would report it (PS = 1), and its bytes.
fn sample_page() -> (CachingPage, [u8; 20]) {
    let page = CachingPage {
        ps: true,
        ic: false,
        abpf: true,
        cap: false,
        disc: true,
        size: false,
        wce: true,
        mf: false,
        rcd: false,
        demand_read_retention_priority: 0x3,
        write_retention_priority: 0xC,
        disable_prefetch_transfer_length: 0xFFFF,
        minimum_prefetch: 0x0001,
        maximum_prefetch: 0x0203,
        maximum_prefetch_ceiling: 0x0405,
        fsw: true,
        lbcss: false,
        dra: true,
        nv_dis: true,
        byte12_other: 0x00,
        number_of_cache_segments: 0x10,
        cache_segment_size: 0x0607,
        tail: [0, 0, 0, 0],
    };
    let bytes = [
        0x88, 0x12, // PS | page 0x08, page length 0x12
        0x54, // ABPF | DISC | WCE
        0x3C, // demand read 3, write 0xC
        0xFF, 0xFF, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, //
        0xA1, // FSW | DRA | NV_DIS
        0x10, 0x06, 0x07, 0, 0, 0, 0,
    ];
    (page, bytes)
}

#[test]
fn caching_page_encode_golden() {
    let (page, bytes) = sample_page();
    assert_eq!(page.encode(), bytes);
    assert_eq!(CachingPage::decode(&bytes).unwrap(), page);
}

#[test]
fn mode_select6_params_golden() {
    let (page, bytes) = sample_page();
    let p = page.mode_select6_params();
    // Header: MODE DATA LENGTH 0 (reserved in MODE SELECT), medium type 0,
    // device-specific 0, block descriptor length 0.
    assert_eq!(&p[..4], &[0, 0, 0, 0]);
    // Page with PS cleared.
    assert_eq!(p[4], 0x08);
    assert_eq!(&p[5..], &bytes[1..]);
    assert_eq!(p.len(), 24);
}

#[test]
fn mode_select10_params_golden() {
    let (page, bytes) = sample_page();
    let p = page.mode_select10_params();
    assert_eq!(&p[..8], &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(p[8], 0x08);
    assert_eq!(&p[9..], &bytes[1..]);
    assert_eq!(p.len(), 28);
}

#[test]
fn cdb_debug_is_hex() {
    let c = cdb::reserve6();
    assert_eq!(format!("{c:?}"), "Cdb[16 00 00 00 00 00; None]");
}
