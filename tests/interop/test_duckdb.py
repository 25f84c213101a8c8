"""DuckDB reads an otel-audit store as documented in FORMAT.md §7, and agrees with pyarrow."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Dict, List

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest


def scan(root: Path) -> str:
    return f"read_parquet('{root.as_posix()}/**/*.parquet', hive_partitioning = true)"


@pytest.fixture
def con():
    c = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    yield c
    c.close()


def data_files(root: Path) -> List[Path]:
    return sorted(root.glob("tenant=*/date=*/hour=*/*.parquet"))


@pytest.fixture(scope="module")
def arrow_rows(base_store) -> pa.Table:
    """All rows of the store, read file by file with pyarrow (no hive inference), plus the partition values."""
    tables = []
    for f in data_files(base_store):
        t = pq.ParquetFile(f).read()
        hour = f.parent.name.split("=", 1)[1]
        date = f.parent.parent.name.split("=", 1)[1]
        t = t.append_column("dir_date", pa.array([date] * t.num_rows))
        t = t.append_column("dir_hour", pa.array([hour] * t.num_rows))
        tables.append(t.replace_schema_metadata(None))
    return pa.concat_tables(tables)


EXPECTED_TYPES: Dict[str, str] = {
    "event_id": "VARCHAR",
    "time": "TIMESTAMP WITH TIME ZONE",
    "received_at": "TIMESTAMP WITH TIME ZONE",
    "duration_ns": "BIGINT",
    "tenant": "VARCHAR",
    "gen_ai_input_tokens": "BIGINT",
    "gen_ai_output_tokens": "BIGINT",
    "gen_ai_temperature": "DOUBLE",
    "safety_passed": "BOOLEAN",
    "safety_detectors": "VARCHAR[]",
    "content_digests": "STRUCT(field VARCHAR, algorithm VARCHAR, key_id VARCHAR, digest BLOB)[]",
    "sealed_content": "STRUCT(field VARCHAR, algorithm VARCHAR, key_id VARCHAR, nonce BLOB, ciphertext BLOB)[]",
    "attributes": "MAP(VARCHAR, VARCHAR)",
    "redactions": 'STRUCT(field VARCHAR, "method" VARCHAR, detector VARCHAR, key_id VARCHAR)[]',
    "chain_id": "VARCHAR",
    "seq": "BIGINT",
    "prev_hash": "BLOB",
    "hash": "BLOB",
    "date": "DATE",
    "hour": "VARCHAR",
}


def test_column_types(con, base_store):
    described = con.sql(f"DESCRIBE SELECT * FROM {scan(base_store)}").fetchall()
    types = {name: typ for name, typ, *_ in described}
    # the 46 columns of FORMAT.md §2, then the two hive partition columns (tenant keeps the file column's
    # place, but DuckDB fills it from the tenant= directory: queries/views.sql)
    assert len(described) == 48, [d[0] for d in described]
    assert [d[0] for d in described][-2:] == ["date", "hour"]
    for name, want in EXPECTED_TYPES.items():
        assert types[name] == want, (name, types[name])


def test_counts_match_pyarrow(con, base_store, arrow_rows):
    total = con.sql(f"SELECT count(*) FROM {scan(base_store)}").fetchone()[0]
    assert total == arrow_rows.num_rows == 3000

    per_tenant = dict(con.sql(f"SELECT tenant, count(*) FROM {scan(base_store)} GROUP BY tenant").fetchall())
    assert per_tenant == dict(Counter(arrow_rows.column("tenant").to_pylist()))
    assert set(per_tenant) == {p.name.split("=", 1)[1] for p in base_store.glob("tenant=*")}

    per_hour = {
        (d.isoformat(), h): n
        for d, h, n in con.sql(f"SELECT date, hour, count(*) FROM {scan(base_store)} GROUP BY ALL").fetchall()
    }
    want = Counter(zip(arrow_rows.column("dir_date").to_pylist(), arrow_rows.column("dir_hour").to_pylist()))
    assert per_hour == dict(want)
    assert len(per_hour) == 6


def test_hour_filter_matches_received_at(con, base_store, arrow_rows):
    """A partition filter (date, hour) selects exactly the rows received in that UTC hour."""
    by_partition = con.sql(
        f"SELECT tenant, count(*) FROM {scan(base_store)} WHERE date = DATE '2026-01-05' AND hour = '03' GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    by_time = con.sql(
        f"""SELECT tenant, count(*) FROM {scan(base_store)}
            WHERE received_at >= TIMESTAMPTZ '2026-01-05 03:00:00+00' AND received_at < TIMESTAMPTZ '2026-01-05 04:00:00+00'
            GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    lo = pa.scalar(dt.datetime(2026, 1, 5, 3, tzinfo=dt.timezone.utc), pa.timestamp("us", tz="UTC"))
    hi = pa.scalar(dt.datetime(2026, 1, 5, 4, tzinfo=dt.timezone.utc), pa.timestamp("us", tz="UTC"))
    ra = arrow_rows.column("received_at")
    in_hour = arrow_rows.filter(pc.and_(pc.greater_equal(ra, lo), pc.less(ra, hi)))
    want = sorted(Counter(in_hour.column("tenant").to_pylist()).items())
    assert by_partition == by_time == want
    assert sum(n for _, n in want) > 0
    # and the partition filter is the directory
    assert sum(n for _, n in by_partition) == sum(
        pq.ParquetFile(f).metadata.num_rows for f in base_store.glob("tenant=*/date=2026-01-05/hour=03/*.parquet")
    )


def test_category_filter_and_token_sum(con, base_store, arrow_rows):
    n, tokens = con.sql(
        f"SELECT count(*), sum(gen_ai_input_tokens) FROM {scan(base_store)} WHERE category = 'inference'"
    ).fetchone()
    inference = arrow_rows.filter(pc.equal(arrow_rows.column("category"), "inference"))
    assert n == inference.num_rows > 0
    assert tokens == pc.sum(inference.column("gen_ai_input_tokens")).as_py() > 0

    per_tenant = dict(
        con.sql(
            f"SELECT tenant, sum(gen_ai_output_tokens) FROM {scan(base_store)} WHERE category = 'inference' GROUP BY tenant"
        ).fetchall()
    )
    for tenant, total in per_tenant.items():
        rows = inference.filter(pc.equal(inference.column("tenant"), tenant))
        assert total == pc.sum(rows.column("gen_ai_output_tokens")).as_py()


def test_nested_columns_round_trip(con, base_store, arrow_rows):
    """Lists, maps and structs read by DuckDB hold what pyarrow reads."""
    got = con.sql(
        f"""SELECT seq, len(safety_detectors), cardinality(attributes), len(content_digests), len(redactions),
                   hex(hash)
            FROM {scan(base_store)} WHERE chain_id = 'collector-1.acme' ORDER BY seq"""
    ).fetchall()
    t = arrow_rows.filter(pc.equal(arrow_rows.column("chain_id"), "collector-1.acme"))
    t = t.sort_by("seq")
    want = list(
        zip(
            t.column("seq").to_pylist(),
            [len(x) for x in t.column("safety_detectors").to_pylist()],
            [len(x) for x in t.column("attributes").to_pylist()],
            [len(x) for x in t.column("content_digests").to_pylist()],
            [len(x) for x in t.column("redactions").to_pylist()],
            [h.hex().upper() for h in t.column("hash").to_pylist()],
        )
    )
    assert got == want
    assert any(r[2] for r in got) and any(r[3] for r in got), "the synthetic store should have maps and digests"


# The SQL chain check (links, gaps, duplicates, placement) is queries/chain_check.sql; test_queries.py
# runs it on intact and tampered stores, locally and on S3.
