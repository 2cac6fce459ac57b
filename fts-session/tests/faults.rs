//! Whole connections (the server's accept loop, a client's put and get)
//! over a device that misbehaves: the server's view of the device flips
//! bits in the data segments it reads, the client's view flips bits in
//! the segments it reads, and another connection's Process Id Table entry
//! is damaged on the disk. Every file must arrive byte-identical, the damaged
//! entry must stop nothing, and every fault must really have fired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fts_blockdev::{BlockDevice, OpenOptions};
use fts_faults::{Fault, FaultDevice, FaultPlan, Faults, Rule};
use fts_layout::{OsType, PidEntry, Role, LB, PRO_FLAG_ALLOCATED};
use fts_lock::OfdLock;
use fts_session::{
    with_client, ClientTimeouts, CopyOptions, Identity, LockFactory, ServeOptions, Shared,
};
use uuid::Uuid;

fn id(name: &str) -> Identity {
    Identity {
        name: name.into(),
        os: OsType::Unix,
        host: Uuid::new_v4(),
    }
}

fn device(path: &Path) -> Box<dyn BlockDevice> {
    fts_blockdev::open(path.to_str().unwrap(), &OpenOptions::default()).unwrap()
}

/// Byte range of every data segment of `slot` (both rings).
fn segments_of(shared: &Shared, slot: u32) -> std::ops::Range<u64> {
    let g = shared.geometry();
    let mut lo = u64::MAX;
    let mut hi = 0;
    for role in Role::BOTH {
        for i in 0..g.ring_entries {
            let (_, off) = g.segment_location(g.ring_segment(slot, role, i)).unwrap();
            lo = lo.min(off);
            hi = hi.max(off + u64::from(g.seg_lbs) * LB as u64);
        }
    }
    lo..hi
}

fn faulty(path: &Path, plan: FaultPlan) -> (Shared, Faults) {
    let dev = FaultDevice::new(device(path), plan).unwrap();
    let faults = dev.faults().clone();
    (Shared::open(Box::new(dev)).unwrap(), faults)
}

#[test]
fn connections_survive_flipped_segments_and_a_damaged_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    common::format(&p, 4);
    // Slot 2 holds another connection's entry; the server will see it
    // damaged on every read (a persistent bad sector, as far as it knows).
    let mut plain = Shared::open(device(&p)).unwrap();
    plain
        .write_entry(&PidEntry {
            pro_process_id: 2,
            pro_flag_process: PRO_FLAG_ALLOCATED,
            pro_generation: 1,
            pro_requestor: "other".into(),
            pro_requestee: "elsewhere".into(),
            ..PidEntry::free(2)
        })
        .unwrap();
    let segs = segments_of(&plain, 1);
    // ...and a bit of it rots on the disk: every reader sees it damaged.
    let at = plain.geometry().pid_entry_lb(2) * LB as u64 + 60;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
    }
    let server_plan = FaultPlan::new(11).rule(
        Rule::new(Fault::Flip { bits: 1 })
            .reads()
            .bytes(segs.clone())
            .skip(5)
            .times(3),
    );
    let (mut srv_shared, srv_faults) = faulty(&p, server_plan);
    let client_plan = FaultPlan::new(12).rule(
        Rule::new(Fault::Flip { bits: 1 })
            .reads()
            .bytes(segs)
            .skip(2)
            .times(3),
    );
    let (mut cli_shared, cli_faults) = faulty(&p, client_plan);

    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let lock_path = p.clone();
    let locks: LockFactory = Arc::new(move || {
        OfdLock::open(&lock_path).map(|l| Box::new(l) as Box<dyn fts_lock::TableLock>)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    let server = {
        let (stop, said, locks) = (Arc::clone(&stop), Arc::clone(&said), Arc::clone(&locks));
        let opts = ServeOptions {
            root: root.clone(),
            lock_timeout: Duration::from_secs(10),
            max_partial_age: Duration::from_secs(3600),
            auth: None,
        };
        std::thread::spawn(move || {
            let log = |m: String| said.lock().unwrap().push(m);
            fts_session::serve(&mut srv_shared, locks, &id("srv"), &opts, &stop, &log)
        })
    };

    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..3_000_000u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let back = dir.path().join("back.bin");
    let mut lock = locks().unwrap();
    let never = AtomicBool::new(false);
    let t = ClientTimeouts {
        connect: Duration::from_secs(20),
        lock: Duration::from_secs(10),
    };
    with_client(
        &mut cli_shared,
        lock.as_mut(),
        &id("cli"),
        "srv",
        t,
        None,
        &never,
        |c| {
            c.put(&src, "up.bin", CopyOptions::default())?;
            c.get("up.bin", &back, CopyOptions::default())?;
            Ok(())
        },
    )
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap().unwrap();

    assert_eq!(std::fs::read(root.join("up.bin")).unwrap(), data);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert!(srv_faults.fired(0) >= 1, "no segment flip on the server");
    assert!(cli_faults.fired(0) >= 1, "no segment flip on the client");
    let said = said.lock().unwrap().join("\n");
    assert!(said.contains("entry 2 is damaged"), "{said}");
}
