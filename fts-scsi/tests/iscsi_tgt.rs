//! `IscsiTransport` against a real tgtd (Linux SCSI target framework), as
//! several initiators would see one shared LUN.
//!
//! Each test starts its own tgtd through `hil::tgt`; where tgtd cannot run
//! (not installed, not root) it skips through `hil::skip` (a SKIPPED banner,
//! counted by `cargo xtask ci`), or fails with `CI` set. Only raw `Transport::execute` with the
//! `fts_scsi::cdb` builders and the response decoders is used, so these tests
//! pin down both the transport and what tgt actually does; the comments
//! marked "tgt:" record target behaviour measured here (tgt 1.0.85, libiscsi
//! 1.19) that fts relies on or must work around.
//!
//! Run with `cargo test -p fts-scsi --features iscsi --test iscsi_tgt`.
#![cfg(feature = "iscsi")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fts_scsi::cdb::{self, Cdb};
use fts_scsi::initiator::{default_iqn, isid_for, pr_key_for, IscsiUrl};
use fts_scsi::iscsi::IscsiTransport;
use fts_scsi::{
    CommandResult, DataBuffer, Error, ModeSense, PageControl, PrInServiceAction, PrOutParams,
    PrOutServiceAction, PrType, ReadKeys, ReadReservation, ScsiStatus, SenseKey, Transport,
};
use hil::tgt::{Lun, Tgtd};

/// Per-command and login timeout.
const T: Duration = Duration::from_secs(5);
const BLOCK: usize = 4096;
const LUN_SIZE: u64 = 16 << 20;

/// The IQN of the fts process called `name` on the test host.
fn iqn(name: &str) -> String {
    default_iqn("hil", name)
}

fn setup(test: &str) -> Option<(Tgtd, Lun)> {
    let mut tgt = hil::tgt::start_or_skip(test)?;
    let lun = tgt.add_lun(LUN_SIZE, BLOCK as u32).expect("add a LUN");
    Some((tgt, lun))
}

fn connect(lun: &Lun, name: &str) -> IscsiTransport {
    IscsiTransport::connect(&lun.url, &iqn(name), T)
        .unwrap_or_else(|e| panic!("connect {name} to {}: {e}", lun.url))
}

fn run(t: &mut IscsiTransport, cdb: &Cdb, data: DataBuffer<'_>) -> CommandResult {
    t.execute(cdb, data, T)
        .unwrap_or_else(|e| panic!("{cdb:?} via {}: {e}", t.initiator()))
}

fn assert_status(r: &CommandResult, want: ScsiStatus, what: &str) {
    assert_eq!(r.status, want, "{what}: {r:?}");
}

fn assert_ua(r: &CommandResult, asc: u8, ascq: u8, what: &str) {
    let s = r
        .sense
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no sense: {r:?}"));
    assert!(
        r.status == ScsiStatus::CheckCondition && s.is(SenseKey::UnitAttention, asc, ascq),
        "{what}: expected UNIT ATTENTION {asc:02X}/{ascq:02X}, got {r:?}"
    );
}

fn tur(t: &mut IscsiTransport) -> CommandResult {
    run(t, &cdb::test_unit_ready(), DataBuffer::None)
}

fn inquiry(t: &mut IscsiTransport) -> CommandResult {
    let mut buf = [0u8; 96];
    run(t, &cdb::inquiry(96), DataBuffer::FromDevice(&mut buf))
}

fn write_block(t: &mut IscsiTransport, lba: u64, fill: u8) -> CommandResult {
    let buf = vec![fill; BLOCK];
    run(t, &cdb::write16(lba, 1, false), DataBuffer::ToDevice(&buf))
}

fn read_block(t: &mut IscsiTransport, lba: u64) -> (CommandResult, Vec<u8>) {
    let mut buf = vec![0u8; BLOCK];
    let r = run(
        t,
        &cdb::read16(lba, 1, false),
        DataBuffer::FromDevice(&mut buf),
    );
    (r, buf)
}

fn pr_out(
    t: &mut IscsiTransport,
    sa: PrOutServiceAction,
    pr_type: Option<PrType>,
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
        &cdb::persistent_reserve_out(sa, pr_type),
        DataBuffer::ToDevice(&params),
    )
}

fn pr_in(t: &mut IscsiTransport, sa: PrInServiceAction) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let r = run(
        t,
        &cdb::persistent_reserve_in(sa, 1024),
        DataBuffer::FromDevice(&mut buf),
    );
    assert_status(&r, ScsiStatus::Good, "PR IN");
    buf.truncate(buf.len() - r.residual as usize);
    buf
}

fn read_keys(t: &mut IscsiTransport) -> Vec<u64> {
    let mut keys = ReadKeys::parse(&pr_in(t, PrInServiceAction::ReadKeys))
        .unwrap()
        .keys;
    keys.sort_unstable();
    keys
}

fn read_reservation(t: &mut IscsiTransport) -> ReadReservation {
    ReadReservation::parse(&pr_in(t, PrInServiceAction::ReadReservation)).unwrap()
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Data, residuals, sense data and LUN reset through one session.
#[test]
fn raw_commands_round_trip() {
    let Some((_tgt, lun)) = setup("raw_commands_round_trip") else {
        return;
    };
    let mut a = connect(&lun, "a");
    assert_eq!(a.epoch(), 1);
    assert_eq!(a.target(), lun.url);
    let isid = fts_scsi::initiator::isid_hex(&isid_for(&iqn("a")));
    assert_eq!(a.initiator(), format!("{} (isid {isid})", iqn("a")));
    // tgt: a new nexus starts with UNIT ATTENTION 29/00, which connect()
    // consumes and reports.
    let uas = a.login_unit_attentions();
    assert!(!uas.is_empty(), "no unit attention at login");
    assert!(
        uas.iter()
            .all(|s| s.is(SenseKey::UnitAttention, 0x29, 0x00)),
        "{uas:?}"
    );
    assert_status(&tur(&mut a), ScsiStatus::Good, "TUR after login");

    // Standard INQUIRY: 36 bytes returned of 96 asked → residual 60.
    let mut buf = [0u8; 96];
    let r = run(&mut a, &cdb::inquiry(96), DataBuffer::FromDevice(&mut buf));
    assert_status(&r, ScsiStatus::Good, "INQUIRY");
    let returned = 96 - r.residual as usize;
    assert_eq!(returned, 5 + usize::from(buf[4]), "{buf:02x?}");
    assert_eq!(buf[0] & 0x1f, 0, "direct-access device");

    // Several blocks out and back.
    let data: Vec<u8> = (0..3 * BLOCK).map(|i| (i % 251) as u8).collect();
    let r = run(
        &mut a,
        &cdb::write16(10, 3, true),
        DataBuffer::ToDevice(&data),
    );
    assert_status(&r, ScsiStatus::Good, "WRITE(16)");
    let mut back = vec![0u8; 3 * BLOCK];
    let r = run(
        &mut a,
        &cdb::read16(10, 3, false),
        DataBuffer::FromDevice(&mut back),
    );
    assert_status(&r, ScsiStatus::Good, "READ(16)");
    assert_eq!(r.residual, 0);
    assert!(back == data, "read back differs");

    // A large transfer (R2Ts and many Data-In PDUs): 1 MiB.
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(7) >> 3) as u8)
        .collect();
    let blocks = (big.len() / BLOCK) as u32;
    let r = run(
        &mut a,
        &cdb::write16(64, blocks, false),
        DataBuffer::ToDevice(&big),
    );
    assert_status(&r, ScsiStatus::Good, "1 MiB WRITE(16)");
    let mut back = vec![0u8; big.len()];
    let r = run(
        &mut a,
        &cdb::read16(64, blocks, false),
        DataBuffer::FromDevice(&mut back),
    );
    assert_status(&r, ScsiStatus::Good, "1 MiB READ(16)");
    assert!(back == big, "1 MiB read back differs");

    // Past the end: ILLEGAL REQUEST 21/00, decoded from the raw sense bytes.
    let (r, _) = read_block(&mut a, LUN_SIZE / BLOCK as u64);
    let s = r.sense.as_ref().expect("sense");
    assert!(s.is(SenseKey::IllegalRequest, 0x21, 0x00), "{r:?}");

    // A direction mismatch never reaches the wire.
    let e = a
        .execute(
            &cdb::read16(0, 1, false),
            DataBuffer::ToDevice(&data[..BLOCK]),
            T,
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");

    // LOGICAL UNIT RESET: this nexus and the others see 29/00 (tgt reports
    // a plain 29/00, not 29/03 "BUS DEVICE RESET FUNCTION OCCURRED").
    let mut b = connect(&lun, "b");
    a.reset_lun().unwrap();
    assert_ua(&tur(&mut a), 0x29, 0x00, "A after LUN reset");
    assert_ua(&tur(&mut b), 0x29, 0x00, "B after LUN reset");
    assert_status(&tur(&mut a), ScsiStatus::Good, "A after the UA");
    assert_status(&tur(&mut b), ScsiStatus::Good, "B after the UA");
    assert_eq!(a.epoch(), 1, "a LUN reset does not end the session");
}

/// Acceptance 1: RESERVE(6) held by one initiator fences the others.
#[test]
fn reserve6_fences_other_initiators() {
    let Some((_tgt, lun)) = setup("reserve6_fences_other_initiators") else {
        return;
    };
    let mut a = connect(&lun, "a");
    let mut b = connect(&lun, "b");
    assert_status(&write_block(&mut b, 0, 0xb0), ScsiStatus::Good, "B before");

    assert_status(
        &run(&mut a, &cdb::reserve6(), DataBuffer::None),
        ScsiStatus::Good,
        "A RESERVE(6)",
    );
    let conflict = ScsiStatus::ReservationConflict;
    assert_status(&write_block(&mut b, 0, 0xb1), conflict, "B WRITE(16)");
    assert_status(&read_block(&mut b, 0).0, conflict, "B READ(16)");
    assert_status(&tur(&mut b), conflict, "B TEST UNIT READY");
    assert_status(&inquiry(&mut b), ScsiStatus::Good, "B INQUIRY");
    assert_status(
        &run(&mut b, &cdb::reserve6(), DataBuffer::None),
        conflict,
        "B RESERVE(6)",
    );
    // The holder is unaffected, and RESERVE(6) again is fine.
    assert_status(&write_block(&mut a, 0, 0xa0), ScsiStatus::Good, "A WRITE");
    assert_status(
        &run(&mut a, &cdb::reserve6(), DataBuffer::None),
        ScsiStatus::Good,
        "A RESERVE(6) again",
    );
    // RELEASE(6) from a non-holder is GOOD and does nothing (SPC-2).
    assert_status(
        &run(&mut b, &cdb::release6(), DataBuffer::None),
        ScsiStatus::Good,
        "B RELEASE(6)",
    );
    assert_status(&write_block(&mut b, 0, 0xb2), conflict, "B still fenced");

    assert_status(
        &run(&mut a, &cdb::release6(), DataBuffer::None),
        ScsiStatus::Good,
        "A RELEASE(6)",
    );
    assert_status(
        &write_block(&mut b, 0, 0xb3),
        ScsiStatus::Good,
        "B after release",
    );
    let (r, data) = read_block(&mut a, 0);
    assert_status(&r, ScsiStatus::Good, "A READ");
    assert!(data.iter().all(|&x| x == 0xb3));
}

/// Informational: the reservation belongs to the I_T nexus, i.e. IQN *and*
/// ISID; and one IQN + ISID is one session.
#[test]
fn reservation_belongs_to_the_nexus_not_the_name() {
    let Some((tgt, lun)) = setup("reservation_belongs_to_the_nexus_not_the_name") else {
        return;
    };
    let name = iqn("a");
    let mut a = connect(&lun, "a");
    let mut other_isid = isid_for(&name);
    other_isid[5] ^= 1;
    let mut a2 = IscsiTransport::connect_with_isid(&lun.url, &name, other_isid, T).unwrap();
    assert_eq!(tgt.nexuses(&lun).unwrap().len(), 2);

    assert_status(
        &run(&mut a, &cdb::reserve6(), DataBuffer::None),
        ScsiStatus::Good,
        "A RESERVE(6)",
    );
    // tgt: same initiator name, other ISID → another nexus → conflict.
    assert_status(
        &write_block(&mut a2, 0, 1),
        ScsiStatus::ReservationConflict,
        "same IQN, other ISID",
    );

    // tgt: a second login with the same IQN and ISID does NOT reinstate the
    // session (RFC 7143 says it should): tgt 1.0.85 only looks for the old
    // session when the login passes through the security negotiation
    // stage, and libiscsi without CHAP starts in operational negotiation.
    // The result is a second, parallel session — another nexus as far as
    // reservations go — and the first one keeps working.
    let mut a_again = connect(&lun, "a");
    assert_eq!(tgt.nexuses(&lun).unwrap().len(), 3);
    assert_status(&tur(&mut a), ScsiStatus::Good, "the first session lives on");
    assert_status(
        &write_block(&mut a_again, 0, 2),
        ScsiStatus::ReservationConflict,
        "same IQN and ISID, second session",
    );
    assert_status(&write_block(&mut a, 0, 3), ScsiStatus::Good, "the holder");
}

/// Acceptance 2: persistent reservations, WRITE EXCLUSIVE – REGISTRANTS
/// ONLY, PREEMPT, CLEAR.
#[test]
fn persistent_reservation_round_trip() {
    let Some((_tgt, lun)) = setup("persistent_reservation_round_trip") else {
        return;
    };
    let mut a = connect(&lun, "a");
    let mut b = connect(&lun, "b");
    let mut c = connect(&lun, "c");
    let (ka, kb) = (pr_key_for(&iqn("a")), pr_key_for(&iqn("b")));
    assert_ne!(ka, kb);
    let we_ro = Some(PrType::WriteExclusiveRegistrantsOnly);
    let good = ScsiStatus::Good;
    let conflict = ScsiStatus::ReservationConflict;
    use PrOutServiceAction::{Clear, Preempt, Register, Reserve};

    assert!(read_keys(&mut c).is_empty());
    assert_status(&pr_out(&mut a, Register, None, 0, ka), good, "A REGISTER");
    assert_status(&pr_out(&mut b, Register, None, 0, kb), good, "B REGISTER");
    // Registering again with the wrong current key conflicts.
    assert_status(
        &pr_out(&mut b, Register, None, 0, kb),
        conflict,
        "B REGISTER again",
    );
    assert_status(
        &pr_out(&mut a, Reserve, we_ro, ka, 0),
        good,
        "A RESERVE WE_RO",
    );

    assert_status(
        &pr_out(&mut b, Reserve, we_ro, kb, 0),
        conflict,
        "B RESERVE",
    );
    assert_status(&write_block(&mut b, 1, 0xb0), good, "registrant B WRITE");
    assert_status(
        &write_block(&mut c, 1, 0xc0),
        conflict,
        "non-registrant C WRITE",
    );
    assert_status(&read_block(&mut c, 1).0, good, "non-registrant C READ");

    assert_eq!(read_keys(&mut c), sorted(vec![ka, kb]));
    let res = read_reservation(&mut c).reservation.expect("a reservation");
    assert_eq!((res.key, res.pr_type()), (ka, we_ro));

    // B preempts A: A loses its registration and the reservation.
    assert_status(&pr_out(&mut b, Preempt, we_ro, kb, ka), good, "B PREEMPT A");
    // tgt: the preempted nexus gets 2A/03 RESERVATIONS PREEMPTED (SPC-4 would
    // say 2A/05 REGISTRATIONS PREEMPTED), then RESERVATION CONFLICT.
    assert_ua(
        &write_block(&mut a, 1, 0xa0),
        0x2a,
        0x03,
        "A after preemption",
    );
    assert_status(&write_block(&mut a, 1, 0xa1), conflict, "A WRITE");
    assert_eq!(read_keys(&mut c), vec![kb]);
    let res = read_reservation(&mut c)
        .reservation
        .expect("B's reservation");
    assert_eq!((res.key, res.pr_type()), (kb, we_ro));

    // Clean up: B clears everything; a fresh initiator sees nothing.
    assert_status(&pr_out(&mut b, Clear, None, kb, 0), good, "B CLEAR");
    let mut d = connect(&lun, "d");
    assert!(read_keys(&mut d).is_empty());
    assert_eq!(read_reservation(&mut d).reservation, None);
    assert_status(&write_block(&mut d, 1, 0xd0), good, "D WRITE after CLEAR");
}

/// Acceptance 3: the Caching mode page, WCE toggled and restored.
#[test]
fn caching_mode_page_toggle_and_restore() {
    let Some((_tgt, lun)) = setup("caching_mode_page_toggle_and_restore") else {
        return;
    };
    let mut a = connect(&lun, "a");
    let sense6 = |t: &mut IscsiTransport, pc: PageControl| {
        let mut buf = [0u8; 255];
        let r = run(
            t,
            &cdb::mode_sense6(0x08, 0, pc, true, 255),
            DataBuffer::FromDevice(&mut buf),
        );
        assert_status(&r, ScsiStatus::Good, "MODE SENSE(6)");
        let len = buf.len() - r.residual as usize;
        ModeSense::parse6(&buf[..len])
            .unwrap()
            .caching_page()
            .unwrap()
    };
    let original = sense6(&mut a, PageControl::Current);
    let changeable = sense6(&mut a, PageControl::Changeable);
    assert!(changeable.wce, "tgt lets WCE be changed: {changeable:?}");

    let select = |t: &mut IscsiTransport, page: &fts_scsi::CachingPage| {
        let params = page.mode_select6_params();
        let r = run(
            t,
            &cdb::mode_select6(false, params.len() as u8),
            DataBuffer::ToDevice(&params),
        );
        assert_status(&r, ScsiStatus::Good, "MODE SELECT(6)");
    };
    let toggled = fts_scsi::CachingPage {
        wce: !original.wce,
        ..original
    };
    select(&mut a, &toggled);
    let now = sense6(&mut a, PageControl::Current);
    assert_eq!(now.wce, !original.wce, "{now:?}");
    assert_eq!(now, toggled);

    select(&mut a, &original);
    assert_eq!(sense6(&mut a, PageControl::Current), original);
}

/// Acceptance 4: a dropped connection is reported, not hidden; reconnect()
/// logs in again with the same IQN and ISID and bumps the epoch.
///
/// tgt: what survives is *not* what SPC promises. tgt 1.0.85 identifies an
/// I_T nexus by its session (TSIH), not by IQN + ISID, so the reconnected
/// session is a new nexus: the SCSI-2 reservation died with the old session,
/// and the PR registration stays behind as an orphan — READ KEYS still lists
/// the key, but the new session is not registered. The recovery is
/// REGISTER AND IGNORE EXISTING KEY, then PREEMPT of the own key, which
/// removes the orphan (and would take over a reservation it held).
#[test]
fn dropped_connection_and_reconnect() {
    let Some((tgt, lun)) = setup("dropped_connection_and_reconnect") else {
        return;
    };
    let mut a = connect(&lun, "a");
    let mut b = connect(&lun, "b");
    let ka = pr_key_for(&iqn("a"));
    let good = ScsiStatus::Good;
    let conflict = ScsiStatus::ReservationConflict;
    use PrOutServiceAction::{Preempt, Register, RegisterAndIgnoreExistingKey};
    assert_status(&pr_out(&mut a, Register, None, 0, ka), good, "A REGISTER");
    assert_status(
        &run(&mut a, &cdb::reserve6(), DataBuffer::None),
        good,
        "A RESERVE(6)",
    );
    assert_status(&write_block(&mut b, 2, 0xb0), conflict, "B");

    assert_eq!(tgt.drop_connections(&lun, &iqn("a")).unwrap(), 1);
    let started = Instant::now();
    let e = a
        .execute(&cdb::test_unit_ready(), DataBuffer::None, T)
        .unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    assert!(started.elapsed() < T, "took {:?}", started.elapsed());
    // Until reconnect(), everything says Disconnected (no hidden re-login).
    let e = a
        .execute(&cdb::test_unit_ready(), DataBuffer::None, T)
        .unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    assert!(!a.is_connected());
    assert_eq!(a.epoch(), 1);

    a.reconnect().unwrap();
    assert_eq!(a.epoch(), 2);
    assert!(a.is_connected());
    // reconnect() does not consume unit attentions: tgt reports 29/00 on the
    // new session's first command.
    assert_ua(
        &tur(&mut a),
        0x29,
        0x00,
        "A's first command after reconnect",
    );
    assert_status(&tur(&mut a), good, "A after the UA");
    // The RESERVE(6) died with the old session.
    assert_status(&write_block(&mut b, 2, 0xb1), good, "B after A's drop");

    // The key is still listed ...
    assert_eq!(read_keys(&mut b), vec![ka]);
    // ... but belongs to the dead session: the new one is not registered.
    assert_status(
        &pr_out(&mut a, Register, None, ka, ka),
        conflict,
        "A REGISTER ka→ka",
    );
    // Recovery: register again (the key now appears twice), then preempt the
    // own key, which removes every registration with it except the caller's.
    assert_status(
        &pr_out(&mut a, RegisterAndIgnoreExistingKey, None, 0, ka),
        good,
        "A REGISTER AND IGNORE EXISTING KEY",
    );
    assert_eq!(read_keys(&mut b), vec![ka, ka]);
    assert_status(
        &pr_out(
            &mut a,
            Preempt,
            Some(PrType::WriteExclusiveRegistrantsOnly),
            ka,
            ka,
        ),
        good,
        "A PREEMPT own key",
    );
    assert_eq!(read_keys(&mut b), vec![ka]);
    assert_status(
        &pr_out(&mut a, Register, None, ka, ka),
        good,
        "A registered again",
    );
}

/// tgt: a persistent reservation outlives its holder's session (held by the
/// orphaned registration, see `dropped_connection_and_reconnect`) until the
/// reconnected holder re-registers and preempts its own key.
#[test]
fn persistent_reservation_survives_session_loss() {
    let Some((tgt, lun)) = setup("persistent_reservation_survives_session_loss") else {
        return;
    };
    let mut a = connect(&lun, "a");
    let mut c = connect(&lun, "c");
    let ka = pr_key_for(&iqn("a"));
    let we_ro = Some(PrType::WriteExclusiveRegistrantsOnly);
    let good = ScsiStatus::Good;
    let conflict = ScsiStatus::ReservationConflict;
    use PrOutServiceAction::{Preempt, Register, RegisterAndIgnoreExistingKey, Release, Reserve};
    assert_status(&pr_out(&mut a, Register, None, 0, ka), good, "A REGISTER");
    assert_status(&pr_out(&mut a, Reserve, we_ro, ka, 0), good, "A RESERVE");

    assert_eq!(tgt.drop_connections(&lun, &iqn("a")).unwrap(), 1);
    let e = a
        .execute(&cdb::test_unit_ready(), DataBuffer::None, T)
        .unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    // Still reserved by the dead session: others stay fenced.
    let res = read_reservation(&mut c)
        .reservation
        .expect("still reserved");
    assert_eq!((res.key, res.pr_type()), (ka, we_ro));
    assert_status(&write_block(&mut c, 3, 0xc0), conflict, "C while A is away");

    a.reconnect().unwrap();
    assert_ua(
        &tur(&mut a),
        0x29,
        0x00,
        "A's first command after reconnect",
    );
    // The reconnected holder is fenced by its own reservation and cannot
    // release it with its key ...
    assert_status(&write_block(&mut a, 3, 0xa0), conflict, "A WRITE");
    assert_status(
        &pr_out(&mut a, Release, we_ro, ka, 0),
        conflict,
        "A RELEASE",
    );
    // ... until it registers again and preempts its own key.
    assert_status(
        &pr_out(&mut a, RegisterAndIgnoreExistingKey, None, 0, ka),
        good,
        "A REGISTER AND IGNORE EXISTING KEY",
    );
    assert_status(
        &pr_out(&mut a, Preempt, we_ro, ka, ka),
        good,
        "A PREEMPT own key",
    );
    assert_eq!(read_keys(&mut c), vec![ka]);
    let res = read_reservation(&mut c)
        .reservation
        .expect("A's reservation");
    assert_eq!((res.key, res.pr_type()), (ka, we_ro));
    assert_status(&write_block(&mut a, 3, 0xa1), good, "A holds it again");
    assert_status(&write_block(&mut c, 3, 0xc1), conflict, "C still fenced");
    assert_status(&pr_out(&mut a, Release, we_ro, ka, 0), good, "A RELEASE");
    assert_status(
        &pr_out(&mut a, Register, None, ka, 0),
        good,
        "A unregisters",
    );
    assert!(read_keys(&mut c).is_empty());
}

/// A TCP relay between the initiator and tgtd that can be frozen (stops
/// forwarding in both directions), to make the target look hung.
struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = Arc::clone(&f);
                    std::thread::spawn(move || Relay::pump(from, to, &f));
                }
            }
        });
        Relay { port, frozen }
    }

    fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
        from.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // Whatever arrives while frozen is held back.
                    while frozen.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// A target that stops answering mid-session: the command fails with
/// `Error::Timeout` at its deadline (not libiscsi's whole seconds), the
/// session is closed, and reconnect() works once the target is back.
#[test]
fn hung_target_times_out() {
    let Some((_tgt, lun)) = setup("hung_target_times_out") else {
        return;
    };
    let url = IscsiUrl::parse(&lun.url).unwrap();
    let relay = Relay::start(url.portal());
    let relayed = format!(
        "iscsi://127.0.0.1:{}/{}/{}",
        relay.port, url.target, url.lun
    );
    let mut a = IscsiTransport::connect(&relayed, &iqn("a"), T).unwrap();
    assert_status(&tur(&mut a), ScsiStatus::Good, "TUR through the relay");

    relay.frozen.store(true, Ordering::SeqCst);
    let limit = Duration::from_millis(1500);
    let started = Instant::now();
    let e = a
        .execute(&cdb::test_unit_ready(), DataBuffer::None, limit)
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, Error::Timeout { opcode: 0x00, after, .. } if after == limit),
        "{e:?}"
    );
    assert!(
        took >= limit && took < limit + Duration::from_millis(500),
        "{took:?}"
    );
    // The session was closed: the command cannot complete behind our back.
    let e = a
        .execute(&cdb::test_unit_ready(), DataBuffer::None, T)
        .unwrap_err();
    assert!(
        e.is_disconnected() && e.to_string().contains("timed out"),
        "{e}"
    );
    assert!(!a.is_connected());

    relay.frozen.store(false, Ordering::SeqCst);
    a.reconnect().unwrap();
    assert_eq!(a.epoch(), 2);
    let r = tur(&mut a);
    assert!(r.is_good() || r.is_unit_attention(), "{r:?}");
}

/// A target that accepts the TCP connection and then says nothing: the
/// login is bounded by the timeout.
#[test]
fn silent_portal_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("iscsi://127.0.0.1:{port}/iqn.2026-11.invalid.fts:silent/1");
    let started = Instant::now();
    let e = match IscsiTransport::connect(&url, &iqn("a"), Duration::from_millis(1500)) {
        Err(e) => e,
        Ok(_) => panic!("connected to a silent portal"),
    };
    let took = started.elapsed();
    drop(listener);
    let msg = e.to_string();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("no answer from portal 127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// Acceptance 5: connect errors say what is wrong.
#[test]
fn connect_errors_are_clear() {
    let connect_err = |url: &str| match IscsiTransport::connect(url, &iqn("a"), T) {
        Err(Error::Connect { target, detail }) => {
            assert_eq!(target, url);
            detail
        }
        Err(e) => panic!("{url}: not a Connect error: {e:?}"),
        Ok(_) => panic!("{url}: connected"),
    };

    // Malformed URLs (no target needed).
    for (url, why) in [
        ("iscsi://127.0.0.1/iqn.2026-11.invalid.fts:t", "missing LUN"),
        (
            "iscsi://127.0.0.1:http/iqn.2026-11.invalid.fts:t/1",
            "bad port",
        ),
        (
            "iscsi://127.0.0.1:99999/iqn.2026-11.invalid.fts:t/1",
            "bad port",
        ),
        (
            "iscsi://127.0.0.1/iqn.2026-11.invalid.fts:t/lun1",
            "bad LUN",
        ),
        ("iscsi://127.0.0.1", "missing target"),
        ("http://127.0.0.1/iqn.2026-11.invalid.fts:t/1", "iscsi://"),
    ] {
        let d = connect_err(url);
        assert!(d.contains(why), "{url}: {d}");
        assert!(
            d.contains("iscsi://host[:port]/target-iqn/lun"),
            "{url}: {d}"
        );
    }

    // Nothing listening: a port that was just free (another test may grab
    // it in between, hence a few tries).
    let refused = (0..5).find_map(|_| {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = connect_err(&format!(
            "iscsi://127.0.0.1:{port}/iqn.2026-11.invalid.fts:t/1"
        ));
        d.contains(&format!("connection refused at portal 127.0.0.1:{port}"))
            .then_some(d)
    });
    assert!(refused.is_some(), "never saw a refused connection");

    let Some((_tgt, lun)) = setup("connect_errors_are_clear") else {
        return;
    };
    let (base, _lun_no) = lun.url.rsplit_once('/').unwrap();
    let (portal_url, _target) = base.rsplit_once('/').unwrap();
    let d = connect_err(&format!(
        "{portal_url}/iqn.2026-11.invalid.fts:no-such-target/1"
    ));
    assert!(
        d.contains("has no target named iqn.2026-11.invalid.fts:no-such-target"),
        "{d}"
    );
    let d = connect_err(&format!("{base}/7"));
    assert!(
        d.contains(&format!("target {} has no LUN 7", lun.iqn)),
        "{d}"
    );
}
