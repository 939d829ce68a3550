//! `nulab`: the command line of the Network Unlock lab, for admins checking a certificate or a
//! capture before they deploy, and for teachers showing what happens on the wire.
//!
//! Each subcommand lives in its own module and only parses arguments, calls a library crate and
//! prints; `--json` gives machine output. Errors name the file (and line) they are about.

mod args;
mod cert;
mod client;
mod demo;
mod doctor;
mod lab;
mod netns;
mod output;
mod packet;
mod packet_input;
mod packet_view;
mod policy;
mod recovery;
mod reply;
mod scenario;
mod server;
mod volume;
mod wireshark;

use std::process::ExitCode;

/// jemalloc rather than the C library's allocator: a boot storm of `nulab scenario run` makes
/// and frees millions of small objects across threads (a tenth of its CPU time went to glibc's
/// `malloc` and `free`, and glibc's arenas added about a sixth to its peak memory; mimalloc
/// was tried and saved less CPU for more memory; issue 17).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Hands the pages jemalloc keeps after frees back to the system now (`arena.<i>.purge`)
/// rather than over its ten-second decay: the scenario runner calls it between a storm's
/// simulation and its views ([`::scenario::run::set_release_freed_memory`]), whose peaks
/// otherwise add up (a 100,000-client storm's peak fell from about 1,060 to 880 MiB with it).
/// Every arena but the calling thread's: the views that follow allocate from that one and
/// would fault its pages in again (the same 879 MiB peak at 100,000 clients, 3,000 fewer page
/// faults at 10,000). True when jemalloc purged them all.
fn purge_freed_memory() -> bool {
    let (Some(arenas), Some(own)) = (
        read_jemalloc_u32(b"arenas.narenas\0"),
        read_jemalloc_u32(b"thread.arena\0"),
    ) else {
        return false;
    };
    let mut purged = true;
    for arena in (0..arenas).filter(|arena| *arena != own) {
        let name = format!("arena.{arena}.purge\0");
        // SAFETY: the name is a NUL-terminated string that outlives the call; the purge
        // command reads and writes no value, so null old and new pointers with a zero length
        // are exactly what mallctl(3) takes for it. jemalloc is this process's allocator
        // (above), so its control interface is initialised by the first allocation, long
        // before this runs.
        #[allow(unsafe_code)]
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        purged &= status == 0;
    }
    purged
}

/// An `unsigned` jemalloc statistic or setting by its NUL-terminated name.
fn read_jemalloc_u32(name: &[u8]) -> Option<u32> {
    if name.last() != Some(&0) {
        return None;
    }
    let mut value: u32 = 0;
    let mut len = std::mem::size_of::<u32>();
    // SAFETY: `name` is NUL-terminated (checked above) and outlives the call; `value` is a
    // live, writable `unsigned` and `len` says its size, which is what mallctl(3) writes for
    // `arenas.narenas` and `thread.arena` (both `unsigned`); jemalloc checks `len` against the
    // value's size and fails rather than write past it. No new value is given (null, 0).
    #[allow(unsafe_code)]
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (status == 0 && len == std::mem::size_of::<u32>()).then_some(value)
}

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nulab",
    version,
    about = "BitLocker Network Unlock lab: certificates, packets, replies, demos",
    long_about = "nulab simulates BitLocker Network Unlock for real: real DHCP packets, real \
                  X.509 certificates, real RSA and AES. These commands check what you are about \
                  to deploy and show what happens on the wire."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate or inspect Network Unlock certificates
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Decode Network Unlock packets from a capture, a hex dump or raw bytes
    #[command(subcommand)]
    Packet(packet::PacketCommand),
    /// Check a subnet policy file (bde-network-unlock.ini) and what it decides
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Seal or open a key protector reply (AES-256-CCM under the session key)
    #[command(subcommand)]
    Reply(reply::ReplyCommand),
    /// Build a BitLocker-style volume image, list its protectors, unlock it
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Make or check a 48-digit recovery password
    #[command(subcommand)]
    RecoveryPassword(volume::RecoveryPasswordCommand),
    /// Decode the real Windows capture, then run one whole unlock exchange with real crypto
    Demo(demo::DemoArgs),
    /// Run, list, bless or sweep scenarios in the deterministic simulator
    #[command(subcommand)]
    Scenario(scenario::ScenarioCommand),
    /// Say why each client did or did not unlock, from captures and the WDS server's files
    Doctor(doctor::DoctorArgs),
    /// Run the Network Unlock provider (WDS) on real interfaces: UDP 67 and 547
    Server(server::ServerArgs),
    /// Boot once against a real network: DHCP, Network Unlock, fallback to the PIN
    Client(client::ClientArgs),
    /// The docker lab: a Docker Compose project generated from a scenario file
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Wireshark: install the Network Unlock dissector
    #[command(subcommand)]
    Wireshark(wireshark::WiresharkCommand),
    /// Recovery-key escrow: the HTTPS recovery service, the client agent, the helpdesk
    #[command(subcommand)]
    Recovery(recovery::RecoveryCommand),
    /// Print a shell completion script, e.g. `nulab completions bash > /etc/bash_completion.d/nulab`
    Completions {
        /// bash, elvish, fish, powershell or zsh
        shell: clap_complete::Shell,
    },
    /// Print nulab's manual page (roff), e.g. `nulab man | man -l -`
    Man,
}

fn main() -> ExitCode {
    output::install_print_panic_hook();
    ::scenario::run::set_release_freed_memory(|| {
        // Only memory is at stake: a purge jemalloc refuses changes nothing else.
        let _ = purge_freed_memory();
    });
    // With `--json` anywhere before `--`, errors are JSON too (on standard output).
    let json = std::env::args_os()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if json && err.use_stderr() => {
            // clap's report without its usage lines, on one line.
            let rendered = err.render().to_string();
            let report = rendered.split("\n\nUsage:").next().unwrap_or_default();
            let report = report.strip_prefix("error: ").unwrap_or(report);
            let report = report.split_whitespace().collect::<Vec<_>>().join(" ");
            return fail(true, &anyhow::anyhow!("{report} (see --help)"), 2);
        }
        Err(err) => {
            // Help and version go to standard output, usage errors to standard error.
            return match err.print() {
                Ok(()) => ExitCode::from(if err.use_stderr() { 2 } else { 0 }),
                Err(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                    ExitCode::from(output::BROKEN_PIPE_STATUS)
                }
                Err(io) => fail(json, &output::OutputError(io).into(), 1),
            };
        }
    };
    let result = run(cli.command).and_then(|code| {
        output::flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(err) if output::is_broken_pipe(&err) => ExitCode::from(output::BROKEN_PIPE_STATUS),
        Err(err) => fail(json, &err, 1),
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Cert(cmd) => cert::run(cmd),
        Command::Packet(cmd) => packet::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Reply(cmd) => reply::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Lab(cmd) => lab::run(cmd),
        Command::Volume(cmd) => volume::run_volume(cmd),
        Command::RecoveryPassword(cmd) => volume::run_recovery_password(cmd),
        Command::Scenario(cmd) => scenario::run(cmd),
        Command::Doctor(args) => doctor::run(args),
        Command::Server(args) => server::run(args),
        Command::Client(args) => client::run(args),
        Command::Wireshark(cmd) => wireshark::run(cmd),
        Command::Recovery(cmd) => recovery::run(cmd),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nulab", &mut script);
            output::write_bytes(&script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            output::write_bytes(&page)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reports `err` once, as `nulab: error: …` on standard error, or with `--json` as
/// [`output::JsonError`] on standard output, and ends with `status`.
fn fail(json: bool, err: &anyhow::Error, status: u8) -> ExitCode {
    let message = output::error_message(err);
    if json {
        let report = output::JsonError {
            error: message,
            exit_code: status,
        };
        if output::json_line(&report)
            .and_then(|()| Ok(output::flush()?))
            .is_ok()
        {
            return ExitCode::from(status);
        }
        output::errln!("nulab: error: {}", report.error);
    } else {
        output::errln!("nulab: error: {message}");
    }
    ExitCode::from(status)
}

/// Reads FILE, or standard input for `-` (kept here for the modules that call it by this path).
pub(crate) use args::read_input;

#[cfg(test)]
mod tests {
    #[test]
    fn jemalloc_says_how_many_arenas_and_which_is_this_threads() {
        let arenas = super::read_jemalloc_u32(b"arenas.narenas\0").expect("narenas");
        let own = super::read_jemalloc_u32(b"thread.arena\0").expect("thread.arena");
        assert!(own < arenas, "{own} of {arenas}");
        assert_eq!(
            super::read_jemalloc_u32(b"arenas.narenas"),
            None,
            "not NUL-terminated"
        );
        assert_eq!(super::read_jemalloc_u32(b"no.such.name\0"), None);
    }

    #[test]
    fn jemalloc_takes_the_purge_of_the_other_arenas() {
        // Freed pages for the purge to hand back.
        let freed = vec![7u8; 8 << 20];
        drop(std::hint::black_box(freed));
        assert!(super::purge_freed_memory());
    }
}
