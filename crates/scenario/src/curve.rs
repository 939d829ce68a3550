//! Reliability and capacity curves: one scenario run over a grid of one parameter (a fault's
//! loss or latency, the WDS servers' cores or decryption time, a client count) with many seeds
//! per point, summarised per point (unlock success rate with its 95% Wilson interval, the share
//! of each outcome, unlock-time percentiles, the runs in which every client unlocked inside the
//! 2 s retransmission timer) and written as CSV, JSON and a plot (SVG and PNG).
//!
//! For loss and latency the plot also draws what the protocol's own timers predict
//! ([`analytic_success_under_loss`], [`analytic_success_under_latency`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use crate::model::{Loaded, ScenarioError};
use crate::suite::{Percentiles, client_outcomes, wilson_95};

pub mod plot;

/// What a curve varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameter {
    /// The first `[[fault]]` with `loss`, in percent.
    Loss,
    /// The first `[[fault]]` with `latency`, in milliseconds.
    Latency,
    /// Every modelled WDS server's cores.
    Cores,
    /// Every WDS server's time per private-key operation, in milliseconds.
    DecryptTime,
    /// The first `[[client]]`'s count.
    Clients,
}

impl Parameter {
    const ALL: [(&'static str, Parameter); 5] = [
        ("loss", Parameter::Loss),
        ("latency", Parameter::Latency),
        ("cores", Parameter::Cores),
        ("decrypt_time", Parameter::DecryptTime),
        ("clients", Parameter::Clients),
    ];

    pub fn key(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(k, _)| k)
    }

    /// The axis label.
    pub fn label(self) -> &'static str {
        match self {
            Parameter::Loss => "packet loss (%)",
            Parameter::Latency => "added one-way latency (ms)",
            Parameter::Cores => "WDS server cores",
            Parameter::DecryptTime => "WDS decryption time per request (ms)",
            Parameter::Clients => "clients booting together",
        }
    }

    pub fn integral(self) -> bool {
        matches!(self, Parameter::Cores | Parameter::Clients)
    }
}

/// `KEY=A..B:STEPS`: STEPS evenly spaced values from A to B (both included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vary {
    pub parameter: Parameter,
    pub from: f64,
    pub to: f64,
    pub steps: u32,
}

impl Vary {
    /// The grid's values (rounded to whole numbers for cores and clients, repeats removed).
    pub fn values(&self) -> Vec<f64> {
        let mut values: Vec<f64> = (0..self.steps)
            .map(|i| {
                let x = if self.steps == 1 {
                    self.from
                } else {
                    self.from + (self.to - self.from) * f64::from(i) / f64::from(self.steps - 1)
                };
                if self.parameter.integral() {
                    x.round()
                } else {
                    x
                }
            })
            .collect();
        values.dedup();
        values
    }
}

impl FromStr for Vary {
    type Err = String;

    fn from_str(text: &str) -> Result<Vary, String> {
        let keys = || {
            Parameter::ALL
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (key, range) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected KEY=A..B:STEPS (KEY one of {})", keys()))?;
        let parameter = Parameter::ALL
            .iter()
            .find(|(k, _)| *k == key.trim())
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("unknown parameter {key:?} (one of {})", keys()))?;
        let (range, steps) = range
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: the number of points is missing (A..B:STEPS)"))?;
        let (from, to) = range
            .split_once("..")
            .ok_or_else(|| format!("{range:?} is not a range A..B"))?;
        let number = |s: &str| -> Result<f64, String> {
            let s = s.trim();
            let s = s
                .strip_suffix('%')
                .or_else(|| s.strip_suffix("ms"))
                .unwrap_or(s);
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{s:?} is not a non-negative number"))
        };
        let (from, to) = (number(from)?, number(to)?);
        let steps: u32 = steps
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("{steps:?}: the number of points is 1 to 1000"))?;
        if parameter == Parameter::Loss && from.max(to) > 100.0 {
            return Err("loss is a percentage: 0 to 100".into());
        }
        if parameter.integral() && from.min(to) < 1.0 {
            return Err(format!("{} start at 1", parameter.key()));
        }
        Ok(Vary {
            parameter,
            from,
            to,
            steps,
        })
    }
}

impl fmt::Display for Vary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}..{}:{}",
            self.parameter.key(),
            self.from,
            self.to,
            self.steps
        )
    }
}

/// `loaded` with the parameter set to `x`; an error at the scenario when it has nothing the
/// parameter could change.
pub fn apply(loaded: &Loaded, parameter: Parameter, x: f64) -> Result<Loaded, ScenarioError> {
    let mut out = loaded.clone();
    let s = &mut out.scenario;
    let whole = |what: &str| loaded.error_at(0..0, what.to_string());
    match parameter {
        Parameter::Loss => {
            let fault = s
                .faults
                .iter_mut()
                .find(|f| f.loss.is_some())
                .ok_or_else(|| whole("the scenario has no [[fault]] with `loss` to vary"))?;
            let span = fault.loss.as_ref().map_or(0..0, Spanned::span);
            fault.loss = Some(Spanned::new(span, format!("{x}%")));
        }
        Parameter::Latency => {
            let fault = s
                .faults
                .iter_mut()
                .find(|f| f.latency.is_some())
                .ok_or_else(|| whole("the scenario has no [[fault]] with `latency` to vary"))?;
            let span = fault.latency.as_ref().map_or(0..0, Spanned::span);
            fault.latency = Some(Spanned::new(span, format!("{}us", (x * 1000.0).round())));
        }
        Parameter::Cores => {
            let modelled: Vec<_> = s
                .wds
                .iter_mut()
                .filter(|w| w.decrypt_time.is_some())
                .collect();
            if modelled.is_empty() {
                return Err(whole(
                    "no [[wds]] models its processor (`decrypt_time`): cores cannot vary",
                ));
            }
            let cores = u16::try_from(x.round() as u64).unwrap_or(u16::MAX).max(1);
            for w in modelled {
                let span = w.cores.as_ref().map_or(0..0, Spanned::span);
                w.cores = Some(Spanned::new(span, cores));
            }
        }
        Parameter::DecryptTime => {
            if s.wds.is_empty() {
                return Err(whole("the scenario has no [[wds]]"));
            }
            for w in &mut s.wds {
                w.decrypt_time = Some(Duration::from_secs_f64(x / 1000.0));
            }
        }
        Parameter::Clients => {
            let client = s
                .clients
                .first_mut()
                .ok_or_else(|| whole("the scenario has no [[client]]"))?;
            client.count = u32::try_from(x.round() as u64).unwrap_or(u32::MAX).max(1);
        }
    }
    Ok(out)
}

/// One point of a curve.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub x: f64,
    pub runs: u64,
    /// Client boots over all runs.
    pub boots: u64,
    /// Boots unlocked by Network Unlock.
    pub network_unlocked: u64,
    pub success_rate: f64,
    /// The 95% Wilson interval of the success rate.
    pub success_low: f64,
    pub success_high: f64,
    /// The rate the protocol's timers predict, where the model applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytic: Option<f64>,
    /// Each outcome's share of the boots ("network-unlock", "tpm-and-pin", "waiting at the
    /// PIN prompt"...).
    pub outcomes: BTreeMap<String, f64>,
    /// Network Unlock times after power-on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlock_time: Option<Percentiles>,
    /// Runs in which every client was unlocked by Network Unlock within 2 s of power-on.
    pub runs_all_within_2s: u64,
    /// Runs that could not be built or run (their error, once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A whole curve.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub scenario: String,
    pub title: String,
    pub parameter: Parameter,
    pub label: &'static str,
    pub seeds: u64,
    pub points: Vec<Point>,
}

/// What one run gave: each client's outcome and unlock time.
type RunOutcome = Result<Vec<(String, Option<Duration>)>, String>;

/// Runs `loaded` over `vary`'s grid with `seeds` seeds at each point (the scenario's own and
/// the ones after it: the same seeds at every point), on `jobs` threads;
/// `progress(done, total)` is called after each run.
pub fn run_curve(
    loaded: &Loaded,
    vary: &Vary,
    seeds: u64,
    jobs: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Curve, ScenarioError> {
    let values = vary.values();
    let variants: Vec<Loaded> = values
        .iter()
        .map(|x| apply(loaded, vary.parameter, *x))
        .collect::<Result<_, _>>()?;
    let analytic_model = AnalyticModel::of(loaded, vary.parameter);
    let total = variants.len() * usize::try_from(seeds).unwrap_or(usize::MAX);
    let results: Mutex<Vec<Option<RunOutcome>>> = Mutex::new(vec![None; total]);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let seeds_usize = usize::try_from(seeds).unwrap_or(usize::MAX).max(1);
    let first_seed = loaded.scenario.seed;
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    if job >= total {
                        break;
                    }
                    let (point, seed) = (job / seeds_usize, job % seeds_usize + 1);
                    let seed = first_seed.wrapping_add(seed as u64 - 1);
                    let outcome = crate::run::run(&variants[point], Some(seed))
                        .map(|result| client_outcomes(&result))
                        .map_err(|err| err.to_string());
                    if let Ok(mut all) = results.lock() {
                        all[job] = Some(outcome);
                    }
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let points = values
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let runs = &results[i * seeds_usize..(i + 1) * seeds_usize];
            summarise_point(*x, runs, analytic_model.map(|m| m.predict(*x)))
        })
        .collect();
    Ok(Curve {
        scenario: loaded.name.clone(),
        title: loaded.scenario.title.clone(),
        parameter: vary.parameter,
        label: vary.parameter.label(),
        seeds,
        points,
    })
}

/// The unlock-time limit of the capacity question: inside the first retransmission timer.
const RETRANSMISSION_TIMER: Duration = Duration::from_secs(2);

fn summarise_point(x: f64, runs: &[Option<RunOutcome>], analytic: Option<f64>) -> Point {
    let mut boots = 0u64;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut times = Vec::new();
    let mut errors = Vec::new();
    let mut all_within = 0;
    let mut ran = 0;
    for run in runs.iter().flatten() {
        match run {
            Ok(clients) => {
                ran += 1;
                let mut every = !clients.is_empty();
                for (outcome, time) in clients {
                    boots += 1;
                    *counts.entry(outcome.clone()).or_default() += 1;
                    let unlocked = outcome == "network-unlock";
                    if unlocked {
                        times.extend(*time);
                    }
                    every &= unlocked && time.is_some_and(|t| t <= RETRANSMISSION_TIMER);
                }
                if every {
                    all_within += 1;
                }
            }
            Err(err) => {
                if !errors.contains(err) {
                    errors.push(err.clone());
                }
            }
        }
    }
    let unlocked = counts.get("network-unlock").copied().unwrap_or(0);
    let (low, high) = wilson_95(unlocked, boots);
    Point {
        x,
        runs: ran,
        boots,
        network_unlocked: unlocked,
        success_rate: if boots == 0 {
            0.0
        } else {
            unlocked as f64 / boots as f64
        },
        success_low: low,
        success_high: high,
        analytic,
        outcomes: counts
            .into_iter()
            .map(|(k, n)| (k, n as f64 / boots.max(1) as f64))
            .collect(),
        unlock_time: Percentiles::of(&times),
        runs_all_within_2s: all_within,
        errors,
    }
}

/// What the protocol's timers predict, and for which scenarios the prediction holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AnalyticModel {
    Loss,
    /// With the segment's own latency.
    Latency {
        segment: Duration,
    },
}

impl AnalyticModel {
    /// The model for `parameter` when the scenario is the one it is derived for: one segment
    /// under the fault for the whole run (no window, no jitter, no narrower scope), one DHCP
    /// server, one WDS server, one client machine with one adapter asking over DHCPv4 only.
    fn of(loaded: &Loaded, parameter: Parameter) -> Option<AnalyticModel> {
        let s = &loaded.scenario;
        let simple = s.segments.len() == 1
            && s.dhcp_servers.len() == 1
            && s.wds.len() == 1
            && s.routers.is_empty()
            && s.clients.len() == 1
            && s.clients[0].count == 1
            && s.clients[0].adapters.len() == 1
            && s.clients[0].order.len() == 1
            && s.clients[0].order[0].get_ref().ends_with("v4")
            && s.faults.len() == 1;
        let fault = s.faults.first()?;
        let whole_segment = fault.from.is_none()
            && fault.to.is_none()
            && fault.host.is_none()
            && fault.sender.is_none()
            && fault.receiver.is_none()
            && fault.adapter.is_none();
        if !(simple && whole_segment) {
            return None;
        }
        match parameter {
            Parameter::Loss if fault.loss.is_some() => Some(AnalyticModel::Loss),
            Parameter::Latency if fault.latency.is_some() && fault.jitter.is_none() => {
                Some(AnalyticModel::Latency {
                    segment: s.segments[0]
                        .latency
                        .unwrap_or(netsim::SegmentConfig::default().latency),
                })
            }
            _ => None,
        }
    }

    fn predict(self, x: f64) -> f64 {
        match self {
            AnalyticModel::Loss => analytic_success_under_loss(x / 100.0),
            AnalyticModel::Latency { segment } => analytic_success_under_latency(
                segment + Duration::from_secs_f64(x.max(0.0) / 1000.0),
            ),
        }
    }
}

/// The chance that Network Unlock succeeds when every frame delivery is lost with probability
/// `loss`, independently (one client, one DHCP server, one WDS server on one segment).
///
/// Which frames must survive, and how many attempts each step gets:
///
/// - **DORA, DISCOVER/OFFER** (`dhcp::client`, as UEFI firmware runs it): the client broadcasts
///   a DISCOVER and waits 4 s, then 8, 16 and 32 s (each ±1 s), 4 DISCOVERs in all, one
///   transaction id. An attempt succeeds when its DISCOVER reaches the DHCP server *and* the
///   server's OFFER reaches the client: `q = (1 - loss)²`. Losses of different attempts are
///   independent, and an OFFER arrives within microseconds, long before the next timeout, so
///   the step succeeds with `D = 1 - (1 - q)⁴`.
/// - **DORA, REQUEST/ACK**: the same rule, 4 REQUESTs, each with its ACK: `R = 1 - (1 - q)⁴`.
/// - **The unlock exchange** (`boot_client::exchange`, DHCPv4): the request is broadcast, then
///   once more 2 s later, then the client listens 2 s more: 2 attempts. An attempt succeeds
///   when the request reaches the WDS server *and* its reply reaches the client, and the
///   server answers every request it hears: `U = 1 - (1 - q)²`.
///
/// Nothing else must cross the network (the simulator has no ARP; the DHCP server's and the
/// WDS server's copies of the other's broadcasts are not needed), and the steps are in
/// sequence, so `P = D · R · U`. At 20% loss that is 0.983 · 0.983 · 0.870 = 0.841; at 50%,
/// 0.684 · 0.684 · 0.438 = 0.205.
pub fn analytic_success_under_loss(loss: f64) -> f64 {
    let loss = loss.clamp(0.0, 1.0);
    let q = (1.0 - loss) * (1.0 - loss);
    let step = |attempts: i32| 1.0 - (1.0 - q).powi(attempts);
    step(4) * step(4) * step(2)
}

/// The chance that Network Unlock succeeds when every frame delivery takes `one_way` (the
/// segment's latency plus the fault's, no jitter): a step function.
///
/// DORA tolerates any round trip below its 60 s of DISCOVERs: a late OFFER still carries the
/// transaction id, and the client takes the first OFFER (and then ACK) of it whenever it comes,
/// even after retransmitting. The unlock exchange listens 4 s after its first request (2 s to
/// the retransmission, 2 s after it), so the reply to the first request must come back within
/// 4 s: success when `2 · one_way < 4 s` (the retransmission's reply comes 2 s later still, so
/// it never helps), failure otherwise.
pub fn analytic_success_under_latency(one_way: Duration) -> f64 {
    if one_way * 2 < Duration::from_secs(4) {
        1.0
    } else {
        0.0
    }
}

/// The curve as CSV: one row per point.
pub fn csv(curve: &Curve) -> String {
    let outcomes: Vec<String> = {
        let mut all: Vec<String> = curve
            .points
            .iter()
            .flat_map(|p| p.outcomes.keys().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let mut out = format!(
        "{},runs,boots,network_unlocked,success_rate,success_low,success_high,analytic,{}p50_ms,p90_ms,p99_ms,max_ms,runs_all_within_2s\n",
        curve.parameter.key(),
        outcomes
            .iter()
            .map(|o| format!("share {},", o.replace(',', ";")))
            .collect::<String>()
    );
    for p in &curve.points {
        let t = p.unlock_time.as_ref();
        let ms = |f: fn(&Percentiles) -> f64| t.map_or(String::new(), |t| format!("{:.3}", f(t)));
        out.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.6},{},{}{},{},{},{},{}\n",
            p.x,
            p.runs,
            p.boots,
            p.network_unlocked,
            p.success_rate,
            p.success_low,
            p.success_high,
            p.analytic.map_or(String::new(), |a| format!("{a:.6}")),
            outcomes
                .iter()
                .map(|o| format!("{:.6},", p.outcomes.get(o).copied().unwrap_or(0.0)))
                .collect::<String>(),
            ms(|t| t.p50_ms),
            ms(|t| t.p90_ms),
            ms(|t| t.p99_ms),
            ms(|t| t.max_ms),
            p.runs_all_within_2s
        ));
    }
    out
}

/// The curve as pretty JSON.
pub fn json(curve: &Curve) -> String {
    serde_json::to_string_pretty(curve).unwrap_or_default() + "\n"
}

/// Writes `curve.csv`, `curve.json`, `curve.svg` and `curve.png` into `dir` (created if
/// needed); the paths written.
pub fn write(curve: &Curve, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files: [(&str, Vec<u8>); 4] = [
        ("curve.csv", csv(curve).into_bytes()),
        ("curve.json", json(curve).into_bytes()),
        ("curve.svg", plot::svg(curve)?.into_bytes()),
        ("curve.png", plot::png(curve)?),
    ];
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_is_parsed_and_spaced() {
        let vary: Vary = "loss=0..60:4".parse().expect("valid");
        assert_eq!(vary.parameter, Parameter::Loss);
        assert_eq!(vary.values(), [0.0, 20.0, 40.0, 60.0]);
        let vary: Vary = "latency=0ms..3000ms:2".parse().expect("units allowed");
        assert_eq!(vary.values(), [0.0, 3000.0]);
        let vary: Vary = "clients=1..10:4".parse().expect("valid");
        assert_eq!(vary.values(), [1.0, 4.0, 7.0, 10.0]);
        let vary: Vary = "cores=1..2:5".parse().expect("valid");
        assert_eq!(vary.values(), [1.0, 2.0], "whole numbers, once each");
        for bad in [
            "loss",
            "speed=1..2:3",
            "loss=0..60",
            "loss=0-60:3",
            "loss=0..160:3",
            "loss=0..60:0",
            "cores=0..4:3",
            "loss=-1..5:3",
        ] {
            assert!(bad.parse::<Vary>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_parameter_the_scenario_lacks_is_refused() {
        let loaded = crate::load_catalogue("happy-path-ipv4").expect("catalogue");
        let err = apply(&loaded, Parameter::Loss, 10.0).expect_err("no loss fault");
        assert!(err.message.contains("no [[fault]] with `loss`"), "{err}");
        let err = apply(&loaded, Parameter::Cores, 2.0).expect_err("no processor");
        assert!(err.message.contains("decrypt_time"), "{err}");
        let more = apply(&loaded, Parameter::Clients, 3.0).expect("clients vary");
        assert_eq!(more.scenario.clients[0].count, 3);
    }

    #[test]
    fn the_loss_model_matches_hand_computed_values() {
        assert!((analytic_success_under_loss(0.0) - 1.0).abs() < 1e-12);
        assert!((analytic_success_under_loss(0.2) - 0.8410).abs() < 1e-3);
        assert!((analytic_success_under_loss(0.5) - 0.2044).abs() < 1e-3);
        assert!(analytic_success_under_loss(1.0).abs() < 1e-12);
        assert_eq!(
            analytic_success_under_latency(Duration::from_millis(1999)),
            1.0
        );
        assert_eq!(
            analytic_success_under_latency(Duration::from_millis(2000)),
            0.0
        );
    }

    /// The simulated success rate over a range of loss rates lies inside the binomial 99%
    /// interval around the analytic value at every point (600 boots a point: a model that
    /// forgot a retransmission of any step, or counted one frame too few or too many, is off
    /// by more than the interval's half-width at 30% loss and above).
    #[test]
    fn simulated_success_under_loss_agrees_with_the_timers() {
        let loaded = crate::load_catalogue("reliability-under-loss").expect("catalogue");
        let vary: Vary = "loss=10..70:4".parse().expect("valid");
        let curve = run_curve(&loaded, &vary, 600, 2, &|_, _| {}).expect("runs");
        for point in &curve.points {
            let p = point.analytic.expect("the model applies to this scenario");
            let n = point.boots as f64;
            let expected = n * p;
            let half_width = 2.576 * (n * p * (1.0 - p)).sqrt();
            let got = point.network_unlocked as f64;
            assert!(
                (got - expected).abs() <= half_width.max(1.0),
                "at {}% loss: {got} of {n} unlocked, the timers predict {expected:.1} ± {half_width:.1}",
                point.x
            );
            assert!(point.errors.is_empty(), "{:?}", point.errors);
        }
    }

    /// Latency is a step: the reply to the first request must come back inside the 4 s the
    /// client listens.
    #[test]
    fn simulated_success_under_latency_is_the_predicted_step() {
        let mut text = crate::catalogue::text("reliability-under-loss")
            .expect("catalogue")
            .replace("loss = \"10%\"", "latency = \"1ms\"");
        text.push('\n');
        let loaded =
            crate::model::parse(std::path::Path::new("latency.toml"), text).expect("parses");
        let vary: Vary = "latency=1000..3000:5".parse().expect("valid");
        let curve = run_curve(&loaded, &vary, 3, 2, &|_, _| {}).expect("runs");
        let rates: Vec<(f64, f64, Option<f64>)> = curve
            .points
            .iter()
            .map(|p| (p.x, p.success_rate, p.analytic))
            .collect();
        assert_eq!(
            rates,
            [
                (1000.0, 1.0, Some(1.0)),
                (1500.0, 1.0, Some(1.0)),
                (2000.0, 0.0, Some(0.0)),
                (2500.0, 0.0, Some(0.0)),
                (3000.0, 0.0, Some(0.0)),
            ]
        );
    }

    #[test]
    fn the_files_are_written_and_the_png_is_a_png() {
        let loaded = crate::load_catalogue("reliability-under-loss").expect("catalogue");
        let vary: Vary = "loss=0..40:3".parse().expect("valid");
        let curve = run_curve(&loaded, &vary, 4, 2, &|_, _| {}).expect("runs");
        let dir = tempfile::tempdir().expect("temp dir");
        let files = write(&curve, dir.path()).expect("written");
        assert_eq!(files.len(), 4);
        let png = std::fs::read(dir.path().join("curve.png")).expect("png");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        let svg = std::fs::read_to_string(dir.path().join("curve.svg")).expect("svg");
        assert!(
            svg.contains("<svg") && svg.contains("predicted by the protocol"),
            "{svg:.200}"
        );
        let csv = std::fs::read_to_string(dir.path().join("curve.csv")).expect("csv");
        assert_eq!(csv.lines().count(), 4, "{csv}");
        assert!(
            csv.starts_with("loss,runs,boots,network_unlocked,success_rate"),
            "{csv}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("curve.json")).expect("json"),
        )
        .expect("valid JSON");
        assert_eq!(json["points"].as_array().map(Vec::len), Some(3));
        assert_eq!(json["points"][0]["success_rate"], 1.0);
    }
}
