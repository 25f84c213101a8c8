"""Look-up from the command line: `otel-audit show`, `list` and `decrypt`.

- `list` with every filter returns exactly the events pyarrow finds in the same Parquet, in time
  order within each hour, pruned to the period's partitions; bad filters are one-line usage errors.
- `show` prints the stored row (JSON equal to the Parquet row; text with the chain link).
- `decrypt` end to end: a real OpenTelemetry SDK sends a prompt, the collector's policy encrypts it,
  `otel-audit decrypt` opens it only after the collector acknowledged a `data_access` event for the
  access; with the collector unreachable nothing is shown; a wrong key is refused and the attempt
  is recorded too.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import pyarrow.dataset as ds
import pytest

from collector import Collector, collector_bin, find_canaries
from conftest import run_cli, verify_json


@pytest.fixture(scope="module")
def rows(base_store) -> List[Dict[str, Any]]:
    """Every row of the base store, read with pyarrow (hive columns dropped)."""
    table = ds.dataset(str(base_store), format="parquet", partitioning=None).to_table()
    return table.to_pylist()


def list_ids(store: Path, *args: str) -> List[str]:
    r = run_cli(["list", "--store", str(store), "--json", "--limit", "0", *args])
    assert r.returncode == 0, r.stderr
    return [json.loads(line)["event"]["event_id"] for line in r.stdout.splitlines()]


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


FILTERS = [
    ([], lambda r: True),
    (["--actor", "user-048"], lambda r: r["actor_id"] == "user-048"),
    (["--category", "admin", "--action", "project.*"],
     lambda r: r["category"] == "admin" and r["action"].startswith("project.")),
    (["--action", "*.export"], lambda r: r["action"].endswith(".export")),
    (["--outcome", "blocked"], lambda r: r["outcome"] == "blocked"),
    (["--category", "security", "--outcome", "failure"],
     lambda r: r["category"] == "security" and r["outcome"] == "failure"),
    (["--model", "gpt-4o"], lambda r: r["gen_ai_request_model"] == "gpt-4o"),
    (["--tenant", "globex", "--category", "inference"],
     lambda r: r["tenant"] == "globex" and r["category"] == "inference"),
    (["--from", "2026-01-05T02:30:00Z", "--to", "2026-01-05T04:00:00Z"],
     lambda r: utc("2026-01-05T02:30:00") <= r["received_at"] < utc("2026-01-05T04:00:00")),
]


@pytest.mark.parametrize("args,pred", FILTERS, ids=[" ".join(a) or "all" for a, _ in FILTERS])
def test_list_returns_exactly_the_matching_events(base_store, rows, args, pred):
    want = {r["event_id"] for r in rows if pred(r)}
    assert want, f"the generated store should have events matching {args}"
    got = list_ids(base_store, *args)
    assert len(got) == len(set(got)), "an event was listed twice"
    assert set(got) == want


def test_list_subject_finds_actor_and_target(base_store, rows):
    # A data-subject access request: events by the subject and events acting on it.
    targets = {r["target_id"] for r in rows if r["target_id"]}
    actors = {r["actor_id"] for r in rows if r["actor_id"]}
    subject = sorted(actors & targets)[0] if actors & targets else sorted(targets)[0]
    want = {r["event_id"] for r in rows if subject in (r["actor_id"], r["target_id"])}
    assert set(list_ids(base_store, "--subject", subject)) == want


def test_list_is_in_time_order_within_each_hour(base_store, rows):
    r = run_cli(["list", "--store", str(base_store), "--json", "--limit", "0"])
    assert r.returncode == 0, r.stderr
    listed = [json.loads(line) for line in r.stdout.splitlines()]
    keys = [(rec["received_at"][:13], rec["event"]["time"]) for rec in listed]
    assert keys == sorted(keys)
    assert len(listed) == len(rows)


def test_list_table_and_limit(base_store):
    r = run_cli(["list", "--store", str(base_store), "--limit", "5", "--category", "admin"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["TIME", "TENANT", "ACTOR", "CATEGORY"]
    assert len(lines) == 6
    assert all(" admin " in line for line in lines[1:])
    assert "more match" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--category", "inferenc"], "inference"),
    (["--outcome", "ok"], "success"),
    (["--from", "2026-01-06", "--to", "2026-01-05"], "--from must be before --to"),
    (["--from", "yesterday"], "--from"),
    (["--tenant", "../etc"], "--tenant"),
])
def test_list_bad_input_is_a_usage_error(base_store, args, message):
    r = run_cli(["list", "--store", str(base_store), *args])
    assert r.returncode == 2, r.stdout
    assert message in r.stderr
    assert r.stdout == ""


def test_show_prints_the_stored_row(base_store, rows):
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        r = run_cli(["show", row["event_id"], "--store", str(base_store), "--json"])
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        rec = shown["record"]
        assert rec["event"]["event_id"] == row["event_id"]
        assert rec["event"]["action"] == row["action"]
        assert rec["chain_id"] == row["chain_id"] and rec["seq"] == row["seq"]
        assert rec["hash"] == row["hash"].hex() and rec["prev_hash"] == row["prev_hash"].hex()
        assert shown["path"].startswith(f"tenant={row['tenant']}/")
        text = run_cli(["show", row["event_id"], "--store", str(base_store)])
        assert text.returncode == 0, text.stderr
        assert f"event {row['event_id']}" in text.stdout
        assert row["action"] in text.stdout
        assert row["hash"].hex() in text.stdout


def test_show_unknown_or_malformed_id(base_store):
    r = run_cli(["show", "019b8b74-0000-7000-8000-000000000000", "--store", str(base_store)])
    assert r.returncode == 2
    assert "no event 019b8b74-0000-7000-8000-000000000000" in r.stderr
    r = run_cli(["show", "not-a-uuid", "--store", str(base_store)])
    assert r.returncode == 2
    assert "not a UUID" in r.stderr


# --------------------------------------------------------------------------
# decrypt, end to end through the collector
# --------------------------------------------------------------------------

PROMPT = "CANARY-SEALED-PROMPT-4d1e: summarise patient 1234's chart"
AES_KEY = "11" * 32
HMAC_KEY = "22" * 32
TOKEN = "decrypt-test-token-0123456789abcdef"


def send_chat(endpoint: str) -> None:
    """One GenAI chat span from the real OpenTelemetry SDK, its prompt in clear."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True,
                                headers={"authorization": f"Bearer {TOKEN}"})
    provider = TracerProvider(resource=Resource.create({"service.name": "clinic-assistant"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("genai")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o")
        span.set_attribute("enduser.id", "dr-who")
        span.set_attribute("gen_ai.input.messages", json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]))
    provider.shutdown()


def wait_for_sealed_event(store: Path, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = run_cli(["list", "--store", str(store), "--json", "--limit", "0", "--category", "inference"])
        for line in r.stdout.splitlines():
            rec = json.loads(line)
            if rec["event"]["sealed_content"]:
                return rec["event"]["event_id"]
        time.sleep(0.5)
    raise AssertionError("the chat event did not reach the store")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    (d / "aes.hex").write_text(AES_KEY + "\n")
    (d / "wrong.hex").write_text("33" * 32 + "\n")
    (d / "token").write_text(TOKEN + "\n")
    policy = d / "policy.yaml"
    policy.write_text(
        "redaction:\n"
        "  rules:\n"
        "    - {field: gen_ai.input.messages, method: encrypt}\n"
        "  keys:\n"
        f"    hmac: {{active: hmac-e2e, keys: [{{id: hmac-e2e, key_hex: '{HMAC_KEY}'}}]}}\n"
        f"    encryption: {{active: aes-e2e, keys: [{{id: aes-e2e, key_file: '{d / 'aes.hex'}'}}]}}\n")
    return {"aes": d / "aes.hex", "wrong": d / "wrong.hex", "token": d / "token", "policy": policy}


def test_decrypt_records_the_access_before_showing_the_content(tmp_path, keys):
    if not os.access(collector_bin(), os.X_OK):
        pytest.fail(f"collector binary not found at {collector_bin()}")
    c = Collector(tmp_path, sets=[
        f"policy.file={keys['policy']}",
        "receivers.auth.tokens=[{name: clinic, tenant: clinic, token: %s}]" % TOKEN,
    ]).start()
    try:
        send_chat(c.grpc)
        event_id = wait_for_sealed_event(c.store)
        store = str(c.store)
        auth = ["--token-file", str(keys["token"])]

        # The collector cannot be reached: the access cannot be recorded, nothing is shown.
        r = run_cli(["decrypt", event_id, "--store", store, "--key", str(keys["aes"]),
                     "--reason", "unreachable", "--collector", "http://127.0.0.1:9", "--timeout-secs", "2"])
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "could not be recorded" in r.stderr
        assert "CANARY" not in r.stdout + r.stderr

        # No token: the collector refuses the access event, so nothing is shown either.
        r = run_cli(["decrypt", event_id, "--store", store, "--key", str(keys["aes"]),
                     "--reason", "no token", "--collector", c.grpc, "--timeout-secs", "5"])
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "CANARY" not in r.stdout

        # A wrong key: refused, and the failed attempt is recorded.
        r = run_cli(["decrypt", event_id, "--store", store, "--key", f"aes-e2e={keys['wrong']}",
                     "--reason", "INC-7 wrong key", "--actor", "mallory", "--collector", c.grpc, *auth])
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "CANARY" not in r.stdout
        assert "recorded" in r.stderr

        # The right key over gRPC, the key file given without its id.
        r = run_cli(["decrypt", event_id, "--store", store, "--key", str(keys["aes"]),
                     "--reason", "INC-7 review", "--actor", "alice", "--collector", c.grpc, *auth])
        assert r.returncode == 0, r.stderr
        assert PROMPT in r.stdout
        assert "gen_ai.input.messages (key aes-e2e)" in r.stdout
        assert "access recorded as event" in r.stderr

        # The policy file's keyring, over OTLP/HTTP, as JSON.
        r = run_cli(["decrypt", event_id, "--store", store, "--policy", str(keys["policy"]), "--json",
                     "--reason", "DSAR-17", "--actor", "bob", "--collector", c.http, "--protocol", "http", *auth])
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["event_id"] == event_id
        assert [f["field"] for f in out["fields"]] == ["gen_ai.input.messages"]
        assert PROMPT in out["fields"][0]["text"]
        access_ids = {out["access_event_id"]}

        # Usage errors name what is wrong.
        r = run_cli(["decrypt", event_id, "--store", store, "--key", str(keys["aes"]), "--reason", "x",
                     "--field", "gen_ai.output.messages", "--collector", c.grpc, *auth])
        assert r.returncode == 2 and "no such sealed field" in r.stderr
        r = run_cli(["decrypt", event_id, "--store", store, "--reason", "x", "--collector", c.grpc, *auth])
        assert r.returncode == 2 and "no key given" in r.stderr
    finally:
        assert c.stop() == 0, c.log_text()

    # Every recorded access is in the store, in the clinic tenant's chain, with who, why and outcome.
    r = run_cli(["list", "--store", str(c.store), "--json", "--limit", "0",
                 "--category", "data_access", "--action", "audit.content.decrypt"])
    assert r.returncode == 0, r.stderr
    accesses = [json.loads(line)["event"] for line in r.stdout.splitlines()]
    summary = sorted((e["actor"]["id"], e["outcome"], e["attributes"]["otel_audit.decrypt.reason"]) for e in accesses)
    assert summary == [("alice", "success", "INC-7 review"), ("bob", "success", "DSAR-17"),
                       ("mallory", "failure", "INC-7 wrong key")], summary
    for e in accesses:
        assert e["tenant"] == "clinic"
        assert e["target"] == {"type": "audit_event", "id": event_id}
        assert e["attributes"]["otel_audit.decrypt.fields"] == "gen_ai.input.messages"
        assert e["attributes"]["otel_audit.decrypt.key_ids"] == "aes-e2e"
    assert access_ids <= {e["event_id"] for e in accesses}
    # The prompt never reached the store, the WAL or the log in clear.
    assert find_canaries(["CANARY-SEALED-PROMPT-4d1e"], c.store, c.wal, c.log) == []
    code, report, err = verify_json(c.store)
    assert code == 0, (report, err)
