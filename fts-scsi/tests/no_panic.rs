//! Every decoder, fed arbitrary bytes, returns (Ok or Err) without
//! panicking; encoders and decoders agree where both exist.

use fts_scsi::{
    cdb, BlockLimits, CachingPage, DeviceIdentification, ModeSense, PrOutParams, ReadCapacity16,
    ReadFullStatus, ReadKeys, ReadReservation, ReportCapabilities, Sense, StandardInquiry,
    SupportedVpdPages, UnitSerialNumber,
};
use proptest::prelude::*;

/// Runs every decoder over `b` and uses what comes back.
fn decode_all(b: &[u8]) {
    if let Ok(s) = Sense::parse(b) {
        let _ = s.to_string();
        let _ = s.sense_key_specific.map(|k| k.field_pointer());
    }
    let _ = StandardInquiry::parse(b);
    let _ = SupportedVpdPages::parse(b);
    let _ = UnitSerialNumber::parse(b);
    if let Ok(d) = DeviceIdentification::parse(b) {
        let _ = d.preferred_id();
        for x in &d.designators {
            let _ = x.to_id_string();
        }
    }
    let _ = BlockLimits::parse(b);
    if let Ok(c) = ReadCapacity16::parse(b) {
        let _ = (
            c.size_bytes(),
            c.protection_type(),
            c.logical_per_physical(),
        );
    }
    let _ = ReadKeys::parse(b);
    let _ = ReadReservation::parse(b).map(|r| r.reservation.map(|x| x.pr_type()));
    let _ = ReportCapabilities::parse(b).map(|c| c.supported_types());
    let _ = ReadFullStatus::parse(b);
    for m in [ModeSense::parse6(b), ModeSense::parse10(b)]
        .into_iter()
        .flatten()
    {
        let _ = m.caching_page();
    }
    let _ = CachingPage::decode(b);
}

/// Byte strings biased toward the shapes the decoders look for: a valid
/// response code / page code in byte 0 or 1 and small length fields.
fn shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![0x70u8, 0x71, 0x72, 0x73, 0xF0, 0x00, 0x08, 0x88, 0x48]),
        prop::sample::select(vec![0x00u8, 0x80, 0x83, 0xB0, 0x12, 0x08]),
        prop::collection::vec(0u8..=0x20, 0..8),
        prop::collection::vec(any::<u8>(), 0..96),
    )
        .prop_map(|(b0, b1, small, rest)| {
            let mut v = vec![b0, b1];
            v.extend(small);
            v.extend(rest);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..300)) {
        decode_all(&b);
    }

    #[test]
    fn decoders_never_panic_on_shaped_bytes(b in shaped()) {
        decode_all(&b);
        // Each prefix, too: truncation at every point.
        for n in 0..b.len().min(40) {
            decode_all(&b[..n]);
        }
    }

    #[test]
    fn caching_page_round_trips(mut p in prop::array::uniform20(any::<u8>())) {
        p[0] = (p[0] & 0x80) | 0x08;
        p[1] = 0x12;
        let page = CachingPage::decode(&p).unwrap();
        prop_assert_eq!(page.encode(), p);
        let sel = page.mode_select6_params();
        prop_assert_eq!(sel[4], 0x08);
        prop_assert_eq!(&sel[5..], &p[1..]);
    }

    #[test]
    fn pr_out_params_keys_at_fixed_offsets(k in any::<u64>(), sk in any::<u64>(), flags in 0u8..8) {
        let p = PrOutParams {
            reservation_key: k,
            service_action_reservation_key: sk,
            spec_i_pt: flags & 4 != 0,
            all_tg_pt: flags & 2 != 0,
            aptpl: flags & 1 != 0,
        }
        .to_bytes();
        prop_assert_eq!(&p[0..8], &k.to_be_bytes());
        prop_assert_eq!(&p[8..16], &sk.to_be_bytes());
        prop_assert_eq!(p[20] & !0x0D, 0);
    }

    #[test]
    fn rw16_fields(lba in any::<u64>(), n in any::<u32>(), fua in any::<bool>()) {
        for c in [cdb::read16(lba, n, fua), cdb::write16(lba, n, fua)] {
            let b = c.as_bytes();
            prop_assert_eq!(b.len(), 16);
            prop_assert_eq!(&b[2..10], &lba.to_be_bytes());
            prop_assert_eq!(&b[10..14], &n.to_be_bytes());
            prop_assert_eq!(b[1], if fua { 0x08 } else { 0 });
        }
    }
}
