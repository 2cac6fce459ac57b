//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// What can go wrong building a fault plan or a [`FaultDevice`](crate::FaultDevice).
///
/// Injected faults are never reported through this type: they are
/// [`fts_blockdev::Error`]s returned by the wrapped device, exactly as a
/// failing device would return them, and recorded in the
/// [`Faults`](crate::Faults) log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An item of a textual fault plan does not parse.
    #[error("fault plan item {item:?}: {reason} (see fts_faults::FaultPlan for the syntax)")]
    Syntax {
        /// The item (text between two `;`) as given.
        item: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A rule or setting that cannot work (e.g. a probability above 1).
    #[error("fault plan rule {rule}: {reason}")]
    Invalid {
        /// Index of the rule in the plan (0-based), or `usize::MAX` for a
        /// plan-wide setting.
        rule: usize,
        /// What is wrong.
        reason: String,
    },

    /// The environment variable holding a plan is set but not valid Unicode.
    #[error("${var} is set but is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: &'static str,
    },

    /// The injection log file of the plan could not be opened.
    #[error("cannot open the fault injection log {}: {source}", path.display())]
    LogFile {
        /// The file.
        path: PathBuf,
        /// The error from `open(2)`.
        source: io::Error,
    },
}
