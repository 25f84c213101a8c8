"""The analyst's queries (queries/*.sql) give the right answers on a real store.

Every query file runs in real DuckDB on a generated store, locally and from S3 (a moto server,
httpfs from the pinned wheel). Each answer is compared with values computed here in Python from
the rows pyarrow reads from the same files, never by running SQL again. The store is the CLI's
synthetic workload plus one hand-built, correctly hash-chained file holding the events the
generator does not make (backups, retention, result reviews, a blocked tool call, ...).
chain_check.sql also runs on tampered copies, cross-checked with `otel-audit verify`.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import independent_verify as iv

Row = Dict[str, Any]
Connection = duckdb.DuckDBPyConnection

QUERIES = Path(__file__).resolve().parents[2] / "queries"
UTC = dt.timezone.utc

# 2500 events over 8 hours that cross midnight (two dates), at most 200 rows a file: ~30 files.
STORE_ARGS: Dict[str, Any] = dict(
    events=2500, tenants=2, hours=8, start="2026-01-05T20:00:00Z", seed=23, max_file_rows=200
)
S3_PREFIX = "queries/store"
EXTRA_CHAIN = "collector-2.acme"
EXTRA_RECEIVED = dt.datetime(2026, 1, 6, 1, 10, tzinfo=UTC)  # its file: tenant=acme/date=2026-01-06/hour=01
VARIABLES = ("since", "until", "tenant", "subject")

# admin_trail.sql's `area` for every action the store holds (synth.rs, the collector, the extra file).
AREAS: Dict[str, str] = {
    "project.create": "project lifecycle",
    "project.delete": "project lifecycle",
    "project.team.update": "configuration",
    "user.create": "user management",
    "user.update": "user management",
    "user.delete": "user management",
    "config.change.teams": "configuration",
    "config.change.model_assignment": "configuration",
    "config.change.integration": "configuration",
    "config.change.labels": "configuration",
    "settings.local_export.disable": "configuration",
    "settings.local_import.disable": "configuration",
    "license.upload": "licence",
    "license.delete": "licence",
    "task.import": "import/export",
    "task.export": "import/export",
    "model.import": "import/export",
    "model.export": "import/export",
    "model.download": "model download",
    "model.approve": "governance",
    "model.assign": "governance",
    "analytics.approve": "governance",
    "policy.update": "governance",
    "output.approve": "governance",
    "result.review": "governance",
    "backup.run": "backup",
    "backup.completed": "backup",
    "backup.failed": "backup",
    "retention.run": "retention",
    "retention.delete": "retention",
    "retention.hold": "retention",
    "collector.start": "collector lifecycle",
}


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


@dataclass
class QueryStore:
    root: Path
    extra: Dict[str, Row]  # the hand-built events, by label


def data_files(root: Path) -> List[Path]:
    return sorted(root.glob("tenant=*/date=*/hour=*/*.parquet"))


def rel(root: Path, f: Path) -> str:
    return f.relative_to(root).as_posix()


def read_rows(root: Path) -> List[Row]:
    """Every row as stored (pyarrow, file by file, no hive inference), with `_path` and `_row`."""
    rows: List[Row] = []
    for f in data_files(root):
        for i, r in enumerate(pq.ParquetFile(f).read().to_pylist()):
            r["_path"], r["_row"] = rel(root, f), i
            rows.append(r)
    return rows


def _event(seq: int, label: str, **fields: Any) -> Row:
    """One row of the extra chain: every column of FORMAT.md §2, defaults for those not given."""
    received = EXTRA_RECEIVED + dt.timedelta(seconds=seq)
    row: Row = {name: None for name in iv.EXPECTED_NAMES}
    row.update(
        event_id=f"019b9000-0000-7000-8000-{seq:012x}",
        time=received - dt.timedelta(milliseconds=40),
        received_at=received,
        severity="info",
        tenant="acme",
        service_name="admin-console",
        category="admin",
        outcome="success",
        safety_detectors=[],
        content_digests=[],
        sealed_content=[],
        attributes=[],
        redactions=[],
        chain_id=EXTRA_CHAIN,
        seq=seq,
    )
    row.update(fields)
    row["attributes"] = sorted(row["attributes"])  # FORMAT.md §2: entries in ascending key order
    row["_label"] = label
    return row


def _extra_events(base: List[Row]) -> List[Row]:
    """Events the generator does not make, linked to acme model calls of the base store.

    Calls A and B (before this file's hour) get a verification each: A as the target of an
    approval, B through its trace (with a retrieval too). Call C (after it) gets a review in its
    trace that comes BEFORE the call, so it does not verify C.
    """
    calls = sorted(
        (r for r in base if r["tenant"] == "acme" and r["category"] == "inference" and r["safety_passed"]),
        key=lambda r: r["seq"],
    )
    a, b = calls[0], calls[1]
    c = next(r for r in calls if r["time"] > EXTRA_RECEIVED + dt.timedelta(minutes=5))
    collector = dict(actor_id="collector-2", actor_type="service", service_name="otel-audit-collector")
    specs: List[Tuple[str, Dict[str, Any]]] = [
        ("backup_ok", dict(category="system", action="backup.completed", **collector, target_type="bucket",
                           target_id="s3://audit-backup/acme",
                           attributes=[("backup.objects_copied", "12"), ("backup.bytes_copied", "52011"),
                                       ("backup.verified", "intact"), ("backup.to", "s3://audit-backup/acme")])),
        ("backup_failed", dict(category="system", action="backup.failed", outcome="failure", severity="error",
                               **collector, attributes=[("backup.error", "connection refused"),
                                                        ("backup.to", "s3://audit-backup/acme")])),
        ("retention_delete", dict(category="compliance", action="retention.delete", **collector, target_type="file",
                                  target_id="tenant=acme/date=2025-01-01/hour=00/" + iv.expected_file_name("collector-0.acme", 0),
                                  attributes=[("retention.chain_id", "collector-0.acme"), ("retention.first_seq", "0"),
                                              ("retention.last_seq", "99"), ("retention.sha256", "ab" * 32)])),
        ("legal_hold", dict(category="compliance", action="retention.hold", outcome="blocked", **collector,
                            target_type="legal_hold", target_id="case-17",
                            attributes=[("retention.hold_reason", "litigation"), ("retention.files_held", "3")])),
        ("collector_start", dict(category="system", action="collector.start", **collector)),
        ("approve_a", dict(category="governance", action="output.approve", actor_id="user-010", actor_type="user",
                           actor_role="supervisor", target_type="event", target_id=a["event_id"])),
        ("approve_a_failed", dict(category="governance", action="output.approve", outcome="failure",
                                  actor_id="user-030", actor_type="user", actor_role="supervisor",
                                  target_type="event", target_id=a["event_id"])),
        ("review_b", dict(category="governance", action="result.review", actor_id="user-020", actor_type="user",
                          actor_role="supervisor", trace_id=b["trace_id"], span_id="ab" * 8)),
        ("early_review_c", dict(category="governance", action="result.review", actor_id="user-020",
                                actor_type="user", actor_role="supervisor", trace_id=c["trace_id"], span_id="ef" * 8)),
        ("retrieval_b", dict(category="data_access", action="vector.search", service_name="chat-api",
                             actor_id=b["actor_id"], actor_type=b["actor_type"], target_type="collection",
                             target_id="collection-kb-1", trace_id=b["trace_id"], span_id="cd" * 8)),
        ("update_007", dict(action="user.update", actor_id="user-010", actor_type="user", actor_role="admin",
                            target_type="user", target_id="user-007",
                            attributes=[("setting.old", "annotator"), ("setting.new", "supervisor")])),
        ("project_team", dict(action="project.team.update", actor_id="user-010", actor_type="user",
                              actor_role="admin", target_type="project", target_id="project-7",
                              attributes=[("added.user", "user-007")])),
        ("self_007", dict(action="user.update", actor_id="user-007", actor_type="user", actor_role="annotator",
                          target_type="user", target_id="user-007")),
        ("tool_blocked", dict(category="tool", action="tool.call", outcome="blocked", severity="warn",
                              service_name="agent-runtime", actor_id="agent-2", actor_type="agent",
                              gen_ai_operation="execute_tool", gen_ai_tool_name="send_email",
                              duration_ns=12_000_000)),
        ("chat_warned", dict(category="inference", action="llm.chat", service_name="chat-api", actor_id="user-007",
                             actor_type="user", actor_role="annotator", gen_ai_provider="openai",
                             gen_ai_operation="chat", gen_ai_request_model="gpt-4o", gen_ai_input_tokens=100,
                             safety_passed=True, safety_detectors=["pii_leak"],
                             sealed_content=[{"field": "gen_ai.input.messages", "algorithm": "aes-256-gcm",
                                              "key_id": "seal-2026-01", "nonce": b"\x01" * 12,
                                              "ciphertext": b"\x02" * 40}])),
    ]
    return [_event(seq, label, **fields) for seq, (label, fields) in enumerate(specs)]


def write_chain_file(root: Path, rows: List[Row]) -> Path:
    """Writes rows (seq 0..n-1 of one chain) as a correctly hash-chained data file with its footer."""
    schema = pq.ParquetFile(data_files(root)[0]).schema_arrow.remove_metadata()
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], schema=schema)
    prev, prevs, hashes = iv.ZERO_HASH, [], []
    for canonical in iv.canonical_rows(table):
        prevs.append(prev)
        prev = iv.row_hash(prev, canonical)
        hashes.append(prev)
    table = table.set_column(44, schema.field(44), pa.array(prevs, pa.binary(32)))
    table = table.set_column(45, schema.field(45), pa.array(hashes, pa.binary(32)))
    for r, p, h in zip(rows, prevs, hashes):
        r["prev_hash"], r["hash"] = p, h
    first = rows[0]
    received = first["received_at"]
    f = root / f"tenant={first['tenant']}" / f"date={received:%Y-%m-%d}" / f"hour={received:%H}"
    f = f / iv.expected_file_name(first["chain_id"], 0)
    f.parent.mkdir(parents=True, exist_ok=True)
    footer = {
        "otel_audit.format_version": "1",
        "otel_audit.chain_id": first["chain_id"],
        "otel_audit.first_seq": "0",
        "otel_audit.last_seq": str(len(rows) - 1),
        "otel_audit.row_count": str(len(rows)),
        "otel_audit.prev_hash": iv.ZERO_HASH.hex(),
        "otel_audit.last_hash": hashes[-1].hex(),
        "otel_audit.merkle_root": iv.merkle_root(hashes).hex(),
    }
    pq.write_table(table.replace_schema_metadata(footer), f, compression="zstd")
    return f


@pytest.fixture(scope="module")
def query_store(tmp_path_factory, generate_store) -> QueryStore:
    """The generated store plus the extra chain file; verified intact by the CLI."""
    root = tmp_path_factory.mktemp("queries") / "store"
    generate_store(root, **STORE_ARGS)
    extra = _extra_events(read_rows(root))
    write_chain_file(root, extra)
    return QueryStore(root, {r["_label"]: r for r in extra})


@pytest.fixture(scope="module")
def rows(query_store) -> List[Row]:
    return read_rows(query_store.root)


@pytest.fixture(scope="module")
def s3_store_url(moto_s3, query_store) -> str:
    """The same files uploaded to the moto bucket."""
    client = moto_s3.client()
    for f in data_files(query_store.root):
        client.upload_file(str(f), moto_s3.bucket, f"{S3_PREFIX}/{rel(query_store.root, f)}")
    return f"s3://{moto_s3.bucket}/{S3_PREFIX}"


def sql(name: str) -> str:
    return (QUERIES / name).read_text()


def open_views(con: Connection, store: str) -> Connection:
    """SET VARIABLE store, then views.sql, as the README says."""
    con.execute("SET VARIABLE store = ?", [store])
    con.execute(sql("views.sql"))
    return con


@pytest.fixture(scope="module", params=["local", "s3"])
def store_con(request, query_store, connect_duckdb) -> Iterator[Connection]:
    """A DuckDB connection with the views over the query store, local or in S3."""
    if request.param == "local":
        con = open_views(connect_duckdb(), str(query_store.root))
    else:
        moto_s3 = request.getfixturevalue("moto_s3")
        con = open_views(connect_duckdb(moto_s3), request.getfixturevalue("s3_store_url"))
    yield con
    con.close()


@pytest.fixture
def con(store_con) -> Iterator[Connection]:
    """store_con, with the queries' variables unset again after each test."""
    yield store_con
    for name in VARIABLES:
        store_con.execute(f"RESET VARIABLE {name}")


def run(con: Connection, name: str, **variables: Any) -> List[Row]:
    """Sets the variables, runs queries/<name>, returns its rows as dicts (via Arrow: exact types)."""
    for key, value in variables.items():
        con.execute(f"SET VARIABLE {key} = ?", [value])
    return con.sql(sql(name)).to_arrow_table().to_pylist()


# --------------------------------------------------------------------------
# Python-side expectations
# --------------------------------------------------------------------------


def nulls_last(*values: Any) -> Tuple[Any, ...]:
    """A sort key that orders None after every value, as ORDER BY ... NULLS LAST."""
    return tuple((v is None, v if v is not None else "") for v in values)


def in_scope(r: Row, since: Optional[dt.datetime] = None, until: Optional[dt.datetime] = None,
             tenant: Optional[str] = None) -> bool:
    return (
        (tenant is None or r["tenant"] == tenant)
        and (since is None or r["time"] >= since)
        and (until is None or r["time"] < until)
    )


def group(rows: Iterable[Row], key: Callable[[Row], Tuple[Any, ...]]) -> Dict[Tuple[Any, ...], List[Row]]:
    out: Dict[Tuple[Any, ...], List[Row]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def distinct_sorted(values: Iterable[Any]) -> List[Any]:
    return sorted({v for v in values if v is not None})


def quantile_cont(values: List[float], q: float) -> float:
    """Linear interpolation between the closest ranks (DuckDB's quantile_cont)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def ms(ns: Optional[float]) -> Optional[float]:
    return None if ns is None else round(ns / 1e6, 3)


def details(r: Row) -> str:
    return "; ".join(f"{k}={v}" for k, v in r["attributes"])


def digest_of(r: Row, field: str) -> Optional[Dict[str, Any]]:
    return next((d for d in r["content_digests"] if d["field"] == field), None)


def assert_rows(got: List[Row], want: List[Row], approx: Tuple[str, ...] = ()) -> None:
    """Same rows in the same order; columns in `approx` within 0.0011 (values rounded to 3 decimals)."""
    assert [list(r) for r in got[:1]] == [list(r) for r in want[:1]], "columns differ"
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        for col in approx:
            if w[col] is None:
                assert g[col] is None, (i, col)
            else:
                assert g[col] == pytest.approx(w[col], abs=1.1e-3), (i, col, g, w)
        assert {k: v for k, v in g.items() if k not in approx} == {k: v for k, v in w.items() if k not in approx}, i


def expected_activity(rows: List[Row], **scope: Any) -> List[Row]:
    key = lambda r: (r["tenant"], r["actor_id"], r["actor_type"], r["category"], r["action"])  # noqa: E731
    out = []
    for (tenant, actor, kind, category, action), rs in group((r for r in rows if in_scope(r, **scope)), key).items():
        outcomes = [r["outcome"] for r in rs]
        out.append(dict(
            tenant=tenant, actor_id=actor, actor_type=kind, category=category, action=action,
            events=len(rs),
            succeeded=outcomes.count("success"), failed=outcomes.count("failure"),
            denied=outcomes.count("denied"), blocked=outcomes.count("blocked"),
            distinct_targets=len({r["target_id"] for r in rs if r["target_id"] is not None}),
            roles=distinct_sorted(r["actor_role"] for r in rs),
            first_at=min(r["time"] for r in rs), last_at=max(r["time"] for r in rs),
        ))
    return sorted(
        out, key=lambda o: (o["tenant"],) + nulls_last(o["actor_id"], o["actor_type"]) + (o["category"], o["action"])
    )


# --------------------------------------------------------------------------
# views.sql
# --------------------------------------------------------------------------


def test_every_query_file_documents_itself():
    """Each query starts with a comment block saying what it answers, its variables and how to run it."""
    names = sorted(p.name for p in QUERIES.glob("*.sql"))
    assert names == sorted([
        "views.sql", "activity_by_actor.sql", "model_usage.sql", "safety.sql", "admin_trail.sql",
        "data_subject.sql", "record_keeping.sql", "chain_check.sql",
    ]), "a new query file needs its test here"
    for name in names:
        header = "\n".join(takewhile(lambda line: line.startswith("--"), sql(name).splitlines()))
        assert header.count("\n") >= 10, name
        if name != "views.sql":
            assert header.startswith(f"-- {name}: "), name
            assert all(word in header for word in ("QUESTION", "VARIABLES", "RUN", "OUTPUT")), name


def test_views_columns(con):
    events = con.sql("DESCRIBE audit_events").fetchall()
    assert [c[0] for c in events] == iv.EXPECTED_NAMES + ["date", "hour"]
    assert [c[1] for c in events[-2:]] == ["DATE", "VARCHAR"]
    stored = con.sql("DESCRIBE audit_stored_rows").fetchall()
    assert [c[0] for c in stored] == iv.EXPECTED_NAMES + ["file_row_number", "path"]


def test_views_read_the_store_given(con, query_store):
    """The views read exactly the store's data files, from the local directory or from S3."""
    store = con.sql("SELECT getvariable('store')").fetchone()[0]
    files = [f for (f,) in con.sql("SELECT file FROM glob(getvariable('store') || '/tenant=*/*/*/*')").fetchall()]
    assert files and all(f.startswith(store + "/") for f in files)
    want = [rel(query_store.root, f) for f in data_files(query_store.root)]
    assert sorted(f[len(store) + 1 :] for f in files) == want


def test_views_hold_every_row_in_its_partition(con, rows):
    """audit_events has every row once, under its directory's tenant, date and hour."""
    got = con.sql(
        """SELECT 'tenant=' || tenant || '/date=' || strftime(date, '%Y-%m-%d') || '/hour=' || hour, count(*)
           FROM audit_events GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    assert got == sorted((d, len(rs)) for (d,), rs in group(rows, lambda r: (r["_path"].rsplit("/", 1)[0],)).items())
    assert {d.split("/")[1] for d, _ in got} == {"date=2026-01-05", "date=2026-01-06"}
    paths = con.sql("SELECT path, count(*) FROM audit_stored_rows GROUP BY ALL ORDER BY ALL").fetchall()
    assert paths == sorted((p, len(rs)) for (p,), rs in group(rows, lambda r: (r["_path"],)).items())


def test_hour_is_text_even_when_every_hour_has_two_digits(tmp_path, generate_store, connect_duckdb):
    """DuckDB alone infers hour BIGINT for a store of hours 10..23; the view keeps the directory's text."""
    late = tmp_path / "late"
    generate_store(late, events=60, tenants=1, hours=2, start="2026-01-05T10:00:00Z", seed=5)
    con = open_views(connect_duckdb(), str(late) + "/")  # a trailing '/' is ignored
    auto = con.sql(f"SELECT typeof(hour) FROM read_parquet('{late}/*/*/*/*.parquet', hive_partitioning = true) LIMIT 1")
    assert auto.fetchone()[0] == "BIGINT"
    assert con.sql("SELECT DISTINCT typeof(hour), typeof(date) FROM audit_events").fetchall() == [("VARCHAR", "DATE")]
    by_hour = dict(con.sql("SELECT hour, count(*) FROM audit_events GROUP BY hour").fetchall())
    want = group(read_rows(late), lambda r: (r["received_at"].astimezone(UTC).strftime("%H"),))
    assert by_hour == {h: len(rs) for (h,), rs in want.items()} and set(by_hour) == {"10", "11"}


def test_views_follow_the_store_variable(tmp_path, query_store, generate_store, connect_duckdb):
    """The view re-reads getvariable('store') at each query; unset at creation, it says so."""
    other = tmp_path / "other"
    generate_store(other, events=40, tenants=1, hours=1, start="2026-02-01", seed=3)
    con = connect_duckdb()
    with pytest.raises(Exception, match="store is not set"):
        con.execute(sql("views.sql"))
    open_views(con, str(query_store.root))
    assert con.sql("SELECT count(*) FROM audit_events").fetchone()[0] == len(read_rows(query_store.root))
    con.execute("SET VARIABLE store = ?", [str(other)])
    assert con.sql("SELECT count(*) FROM audit_events").fetchone()[0] == 40


def test_tenant_comes_from_the_directory_in_audit_events(tmp_path, query_store, connect_duckdb):
    """DuckDB fills `tenant` from tenant=, not from the file; audit_stored_rows keeps the stored value."""
    root = tmp_path / "store"
    shutil.copytree(query_store.root, root)
    victim = sorted(root.glob("tenant=acme/date=*/hour=*/collector-1.acme-*.parquet"))[2]
    moved = root / "tenant=globex" / victim.parent.parent.name / victim.parent.name / victim.name
    moved.parent.mkdir(parents=True, exist_ok=True)
    victim.rename(moved)
    ids = [r["event_id"] for r in pq.ParquetFile(moved).read().to_pylist()]
    con = open_views(connect_duckdb(), str(root))
    shown = con.sql("SELECT DISTINCT tenant FROM audit_events WHERE list_contains(?, event_id)", params=[ids])
    assert shown.fetchall() == [("globex",)]
    stored = con.sql("SELECT DISTINCT tenant FROM audit_stored_rows WHERE list_contains(?, event_id)", params=[ids])
    assert stored.fetchall() == [("acme",)]


# --------------------------------------------------------------------------
# activity_by_actor.sql
# --------------------------------------------------------------------------


def test_activity_by_actor(con, rows):
    got = run(con, "activity_by_actor.sql")
    assert_rows(got, expected_activity(rows))
    assert sum(r["events"] for r in got) == len(rows)


def test_activity_by_actor_in_a_period(con, rows, query_store):
    """[since, until): an event exactly at `since` is in, one exactly at `until` is out; texts are UTC."""
    since = sorted(r["time"] for r in rows)[len(rows) // 2]
    until = query_store.extra["legal_hold"]["time"]
    got = run(con, "activity_by_actor.sql", since=since.strftime("%Y-%m-%d %H:%M:%S.%f"), until=until)
    want = expected_activity(rows, since=since, until=until)
    assert_rows(got, want)
    assert 0 < sum(r["events"] for r in got) < len(rows)


def test_activity_by_actor_for_one_tenant(con, rows):
    got = run(con, "activity_by_actor.sql", tenant="globex")
    assert_rows(got, expected_activity(rows, tenant="globex"))
    assert {r["tenant"] for r in got} == {"globex"}


# --------------------------------------------------------------------------
# model_usage.sql
# --------------------------------------------------------------------------


def test_model_usage(con, rows):
    calls = [r for r in rows if r["category"] == "inference"]
    key = lambda r: (  # noqa: E731
        r["time"].astimezone(UTC).date(), r["tenant"], r["gen_ai_provider"], r["gen_ai_request_model"],
        r["gen_ai_response_model"], r["actor_id"],
    )
    want = []
    for (day, tenant, provider, model, response, actor), rs in group(calls, key).items():
        durations = [r["duration_ns"] for r in rs if r["duration_ns"] is not None]
        inputs = [r["gen_ai_input_tokens"] for r in rs if r["gen_ai_input_tokens"] is not None]
        outputs = [r["gen_ai_output_tokens"] for r in rs if r["gen_ai_output_tokens"] is not None]
        want.append(dict(
            day=day, tenant=tenant, provider=provider, model=model, response_model=response, actor_id=actor,
            calls=len(rs), unsuccessful_calls=sum(r["outcome"] != "success" for r in rs),
            input_tokens=sum(inputs) if inputs else None, output_tokens=sum(outputs) if outputs else None,
            avg_latency_ms=ms(sum(durations) / len(durations)) if durations else None,
            p95_latency_ms=ms(quantile_cont(durations, 0.95)) if durations else None,
        ))
    want.sort(key=lambda w: (w["day"], w["tenant"]) + nulls_last(w["provider"], w["model"], w["response_model"], w["actor_id"]))
    got = run(con, "model_usage.sql")
    assert_rows(got, want, approx=("avg_latency_ms", "p95_latency_ms"))
    # the store exercises what the query must handle: two days, a call without duration or output count
    assert {w["day"] for w in want} == {dt.date(2026, 1, 5), dt.date(2026, 1, 6)}
    assert any(w["avg_latency_ms"] is None for w in want) and any(w["calls"] >= 3 for w in want)
    assert sum(w["calls"] for w in got) == len(calls)


# --------------------------------------------------------------------------
# safety.sql
# --------------------------------------------------------------------------


def expected_safety(rows: List[Row], **scope: Any) -> List[Row]:
    flagged = [
        r for r in rows
        if in_scope(r, **scope)
        and (r["safety_passed"] is False or r["safety_detectors"] or r["safety_block_reason"] is not None
             or (r["outcome"] == "blocked" and r["category"] != "compliance"))
    ]
    exploded = [(d, r) for r in flagged for d in (r["safety_detectors"] or [None])]
    want = []
    for (tenant, actor, kind, detector), pairs in group(
        exploded, lambda p: (p[1]["tenant"], p[1]["actor_id"], p[1]["actor_type"], p[0])
    ).items():
        rs = [r for _, r in pairs]
        want.append(dict(
            tenant=tenant, actor_id=actor, actor_type=kind, detector=detector, events=len(rs),
            failed_checks=sum(r["safety_passed"] is False for r in rs),
            blocked=sum(r["outcome"] == "blocked" for r in rs),
            block_reasons=distinct_sorted(r["safety_block_reason"] for r in rs),
            models=distinct_sorted(r["gen_ai_request_model"] for r in rs),
            first_at=min(r["time"] for r in rs), last_at=max(r["time"] for r in rs),
            event_ids=[r["event_id"] for r in sorted(rs, key=lambda r: (r["time"], r["event_id"]))],
        ))
    return sorted(want, key=lambda w: (w["tenant"],) + nulls_last(w["actor_id"], w["actor_type"], w["detector"]))


def test_safety(con, rows, query_store):
    got = run(con, "safety.sql")
    assert_rows(got, expected_safety(rows))
    by_event = {e for r in got for e in r["event_ids"]}
    extra = query_store.extra
    # a blocked tool call without detectors, a warning that passed; not a legal hold
    assert extra["tool_blocked"]["event_id"] in by_event and extra["chat_warned"]["event_id"] in by_event
    assert extra["legal_hold"]["event_id"] not in by_event
    assert any(r["detector"] is None and r["blocked"] for r in got)
    assert sum(r["failed_checks"] for r in got) > 10


def test_safety_for_one_tenant(con, rows):
    got = run(con, "safety.sql", tenant="globex")
    assert_rows(got, expected_safety(rows, tenant="globex"))
    assert got and {r["tenant"] for r in got} == {"globex"}


# --------------------------------------------------------------------------
# admin_trail.sql
# --------------------------------------------------------------------------


def test_admin_trail(con, rows):
    trail = sorted(
        (r for r in rows if r["category"] in ("admin", "governance", "compliance", "system")),
        key=lambda r: (r["time"], r["event_id"]),
    )
    want = [
        dict(
            time=r["time"], tenant=r["tenant"], area=AREAS[r["action"]], category=r["category"],
            action=r["action"], outcome=r["outcome"], actor_id=r["actor_id"], actor_type=r["actor_type"],
            actor_role=r["actor_role"], actor_ip=r["actor_ip"], target_type=r["target_type"],
            target_id=r["target_id"], model=r["gen_ai_request_model"], error_type=r["error_type"],
            error_message=r["error_message"], details=details(r), event_id=r["event_id"],
            chain_id=r["chain_id"], seq=r["seq"],
        )
        for r in trail
    ]
    got = run(con, "admin_trail.sql")
    assert_rows(got, want)
    assert {g["area"] for g in got} == set(AREAS.values())
    backup = next(g for g in got if g["action"] == "backup.completed")
    assert backup["details"] == (
        "backup.bytes_copied=52011; backup.objects_copied=12; backup.to=s3://audit-backup/acme; backup.verified=intact"
    )
    assert any(g["action"] == "model.download" and g["model"] for g in got)
    assert any(g["details"] == "setting.new=true; setting.old=false" for g in got)


def test_admin_trail_in_a_period(con, rows):
    since, until = dt.datetime(2026, 1, 6, 1, 0, tzinfo=UTC), dt.datetime(2026, 1, 6, 1, 10, 5, tzinfo=UTC)
    got = run(con, "admin_trail.sql", since=since, until=until)
    want = sorted(
        (r for r in rows if r["category"] in ("admin", "governance", "compliance", "system") and in_scope(r, since, until)),
        key=lambda r: (r["time"], r["event_id"]),
    )
    assert [g["event_id"] for g in got] == [r["event_id"] for r in want]
    assert {g["action"] for g in got} >= {"backup.completed", "backup.failed", "retention.delete", "retention.hold"}


# --------------------------------------------------------------------------
# data_subject.sql
# --------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["user-007", "collection-kb-1", "s3://audit-backup/acme", "nobody-at-all"])
def test_data_subject(con, rows, subject):
    got = run(con, "data_subject.sql", subject=subject)
    matching = sorted(
        (r for r in rows if subject in (r["actor_id"], r["target_id"])), key=lambda r: (r["time"], r["event_id"])
    )
    assert [g["event_id"] for g in got] == [r["event_id"] for r in matching]
    for g, r in zip(got, matching):
        role = "actor+target" if r["actor_id"] == r["target_id"] == subject else (
            "actor" if r["actor_id"] == subject else "target")
        assert g["subject_as"] == role
        assert (g["time"], g["action"], g["actor_id"], g["target_id"], g["seq"]) == (
            r["time"], r["action"], r["actor_id"], r["target_id"], r["seq"])
        assert g["details"] == details(r)
        assert g["digested_fields"] == [d["field"] for d in r["content_digests"]]
        assert g["sealed_fields"] == [s["field"] for s in r["sealed_content"]]
        assert g["redacted_fields"] == [x["field"] for x in r["redactions"]]
    if subject == "user-007":
        assert {g["subject_as"] for g in got} == {"actor", "target", "actor+target"}
    elif subject != "nobody-at-all":
        assert got


def test_data_subject_requires_the_variable(con):
    with pytest.raises(Exception, match="variable subject is not set"):
        run(con, "data_subject.sql")


# --------------------------------------------------------------------------
# record_keeping.sql
# --------------------------------------------------------------------------


def expected_record_keeping(rows: List[Row], **scope: Any) -> List[Row]:
    uses = sorted((r for r in rows if r["category"] == "inference" and in_scope(r, **scope)),
                  key=lambda r: (r["time"], r["event_id"]))
    checks = [
        r for r in rows
        if r["category"] == "governance" and r["outcome"] == "success"
        and r["action"].endswith((".approve", ".verify", ".review"))
    ]
    retrievals = [r for r in rows if r["category"] == "data_access" and r["target_id"] is not None]
    want = []
    for u in uses:
        verifiers = [
            v for v in checks
            if v["tenant"] == u["tenant"] and (
                v["target_id"] == u["event_id"]
                or (u["trace_id"] is not None and v["trace_id"] == u["trace_id"] and v["time"] >= u["time"]))
        ]
        refs = [d for d in retrievals if d["tenant"] == u["tenant"] and u["trace_id"] is not None
                and d["trace_id"] == u["trace_id"]]
        digest_in, digest_out = digest_of(u, "gen_ai.input.messages"), digest_of(u, "gen_ai.output.messages")
        duration = u["duration_ns"]
        want.append(dict(
            tenant=u["tenant"], event_id=u["event_id"], chain_id=u["chain_id"], seq=u["seq"],
            use_start=u["time"],
            use_end=None if duration is None else u["time"] + dt.timedelta(microseconds=duration // 1000),
            duration_ms=ms(duration),
            service_name=u["service_name"], service_version=u["service_version"],
            provider=u["gen_ai_provider"], model=u["gen_ai_request_model"],
            response_model=u["gen_ai_response_model"], operation=u["gen_ai_operation"],
            actor_id=u["actor_id"], actor_type=u["actor_type"], actor_role=u["actor_role"],
            actor_session=u["actor_session"], conversation_id=u["gen_ai_conversation_id"], trace_id=u["trace_id"],
            input_digest=digest_in["digest"].hex() if digest_in else None,
            input_digest_algorithm=digest_in["algorithm"] if digest_in else None,
            input_digest_key_id=digest_in["key_id"] if digest_in else None,
            input_sealed=any(s["field"] == "gen_ai.input.messages" for s in u["sealed_content"]),
            output_digest=digest_out["digest"].hex() if digest_out else None,
            reference_data=distinct_sorted(
                ":".join(x for x in (d["target_type"], d["target_id"]) if x is not None) for d in refs),
            outcome=u["outcome"], safety_passed=u["safety_passed"], safety_detectors=u["safety_detectors"],
            verified_by=distinct_sorted(v["actor_id"] for v in verifiers),
            verifier_roles=distinct_sorted(v["actor_role"] for v in verifiers),
            verified_at=min((v["time"] for v in verifiers), default=None),
        ))
    return want


def test_record_keeping(con, rows, query_store):
    got = run(con, "record_keeping.sql")
    assert_rows(got, expected_record_keeping(rows), approx=("duration_ms",))
    by_id = {g["event_id"]: g for g in got}
    extra = query_store.extra
    a = by_id[extra["approve_a"]["target_id"]]
    assert (a["verified_by"], a["verifier_roles"]) == (["user-010"], ["supervisor"])  # not the failed approval
    b = next(g for g in got if g["trace_id"] == extra["review_b"]["trace_id"])
    assert (b["verified_by"], b["reference_data"]) == (["user-020"], ["collection:collection-kb-1"])
    c = next(g for g in got if g["trace_id"] == extra["early_review_c"]["trace_id"])
    assert c["verified_by"] == [] and c["verified_at"] is None  # the review came before the call
    warned = by_id[extra["chat_warned"]["event_id"]]
    assert warned["input_sealed"] and warned["input_digest"] is None and warned["use_end"] is None
    assert sum(bool(g["verified_by"]) for g in got) == 2
    assert all(g["input_digest"] and len(g["input_digest"]) == 64 for g in got if g["event_id"] != warned["event_id"])


def test_record_keeping_in_a_period(con, rows):
    since = dt.datetime(2026, 1, 6, 0, 0, tzinfo=UTC)
    got = run(con, "record_keeping.sql", since=dt.date(2026, 1, 6), tenant="acme")
    assert_rows(got, expected_record_keeping(rows, since=since, tenant="acme"), approx=("duration_ms",))
    assert got and all(g["use_start"] >= since and g["tenant"] == "acme" for g in got)


# --------------------------------------------------------------------------
# chain_check.sql
# --------------------------------------------------------------------------


def test_chain_check_on_the_intact_store(con, query_store, rust_verify):
    code, report, _ = rust_verify(query_store.root)
    assert code == 0 and report["intact"], report["problems"]  # the hand-built chain is valid
    assert EXTRA_CHAIN in {c["chain_id"] for c in report["chains"]}
    assert run(con, "chain_check.sql") == []


@pytest.fixture
def tampered(query_store, tmp_path) -> Path:
    """A private copy of the query store to tamper with."""
    root = tmp_path / "store"
    shutil.copytree(query_store.root, root)
    return root


def chain_check(connect_duckdb: Callable[..., Connection], root: Path) -> List[Row]:
    con = open_views(connect_duckdb(), str(root))
    try:
        return run(con, "chain_check.sql")
    finally:
        con.close()


def chain_files(root: Path, chain_id: str) -> List[Path]:
    tenant = chain_id.split(".", 1)[1]
    return sorted(root.glob(f"tenant={tenant}/date=*/hour=*/{chain_id}-*.parquet"), key=lambda p: p.name)


def problem(kind: str, chain_id: str, seq: int, path: str, row: int, seq_end: Optional[int] = None) -> Row:
    return dict(chain_id=chain_id, seq=seq, seq_end=seq if seq_end is None else seq_end, kind=kind, path=path, row=row)


def without_detail(got: List[Row]) -> List[Row]:
    return [{k: v for k, v in g.items() if k != "detail"} for g in got]


def rehash(table: pa.Table, i: int) -> pa.Table:
    """Recomputes row i's hash from its stored prev_hash and content (as a forger would)."""
    hashes = table.column("hash").to_pylist()
    hashes[i] = iv.row_hash(table.column("prev_hash")[i].as_py(), iv.canonical_rows(table.slice(i, 1))[0])
    return table.set_column(45, table.schema.field(45), pa.array(hashes, pa.binary(32)))


def set_value(table: pa.Table, column: str, i: int, value: Any) -> pa.Table:
    idx = table.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    values[i] = value
    return table.set_column(idx, table.schema.field(idx), pa.array(values, table.schema.field(idx).type))


def rewrite(f: Path, table: pa.Table) -> None:
    pq.write_table(table, f, compression="zstd")  # keeps the (now stale) footer keys of the read table


def test_chain_check_deleted_middle_file(tampered, connect_duckdb, rust_verify):
    files = chain_files(tampered, "collector-1.acme")
    victim, after = files[len(files) // 2], files[len(files) // 2 + 1]
    seqs = pq.ParquetFile(victim).read().column("seq").to_pylist()
    victim.unlink()
    got = chain_check(connect_duckdb, tampered)
    assert without_detail(got) == [
        problem("seq_gap", "collector-1.acme", seqs[0], rel(tampered, after), 0, seq_end=seqs[-1])
    ]
    assert got[0]["detail"] == f"seqs {seqs[0]}..{seqs[-1]} are missing: no row holds them"
    _, report, _ = rust_verify(tampered)
    assert [(p["kind"], p["seq"], p["seq_end"]) for p in report["problems"]] == [("missing_file", seqs[0], seqs[-1])]


def test_chain_check_rows_cut_from_a_file(tampered, connect_duckdb):
    f = chain_files(tampered, "collector-1.globex")[2]
    t = pq.ParquetFile(f).read()
    cut = t.column("seq").to_pylist()[10:13]
    rewrite(f, pa.concat_tables([t.slice(0, 10), t.slice(13)]))
    assert without_detail(chain_check(connect_duckdb, tampered)) == [
        problem("seq_gap", "collector-1.globex", cut[0], rel(tampered, f), 10, seq_end=cut[-1])
    ]


def test_chain_check_altered_and_rehashed_row(tampered, connect_duckdb, rust_verify):
    """The altered row keeps a valid hash of its own; the link of the row after it breaks."""
    f = chain_files(tampered, "collector-1.globex")[3]
    t = pq.ParquetFile(f).read()
    t = rehash(set_value(t, "actor_id", 7, "mallory"), 7)
    rewrite(f, t)
    seq8 = t.column("seq")[8].as_py()
    got = chain_check(connect_duckdb, tampered)
    assert without_detail(got) == [problem("broken_link", "collector-1.globex", seq8, rel(tampered, f), 8)]
    assert got[0]["detail"].startswith(f"prev_hash {t.column('prev_hash')[8].as_py().hex()} is not the hash")
    _, report, _ = rust_verify(tampered)
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("broken_link", seq8)]


def test_chain_check_inserted_copy_of_a_seq(tampered, connect_duckdb, rust_verify):
    """A forged row inserted with an existing seq and a valid link: reported once, as a duplicate."""
    f = chain_files(tampered, "collector-1.acme")[1]
    t = pq.ParquetFile(f).read()
    forged = rehash(set_value(t.slice(5, 1), "actor_id", 0, "mallory"), 0)
    rewrite(f, pa.concat_tables([t.slice(0, 6), forged, t.slice(6)]))
    seq5 = t.column("seq")[5].as_py()
    path = rel(tampered, f)
    got = chain_check(connect_duckdb, tampered)
    assert without_detail(got) == [problem("duplicate_seq", "collector-1.acme", seq5, path, 5)]
    assert got[0]["detail"] == f"2 rows hold this seq: {path}#5, {path}#6"
    _, report, _ = rust_verify(tampered)
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("inserted_row", seq5)]


def test_chain_check_first_row_not_linked_to_zero(tampered, connect_duckdb):
    f = chain_files(tampered, "collector-1.globex")[0]
    t = pq.ParquetFile(f).read()
    rewrite(f, rehash(set_value(t, "prev_hash", 0, b"\x11" * 32), 0))
    got = chain_check(connect_duckdb, tampered)
    path = rel(tampered, f)
    assert without_detail(got) == [
        problem("broken_link", "collector-1.globex", 0, path, 0),
        problem("broken_link", "collector-1.globex", 1, path, 1),
    ]
    assert got[0]["detail"] == f"seq 0 has prev_hash {'11' * 32}, not 32 zero bytes"


@pytest.mark.parametrize("move", ["tenant", "hour"])
def test_chain_check_misplaced_file(tampered, connect_duckdb, move):
    """A file moved to another tenant's or hour's directory still links, but is reported as misplaced."""
    victim = chain_files(tampered, "collector-1.acme")[3]
    first_seq = pq.ParquetFile(victim).read().column("seq")[0].as_py()
    hour_dir, date_dir = victim.parent.name, victim.parent.parent.name
    if move == "tenant":
        target = tampered / "tenant=globex" / date_dir / hour_dir
        detail = "tenant acme in tenant=globex"
    else:
        other = "hour=%02d" % ((int(hour_dir[len("hour="):]) + 1) % 24)
        target = victim.parent.parent / other
        detail = f"in {date_dir}/{other}"
    target.mkdir(parents=True, exist_ok=True)
    victim.rename(target / victim.name)
    got = chain_check(connect_duckdb, tampered)
    assert without_detail(got) == [
        problem("misplaced_file", "collector-1.acme", first_seq, rel(tampered, target / victim.name), 0)
    ]
    assert detail in got[0]["detail"]
