//! The Caching page setting against a real tgtd: a restore that meets
//! another host's short RESERVE(6) is retried, not given up.

#![cfg(feature = "iscsi")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fts_scsi::cache::{CacheRequest, CacheSetting};
use fts_scsi::iscsi::IscsiTransport;
use fts_scsi::mode::PageControl;
use fts_scsi::{lock_transport, Commands, Nexus, SharedTransport};

fn connect(url: &str, name: &str) -> SharedTransport {
    let iqn = format!("iqn.2026-11.invalid.fts-test:{name}");
    Nexus::shared(Box::new(
        IscsiTransport::connect(url, &iqn, Duration::from_secs(5)).unwrap(),
    ))
}

#[test]
fn restore_waits_out_another_hosts_reservation() {
    let Some(mut tgtd) = hil::start_or_skip("restore_waits_out_another_hosts_reservation") else {
        return;
    };
    let lun = tgtd.add_lun(16 << 20, 4096).unwrap();
    let a = connect(&lun.url, "a");
    let b = connect(&lun.url, "b");
    {
        let mut t = lock_transport(&a);
        let mut p = t.caching_page(PageControl::Current).unwrap();
        p.wce = false;
        t.set_caching_page(&p).unwrap();
    }
    let (mut setting, report) =
        CacheSetting::apply(a.clone(), &CacheRequest::destage_off()).unwrap();
    assert!(setting.changed(), "{report}");
    let _ = lock_transport(&b).clear_unit_attentions();
    lock_transport(&b).reserve6().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        lock_transport(&b).release6().unwrap();
        b
    });
    setting.restore().unwrap();
    assert!(!setting.changed());
    let b = releaser.join().unwrap();
    let _ = lock_transport(&b).clear_unit_attentions();
    let wce = lock_transport(&b)
        .caching_page(PageControl::Current)
        .unwrap()
        .wce;
    assert!(!wce, "WCE left on after the restore");
}
