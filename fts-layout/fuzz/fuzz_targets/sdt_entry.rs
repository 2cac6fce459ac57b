//! `SdtEntry::decode` on arbitrary bytes, raw and behind a valid header.
#![no_main]

#[path = "common.rs"]
mod common;

round_trip_target!(fts_layout::SdtEntry, fts_layout::RecordKind::Sdt);
