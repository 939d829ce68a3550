//! A curve's plot, as SVG and PNG: above, the Network Unlock success rate with its 95% Wilson
//! band, the analytic prediction (dashed) where there is one, and the share of each other
//! outcome (the fallbacks); below, the unlock-time percentiles with the 2 s retransmission
//! timer. Text is drawn with a font inside the binary (DejaVu Sans Mono, `assets/`), so the
//! PNG needs no fontconfig or system fonts.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Curve;

/// The font every label is drawn with (its licence is beside it in `assets/`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");
const FAMILY: &str = "nulab-sans";

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 860;

fn font_ready() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the plot's font does not load".into())
    }
}

/// The plot as SVG text.
pub fn svg(curve: &Curve) -> Result<String, String> {
    font_ready()?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, curve)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(text)
}

/// The plot as a PNG file's bytes.
pub fn png(curve: &Curve) -> Result<Vec<u8>, String> {
    font_ready()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("curve.png");
    {
        let root = BitMapBackend::new(&path, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, curve)?;
        root.present().map_err(|e| e.to_string())?;
    }
    std::fs::read(&path).map_err(|e| e.to_string())
}

/// The colours of the outcomes other than Network Unlock, in order.
const FALLBACK_COLOURS: [RGBColor; 5] = [
    RGBColor(214, 120, 0),
    RGBColor(150, 60, 170),
    RGBColor(200, 40, 40),
    RGBColor(90, 90, 90),
    RGBColor(0, 140, 140),
];
/// Reads one percentile, in milliseconds.
type Percentile = fn(&crate::suite::Percentiles) -> f64;

const SUCCESS: RGBColor = RGBColor(20, 90, 200);
const ANALYTIC: RGBColor = RGBColor(0, 0, 0);

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curve: &Curve) -> Result<(), String> {
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
    root.fill(&WHITE).map_err(e)?;
    let title = format!("{}: {}", curve.scenario, curve.title);
    let root = root.titled(&title, (FAMILY, 20).into_font()).map_err(e)?;
    let (upper, lower) = root.split_vertically(HEIGHT * 58 / 100);
    let xs: Vec<f64> = curve.points.iter().map(|p| p.x).collect();
    let (x0, x1) = match (
        xs.iter().copied().reduce(f64::min),
        xs.iter().copied().reduce(f64::max),
    ) {
        (Some(a), Some(b)) if b > a => (a, b),
        (Some(a), _) => (a - 1.0, a + 1.0),
        _ => (0.0, 1.0),
    };
    let pad = (x1 - x0) * 0.02;
    let x_range = (x0 - pad)..(x1 + pad);
    // Whole-number parameters get one tick per point (no "1.5 cores").
    let x_ticks = if curve.parameter.integral() && curve.points.len() <= 20 {
        curve.points.len().max(2)
    } else {
        10
    };

    // Above: rates.
    let mut chart = ChartBuilder::on(&upper)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .caption(
            format!(
                "Network Unlock success, 95% Wilson band ({} seed(s) per point)",
                curve.seeds
            ),
            (FAMILY, 16).into_font(),
        )
        .build_cartesian_2d(x_range.clone(), 0.0f64..1.02f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(curve.label)
        .x_labels(x_ticks)
        .x_label_formatter(&|x| number(*x))
        .y_desc("share of boots")
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .label_style((FAMILY, 13).into_font())
        .axis_desc_style((FAMILY, 14).into_font())
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(e)?;
    let mut band: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.x, p.success_high)).collect();
    band.extend(curve.points.iter().rev().map(|p| (p.x, p.success_low)));
    chart
        .draw_series(std::iter::once(Polygon::new(
            band,
            SUCCESS.mix(0.18).filled(),
        )))
        .map_err(e)?
        .label("95% interval")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], SUCCESS.mix(0.18).filled()));
    chart
        .draw_series(LineSeries::new(
            curve.points.iter().map(|p| (p.x, p.success_rate)),
            SUCCESS.stroke_width(3),
        ))
        .map_err(e)?
        .label("unlocked by Network Unlock (simulated)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], SUCCESS.stroke_width(3)));
    chart
        .draw_series(
            curve
                .points
                .iter()
                .map(|p| Circle::new((p.x, p.success_rate), 4, SUCCESS.filled())),
        )
        .map_err(e)?;
    // The capacity question: runs in which every client unlocked inside the first timer.
    let many_clients = curve.points.iter().any(|p| p.boots > p.runs);
    if many_clients {
        let within = RGBColor(0, 150, 80);
        chart
            .draw_series(LineSeries::new(
                curve
                    .points
                    .iter()
                    .map(|p| (p.x, p.runs_all_within_2s as f64 / p.runs.max(1) as f64)),
                within.stroke_width(2),
            ))
            .map_err(e)?
            .label("runs with every client unlocked within 2 s")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], within.stroke_width(2)));
        chart
            .draw_series(curve.points.iter().map(|p| {
                TriangleMarker::new(
                    (p.x, p.runs_all_within_2s as f64 / p.runs.max(1) as f64),
                    6,
                    within.filled(),
                )
            }))
            .map_err(e)?;
    }
    let analytic: Vec<(f64, f64)> = analytic_line(curve);
    if !analytic.is_empty() {
        chart
            .draw_series(DashedLineSeries::new(
                analytic,
                8,
                5,
                ANALYTIC.stroke_width(2),
            ))
            .map_err(e)?
            .label("predicted by the protocol's timers")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], ANALYTIC.stroke_width(2)));
    }
    let mut fallbacks: Vec<&String> = curve
        .points
        .iter()
        .flat_map(|p| p.outcomes.keys())
        .filter(|k| *k != "network-unlock")
        .collect();
    fallbacks.sort();
    fallbacks.dedup();
    for (i, outcome) in fallbacks.iter().enumerate() {
        let colour = FALLBACK_COLOURS[i % FALLBACK_COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                curve
                    .points
                    .iter()
                    .map(|p| (p.x, p.outcomes.get(*outcome).copied().unwrap_or(0.0))),
                colour.stroke_width(2),
            ))
            .map_err(e)?
            .label(format!("fallback: {outcome}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    // The legend in the middle of the side where the lines are at their extremes: a
    // reliability curve ends low (its left is free), a capacity curve ends high (its right).
    let ends_high = curve.points.last().is_some_and(|p| p.success_rate >= 0.5);
    chart
        .configure_series_labels()
        .position(if ends_high {
            SeriesLabelPosition::MiddleRight
        } else {
            SeriesLabelPosition::MiddleLeft
        })
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FAMILY, 13).into_font())
        .draw()
        .map_err(e)?;

    // Below: unlock times.
    let percentiles: [(&str, Percentile, RGBColor); 3] = [
        ("p50", |t| t.p50_ms, RGBColor(20, 90, 200)),
        ("p90", |t| t.p90_ms, RGBColor(214, 120, 0)),
        ("p99", |t| t.p99_ms, RGBColor(200, 40, 40)),
    ];
    let top = curve
        .points
        .iter()
        .filter_map(|p| p.unlock_time.as_ref().map(|t| t.p99_ms / 1000.0))
        .fold(2.5f64, f64::max)
        * 1.08;
    let mut chart = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .caption(
            "Network Unlock time after power-on (percentiles of the boots it unlocked)",
            (FAMILY, 16).into_font(),
        )
        .build_cartesian_2d(x_range, 0.0f64..top)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(curve.label)
        .x_labels(x_ticks)
        .x_label_formatter(&|x| number(*x))
        .y_desc("seconds")
        .y_label_formatter(&|y| number(*y))
        .label_style((FAMILY, 13).into_font())
        .axis_desc_style((FAMILY, 14).into_font())
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(e)?;
    let timer = RGBColor(120, 120, 120);
    chart
        .draw_series(DashedLineSeries::new(
            [(x0 - pad, 2.0), (x1 + pad, 2.0)],
            6,
            6,
            timer.stroke_width(1),
        ))
        .map_err(e)?
        .label("2 s retransmission timer")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], timer.stroke_width(1)));
    for (name, value, colour) in percentiles {
        let series: Vec<(f64, f64)> = curve
            .points
            .iter()
            .filter_map(|p| p.unlock_time.as_ref().map(|t| (p.x, value(t) / 1000.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), colour.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                series
                    .into_iter()
                    .map(|pt| Circle::new(pt, 3, colour.filled())),
            )
            .map_err(e)?;
    }
    // Above the lower end of the slowest times.
    let p99 = |p: Option<&super::Point>| {
        p.and_then(|p| p.unlock_time.as_ref())
            .map_or(0.0, |t| t.p99_ms)
    };
    let falling = p99(curve.points.first()) > p99(curve.points.last());
    chart
        .configure_series_labels()
        .position(if falling {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::UpperLeft
        })
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FAMILY, 13).into_font())
        .draw()
        .map_err(e)?;
    Ok(())
}

/// The analytic prediction drawn finely between the grid's points (the grid alone would draw
/// a smooth curve as a polyline, and a step as a slope).
fn analytic_line(curve: &Curve) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = curve
        .points
        .iter()
        .filter_map(|p| p.analytic.map(|a| (p.x, a)))
        .collect();
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    let model = match curve.parameter {
        super::Parameter::Loss => Some(|x: f64| super::analytic_success_under_loss(x / 100.0)),
        _ => None,
    };
    match model {
        Some(f) if last.0 > first.0 => (0..=200)
            .map(|i| {
                let x = first.0 + (last.0 - first.0) * f64::from(i) / 200.0;
                (x, f(x))
            })
            .collect(),
        _ => {
            // A step: hold each value until the next point.
            let mut steps = Vec::new();
            for pair in points.windows(2) {
                steps.push(pair[0]);
                let mid = (pair[0].0 + pair[1].0) / 2.0;
                steps.push((mid, pair[0].1));
                steps.push((mid, pair[1].1));
            }
            steps.extend(points.last());
            steps
        }
    }
}

/// A tick label without a useless fraction ("10", "2.5").
fn number(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        let text = format!("{x:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
