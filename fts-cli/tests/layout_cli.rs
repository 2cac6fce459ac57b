//! The `fts format | inspect | check` commands run as real processes on real
//! files and on a 4Kn loop block device (which needs root and `losetup`;
//! without them that test skips through [`hil::skip`], or fails under `CI`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fts_layout::LB;

fn fts(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fts"))
        .args(args)
        .env_remove("FTS_DEVICE")
        .output()
        .expect("run fts")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn formatted(dir: &Path) -> PathBuf {
    let dev = dir.join("shared.img");
    let o = fts(&[
        "-d",
        dev.to_str().unwrap(),
        "format",
        "--size",
        "32M",
        "--max-connections",
        "4",
        "--ring-entries",
        "40",
        "--segment-size",
        "64K",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    dev
}

fn flip_bit(path: &Path, byte: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, byte).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, byte).unwrap();
}

#[test]
fn format_then_check_and_inspect_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let dev = formatted(dir.path());
    let d = dev.to_str().unwrap();
    let o = fts(&["-d", d, "check"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("is consistent"));
    let o = fts(&["-d", d, "inspect", "--json", "--entries"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["master_control_block"]["blk5_id"], "master");
    assert_eq!(v["master_control_block"]["blk5_max_connections"], 4);
    assert_eq!(v["master_control_block"]["blk5_maxptr"], 40);
    assert_eq!(v["process_id_table"].as_array().unwrap().len(), 4);
    assert_eq!(v["pointer_tables"].as_array().unwrap().len(), 8);
    assert_eq!(
        v["pointer_tables"][0]["entries"].as_array().unwrap().len(),
        40
    );
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    // Block 4 is zero.
    let bytes = std::fs::read(&dev).unwrap();
    assert!(bytes[4 * LB..5 * LB].iter().all(|&b| b == 0));
    assert_eq!(&bytes[5 * LB..5 * LB + 4], b"FMCB");
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let dev = formatted(dir.path());
    let d = dev.to_str().unwrap();
    let before = std::fs::read(&dev).unwrap();
    let o = fts(&[
        "-d",
        d,
        "format",
        "--max-connections",
        "2",
        "--ring-entries",
        "8",
    ]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(
        text(&o).contains("already holds an fts layout"),
        "{}",
        text(&o)
    );
    assert_eq!(
        before,
        std::fs::read(&dev).unwrap(),
        "refusal changed the device"
    );
    let o = fts(&[
        "-d",
        d,
        "format",
        "--force",
        "--max-connections",
        "2",
        "--ring-entries",
        "8",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn refuses_foreign_data() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("foreign.img");
    let mut data = vec![0u8; 8 << 20];
    data[5 * LB + 7] = 0x5a;
    std::fs::write(&dev, &data).unwrap();
    let o = fts(&[
        "-d",
        dev.to_str().unwrap(),
        "format",
        "--max-connections",
        "1",
        "--ring-entries",
        "8",
    ]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(text(&o).contains("not an fts layout"), "{}", text(&o));
    assert_eq!(std::fs::read(&dev).unwrap(), data);
}

#[test]
fn impossible_geometry_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("small.img");
    let o = fts(&[
        "-d",
        dev.to_str().unwrap(),
        "format",
        "--size",
        "16M",
        "--ring-entries",
        "640",
    ]);
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(text(&o).contains("need"), "{}", text(&o));
    assert!(
        text(&o)
            .contains("--ring-entries 640: the largest that fits 16 MiB with 16 connections is "),
        "{}",
        text(&o)
    );
    // The failed format removed the file it created.
    assert!(!dev.exists());
    let o = fts(&[
        "-d",
        dev.to_str().unwrap(),
        "format",
        "--size",
        "16M",
        "--segment-size",
        "1000",
    ]);
    assert_eq!(code(&o), 7, "{}", text(&o));
}

#[test]
fn unformatted_truncated_and_missing_devices_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.img");
    std::fs::write(&zero, vec![0u8; 1 << 20]).unwrap();
    let o = fts(&["-d", zero.to_str().unwrap(), "inspect"]);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(text(&o).contains("not formatted"), "{}", text(&o));

    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, vec![0u8; 4096]).unwrap();
    let o = fts(&["-d", tiny.to_str().unwrap(), "check"]);
    assert_eq!(code(&o), 4, "{}", text(&o));

    // A formatted device cut short inside its pointer tables.
    let dev = formatted(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    f.set_len(12 * LB as u64).unwrap();
    let o = fts(&["-d", dev.to_str().unwrap(), "inspect"]);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(text(&o).contains("truncated"), "{}", text(&o));

    let o = fts(&["-d", dir.path().join("nope").to_str().unwrap(), "inspect"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("nope"), "{}", text(&o));
    let o = fts(&["inspect"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
}

/// A single flipped bit in any record is found and the record named.
#[test]
fn check_names_the_record_with_a_flipped_bit() {
    let cases: &[(u64, &str, i32)] = &[
        // The MCB is read from its backup at the end of the device (v1.1).
        (5 * LB as u64 + 70, "Master Control Block", 5),
        (6 * LB as u64 + 33, "lock record", 5),
        (7 * LB as u64 + 50, "Secondary Device Table entry 1", 5),
        ((8 + 3) * LB as u64 + 30, "Process Id Table entry 2", 5),
        ((8 + 1) * LB as u64 + 41, "lease 1 (initiator)", 5),
        ((8 + 2) * LB as u64 + 512 + 27, "command area 1", 5),
        (
            (8 + 12) * LB as u64 + 512 + 100,
            "pointer table 1 (initiator) chunk 1",
            5,
        ),
    ];
    for &(byte, name, want) in cases {
        for bit in [0u8, 5] {
            let dir = tempfile::tempdir().unwrap();
            let dev = formatted(dir.path());
            flip_bit(&dev, byte, bit);
            let o = fts(&["-d", dev.to_str().unwrap(), "check"]);
            assert_eq!(code(&o), want, "byte {byte} bit {bit}: {}", text(&o));
            assert!(
                text(&o).contains(name),
                "byte {byte} bit {bit}: expected {name:?} in:\n{}",
                text(&o)
            );
        }
    }
}

struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Format, inspect and check on a block device with 4096-byte logical sectors.
#[test]
#[serial_test::serial]
fn works_on_a_4kn_loop_device() {
    let test = "works_on_a_4kn_loop_device";
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    std::fs::write(&backing, vec![0u8; 32 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show", "--sector-size", "4096"])
        .arg(&backing)
        .output();
    let dev = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => {
            let why = format!(
                "losetup failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            hil::skip::skip(test, &why);
            return;
        }
        Err(e) => {
            hil::skip::skip(test, &format!("cannot run losetup: {e}"));
            return;
        }
    };
    let _guard = Loop(dev.clone());
    let o = fts(&[
        "-d",
        &dev,
        "format",
        "--max-connections",
        "4",
        "--ring-entries",
        "40",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = fts(&["-d", &dev, "check"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = fts(&["-d", &dev, "inspect", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["device"]["block_size"], 4096);
    assert_eq!(v["master_control_block"]["format_block_size"], 4096);
    // Damage a Process Id Table entry through the block device and find it.
    let o = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={dev}"),
            "bs=4096",
            "count=1",
            &format!("seek={}", 8 + 3),
            "oflag=direct",
            "conv=notrunc",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = fts(&["-d", &dev, "check"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("Process Id Table entry 2"),
        "{}",
        text(&o)
    );
}

/// Secondary devices get a "SEC FTS" identity copy and are found by identity,
/// not by path: a renamed secondary is reported missing until named.
#[test]
fn secondary_devices_are_found_by_identity() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.img");
    let s = dir.path().join("s.img");
    std::fs::write(&s, vec![0u8; 16 << 20]).unwrap();
    let o = fts(&[
        "-d",
        m.to_str().unwrap(),
        "format",
        "--size",
        "16M",
        "--secondary",
        s.to_str().unwrap(),
        "--max-connections",
        "2",
        "--ring-entries",
        "16",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let sec = std::fs::read(&s).unwrap();
    assert_eq!(&sec[5 * LB + 24..5 * LB + 32], b"SEC FTS\0");
    let o = fts(&["-d", m.to_str().unwrap(), "check"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let moved = dir.path().join("moved.img");
    std::fs::rename(&s, &moved).unwrap();
    let o = fts(&["-d", m.to_str().unwrap(), "check"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("secondary device 2: not found"),
        "{}",
        text(&o)
    );
    let o = fts(&[
        "-d",
        m.to_str().unwrap(),
        "check",
        "--secondary",
        moved.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // The master itself is never accepted as its own secondary.
    let o = fts(&[
        "-d",
        m.to_str().unwrap(),
        "format",
        "--force",
        "--secondary",
        m.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", text(&o));
}
