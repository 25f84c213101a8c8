"""`otel-audit report`: the HTML page opened in headless Chromium, the Markdown, the numbers.

The page is rendered by a real browser (Debian's `chromium`, see scripts/setup-chromium):
its DOM must hold every chart, and its screenshot must show them drawn. The figures are
checked against the store read independently with pyarrow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import BASE_STORE_ARGS, generate, run_cli

CHROMIUM = os.environ.get("OTEL_AUDIT_CHROMIUM", "/usr/bin/chromium")
FROM, TO = "2026-01-05", "2026-01-05T06:00:00Z"

# Section id -> heading, and a colour its chart must paint (the charts' palette).
CHARTS: Dict[str, Tuple[str, str]] = {
    "chart-activity": ("Events over time", "#4e79a7"),  # inference
    "chart-outcomes": ("Outcomes", "#59a14f"),  # success
    "chart-actors": ("Top actors", "#59a14f"),
    "chart-models": ("Model and token usage", "#4e79a7"),  # input tokens
    "chart-safety": ("Safety failures and blocks", "#e15759"),  # detectors
    "chart-admin": ("Administrative actions", "#59a14f"),
}
# Each chart section is laid out alone in a slot this tall for the screenshot.
SLOT = 1500
HOSTILE = """<script>alert(1)</script><img src=x onerror="alert(2)">'&"""


@pytest.fixture(scope="session")
def chromium() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: run scripts/setup-chromium (apt-get install chromium)")
    return CHROMIUM


def browse(chromium: str, page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs headless Chromium on a local file with a fresh profile and no network services."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        page.resolve().as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"chromium failed ({r.returncode}): {r.stderr[-2000:]}"
    return r


def dump_dom(chromium: str, page: Path, tmp: Path) -> str:
    return browse(chromium, page, tmp, "--dump-dom").stdout


def screenshot(chromium: str, page: Path, tmp: Path, png: Path, height: int) -> Image.Image:
    browse(chromium, page, tmp, f"--screenshot={png}", f"--window-size=1280,{height}")
    return Image.open(png).convert("RGB")


def artifacts(tmp: Path) -> Path:
    """Where screenshots go: OTEL_AUDIT_REPORT_ARTIFACTS to keep them, else the test's tmp dir."""
    d = Path(os.environ.get("OTEL_AUDIT_REPORT_ARTIFACTS", tmp))
    d.mkdir(parents=True, exist_ok=True)
    return d


def pixels(img: Image.Image) -> List[Tuple[int, int, int]]:
    b = img.convert("RGB").tobytes()
    return list(zip(b[0::3], b[1::3], b[2::3]))


def hex_rgb(c: str) -> Tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def data_files(root: Path) -> List[Path]:
    return sorted(root.glob("tenant=*/date=*/hour=*/*.parquet"))


def report(store: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(["report", "--store", str(store), "--from", FROM, "--to", TO, *extra])


def md_table(text: str, caption: str) -> List[List[str]]:
    """The rows of the Markdown table under **caption**, as cell texts (escapes removed)."""
    m = re.search(rf"\*\*{re.escape(caption)}\*\*\n\n((?:\|.*\n)+)", text)
    assert m, f"no table {caption!r} in:\n{text}"
    rows = []
    for line in m.group(1).splitlines()[2:]:
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        rows.append([re.sub(r"\\(.)", r"\1", c.strip()) for c in cells])
    return rows


def num(s: str) -> int:
    return int(s.replace(",", ""))


# --------------------------------------------------------------------------
# The signed store and its report
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory, otel_audit_bin) -> Tuple[Path, Path]:
    d = tmp_path_factory.mktemp("report-keys")
    priv, pub = d / "digest.pem", d / "digest.pub.pem"
    r = run_cli(["keys", "generate", "--private-key", str(priv), "--public-key", str(pub)])
    assert r.returncode == 0, r.stderr
    return priv, pub


@pytest.fixture(scope="module")
def signed_store(tmp_path_factory, keys) -> Path:
    root = tmp_path_factory.mktemp("report-store") / "store"
    generate(root, signing_key=keys[0], **BASE_STORE_ARGS)
    return root


@pytest.fixture(scope="module")
def html_report(signed_store, keys, tmp_path_factory) -> Tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("report-html") / "report.html"
    r = report(signed_store, "--public-key", str(keys[1]), "--out", str(out))
    return out, r


@pytest.fixture(scope="module")
def dom(html_report, chromium, tmp_path_factory) -> str:
    return dump_dom(chromium, html_report[0], tmp_path_factory.mktemp("report-dom"))


@pytest.fixture(scope="module")
def arrow_rows(signed_store) -> pa.Table:
    return pa.concat_tables(pq.ParquetFile(f).read().replace_schema_metadata(None) for f in data_files(signed_store))


def test_report_is_written_and_intact(html_report):
    out, r = html_report
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "3,000 events" in r.stderr and "intact" in r.stderr, r.stderr
    assert out.stat().st_size > 10_000


def test_dom_has_every_chart_with_drawn_shapes(dom):
    for cid, (title, _) in CHARTS.items():
        m = re.search(rf'<section id="{cid}" class="card chart">(.*?)</section>', dom, re.S)
        assert m, f"section {cid} missing from the DOM"
        body = m.group(1)
        assert f"<h2>{title}</h2>" in body, f"{cid}: heading {title!r} missing"
        svgs = re.findall(r"<svg\b.*?</svg>", body, re.S)
        assert svgs, f"{cid}: no chart"
        shapes = [len(re.findall(r"<(?:rect|circle|path|line)\b", svg)) for svg in svgs]
        # One bar is a drawn chart (a single block reason); the section as a whole draws many.
        assert min(shapes) >= 1 and sum(shapes) >= 5, f"{cid}: charts with {shapes} shapes"
        assert "No events in this period" not in body, f"{cid}: an empty chart"
        assert "<table>" in body, f"{cid}: no table"


def test_integrity_banner_says_intact_with_checked_signatures(dom):
    m = re.search(r'<div id="integrity" class="banner ok"[^>]*>(.*?)</div>', dom, re.S)
    assert m, "no green integrity banner"
    banner = m.group(1)
    assert "Integrity: INTACT" in banner
    # 2 chains x 6 hourly digests, all valid; signatures were checked, so no caveat.
    assert re.search(r"12/12 digests valid, (\d+)/\1 files valid, 3000 events, chains intact", banner), banner
    assert "NOT checked" not in dom and "No signed digests" not in dom
    assert "2026-01-05 00:00 – 2026-01-05 06:00 UTC" in dom


def test_report_is_self_contained(html_report, dom):
    html = html_report[0].read_text()
    for text in (html, dom):
        assert "http://" not in text and "https://" not in text
        assert not re.search(r"<(?:script|link|img|iframe|object|embed)\b", text, re.I)
        assert not re.search(r"\s(?:src|href)\s*=", text, re.I)
        assert "url(" not in text and "@import" not in text
    assert "default-src 'none'" in html


def test_screenshot_shows_every_chart(html_report, chromium, tmp_path):
    """Each chart section is laid out alone in a slot of its own, so its pixels can be checked."""
    out = artifacts(tmp_path)
    html = html_report[0].read_text()
    slots = "".join(
        f"#{cid}{{position:absolute;left:0;top:{i * SLOT}px;width:1200px;height:{SLOT}px;margin:0;overflow:hidden}}"
        for i, cid in enumerate(CHARTS)
    )
    isolate = (
        "<style>header,#integrity,.notice,#summary,footer,.tables,p.lead{display:none!important}"
        f"body{{background:#fff}}main{{position:relative;padding:0}}{slots}</style></head>"
    )
    page = tmp_path / "isolated.html"
    page.write_text(html.replace("</head>", isolate, 1))
    img = screenshot(chromium, page, tmp_path, out / "report-charts.png", SLOT * len(CHARTS))
    for i, (cid, (_, color)) in enumerate(CHARTS.items()):
        slot = img.crop((0, i * SLOT, 1280, (i + 1) * SLOT))
        colors = Counter(pixels(slot))
        non_white = sum(n for c, n in colors.items() if min(c) < 235)
        assert non_white > 8_000, f"{cid}: only {non_white} non-white pixels"
        assert len(colors) > 40, f"{cid}: only {len(colors)} distinct colours"
        painted = colors.get(hex_rgb(color), 0)
        assert painted > 1_500, f"{cid}: {color} painted on {painted} pixels"
    # The whole page, as a reader sees it, for a look (kept with OTEL_AUDIT_REPORT_ARTIFACTS).
    top = screenshot(chromium, html_report[0], tmp_path, out / "report-page.png", 5200)
    banner = top.crop((0, 0, 1280, 600))
    green = sum(1 for c in pixels(banner) if c[1] > 110 and c[0] < 60 and c[2] < 90)
    assert green > 500, f"the intact banner's green border is missing ({green} px)"


def test_figures_match_the_store_read_with_pyarrow(signed_store, keys, arrow_rows):
    r = report(signed_store, "--public-key", str(keys[1]), "--format", "markdown")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    t = arrow_rows
    assert t.num_rows == 3000

    summary = dict((k, v) for k, v in md_table_rows(md, "| Measure | Value |"))
    assert num(summary["Events"]) == t.num_rows

    cats = Counter(t.column("category").to_pylist())
    got = {row[0]: num(row[2]) for row in md_table(md, "Events by category")}
    assert got == dict(cats)

    outcomes = Counter(t.column("outcome").to_pylist())
    got = {row[0]: num(row[1]) for row in md_table(md, "Events by outcome")}
    assert got == {o: outcomes.get(o, 0) for o in ("success", "failure", "denied", "blocked")}

    tenants = Counter(t.column("tenant").to_pylist())
    got = {row[0]: num(row[1]) for row in md_table(md, "Events by tenant")}
    assert got == dict(tenants)

    # Per hour: the activity table sums to the total and matches received_at hours.
    hours = Counter(ts.strftime("%Y-%m-%d %H:00") for ts in t.column("received_at").to_pylist())
    got = {row[0]: num(row[1]) for row in md_table(md, "Events per hour by category")}
    assert got == dict(hours)

    # Model calls and tokens per (model, provider) over inference events.
    want: Dict[Tuple[str, str], List[int]] = {}
    for row in t.select(
        ["category", "gen_ai_request_model", "gen_ai_provider", "gen_ai_input_tokens", "gen_ai_output_tokens"]
    ).to_pylist():
        if row["category"] != "inference" or row["gen_ai_request_model"] is None:
            continue
        w = want.setdefault((row["gen_ai_request_model"], row["gen_ai_provider"] or ""), [0, 0, 0])
        w[0] += 1
        w[1] += row["gen_ai_input_tokens"] or 0
        w[2] += row["gen_ai_output_tokens"] or 0
    got_models = {(row[0], row[1]): [num(row[2]), num(row[5]), num(row[6])] for row in md_table(md, "Model calls and tokens")}
    assert got_models == want

    actors = Counter(t.column("actor_id").to_pylist())
    top = md_table(md, "Top 15 actors by events")
    assert [(row[0], num(row[2])) for row in top[:5]] == [
        (a, n) for a, n in sorted(actors.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    ]

    blocked = sum(1 for o in t.column("outcome").to_pylist() if o == "blocked")
    failed = sum(1 for p in t.column("safety_passed").to_pylist() if p is False)
    assert f"{failed:,} / {blocked:,}" == summary["Safety failures / blocks"]


def md_table_rows(text: str, header: str) -> List[Tuple[str, str]]:
    i = text.index(header)
    lines = text[i:].split("\n\n", 1)[0].splitlines()[2:]
    out = []
    for line in lines:
        cells = [re.sub(r"\\(.)", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        out.append((cells[0], cells[1]))
    return out


def test_markdown_has_the_verdict_and_tables(signed_store, keys, tmp_path):
    r = report(signed_store, "--format", "markdown", "--out", "-")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    assert md.startswith("# AI audit trail report\n")
    assert "## Integrity: INTACT" in md
    # Without --public-key the verdict says the signatures were not checked.
    assert "signatures NOT checked" in md
    for title, _ in CHARTS.values():
        assert f"\n## {title}\n" in md
    for caption in (
        "Events per hour by category",
        "Events by outcome",
        "Top 15 actors by events",
        "Model calls and tokens",
        "Failed or blocked events by detector",
        "Administrative events by area",
        "Administrative actions",
    ):
        assert f"**{caption}**" in md
    assert "<svg" not in md
    for area in ("Project lifecycle", "User management", "Configuration changes", "Import / export", "Model downloads"):
        assert f"| {area} |" in md
    out = tmp_path / "r.md"
    r2 = report(signed_store, "--format", "markdown", "--out", str(out))
    assert r2.returncode == 0 and r2.stdout == ""
    # Identical but for the generation time.
    strip = lambda s: re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "T", s)
    assert strip(out.read_text()) == strip(md)


# --------------------------------------------------------------------------
# Tampered and hostile stores
# --------------------------------------------------------------------------


def test_deleted_file_gives_exit_1_and_a_red_banner(signed_store, keys, chromium, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(signed_store, store)
    files = data_files(store)
    victim = files[len(files) // 2]
    victim.unlink()
    out = tmp_path / "tampered.html"
    r = report(store, "--public-key", str(keys[1]), "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "INTEGRITY PROBLEMS" in r.stderr
    dom = dump_dom(chromium, out, tmp_path)
    m = re.search(r'<div id="integrity" class="banner bad" role="alert">(.*?)</div>', dom, re.S)
    assert m, "no red banner"
    banner = m.group(1)
    assert "PROBLEMS FOUND" in banner
    kinds = dict((k, int(n)) for n, k in re.findall(r"<li>(\d+) × ([a-z_]+)</li>", banner))
    assert kinds.get("missing_file", 0) + kinds.get("modified_file", 0) >= 1, banner
    assert "chains BROKEN" in banner
    assert victim.name in dom, "the problem list names the deleted file"
    img = screenshot(chromium, out, tmp_path, artifacts(tmp_path) / "report-tampered.png", 900)
    red = sum(1 for c in pixels(img.crop((0, 0, 1280, 600))) if c[0] > 170 and c[1] < 60 and c[2] < 60)
    assert red > 500, f"the red banner is not painted ({red} px)"


def test_hostile_stored_strings_are_escaped(signed_store, chromium, tmp_path):
    """Actor ids, models and detectors are attacker-influenced: rewrite a file's rows with markup."""
    store = tmp_path / "store"
    shutil.copytree(signed_store, store)
    # The largest file, so that its rows' actor leads the top actors.
    victim = max(data_files(store), key=lambda f: pq.ParquetFile(f).metadata.num_rows)
    t = pq.ParquetFile(victim).read()
    n = t.num_rows
    for col in ("actor_id", "gen_ai_request_model"):
        i = t.schema.get_field_index(col)
        t = t.set_column(i, t.schema.field(i), pa.array([HOSTILE] * n, type=t.schema.field(i).type))
    pq.write_table(t, victim, compression="zstd")
    out = tmp_path / "hostile.html"
    r = report(store, "--out", str(out))
    # The rewrite broke the rows' hashes: problems, and still a report.
    assert r.returncode == 1, r.stderr
    html = out.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(2)&quot;&gt;&#39;&amp;" in html
    assert "<script" not in html and "<img" not in html
    dom = dump_dom(chromium, out, tmp_path)
    assert not re.search(r"<(?:script|img)\b", dom), "markup from the store became elements"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    md = report(store, "--format", "markdown").stdout
    # Markdown escapes with backslashes: no markup character is left bare
    # (but the report's own "> **Note:**" quotes).
    assert not re.search(r"(?<!\\)[<>]", re.sub(r"(?m)^> ", "", md)), "an unescaped < or > in the Markdown"
    assert r'\<script\>alert(1)\</script\>\<img src=x onerror="alert(2)"\>' + "'" + r"\&" in md


# --------------------------------------------------------------------------
# Errors and empty periods
# --------------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["signed", "empty"])
def test_empty_period_is_a_report_of_zero_events(signed_store, tmp_path, store_kind):
    """A period after the data, or a store with nothing in it: 0 events and no verdict, exit 0."""
    store = signed_store if store_kind == "signed" else tmp_path / "empty-store"
    store.mkdir(exist_ok=True)
    period = ["--from", "2026-01-06", "--to", "2026-01-07"]
    out = tmp_path / "empty.html"
    r = run_cli(["report", "--store", str(store), *period, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert "report on 0 events, no data in the period" in r.stderr
    html = out.read_text()
    assert "2026-01-06 00:00 – 2026-01-07 00:00 UTC" in html
    assert '<div class="v">0</div><div class="k">Events</div>' in html
    assert 'class="banner none"' in html and "no data in this period" in html
    md = run_cli(["report", "--store", str(store), *period, "--format", "markdown"])
    assert md.returncode == 0, md.stderr
    assert "| Events | 0 |" in md.stdout
    assert "## Integrity: no data in this period" in md.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "yesterday"], '--from "yesterday" is not a time'),
        (["--from", "2026-01-06", "--to", "2026-01-05"], "--from must be before --to"),
        (["--format", "pdf"], "invalid value 'pdf'"),
        (["--tenant", "../x"], "--tenant"),
        (["--out", "/nonexistent-dir/r.html"], "no such directory"),
    ],
)
def test_usage_errors_exit_2(signed_store, args, message):
    r = run_cli(["report", "--store", str(signed_store), *args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr
    assert r.stdout == ""


def test_missing_store_exits_2(tmp_path):
    missing = tmp_path / "no-such-store"
    r = run_cli(["report", "--store", str(missing), "--from", FROM, "--to", TO])
    assert r.returncode == 2
    assert "no such directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not missing.exists()


def test_tenant_report_counts_one_tenant(signed_store, arrow_rows):
    r = report(signed_store, "--tenant", "globex", "--format", "markdown")
    assert r.returncode == 0, r.stderr
    want = sum(1 for x in arrow_rows.column("tenant").to_pylist() if x == "globex")
    rows = dict(md_table_rows(r.stdout, "| Measure | Value |"))
    assert num(rows["Events"]) == want
    assert "| Tenant | globex |" in r.stdout
