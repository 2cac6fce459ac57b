//! Mode parameters (SPC-4 7.5): MODE SENSE(6)/(10) responses, MODE
//! SELECT(6)/(10) parameter lists, and the Caching mode page (SBC-3 6.4.5).
//!
//! fts uses the Caching page to turn write-back caching off (WCE = 0) on
//! arrays whose cache it cannot trust to destage in order.

use crate::error::{bad, need, Error, Result};

/// Page code of the Caching mode page.
pub const CACHING_PAGE_CODE: u8 = 0x08;
/// Length of the Caching mode page including its 2-byte header.
pub const CACHING_PAGE_LEN: usize = 20;
/// Length of a MODE SELECT(6) parameter list carrying only the Caching page.
pub const MODE_SELECT6_CACHING_LEN: usize = 4 + CACHING_PAGE_LEN;
/// Length of a MODE SELECT(10) parameter list carrying only the Caching page.
pub const MODE_SELECT10_CACHING_LEN: usize = 8 + CACHING_PAGE_LEN;

/// PC field of MODE SENSE: which values to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageControl {
    /// Current values (0).
    Current = 0,
    /// Changeable values: a mask, 1 bits can be changed (1).
    Changeable = 1,
    /// Default values (2).
    Default = 2,
    /// Saved values (3).
    Saved = 3,
}

/// The Caching mode page (SBC-3 table 123), all 20 bytes.
///
/// Bits and bytes the page has without a name here (vendor-specific bits and
/// SYNC_PROG in byte 12, bytes 16..20) are kept so that a page read with MODE
/// SENSE is written back unchanged by MODE SELECT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CachingPage {
    /// PS: parameters savable (MODE SENSE only; always sent as 0).
    pub ps: bool,
    /// IC: initiator control of cache segmentation.
    pub ic: bool,
    /// ABPF: abort pre-fetch.
    pub abpf: bool,
    /// CAP: caching analysis permitted.
    pub cap: bool,
    /// DISC: discontinuity.
    pub disc: bool,
    /// SIZE: cache segment size is used.
    pub size: bool,
    /// WCE: write cache enable (write-back caching).
    pub wce: bool,
    /// MF: multiplication factor.
    pub mf: bool,
    /// RCD: read cache disable.
    pub rcd: bool,
    /// DEMAND READ RETENTION PRIORITY (4 bits).
    pub demand_read_retention_priority: u8,
    /// WRITE RETENTION PRIORITY (4 bits).
    pub write_retention_priority: u8,
    /// DISABLE PRE-FETCH TRANSFER LENGTH.
    pub disable_prefetch_transfer_length: u16,
    /// MINIMUM PRE-FETCH.
    pub minimum_prefetch: u16,
    /// MAXIMUM PRE-FETCH.
    pub maximum_prefetch: u16,
    /// MAXIMUM PRE-FETCH CEILING.
    pub maximum_prefetch_ceiling: u16,
    /// FSW: force sequential write.
    pub fsw: bool,
    /// LBCSS: logical block cache segment size.
    pub lbcss: bool,
    /// DRA: disable read-ahead.
    pub dra: bool,
    /// NV_DIS: non-volatile cache disabled.
    pub nv_dis: bool,
    /// The other bits of byte 12 (vendor specific, SYNC_PROG), mask 0x1E.
    pub byte12_other: u8,
    /// NUMBER OF CACHE SEGMENTS.
    pub number_of_cache_segments: u8,
    /// CACHE SEGMENT SIZE.
    pub cache_segment_size: u16,
    /// Bytes 16..20 (reserved, obsolete non-cache segment size).
    pub tail: [u8; 4],
}

fn bit(b: u8, n: u8) -> bool {
    b & (1 << n) != 0
}

fn set(v: bool, n: u8) -> u8 {
    u8::from(v) << n
}

impl CachingPage {
    /// Decodes the page from its first 20 bytes (header included). The page
    /// code must be 0x08 with SPF = 0 and the PAGE LENGTH at least 0x12.
    pub fn decode(page: &[u8]) -> Result<Self> {
        const WHAT: &str = "caching mode page";
        need(page, 2, WHAT)?;
        if page[0] & 0x7f != CACHING_PAGE_CODE {
            return Err(bad(
                WHAT,
                format!("page code byte 0x{:02X} is not 0x08", page[0]),
            ));
        }
        if usize::from(page[1]) + 2 < CACHING_PAGE_LEN {
            return Err(bad(WHAT, format!("page length 0x{:02X} < 0x12", page[1])));
        }
        need(page, CACHING_PAGE_LEN, WHAT)?;
        let p = &page[..CACHING_PAGE_LEN];
        Ok(Self {
            ps: bit(p[0], 7),
            ic: bit(p[2], 7),
            abpf: bit(p[2], 6),
            cap: bit(p[2], 5),
            disc: bit(p[2], 4),
            size: bit(p[2], 3),
            wce: bit(p[2], 2),
            mf: bit(p[2], 1),
            rcd: bit(p[2], 0),
            demand_read_retention_priority: p[3] >> 4,
            write_retention_priority: p[3] & 0x0f,
            disable_prefetch_transfer_length: u16::from_be_bytes([p[4], p[5]]),
            minimum_prefetch: u16::from_be_bytes([p[6], p[7]]),
            maximum_prefetch: u16::from_be_bytes([p[8], p[9]]),
            maximum_prefetch_ceiling: u16::from_be_bytes([p[10], p[11]]),
            fsw: bit(p[12], 7),
            lbcss: bit(p[12], 6),
            dra: bit(p[12], 5),
            nv_dis: bit(p[12], 0),
            byte12_other: p[12] & 0x1e,
            number_of_cache_segments: p[13],
            cache_segment_size: u16::from_be_bytes([p[14], p[15]]),
            tail: [p[16], p[17], p[18], p[19]],
        })
    }

    /// Encodes the page (PS as stored; MODE SELECT builders clear it).
    /// Out-of-range values of the 4-bit fields are truncated to 4 bits.
    pub fn encode(&self) -> [u8; CACHING_PAGE_LEN] {
        let mut p = [0u8; CACHING_PAGE_LEN];
        p[0] = set(self.ps, 7) | CACHING_PAGE_CODE;
        p[1] = (CACHING_PAGE_LEN - 2) as u8;
        p[2] = set(self.ic, 7)
            | set(self.abpf, 6)
            | set(self.cap, 5)
            | set(self.disc, 4)
            | set(self.size, 3)
            | set(self.wce, 2)
            | set(self.mf, 1)
            | set(self.rcd, 0);
        p[3] = (self.demand_read_retention_priority << 4) | (self.write_retention_priority & 0x0f);
        p[4..6].copy_from_slice(&self.disable_prefetch_transfer_length.to_be_bytes());
        p[6..8].copy_from_slice(&self.minimum_prefetch.to_be_bytes());
        p[8..10].copy_from_slice(&self.maximum_prefetch.to_be_bytes());
        p[10..12].copy_from_slice(&self.maximum_prefetch_ceiling.to_be_bytes());
        p[12] = set(self.fsw, 7)
            | set(self.lbcss, 6)
            | set(self.dra, 5)
            | (self.byte12_other & 0x1e)
            | set(self.nv_dis, 0);
        p[13] = self.number_of_cache_segments;
        p[14..16].copy_from_slice(&self.cache_segment_size.to_be_bytes());
        p[16..20].copy_from_slice(&self.tail);
        p
    }

    /// Encodes the page for MODE SELECT: PS cleared (it is reserved in MODE
    /// SELECT and targets such as tgt reject it set).
    pub fn encode_for_select(&self) -> [u8; CACHING_PAGE_LEN] {
        let mut p = self.encode();
        p[0] &= 0x7f;
        p
    }

    /// MODE SELECT(6) parameter list: 4-byte header (MODE DATA LENGTH 0 as
    /// SPC-4 requires, no block descriptors) and this page with PS cleared.
    pub fn mode_select6_params(&self) -> [u8; MODE_SELECT6_CACHING_LEN] {
        let mut b = [0u8; MODE_SELECT6_CACHING_LEN];
        b[4..].copy_from_slice(&self.encode_for_select());
        b
    }

    /// MODE SELECT(10) parameter list: 8-byte header (MODE DATA LENGTH 0, no
    /// block descriptors) and this page with PS cleared.
    pub fn mode_select10_params(&self) -> [u8; MODE_SELECT10_CACHING_LEN] {
        let mut b = [0u8; MODE_SELECT10_CACHING_LEN];
        b[8..].copy_from_slice(&self.encode_for_select());
        b
    }
}

/// Named fields of the Caching page as (name, byte, mask) over the encoded
/// page; a field spanning bytes has one entry per byte.
const CACHING_FIELDS: &[(&str, usize, u8)] = &[
    ("IC", 2, 0x80),
    ("ABPF", 2, 0x40),
    ("CAP", 2, 0x20),
    ("DISC", 2, 0x10),
    ("SIZE", 2, 0x08),
    ("WCE", 2, 0x04),
    ("MF", 2, 0x02),
    ("RCD", 2, 0x01),
    ("DEMAND READ RETENTION PRIORITY", 3, 0xf0),
    ("WRITE RETENTION PRIORITY", 3, 0x0f),
    ("DISABLE PRE-FETCH TRANSFER LENGTH", 4, 0xff),
    ("DISABLE PRE-FETCH TRANSFER LENGTH", 5, 0xff),
    ("MINIMUM PRE-FETCH", 6, 0xff),
    ("MINIMUM PRE-FETCH", 7, 0xff),
    ("MAXIMUM PRE-FETCH", 8, 0xff),
    ("MAXIMUM PRE-FETCH", 9, 0xff),
    ("MAXIMUM PRE-FETCH CEILING", 10, 0xff),
    ("MAXIMUM PRE-FETCH CEILING", 11, 0xff),
    ("FSW", 12, 0x80),
    ("LBCSS", 12, 0x40),
    ("DRA", 12, 0x20),
    ("BYTE 12 VENDOR SPECIFIC/SYNC_PROG", 12, 0x1e),
    ("NV_DIS", 12, 0x01),
    ("NUMBER OF CACHE SEGMENTS", 13, 0xff),
    ("CACHE SEGMENT SIZE", 14, 0xff),
    ("CACHE SEGMENT SIZE", 15, 0xff),
    ("BYTES 16..20", 16, 0xff),
    ("BYTES 16..20", 17, 0xff),
    ("BYTES 16..20", 18, 0xff),
    ("BYTES 16..20", 19, 0xff),
];

/// Applies `desired` on top of `current` as far as `changeable_mask` (the
/// page read with PC = changeable) allows.
///
/// Every bit that differs and is changeable takes the desired value; every
/// other bit keeps the current one. Returns the resulting page (PS taken
/// from `current`) and the names of the fields that differ but could not be
/// (fully) changed, in page order, each once.
pub fn apply_changeable(
    current: &CachingPage,
    desired: &CachingPage,
    changeable_mask: &CachingPage,
) -> (CachingPage, Vec<&'static str>) {
    let cur = current.encode();
    let des = desired.encode();
    let mask = changeable_mask.encode();
    let mut out = cur;
    for i in 2..CACHING_PAGE_LEN {
        out[i] = (cur[i] & !mask[i]) | (des[i] & mask[i]);
    }
    let mut refused: Vec<&'static str> = Vec::new();
    for &(name, i, m) in CACHING_FIELDS {
        if (cur[i] ^ des[i]) & !mask[i] & m != 0 && !refused.contains(&name) {
            refused.push(name);
        }
    }
    // `out` is a well-formed caching page by construction.
    let page = CachingPage::decode(&out).unwrap_or(*current);
    (page, refused)
}

/// The mode parameter header of a MODE SENSE response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModeHeader {
    /// MODE DATA LENGTH (bytes after this field).
    pub mode_data_length: u16,
    /// MEDIUM TYPE.
    pub medium_type: u8,
    /// DEVICE-SPECIFIC PARAMETER (for disks: WP bit 7, DPOFUA bit 4).
    pub device_specific: u8,
    /// LONGLBA (MODE SENSE(10) only).
    pub long_lba: bool,
    /// BLOCK DESCRIPTOR LENGTH.
    pub block_descriptor_length: u16,
}

impl ModeHeader {
    /// WP: the logical unit is write protected (direct-access devices).
    pub fn write_protected(&self) -> bool {
        self.device_specific & 0x80 != 0
    }

    /// DPOFUA: the device supports the DPO and FUA bits.
    pub fn dpofua(&self) -> bool {
        self.device_specific & 0x10 != 0
    }
}

/// One mode page of a MODE SENSE response, raw.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModePage {
    /// PAGE CODE (6 bits).
    pub page_code: u8,
    /// SUBPAGE CODE (0 for page_0 format).
    pub subpage_code: u8,
    /// SPF: sub_page format.
    pub spf: bool,
    /// PS: parameters savable.
    pub ps: bool,
    /// The whole page, header included.
    pub bytes: Vec<u8>,
}

/// A decoded MODE SENSE(6) or (10) response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModeSense {
    /// The header.
    pub header: ModeHeader,
    /// The mode pages, in order.
    pub pages: Vec<ModePage>,
}

impl ModeSense {
    /// Decodes a MODE SENSE(6) response.
    pub fn parse6(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "MODE SENSE(6) data";
        need(buf, 4, WHAT)?;
        let header = ModeHeader {
            mode_data_length: u16::from(buf[0]),
            medium_type: buf[1],
            device_specific: buf[2],
            long_lba: false,
            block_descriptor_length: u16::from(buf[3]),
        };
        Self::parse_common(buf, header, 1, 4, WHAT)
    }

    /// Decodes a MODE SENSE(10) response.
    pub fn parse10(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "MODE SENSE(10) data";
        need(buf, 8, WHAT)?;
        let header = ModeHeader {
            mode_data_length: u16::from_be_bytes([buf[0], buf[1]]),
            medium_type: buf[2],
            device_specific: buf[3],
            long_lba: buf[4] & 0x01 != 0,
            block_descriptor_length: u16::from_be_bytes([buf[6], buf[7]]),
        };
        Self::parse_common(buf, header, 2, 8, WHAT)
    }

    fn parse_common(
        buf: &[u8],
        header: ModeHeader,
        mdl_size: usize,
        header_len: usize,
        what: &'static str,
    ) -> Result<Self> {
        let total = usize::from(header.mode_data_length) + mdl_size;
        if total < header_len {
            return Err(bad(
                what,
                format!(
                    "mode data length {} shorter than the header",
                    header.mode_data_length
                ),
            ));
        }
        need(buf, total, what)?;
        let pages_start = header_len + usize::from(header.block_descriptor_length);
        if pages_start > total {
            return Err(bad(
                what,
                format!(
                    "block descriptor length {} runs past mode data length {}",
                    header.block_descriptor_length, header.mode_data_length
                ),
            ));
        }
        let mut rest = &buf[pages_start..total];
        let mut pages = Vec::new();
        while !rest.is_empty() {
            let spf = rest[0] & 0x40 != 0;
            let (len, subpage_code) = if spf {
                if rest.len() < 4 {
                    return Err(bad(what, "sub_page header cut short"));
                }
                (
                    4 + usize::from(u16::from_be_bytes([rest[2], rest[3]])),
                    rest[1],
                )
            } else {
                if rest.len() < 2 {
                    return Err(bad(what, "page header cut short"));
                }
                (2 + usize::from(rest[1]), 0)
            };
            let Some(page) = rest.get(..len) else {
                return Err(bad(
                    what,
                    format!("page 0x{:02X} runs past mode data length", rest[0] & 0x3f),
                ));
            };
            pages.push(ModePage {
                page_code: rest[0] & 0x3f,
                subpage_code,
                spf,
                ps: rest[0] & 0x80 != 0,
                bytes: page.to_vec(),
            });
            rest = &rest[len..];
        }
        Ok(Self { header, pages })
    }

    /// The first page with this page and subpage code.
    pub fn page(&self, page_code: u8, subpage_code: u8) -> Option<&ModePage> {
        self.pages
            .iter()
            .find(|p| p.page_code == page_code && p.subpage_code == subpage_code)
    }

    /// The Caching page, decoded; [`Error::BadResponse`] when absent.
    pub fn caching_page(&self) -> Result<CachingPage> {
        match self
            .pages
            .iter()
            .find(|p| p.page_code == CACHING_PAGE_CODE && !p.spf)
        {
            Some(p) => CachingPage::decode(&p.bytes),
            None => Err(Error::BadResponse {
                what: "MODE SENSE data",
                detail: "no caching mode page (0x08)".into(),
            }),
        }
    }
}
