//! Dependency-free SVG line charts for simulation reports.
//!
//! Reports (cost, SLO attainment, carbon, utilisation by provider, commitment
//! burn-down) need charts a person can open in a browser without a plotting
//! stack. The output is deterministic (same chart, byte-identical SVG) so
//! reports can be diffed and checked in.

use std::fmt::Write as _;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 420.0;
const PLOT_LEFT: f64 = 80.0;
const PLOT_RIGHT: f64 = 595.0;
const PLOT_TOP: f64 = 48.0;
const PLOT_BOTTOM: f64 = 350.0;
const LEGEND_X: f64 = 612.0;
const LEGEND_ROW: f64 = 20.0;
/// Legend names longer than this are cut so they stay inside the document.
const LEGEND_CHARS: usize = 22;
/// Data magnitudes beyond this are clipped so range arithmetic cannot overflow.
const MAX_MAGNITUDE: f64 = 1e300;
/// The clip area reaches this far past the plot so lines on its edge are not halved.
const CLIP_MARGIN: f64 = 3.0;
/// Pixel coordinates are clamped to this so far-off points stay short and finite.
const MAX_PIXEL: f64 = 1e5;

/// How the reference line is drawn, in the plot and as its legend swatch.
const REFERENCE_STYLE: &str = "stroke=\"#555555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"";

/// Okabe–Ito palette (colorblind-safe), ordered so the first few lines differ most.
const PALETTE: [&str; 8] = [
    "#0072B2", // blue
    "#D55E00", // vermillion
    "#009E73", // bluish green
    "#E69F00", // orange
    "#CC79A7", // reddish purple
    "#56B4E9", // sky blue
    "#000000", // black
    "#F0E442", // yellow
];

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// `(x, y)` points drawn in the order given; non-finite points break the line.
    pub points: Vec<(f64, f64)>,
}

/// A line chart: title, axis labels, series; optional fixed y range (e.g. 0..=1 for
/// shares) and optional dashed horizontal reference line with a label (e.g. an SLO
/// target or a commitment total).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Shown centred above the plot.
    pub title: String,
    /// Shown below the x axis.
    pub x_label: String,
    /// Shown rotated beside the y axis.
    pub y_label: String,
    /// Lines to draw; colors cycle through an 8-color colorblind-safe palette.
    pub series: Vec<Series>,
    /// Fixed `(min, max)` for the y axis, so shares or attainment are not zoomed
    /// misleadingly; data outside it is clipped. `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// A dashed horizontal line at `value`, labelled in the legend, e.g. an SLO
    /// target; an automatic y range always includes it, a fixed one omits it when
    /// it falls outside.
    pub reference: Option<(f64, String)>,
}

impl Chart {
    /// Render as a standalone SVG document (width 800, height 420).
    pub fn to_svg(&self) -> String {
        let lines: Vec<Vec<Vec<(f64, f64)>>> =
            self.series.iter().map(|s| segments(&s.points)).collect();
        let points = || lines.iter().flatten().flatten();

        let x_axis = match min_max(points().map(|p| p.0)) {
            Some((lo, hi)) => nice_axis(lo, hi, false),
            None => nice_axis(0.0, 1.0, false),
        };
        let reference = self
            .reference
            .as_ref()
            .filter(|(v, _)| v.is_finite())
            .map(|(v, label)| (*v, label.as_str()));
        let fixed = self.y_range.filter(|(a, b)| a.is_finite() && b.is_finite());
        let y_axis = match fixed {
            Some((a, b)) => nice_axis(a, b, true),
            None => {
                let ys = points().map(|p| p.1).chain(reference.map(|r| r.0));
                match min_max(ys) {
                    Some((lo, hi)) => {
                        let (lo, hi) = include_zero(lo, hi);
                        nice_axis(lo, hi, false)
                    }
                    None => nice_axis(0.0, 1.0, false),
                }
            }
        };
        let px = |x: f64| map(x, x_axis.lo, x_axis.hi, PLOT_LEFT, PLOT_RIGHT);
        let py = |y: f64| map(y, y_axis.lo, y_axis.hi, PLOT_BOTTOM, PLOT_TOP);
        let clip_id = format!("stratus-plot-{:016x}", self.fingerprint());

        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"Helvetica, Arial, sans-serif\" \
             fill=\"#222222\">"
        );
        let _ = writeln!(out, "<title>{}</title>", escape(&self.title));
        let _ = writeln!(
            out,
            "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
        );
        let _ = writeln!(
            out,
            "<defs><clipPath id=\"{clip_id}\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" \
             height=\"{:.1}\"/></clipPath></defs>",
            PLOT_LEFT - CLIP_MARGIN,
            PLOT_TOP - CLIP_MARGIN,
            PLOT_RIGHT - PLOT_LEFT + 2.0 * CLIP_MARGIN,
            PLOT_BOTTOM - PLOT_TOP + 2.0 * CLIP_MARGIN
        );
        text(
            &mut out,
            WIDTH / 2.0,
            28.0,
            "middle",
            "font-size=\"16\" font-weight=\"bold\"",
            &truncate(&self.title, 72),
        );

        // Grid lines, then tick marks and labels.
        out.push_str("<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n");
        for &t in &x_axis.ticks {
            let x = px(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{PLOT_TOP:.1}\" x2=\"{x:.1}\" y2=\"{PLOT_BOTTOM:.1}\"/>"
            );
        }
        for &t in &y_axis.ticks {
            let y = py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{PLOT_LEFT:.1}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT:.1}\" y2=\"{y:.1}\"/>"
            );
        }
        out.push_str("</g>\n");
        out.push_str("<g stroke=\"#444444\" stroke-width=\"1\">\n");
        let _ = writeln!(
            out,
            "<line x1=\"{PLOT_LEFT:.1}\" y1=\"{PLOT_BOTTOM:.1}\" x2=\"{PLOT_RIGHT:.1}\" \
             y2=\"{PLOT_BOTTOM:.1}\"/>"
        );
        let _ = writeln!(
            out,
            "<line x1=\"{PLOT_LEFT:.1}\" y1=\"{PLOT_TOP:.1}\" x2=\"{PLOT_LEFT:.1}\" \
             y2=\"{PLOT_BOTTOM:.1}\"/>"
        );
        for &t in &x_axis.ticks {
            let x = px(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{PLOT_BOTTOM:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
                PLOT_BOTTOM + 5.0
            );
        }
        for &t in &y_axis.ticks {
            let y = py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{PLOT_LEFT:.1}\" y2=\"{y:.1}\"/>",
                PLOT_LEFT - 5.0
            );
        }
        out.push_str("</g>\n");
        out.push_str("<g font-size=\"11\" fill=\"#444444\">\n");
        for (t, label) in x_axis.ticks.iter().zip(tick_labels(&x_axis)) {
            text(&mut out, px(*t), PLOT_BOTTOM + 18.0, "middle", "", &label);
        }
        for (t, label) in y_axis.ticks.iter().zip(tick_labels(&y_axis)) {
            text(&mut out, PLOT_LEFT - 8.0, py(*t) + 4.0, "end", "", &label);
        }
        out.push_str("</g>\n");

        // Data, clipped to the plot area.
        let _ = writeln!(
            out,
            "<g clip-path=\"url(#{clip_id})\" fill=\"none\" stroke-width=\"2\" \
             stroke-linejoin=\"round\" stroke-linecap=\"round\">"
        );
        for (i, segs) in lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for seg in segs {
                let coords = pixel_coords(seg, &px, &py);
                if let [(x, y)] = coords.as_slice() {
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\" stroke=\"none\"/>"
                    );
                } else {
                    let pts: Vec<String> = coords.iter().map(|(x, y)| format!("{x},{y}")).collect();
                    let _ = writeln!(
                        out,
                        "<polyline points=\"{}\" stroke=\"{color}\"/>",
                        pts.join(" ")
                    );
                }
            }
        }
        out.push_str("</g>\n");
        if lines.iter().flatten().all(|s| s.is_empty()) {
            text(
                &mut out,
                (PLOT_LEFT + PLOT_RIGHT) / 2.0,
                (PLOT_TOP + PLOT_BOTTOM) / 2.0,
                "middle",
                "font-size=\"14\" fill=\"#888888\"",
                "no data",
            );
        }

        // Reference line, drawn over the data; its label goes in the legend so it
        // never collides with a line.
        let reference = reference.filter(|(v, _)| *v >= y_axis.lo && *v <= y_axis.hi);
        if let Some((value, _)) = reference {
            let y = py(value);
            let _ = writeln!(
                out,
                "<line x1=\"{PLOT_LEFT:.1}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT:.1}\" y2=\"{y:.1}\" \
                 {REFERENCE_STYLE}/>"
            );
        }

        // Axis labels.
        text(
            &mut out,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            PLOT_BOTTOM + 44.0,
            "middle",
            "font-size=\"12\"",
            &truncate(&self.x_label, 80),
        );
        let _ = writeln!(
            out,
            "<text transform=\"translate(18.0,{:.1}) rotate(-90)\" text-anchor=\"middle\" \
             font-size=\"12\">{}</text>",
            (PLOT_TOP + PLOT_BOTTOM) / 2.0,
            escape(&truncate(&self.y_label, 48))
        );

        // Legend, to the right of the plot so it never covers data.
        let mut entries: Vec<(String, String)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = if s.name.trim().is_empty() {
                    format!("series {}", i + 1)
                } else {
                    s.name.clone()
                };
                let swatch = format!(
                    "stroke=\"{}\" stroke-width=\"3\" stroke-linecap=\"round\"",
                    PALETTE[i % PALETTE.len()]
                );
                (name, swatch)
            })
            .collect();
        if let Some((_, label)) = reference {
            entries.push((label.to_string(), REFERENCE_STYLE.to_string()));
        }
        if !entries.is_empty() {
            let rows = ((PLOT_BOTTOM - PLOT_TOP) / LEGEND_ROW) as usize;
            if entries.len() > rows {
                let hidden = entries.len() - (rows - 1);
                entries.truncate(rows - 1);
                entries.push((format!("+{hidden} more"), String::new()));
            }
            out.push_str("<g font-size=\"12\">\n");
            for (i, (name, swatch)) in entries.iter().enumerate() {
                let y = PLOT_TOP + 8.0 + i as f64 * LEGEND_ROW;
                if !swatch.is_empty() {
                    let _ = writeln!(
                        out,
                        "<line x1=\"{LEGEND_X:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" {swatch}/>",
                        LEGEND_X + 18.0
                    );
                }
                let name = truncate_middle(name, LEGEND_CHARS);
                text(&mut out, LEGEND_X + 24.0, y + 4.0, "start", "", &name);
            }
            out.push_str("</g>\n");
        }
        out.push_str("</svg>\n");
        out
    }

    /// A stable hash of the chart, so several charts inlined in one HTML page get
    /// distinct clip-path ids while the output stays deterministic.
    fn fingerprint(&self) -> u64 {
        let mut h = Fnv::default();
        h.str(&self.title);
        h.str(&self.x_label);
        h.str(&self.y_label);
        for s in &self.series {
            h.str(&s.name);
            for &(x, y) in &s.points {
                h.f64(x);
                h.f64(y);
            }
        }
        if let Some((a, b)) = self.y_range {
            h.f64(a);
            h.f64(b);
        }
        if let Some((v, label)) = &self.reference {
            h.f64(*v);
            h.str(label);
        }
        h.0
    }
}

/// FNV-1a, enough for an id; `std`'s hasher is not guaranteed stable across releases.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn str(&mut self, s: &str) {
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.bytes(&v.to_bits().to_le_bytes());
    }
}

/// Split points into runs of finite points; a NaN or infinite value breaks the line.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            current.push((x, y));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Pixel coordinates at fixed precision, dropping consecutive duplicates so long
/// series stay compact.
fn pixel_coords(
    seg: &[(f64, f64)],
    px: &impl Fn(f64) -> f64,
    py: &impl Fn(f64) -> f64,
) -> Vec<(String, String)> {
    let mut coords: Vec<(String, String)> = Vec::with_capacity(seg.len());
    for &(x, y) in seg {
        let c = (coord(px(x)), coord(py(y)));
        if coords.last() != Some(&c) {
            coords.push(c);
        }
    }
    coords
}

fn coord(v: f64) -> String {
    let s = format!("{v:.1}");
    if s == "-0.0" {
        "0.0".to_string()
    } else {
        s
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Linear map from data to pixels, clamped so the result is always finite and short.
fn map(v: f64, lo: f64, hi: f64, from: f64, to: f64) -> f64 {
    let t = (v - lo) / (hi - lo);
    let p = from + t * (to - from);
    if p.is_nan() {
        from
    } else {
        p.clamp(-MAX_PIXEL, MAX_PIXEL)
    }
}

/// Start the y axis at zero when the data's spread is large relative to its size
/// (the usual spreadsheet rule), so cost lines are not visually exaggerated, while
/// a narrow band such as 0.97..0.99 stays zoomed in.
fn include_zero(lo: f64, hi: f64) -> (f64, f64) {
    if lo > 0.0 && (hi - lo) / hi >= 1.0 / 6.0 {
        (0.0, hi)
    } else if hi < 0.0 && (hi - lo) / -lo >= 1.0 / 6.0 {
        (lo, 0.0)
    } else {
        (lo, hi)
    }
}

/// An axis: its extent and tick positions, every tick a multiple of `step`.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

/// Order, clip and widen a range so it is finite with `lo < hi`; a flat range
/// (all values equal) is padded around its value.
fn normalise_range(a: f64, b: f64) -> (f64, f64) {
    let a = if a.is_finite() { a } else { 0.0 };
    let b = if b.is_finite() { b } else { 0.0 };
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let (lo, hi) = (
        lo.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE),
        hi.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE),
    );
    let span = hi - lo;
    let magnitude = lo.abs().max(hi.abs());
    if span <= magnitude * 1e-9 || span < 1e-200 {
        let centre = lo / 2.0 + hi / 2.0;
        let pad = if centre.abs() < 1e-200 {
            1.0
        } else {
            centre.abs() * 0.5
        };
        (centre - pad, centre + pad)
    } else {
        (lo, hi)
    }
}

/// Choose "nice" ticks (1, 2, 2.5 or 5 × 10^k apart), 5–8 of them. With `fixed`
/// the range is kept and ticks fall inside it when that is possible; otherwise the
/// range is widened outward to the nearest ticks, preferring the tightest fit.
fn nice_axis(lo: f64, hi: f64, fixed: bool) -> Axis {
    let (lo, hi) = normalise_range(lo, hi);
    let span = hi - lo;
    let base = span.log10().floor() as i32;
    let mut best: Option<(f64, Axis)> = None;
    for e in (base - 2)..=(base + 1) {
        for mantissa in [1.0, 2.0, 2.5, 5.0] {
            let step = mantissa * 10f64.powi(e);
            let (ql, qh) = (lo / step, hi / step);
            // A fixed range keeps its ends when 5–8 ticks fit inside it; otherwise
            // (an odd range such as -0.0033..0.0053) it widens like a fitted one.
            let inward = ((ql - slack(ql)).ceil(), (qh + slack(qh)).floor());
            let outward = ((ql + slack(ql)).floor(), (qh - slack(qh)).ceil());
            let options: &[((f64, f64), bool)] = if fixed {
                &[(inward, true), (outward, false)]
            } else {
                &[(outward, false)]
            };
            for &((a, b), keep_ends) in options {
                let count = b - a + 1.0;
                if !(1.0..=100.0).contains(&count) {
                    continue;
                }
                let (axis_lo, axis_hi) = if keep_ends {
                    (lo, hi)
                } else {
                    (a * step, b * step)
                };
                let outside = if count < 5.0 {
                    5.0 - count
                } else {
                    (count - 8.0).max(0.0)
                };
                let waste = (axis_hi - axis_lo) / span - 1.0;
                let widened = if fixed && !keep_ends { 1.0 } else { 0.0 };
                let odd = if mantissa == 2.5 { 0.1 } else { 0.0 };
                let score = outside * 10.0 + widened + waste + odd + 0.02 * (count - 6.0).abs();
                if best.as_ref().is_none_or(|(s, _)| score < *s) {
                    let ticks = (0..count as usize)
                        .map(|i| {
                            let v = (a + i as f64) * step;
                            if v.abs() < step * 1e-6 {
                                0.0
                            } else {
                                v
                            }
                        })
                        .collect();
                    best = Some((
                        score,
                        Axis {
                            lo: axis_lo,
                            hi: axis_hi,
                            step,
                            ticks,
                        },
                    ));
                }
            }
        }
    }
    best.map(|(_, axis)| axis).unwrap_or(Axis {
        lo,
        hi,
        step: span,
        ticks: vec![lo, hi],
    })
}

/// Tolerance for floating-point noise when snapping a range end to a tick.
fn slack(q: f64) -> f64 {
    q.abs().max(1.0) * 1e-9
}

/// Compact tick labels: shared SI suffix (k, M, G, T), fixed decimals from the step
/// with trailing zeros dropped, scientific notation only for extreme magnitudes.
fn tick_labels(axis: &Axis) -> Vec<String> {
    let max_abs = axis.ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    if max_abs == 0.0 {
        return axis.ticks.iter().map(|_| "0".to_string()).collect();
    }
    if !(1e-4..1e15).contains(&max_abs) {
        let exp = max_abs.log10().floor() as i32;
        let scale = 10f64.powi(exp);
        let decimals = decimals_for(axis.step / scale);
        return axis
            .ticks
            .iter()
            .map(|&t| {
                let m = trim(format!("{:.*}", decimals, t / scale));
                if m == "0" {
                    m
                } else {
                    format!("{m}e{exp}")
                }
            })
            .collect();
    }
    let (scale, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(s, _)| max_abs >= *s)
        .unwrap_or((1.0, ""));
    let decimals = decimals_for(axis.step / scale);
    axis.ticks
        .iter()
        .map(|&t| {
            let m = trim(format!("{:.*}", decimals, t / scale));
            if m == "0" {
                m
            } else {
                format!("{m}{suffix}")
            }
        })
        .collect()
}

/// Fewest decimals that show `step` exactly (e.g. 0.25 → 2, 2.5 → 1, 50 → 0).
fn decimals_for(step: f64) -> usize {
    (0..12)
        .find(|&d| {
            let m = step * 10f64.powi(d as i32);
            (m - m.round()).abs() < 1e-6 * m.max(1.0)
        })
        .unwrap_or(12)
}

/// Drop trailing zeros after a decimal point, and the sign of a zero.
fn trim(s: String) -> String {
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, attrs: &str, content: &str) {
    let sep = if attrs.is_empty() { "" } else { " " };
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\"{sep}{attrs}>{}</text>",
        escape(content)
    );
}

/// Cut to at most `max` characters, marking the cut with an ellipsis.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Cut to at most `max` characters by eliding the middle, so legend names that
/// share a long prefix (e.g. `provider-eu-west-1`, `provider-eu-west-2`) stay distinct.
fn truncate_middle(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let tail = max.saturating_sub(1) / 2;
    let head = max.saturating_sub(1) - tail;
    let mut t: String = s.chars().take(head).collect();
    t.push('…');
    t.extend(s.chars().skip(count - tail));
    t
}

/// Escape text for XML content and attributes; control characters XML 1.0 forbids
/// become spaces.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the output is well formed for what `to_svg` emits: one root, every
    /// start tag closed in order, no stray `<`/`>`/`&` in text, no NaN or infinity.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "starts with <svg");
        assert!(svg.ends_with("</svg>\n"), "ends with </svg>");
        for bad in ["NaN", "nan", "inf"] {
            assert!(!svg.contains(bad), "output contains {bad}:\n{svg}");
        }
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let between = &rest[..open];
            assert!(!between.contains('>'), "stray '>' in {between:?}");
            check_entities(between);
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            } else {
                let name = tag.split_whitespace().next().expect("tag name");
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
                check_attributes(tag);
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1, "exactly one root element");
        assert_eq!(rest, "\n");
    }

    fn check_entities(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare '&' in {text:?}"
            );
        }
    }

    fn check_attributes(tag: &str) {
        let quotes = tag.matches('"').count();
        assert_eq!(quotes % 2, 0, "unbalanced quotes in {tag:?}");
        for (i, part) in tag.split('"').enumerate() {
            if i % 2 == 1 {
                check_entities(part);
            }
        }
    }

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_string(),
            points: points.to_vec(),
        }
    }

    fn sample() -> Chart {
        let days = 0..=30;
        let cost = |d: i32, base: f64, slope: f64| {
            let d = f64::from(d);
            (d, base + slope * d + 400.0 * (d * 0.7).sin())
        };
        Chart {
            title: "Daily cost by provider — baseline vs. carbon-aware policy".into(),
            x_label: "day of simulation".into(),
            y_label: "cost (USD / day)".into(),
            series: vec![
                series(
                    "aws",
                    &days
                        .clone()
                        .map(|d| cost(d, 12_000.0, 80.0))
                        .collect::<Vec<_>>(),
                ),
                series(
                    "gcp",
                    &days
                        .clone()
                        .map(|d| cost(d, 8_500.0, 40.0))
                        .collect::<Vec<_>>(),
                ),
                series(
                    "azure (spot & reserved)",
                    &days.map(|d| cost(d, 4_000.0, 120.0)).collect::<Vec<_>>(),
                ),
            ],
            y_range: None,
            reference: Some((14_000.0, "daily budget <$14k>".into())),
        }
    }

    fn ticks(lo: f64, hi: f64, fixed: bool) -> Vec<String> {
        tick_labels(&nice_axis(lo, hi, fixed))
    }

    #[test]
    fn nice_ticks_on_common_ranges() {
        assert_eq!(
            ticks(0.0, 1.0, true),
            ["0", "0.2", "0.4", "0.6", "0.8", "1"]
        );
        assert_eq!(ticks(0.0, 10.0, false), ["0", "2", "4", "6", "8", "10"]);
        assert_eq!(
            ticks(0.0, 0.3, false),
            ["0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3"]
        );
        assert_eq!(
            ticks(3.0, 97.0, false),
            ["0", "20", "40", "60", "80", "100"]
        );
        assert_eq!(
            ticks(0.0, 12_345.0, false),
            ["0", "2.5k", "5k", "7.5k", "10k", "12.5k"]
        );
        assert_eq!(
            ticks(0.0, 3.4e6, false),
            ["0", "0.5M", "1M", "1.5M", "2M", "2.5M", "3M", "3.5M"]
        );
        assert_eq!(ticks(-1.0, 1.0, false), ["-1", "-0.5", "0", "0.5", "1"]);
        assert_eq!(
            ticks(0.95, 1.0, true),
            ["0.95", "0.96", "0.97", "0.98", "0.99", "1"]
        );
    }

    #[test]
    fn nice_ticks_always_five_to_eight_and_nice() {
        // Deterministic pseudo-random ranges across many magnitudes.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..5_000 {
            let scale = 10f64.powf(next() * 30.0 - 15.0);
            let a = (next() - 0.5) * scale;
            let b = a + next() * scale + scale * 1e-3;
            for fixed in [false, true] {
                let axis = nice_axis(a, b, fixed);
                let n = axis.ticks.len();
                assert!((5..=8).contains(&n), "{n} ticks for {a}..{b} fixed={fixed}");
                let tol = (b - a) * 1e-9;
                assert!(
                    axis.lo <= a + tol && axis.hi >= b - tol,
                    "{axis:?} misses {a}..{b}"
                );
                let exp = axis.step.log10().floor();
                let mantissa = axis.step / 10f64.powf(exp);
                assert!(
                    [1.0, 2.0, 2.5, 5.0]
                        .iter()
                        .any(|m| (mantissa - m).abs() < 1e-9 * m),
                    "step {} not nice",
                    axis.step
                );
                for label in tick_labels(&axis) {
                    assert!(label.len() <= 12, "label {label:?} too long for {a}..{b}");
                }
            }
        }
    }

    #[test]
    fn labels_have_no_float_noise() {
        assert_eq!(
            ticks(0.1, 0.7, true),
            ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
        );
        assert_eq!(tick_labels(&nice_axis(0.0, 1.2e3, false))[1], "0.2k");
        assert_eq!(ticks(0.0, 5e-6, false)[1], "1e-6");
        assert_eq!(ticks(0.0, 2e16, false).last().unwrap(), "2e16");
        assert_eq!(decimals_for(0.25), 2);
        assert_eq!(decimals_for(2.5), 1);
        assert_eq!(decimals_for(50.0), 0);
    }

    #[test]
    fn sample_chart_is_well_formed() {
        let svg = sample().to_svg();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("stroke-width=\"2\""));
        assert!(svg.contains("fill=\"#ffffff\""));
        assert!(svg.contains("stroke-dasharray"));
        for color in &PALETTE[..3] {
            assert!(svg.contains(color));
        }
    }

    #[test]
    fn text_is_escaped() {
        let chart = Chart {
            title: "a & b < c > d \"e\"".into(),
            x_label: "<x>".into(),
            y_label: "y&y".into(),
            series: vec![series("</text><script>", &[(0.0, 1.0), (1.0, 2.0)])],
            reference: Some((1.5, "\"target\" & <more>\u{0}".into())),
            ..Chart::default()
        };
        let svg = chart.to_svg();
        assert_well_formed(&svg);
        assert!(svg.contains("a &amp; b &lt; c &gt; d &quot;e&quot;"));
        assert!(svg.contains("&lt;/text&gt;&lt;script&gt;"));
        assert!(svg.contains("&quot;target&quot; &amp; &lt;more&gt; "));
        assert!(!svg.contains("<script>"));
        assert_eq!(escape("&<>\""), "&amp;&lt;&gt;&quot;");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate_middle("provider-eu-west-1", 9), "prov…st-1");
        assert_eq!(truncate_middle("åßç", 3), "åßç");
    }

    #[test]
    fn edge_cases_render_without_nan() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let cases = vec![
            Chart::default(),
            Chart {
                series: vec![series("empty", &[])],
                ..Chart::default()
            },
            Chart {
                series: vec![series("one", &[(3.0, 7.0)])],
                ..Chart::default()
            },
            Chart {
                series: vec![series("flat", &[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)])],
                ..Chart::default()
            },
            Chart {
                series: vec![series("zero", &[(0.0, 0.0), (0.0, 0.0)])],
                ..Chart::default()
            },
            Chart {
                series: vec![series(
                    "holes",
                    &[
                        (0.0, 1.0),
                        (1.0, nan),
                        (2.0, 3.0),
                        (inf, 4.0),
                        (4.0, 2.0),
                        (5.0, -inf),
                    ],
                )],
                ..Chart::default()
            },
            Chart {
                series: vec![series("all bad", &[(nan, nan), (inf, 1.0)])],
                reference: Some((nan, "nan ref".into())),
                y_range: Some((nan, inf)),
                ..Chart::default()
            },
            Chart {
                series: vec![series(
                    "huge",
                    &[(-f64::MAX, f64::MAX), (f64::MAX, -f64::MAX)],
                )],
                ..Chart::default()
            },
            Chart {
                series: vec![series("tiny", &[(0.0, 1e-310), (1.0, 2e-310)])],
                ..Chart::default()
            },
            Chart {
                series: vec![series("outside", &[(0.0, -3.0), (1.0, 0.5), (2.0, 9.0)])],
                y_range: Some((1.0, 0.0)),
                reference: Some((0.99, "SLO 99%".into())),
                ..Chart::default()
            },
            Chart {
                y_range: Some((0.5, 0.5)),
                ..Chart::default()
            },
            Chart {
                series: (0..20)
                    .map(|i| series(&format!("s{i}"), &[(0.0, f64::from(i)), (1.0, 1.0)]))
                    .collect(),
                ..Chart::default()
            },
        ];
        for chart in cases {
            let svg = chart.to_svg();
            assert_well_formed(&svg);
        }
    }

    #[test]
    fn breaks_and_single_points() {
        let chart = Chart {
            series: vec![series(
                "s",
                &[(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)],
            )],
            ..Chart::default()
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(!Chart::default().to_svg().contains("<polyline"));
        assert!(Chart::default().to_svg().contains("no data"));
    }

    #[test]
    fn flat_series_is_padded_and_centred() {
        let axis = nice_axis(5.0, 5.0, false);
        assert!(axis.lo < 5.0 && axis.hi > 5.0);
        let chart = Chart {
            series: vec![series("flat", &[(0.0, 5.0), (10.0, 5.0)])],
            ..Chart::default()
        };
        let svg = chart.to_svg();
        let mid = (PLOT_TOP + PLOT_BOTTOM) / 2.0;
        assert!(svg.contains(&format!("{PLOT_LEFT:.1},{mid:.1} {PLOT_RIGHT:.1},{mid:.1}")));
    }

    #[test]
    fn legend_sits_outside_plot_and_cycles_colors() {
        let chart = Chart {
            series: (0..10)
                .map(|i| series(&format!("provider-{i}"), &[(0.0, 0.0), (1.0, f64::from(i))]))
                .collect(),
            ..Chart::default()
        };
        let svg = chart.to_svg();
        assert_well_formed(&svg);
        let strokes: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<polyline"))
            .map(|l| {
                l.split("stroke=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(strokes.len(), 10);
        assert_eq!(strokes[8], strokes[0]);
        assert_eq!(strokes[9], strokes[1]);
        // Everything in the legend group starts right of the plot area.
        let legend = svg.split("<g font-size=\"12\">").nth(1).unwrap();
        let legend = legend.split("</g>").next().unwrap();
        let mut items = 0;
        for attr in [" x=\"", " x1=\""] {
            for part in legend.split(attr).skip(1) {
                let x: f64 = part.split('"').next().unwrap().parse().unwrap();
                assert!(x > PLOT_RIGHT, "legend item at x={x} overlaps the plot");
                items += 1;
            }
        }
        assert_eq!(items, 20);
    }

    #[test]
    fn output_is_deterministic() {
        let a = sample().to_svg();
        let b = sample().clone().to_svg();
        assert_eq!(a, b);
        let mut other = sample();
        other.title.push('!');
        assert_ne!(a, other.to_svg());
    }

    #[test]
    #[ignore = "writes /tmp/sample-chart.svg for a visual check"]
    fn write_sample() {
        std::fs::write("/tmp/sample-chart.svg", sample().to_svg()).unwrap();
    }
}
