"""Running the real otel-audit-collector binary for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

from conftest import bin_path


def collector_bin() -> str:
    return os.environ.get(
        "OTEL_AUDIT_COLLECTOR_BIN", str(Path(bin_path()).parent / "otel-audit-collector")
    )


class Collector:
    """One collector process on loopback ports chosen by the OS, with its own store, WAL and log."""

    def __init__(self, root: Path, sets: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None,
                 config: Optional[Path] = None, store_url: Optional[str] = None,
                 wrap: Optional[List[str]] = None):
        self.root = root
        self.store = root / "store"
        self.wal = root / "wal"
        self.log = root / "collector.log"
        self.address_file = root / "addresses"
        self.store_url = store_url or str(self.store)
        self.sets = [
            f"storage.url={self.store_url}",
            f"wal.dir={self.wal}",
            "receivers.otlp.grpc.endpoint=127.0.0.1:0",
            "receivers.otlp.http.endpoint=127.0.0.1:0",
            "telemetry.endpoint=127.0.0.1:0",
            f"telemetry.address_file={self.address_file}",
            "collector.instance_id=e2e-1",
            "storage.flush_interval_secs=2",
            "storage.retry_initial_backoff_ms=50",
            "storage.retry_max_backoff_secs=1",
            *(sets or []),
        ]
        self.config = config
        # A command the collector's command line is appended to, which must end by exec'ing it (so that
        # the process signalled and waited for is the collector itself).
        self.wrap = wrap or []
        self.env = {**os.environ, **(env or {})}
        self.proc: Optional[subprocess.Popen] = None
        self.addresses: Dict[str, str] = {}

    def start(self, timeout: float = 60) -> "Collector":
        if self.address_file.exists():
            self.address_file.unlink()
        args = [*self.wrap, collector_bin()]
        if self.config:
            args += ["--config", str(self.config)]
        for s in self.sets:
            args += ["--set", s]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited with {self.proc.returncode}:\n{self.log_text()}")
            if self.address_file.exists():
                lines = self.address_file.read_text().split()
                self.addresses = dict(line.split("=", 1) for line in lines)
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"collector did not start within {timeout}s:\n{self.log_text()}")

    @property
    def grpc(self) -> str:
        return f"http://{self.addresses['grpc']}"

    @property
    def http(self) -> str:
        return f"http://{self.addresses['http']}"

    @property
    def telemetry(self) -> str:
        return f"http://{self.addresses['telemetry']}"

    def metrics(self) -> Dict[str, float]:
        """The /metrics series as {"name{labels}": value}."""
        with urllib.request.urlopen(self.telemetry + "/metrics", timeout=10) as r:
            text = r.read().decode()
        out: Dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric_sum(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.telemetry + "/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: a graceful shutdown stores everything and empties the WAL."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"collector did not stop within {timeout}s:\n{self.log_text()}")

    def kill(self) -> None:
        """kill -9: no chance to flush anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wal_segments(self) -> List[Path]:
        return sorted(self.wal.glob("*.wal"))


def all_bytes_under(*roots: Path) -> List[Path]:
    files: List[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.exists():
            files.extend(p for p in root.rglob("*") if p.is_file())
    return files


def find_canaries(canaries: List[str], *roots: Path) -> List[str]:
    """Every (file, canary) where a canary's bytes appear in a file under the roots."""
    hits = []
    for f in all_bytes_under(*roots):
        data = f.read_bytes()
        for c in canaries:
            if c.encode() in data:
                hits.append(f"{c} in {f}")
    return hits
