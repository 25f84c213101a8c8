#!/usr/bin/env python3
"""An independent verifier for otel-audit stores, written from docs/FORMAT.md only.

It uses nothing but pyarrow, hashlib and the standard library, and does not
share code (or a reading of the code) with the Rust implementation: its job is
to prove that the format document is enough to recompute every hash of a store
and reach the same verdict as `otel-audit verify`.

Library use::

    from independent_verify import verify
    report = verify("/path/to/store")      # dict, same shape as `otel-audit verify --json`

Command line::

    python independent_verify.py ROOT [--json]    # exit 0 intact, 1 problems, 2 error

Only local directories are supported.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = "1"
ROW_DOMAIN_TAG = b"otel-audit/row/v1"  # FORMAT.md §3: 17 ASCII bytes
ZERO_HASH = bytes(32)

# --------------------------------------------------------------------------
# FORMAT.md §1: layout
# --------------------------------------------------------------------------

_NAME_CHARS = r"[A-Za-z0-9._-]"
_TENANT_RE = re.compile(r"^(?![.-])" + _NAME_CHARS + r"{1,64}$")
_CHAIN_RE = re.compile(r"^(?![.-])" + _NAME_CHARS + r"{1,128}$")
_DATE_RE = re.compile(r"^date=(\d{4})-(\d{2})-(\d{2})$")
_HOUR_RE = re.compile(r"^hour=(\d{2})$")
_FILE_RE = re.compile(r"^(.+)-(\d{20})\.parquet$")


def expected_file_name(chain_id: str, first_seq: int) -> str:
    return f"{chain_id}-{first_seq:020d}.parquet"


# --------------------------------------------------------------------------
# FORMAT.md §2: columns
# --------------------------------------------------------------------------

_U = pa.string()


def _list(t: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("element", t, nullable=False))


def _struct(*fields: Tuple[str, pa.DataType, bool]) -> pa.DataType:
    return pa.struct([pa.field(n, t, nullable=not req) for n, t, req in fields])


_TS = pa.timestamp("us", tz="UTC")
_H32 = pa.binary(32)

EXPECTED_COLUMNS: List[Tuple[str, pa.DataType]] = [
    ("event_id", _U),
    ("time", _TS),
    ("received_at", _TS),
    ("duration_ns", pa.int64()),
    ("severity", _U),
    ("tenant", _U),
    ("service_name", _U),
    ("service_version", _U),
    ("service_environment", _U),
    ("service_host", _U),
    ("actor_id", _U),
    ("actor_type", _U),
    ("actor_role", _U),
    ("actor_ip", _U),
    ("actor_session", _U),
    ("category", _U),
    ("action", _U),
    ("outcome", _U),
    ("target_type", _U),
    ("target_id", _U),
    ("error_type", _U),
    ("error_message", _U),
    ("gen_ai_provider", _U),
    ("gen_ai_operation", _U),
    ("gen_ai_request_model", _U),
    ("gen_ai_response_model", _U),
    ("gen_ai_input_tokens", pa.int64()),
    ("gen_ai_output_tokens", pa.int64()),
    ("gen_ai_conversation_id", _U),
    ("gen_ai_agent_name", _U),
    ("gen_ai_tool_name", _U),
    ("gen_ai_temperature", pa.float64()),
    ("safety_passed", pa.bool_()),
    ("safety_detectors", _list(_U)),
    ("safety_block_reason", _U),
    (
        "content_digests",
        _list(_struct(("field", _U, True), ("algorithm", _U, True), ("key_id", _U, False), ("digest", _H32, True))),
    ),
    (
        "sealed_content",
        _list(
            _struct(
                ("field", _U, True),
                ("algorithm", _U, True),
                ("key_id", _U, True),
                ("nonce", pa.binary(), True),
                ("ciphertext", pa.binary(), True),
            )
        ),
    ),
    ("trace_id", _U),
    ("span_id", _U),
    ("parent_span_id", _U),
    ("attributes", pa.map_(_U, _U)),
    (
        "redactions",
        _list(_struct(("field", _U, True), ("method", _U, True), ("detector", _U, False), ("key_id", _U, False))),
    ),
    ("chain_id", _U),
    ("seq", pa.int64()),
    ("prev_hash", _H32),
    ("hash", _H32),
]
EXPECTED_NAMES = [n for n, _ in EXPECTED_COLUMNS]
HASHED_COLUMNS = 44  # §3: columns 1 to 44


def _is_utc(tz: Optional[str]) -> bool:
    return tz in ("UTC", "+00:00", "Etc/UTC", "Z")


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    """Structural type equality; list item / map entry names and nullability are not compared."""
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(got) and got.unit == want.unit and _is_utc(got.tz)
    if pa.types.is_map(want):
        return (
            pa.types.is_map(got)
            and _same_type(got.key_type, want.key_type)
            and _same_type(got.item_type, want.item_type)
        )
    if pa.types.is_list(want):
        return pa.types.is_list(got) and _same_type(got.value_type, want.value_type)
    if pa.types.is_struct(want):
        if not pa.types.is_struct(got) or got.num_fields != want.num_fields:
            return False
        return all(
            got.field(i).name == want.field(i).name and _same_type(got.field(i).type, want.field(i).type)
            for i in range(want.num_fields)
        )
    return got.equals(want)


def schema_problem(schema: pa.Schema) -> Optional[str]:
    names = list(schema.names)
    if names != EXPECTED_NAMES:
        return f"columns {names} are not the {len(EXPECTED_NAMES)} columns of format version 1"
    for (name, want), got in zip(EXPECTED_COLUMNS, schema.types):
        if not _same_type(got, want):
            return f"column {name} has type {got}, expected {want}"
    return None


# --------------------------------------------------------------------------
# FORMAT.md §3: canonical encoding and row hash
# --------------------------------------------------------------------------

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _timestamp_micros(v: Any) -> int:
    if isinstance(v, int):
        return v
    d = v - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def encode_value(value: Any, typ: pa.DataType, out: bytearray) -> None:
    """Append the canonical encoding (presence byte + bytes) of one value of Arrow type `typ`."""
    if value is None:
        out.append(0x00)
        return
    out.append(0x01)
    _encode_present(value, typ, out)


def _encode_present(value: Any, typ: pa.DataType, out: bytearray) -> None:
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        b = value.encode("utf-8")
        out += _u32(len(b))
        out += b
    elif pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ):
        b = bytes(value)
        out += _u32(len(b))
        out += b
    elif pa.types.is_timestamp(typ):
        if typ.unit != "us":
            raise TypeError(f"timestamp unit {typ.unit} is not microseconds")
        out += struct.pack(">q", _timestamp_micros(value))
    elif pa.types.is_int64(typ):
        out += struct.pack(">q", value)
    elif pa.types.is_float64(typ):
        out += struct.pack(">d", value)
    elif pa.types.is_boolean(typ):
        out.append(0x01 if value else 0x00)
    elif pa.types.is_map(typ):
        # to_pylist gives a list of (key, value) pairs in stored order
        out += _u32(len(value))
        for k, v in value:
            encode_value(k, typ.key_type, out)
            encode_value(v, typ.item_type, out)
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        out += _u32(len(value))
        item = typ.value_type
        if pa.types.is_struct(item):
            # a struct list element: its fields, each with a presence byte, no presence byte for the struct
            for elem in value:
                _encode_struct_fields(elem, item, out)
        else:
            for elem in value:
                encode_value(elem, item, out)
    elif pa.types.is_struct(typ):
        # not used by format version 1 outside lists; encoded as its fields
        _encode_struct_fields(value, typ, out)
    else:
        raise TypeError(f"no canonical encoding for Arrow type {typ}")


def _encode_struct_fields(value: Any, typ: pa.StructType, out: bytearray) -> None:
    if value is None:
        raise ValueError("null struct list element has no canonical encoding")
    for i in range(typ.num_fields):
        f = typ.field(i)
        encode_value(value.get(f.name), f.type, out)


def canonical_rows(table: pa.Table) -> List[bytes]:
    """canonical(row) for every row: columns 1 to 44 in column order."""
    n = table.num_rows
    bufs = [bytearray() for _ in range(n)]
    for ci in range(HASHED_COLUMNS):
        col = table.column(ci)
        typ = col.type
        if pa.types.is_timestamp(typ):
            values = col.cast(pa.int64()).to_pylist()
        else:
            values = col.to_pylist()
        for i, v in enumerate(values):
            encode_value(v, typ, bufs[i])
    return [bytes(b) for b in bufs]


def row_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(ROW_DOMAIN_TAG + prev_hash + canonical).digest()


# --------------------------------------------------------------------------
# FORMAT.md §5.1: Merkle root (RFC 6962 §2.1)
# --------------------------------------------------------------------------


def merkle_root(leaves: List[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


# --------------------------------------------------------------------------
# The store walk
# --------------------------------------------------------------------------


@dataclass
class DataFile:
    rel: str  # path relative to the root, "/"-separated
    abs: str
    tenant: str
    date: str  # YYYY-MM-DD
    hour: int
    chain_id: str
    name_seq: int
    size: int
    readable: bool = False
    unreadable_reason: str = ""
    footer: Dict[str, str] = field(default_factory=dict)
    seqs: List[int] = field(default_factory=list)
    prevs: List[bytes] = field(default_factory=list)
    hashes: List[bytes] = field(default_factory=list)
    computed: List[bytes] = field(default_factory=list)
    partition_ok: bool = True
    partition_detail: str = ""
    statistics_problem: str = ""

    @property
    def n(self) -> int:
        return len(self.seqs)


class Report:
    def __init__(self) -> None:
        self.problems: List[Dict[str, Any]] = []

    def add(
        self,
        kind: str,
        detail: str,
        *,
        chain_id: Optional[str] = None,
        path: Optional[str] = None,
        row: Optional[int] = None,
        seq: Optional[int] = None,
        seq_end: Optional[int] = None,
    ) -> None:
        p: Dict[str, Any] = {"kind": kind}
        if chain_id is not None:
            p["chain_id"] = chain_id
        if path is not None:
            p["path"] = path
        if row is not None:
            p["row"] = row
        if seq is not None:
            p["seq"] = seq
            if seq_end is None and row is not None:
                seq_end = seq  # a row-level problem names a seq range of one
        if seq_end is not None:
            p["seq_end"] = seq_end
        p["detail"] = detail
        self.problems.append(p)


def _scan(root: str, report: Report) -> List[DataFile]:
    """Find data files; report objects in the partition tree that are not data files.

    FORMAT.md says an object that is not a data file is reported "by path". It does not say how
    a whole foreign subtree is reported; like `otel-audit verify`, a directory (prefix) whose
    name does not fit its level of the tree (date=YYYY-MM-DD, hour=HH, or anything below an
    hour) is reported once, as "<prefix>/", and objects directly at a wrong level one by one.
    Top-level names that are neither "_..." nor "tenant=..." are reported as well (FORMAT.md
    only says so for names under tenant= directories).
    """
    files: List[DataFile] = []

    def unexpected(rel: str, is_dir: bool) -> None:
        if is_dir and not _has_objects(os.path.join(root, rel)):
            return  # an empty directory is no object (object stores have none)
        report.add("unexpected_object", "not a data file of the store's layout", path=rel + ("/" if is_dir else ""))

    for top in sorted(os.listdir(root)):
        top_abs = os.path.join(root, top)
        if top.startswith("_"):
            continue  # §1: top-level names starting with "_" are not data
        if not (top.startswith("tenant=") and os.path.isdir(top_abs)):
            unexpected(top, os.path.isdir(top_abs))
            continue
        tenant = top[len("tenant=") :]
        if not _TENANT_RE.match(tenant):
            # an invalid tenant name: nothing below can be a data file
            for dirpath, dirnames, filenames in os.walk(top_abs):
                dirnames.sort()
                for fn in sorted(filenames):
                    unexpected(os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/"), False)
            continue
        for dname in sorted(os.listdir(top_abs)):
            d_abs = os.path.join(top_abs, dname)
            d_rel = f"{top}/{dname}"
            if not (os.path.isdir(d_abs) and _valid_date_dir(dname)):
                unexpected(d_rel, os.path.isdir(d_abs))
                continue
            for hname in sorted(os.listdir(d_abs)):
                h_abs = os.path.join(d_abs, hname)
                h_rel = f"{d_rel}/{hname}"
                m = _HOUR_RE.match(hname)
                if not (os.path.isdir(h_abs) and m and int(m.group(1)) <= 23):
                    unexpected(h_rel, os.path.isdir(h_abs))
                    continue
                for fname in sorted(os.listdir(h_abs)):
                    f_rel = f"{h_rel}/{fname}"
                    f_abs = os.path.join(h_abs, fname)
                    df = None if os.path.isdir(f_abs) else _match_data_file(root, f_rel, f_rel.split("/"), tenant)
                    if df is None:
                        unexpected(f_rel, os.path.isdir(f_abs))
                    else:
                        files.append(df)
    return files


def _has_objects(path: str) -> bool:
    return any(filenames for _, _, filenames in os.walk(path))


def _valid_date_dir(name: str) -> bool:
    md = _DATE_RE.match(name)
    if not md:
        return False
    try:
        _dt.date(int(md.group(1)), int(md.group(2)), int(md.group(3)))
    except ValueError:
        return False
    return True


def _match_data_file(root: str, rel: str, parts: List[str], tenant: str) -> Optional[DataFile]:
    if len(parts) != 4:
        return None
    _, d, h, name = parts
    md = _DATE_RE.match(d)
    mh = _HOUR_RE.match(h)
    mf = _FILE_RE.match(name)
    if not (md and mh and mf):
        return None
    try:
        _dt.date(int(md.group(1)), int(md.group(2)), int(md.group(3)))
    except ValueError:
        return None
    hour = int(mh.group(1))
    if hour > 23:
        return None
    chain_id = mf.group(1)
    if not _CHAIN_RE.match(chain_id):
        return None
    path = os.path.join(root, *parts)
    return DataFile(
        rel=rel,
        abs=path,
        tenant=tenant,
        date=d[len("date=") :],
        hour=hour,
        chain_id=chain_id,
        name_seq=int(mf.group(2)),
        size=os.path.getsize(path),
    )


def _read(df: DataFile) -> None:
    """Read one data file: rows, recomputed hashes, footer; decide whether its partition matches its rows."""
    try:
        pf = pq.ParquetFile(df.abs)
        problem = schema_problem(pf.schema_arrow)
        if problem:
            df.unreadable_reason = problem
            return
        kv = pf.metadata.metadata or {}
        table = pf.read()
    except Exception as e:  # noqa: BLE001 - anything that is not a readable Parquet file
        df.unreadable_reason = f"not a readable Parquet file: {type(e).__name__}: {e}".splitlines()[0]
        return
    df.readable = True
    for k, v in kv.items():
        try:
            df.footer[k.decode("utf-8")] = v.decode("utf-8")
        except UnicodeDecodeError:
            df.footer[k.decode("utf-8", "replace")] = "\ufffd"
    df.statistics_problem = _statistics_problem(pf.metadata, table)
    df.seqs = table.column("seq").to_pylist()
    df.prevs = table.column("prev_hash").to_pylist()
    df.hashes = table.column("hash").to_pylist()
    canon = canonical_rows(table)
    df.computed = [row_hash(p, c) for p, c in zip(df.prevs, canon)]
    # partition check (misplaced_file / duplicate_file): tenant, chain_id, received_at hour
    tenants = set(table.column("tenant").to_pylist())
    chains = set(table.column("chain_id").to_pylist())
    hours = set()
    for us in table.column("received_at").cast(pa.int64()).to_pylist():
        t = _EPOCH + _dt.timedelta(microseconds=us)
        hours.add((t.strftime("%Y-%m-%d"), t.hour))
    reasons = []
    if tenants - {df.tenant}:
        reasons.append(f"rows of tenant {sorted(tenants - {df.tenant})} in tenant={df.tenant}")
    if chains - {df.chain_id}:
        reasons.append(f"rows of chain {sorted(chains - {df.chain_id})} in a file of chain {df.chain_id}")
    bad_hours = hours - {(df.date, df.hour)}
    if bad_hours:
        d, h = sorted(bad_hours)[0]
        reasons.append(f"rows received in date={d}/hour={h:02d}, file is in date={df.date}/hour={df.hour:02d}")
    df.partition_ok = not reasons
    df.partition_detail = "; ".join(reasons)


# --------------------------------------------------------------------------
# FORMAT.md §4 and §6: the chains
# --------------------------------------------------------------------------

_DEC_RE = re.compile(r"^(0|[1-9][0-9]*)$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def _statistics_problem(md: pq.FileMetaData, table: pa.Table) -> str:
    """FORMAT.md §6: each top-level column's statistics bound its rows.

    Per row group: the null count, when present, is the rows' count of nulls;
    min and max, when present, bound every non-null value in the column's
    physical order (bytes unsigned, integers and timestamps signed, floats
    by value without NaN, false before true).
    """
    start = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        n = rg.num_rows
        for j in range(rg.num_columns):
            cm = rg.column(j)
            name = cm.path_in_schema
            s = cm.statistics
            if s is None or "." in name or name not in table.column_names:
                continue
            col = table.column(name).slice(start, n)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.int64())
            where = f"column statistics disagree with the rows: {name} in row group {g} says"
            if s.has_null_count and s.null_count != col.null_count:
                return f"{where} null count {s.null_count}, the rows hold {col.null_count} nulls"
            if not s.has_min_max:
                continue
            vals = [v for v in col.to_pylist() if v is not None]
            vals = [v.encode("utf-8") if isinstance(v, str) else v for v in vals]
            vals = [v for v in vals if not (isinstance(v, float) and v != v)]
            if not vals:
                continue
            lo, hi = min(vals), max(vals)
            if s.min_raw is not None and lo < s.min_raw:
                return f"{where} min {s.min_raw!r}, the rows hold {lo!r}"
            if s.max_raw is not None and hi > s.max_raw:
                return f"{where} max {s.max_raw!r}, the rows hold {hi!r}"
        start += n
    return ""


def _footer_problem(df: DataFile) -> Optional[str]:
    f = df.footer
    want_keys = [
        "otel_audit.format_version",
        "otel_audit.chain_id",
        "otel_audit.first_seq",
        "otel_audit.last_seq",
        "otel_audit.row_count",
        "otel_audit.prev_hash",
        "otel_audit.last_hash",
        "otel_audit.merkle_root",
    ]
    missing = [k for k in want_keys if k not in f]
    if missing:
        return f"footer keys missing: {', '.join(missing)}"
    if f["otel_audit.format_version"] != FORMAT_VERSION:
        return f"unknown format version {f['otel_audit.format_version']!r}"
    for k in ("otel_audit.first_seq", "otel_audit.last_seq", "otel_audit.row_count"):
        if not _DEC_RE.match(f[k]):
            return f"{k} is not a decimal: {f[k]!r}"
    for k in ("otel_audit.prev_hash", "otel_audit.last_hash", "otel_audit.merkle_root"):
        if not _HEX_RE.match(f[k]):
            return f"{k} is not 64 lower-case hex digits: {f[k]!r}"
    if f["otel_audit.chain_id"] != df.chain_id:
        return f"footer chain_id {f['otel_audit.chain_id']!r} differs from the file name's {df.chain_id!r}"
    if int(f["otel_audit.first_seq"]) != df.name_seq:
        return f"footer first_seq {f['otel_audit.first_seq']} differs from the file name's {df.name_seq}"
    if df.n == 0:
        return "file has no rows"
    checks = [
        ("first_seq", int(f["otel_audit.first_seq"]), df.seqs[0]),
        ("last_seq", int(f["otel_audit.last_seq"]), df.seqs[-1]),
        ("row_count", int(f["otel_audit.row_count"]), df.n),
        ("prev_hash", f["otel_audit.prev_hash"], df.prevs[0].hex()),
        ("last_hash", f["otel_audit.last_hash"], df.hashes[-1].hex()),
        ("merkle_root", f["otel_audit.merkle_root"], merkle_root(df.hashes).hex()),
    ]
    for name, got, want in checks:
        if got != want:
            return f"footer {name} {got} disagrees with the rows ({want})"
    return None


def _footer_last_seq(df: DataFile) -> Optional[int]:
    v = df.footer.get("otel_audit.last_seq")
    if v is not None and _DEC_RE.match(v):
        return int(v)
    return None


@dataclass
class _Row:
    df: DataFile
    i: int  # row index inside the file (stored order)

    @property
    def seq(self) -> int:
        return self.df.seqs[self.i]

    @property
    def prev(self) -> bytes:
        return self.df.prevs[self.i]

    @property
    def hash(self) -> bytes:
        return self.df.hashes[self.i]


def _verify_chain(chain_id: str, files: List[DataFile], report: Report) -> Dict[str, Any]:
    files = sorted(files, key=lambda d: (d.name_seq, d.rel))

    # duplicate_file: two files with the same first_seq; the copy is the one whose partition does not match
    kept: List[DataFile] = []
    i = 0
    while i < len(files):
        j = i
        while j < len(files) and files[j].name_seq == files[i].name_seq:
            j += 1
        group = files[i:j]
        if len(group) > 1:
            originals = [d for d in group if d.readable and d.partition_ok] or [
                d for d in group if d.readable
            ] or group[:1]
            original = originals[0]
            for d in group:
                if d is not original:
                    report.add(
                        "duplicate_file",
                        f"second file of chain {chain_id} with first_seq {d.name_seq}; original {original.rel}",
                        chain_id=chain_id,
                        path=d.rel,
                        seq=d.name_seq,
                    )
            kept.append(original)
        else:
            kept.append(group[0])
        i = j
    files = kept

    for d in files:
        if not d.readable:
            report.add("unreadable_file", d.unreadable_reason, chain_id=chain_id, path=d.rel)
        elif not d.partition_ok:
            report.add("misplaced_file", d.partition_detail, chain_id=chain_id, path=d.rel)

    # per-file: modified rows and reordering, then the row order in which the chain is walked
    walk: List[Optional[List[_Row]]] = []  # None = an unreadable file (a break in the chain)
    for d in files:
        if not d.readable:
            walk.append(None)
            continue
        for r in range(d.n):
            if d.computed[r] != d.hashes[r]:
                report.add(
                    "modified_row",
                    f"recomputed hash {d.computed[r].hex()} differs from the stored {d.hashes[r].hex()}",
                    chain_id=chain_id,
                    path=d.rel,
                    row=r,
                    seq=d.seqs[r],
                )
        order = list(range(d.n))
        if any(d.seqs[r] < d.seqs[r - 1] for r in range(1, d.n)):
            order = sorted(order, key=lambda r: d.seqs[r])
            # "first displaced row": the first row, in stored order, that is not where ascending
            # seq order puts it (FORMAT.md does not define "first"; see the interop report)
            first = next(k for k in range(d.n) if order[k] != k)
            report.add(
                "reordered_rows",
                "seq decreases inside the file",
                chain_id=chain_id,
                path=d.rel,
                row=first,
                seq=d.seqs[first],
            )
        walk.append([_Row(d, r) for r in order])

    # the walk: seq continuity, links, duplicate seqs, gaps between files
    exp: Optional[int] = 0  # next expected seq; None after an unreadable file
    last: Optional[_Row] = None  # the row the chain currently ends with (None = unknown or none)
    last_claim: Optional[Tuple[DataFile, int]] = None  # footer claim of the previous file: (file, last_seq)
    events = 0
    first_seq = None
    last_seq = None
    head = None

    for wi, (d, rows) in enumerate(zip(files, walk)):
        if rows is None:
            # an unreadable file: its name claims seqs from name_seq up to the next file
            if exp is not None and d.name_seq > exp:
                _gap(report, chain_id, exp, d.name_seq - 1, last_claim, None)
            exp = None
            last = None
            last_claim = None
            continue
        if not rows:
            continue
        s0 = rows[0].seq
        if exp is not None and s0 > exp:
            _gap(report, chain_id, exp, s0 - 1, last_claim, d)
            exp = s0  # gap reported; the first row is taken as is, its link cannot be checked
            last = None
        elif exp is None:
            if s0 > d.name_seq:
                report.add(
                    "missing_rows",
                    f"rows start at seq {s0}, the file name says {d.name_seq}",
                    chain_id=chain_id,
                    path=d.rel,
                    row=0,
                    seq=d.name_seq,
                    seq_end=s0 - 1,
                )
            exp = s0
            last = None
        for k, row in enumerate(rows):
            s = row.seq
            if s == exp:
                if s == 0:
                    if row.prev != ZERO_HASH:
                        report.add(
                            "broken_link",
                            "seq 0 is not linked to 32 zero bytes",
                            chain_id=chain_id,
                            path=d.rel,
                            row=row.i,
                            seq=s,
                        )
                elif last is not None and row.prev != last.hash:
                    report.add(
                        "broken_link",
                        f"prev_hash differs from the hash of seq {s - 1} ({last.df.rel} row {last.i})",
                        chain_id=chain_id,
                        path=d.rel,
                        row=row.i,
                        seq=s,
                    )
                exp = s + 1
                last = row
            elif s > exp:
                # inside a file (a gap at a file start was handled above)
                report.add(
                    "missing_rows",
                    f"seq jumps from {exp - 1} to {s}",
                    chain_id=chain_id,
                    path=d.rel,
                    row=row.i,
                    seq=exp,
                    seq_end=s - 1,
                )
                exp = s + 1
                last = row
            else:
                # s < exp: a second row with a seq the chain already reached
                nxt = _next_row(files, walk, wi, k)
                if s == exp - 1 and last is not None and last.seq == s and nxt is not None and nxt.seq == s + 1 \
                        and nxt.prev == row.hash and nxt.prev != last.hash:
                    # the chain links through this row: the earlier one was inserted
                    report.add(
                        "inserted_row",
                        f"seq {s} appears twice; the chain links through the other row",
                        chain_id=chain_id,
                        path=last.df.rel,
                        row=last.i,
                        seq=s,
                    )
                    last = row
                else:
                    report.add(
                        "inserted_row",
                        f"seq {s} is below what the chain already reached ({exp - 1})"
                        if s < exp - 1
                        else f"seq {s} appears twice; the chain links through the other row",
                        chain_id=chain_id,
                        path=d.rel,
                        row=row.i,
                        seq=s,
                    )
        events += d.n
        if first_seq is None:
            first_seq = min(d.seqs)
        last_seq = exp - 1 if exp is not None else last_seq
        head = last.hash if last is not None else head
        fl = _footer_last_seq(d)
        last_claim = (d, fl) if fl is not None else None

    # the newest file's footer may claim rows its rows no longer hold
    if exp is not None and last_claim is not None and last_claim[1] >= exp:
        d, fl = last_claim
        report.add(
            "missing_rows",
            f"rows end at seq {exp - 1}, the footer's last_seq is {fl}",
            chain_id=chain_id,
            path=d.rel,
            row=d.n,
            seq=exp,
            seq_end=fl,
        )

    # footers: only for files whose rows showed no other problem
    with_problems = {p.get("path") for p in report.problems}
    for d in files:
        if d.readable and d.rel not in with_problems:
            fp = "; ".join(p for p in (_footer_problem(d), d.statistics_problem) if p)
            if fp:
                report.add("bad_footer", fp, chain_id=chain_id, path=d.rel)

    return {
        "chain_id": chain_id,
        "tenant": files[0].tenant if files else None,
        "files": len(files),
        "events": events,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "head_hash": head.hex() if head is not None else None,
    }


def _next_row(files: List[DataFile], walk: List[Optional[List[_Row]]], wi: int, k: int) -> Optional[_Row]:
    rows = walk[wi]
    if rows is not None and k + 1 < len(rows):
        return rows[k + 1]
    for nxt in walk[wi + 1 :]:
        if nxt is None:
            return None
        if nxt:
            return nxt[0]
    return None


def _gap(
    report: Report,
    chain_id: str,
    lo: int,
    hi: int,
    prev_claim: Optional[Tuple[DataFile, int]],
    nxt: Optional[DataFile],
) -> None:
    """Seqs lo..hi are held by no row: attribute them to the previous file's footer, the next file's name, or a missing file."""
    if prev_claim is not None:
        pd, fl = prev_claim
        if fl >= lo:
            end = min(fl, hi)
            report.add(
                "missing_rows",
                f"rows end at seq {lo - 1}, the footer's last_seq is {fl}",
                chain_id=chain_id,
                path=pd.rel,
                row=pd.n,
                seq=lo,
                seq_end=end,
            )
            lo = end + 1
    if lo > hi:
        return
    if nxt is not None and nxt.name_seq <= hi:
        start = max(nxt.name_seq, lo)
        report.add(
            "missing_rows",
            f"rows start at seq {hi + 1}, the file name says {nxt.name_seq}",
            chain_id=chain_id,
            path=nxt.rel,
            row=0,
            seq=start,
            seq_end=hi,
        )
        hi = start - 1
    if lo > hi:
        return
    report.add(
        "missing_file",
        f"no file holds seq {lo}..{hi}; expected {expected_file_name(chain_id, lo)}",
        chain_id=chain_id,
        seq=lo,
        seq_end=hi,
    )


_RUN_KINDS = ("modified_row", "broken_link", "inserted_row")


def _merge_runs(problems: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Merge row-level problems of one kind on consecutive rows (and seqs) of one file into one
    problem with row..row_end and seq..seq_end, as `otel-audit verify` reports them.
    (FORMAT.md §6 names one row per problem; it does not describe ranges of rows.)"""
    out: List[Dict[str, Any]] = []
    for p in problems:
        q = out[-1] if out else None
        if (
            q is not None
            and p["kind"] in _RUN_KINDS
            and q["kind"] == p["kind"]
            and q.get("path") == p.get("path")
            and "row" in p
            and "row" in q
            and p["row"] == q.get("row_end", q["row"]) + 1
            and p.get("seq") == q.get("seq_end", q.get("seq")) + 1
        ):
            q["row_end"] = p["row"]
            q["seq_end"] = p["seq"]
            continue
        out.append(dict(p))
    for p in out:  # key order: kind, chain_id, path, row, row_end, seq, seq_end, detail
        if "row_end" in p:
            detail = p.pop("detail")
            seq, seq_end = p.pop("seq", None), p.pop("seq_end", None)
            if seq is not None:
                p["seq"] = seq
            if seq_end is not None:
                p["seq_end"] = seq_end
            p["detail"] = detail
    return out


def verify(root: str) -> Dict[str, Any]:
    """Verify the store in local directory `root`; returns a report dict like `otel-audit verify --json`.

    Raises NotADirectoryError when root is not a directory and ValueError
    when it holds no data at all (an empty store is a usage error, not an intact store).
    """
    started = time.monotonic()
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a directory")
    report = Report()
    files = _scan(root, report)
    if not files and not report.problems:
        raise ValueError(f"{root} holds no otel-audit data")
    for d in files:
        _read(d)
    by_chain: Dict[str, List[DataFile]] = {}
    for d in files:
        by_chain.setdefault(d.chain_id, []).append(d)
    chains = [_verify_chain(c, by_chain[c], report) for c in sorted(by_chain)]
    problems = _merge_runs(
        sorted(
            report.problems,
            key=lambda p: (p.get("chain_id") or "", p.get("path") or "", p.get("row", -1), p.get("seq", -1), p["kind"]),
        )
    )
    unreadable = {p["path"] for p in problems if p["kind"] in ("unreadable_file", "duplicate_file")}
    return {
        "intact": not problems,
        "seconds": round(time.monotonic() - started, 6),
        "store": "file://" + root,
        "chains": [{k: v for k, v in c.items() if v is not None} for c in chains],
        "files_verified": sum(1 for d in files if d.readable and d.rel not in unreadable),
        "events_verified": sum(d.n for d in files if d.readable and d.rel not in unreadable),
        "bytes_verified": sum(d.size for d in files if d.readable and d.rel not in unreadable),
        "problems": problems,
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Independent otel-audit store verifier (FORMAT.md version 1)")
    ap.add_argument("root", help="store root directory")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        rep = verify(args.root)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(rep, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if rep["intact"]:
            print(
                f"intact: {rep['events_verified']} events in {rep['files_verified']} files, "
                f"{len(rep['chains'])} chains"
            )
        else:
            print(f"NOT intact: {len(rep['problems'])} problems")
            for p in rep["problems"]:
                where = p.get("path") or p.get("chain_id", "")
                loc = "".join(
                    f" {k}={p[k]}" for k in ("row", "seq", "seq_end") if k in p
                )
                print(f"  {p['kind']}: {where}{loc}: {p['detail']}")
    return 0 if rep["intact"] else 1


if __name__ == "__main__":
    sys.exit(main())
