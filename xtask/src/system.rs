//! The system tools the tests use, and their installation on a fresh Debian machine.
//!
//! Tests that need a tool check for it themselves and, under `CI=true`, fail when it is missing;
//! this module makes sure a fresh CI machine has them. One table, so that adding a tool for a
//! new test is one line.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// What a test needs, and how to see that it is there.
enum Check {
    /// A command on PATH.
    Command(&'static str),
    /// A file (a header of a -dev package, for example).
    File(&'static str),
}

/// (what must be present, the Debian package that provides it)
const TOOLS: &[(Check, &str)] = &[
    (Check::Command("openssl"), "openssl"),
    (Check::Command("tshark"), "tshark"),
    // The real-TPM feature (tss-esapi, built by `--all-features`) links against libtss2.
    (Check::File("/usr/include/tss2/tss2_esys.h"), "libtss2-dev"),
    (Check::Command("pkg-config"), "pkg-config"),
    // The real-TPM tests start swtpm (swtpm_setup comes with swtpm-tools).
    (Check::Command("swtpm"), "swtpm"),
    (Check::Command("swtpm_setup"), "swtpm-tools"),
    // The real-socket DHCP tests: network namespaces, dnsmasq as the separate DHCP server,
    // busybox udhcpc as a client of nulab's server.
    (Check::Command("ip"), "iproute2"),
    (Check::Command("dnsmasq"), "dnsmasq-base"),
    (Check::Command("udhcpc"), "udhcpc"),
    // ISC Kea as a real kernel's DHCP server (kernel-lab's relay-kea parity case).
    (Check::Command("kea-dhcp4"), "kea-dhcp4-server"),
    // The real-kernel backend (kernel-lab, the netns_parity test): a pcap per segment, and
    // loss as an nftables bridge rule.
    (Check::Command("tcpdump"), "tcpdump"),
    (Check::Command("nft"), "nftables"),
    // The docker lab (docker/ci.sh): the daemon, compose v1, and the base image's debootstrap.
    (Check::Command("dockerd"), "docker.io"),
    (Check::Command("docker-compose"), "docker-compose"),
    (Check::Command("debootstrap"), "debootstrap"),
    // The scenario CLI test validates its JUnit report against fixtures/junit/junit.xsd.
    (Check::Command("xmllint"), "libxml2-utils"),
    // The scenario report test loads each report in headless Chromium.
    (Check::Command("chromium"), "chromium"),
];

pub fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(check, _)| !present(check))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask: missing system tools ({}); install them with apt-get or run as root. \
             Tests that need them skip locally and fail under CI=true.",
            missing.join(", ")
        );
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    apt(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not start apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn present(check: &Check) -> bool {
    match check {
        Check::Command(cmd) => on_path(cmd),
        Check::File(path) => std::path::Path::new(path).is_file(),
    }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0"))
}
