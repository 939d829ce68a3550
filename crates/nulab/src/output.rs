//! Standard output that reports its errors instead of panicking. `println!` panics when stdout
//! is a closed pipe (`nulab … | head`) or a full disk; the [`outln!`] and [`out!`] macros here
//! write the same text but return a [`Result`], so a command stops at the first failed write
//! and `main` ends it: quietly with status 141 (128 + SIGPIPE, what a shell shows for `cat`
//! cut off by `head`) for a closed pipe, one error line and status 1 for anything else.
//!
//! Adopting it in a module: `use crate::output::{out, outln};`, then `println!(…)` becomes
//! `outln!(…)?` and `print!(…)` becomes `out!(…)?` in any function returning
//! `anyhow::Result`. JSON goes through [`json`] (pretty) or [`json_line`] (one line).
//! Messages for people on standard error use [`errln!`], which never fails (there is nowhere
//! left to report a failure of standard error).
//!
//! Why not restore SIGPIPE's default disposition instead: nulab also runs servers (the WDS
//! provider, the HTTPS recovery service) whose socket writes must see a peer's reset as an
//! `EPIPE` error, not die of the signal; and it needs no `unsafe`.

use serde::Serialize;

// The rule itself (what a failed write is, how a closed pipe ends a program) has one home,
// `realnet::output`, shared with `nulab-dhcp-server` and `nulab-dhcp-client`.
pub use realnet::output::{
    BROKEN_PIPE_STATUS, OutputError, flush, write_bytes, write_err, write_fmt, write_line,
};

/// `value` as pretty JSON and a newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    Ok(write_line(format_args!("{text}"))?)
}

/// `value` as one line of JSON (JSON lines).
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    Ok(write_line(format_args!("{text}"))?)
}

/// `println!` that returns `Result<(), OutputError>` instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

/// `print!` that returns `Result<(), OutputError>` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_fmt(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_err(format_args!($($arg)*))
    };
}

#[allow(unused_imports)] // each macro is used by some modules only
pub(crate) use {errln, out, outln};

/// How an error ends the process: the exit status, and whether anything should be said.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<OutputError>()
            .is_some_and(OutputError::is_broken_pipe)
    })
}

/// A safety net for code still using `println!`: the panic of a failed print to standard output
/// or error ends the process as an [`OutputError`] would, instead of a backtrace and status 101.
/// Any other panic keeps the default report.
pub fn install_print_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(what) = message.strip_prefix("failed printing to ") {
            if message.contains("Broken pipe") {
                std::process::exit(i32::from(BROKEN_PIPE_STATUS));
            }
            write_err(format_args!("nulab: error: cannot write to {what}"));
            std::process::exit(1);
        }
        default(info);
    }));
}

/// An error's message said once: each cause of the chain whose text the one before it already
/// contains (an error that prints its source in its own message) is left out.
pub fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    let mut previous = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || previous.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
        previous = text;
    }
    message
}

/// The JSON form of an error, printed on standard output when `--json` was given (what a
/// script reads); the exit status is the same as without `--json`.
#[derive(Debug, Serialize)]
pub struct JsonError {
    /// The whole message, said once, as the text form prints it after `nulab: error: `.
    pub error: String,
    /// The process's exit status.
    pub exit_code: u8,
}

#[cfg(test)]
mod tests {
    use std::{fmt, io};

    use super::*;

    #[derive(Debug)]
    struct Repeats;
    impl fmt::Display for Repeats {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "wrong password: mac mismatch")
        }
    }
    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&Inner)
        }
    }
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "mac mismatch")
        }
    }
    impl std::error::Error for Inner {}

    #[test]
    fn a_cause_already_in_its_parent_is_said_once() {
        let err = anyhow::Error::new(Repeats).context("lab.pfx");
        assert_eq!(error_message(&err), "lab.pfx: wrong password: mac mismatch");
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let err = anyhow::anyhow!("disk gone").context("cannot write x.img");
        assert_eq!(error_message(&err), "cannot write x.img: disk gone");
    }

    #[test]
    fn only_a_stdout_broken_pipe_is_quiet() {
        let pipe = anyhow::Error::new(OutputError(io::ErrorKind::BrokenPipe.into()));
        assert!(is_broken_pipe(&pipe.context("listing")));
        let socket = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!is_broken_pipe(&socket));
        let full = anyhow::Error::new(OutputError(io::Error::from_raw_os_error(28)));
        assert!(!is_broken_pipe(&full));
    }
}
