//! `check` and the repair plan on server registrations (format v1.2,
//! `PRO_FLAG_SERVER`): a live registration is no problem, whatever an
//! earlier connection left in its initiator lease; a dead server's is
//! reported as such (not as a dead connection) and freed once confirmed;
//! a SERVER flag without ALLOCATED and PROCESSING is inconsistent.
#![allow(clippy::unwrap_used)]

use fts_layout::check::{check_image, repair_plan, MasterBytes};
use fts_layout::*;
use uuid::Uuid;

const MIB: u64 = 1 << 20;
/// The checker's clock (ns since the epoch).
const NOW: u64 = 1_800_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn spec() -> FormatSpec {
    let p = GeometryParams {
        master_bytes: 8 * MIB,
        secondary_bytes: vec![],
        block_size: 512,
        segment_bytes: 16 * 1024,
        max_connections: 3,
        ring_entries: 32,
        batch: 4,
    };
    FormatSpec {
        geometry: Geometry::compute(&p).unwrap(),
        layout_uuid: Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0002),
        device_uuids: vec![Uuid::from_u128(0xd0)],
        time_ns: 1,
        paths: vec!["/dev/x0".into()],
        hw_ids: vec![],
        lease_timeout_ms: 10_000,
        lock_timeout_ms: 10_000,
        io_timeout_ms: 30_000,
        heartbeat_ms: 1_000,
    }
}

fn put(m: &mut MasterBytes, lb: u64, rec: &[u8]) {
    m.lb_mut(lb).unwrap()[..RECORD_SIZE].copy_from_slice(rec);
}

/// Entry `slot` as the registration of "srv" (generation 7, registered
/// 600 s ago) with `flags`; its connector lease beat at `beat` (`None`:
/// closed); its initiator lease is an old connection's (generation 3,
/// closed long ago).
fn registration(m: &mut MasterBytes, s: &FormatSpec, slot: u32, flags: u32, beat: Option<u64>) {
    let g = &s.geometry;
    let stamp = Stamp::new(layout_id_of(&s.layout_uuid), slot);
    let host = Uuid::from_u128(0x4057);
    let e = PidEntry {
        pro_flag_process: flags,
        pro_requestor_type: OsType::Unix,
        pro_requestee_type: OsType::Unix,
        pro_generation: 7,
        pro_alloc_time: NOW - 600 * SEC,
        pro_requestor: "srv".into(),
        pro_requestee: "srv".into(),
        pro_requestor_host: host,
        pro_requestee_host: host,
        ..PidEntry::free(slot)
    };
    put(m, g.pid_entry_lb(slot), &e.encode(stamp));
    let old = Lease {
        role: Role::Initiator,
        state: LEASE_CLOSED,
        generation: 3,
        counter: u64::MAX,
        timestamp: NOW - 3600 * SEC,
        host: Uuid::nil(),
        pid: 9,
    };
    put(m, g.lease_lb(slot, Role::Initiator), &old.encode(stamp));
    let mine = Lease {
        role: Role::Connector,
        state: if beat.is_some() {
            LEASE_ALIVE
        } else {
            LEASE_CLOSED
        },
        generation: 7,
        counter: 600,
        timestamp: beat.unwrap_or(NOW - 30 * SEC),
        host,
        pid: 4242,
    };
    put(m, g.lease_lb(slot, Role::Connector), &mine.encode(stamp));
}

const REGISTERED: u32 = PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING | PRO_FLAG_SERVER;

#[test]
fn a_live_registration_is_no_problem_and_is_left_alone() {
    let s = spec();
    let mut m = MasterBytes::formatted(&s);
    registration(&mut m, &s, 3, REGISTERED, Some(NOW - SEC));
    let c = check_image(&m.image(Some(NOW))).unwrap();
    assert!(c.problems.is_empty(), "{:#?}", c.problems);
    assert!(c.dead.is_empty(), "{:#?}", c.dead);
    let plan = repair_plan(&m.image(Some(NOW)), &[]).unwrap();
    assert!(plan.repairs.is_empty() && plan.left.is_empty(), "{plan:#?}");
}

#[test]
fn a_dead_servers_registration_is_reported_as_such_and_freed_when_confirmed() {
    let s = spec();
    let g = &s.geometry;
    let mut m = MasterBytes::formatted(&s);
    registration(&mut m, &s, 3, REGISTERED, Some(NOW - 40 * SEC));
    let c = check_image(&m.image(Some(NOW))).unwrap();
    assert_eq!(c.dead.len(), 1, "{:#?}", c.problems);
    assert_eq!(c.dead[0].slot, 3);
    assert_eq!(c.problems.len(), 1, "{:#?}", c.problems);
    let p = c.problems[0].to_string();
    assert!(p.contains("registration of fts server \"srv\""), "{p}");
    assert!(p.contains("dead server's registration"), "{p}");
    assert!(!p.contains("dead connection"), "{p}");
    // Only the server's own lease is named: the initiator lease is not
    // part of a registration.
    assert!(
        p.contains("connector lease alive, but its last beat was 40.0 s ago"),
        "{p}"
    );
    assert!(!p.contains("initiator lease"), "{p}");
    // A closed lease (the server stopped, the entry was left) is dead too.
    registration(&mut m, &s, 3, REGISTERED, None);
    assert_eq!(check_image(&m.image(Some(NOW))).unwrap().dead.len(), 1);
    // Not confirmed: nothing is written. Confirmed: freed, generation bumped.
    assert!(repair_plan(&m.image(Some(NOW)), &[])
        .unwrap()
        .repairs
        .is_empty());
    let plan = repair_plan(&m.image(Some(NOW)), &[3]).unwrap();
    assert_eq!(plan.repairs.len(), 1, "{plan:#?}");
    assert!(
        plan.repairs[0]
            .what
            .contains("dead server's registration of \"srv\""),
        "{plan:#?}"
    );
    m.apply(&plan);
    let e = PidEntry::decode(m.lb(g.pid_entry_lb(3)).unwrap(), Expect::any()).unwrap();
    assert!(e.is_free() && e.pro_generation == 8, "{e:?}");
    let c = check_image(&m.image(Some(NOW))).unwrap();
    assert!(c.problems.is_empty(), "{:#?}", c.problems);
}

#[test]
fn a_server_flag_without_allocated_and_processing_is_inconsistent() {
    let s = spec();
    let mut m = MasterBytes::formatted(&s);
    registration(
        &mut m,
        &s,
        2,
        PRO_FLAG_ALLOCATED | PRO_FLAG_SERVER,
        Some(NOW - SEC),
    );
    let c = check_image(&m.image(Some(NOW))).unwrap();
    assert_eq!(c.problems.len(), 1, "{:#?}", c.problems);
    let p = c.problems[0].to_string();
    assert!(p.contains("SERVER (a registration) without"), "{p}");
    // The repair frees it (an inconsistent record nobody can use).
    let plan = repair_plan(&m.image(Some(NOW)), &[]).unwrap();
    assert_eq!(plan.repairs.len(), 1, "{plan:#?}");
    assert!(plan.repairs[0].what.contains("freed"), "{plan:#?}");
}
