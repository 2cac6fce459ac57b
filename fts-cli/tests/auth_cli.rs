//! Authentication and sealed segments with real `fts` processes on a
//! file-backed device: trusted, missing, wrong and revoked client keys;
//! impostor servers; handshakes copied from the device and replayed in
//! both directions; no plaintext and no key bytes on the device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use fts_layout::{CmdArea, Expect, Lease, Mcb, PidEntry, Role, Stamp, LB, RECORD_SIZE};
use robust_common::{fts, run, text, wait_output, wait_until, Rig, DEADLINE};

const EXIT_AUTH: i32 = 14;
const MARKER: &[u8] = b"MARKER-7f3e-the-plaintext-must-not-reach-the-disk";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `fts keygen DIR/NAME`; the key file's path.
fn keygen(rig: &Rig, name: &str) -> PathBuf {
    let path = rig.local(name);
    let o = run(
        {
            let mut c = fts();
            c.args(["keygen", s(&path), "--comment", name]);
            c
        },
        DEADLINE,
        "keygen",
    );
    assert!(o.status.success(), "{}", text(&o));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new key file is readable by its owner only");
    path
}

fn pub_line(key: &Path) -> String {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    std::fs::read_to_string(PathBuf::from(p)).unwrap()
}

fn client(rig: &Rig, name: &str, key: Option<&Path>, args: &[&str]) -> Output {
    let mut full: Vec<&str> = Vec::new();
    if let Some(k) = key {
        full.extend(["--key-file", s(k)]);
    }
    full.extend(args);
    rig.client(name, &full)
}

fn assert_auth_failure(o: &Output, side: &str, why: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(EXIT_AUTH), "{t}");
    assert!(t.contains("authentication failed"), "{t}");
    assert!(t.contains(side), "expected {side:?}: {t}");
    assert!(t.contains(why), "expected {why:?}: {t}");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn device(rig: &Rig) -> Vec<u8> {
    std::fs::read(&rig.dev).unwrap()
}

fn layout_id(dev: &[u8]) -> u64 {
    Mcb::decode(&dev[5 * LB..6 * LB]).unwrap().layout_id()
}

/// LB of Process Id Table entry `slot` (FORMAT.md: 8 + (s-1) × 3).
fn entry_lb(slot: u32) -> usize {
    8 + (slot as usize - 1) * 3
}

fn read_entry(dev: &[u8], slot: u32) -> Option<PidEntry> {
    let at = entry_lb(slot) * LB;
    PidEntry::decode(
        &dev[at..at + RECORD_SIZE],
        Expect::exact(layout_id(dev), slot),
    )
    .ok()
}

fn write_at(rig: &Rig, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&rig.dev)
        .unwrap();
    f.write_all_at(bytes, offset as u64).unwrap();
    f.sync_all().unwrap();
}

fn write_entry(rig: &Rig, id: u64, e: &PidEntry) {
    let mut lb = vec![0u8; LB];
    lb[..RECORD_SIZE].copy_from_slice(&e.encode(Stamp::new(id, e.pro_process_id)));
    write_at(rig, entry_lb(e.pro_process_id) * LB, &lb);
}

/// An attacker's write of the initiator's lease LB of `slot`: a live lease
/// of `generation` and `cmd` in the command area.
fn write_initiator_lb(rig: &Rig, id: u64, slot: u32, generation: u64, counter: u64, cmd: &[u8]) {
    let stamp = Stamp::new(id, slot);
    let mut lb = vec![0u8; LB];
    let lease = Lease {
        role: Role::Initiator,
        state: fts_layout::LEASE_ALIVE,
        generation,
        counter,
        timestamp: 0,
        host: uuid::Uuid::nil(),
        pid: 4242,
    };
    lb[..RECORD_SIZE].copy_from_slice(&lease.encode(stamp));
    let area = CmdArea {
        generation,
        data: cmd.to_vec(),
    };
    lb[RECORD_SIZE..2 * RECORD_SIZE].copy_from_slice(&area.encode(stamp));
    write_at(rig, (entry_lb(slot) + 1) * LB, &lb);
}

/// A client connection held open: `fts shell srv` whose standard input
/// stays open until the returned child's stdin is dropped.
fn hold_connection(rig: &Rig, key: &Path) -> Child {
    rig.cmd("holder", &["--key-file", s(key), "shell", "srv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for an accepted (PROCESSING) connection entry in slot 1 and for
/// the initiator's proof in its command area; returns both as on disk.
fn capture_accepted(rig: &Rig) -> (PidEntry, Vec<u8>) {
    let mut got = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let dev = device(rig);
            let id = layout_id(&dev);
            let Some(e) = read_entry(&dev, 1) else {
                return false;
            };
            if !e.is_processing() || e.is_server() {
                return false;
            }
            let at = (entry_lb(1) + 1) * LB + RECORD_SIZE;
            let Ok(cmd) = CmdArea::decode(&dev[at..at + RECORD_SIZE], Expect::exact(id, 1)) else {
                return false;
            };
            if cmd.generation != e.pro_generation || cmd.data.len() != 64 {
                return false;
            }
            got = Some((e, cmd.data));
            true
        }),
        "no authenticated connection appeared in slot 1"
    );
    got.unwrap()
}

fn start_server(rig: &mut Rig, key: &Path, extra: &[&str]) {
    let mut args = vec!["--key-file", s(key)];
    args.extend(extra);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    rig.start(&refs);
}

#[test]
fn one_key_file_admits_its_holders_and_refuses_everyone_else() {
    let mut rig = Rig::format(10_000);
    let k = keygen(&rig, "site.key");
    let other = keygen(&rig, "other.key");
    start_server(&mut rig, &k, &[]);
    let src = rig.local("src.bin");
    std::fs::write(&src, robust_common::random(300_000, 1)).unwrap();

    let o = client(&rig, "alice", Some(&k), &["put", "srv", s(&src), "a.bin"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(rig.root.join("a.bin")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    let back = rig.local("back.bin");
    let o = client(&rig, "alice", Some(&k), &["get", "srv", "a.bin", s(&back)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());

    // No key: refused, nothing created.
    let o = client(&rig, "mallory", None, &["put", "srv", s(&src), "m1.bin"]);
    assert_auth_failure(&o, "the server refused", "requires authentication");
    // A key the server does not trust.
    let o = client(
        &rig,
        "mallory",
        Some(&other),
        &["put", "srv", s(&src), "m2.bin"],
    );
    assert_auth_failure(&o, "the server refused", "does not trust this client's key");
    let stolen = rig.local("stolen.bin");
    let o = client(
        &rig,
        "mallory",
        Some(&other),
        &["get", "srv", "a.bin", s(&stolen)],
    );
    assert_auth_failure(&o, "the server refused", "does not trust this client's key");
    // The refusal says nothing about whether a file exists: a missing one
    // is refused the same way.
    let o2 = client(
        &rig,
        "mallory",
        Some(&other),
        &["get", "srv", "nope.bin", s(&stolen)],
    );
    assert_eq!(o2.status.code(), Some(EXIT_AUTH), "{}", text(&o2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).replace("a.bin", "X"),
        String::from_utf8_lossy(&o2.stderr).replace("nope.bin", "X")
    );
    assert!(!stolen.exists(), "nothing may be written locally");
    let names: Vec<String> = std::fs::read_dir(&rig.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.bin"], "refused puts created nothing: {names:?}");
    let log = rig.server_stderr();
    assert!(log.contains("refused connection"), "{log}");
    assert!(log.contains("\"mallory\""), "{log}");

    // A key file others can read is refused before anything happens.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = client(&rig, "mallory", Some(&other), &["dir", "srv"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("too open"), "{}", text(&o));
}

#[test]
fn removing_a_line_from_authorized_keys_revokes_that_client_only() {
    let mut rig = Rig::format(10_000);
    let srv = keygen(&rig, "srv.key");
    let a = keygen(&rig, "a.key");
    let b = keygen(&rig, "b.key");
    let list = rig.local("authorized");
    std::fs::write(
        &list,
        format!("# clients\n{}{}", pub_line(&a), pub_line(&b)),
    )
    .unwrap();
    let known = rig.local("known");
    std::fs::write(&known, format!("srv {}", pub_line(&srv))).unwrap();
    start_server(&mut rig, &srv, &["--authorized-keys", s(&list)]);
    let src = rig.local("src.bin");
    std::fs::write(&src, b"hello").unwrap();
    let put = |key: &Path, remote: &str| {
        rig.client(
            "c",
            &[
                "--key-file",
                s(key),
                "--known-servers",
                s(&known),
                "put",
                "srv",
                s(&src),
                remote,
            ],
        )
    };
    for (k, r) in [(&a, "a1"), (&b, "b1")] {
        let o = put(k, r);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Revoke b: the server re-reads its list for every connection.
    std::fs::write(&list, pub_line(&a)).unwrap();
    let o = put(&b, "b2");
    assert_auth_failure(&o, "the server refused", "does not trust this client's key");
    assert!(!rig.root.join("b2").exists());
    let o = put(&a, "a2");
    assert!(o.status.success(), "{}", text(&o));
    // The server's own key is not a client key here.
    let o = put(&srv, "s1");
    assert_auth_failure(&o, "the server refused", "does not trust");
}

#[test]
fn an_impostor_server_is_refused_before_any_byte_of_the_file_leaves() {
    let mut rig = Rig::format(10_000);
    let real = keygen(&rig, "real.key");
    let fake = keygen(&rig, "fake.key");
    let known = rig.local("known");
    std::fs::write(&known, format!("srv {}", pub_line(&real))).unwrap();
    // The impostor has its own key, and trusts everyone's key by listing it.
    let list = rig.local("impostor-authorized");
    std::fs::write(&list, pub_line(&real)).unwrap();
    start_server(&mut rig, &fake, &["--authorized-keys", s(&list)]);
    let src = rig.local("secret.bin");
    let mut data = robust_common::random(200_000, 7);
    data.extend_from_slice(MARKER);
    std::fs::write(&src, &data).unwrap();
    let o = client(
        &rig,
        "alice",
        Some(&real),
        &["--known-servers", s(&known), "put", "srv", s(&src), "x.bin"],
    );
    assert_auth_failure(&o, "this client refused", "is not listed for \"srv\"");
    assert!(!rig.root.join("x.bin").exists());
    assert!(
        !contains(&device(&rig), MARKER),
        "file bytes reached the device"
    );

    // An impostor with no key at all.
    let s_pid = rig.server_pid();
    robust_common::signal(s_pid, "TERM");
    let _ = rig.server.take().unwrap().wait();
    rig.start(&[]);
    let o = client(
        &rig,
        "alice",
        Some(&real),
        &["put", "srv", s(&src), "y.bin"],
    );
    assert_auth_failure(&o, "this client refused", "proved no key");
    assert!(!rig.root.join("y.bin").exists());
    assert!(
        !contains(&device(&rig), MARKER),
        "file bytes reached the device"
    );
}

#[test]
fn a_server_handshake_copied_from_the_device_is_refused_by_the_client() {
    let mut rig = Rig::format(10_000);
    let k = keygen(&rig, "site.key");
    start_server(&mut rig, &k, &[]);
    // A real connection: its accepted entry (with the server's signature)
    // is on the device while it lasts.
    let mut holder = hold_connection(&rig, &k);
    let (accepted, _) = capture_accepted(&rig);
    drop(holder.stdin.take());
    let _ = wait_output(holder, DEADLINE, "shell");
    // The real server goes away; an attacker answers instead, replaying
    // what the real server wrote.
    robust_common::signal(rig.server_pid(), "TERM");
    let _ = rig.server.take().unwrap().wait();

    let src = rig.local("src.bin");
    let mut data = robust_common::random(100_000, 3);
    data.extend_from_slice(MARKER);
    std::fs::write(&src, &data).unwrap();
    let victim = rig
        .cmd(
            "alice",
            &["--key-file", s(&k), "put", "srv", s(&src), "v.bin"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut replayed = false;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let dev = device(&rig);
            let id = layout_id(&dev);
            for slot in 1..=4 {
                let Some(mut e) = read_entry(&dev, slot) else {
                    continue;
                };
                if e.is_allocated() && !e.is_processing() && e.pro_requestee == "srv" {
                    e.pro_flag_process |= fts_layout::PRO_FLAG_PROCESSING;
                    e.pro_requestee_nonce = accepted.pro_requestee_nonce;
                    e.pro_requestee_key = accepted.pro_requestee_key;
                    e.pro_requestee_kx = accepted.pro_requestee_kx;
                    e.pro_requestee_sig = accepted.pro_requestee_sig;
                    e.pro_auth_flags = accepted.pro_auth_flags;
                    write_entry(&rig, id, &e);
                    replayed = true;
                    return true;
                }
            }
            false
        }),
        "the client never claimed an entry"
    );
    assert!(replayed);
    let o = wait_output(victim, DEADLINE, "victim put");
    assert_auth_failure(&o, "this client refused", "signature does not verify");
    assert!(
        !contains(&device(&rig), MARKER),
        "file bytes reached the device"
    );
}

#[test]
fn a_client_handshake_copied_from_the_device_is_refused_by_the_server() {
    let mut rig = Rig::format(10_000);
    let k = keygen(&rig, "site.key");
    start_server(&mut rig, &k, &[]);
    std::fs::write(rig.root.join("secret.txt"), b"top secret").unwrap();
    let mut holder = hold_connection(&rig, &k);
    let (accepted, proof) = capture_accepted(&rig);
    drop(holder.stdin.take());
    let _ = wait_output(holder, DEADLINE, "shell");
    assert!(wait_until(Duration::from_secs(10), || read_entry(
        &device(&rig),
        1
    )
    .is_some_and(|e| e.is_free())));

    // The attacker claims slot 1 again with the copied request (the
    // client's key, nonce and ephemeral key), as a new generation.
    let dev = device(&rig);
    let id = layout_id(&dev);
    let free = read_entry(&dev, 1).unwrap();
    let generation = free.pro_generation + 1;
    let claim = PidEntry {
        pro_flag_process: fts_layout::PRO_FLAG_ALLOCATED,
        pro_generation: generation,
        pro_con_rc: 0,
        pro_requestee_nonce: [0; 16],
        pro_requestee_key: [0; 32],
        pro_requestee_kx: [0; 32],
        pro_requestee_sig: [0; 64],
        pro_auth_flags: accepted.pro_auth_flags & fts_layout::AUTH_FLAG_ENCRYPT_ASKED,
        ..accepted.clone()
    };
    write_initiator_lb(&rig, id, 1, generation, 1, &[]);
    write_entry(&rig, id, &claim);
    // The server accepts (the key is trusted) and waits for the proof;
    // the attacker gives it the proof copied from the earlier connection.
    assert!(
        wait_until(Duration::from_secs(10), || read_entry(&device(&rig), 1)
            .is_some_and(
                |e| e.pro_generation == generation && e.is_processing()
            )),
        "the server did not accept the replayed request: {}",
        rig.server_stderr()
    );
    write_initiator_lb(&rig, id, 1, generation, 2, &proof);
    assert!(
        wait_until(Duration::from_secs(10), || rig
            .server_stderr()
            .contains("did not prove its key")),
        "the server took a replayed proof: {}",
        rig.server_stderr()
    );
    // Its verdict in its command area says refused.
    let dev = device(&rig);
    let at = (entry_lb(1) + 2) * LB + RECORD_SIZE;
    let verdict = CmdArea::decode(&dev[at..at + RECORD_SIZE], Expect::exact(id, 1)).unwrap();
    assert_eq!(verdict.generation, generation);
    assert_eq!(verdict.data, [2u8], "verdict: bad proof");
    // The genuine client still works afterwards.
    let out = rig.local("out.txt");
    let o = client(
        &rig,
        "alice",
        Some(&k),
        &["get", "srv", "secret.txt", s(&out)],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn encrypt_leaves_no_plaintext_and_no_key_bytes_on_the_device() {
    let mut rig = Rig::format(10_000);
    let k = keygen(&rig, "site.key");
    start_server(&mut rig, &k, &[]);
    // The marker many times over, across segment boundaries.
    let mut data = Vec::new();
    while data.len() < 1_500_000 {
        data.extend_from_slice(MARKER);
        data.extend_from_slice(&robust_common::random(997, data.len() as u64));
    }
    let src = rig.local("marked.bin");
    std::fs::write(&src, &data).unwrap();
    for (i, args) in [
        vec!["put", "--encrypt", "srv", s(&src), "up.bin"],
        vec![
            "get",
            "--encrypt",
            "srv",
            "up.bin",
            s(&rig.local("down.bin")),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let o = client(&rig, "alice", Some(&k), &args);
        assert!(o.status.success(), "step {i}: {}", text(&o));
    }
    assert_eq!(std::fs::read(rig.root.join("up.bin")).unwrap(), data);
    assert_eq!(std::fs::read(rig.local("down.bin")).unwrap(), data);
    let dev = device(&rig);
    assert!(!contains(&dev, MARKER), "plaintext on the device");
    assert!(
        !contains(&dev, b"up.bin"),
        "a sealed request's path on the device"
    );
    assert!(
        rig.server_stderr().contains("sealed"),
        "{}",
        rig.server_stderr()
    );

    // The key file's bytes, as text and as the raw secret, never appear.
    let key_text = std::fs::read_to_string(&k).unwrap();
    let b64 = key_text.split_whitespace().nth(1).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert!(!contains(&dev, b64.as_bytes()));
    assert!(!contains(&dev, &raw));

    // The scan can fail: without --encrypt the same file leaves its marker.
    let o = client(
        &rig,
        "alice",
        Some(&k),
        &["put", "srv", s(&src), "plain.bin"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(contains(&device(&rig), MARKER), "the scan finds plaintext");
}

#[test]
fn a_server_that_requires_encryption_seals_every_connection() {
    let mut rig = Rig::format(10_000);
    let k = keygen(&rig, "site.key");
    start_server(&mut rig, &k, &["--encrypt"]);
    let mut data = MARKER.repeat(2000);
    data.extend_from_slice(b"end");
    let src = rig.local("marked.bin");
    std::fs::write(&src, &data).unwrap();
    let o = client(&rig, "alice", Some(&k), &["put", "srv", s(&src), "up.bin"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(rig.root.join("up.bin")).unwrap(), data);
    assert!(!contains(&device(&rig), MARKER), "plaintext on the device");
}

#[test]
fn keygen_refuses_to_overwrite_and_encrypt_needs_a_key() {
    let rig = Rig::format(10_000);
    let k = keygen(&rig, "k");
    let before = std::fs::read(&k).unwrap();
    let o = run(
        {
            let mut c = fts();
            c.args(["keygen", s(&k)]);
            c
        },
        DEADLINE,
        "keygen again",
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("exists"), "{}", text(&o));
    assert_eq!(std::fs::read(&k).unwrap(), before);
    let o = client(
        &rig,
        "alice",
        None,
        &["put", "--encrypt", "srv", s(&k), "x"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--encrypt needs --key-file"),
        "{}",
        text(&o)
    );
    let mut f = std::fs::File::create(rig.local("notakey")).unwrap();
    f.write_all(b"hello\n").unwrap();
    std::fs::set_permissions(rig.local("notakey"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = client(&rig, "alice", Some(&rig.local("notakey")), &["dir", "srv"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not an fts secret key"), "{}", text(&o));
}
