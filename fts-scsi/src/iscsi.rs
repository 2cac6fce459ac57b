//! The iSCSI transport: a userspace initiator built on libiscsi.
//!
//! [`IscsiTransport`] logs in to `iscsi://host[:port]/target-iqn/lun` as one
//! initiator (an IQN, see [`crate::initiator`]) and sends raw CDBs to that
//! LUN. libiscsi is loaded at run time through `libiscsi-sys`, so a host
//! without it gets [`Error::Connect`] naming the package to install.
//!
//! How it uses libiscsi, and why:
//!
//! - **One context per transport**, driven by this module's own event loop
//!   (`poll` + `iscsi_service`) around the asynchronous calls, so every
//!   command, login, logout and LUN reset has a precise deadline. libiscsi's
//!   own per-context timeout (`iscsi_set_timeout`) counts whole seconds of
//!   wall-clock time and may fire up to a second early, so it is only a
//!   backstop set one second beyond ours.
//! - **A fixed ISID** ([`crate::initiator::isid_for`]) and **no automatic
//!   reconnect**: libiscsi's auto-reconnect silently logs in again with a new
//!   ISID, i.e. as a different initiator port. Here a dropped connection is
//!   reported as [`Error::Disconnected`], and [`Transport::reconnect`] logs
//!   in again with the same IQN and ISID and bumps the epoch. SPC ties
//!   persistent-reservation registrations to the initiator port (IQN +
//!   ISID), so a conforming target keeps them across the reconnect. **tgt
//!   1.0.85 does not**: it identifies a nexus by its session, so after a
//!   reconnect the old registration (and any reservation it holds) is an
//!   orphan that READ KEYS still lists but the new session does not own;
//!   REGISTER AND IGNORE EXISTING KEY followed by PREEMPT of the own key
//!   recovers it (see `tests/iscsi_tgt.rs`). tgt also performs no session
//!   reinstatement for libiscsi logins without CHAP: a second login with the
//!   same IQN and ISID gets a second, independent session.
//! - **Any failure that is not a SCSI status closes the session**: a
//!   timeout, a dropped connection, a protocol error. The command may still
//!   be running on the target; closing the session is the only way to be
//!   sure it is aborted rather than completed later behind fts's back. The
//!   failure itself is returned ([`Error::Timeout`], [`Error::Disconnected`],
//!   [`Error::Transport`]); every later command returns
//!   [`Error::Disconnected`] until [`Transport::reconnect`] succeeds.
//! - **Unit attentions**: [`IscsiTransport::connect`] consumes the unit
//!   attentions a brand-new login reports (with TEST UNIT READY, like
//!   libiscsi's `iscsi_full_connect` and the kernel's `sd`), and keeps them
//!   in [`IscsiTransport::login_unit_attentions`]. [`Transport::reconnect`]
//!   does *not*: after a session loss the caller must see e.g. 29/07 (I_T
//!   NEXUS LOSS) or 2A/03 (RESERVATIONS PREEMPTED).
//! - **Sense data** is handed to [`Sense::parse`] as the raw bytes the target
//!   sent (libiscsi keeps them, behind a two-byte length, in the task's
//!   data-in buffer); libiscsi's own decoded copy (key and ASC/ASCQ only) is
//!   a fallback.
//! - **Data** goes straight between the caller's buffer and the socket
//!   (`scsi_task_add_data_in_buffer` for data-in, an `iscsi_data` for
//!   data-out), without a copy.
//!
//! A context is not thread-safe. An [`IscsiTransport`] is `Send` (it can move
//! to another thread) but not `Sync`; every method takes `&mut self`.
//!
//! Set `LIBISCSI_DEBUG=2` (or up to 10) in the environment to have libiscsi
//! log connection events to stderr.

use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use libiscsi_sys as sys;

use crate::cdb::{self, Cdb};
use crate::error::{Error, Result};
use crate::initiator::{isid_for, isid_hex, validate_iqn, IscsiUrl};
use crate::sense::{Sense, SenseKey};
use crate::status::{CommandResult, ScsiStatus};
use crate::transport::{check_direction, DataBuffer, Transport};

/// How many unit attentions [`IscsiTransport::connect`] consumes before it
/// gives up (libiscsi's own limit).
const MAX_LOGIN_UNIT_ATTENTIONS: usize = 10;

/// The longest wait for a logout when a transport is dropped.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `iscsi_command_cb` status values, as the `c_int` the callback gets.
const STATUS_GOOD: c_int = sys::SCSI_STATUS_GOOD as c_int;
const STATUS_CANCELLED: c_int = sys::SCSI_STATUS_CANCELLED as c_int;
const STATUS_TIMEOUT: c_int = sys::SCSI_STATUS_TIMEOUT as c_int;

/// An iSCSI session to one LUN, through which CDBs are sent.
///
/// See the [module documentation](self) for how connection loss, timeouts
/// and unit attentions are handled. Dropping it logs out (waiting at most
/// the login timeout, and never more than 5 s) and closes the connection;
/// it never panics.
pub struct IscsiTransport {
    lib: &'static sys::LibIscsi,
    /// The URL as given, for messages.
    url: String,
    parsed: IscsiUrl,
    iqn: String,
    isid: [u8; 6],
    /// Deadline of a login, logout or LUN reset.
    timeout: Duration,
    iqn_c: CString,
    target_c: CString,
    portal_c: CString,
    /// The logged-in session; `None` after a failure, until a reconnect.
    ctx: Option<Context>,
    /// Why `ctx` is `None`.
    lost: String,
    epoch: u64,
    login_unit_attentions: Vec<Sense>,
}

impl fmt::Debug for IscsiTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IscsiTransport")
            .field("url", &self.url)
            .field("initiator", &self.initiator())
            .field("epoch", &self.epoch)
            .field("connected", &self.ctx.is_some())
            .finish_non_exhaustive()
    }
}

impl IscsiTransport {
    /// Logs in to `url` (`iscsi://host[:port]/target-iqn/lun`) as initiator
    /// `initiator_iqn`, with the ISID [`isid_for`] derives from it.
    ///
    /// `timeout` bounds the whole login (TCP connect, iSCSI login, and the
    /// TEST UNIT READYs that consume the first unit attentions) and later
    /// logouts and LUN resets; each [`Transport::execute`] has its own.
    ///
    /// Fails with [`Error::Connect`] saying what went wrong: libiscsi
    /// missing, a malformed URL or IQN, connection refused at the portal, the
    /// target unknown to the portal, login refused, no such LUN, no answer
    /// within `timeout`.
    pub fn connect(url: &str, initiator_iqn: &str, timeout: Duration) -> Result<Self> {
        Self::connect_with_isid(url, initiator_iqn, isid_for(initiator_iqn), timeout)
    }

    /// Like [`IscsiTransport::connect`] but with an explicit ISID instead of
    /// the one derived from the IQN: for tests and diagnostics (e.g. two
    /// sessions of one initiator name). fts itself always uses
    /// [`IscsiTransport::connect`], so a restarted host finds its nexus.
    /// The ISID must have the "random" format (first byte 0x80), the only
    /// one set here.
    pub fn connect_with_isid(
        url: &str,
        initiator_iqn: &str,
        isid: [u8; 6],
        timeout: Duration,
    ) -> Result<Self> {
        let connect_err = |detail: String| Error::Connect {
            target: url.to_owned(),
            detail,
        };
        let parsed = IscsiUrl::parse(url).map_err(|e| connect_err(invalid_detail(e)))?;
        validate_iqn(initiator_iqn).map_err(|e| {
            connect_err(format!(
                "initiator name {initiator_iqn:?}: {}",
                invalid_detail(e)
            ))
        })?;
        if timeout.is_zero() {
            return Err(connect_err("the timeout must not be zero".into()));
        }
        if isid[0] != 0x80 {
            return Err(connect_err(format!(
                "ISID {} is not of the random type (first byte 0x80)",
                isid_hex(&isid)
            )));
        }
        let lib = sys::load().map_err(|e| connect_err(e.to_string()))?;
        // The URL and the IQN were validated: no NUL bytes.
        let cstring = |s: &str| {
            CString::new(s).map_err(|_| connect_err(format!("{s:?} contains a NUL byte")))
        };
        let mut t = Self {
            lib,
            url: url.to_owned(),
            iqn_c: cstring(initiator_iqn)?,
            target_c: cstring(&parsed.target)?,
            portal_c: cstring(&parsed.portal())?,
            parsed,
            iqn: initiator_iqn.to_owned(),
            isid,
            timeout,
            ctx: None,
            lost: "not logged in".into(),
            epoch: 1,
            login_unit_attentions: Vec::new(),
        };
        let deadline = Instant::now() + timeout;
        t.login(deadline).map_err(connect_err)?;
        t.consume_login_unit_attentions(deadline)
            .map_err(connect_err)?;
        Ok(t)
    }

    /// The unit attentions the first login reported (and
    /// [`IscsiTransport::connect`] consumed), oldest first; typically
    /// 29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED or none.
    pub fn login_unit_attentions(&self) -> &[Sense] {
        &self.login_unit_attentions
    }

    /// The parsed URL.
    pub fn url(&self) -> &IscsiUrl {
        &self.parsed
    }

    /// The ISID this transport logs in with.
    pub fn isid(&self) -> [u8; 6] {
        self.isid
    }

    /// True while a session is up (no failure since the last login).
    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// Creates a context and logs in (no LUN check, no TEST UNIT READY), or
    /// says why not.
    fn login(&mut self, deadline: Instant) -> std::result::Result<(), String> {
        let portal = self.parsed.portal();
        let mut ctx = Context::new(self.lib, &self.iqn_c)
            .ok_or_else(|| "libiscsi could not create a context (out of memory?)".to_owned())?;
        let [_, b1, b2, b3, d1, d2] = self.isid;
        let rnd = u32::from_be_bytes([0, b1, b2, b3]);
        let qualifier = u32::from(u16::from_be_bytes([d1, d2]));
        let lib = self.lib;
        let raw = ctx.as_ptr();
        // SAFETY: `raw` is the live context just created; the strings are
        // NUL-terminated and libiscsi copies them. None of these calls keeps
        // a pointer to our memory.
        let setup = unsafe {
            [
                lib.iscsi_set_targetname(raw, self.target_c.as_ptr()),
                lib.iscsi_set_session_type(raw, sys::ISCSI_SESSION_NORMAL),
                lib.iscsi_set_header_digest(raw, sys::ISCSI_HEADER_DIGEST_NONE_CRC32C),
                lib.iscsi_set_isid_random(raw, rnd, qualifier),
            ]
        };
        if setup.iter().any(|&rc| rc != 0) {
            return Err(format!(
                "setting up the libiscsi context failed: {}",
                ctx.error()
            ));
        }
        // SAFETY: as above.
        unsafe { lib.iscsi_set_noautoreconnect(raw, 1) };
        ctx.set_timeout(remaining(deadline));
        let portal_c = self.portal_c.as_ptr();
        // SAFETY: `raw` is live; `portal_c` is NUL-terminated and copied.
        // LUN -1 logs in without libiscsi's own TEST UNIT READY loop (which
        // would silently consume unit attentions). `cb`/`private` come from
        // `Context::start` and stay valid as long as the context.
        ctx.start(false, |cb, private| unsafe {
            lib.iscsi_full_connect_async(raw, portal_c, -1, cb, private)
        })
        .map_err(|e| explain_login_error(&portal, &self.parsed.target, &e))?;
        match ctx.wait(deadline) {
            Waited::Completed(STATUS_GOOD) => {}
            Waited::Completed(_) | Waited::Failed(_) => {
                let e = ctx.last_error();
                return Err(explain_login_error(&portal, &self.parsed.target, &e));
            }
            Waited::TimedOut => {
                return Err(format!(
                    "no answer from portal {portal} within {:?} (TCP connect and iSCSI login)",
                    self.timeout
                ))
            }
        }
        self.ctx = Some(ctx);
        self.lost.clear();
        Ok(())
    }

    /// Sends TEST UNIT READY until no unit attention is left, keeping what it
    /// consumed; checks that the LUN exists.
    fn consume_login_unit_attentions(
        &mut self,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        let tur = cdb::test_unit_ready();
        for _ in 0..=MAX_LOGIN_UNIT_ATTENTIONS {
            let left = remaining(deadline);
            if left.is_zero() {
                self.close("login timed out".into());
                return Err(format!(
                    "no answer from portal {} within {:?} (TEST UNIT READY after login)",
                    self.parsed.portal(),
                    self.timeout
                ));
            }
            let r = self
                .execute(&tur, DataBuffer::None, left)
                .map_err(|e| format!("TEST UNIT READY after login failed: {e}"))?;
            match (r.status, r.sense) {
                (ScsiStatus::CheckCondition, Some(s)) if s.key == SenseKey::UnitAttention => {
                    self.login_unit_attentions.push(s);
                }
                (ScsiStatus::CheckCondition, Some(s))
                    if s.key == SenseKey::IllegalRequest && s.asc == 0x25 =>
                {
                    self.close("no such LUN".into());
                    return Err(format!(
                        "target {} has no LUN {} ({s})",
                        self.parsed.target, self.parsed.lun
                    ));
                }
                // GOOD, NOT READY, RESERVATION CONFLICT, ...: the LUN is
                // there; what state it is in is for the caller to find out.
                _ => return Ok(()),
            }
        }
        self.close("too many unit attentions".into());
        Err(format!(
            "more than {MAX_LOGIN_UNIT_ATTENTIONS} unit attentions after login: {}",
            self.login_unit_attentions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }

    /// Destroys the session (without a logout) and remembers why.
    fn close(&mut self, why: String) {
        self.ctx = None;
        self.lost = why;
    }

    fn disconnected(&self) -> Error {
        Error::Disconnected {
            target: self.url.clone(),
            detail: format!(
                "the session was closed ({}); reconnect() logs in again",
                self.lost
            ),
        }
    }

    /// Logs out (bounded by `limit`) and destroys the context, ignoring
    /// errors.
    fn logout(&mut self, limit: Duration) {
        let Some(mut ctx) = self.ctx.take() else {
            return;
        };
        if ctx.logged_in() {
            let lib = self.lib;
            let raw = ctx.as_ptr();
            // SAFETY: `raw` is the live context; `cb`/`private` come from
            // `Context::start` and stay valid as long as the context.
            let started = ctx.start(false, |cb, private| unsafe {
                lib.iscsi_logout_async(raw, cb, private)
            });
            if started.is_ok() {
                let _ = ctx.wait(Instant::now() + limit);
            }
        }
        self.lost = "logged out".into();
    }
}

impl Transport for IscsiTransport {
    fn execute(
        &mut self,
        cdb: &Cdb,
        data: DataBuffer<'_>,
        timeout: Duration,
    ) -> Result<CommandResult> {
        check_direction(&self.url, cdb, &data)?;
        let invalid = |detail: String| Error::InvalidRequest {
            target: self.url.clone(),
            detail,
        };
        if cdb.is_empty() || cdb.len() > 16 {
            return Err(invalid(format!("a {}-byte CDB cannot be sent", cdb.len())));
        }
        let Ok(xfer_len) = c_int::try_from(data.len()) else {
            return Err(invalid(format!(
                "a {}-byte transfer is too large for libiscsi",
                data.len()
            )));
        };
        if timeout.is_zero() {
            return Err(invalid("the timeout must not be zero".into()));
        }
        let lib = self.lib;
        let lun = c_int::from(self.parsed.lun);
        let data_len = data.len();
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(self.disconnected());
        };
        let deadline = Instant::now() + timeout;
        ctx.set_timeout(timeout);

        let dir = match (&data, xfer_len) {
            (_, 0) | (DataBuffer::None, _) => sys::SCSI_XFER_NONE,
            (DataBuffer::FromDevice(_), _) => sys::SCSI_XFER_READ,
            (DataBuffer::ToDevice(_), _) => sys::SCSI_XFER_WRITE,
        };
        let task =
            Task::new(lib, cdb.as_bytes(), dir, xfer_len).ok_or_else(|| Error::Transport {
                target: self.url.clone(),
                opcode: cdb.opcode(),
                detail: "libiscsi could not allocate a task (out of memory?)".into(),
            })?;
        // What libiscsi reads the data-out from; it must live until the
        // command completes or the context is destroyed, i.e. to the end of
        // this function.
        let mut data_out = sys::iscsi_data {
            size: 0,
            data: std::ptr::null_mut(),
        };
        let data_out_ptr: *mut sys::iscsi_data = match data {
            DataBuffer::FromDevice(buf) if !buf.is_empty() => {
                // SAFETY: the task is live. libiscsi records the buffer
                // (`xfer_len` bytes, exclusively borrowed by us for the whole
                // call) and writes data-in into it only while the command is
                // in flight; it is never touched after this function returns
                // because the command either completes or the context is
                // destroyed first.
                let rc = unsafe {
                    lib.scsi_task_add_data_in_buffer(task.as_ptr(), xfer_len, buf.as_mut_ptr())
                };
                if rc != 0 {
                    return Err(Error::Transport {
                        target: self.url.clone(),
                        opcode: cdb.opcode(),
                        detail: "libiscsi could not attach the data-in buffer".into(),
                    });
                }
                std::ptr::null_mut()
            }
            DataBuffer::ToDevice(buf) if !buf.is_empty() => {
                data_out.size = buf.len();
                // libiscsi only reads data-out buffers; the `*mut` is the
                // C API's lack of `const`.
                data_out.data = buf.as_ptr().cast_mut();
                &mut data_out
            }
            _ => std::ptr::null_mut(),
        };
        let raw = ctx.as_ptr();
        let task_ptr = task.as_ptr();
        // SAFETY: `raw` and `task_ptr` are live; `data_out_ptr` is null or
        // points to `data_out`, whose buffer outlives the command (see
        // above). `cb`/`private` come from `Context::start` and stay valid
        // as long as the context. The task is freed (when `task` drops) only
        // after the command completed or the context was destroyed.
        let started = ctx.start(false, |cb, private| unsafe {
            lib.iscsi_scsi_command_async(raw, lun, task_ptr, cb, data_out_ptr, private)
        });
        if let Err(e) = started {
            let logged_in = ctx.logged_in();
            self.close(format!("libiscsi refused to queue a command: {e}"));
            return Err(if logged_in {
                Error::Transport {
                    target: self.url.clone(),
                    opcode: cdb.opcode(),
                    detail: format!("libiscsi refused to queue the command: {e}"),
                }
            } else {
                self.disconnected()
            });
        }
        let waited = ctx.wait(deadline);
        let status = match waited {
            Waited::Completed(status) => status,
            Waited::TimedOut => {
                self.close(format!(
                    "command 0x{:02X} timed out after {timeout:?}",
                    cdb.opcode()
                ));
                return Err(Error::Timeout {
                    target: self.url.clone(),
                    opcode: cdb.opcode(),
                    after: timeout,
                });
            }
            Waited::Failed(e) => {
                let detail = format!(
                    "the connection to portal {} was lost: {e}",
                    self.parsed.portal()
                );
                self.close(detail.clone());
                return Err(Error::Disconnected {
                    target: self.url.clone(),
                    detail,
                });
            }
        };
        match status {
            0..=0xff => {
                // SAFETY: the command completed: libiscsi has released the
                // task (its PDU is freed) and no longer writes to it.
                let t = unsafe { task.get() };
                let status = ScsiStatus::from_u8(status as u8);
                let sense = if status == ScsiStatus::CheckCondition {
                    // SAFETY: as above; the task is live until `task` drops.
                    unsafe { task_sense(t) }
                } else {
                    None
                };
                let residual = if t.residual_status == sys::SCSI_RESIDUAL_UNDERFLOW {
                    u32::try_from(t.residual.min(data_len)).unwrap_or(u32::MAX)
                } else {
                    0
                };
                Ok(CommandResult {
                    status,
                    sense,
                    residual,
                })
            }
            STATUS_CANCELLED => {
                // Nothing here cancels a command: libiscsi does so when the
                // connection fails (with auto-reconnect off).
                let detail = format!(
                    "the connection to portal {} was lost: {}",
                    self.parsed.portal(),
                    ctx.last_error_or("closed by the target")
                );
                self.close(detail.clone());
                Err(Error::Disconnected {
                    target: self.url.clone(),
                    detail,
                })
            }
            STATUS_TIMEOUT => {
                self.close(format!(
                    "command 0x{:02X} timed out after {timeout:?}",
                    cdb.opcode()
                ));
                Err(Error::Timeout {
                    target: self.url.clone(),
                    opcode: cdb.opcode(),
                    after: timeout,
                })
            }
            other => {
                let detail = format!(
                    "{} (libiscsi status {other:#x}); the session was closed",
                    ctx.last_error_or("libiscsi failed the command")
                );
                self.close(detail.clone());
                Err(Error::Transport {
                    target: self.url.clone(),
                    opcode: cdb.opcode(),
                    detail,
                })
            }
        }
    }

    fn target(&self) -> &str {
        &self.url
    }

    fn initiator(&self) -> String {
        format!("{} (isid {})", self.iqn, isid_hex(&self.isid))
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn reconnect(&mut self) -> Result<()> {
        // Still logged in (a caller reconnecting on its own initiative):
        // log out first, so the target does not have to time the old
        // session out.
        self.logout(self.timeout.min(LOGOUT_TIMEOUT));
        self.login(Instant::now() + self.timeout)
            .map_err(|detail| Error::Connect {
                target: self.url.clone(),
                detail: format!("reconnect failed: {detail}"),
            })?;
        self.epoch += 1;
        Ok(())
    }

    fn reset_lun(&mut self) -> Result<()> {
        let lib = self.lib;
        let lun = u32::from(self.parsed.lun);
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(self.disconnected());
        };
        ctx.set_timeout(self.timeout);
        let raw = ctx.as_ptr();
        // SAFETY: `raw` is the live context; `cb`/`private` come from
        // `Context::start` and stay valid as long as the context. No command
        // of ours is in flight (libiscsi cancels those first).
        let started = ctx.start(true, |cb, private| unsafe {
            lib.iscsi_task_mgmt_lun_reset_async(raw, lun, cb, private)
        });
        let failure = match started {
            Err(e) => e,
            Ok(()) => match ctx.wait(Instant::now() + self.timeout) {
                Waited::Completed(STATUS_GOOD) => match ctx.tmf_response() {
                    Some(0) => return Ok(()),
                    Some(code) => {
                        return Err(Error::Transport {
                            target: self.url.clone(),
                            opcode: 0,
                            detail: format!(
                                "LOGICAL UNIT RESET (task management function) refused: {}",
                                tmf_response_name(code)
                            ),
                        })
                    }
                    None => "no task management response".into(),
                },
                Waited::Completed(STATUS_CANCELLED) => {
                    ctx.last_error_or("the connection was closed")
                }
                Waited::Completed(_) | Waited::Failed(_) => ctx.last_error(),
                Waited::TimedOut => format!("no response within {:?}", self.timeout),
            },
        };
        self.close(format!("LOGICAL UNIT RESET failed: {failure}"));
        Err(Error::Disconnected {
            target: self.url.clone(),
            detail: format!("LOGICAL UNIT RESET failed: {failure}; the session was closed"),
        })
    }
}

impl Drop for IscsiTransport {
    fn drop(&mut self) {
        self.logout(self.timeout.min(LOGOUT_TIMEOUT));
    }
}

/// The `detail` of an [`Error::InvalidRequest`], or the whole message.
fn invalid_detail(e: Error) -> String {
    match e {
        Error::InvalidRequest { detail, .. } => detail,
        other => other.to_string(),
    }
}

/// Time left until `deadline` (zero if it passed).
fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Turns libiscsi's login error into a message that says what happened.
fn explain_login_error(portal: &str, target: &str, e: &str) -> String {
    let lower = e.to_ascii_lowercase();
    if lower.contains("connection refused") {
        format!("connection refused at portal {portal} (is an iSCSI target listening there?)")
    } else if lower.contains("can not reconnect right now") {
        // What libiscsi says when the connection fails before the login
        // completed and the real error was not reported to a callback
        // (e.g. the peer closed the connection or sent something that is
        // not iSCSI).
        format!(
            "the connection to portal {portal} failed during the login (is it an iSCSI target?)"
        )
    } else if lower.contains("target not found") {
        format!("the portal {portal} has no target named {target} (libiscsi: {e})")
    } else if lower.contains("resolv") || lower.contains("getaddrinfo") {
        format!("cannot resolve the portal {portal} (libiscsi: {e})")
    } else if lower.contains("authoriz") || lower.contains("authent") {
        format!("target {target} at {portal} refused this initiator's login (libiscsi: {e})")
    } else if e.is_empty() {
        format!("login to {target} at {portal} failed")
    } else {
        format!("login to {target} at {portal} failed: {e}")
    }
}

/// The name of a task management response code (RFC 7143 §11.6.1).
fn tmf_response_name(code: u32) -> String {
    let name = match code {
        1 => "task does not exist",
        2 => "LUN does not exist",
        3 => "task still allegiant",
        4 => "task allegiance reassignment not supported",
        5 => "task management function not supported",
        6 => "function authorization failed",
        255 => "function rejected",
        _ => "unknown response",
    };
    format!("{name} ({code})")
}

/// The sense data of a completed CHECK CONDITION task.
///
/// # Safety
///
/// `t` must be a completed task: its `datain` is null or `datain.size`
/// bytes malloc'ed by libiscsi.
unsafe fn task_sense(t: &sys::scsi_task) -> Option<Sense> {
    if let Ok(size) = usize::try_from(t.datain.size) {
        if !t.datain.data.is_null() && size >= 2 {
            // SAFETY: the caller guarantees `datain.data` holds `size`
            // bytes; they are only read, while the task is alive.
            let raw = unsafe { std::slice::from_raw_parts(t.datain.data, size) };
            // iSCSI SCSI Response data segment: SenseLength (2 bytes, big
            // endian), then the sense data.
            let len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
            let sense = &raw[2..raw.len().min(2 + len)];
            if let Ok(s) = Sense::parse(sense) {
                return Some(s);
            }
        }
    }
    // libiscsi's decoded copy: key and ASC/ASCQ, rebuilt as fixed format.
    let key = u8::try_from(t.sense.key).ok().filter(|&k| k <= 0x0f)?;
    let [_, _, asc, ascq] = t.sense.ascq.to_be_bytes();
    if key == 0 && asc == 0 && ascq == 0 {
        return None;
    }
    let mut fixed = [0u8; 18];
    fixed[0] = 0x70;
    fixed[2] = key;
    fixed[7] = 10;
    fixed[12] = asc;
    fixed[13] = ascq;
    Sense::parse(&fixed).ok()
}

/// How a wait for one operation ended.
enum Waited {
    /// The callback ran with this status.
    Completed(c_int),
    /// The deadline passed first.
    TimedOut,
    /// The event loop failed (libiscsi gave up on the connection, or poll
    /// failed); the message says why.
    Failed(String),
}

/// What the completion callback records. Lives in a `Box` owned by the
/// [`Context`], so the pointer libiscsi holds stays valid until the context
/// is destroyed, however an operation ends.
struct Completion {
    lib: &'static sys::LibIscsi,
    done: Cell<bool>,
    status: Cell<c_int>,
    /// `iscsi_get_error` when the callback ran with a failure (libiscsi
    /// overwrites it with less useful messages afterwards).
    error: Cell<Option<String>>,
    /// The operation is a task management function, whose GOOD callback
    /// carries a response code.
    is_tmf: Cell<bool>,
    /// The response code of a task management function.
    tmf_response: Cell<Option<u32>>,
}

/// The callback of every asynchronous libiscsi call made here.
///
/// # Safety
///
/// `private_data` must point to a live [`Completion`]; `iscsi` must be the
/// context the call was made on; for a task management function,
/// `command_data` is null or points to the `u32` response code.
unsafe extern "C" fn on_complete(
    iscsi: *mut sys::iscsi_context,
    status: c_int,
    command_data: *mut c_void,
    private_data: *mut c_void,
) {
    // SAFETY: `Context::start` passes a pointer to its boxed `Completion`,
    // which outlives the context (so every callback libiscsi can make).
    // Only shared access through `Cell`s: no aliasing `&mut`.
    let op = unsafe { &*private_data.cast::<Completion>() };
    op.done.set(true);
    op.status.set(status);
    if status != STATUS_GOOD {
        // SAFETY: `iscsi` is the live context that is calling us.
        op.error.set(Some(unsafe { error_string(op.lib, iscsi) }));
    } else if op.is_tmf.get() && !command_data.is_null() {
        // SAFETY: for a task management function, libiscsi passes a
        // pointer to the `uint32_t` response code (iscsi.h,
        // `iscsi_task_mgmt_async`), valid during the callback.
        op.tmf_response
            .set(Some(unsafe { command_data.cast::<u32>().read() }));
    }
}

/// `iscsi_get_error`, copied.
///
/// # Safety
///
/// `ctx` must be a live context.
unsafe fn error_string(lib: &sys::LibIscsi, ctx: *mut sys::iscsi_context) -> String {
    // SAFETY: the caller guarantees `ctx` is live; the returned pointer is
    // null or a NUL-terminated string inside the context, copied at once.
    unsafe {
        let p = lib.iscsi_get_error(ctx);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().trim().to_owned()
        }
    }
}

/// An owned libiscsi context, destroyed on drop.
struct Context {
    lib: &'static sys::LibIscsi,
    raw: NonNull<sys::iscsi_context>,
    /// The libiscsi timeout currently set, in seconds.
    timeout_secs: c_int,
    /// The record of the operation in flight (or the last one).
    op: Box<Completion>,
    /// `iscsi_get_error` when the operation started: libiscsi does not
    /// always set an error (e.g. not when the target closes the
    /// connection), so a message equal to this one is stale.
    stale_error: String,
}

// SAFETY: a libiscsi context has no thread affinity (no thread-local state,
// no signal handlers; its socket is an ordinary fd); it only must not be
// used from two threads at once, which `&mut self` on every use prevents.
// `Context` is not `Sync`.
unsafe impl Send for Context {}

impl Context {
    fn new(lib: &'static sys::LibIscsi, iqn: &CStr) -> Option<Self> {
        // SAFETY: `iqn` is NUL-terminated; libiscsi copies it.
        let raw = NonNull::new(unsafe { lib.iscsi_create_context(iqn.as_ptr()) })?;
        Some(Self {
            lib,
            raw,
            timeout_secs: 0,
            op: Box::new(Completion {
                lib,
                done: Cell::new(false),
                status: Cell::new(0),
                error: Cell::new(None),
                is_tmf: Cell::new(false),
                tmf_response: Cell::new(None),
            }),
            stale_error: String::new(),
        })
    }

    fn as_ptr(&self) -> *mut sys::iscsi_context {
        self.raw.as_ptr()
    }

    fn error(&self) -> String {
        // SAFETY: the context is live.
        unsafe { error_string(self.lib, self.as_ptr()) }
    }

    /// The error recorded when the last operation failed, or else the
    /// context's current one; empty if both are stale (set before the
    /// operation started).
    fn last_error(&self) -> String {
        let recorded = self.op.error.take();
        self.op.error.set(recorded.clone());
        let fresh = |e: &String| !e.is_empty() && *e != self.stale_error;
        recorded
            .filter(fresh)
            .or_else(|| Some(self.error()).filter(fresh))
            .unwrap_or_default()
    }

    fn last_error_or(&self, fallback: &str) -> String {
        let e = self.last_error();
        if e.is_empty() {
            fallback.to_owned()
        } else {
            e
        }
    }

    fn tmf_response(&self) -> Option<u32> {
        self.op.tmf_response.get()
    }

    fn logged_in(&self) -> bool {
        // SAFETY: the context is live.
        unsafe { self.lib.iscsi_is_logged_in(self.as_ptr()) != 0 }
    }

    /// Sets libiscsi's own timeout for PDUs queued from now on, as a
    /// backstop: one second more than `t`, rounded up, because libiscsi
    /// counts whole seconds of `time()` and may fire up to a second early.
    /// The real deadline is enforced by [`Context::wait`].
    fn set_timeout(&mut self, t: Duration) {
        let secs = t
            .as_secs()
            .saturating_add(u64::from(t.subsec_nanos() > 0))
            .saturating_add(1);
        let secs = c_int::try_from(secs).unwrap_or(c_int::MAX);
        if secs != self.timeout_secs {
            // SAFETY: the context is live.
            unsafe { self.lib.iscsi_set_timeout(self.as_ptr(), secs) };
            self.timeout_secs = secs;
        }
    }

    /// Starts an asynchronous operation: `call` gets the callback and the
    /// private pointer to pass to libiscsi (`is_tmf`: it is a task
    /// management function). Fails with libiscsi's message if `call` returns
    /// non-zero (then the callback will not run).
    fn start(
        &mut self,
        is_tmf: bool,
        call: impl FnOnce(sys::iscsi_command_cb, *mut c_void) -> c_int,
    ) -> std::result::Result<(), String> {
        self.op.done.set(false);
        self.op.status.set(0);
        self.op.error.set(None);
        self.op.is_tmf.set(is_tmf);
        self.op.tmf_response.set(None);
        self.stale_error = self.error();
        let private: *const Completion = &*self.op;
        if call(Some(on_complete), private.cast_mut().cast()) == 0 {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    /// Runs the event loop until the operation started last completes or
    /// `deadline` passes.
    fn wait(&mut self, deadline: Instant) -> Waited {
        while !self.op.done.get() {
            let left = remaining(deadline);
            if left.is_zero() {
                return Waited::TimedOut;
            }
            // Wake at least once a second so libiscsi can run its own
            // timeout scan; round up so a sub-millisecond rest still waits.
            let slice = left.min(Duration::from_secs(1));
            let ms = c_int::try_from(slice.as_millis().max(1)).unwrap_or(1000);
            // SAFETY: the context is live.
            let (fd, events) = unsafe {
                (
                    self.lib.iscsi_get_fd(self.as_ptr()),
                    self.lib.iscsi_which_events(self.as_ptr()),
                )
            };
            let revents = if fd < 0 || events == 0 {
                // Nothing to poll for right now (libiscsi asks for >= 100 ms).
                std::thread::sleep(slice.min(Duration::from_millis(100)));
                0
            } else {
                let mut pfd = libc::pollfd {
                    fd,
                    // POLLIN/POLLOUT fit in a `short`.
                    events: i16::try_from(events).unwrap_or(libc::POLLIN | libc::POLLOUT),
                    revents: 0,
                };
                // SAFETY: `pfd` is one valid pollfd for the duration.
                let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
                if rc < 0 {
                    let err = std::io::Error::last_os_error();
                    if err.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Waited::Failed(format!("poll() failed: {err}"));
                }
                if rc == 0 {
                    0
                } else {
                    pfd.revents
                }
            };
            // SAFETY: the context is live; `revents` came from poll on its fd.
            let rc = unsafe { self.lib.iscsi_service(self.as_ptr(), c_int::from(revents)) };
            if rc < 0 && !self.op.done.get() {
                return Waited::Failed(self.last_error_or("the connection failed"));
            }
        }
        Waited::Completed(self.op.status.get())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context is live and destroyed exactly once. This
        // closes the socket and cancels whatever is queued (calling
        // `on_complete` with the still-alive `self.op`); afterwards libiscsi
        // holds no pointer to a task, a buffer or `self.op`.
        unsafe { self.lib.iscsi_destroy_context(self.as_ptr()) };
    }
}

/// An owned `scsi_task`, freed on drop.
struct Task {
    lib: &'static sys::LibIscsi,
    raw: NonNull<sys::scsi_task>,
}

impl Task {
    fn new(
        lib: &'static sys::LibIscsi,
        cdb: &[u8],
        dir: sys::scsi_xfer_dir,
        xfer_len: c_int,
    ) -> Option<Self> {
        let mut bytes = [0u8; 16];
        let len = cdb.len().min(bytes.len());
        bytes[..len].copy_from_slice(&cdb[..len]);
        let dir = c_int::try_from(dir).ok()?;
        let len = c_int::try_from(len).ok()?;
        // SAFETY: `bytes` holds `len` (<= 16) CDB bytes; libiscsi copies
        // them into the task.
        let raw = unsafe { lib.scsi_create_task(len, bytes.as_mut_ptr(), dir, xfer_len) };
        NonNull::new(raw).map(|raw| Self { lib, raw })
    }

    fn as_ptr(&self) -> *mut sys::scsi_task {
        self.raw.as_ptr()
    }

    /// The task's fields.
    ///
    /// # Safety
    ///
    /// libiscsi must not be modifying the task (it is not queued, or its
    /// command completed).
    unsafe fn get(&self) -> &sys::scsi_task {
        // SAFETY: the pointer is live until drop; the caller guarantees no
        // concurrent writes.
        unsafe { self.raw.as_ref() }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        // SAFETY: the task is live and freed exactly once; it is no longer
        // referenced by a context (its command completed, or the context
        // was destroyed first — `IscsiTransport::execute` closes the session
        // before its `Task` goes out of scope on every failure path).
        unsafe { self.lib.scsi_free_scsi_task(self.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn login_errors_are_explained() {
        let m = explain_login_error(
            "127.0.0.1:1",
            "iqn.x:t",
            "Failed to connect to iSCSI socket. iscsi_service: socket error Connection \
             refused(111).",
        );
        assert_eq!(
            m,
            "connection refused at portal 127.0.0.1:1 (is an iSCSI target listening there?)"
        );
        let m = explain_login_error(
            "127.0.0.1:1",
            "iqn.x:t",
            "iscsi_service_reconnect_if_loggedin. Can not reconnect right now.",
        );
        assert!(m.contains("failed during the login"), "{m}");
        let m = explain_login_error(
            "h:3260",
            "iqn.x:t",
            "Failed to log in to target. Status: Target not found(515)",
        );
        assert!(
            m.starts_with("the portal h:3260 has no target named iqn.x:t"),
            "{m}"
        );
    }

    #[test]
    fn transport_is_send() {
        fn send<T: Send>() {}
        send::<IscsiTransport>();
    }

    #[test]
    fn tmf_codes() {
        assert_eq!(
            tmf_response_name(5),
            "task management function not supported (5)"
        );
        assert_eq!(tmf_response_name(77), "unknown response (77)");
    }

    #[test]
    fn bad_arguments_fail_before_loading_libiscsi() {
        let t = Duration::from_secs(1);
        let e = IscsiTransport::connect("iscsi://h/iqn.x:y", "iqn.2026-11.invalid.fts:a", t)
            .unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("missing LUN"), "{e}");
        let e = IscsiTransport::connect("iscsi://h/iqn.x:y/0", "bogus", t).unwrap_err();
        assert!(e.to_string().contains("initiator name \"bogus\""), "{e}");
        let e = IscsiTransport::connect(
            "iscsi://h/iqn.x:y/0",
            "iqn.2026-11.invalid.fts:a",
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
    }
}
