//! Standard output that never panics.
//!
//! `println!` panics when standard output is gone (`fts inspect --json |
//! head` closes the pipe after one line). Every command prints through
//! [`outln!`] and [`out!`] instead: a failed write is remembered, later
//! output is dropped, the command carries on (a `check --repair` is not
//! cut short because its reader went away), and `main` then ends with
//! [`CLOSED_EXIT`] and no message when the reader closed the pipe, or with
//! an error naming the failure otherwise. For `println!` calls elsewhere
//! (and `eprintln!` on a closed standard error), [`install_panic_hook`]
//! turns the standard library's "failed printing to stdout: Broken pipe"
//! panic into the same quiet exit.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

/// Exit code when standard output was closed by its reader: 141, what a
/// shell reports for a process killed by SIGPIPE (128 + 13), as `yes | head`
/// or `git log | head` end.
pub const CLOSED_EXIT: u8 = 141;

/// The first error writing standard output, if any.
static FAILED: Mutex<Option<io::ErrorKind>> = Mutex::new(None);
static FAILED_MSG: Mutex<Option<String>> = Mutex::new(None);

fn failed() -> Option<io::ErrorKind> {
    *FAILED.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(e: &io::Error) {
    let mut f = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if f.is_none() {
        *f = Some(e.kind());
        *FAILED_MSG.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }
}

/// Writes `args` to standard output; after a failed write, nothing more.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    if failed().is_some() {
        return;
    }
    let mut o = io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        record(&e);
    }
}

/// Flushes standard output, remembering a failure.
pub fn flush() {
    if failed().is_none() {
        if let Err(e) = io::stdout().lock().flush() {
            record(&e);
        }
    }
}

/// How standard output ended: `Ok` if every write succeeded, `Err(None)`
/// if its reader closed it (broken pipe), `Err(Some(message))` for any
/// other failure (a full disk behind a redirection, …).
pub fn status() -> Result<(), Option<String>> {
    flush();
    match failed() {
        None => Ok(()),
        Some(io::ErrorKind::BrokenPipe) => Err(None),
        Some(_) => Err(Some(
            FAILED_MSG
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default(),
        )),
    }
}

/// Makes the standard library's panic on a closed standard output or
/// error (from `println!`/`eprintln!`) end the process quietly with
/// [`CLOSED_EXIT`]; every other panic goes to the previous hook.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        let epipe = format!("(os error {})", libc::EPIPE);
        if msg.starts_with("failed printing to std") && msg.contains(&epipe) {
            std::process::exit(i32::from(CLOSED_EXIT));
        }
        previous(info);
    }));
}

/// `println!` that never panics (see the module).
macro_rules! outln {
    () => {
        $crate::out::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*), true)
    };
}

/// `print!` that never panics (see the module).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*), false)
    };
}

pub(crate) use {out, outln};
