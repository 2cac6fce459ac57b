//! The VM rig: pure checks of what it generates (initramfs, `/init`, qemu
//! command line, table checks).
//!
//! The end-to-end run (qemu guests on a real tgtd running the scenarios,
//! every report asserted to pass) is the `hil --vm` step of `cargo xtask
//! ci`, `cargo xtask hil --vm [--hosts N] [--scenario NAME]... [--keep]`,
//! so that it honours that step's switches (`--quick`, `FTS_CI_HIL=0`,
//! `FTS_CI_HIL_VM=0`) instead of repeating it inside `cargo test`.

use std::collections::HashMap;

use hil::vm::cpio::{self, mode, Newc};
use hil::vm::init::{self, InitConfig, Marker};
use hil::vm::{self, QemuSpec};

#[test]
fn newc_archive_reads_back() {
    let mut a = Newc::new();
    a.dir("bin", 0o755)
        .dir("/dev", 0o755)
        .char_dev("dev/console", 0o600, 5, 1)
        .file("bin/busybox", 0o755, b"\x7fELF...")
        .file("init", 0o755, b"#!/bin/busybox sh\n")
        .file("empty", 0o644, b"")
        .symlink("bin/sh", "busybox");
    assert!(a.contains("/bin/busybox") && a.contains("dev") && !a.contains("etc"));
    let bytes = a.finish();
    assert_eq!(bytes.len() % 4, 0);
    assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    let entries = cpio::parse(&bytes).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "dev",
            "dev/console",
            "bin/busybox",
            "init",
            "empty",
            "bin/sh"
        ]
    );
    let console = &entries[2];
    assert_eq!(console.mode & mode::S_IFMT, mode::S_IFCHR);
    assert_eq!((console.rdev_major, console.rdev_minor), (5, 1));
    assert_eq!(entries[0].mode, mode::S_IFDIR | 0o755);
    assert_eq!(entries[4].mode, mode::S_IFREG | 0o755);
    assert_eq!(entries[4].data, b"#!/bin/busybox sh\n");
    assert_eq!(entries[6].mode & mode::S_IFMT, mode::S_IFLNK);
    assert_eq!(entries[6].data, b"busybox");
    // Inode numbers are distinct.
    let mut inos: Vec<u32> = entries.iter().map(|e| e.ino).collect();
    inos.dedup();
    assert_eq!(inos.len(), entries.len());
    // Every header is aligned to 4 bytes: a corrupt length shows up.
    let mut broken = bytes.clone();
    broken[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"00000003"); // size of "bin" dir
    assert!(cpio::parse(&broken).is_err());
    assert!(cpio::parse(&bytes[..bytes.len() - 8]).is_err());
}

#[test]
fn initramfs_holds_what_the_guest_needs() {
    let modules = vec![
        ("virtio".to_owned(), b"mod1".to_vec()),
        ("sg".to_owned(), b"mod2".to_vec()),
    ];
    let bytes = vm::initramfs("g3", b"BUSYBOX", b"FTS", &modules);
    let entries = cpio::parse(&bytes).unwrap();
    let get = |n: &str| entries.iter().find(|e| e.name == n);
    assert_eq!(get("bin/busybox").unwrap().data, b"BUSYBOX");
    assert_eq!(get("bin/fts").unwrap().data, b"FTS");
    assert_eq!(get("lib/modules/sg.ko").unwrap().data, b"mod2");
    assert!(get("dev/console").is_some());
    let init = get("init").unwrap();
    assert_eq!(init.mode, mode::S_IFREG | 0o755);
    let script = String::from_utf8(init.data.clone()).unwrap();
    assert!(script.contains("HIL_NAME=g3"), "{script}");
    assert!(script.contains("for m in virtio sg; do"), "{script}");
}

#[test]
fn init_script_loads_modules_in_order_and_speaks_the_protocol() {
    let cfg = InitConfig {
        name: "g1".into(),
        modules: vm::kernel::GUEST_MODULES
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
        device_wait_s: 7,
    };
    let s = init::init_script(&cfg);
    assert!(s.starts_with("#!/bin/busybox sh\n"));
    assert!(s.contains(
        "for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci scsi_common scsi_mod virtio_scsi sg; do"
    ));
    assert!(s.contains("insmod /lib/modules/$m.ko"));
    assert!(s.contains("within 7s"), "{s}");
    assert!(s.contains("[ $i -gt 70 ]"), "{s}");
    // The identity check, then echo off before READY, then the command loop.
    let inq = s.find("scsi inquiry").unwrap();
    let stty = s.find("stty -echo").unwrap();
    let ready = s.find("HIL-READY").unwrap();
    let run = s.find("\"HIL-RUN \"*)").unwrap();
    assert!(inq < stty && stty < ready && ready < run, "{s}");
    assert!(s.contains("echo \"HIL-EXIT $id $(cat /tmp/hil-rc.$id)\""));
    // Only disks (type 0) count as the LUN.
    assert!(s.contains("\"$(cat \"$d/device/type\")\" = 0"));
}

#[test]
fn console_markers_parse() {
    assert_eq!(init::parse_marker("HIL-READY g0"), Some(Marker::Ready));
    assert_eq!(
        init::parse_marker("[    1.2] sd 0:0:0:0: HIL-OUT 12 hello world"),
        Some(Marker::Out(12, "hello world".into()))
    );
    assert_eq!(
        init::parse_marker("HIL-OUT 3 "),
        Some(Marker::Out(3, String::new()))
    );
    assert_eq!(init::parse_marker("HIL-EXIT 4 0"), Some(Marker::Exit(4, 0)));
    assert_eq!(init::parse_marker("HIL-EXIT 4 "), Some(Marker::Exit(4, -1)));
    assert_eq!(
        init::parse_marker("HIL-DEV /dev/sg0 1.53"),
        Some(Marker::Dev("/dev/sg0".into(), 1.53))
    );
    assert_eq!(
        init::parse_marker("HIL-INQ identity:  naa.6000"),
        Some(Marker::Inquiry("identity:  naa.6000".into()))
    );
    assert_eq!(init::parse_marker("Linux version 6.1"), None);
    assert_eq!(init::parse_marker("HIL-OUT x y"), None);
    let inq: Vec<String> = [
        "vendor:    IET",
        "identity:  naa.60000000000000000e00000000010001",
        "designator: LogicalUnit Naa naa.3000000100000001",
        "designator: LogicalUnit T10VendorId t10.IET     00010001",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        init::inquiry_identity(&inq).as_deref(),
        Some("naa.60000000000000000e00000000010001")
    );
    assert_eq!(init::inquiry_designators(&inq).len(), 2);
}

fn spec(initiator: &str) -> QemuSpec {
    QemuSpec {
        kernel: "/c/vmlinuz".into(),
        initrd: "/w/g0.initrd".into(),
        bios: vm::QBOOT.into(),
        memory_mib: 384,
        append: vm::KERNEL_CMDLINE.into(),
        portal: "127.0.0.1:13260".into(),
        target_iqn: "iqn.2026-11.invalid.fts-hil:1-2-t1".into(),
        lun: 1,
        initiator_name: initiator.into(),
    }
}

#[test]
fn qemu_command_line_passes_the_lun_through() {
    let args = vm::qemu_args(&spec(&vm::guest_initiator("g0")));
    let after = |flag: &str| -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    };
    assert_eq!(after("-accel"), ["tcg"]);
    assert_eq!(after("-bios"), ["/usr/share/qemu/qboot.rom"]);
    assert_eq!(after("-kernel"), ["/c/vmlinuz"]);
    assert_eq!(after("-initrd"), ["/w/g0.initrd"]);
    assert_eq!(after("-serial"), ["stdio"]);
    assert_eq!(after("-m"), ["384"]);
    assert!(args.iter().any(|a| a == "-no-reboot"));
    assert!(args.iter().any(|a| a == "-nodefaults"));
    assert!(after("-append")[0].contains("console=ttyS0"));
    let devices = after("-device");
    assert!(devices[0].starts_with("virtio-scsi-pci"));
    assert!(
        devices[1].starts_with("scsi-block,drive=lun0"),
        "{devices:?}"
    );
    assert!(!args.iter().any(|a| a.contains("scsi-hd")));
    let bd: serde_json::Value = serde_json::from_str(after("-blockdev")[0]).unwrap();
    assert_eq!(bd["driver"], "iscsi");
    assert_eq!(bd["node-name"], "lun0");
    assert_eq!(bd["portal"], "127.0.0.1:13260");
    assert_eq!(bd["target"], "iqn.2026-11.invalid.fts-hil:1-2-t1");
    assert_eq!(bd["lun"], 1);
    assert_eq!(bd["initiator-name"], "iqn.2026-11.invalid.fts-hil:vm-g0");
    // Each guest is its own initiator, so its own I_T nexus.
    let other = vm::qemu_args(&spec(&vm::guest_initiator("g1")));
    assert_ne!(args, other);
    assert!(other
        .iter()
        .any(|a| a.contains("\"initiator-name\":\"iqn.2026-11.invalid.fts-hil:vm-g1\"")));
}

#[test]
fn snapshot_checks_catch_double_owners() {
    let expected: HashMap<String, String> = [
        ("g0-c0-g1".to_owned(), "g1".to_owned()),
        ("g1-c0-g0".to_owned(), "g0".to_owned()),
    ]
    .into_iter()
    .collect();
    let snap = |rows: &str| -> serde_json::Value {
        serde_json::from_str(&format!(
            "{{\"connections\": [{rows}], \"max_connections\": 8}}"
        ))
        .unwrap()
    };
    let row = |slot: u64, r: &str, e: &str, g: u64| {
        format!("{{\"slot\":{slot},\"requestor\":\"{r}\",\"requestee\":\"{e}\",\"state\":\"connected\",\"generation\":{g},\"age_s\":0.1}}")
    };
    let mut owners = HashMap::new();
    let mut gens = HashMap::new();
    let ok = snap(&format!(
        "{},{}",
        row(0, "g0-c0-g1", "g1", 1),
        row(1, "g1-c0-g0", "g0", 1)
    ));
    assert!(vm::check_snapshot(&ok, &expected, &mut owners, &mut gens).is_empty());
    // The same claim seen again is fine; a new generation by another client too.
    let next = snap(&row(0, "g1-c0-g0", "g0", 2));
    assert!(vm::check_snapshot(&next, &expected, &mut owners, &mut gens).is_empty());
    // Slot 1 generation 1 was g1-c0-g0's: g0-c0-g1 under it is a second owner.
    let twice = snap(&row(1, "g0-c0-g1", "g1", 1));
    let v = vm::check_snapshot(&twice, &expected, &mut owners, &mut gens);
    assert!(v.iter().any(|e| e.contains("owned by")), "{v:?}");
    // Requestor of one claim, requestee of another.
    let mixed = snap(&row(3, "g0-c0-g1", "g0", 1));
    let v = vm::check_snapshot(&mixed, &expected, &mut owners, &mut gens);
    assert!(v.iter().any(|e| e.contains("mixed")), "{v:?}");
    // One client in two slots at once.
    let dup = snap(&format!(
        "{},{}",
        row(4, "g0-c0-g1", "g1", 1),
        row(5, "g0-c0-g1", "g1", 1)
    ));
    let v = vm::check_snapshot(&dup, &expected, &mut owners, &mut gens);
    assert!(v.iter().any(|e| e.contains("at once")), "{v:?}");
    // Generation going back.
    let back = snap(&row(0, "g0-c0-g1", "g1", 1));
    let v = vm::check_snapshot(&back, &expected, &mut owners, &mut gens);
    assert!(v.iter().any(|e| e.contains("went back")), "{v:?}");
    // Strangers.
    let stranger = snap(&row(6, "mallory", "g1", 1));
    assert!(!vm::check_snapshot(&stranger, &expected, &mut owners, &mut gens).is_empty());
}

#[test]
fn elf_check_tells_static_from_dynamic() {
    // The test binary itself is dynamically linked.
    let me = std::env::current_exe().unwrap();
    assert_eq!(vm::elf_is_static(&me), Ok(false));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"#!/bin/sh\n").unwrap();
    assert!(vm::elf_is_static(&junk).is_err());
}
