//! The report as one self-contained HTML page: inline CSS and SVG, no
//! script, and a Content-Security-Policy that forbids loading anything, so
//! the page opens offline and a stored string that escaped escaping still
//! could neither run nor call out.

use std::fmt::Write;

use super::svg::{esc, fmt_int};
use super::{Integrity, Report, Section, Table};

/// Problems listed one by one under the banner; the counts cover them all.
const PROBLEMS_LISTED: usize = 50;
/// Tables longer than this scroll on screen (and print in full).
const SCROLL_ROWS: usize = 24;
/// Text cells longer than this (in characters) may wrap.
const LONG_CELL: usize = 40;

const CSS: &str = r#"
:root{--ink:#1d2433;--muted:#5b6475;--line:#e3e6eb;--bg:#f4f5f7;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 32px 48px}
header h1{font-size:26px;margin:0 0 10px;letter-spacing:-.01em}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 18px;margin:0;color:var(--muted)}
dl.meta dt{font-weight:600;color:#344054}
dl.meta dd{margin:0;word-break:break-all}
.banner{border-radius:10px;padding:16px 20px;margin:22px 0 16px;border:1px solid;border-left-width:8px}
.banner h2{margin:0 0 6px;font-size:19px}
.banner p{margin:4px 0}
.banner.ok{background:#ecfdf3;border-color:#12813a;color:#0b4f24}
.banner.bad{background:#fef3f2;border-color:#c01b12;color:#7a1109}
.banner.none{background:#f2f4f7;border-color:#667085;color:#344054}
.banner code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:rgba(255,255,255,.7);padding:2px 6px;border-radius:4px;display:inline-block}
.banner ul.kinds{margin:6px 0;padding-left:20px;font-weight:600}
.notice{background:#fffaeb;border:1px solid #fec84b;color:#7a2e0e;border-radius:8px;padding:10px 14px;margin:8px 0}
.kpis{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:16px 0 8px}
@media (max-width:760px){.kpis{grid-template-columns:repeat(2,1fr)}}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.kpi .v{font-size:21px;font-weight:650;font-variant-numeric:tabular-nums}
.kpi .k{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.05em}
section.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:20px 24px;margin:20px 0}
section.card>h2{font-size:19px;margin:0 0 4px}
p.lead{color:var(--muted);margin:0 0 14px}
figure{margin:0 0 18px}
figcaption{font-weight:600;font-size:13px;color:#344054;margin-bottom:6px}
.tables{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px 24px}
.tables>.wide{grid-column:1/-1}
.xscroll{overflow-x:auto}
.scroll{max-height:420px;overflow:auto;border-bottom:1px solid var(--line)}
table{border-collapse:collapse;width:100%;font-size:12.5px;margin-top:8px}
caption{text-align:left;font-weight:600;padding:4px 0 6px;color:#344054}
th,td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f8f9fb;font-weight:600;color:#344054;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td{white-space:nowrap}
td.long{white-space:normal;overflow-wrap:anywhere;min-width:16em}
.empty{color:var(--muted);font-style:italic}
svg.chart-svg{display:block;width:100%;height:auto}
svg .tick{font-size:11px;fill:#667085}
svg .label,svg .legend-text{font-size:12px;fill:#1d2433}
svg .value{font-size:12px;fill:#344054;font-weight:600}
svg .muted{font-size:12px;fill:#667085}
svg .grid{stroke:#eaecf0;stroke-width:1}
svg .baseline{stroke:#98a2b3;stroke-width:1}
svg .donut-total{font-size:26px;font-weight:700;fill:#1d2433}
footer{color:var(--muted);font-size:12px;margin-top:28px}
@media print{body{background:#fff}main{padding:0}.scroll{max-height:none;overflow:visible}section.card,figure,.banner{break-inside:avoid}}
"#;

/// Renders the whole page.
pub(crate) fn render(r: &Report) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="generator" content="otel-audit {version}">
<title>{title}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{title}</h1>
<dl class="meta">
<dt>Period</dt><dd>{period}</dd>
<dt>Store</dt><dd>{store}</dd>
<dt>Tenant</dt><dd>{tenant}</dd>
<dt>Generated</dt><dd>{generated}</dd>
</dl>
</header>
"#,
        version = env!("CARGO_PKG_VERSION"),
        title = esc(&r.title),
        period = esc(&r.period_text()),
        store = esc(&r.store),
        tenant = esc(r.tenant.as_deref().unwrap_or("all tenants")),
        generated = r.generated.format("%Y-%m-%d %H:%M:%S UTC"),
    );
    banner(&mut out, r);
    out.push_str(
        r#"<section id="summary" class="summary"><h2 hidden>Summary</h2><div class="kpis">"#,
    );
    for (k, v) in r.kpis() {
        let _ = write!(
            out,
            r#"<div class="kpi"><div class="v">{}</div><div class="k">{}</div></div>"#,
            esc(&v),
            esc(k)
        );
    }
    out.push_str("</div>");
    table(&mut out, &r.tenant_table());
    out.push_str("</section>\n");
    for s in r.sections(true) {
        section(&mut out, &s);
    }
    let _ = write!(
        out,
        "<footer>Generated by otel-audit {} at {}. All times are UTC; events are counted in the period by the \
         collector's receive time, as verify selects them. The page loads nothing from the network.</footer>\n\
         </main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        r.generated.format("%Y-%m-%d %H:%M:%S UTC")
    );
    out
}

/// The integrity verdict, first thing under the title.
fn banner(out: &mut String, r: &Report) {
    match &r.integrity {
        Integrity::NoData => {
            out.push_str(
                r#"<div id="integrity" class="banner none" role="status"><h2>Integrity: no data in this period</h2><p>The store holds no audit data in the period, so there was nothing to verify.</p></div>"#,
            );
        }
        Integrity::Checked(v) => {
            let line = esc(&crate::digest_line(v));
            if v.is_intact() {
                let _ = write!(
                    out,
                    r#"<div id="integrity" class="banner ok" role="status"><h2>Integrity: INTACT</h2><p>Verification found no problem: every row hash, chain link, file and digest in the period checks out ({} chains, {} files, {} events).</p><p><code>{line}</code></p></div>"#,
                    fmt_int(v.chains.len() as u64),
                    fmt_int(v.files_verified),
                    fmt_int(v.events_verified)
                );
            } else {
                let _ = write!(
                    out,
                    r#"<div id="integrity" class="banner bad" role="alert"><h2>Integrity: PROBLEMS FOUND</h2><p>Verification found {} integrity problem(s) in the period. The figures below may not reflect what was originally recorded.</p><ul class="kinds">"#,
                    fmt_int(v.problems.len() as u64)
                );
                for (kind, n) in r.problem_kinds() {
                    let _ = write!(out, "<li>{} × {}</li>", fmt_int(n), esc(kind));
                }
                let _ = write!(out, "</ul><p><code>{line}</code></p></div>");
            }
            for note in r.integrity_notes() {
                let _ = write!(out, r#"<div class="notice">{}</div>"#, esc(&note));
            }
            if !v.is_intact() {
                let t = super::problems_table(v, PROBLEMS_LISTED);
                out.push_str(
                    r#"<section id="problems" class="card problems"><h2>Integrity problems</h2>"#,
                );
                table(out, &t);
                out.push_str("</section>");
            }
        }
    }
    out.push('\n');
}

fn section(out: &mut String, s: &Section) {
    let _ = write!(
        out,
        r#"<section id="{}" class="card chart"><h2>{}</h2><p class="lead">{}</p>"#,
        s.id,
        esc(s.title),
        esc(&s.lead)
    );
    for (caption, svg) in &s.charts {
        let _ = write!(
            out,
            "<figure><figcaption>{}</figcaption>{svg}</figure>",
            esc(caption)
        );
    }
    out.push_str(r#"<div class="tables">"#);
    for t in &s.tables {
        // Tables of many columns take the section's width, the others share it.
        out.push_str(if t.headers.len() >= 5 {
            r#"<div class="wide">"#
        } else {
            "<div>"
        });
        table(out, t);
        out.push_str("</div>");
    }
    out.push_str("</div></section>\n");
}

fn table(out: &mut String, t: &Table) {
    let scroll = t.rows.len() > SCROLL_ROWS;
    out.push_str(if scroll {
        r#"<div class="xscroll scroll">"#
    } else {
        r#"<div class="xscroll">"#
    });
    let _ = write!(
        out,
        "<table><caption>{}</caption><thead><tr>",
        esc(&t.caption)
    );
    for (h, num) in t.headers.iter().zip(&t.numeric) {
        let _ = write!(
            out,
            r#"<th scope="col"{}>{}</th>"#,
            if *num { r#" class="num""# } else { "" },
            esc(h)
        );
    }
    out.push_str("</tr></thead><tbody>");
    if t.rows.is_empty() {
        let _ = write!(
            out,
            r#"<tr><td colspan="{}" class="empty">None in this period</td></tr>"#,
            t.headers.len()
        );
    }
    for row in &t.rows {
        out.push_str("<tr>");
        for (cell, num) in row.iter().zip(&t.numeric) {
            // Short values never wrap; long text (reasons, problem details,
            // overlong ids) wraps anywhere rather than widen the page.
            let class = if *num {
                r#" class="num""#
            } else if cell.chars().count() > LONG_CELL {
                r#" class="long""#
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

#[cfg(test)]
mod tests {
    use super::super::tests::{problem, sample, verify_report};
    use super::*;
    use otel_audit_storage::ProblemKind;

    #[test]
    fn hostile_strings_are_escaped_everywhere() {
        let mut v = verify_report(vec![problem(
            ProblemKind::ModifiedRow,
            "tenant=acme/<b>x</b>.parquet",
        )]);
        v.problems[0].detail = "<img src=x onerror=alert(1)>".into();
        let html = render(&sample(Integrity::Checked(Box::new(v))));
        assert!(!html.contains("<script>"), "raw script tag in the page");
        assert!(!html.contains("<img"), "raw img tag in the page");
        assert!(!html.contains("<b>x"));
        assert!(html.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"));
        assert!(html.contains("Q1 &lt;review&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }

    #[test]
    fn self_contained() {
        let html = render(&sample(Integrity::NoData));
        for needle in ["http://", "https://", "src=", "<script", "@import", "url("] {
            assert!(!html.contains(needle), "{needle} in the page");
        }
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn every_section_has_a_chart_and_a_table() {
        let html = render(&sample(Integrity::NoData));
        for id in [
            "chart-activity",
            "chart-outcomes",
            "chart-actors",
            "chart-models",
            "chart-safety",
            "chart-admin",
        ] {
            let start = html.find(&format!(r#"<section id="{id}""#)).expect(id);
            let end = start + html[start..].find("</section>").unwrap();
            let s = &html[start..end];
            assert!(
                s.contains("<h2>") && s.contains("<svg") && s.contains("<table>"),
                "{id}"
            );
        }
    }

    #[test]
    fn banners() {
        let intact = render(&sample(Integrity::Checked(Box::new(verify_report(vec![])))));
        assert!(intact.contains(r#"class="banner ok""#) && intact.contains("Integrity: INTACT"));
        assert!(intact.contains("No signed digests"));
        assert!(intact.contains("0/0 digests valid, 3/3 files valid, 4 events, chains intact"));

        let v = verify_report(vec![
            problem(ProblemKind::MissingFile, "a"),
            problem(ProblemKind::MissingFile, "b"),
            problem(ProblemKind::BrokenLink, "c"),
        ]);
        let bad = render(&sample(Integrity::Checked(Box::new(v))));
        assert!(bad.contains(r#"class="banner bad""#) && bad.contains("PROBLEMS FOUND"));
        assert!(
            bad.contains("<li>2 × missing_file</li>") && bad.contains("<li>1 × broken_link</li>")
        );
        assert!(bad.contains("chains BROKEN"));

        let none = render(&sample(Integrity::NoData));
        assert!(none.contains(r#"class="banner none""#));
    }
}
