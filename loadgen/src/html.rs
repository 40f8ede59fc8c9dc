//! `--report-html`: one self-contained HTML file (inline SVG and CSS, no
//! script, no external resource), so it opens offline and archives with the
//! run. Charts: viewers, throughput and latency percentiles over time, the
//! latency distribution (HdrHistogram percentile spectrum) and verdicts by
//! class; then the text summary and, when verified, the verify report.

use std::fmt::Write as _;

use crate::{
    report::{self, Summary},
    truth::Class,
    verify,
};

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Segment colors of the verdict bars: fixed for the common outcomes, the
/// rest from a palette without green (green is "passed").
fn segment_color(name: &str, i: usize) -> &'static str {
    const OTHERS: &[&str] = &[
        "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4",
        "#aec7e8", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
    ];
    match name {
        "passed" | "accepted" => "#2ca02c",
        "busy" => "#9e9e9e",
        "unacked" => "#424242",
        _ => OTHERS[i % OTHERS.len()],
    }
}

/// Escape text for HTML / SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A short number: 1.2k, 35, 0.25.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Ticks at 1, 2, 5 × 10^k covering `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// How the y axis maps values.
#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

/// One line on a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line chart.
struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    y_scale: Scale,
    /// Custom x ticks (value, label); default: linear ticks.
    x_ticks: Option<Vec<(f64, String)>>,
    series: Vec<Series>,
}

const W: f64 = 620.0;
const H: f64 = 280.0;
const ML: f64 = 58.0;
const MR: f64 = 12.0;
const MT: f64 = 30.0;
const MB: f64 = 62.0;

impl Chart<'_> {
    fn svg(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
            esc(self.title)
        );
        let _ = write!(
            o,
            r#"<text x="{}" y="18" class="title">{}</text>"#,
            W / 2.0,
            esc(self.title)
        );
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| {
                x.is_finite() && y.is_finite() && (self.y_scale == Scale::Linear || *y > 0.0)
            })
            .collect();
        if pts.is_empty() {
            let _ = write!(
                o,
                r#"<text x="{}" y="{}" class="empty">no data</text></svg>"#,
                W / 2.0,
                H / 2.0
            );
            return o;
        }
        let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
            (a.min(*x), b.max(*x))
        });
        if let Some(t) = &self.x_ticks {
            for (v, _) in t {
                x0 = x0.min(*v);
                x1 = x1.max(*v);
            }
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let (ymin, ymax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
            (a.min(*y), b.max(*y))
        });
        let (y0, y1, yticks) = match self.y_scale {
            Scale::Linear => {
                let hi = if ymax <= 0.0 { 1.0 } else { ymax * 1.08 };
                let lo = ymin.min(0.0);
                (lo, hi, linear_ticks(lo, hi, 5))
            }
            Scale::Log => {
                let lo = 10f64.powf(ymin.log10().floor());
                let mut hi = 10f64.powf(ymax.log10().ceil());
                if hi <= lo {
                    hi = lo * 10.0;
                }
                let mut t = Vec::new();
                let mut v = lo;
                while v <= hi * 1.0001 {
                    t.push(v);
                    v *= 10.0;
                }
                (lo, hi, t)
            }
        };
        let pw = W - ML - MR;
        let ph = H - MT - MB;
        let fx = |x: f64| ML + (x - x0) / (x1 - x0) * pw;
        let fy = |y: f64| match self.y_scale {
            Scale::Linear => MT + ph - (y - y0) / (y1 - y0) * ph,
            Scale::Log => {
                MT + ph - (y.max(y0).log10() - y0.log10()) / (y1.log10() - y0.log10()) * ph
            }
        };
        // Grid and axes.
        for t in &yticks {
            let y = fy(*t);
            let _ = write!(
                o,
                r#"<line x1="{ML}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="ytick">{}</text>"#,
                ML + pw,
                ML - 6.0,
                y + 4.0,
                num(*t)
            );
        }
        let xt: Vec<(f64, String)> = self.x_ticks.clone().unwrap_or_else(|| {
            linear_ticks(x0, x1, 6)
                .into_iter()
                .map(|v| (v, num(v)))
                .collect()
        });
        for (v, label) in &xt {
            let x = fx(*v);
            let _ = write!(
                o,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{MT}" y2="{}" class="grid"/><text x="{x:.1}" y="{}" class="xtick">{}</text>"#,
                MT + ph,
                MT + ph + 14.0,
                esc(label)
            );
        }
        let _ = write!(
            o,
            r#"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="frame"/>"#
        );
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" class="xlabel">{}</text><text x="14" y="{}" class="ylabel" transform="rotate(-90 14 {})">{}</text>"#,
            ML + pw / 2.0,
            MT + ph + 30.0,
            esc(self.x_label),
            MT + ph / 2.0,
            MT + ph / 2.0,
            esc(self.y_label)
        );
        // Lines, with markers when sparse.
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let p: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| {
                    x.is_finite() && y.is_finite() && (self.y_scale == Scale::Linear || *y > 0.0)
                })
                .collect();
            if p.is_empty() {
                continue;
            }
            let path: Vec<String> = p
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", fx(*x), fy(*y)))
                .collect();
            let _ = write!(
                o,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6"><title>{}</title></polyline>"#,
                path.join(" "),
                esc(&s.name)
            );
            if p.len() <= 40 {
                for (x, y) in &p {
                    let _ = write!(
                        o,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{color}"/>"#,
                        fx(*x),
                        fy(*y)
                    );
                }
            }
            // Legend below the plot.
            let lx = ML + (i as f64 % 4.0) * (pw / 4.0);
            let ly = MT + ph + 46.0 + (i / 4) as f64 * 13.0;
            let _ = write!(
                o,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{ly:.1}" class="legend">{}</text>"#,
                ly - 4.0,
                lx + 16.0,
                esc(&s.name)
            );
        }
        o.push_str("</svg>");
        o
    }
}

/// Horizontal stacked bars: one bar per row, segments (name, value).
fn stacked_bars(title: &str, rows: &[(String, Vec<(String, u64)>)]) -> String {
    let mut names: Vec<String> = Vec::new();
    for (_, segs) in rows {
        for (n, _) in segs {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let bar_h = 18.0;
    let gap = 8.0;
    let left = 130.0;
    let right = 70.0;
    let legend_rows = names.len().div_ceil(4) as f64;
    let h = MT + rows.len() as f64 * (bar_h + gap) + 20.0 + legend_rows * 14.0;
    let width = 2.0 * W + 20.0;
    let pw = width - left - right;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart wide" viewBox="0 0 {width} {h}" width="{width}" height="{h}" role="img" aria-label="{}"><text x="{}" y="18" class="title">{}</text>"#,
        esc(title),
        width / 2.0,
        esc(title)
    );
    if rows.is_empty() {
        o.push_str(r#"<text x="300" y="60" class="empty">no data</text></svg>"#);
        return o;
    }
    for (i, (label, segs)) in rows.iter().enumerate() {
        let y = MT + i as f64 * (bar_h + gap);
        let total: u64 = segs.iter().map(|s| s.1).sum();
        let _ = write!(
            o,
            r#"<text x="{}" y="{:.1}" class="ytick">{}</text>"#,
            left - 6.0,
            y + bar_h - 5.0,
            esc(label)
        );
        let mut x = left;
        for (name, v) in segs {
            if *v == 0 || total == 0 {
                continue;
            }
            let w = *v as f64 / total as f64 * pw;
            let ci = names.iter().position(|n| n == name).unwrap_or(0);
            let _ = write!(
                o,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bar_h}" fill="{}"><title>{}: {} ({:.1}%)</title></rect>"#,
                segment_color(name, ci),
                esc(name),
                v,
                *v as f64 * 100.0 / total as f64
            );
            if w > 34.0 {
                let _ = write!(
                    o,
                    r#"<text x="{:.1}" y="{:.1}" class="barlabel">{}</text>"#,
                    x + w / 2.0,
                    y + bar_h - 5.0,
                    num(*v as f64)
                );
            }
            x += w;
        }
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
            left + pw + 6.0,
            y + bar_h - 5.0,
            num(total as f64)
        );
    }
    let ly0 = MT + rows.len() as f64 * (bar_h + gap) + 14.0;
    for (i, n) in names.iter().enumerate() {
        let lx = left + (i % 4) as f64 * (pw / 4.0);
        let ly = ly0 + (i / 4) as f64 * 14.0;
        let _ = write!(
            o,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{ly:.1}" class="legend">{}</text>"#,
            ly - 9.0,
            segment_color(n, i),
            lx + 14.0,
            esc(n)
        );
    }
    o.push_str("</svg>");
    o
}

/// Percentile `p` (0..100) on the spectrum's x axis: −log10(1 − p/100),
/// so 90 → 1, 99 → 2, 99.9 → 3.
fn spectrum_x(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.999_999)).log10()
}

fn class_order(name: &str) -> usize {
    Class::from_name(name).map_or(usize::MAX, Class::index)
}

/// The whole report page.
pub fn page(s: &Summary) -> String {
    let mut charts: Vec<String> = Vec::new();
    let tl = s.timeline.clone().unwrap_or_default();
    let p = &tl.points;
    let series = |name: &str, f: &dyn Fn(&report::TimePoint) -> Option<f64>| Series {
        name: name.into(),
        points: p.iter().filter_map(|x| f(x).map(|v| (x.t, v))).collect(),
    };
    let bucket = tl.bucket_s;
    charts.push(
        Chart {
            title: "Connected viewers",
            x_label: "seconds",
            y_label: "viewers",
            y_scale: Scale::Linear,
            x_ticks: None,
            series: vec![series("viewers", &|x| Some(x.viewers as f64))],
        }
        .svg(),
    );
    charts.push(
        Chart {
            title: "Chat and lead throughput",
            x_label: &format!("seconds ({bucket} s buckets)"),
            y_label: "per second",
            y_scale: Scale::Linear,
            x_ticks: None,
            series: vec![
                series("chat sent/s", &|x| Some(x.chat_per_s)),
                series("chat acks/s", &|x| Some(x.chat_acks_per_s)),
                series("chat rejected/s", &|x| Some(x.chat_rejected_per_s)),
                series("leads sent/s", &|x| Some(x.lead_per_s)),
                series("leads flagged/s", &|x| Some(x.lead_flagged_per_s)),
            ],
        }
        .svg(),
    );
    charts.push(
        Chart {
            title: "Like throughput",
            x_label: &format!("seconds ({bucket} s buckets)"),
            y_label: "per second",
            y_scale: Scale::Linear,
            x_ticks: None,
            series: vec![
                series("taps/s", &|x| Some(x.taps_per_s)),
                series("Like frames/s", &|x| Some(x.like_frames_per_s)),
            ],
        }
        .svg(),
    );
    let ms = |v: u64| v as f64 / 1000.0;
    charts.push(
        Chart {
            title: "Chat ack latency over time (by intended send time)",
            x_label: "seconds",
            y_label: "ms (log)",
            y_scale: Scale::Log,
            x_ticks: None,
            series: vec![
                series("p50", &|x| x.chat.as_ref().map(|l| ms(l.p50))),
                series("p90", &|x| x.chat.as_ref().map(|l| ms(l.p90))),
                series("p99", &|x| x.chat.as_ref().map(|l| ms(l.p99))),
                series("max", &|x| x.chat.as_ref().map(|l| ms(l.max))),
            ],
        }
        .svg(),
    );
    charts.push(
        Chart {
            title: "Lead ack latency over time (durable: acked after commit)",
            x_label: "seconds",
            y_label: "ms (log)",
            y_scale: Scale::Log,
            x_ticks: None,
            series: vec![
                series("p50", &|x| x.lead.as_ref().map(|l| ms(l.p50))),
                series("p99", &|x| x.lead.as_ref().map(|l| ms(l.p99))),
                series("max", &|x| x.lead.as_ref().map(|l| ms(l.max))),
            ],
        }
        .svg(),
    );
    let sp = s.latency_spectrum.clone().unwrap_or_default();
    let spec = |name: &str, v: &[[f64; 2]]| Series {
        name: name.into(),
        points: v
            .iter()
            .map(|[p, us]| (spectrum_x(*p), us / 1000.0))
            .collect(),
    };
    let ticks: Vec<(f64, String)> = [0.0, 90.0, 99.0, 99.9, 99.99, 99.999]
        .iter()
        .map(|p| (spectrum_x(*p), format!("{p}%")))
        .collect();
    charts.push(
        Chart {
            title: "Latency distribution (percentile spectrum, whole run)",
            x_label: "percentile",
            y_label: "ms (log)",
            y_scale: Scale::Log,
            x_ticks: Some(ticks),
            series: vec![
                spec("chat", &sp.chat),
                spec("lead", &sp.lead),
                spec("withdraw", &sp.withdraw),
                spec("handshake", &sp.handshake),
                spec("join (from intended time)", &sp.join),
            ]
            .into_iter()
            .filter(|x| x.name != "withdraw" || !x.points.is_empty())
            .collect(),
        }
        .svg(),
    );

    // Verdicts by class: from ClickHouse when verified, else from the acks.
    let mut classes: Vec<(&String, &report::ClassSummary)> = s.classes.iter().collect();
    classes.sort_by_key(|(n, _)| class_order(n));
    let mut bar_rows = Vec::new();
    let bars_title;
    if let Some(v) = &s.verify {
        bars_title = "Verdicts by class (ClickHouse rows: passed / blocked by reason / busy)";
        let mut rows = v.classes.clone();
        rows.sort_by_key(|e| (e.class.index(), e.kind.clone()));
        for e in rows
            .iter()
            .filter(|e| e.kind != "like" && e.passed + e.blocked + e.busy > 0)
        {
            let mut segs = vec![("passed".to_owned(), e.passed)];
            if e.kind == "lead" {
                // A lead row can carry several reasons: bar by verdict.
                for (verdict, n) in &e.verdicts {
                    if verdict != "accepted" {
                        segs.push((format!("lead {verdict}"), *n));
                    }
                }
            } else {
                for (r, n) in &e.reasons {
                    segs.push((r.clone(), *n));
                }
            }
            segs.push(("busy".into(), e.busy));
            bar_rows.push((format!("{} {}", e.class, e.kind), segs));
        }
    } else {
        bars_title = "Verdicts by class (acks as the viewers saw them)";
        for (name, c) in &classes {
            for (kind, a, sent, unacked) in [
                ("chat", &c.acked.chat, c.sent.chat, c.unacked.chat),
                ("lead", &c.acked.lead, c.sent.lead, c.unacked.lead),
            ] {
                if sent == 0 {
                    continue;
                }
                bar_rows.push((
                    format!("{name} {kind}"),
                    vec![
                        ("accepted".into(), a.accepted),
                        ("rejected".into(), a.rejected),
                        ("suspect".into(), a.suspect),
                        ("duplicate".into(), a.duplicate),
                        ("unacked".into(), unacked),
                    ],
                ));
            }
        }
    }
    let bars = stacked_bars(bars_title, &bar_rows);

    let title = match &s.ground_truth {
        Some(g) if !g.description.is_empty() => g.description.clone(),
        _ => "roomgate-loadgen run".into(),
    };
    let scenario = s
        .ground_truth
        .as_ref()
        .and_then(|g| g.scenario.clone())
        .unwrap_or_else(|| "(basic: no --scenario)".into());
    let verdict = match &s.verify {
        Some(v) if v.passed => r#"<span class="pass">verify PASSED</span>"#.to_owned(),
        Some(_) => r#"<span class="fail">verify FAILED</span>"#.to_owned(),
        None => r#"<span class="na">not verified</span>"#.to_owned(),
    };
    let l = &s.latency_us;
    let mut kpis = String::new();
    for (k, v) in [
        (
            "viewers connected",
            format!("{} / {}", s.connections.connected, s.connections.attempted),
        ),
        (
            "load",
            format!("{:.0} s ({:.0} s wall)", s.duration_s, s.wall_s),
        ),
        (
            "sent",
            format!(
                "{} chat · {} taps · {} leads",
                s.sent.chat, s.sent.like, s.sent.lead
            ),
        ),
        (
            "chat p50 / p99",
            format!("{:.1} / {:.1} ms", ms(l.chat.p50), ms(l.chat.p99)),
        ),
        (
            "lead p50 / p99",
            format!("{:.1} / {:.1} ms", ms(l.lead.p50), ms(l.lead.p99)),
        ),
        ("handshake p99", format!("{:.1} ms", ms(l.handshake.p99))),
    ]
    .into_iter()
    .chain((s.withdrawals.sent > 0).then(|| {
        let w = &s.withdrawals;
        (
            "withdrawals",
            format!(
                "{} sent · {} accepted · {} rejected · {} unacked · p50 / p99 {:.1} / {:.1} ms",
                w.sent,
                w.acked.accepted,
                w.acked.rejected,
                w.unacked,
                ms(l.withdraw.p50),
                ms(l.withdraw.p99)
            ),
        )
    })) {
        let _ = write!(
            kpis,
            r#"<div class="kpi"><div class="k">{}</div><div class="v">{}</div></div>"#,
            esc(k),
            esc(&v)
        );
    }
    let mut quality = String::new();
    if let Some(v) = &s.verify {
        if !v.quality.is_empty() {
            quality.push_str("<h2>Guard quality per abusive class</h2><table><tr><th>class</th><th>kind</th><th>events</th><th>TP (blocked)</th><th>FN (passed)</th><th>FP (legit blocked by its rules)</th><th>recall</th><th>precision</th><th>passed</th><th>tolerance</th></tr>");
            for q in &v.quality {
                let _ = write!(
                    quality,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.1}%</td><td>{:.1}%</td></tr>",
                    q.class,
                    q.kind,
                    q.events,
                    q.blocked,
                    q.passed,
                    q.legit_blocked,
                    q.recall,
                    q.precision,
                    q.passed_share * 100.0,
                    q.tolerance * 100.0
                );
            }
            quality.push_str("</table>");
        }
        quality.push_str(
            r#"<h2>Checks</h2><table class="left"><tr><th></th><th>check</th><th>detail</th></tr>"#,
        );
        for c in &v.checks {
            let _ = write!(
                quality,
                r#"<tr><td class="{}">{}</td><td>{}</td><td>{}</td></tr>"#,
                if c.ok { "pass" } else { "fail" },
                if c.ok { "ok" } else { "FAIL" },
                esc(&c.name),
                esc(&c.detail)
            );
        }
        quality.push_str("</table>");
    }
    let verify_text = s
        .verify
        .as_ref()
        .map(|v| format!("<h2>Verify report</h2><pre>{}</pre>", esc(&verify::text(v))))
        .unwrap_or_default();

    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>roomgate-loadgen: {title}</title>
<style>
body{{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:20px;color:#222;background:#fafafa}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:16px;margin:22px 0 8px}}
.sub{{color:#666;margin-bottom:12px}}
.kpis{{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}}
.kpi{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}}
.kpi .k{{color:#666;font-size:12px}} .kpi .v{{font-size:16px;font-weight:600}}
.grid{{display:flex;flex-wrap:wrap;gap:20px}}
svg.chart{{background:#fff;border:1px solid #ddd;border-radius:6px}}
svg .title{{font-size:13px;font-weight:600;text-anchor:middle}}
svg .grid{{stroke:#eee}} svg .frame{{fill:none;stroke:#bbb}}
svg .ytick{{font-size:10px;text-anchor:end;fill:#555}} svg .xtick{{font-size:10px;text-anchor:middle;fill:#555}}
svg .xlabel{{font-size:11px;text-anchor:middle;fill:#444}} svg .ylabel{{font-size:11px;text-anchor:middle;fill:#444}}
svg .legend{{font-size:10px;fill:#333}} svg .barlabel{{font-size:10px;fill:#fff;text-anchor:middle}}
svg .empty{{font-size:13px;fill:#999;text-anchor:middle}}
table{{border-collapse:collapse;background:#fff}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}
td:nth-child(2),th,table.left td{{text-align:left}}
.pass{{color:#17803d;font-weight:600}} .fail{{color:#c62828;font-weight:600}} .na{{color:#666}}
pre{{background:#fff;border:1px solid #ddd;padding:10px;overflow:auto;font-size:12px}}
</style></head><body>
<h1>{title}</h1>
<div class="sub">scenario {scenario} · seed {seed} · {verdict}</div>
<div class="kpis">{kpis}</div>
<div class="grid">{charts}</div>
<h2>Verdicts by class</h2>
<div>{bars}</div>
{quality}
<h2>Summary</h2>
<pre>{text}</pre>
{verify_text}
<p class="sub">Generated by roomgate-loadgen. Latency is measured from each event's intended send time (open loop, no coordinated omission). Self-contained: no scripts, no external resources.</p>
</body></html>
"#,
        title = esc(&title),
        scenario = esc(&scenario),
        seed = s.ground_truth.as_ref().map_or(0, |g| g.seed),
        charts = charts.join("\n"),
        text = esc(&report::text(s)),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            linear_ticks(0.0, 100.0, 5),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        let t = linear_ticks(0.0, 7.3, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.last().unwrap() <= &7.3);
        assert_eq!(num(1500.0), "1.5k");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(7.0), "7");
        assert_eq!(num(2.5), "2.5");
        assert!((spectrum_x(99.0) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn page_is_self_contained_and_escaped() {
        let mut s = Summary {
            ground_truth: Some(report::GroundTruth {
                description: "<script>alert(1)</script>".into(),
                ..Default::default()
            }),
            ..Summary::default()
        };
        s.timeline = Some(report::Timeline {
            bucket_s: 1.0,
            points: (1..=5)
                .map(|t| report::TimePoint {
                    t: f64::from(t),
                    chat_per_s: 10.0,
                    viewers: 100,
                    chat: Some(report::BucketLatency {
                        p50: 1000,
                        p90: 2000,
                        p99: 3000,
                        max: 9000,
                        count: 10,
                    }),
                    ..Default::default()
                })
                .collect(),
        });
        let h = page(&s);
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(!h.contains("<script"), "no script, and titles escaped");
        assert!(h.contains("&lt;script&gt;"));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "no external resource"
        );
        assert!(h.matches("<svg").count() >= 7, "every chart is drawn");
        assert!(h.contains("<polyline"));
        assert!(!h.contains("withdrawals"), "no withdrawal KPI without any");
        s.withdrawals.sent = 4;
        s.withdrawals.acked.accepted = 4;
        s.latency_us.withdraw.p99 = 2500;
        let h = page(&s);
        assert!(
            h.contains("4 sent · 4 accepted · 0 rejected · 0 unacked"),
            "{h}"
        );
    }
}
