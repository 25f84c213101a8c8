"""Fixtures for the interop suite: the otel-audit binary, synthetic stores, a moto S3 server.

Everything is deterministic (fixed --seed and --start) and small, so the whole suite runs in
well under a minute on two cores.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pytest

if TYPE_CHECKING:
    import duckdb

DEFAULT_BIN = "/work/main/target/debug/otel-audit"

# The store every test starts from (copied before anything is tampered with).
BASE_STORE_ARGS: Dict[str, Any] = dict(
    events=3000, tenants=2, hours=6, start="2026-01-05", seed=7, max_file_rows=200
)

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "interop-test-key",
    "AWS_SECRET_ACCESS_KEY": "interop-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
BUCKET = "otel-audit-interop"


def bin_path() -> str:
    return os.environ.get("OTEL_AUDIT_BIN", DEFAULT_BIN)


@pytest.fixture(scope="session")
def otel_audit_bin() -> str:
    path = bin_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"otel-audit binary not found at {path}: build it (cargo build -p otel-audit-cli) or set OTEL_AUDIT_BIN")
    return path


def _flags(kw: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    for k, v in kw.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, str(v)]
    return out


def run_cli(args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bin_path(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def generate(store: Any, env: Optional[Dict[str, str]] = None, **kw: Any) -> subprocess.CompletedProcess:
    """`otel-audit generate --store STORE` with keyword arguments as flags (max_file_rows= -> --max-file-rows)."""
    kw.setdefault("seed", 1)
    r = run_cli(["generate", "--store", str(store), *_flags(kw)], env=env)
    assert r.returncode == 0, f"generate failed ({r.returncode}): {r.stderr}"
    return r


def verify_json(store: Any, *extra: str, env: Optional[Dict[str, str]] = None) -> tuple:
    """`otel-audit verify STORE --json` -> (exit code, report dict or None, stderr)."""
    r = run_cli(["verify", str(store), "--json", *extra], env=env)
    report = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, report, r.stderr


@pytest.fixture(scope="session")
def rust_verify(otel_audit_bin):
    """verify_json(store, *extra_args, env=None) -> (exit code, report or None, stderr)."""
    return verify_json


@pytest.fixture(scope="session")
def generate_store():
    """The generate(store, **kw) helper, as a fixture."""
    return generate


@pytest.fixture(scope="session")
def base_store(tmp_path_factory, otel_audit_bin) -> Path:
    """A generated local store: 3000 events, 2 tenants over 6 hours, at most 200 rows a file."""
    root = tmp_path_factory.mktemp("base") / "store"
    generate(root, **BASE_STORE_ARGS)
    return root


@pytest.fixture
def store_copy(base_store, tmp_path) -> Path:
    """A private copy of the base store, free to tamper with."""
    dst = tmp_path / "store"
    shutil.copytree(base_store, dst)
    return dst


# --------------------------------------------------------------------------
# S3 through a moto server
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    def __init__(self, port: int, bucket: str, env: Dict[str, str]):
        self.port = port
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = env  # os.environ plus fake AWS credentials, for subprocesses

    def url(self, prefix: str, endpoint: Optional[str] = None) -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint={endpoint or self.endpoint}&allow_http=true"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=FAKE_AWS_ENV["AWS_REGION"],
        )


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A moto S3 server on a free 127.0.0.1 port with one bucket; stopped at the end of the session."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    env = {**os.environ, **FAKE_AWS_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail("moto server did not answer within 30 s")
                time.sleep(0.1)
        s3 = MotoS3(port, BUCKET, env)
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --------------------------------------------------------------------------
# DuckDB, offline: no extension is ever downloaded
# --------------------------------------------------------------------------


def httpfs_extension_path() -> str:
    """The httpfs extension shipped in the pinned duckdb-extension-httpfs wheel."""
    spec = importlib.util.find_spec("duckdb_extension_httpfs")
    assert spec is not None and spec.origin, "the duckdb-extension-httpfs package is not installed"
    found = glob.glob(os.path.join(os.path.dirname(spec.origin), "**", "*.duckdb_extension"), recursive=True)
    assert len(found) == 1, found
    return found[0]


def duckdb_connect(s3: Optional[MotoS3] = None) -> "duckdb.DuckDBPyConnection":
    """A DuckDB connection that never installs or autoloads extensions.

    With `s3`, httpfs is loaded from the pinned wheel and a secret points s3:// URLs at the moto server
    (path-style URLs, plain HTTP), as an analyst would configure an S3-compatible server.
    """
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    if s3 is not None:
        path = httpfs_extension_path().replace("'", "''")
        con.execute(f"LOAD '{path}'")
        con.execute(
            f"""CREATE SECRET interop_s3 (
                    TYPE s3, KEY_ID '{FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"]}', SECRET '{FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]}',
                    REGION '{FAKE_AWS_ENV["AWS_REGION"]}', ENDPOINT '127.0.0.1:{s3.port}', URL_STYLE 'path', USE_SSL false)"""
        )
    return con


@pytest.fixture(scope="session")
def connect_duckdb():
    """duckdb_connect(s3=None): an offline DuckDB connection, for S3 with httpfs from the wheel and a moto secret."""
    return duckdb_connect
