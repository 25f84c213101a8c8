"""Signed digests (docs/FORMAT.md §9): the tamper matrix that a bare chain cannot see, and an
independent check of every signature with Python's `cryptography`, written from the document.

The store is generated with `otel-audit generate --signing-key`, which writes one digest per chain
and hour as a collector does (the last one final).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from conftest import BASE_STORE_ARGS, generate, run_cli, verify_json
from test_independent_verifier import chain_files, read, rel, rewrite

TENANT = "acme"


@pytest.fixture(scope="session")
def keys(tmp_path_factory, otel_audit_bin) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("signer", "forger"):
        priv, pub = d / f"{name}.pem", d / f"{name}.pub.pem"
        r = run_cli(["keys", "generate", "--private-key", str(priv), "--public-key", str(pub)])
        assert r.returncode == 0, r.stderr
        assert "key id" in r.stdout
        out[name], out[name + "_pub"] = priv, pub
    # Never overwrites a private key.
    r = run_cli(["keys", "generate", "--private-key", str(out["signer"]), "--public-key", str(d / "x.pem")])
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr
    return out


@pytest.fixture(scope="session")
def signed_store(tmp_path_factory, keys) -> Path:
    root = tmp_path_factory.mktemp("signed") / "store"
    generate(root, signing_key=keys["signer"], **BASE_STORE_ARGS)
    return root


@pytest.fixture
def store(signed_store, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(signed_store, dst)
    return dst


def digests(root: Path, tenant: str = TENANT) -> List[Path]:
    return sorted((root / "_digests" / f"tenant={tenant}").glob("chain=*/*.json"))


def verify(root: Path, keys: Dict[str, Path], *extra: str):
    return verify_json(root, "--public-key", str(keys["signer_pub"]), *extra)


def kinds(report: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    out: Dict[str, List[Dict[str, Any]]] = {}
    for p in report["problems"]:
        out.setdefault(p["kind"], []).append(p)
    return out


def key_id(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def canonical(d: Dict[str, Any]) -> bytes:
    body = {k: v for k, v in d.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------
# intact
# --------------------------------------------------------------------------


def test_intact_signed_store(signed_store, keys):
    code, report, stderr = verify(signed_store, keys)
    assert code == 0, (stderr, report and report["problems"])
    d = report["digests"]
    assert d["digests"] == 2 * BASE_STORE_ARGS["hours"] and d["digests_valid"] == d["digests"]
    assert d["signatures_checked"] and d["files_pending"] == 0
    assert d["files_in_digests"] == report["files_verified"]
    r = run_cli(["verify", str(signed_store), "--public-key", str(keys["signer_pub"])])
    assert r.returncode == 0
    assert f"12/12 digests valid, {report['files_verified']}/{report['files_verified']} files valid" in r.stdout
    assert "chains intact" in r.stdout


def test_without_a_key_everything_but_signatures_is_checked(signed_store):
    r = run_cli(["verify", str(signed_store)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signatures NOT checked" in r.stdout


def test_independent_signature_and_link_check(signed_store, keys):
    """Every digest verifies with `cryptography` from FORMAT.md §9 alone, and links to the one before."""
    pub = load_pem_public_key(keys["signer_pub"].read_bytes())
    assert isinstance(pub, Ed25519PublicKey)
    r = run_cli(["keys", "id", str(keys["signer_pub"])])
    assert r.stdout.strip() == key_id(pub)
    for tenant in ("acme", "globex"):
        files = digests(signed_store, tenant)
        assert files, tenant
        prev = None
        for i, path in enumerate(files):
            raw = path.read_bytes()
            d = json.loads(raw)
            assert d["format"] == "otel-audit-digest/v1"
            assert d["digest_seq"] == i and path.name.startswith(f"{i:020}-")
            assert d["key_id"] == key_id(pub)
            pub.verify(bytes.fromhex(d["signature"]), b"otel-audit/digest/v1\n" + canonical(d))
            for f in d["files"]:
                data = (signed_store / f["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
            if prev is None:
                assert d["previous"] is None
            else:
                p_raw, p = prev
                assert d["previous"]["sha256"] == hashlib.sha256(p_raw).hexdigest()
                assert d["previous"]["signature"] == p["signature"]
                assert d["period_start"] == p["period_end"]
            prev = (raw, d)
        assert prev[1]["final"] is True


# --------------------------------------------------------------------------
# the tamper matrix: what the chain alone cannot see
# --------------------------------------------------------------------------


def test_delete_the_newest_file(store, keys):
    newest = chain_files(store)[-1]
    newest.unlink()
    code, report, _ = verify(store, keys)
    assert code == 1
    k = kinds(report)
    assert set(k) == {"missing_file"}, report["problems"]
    assert k["missing_file"][0]["path"] == rel(store, newest)


def test_delete_the_newest_rows_of_the_newest_file(store, keys):
    newest = chain_files(store)[-1]
    n = read(newest).num_rows
    # A careful forger: fewer rows, and a footer that agrees with them.
    def cut(t: pa.Table) -> pa.Table:
        return t.slice(0, n - 3)

    rewrite(newest, cut)
    t = read(newest)
    md = dict(t.schema.metadata)
    md[b"otel_audit.last_seq"] = str(t.column("seq")[-1].as_py()).encode()
    md[b"otel_audit.row_count"] = str(t.num_rows).encode()
    md[b"otel_audit.last_hash"] = t.column("hash")[-1].as_py().hex().encode()
    import independent_verify as iv

    md[b"otel_audit.merkle_root"] = iv.merkle_root([h.as_py() for h in t.column("hash")]).hex().encode()
    import pyarrow.parquet as pq

    pq.write_table(t.replace_schema_metadata(md), newest, compression="zstd")
    # The chain alone calls this intact...
    assert iv.verify(str(store))["intact"]
    # ...the digest does not.
    code, report, _ = verify(store, keys)
    assert code == 1
    k = kinds(report)
    assert set(k) == {"missing_rows"}, report["problems"]
    p = k["missing_rows"][0]
    assert p["path"] == rel(store, newest) and p["seq_end"] - p["seq"] == 2


def test_delete_a_digest(store, keys):
    ds = digests(store)
    listed = json.loads(ds[2].read_bytes())["files"]
    ds[2].unlink()
    code, report, _ = verify(store, keys)
    assert code == 1
    k = kinds(report)
    assert set(k) <= {"missing_digest", "undigested_file"} and "missing_digest" in k, report["problems"]
    assert "digests 2..=2" in k["missing_digest"][0]["detail"]
    # The files only that digest listed are now vouched for by none.
    assert {p["path"] for p in k.get("undigested_file", [])} == {f["path"] for f in listed}


def test_delete_the_newest_digest(store, keys):
    ds = digests(store)
    ds[-1].unlink()
    code, report, _ = verify(store, keys)
    assert code == 1
    k = kinds(report)
    assert "missing_digest" in k, report["problems"]
    assert "not a shutdown digest" in k["missing_digest"][0]["detail"]


def test_forge_a_digest_with_another_key(store, keys, otel_audit_bin):
    """Rewrite a digest to drop a file, re-sign it with another key: unknown_key."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    forger = load_pem_private_key(keys["forger"].read_bytes(), password=None)
    path = digests(store)[3]
    d = json.loads(path.read_bytes())
    d["files"] = d["files"][:-1]
    d["key_id"] = key_id(forger.public_key())
    d["signature"] = forger.sign(b"otel-audit/digest/v1\n" + canonical(d)).hex()
    path.write_text(json.dumps(d, indent=2))
    code, report, _ = verify(store, keys)
    assert code == 1
    k = kinds(report)
    assert "unknown_key" in k and k["unknown_key"][0]["path"] == rel(store, path), report["problems"]
    # The next digest's link to it breaks too (its bytes changed).
    assert "broken_digest_link" in k
    # Keeping the signer's key id makes it a bad signature instead.
    d["key_id"] = key_id(load_pem_public_key(keys["signer_pub"].read_bytes()))
    path.write_text(json.dumps(d, indent=2))
    code, report, _ = verify(store, keys)
    assert "bad_signature" in kinds(report), report["problems"]


def test_drop_a_whole_period(store, keys):
    """Delete one hour's digest and every file it lists: the seq gap in digests shows."""
    path = digests(store)[2]
    d = json.loads(path.read_bytes())
    assert d["files"]
    for f in d["files"]:
        (store / f["path"]).unlink()
    path.unlink()
    code, report, _ = verify(store, keys)
    assert code == 1
    k = kinds(report)
    assert "missing_digest" in k and "missing_file" in k, report["problems"]


def test_swap_two_files_between_periods(store, keys):
    files = chain_files(store)
    a, b = files[1], files[-2]
    assert a.parent != b.parent
    ba, bb = a.read_bytes(), b.read_bytes()
    a.write_bytes(bb)
    b.write_bytes(ba)
    code, report, _ = verify(store, keys)
    assert code == 1
    modified = {p["path"] for p in kinds(report).get("modified_file", [])}
    assert {rel(store, a), rel(store, b)} <= modified, report["problems"]


def test_a_stale_copy_verifies_as_of_its_time(store, keys):
    """A copy taken before the final digest: stale now, intact as of the newest digest's end."""
    for tenant in ("acme", "globex"):
        last = digests(store, tenant)[-1]
        d = json.loads(last.read_bytes())
        for f in d["files"]:
            (store / f["path"]).unlink()
        last.unlink()
    code, report, _ = verify(store, keys)
    assert code == 1 and "missing_digest" in kinds(report)
    newest_end = json.loads(digests(store)[-1].read_bytes())["period_end"]
    code, report, stderr = verify(store, keys, "--as-of", newest_end)
    assert code == 0, (stderr, report["problems"])


def test_unknown_public_key_file_is_a_usage_error(signed_store, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    r = run_cli(["verify", str(signed_store), "--public-key", str(bad)])
    assert r.returncode == 2 and "not an Ed25519" in r.stderr and "\n" not in r.stderr.strip()


# --------------------------------------------------------------------------
# inclusion proofs through the command line
# --------------------------------------------------------------------------


def test_prove_and_verify_proof_offline(signed_store, keys, tmp_path):
    import pyarrow.parquet as pq

    f = chain_files(signed_store)[3]
    event_id = pq.ParquetFile(f).read().column("event_id")[7].as_py()
    proof = tmp_path / "proof.json"
    r = run_cli(["prove", event_id, "--store", str(signed_store), "--out", str(proof)])
    assert r.returncode == 0, r.stderr
    p = json.loads(proof.read_text())
    assert p["file"]["path"] == rel(signed_store, f) and p["file"]["row_index"] == 7
    # Offline: the store is not needed.
    moved = tmp_path / "elsewhere.json"
    shutil.copy(proof, moved)
    r = run_cli(["verify-proof", str(moved), "--public-key", str(keys["signer_pub"])])
    assert r.returncode == 0 and r.stdout.startswith("proof valid"), r.stdout + r.stderr
    # Any changed byte fails: the event, the path, the root, the signature.
    def tampered(change) -> int:
        q = json.loads(proof.read_text())
        change(q)
        t = tmp_path / "t.json"
        t.write_text(json.dumps(q))
        return run_cli(["verify-proof", str(t), "--public-key", str(keys["signer_pub"])]).returncode

    def flip(h: str) -> str:
        return ("1" if h[0] == "0" else "0") + h[1:]

    assert tampered(lambda q: q["record"]["event"].__setitem__("action", "something.else")) == 1
    assert tampered(lambda q: q["audit_path"].__setitem__(0, flip(q["audit_path"][0]))) == 1
    assert tampered(lambda q: q["file"].__setitem__("merkle_root", flip(q["file"]["merkle_root"]))) == 1
    assert tampered(lambda q: q["digest"].__setitem__("signature", flip(q["digest"]["signature"]))) == 1
    r = run_cli(["verify-proof", str(proof), "--public-key", str(keys["forger_pub"])])
    assert r.returncode == 1 and "not among the trusted keys" in r.stdout
    r = run_cli(["prove", "not-a-uuid", "--store", str(signed_store)])
    assert r.returncode == 2 and "not a UUID" in r.stderr


# --------------------------------------------------------------------------
# retention planning on the command line
# --------------------------------------------------------------------------


def test_prune_dry_run_lists_and_deletes_nothing(signed_store, tmp_path):
    before = sorted(p.relative_to(signed_store) for p in signed_store.rglob("*") if p.is_file())
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "retention:\n"
        "  rules: [{days: 30}]\n"
        "  legal_holds: [{name: case-17, reason: litigation, tenant: globex}]\n"
    )
    r = run_cli(["prune", "--store", str(signed_store), "--rules", str(rules), "--dry-run", "--json"])
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    # The base store is from 2026-01-05: all of acme expired, globex held.
    assert plan["files"] and all(f["path"].startswith("tenant=acme/") for f in plan["files"])
    assert plan["held"] and all(h["tenant"] == "globex" and h["hold"] == "case-17" for h in plan["held"])
    assert len(plan["files"]) == len(chain_files(signed_store, "acme"))
    # Old digests whose files would all be gone would go too, never a chain's newest.
    newest = {str(digests(signed_store, t)[-1].relative_to(signed_store)) for t in ("acme", "globex")}
    assert plan["digests"] and not newest & {d["path"] for d in plan["digests"]}
    after = sorted(p.relative_to(signed_store) for p in signed_store.rglob("*") if p.is_file())
    assert after == before
    # Nothing expires under a long rule; without --dry-run the CLI refuses.
    r = run_cli(["prune", "--store", str(signed_store), "--keep", "inference=36500", "--keep", "36500", "--dry-run"])
    assert r.returncode == 0 and "0 files" in r.stdout.splitlines()[-1], r.stdout
    r = run_cli(["prune", "--store", str(signed_store), "--keep", "30"])
    assert r.returncode == 2 and "--dry-run" in r.stderr
    r = run_cli(["prune", "--store", str(signed_store), "--keep", "nonsense=3", "--dry-run"])
    assert r.returncode == 2 and "nonsense" in r.stderr


def test_verify_one_tenant(store, keys):
    """--tenant verifies one tenant's files, chains and digests: another tenant's tampering is not
    its problem, its own is."""
    whole = verify(store, keys)[1]
    per_tenant = {}
    for t in ("acme", "globex"):
        code, report, err = verify(store, keys, "--tenant", t)
        assert code == 0, (report, err)
        assert {c["tenant"] for c in report["chains"]} == {t}
        assert report["digests"]["digests"] == len(digests(store, t)) > 0
        per_tenant[t] = report
    assert sum(r["events_verified"] for r in per_tenant.values()) == whole["events_verified"]
    assert sum(r["digests"]["digests"] for r in per_tenant.values()) == whole["digests"]["digests"]

    # Delete a middle file of globex: acme is still intact, globex is not.
    victim = chain_files(store, "globex")[1]
    victim.unlink()
    assert verify(store, keys, "--tenant", "acme")[0] == 0
    code, report, _ = verify(store, keys, "--tenant", "globex")
    assert code == 1 and "missing_file" in kinds(report)
    assert all("acme" not in (p.get("path") or "") for p in report["problems"])

    r = run_cli(["verify", str(store), "--tenant", "../x"])
    assert r.returncode == 2 and "--tenant" in r.stderr
    r = run_cli(["verify", str(store), "--tenant", "nobody"])
    assert r.returncode == 2 and "for tenant nobody" in r.stderr
