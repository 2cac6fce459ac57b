//! One lock-update-release of the Process Id Table lock, the cost every
//! connection set-up pays twice, for each SCSI backend tgt offers, against
//! a local tgtd over the libiscsi transport. Skips where tgt is missing.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use fts_layout::{Expect, Stamp, LB, LOCK_LB};
use fts_lock::{Holder, ScsiLockConfig, ScsiLocks, ScsiMethod, TableLock};
use fts_scsi::iscsi::IscsiTransport;

fn bench(c: &mut Criterion) {
    let Some(mut tgtd) = hil::tgt::start_or_skip("fts-lock scsi bench") else {
        return;
    };
    let lun = tgtd.add_lun(16 << 20, 4096).expect("LUN");
    let t = IscsiTransport::connect(
        &lun.url,
        "iqn.2026-11.invalid.fts-bench:lock",
        Duration::from_secs(10),
    )
    .expect("login");
    let shared = fts_scsi::Nexus::shared(Box::new(t));
    let mut g = c.benchmark_group("scsi_lock_tgt");
    for (name, method) in [
        ("scsi2", ScsiMethod::Reserve6),
        ("pr", ScsiMethod::Persistent),
    ] {
        let cfg = ScsiLockConfig {
            transport: shared.clone(),
            record_offset: LOCK_LB * LB as u64,
            stamp: Stamp::new(1, 0),
            expect: Expect::exact(1, 0),
            lock_timeout: Duration::from_secs(10),
            holder: Holder {
                host: uuid::Uuid::nil(),
                name: "bench".into(),
                pid: std::process::id(),
            },
            host_lock: None,
        };
        let locks = ScsiLocks::new(method, cfg).expect("locks");
        let mut lock = locks.handle().expect("handle");
        g.bench_function(format!("lock_release_{name}"), |b| {
            b.iter(|| {
                lock.lock(Duration::from_secs(10))
                    .expect("lock")
                    .release()
                    .expect("release")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
