//! What the commands write. `println!` and `eprintln!` panic when their
//! stream is closed, as a pipe is when its reader stops early
//! (`switchyard dead-letters list | head`). The macros here write instead,
//! and a stream that cannot be written to is closed for the rest of the run:
//! the command finishes its work quietly and exits with the status it earned.
//! A closed pipe is the reader's choice and says nothing; any other failure
//! (a full disk behind a redirection) is told once on stderr, and the run
//! then exits with [`UNUSABLE`].

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// The exit code when the output could not be written.
const UNUSABLE: u8 = 2;

/// Writes to stdout, like `print!`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!($($arg)*)) };
}

/// Writes a line to stdout, like `println!`.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes to stderr, like `eprint!`.
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::stderr(format_args!($($arg)*)) };
}

/// Writes a line to stderr, like `eprintln!`.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {err, errln, out, outln};

/// Whether stdout, and stderr, can no longer be written to.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
/// Whether a write failed for another reason than a closed pipe.
static FAILED: AtomicBool = AtomicBool::new(false);

pub fn stdout(text: fmt::Arguments<'_>) {
    if let Err(error) = write(&mut io::stdout().lock(), text, &STDOUT_CLOSED) {
        stderr(format_args!("error: cannot write the output: {error}\n"));
    }
}

pub fn stderr(text: fmt::Arguments<'_>) {
    let _ = write(&mut io::stderr().lock(), text, &STDERR_CLOSED);
}

/// The exit code of a run that would exit with `code`: flushes stdout, and
/// turns a failure to write into [`UNUSABLE`].
pub fn finish(code: ExitCode) -> ExitCode {
    if !STDOUT_CLOSED.load(Ordering::Relaxed)
        && let Err(error) = io::stdout().lock().flush()
    {
        close(&error, &STDOUT_CLOSED);
        if error.kind() != io::ErrorKind::BrokenPipe {
            stderr(format_args!("error: cannot write the output: {error}\n"));
        }
    }
    if FAILED.load(Ordering::Relaxed) { ExitCode::from(UNUSABLE) } else { code }
}

/// Writes `text` unless the stream is closed. Closes it when the write
/// fails, and returns the error unless it was a closed pipe.
fn write(stream: &mut impl Write, text: fmt::Arguments<'_>, closed: &AtomicBool) -> io::Result<()> {
    if closed.load(Ordering::Relaxed) {
        return Ok(());
    }
    match stream.write_fmt(text) {
        Err(error) => {
            close(&error, closed);
            if error.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(error) }
        }
        Ok(()) => Ok(()),
    }
}

fn close(error: &io::Error, closed: &AtomicBool) {
    closed.store(true, Ordering::Relaxed);
    if error.kind() != io::ErrorKind::BrokenPipe {
        FAILED.store(true, Ordering::Relaxed);
    }
}
