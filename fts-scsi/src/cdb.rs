//! Command descriptor block builders (SPC-4, SBC-3).
//!
//! Every builder is infallible: argument types are as wide as the CDB field
//! they fill. The CONTROL byte is always 0 and the GROUP NUMBER 0.

use std::fmt;

use crate::mode::PageControl;
use crate::pr::{PrInServiceAction, PrOutServiceAction, PrType, LU_SCOPE, PR_OUT_PARAM_LEN};

/// Operation codes of the commands this module builds.
pub mod opcode {
    /// TEST UNIT READY.
    pub const TEST_UNIT_READY: u8 = 0x00;
    /// INQUIRY.
    pub const INQUIRY: u8 = 0x12;
    /// MODE SELECT(6).
    pub const MODE_SELECT_6: u8 = 0x15;
    /// RESERVE(6).
    pub const RESERVE_6: u8 = 0x16;
    /// RELEASE(6).
    pub const RELEASE_6: u8 = 0x17;
    /// MODE SENSE(6).
    pub const MODE_SENSE_6: u8 = 0x1A;
    /// SYNCHRONIZE CACHE(10).
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    /// MODE SELECT(10).
    pub const MODE_SELECT_10: u8 = 0x55;
    /// RESERVE(10).
    pub const RESERVE_10: u8 = 0x56;
    /// RELEASE(10).
    pub const RELEASE_10: u8 = 0x57;
    /// MODE SENSE(10).
    pub const MODE_SENSE_10: u8 = 0x5A;
    /// PERSISTENT RESERVE IN.
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
    /// PERSISTENT RESERVE OUT.
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
    /// READ(16).
    pub const READ_16: u8 = 0x88;
    /// COMPARE AND WRITE.
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    /// WRITE(16).
    pub const WRITE_16: u8 = 0x8A;
    /// SYNCHRONIZE CACHE(16).
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    /// SERVICE ACTION IN(16) (READ CAPACITY(16) is its service action 0x10).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    /// READ CAPACITY(16) service action of SERVICE ACTION IN(16).
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
}

/// Direction of the data transfer of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataDirection {
    /// No data.
    None,
    /// Data-in: from the device to the host.
    FromDevice,
    /// Data-out: from the host to the device.
    ToDevice,
}

/// A CDB of 6, 10 or 16 bytes, and the direction of its data transfer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cdb {
    bytes: [u8; 16],
    len: u8,
    direction: DataDirection,
}

impl Cdb {
    fn new<const N: usize>(bytes: [u8; N], direction: DataDirection) -> Self {
        let mut b = [0u8; 16];
        b[..N].copy_from_slice(&bytes);
        Self {
            bytes: b,
            len: N as u8,
            direction,
        }
    }

    /// The CDB bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The CDB length: 6, 10 or 16.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false; a CDB has at least 6 bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The OPERATION CODE.
    pub fn opcode(&self) -> u8 {
        self.bytes[0]
    }

    /// The direction of the data transfer.
    pub fn direction(&self) -> DataDirection {
        self.direction
    }
}

impl AsRef<[u8]> for Cdb {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Cdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cdb[")?;
        for (i, b) in self.as_bytes().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        write!(f, "; {:?}]", self.direction)
    }
}

use DataDirection::{FromDevice, None as NoData, ToDevice};

/// TEST UNIT READY (SPC-4 6.37).
pub fn test_unit_ready() -> Cdb {
    Cdb::new([opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0], NoData)
}

/// INQUIRY for standard data (SPC-4 6.4): EVPD = 0, PAGE CODE = 0.
pub fn inquiry(allocation_length: u16) -> Cdb {
    let [hi, lo] = allocation_length.to_be_bytes();
    Cdb::new([opcode::INQUIRY, 0, 0, hi, lo, 0], FromDevice)
}

/// INQUIRY for a vital product data page: EVPD = 1.
pub fn inquiry_vpd(page_code: u8, allocation_length: u16) -> Cdb {
    let [hi, lo] = allocation_length.to_be_bytes();
    Cdb::new([opcode::INQUIRY, 0x01, page_code, hi, lo, 0], FromDevice)
}

/// READ CAPACITY(16) (SBC-3 5.16): SERVICE ACTION IN(16), service action
/// 0x10.
pub fn read_capacity16(allocation_length: u32) -> Cdb {
    let mut b = [0u8; 16];
    b[0] = opcode::SERVICE_ACTION_IN_16;
    b[1] = opcode::SA_READ_CAPACITY_16;
    b[10..14].copy_from_slice(&allocation_length.to_be_bytes());
    Cdb::new(b, FromDevice)
}

fn rw16(op: u8, lba: u64, blocks: u32, fua: bool, dir: DataDirection) -> Cdb {
    let mut b = [0u8; 16];
    b[0] = op;
    b[1] = if fua { 0x08 } else { 0 };
    b[2..10].copy_from_slice(&lba.to_be_bytes());
    b[10..14].copy_from_slice(&blocks.to_be_bytes());
    Cdb::new(b, dir)
}

/// READ(16) (SBC-3 5.8) of `blocks` logical blocks at `lba`; FUA makes the
/// device read from the medium, not its cache.
pub fn read16(lba: u64, blocks: u32, fua: bool) -> Cdb {
    rw16(opcode::READ_16, lba, blocks, fua, FromDevice)
}

/// WRITE(16) (SBC-3 5.34) of `blocks` logical blocks at `lba`; FUA makes the
/// write complete only once on the medium.
pub fn write16(lba: u64, blocks: u32, fua: bool) -> Cdb {
    rw16(opcode::WRITE_16, lba, blocks, fua, ToDevice)
}

/// SYNCHRONIZE CACHE(10) (SBC-3 5.22) of `blocks` blocks from `lba` (0
/// blocks: to the end of the medium). IMMED returns before the flush is
/// done.
pub fn synchronize_cache10(lba: u32, blocks: u16, immed: bool) -> Cdb {
    let mut b = [0u8; 10];
    b[0] = opcode::SYNCHRONIZE_CACHE_10;
    b[1] = if immed { 0x02 } else { 0 };
    b[2..6].copy_from_slice(&lba.to_be_bytes());
    b[7..9].copy_from_slice(&blocks.to_be_bytes());
    Cdb::new(b, NoData)
}

/// SYNCHRONIZE CACHE(16) (SBC-3 5.23).
pub fn synchronize_cache16(lba: u64, blocks: u32, immed: bool) -> Cdb {
    let mut b = [0u8; 16];
    b[0] = opcode::SYNCHRONIZE_CACHE_16;
    b[1] = if immed { 0x02 } else { 0 };
    b[2..10].copy_from_slice(&lba.to_be_bytes());
    b[10..14].copy_from_slice(&blocks.to_be_bytes());
    Cdb::new(b, NoData)
}

/// RESERVE(6) (SPC-2 7.21): reserve the whole logical unit for this
/// initiator.
pub fn reserve6() -> Cdb {
    Cdb::new([opcode::RESERVE_6, 0, 0, 0, 0, 0], NoData)
}

/// RELEASE(6) (SPC-2 7.17).
pub fn release6() -> Cdb {
    Cdb::new([opcode::RELEASE_6, 0, 0, 0, 0, 0], NoData)
}

/// RESERVE(10) (SPC-2 7.22): logical unit reservation, no third party.
pub fn reserve10() -> Cdb {
    Cdb::new([opcode::RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], NoData)
}

/// RELEASE(10) (SPC-2 7.18): no third party.
pub fn release10() -> Cdb {
    Cdb::new([opcode::RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], NoData)
}

/// PERSISTENT RESERVE IN (SPC-4 6.15).
pub fn persistent_reserve_in(sa: PrInServiceAction, allocation_length: u16) -> Cdb {
    let mut b = [0u8; 10];
    b[0] = opcode::PERSISTENT_RESERVE_IN;
    b[1] = sa as u8 & 0x1f;
    b[7..9].copy_from_slice(&allocation_length.to_be_bytes());
    Cdb::new(b, FromDevice)
}

/// PERSISTENT RESERVE OUT (SPC-4 6.16) with SCOPE = LU_SCOPE, the given
/// TYPE (`None` → 0, for the service actions that ignore it: REGISTER,
/// REGISTER AND IGNORE EXISTING KEY, CLEAR) and PARAMETER LIST LENGTH 24 —
/// send [`PrOutParams::to_bytes`](crate::pr::PrOutParams::to_bytes) as
/// data-out.
pub fn persistent_reserve_out(sa: PrOutServiceAction, pr_type: Option<PrType>) -> Cdb {
    let mut b = [0u8; 10];
    b[0] = opcode::PERSISTENT_RESERVE_OUT;
    b[1] = sa as u8 & 0x1f;
    b[2] = (LU_SCOPE << 4) | pr_type.map_or(0, PrType::code);
    b[5..9].copy_from_slice(&(PR_OUT_PARAM_LEN as u32).to_be_bytes());
    Cdb::new(b, ToDevice)
}

fn pc_page(pc: PageControl, page_code: u8) -> u8 {
    ((pc as u8) << 6) | (page_code & 0x3f)
}

/// MODE SENSE(6) (SPC-4 6.11). DBD = do not return block descriptors.
pub fn mode_sense6(
    page_code: u8,
    subpage_code: u8,
    pc: PageControl,
    dbd: bool,
    allocation_length: u8,
) -> Cdb {
    Cdb::new(
        [
            opcode::MODE_SENSE_6,
            if dbd { 0x08 } else { 0 },
            pc_page(pc, page_code),
            subpage_code,
            allocation_length,
            0,
        ],
        FromDevice,
    )
}

/// MODE SENSE(10) (SPC-4 6.12), LLBAA = 0.
pub fn mode_sense10(
    page_code: u8,
    subpage_code: u8,
    pc: PageControl,
    dbd: bool,
    allocation_length: u16,
) -> Cdb {
    let mut b = [0u8; 10];
    b[0] = opcode::MODE_SENSE_10;
    b[1] = if dbd { 0x08 } else { 0 };
    b[2] = pc_page(pc, page_code);
    b[3] = subpage_code;
    b[7..9].copy_from_slice(&allocation_length.to_be_bytes());
    Cdb::new(b, FromDevice)
}

/// MODE SELECT(6) (SPC-4 6.9) with PF = 1; SP = save the pages too.
pub fn mode_select6(sp: bool, parameter_list_length: u8) -> Cdb {
    Cdb::new(
        [
            opcode::MODE_SELECT_6,
            0x10 | u8::from(sp),
            0,
            0,
            parameter_list_length,
            0,
        ],
        ToDevice,
    )
}

/// MODE SELECT(10) (SPC-4 6.10) with PF = 1.
pub fn mode_select10(sp: bool, parameter_list_length: u16) -> Cdb {
    let mut b = [0u8; 10];
    b[0] = opcode::MODE_SELECT_10;
    b[1] = 0x10 | u8::from(sp);
    b[7..9].copy_from_slice(&parameter_list_length.to_be_bytes());
    Cdb::new(b, ToDevice)
}

/// COMPARE AND WRITE (SBC-3 5.2) of `blocks` logical blocks at `lba`. The
/// data-out buffer is `2 * blocks` blocks: the compare data followed by the
/// write data. A miscompare ends with MISCOMPARE / 1D/00.
pub fn compare_and_write(lba: u64, blocks: u8, fua: bool) -> Cdb {
    let mut b = [0u8; 16];
    b[0] = opcode::COMPARE_AND_WRITE;
    b[1] = if fua { 0x08 } else { 0 };
    b[2..10].copy_from_slice(&lba.to_be_bytes());
    b[13] = blocks;
    Cdb::new(b, ToDevice)
}
