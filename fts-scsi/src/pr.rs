//! Persistent reservations (SPC-4 5.12, 6.15, 6.16): types, service actions,
//! the PERSISTENT RESERVE OUT basic parameter list and PERSISTENT RESERVE IN
//! response decoders.
//!
//! The PR IN decoders return [`Error::Truncated`](crate::Error::Truncated) with `need` set to the
//! full response length when ADDITIONAL LENGTH says more data exists than the
//! buffer holds (the allocation length was too small): send the command again
//! with that allocation length.

use std::fmt;

use crate::error::{bad, be, need, Result};

/// SCOPE value LU_SCOPE, the only non-obsolete scope.
pub const LU_SCOPE: u8 = 0;

/// Length of the basic PERSISTENT RESERVE OUT parameter list.
pub const PR_OUT_PARAM_LEN: usize = 24;

/// Persistent reservation TYPE (SPC-4 table 177).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PrType {
    /// Write Exclusive (1).
    WriteExclusive = 1,
    /// Exclusive Access (3).
    ExclusiveAccess = 3,
    /// Write Exclusive – Registrants Only (5).
    WriteExclusiveRegistrantsOnly = 5,
    /// Exclusive Access – Registrants Only (6).
    ExclusiveAccessRegistrantsOnly = 6,
    /// Write Exclusive – All Registrants (7).
    WriteExclusiveAllRegistrants = 7,
    /// Exclusive Access – All Registrants (8).
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    /// All types, in code order.
    pub const ALL: [PrType; 6] = [
        PrType::WriteExclusive,
        PrType::ExclusiveAccess,
        PrType::WriteExclusiveRegistrantsOnly,
        PrType::ExclusiveAccessRegistrantsOnly,
        PrType::WriteExclusiveAllRegistrants,
        PrType::ExclusiveAccessAllRegistrants,
    ];

    /// The 4-bit TYPE code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a TYPE code; `None` for reserved/obsolete values.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The standard abbreviation, e.g. `"WR_EX_RO"`.
    pub fn abbrev(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "WR_EX",
            PrType::ExclusiveAccess => "EX_AC",
            PrType::WriteExclusiveRegistrantsOnly => "WR_EX_RO",
            PrType::ExclusiveAccessRegistrantsOnly => "EX_AC_RO",
            PrType::WriteExclusiveAllRegistrants => "WR_EX_AR",
            PrType::ExclusiveAccessAllRegistrants => "EX_AC_AR",
        }
    }

    /// The bit of this type in REPORT CAPABILITIES' PERSISTENT RESERVATION
    /// TYPE MASK (bytes 4..6 read as a big-endian u16).
    pub fn type_mask_bit(self) -> u16 {
        match self {
            PrType::WriteExclusiveAllRegistrants => 0x8000,
            PrType::ExclusiveAccessRegistrantsOnly => 0x4000,
            PrType::WriteExclusiveRegistrantsOnly => 0x2000,
            PrType::ExclusiveAccess => 0x0800,
            PrType::WriteExclusive => 0x0200,
            PrType::ExclusiveAccessAllRegistrants => 0x0001,
        }
    }
}

impl fmt::Display for PrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.abbrev())
    }
}

/// PERSISTENT RESERVE IN service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PrInServiceAction {
    /// READ KEYS (0).
    ReadKeys = 0,
    /// READ RESERVATION (1).
    ReadReservation = 1,
    /// REPORT CAPABILITIES (2).
    ReportCapabilities = 2,
    /// READ FULL STATUS (3).
    ReadFullStatus = 3,
}

/// PERSISTENT RESERVE OUT service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PrOutServiceAction {
    /// REGISTER (0).
    Register = 0,
    /// RESERVE (1).
    Reserve = 1,
    /// RELEASE (2).
    Release = 2,
    /// CLEAR (3).
    Clear = 3,
    /// PREEMPT (4).
    Preempt = 4,
    /// PREEMPT AND ABORT (5).
    PreemptAndAbort = 5,
    /// REGISTER AND IGNORE EXISTING KEY (6).
    RegisterAndIgnoreExistingKey = 6,
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PrOutParams {
    /// RESERVATION KEY: the key this I_T nexus is registered with (0 when
    /// registering for the first time).
    pub reservation_key: u64,
    /// SERVICE ACTION RESERVATION KEY: the new key for REGISTER, the key to
    /// preempt for PREEMPT.
    pub service_action_reservation_key: u64,
    /// SPEC_I_PT: the list names further initiator ports (not supported by
    /// this 24-byte list; always leave false unless you know why).
    pub spec_i_pt: bool,
    /// ALL_TG_PT: register on all target ports.
    pub all_tg_pt: bool,
    /// APTPL: activate persist through power loss.
    pub aptpl: bool,
}

impl PrOutParams {
    /// Encodes the 24-byte parameter list.
    pub fn to_bytes(&self) -> [u8; PR_OUT_PARAM_LEN] {
        let mut b = [0u8; PR_OUT_PARAM_LEN];
        b[0..8].copy_from_slice(&self.reservation_key.to_be_bytes());
        b[8..16].copy_from_slice(&self.service_action_reservation_key.to_be_bytes());
        // 16..20 obsolete (scope-specific address), 21 reserved, 22..24 obsolete.
        b[20] = (u8::from(self.spec_i_pt) << 3)
            | (u8::from(self.all_tg_pt) << 2)
            | u8::from(self.aptpl);
        b
    }
}

/// Response of READ KEYS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadKeys {
    /// PRGENERATION.
    pub generation: u32,
    /// The registered reservation keys, one per registered I_T nexus (a key
    /// may repeat).
    pub keys: Vec<u64>,
}

/// Reads PRGENERATION and ADDITIONAL LENGTH, checks the buffer holds the
/// whole response, and returns (generation, the additional bytes).
fn pr_in_header<'a>(buf: &'a [u8], what: &'static str) -> Result<(u32, &'a [u8])> {
    need(buf, 8, what)?;
    let generation = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let add = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let total = usize::try_from(add)
        .ok()
        .and_then(|a| a.checked_add(8))
        .unwrap_or(usize::MAX);
    need(buf, total, what)?;
    Ok((generation, &buf[8..total]))
}

impl ReadKeys {
    /// Decodes a READ KEYS response.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "PR IN READ KEYS";
        let (generation, list) = pr_in_header(buf, WHAT)?;
        if list.len() % 8 != 0 {
            return Err(bad(
                WHAT,
                format!("additional length {} is not a multiple of 8", list.len()),
            ));
        }
        let keys = list
            .chunks_exact(8)
            .map(|k| be(k, 0, 8).unwrap_or(0))
            .collect();
        Ok(Self { generation, keys })
    }
}

/// The persistent reservation currently held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// RESERVATION KEY of the holder (0 for the all-registrants types).
    pub key: u64,
    /// SCOPE (0 = LU_SCOPE).
    pub scope: u8,
    /// Raw TYPE code; see [`Reservation::pr_type`].
    pub type_code: u8,
}

impl Reservation {
    /// The TYPE, or `None` when the code is not one SPC-4 defines.
    pub fn pr_type(&self) -> Option<PrType> {
        PrType::from_code(self.type_code)
    }
}

/// Response of READ RESERVATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadReservation {
    /// PRGENERATION.
    pub generation: u32,
    /// The reservation, or `None` when the logical unit is not reserved.
    pub reservation: Option<Reservation>,
}

impl ReadReservation {
    /// Decodes a READ RESERVATION response.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "PR IN READ RESERVATION";
        let (generation, rest) = pr_in_header(buf, WHAT)?;
        if rest.is_empty() {
            return Ok(Self {
                generation,
                reservation: None,
            });
        }
        if rest.len() < 16 {
            return Err(bad(
                WHAT,
                format!("additional length {} (expected 0 or 16)", rest.len()),
            ));
        }
        Ok(Self {
            generation,
            reservation: Some(Reservation {
                key: be(rest, 0, 8).unwrap_or(0),
                scope: rest[13] >> 4,
                type_code: rest[13] & 0x0f,
            }),
        })
    }
}

/// Response of REPORT CAPABILITIES (SPC-4 6.15.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportCapabilities {
    /// RLR_C: replace lost reservation capable.
    pub rlr_c: bool,
    /// CRH: compatible reservation handling (RESERVE/RELEASE(6/10)
    /// interact with PRs as SPC-3 5.6.3 says).
    pub crh: bool,
    /// SIP_C: specify initiator ports capable.
    pub sip_c: bool,
    /// ATP_C: all target ports capable.
    pub atp_c: bool,
    /// PTPL_C: persist through power loss capable.
    pub ptpl_c: bool,
    /// TMV: the type mask is valid.
    pub tmv: bool,
    /// ALLOW COMMANDS (3 bits).
    pub allow_commands: u8,
    /// PTPL_A: persist through power loss activated.
    pub ptpl_a: bool,
    /// PERSISTENT RESERVATION TYPE MASK, bytes 4..6 big-endian (see
    /// [`PrType::type_mask_bit`]); meaningful only when `tmv`.
    pub type_mask: u16,
}

impl ReportCapabilities {
    /// Decodes a REPORT CAPABILITIES response (8 bytes).
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "PR IN REPORT CAPABILITIES";
        need(buf, 8, WHAT)?;
        let length = u16::from_be_bytes([buf[0], buf[1]]);
        if length < 8 {
            return Err(bad(WHAT, format!("length {length} < 8")));
        }
        Ok(Self {
            rlr_c: buf[2] & 0x80 != 0,
            crh: buf[2] & 0x10 != 0,
            sip_c: buf[2] & 0x08 != 0,
            atp_c: buf[2] & 0x04 != 0,
            ptpl_c: buf[2] & 0x01 != 0,
            tmv: buf[3] & 0x80 != 0,
            allow_commands: (buf[3] >> 4) & 0x07,
            ptpl_a: buf[3] & 0x01 != 0,
            type_mask: u16::from_be_bytes([buf[4], buf[5]]),
        })
    }

    /// Whether the device server supports `t`; `None` when the type mask is
    /// not valid (TMV = 0).
    pub fn supports(&self, t: PrType) -> Option<bool> {
        self.tmv.then(|| self.type_mask & t.type_mask_bit() != 0)
    }

    /// The supported types (empty when TMV = 0).
    pub fn supported_types(&self) -> Vec<PrType> {
        PrType::ALL
            .into_iter()
            .filter(|&t| self.supports(t) == Some(true))
            .collect()
    }
}

/// One registration in a READ FULL STATUS response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FullStatusDescriptor {
    /// RESERVATION KEY.
    pub key: u64,
    /// ALL_TG_PT.
    pub all_tg_pt: bool,
    /// R_HOLDER: this registration holds the reservation.
    pub r_holder: bool,
    /// SCOPE (valid when `r_holder`).
    pub scope: u8,
    /// TYPE code (valid when `r_holder`).
    pub type_code: u8,
    /// RELATIVE TARGET PORT IDENTIFIER (valid when not `all_tg_pt`).
    pub relative_target_port: u16,
    /// The initiator's TransportID, raw.
    pub transport_id: Vec<u8>,
}

/// Response of READ FULL STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadFullStatus {
    /// PRGENERATION.
    pub generation: u32,
    /// One descriptor per registered I_T nexus.
    pub descriptors: Vec<FullStatusDescriptor>,
}

impl ReadFullStatus {
    /// Decodes a READ FULL STATUS response.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "PR IN READ FULL STATUS";
        let (generation, mut rest) = pr_in_header(buf, WHAT)?;
        let mut descriptors = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 24 {
                return Err(bad(WHAT, "status descriptor cut short"));
            }
            let add = u32::from_be_bytes([rest[20], rest[21], rest[22], rest[23]]);
            let len = usize::try_from(add)
                .ok()
                .and_then(|a| a.checked_add(24))
                .filter(|&l| l <= rest.len())
                .ok_or_else(|| bad(WHAT, "TransportID runs past the end"))?;
            descriptors.push(FullStatusDescriptor {
                key: be(rest, 0, 8).unwrap_or(0),
                all_tg_pt: rest[12] & 0x02 != 0,
                r_holder: rest[12] & 0x01 != 0,
                scope: rest[13] >> 4,
                type_code: rest[13] & 0x0f,
                relative_target_port: u16::from_be_bytes([rest[18], rest[19]]),
                transport_id: rest[24..len].to_vec(),
            });
            rest = &rest[len..];
        }
        Ok(Self {
            generation,
            descriptors,
        })
    }
}
