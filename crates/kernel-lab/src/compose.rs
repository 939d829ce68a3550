//! The docker lab (`nulab lab compose FILE --out DIR`): a Docker Compose project generated from
//! a scenario file, so that the lab is described once. One image (`Dockerfile`, `FROM` the
//! `BASE` build argument, `debian:bookworm-slim` by default) holds nulab's programs, dnsmasq,
//! iproute2 and tcpdump, tagged `nulab-lab:ID`; each segment is a bridge network
//! (`nlID-SEGMENT` on the host, Docker's own addresses kept to `.224/28` and its gateway at
//! `.254`, below and above the DHCP pool). ID is the lab's run id ([`ComposeOptions::lab_id`]):
//! two labs generated apart get their own bridges, image and (with `-p nulab-ID`) project.
//! Docker still refuses two networks on one subnet, so two labs from the same scenario file
//! cannot run at once;
//! each DHCP server, WDS server, router and client is a service running a script from `lab/`
//! that prints its phase and runs the program: `nulab-dhcp-server`, `nulab server` with the
//! scenario's `.pfx` and INI, dnsmasq relaying per router interface, `nulab client` booting the
//! machine the simulator's world prepares; the recovery service (`nulab recovery serve`) with
//! an HTTPS and an HTTP management point, each client enrolled; a client that unlocks then
//! escrows its recovery password, key package and TPM owner-auth hash to it (`nulab recovery
//! escrow`, HTTPS first, as the BitLocker management agent does once Windows runs). A capture
//! sidecar (host network) writes a pcap per segment to `captures/`; logs (WDS, BitLocker,
//! escrow) land in `logs/`. The file works with compose v1 (`docker-compose -p NAME up`, no
//! top-level `name:`) and v2.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use scenario::Loaded;

use crate::LabError;

/// What `compose` needs besides the scenario.
#[derive(Debug, Clone)]
pub struct ComposeOptions {
    /// The project folder (created).
    pub out: PathBuf,
    /// The `nulab` and `nulab-dhcp-server` executables copied into the image.
    pub nulab: PathBuf,
    pub dhcp_server: PathBuf,
    pub seed: Option<u64>,
    /// The lab's run id (a few lowercase letters and digits): it names the host bridges
    /// (`nlID-SEGMENT`) and the image (`nulab-lab:ID`), so that labs do not share them.
    pub lab_id: String,
}

/// The longest run id: a bridge name (`nlID-SEGMENT`) has at most 15 characters.
pub const MAX_LAB_ID: usize = 6;

/// Whether `id` can be a lab's run id: 1 to [`MAX_LAB_ID`] lowercase ASCII letters and digits.
pub fn valid_lab_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LAB_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

const PFX_PASSWORD: &str = "nulab-lab";

/// Why `loaded` cannot become a docker lab (besides [`crate::refusals`]).
pub fn compose_refusals(loaded: &Loaded) -> Vec<String> {
    let s = &loaded.scenario;
    let mut why = crate::refusals(loaded);
    if !s.faults.is_empty() || !s.events.is_empty() {
        why.push("the docker lab applies no faults and no events (use --backend netns)".into());
    }
    for c in &s.clients {
        if c.adapters.len() != 1 {
            why.push(format!(
                "client {}: a container client has one adapter",
                c.name.get_ref()
            ));
        }
        if c.tpm == scenario::model::ClientTpm::Swtpm {
            why.push(format!(
                "client {}: swtpm clients run with --backend netns only",
                c.name.get_ref()
            ));
        }
    }
    for d in &s.dhcp_servers {
        if d.software != scenario::model::DhcpSoftware::Nulab {
            why.push(format!(
                "dhcp_server {}: the docker lab runs nulab-dhcp-server",
                d.name.get_ref()
            ));
        }
    }
    why.dedup();
    why
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

fn write(path: &Path, text: impl AsRef<[u8]>) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(io(format!("{}", path.display())))
}

fn script(path: &Path, body: &str) -> Result<(), LabError> {
    write(path, format!("#!/bin/sh\n{body}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("{}", path.display())))
}

/// The segment's Docker network: Docker's own addresses in `.224/28`, its gateway `.254`.
/// A segment smaller than a /24 has no `.224/28` or `.254` of its own: refused, with why.
fn docker_ranges(subnet: &Ipv4Net) -> Result<(String, String), LabError> {
    if subnet.prefix_len() > 24 {
        return Err(LabError::Scenario(format!(
            "segment subnet {subnet}: the docker lab needs a /24 or larger (Docker's own \
             addresses take .224/28 and its gateway .254)"
        )));
    }
    let base = u32::from(subnet.network());
    // A /24 or larger network address has its last octet zero, so these cannot overflow.
    let at = |host: u32| std::net::Ipv4Addr::from(base | host);
    Ok((format!("{}/28", at(224)), at(254).to_string()))
}

/// The host bridge of segment number `index` (`nlID-SEGMENT`, at most 15 characters; the
/// segment's number instead of its name when two names would be cut to the same one).
fn bridge_name(lab_id: &str, segments: &[&str], index: usize) -> String {
    let cut = |name: &str| -> String { format!("nl{lab_id}-{name}").chars().take(15).collect() };
    let mine = cut(segments.get(index).copied().unwrap_or_default());
    let clash = segments
        .iter()
        .enumerate()
        .any(|(i, other)| i != index && cut(other) == mine);
    if clash {
        format!("nl{lab_id}-s{index}")
    } else {
        mine
    }
}

fn address_of(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Where the recovery service runs: the first WDS server's segment, at a host address of its
/// subnet that nothing else may hold: not a host's static address (DHCP and WDS servers,
/// routers, clients), not inside a DHCP pool (a scenario's own, or the default `.100` to
/// `.199`), not Docker's (`.224/28` and the gateway `.254`, see [`docker_ranges`]). The first
/// such address from host number 20, else the first below it; an error when none is free.
/// `None` without a WDS server.
fn recovery_address(s: &scenario::model::Scenario) -> Result<Option<(String, String)>, LabError> {
    let Some(wds) = s.wds.first() else {
        return Ok(None);
    };
    let segment = wds.segment.get_ref();
    let subnet: Ipv4Net = s
        .segments
        .iter()
        .find(|seg| seg.name.get_ref() == segment)
        .and_then(|seg| seg.subnet.get_ref().parse().ok())
        .ok_or_else(|| LabError::Scenario(format!("no segment {segment}")))?;
    let parse = |text: &str| address_of(text).parse::<Ipv4Addr>().ok().map(u32::from);
    let taken: Vec<u32> = s
        .dhcp_servers
        .iter()
        .map(|d| d.address.get_ref())
        .chain(s.wds.iter().map(|w| w.address.get_ref()))
        .chain(
            s.routers
                .iter()
                .flat_map(|r| &r.interfaces)
                .map(|i| i.address.get_ref()),
        )
        .chain(
            s.clients
                .iter()
                .flat_map(|c| &c.adapters)
                .filter_map(|a| a.address.as_ref().map(|address| address.get_ref())),
        )
        .filter_map(|text| parse(text))
        .collect();
    let base = u32::from(subnet.network());
    let offset = |n: u32| base.checked_add(n);
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for d in &s.dhcp_servers {
        if d.pools.is_empty()
            && let (Some(first), Some(last)) = (offset(100), offset(199))
        {
            ranges.push((first, last));
        }
        for pool in &d.pools {
            if let (Some(first), Some(last)) =
                (parse(pool.first.get_ref()), parse(pool.last.get_ref()))
            {
                ranges.push((first.min(last), first.max(last)));
            }
        }
    }
    // Docker's own: the network's ip_range and its gateway.
    if let (Some(first), Some(last)) = (offset(224), offset(239)) {
        ranges.push((first, last));
    }
    if let Some(gateway) = offset(254) {
        ranges.push((gateway, gateway));
    }
    let free = |a: &Ipv4Addr| {
        let a = u32::from(*a);
        !taken.contains(&a)
            && !ranges
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&a))
    };
    let from_20 = offset(20).unwrap_or(u32::MAX);
    let address = subnet
        .hosts()
        .filter(|a| u32::from(*a) >= from_20)
        .chain(subnet.hosts().filter(|a| u32::from(*a) < from_20))
        .find(free)
        .ok_or_else(|| {
            LabError::Scenario(format!(
                "no free address on {segment} ({subnet}) for the recovery service: every host \
                 address is a host's, in a DHCP pool or Docker's"
            ))
        })?;
    Ok(Some((segment.clone(), address.to_string())))
}

/// The recovery password of a prepared machine, read as the unlocked OS would: the volume
/// opened with its TPM (and PIN) on a copy of its TPM, so the machine itself is untouched.
/// `None` when it has no recovery password or the TPM does not release its key (a PCR change).
fn recovery_password_of(
    machine: &scenario::world::PreparedMachine,
    pin: &str,
) -> Option<volume::RecoveryPassword> {
    use volume::{ProtectorKind, UnlockWith};
    let mut tpm = tpm::SimulatedTpm::from_json(&machine.tpm.to_json()).ok()?;
    let volume = &machine.volume;
    let with = if volume.protector_of(ProtectorKind::Tpm).is_some() {
        UnlockWith::Tpm
    } else {
        UnlockWith::TpmAndPin(pin)
    };
    let keys = volume.unlock(&with, &mut tpm, Duration::ZERO).ok()?;
    let id = volume.protector_of(ProtectorKind::RecoveryPassword)?.id;
    volume.recovery_password(&keys, id).ok()
}

/// Writes the compose project for `loaded` into `options.out`; returns the files written.
pub fn compose(loaded: &Loaded, options: &ComposeOptions) -> Result<Vec<PathBuf>, LabError> {
    let mut why = compose_refusals(loaded);
    if !valid_lab_id(&options.lab_id) {
        why.push(format!(
            "lab id `{}`: 1 to {MAX_LAB_ID} lowercase letters and digits",
            options.lab_id
        ));
    }
    if !why.is_empty() {
        return Err(LabError::Refused(why));
    }
    let lab_id = options.lab_id.as_str();
    let segment_names: Vec<&str> = loaded
        .scenario
        .segments
        .iter()
        .map(|seg| seg.name.get_ref().as_str())
        .collect();
    let s = &loaded.scenario;
    let seed = options.seed.unwrap_or(s.seed);
    let out = &options.out;
    let lab = out.join("lab");
    let bin = out.join("bin");
    for dir in [out, &lab, &bin, &out.join("logs"), &out.join("captures")] {
        std::fs::create_dir_all(dir).map_err(io(format!("{}", dir.display())))?;
    }
    let mut written = Vec::new();
    for (from, name) in [
        (&options.nulab, "nulab"),
        (&options.dhcp_server, "nulab-dhcp-server"),
    ] {
        let to = bin.join(name);
        std::fs::copy(from, &to).map_err(io(format!("cannot copy {}", from.display())))?;
        written.push(to);
    }
    let world =
        scenario::world::build(loaded, seed).map_err(|e| LabError::Scenario(e.to_string()))?;
    let machines = scenario::world::prepared_machines(loaded, seed, &world.certificates)
        .map_err(|e| LabError::Scenario(e.to_string()))?;

    let mut gateways = std::collections::BTreeMap::new();
    for router in &s.routers {
        for interface in &router.interfaces {
            gateways.insert(
                interface.segment.get_ref().clone(),
                address_of(interface.address.get_ref()).to_owned(),
            );
        }
    }
    // Routes a server needs to the subnets behind routers (its replies go to giaddr).
    let routes_from = |segment: &str| -> String {
        let mut text = String::new();
        if let Some(gateway) = gateways.get(segment) {
            for seg in &s.segments {
                if seg.name.get_ref() != segment {
                    let _ = writeln!(
                        text,
                        "ip route add {} via {gateway} 2>/dev/null || true",
                        seg.subnet.get_ref()
                    );
                }
            }
        }
        text
    };

    let mut yaml = format!(
        "# Generated by `nulab lab compose` from the scenario file: edit that, not this.\nversion: \"2.4\"\n\nx-nulab: &nulab\n  build:\n    context: .\n    args:\n      BASE: ${{NULAB_BASE_IMAGE:-debian:bookworm-slim}}\n  image: nulab-lab:{lab_id}\n  cap_add: [NET_ADMIN, NET_RAW]\n  volumes:\n    - ./lab:/lab:ro\n    - ./logs:/out\n\nnetworks:\n",
    );
    for (index, seg) in s.segments.iter().enumerate() {
        let subnet: Ipv4Net =
            seg.subnet.get_ref().parse().map_err(|_| {
                LabError::Scenario(format!("segment subnet {}", seg.subnet.get_ref()))
            })?;
        let (range, gateway) = docker_ranges(&subnet)?;
        let _ = write!(
            yaml,
            "  {name}:\n    driver: bridge\n    driver_opts:\n      com.docker.network.bridge.name: {bridge}\n    ipam:\n      config:\n        - subnet: {subnet}\n          ip_range: {range}\n          gateway: {gateway}\n",
            name = seg.name.get_ref(),
            bridge = bridge_name(lab_id, &segment_names, index),
        );
    }
    yaml.push_str("\nservices:\n");

    for (d, spec) in s.dhcp_servers.iter().enumerate() {
        let name = spec.name.get_ref();
        let mut pools = String::new();
        for seg in &s.segments {
            let Ok(subnet) = seg.subnet.get_ref().parse::<Ipv4Net>() else {
                continue;
            };
            let base = u32::from(subnet.network());
            let _ = write!(
                pools,
                " --pool {subnet},{},{}",
                std::net::Ipv4Addr::from(base + 100),
                std::net::Ipv4Addr::from(base + 199)
            );
            if let Some(gateway) = gateways.get(seg.name.get_ref()) {
                let _ = write!(pools, ",{gateway}");
            }
        }
        script(
            &lab.join(format!("dhcp{d}.sh")),
            &format!(
                "{routes}echo \"phase: DHCP server {name} (nulab-dhcp-server) at {address}\"\nexec nulab-dhcp-server --interface eth0={address}{pools} --for 1h\n",
                routes = routes_from(spec.segment.get_ref()),
                address = spec.address.get_ref(),
            ),
        )?;
        let _ = write!(
            yaml,
            "  {name}:\n    <<: *nulab\n    command: [\"/lab/dhcp{d}.sh\"]\n    networks:\n      {segment}:\n        ipv4_address: {address}\n",
            segment = spec.segment.get_ref(),
            address = address_of(spec.address.get_ref()),
        );
    }
    for (w, spec) in s.wds.iter().enumerate() {
        let name = spec.name.get_ref();
        let dir = lab.join(format!("wds{w}"));
        std::fs::create_dir_all(&dir).map_err(io(format!("{}", dir.display())))?;
        let mut args = String::new();
        for cert in &world.certificates {
            if let Some(names) = &spec.certificates
                && !names.iter().any(|n| n.get_ref() == &cert.name)
            {
                continue;
            }
            let path = dir.join(format!("{}.pfx", cert.name));
            certificates::files::save_pfx(&path, &cert.bundle, PFX_PASSWORD)
                .map_err(|e| LabError::Start(format!("{}: {e}", path.display())))?;
            let _ = write!(args, " --cert /lab/wds{w}/{}.pfx", cert.name);
        }
        let policy = match (&spec.policy, &spec.policy_file) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(file)) => Some(loaded.read_relative(file).map_err(LabError::Scenario)?),
            (None, None) => None,
        };
        if let Some(policy) = policy {
            write(&dir.join("bde-network-unlock.ini"), policy)?;
            let _ = write!(args, " --policy /lab/wds{w}/bde-network-unlock.ini");
        }
        let run = if spec.running {
            format!(
                "exec nulab server --interface eth0{args} --password {PFX_PASSWORD} --no-ipv6 --log /out/wds-{name}.log\n"
            )
        } else {
            "echo \"phase: the WDS service is stopped\"\nexec sleep 3600\n".to_owned()
        };
        script(
            &lab.join(format!("wds{w}.sh")),
            &format!(
                "{routes}echo \"phase: WDS server {name} (nulab server) at {address}\"\n{run}",
                routes = routes_from(spec.segment.get_ref()),
                address = spec.address.get_ref(),
            ),
        )?;
        let _ = write!(
            yaml,
            "  {name}:\n    <<: *nulab\n    command: [\"/lab/wds{w}.sh\"]\n    networks:\n      {segment}:\n        ipv4_address: {address}\n",
            segment = spec.segment.get_ref(),
            address = address_of(spec.address.get_ref()),
        );
    }
    for (r, router) in s.routers.iter().enumerate() {
        let name = router.name.get_ref();
        let mut relays = String::new();
        for interface in &router.interfaces {
            for helper in &interface.relay_to {
                let _ = write!(
                    relays,
                    " --dhcp-relay={},{}",
                    address_of(interface.address.get_ref()),
                    helper.get_ref()
                );
            }
        }
        script(
            &lab.join(format!("router{r}.sh")),
            &format!(
                "echo \"phase: router {name}: IPv4 forwarding, DHCP relay{relays}\"\nexec dnsmasq --conf-file=/dev/null --port=0 --no-daemon --pid-file= --user=root --group=root --log-dhcp --log-facility=-{relays}\n"
            ),
        )?;
        let _ = write!(
            yaml,
            "  {name}:\n    <<: *nulab\n    command: [\"/lab/router{r}.sh\"]\n    sysctls:\n      net.ipv4.ip_forward: \"1\"\n    networks:\n"
        );
        for interface in &router.interfaces {
            let _ = writeln!(
                yaml,
                "      {}:\n        ipv4_address: {}",
                interface.segment.get_ref(),
                address_of(interface.address.get_ref())
            );
        }
    }
    let recovery = recovery_address(s)?;
    let servers: Vec<&str> = s
        .dhcp_servers
        .iter()
        .map(|d| d.name.get_ref().as_str())
        .chain(s.wds.iter().map(|w| w.name.get_ref().as_str()))
        .chain(s.routers.iter().map(|r| r.name.get_ref().as_str()))
        .chain(recovery.as_ref().map(|_| "recovery"))
        .collect();
    let mut enrolled = Vec::new();
    for machine in machines {
        let spec = &s.clients[machine.group_index];
        let name = &machine.name;
        let image = lab.join(format!("{name}.img"));
        machine
            .volume
            .save(&image)
            .map_err(|e| LabError::Start(format!("{}: {e}", image.display())))?;
        write(
            &lab.join(format!("{name}.img.tpm.json")),
            machine.tpm.to_json(),
        )?;
        let mut args = String::new();
        if let Some((input, pin)) = spec
            .console
            .first()
            .and_then(|input| input.pin.as_ref().map(|pin| (input, pin)))
        {
            let (pin_after, _) = crate::client_time_args(input.after, s.duration);
            let _ = write!(args, " --pin {pin} {}", pin_after.join(" "));
        }
        if !spec.order.is_empty() {
            let order: Vec<&str> = spec.order.iter().map(|o| o.get_ref().as_str()).collect();
            let _ = write!(args, " --order {}", order.join(","));
        }
        let segment = spec
            .adapters
            .first()
            .map(|a| a.segment.get_ref().as_str())
            .unwrap_or_default();
        // Once Windows runs (the volume unlocked), its BitLocker management agent escrows.
        let escrow = match (&recovery, recovery_password_of(&machine, &spec.pin)) {
            (Some((_, address)), Some(password)) => {
                enrolled.push(name.clone());
                format!(
                    "if grep -q '\"state\": \"unlocked\"' /out/outcome-{name}.json 2>/dev/null; then\n\
                     [ -z \"$windows\" ] || ip address replace \"$windows\" dev eth0\n\
                     {routes}\
                     i=0\n\
                     until [ -s /out/recovery-ca.pem ] && [ -s /out/enrol-{name}.json ]; do i=$((i + 1)); [ $i -le 120 ] || break; sleep 0.5; done\n\
                     token=$(sed -n 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/p' /out/enrol-{name}.json)\n\
                     echo \"phase: Windows runs on {name}: its BitLocker management agent escrows the recovery password (https://{address}/ first, then http://{address}/)\"\n\
                     cp /lab/{name}.img /tmp/disk.img\n\
                     nulab recovery escrow /tmp/disk.img --device {name} --mp https://{address}/ --mp http://{address}/ --ca /out/recovery-ca.pem --token \"$token\" --tpm-state /tmp/tpm.json --password {password} --log /out/escrow-{name}.log --json > /out/escrow-{name}.json\n\
                     echo \"phase: {name}: escrow $(grep -o '\"escrowed\":[a-z]*' /out/escrow-{name}.json)\"\n\
                     fi\n",
                    routes = routes_from(segment),
                )
            }
            _ => String::new(),
        };
        script(
            &lab.join(format!("{name}.sh")),
            &format!(
                "sleep 3\n# The container's own address is Windows' network once it runs (the boot's lease goes\n# with the boot manager).\nwindows=$(ip -o -4 address show dev eth0 | sed -n 's/.* inet \\([0-9./]*\\).*/\\1/p' | head -n 1)\necho \"phase: {name} powers on\"\ncp /lab/{name}.img.tpm.json /tmp/tpm.json\nnulab client --volume /lab/{name}.img --tpm-state /tmp/tpm.json --interface eth0{args} {limit} --seed {seed} --outcome-json /out/outcome-{name}.json | tee /out/bitlocker-{name}.log\necho \"phase: {name} is done\"\n{escrow}",
                limit = crate::client_time_args(Duration::ZERO, s.duration)
                    .1
                    .join(" "),
            ),
        )?;
        let _ = write!(
            yaml,
            "  {name}:\n    <<: *nulab\n    command: [\"/lab/{name}.sh\"]\n    depends_on: [{}]\n    networks: [{}]\n",
            servers.join(", "),
            segment
        );
    }
    // The recovery service, HTTPS and HTTP management points, on the first WDS server's
    // segment at the first free host number from 20; each client enrolled.
    if let Some((segment, address)) = &recovery {
        let mut enrol = String::new();
        for name in &enrolled {
            let _ = writeln!(
                enrol,
                "nulab recovery enrol {name} --db /var/lib/nulab/recovery.db --json > /out/enrol-{name}.json",
            );
        }
        script(
            &lab.join("recovery.sh"),
            &format!(
                "{routes}mkdir -p /var/lib/nulab\n{enrol}echo \"phase: recovery service at {address}: HTTPS management point https://{address}/, HTTP management point http://{address}/\"\nexec nulab recovery serve --db /var/lib/nulab/recovery.db --no-encrypt --name recovery --name {address} --listen 0.0.0.0:443 --http 0.0.0.0:80 --ca-out /out/recovery-ca.pem\n",
                routes = routes_from(segment),
            ),
        )?;
        let _ = write!(
            yaml,
            "  recovery:\n    <<: *nulab\n    command: [\"/lab/recovery.sh\"]\n    networks:\n      {segment}:\n        ipv4_address: {address}\n"
        );
    }
    let mut capture = String::from("sleep 1\n");
    for (index, seg) in s.segments.iter().enumerate() {
        let _ = writeln!(
            capture,
            "tcpdump -i {} -n -U --immediate-mode -Z root -w /captures/{}.pcap &",
            bridge_name(lab_id, &segment_names, index),
            seg.name.get_ref()
        );
    }
    capture.push_str("echo \"phase: capturing every segment into captures/\"\nwait\n");
    script(&lab.join("capture.sh"), &capture)?;
    yaml.push_str("  capture:\n    <<: *nulab\n    command: [\"/lab/capture.sh\"]\n    network_mode: host\n    volumes:\n      - ./lab:/lab:ro\n      - ./captures:/captures\n");
    let compose_file = out.join("docker-compose.yml");
    write(&compose_file, yaml)?;
    written.push(compose_file);
    let dockerfile = out.join("Dockerfile");
    write(
        &dockerfile,
        "# Generated by `nulab lab compose`. BASE: debian:bookworm-slim by default; CI builds\n\
         # from a debootstrapped image (docker/ci.sh) since it reaches no image registry.\n\
         ARG BASE=debian:bookworm-slim\n\
         FROM ${BASE}\n\
         RUN apt-get update && apt-get install -y --no-install-recommends iproute2 dnsmasq-base \\\n    tcpdump ca-certificates libtss2-esys-3.0.2-0 libtss2-tctildr0 && rm -rf /var/lib/apt/lists/*\n\
         COPY bin/ /usr/local/bin/\n",
    )?;
    written.push(dockerfile);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The teacher's lab (`docker/lab.toml`) is one the docker lab accepts: a refusal found only
    /// by CI's docker step (a WDS debug log left off, say) is found here first.
    #[test]
    fn the_shipped_docker_lab_has_no_refusal() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker/lab.toml");
        let loaded = scenario::model::load(&path).expect("docker/lab.toml loads");
        assert_eq!(compose_refusals(&loaded), Vec::<String>::new());
    }

    #[test]
    fn bridge_names_carry_the_run_id_fit_linux_and_never_clash() {
        let segments = ["corp", "branch-office-1", "branch-office-2"];
        let names: Vec<String> = (0..segments.len())
            .map(|i| bridge_name("ab12c", &segments, i))
            .collect();
        assert_eq!(names[0], "nlab12c-corp");
        for name in &names {
            assert!(name.len() <= 15, "{name}: Linux allows 15 characters");
            assert!(name.starts_with("nlab12c-"), "{name}");
        }
        assert_ne!(names[1], names[2], "two long names cut to one: {names:?}");
        // Another lab's bridges differ.
        assert_ne!(bridge_name("zz9", &segments, 0), names[0]);
    }

    fn recovery_at(text: &str) -> Result<Option<(String, String)>, LabError> {
        let loaded =
            scenario::model::parse(Path::new("t.toml"), text.to_owned()).expect("a valid scenario");
        recovery_address(&loaded.scenario)
    }

    fn lan(subnet: &str, dhcp: &str, wds: &str, extra: &str) -> String {
        format!(
            "title = \"t\"\nexpect_nothing = true\n[[segment]]\nname = \"corp\"\n\
             subnet = \"{subnet}\"\n[[dhcp_server]]\nname = \"dhcp\"\nsegment = \"corp\"\n\
             address = \"{dhcp}\"\n{extra}[[wds]]\nname = \"wds\"\nsegment = \"corp\"\n\
             address = \"{wds}\"\n"
        )
    }

    #[test]
    fn the_recovery_service_takes_a_host_address_no_pool_static_or_docker_holds() {
        // The default: host number 20.
        let at = recovery_at(&lan("10.0.4.0/24", "10.0.4.2/24", "10.0.4.10/24", "")).unwrap();
        assert_eq!(at, Some(("corp".into(), "10.0.4.20".into())));
        // A pool over .20 to .99 and a client's static .100: the first free is .200.
        let pool = "[[dhcp_server.pool]]\nsubnet = \"10.0.4.0/24\"\nfirst = \"10.0.4.20\"\n\
                    last = \"10.0.4.99\"\n";
        let client = "[[client]]\nname = \"pc\"\n[[client.adapter]]\nsegment = \"corp\"\n\
                      dhcp = false\naddress = \"10.0.4.100/24\"\n";
        let text = format!(
            "{}{client}",
            lan("10.0.4.0/24", "10.0.4.2/24", "10.0.4.10/24", pool)
        );
        assert_eq!(
            recovery_at(&text).unwrap().map(|(_, a)| a),
            Some("10.0.4.101".into())
        );
        // A /28 has no host number 20: a free one below it (not .1, .2 or .10).
        let small = "[[dhcp_server.pool]]\nsubnet = \"10.0.4.0/28\"\nfirst = \"10.0.4.3\"\n\
                     last = \"10.0.4.9\"\n";
        let at = recovery_at(&lan("10.0.4.0/28", "10.0.4.1/28", "10.0.4.10/28", small)).unwrap();
        assert_eq!(at.map(|(_, a)| a), Some("10.0.4.2".into()));
        // The top of the address space: no overflow.
        let at = recovery_at(&lan(
            "255.255.255.0/24",
            "255.255.255.2/24",
            "255.255.255.10/24",
            "",
        ))
        .unwrap();
        assert_eq!(at.map(|(_, a)| a), Some("255.255.255.20".into()));
    }

    #[test]
    fn no_free_address_for_the_recovery_service_is_said() {
        let full = "[[dhcp_server.pool]]\nsubnet = \"10.0.4.0/29\"\nfirst = \"10.0.4.3\"\n\
                    last = \"10.0.4.6\"\n";
        let err = recovery_at(&lan("10.0.4.0/29", "10.0.4.1/29", "10.0.4.2/29", full))
            .expect_err("every host address is taken");
        assert!(err.to_string().contains("no free address on corp"), "{err}");
    }

    #[test]
    fn docker_keeps_its_addresses_at_the_top_of_a_24_and_refuses_a_smaller_segment() {
        let net = |s: &str| s.parse::<Ipv4Net>().expect("a subnet");
        let (range, gateway) = docker_ranges(&net("10.0.4.0/24")).expect("a /24 fits");
        assert_eq!(
            (range.as_str(), gateway.as_str()),
            ("10.0.4.224/28", "10.0.4.254")
        );
        let (range, gateway) = docker_ranges(&net("255.255.255.0/24")).expect("no overflow");
        assert_eq!(
            (range.as_str(), gateway.as_str()),
            ("255.255.255.224/28", "255.255.255.254")
        );
        let (range, _) = docker_ranges(&net("10.8.0.0/16")).expect("a /16 fits");
        assert_eq!(range, "10.8.0.224/28");
        let err = docker_ranges(&net("10.0.4.0/28")).expect_err("a /28 has no .224");
        assert!(err.to_string().contains("/24 or larger"), "{err}");
    }

    #[test]
    fn run_ids_are_short_lowercase_letters_and_digits() {
        assert!(valid_lab_id("ab12c"));
        assert!(valid_lab_id("a"));
        for bad in ["", "toolong7", "AB12", "a-b", "a b"] {
            assert!(!valid_lab_id(bad), "{bad:?}");
        }
    }
}
