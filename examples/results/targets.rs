//! The numeric targets of the results issue, each with the figure this run
//! measured and whether it is met — computed from the rows, so the page
//! cannot claim what the run did not measure.

use std::fmt::Write as _;

use crate::{find, Distilled, Measured, OrtOriginal, Row, MISMATCH_POINTS};

/// One target's line: what it asks, what was measured, the verdict.
struct Target {
    asks: &'static str,
    measured: String,
    verdict: &'static str,
}

/// "met" or "not met".
fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

/// Drop and measured speed-up of a row, as text.
fn figures(label: &str, m: &Measured) -> String {
    format!(
        "{label}: {:+.2} points, {:.2}× measured",
        m.change(),
        m.latency_speedup
    )
}

/// A target on one row: `drop_max` points at most and, where given, at
/// least `speedup_min` measured.
fn row_target(
    rows: &[Row],
    asks: &'static str,
    prefix: &str,
    drop_max: f64,
    speedup_min: Option<f64>,
) -> Target {
    match find(rows, prefix) {
        Some(m) => Target {
            asks,
            measured: figures(prefix, m),
            verdict: verdict(
                -m.change() <= drop_max && speedup_min.is_none_or(|s| m.latency_speedup >= s),
            ),
        },
        None => Target {
            asks,
            measured: format!("row `{prefix}` not run"),
            verdict: "not measured here",
        },
    }
}

/// What the CP / Tucker-2 target asks.
const LOW_RANK_ASKS: &str = "CP / Tucker-2 on the convolutions: ≥ 2.5× measured conv speed-up at ≤ 1 % drop after fine-tuning";

/// The CP / Tucker-2 target on every row whose label starts with "CP" or
/// "Tucker-2": the decomposed convolutions' own measured speed-up (timed
/// alone, [`crate::conv_alone`]) and the network's drop; met when one row
/// meets both.
fn low_rank_target(rows: &[Row]) -> Target {
    let mut measured = Vec::new();
    let mut met = None;
    for r in rows
        .iter()
        .filter(|r| r.label.starts_with("CP") || r.label.starts_with("Tucker-2"))
    {
        let Ok(m) = &r.outcome else { continue };
        match &m.conv_alone {
            Some(c) => {
                let which = match c.layers.len() {
                    1 | 2 => c.layers.join(", "),
                    n => format!("its {n} decomposed convolutions"),
                };
                measured.push(format!(
                    "{}: {:+.2} points, {} alone {:.2}× ({:.3} → {:.3} ms), whole network {:.2}×",
                    r.label,
                    m.change(),
                    which,
                    c.speedup(),
                    c.original_ms,
                    c.decomposed_ms,
                    m.latency_speedup
                ));
                let ok = -m.change() <= 1.0 && c.speedup() >= 2.5;
                met = Some(met.unwrap_or(false) || ok);
            }
            None => measured.push(format!("{}: no decomposed convolution", r.label)),
        }
    }
    Target {
        asks: LOW_RANK_ASKS,
        measured: if measured.is_empty() {
            "no CP or Tucker-2 row run".into()
        } else {
            measured.join("; ")
        },
        verdict: met.map_or("not measured here", verdict),
    }
}

/// The CP / Tucker-2 target as one markdown table line (for the
/// Fashion-MNIST sections).
pub fn low_rank_line(rows: &[Row]) -> String {
    let t = low_rank_target(rows);
    format!("| {} | {} | {} |\n", t.asks, t.measured, t.verdict)
}

/// A target on one row (see `row_target`) as one markdown table line.
pub fn row_line(
    rows: &[Row],
    asks: &'static str,
    prefix: &str,
    drop_max: f64,
    speedup_min: Option<f64>,
) -> String {
    let t = row_target(rows, asks, prefix, drop_max, speedup_min);
    format!("| {} | {} | {} |\n", t.asks, t.measured, t.verdict)
}

/// The targets as a markdown table.
pub fn table(rows: &[Row], distilled: Option<&Distilled>, ort: Option<&OrtOriginal>) -> String {
    let mut targets = Vec::new();
    targets.push(low_rank_target(rows));
    let mut int8 = row_target(
        rows,
        "int8: ≤ 0.3 % drop and ≥ 2× measured speed-up, next to onnxruntime's static int8",
        "int8 post-training",
        0.3,
        Some(2.0),
    );
    if let Some(Ok(q)) = ort.map(|o| &o.int8) {
        let _ = write!(
            int8.measured,
            "; onnxruntime static int8 {:.2} %, {:.3} ms",
            100.0 * q.accuracy,
            q.median_ms
        );
    }
    targets.push(int8);
    targets.push(row_target(
        rows,
        "k-means 4-bit: ≤ 0.3 % drop",
        "k-means 4-bit",
        0.3,
        None,
    ));
    targets.push(row_target(
        rows,
        "filter pruning to half the MACs: ≤ 0.5 % drop and ≥ 1.7× measured",
        "filter pruning (L1), half the MACs, gradual",
        0.5,
        Some(1.7),
    ));
    targets.push(row_target(
        rows,
        "binary weights on MNIST: ≤ 2 % drop",
        "binary weights, QAT",
        2.0,
        None,
    ));
    targets.push(match distilled.map(|d| &d.students[..]) {
        Some([(_, scratch), (_, student)]) => {
            let gain = 100.0 * (student.after_transform - scratch.after_transform);
            Target {
                asks: "distilled student ≥ 0.3 % above the scratch student",
                measured: format!(
                    "{:.2} % vs {:.2} % ({gain:+.2} points)",
                    100.0 * student.after_transform,
                    100.0 * scratch.after_transform
                ),
                verdict: verdict(gain >= 0.3),
            }
        }
        _ => Target {
            asks: "distilled student ≥ 0.3 % above the scratch student",
            measured: "not run".into(),
            verdict: "not measured here",
        },
    });
    let combined = find(rows, "prune (L1)").map_or("not run".to_string(), |m| {
        let mut s = format!(
            "on LeNet-5 instead: {:+.2} points, Hasten {:.3} ms",
            m.change(),
            m.compressed_ms
        );
        if let Some(o) = ort {
            for (what, f) in [("f32", &o.f32), ("static int8", &o.int8)] {
                if let Ok(f) = f {
                    let _ = write!(s, ", onnxruntime {what} {:.3} ms", f.median_ms);
                }
            }
        }
        s
    });
    targets.push(Target {
        asks: "combined recipe on the small ResNet: ≤ 0.5 % drop, latency ≤ ⅓ of onnxruntime f32 on the original and below its static int8",
        measured: format!("the ResNet-8 is not in this run; {combined}"),
        verdict: "not measured here",
    });
    let checked: Vec<&Measured> = rows
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok())
        .chain(
            distilled
                .iter()
                .flat_map(|d| d.students.iter().map(|(_, m)| m)),
        )
        .collect();
    let ran = checked
        .iter()
        .filter(|m| matches!(m.ort, Some(Ok(_))))
        .count();
    let agree = checked
        .iter()
        .filter(|m| {
            matches!(&m.ort, Some(Ok(f)) if (100.0 * (f.accuracy - m.last())).abs() <= MISMATCH_POINTS)
        })
        .count();
    targets.push(Target {
        asks:
            "every exported compressed model runs in onnxruntime with the accuracy Hasten reports",
        measured: format!(
            "{ran} of {} models ran, {agree} within {MISMATCH_POINTS} points of Hasten's accuracy",
            checked.len()
        ),
        verdict: match ort {
            None => "not measured here",
            Some(_) => verdict(agree == checked.len()),
        },
    });
    let mut s = String::from("| target | measured | verdict |\n|---|---|---|\n");
    for t in targets {
        let _ = writeln!(s, "| {} | {} | {} |", t.asks, t.measured, t.verdict);
    }
    s
}
