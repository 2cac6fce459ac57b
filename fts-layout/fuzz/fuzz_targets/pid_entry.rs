//! `PidEntry::decode` on arbitrary bytes, raw and behind a valid header.
#![no_main]

#[path = "common.rs"]
mod common;

round_trip_target!(fts_layout::PidEntry, fts_layout::RecordKind::Pid);
