//! INQUIRY data (SPC-4 6.4): standard data and the VPD pages fts reads:
//! 0x00 Supported VPD Pages, 0x80 Unit Serial Number, 0x83 Device
//! Identification, 0xB0 Block Limits (SBC-3 6.5.3).
//!
//! VPD decoders check the page code and return
//! [`Error::Truncated`](crate::Error::Truncated) with `need` = 4 + PAGE
//! LENGTH when the buffer holds less than the page says it has.

use std::fmt;

use crate::error::{ascii_field, bad, be_or0, byte_or0, need, Result};

/// VPD page code of Supported VPD Pages.
pub const VPD_SUPPORTED_PAGES: u8 = 0x00;
/// VPD page code of Unit Serial Number.
pub const VPD_UNIT_SERIAL: u8 = 0x80;
/// VPD page code of Device Identification.
pub const VPD_DEVICE_IDENTIFICATION: u8 = 0x83;
/// VPD page code of Block Limits.
pub const VPD_BLOCK_LIMITS: u8 = 0xB0;

/// PERIPHERAL DEVICE TYPE of a direct-access block device (disk).
pub const DEVICE_TYPE_DISK: u8 = 0x00;

/// Standard INQUIRY data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StandardInquiry {
    /// PERIPHERAL QUALIFIER (3 bits): 0 = connected, 1 = not connected,
    /// 3 = no logical unit.
    pub peripheral_qualifier: u8,
    /// PERIPHERAL DEVICE TYPE (5 bits), 0 for disks.
    pub peripheral_device_type: u8,
    /// RMB: removable medium.
    pub removable: bool,
    /// VERSION: 0x04 SPC-2, 0x05 SPC-3, 0x06 SPC-4, 0x07 SPC-5.
    pub version: u8,
    /// NORMACA.
    pub normaca: bool,
    /// HISUP: hierarchical LUN addressing.
    pub hisup: bool,
    /// RESPONSE DATA FORMAT (should be 2).
    pub response_data_format: u8,
    /// ADDITIONAL LENGTH.
    pub additional_length: u8,
    /// SCCS: embedded storage array controller.
    pub sccs: bool,
    /// ACC: access controls coordinator.
    pub acc: bool,
    /// TPGS (2 bits): asymmetric logical unit access support.
    pub tpgs: u8,
    /// 3PC: third-party copy.
    pub three_pc: bool,
    /// PROTECT: protection information supported.
    pub protect: bool,
    /// ENCSERV: enclosure services.
    pub encserv: bool,
    /// MULTIP: multiple ports.
    pub multip: bool,
    /// CMDQUE: command queuing.
    pub cmdque: bool,
    /// T10 VENDOR IDENTIFICATION, trailing padding removed.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION, trailing padding removed.
    pub product: String,
    /// PRODUCT REVISION LEVEL, trailing padding removed.
    pub revision: String,
}

impl StandardInquiry {
    /// Minimum length of standard INQUIRY data.
    pub const MIN_LEN: usize = 36;

    /// Decodes standard INQUIRY data (at least 36 bytes).
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "standard INQUIRY data";
        need(buf, Self::MIN_LEN, WHAT)?;
        Ok(Self {
            peripheral_qualifier: buf[0] >> 5,
            peripheral_device_type: buf[0] & 0x1f,
            removable: buf[1] & 0x80 != 0,
            version: buf[2],
            normaca: buf[3] & 0x20 != 0,
            hisup: buf[3] & 0x10 != 0,
            response_data_format: buf[3] & 0x0f,
            additional_length: buf[4],
            sccs: buf[5] & 0x80 != 0,
            acc: buf[5] & 0x40 != 0,
            tpgs: (buf[5] >> 4) & 0x03,
            three_pc: buf[5] & 0x08 != 0,
            protect: buf[5] & 0x01 != 0,
            encserv: buf[6] & 0x40 != 0,
            multip: buf[6] & 0x10 != 0,
            cmdque: buf[7] & 0x02 != 0,
            vendor: ascii_field(&buf[8..16], false),
            product: ascii_field(&buf[16..32], false),
            revision: ascii_field(&buf[32..36], false),
        })
    }

    /// True for a connected direct-access block device.
    pub fn is_disk(&self) -> bool {
        self.peripheral_qualifier == 0 && self.peripheral_device_type == DEVICE_TYPE_DISK
    }
}

/// Checks a VPD page header and returns the page's payload (after the 4-byte
/// header, PAGE LENGTH bytes).
fn vpd_payload<'a>(buf: &'a [u8], page: u8, what: &'static str) -> Result<&'a [u8]> {
    need(buf, 4, what)?;
    if buf[1] != page {
        return Err(bad(
            what,
            format!("page code 0x{:02X}, expected 0x{page:02X}", buf[1]),
        ));
    }
    let total = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    need(buf, total, what)?;
    Ok(&buf[4..total])
}

/// VPD page 0x00: Supported VPD Pages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SupportedVpdPages {
    /// The supported page codes, as listed.
    pub pages: Vec<u8>,
}

impl SupportedVpdPages {
    /// Decodes VPD page 0x00.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let pages = vpd_payload(buf, VPD_SUPPORTED_PAGES, "VPD page 0x00")?;
        Ok(Self {
            pages: pages.to_vec(),
        })
    }

    /// True when `page` is listed.
    pub fn supports(&self, page: u8) -> bool {
        self.pages.contains(&page)
    }
}

/// VPD page 0x80: Unit Serial Number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitSerialNumber {
    /// PRODUCT SERIAL NUMBER, leading and trailing padding removed.
    pub serial: String,
}

impl UnitSerialNumber {
    /// Decodes VPD page 0x80.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let s = vpd_payload(buf, VPD_UNIT_SERIAL, "VPD page 0x80")?;
        Ok(Self {
            serial: ascii_field(s, true),
        })
    }
}

/// CODE SET of a designation descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeSet {
    /// 1: binary.
    Binary,
    /// 2: ASCII printable.
    Ascii,
    /// 3: UTF-8.
    Utf8,
    /// Anything else (reserved).
    Other(u8),
}

impl CodeSet {
    fn from_nibble(b: u8) -> Self {
        match b & 0x0f {
            1 => Self::Binary,
            2 => Self::Ascii,
            3 => Self::Utf8,
            other => Self::Other(other),
        }
    }
}

/// ASSOCIATION of a designation descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Association {
    /// 0: the addressed logical unit.
    LogicalUnit,
    /// 1: the target port that received the command.
    TargetPort,
    /// 2: the SCSI target device.
    TargetDevice,
    /// 3: reserved.
    Reserved,
}

/// DESIGNATOR TYPE of a designation descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesignatorType {
    /// 0: vendor specific.
    VendorSpecific,
    /// 1: T10 vendor ID based.
    T10VendorId,
    /// 2: EUI-64 based.
    Eui64,
    /// 3: NAA.
    Naa,
    /// 4: relative target port identifier.
    RelativeTargetPort,
    /// 5: target port group.
    TargetPortGroup,
    /// 6: logical unit group.
    LogicalUnitGroup,
    /// 7: MD5 logical unit identifier.
    Md5LogicalUnitId,
    /// 8: SCSI name string.
    ScsiNameString,
    /// 9: protocol specific port identifier.
    ProtocolSpecificPortId,
    /// 0xA: UUID.
    Uuid,
    /// Reserved values.
    Reserved(u8),
}

impl DesignatorType {
    fn from_nibble(b: u8) -> Self {
        match b & 0x0f {
            0 => Self::VendorSpecific,
            1 => Self::T10VendorId,
            2 => Self::Eui64,
            3 => Self::Naa,
            4 => Self::RelativeTargetPort,
            5 => Self::TargetPortGroup,
            6 => Self::LogicalUnitGroup,
            7 => Self::Md5LogicalUnitId,
            8 => Self::ScsiNameString,
            9 => Self::ProtocolSpecificPortId,
            0xa => Self::Uuid,
            other => Self::Reserved(other),
        }
    }
}

/// One designation descriptor of VPD page 0x83.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Designator {
    /// PROTOCOL IDENTIFIER (valid when `piv`).
    pub protocol_identifier: u8,
    /// CODE SET.
    pub code_set: CodeSet,
    /// PIV: the protocol identifier is valid.
    pub piv: bool,
    /// ASSOCIATION.
    pub association: Association,
    /// DESIGNATOR TYPE.
    pub designator_type: DesignatorType,
    /// The DESIGNATOR bytes.
    pub bytes: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Designator {
    /// The designator as an identifier string, for the types that have a
    /// customary one: `naa.<hex>`, `eui.<hex>`, `t10.<ascii>`, or the SCSI
    /// name string itself (already `iqn.`/`naa.`/`eui.` prefixed). Hex is
    /// lowercase. `None` for other types and for empty designators.
    pub fn to_id_string(&self) -> Option<String> {
        if self.bytes.is_empty() {
            return None;
        }
        match self.designator_type {
            DesignatorType::Naa => Some(format!("naa.{}", hex(&self.bytes))),
            DesignatorType::Eui64 => Some(format!("eui.{}", hex(&self.bytes))),
            DesignatorType::T10VendorId => Some(format!("t10.{}", ascii_field(&self.bytes, false))),
            DesignatorType::ScsiNameString => {
                let s = ascii_field(&self.bytes, false);
                (!s.is_empty()).then_some(s)
            }
            _ => None,
        }
    }
}

/// VPD page 0x83: Device Identification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentification {
    /// The designation descriptors, in page order.
    pub designators: Vec<Designator>,
}

impl DeviceIdentification {
    /// Decodes VPD page 0x83.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "VPD page 0x83";
        let mut rest = vpd_payload(buf, VPD_DEVICE_IDENTIFICATION, WHAT)?;
        let mut designators = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(bad(WHAT, "designation descriptor header cut short"));
            }
            let len = 4 + usize::from(rest[3]);
            let Some(d) = rest.get(..len) else {
                return Err(bad(WHAT, "designator runs past the page length"));
            };
            designators.push(Designator {
                protocol_identifier: d[0] >> 4,
                code_set: CodeSet::from_nibble(d[0]),
                piv: d[1] & 0x80 != 0,
                association: match (d[1] >> 4) & 0x03 {
                    0 => Association::LogicalUnit,
                    1 => Association::TargetPort,
                    2 => Association::TargetDevice,
                    _ => Association::Reserved,
                },
                designator_type: DesignatorType::from_nibble(d[1]),
                bytes: d[4..].to_vec(),
            });
            rest = &rest[len..];
        }
        Ok(Self { designators })
    }

    /// The preferred identifier of the logical unit: among designators
    /// associated with the logical unit, NAA > EUI-64 > SCSI name string >
    /// T10 vendor ID; within a type the longest (e.g. a 16-byte NAA 6 over an
    /// 8-byte NAA 5), then the first. Formatted by
    /// [`Designator::to_id_string`], e.g. `naa.60014055d3f8...`.
    pub fn preferred_id(&self) -> Option<String> {
        let rank = |t: DesignatorType| match t {
            DesignatorType::Naa => Some(0),
            DesignatorType::Eui64 => Some(1),
            DesignatorType::ScsiNameString => Some(2),
            DesignatorType::T10VendorId => Some(3),
            _ => None,
        };
        self.designators
            .iter()
            .filter(|d| d.association == Association::LogicalUnit)
            .filter_map(|d| Some((rank(d.designator_type)?, d, d.to_id_string()?)))
            // min_by_key keeps the first of equal keys.
            .min_by_key(|(r, d, _)| (*r, std::cmp::Reverse(d.bytes.len())))
            .map(|(_, _, s)| s)
    }
}

/// VPD page 0xB0: Block Limits (SBC-3). Fields the page is too short to hold
/// (older devices return PAGE LENGTH 0x0C) read as 0, which SBC-3 defines as
/// "no limit reported".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BlockLimits {
    /// WSNZ: WRITE SAME with NUMBER OF BLOCKS 0 is not supported.
    pub wsnz: bool,
    /// MAXIMUM COMPARE AND WRITE LENGTH, in logical blocks (0: COMPARE AND
    /// WRITE not supported).
    pub max_compare_and_write_length: u8,
    /// OPTIMAL TRANSFER LENGTH GRANULARITY, in logical blocks.
    pub optimal_transfer_length_granularity: u16,
    /// MAXIMUM TRANSFER LENGTH, in logical blocks.
    pub max_transfer_length: u32,
    /// OPTIMAL TRANSFER LENGTH, in logical blocks.
    pub optimal_transfer_length: u32,
    /// MAXIMUM PREFETCH LENGTH.
    pub max_prefetch_length: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_lba_count: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_block_descriptor_count: u32,
    /// OPTIMAL UNMAP GRANULARITY.
    pub optimal_unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT, when UGAVALID.
    pub unmap_granularity_alignment: Option<u32>,
    /// MAXIMUM WRITE SAME LENGTH.
    pub max_write_same_length: u64,
}

impl BlockLimits {
    /// Decodes VPD page 0xB0.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let p = vpd_payload(buf, VPD_BLOCK_LIMITS, "VPD page 0xB0")?;
        // Offsets below are from the start of the page (header included).
        let at = |off: usize, n: usize| be_or0(p, off - 4, n);
        let uga = at(32, 4);
        Ok(Self {
            wsnz: byte_or0(p, 0) & 0x01 != 0,
            max_compare_and_write_length: byte_or0(p, 1),
            optimal_transfer_length_granularity: at(6, 2) as u16,
            max_transfer_length: at(8, 4) as u32,
            optimal_transfer_length: at(12, 4) as u32,
            max_prefetch_length: at(16, 4) as u32,
            max_unmap_lba_count: at(20, 4) as u32,
            max_unmap_block_descriptor_count: at(24, 4) as u32,
            optimal_unmap_granularity: at(28, 4) as u32,
            unmap_granularity_alignment: (uga & 0x8000_0000 != 0)
                .then_some((uga & 0x7fff_ffff) as u32),
            max_write_same_length: at(36, 8),
        })
    }
}
