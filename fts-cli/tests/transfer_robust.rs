//! Requests a server cannot carry out, and inputs that are not files, with
//! real `fts` processes over a file-backed device: every one gets a prompt,
//! clear error (never silence, never a hang), nothing is left behind, and
//! the server keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use std::os::unix::fs::FileTypeExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use robust_common::*;

/// A prompt error, not a hang: well under the 30 s reply deadline.
const PROMPT: Duration = Duration::from_secs(10);

/// The server keeps serving and holds no entry.
fn still_serving(rig: &Rig) {
    let a = rig.local("alive.src");
    std::fs::write(&a, b"alive").unwrap();
    let o = rig.client("c", &["put", "srv", s(&a), "alive", "--replace"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wait_until(Duration::from_secs(5), || rig.connections().is_empty()),
        "{:?}",
        rig.connections()
    );
}

/// A put whose temporary cannot be created (the directory is immutable)
/// is refused at once, below and above 64 KiB; it used to hang for ever
/// below and exit 10 "connector closed" above.
#[test]
fn put_into_an_immutable_directory_is_refused_promptly() {
    let rig = Rig::new();
    let imm = rig.root.join("imm");
    std::fs::create_dir(&imm).unwrap();
    let ok = Command::new("chattr").arg("+i").arg(&imm).status();
    if !ok.is_ok_and(|s| s.success()) {
        return hil::skip::skip(
            "put_into_an_immutable_directory_is_refused_promptly",
            "chattr +i is not supported here (needs root and ext2/3/4, xfs or btrfs)",
        );
    }
    struct Mutable(std::path::PathBuf);
    impl Drop for Mutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
    let _undo = Mutable(imm.clone());
    for (i, n) in [1000usize, 200_000].into_iter().enumerate() {
        let src = rig.local(&format!("src{i}"));
        std::fs::write(&src, random(n, i as u64)).unwrap();
        let t = Instant::now();
        let o = run(
            rig.cmd("c", &["put", "srv", s(&src), &format!("imm/f{i}")]),
            PROMPT,
            "put into an immutable directory",
        );
        assert_eq!(o.status.code(), Some(8), "{n} bytes: {}", text(&o));
        let msg = text(&o);
        assert!(msg.contains("temporary"), "{msg}");
        assert!(msg.contains("not permitted"), "{msg}");
        assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
    }
    assert!(std::fs::read_dir(&imm).unwrap().next().is_none());
    still_serving(&rig);
}

/// The same on a read-only file system (a read-only tmpfs in the root).
#[test]
fn put_onto_a_read_only_file_system_is_refused_promptly() {
    let rig = Rig::new();
    let ro = match Tmpfs::mount(&rig.root.join("ro"), "1m", "ro") {
        Ok(m) => m,
        Err(why) => {
            return hil::skip::skip("put_onto_a_read_only_file_system_is_refused_promptly", &why)
        }
    };
    let src = rig.local("small");
    std::fs::write(&src, b"small file").unwrap();
    let o = run(
        rig.cmd("c", &["put", "srv", s(&src), "ro/x"]),
        PROMPT,
        "put onto a read-only file system",
    );
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(text(&o).contains("Read-only file system"), "{}", text(&o));
    drop(ro);
    still_serving(&rig);
}

/// A 250-byte name (the longest most file systems take is 255) used to
/// make the temporary's name too long: the put hung. Now the temporary's
/// name is cut to fit and the file arrives.
#[test]
fn a_250_byte_name_is_stored() {
    let rig = Rig::new();
    let name = "n".repeat(250);
    let data = random(5000, 7);
    let src = rig.local("src");
    std::fs::write(&src, &data).unwrap();
    let o = run(
        rig.cmd("c", &["put", "srv", s(&src), &name]),
        PROMPT,
        "put of a 250-byte name",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(rig.root.join(&name)).unwrap(), data);
    let back = rig.local("back");
    let o = rig.client("c", &["get", "srv", &name, s(&back)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert!(temporaries(&rig.root).is_empty());
    // 256 bytes is too long for the file system itself: a clear refusal.
    let o = run(
        rig.cmd("c", &["put", "srv", s(&src), &"m".repeat(256)]),
        PROMPT,
        "put of a 256-byte name",
    );
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(text(&o).contains("too long"), "{}", text(&o));
}

/// A FIFO, a socket and a character device inside the root: get is refused
/// at once with what it is (a FIFO used to wedge a server thread and leak
/// its entry), put --replace onto them too; the server keeps serving.
#[test]
fn fifo_socket_and_device_nodes_in_the_root_are_refused() {
    let rig = Rig::new();
    let fifo = rig.root.join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let _sock = std::os::unix::net::UnixListener::bind(rig.root.join("sock")).unwrap();
    let dev_ok = Command::new("mknod")
        .arg(rig.root.join("null"))
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    let mut cases = vec![("fifo", "FIFO"), ("sock", "socket")];
    if dev_ok {
        cases.push(("null", "character device"));
    } else {
        eprintln!("mknod failed (not root?): the device-node case is not run");
    }
    let src = rig.local("src");
    std::fs::write(&src, b"data").unwrap();
    for (name, what) in cases {
        let got = rig.local(&format!("got-{name}"));
        let t = Instant::now();
        let o = run(
            rig.cmd("c", &["get", "srv", name, s(&got)]),
            PROMPT,
            &format!("get of a {what}"),
        );
        assert_eq!(o.status.code(), Some(8), "get {name}: {}", text(&o));
        assert!(text(&o).contains(what), "get {name}: {}", text(&o));
        assert!(t.elapsed() < PROMPT);
        assert!(!got.exists());
        let o = run(
            rig.cmd("c", &["put", "srv", s(&src), name, "--replace"]),
            PROMPT,
            &format!("put onto a {what}"),
        );
        assert_eq!(o.status.code(), Some(8), "put {name}: {}", text(&o));
        assert!(text(&o).contains(what), "put {name}: {}", text(&o));
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    still_serving(&rig);
}

/// A local FIFO, socket or device is refused before anything is sent (no
/// connection is even made): `put /dev/zero` used to run for ever.
#[test]
fn local_fifos_and_devices_are_refused_before_connecting() {
    let rig = Rig::new();
    let fifo = rig.local("lfifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let sock_path = rig.local("lsock");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    std::fs::write(rig.root.join("f"), b"remote").unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["put", "srv", "/dev/zero", "z"], "character device"),
        (&["put", "srv", s(&fifo), "z"], "FIFO"),
        (&["put", "srv", s(&sock_path), "z"], "socket"),
        (&["get", "srv", "f", s(&fifo), "--replace"], "FIFO"),
        (
            &["get", "srv", "f", "/dev/null", "--replace"],
            "character device",
        ),
        (
            &["get", "srv", "f", s(rig.dir.path()), "--replace"],
            "directory",
        ),
    ];
    for (args, what) in cases {
        let o = run(rig.cmd("c", args), PROMPT, &format!("{args:?}"));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(what), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("regular files only"), "{}", text(&o));
    }
    assert!(!rig.root.join("z").exists());
    assert!(
        !rig.server_stderr().contains("accepted"),
        "a refused LOCAL must not connect: {}",
        rig.server_stderr()
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

/// A full server disk (a 1 MiB tmpfs in the root) is exit 8 "no space left
/// on the server", for a file larger than the disk and for a small one
/// once it is full (it used to be exit 10 "connector closed"); no
/// temporary is left and the server keeps serving.
#[test]
fn a_full_server_disk_is_exit_8_no_space_left_on_the_server() {
    let rig = Rig::new();
    let small = match Tmpfs::mount(&rig.root.join("small"), "1m", "") {
        Ok(m) => m,
        Err(why) => {
            return hil::skip::skip(
                "a_full_server_disk_is_exit_8_no_space_left_on_the_server",
                &why,
            )
        }
    };
    let big = rig.local("big");
    std::fs::write(&big, random(3 << 20, 1)).unwrap();
    let o = rig.client("c", &["put", "srv", s(&big), "small/big"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        text(&o).contains("no space left on the server"),
        "{}",
        text(&o)
    );
    assert!(!small.path.join("big").exists());
    assert!(
        temporaries(&small.path).is_empty(),
        "{:?}",
        temporaries(&small.path)
    );
    // Fill it up, then a small put.
    let _ = std::fs::write(small.path.join("filler"), vec![1u8; 2 << 20]);
    let little = rig.local("little");
    std::fs::write(&little, random(20_000, 2)).unwrap();
    let o = rig.client("c", &["put", "srv", s(&little), "small/little"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        text(&o).contains("no space left on the server"),
        "{}",
        text(&o)
    );
    assert!(
        temporaries(&small.path).is_empty(),
        "{:?}",
        temporaries(&small.path)
    );
    still_serving(&rig);
}

fn digest(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// LOCAL is the shared device itself (its path, or a hard link to it):
/// refused, and the device is untouched (`get --replace` used to overwrite
/// it).
#[test]
fn a_local_path_that_is_the_shared_device_is_refused() {
    let rig = Rig::new();
    std::fs::write(rig.root.join("f"), random(10_000, 3)).unwrap();
    let dev = std::path::PathBuf::from(&rig.dev);
    let link = rig.local("alias.img");
    std::fs::hard_link(&dev, &link).unwrap();
    let before = digest(&dev);
    for local in [&dev, &link] {
        let o = rig.client("c", &["get", "srv", "f", s(local), "--replace"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("shared fts device"), "{}", text(&o));
        let o = rig.client("c", &["put", "srv", s(local), "copy"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("shared fts device"), "{}", text(&o));
    }
    assert!(digest(&dev) == before, "the device was modified");
    assert!(!rig.root.join("copy").exists());
    still_serving(&rig);
}

/// `dir` does not list fts temporaries; `serve` removes, at start, those of
/// dead processes and those older than --max-partial-age, and keeps a
/// recent partial copy.
#[test]
fn serve_sweeps_stale_temporaries_and_dir_hides_them() {
    let mut rig = Rig::format(10_000);
    let sub = rig.root.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    let dead_pid = rig.root.join(".a.fts-4000000000-0000abcd");
    let old_partial = sub.join(".b.fts-partial-0123456789abcdef");
    let new_partial = rig.root.join(".c.fts-partial-fedcba9876543210");
    let lookalike = rig.root.join(".d.fts-notmine");
    for p in [&dead_pid, &old_partial, &new_partial, &lookalike] {
        std::fs::write(p, b"x").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old_partial)
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::write(rig.root.join("visible"), b"v").unwrap();
    rig.start(&["--max-partial-age", "1h"]);
    assert!(!dead_pid.exists(), "a dead process's temporary was kept");
    assert!(!old_partial.exists(), "an old partial copy was kept");
    assert!(new_partial.exists(), "a recent partial copy was removed");
    assert!(lookalike.exists(), "a file fts did not make was removed");
    assert!(rig.server_stderr().contains("stale temporary"));
    let o = rig.client("c", &["dir", "srv"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("visible"), "{out}");
    assert!(out.contains(".d.fts-notmine"), "{out}");
    assert!(!out.contains(".c.fts-partial"), "{out}");
    // Names of that form are refused as put targets.
    let src = rig.local("src");
    std::fs::write(&src, b"x").unwrap();
    let o = rig.client(
        "c",
        &["put", "srv", s(&src), ".e.fts-partial-0123456789abcdef"],
    );
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(text(&o).contains("reserved"), "{}", text(&o));
}

/// A root that does not exist is refused at start, not after clients came.
#[test]
fn serve_refuses_a_missing_root() {
    let rig = Rig::format(10_000);
    let o = run(
        rig.cmd("srv", &["serve", "--root", "/nonexistent/fts-root"]),
        PROMPT,
        "serve --root /nonexistent",
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/fts-root"), "{}", text(&o));
}
