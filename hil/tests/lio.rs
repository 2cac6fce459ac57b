//! The LIO target's plan: golden `targetcli` command lists (written by
//! hand, not taken from the plan), teardown, validation, and `start`: on a
//! machine without LIO (like the development machines and CI) it must fail
//! clearly before running anything; where LIO can run it must export the
//! LUN for real and tear it down again.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hil::lio::{self, Backstore, LioEmulation, LioPlan, LioTarget};
use hil::Error;

const TARGET: &str = "iqn.2026-11.invalid.fts-hil:lio-4242";
const HOST_A: &str = "iqn.2026-11.invalid.fts-hil:host-a";
const HOST_B: &str = "iqn.2026-11.invalid.fts-hil:host-b";
const HOST_C: &str = "iqn.1993-08.org.debian:01:c0ffee";

fn fileio_plan() -> LioPlan {
    LioPlan {
        target_iqn: TARGET.to_string(),
        backstore_name: "fts-hil-4242".to_string(),
        backstore: Backstore::FileIo {
            path: PathBuf::from("/var/tmp/fts-hil/lun.img"),
            size_bytes: 64 << 20,
        },
        block_size: 4096,
        portal: ("10.0.0.1".to_string(), 3260),
        initiators: vec![HOST_A.into(), HOST_B.into(), HOST_C.into()],
        write_back: true,
        emulate: LioEmulation::default(),
    }
}

fn block_plan() -> LioPlan {
    LioPlan {
        target_iqn: TARGET.to_string(),
        backstore_name: "fts_blk-1".to_string(),
        backstore: Backstore::Block {
            device: PathBuf::from("/dev/loop7"),
        },
        block_size: 512,
        portal: ("::1".to_string(), 3261),
        initiators: vec![HOST_A.into()],
        write_back: false,
        emulate: LioEmulation {
            caw: true,
            fua_write: false,
            tpu: false,
        },
    }
}

/// Each command line as targetcli-fb sees it (it joins its arguments with
/// spaces).
fn lines(cmds: &[Vec<String>]) -> Vec<String> {
    cmds.iter()
        .map(|argv| {
            assert_eq!(argv[0], "targetcli", "{argv:?}");
            assert!(
                argv.iter()
                    .all(|a| !a.is_empty() && !a.contains(char::is_whitespace)),
                "{argv:?}"
            );
            argv[1..].join(" ")
        })
        .collect()
}

/// The unit serial of [`fileio_plan`]: FNV-1a (offset basis
/// 0xcbf29ce484222325, prime 0x100000001b3) over the target IQN and the
/// backstore name, each followed by a NUL, as the module docs describe,
/// computed outside the crate.
const FILEIO_WWN: &str = "ab4f1d18-1470-586d-bd77-c67a196a1b70";
/// The unit serial of [`block_plan`], computed the same way.
const BLOCK_WWN: &str = "bbd5b3a7-b1fe-2806-9910-9456395aa81e";

// The goldens below are written out by hand from the targetcli-fb 2.1.53 /
// rtslib-fb 2.1.75 command syntax the module docs of `hil::lio` cite
// (`UIFileIOBackstore.ui_command_create(name, file_or_dev, size,
// write_back, sparse, wwn)`, `UIBlockBackstore.ui_command_create(name,
// dev, readonly, wwn)`, `set attribute k=v...`, `UIFabricModule.
// ui_command_create(wwn)`, `UIPortals.ui_command_create(ip_address,
// ip_port)`, `UILUNs.ui_command_create(storage_object, lun,
// add_mapped_luns)`, `UINodeACLs.ui_command_create(wwn, add_mapped_luns)`,
// `UINodeACL.ui_command_create(mapped_lun, tpg_lun_or_backstore,
// write_protect)`, `UITPG.ui_command_enable`, `delete`), not derived from
// the plan's own output.

#[test]
fn fileio_plan_with_three_initiators_is_golden() {
    let plan = fileio_plan();
    plan.validate().expect("valid");
    let want = [
        "set global auto_add_mapped_luns=false auto_add_default_portal=false auto_enable_tpgt=false auto_save_on_exit=false",
        "/backstores/fileio create name=fts-hil-4242 file_or_dev=/var/tmp/fts-hil/lun.img size=67108864 write_back=true wwn=ab4f1d18-1470-586d-bd77-c67a196a1b70",
        "/backstores/fileio/fts-hil-4242 set attribute block_size=4096 emulate_caw=1 emulate_fua_write=1 emulate_tpu=0",
        "/iscsi create iqn.2026-11.invalid.fts-hil:lio-4242",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1 set attribute authentication=0 generate_node_acls=0 demo_mode_write_protect=0 prod_mode_write_protect=0",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/portals create 10.0.0.1 3260",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/luns create /backstores/fileio/fts-hil-4242 lun=0 add_mapped_luns=false",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls create iqn.2026-11.invalid.fts-hil:host-a add_mapped_luns=false",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.2026-11.invalid.fts-hil:host-a create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls create iqn.2026-11.invalid.fts-hil:host-b add_mapped_luns=false",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.2026-11.invalid.fts-hil:host-b create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls create iqn.1993-08.org.debian:01:c0ffee add_mapped_luns=false",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.1993-08.org.debian:01:c0ffee create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1 enable",
    ];
    assert_eq!(lines(&plan.setup_commands()), want);
    assert_eq!(
        lines(&plan.teardown_commands()),
        [
            "/iscsi delete iqn.2026-11.invalid.fts-hil:lio-4242",
            "/backstores/fileio delete fts-hil-4242",
        ]
    );
    assert_eq!(
        plan.url(),
        "iscsi://10.0.0.1:3260/iqn.2026-11.invalid.fts-hil:lio-4242/0"
    );
}

#[test]
fn block_plan_is_golden() {
    let plan = block_plan();
    plan.validate().expect("valid");
    let want = [
        "set global auto_add_mapped_luns=false auto_add_default_portal=false auto_enable_tpgt=false auto_save_on_exit=false",
        "/backstores/block create name=fts_blk-1 dev=/dev/loop7 readonly=false wwn=bbd5b3a7-b1fe-2806-9910-9456395aa81e",
        "/backstores/block/fts_blk-1 set attribute block_size=512 emulate_caw=1 emulate_fua_write=0 emulate_tpu=0",
        "/iscsi create iqn.2026-11.invalid.fts-hil:lio-4242",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1 set attribute authentication=0 generate_node_acls=0 demo_mode_write_protect=0 prod_mode_write_protect=0",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/portals create ::1 3261",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/luns create /backstores/block/fts_blk-1 lun=0 add_mapped_luns=false",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls create iqn.2026-11.invalid.fts-hil:host-a add_mapped_luns=false",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.2026-11.invalid.fts-hil:host-a create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
        "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1 enable",
    ];
    assert_eq!(lines(&plan.setup_commands()), want);
    assert_eq!(
        lines(&plan.teardown_commands()),
        [
            "/iscsi delete iqn.2026-11.invalid.fts-hil:lio-4242",
            "/backstores/block delete fts_blk-1",
        ]
    );
    assert_eq!(
        plan.url(),
        "iscsi://[::1]:3261/iqn.2026-11.invalid.fts-hil:lio-4242/0"
    );
}

#[test]
fn write_through_fileio_says_so() {
    let mut plan = fileio_plan();
    plan.write_back = false;
    plan.emulate = LioEmulation {
        caw: false,
        fua_write: true,
        tpu: true,
    };
    let setup = lines(&plan.setup_commands());
    assert!(setup[1].contains(" write_back=false "), "{}", setup[1]);
    assert!(
        setup[2].ends_with("emulate_caw=0 emulate_fua_write=1 emulate_tpu=1"),
        "{}",
        setup[2]
    );
}

#[test]
fn teardown_deletes_exactly_what_setup_created() {
    for plan in [fileio_plan(), block_plan()] {
        let setup = plan.setup_commands();
        let teardown = plan.teardown_commands();
        // Objects created by setup: the ones made by a `create` directly
        // under /iscsi or /backstores/KIND.
        let created: Vec<(String, String)> = setup
            .iter()
            .filter(|a| a[2] == "create" && (a[1] == "/iscsi" || a[1].starts_with("/backstores/")))
            .map(|a| {
                let name = a[3].strip_prefix("name=").unwrap_or(&a[3]).to_string();
                (a[1].clone(), name)
            })
            .collect();
        let deleted: Vec<(String, String)> = teardown
            .iter()
            .map(|a| {
                assert_eq!(a.len(), 4, "{a:?}");
                assert_eq!(a[2], "delete", "{a:?}");
                (a[1].clone(), a[3].clone())
            })
            .collect();
        let mut c = created.clone();
        let mut d = deleted.clone();
        c.sort();
        d.sort();
        assert_eq!(
            c, d,
            "setup created {created:?}, teardown deletes {deleted:?}"
        );
        // The target goes first: its LUN uses the storage object.
        assert_eq!(deleted[0].0, "/iscsi");
        // Nothing global, nothing persisted, no wildcard.
        for argv in setup.iter().chain(&teardown) {
            let line = argv.join(" ");
            assert!(!line.contains("saveconfig"), "{line}");
            assert!(!line.contains("clearconfig"), "{line}");
            assert!(!line.contains("0.0.0.0"), "{line}");
            assert!(!line.contains('*'), "{line}");
        }
        for argv in &teardown {
            assert!(!argv.iter().any(|a| a.starts_with("save")), "{argv:?}");
        }
    }
}

/// Delete the storage object (which frees its PR state with the device),
/// then re-create it with the same unit serial and attributes, LUN 0 and
/// every initiator's mapped LUN; target, TPG attributes, portal and ACLs
/// stay (see "Resetting the LUN" in the module docs).
#[test]
fn reset_recreates_the_storage_object_and_its_mappings() {
    let plan = fileio_plan();
    assert_eq!(
        lines(&plan.reset_commands()),
        [
            "/backstores/fileio delete fts-hil-4242",
            "/backstores/fileio create name=fts-hil-4242 file_or_dev=/var/tmp/fts-hil/lun.img size=67108864 write_back=true wwn=ab4f1d18-1470-586d-bd77-c67a196a1b70",
            "/backstores/fileio/fts-hil-4242 set attribute block_size=4096 emulate_caw=1 emulate_fua_write=1 emulate_tpu=0",
            "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/luns create /backstores/fileio/fts-hil-4242 lun=0 add_mapped_luns=false",
            "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.2026-11.invalid.fts-hil:host-a create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
            "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.2026-11.invalid.fts-hil:host-b create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
            "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.1993-08.org.debian:01:c0ffee create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
        ]
    );
    assert_eq!(
        lines(&block_plan().reset_commands()),
        [
            "/backstores/block delete fts_blk-1",
            "/backstores/block create name=fts_blk-1 dev=/dev/loop7 readonly=false wwn=bbd5b3a7-b1fe-2806-9910-9456395aa81e",
            "/backstores/block/fts_blk-1 set attribute block_size=512 emulate_caw=1 emulate_fua_write=0 emulate_tpu=0",
            "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/luns create /backstores/block/fts_blk-1 lun=0 add_mapped_luns=false",
            "/iscsi/iqn.2026-11.invalid.fts-hil:lio-4242/tpg1/acls/iqn.2026-11.invalid.fts-hil:host-a create mapped_lun=0 tpg_lun_or_backstore=lun0 write_protect=0",
        ]
    );
}

#[test]
fn unit_serial_is_stable_uuid_shaped_and_distinct() {
    let a = fileio_plan();
    let s = a.unit_serial();
    assert_eq!(s, FILEIO_WWN);
    assert_eq!(block_plan().unit_serial(), BLOCK_WWN);
    assert_eq!(s, a.clone().unit_serial());
    assert_eq!(s.len(), 36, "{s}");
    for (i, c) in s.chars().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            assert_eq!(c, '-', "{s}");
        } else {
            assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{s}");
        }
    }
    let mut b = fileio_plan();
    b.backstore_name = "fts-hil-4243".into();
    assert_ne!(s, b.unit_serial());
    let mut c = fileio_plan();
    c.target_iqn = "iqn.2026-11.invalid.fts-hil:lio-4243".into();
    assert_ne!(s, c.unit_serial());
}

#[test]
fn new_uses_this_process_and_is_valid() {
    let plan = LioPlan::new(
        Backstore::FileIo {
            path: "/var/tmp/x.img".into(),
            size_bytes: 1 << 20,
        },
        vec![HOST_A.into()],
    );
    let pid = std::process::id();
    assert_eq!(
        plan.target_iqn,
        format!("iqn.2026-11.invalid.fts-hil:lio-{pid}")
    );
    assert_eq!(plan.backstore_name, format!("fts-hil-{pid}"));
    assert_eq!(plan.block_size, 4096);
    assert_eq!(plan.portal, ("127.0.0.1".to_string(), 3260));
    assert!(!plan.write_back);
    assert_eq!(plan.emulate, LioEmulation::default());
    assert_eq!(
        LioEmulation::default(),
        LioEmulation {
            caw: true,
            fua_write: true,
            tpu: false
        }
    );
    plan.validate().expect("valid");
}

/// (what to change, words the message must contain)
type Mutation = (fn(&mut LioPlan), &'static [&'static str]);

#[test]
fn validation_failures_say_what_is_wrong() {
    let cases: &[(&str, Mutation)] = &[
        (
            "uppercase target",
            (
                |p| p.target_iqn = "iqn.2026-11.Invalid.fts:x".into(),
                &["target_iqn", "'I'", "lower-case"],
            ),
        ),
        (
            "not an iqn",
            (
                |p| p.target_iqn = "naa.5001405abcdef012".into(),
                &["target_iqn", "iqn."],
            ),
        ),
        (
            "bad month",
            (
                |p| p.target_iqn = "iqn.2026-13.invalid.fts:x".into(),
                &["target_iqn", "date"],
            ),
        ),
        (
            "no date",
            (
                |p| p.target_iqn = "iqn.invalid.fts:x".into(),
                &["target_iqn", "date"],
            ),
        ),
        (
            "underscore in iqn",
            (
                |p| p.target_iqn = "iqn.2026-11.invalid.fts:a_b".into(),
                &["target_iqn", "'_'"],
            ),
        ),
        (
            "space in iqn",
            (
                |p| p.target_iqn = "iqn.2026-11.invalid.fts:a b".into(),
                &["target_iqn", "' '"],
            ),
        ),
        (
            "no dot after date",
            (
                |p| p.target_iqn = "iqn.2026-11.localhost:x".into(),
                &["target_iqn", "'.'"],
            ),
        ),
        (
            "iqn too long",
            (
                |p| p.target_iqn = format!("iqn.2026-11.invalid.fts:{}", "x".repeat(200)),
                &["target_iqn", "223"],
            ),
        ),
        (
            "empty name",
            (
                |p| p.backstore_name = String::new(),
                &["backstore_name", "1 to 128"],
            ),
        ),
        (
            "slash in name",
            (
                |p| p.backstore_name = "a/b".into(),
                &["backstore_name", "'/'"],
            ),
        ),
        (
            "dot in name",
            (
                |p| p.backstore_name = "a.b".into(),
                &["backstore_name", "'.'"],
            ),
        ),
        (
            "long name",
            (
                |p| p.backstore_name = "n".repeat(129),
                &["backstore_name", "1 to 128"],
            ),
        ),
        (
            "block size 1024",
            (|p| p.block_size = 1024, &["block_size 1024", "512 or 4096"]),
        ),
        ("block size 0", (|p| p.block_size = 0, &["block_size 0"])),
        (
            "zero size",
            (
                |p| {
                    p.backstore = Backstore::FileIo {
                        path: "/var/tmp/a".into(),
                        size_bytes: 0,
                    }
                },
                &["size_bytes 0", "multiple"],
            ),
        ),
        (
            "ragged size",
            (
                |p| {
                    p.backstore = Backstore::FileIo {
                        path: "/var/tmp/a".into(),
                        size_bytes: 4096 * 10 + 512,
                    }
                },
                &["size_bytes 41472", "block_size 4096"],
            ),
        ),
        (
            "relative path",
            (
                |p| {
                    p.backstore = Backstore::FileIo {
                        path: "lun.img".into(),
                        size_bytes: 4096,
                    }
                },
                &["fileio path lun.img", "absolute"],
            ),
        ),
        (
            "space in path",
            (
                |p| {
                    p.backstore = Backstore::FileIo {
                        path: "/var/tmp/my lun".into(),
                        size_bytes: 4096,
                    }
                },
                &["fileio path", "' '"],
            ),
        ),
        (
            "comma in path",
            (
                |p| {
                    p.backstore = Backstore::FileIo {
                        path: "/var/tmp/a,b".into(),
                        size_bytes: 4096,
                    }
                },
                &["fileio path", "','"],
            ),
        ),
        (
            "tilde in device",
            (
                |p| {
                    p.backstore = Backstore::Block {
                        device: "~/dev".into(),
                    }
                },
                &["block device", "absolute"],
            ),
        ),
        (
            "write-back block",
            (
                |p| {
                    p.backstore = Backstore::Block {
                        device: "/dev/sdb".into(),
                    };
                    p.write_back = true;
                },
                &["write_back", "block", "fileio"],
            ),
        ),
        (
            "hostname portal",
            (
                |p| p.portal.0 = "localhost".into(),
                &["portal \"localhost\"", "address"],
            ),
        ),
        (
            "uncanonical v6",
            (
                |p| p.portal.0 = "0:0::1".into(),
                &["portal", "canonically", "::1"],
            ),
        ),
        (
            "link-local portal",
            (|p| p.portal.0 = "fe80::1".into(), &["portal", "link-local"]),
        ),
        (
            "mapped v4 portal",
            (
                |p| p.portal.0 = "::ffff:10.0.0.1".into(),
                &["portal", "IPv4-mapped"],
            ),
        ),
        ("port 0", (|p| p.portal.1 = 0, &["portal", "port 0"])),
        (
            "no initiator",
            (|p| p.initiators.clear(), &["initiators", "at least one"]),
        ),
        (
            "duplicate initiator",
            (
                |p| p.initiators.push(HOST_B.into()),
                &["initiator", HOST_B, "twice"],
            ),
        ),
        (
            "bad initiator",
            (
                |p| p.initiators[1] = "host-b".into(),
                &["initiator \"host-b\"", "iqn."],
            ),
        ),
    ];
    for (name, (mutate, words)) in cases {
        let mut plan = fileio_plan();
        mutate(&mut plan);
        let err = plan.validate().expect_err(name);
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("LIO plan: "), "{name}: {msg}");
        for w in *words {
            assert!(msg.contains(w), "{name}: {msg:?} lacks {w:?}");
        }
    }
}

#[test]
fn valid_variants_pass() {
    let ok: &[fn(&mut LioPlan)] = &[
        |p| p.portal = ("0.0.0.0".into(), 3260),
        |p| p.portal = ("fd00::5".into(), 65535),
        |p| p.block_size = 512,
        |p| p.initiators = vec![HOST_C.into()],
        |p| p.backstore_name = "A-z_0".into(),
        |p| {
            p.backstore = Backstore::FileIo {
                path: "/srv/fts/lun-1.img".into(),
                size_bytes: 512,
            };
            p.block_size = 512;
        },
    ];
    for (n, mutate) in ok.iter().enumerate() {
        let mut plan = fileio_plan();
        mutate(&mut plan);
        plan.validate()
            .unwrap_or_else(|e| panic!("variant {n}: {e}"));
    }
}

#[test]
fn unavailable_reasons_name_what_is_missing() {
    assert_eq!(
        lio::unavailable_reason(false, false, true).as_deref(),
        Some("LIO needs /sys/kernel/config (configfs) and targetcli; this machine has neither: use --target tgt")
    );
    let no_configfs = lio::unavailable_reason(false, true, true).expect("unavailable");
    assert!(no_configfs.contains("has no configfs"), "{no_configfs}");
    assert!(no_configfs.ends_with("use --target tgt"), "{no_configfs}");
    let no_cli = lio::unavailable_reason(true, false, true).expect("unavailable");
    assert!(
        no_cli.contains("no targetcli") && no_cli.contains("targetcli-fb"),
        "{no_cli}"
    );
    let not_root = lio::unavailable_reason(true, true, false).expect("unavailable");
    assert!(
        not_root.contains("root") && not_root.contains("--target tgt"),
        "{not_root}"
    );
    assert_eq!(lio::unavailable_reason(true, true, true), None);
}

/// What this machine has, found without `hil::lio`: configfs (mounted,
/// or a file system the kernel knows), `targetcli` (on `PATH` or in the
/// sbin directories), and root.
fn machine() -> (bool, bool, bool) {
    let configfs = Path::new("/sys/kernel/config").is_dir()
        || std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("configfs"))
        });
    let path = std::env::var_os("PATH").unwrap_or_default();
    let targetcli = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .any(|d| d.join("targetcli").is_file());
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    (configfs, targetcli, root)
}

#[test]
fn available_here_agrees_with_the_machine() {
    let (configfs, targetcli, root) = machine();
    let result = lio::available();
    assert_eq!(
        result.clone().err(),
        lio::unavailable_reason(configfs, targetcli, root),
        "configfs {configfs}, targetcli {targetcli}, root {root}"
    );
    if !configfs {
        let why = result.expect_err("no configfs here, so no LIO");
        assert!(why.contains("configfs"), "{why}");
        assert!(why.contains("use --target tgt"), "{why}");
    }
}

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// Without LIO, `start` fails with `available()`'s message before running
/// anything; with LIO (configfs, targetcli, root), it exports the LUN for
/// real and `stop` removes exactly that again.
#[test]
fn start_fails_clearly_without_lio_and_exports_the_lun_with_it() {
    // tempfile's names are letters and digits: a path the plan accepts.
    let dir = tempfile::Builder::new()
        .prefix("fts-lio-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let path = dir.path().join("lun.img");
    let mut plan = LioPlan::new(
        Backstore::FileIo {
            path: path.clone(),
            size_bytes: 1 << 20,
        },
        vec![HOST_A.into()],
    );
    plan.portal = ("127.0.0.1".to_string(), free_port());
    plan.validate().expect("a valid plan");
    match lio::available() {
        Err(why) => {
            let started = Instant::now();
            match LioTarget::start(plan) {
                Ok(_) => panic!("LioTarget::start succeeded where available() says: {why}"),
                Err(Error::Provision { what }) => {
                    assert_eq!(what, why);
                    assert!(
                        what.contains("LIO needs /sys/kernel/config (configfs) and targetcli")
                            || what.contains("LIO needs root"),
                        "{what}"
                    );
                }
                Err(e) => panic!("expected Error::Provision, got {e:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(!path.exists(), "start must not create the backing file");
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("read tempdir").count(),
                0,
                "start must leave nothing behind"
            );
        }
        Ok(()) => exports_for_real(plan, &path),
    }
}

/// The LIO branch: what `start` made is in configfs, the portal listens,
/// and `stop` deletes the target, the storage object and the backing file.
fn exports_for_real(plan: LioPlan, path: &Path) {
    let port = plan.portal.1;
    let lio = LioTarget::start(plan.clone()).expect("LIO is available here, so start must work");
    let target = Path::new("/sys/kernel/config/target/iscsi").join(&plan.target_iqn);
    let tpg = target.join("tpgt_1");
    let enabled = std::fs::read_to_string(tpg.join("enable")).expect("tpgt_1/enable");
    assert_eq!(enabled.trim(), "1", "the TPG is enabled");
    assert!(tpg.join("lun/lun_0").is_dir(), "LUN 0 exists");
    assert!(
        tpg.join("acls").join(HOST_A).join("lun_0").is_dir(),
        "{HOST_A} has mapped LUN 0"
    );
    assert!(
        tpg.join("np").join(format!("127.0.0.1:{port}")).is_dir(),
        "the one portal exists"
    );
    let storage_objects = || -> Vec<PathBuf> {
        std::fs::read_dir("/sys/kernel/config/target/core")
            .map(|hbas| {
                hbas.filter_map(Result::ok)
                    .map(|hba| hba.path().join(&plan.backstore_name))
                    .filter(|so| so.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(storage_objects().len(), 1, "one storage object");
    assert_eq!(
        std::fs::metadata(path).expect("backing file").len(),
        1 << 20,
        "targetcli created the backing file with the plan's size"
    );
    TcpStream::connect(("127.0.0.1", port)).expect("the portal listens");
    lio.stop().expect("a clean teardown");
    assert!(!target.exists(), "the target is gone");
    assert_eq!(
        storage_objects(),
        Vec::<PathBuf>::new(),
        "the storage object is gone"
    );
    assert!(!path.exists(), "the backing file start created is removed");
}

#[test]
fn start_checks_the_plan_first() {
    let mut plan = fileio_plan();
    plan.initiators.clear();
    match LioTarget::start(plan) {
        Err(Error::InvalidArgument { what }) => assert!(what.contains("initiators"), "{what}"),
        Err(e) => panic!("expected InvalidArgument, got {e:?}"),
        Ok(_) => panic!("an invalid plan started"),
    }
}
