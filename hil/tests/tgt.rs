//! The tgt harness against a real `tgtd`.
//!
//! Every test starts its own daemon(s) on their own ports, so they run in
//! parallel. Without tgt or root they skip through [`hil::skip`] (a SKIPPED
//! banner on the real stderr, counted by `cargo xtask ci`), or fail with
//! `CI` set.
//!
//! Sessions come from [`MiniInitiator`], a few dozen lines of iSCSI (login
//! straight to full feature phase, SCSI commands with immediate data) so
//! that the tests need no initiator package and sessions stay idle until
//! the test acts.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hil::{Error, Tgtd, TgtdOptions};

/// Pids of processes whose command line contains `tgtd -f -C <port> `.
fn tgtd_pids(control_port: u16) -> Vec<u32> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("tgtd -f -C {control_port} "))
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().expect("pgrep prints pids"))
        .collect()
}

fn assert_portal_closed(portal: &str) {
    match TcpStream::connect_timeout(&portal.parse().expect("portal"), Duration::from_secs(2)) {
        Ok(_) => panic!("something still listens on {portal}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{portal}: {e}"),
    }
}

/// Starts a second daemon for tests that need one (the first
/// [`hil::start_or_skip`] already decided whether tgt can run), or fails.
fn start() -> Tgtd {
    Tgtd::start(TgtdOptions::default()).expect("start tgtd")
}

// ---------------------------------------------------------------------------
// A minimal iSCSI initiator.

const GOOD: u8 = 0;
const CHECK_CONDITION: u8 = 2;
const UNIT_ATTENTION: u8 = 6;

struct MiniInitiator {
    stream: TcpStream,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
}

struct ScsiResult {
    status: u8,
    data: Vec<u8>,
    sense_key: Option<u8>,
}

impl MiniInitiator {
    /// Logs `initiator` in to `target` and goes straight to full feature
    /// phase (no security negotiation, all operational keys at their RFC 7143
    /// defaults: immediate data yes, no digests).
    fn login(portal: &str, initiator: &str, target: &str, isid: u8) -> MiniInitiator {
        let stream = TcpStream::connect(portal).expect("connect to portal");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        let mut me = MiniInitiator {
            stream,
            cmd_sn: 0,
            exp_stat_sn: 0,
            itt: 1,
        };
        let mut data = Vec::new();
        for kv in [
            format!("InitiatorName={initiator}"),
            "SessionType=Normal".to_owned(),
            format!("TargetName={target}"),
            "HeaderDigest=None".to_owned(),
            "DataDigest=None".to_owned(),
        ] {
            data.extend_from_slice(kv.as_bytes());
            data.push(0);
        }
        let mut bhs = [0u8; 48];
        bhs[0] = 0x40 | 0x03; // immediate, Login Request
        bhs[1] = 0x80 | (1 << 2) | 3; // Transit, CSG operational, NSG full feature
        bhs[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, isid]); // ISID, random format
        bhs[16..20].copy_from_slice(&me.itt.to_be_bytes());
        me.send(bhs, &data);
        let (rsp, _) = me.recv();
        assert_eq!(rsp[0] & 0x3f, 0x23, "login response opcode");
        assert_eq!((rsp[36], rsp[37]), (0, 0), "login status class/detail");
        assert_eq!(rsp[1] & 0x83, 0x83, "target transits to full feature phase");
        me.exp_stat_sn = be32(&rsp[24..28]).wrapping_add(1);
        me.cmd_sn = be32(&rsp[28..32]); // ExpCmdSN
        me
    }

    fn send(&mut self, mut bhs: [u8; 48], data: &[u8]) {
        let len = u32::try_from(data.len()).expect("small data");
        bhs[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
        let mut pdu = bhs.to_vec();
        pdu.extend_from_slice(data);
        pdu.resize(pdu.len().next_multiple_of(4), 0);
        self.stream.write_all(&pdu).expect("send PDU");
    }

    fn recv(&mut self) -> ([u8; 48], Vec<u8>) {
        let mut bhs = [0u8; 48];
        self.stream.read_exact(&mut bhs).expect("receive BHS");
        let ahs = usize::from(bhs[4]) * 4;
        let dlen = usize::try_from(be32(&[0, bhs[5], bhs[6], bhs[7]])).expect("usize");
        let mut rest = vec![0u8; ahs + dlen.next_multiple_of(4)];
        self.stream.read_exact(&mut rest).expect("receive data");
        (bhs, rest[ahs..ahs + dlen].to_vec())
    }

    /// Sends one command to LUN 1 (data out as immediate data) and collects
    /// the data in and status.
    fn scsi(&mut self, cdb: &[u8], data_out: &[u8], read_len: u32) -> ScsiResult {
        self.itt += 1;
        let mut bhs = [0u8; 48];
        bhs[0] = 0x01;
        bhs[1] = 0x80 | 0x01; // Final, SIMPLE task attribute
        if read_len > 0 {
            bhs[1] |= 0x40;
        }
        if !data_out.is_empty() {
            bhs[1] |= 0x20;
        }
        bhs[9] = 1; // LUN 1
        bhs[16..20].copy_from_slice(&self.itt.to_be_bytes());
        let xfer = read_len.max(u32::try_from(data_out.len()).expect("small"));
        bhs[20..24].copy_from_slice(&xfer.to_be_bytes());
        bhs[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        bhs[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        bhs[32..32 + cdb.len()].copy_from_slice(cdb);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(bhs, data_out);
        let mut data = Vec::new();
        loop {
            let (rsp, seg) = self.recv();
            match rsp[0] & 0x3f {
                0x25 => {
                    // Data-In, possibly with status (S bit).
                    data.extend_from_slice(&seg);
                    if rsp[1] & 0x01 != 0 {
                        self.exp_stat_sn = be32(&rsp[24..28]).wrapping_add(1);
                        return ScsiResult {
                            status: rsp[3],
                            data,
                            sense_key: None,
                        };
                    }
                }
                0x21 => {
                    self.exp_stat_sn = be32(&rsp[24..28]).wrapping_add(1);
                    // Sense data: 2-byte length, then fixed (0x70/0x71) or
                    // descriptor (0x72/0x73) format.
                    let sense_key = (seg.len() > 4).then(|| match seg[2] & 0x7f {
                        0x72 | 0x73 => seg[3] & 0x0f,
                        _ => seg[4] & 0x0f,
                    });
                    return ScsiResult {
                        status: rsp[3],
                        data,
                        sense_key,
                    };
                }
                0x20 => {} // NOP-In (tgt sends none unless nop_interval is set)
                op => panic!("unexpected PDU opcode {op:#x}"),
            }
        }
    }

    /// [`Self::scsi`], repeated while the LU reports a unit attention.
    fn scsi_past_ua(&mut self, cdb: &[u8], data_out: &[u8], read_len: u32) -> ScsiResult {
        for _ in 0..5 {
            let r = self.scsi(cdb, data_out, read_len);
            if !(r.status == CHECK_CONDITION && r.sense_key == Some(UNIT_ATTENTION)) {
                return r;
            }
        }
        panic!("unit attentions do not stop");
    }

    fn test_unit_ready(&mut self) -> u8 {
        self.scsi_past_ua(&[0; 6], &[], 0).status
    }

    /// PERSISTENT RESERVE IN, READ KEYS: the registered keys.
    fn read_keys(&mut self) -> Vec<u64> {
        let r = self.scsi_past_ua(&[0x5e, 0x00, 0, 0, 0, 0, 0, 1, 0, 0], &[], 256);
        assert_eq!(r.status, GOOD, "READ KEYS");
        let len = usize::try_from(be32(&r.data[4..8])).expect("usize");
        r.data[8..8 + len]
            .chunks(8)
            .map(|k| u64::from_be_bytes(k.try_into().expect("8 bytes")))
            .collect()
    }

    /// PERSISTENT RESERVE OUT, REGISTER `key`.
    fn register(&mut self, key: u64) -> u8 {
        let mut params = [0u8; 24];
        params[8..16].copy_from_slice(&key.to_be_bytes());
        self.scsi_past_ua(&[0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0], &params, 0)
            .status
    }

    /// INQUIRY with EVPD: the VPD page's payload.
    fn vpd(&mut self, page: u8) -> Vec<u8> {
        let r = self.scsi_past_ua(&[0x12, 0x01, page, 0, 255, 0], &[], 255);
        assert_eq!(r.status, GOOD, "INQUIRY VPD {page:#x}");
        r.data[4..].to_vec()
    }

    /// Whether the target has closed the connection.
    fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn start_and_stop_leave_no_process_or_socket() {
    let Some(tgtd) = hil::start_or_skip("start_and_stop_leave_no_process_or_socket") else {
        return;
    };
    let port = tgtd.control_port();
    let pid = tgtd.pid();
    let portal = tgtd.portal();
    assert!(portal.starts_with("127.0.0.1:"), "{portal}");
    assert_eq!(tgtd_pids(port), vec![pid]);
    let socket = format!("/var/run/tgtd/socket.{port}");
    assert!(Path::new(&socket).exists());
    TcpStream::connect(&portal).expect("tgtd listens on its portal");

    tgtd.stop().expect("clean stop");
    assert_eq!(tgtd_pids(port), Vec::<u32>::new());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
    assert!(!Path::new(&socket).exists(), "control socket removed");
    assert!(
        !Path::new(&format!("{socket}.lock")).exists(),
        "lock removed"
    );
    assert_portal_closed(&portal);
}

#[test]
fn drop_tears_down_targets_with_live_sessions() {
    let Some(mut tgtd) = hil::start_or_skip("drop_tears_down_targets_with_live_sessions") else {
        return;
    };
    let a = tgtd.add_lun(1 << 20, 512).expect("add_lun");
    let b = tgtd.add_lun(1 << 20, 4096).expect("add_lun");
    let mut s1 = MiniInitiator::login(&tgtd.portal(), "iqn.2026-11.invalid.test:one", &a.iqn, 1);
    let mut s2 = MiniInitiator::login(&tgtd.portal(), "iqn.2026-11.invalid.test:two", &b.iqn, 2);
    assert_eq!(s1.test_unit_ready(), GOOD);
    assert_eq!(s2.test_unit_ready(), GOOD);
    let (port, portal, pid) = (tgtd.control_port(), tgtd.portal(), tgtd.pid());
    let dir = tgtd.work_dir().to_path_buf();
    assert!(a.backing.starts_with(&dir));

    let t0 = Instant::now();
    drop(tgtd);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(tgtd_pids(port), Vec::<u32>::new());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_portal_closed(&portal);
    assert!(s1.is_closed() && s2.is_closed(), "sessions closed");
    assert!(!dir.exists(), "default work dir removed with the daemon");
}

#[test]
fn two_daemons_side_by_side() {
    let Some(mut one) = hil::start_or_skip("two_daemons_side_by_side") else {
        return;
    };
    let mut two = start();
    assert_ne!(one.control_port(), two.control_port());
    assert_ne!(one.portal(), two.portal());
    let l1 = one.add_lun(1 << 20, 4096).expect("add_lun");
    let l2 = two.add_lun(1 << 20, 4096).expect("add_lun");
    assert_eq!((l1.tid, l2.tid), (1, 1));
    assert_ne!(l1.iqn, l2.iqn);
    assert_ne!(l1.scsi_id, l2.scsi_id);
    assert_ne!(l1.scsi_sn, l2.scsi_sn);
    assert_ne!(l1.backing, l2.backing);

    // Each daemon knows only its own target.
    let t1 = one.targets().expect("targets");
    let t2 = two.targets().expect("targets");
    assert_eq!(t1.len(), 1);
    assert_eq!(t2.len(), 1);
    assert_eq!(t1[0].iqn, l1.iqn);
    assert_eq!(t2[0].iqn, l2.iqn);
    assert_eq!(t1[0].lus[1].scsi_id, l1.scsi_id);
    assert_eq!(t2[0].lus[1].scsi_sn, l2.scsi_sn);

    // Initiators see different serial numbers and device identifiers.
    let mut s1 = MiniInitiator::login(&one.portal(), "iqn.2026-11.invalid.test:x", &l1.iqn, 1);
    let mut s2 = MiniInitiator::login(&two.portal(), "iqn.2026-11.invalid.test:x", &l2.iqn, 1);
    let sn1 = s1.vpd(0x80);
    let sn2 = s2.vpd(0x80);
    assert_eq!(String::from_utf8_lossy(&sn1).trim(), l1.scsi_sn);
    assert_eq!(String::from_utf8_lossy(&sn2).trim(), l2.scsi_sn);
    let (id1, id2) = (s1.vpd(0x83), s2.vpd(0x83));
    assert_ne!(id1, id2);
    // The NAA-6 designator (the last one, 16 bytes) differs too; the NAA-3
    // one (tid << 32 | lun) cannot.
    assert_ne!(id1[id1.len() - 16..], id2[id2.len() - 16..]);

    // Stopping one leaves the other serving.
    let (port1, portal1) = (one.control_port(), one.portal());
    one.stop().expect("stop");
    assert_eq!(tgtd_pids(port1), Vec::<u32>::new());
    assert_portal_closed(&portal1);
    assert!(s1.is_closed());
    assert_eq!(s2.test_unit_ready(), GOOD);
    assert_eq!(two.targets().expect("targets").len(), 1);
}

#[test]
fn add_lun_creates_sparse_backing_files() {
    let Some(mut tgtd) = hil::start_or_skip("add_lun_creates_sparse_backing_files") else {
        return;
    };
    let l1 = tgtd.add_lun(64 << 20, 4096).expect("add_lun");
    let l2 = tgtd.add_lun(3 << 20, 512).expect("add_lun");
    assert_eq!((l1.tid, l2.tid), (1, 2));
    let pid = std::process::id();
    assert_eq!(
        l1.iqn,
        format!(
            "iqn.2026-11.invalid.fts-hil:{pid}-{}-t1",
            tgtd.control_port()
        )
    );
    assert_eq!(l1.url, format!("iscsi://{}/{}/1", tgtd.portal(), l1.iqn));
    for (lun, size, bs) in [(&l1, 64u64 << 20, 4096u32), (&l2, 3 << 20, 512)] {
        let meta = fs::metadata(&lun.backing).expect("backing file");
        assert_eq!(meta.len(), size);
        assert!(
            meta.blocks() * 512 < size,
            "sparse: {} blocks",
            meta.blocks()
        );
        assert_eq!((lun.size_bytes, lun.block_size), (size, bs));
    }
    let targets = tgtd.targets().expect("targets");
    assert_eq!(targets.len(), 2);
    for (t, lun) in targets.iter().zip([&l1, &l2]) {
        assert_eq!((t.tid, t.iqn.as_str()), (lun.tid, lun.iqn.as_str()));
        let lu = &t.lus[1];
        assert_eq!(lu.lun, 1);
        assert_eq!(lu.device_type, "disk");
        assert_eq!(lu.block_size, lun.block_size);
        assert_eq!(lu.backing_path.as_deref(), Some(lun.backing.as_path()));
        assert_eq!(
            (lu.scsi_id.as_str(), lu.scsi_sn.as_str()),
            (lun.scsi_id.as_str(), lun.scsi_sn.as_str())
        );
    }

    // READ CAPACITY (16) through a session agrees.
    let mut s = MiniInitiator::login(&tgtd.portal(), "iqn.2026-11.invalid.test:cap", &l1.iqn, 1);
    let r = s.scsi_past_ua(
        &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
        32,
    );
    assert_eq!(r.status, GOOD);
    let last_lba = u64::from_be_bytes(r.data[0..8].try_into().expect("8"));
    assert_eq!(last_lba + 1, (64 << 20) / 4096);
    assert_eq!(be32(&r.data[8..12]), 4096);

    for (size, bs) in [(0, 512), (1000, 512), (1 << 20, 500), (1 << 20, 256)] {
        assert!(
            matches!(tgtd.add_lun(size, bs), Err(Error::InvalidArgument { .. })),
            "{size} {bs}"
        );
    }
}

#[test]
fn work_dir_option_keeps_backing_files() {
    let Some(first) = hil::start_or_skip("work_dir_option_keeps_backing_files") else {
        return;
    };
    drop(first);
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("nested");
    let mut tgtd = Tgtd::start(TgtdOptions {
        work_dir: Some(work.clone()),
        ..TgtdOptions::default()
    })
    .expect("start");
    let lun = tgtd.add_lun(1 << 20, 4096).expect("add_lun");
    assert!(lun.backing.starts_with(&work));
    drop(tgtd);
    assert!(lun.backing.exists(), "a given work dir is left alone");
}

#[test]
fn reset_lun_clears_reservations_and_keeps_data() {
    let Some(mut tgtd) = hil::start_or_skip("reset_lun_clears_reservations_and_keeps_data") else {
        return;
    };
    let lun = tgtd.add_lun(4 << 20, 4096).expect("add_lun");
    // Data written behind tgt's back (it opens the file without O_DIRECT).
    let mut content = fs::read(&lun.backing).expect("read backing");
    content[8192..8200].copy_from_slice(b"survives");
    fs::write(&lun.backing, &content).expect("write backing");

    let mut s = MiniInitiator::login(&tgtd.portal(), "iqn.2026-11.invalid.test:pr", &lun.iqn, 1);
    assert_eq!(s.read_keys(), Vec::<u64>::new());
    assert_eq!(s.register(0xa1), GOOD);
    assert_eq!(s.read_keys(), vec![0xa1]);

    tgtd.reset_lun(&lun).expect("reset_lun");
    // The session survives (after a unit attention); the registration does not.
    assert_eq!(s.read_keys(), Vec::<u64>::new());
    assert_eq!(s.test_unit_ready(), GOOD);
    let targets = tgtd.targets().expect("targets");
    let lu = &targets[0].lus[1];
    assert_eq!(
        (lu.scsi_id.as_str(), lu.block_size),
        (lun.scsi_id.as_str(), 4096)
    );
    let after = fs::read(&lun.backing).expect("read backing");
    assert_eq!(after.len(), 4 << 20);
    assert_eq!(&after[8192..8200], b"survives");

    // Twice in a row is fine; an unknown target is refused.
    tgtd.reset_lun(&lun).expect("reset_lun again");
    let mut other = lun.clone();
    other.tid = 9;
    assert!(matches!(
        tgtd.reset_lun(&other),
        Err(Error::UnknownTarget { tid: 9, .. })
    ));
    // After a failed reset attempt the LU is still there.
    assert_eq!(s.test_unit_ready(), GOOD);
}

#[test]
fn nexuses_and_drop_connections_with_real_sessions() {
    let Some(mut tgtd) = hil::start_or_skip("nexuses_and_drop_connections_with_real_sessions")
    else {
        return;
    };
    let lun = tgtd.add_lun(1 << 20, 512).expect("add_lun");
    let other = tgtd.add_lun(1 << 20, 512).expect("add_lun");
    assert_eq!(tgtd.nexuses(&lun).expect("nexuses"), vec![]);

    let portal = tgtd.portal();
    let mut a = MiniInitiator::login(&portal, "iqn.2026-11.invalid.test:host-a", &lun.iqn, 1);
    let mut b = MiniInitiator::login(&portal, "iqn.2026-11.invalid.test:host-b", &lun.iqn, 2);
    let mut c = MiniInitiator::login(&portal, "iqn.2026-11.invalid.test:host-a", &other.iqn, 3);
    let nexuses = tgtd.nexuses(&lun).expect("nexuses");
    assert_eq!(nexuses.len(), 2, "{nexuses:?}");
    assert_eq!(nexuses[0].initiator, "iqn.2026-11.invalid.test:host-a");
    assert_eq!(nexuses[1].initiator, "iqn.2026-11.invalid.test:host-b");
    assert!(nexuses.iter().all(|n| n.connections == vec![0]));
    assert_ne!(nexuses[0].sid, nexuses[1].sid);

    assert_eq!(
        tgtd.drop_connections(&lun, "no-such-host").expect("drop"),
        0
    );
    assert_eq!(tgtd.drop_connections(&lun, "host-a").expect("drop"), 1);
    assert!(a.is_closed(), "host-a's connection was closed");
    let left = tgtd.nexuses(&lun).expect("nexuses");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].initiator, "iqn.2026-11.invalid.test:host-b");
    assert_eq!(b.test_unit_ready(), GOOD);
    // Only that target's connections were touched.
    assert_eq!(c.test_unit_ready(), GOOD);
    assert_eq!(tgtd.nexuses(&other).expect("nexuses").len(), 1);

    // The initiator can log in again: a new session.
    let mut a2 = MiniInitiator::login(&portal, "iqn.2026-11.invalid.test:host-a", &lun.iqn, 1);
    assert_eq!(a2.test_unit_ready(), GOOD);
    let again = tgtd.nexuses(&lun).expect("nexuses");
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|n| n.sid != nexuses[0].sid), "{again:?}");

    assert_eq!(tgtd.drop_connections(&lun, "").expect("drop all"), 2);
    assert!(a2.is_closed() && b.is_closed());
    assert_eq!(tgtd.nexuses(&lun).expect("nexuses"), vec![]);
    assert!(tgtd.log().contains("close"), "tgt logs closing");
}

#[test]
fn stop_kills_a_wedged_daemon_and_reports_a_dead_one() {
    let Some(wedged) = hil::start_or_skip("stop_kills_a_wedged_daemon_and_reports_a_dead_one")
    else {
        return;
    };
    let mut dead = start();
    dead.add_lun(1 << 20, 512).expect("add_lun");

    // A stopped (SIGSTOP) daemon never answers tgtadm: killed after the
    // teardown tgtadm times out.
    let (port, pid) = (wedged.control_port(), wedged.pid());
    let st = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let t0 = Instant::now();
    let err = wedged
        .stop()
        .expect_err("a wedged daemon is not a clean stop");
    assert!(matches!(err, Error::CommandTimeout { .. }), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert_eq!(tgtd_pids(port), Vec::<u32>::new());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    // A daemon that died under the test is reported.
    let (port, pid) = (dead.control_port(), dead.pid());
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    // Wait until it is a zombie, so that the kill has surely landed.
    let t0 = Instant::now();
    while !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "tgtd survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = dead.stop().expect_err("a dead daemon is reported");
    assert!(matches!(err, Error::DaemonExited { .. }), "{err}");
    assert_eq!(tgtd_pids(port), Vec::<u32>::new());
}

#[test]
fn available_agrees_with_the_machine() {
    let ok = hil::available();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let installed = ["/usr/sbin/tgtd", "/usr/sbin/tgtadm"]
        .iter()
        .all(|p| Path::new(p).exists());
    if root && installed {
        assert_eq!(ok, Ok(()));
    } else {
        let msg = ok.expect_err("unavailable");
        assert!(msg.contains("unavailable"), "{msg}");
    }
}

#[test]
fn ipv6_portal() {
    let Some(first) = hil::start_or_skip("ipv6_portal") else {
        return;
    };
    drop(first);
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        hil::skip::skip("ipv6_portal", &format!("no IPv6 loopback ([::1]): {e}"));
        return;
    }
    let mut tgtd = Tgtd::start(TgtdOptions {
        portal_addr: "::1".to_owned(),
        ..TgtdOptions::default()
    })
    .expect("start on ::1");
    let portal = tgtd.portal();
    assert!(portal.starts_with("[::1]:"), "{portal}");
    let lun = tgtd.add_lun(1 << 20, 512).expect("add_lun");
    assert_eq!(lun.url, format!("iscsi://{portal}/{}/1", lun.iqn));
    let mut s = MiniInitiator::login(&portal, "iqn.2026-11.invalid.test:v6", &lun.iqn, 1);
    assert_eq!(s.test_unit_ready(), GOOD);
    drop(tgtd);
    assert_portal_closed(&portal);
}

#[test]
fn bad_arguments_are_refused() {
    let Some(mut tgtd) = hil::start_or_skip("bad_arguments_are_refused") else {
        return;
    };
    let err = Tgtd::start(TgtdOptions {
        portal_addr: "localhost".to_owned(),
        ..TgtdOptions::default()
    })
    .expect_err("not an IP address");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

    // A Lun of another daemon (same tid, other IQN) is not this one's.
    let mut other = start();
    let mine = tgtd.add_lun(1 << 20, 512).expect("add_lun");
    let theirs = other.add_lun(1 << 20, 512).expect("add_lun");
    assert_eq!(mine.tid, theirs.tid);
    for err in [
        tgtd.nexuses(&theirs).expect_err("foreign"),
        tgtd.reset_lun(&theirs).expect_err("foreign"),
        tgtd.drop_connections(&theirs, "").expect_err("foreign"),
    ] {
        assert!(matches!(err, Error::UnknownTarget { tid: 1, .. }), "{err}");
    }

    // tgtadm refusals carry the command and tgt's message.
    let err = tgtd
        .tgtadm(&[
            "--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", "99",
        ])
        .expect_err("no target 99");
    assert!(err.is_tgtadm_refusal("can't find the target"), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("--tid 99") && msg.contains("can't find the target"),
        "{msg}"
    );
}

/// The rig's `Target` trait over tgtd: a reset through the trait object
/// clears persistent-reservation state and keeps the data.
#[test]
fn tgt_target_resets_through_the_trait() {
    let Some(mut tgtd) = hil::start_or_skip("tgt_target_resets_through_the_trait") else {
        return;
    };
    let lun = tgtd.add_lun(1 << 20, 4096).expect("add_lun");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&lun.backing)
            .expect("open backing");
        f.write_all(&[7u8; 4096]).expect("write backing");
    }
    // PR state to clear: a registered key.
    let mut s = MiniInitiator::login(
        &tgtd.portal(),
        "iqn.2026-11.invalid.test:trait",
        &lun.iqn,
        1,
    );
    assert_eq!(s.register(0xb2), GOOD);
    assert_eq!(s.read_keys(), vec![0xb2]);
    let mut target: Box<dyn hil::Target> = Box::new(hil::TgtTarget {
        tgtd,
        lun: lun.clone(),
    });
    assert_eq!(target.kind(), "tgt");
    assert_eq!(target.url(), lun.url);
    target.reset_lun().expect("reset through the trait");
    // The session survives (after a unit attention); the registration does not.
    assert_eq!(s.read_keys(), Vec::<u64>::new());
    let data = std::fs::read(&lun.backing).expect("read backing");
    assert_eq!(data.len(), 1 << 20, "the LU keeps its size");
    assert_eq!(&data[..4096], &[7u8; 4096][..]);
}
