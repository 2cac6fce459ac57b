//! Sense data (SPC-4 4.5): fixed format (response codes 0x70/0x71) and
//! descriptor format (0x72/0x73).
//!
//! [`Sense::parse`] never panics. Like Linux's `scsi_normalize_sense`, it
//! decodes what is there: fields beyond the end of the buffer, or beyond the
//! ADDITIONAL SENSE LENGTH, read as zero / absent. It fails only on an empty
//! buffer or a response code that is not sense data.

use std::fmt;

use crate::error::{bad, be, Error, Result};

/// Sense key (SPC-4 table 45).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenseKey {
    /// 0x0 NO SENSE.
    NoSense,
    /// 0x1 RECOVERED ERROR.
    RecoveredError,
    /// 0x2 NOT READY.
    NotReady,
    /// 0x3 MEDIUM ERROR.
    MediumError,
    /// 0x4 HARDWARE ERROR.
    HardwareError,
    /// 0x5 ILLEGAL REQUEST.
    IllegalRequest,
    /// 0x6 UNIT ATTENTION.
    UnitAttention,
    /// 0x7 DATA PROTECT.
    DataProtect,
    /// 0x8 BLANK CHECK.
    BlankCheck,
    /// 0x9 VENDOR SPECIFIC.
    VendorSpecific,
    /// 0xA COPY ABORTED.
    CopyAborted,
    /// 0xB ABORTED COMMAND.
    AbortedCommand,
    /// 0xC (obsolete EQUAL, now reserved).
    Reserved0C,
    /// 0xD VOLUME OVERFLOW.
    VolumeOverflow,
    /// 0xE MISCOMPARE.
    Miscompare,
    /// 0xF COMPLETED (SPC-5).
    Completed,
}

impl SenseKey {
    /// Decodes the low nibble of `b`.
    pub fn from_nibble(b: u8) -> Self {
        match b & 0x0f {
            0x0 => Self::NoSense,
            0x1 => Self::RecoveredError,
            0x2 => Self::NotReady,
            0x3 => Self::MediumError,
            0x4 => Self::HardwareError,
            0x5 => Self::IllegalRequest,
            0x6 => Self::UnitAttention,
            0x7 => Self::DataProtect,
            0x8 => Self::BlankCheck,
            0x9 => Self::VendorSpecific,
            0xa => Self::CopyAborted,
            0xb => Self::AbortedCommand,
            0xc => Self::Reserved0C,
            0xd => Self::VolumeOverflow,
            0xe => Self::Miscompare,
            _ => Self::Completed,
        }
    }

    /// The 4-bit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The standard name, e.g. `"UNIT ATTENTION"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSense => "NO SENSE",
            Self::RecoveredError => "RECOVERED ERROR",
            Self::NotReady => "NOT READY",
            Self::MediumError => "MEDIUM ERROR",
            Self::HardwareError => "HARDWARE ERROR",
            Self::IllegalRequest => "ILLEGAL REQUEST",
            Self::UnitAttention => "UNIT ATTENTION",
            Self::DataProtect => "DATA PROTECT",
            Self::BlankCheck => "BLANK CHECK",
            Self::VendorSpecific => "VENDOR SPECIFIC",
            Self::CopyAborted => "COPY ABORTED",
            Self::AbortedCommand => "ABORTED COMMAND",
            Self::Reserved0C => "RESERVED (0xC)",
            Self::VolumeOverflow => "VOLUME OVERFLOW",
            Self::Miscompare => "MISCOMPARE",
            Self::Completed => "COMPLETED",
        }
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// ASC/ASCQ names, from T10's `asc-num.txt`, for the codes fts can meet.
const ASC_NAMES: &[(u8, u8, &str)] = &[
    (0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION"),
    (0x00, 0x06, "I/O PROCESS TERMINATED"),
    (0x00, 0x16, "OPERATION IN PROGRESS"),
    (0x00, 0x1D, "ATA PASS THROUGH INFORMATION AVAILABLE"),
    (0x02, 0x00, "NO SEEK COMPLETE"),
    (0x03, 0x00, "PERIPHERAL DEVICE WRITE FAULT"),
    (0x04, 0x00, "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE"),
    (0x04, 0x01, "LOGICAL UNIT IS IN PROCESS OF BECOMING READY"),
    (
        0x04,
        0x02,
        "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED",
    ),
    (
        0x04,
        0x03,
        "LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED",
    ),
    (0x04, 0x04, "LOGICAL UNIT NOT READY, FORMAT IN PROGRESS"),
    (0x04, 0x07, "LOGICAL UNIT NOT READY, OPERATION IN PROGRESS"),
    (0x04, 0x09, "LOGICAL UNIT NOT READY, SELF-TEST IN PROGRESS"),
    (
        0x04,
        0x0A,
        "LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION",
    ),
    (
        0x04,
        0x0B,
        "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE",
    ),
    (
        0x04,
        0x0C,
        "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE",
    ),
    (
        0x04,
        0x11,
        "LOGICAL UNIT NOT READY, NOTIFY (ENABLE SPINUP) REQUIRED",
    ),
    (0x04, 0x12, "LOGICAL UNIT NOT READY, OFFLINE"),
    (0x05, 0x00, "LOGICAL UNIT DOES NOT RESPOND TO SELECTION"),
    (0x08, 0x00, "LOGICAL UNIT COMMUNICATION FAILURE"),
    (0x08, 0x01, "LOGICAL UNIT COMMUNICATION TIME-OUT"),
    (0x0C, 0x00, "WRITE ERROR"),
    (0x0C, 0x02, "WRITE ERROR - AUTO REALLOCATION FAILED"),
    (0x10, 0x01, "LOGICAL BLOCK GUARD CHECK FAILED"),
    (0x10, 0x02, "LOGICAL BLOCK APPLICATION TAG CHECK FAILED"),
    (0x10, 0x03, "LOGICAL BLOCK REFERENCE TAG CHECK FAILED"),
    (0x11, 0x00, "UNRECOVERED READ ERROR"),
    (0x14, 0x01, "RECORD NOT FOUND"),
    (0x1A, 0x00, "PARAMETER LIST LENGTH ERROR"),
    (0x1D, 0x00, "MISCOMPARE DURING VERIFY OPERATION"),
    (0x20, 0x00, "INVALID COMMAND OPERATION CODE"),
    (0x20, 0x02, "ACCESS DENIED - NO ACCESS RIGHTS"),
    (0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE"),
    (0x24, 0x00, "INVALID FIELD IN CDB"),
    (0x25, 0x00, "LOGICAL UNIT NOT SUPPORTED"),
    (0x26, 0x00, "INVALID FIELD IN PARAMETER LIST"),
    (0x26, 0x01, "PARAMETER NOT SUPPORTED"),
    (0x26, 0x02, "PARAMETER VALUE INVALID"),
    (0x26, 0x03, "THRESHOLD PARAMETERS NOT SUPPORTED"),
    (0x26, 0x04, "INVALID RELEASE OF PERSISTENT RESERVATION"),
    (0x27, 0x00, "WRITE PROTECTED"),
    (
        0x28,
        0x00,
        "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED",
    ),
    (0x29, 0x00, "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED"),
    (0x29, 0x01, "POWER ON OCCURRED"),
    (0x29, 0x02, "SCSI BUS RESET OCCURRED"),
    (0x29, 0x03, "BUS DEVICE RESET FUNCTION OCCURRED"),
    (0x29, 0x04, "DEVICE INTERNAL RESET"),
    (0x29, 0x07, "I_T NEXUS LOSS OCCURRED"),
    (0x2A, 0x00, "PARAMETERS CHANGED"),
    (0x2A, 0x01, "MODE PARAMETERS CHANGED"),
    (0x2A, 0x02, "LOG PARAMETERS CHANGED"),
    (0x2A, 0x03, "RESERVATIONS PREEMPTED"),
    (0x2A, 0x04, "RESERVATIONS RELEASED"),
    (0x2A, 0x05, "REGISTRATIONS PREEMPTED"),
    (0x2A, 0x06, "ASYMMETRIC ACCESS STATE CHANGED"),
    (0x2A, 0x09, "CAPACITY DATA HAS CHANGED"),
    (0x2C, 0x00, "COMMAND SEQUENCE ERROR"),
    (0x2F, 0x00, "COMMANDS CLEARED BY ANOTHER INITIATOR"),
    (0x2F, 0x01, "COMMANDS CLEARED BY POWER LOSS NOTIFICATION"),
    (0x2F, 0x02, "COMMANDS CLEARED BY DEVICE SERVER"),
    (0x31, 0x00, "MEDIUM FORMAT CORRUPTED"),
    (0x39, 0x00, "SAVING PARAMETERS NOT SUPPORTED"),
    (0x3A, 0x00, "MEDIUM NOT PRESENT"),
    (0x3E, 0x00, "LOGICAL UNIT HAS NOT SELF-CONFIGURED YET"),
    (0x3E, 0x01, "LOGICAL UNIT FAILURE"),
    (0x3E, 0x02, "TIMEOUT ON LOGICAL UNIT"),
    (0x3F, 0x00, "TARGET OPERATING CONDITIONS HAVE CHANGED"),
    (0x3F, 0x01, "MICROCODE HAS BEEN CHANGED"),
    (0x3F, 0x03, "INQUIRY DATA HAS CHANGED"),
    (0x3F, 0x0E, "REPORTED LUNS DATA HAS CHANGED"),
    (0x44, 0x00, "INTERNAL TARGET FAILURE"),
    (0x47, 0x00, "SCSI PARITY ERROR"),
    (0x4B, 0x00, "DATA PHASE ERROR"),
    (0x4E, 0x00, "OVERLAPPED COMMANDS ATTEMPTED"),
    (0x55, 0x03, "INSUFFICIENT RESOURCES"),
    (0x55, 0x04, "INSUFFICIENT REGISTRATION RESOURCES"),
    (0x5D, 0x00, "FAILURE PREDICTION THRESHOLD EXCEEDED"),
];

/// The standard name of an ASC/ASCQ pair, e.g. `(0x2A, 0x03)` →
/// `"RESERVATIONS PREEMPTED"`; `None` for codes not in the table.
pub fn asc_name(asc: u8, ascq: u8) -> Option<&'static str> {
    ASC_NAMES
        .iter()
        .find(|&&(a, q, _)| a == asc && q == ascq)
        .map(|&(_, _, n)| n)
}

/// The SENSE KEY SPECIFIC field (3 bytes, SKSV set) of sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenseKeySpecific(pub [u8; 3]);

/// Where ILLEGAL REQUEST found the bad field (SPC-4 4.5.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// True if the field is in the CDB, false if in the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// Bit of the field's most significant bit, when reported.
    pub bit: Option<u8>,
}

impl SenseKeySpecific {
    /// Reads the field as a field pointer (meaningful with ILLEGAL REQUEST).
    pub fn field_pointer(&self) -> FieldPointer {
        let [b0, b1, b2] = self.0;
        FieldPointer {
            in_cdb: b0 & 0x40 != 0,
            byte: u16::from_be_bytes([b1, b2]),
            bit: (b0 & 0x08 != 0).then_some(b0 & 0x07),
        }
    }

    /// Reads the field as progress indication, 0..=65535 (NOT READY / NO
    /// SENSE).
    pub fn progress(&self) -> u16 {
        u16::from_be_bytes([self.0[1], self.0[2]])
    }
}

/// Decoded sense data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sense {
    /// RESPONSE CODE: 0x70/0x72 current, 0x71/0x73 deferred.
    pub response_code: u8,
    /// True for current errors, false for deferred ones.
    pub current: bool,
    /// True for descriptor format (0x72/0x73).
    pub descriptor_format: bool,
    /// SENSE KEY.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION (fixed format with VALID set, or an information
    /// descriptor with VALID set): e.g. the LBA of a medium error, or the
    /// offset of the first miscompare of COMPARE AND WRITE.
    pub information: Option<u64>,
    /// COMMAND-SPECIFIC INFORMATION, when non-zero.
    pub command_specific: Option<u64>,
    /// SENSE KEY SPECIFIC, when SKSV is set.
    pub sense_key_specific: Option<SenseKeySpecific>,
    /// FIELD REPLACEABLE UNIT CODE, when non-zero.
    pub fru: Option<u8>,
    /// INCORRECT LENGTH INDICATOR.
    pub ili: bool,
}

impl Sense {
    /// Decodes fixed or descriptor format sense data. Never panics.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "sense data";
        let Some(&b0) = buf.first() else {
            return Err(Error::Truncated {
                what: WHAT,
                need: 1,
                got: 0,
            });
        };
        let response_code = b0 & 0x7f;
        match response_code {
            0x70 | 0x71 => Ok(Self::parse_fixed(buf, response_code)),
            0x72 | 0x73 => Ok(Self::parse_descriptor(buf, response_code)),
            other => Err(bad(
                WHAT,
                format!("response code 0x{other:02X} is not sense data"),
            )),
        }
    }

    fn empty(response_code: u8, descriptor_format: bool) -> Self {
        Self {
            response_code,
            current: response_code & 1 == 0,
            descriptor_format,
            key: SenseKey::NoSense,
            asc: 0,
            ascq: 0,
            information: None,
            command_specific: None,
            sense_key_specific: None,
            fru: None,
            ili: false,
        }
    }

    fn parse_fixed(buf: &[u8], response_code: u8) -> Self {
        let mut s = Self::empty(response_code, false);
        // Bytes 0..8 are always interpreted when present; beyond byte 7 the
        // ADDITIONAL SENSE LENGTH limits what is valid.
        let buf = match buf.get(7) {
            Some(&add) => &buf[..buf.len().min(8 + usize::from(add))],
            None => buf,
        };
        if let Some(&b2) = buf.get(2) {
            s.key = SenseKey::from_nibble(b2);
            s.ili = b2 & 0x20 != 0;
        }
        if buf[0] & 0x80 != 0 {
            s.information = be(buf, 3, 4);
        }
        s.command_specific = be(buf, 8, 4).filter(|&v| v != 0);
        s.asc = buf.get(12).copied().unwrap_or(0);
        s.ascq = buf.get(13).copied().unwrap_or(0);
        s.fru = buf.get(14).copied().filter(|&v| v != 0);
        if let Some(sks) = buf.get(15..18) {
            if sks[0] & 0x80 != 0 {
                s.sense_key_specific = Some(SenseKeySpecific([sks[0] & 0x7f, sks[1], sks[2]]));
            }
        }
        s
    }

    fn parse_descriptor(buf: &[u8], response_code: u8) -> Self {
        let mut s = Self::empty(response_code, true);
        let get = |i: usize| buf.get(i).copied().unwrap_or(0);
        s.key = SenseKey::from_nibble(get(1));
        s.asc = get(2);
        s.ascq = get(3);
        let Some(&add) = buf.get(7) else {
            return s;
        };
        let end = buf.len().min(8 + usize::from(add));
        let mut off = 8;
        // Each descriptor: type, additional length, then that many bytes.
        while off + 2 <= end {
            let dtype = buf[off];
            let dlen = 2 + usize::from(buf[off + 1]);
            let Some(d) = buf.get(off..off + dlen).filter(|_| off + dlen <= end) else {
                break; // a descriptor cut short: keep what we have
            };
            match dtype {
                // Information.
                0x00 if d.len() >= 12 && d[2] & 0x80 != 0 => s.information = be(d, 4, 8),
                // Command-specific information.
                0x01 if d.len() >= 12 => s.command_specific = be(d, 4, 8).filter(|&v| v != 0),
                // Sense key specific.
                0x02 if d.len() >= 7 && d[4] & 0x80 != 0 => {
                    s.sense_key_specific = Some(SenseKeySpecific([d[4] & 0x7f, d[5], d[6]]));
                }
                // Field replaceable unit.
                0x03 if d.len() >= 4 => s.fru = Some(d[3]).filter(|&v| v != 0),
                // Stream commands / block commands: ILI in byte 3 bit 5.
                0x04 | 0x05 if d.len() >= 4 => s.ili = d[3] & 0x20 != 0,
                _ => {}
            }
            off += dlen;
        }
        s
    }

    /// The name of the ASC/ASCQ pair, if known.
    pub fn asc_name(&self) -> Option<&'static str> {
        asc_name(self.asc, self.ascq)
    }

    /// True when the sense key is UNIT ATTENTION.
    pub fn is_unit_attention(&self) -> bool {
        self.key == SenseKey::UnitAttention
    }

    /// True for this sense key and ASC/ASCQ.
    pub fn is(&self, key: SenseKey, asc: u8, ascq: u8) -> bool {
        self.key == key && self.asc == asc && self.ascq == ascq
    }
}

impl fmt::Display for Sense {
    /// `UNIT ATTENTION: RESERVATIONS PREEMPTED (2A/03)`; deferred errors get
    /// a ` [deferred]` suffix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.key)?;
        match self.asc_name() {
            Some(n) => f.write_str(n)?,
            None if self.asc >= 0x80 || self.ascq >= 0x80 => f.write_str("VENDOR SPECIFIC")?,
            None => f.write_str("UNKNOWN ASC/ASCQ")?,
        }
        write!(f, " ({:02X}/{:02X})", self.asc, self.ascq)?;
        if !self.current {
            f.write_str(" [deferred]")?;
        }
        Ok(())
    }
}
