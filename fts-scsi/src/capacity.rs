//! READ CAPACITY(16) parameter data (SBC-3 5.16.2).

use crate::error::{bad, need, Result};

/// Decoded READ CAPACITY(16) response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadCapacity16 {
    /// RETURNED LOGICAL BLOCK ADDRESS: the LBA of the last logical block.
    pub last_lba: u64,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_length: u32,
    /// PROT_EN: protection information is enabled.
    pub prot_en: bool,
    /// P_TYPE (3 bits): protection type minus one, when `prot_en`.
    pub p_type: u8,
    /// P_I_EXPONENT (4 bits).
    pub p_i_exponent: u8,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (4 bits): a physical block
    /// holds `1 << exponent` logical blocks.
    pub logical_per_physical_exponent: u8,
    /// LBPME: logical block provisioning management enabled (thin).
    pub lbpme: bool,
    /// LBPRZ: unmapped blocks read as zero.
    pub lbprz: bool,
    /// LOWEST ALIGNED LOGICAL BLOCK ADDRESS (14 bits).
    pub lowest_aligned_lba: u16,
}

impl ReadCapacity16 {
    /// Length of the response as SBC-3 defines it.
    pub const LEN: usize = 32;

    /// Decodes the response. Bytes 16..32 are reserved and not required;
    /// a block length of zero is rejected.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "READ CAPACITY(16) data";
        need(buf, 16, WHAT)?;
        let last_lba = u64::from_be_bytes([
            buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
        ]);
        let block_length = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if block_length == 0 {
            return Err(bad(WHAT, "logical block length is 0"));
        }
        Ok(Self {
            last_lba,
            block_length,
            prot_en: buf[12] & 0x01 != 0,
            p_type: (buf[12] >> 1) & 0x07,
            p_i_exponent: buf[13] >> 4,
            logical_per_physical_exponent: buf[13] & 0x0f,
            lbpme: buf[14] & 0x80 != 0,
            lbprz: buf[14] & 0x40 != 0,
            lowest_aligned_lba: u16::from_be_bytes([buf[14] & 0x3f, buf[15]]),
        })
    }

    /// Number of logical blocks (`last_lba + 1`); `None` if that overflows.
    pub fn block_count(&self) -> Option<u64> {
        self.last_lba.checked_add(1)
    }

    /// Capacity in bytes; `None` if it overflows a u64.
    pub fn size_bytes(&self) -> Option<u64> {
        self.block_count()?
            .checked_mul(u64::from(self.block_length))
    }

    /// Protection type 1..=3 when protection is enabled.
    pub fn protection_type(&self) -> Option<u8> {
        self.prot_en.then_some(self.p_type + 1)
    }

    /// Logical blocks per physical block, `1 << exponent`; `None` for an
    /// exponent that does not fit a u32 shift (never, with 4 bits).
    pub fn logical_per_physical(&self) -> Option<u32> {
        1u32.checked_shl(u32::from(self.logical_per_physical_exponent))
    }
}
