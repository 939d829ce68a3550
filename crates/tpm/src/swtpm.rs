//! How nulab starts swtpm, the software TPM 2.0 that stands in for a machine's TPM in tests,
//! in the real-kernel lab and in a teacher's demo: one command line, used by every place that
//! starts one (`kernel-lab`'s clients, the behavioural suite, `nulab`'s real-TPM test), and the
//! TCTI string [`crate::RealTpm`] reaches it by. Pure: it builds arguments, it starts nothing.
//!
//! swtpm listens on two TCP ports of one address: the TPM's command port and, one above it,
//! its control channel (power cycles). It serves one connection at a time, so a process that
//! probes whether it is up probes the control port.

use std::path::Path;

/// The command port nulab gives swtpm where nothing else listens (a namespace's own loopback):
/// the port tpm2-tools and the TSS expect by default.
pub const DEFAULT_PORT: u16 = 2321;

/// `swtpm ARGS`: a TPM 2.0 on `127.0.0.1:port` (control channel on `port + 1`), its state
/// (seeds, NV, the dictionary-attack counter) kept in `state_dir`, started and ready for
/// commands (`startup-clear`) so that no platform has to send TPM2_Startup first.
pub fn socket_args(port: u16, state_dir: &Path) -> Vec<String> {
    vec![
        "socket".into(),
        "--tpm2".into(),
        "--server".into(),
        format!("type=tcp,port={port},bindaddr=127.0.0.1"),
        "--ctrl".into(),
        format!("type=tcp,port={},bindaddr=127.0.0.1", control_port(port)),
        "--tpmstate".into(),
        format!("dir={}", state_dir.display()),
        "--flags".into(),
        "not-need-init,startup-clear".into(),
    ]
}

/// The control channel's port for a command port.
pub fn control_port(port: u16) -> u16 {
    port.wrapping_add(1)
}

/// The TCTI string for the swtpm of [`socket_args`] (`swtpm:host=127.0.0.1,port=PORT`).
pub fn tcti(port: u16) -> String {
    format!("swtpm:host=127.0.0.1,port={port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_both_ports_and_the_state() {
        let args = socket_args(4000, Path::new("/tmp/tpm"));
        let line = args.join(" ");
        assert!(line.starts_with("socket --tpm2"), "{line}");
        assert!(
            line.contains("type=tcp,port=4000,bindaddr=127.0.0.1"),
            "{line}"
        );
        assert!(
            line.contains("type=tcp,port=4001,bindaddr=127.0.0.1"),
            "{line}"
        );
        assert!(line.contains("dir=/tmp/tpm"), "{line}");
        assert_eq!(tcti(4000), "swtpm:host=127.0.0.1,port=4000");
    }
}
