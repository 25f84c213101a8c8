"""`otel-audit backup` / `otel-audit restore` with the real binary: local -> S3 (a moto server) -> local,
verified and byte-identical; an interrupted backup (killed, or leaving part of the destination) resumed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict

import pytest

from conftest import bin_path, generate, run_cli, verify_json

STORE_ARGS = dict(events=3000, tenants=2, hours=6, start="2026-01-05", seed=7, max_file_rows=200)


def local_objects(root: Path) -> Dict[str, bytes]:
    """Every visible object of a local store, by path relative to the root."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def s3_objects(moto_s3, prefix: str) -> Dict[str, bytes]:
    client = moto_s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=moto_s3.bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=moto_s3.bucket, Key=o["Key"])["Body"].read()
            out[o["Key"][len(prefix) + 1 :]] = body
    return out


def s3_keys(moto_s3, prefix: str) -> set:
    client = moto_s3.client()
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=moto_s3.bucket, Prefix=prefix + "/"):
        keys |= {o["Key"][len(prefix) + 1 :] for o in page.get("Contents", [])}
    return keys


def settled_keys(moto_s3, prefix: str) -> set:
    """The keys once the server has finished the requests a killed client had already sent."""
    keys = s3_keys(moto_s3, prefix)
    while True:
        time.sleep(0.5)
        now = s3_keys(moto_s3, prefix)
        if now == keys:
            return keys
        keys = now


def copy_json(command: str, src: str, dst: str, *extra: str, env=None) -> tuple:
    """`otel-audit backup|restore --from SRC --to DST --json` -> (exit code, report or None, stderr)."""
    r = run_cli([command, "--from", src, "--to", dst, "--json", *extra], env=env)
    report = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, report, r.stderr


@pytest.fixture(scope="module")
def signed_store(tmp_path_factory, otel_audit_bin):
    """A local store with signed digests, and the public key that checks them."""
    root = tmp_path_factory.mktemp("backup-src")
    private, public = root / "digest.pem", root / "digest.pub.pem"
    r = run_cli(["keys", "generate", "--private-key", str(private), "--public-key", str(public)])
    assert r.returncode == 0, r.stderr
    store = root / "store"
    generate(store, signing_key=private, **STORE_ARGS)
    assert (store / "_digests").is_dir(), "generate --signing-key wrote no digests"
    return store, public


def test_round_trip_local_s3_local(moto_s3, signed_store, tmp_path):
    store, public = signed_store
    original = local_objects(store)
    digests = [k for k in original if k.startswith("_digests/")]
    url = moto_s3.url("backup/round-trip")

    code, report, stderr = copy_json("backup", str(store), url, "--public-key", str(public), env=moto_s3.env)
    assert code == 0, stderr
    assert report["objects"] == len(original) and report["digests"] == len(digests)
    assert (report["copied"], report["skipped"]) == (len(original), 0)
    assert report["bytes_copied"] == sum(len(b) for b in original.values())
    assert report["verified"] is True and report["intact"] is True
    assert report["verify"]["events_verified"] == STORE_ARGS["events"]
    assert report["verify"]["digests"]["signatures_checked"] is True
    assert report["verify"]["digests"]["digests_valid"] == len(digests)
    assert s3_objects(moto_s3, "backup/round-trip") == original

    # A second backup has nothing to do.
    code, again, stderr = copy_json("backup", str(store), url, "--checksum", env=moto_s3.env)
    assert code == 0, stderr
    assert (again["copied"], again["skipped"], again["bytes_copied"]) == (0, len(original), 0)

    restored = tmp_path / "restored"
    code, back, stderr = copy_json("restore", url, str(restored), "--public-key", str(public), env=moto_s3.env)
    assert code == 0, stderr
    assert (back["copied"], back["skipped"]) == (len(original), 0)
    assert back["intact"] is True
    assert local_objects(restored) == original

    code, verified, stderr = verify_json(restored, "--public-key", str(public))
    assert code == 0, stderr
    assert verified["intact"] is True and verified["events_verified"] == STORE_ARGS["events"]


def test_text_output_and_no_verify(moto_s3, signed_store):
    store, _ = signed_store
    url = moto_s3.url("backup/text")
    r = run_cli(["backup", "--from", str(store), "--to", url, "--no-verify"], env=moto_s3.env)
    assert r.returncode == 0, r.stderr
    assert "copied" in r.stdout and "intact" not in r.stdout, r.stdout
    r = run_cli(["backup", "--from", str(store), "--to", url], env=moto_s3.env)
    assert r.returncode == 0, r.stderr
    assert "0 of" in r.stdout and "intact" in r.stdout, r.stdout


def test_killed_backup_is_resumed(moto_s3, tmp_path):
    store = tmp_path / "big"
    generate(store, events=20000, tenants=2, hours=6, start="2026-01-05", seed=3, max_file_rows=100)
    original = local_objects(store)
    prefix = "backup/killed"
    url = moto_s3.url(prefix)

    proc = subprocess.Popen(
        [bin_path(), "backup", "--from", str(store), "--to", url, "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=moto_s3.env,
    )
    try:
        deadline = time.monotonic() + 60
        while not s3_keys(moto_s3, prefix) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    present = settled_keys(moto_s3, prefix)
    assert present, "the backup wrote nothing before it was killed"
    if proc.returncode == -signal.SIGKILL:
        assert len(present) < len(original), "killed after it had finished"

    code, report, stderr = copy_json("backup", str(store), url, env=moto_s3.env)
    assert code == 0, stderr
    assert report["skipped"] == len(present) and report["copied"] == len(original) - len(present)
    assert report["intact"] is True and report["verify"]["events_verified"] == 20000
    assert s3_objects(moto_s3, prefix) == original


def test_partial_backup_is_completed_and_conflicts_refused(moto_s3, signed_store):
    """What an interrupted backup leaves (some data files, no digest) is completed by a rerun; an object
    the backup holds with other content is never overwritten."""
    store, public = signed_store
    original = local_objects(store)
    prefix = "backup/partial"
    client = moto_s3.client()
    data = sorted(k for k in original if not k.startswith("_digests/"))
    already = data[::3]
    for key in already:
        client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/{key}", Body=original[key])

    url = moto_s3.url(prefix)
    code, report, stderr = copy_json("backup", str(store), url, "--public-key", str(public), env=moto_s3.env)
    assert code == 0, stderr
    assert (report["copied"], report["skipped"]) == (len(original) - len(already), len(already))
    assert report["intact"] is True
    assert s3_objects(moto_s3, prefix) == original

    # The backup's copy of a file differs from the store's (same size, other bytes): the size check lets
    # it pass and verification of the backup catches it; --checksum refuses it, naming the file.
    victim = data[1]
    tampered = bytearray(original[victim])
    tampered[len(tampered) // 2] ^= 0xFF
    client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/{victim}", Body=bytes(tampered))
    code, report, stderr = copy_json("backup", str(store), url, env=moto_s3.env)
    assert code == 1, (code, stderr)
    assert report["copied"] == 0 and report["intact"] is False
    assert any(p.get("path") == victim for p in report["verify"]["problems"]), report["verify"]["problems"]

    code, report, stderr = copy_json("backup", str(store), url, "--checksum", env=moto_s3.env)
    assert code == 2 and report is None, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and victim in lines[0] and "refusing to overwrite" in lines[0], stderr
    assert s3_objects(moto_s3, prefix)[victim] == bytes(tampered)


def test_usage_errors(moto_s3, tmp_path):
    code, report, stderr = copy_json("restore", str(tmp_path / "no-such-backup"), str(tmp_path / "out"))
    assert code == 2 and report is None
    assert "no such directory" in stderr and not (tmp_path / "no-such-backup").exists()

    code, report, stderr = copy_json("restore", moto_s3.url("backup/empty-prefix"), str(tmp_path / "out"), env=moto_s3.env)
    assert code == 2 and report is None
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing to copy" in lines[0], stderr
