//! Typed helpers over any [`Transport`]: one method per command fts sends,
//! each building the CDB, executing it and decoding the response.
//!
//! Every method turns a non-GOOD completion into an [`Error`] (via
//! [`CommandResult::into_result`]); callers that must tell RESERVATION
//! CONFLICT or UNIT ATTENTION apart use [`Error::is_reservation_conflict`]
//! and [`Error::is_unit_attention`], or call [`Transport::execute`] directly.

use std::time::Duration;

use crate::capacity::ReadCapacity16;
use crate::cdb::{self, Cdb};
use crate::error::{Error, Result};
use crate::inquiry::{
    DeviceIdentification, StandardInquiry, UnitSerialNumber, VPD_DEVICE_IDENTIFICATION,
    VPD_UNIT_SERIAL,
};
use crate::mode::{CachingPage, ModeSense, PageControl, CACHING_PAGE_CODE};
use crate::pr::{
    PrInServiceAction, PrOutParams, PrOutServiceAction, PrType, ReadKeys, ReadReservation,
    ReportCapabilities,
};
use crate::sense::SenseKey;
use crate::status::CommandResult;
use crate::transport::{DataBuffer, Transport};

/// The timeout of the non-I/O commands sent by [`Commands`].
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response fts asks for (INQUIRY, VPD, PR IN, MODE SENSE).
const RESPONSE_MAX: usize = 4096;

/// Typed commands on top of [`Transport::execute`]; implemented for every
/// transport.
pub trait Commands: Transport {
    /// Runs a command with a data-in buffer of up to `alloc` bytes and
    /// returns the bytes actually transferred.
    fn data_in(&mut self, cdb: &Cdb, alloc: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; alloc];
        let r = self
            .execute(cdb, DataBuffer::FromDevice(&mut buf), COMMAND_TIMEOUT)?
            .into_result()?;
        let got = alloc.saturating_sub(r.residual as usize);
        buf.truncate(got);
        Ok(buf)
    }

    /// Runs a command with no data, or with data-out, and requires GOOD.
    fn data_out(&mut self, cdb: &Cdb, data: &[u8]) -> Result<CommandResult> {
        let buf = if data.is_empty() {
            DataBuffer::None
        } else {
            DataBuffer::ToDevice(data)
        };
        self.execute(cdb, buf, COMMAND_TIMEOUT)?.into_result()
    }

    /// TEST UNIT READY.
    fn test_unit_ready(&mut self) -> Result<()> {
        self.data_out(&cdb::test_unit_ready(), &[]).map(drop)
    }

    /// TEST UNIT READY until it stops reporting UNIT ATTENTION (each one is
    /// reported once per nexus: a reset, changed mode parameters, a
    /// preempted reservation...). Returns the attentions consumed, so a
    /// caller can tell e.g. "reservations preempted" (2A/03) apart.
    fn clear_unit_attentions(&mut self) -> Result<Vec<crate::sense::Sense>> {
        let mut seen = Vec::new();
        for _ in 0..16 {
            match self.test_unit_ready() {
                Ok(()) => return Ok(seen),
                Err(Error::CheckCondition { sense }) if sense.key == SenseKey::UnitAttention => {
                    seen.push(sense);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(seen)
    }

    /// Standard INQUIRY data.
    fn inquiry(&mut self) -> Result<StandardInquiry> {
        StandardInquiry::parse(&self.data_in(&cdb::inquiry(255), 255)?)
    }

    /// VPD page 0x83, Device Identification.
    fn device_identification(&mut self) -> Result<DeviceIdentification> {
        let cdb = cdb::inquiry_vpd(VPD_DEVICE_IDENTIFICATION, RESPONSE_MAX as u16);
        DeviceIdentification::parse(&self.data_in(&cdb, RESPONSE_MAX)?)
    }

    /// VPD page 0x80, Unit Serial Number.
    fn unit_serial_number(&mut self) -> Result<UnitSerialNumber> {
        let cdb = cdb::inquiry_vpd(VPD_UNIT_SERIAL, 255);
        UnitSerialNumber::parse(&self.data_in(&cdb, 255)?)
    }

    /// READ CAPACITY(16).
    fn read_capacity16(&mut self) -> Result<ReadCapacity16> {
        let n = ReadCapacity16::LEN;
        ReadCapacity16::parse(&self.data_in(&cdb::read_capacity16(n as u32), n)?)
    }

    /// SYNCHRONIZE CACHE(16) of the whole logical unit (IMMED = 0: tgt
    /// rejects IMMED = 1).
    fn synchronize_cache(&mut self) -> Result<()> {
        self.data_out(&cdb::synchronize_cache16(0, 0, false), &[])
            .map(drop)
    }

    /// RESERVE(6) of the whole logical unit.
    fn reserve6(&mut self) -> Result<()> {
        self.data_out(&cdb::reserve6(), &[]).map(drop)
    }

    /// RELEASE(6). GOOD also when this nexus held nothing.
    fn release6(&mut self) -> Result<()> {
        self.data_out(&cdb::release6(), &[]).map(drop)
    }

    /// PERSISTENT RESERVE IN, READ KEYS.
    fn pr_read_keys(&mut self) -> Result<ReadKeys> {
        let cdb = cdb::persistent_reserve_in(PrInServiceAction::ReadKeys, RESPONSE_MAX as u16);
        ReadKeys::parse(&self.data_in(&cdb, RESPONSE_MAX)?)
    }

    /// PERSISTENT RESERVE IN, READ RESERVATION.
    fn pr_read_reservation(&mut self) -> Result<ReadReservation> {
        let cdb = cdb::persistent_reserve_in(PrInServiceAction::ReadReservation, 64);
        ReadReservation::parse(&self.data_in(&cdb, 64)?)
    }

    /// PERSISTENT RESERVE IN, REPORT CAPABILITIES.
    fn pr_report_capabilities(&mut self) -> Result<ReportCapabilities> {
        let cdb = cdb::persistent_reserve_in(PrInServiceAction::ReportCapabilities, 8);
        ReportCapabilities::parse(&self.data_in(&cdb, 8)?)
    }

    /// PERSISTENT RESERVE OUT with the basic 24-byte parameter list.
    fn pr_out(
        &mut self,
        action: PrOutServiceAction,
        pr_type: Option<PrType>,
        params: &PrOutParams,
    ) -> Result<()> {
        let cdb = cdb::persistent_reserve_out(action, pr_type);
        self.data_out(&cdb, &params.to_bytes()).map(drop)
    }

    /// MODE SENSE(6) of the Caching page (no block descriptors) with the
    /// given page control: current, changeable (a mask), default or saved.
    fn caching_page(&mut self, pc: PageControl) -> Result<CachingPage> {
        let cdb = cdb::mode_sense6(CACHING_PAGE_CODE, 0, pc, true, 255);
        ModeSense::parse6(&self.data_in(&cdb, 255)?)?.caching_page()
    }

    /// MODE SELECT(6) of the Caching page (PF = 1, SP = 0, PS cleared).
    fn set_caching_page(&mut self, page: &CachingPage) -> Result<()> {
        let params = page.mode_select6_params();
        let cdb = cdb::mode_select6(false, params.len() as u8);
        self.data_out(&cdb, &params).map(drop)
    }

    /// COMPARE AND WRITE of `blocks` blocks at `lba`: `data` is the compare
    /// data followed by the write data. `Ok(true)` when written, `Ok(false)`
    /// on a miscompare (sense MISCOMPARE 1D/00): the blocks did not hold
    /// the compare data and were left unchanged.
    fn compare_and_write(&mut self, lba: u64, blocks: u8, data: &[u8]) -> Result<bool> {
        let cdb = cdb::compare_and_write(lba, blocks, true);
        let r = self.execute(&cdb, DataBuffer::ToDevice(data), COMMAND_TIMEOUT)?;
        if r.status == crate::status::ScsiStatus::CheckCondition
            && r.sense
                .as_ref()
                .is_some_and(|s| s.key == SenseKey::Miscompare)
        {
            return Ok(false);
        }
        r.into_result().map(|_| true)
    }
}

impl<T: Transport + ?Sized> Commands for T {}

/// True when `e` says the command is not implemented by the device
/// (ILLEGAL REQUEST with INVALID COMMAND OPERATION CODE 20/00 or INVALID
/// FIELD IN CDB 24/00): used to detect optional features such as COMPARE
/// AND WRITE or PREEMPT AND ABORT and fall back.
pub fn is_unsupported(e: &Error) -> bool {
    e.sense().is_some_and(|s| {
        s.key == SenseKey::IllegalRequest && (s.asc == 0x20 || s.asc == 0x24) && s.ascq == 0
    })
}
