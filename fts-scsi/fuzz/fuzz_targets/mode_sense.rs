//! MODE SENSE(6)/(10) responses and the Caching mode page; a decoded page
//! must survive encode/decode unchanged.
#![no_main]

use fts_scsi::{apply_changeable, CachingPage, ModeSense};
use libfuzzer_sys::fuzz_target;

fn check_page(c: &CachingPage) {
    let enc = c.encode();
    let back = CachingPage::decode(&enc).expect("an encoded page decodes");
    assert_eq!(&back, c);
    let sel = c.mode_select10_params();
    assert_eq!(sel[8] & 0x80, 0, "PS cleared for MODE SELECT");
    let (out, _) = apply_changeable(c, &CachingPage::default(), c);
    let _ = out.encode();
}

fuzz_target!(|data: &[u8]| {
    for m in [ModeSense::parse6(data), ModeSense::parse10(data)]
        .into_iter()
        .flatten()
    {
        for p in &m.pages {
            let _ = m.page(p.page_code, p.subpage_code);
        }
        if let Ok(c) = m.caching_page() {
            check_page(&c);
        }
    }
    if let Ok(c) = CachingPage::decode(data) {
        check_page(&c);
    }
});
