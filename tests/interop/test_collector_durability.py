"""The collector's promises under failure, with the real binary:

- kill -9 during load, many times in a loop: every acknowledged event is in the store exactly once and
  the chain verifies;
- S3 (a real moto server) becomes unreachable mid-load and comes back: nothing acknowledged is lost;
- the WAL cap reached while the store is down: retryable statuses (429 + Retry-After), bounded memory,
  and a full catch-up once the store returns;
- the WAL's file system full (a real tmpfs, mounted in the collector's own mount namespace): retryable
  statuses (503 + Retry-After), the collector stays up and ready, and it takes data again as soon as
  space is freed, without a restart; the same with the store on that disk too (the embedded default's
  layout), whose failed puts are retried and leave no staging file behind;
- that shared disk full to its last page, with expired files in the store: the retention run records its
  tombstones in the WAL's reserve and deletes the files, and requests succeed again with nothing freed by
  hand; and the WAL's own disk full to its last page while S3 is down: once S3 is back, the releases
  record what the store holds in the reserve's room and delete the segments.

Load comes from plain OTLP/HTTP JSON requests (GenAI spans with unique span ids); a request counts as
acknowledged only when the collector answered 200.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import duckdb
import pytest

from collector import Collector
from conftest import FAKE_AWS_ENV, generate, verify_json


def span_batch(start: int, n: int, service: str) -> Tuple[bytes, List[str]]:
    spans, ids = [], []
    for i in range(start, start + n):
        span_id = format(i + 1, "016x")
        ids.append(span_id)
        spans.append({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": span_id, "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": str(1767600000000000000 + i * 1000), "endTimeUnixNano": str(1767600000500000000 + i * 1000),
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(i % 500)}},
                {"key": "enduser.id", "value": {"stringValue": f"user-{i % 13}"}},
                {"key": "gen_ai.input.messages", "value": {"stringValue": "x" * 300}},
            ],
        })
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}],
    }]}
    return json.dumps(body).encode(), ids


class Loader:
    """Sends batches until stopped; remembers which span ids were acknowledged (HTTP 200)."""

    def __init__(self, url: str, service: str, first: int = 0, batch: int = 50):
        self.url, self.service, self.next, self.batch = url, service, first, batch
        self.acked: List[str] = []
        self.statuses: Dict[int, int] = {}
        self.retry_after: List[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Loader":
        self.thread.start()
        return self

    def stop(self) -> "Loader":
        self._stop.set()
        self.thread.join(timeout=60)
        return self

    def _run(self) -> None:
        body, ids = span_batch(self.next, self.batch, self.service)
        while not self._stop.is_set():
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status = r.status
                    answer = json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                status = e.code
                if e.headers.get("Retry-After"):
                    self.retry_after.append(e.headers["Retry-After"])
                answer = None
            except OSError:
                status = 0  # connection refused / reset: the collector is down
                answer = None
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                rejected = int((answer.get("partialSuccess") or {}).get("rejectedSpans") or 0) if answer else 0
                assert rejected == 0, answer
                self.acked.extend(ids)
                self.next += self.batch
                body, ids = span_batch(self.next, self.batch, self.service)
            else:
                time.sleep(0.05)


def stored_span_ids(store: Path, service: str) -> List[str]:
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT span_id FROM read_parquet('{store}/**/*.parquet', hive_partitioning = true) "
        f"WHERE service_name = '{service}'"
    ).fetchall()
    return [r[0] if isinstance(r[0], str) else bytes(r[0]).hex() for r in rows]


def assert_exactly_once(acked: List[str], stored: List[str]) -> None:
    assert len(set(stored)) == len(stored), "an event was stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events missing, e.g. {sorted(missing)[:5]}"


def assert_intact(store) -> dict:
    code, report, stderr = verify_json(store)
    assert code == 0, (report, stderr)
    return report


def test_kill_9_in_a_loop_loses_and_duplicates_nothing(tmp_path):
    service = "crash-loop"
    acked: List[str] = []
    first = 0
    rng = random.Random(7)
    c = Collector(tmp_path, sets=["storage.flush_interval_secs=1", "storage.max_file_rows=300"])
    for round_ in range(6):
        c.start()
        loader = Loader(c.http + "/v1/traces", service, first=first).start()
        time.sleep(rng.uniform(0.4, 1.2))
        c.kill()
        loader.stop()
        acked += loader.acked
        first = loader.next + 1000  # fresh ids after the round (unacked ids are never reused)
        assert loader.statuses.get(200, 0) > 0, (round_, loader.statuses, c.log_text()[-2000:])
    c.start()
    assert c.stop() == 0, c.log_text()[-3000:]
    assert c.wal_segments() == []
    assert len(acked) > 500
    assert_exactly_once(acked, stored_span_ids(c.store, service))
    assert_intact(c.store)


class Proxy:
    """A TCP proxy to the S3 server that can be cut (connections refused and reset) and restored."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conns: List[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: Optional[socket.socket] = None
        self.restore()

    def restore(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def cut(self) -> None:
        ls, self.listener = self.listener, None
        if ls:
            # shutdown wakes the thread blocked in accept(), so the port is really free.
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 1.0)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


def s3_sets(moto_s3, prefix: str, endpoint: str) -> List[str]:
    return [
        f"storage.url=s3://{moto_s3.bucket}/{prefix}",
        f"storage.s3.endpoint={endpoint}",
        "storage.s3.allow_http=true",
        "storage.s3.region=us-east-1",
        "storage.s3.max_retries=1",
        "storage.s3.retry_timeout_secs=2",
        "storage.s3.connect_timeout_secs=1",
        "storage.flush_interval_secs=1",
        "storage.max_file_rows=500",
    ]


def download(moto_s3, prefix: str, dest: Path) -> Path:
    s3 = moto_s3.client()
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=moto_s3.bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            rel = o["Key"][len(prefix) + 1:]
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(moto_s3.bucket, o["Key"], str(target))
    return dest


def test_s3_outage_mid_load_loses_nothing(tmp_path, moto_s3):
    proxy = Proxy(moto_s3.port)
    prefix = "outage"
    c = Collector(tmp_path, sets=s3_sets(moto_s3, prefix, f"http://127.0.0.1:{proxy.port}"),
                  env=FAKE_AWS_ENV).start()
    loader = Loader(c.http + "/v1/traces", "s3-outage").start()
    try:
        time.sleep(2)
        proxy.cut()
        time.sleep(4)
        during = loader.statuses.get(200, 0)
        proxy.restore()
        time.sleep(3)
    finally:
        loader.stop()
        proxy.cut()
        proxy.restore()
    assert c.stop() == 0, c.log_text()[-3000:]
    assert c.wal_segments() == []
    assert during > 0
    assert c.log_text().count("store write failed") > 0, "the outage should have made writes fail"
    local = download(moto_s3, prefix, tmp_path / "downloaded")
    assert_exactly_once(loader.acked, stored_span_ids(local, "s3-outage"))
    assert_intact(local)
    code, report, stderr = verify_json(f"s3://{moto_s3.bucket}/{prefix}?endpoint={moto_s3.endpoint}&allow_http=true",
                                       env=moto_s3.env)
    assert code == 0, (report, stderr)


def wait_until(done: Callable[[], bool], timeout: float, context: Callable[[], object]) -> None:
    """Polls `done` until it holds; fails with `context()` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline and not done():
        time.sleep(0.1)
    assert done(), context()


def wait_for_successes(loaders: List[Loader], n: int) -> None:
    """Waits until the loaders got `n` more 200 answers than now."""
    def ok() -> int:
        return sum(l.statuses.get(200, 0) for l in loaders)

    ok_before = ok()
    wait_until(lambda: ok() >= ok_before + n, 60, lambda: [l.statuses for l in loaders])


@contextlib.contextmanager
def stopping(c: Collector, loaders: List[Loader]):
    """Runs the block, then stops the loaders (whatever happened) and the collector, which must exit
    cleanly."""
    try:
        yield
    finally:
        for l in loaders:
            l.stop()
    assert c.stop() == 0, c.log_text()[-3000:]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_wal_cap_pushes_back_with_bounded_memory_then_catches_up(tmp_path, moto_s3):
    proxy = Proxy(moto_s3.port)
    prefix = "backpressure"
    sets = s3_sets(moto_s3, prefix, f"http://127.0.0.1:{proxy.port}") + [
        "wal.max_segment_bytes=262144",
        "wal.max_queue_bytes=262144",
        "wal.max_wal_bytes=2097152",
        "storage.max_buffer_bytes=1048576",
    ]
    c = Collector(tmp_path, sets=sets, env=FAKE_AWS_ENV).start()
    proxy.cut()
    loaders = [Loader(c.http + "/v1/traces", "backpressure", first=i * 10_000_000).start() for i in range(3)]
    peak = 0
    with stopping(c, loaders):
        deadline = time.time() + 30
        while time.time() < deadline and not any(l.statuses.get(429) for l in loaders):
            peak = max(peak, rss_kib(c.proc.pid))
            time.sleep(0.1)
        assert any(l.statuses.get(429) for l in loaders), [l.statuses for l in loaders]
        for _ in range(20):  # keep pushing against the cap for a while
            peak = max(peak, rss_kib(c.proc.pid))
            time.sleep(0.1)
        assert all(r.isdigit() and int(r) >= 1 for l in loaders for r in l.retry_after)
        assert c.metric_sum("otel_audit_backpressure_total") > 0
        proxy.restore()
        # The store is back: the sink catches up, the WAL drains, requests succeed again.
        wait_for_successes(loaders, 20)
    assert peak < 300 * 1024, f"peak RSS {peak} KiB"
    acked = [i for l in loaders for i in l.acked]
    local = download(moto_s3, prefix, tmp_path / "downloaded")
    assert_exactly_once(acked, stored_span_ids(local, "backpressure"))
    assert_intact(local)


def small_disk(mount_point: Path, size_kib: int, filler_kib: int, free_flag: Path,
               copy_out: Optional[Path] = None, seed: Optional[Path] = None,
               top_up_flag: Optional[Path] = None) -> Optional[List[str]]:
    """A command prefix that runs the collector in a mount namespace of its own, where `mount_point` is a
    tmpfs of `size_kib` holding a `filler` file of `filler_kib` until `free_flag` appears; `None` when this
    machine cannot mount one (no unshare, or neither root nor user namespaces). With `seed`, that directory
    is copied to the tmpfs's `store` first. When `top_up_flag` appears, the rest of the tmpfs is filled (to
    the last page, in a `top-up` file freed with the filler), and `<top_up_flag>.done` says so. With `copy_out`, the tmpfs's `store` directory is copied there
    once the collector has exited (the tmpfs goes with the namespace)."""
    unshare = ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    mount_point.mkdir(parents=True, exist_ok=True)
    try:
        probe = subprocess.run([*unshare, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if probe.returncode != 0:
        return None
    # $$ is the shell that becomes the collector at `exec`; the watcher ends with it.
    script = (
        'set -e; mount -t tmpfs -o "size=${SIZE}k" tmpfs "$DISK"; '
        'if [ -n "$SEED" ]; then cp -a "$SEED" "$DISK/store"; fi; '
        'dd if=/dev/zero of="$DISK/filler" bs=1024 count="$FILLER" status=none; '
        'if [ -n "$TOPUP" ]; then ( while [ ! -e "$TOPUP" ] && kill -0 $$ 2>/dev/null; do sleep 0.1; done; '
        '  dd if=/dev/zero of="$DISK/top-up" bs=4096 status=none 2>/dev/null || true; touch "$TOPUP.done" ) & fi; '
        '( while [ ! -e "$FREE" ] && kill -0 $$ 2>/dev/null; do sleep 0.1; done; rm -f "$DISK/filler" "$DISK/top-up"; '
        '  if [ -n "$COPY" ]; then while kill -0 $$ 2>/dev/null; do sleep 0.1; done; '
        '    cp -a "$DISK/store" "$COPY.part" && mv "$COPY.part" "$COPY"; fi ) & '
        'exec "$@"'
    )
    return ["env", f"SIZE={size_kib}", f"DISK={mount_point}", f"FILLER={filler_kib}", f"FREE={free_flag}",
            f"COPY={copy_out or ''}", f"SEED={seed or ''}", f"TOPUP={top_up_flag or ''}", *unshare, "sh", "-c", script, "sh"]


def wait_for_refusals(c: Collector, loaders: List[Loader], status: int) -> None:
    wait_until(lambda: any(l.statuses.get(status) for l in loaders), 60,
               lambda: ([l.statuses for l in loaders], c.log_text()[-3000:]))


def loaded_on_small_disk(tmp_path: Path, service: str, sets: List[str], size_kib: int, filler_kib: int,
                         copy_out: Optional[Path] = None,
                         seed: Optional[Path] = None,
                         top_up_flag: Optional[Path] = None,
                         env: Optional[Dict[str, str]] = None) -> Tuple[Collector, List[Loader], Path]:
    """A collector whose WAL (and whatever else `sets` puts under `tmp_path/disk`) is on a small tmpfs that
    is nearly full, with two loaders sending to it; and the file whose creation frees the disk. Skips the
    test where no tmpfs can be mounted."""
    disk, free = tmp_path / "disk", tmp_path / "free-the-disk"
    wrap = small_disk(disk, size_kib=size_kib, filler_kib=filler_kib, free_flag=free, copy_out=copy_out,
                      seed=seed, top_up_flag=top_up_flag)
    if wrap is None:
        pytest.skip("cannot mount a small tmpfs here (needs unshare with root or user namespaces)")
    sets = [f"wal.dir={disk / 'wal'}", "wal.max_segment_bytes=262144", "wal.max_queue_bytes=262144", *sets]
    c = Collector(tmp_path, sets=sets, wrap=wrap, env=env).start()
    loaders = [Loader(c.http + "/v1/traces", service, first=i * 10_000_000).start() for i in range(2)]
    return c, loaders, free


@contextlib.contextmanager
def while_disk_full(c: Collector, loaders: List[Loader], free: Path):
    """Runs the block once the full disk turns requests away (503); then frees the disk, waits until requests
    succeed again, and stops the loaders and the collector, which must exit cleanly."""
    with stopping(c, loaders):
        wait_for_refusals(c, loaders, 503)
        yield
        free.touch()
        wait_for_successes(loaders, 20)


def test_wal_disk_full_pushes_back_then_recovers_without_restart(tmp_path):
    # The sink keeps its files open, so the WAL keeps every record and fills the disk.
    sets = ["storage.flush_interval_secs=3600", "storage.max_file_rows=1000000"]
    c, loaders, free = loaded_on_small_disk(tmp_path, "diskfull", sets, size_kib=6144, filler_kib=4608)
    # Once the block is done, space is freed: the same collector takes data again.
    with while_disk_full(c, loaders, free):
        time.sleep(1)  # keep pushing against the full disk for a while
        assert c.healthy() and c.proc.poll() is None
        with urllib.request.urlopen(c.telemetry + "/readyz", timeout=5) as r:
            assert r.status == 200  # full, not failed: no restart needed
        assert all(r.isdigit() and int(r) >= 1 for l in loaders for r in l.retry_after)
        m = c.metrics()
        assert m.get('otel_audit_backpressure_total{reason="disk_full"}', 0) > 0, m
        assert "file system is full" in c.log_text()
    assert "has room again" in c.log_text()
    acked = [i for l in loaders for i in l.acked]
    assert acked
    assert_exactly_once(acked, stored_span_ids(c.store, "diskfull"))
    assert_intact(c.store)


def test_shared_disk_full_store_and_wal_recover_without_restart(tmp_path):
    """The embedded default's layout: store and WAL on one disk, which fills up. Puts of Parquet files
    fail and are retried, WAL writes find no space (503), and once space is freed everything acknowledged
    reaches the store, with no staging file left behind."""
    copied = tmp_path / "store-copy"
    sets = [f"storage.url={tmp_path / 'disk' / 'store'}", "storage.flush_interval_secs=1"]
    c, loaders, free = loaded_on_small_disk(tmp_path, "shareddisk", sets, size_kib=8192, filler_kib=6656,
                                            copy_out=copied)
    with while_disk_full(c, loaders, free):
        time.sleep(2)  # the sink retries its puts meanwhile
        assert c.proc.poll() is None
    assert "file system is full" in c.log_text()
    # The store lived on the collector's tmpfs: its copy, made once the collector exited.
    wait_until(copied.exists, 60, lambda: "the store was not copied out of the collector's mount namespace")
    leftovers = [p for p in copied.rglob("*") if p.is_file() and p.suffix != ".parquet"
                 and not (p.suffix == ".json" and "_digests" in p.parts)]
    assert not leftovers, leftovers
    acked = [i for l in loaders for i in l.acked]
    assert acked
    assert_exactly_once(acked, stored_span_ids(copied, "shareddisk"))
    assert_intact(copied)


def test_retention_frees_a_full_shared_disk_by_itself(tmp_path):
    """Store and WAL on one disk that fills up to its last page, with expired files in the store and
    retention on. The retention run must record its tombstones in the WAL before it deletes anything, and
    the disk has no room for them: they go into the WAL's reserve. The expired files are deleted, and
    requests succeed again without anyone freeing space; the reserve is allocated again once there is
    room."""
    seed, copied, top_up = tmp_path / "seed", tmp_path / "store-copy", tmp_path / "top-up"
    # Received in 2020, so long expired under a 30-day rule: 12 files, one per hour, whose 12 tombstones
    # (about 9 KB) cannot fit in the slack of the WAL segment's last page.
    generate(seed, events=20000, tenants=1, start="2020-01-01T00:00:00Z", hours=12)
    seed_kib = sum(-(-p.stat().st_size // 4096) * 4 for p in seed.rglob("*") if p.is_file())
    size_kib = 8192
    sets = [f"storage.url={tmp_path / 'disk' / 'store'}", "storage.flush_interval_secs=1",
            "wal.reserve_bytes=262144", "collector.instance_id=retention-test",
            "retention.enabled=true", "retention.interval_secs=10", "retention.rules=[{days: 30}]"]
    # About 1.5 MiB free at start: room for the reserve (twice its size), then the loaders fill it.
    c, loaders, free = loaded_on_small_disk(tmp_path, "retentionfull", sets, size_kib=size_kib,
                                            filler_kib=size_kib - seed_kib - 1536, copy_out=copied, seed=seed,
                                            top_up_flag=top_up)
    with stopping(c, loaders):
        assert "the WAL's reserve" not in c.log_text()  # it was allocated at start, quietly
        wait_for_refusals(c, loaders, 503)
        top_up.touch()  # not a page left
        wait_until(Path(f"{top_up}.done").exists, 30, lambda: "the disk was not topped up")
        assert c.metric_sum("otel_audit_retention_deletions_total") == 0, "retention ran before the disk was full"
        # The first run (10 s after start) deletes the expired files through the reserve...
        wait_until(lambda: c.metric_sum("otel_audit_retention_deletions_total") >= 12, 60,
                   lambda: c.log_text()[-3000:])
        log = c.log_text()
        assert "its reserve was deleted to record the collector's own events" in log, log[-3000:]
        assert "retention run failed" not in log, log[-3000:]
        # ... which makes room: requests succeed again, with the filler still there.
        wait_for_successes(loaders, 20)
        assert not free.exists()
        wait_until(lambda: "the WAL's reserve is in place" in c.log_text(), 30, lambda: c.log_text()[-3000:])
        free.touch()  # let the collector store everything and stop cleanly
    wait_until(copied.exists, 60, lambda: "the store was not copied out of the collector's mount namespace")
    assert not [p for p in copied.rglob("*.parquet") if "date=2020-" in str(p)]
    acked = [i for l in loaders for i in l.acked]
    assert acked
    assert_exactly_once(acked, stored_span_ids(copied, "retentionfull"))
    # The deleted files are accounted for by their tombstones: the store verifies intact.
    assert_intact(copied)


def test_wal_disk_full_to_the_last_page_frees_itself_once_the_store_returns(tmp_path, moto_s3):
    """S3 down, and the WAL's own disk (smaller than wal.max_wal_bytes) full to its last page. When S3
    returns, the sink stores what the WAL holds; before deleting segments it must record durably what the
    store holds, and the disk has no room even for that: the release takes the WAL's reserve, the segments
    go, and requests succeed again with nothing freed by hand."""
    proxy = Proxy(moto_s3.port)
    prefix, top_up = "walfull", tmp_path / "top-up"
    sets = s3_sets(moto_s3, prefix, f"http://127.0.0.1:{proxy.port}") + ["wal.reserve_bytes=262144"]
    c, loaders, free = loaded_on_small_disk(tmp_path, "walfull", sets, size_kib=6144, filler_kib=4608,
                                            top_up_flag=top_up, env=FAKE_AWS_ENV)
    proxy.cut()  # once started: the collector reads the store at start
    with stopping(c, loaders):
        wait_for_refusals(c, loaders, 503)
        top_up.touch()  # not a page left
        wait_until(Path(f"{top_up}.done").exists, 30, lambda: "the disk was not topped up")
        proxy.restore()
        wait_until(lambda: "to record what the store holds" in c.log_text(), 60, lambda: c.log_text()[-3000:])
        wait_for_successes(loaders, 20)
        assert not free.exists()
        assert "WAL release failed" not in c.log_text(), c.log_text()[-3000:]
        free.touch()  # the loaders fill it again meanwhile: let the collector stop cleanly
    acked = [i for l in loaders for i in l.acked]
    assert acked
    local = download(moto_s3, prefix, tmp_path / "downloaded")
    assert_exactly_once(acked, stored_span_ids(local, "walfull"))
    assert_intact(local)
