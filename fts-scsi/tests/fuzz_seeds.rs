//! Captures the seed corpus of the fts-scsi fuzz targets from a real tgtd:
//! what INQUIRY, the VPD pages, PERSISTENT RESERVE IN and MODE SENSE
//! return, with a LUN of 4096- and one of 512-byte blocks, no and two
//! registrations, no and a held reservation; and the sense data of the
//! CHECK CONDITIONs tgt reports on the way.
//!
//! Ignored in ordinary test runs: `cargo xtask fuzz --seed-corpus` runs it
//! with `FTS_FUZZ_SEEDS_OUT` set to `fts-scsi/fuzz/seeds`, where it writes
//! `<target>/<name>` (identical responses once). Needs root and tgt.
//!
//! Sense data: the transport hands sense bytes to `Sense::parse` and keeps
//! only the result, so the sense seeds are tgt's fixed-format sense (what
//! tgt 1.0.85 sends: response code 0x70, additional length 10) rebuilt from
//! it, plus the hand-built descriptor-format and sense-key-specific cases of
//! `tests/decode.rs`, which tgt does not produce; likewise READ FULL STATUS,
//! which tgt refuses.
#![cfg(feature = "iscsi")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fts_scsi::cdb::{self, Cdb};
use fts_scsi::initiator::default_iqn;
use fts_scsi::iscsi::IscsiTransport;
use fts_scsi::{
    CommandResult, DataBuffer, PageControl, PrInServiceAction, PrOutParams, PrOutServiceAction,
    PrType, ScsiStatus, Sense, SupportedVpdPages, Transport,
};

const T: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Seeds {
    targets: BTreeMap<&'static str, Vec<(String, Vec<u8>)>>,
}

impl Seeds {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: &[u8]) {
        let files = self.targets.entry(target).or_default();
        if !bytes.is_empty() && !files.iter().any(|(_, b)| b == bytes) {
            files.push((name.into(), bytes.to_vec()));
        }
    }

    /// Keeps the sense data of a CHECK CONDITION, in tgt's fixed format.
    fn add_sense(&mut self, name: &str, r: &CommandResult) {
        if let Some(s) = &r.sense {
            self.add("sense", format!("tgt-{name}"), &fixed_sense(s));
        }
    }

    fn write(&self, out: &Path) {
        for (target, files) in &self.targets {
            let dir = out.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in files {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            eprintln!("{target}: {} seed(s)", files.len());
        }
    }
}

/// Fixed-format sense data (SPC-4 4.5.3) as tgt builds it: 18 bytes.
fn fixed_sense(s: &Sense) -> Vec<u8> {
    let mut b = vec![0u8; 18];
    b[0] = if s.current { 0x70 } else { 0x71 };
    b[2] = s.key.code() | if s.ili { 0x20 } else { 0 };
    if let Some(info) = s.information {
        b[0] |= 0x80;
        b[3..7].copy_from_slice(&(info as u32).to_be_bytes());
    }
    b[7] = 10;
    if let Some(cs) = s.command_specific {
        b[8..12].copy_from_slice(&(cs as u32).to_be_bytes());
    }
    b[12] = s.asc;
    b[13] = s.ascq;
    b[14] = s.fru.unwrap_or(0);
    if let Some(sks) = s.sense_key_specific {
        b[15..18].copy_from_slice(&sks.0);
        b[15] |= 0x80;
    }
    b
}

fn run(t: &mut IscsiTransport, cdb: &Cdb, data: DataBuffer<'_>) -> CommandResult {
    t.execute(cdb, data, T)
        .unwrap_or_else(|e| panic!("{cdb:?}: {e}"))
}

/// A data-in command: the bytes returned, or the CHECK CONDITION result.
fn data_in(t: &mut IscsiTransport, cdb: &Cdb, alloc: usize) -> Result<Vec<u8>, CommandResult> {
    let mut buf = vec![0u8; alloc];
    let r = run(t, cdb, DataBuffer::FromDevice(&mut buf));
    if r.status != ScsiStatus::Good {
        return Err(r);
    }
    buf.truncate(alloc.saturating_sub(r.residual as usize));
    Ok(buf)
}

fn pr_out(
    t: &mut IscsiTransport,
    sa: PrOutServiceAction,
    ty: Option<PrType>,
    key: u64,
    sa_key: u64,
) -> CommandResult {
    let params = PrOutParams {
        reservation_key: key,
        service_action_reservation_key: sa_key,
        ..PrOutParams::default()
    }
    .to_bytes();
    run(
        t,
        &cdb::persistent_reserve_out(sa, ty),
        DataBuffer::ToDevice(&params),
    )
}

fn capture_pr_in(s: &mut Seeds, t: &mut IscsiTransport, state: &str) {
    for (sa, what) in [
        (PrInServiceAction::ReadKeys, "read-keys"),
        (PrInServiceAction::ReadReservation, "read-reservation"),
        (PrInServiceAction::ReportCapabilities, "report-capabilities"),
        (PrInServiceAction::ReadFullStatus, "read-full-status"),
    ] {
        match data_in(t, &cdb::persistent_reserve_in(sa, 1024), 1024) {
            Ok(b) => s.add("pr_in", format!("tgt-{what}-{state}"), &b),
            Err(r) => s.add_sense(&format!("pr-in-{what}"), &r),
        }
    }
}

fn capture_lun(s: &mut Seeds, url: &str, tag: &str) {
    let mut a = IscsiTransport::connect(url, &default_iqn("seeds", "a"), T).unwrap();
    let mut b = IscsiTransport::connect(url, &default_iqn("seeds", "b"), T).unwrap();
    for (i, sense) in a.login_unit_attentions().iter().enumerate() {
        s.add(
            "sense",
            format!("tgt-login-unit-attention-{i}"),
            &fixed_sense(sense),
        );
    }

    // INQUIRY and every VPD page the LUN lists.
    let std = data_in(&mut a, &cdb::inquiry(255), 255).unwrap();
    s.add("inquiry_vpd", format!("tgt-{tag}-standard"), &std);
    let list = data_in(&mut a, &cdb::inquiry_vpd(0, 255), 255).unwrap();
    let pages = SupportedVpdPages::parse(&list).unwrap();
    for p in pages.pages {
        match data_in(&mut a, &cdb::inquiry_vpd(p, 1024), 1024) {
            Ok(b) => s.add("inquiry_vpd", format!("tgt-{tag}-vpd-{p:02x}"), &b),
            Err(r) => s.add_sense(&format!("vpd-{p:02x}"), &r),
        }
    }
    if let Err(r) = data_in(&mut a, &cdb::inquiry_vpd(0x99, 255), 255) {
        s.add_sense("vpd-unsupported-page", &r);
    }

    // MODE SENSE: all pages and the Caching page, every page control,
    // with and without block descriptors, (6) and (10).
    for (page, pname) in [(0x3f, "all"), (0x08, "caching")] {
        for (pc, cname) in [
            (PageControl::Current, "current"),
            (PageControl::Changeable, "changeable"),
            (PageControl::Default, "default"),
            (PageControl::Saved, "saved"),
        ] {
            for dbd in [false, true] {
                let d = if dbd { "-dbd" } else { "" };
                match data_in(&mut a, &cdb::mode_sense6(page, 0, pc, dbd, 255), 255) {
                    Ok(b) => s.add("mode_sense", format!("tgt-{tag}-6-{pname}-{cname}{d}"), &b),
                    Err(r) => s.add_sense(&format!("mode-sense-{cname}"), &r),
                }
                match data_in(&mut a, &cdb::mode_sense10(page, 0, pc, dbd, 4096), 4096) {
                    Ok(b) => s.add("mode_sense", format!("tgt-{tag}-10-{pname}-{cname}{d}"), &b),
                    Err(r) => s.add_sense(&format!("mode-sense-{cname}"), &r),
                }
            }
        }
    }
    if let Ok(b) = data_in(
        &mut a,
        &cdb::mode_sense10(0x08, 0, PageControl::Current, true, 4096),
        4096,
    ) {
        // The bare Caching page, as CachingPage::decode takes it.
        if let Some(page) = b.get(8..) {
            s.add("mode_sense", format!("tgt-{tag}-caching-page"), page);
        }
    }
    if let Err(r) = data_in(
        &mut a,
        &cdb::mode_sense6(0x2f, 0, PageControl::Current, true, 255),
        255,
    ) {
        s.add_sense("mode-sense-unsupported-page", &r);
    }
    // MODE SELECT of a Caching page with a field tgt cannot change.
    let mut sel = vec![0u8; 8 + 20];
    sel[8] = 0x08;
    sel[9] = 18;
    sel[10] = 0xff;
    sel[11] = 0xff;
    let r = run(
        &mut a,
        &cdb::mode_select10(false, sel.len() as u16),
        DataBuffer::ToDevice(&sel),
    );
    s.add_sense("mode-select-bad-page", &r);

    // Past the end of the LU.
    let blocks = {
        let cap = data_in(&mut a, &cdb::read_capacity16(32), 32).unwrap();
        u64::from_be_bytes(cap[..8].try_into().unwrap()) + 1
    };
    let mut buf = vec![0u8; 4096];
    let r = run(
        &mut a,
        &cdb::read16(blocks, 1, false),
        DataBuffer::FromDevice(&mut buf),
    );
    s.add_sense("read-past-end", &r);

    // Persistent reservations: none, two keys, a held reservation of two
    // types, a preemption.
    capture_pr_in(s, &mut a, "none");
    let (ka, kb) = (0xA1A1_0000_0000_00A1, 0xB2B2_0000_0000_00B2);
    pr_out(&mut a, PrOutServiceAction::Register, None, 0, ka);
    pr_out(&mut b, PrOutServiceAction::Register, None, 0, kb);
    capture_pr_in(s, &mut a, "two-keys");
    let wero = Some(PrType::WriteExclusiveRegistrantsOnly);
    pr_out(&mut a, PrOutServiceAction::Reserve, wero, ka, 0);
    capture_pr_in(s, &mut b, "held-we-ro");
    pr_out(&mut a, PrOutServiceAction::Release, wero, ka, 0);
    let ea = Some(PrType::ExclusiveAccess);
    pr_out(&mut a, PrOutServiceAction::Reserve, ea, ka, 0);
    capture_pr_in(s, &mut a, "held-ea");
    pr_out(&mut b, PrOutServiceAction::Preempt, ea, kb, ka);
    let r = run(&mut a, &cdb::test_unit_ready(), DataBuffer::None);
    s.add_sense("after-preempt", &r);
    capture_pr_in(s, &mut b, "preempted");
    pr_out(&mut b, PrOutServiceAction::Clear, None, kb, 0);

    // A LOGICAL UNIT RESET: the other nexus sees a unit attention.
    a.reset_lun().unwrap();
    let r = run(&mut b, &cdb::test_unit_ready(), DataBuffer::None);
    s.add_sense("after-lun-reset", &r);
}

/// The hand-built sense data of `tests/decode.rs`: what tgt does not send.
fn golden_sense(s: &mut Seeds) {
    let cases: [(&str, &[u8]); 6] = [
        (
            "golden-fixed-medium-error-deferred-info",
            &[
                0xF1, 0x00, 0x03, 0x00, 0x12, 0x34, 0x56, 0x0A, 0, 0, 0, 7, 0x11, 0x00, 0x05, 0, 0,
                0,
            ],
        ),
        (
            "golden-fixed-invalid-field-pointer",
            &[
                0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCB, 0x00, 0x02,
            ],
        ),
        (
            "golden-fixed-not-ready-progress",
            &[
                0x70, 0, 0x02, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x04, 0x07, 0, 0x80, 0x40, 0x00,
            ],
        ),
        (
            "golden-descriptor-miscompare-info",
            &[
                0x72, 0x0E, 0x1D, 0x00, 0, 0, 0, 0x0C, 0x00, 0x0A, 0x80, 0x00, 0, 0, 0, 0, 0, 0,
                0x01, 0x10,
            ],
        ),
        (
            "golden-descriptor-several",
            &[
                0x73, 0x05, 0x26, 0x00, 0, 0, 0, 24, 0x02, 0x06, 0, 0, 0x80, 0x00, 0x10, 0, 0x05,
                0x02, 0x00, 0x20, 0x01, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0x7F, 0x00,
            ],
        ),
        (
            "golden-descriptor-cut-short",
            &[0x72, 0x06, 0x29, 0x07, 0, 0, 0, 0x0C, 0x00, 0x0A, 0x80],
        ),
    ];
    for (name, bytes) in cases {
        s.add("sense", name, bytes);
    }
}

/// READ FULL STATUS (tgt 1.0.85 refuses it) and the REPORT CAPABILITIES
/// of an array with every type, as built in `tests/decode.rs`.
fn golden_pr_in(s: &mut Seeds) {
    let descriptor = |key: u64, holder: bool, tid: &[u8]| {
        let mut d = key.to_be_bytes().to_vec();
        d.extend([0, 0, 0, 0, u8::from(holder), 0x01, 0, 0, 0, 0, 0x00, 0x02]);
        d.extend((tid.len() as u32).to_be_bytes());
        d.extend(tid);
        d
    };
    let full_status = |descriptors: &[Vec<u8>]| {
        let d = descriptors.concat();
        let mut b = vec![0, 0, 0, 9];
        b.extend((d.len() as u32).to_be_bytes());
        b.extend(d);
        b
    };
    let tid_a = b"\x05\x00\x00\x14iqn.2003-01.host-a\0\0";
    let tid_b = b"\x05\x00\x00\x14iqn.2003-01.host-b\0\0";
    s.add(
        "pr_in",
        "golden-read-full-status-one",
        &full_status(&[descriptor(1, true, tid_a)]),
    );
    s.add(
        "pr_in",
        "golden-read-full-status-two",
        &full_status(&[descriptor(1, true, tid_a), descriptor(2, false, tid_b)]),
    );
    s.add(
        "pr_in",
        "golden-report-capabilities-all-types",
        &[0x00, 0x08, 0x15, 0x90, 0xEA, 0x01, 0, 0],
    );
}

#[test]
#[ignore = "writes the fuzz seed corpus; run by `cargo xtask fuzz --seed-corpus`"]
fn capture_fuzz_seeds_from_tgt() {
    let out = PathBuf::from(
        std::env::var_os("FTS_FUZZ_SEEDS_OUT").expect("FTS_FUZZ_SEEDS_OUT: where to write"),
    );
    let mut tgt = hil::tgt::start_or_skip("capture_fuzz_seeds_from_tgt").expect("tgt");
    let mut seeds = Seeds::default();
    for (block, tag) in [(4096, "4k"), (512, "512")] {
        let lun = tgt.add_lun(16 << 20, block).unwrap();
        capture_lun(&mut seeds, &lun.url, tag);
    }
    golden_sense(&mut seeds);
    golden_pr_in(&mut seeds);
    seeds.write(&out);
}
