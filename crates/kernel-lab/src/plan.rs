//! What a scenario needs from the machine before a real-kernel run creates anything: the parts
//! of the file that only the simulator has (refused, with why), and the tools, each with the
//! Debian package that provides it.

use scenario::Loaded;
use scenario::model::FirmwareSpec;

/// Clients a real-kernel run boots at most: each is a namespace and a process.
pub const MAX_CLIENTS: u32 = 16;

/// Why a `tpm = "swtpm"` client cannot run in this build.
pub const SWTPM_NEEDS_FEATURE: &str = "a client with tpm = \"swtpm\" needs nulab built with \
    the `real-tpm` feature (cargo build -p nulab --features real-tpm; libtss2-dev)";

/// Why `loaded` cannot run on real kernels; empty when it can.
pub fn refusals(loaded: &Loaded) -> Vec<String> {
    let s = &loaded.scenario;
    let mut why = Vec::new();
    let clients: u32 = s.clients.iter().map(|c| c.count).sum();
    if clients > MAX_CLIENTS {
        why.push(format!(
            "{clients} clients: a real-kernel run boots at most {MAX_CLIENTS} (one namespace \
             and one process each); the simulator runs storms"
        ));
    }
    if s.recovery.is_some()
        || !s.management_points.is_empty()
        || !s.helpdesk.is_empty()
        || !s.escrow_expectations.is_empty()
        || s.expect_database.is_some()
    {
        why.push("the recovery-escrow lab runs in the simulator only".into());
    }
    for c in &s.clients {
        let name = c.name.get_ref();
        if c.firmware != FirmwareSpec::default() {
            why.push(format!(
                "client {name}: firmware `{}` is simulated only (nulab client boots as UEFI)",
                c.firmware
            ));
        }
        if c.trigger == scenario::model::TriggerSpec::WakeOnLan {
            why.push(format!(
                "client {name}: Wake on LAN is simulated only (nulab client boots at once)"
            ));
        }
        if c.tpm == scenario::model::ClientTpm::Swtpm {
            if !cfg!(feature = "real-tpm") {
                why.push(format!("client {name}: {SWTPM_NEEDS_FEATURE}"));
            }
            if c.count > 1 {
                why.push(format!(
                    "client {name}: one swtpm per machine; a group of {} is simulated only",
                    c.count
                ));
            }
        }
        // The console script is `nulab client --console`; "correct" is the recovery password
        // of the simulated TPM's history, which a swtpm client does not share.
        if c.tpm == scenario::model::ClientTpm::Swtpm
            && c.console.iter().any(|i| i.recovery_password.is_some())
        {
            why.push(format!(
                "client {name}: a recovery password typed on a swtpm client is simulated only"
            ));
        }
    }
    for w in &s.wds {
        let name = w.name.get_ref();
        if w.decrypt_time.is_some() || w.cores.is_some() {
            why.push(format!(
                "wds {name}: a modelled processor (decrypt_time, cores) is simulated only; a \
                 real run uses the machine's cores"
            ));
        }
        if !w.debug_log {
            why.push(format!(
                "wds {name}: a WDS debug log left off (debug_log = false, the default) is \
                 simulated only: nulab server always logs, so say `debug_log = true`"
            ));
        }
        if w.same_server_as.is_some() {
            why.push(format!(
                "wds {name}: a WDS server on the DHCP server's machine is simulated only"
            ));
        }
        if !w.registered || !w.feature_installed {
            why.push(format!(
                "wds {name}: an unregistered provider or a missing feature is simulated only \
                 (nulab server always runs the provider)"
            ));
        }
    }
    for e in &s.events {
        let action = e.action.get_ref().as_str();
        let is_wds = s.wds.iter().any(|w| w.name.get_ref() == e.host.get_ref());
        let real = matches!(
            action,
            "stop-wds" | "start-wds" | "crash" | "restart" | "remove-certificate-store"
        );
        if !(is_wds && real) {
            why.push(format!(
                "event `{action}` on {}: only stop-wds, start-wds, crash, restart and \
                 remove-certificate-store of a WDS server are real-kernel events",
                e.host.get_ref()
            ));
        }
    }
    for f in &s.faults {
        // Partitions, link faults and a silent DHCP server are bridge rules and port links
        // (`crate::faults`); loss and netem apply to a whole segment.
        let on_segment = f.segment.is_some()
            && f.host.is_none()
            && f.sender.is_none()
            && f.receiver.is_none()
            && f.adapter.is_none();
        // A late DHCP server is nulab-dhcp-server's `--reply-delay`, for the whole run.
        let late = f.dhcp_server.as_ref().filter(|_| !f.silent);
        let whole_run = f.from.is_none_or(|t| t.is_zero()) && f.to.is_none_or(|t| t >= s.duration);
        let nulab_dhcp = |name: &str| {
            s.dhcp_servers.iter().any(|d| {
                d.name.get_ref() == name && d.software == scenario::model::DhcpSoftware::Nulab
            })
        };
        if let Some(server) = late.filter(|d| !whole_run || !nulab_dhcp(d.get_ref())) {
            why.push(format!(
                "DHCP server {}: answering late (`delay`) is real for nulab-dhcp-server over the \
                 whole run only (no window, no third-party server)",
                server.get_ref()
            ));
        } else if !(on_segment
            || f.partition.is_some()
            || f.link.is_some()
            || f.dhcp_server.is_some())
        {
            why.push(
                "loss, latency, jitter, duplication and corruption scoped to a host, sender, \
                 receiver or adapter are simulated only so far (real kernels apply them to a \
                 whole segment)"
                    .into(),
            );
        }
    }
    why.dedup();
    why
}

/// (command, Debian package) of every tool the run of `loaded` needs that is not on PATH.
pub fn missing_tools(loaded: &Loaded) -> Vec<String> {
    let s = &loaded.scenario;
    let mut needed = vec![("ip", "iproute2"), ("tcpdump", "tcpdump")];
    if s.faults
        .iter()
        .any(|f| f.loss.is_some() || f.partition.is_some() || (f.dhcp_server.is_some() && f.silent))
    {
        needed.push(("nft", "nftables"));
    }
    if s.faults
        .iter()
        .any(|f| f.latency.is_some() || f.duplicate.is_some() || f.corrupt.is_some())
        || s.segments.iter().any(|seg| seg.latency.is_some())
    {
        needed.push(("tc", "iproute2"));
    }
    if s.routers
        .iter()
        .any(|r| r.interfaces.iter().any(|i| !i.relay_to.is_empty()))
        || s.dhcp_servers
            .iter()
            .any(|d| d.software == scenario::model::DhcpSoftware::Dnsmasq)
    {
        needed.push(("dnsmasq", "dnsmasq-base"));
    }
    if s.dhcp_servers
        .iter()
        .any(|d| d.software == scenario::model::DhcpSoftware::Kea)
    {
        needed.push(("kea-dhcp4", "kea-dhcp4-server"));
    }
    if s.clients
        .iter()
        .any(|c| c.tpm == scenario::model::ClientTpm::Swtpm)
    {
        needed.push(("swtpm", "swtpm"));
    }
    needed
        .into_iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(tool, package)| format!("{tool} (Debian package {package})"))
        .collect()
}

pub(crate) fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        scenario::model::parse(std::path::Path::new("t.toml"), text.to_owned())
            .expect("a valid scenario")
    }

    const BASE: &str = r#"
title = "t"
teaches = "t"
expect_nothing = true
[[certificate]]
name = "c"
seed = 1
[[segment]]
name = "corp"
subnet = "10.0.0.0/16"
[[dhcp_server]]
name = "dhcp"
segment = "corp"
address = "10.0.4.2/24"
[[wds]]
name = "wds"
segment = "corp"
address = "10.0.4.10/24"
debug_log = true
"#;

    #[test]
    fn a_small_lan_is_accepted() {
        let loaded = parse(&format!(
            "{BASE}[[client]]\nname = \"pc1\"\n[[client.adapter]]\nsegment = \"corp\"\n"
        ));
        assert_eq!(refusals(&loaded), Vec::<String>::new());
    }

    #[test]
    fn a_wds_debug_log_left_off_is_refused_with_why() {
        let client = "[[client]]\nname = \"pc1\"\n[[client.adapter]]\nsegment = \"corp\"\n";
        let off = BASE.replace("debug_log = true\n", "");
        let why = refusals(&parse(&format!("{off}{client}")));
        assert!(
            why.iter()
                .any(|w| w.contains("wds wds") && w.contains("debug_log = true")),
            "{why:?}"
        );
    }

    #[test]
    fn every_case_of_the_ci_parity_list_passes_planning() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cases = include_str!("../parity-cases.txt")
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.strip_prefix("real-tpm:").unwrap_or(line).trim());
        let mut checked = 0;
        for case in cases {
            let path = match case.contains('/') {
                true => root.join(case),
                false => root.join("scenarios").join(format!("{case}.toml")),
            };
            let text = std::fs::read_to_string(&path).expect("a parity case's file");
            let loaded = scenario::model::parse(&path, text).expect("a valid scenario");
            // A swtpm case needs nulab built with `real-tpm`, which this test build may lack.
            let why: Vec<String> = refusals(&loaded)
                .into_iter()
                .filter(|why| !why.contains("the `real-tpm` feature"))
                .collect();
            assert_eq!(why, Vec::<String>::new(), "{case}");
            checked += 1;
        }
        assert!(checked > 40, "{checked} cases");
    }

    #[test]
    fn a_storm_and_simulated_only_parts_are_refused_with_why() {
        let loaded = parse(&format!(
            "{BASE}[[dhcp_server.pool]]\nsubnet = \"10.0.0.0/16\"\nfirst = \"10.0.16.1\"\n\
             last = \"10.0.255.254\"\n[[client]]\nname = \"pc\"\ncount = 10000\n\
             firmware = \"bios\"\n[[client.adapter]]\nsegment = \"corp\"\n"
        ));
        let why = refusals(&loaded);
        assert!(why.iter().any(|w| w.contains("10000 clients")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("firmware")), "{why:?}");
    }

    #[test]
    fn partitions_link_faults_and_a_silent_or_late_dhcp_server_run() {
        let client = "[[client]]\nname = \"pc1\"\n[[client.adapter]]\nsegment = \"corp\"\n";
        for fault in [
            "partition = [\"wds\", \"pc1\"]\none_way = true\n",
            "adapter = \"pc1/eth0\"\nlink = \"down\"\nto = \"40s\"\n",
            "dhcp_server = \"dhcp\"\nsilent = true\n",
        ] {
            let loaded = parse(&format!("{BASE}{client}[[fault]]\n{fault}"));
            assert_eq!(refusals(&loaded), Vec::<String>::new(), "{fault}");
        }
        let late = parse(&format!(
            "{BASE}{client}[[fault]]\ndhcp_server = \"dhcp\"\ndelay = \"5s\"\n"
        ));
        assert_eq!(refusals(&late), Vec::<String>::new());
        let late_for_a_while = parse(&format!(
            "{BASE}{client}[[fault]]\ndhcp_server = \"dhcp\"\ndelay = \"5s\"\nto = \"3s\"\n"
        ));
        assert!(
            refusals(&late_for_a_while)
                .iter()
                .any(|w| w.contains("late"))
        );
        let per_host = parse(&format!(
            "{BASE}{client}[[fault]]\nhost = \"wds\"\nloss = \"30%\"\n"
        ));
        assert!(
            refusals(&per_host)
                .iter()
                .any(|w| w.contains("scoped to a host"))
        );
    }

    #[test]
    fn removing_the_certificate_store_is_a_real_event_and_unregistering_is_not() {
        let client = "[[client]]\nname = \"pc1\"\n[[client.adapter]]\nsegment = \"corp\"\n";
        let event = |action: &str| {
            parse(&format!(
                "{BASE}{client}[[event]]\nat = \"5s\"\nhost = \"wds\"\naction = \"{action}\"\n"
            ))
        };
        assert_eq!(
            refusals(&event("remove-certificate-store")),
            Vec::<String>::new()
        );
        assert!(
            refusals(&event("unregister-provider"))
                .iter()
                .any(|w| w.contains("unregister-provider"))
        );
    }
}
