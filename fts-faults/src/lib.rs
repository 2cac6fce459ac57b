//! Fault injection for fts tests: a [`BlockDevice`] wrapper that makes a
//! healthy device misbehave the way shared storage does.
//!
//! [`FaultDevice`] wraps any `Box<dyn BlockDevice>` (a file, a block device,
//! a SCSI LUN) and follows a [`FaultPlan`]: a seed and [`Rule`]s, each
//! selecting operations (reads, writes, flushes; an LB or byte range; the
//! N-th match, the first N, after a time; a seeded probability) and a
//! [`Fault`] to inject into them:
//!
//! - I/O errors (`EIO` or any errno), returned as the
//!   [`fts_blockdev::Error`] a failing device returns;
//! - added latency (a slow or hung path), and a device-wide bandwidth cap
//!   (for benchmarks that want a slower disk);
//! - torn multi-block writes: only a prefix of the blocks reaches the
//!   device, then the write fails, the device "crashes" (every later
//!   operation fails), or the write claims success;
//! - dropped writes and flushes: reported done, never done;
//! - bit flips in the data read or written;
//! - crashes: from an operation on, the device is dead for every handle.
//!
//! Handles opened with [`BlockDevice::reopen`] (fts opens one per thread)
//! share the plan, its counters, its random generator and the crash state,
//! so a plan describes what happens to one process's view of the device.
//! Every injection is logged ([`Faults::log`], [`Faults::stats`],
//! [`Faults::fired`], and optionally a file): a test asserts that its fault
//! really fired, so that a test whose fault never happened fails instead of
//! passing vacuously. With the same seed and the same sequence of
//! operations, the same faults are injected.
//!
//! Plans are built in code or parsed from text ([`FaultPlan`]'s `FromStr`),
//! so a process under test can take one from the environment
//! ([`wrap_from_env`], variable [`PLAN_ENV`]).
//!
//! What this crate is **not** for:
//!
//! * Production I/O. It exists for tests and benchmarks; nothing here
//!   makes a device more reliable, and a binary should only call
//!   [`wrap_from_env`] in builds meant for testing.
//! * Deciding whether the code under test coped: it only injects and
//!   records. The tests judge the outcome (the bytes received, the error
//!   returned, what is on the device).
//! * Faults below the block interface (SCSI sense data, reservation
//!   conflicts, lost iSCSI connections): those are `fts-scsi`'s and the
//!   `hil` rig's business.
//!
//! # Example
//!
//! ```
//! use fts_blockdev::{BlockDevice, FileDevice, OpenOptions, WriteMode};
//! use fts_faults::{Fault, FaultDevice, FaultPlan, Injected, Rule};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let opts = OpenOptions { create_size: Some(1 << 20), ..OpenOptions::default() };
//! let file = FileDevice::open(dir.path().join("disk.img"), &opts)?;
//!
//! // The second write fails; every read of LB 2 has one bit flipped.
//! let plan = FaultPlan::new(1)
//!     .rule(Rule::new(Fault::eio()).writes().nth(2))
//!     .rule(Rule::new(Fault::Flip { bits: 1 }).reads().lbs(2..3));
//! let mut dev = FaultDevice::new(Box::new(file), plan)?;
//! let faults = dev.faults().clone();
//!
//! let block = vec![0xAB; 4096];
//! dev.write_at(8192, &block, WriteMode::Normal)?;
//! assert!(dev.write_at(8192, &block, WriteMode::Normal).is_err());
//!
//! let mut back = vec![0; 4096];
//! dev.read_at(8192, &mut back)?;
//! let differing = back.iter().zip(&block).filter(|(a, b)| a != b).count();
//! assert_eq!(differing, 1);
//!
//! assert_eq!(faults.fired(0), 1);
//! assert!(matches!(faults.log()[1].what, Injected::Flipped { .. }));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod device;
mod error;
mod log;
mod plan;
mod rng;

pub use device::{FaultDevice, Faults};
pub use error::Error;
pub use log::{Injected, Injection, Stats};
pub use plan::{Fault, FaultPlan, Op, Rule, TornEnd, FTS_LB};

use fts_blockdev::BlockDevice;

/// The environment variable [`wrap_from_env`] reads a [`FaultPlan`] from.
pub const PLAN_ENV: &str = "FTS_FAULT_PLAN";

/// The plan in [`PLAN_ENV`], if the variable is set (and not empty).
pub fn plan_from_env() -> Result<Option<FaultPlan>, Error> {
    match std::env::var(PLAN_ENV) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => text.parse().map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::NotUnicode { var: PLAN_ENV }),
    }
}

/// `dev` wrapped in a [`FaultDevice`] following the plan in [`PLAN_ENV`],
/// or `dev` itself when the variable is not set. Give the plan a `log=`
/// file to see from outside the process what was injected.
pub fn wrap_from_env(dev: Box<dyn BlockDevice>) -> Result<Box<dyn BlockDevice>, Error> {
    match plan_from_env()? {
        Some(plan) => Ok(Box::new(FaultDevice::new(dev, plan)?)),
        None => Ok(dev),
    }
}
