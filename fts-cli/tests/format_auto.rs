//! `fts format` without geometry flags: the geometry is chosen from the
//! device sizes and --max-connections, said on standard output, and works;
//! given flags win, and a request that cannot fit says how far each flag
//! may go. Real `fts` processes on sparse files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn fts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fts"));
    c.env_remove("FTS_DEVICE").env_remove("FTS_NAME");
    c
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

fn run(dev: &Path, args: &[&str]) -> Output {
    fts().arg("-d").arg(dev).args(args).output().unwrap()
}

/// (segment bytes, ring entries, batch, connections) as the MCB has them.
fn on_disk(dev: &Path) -> (u64, u64, u64, u64) {
    let o = run(dev, &["inspect", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &v["master_control_block"];
    let n = |f: &str| m[f].as_u64().unwrap_or_else(|| panic!("{f} in {m}"));
    (
        n("blk5_seg_size") * 4096,
        n("blk5_maxptr"),
        n("blk5_ptr_seg_per_process"),
        n("blk5_max_connections"),
    )
}

/// The number after `prefix` in `s`.
fn number_after(s: &str, prefix: &str) -> u64 {
    let at = s
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} in {s}"))
        + prefix.len();
    s[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("a number after {prefix:?} in {s}"))
}

#[test]
fn devices_from_16_mib_to_16_gib_get_a_geometry_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    for (size, bytes) in [
        ("16M", 16u64 << 20),
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("16G", 16 << 30),
    ] {
        for block in ["512", "4096"] {
            let dev = dir.path().join(format!("{size}-{block}.img"));
            let o = fts()
                .arg("-d")
                .arg(&dev)
                .args(["--block-size", block, "format", "--size", size])
                .output()
                .unwrap();
            let out = text(&o);
            assert_eq!(code(&o), 0, "{size}, {block}: {out}");
            // What was chosen and why, then the summary.
            let stdout = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(stdout.starts_with("geometry: 16 connections, "), "{stdout}");
            assert!(stdout.contains("\n  chosen because "), "{stdout}");
            assert!(
                stdout
                    .contains("pass --segment-size, --ring-entries or --batch to choose yourself"),
                "{stdout}"
            );
            // The line says what the MCB has.
            let (seg, n, b, c) = on_disk(&dev);
            assert_eq!(c, 16);
            assert_eq!(number_after(&stdout, "16 connections, "), n, "{stdout}");
            assert_eq!(number_after(&stdout, ", batch "), b, "{stdout}");
            let kib = number_after(&stdout, " ring entries of ");
            assert_eq!(kib << 10, seg, "{stdout}");
            if bytes >= 16 << 30 {
                // The defaults fit.
                assert_eq!((seg, n, b), (64 << 10, 640, 8), "{stdout}");
                assert!(
                    stdout.contains("chosen because the defaults fit"),
                    "{stdout}"
                );
            } else {
                assert!(stdout.contains("need a master of 1.3 GiB"), "{stdout}");
                // Sized: the rings take most of the device, in batches of
                // at most 1 MiB.
                assert!(seg * b <= 1 << 20, "{stdout}");
                assert!(32 * n * seg > bytes * 85 / 100, "{stdout}");
            }
            let o = run(&dev, &["check"]);
            assert_eq!(code(&o), 0, "{size}, {block}: {}", text(&o));
            // Format wrote the control structures, not the device: the
            // file is still sparse.
            let used = std::fs::metadata(&dev).unwrap().blocks() * 512;
            assert!(used < 8 << 20, "{size}: {used} bytes allocated");
            std::fs::remove_file(&dev).unwrap();
        }
    }
}

#[test]
fn given_flags_win_and_the_rest_is_chosen_around_them() {
    let dir = tempfile::tempdir().unwrap();
    // All three given: exactly those, and nothing said about choosing.
    let dev = dir.path().join("given.img");
    let o = run(
        &dev,
        &[
            "format",
            "--size",
            "64M",
            "--max-connections",
            "8",
            "--segment-size",
            "128K",
            "--ring-entries",
            "30",
            "--batch",
            "4",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!text(&o).contains("geometry:"), "{}", text(&o));
    assert_eq!(on_disk(&dev), (128 << 10, 30, 4, 8));
    // The default ring of 640 entries, given, on 64 MiB for 8 connections:
    // the segments give way.
    let dev = dir.path().join("ring.img");
    let o = run(
        &dev,
        &[
            "format",
            "--size",
            "64M",
            "--max-connections",
            "8",
            "--ring-entries",
            "640",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("pass --segment-size or --batch to choose yourself"),
        "{}",
        text(&o)
    );
    let (seg, n, b, _) = on_disk(&dev);
    assert_eq!((seg, n), (4096, 640));
    assert!(b > 1 && n / b >= 8, "batch {b}");
}

#[test]
fn a_request_that_cannot_fit_names_the_flag_and_how_far_it_may_go() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("small.img");
    let args = [
        "format",
        "--size",
        "64M",
        "--max-connections",
        "8",
        "--segment-size",
        "64K",
    ];
    let o = run(&dev, &[&args[..], &["--ring-entries", "640"]].concat());
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(!dev.exists(), "the file format created is left");
    let out = text(&o);
    let prefix = "--ring-entries 640: the largest that fits 64 MiB with 8 connections and --segment-size 64 KiB is ";
    let max = number_after(&out, prefix);
    assert!(out.contains("need 10240"), "{out}");
    // The largest fits; one more does not.
    let o = run(
        &dev,
        &[&args[..], &["--ring-entries", &max.to_string()]].concat(),
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(on_disk(&dev).1, max);
    let more = (max + 1).to_string();
    let o = run(
        &dev,
        &[&args[..], &["--ring-entries", &more, "--force"]].concat(),
    );
    assert_eq!(code(&o), 7, "{}", text(&o));

    // Too many connections for the device, whatever the geometry.
    let dev = dir.path().join("crowded.img");
    let o = run(
        &dev,
        &["format", "--size", "16M", "--max-connections", "4096"],
    );
    assert_eq!(code(&o), 7, "{}", text(&o));
    let max = number_after(&text(&o), "--max-connections 4096: at most ");
    let o = run(
        &dev,
        &[
            "format",
            "--size",
            "16M",
            "--max-connections",
            &max.to_string(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));

    // Segments too large for 16 connections on 16 MiB.
    let dev = dir.path().join("big-segments.img");
    let o = run(&dev, &["format", "--size", "16M", "--segment-size", "1M"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("--segment-size 1 MiB: the largest that fits 16 MiB with 16 connections is "),
        "{out}"
    );
    let bytes = number_after(&out, " KiB (");
    let o = run(
        &dev,
        &[
            "format",
            "--size",
            "16M",
            "--segment-size",
            &bytes.to_string(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(on_disk(&dev).0, bytes);
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file moved both ways through a device formatted with the chosen
/// geometry: the smallest device (7 entries of 64 KiB, batch 1, for 16
/// connections) and one sized for 1 MiB batches.
#[test]
fn chosen_geometries_move_files() {
    for (size, conns) in [("16M", "16"), ("256M", "4")] {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("shared.img");
        let o = run(
            &dev,
            &["format", "--size", size, "--max-connections", conns],
        );
        assert_eq!(code(&o), 0, "{}", text(&o));
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let _server = Server(
            fts()
                .arg("-d")
                .arg(&dev)
                .args(["-n", "srv", "serve", "--root"])
                .arg(&root)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let data: Vec<u8> = (0..3_000_017u32)
            .map(|i| (i * 31 + i / 977) as u8)
            .collect();
        let src = dir.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let o = fts()
            .arg("-d")
            .arg(&dev)
            .args(["-n", "cli", "put", "srv"])
            .arg(&src)
            .arg("x.bin")
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{size}: {}", text(&o));
        assert!(std::fs::read(root.join("x.bin")).unwrap() == data, "{size}");
        let back = dir.path().join("back.bin");
        let o = fts()
            .arg("-d")
            .arg(&dev)
            .args(["-n", "cli", "get", "srv", "x.bin"])
            .arg(&back)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{size}: {}", text(&o));
        assert!(std::fs::read(&back).unwrap() == data, "{size}");
    }
}

/// `fts demo` formats its device the way `format` does and says so.
#[test]
fn demo_chooses_like_format() {
    let o = fts().args(["demo", "--size", "2M"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.starts_with(
            "geometry: 4 connections, 127 ring entries of 256 KiB, batch 4 (1 MiB per I/O"
        ),
        "{out}"
    );
    assert!(out.contains("byte-identical"), "{out}");
}
