//! Faults: a chain of rules that decides each delivery's fate (lost, blocked by a partition,
//! delayed, duplicated, corrupted), each rule scoped to a time window and optionally to a
//! segment, a sender and a receiver.
//!
//! Rules are evaluated per receiver, in the order they were added, when a frame reaches that
//! receiver: a broadcast that meets a 30% loss rule reaches each listener independently with
//! probability 70%, as on a lossy wireless segment. Every draw comes from the simulation's one
//! seeded RNG, and only matching rules draw, so adding a rule scoped elsewhere does not change
//! the fate of other packets.
//!
//! Scheduled failures (link down and up, host crash and restart, service stop and start) are
//! not rules but events; see `Simulation::link_down_at` and friends.

use std::fmt;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use crate::{NodeId, SegmentId, SimTime};

/// A probability in parts per million, so that a rule's effect is exact and its draw needs no
/// floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Probability(u32);

impl Probability {
    const SCALE: u32 = 1_000_000;
    pub const NEVER: Probability = Probability(0);
    pub const ALWAYS: Probability = Probability(Self::SCALE);

    /// `percent` out of 100 (values above 100 mean always).
    pub fn percent(percent: u32) -> Probability {
        Probability(percent.saturating_mul(10_000).min(Self::SCALE))
    }

    /// `ppm` out of one million (values above a million mean always).
    pub fn per_million(ppm: u32) -> Probability {
        Probability(ppm.min(Self::SCALE))
    }

    /// Parts per million.
    pub fn as_per_million(self) -> u32 {
        self.0
    }

    /// One draw: true with this probability. `NEVER` and `ALWAYS` do not consume randomness.
    pub(crate) fn draw(self, rng: &mut ChaCha20Rng) -> bool {
        match self.0 {
            0 => false,
            Self::SCALE => true,
            p => (rng.next_u64() % u64::from(Self::SCALE)) < u64::from(p),
        }
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let frac = format!("{frac:04}");
            write!(f, "{whole}.{}%", frac.trim_end_matches('0'))
        }
    }
}

/// What a rule does to a matching delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultEffect {
    /// Drop with this probability.
    Loss(Probability),
    /// Delay by `base` plus a uniform draw in `0..=jitter` (jitter can reorder datagrams).
    Latency { base: Duration, jitter: Duration },
    /// Deliver a second copy with this probability.
    Duplicate(Probability),
    /// With this probability, replace one random byte of the payload by a different value.
    /// The datagram is still delivered: it models corruption before the UDP checksum is
    /// computed (a faulty middlebox or sender), which is what tests of parsers need.
    Corrupt(Probability),
    /// Block every matching delivery. With `from` and `to` set, this is a one-way partition;
    /// [`FaultRule::partition`] adds the rule for each direction.
    Block,
}

/// One rule of the chain: an effect, a window and a scope. Unset scope fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub effect: FaultEffect,
    /// Active for `start <= now < end`.
    pub start: SimTime,
    pub end: SimTime,
    pub segment: Option<SegmentId>,
    /// The node that put the frame on the segment (a host, or a router forwarding it).
    pub from: Option<NodeId>,
    pub to: Option<NodeId>,
}

impl FaultRule {
    /// A rule with `effect`, always active, everywhere.
    pub fn new(effect: FaultEffect) -> FaultRule {
        FaultRule {
            effect,
            start: SimTime::ZERO,
            end: SimTime::MAX,
            segment: None,
            from: None,
            to: None,
        }
    }

    pub fn loss(p: Probability) -> FaultRule {
        FaultRule::new(FaultEffect::Loss(p))
    }

    pub fn latency(base: Duration, jitter: Duration) -> FaultRule {
        FaultRule::new(FaultEffect::Latency { base, jitter })
    }

    pub fn duplicate(p: Probability) -> FaultRule {
        FaultRule::new(FaultEffect::Duplicate(p))
    }

    pub fn corrupt(p: Probability) -> FaultRule {
        FaultRule::new(FaultEffect::Corrupt(p))
    }

    /// Nothing from `from` reaches `to`; `to` can still reach `from`.
    pub fn partition_one_way(from: impl Into<NodeId>, to: impl Into<NodeId>) -> FaultRule {
        FaultRule::new(FaultEffect::Block).from(from).to(to)
    }

    /// Neither side reaches the other: two one-way rules.
    pub fn partition(a: impl Into<NodeId>, b: impl Into<NodeId>) -> [FaultRule; 2] {
        let (a, b) = (a.into(), b.into());
        [
            FaultRule::partition_one_way(a, b),
            FaultRule::partition_one_way(b, a),
        ]
    }

    /// Active only for `start <= now < end`.
    pub fn during(mut self, start: SimTime, end: SimTime) -> FaultRule {
        self.start = start;
        self.end = end;
        self
    }

    pub fn on_segment(mut self, segment: SegmentId) -> FaultRule {
        self.segment = Some(segment);
        self
    }

    pub fn from(mut self, node: impl Into<NodeId>) -> FaultRule {
        self.from = Some(node.into());
        self
    }

    pub fn to(mut self, node: impl Into<NodeId>) -> FaultRule {
        self.to = Some(node.into());
        self
    }

    fn matches(&self, now: SimTime, segment: SegmentId, from: NodeId, to: NodeId) -> bool {
        self.start <= now
            && now < self.end
            && self.segment.is_none_or(|s| s == segment)
            && self.from.is_none_or(|n| n == from)
            && self.to.is_none_or(|n| n == to)
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.effect {
            FaultEffect::Loss(p) => write!(f, "loss {p}"),
            FaultEffect::Latency { base, jitter } => {
                write!(f, "latency {base:?} + jitter {jitter:?}")
            }
            FaultEffect::Duplicate(p) => write!(f, "duplication {p}"),
            FaultEffect::Corrupt(p) => write!(f, "corruption {p}"),
            FaultEffect::Block if self.from.is_some() && self.to.is_some() => {
                f.write_str("partition")
            }
            FaultEffect::Block => f.write_str("block"),
        }
    }
}

/// Why a rule stopped a delivery: the index of the rule in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub rule: usize,
}

/// The fate of one delivery under the rule chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Fate {
    pub blocked: Option<Blocked>,
    pub delay: Duration,
    pub duplicate: bool,
    /// The byte to corrupt, as a raw draw (reduced modulo the payload length by the caller).
    pub corrupt: Option<u64>,
}

impl Fate {
    pub fn is_plain(&self) -> bool {
        self.blocked.is_none() && self.delay.is_zero() && !self.duplicate && self.corrupt.is_none()
    }
}

/// Runs the chain for one delivery. Stops at the first rule that drops it.
pub(crate) fn decide(
    rules: &[FaultRule],
    now: SimTime,
    segment: SegmentId,
    from: NodeId,
    to: NodeId,
    rng: &mut ChaCha20Rng,
) -> Fate {
    let mut fate = Fate::default();
    for (index, rule) in rules.iter().enumerate() {
        if !rule.matches(now, segment, from, to) {
            continue;
        }
        match &rule.effect {
            FaultEffect::Block => {
                fate.blocked = Some(Blocked { rule: index });
                return fate;
            }
            FaultEffect::Loss(p) => {
                if p.draw(rng) {
                    fate.blocked = Some(Blocked { rule: index });
                    return fate;
                }
            }
            FaultEffect::Latency { base, jitter } => {
                let jitter_nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
                let extra = match jitter_nanos {
                    0 => 0,
                    j => rng.next_u64() % j.saturating_add(1),
                };
                fate.delay = fate
                    .delay
                    .saturating_add(*base)
                    .saturating_add(Duration::from_nanos(extra));
            }
            FaultEffect::Duplicate(p) => fate.duplicate |= p.draw(rng),
            FaultEffect::Corrupt(p) => {
                if p.draw(rng) {
                    fate.corrupt = Some(rng.next_u64());
                }
            }
        }
    }
    fate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostId;
    use rand_core::SeedableRng;

    fn host(n: u32) -> NodeId {
        NodeId::Host(HostId(n))
    }

    #[test]
    fn probabilities_display_and_clamp() {
        assert_eq!(Probability::percent(30).to_string(), "30%");
        assert_eq!(Probability::per_million(12_500).to_string(), "1.25%");
        assert_eq!(Probability::percent(250), Probability::ALWAYS);
    }

    #[test]
    fn loss_rate_is_close_to_the_rule() {
        let rules = [FaultRule::loss(Probability::percent(30))];
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let lost = (0..10_000)
            .filter(|_| {
                decide(
                    &rules,
                    SimTime::ZERO,
                    SegmentId(0),
                    host(0),
                    host(1),
                    &mut rng,
                )
                .blocked
                .is_some()
            })
            .count();
        assert!((2_700..3_300).contains(&lost), "lost {lost} of 10000");
    }

    #[test]
    fn windows_and_scopes_limit_a_rule() {
        let rules = [FaultRule::new(FaultEffect::Block)
            .during(SimTime::from_secs(1), SimTime::from_secs(2))
            .on_segment(SegmentId(1))
            .from(host(0))];
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let mut blocked = |t, seg, from| {
            decide(
                &rules,
                SimTime::from_millis(t),
                SegmentId(seg),
                host(from),
                host(9),
                &mut rng,
            )
            .blocked
            .is_some()
        };
        assert!(blocked(1_500, 1, 0));
        assert!(!blocked(500, 1, 0), "before the window");
        assert!(!blocked(2_000, 1, 0), "the window's end is exclusive");
        assert!(!blocked(1_500, 0, 0), "another segment");
        assert!(!blocked(1_500, 1, 3), "another sender");
    }

    #[test]
    fn latency_stays_within_base_plus_jitter() {
        let rules = [FaultRule::latency(
            Duration::from_millis(10),
            Duration::from_millis(5),
        )];
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let fate = decide(
                &rules,
                SimTime::ZERO,
                SegmentId(0),
                host(0),
                host(1),
                &mut rng,
            );
            assert!(fate.delay >= Duration::from_millis(10));
            assert!(fate.delay <= Duration::from_millis(15));
            seen.insert(fate.delay);
        }
        assert!(seen.len() > 100, "jitter varies the delay");
    }

    #[test]
    fn partition_rules_block_the_named_directions() {
        let [ab, ba] = FaultRule::partition(host(0), host(1));
        let one_way = [FaultRule::partition_one_way(host(0), host(1))];
        let two_way = [ab, ba];
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let mut blocked = |rules: &[FaultRule], from, to| {
            decide(
                rules,
                SimTime::ZERO,
                SegmentId(0),
                host(from),
                host(to),
                &mut rng,
            )
            .blocked
            .is_some()
        };
        assert!(blocked(&one_way, 0, 1));
        assert!(!blocked(&one_way, 1, 0));
        assert!(blocked(&two_way, 0, 1));
        assert!(blocked(&two_way, 1, 0));
        assert!(!blocked(&two_way, 0, 2));
    }
}
