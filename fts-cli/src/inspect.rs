//! `fts inspect` and `fts check`: decode and print every structure, or list
//! every problem.
//!
//! The JSON shape of `inspect --json` is documented in `docs/CLI.md` and is
//! stable: fields may be added, never renamed or removed within format v1.

use anyhow::Result;
use fts_blockdev::BlockDevice;
use fts_layout::{
    CmdArea, Expect, Lease, LockRecord, PidEntry, PtrChunk, Role, ENTRIES_PER_CHUNK, LB,
    RECORD_SIZE,
};
use serde_json::{json, Value};

use crate::layout::Loaded;

fn rec(control: &[u8], lb: u64, off: usize) -> &[u8] {
    let start = lb as usize * LB + off;
    control.get(start..start + RECORD_SIZE).unwrap_or(&[])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn flags(f: u32) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (bit, name) in [
        (fts_layout::PRO_FLAG_ALLOCATED, "ALLOCATED"),
        (fts_layout::PRO_FLAG_PROCESSING, "PROCESSING"),
        (fts_layout::PRO_FLAG_MVS, "MVS"),
        (fts_layout::PRO_FLAG_REFUSED, "REFUSED"),
        (fts_layout::PRO_FLAG_SERVER, "SERVER"),
    ] {
        if f & bit != 0 {
            v.push(name);
        }
    }
    v
}

fn or_err<T>(r: Result<T, fts_layout::Error>, f: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(t) => f(t),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn lease_json(l: Lease) -> Value {
    json!({
        "role": l.role.to_string(), "state": l.state, "generation": l.generation,
        "counter": l.counter, "timestamp_ns": l.timestamp, "host": l.host.to_string(), "pid": l.pid,
    })
}

/// Builds the JSON document of `inspect --json`.
pub fn to_json(dev: &dyn BlockDevice, l: &Loaded, all_entries: bool) -> Value {
    let m = &l.mcb;
    let id = m.layout_id();
    let c = &l.master.control;
    let mcb = json!({
        "blk5_id": m.blk5_id.to_string(),
        "blk5_layout_uuid": m.blk5_layout_uuid.to_string(),
        "blk5_device_uuid": m.blk5_device_uuid.to_string(),
        "blk5_dev_id": m.blk5_dev_id,
        "blk5_version": fts_layout::FORMAT_VERSION,
        "blk5_minor_version": m.blk5_minor_version,
        "sdt_backup_ptr": m.sdt_backup_ptr,
        "mcb_backup_ptr": m.mcb_backup_ptr,
        "blk5_seg_size": m.blk5_seg_size,
        "blk5_time_id": m.blk5_time_id,
        "blk5_tot_seg_num": m.blk5_tot_seg_num,
        "blk5_max_connections": m.blk5_max_connections,
        "blk5_process_id_table_ptr": m.blk5_process_id_table_ptr,
        "blk5_secondary_device_table_ptr": m.blk5_secondary_device_table_ptr,
        "blk5_secondary_device_entrynum": m.blk5_secondary_device_entrynum,
        "blk5_ptr_seg_per_process": m.blk5_ptr_seg_per_process,
        "blk5_start_process_segment_ptr": m.blk5_start_process_segment_ptr,
        "blk5_mast_sec_start_segment_ptr": m.blk5_mast_sec_start_segment_ptr,
        "blk5_maxptr": m.blk5_maxptr,
        "lock_record_ptr": m.lock_record_ptr,
        "lock_timeout_ms": m.lock_timeout_ms,
        "lease_timeout_ms": m.lease_timeout_ms,
        "io_timeout_ms": m.io_timeout_ms,
        "heartbeat_ms": m.heartbeat_ms,
        "format_block_size": m.format_block_size,
        "device_bytes": m.device_bytes,
        "pid_entry_lbs": m.pid_entry_lbs,
        "ptr_table_lbs": m.ptr_table_lbs,
        "blk5_unix_filename": m.blk5_unix_filename,
        "device_uuids": m.device_uuids.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
    });
    let lock = or_err(
        LockRecord::decode(rec(c, m.lock_record_ptr, 0), Expect::exact(id, 0)),
        |r| {
            json!({
                "state": r.state, "generation": r.generation, "counter": r.counter,
                "timestamp_ns": r.timestamp, "holder_host": r.holder_host.to_string(),
                "holder_name": r.holder_name, "holder_key": r.holder_key, "holder_pid": r.holder_pid,
            })
        },
    );
    let sdt: Vec<Value> = l
        .sdt
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "entry": i + 1,
                "sec_dev_id": e.sec_dev_id.to_string(),
                "sec_str_seg_ptr": e.sec_str_seg_ptr,
                "sec_seg_number_for_device": e.sec_seg_number_for_device,
                "sec_start_segment_number": e.sec_start_segment_number,
                "device_bytes": e.device_bytes,
                "master": e.is_master(),
                "sec_hw_id": e.sec_hw_id,
                "sec_path": e.sec_path,
            })
        })
        .collect();
    let mut pids = Vec::new();
    let mut tables = Vec::new();
    let (g, slots) = match &l.geometry {
        Ok(g) => (Some(g), g.max_connections),
        Err(_) => (None, 0),
    };
    for g in g.into_iter() {
        for slot in 1..=slots {
            let entry = or_err(
                PidEntry::decode(rec(c, g.pid_entry_lb(slot), 0), Expect::exact(id, slot)),
                |p| {
                    json!({
                        "pro_process_id": p.pro_process_id,
                        "pro_flag_process": p.pro_flag_process,
                        "flags": flags(p.pro_flag_process),
                        "pro_con_rc": p.pro_con_rc,
                        "pro_requestor": p.pro_requestor,
                        "pro_requestor_type": p.pro_requestor_type.to_string(),
                        "pro_requestee": p.pro_requestee,
                        "pro_requestee_type": p.pro_requestee_type.to_string(),
                        "pro_generation": p.pro_generation,
                        "pro_alloc_time": p.pro_alloc_time,
                        "pro_accept_time": p.pro_accept_time,
                        "pro_requestor_host": p.pro_requestor_host.to_string(),
                        "pro_requestee_host": p.pro_requestee_host.to_string(),
                        "pro_auth_alg": p.pro_auth_alg,
                        "pro_auth_flags": p.pro_auth_flags,
                        "pro_auth_nonce": hex(&p.pro_auth_nonce),
                        "pro_requestor_key": hex(&p.pro_requestor_key),
                        "pro_requestor_kx": hex(&p.pro_requestor_kx),
                        "pro_requestee_nonce": hex(&p.pro_requestee_nonce),
                        "pro_requestee_key": hex(&p.pro_requestee_key),
                        "pro_requestee_kx": hex(&p.pro_requestee_kx),
                        "pro_requestee_sig": hex(&p.pro_requestee_sig),
                    })
                },
            );
            let mut leases = serde_json::Map::new();
            for role in [Role::Initiator, Role::Connector] {
                let lb = g.lease_lb(slot, role);
                leases.insert(
                role.to_string(),
                json!({
                    "lease": or_err(Lease::decode(rec(c, lb, 0), Expect::exact(id, slot)), lease_json),
                    "command_area_len": or_err(CmdArea::decode(rec(c, lb, RECORD_SIZE), Expect::exact(id, slot)), |a| json!(a.data.len())),
                }),
            );
                tables.push(table_json(c, g, id, slot, role, all_entries));
            }
            pids.push(json!({ "slot": slot, "entry": entry, "sides": leases }));
        }
    }
    json!({
        "device": {
            "location": dev.location(),
            "size_bytes": dev.size_bytes(),
            "block_size": dev.block_size(),
            "identity": dev.identity().to_string(),
        },
        "master_control_block": mcb,
        "lock_record": lock,
        "secondary_device_table": sdt,
        "geometry_error": l.geometry.as_ref().err(),
        "process_id_table": pids,
        "pointer_tables": tables,
        "read_from_backup": l.damaged.iter().map(|d| json!({
            "record": d.record, "lb": d.lb, "error": d.error.detail(), "backup_lb": d.backup_lb,
        })).collect::<Vec<_>>(),
        "dead_entries": l.dead.iter().map(|d| json!({
            "slot": d.slot, "generation": d.generation, "requestor": d.requestor,
            "requestee": d.requestee, "why": d.why,
        })).collect::<Vec<_>>(),
        "problems": l.problems.iter().map(|p| json!({
            "device": p.device, "lb": p.lb, "offset": p.offset_in_lb, "record": p.record, "what": p.what,
        })).collect::<Vec<_>>(),
    })
}

fn table_json(
    c: &[u8],
    g: &fts_layout::Geometry,
    id: u64,
    slot: u32,
    role: Role,
    all: bool,
) -> Value {
    let base = g.table_lb(slot, role);
    let mut gens = std::collections::BTreeSet::new();
    let mut used = 0u32;
    let mut errors = Vec::new();
    let mut entries = Vec::new();
    for ch in 0..g.chunks_per_table {
        let off = base as usize * LB + ch as usize * RECORD_SIZE;
        let bytes = c.get(off..off + RECORD_SIZE).unwrap_or(&[]);
        match PtrChunk::decode(bytes, Expect::exact(id, ch)) {
            Ok(chunk) => {
                gens.insert(chunk.generation);
                for (k, e) in chunk.entries.iter().enumerate() {
                    let idx = ch as usize * ENTRIES_PER_CHUNK + k;
                    if idx >= g.ring_entries as usize {
                        break;
                    }
                    if e.ptr_process_block_seq != 0 || e.ack_seq != 0 {
                        used += 1;
                    }
                    if all {
                        entries.push(json!({
                            "index": idx,
                            "ptr_process_segment_ptr": e.ptr_process_segment_ptr,
                            "ptr_process_segment_flg": e.ptr_process_segment_flg,
                            "ptr_process_req_id": e.ptr_process_req_id,
                            "ptr_process_blk_read": e.ptr_process_blk_read,
                            "ptr_process_block_seq": e.ptr_process_block_seq,
                            "ptr_len": e.ptr_len,
                            "ack_flg": e.ack_flg,
                            "ack_req_id": e.ack_req_id,
                            "ack_seq": e.ack_seq,
                        }));
                    }
                }
            }
            Err(e) => errors.push(format!("chunk {ch}: {e}")),
        }
    }
    let mut v = json!({
        "slot": slot,
        "writer": role.to_string(),
        "lb": base,
        "first_segment": g.ring_segment(slot, role, 0),
        "generations": gens.into_iter().collect::<Vec<_>>(),
        "entries_in_use": used,
        "errors": errors,
    });
    if all {
        v["entries"] = Value::Array(entries);
    }
    v
}

/// Human-readable rendering of the same document.
pub fn to_text(v: &Value) -> String {
    let mut s = String::new();
    let d = &v["device"];
    s.push_str(&format!(
        "device {}: {} bytes, {}-byte blocks, id {}\n",
        d["location"].as_str().unwrap_or(""),
        d["size_bytes"],
        d["block_size"],
        d["identity"].as_str().unwrap_or("")
    ));
    for d in v["read_from_backup"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "\nDAMAGED: {} (LB {}): {}; read from its backup at LB {}\n",
            d["record"].as_str().unwrap_or(""),
            d["lb"],
            d["error"].as_str().unwrap_or(""),
            d["backup_lb"]
        ));
    }
    s.push_str("\nMaster Control Block (LB 5)\n");
    if let Some(m) = v["master_control_block"].as_object() {
        for (k, val) in m {
            s.push_str(&format!("  {k:34} {val}\n"));
        }
    }
    s.push_str(&format!("\nlock record: {}\n", v["lock_record"]));
    s.push_str("\nSecondary Device Table\n");
    for e in v["secondary_device_table"].as_array().into_iter().flatten() {
        s.push_str(&format!("  {e}\n"));
    }
    s.push_str("\nProcess Id Table\n");
    for p in v["process_id_table"].as_array().into_iter().flatten() {
        let e = &p["entry"];
        if let Some(err) = e.get("error") {
            s.push_str(&format!("  slot {:>4}: ERROR {err}\n", p["slot"]));
            continue;
        }
        let fl = e["flags"].as_array().map(|a| a.len()).unwrap_or(0);
        if fl == 0 {
            s.push_str(&format!("  slot {:>4}: free\n", p["slot"]));
        } else {
            s.push_str(&format!(
                "  slot {:>4}: {} {} -> {} gen {} rc {}\n",
                p["slot"],
                e["flags"],
                e["pro_requestor"],
                e["pro_requestee"],
                e["pro_generation"],
                e["pro_con_rc"]
            ));
        }
    }
    s.push_str("\nProcess Segment Pointer Tables\n");
    for t in v["pointer_tables"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  slot {:>4} {:9} LB {:>8} segments {}.. generations {} in use {}{}\n",
            t["slot"],
            t["writer"].as_str().unwrap_or(""),
            t["lb"],
            t["first_segment"],
            t["generations"],
            t["entries_in_use"],
            if t["errors"].as_array().map(|a| a.is_empty()).unwrap_or(true) {
                String::new()
            } else {
                format!(" ERRORS {}", t["errors"])
            }
        ));
    }
    let probs = v["problems"].as_array().map(|a| a.len()).unwrap_or(0);
    s.push_str(&format!(
        "\n{probs} problem(s); run `fts check` for details\n"
    ));
    s
}
