//! The bodies of the fts-scsi fuzz targets.
//!
//! Each fuzz binary (`fuzz_targets/<target>.rs`) includes this file with
//! `#[path]` and calls its body; so does the replay test
//! `fts-scsi/tests/fuzz_regressions.rs`, which feeds every committed seed
//! and every kept crasher (`fuzz/seeds/`, `fuzz/regressions/`) to the very
//! code the fuzzer ran. A body panics on a bug (an assertion about the
//! decoders' contract) and otherwise describes what the input decoded as.
#![allow(dead_code)]

use core::fmt::Debug;

use fts_scsi::{
    apply_changeable, BlockLimits, CachingPage, CommandResult, DeviceIdentification, ModeSense,
    ReadFullStatus, ReadKeys, ReadReservation, ReportCapabilities, ScsiStatus, Sense,
    StandardInquiry, SupportedVpdPages, UnitSerialNumber,
};

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Some decoder accepted the input.
    pub reached: bool,
    /// One line per decoder: what it returned; what a regression's
    /// `.expected` file holds.
    pub text: String,
}

/// A fuzz target's body.
pub type Body = fn(&[u8]) -> Outcome;

/// Every fuzz target of the crate, by its `[[bin]]` name.
pub const TARGETS: &[(&str, Body)] = &[
    ("inquiry_vpd", inquiry_vpd),
    ("mode_sense", mode_sense),
    ("pr_in", pr_in),
    ("sense", sense),
];

/// Collects one line per decoder.
#[derive(Default)]
struct Report {
    reached: bool,
    lines: Vec<String>,
}

impl Report {
    fn add<T: Debug, E: core::fmt::Display>(&mut self, what: &str, r: &Result<T, E>) {
        match r {
            Ok(v) => {
                self.reached = true;
                self.lines.push(format!("{what}: {v:?}"));
            }
            Err(e) => self.lines.push(format!("{what}: error: {e}")),
        }
    }

    fn done(self) -> Outcome {
        Outcome {
            reached: self.reached,
            text: self.lines.join("\n"),
        }
    }
}

/// Sense data decoder (fixed and descriptor formats), its text, and the
/// CHECK CONDITION result built from it.
pub fn sense(data: &[u8]) -> Outcome {
    let mut r = Report::default();
    let parsed = Sense::parse(data);
    r.add("sense", &parsed);
    let Ok(sense) = parsed else {
        return r.done();
    };
    assert!((0x70..=0x73).contains(&sense.response_code));
    assert_eq!(sense.descriptor_format, sense.response_code >= 0x72);
    let text = sense.to_string();
    assert!(text.contains(sense.key.name()));
    r.lines.push(format!("text: {text}"));
    if let Some(sks) = sense.sense_key_specific {
        let _ = (sks.field_pointer(), sks.progress());
    }
    let cr = CommandResult {
        status: ScsiStatus::CheckCondition,
        sense: Some(sense),
        residual: 0,
    };
    let unit_attention = cr.is_unit_attention();
    let err = cr.into_result().err();
    assert_eq!(
        err.as_ref().is_some_and(|e| e.is_unit_attention()),
        unit_attention
    );
    if let Some(e) = err {
        r.lines.push(format!("error: {e}"));
    }
    r.done()
}

/// Standard INQUIRY data and VPD pages 0x00, 0x80, 0x83, 0xB0.
pub fn inquiry_vpd(data: &[u8]) -> Outcome {
    let mut r = Report::default();
    let std = StandardInquiry::parse(data);
    if let Ok(i) = &std {
        assert!(i.vendor.len() <= 8 && i.product.len() <= 16 && i.revision.len() <= 4);
        let _ = i.is_disk();
    }
    r.add("standard", &std);
    let pages = SupportedVpdPages::parse(data);
    if let Ok(p) = &pages {
        let _ = p.supports(0x83);
    }
    r.add("vpd 0x00", &pages);
    let serial = UnitSerialNumber::parse(data);
    if let Ok(s) = &serial {
        assert!(s.serial.is_ascii());
    }
    r.add("vpd 0x80", &serial);
    let ids = DeviceIdentification::parse(data);
    if let Ok(d) = &ids {
        for x in &d.designators {
            let _ = x.to_id_string();
        }
        let preferred = d.preferred_id();
        if let Some(id) = &preferred {
            assert!(!id.is_empty());
        }
        r.lines.push(format!("preferred id: {preferred:?}"));
    }
    r.add("vpd 0x83", &ids);
    r.add("vpd 0xb0", &BlockLimits::parse(data));
    r.done()
}

/// PERSISTENT RESERVE IN responses: READ KEYS, READ RESERVATION, REPORT
/// CAPABILITIES, READ FULL STATUS.
pub fn pr_in(data: &[u8]) -> Outcome {
    let mut r = Report::default();
    let keys = ReadKeys::parse(data);
    if let Ok(k) = &keys {
        assert!(8 + 8 * k.keys.len() <= data.len());
    }
    r.add("read keys", &keys);
    let res = ReadReservation::parse(data);
    if let Ok(ReadReservation {
        reservation: Some(res),
        ..
    }) = &res
    {
        let _ = res.pr_type();
        assert!(res.scope < 16 && res.type_code < 16);
    }
    r.add("read reservation", &res);
    let caps = ReportCapabilities::parse(data);
    if let Ok(c) = &caps {
        let types = c.supported_types();
        assert!(c.tmv || types.is_empty());
    }
    r.add("report capabilities", &caps);
    let full = ReadFullStatus::parse(data);
    if let Ok(s) = &full {
        let total: usize = s
            .descriptors
            .iter()
            .map(|d| 24 + d.transport_id.len())
            .sum();
        assert!(8 + total <= data.len());
    }
    r.add("read full status", &full);
    r.done()
}

/// A decoded Caching page survives encode/decode unchanged.
fn check_page(c: &CachingPage) {
    let enc = c.encode();
    let back = CachingPage::decode(&enc);
    assert_eq!(
        back.as_ref(),
        Ok(c),
        "an encoded Caching page decodes differently"
    );
    let sel = c.mode_select10_params();
    assert_eq!(sel[8] & 0x80, 0, "PS cleared for MODE SELECT");
    let (out, _) = apply_changeable(c, &CachingPage::default(), c);
    let _ = out.encode();
}

/// MODE SENSE(6)/(10) responses and the Caching mode page.
pub fn mode_sense(data: &[u8]) -> Outcome {
    let mut r = Report::default();
    for (what, m) in [
        ("mode sense(6)", ModeSense::parse6(data)),
        ("mode sense(10)", ModeSense::parse10(data)),
    ] {
        if let Ok(m) = &m {
            for p in &m.pages {
                let _ = m.page(p.page_code, p.subpage_code);
            }
            let caching = m.caching_page();
            if let Ok(c) = &caching {
                check_page(c);
            }
            r.add(&format!("{what} caching page"), &caching);
        }
        r.add(what, &m);
    }
    let page = CachingPage::decode(data);
    if let Ok(c) = &page {
        check_page(c);
    }
    r.add("caching page", &page);
    r.done()
}
