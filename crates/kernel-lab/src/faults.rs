//! The faults a real-kernel run makes with nftables bridge rules and `ip link` instead of
//! netem: partitions (two hosts, or two segments joined by a router; one-way or both), a DHCP
//! server that answers nothing, and an adapter whose link is down over a window. Each maps the
//! simulator's rule (`scenario::world`, netsim's `FaultRule`) onto the bridge ports that carry
//! the same deliveries:
//!
//! - a partition between hosts blocks what one host puts on a shared segment for the other:
//!   on every segment both are on, frames entering at a port of the first and leaving at a
//!   port of the second are dropped (a host partition in the simulator blocks only direct
//!   deliveries, never a router's forwarding);
//! - a partition between segments stops the routers joining them: what a router puts on the
//!   far segment (and, two-way, on the near one) is dropped at its port there;
//! - a silent DHCP server: everything its ports send is dropped;
//! - a DHCP server that answers late (`delay`, over the whole run) is no rule:
//!   `nulab-dhcp-server --reply-delay` holds each datagram it sends ([`reply_delay`]);
//! - a link down: the adapter's bridge port is set down (`ip link set PORT down`), so the
//!   adapter has no carrier, and up again at the window's end.
//!
//! The rules of one fault live in a table of their own (`bridge nulab_faultN`) in each
//! segment's namespace, loaded at the window's start and deleted at its end; deleting the
//! namespaces at teardown removes any still loaded.

use std::collections::BTreeMap;

use scenario::model::FaultSpec;

/// Where one adapter of a host plugs in: its segment (index) and the bridge port there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plug {
    pub segment: usize,
    pub port: String,
    pub adapter: String,
}

/// Every host's plugs, by the host's scenario name (a client group's name covers all its
/// machines, as in the simulator).
pub(crate) type Plugs = BTreeMap<String, Vec<Plug>>;

/// One nftables bridge rule (match and verdict) for the segment with that index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BridgeRule {
    pub segment: usize,
    pub rule: String,
}

/// What a fault does on the kernel over its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Frames dropped by bridge rules.
    Drop(Vec<BridgeRule>),
    /// These bridge ports (segment index, port) are down.
    LinkDown(Vec<(usize, String)>),
}

/// The kernel effect of `spec`, or `None` for a fault the segment path handles (loss and netem
/// on a whole segment). `segments` are the segments' names by index, `routers` the routers'
/// names.
pub(crate) fn effect_of(
    spec: &FaultSpec,
    plugs: &Plugs,
    segments: &[String],
    routers: &[String],
) -> Result<Option<Effect>, String> {
    let host_plugs = |name: &str| -> Result<&[Plug], String> {
        plugs
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("no host {name:?} on the real network"))
    };
    if let Some(sides) = &spec.partition {
        let [a, b] = sides.get_ref().as_slice() else {
            return Err("a partition names two hosts or two segments".into());
        };
        let (a, b) = (a.get_ref().as_str(), b.get_ref().as_str());
        let segment = |name: &str| segments.iter().position(|s| s == name);
        let mut rules = Vec::new();
        if let (Some(sa), Some(sb)) = (segment(a), segment(b)) {
            for router in routers {
                let legs = host_plugs(router)?;
                let on = |seg: usize| legs.iter().filter(move |p| p.segment == seg);
                if on(sa).next().is_none() || on(sb).next().is_none() {
                    continue;
                }
                let mut blocked = vec![sb];
                if !spec.one_way {
                    blocked.push(sa);
                }
                for seg in blocked {
                    for plug in on(seg) {
                        rules.push(BridgeRule {
                            segment: seg,
                            rule: format!("iifname \"{}\" drop", plug.port),
                        });
                    }
                }
            }
            if rules.is_empty() {
                return Err(format!("no router joins segments {a} and {b}"));
            }
        } else {
            let (pa, pb) = (host_plugs(a)?, host_plugs(b)?);
            let mut directions = vec![(pa, pb)];
            if !spec.one_way {
                directions.push((pb, pa));
            }
            for (from, to) in directions {
                for x in from {
                    for y in to.iter().filter(|y| y.segment == x.segment) {
                        rules.push(BridgeRule {
                            segment: x.segment,
                            rule: format!("iifname \"{}\" oifname \"{}\" drop", x.port, y.port),
                        });
                    }
                }
            }
        }
        return Ok(Some(Effect::Drop(rules)));
    }
    if let Some(server) = &spec.dhcp_server {
        if !spec.silent {
            // Late replies are the server's own `--reply-delay`.
            return Ok(None);
        }
        let rules = host_plugs(server.get_ref())?
            .iter()
            .map(|p| BridgeRule {
                segment: p.segment,
                rule: format!("iifname \"{}\" drop", p.port),
            })
            .collect();
        return Ok(Some(Effect::Drop(rules)));
    }
    if spec.link.is_some() {
        let Some(adapter) = &spec.adapter else {
            return Err("a link fault names its adapter".into());
        };
        let (host, name) = adapter
            .get_ref()
            .split_once('/')
            .ok_or_else(|| format!("adapter {:?} is not HOST/ADAPTER", adapter.get_ref()))?;
        let ports: Vec<(usize, String)> = host_plugs(host)?
            .iter()
            .filter(|p| p.adapter == name)
            .map(|p| (p.segment, p.port.clone()))
            .collect();
        if ports.is_empty() {
            return Err(format!("no adapter {name:?} on {host}"));
        }
        return Ok(Some(Effect::LinkDown(ports)));
    }
    Ok(None)
}

/// The `delay` of a fault making DHCP server `server` answer late, as the file writes it
/// (a humantime duration, which `nulab-dhcp-server --reply-delay` reads alike).
pub(crate) fn reply_delay<'a>(faults: &'a [FaultSpec], server: &str) -> Option<&'a str> {
    faults
        .iter()
        .filter(|f| {
            f.dhcp_server
                .as_ref()
                .is_some_and(|d| d.get_ref() == server)
        })
        .find_map(|f| f.delay.as_ref())
        .map(|d| d.get_ref().as_str())
}

/// The nftables script that (re)creates bridge table `table` with a forward chain holding
/// `rules` in order, replacing any table of that name.
pub(crate) fn bridge_table(table: &str, rules: &[String]) -> String {
    let mut body = String::new();
    for rule in rules {
        body.push_str(&format!("    {rule}\n"));
    }
    format!(
        "table bridge {table}\ndelete table bridge {table}\ntable bridge {table} {{\n  chain \
         forward {{\n    type filter hook forward priority 0; policy accept;\n{body}  }}\n}}\n"
    )
}

/// The rules of `rules` grouped by segment, in segment order.
pub(crate) fn by_segment(rules: &[BridgeRule]) -> BTreeMap<usize, Vec<String>> {
    let mut map: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for rule in rules {
        map.entry(rule.segment).or_default().push(rule.rule.clone());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(text: &str) -> FaultSpec {
        let loaded = scenario::model::parse(
            std::path::Path::new("t.toml"),
            format!(
                "title = \"t\"\nteaches = \"t\"\nexpect_nothing = true\n[[segment]]\n\
                 name = \"corp\"\nsubnet = \"10.0.4.0/24\"\n[[fault]]\n{text}"
            ),
        )
        .expect("a valid scenario");
        loaded.scenario.faults[0].clone()
    }

    fn plug(segment: usize, port: &str, adapter: &str) -> Plug {
        Plug {
            segment,
            port: port.into(),
            adapter: adapter.into(),
        }
    }

    /// corp (0) and branch (1): pc1 (two adapters on corp), wds on corp, the router on both,
    /// the DHCP server on corp.
    fn lan() -> (Plugs, Vec<String>, Vec<String>) {
        let mut plugs = Plugs::new();
        plugs.insert(
            "pc1".into(),
            vec![plug(0, "p1", "onboard"), plug(0, "p2", "usb")],
        );
        plugs.insert("wds".into(), vec![plug(0, "p3", "eth0")]);
        plugs.insert("dhcp".into(), vec![plug(0, "p4", "eth0")]);
        plugs.insert(
            "router".into(),
            vec![plug(1, "p5", "eth0"), plug(0, "p6", "eth1")],
        );
        (
            plugs,
            vec!["corp".into(), "branch".into()],
            vec!["router".into()],
        )
    }

    fn rules(effect: Option<Effect>) -> Vec<(usize, String)> {
        match effect {
            Some(Effect::Drop(rules)) => rules.into_iter().map(|r| (r.segment, r.rule)).collect(),
            other => panic!("not a drop: {other:?}"),
        }
    }

    #[test]
    fn a_one_way_host_partition_drops_only_from_the_first_to_the_second() {
        let (plugs, segments, routers) = lan();
        let spec = fault("partition = [\"wds\", \"pc1\"]\none_way = true\n");
        assert_eq!(
            rules(effect_of(&spec, &plugs, &segments, &routers).unwrap()),
            [
                (0, "iifname \"p3\" oifname \"p1\" drop".to_owned()),
                (0, "iifname \"p3\" oifname \"p2\" drop".to_owned()),
            ]
        );
    }

    #[test]
    fn a_two_way_host_partition_drops_both_directions() {
        let (plugs, segments, routers) = lan();
        let spec = fault("partition = [\"pc1\", \"wds\"]\nto = \"10s\"\n");
        let got = rules(effect_of(&spec, &plugs, &segments, &routers).unwrap());
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(&(0, "iifname \"p2\" oifname \"p3\" drop".to_owned())));
        assert!(got.contains(&(0, "iifname \"p3\" oifname \"p1\" drop".to_owned())));
    }

    #[test]
    fn a_segment_partition_drops_what_the_router_puts_on_each_side() {
        let (plugs, segments, routers) = lan();
        let two_way = fault("partition = [\"branch\", \"corp\"]\n");
        assert_eq!(
            rules(effect_of(&two_way, &plugs, &segments, &routers).unwrap()),
            [
                (0, "iifname \"p6\" drop".to_owned()),
                (1, "iifname \"p5\" drop".to_owned()),
            ]
        );
        let one_way = fault("partition = [\"branch\", \"corp\"]\none_way = true\n");
        assert_eq!(
            rules(effect_of(&one_way, &plugs, &segments, &routers).unwrap()),
            [(0, "iifname \"p6\" drop".to_owned())]
        );
        let no_router = effect_of(&two_way, &plugs, &segments, &[]);
        assert!(no_router.unwrap_err().contains("no router"));
    }

    #[test]
    fn a_silent_dhcp_server_sends_nothing_and_a_late_one_delays_its_replies() {
        let (plugs, segments, routers) = lan();
        let silent = fault("dhcp_server = \"dhcp\"\nsilent = true\n");
        assert_eq!(
            rules(effect_of(&silent, &plugs, &segments, &routers).unwrap()),
            [(0, "iifname \"p4\" drop".to_owned())]
        );
        let late = fault("dhcp_server = \"dhcp\"\ndelay = \"5s\"\n");
        assert_eq!(effect_of(&late, &plugs, &segments, &routers).unwrap(), None);
        let faults = [silent, late];
        assert_eq!(reply_delay(&faults, "dhcp"), Some("5s"));
        assert_eq!(reply_delay(&faults, "dhcp2"), None);
    }

    #[test]
    fn a_link_fault_downs_that_adapters_port_only() {
        let (plugs, segments, routers) = lan();
        let spec = fault("adapter = \"pc1/onboard\"\nlink = \"down\"\nto = \"40s\"\n");
        assert_eq!(
            effect_of(&spec, &plugs, &segments, &routers).unwrap(),
            Some(Effect::LinkDown(vec![(0, "p1".into())]))
        );
        let unknown = fault("adapter = \"pc1/wifi\"\nlink = \"down\"\n");
        assert!(effect_of(&unknown, &plugs, &segments, &routers).is_err());
    }

    #[test]
    fn segment_loss_is_left_to_the_segment_path() {
        let (plugs, segments, routers) = lan();
        let spec = fault("segment = \"corp\"\nloss = \"30%\"\n");
        assert_eq!(effect_of(&spec, &plugs, &segments, &routers).unwrap(), None);
    }

    #[test]
    fn a_table_holds_its_rules_in_order_and_replaces_an_older_one() {
        let text = bridge_table("nulab_fault2", &["a drop".into(), "b drop".into()]);
        assert!(text.starts_with("table bridge nulab_fault2\ndelete table bridge nulab_fault2\n"));
        let a = text.find("    a drop\n").unwrap();
        let b = text.find("    b drop\n").unwrap();
        assert!(a < b && text.contains("hook forward"), "{text}");
    }
}
