"""`otel-audit verify` against an independent verifier written from docs/FORMAT.md only.

Both must call an intact store intact with the same counts and head hashes, and, on each
tampered copy of the store, name the same problem kind at the same file, row and seq.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import independent_verify as iv

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def rel(root: Path, p: Path) -> str:
    return Path(p).relative_to(root).as_posix()


def chain_files(root: Path, tenant: str = "acme") -> List[Path]:
    """The data files of the tenant's (single) chain, in first_seq order (file names sort by seq)."""
    files = list((root / f"tenant={tenant}").glob("date=*/hour=*/*.parquet"))
    return sorted(files, key=lambda p: p.name)


def middle_file(root: Path) -> Path:
    files = chain_files(root)
    assert len(files) >= 5, "the base store should have several files per chain"
    return files[len(files) // 2]


def name_seq(p: Path) -> int:
    return int(p.stem.rsplit("-", 1)[1])


def read(p: Path) -> pa.Table:
    return pq.ParquetFile(p).read()


def seqs(p: Path) -> List[int]:
    return read(p).column("seq").to_pylist()


def rewrite(p: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite a data file with pyarrow, keeping its footer key-value metadata."""
    table = read(p)
    metadata = table.schema.metadata
    assert metadata and b"otel_audit.merkle_root" in metadata
    changed = change(table).replace_schema_metadata(metadata)
    pq.write_table(changed, p, compression="zstd")


def set_cell(t: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    i = t.schema.get_field_index(column)
    values = t.column(column).to_pylist()
    values[row] = value
    return t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))


def rehash(t: pa.Table, row: int) -> pa.Table:
    """Recompute row's hash from its (stored) prev_hash and content, as a forger would."""
    canonical = iv.canonical_rows(t.slice(row, 1))[0]
    return set_cell(t, "hash", row, iv.row_hash(t.column("prev_hash")[row].as_py(), canonical))


def set_footer(p: Path, key: str, value: str) -> None:
    table = read(p)
    metadata = dict(table.schema.metadata)
    metadata[key.encode()] = value.encode()
    pq.write_table(table.replace_schema_metadata(metadata), p, compression="zstd")


PLACE_KEYS = ("kind", "chain_id", "path", "row", "row_end", "seq", "seq_end")


def places(problems: List[Dict[str, Any]]) -> List[tuple]:
    return sorted(tuple(p.get(k) for k in PLACE_KEYS) for p in problems)


def matches(problem: Dict[str, Any], want: Dict[str, Any]) -> bool:
    return all(problem.get(k) == v for k, v in want.items() if k != "detail_contains") and all(
        s in problem.get("detail", "") for s in want.get("detail_contains", [])
    )


def assert_reports(report: Dict[str, Any], expected: List[Dict[str, Any]], who: str) -> None:
    problems = report["problems"]
    assert not report["intact"], f"{who} calls the tampered store intact"
    assert {p["kind"] for p in problems} == {e["kind"] for e in expected}, f"{who}: {problems}"
    assert len(problems) == len(expected), f"{who}: {json.dumps(problems, indent=1)}"
    for want in expected:
        assert any(matches(p, want) for p in problems), f"{who} does not report {want}: {json.dumps(problems, indent=1)}"


# --------------------------------------------------------------------------
# the canonical encoding against the pinned vector
# --------------------------------------------------------------------------


def test_canonical_vector():
    """vectors/row-v1.{json,parquet}: canonical bytes, hash and footer recomputed from FORMAT.md §3, §5."""
    if not (VECTORS / "row-v1.json").exists():
        pytest.skip("tests/interop/vectors/row-v1.json not present")
    vector = json.loads((VECTORS / "row-v1.json").read_text())
    pf = pq.ParquetFile(VECTORS / "row-v1.parquet")
    assert iv.schema_problem(pf.schema_arrow) is None
    table = pf.read()
    seq_col = table.column("seq").to_pylist()
    i = seq_col.index(vector["seq"])
    canonical = iv.canonical_rows(table)
    assert canonical[i].hex() == vector["canonical_hex"]
    prev = table.column("prev_hash")[i].as_py()
    assert prev.hex() == vector["prev_hash_hex"]
    assert iv.row_hash(prev, canonical[i]).hex() == vector["hash_hex"]
    assert table.column("hash")[i].as_py().hex() == vector["hash_hex"]
    # every row of the vector file, its links and its footer
    hashes = table.column("hash").to_pylist()
    prevs = table.column("prev_hash").to_pylist()
    assert [iv.row_hash(p, c) for p, c in zip(prevs, canonical)] == hashes
    footer = {k.decode(): v.decode() for k, v in pf.metadata.metadata.items() if k != b"ARROW:schema"}
    assert footer["otel_audit.merkle_root"] == iv.merkle_root(hashes).hex()
    assert footer["otel_audit.last_hash"] == hashes[-1].hex()


def test_canonical_examples_from_the_document():
    """The examples of FORMAT.md §3.1."""
    out = bytearray()
    iv.encode_value(["a", "bc"], pa.list_(pa.string()), out)
    assert out.hex() == "01" "00000002" "01" "00000001" "61" "01" "00000002" "6263"
    out = bytearray()
    iv.encode_value([], pa.list_(pa.string()), out)
    assert out.hex() == "0100000000"
    out = bytearray()
    iv.encode_value(None, pa.string(), out)
    assert out.hex() == "00"
    out = bytearray()
    iv.encode_value(-0.0, pa.float64(), out)
    assert out.hex() == "01" "8000000000000000"


def test_merkle_root_rfc6962_shape():
    import hashlib

    d = [bytes([i]) * 32 for i in range(3)]
    leaf = [hashlib.sha256(b"\x00" + x).digest() for x in d]
    node = lambda a, b: hashlib.sha256(b"\x01" + a + b).digest()  # noqa: E731
    assert iv.merkle_root([]) == hashlib.sha256(b"").digest()
    assert iv.merkle_root(d[:1]) == leaf[0]
    assert iv.merkle_root(d[:2]) == node(leaf[0], leaf[1])
    assert iv.merkle_root(d) == node(node(leaf[0], leaf[1]), leaf[2])


# --------------------------------------------------------------------------
# intact store
# --------------------------------------------------------------------------


def test_intact_store_both_verifiers_agree(base_store, rust_verify):
    code, rust, stderr = rust_verify(base_store)
    assert code == 0, stderr
    py = iv.verify(str(base_store))
    assert rust["intact"] is True and py["intact"] is True
    assert rust["problems"] == [] and py["problems"] == []
    assert rust["events_verified"] == py["events_verified"] == 3000
    for key in ("files_verified", "bytes_verified"):
        assert rust[key] == py[key], key
    assert len(rust["chains"]) == 2
    assert sorted(rust["chains"], key=lambda c: c["chain_id"]) == py["chains"]
    # several files per chain and per hour, as the tamper cases need
    for chain in py["chains"]:
        assert chain["files"] >= 8 and chain["first_seq"] == 0
        assert chain["last_seq"] == chain["events"] - 1


def test_python_verifier_cli(base_store, tmp_path):
    script = str(HERE / "independent_verify.py")
    r = subprocess.run([sys.executable, script, str(base_store), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["intact"] is True
    r = subprocess.run([sys.executable, script, str(base_store)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("intact")

    tampered = tmp_path / "t"
    shutil.copytree(base_store, tampered)
    rewrite(middle_file(tampered), lambda t: set_cell(t, "actor_id", 1, "mallory"))
    r = subprocess.run([sys.executable, script, str(tampered)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "modified_row" in r.stdout

    for bad in (tmp_path / "does-not-exist", tmp_path / "empty"):
        if bad.name == "empty":
            bad.mkdir()
        r = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.strip(), (bad, r)


# --------------------------------------------------------------------------
# the tamper matrix
# --------------------------------------------------------------------------
# Each case tampers with the store at `root` and returns the problems both verifiers must report:
# exactly these, matched on the keys given.

CHAIN = "collector-1.acme"


def t_modified_cell(root: Path):
    f = middle_file(root)
    s = seqs(f)
    rewrite(f, lambda t: set_cell(t, "actor_id", 5, "mallory"))
    return [dict(kind="modified_row", chain_id=CHAIN, path=rel(root, f), row=5, seq=s[5])]


def t_removed_row(root: Path):
    f = middle_file(root)
    s = seqs(f)
    k = len(s) // 2
    rewrite(f, lambda t: pa.concat_tables([t.slice(0, k), t.slice(k + 1)]))
    return [dict(kind="missing_rows", chain_id=CHAIN, path=rel(root, f), row=k, seq=s[k], seq_end=s[k])]


def t_inserted_row(root: Path):
    """A forged row with an existing row's seq, linked to the row before and correctly hashed."""
    f = middle_file(root)
    s = seqs(f)
    k = len(s) // 2

    def forge(t: pa.Table) -> pa.Table:
        row = t.slice(k, 1)
        row = set_cell(row, "actor_id", 0, "mallory")
        row = set_cell(row, "prev_hash", 0, t.column("hash")[k - 1].as_py())
        row = rehash(row, 0)
        return pa.concat_tables([t.slice(0, k), row, t.slice(k)])

    rewrite(f, forge)
    return [dict(kind="inserted_row", chain_id=CHAIN, path=rel(root, f), row=k, seq=s[k])]


def t_swapped_rows(root: Path):
    f = middle_file(root)
    s = seqs(f)
    k = len(s) // 2
    order = list(range(len(s)))
    order[k], order[k + 1] = order[k + 1], order[k]
    rewrite(f, lambda t: t.take(pa.array(order)))
    # "first displaced row": row k, which now holds seq s[k + 1]
    return [dict(kind="reordered_rows", chain_id=CHAIN, path=rel(root, f), row=k, seq=s[k + 1])]


def t_deleted_middle_file(root: Path):
    files = chain_files(root)
    i = len(files) // 2
    f, nxt = files[i], files[i + 1]
    f.unlink()
    lo, hi = name_seq(f), name_seq(nxt) - 1
    return [
        dict(
            kind="missing_file",
            chain_id=CHAIN,
            seq=lo,
            seq_end=hi,
            path=None,
            detail_contains=[iv.expected_file_name(CHAIN, lo)],
        )
    ]


def t_copied_file(root: Path):
    files = chain_files(root)
    f = files[len(files) // 2]
    other_hour = next(p.parent for p in reversed(files) if p.parent != f.parent)
    copy = other_hour / f.name
    shutil.copyfile(f, copy)
    return [dict(kind="duplicate_file", chain_id=CHAIN, path=rel(root, copy), seq=name_seq(f))]


def t_truncated_file(root: Path):
    f = middle_file(root)
    data = f.read_bytes()
    f.write_bytes(data[:512])  # starts like Parquet ("PAR1"), but no footer
    return [dict(kind="unreadable_file", chain_id=CHAIN, path=rel(root, f))]


def t_unexpected_object(root: Path):
    notes = middle_file(root).parent / "notes.txt"
    notes.write_text("not audit data\n")
    return [dict(kind="unexpected_object", path=rel(root, notes))]


# ---- beyond the basic matrix -------------------------------------------


def t_altered_and_rehashed_row(root: Path):
    """Altered *and* re-hashed: the row itself checks out, the link of the row after it breaks."""
    f = middle_file(root)
    s = seqs(f)
    rewrite(f, lambda t: rehash(set_cell(t, "outcome", 5, "success" if t.column("outcome")[5].as_py() != "success" else "failure"), 5))
    return [dict(kind="broken_link", chain_id=CHAIN, path=rel(root, f), row=6, seq=s[6])]


def t_first_row_removed(root: Path):
    f = middle_file(root)
    s = seqs(f)
    rewrite(f, lambda t: t.slice(1))
    return [dict(kind="missing_rows", chain_id=CHAIN, path=rel(root, f), row=0, seq=s[0], seq_end=s[0])]


def t_last_row_removed(root: Path):
    f = middle_file(root)
    s = seqs(f)
    rewrite(f, lambda t: t.slice(0, len(s) - 1))
    return [dict(kind="missing_rows", chain_id=CHAIN, path=rel(root, f), seq=s[-1], seq_end=s[-1])]


def t_footer_merkle_root(root: Path):
    f = middle_file(root)
    set_footer(f, "otel_audit.merkle_root", "00" * 32)
    return [dict(kind="bad_footer", chain_id=CHAIN, path=rel(root, f))]


def t_footer_unknown_version(root: Path):
    f = middle_file(root)
    set_footer(f, "otel_audit.format_version", "2")
    return [dict(kind="bad_footer", chain_id=CHAIN, path=rel(root, f))]


def t_statistics_narrowed(root: Path):
    """A statistic narrowed in the footer by editing its bytes: rows, hashes and footer keys untouched."""
    f = middle_file(root)
    data = bytearray(f.read_bytes())

    def seq_min() -> int:
        md = pq.ParquetFile(f).metadata
        names = [md.row_group(0).column(j).path_in_schema for j in range(md.num_columns)]
        return md.row_group(0).column(names.index("seq")).statistics.min_raw

    low = seq_min()
    footer_len = struct.unpack("<I", data[-8:-4])[0]
    start, end = len(data) - 8 - footer_len, len(data) - 8
    old, new = struct.pack("<q", low), struct.pack("<q", low + 1)
    at = [i for i in range(start, end - 7) if data[i : i + 8] == old]
    assert 1 <= len(at) <= 2, at
    for i in at:
        data[i : i + 8] = new
    f.write_bytes(bytes(data))
    assert seq_min() == low + 1
    return [dict(kind="bad_footer", chain_id=CHAIN, path=rel(root, f))]


def t_moved_to_other_hour(root: Path):
    files = chain_files(root)
    f = files[len(files) // 2]
    other_hour = next(p.parent for p in reversed(files) if p.parent != f.parent)
    moved = other_hour / f.name
    f.rename(moved)
    return [dict(kind="misplaced_file", chain_id=CHAIN, path=rel(root, moved))]


def t_oldest_file_deleted(root: Path):
    files = chain_files(root)
    files[0].unlink()
    return [dict(kind="missing_file", chain_id=CHAIN, seq=0, seq_end=name_seq(files[1]) - 1, path=None)]


def t_column_type_changed(root: Path):
    f = middle_file(root)
    i = read(f).schema.get_field_index("gen_ai_input_tokens")
    rewrite(f, lambda t: t.set_column(i, pa.field("gen_ai_input_tokens", pa.int32()), t.column(i).cast(pa.int32())))
    return [dict(kind="unreadable_file", chain_id=CHAIN, path=rel(root, f))]


def t_genesis_link(root: Path):
    """seq 0 re-linked to non-zero bytes and re-hashed."""
    f = chain_files(root)[0]
    rewrite(f, lambda t: rehash(set_cell(t, "prev_hash", 0, b"\x01" * 32), 0))
    return [dict(kind="broken_link", chain_id=CHAIN, path=rel(root, f), row=0, seq=0)]


def t_last_row_of_file_rehashed(root: Path):
    """The last row of a file altered and re-hashed: the file's footer no longer matches its rows,
    and the next file's first row no longer links to it."""
    files = chain_files(root)
    i = len(files) // 2
    f, nxt = files[i], files[i + 1]
    rewrite(f, lambda t: rehash(set_cell(t, "actor_id", t.num_rows - 1, "mallory"), t.num_rows - 1))
    return [
        dict(kind="bad_footer", chain_id=CHAIN, path=rel(root, f)),
        dict(kind="broken_link", chain_id=CHAIN, path=rel(root, nxt), row=0, seq=name_seq(nxt)),
    ]


CASES = {
    "modified_cell": t_modified_cell,
    "removed_row": t_removed_row,
    "inserted_row": t_inserted_row,
    "swapped_rows": t_swapped_rows,
    "deleted_middle_file": t_deleted_middle_file,
    "copied_file": t_copied_file,
    "truncated_file": t_truncated_file,
    "unexpected_object": t_unexpected_object,
    "altered_and_rehashed_row": t_altered_and_rehashed_row,
    "first_row_removed": t_first_row_removed,
    "last_row_removed": t_last_row_removed,
    "footer_merkle_root": t_footer_merkle_root,
    "footer_unknown_version": t_footer_unknown_version,
    "statistics_narrowed": t_statistics_narrowed,
    "moved_to_other_hour": t_moved_to_other_hour,
    "oldest_file_deleted": t_oldest_file_deleted,
    "column_type_changed": t_column_type_changed,
    "genesis_link": t_genesis_link,
    "last_row_of_file_rehashed": t_last_row_of_file_rehashed,
}


@pytest.mark.parametrize("case", list(CASES))
def test_tamper(case, store_copy, rust_verify):
    expected = CASES[case](store_copy)

    code, rust, stderr = rust_verify(store_copy)
    assert code == 1, f"otel-audit verify exit {code}: {stderr}"
    assert_reports(rust, expected, "otel-audit verify")

    py = iv.verify(str(store_copy))
    assert_reports(py, expected, "independent verifier")

    # and the two agree on every problem's place, not only on the expected keys
    assert places(py["problems"]) == places(rust["problems"])


def test_deleting_the_newest_file_is_not_detectable(store_copy, rust_verify, base_store):
    """FORMAT.md §6: deleting the newest files of a chain cannot be seen from the chain alone."""
    newest = chain_files(store_copy)[-1]
    newest.unlink()
    code, rust, stderr = rust_verify(store_copy)
    py = iv.verify(str(store_copy))
    assert code == 0, stderr
    assert rust["intact"] and py["intact"]
    assert rust["events_verified"] == py["events_verified"] < 3000


def test_files_rewritten_unchanged_stay_intact(store_copy, rust_verify):
    """The tamper helpers themselves change nothing: a pyarrow rewrite of the same rows and footer is intact."""
    for f in chain_files(store_copy)[:3]:
        rewrite(f, lambda t: t)
    code, rust, stderr = rust_verify(store_copy)
    assert code == 0, (stderr, rust and rust["problems"])
    assert iv.verify(str(store_copy))["intact"]


# --------------------------------------------------------------------------
# a documented footer rule the Rust verifier does not enforce
# --------------------------------------------------------------------------


def _uppercase_prev_hash(root: Path) -> Dict[str, Any]:
    f = middle_file(root)
    value = read(f).schema.metadata[b"otel_audit.prev_hash"].decode()
    set_footer(f, "otel_audit.prev_hash", value.upper())
    return dict(kind="bad_footer", chain_id=CHAIN, path=rel(root, f))


def test_footer_prev_hash_must_be_lower_case_hex_independent(store_copy):
    """FORMAT.md §5: otel_audit.prev_hash is "64 lower-case hex digits"; §6: a malformed footer is bad_footer."""
    expected = _uppercase_prev_hash(store_copy)
    assert_reports(iv.verify(str(store_copy)), [expected], "independent verifier")


def test_footer_prev_hash_must_be_lower_case_hex_rust(store_copy, rust_verify):
    expected = _uppercase_prev_hash(store_copy)
    code, rust, stderr = rust_verify(store_copy)
    assert code == 1, f"exit {code}: {stderr}"
    assert_reports(rust, [expected], "otel-audit verify")


# --------------------------------------------------------------------------
# rows cut from the head of a file that follows an unreadable file
# --------------------------------------------------------------------------


def _unreadable_then_head_cut(root: Path) -> List[Dict[str, Any]]:
    """A middle file made unreadable, and the first 3 rows of the next file removed."""
    files = chain_files(root)
    i = len(files) // 2
    f, nxt = files[i], files[i + 1]
    first = name_seq(nxt)
    rewrite(nxt, lambda t: t.slice(3))
    f.write_bytes(f.read_bytes()[:512])
    return [
        dict(kind="unreadable_file", chain_id=CHAIN, path=rel(root, f)),
        # FORMAT.md §6: "a file's rows start after the seq its name gives" is missing_rows
        # (file, row, seq range); bad_footer only "when the file's rows showed no other problem"
        dict(kind="missing_rows", chain_id=CHAIN, path=rel(root, nxt), row=0, seq=first, seq_end=first + 2),
    ]


def test_head_cut_after_unreadable_file_independent(store_copy):
    expected = _unreadable_then_head_cut(store_copy)
    assert_reports(iv.verify(str(store_copy)), expected, "independent verifier")


def test_head_cut_after_intact_file_both(store_copy, rust_verify):
    """The same cut after a readable file: both verifiers report missing_rows (control for the xfail below)."""
    files = chain_files(store_copy)
    nxt = files[len(files) // 2 + 1]
    first = name_seq(nxt)
    rewrite(nxt, lambda t: t.slice(3))
    expected = [dict(kind="missing_rows", chain_id=CHAIN, path=rel(store_copy, nxt), row=0, seq=first, seq_end=first + 2)]
    code, rust, stderr = rust_verify(store_copy)
    assert code == 1, stderr
    assert_reports(rust, expected, "otel-audit verify")
    assert_reports(iv.verify(str(store_copy)), expected, "independent verifier")


def test_head_cut_after_unreadable_file_rust(store_copy, rust_verify):
    expected = _unreadable_then_head_cut(store_copy)
    code, rust, stderr = rust_verify(store_copy)
    assert code == 1, stderr
    assert_reports(rust, expected, "otel-audit verify")
