//! Standard output for nulab's programs (`nulab`, `nulab-dhcp-server`, `nulab-dhcp-client`)
//! that reports a failed write instead of panicking: the one home of that rule. `println!`
//! panics when standard output is a closed pipe (`nulab-dhcp-server … | head`) or a full disk;
//! [`write_line`] writes the same text and returns an [`OutputError`], and the program ends
//! quietly with status [`BROKEN_PIPE_STATUS`] for a closed pipe, or with one error line and
//! status 1 for anything else ([`OutputError::exit_code`]). `nulab`'s `output` module builds
//! its `outln!` macros and its error handling on these.
//!
//! Why not restore SIGPIPE's default disposition instead: the same programs run servers whose
//! socket writes must see a peer's reset as an `EPIPE` error, not die of the signal; and it
//! needs no `unsafe`.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// The status of a program whose output was cut off by a closed pipe: 128 + SIGPIPE (13),
/// what a shell reports for `cat` killed by SIGPIPE.
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// A failed write to standard output.
#[derive(Debug)]
pub struct OutputError(pub io::Error);

impl OutputError {
    /// Whether the reader went away (a closed pipe): the program ends quietly.
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }

    /// How `program` ends after this error: quietly with [`BROKEN_PIPE_STATUS`] for a closed
    /// pipe, else `PROGRAM: error: …` on standard error and status 1.
    pub fn exit_code(&self, program: &str) -> ExitCode {
        if self.is_broken_pipe() {
            ExitCode::from(BROKEN_PIPE_STATUS)
        } else {
            write_err(format_args!("{program}: error: {self}"));
            ExitCode::FAILURE
        }
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for OutputError {}

/// Writes `args` to standard output.
pub fn write_fmt(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    io::stdout().lock().write_fmt(args).map_err(OutputError)
}

/// Writes `args` and a newline to standard output, in one locked write (Rust's standard output
/// is line-buffered: the line is out at once, for a reader following a log).
pub fn write_line(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(OutputError)
}

/// Writes raw bytes to standard output.
pub fn write_bytes(bytes: &[u8]) -> Result<(), OutputError> {
    io::stdout().lock().write_all(bytes).map_err(OutputError)
}

/// Flushes standard output (its buffer would otherwise be flushed at exit, where an error is
/// lost).
pub fn flush() -> Result<(), OutputError> {
    io::stdout().lock().flush().map_err(OutputError)
}

/// Writes a line to standard error, ignoring a failure: there is nowhere left to report it.
pub fn write_err(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr
        .write_fmt(args)
        .and_then(|()| stderr.write_all(b"\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_quiet_and_anything_else_is_said() {
        let pipe = OutputError(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
        let full = OutputError(io::Error::from_raw_os_error(28)); // ENOSPC
        assert!(!full.is_broken_pipe());
        assert!(
            full.to_string()
                .starts_with("cannot write to standard output")
        );
    }
}
