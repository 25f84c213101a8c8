//! Inline SVG charts, drawn here so the report needs no script, font or
//! image from anywhere: stacked columns over time, horizontal stacked bars,
//! and a donut. Every text that came from the store goes through [`esc`].

use std::fmt::Write;

/// Escapes text for HTML and SVG content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are invalid in XML and mean nothing in a report.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `n` with thousands separators: `12,345`.
pub(crate) fn fmt_int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` in at most four characters or so, for axis labels: `950`, `12.5k`, `3.1M`.
pub(crate) fn fmt_short(n: u64) -> String {
    let f = n as f64;
    let (v, unit) = if n >= 1_000_000_000 {
        (f / 1e9, "G")
    } else if n >= 1_000_000 {
        (f / 1e6, "M")
    } else if n >= 10_000 {
        (f / 1e3, "k")
    } else {
        return fmt_int(n);
    };
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    };
    format!("{}{unit}", s.trim_end_matches(".0"))
}

/// A series of a chart: its name in the legend and its fill.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// A CSS colour.
    pub color: &'a str,
}

/// The chart's coordinate width; the SVG scales to its container.
const W: f64 = 1000.0;
/// Pixels per character of 12px text, to lay labels out without measuring.
const CHAR_W: f64 = 6.6;

/// A round axis maximum at or above `max`, and the step between its ticks.
fn nice_axis(max: u64) -> (u64, u64) {
    if max == 0 {
        return (1, 1);
    }
    let raw = max as f64 / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
        .max(1.0)
        .ceil() as u64;
    (max.div_ceil(step) * step, step)
}

/// Cuts `s` to `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn open_svg(out: &mut String, height: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart-svg" viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="{}">"#,
        esc(title)
    );
}

/// A legend row at the top; returns its height.
fn legend(out: &mut String, series: &[Series]) -> f64 {
    let (mut x, mut y) = (0.0, 14.0);
    out.push_str(r#"<g class="legend">"#);
    for s in series {
        let w = 22.0 + s.name.chars().count() as f64 * CHAR_W + 18.0;
        if x + w > W && x > 0.0 {
            x = 0.0;
            y += 20.0;
        }
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" rx="2" fill="{}"/><text x="{}" y="{y}" class="legend-text">{}</text>"#,
            y - 10.0,
            s.color,
            x + 18.0,
            esc(s.name)
        );
        x += w;
    }
    out.push_str("</g>");
    y + 12.0
}

fn no_data(title: &str) -> String {
    let mut out = String::new();
    open_svg(&mut out, 60.0, title);
    let _ = write!(
        out,
        r##"<rect x="0" y="0" width="{W}" height="60" fill="#f6f7f9"/><text x="{}" y="35" text-anchor="middle" class="muted">No events in this period</text></svg>"##,
        W / 2.0
    );
    out
}

/// Stacked columns, one per bucket (`labels[i]`, `values[i][series]`), with
/// a y axis and a legend. `labels` may hold two lines separated by `\n`.
pub(crate) fn stacked_columns(
    title: &str,
    labels: &[String],
    values: &[Vec<u64>],
    series: &[Series],
) -> String {
    let totals: Vec<u64> = values.iter().map(|v| v.iter().sum()).collect();
    let max = totals.iter().copied().max().unwrap_or(0);
    if labels.is_empty() || max == 0 {
        return no_data(title);
    }
    let mut body = String::new();
    let top = legend(&mut body, series) + 14.0;
    let (left, right, plot_h, bottom) = (58.0, 8.0, 240.0, 40.0);
    let height = top + plot_h + bottom;
    let plot_w = W - left - right;
    let (axis_max, step) = nice_axis(max);
    let y_of = |v: u64| top + plot_h - plot_h * v as f64 / axis_max as f64;

    body.push_str(r#"<g class="axis">"#);
    let mut tick = 0;
    while tick <= axis_max {
        let y = y_of(tick);
        let _ = write!(
            body,
            r#"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            W - right,
            left - 6.0,
            y + 4.0,
            fmt_short(tick)
        );
        tick += step;
    }
    body.push_str("</g>");

    let n = labels.len();
    let slot = plot_w / n as f64;
    let bar_w = (slot * 0.78).clamp(1.0, 56.0);
    // Label at most about every 70 px so neighbours never overlap.
    let every = ((70.0 / slot).ceil() as usize).max(1);
    body.push_str(r#"<g class="bars">"#);
    for (i, (label, vals)) in labels.iter().zip(values).enumerate() {
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let _ = write!(
            body,
            r#"<g><title>{}: {} events</title>"#,
            esc(&label.replace('\n', " ")),
            fmt_int(totals[i])
        );
        let mut acc = 0;
        for (v, s) in vals.iter().zip(series) {
            if *v == 0 {
                continue;
            }
            let (y0, y1) = (y_of(acc), y_of(acc + v));
            let _ = write!(
                body,
                r#"<rect x="{x:.1}" y="{y1:.1}" width="{bar_w:.1}" height="{:.1}" fill="{}"/>"#,
                (y0 - y1).max(0.5),
                s.color
            );
            acc += v;
        }
        body.push_str("</g>");
        if i % every == 0 {
            let cx = left + slot * (i as f64 + 0.5);
            let mut lines = label.split('\n');
            let _ = write!(
                body,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" class="tick">{}"#,
                top + plot_h + 16.0,
                esc(lines.next().unwrap_or_default())
            );
            for l in lines {
                let _ = write!(body, r#"<tspan x="{cx:.1}" dy="14">{}</tspan>"#, esc(l));
            }
            body.push_str("</text>");
        }
    }
    body.push_str("</g>");
    let _ = write!(
        body,
        r#"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" class="baseline"/>"#,
        W - right,
        top + plot_h,
        top + plot_h
    );

    let mut out = String::new();
    open_svg(&mut out, height, title);
    out.push_str(&body);
    out.push_str("</svg>");
    out
}

/// Horizontal stacked bars, one row per `(label, values per series)`, the
/// row's total printed after its bar. With one series there is no legend.
pub(crate) fn hbars(title: &str, rows: &[(String, Vec<u64>)], series: &[Series]) -> String {
    let totals: Vec<u64> = rows.iter().map(|r| r.1.iter().sum()).collect();
    let max = totals.iter().copied().max().unwrap_or(0);
    if rows.is_empty() || max == 0 {
        return no_data(title);
    }
    let mut body = String::new();
    let top = if series.len() > 1 {
        legend(&mut body, series) + 10.0
    } else {
        4.0
    };
    let label_chars = 34;
    let left = 12.0 + label_chars as f64 * CHAR_W;
    let value_w = 80.0;
    let plot_w = W - left - value_w;
    let row_h = 26.0;
    let height = top + row_h * rows.len() as f64 + 4.0;
    for (i, ((label, vals), total)) in rows.iter().zip(&totals).enumerate() {
        let y = top + row_h * i as f64;
        let _ = write!(
            body,
            r#"<g><title>{}: {}</title><text x="{}" y="{:.1}" text-anchor="end" class="label">{}</text>"#,
            esc(label),
            fmt_int(*total),
            left - 8.0,
            y + 17.0,
            esc(&truncate(label, label_chars))
        );
        let mut x = left;
        for (v, s) in vals.iter().zip(series) {
            if *v == 0 {
                continue;
            }
            let w = (plot_w * *v as f64 / max as f64).max(1.0);
            let _ = write!(
                body,
                r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}"/>"#,
                y + 4.0,
                row_h - 8.0,
                s.color
            );
            x += w;
        }
        let _ = write!(
            body,
            r#"<text x="{:.1}" y="{:.1}" class="value">{}</text></g>"#,
            x + 6.0,
            y + 17.0,
            fmt_short(*total)
        );
    }
    let mut out = String::new();
    open_svg(&mut out, height, title);
    out.push_str(&body);
    out.push_str("</svg>");
    out
}

/// A donut of `(label, count, colour)` slices with a legend giving counts
/// and shares, and the total in the middle.
pub(crate) fn donut(title: &str, slices: &[(&str, u64, &str)]) -> String {
    let total: u64 = slices.iter().map(|s| s.1).sum();
    if total == 0 {
        return no_data(title);
    }
    let height = 240.0;
    let (cx, cy, r, stroke) = (120.0, 120.0, 88.0, 40.0);
    let circumference = 2.0 * std::f64::consts::PI * r;
    let mut out = String::new();
    open_svg(&mut out, height, title);
    let _ = write!(
        out,
        r##"<circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="#eef0f3" stroke-width="{stroke}"/>"##
    );
    // Each slice is the circle's stroke dashed to its share, rotated to
    // where the previous one ended: no arc maths, and 100% is a full ring.
    let mut start = 0.0;
    for (label, n, color) in slices {
        if *n == 0 {
            continue;
        }
        let len = circumference * *n as f64 / total as f64;
        let _ = write!(
            out,
            r#"<circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="{color}" stroke-width="{stroke}" stroke-dasharray="{len:.2} {circumference:.2}" stroke-dashoffset="{:.2}" transform="rotate(-90 {cx} {cy})"><title>{}: {}</title></circle>"#,
            -start,
            esc(label),
            fmt_int(*n)
        );
        start += len;
    }
    let _ = write!(
        out,
        r#"<text x="{cx}" y="{}" text-anchor="middle" class="donut-total">{}</text><text x="{cx}" y="{}" text-anchor="middle" class="muted">events</text>"#,
        cy + 4.0,
        fmt_short(total),
        cy + 22.0
    );
    for (i, (label, n, color)) in slices.iter().enumerate() {
        let y = 40.0 + 34.0 * i as f64;
        let share = 100.0 * *n as f64 / total as f64;
        let _ = write!(
            out,
            r#"<rect x="280" y="{}" width="14" height="14" rx="2" fill="{color}"/><text x="302" y="{y:.1}" class="label">{}</text><text x="470" y="{y:.1}" text-anchor="end" class="value">{}</text><text x="540" y="{y:.1}" text-anchor="end" class="muted">{share:.1}%</text>"#,
            y - 12.0,
            esc(label),
            fmt_int(*n),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [Series; 2] = [
        Series {
            name: "a",
            color: "#111111",
        },
        Series {
            name: "b",
            color: "#222222",
        },
    ];

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\nb\u{0}"), "a b ");
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(1234567), "1,234,567");
        assert_eq!(fmt_int(999), "999");
        assert_eq!(fmt_short(9_999), "9,999");
        assert_eq!(fmt_short(12_500), "12.5k");
        assert_eq!(fmt_short(3_000_000), "3M");
        assert_eq!(fmt_short(250_000), "250k");
    }

    #[test]
    fn axis_is_round_and_covers_the_maximum() {
        for max in [1, 3, 7, 10, 99, 101, 523, 1000, 123_456] {
            let (top, step) = nice_axis(max);
            assert!(
                top >= max && top.is_multiple_of(step),
                "{max}: {top} {step}"
            );
            assert!(top / step <= 5, "{max}: {top} {step}");
        }
    }

    #[test]
    fn hostile_labels_are_escaped_in_every_chart() {
        let evil = r#"<img src=x onerror="alert(1)">"#;
        let rows = vec![(evil.to_owned(), vec![3, 4])];
        let charts = [
            hbars("t", &rows, &S),
            stacked_columns("t", &[format!("{evil}\n{evil}")], &[vec![1, 2]], &S),
            donut(evil, &[(evil, 5, "#333333")]),
        ];
        for svg in charts {
            assert!(!svg.contains("<img"), "{svg}");
            assert!(
                svg.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"),
                "{svg}"
            );
        }
    }

    #[test]
    fn charts_draw_shapes_or_say_there_is_no_data() {
        let cols = stacked_columns(
            "t",
            &["10:00".into(), "11:00".into()],
            &[vec![1, 2], vec![0, 5]],
            &S,
        );
        assert_eq!(cols.matches("<rect").count(), 2 + 3, "{cols}");
        let bars = hbars("t", &[("x".into(), vec![1, 0])], &S[..1]);
        assert_eq!(bars.matches("<rect").count(), 1);
        assert!(stacked_columns("t", &[], &[], &S).contains("No events"));
        assert!(hbars("t", &[("x".into(), vec![0, 0])], &S).contains("No events"));
        assert!(donut("t", &[("x", 0, "#fff")]).contains("No events"));
        let d = donut("t", &[("x", 1, "#aaa"), ("y", 3, "#bbb")]);
        assert!(d.contains("75.0%") && d.contains("25.0%"));
    }
}
