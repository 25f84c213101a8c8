"""End to end through the real collector binary.

- otel-audit's own `#[audit]` examples -> collector (gRPC and HTTP) -> store -> `otel-audit verify` -> DuckDB;
- a real third-party client (Python opentelemetry-sdk + OTLP exporters, gRPC and HTTP) sending GenAI
  spans whose prompts hold canary secrets: typed columns filled, no canary in any byte of the store,
  the WAL or the collector's log;
- bad input over HTTP gets the right status and a message naming the problem, and the collector stays up;
- bearer tokens: missing/wrong refused, a tenant's token cannot write into another tenant.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import duckdb
import pytest

from collector import Collector, collector_bin, find_canaries
from conftest import bin_path, verify_json

CANARIES = [
    "CANARY-PROMPT-7f3a9c",
    "CANARY-COMPLETION-51be",
    "sk-canary0123456789abcdefABCDEF",
    "jane.canary@example.com",
]


@pytest.fixture(scope="module", autouse=True)
def _binaries():
    if not os.access(collector_bin(), os.X_OK):
        pytest.fail(f"collector binary not found at {collector_bin()}: cargo build -p otel-audit-collector")


def query(store: Path, sql: str) -> List[tuple]:
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW audit_events AS SELECT * FROM read_parquet('{store}/**/*.parquet', hive_partitioning = true)"
    )
    return con.execute(sql).fetchall()


def assert_intact(store: Path) -> dict:
    code, report, stderr = verify_json(store)
    assert code == 0, (report, stderr)
    return report


# --------------------------------------------------------------------------- third-party SDK


def send_genai_spans(endpoint: str, protocol: str, n_chats: int, service: str,
                     headers: Optional[Dict[str, str]] = None) -> Tuple[bool, List[Tuple[str, str]]]:
    """Sends n_chats GenAI chat spans (prompts hold canaries), one tool span, one error span and one
    plain HTTP span (not audit data) through the real OpenTelemetry SDK. Returns (flushed, ids)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", headers=headers)
    resource = Resource.create({
        "service.name": service,
        "service.version": "2.4.1",
        "deployment.environment.name": "e2e",
    })
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    tracer = provider.get_tracer("openai-instrumentation-like")
    ids = []
    for i in range(n_chats):
        with tracer.start_as_current_span("chat gpt-4o") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            span.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            span.set_attribute("gen_ai.usage.input_tokens", 100 + i)
            span.set_attribute("gen_ai.usage.output_tokens", 20 + i)
            span.set_attribute("gen_ai.request.temperature", 0.2)
            span.set_attribute("gen_ai.conversation.id", f"conv-{i % 3}")
            span.set_attribute("enduser.id", f"user-{i % 4}")
            span.set_attribute("gen_ai.input.messages", json.dumps([
                {"role": "user", "parts": [{"type": "text", "content": f"{CANARIES[0]} my key is {CANARIES[2]}"}]}
            ]))
            span.set_attribute("gen_ai.output.messages", json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": CANARIES[1]}]}
            ]))
            span.set_attribute("app.note", f"contact {CANARIES[3]}")
            ctx = span.get_span_context()
            ids.append((format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")))
    with tracer.start_as_current_span("execute_tool lookup_order") as span:
        span.set_attribute("gen_ai.operation.name", "execute_tool")
        span.set_attribute("gen_ai.tool.name", "lookup_order")
        span.set_attribute("gen_ai.tool.call.arguments", json.dumps({"order": CANARIES[0]}))
        ctx = span.get_span_context()
        ids.append((format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")))
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o")
        span.set_attribute("error.type", "RateLimitError")
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
        ctx = span.get_span_context()
        ids.append((format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")))
    with tracer.start_as_current_span("GET /healthz") as span:
        span.set_attribute("http.request.method", "GET")
    flushed = provider.force_flush(30_000)
    provider.shutdown()
    return flushed, ids


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_python_sdk_genai_spans_become_typed_events_and_no_canary_reaches_disk(tmp_path, protocol):
    c = Collector(tmp_path).start()
    try:
        endpoint = c.grpc if protocol == "grpc" else c.http
        flushed, ids = send_genai_spans(endpoint, protocol, 25, f"py-chat-{protocol}")
        assert flushed
        accepted = c.metric_sum("otel_audit_events_accepted_total")
        assert accepted >= 27, c.metrics()
        assert c.metric_sum("otel_audit_records_unmapped_total") >= 1
    finally:
        assert c.stop() == 0, c.log_text()
    assert c.wal_segments() == [], "a graceful stop leaves the WAL empty"
    report = assert_intact(c.store)
    assert report["events_verified"] >= 27

    rows = query(c.store, f"""
        SELECT category, action, outcome, gen_ai_provider, gen_ai_request_model, gen_ai_response_model,
               gen_ai_input_tokens, gen_ai_output_tokens, actor_id, service_name, tenant, trace_id, span_id
        FROM audit_events WHERE service_name = 'py-chat-{protocol}' ORDER BY seq""")
    assert len(rows) == 27, rows
    chats = [r for r in rows if r[1] == "gen_ai.chat" and r[2] == "success"]
    assert len(chats) == 25
    first = chats[0]
    assert first[0] == "inference"
    assert first[3:6] == ("openai", "gpt-4o", "gpt-4o-2024-08-06")
    assert first[6] == 100 and first[7] == 20
    assert first[8] == "user-0"
    assert first[10] == "default"
    tools = [r for r in rows if r[0] == "tool"]
    assert len(tools) == 1
    failures = [r for r in rows if r[2] == "failure"]
    assert len(failures) == 1
    def hexid(v):
        return v if isinstance(v, str) else bytes(v).hex()
    stored_ids = {(hexid(r[11]), hexid(r[12])) for r in rows}
    assert set(ids) <= stored_ids

    hits = find_canaries(CANARIES, c.store, c.wal, c.log)
    assert hits == [], hits


# --------------------------------------------------------------------------- our own layer


def example_bin(name: str) -> str:
    return str(Path(bin_path()).parent / "examples" / name)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_audit_examples_through_the_collector(tmp_path, protocol):
    c = Collector(tmp_path).start()
    try:
        endpoint = c.grpc if protocol == "grpc" else c.http
        for name in ["llm_chat", "agent_tools", "admin_actions"]:
            exe = example_bin(name)
            if not os.access(exe, os.X_OK):
                pytest.fail(f"{exe} missing: cargo test builds the examples (or cargo build --examples -p otel-audit)")
            r = subprocess.run([exe], capture_output=True, text=True, timeout=120, cwd=tmp_path, env={
                **os.environ,
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            })
            assert r.returncode == 0, r.stdout + r.stderr
    finally:
        assert c.stop() == 0, c.log_text()
    assert_intact(c.store)
    counts = dict(query(c.store, """
        SELECT service_name, count(*) FROM audit_events WHERE tenant = 'acme' GROUP BY ALL"""))
    assert sum(counts.values()) == 4 + 4 + 13, counts
    blocked = query(c.store, """
        SELECT safety_block_reason FROM audit_events WHERE outcome = 'blocked'""")
    assert blocked and blocked[0][0].startswith("prompt injection")
    admin = {r[0] for r in query(c.store, "SELECT action FROM audit_events WHERE tenant = 'acme'")}
    assert {"project.create", "user.delete", "license.upload"} <= admin
    own = {r[0] for r in query(c.store, "SELECT action FROM audit_events WHERE tenant = 'otel-audit'")}
    assert {"collector.start", "config.loaded", "collector.stop"} <= own
    hits = find_canaries(["jane.doe@example.com", "4111 1111 1111 1111", "DE89370400440532013000", "bob@example.com"],
                         c.store, c.wal, c.log)
    assert hits == [], hits


# --------------------------------------------------------------------------- bad input


def post(url: str, body: bytes, content_type: Optional[str], headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method="POST")
    if content_type:
        req.add_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def otlp_json_span(trace_id: str = "5b8efff798038103d269b633813fc60c", span_id: str = "eee19b7ec3c1b174") -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": span_id, "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": "1767600000000000000", "endTimeUnixNano": "1767600001500000000",
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
            ],
        }]}],
    }]}


def test_bad_input_gets_the_right_status_and_the_collector_stays_up(tmp_path):
    c = Collector(tmp_path, sets=["receivers.otlp.http.max_message_bytes=65536"]).start()
    try:
        url = c.http + "/v1/traces"
        status, _, body = post(url, b"\x0a\xff\xff\xff\xff\x0f garbage", "application/x-protobuf")
        assert status == 400, body
        status, _, body = post(url, b'{"resourceSpans": [ {', "application/json")
        assert status == 400 and b"json" in body.lower(), body
        status, _, body = post(url, b'{"resourceSpans": "\xff\xfe"}', "application/json")
        assert status == 400, body
        status, _, body = post(url, b"hello", "text/plain")
        assert status == 415, body
        status, _, body = post(url, b"\x00" * 70_000, "application/x-protobuf")
        assert status == 413, body
        bomb = gzip.compress(b"\x00" * 5_000_000)
        status, _, body = post(url, bomb, "application/x-protobuf", {"Content-Encoding": "gzip"})
        assert status == 413, body
        status, _, body = post(c.http + "/v1/metrics", b"", "application/x-protobuf")
        assert status == 404, body
        # A span without the attributes that make it audit data is dropped and counted.
        plain = otlp_json_span()
        plain["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = []
        status, _, body = post(url, json.dumps(plain).encode(), "application/json")
        assert status == 200, body
        # And a good one, as JSON and gzip, still goes through.
        good = json.dumps(otlp_json_span()).encode()
        status, headers, body = post(url, gzip.compress(good), "application/json", {"Content-Encoding": "gzip"})
        assert status == 200, body
        assert headers.get("content-type", "").startswith("application/json")
        assert c.healthy()
        assert c.metric_sum("otel_audit_events_accepted_total") >= 1
    finally:
        assert c.stop() == 0, c.log_text()
    rows = query(c.store, "SELECT gen_ai_request_model, gen_ai_input_tokens FROM audit_events WHERE service_name = 'json-client'")
    assert rows == [("gpt-4o", 12)]


# --------------------------------------------------------------------------- auth


def test_bearer_tokens_map_to_tenants_and_cannot_cross(tmp_path):
    acme_token = "acme-token-0123456789abcdef"
    globex_token = "globex-token-0123456789abcdef"
    c = Collector(tmp_path, sets=[
        "receivers.auth.tokens=[{name: acme-app, tenant: acme, token: %s}, {name: globex-app, tenant: globex, token_env: GLOBEX_TOKEN}]" % acme_token,
    ], env={"GLOBEX_TOKEN": globex_token}).start()
    try:
        url = c.http + "/v1/traces"
        body = json.dumps(otlp_json_span()).encode()
        status, headers, _ = post(url, body, "application/json")
        assert status == 401
        status, _, _ = post(url, body, "application/json", {"Authorization": "Bearer wrong-token-0123456789"})
        assert status == 401
        status, _, resp = post(url, body, "application/json", {"Authorization": f"Bearer {acme_token}"})
        assert status == 200, resp
        status, _, resp = post(url, json.dumps(otlp_json_span(span_id="eee19b7ec3c1b175")).encode(),
                               "application/json", {"Authorization": f"Bearer {globex_token}"})
        assert status == 200, resp
        # gRPC: the same tokens in metadata.
        flushed, _ = send_genai_spans(c.grpc, "grpc", 3, "grpc-acme", headers={"authorization": f"Bearer {acme_token}"})
        assert flushed
    finally:
        assert c.stop() == 0, c.log_text()
    tenants = dict(query(c.store, "SELECT service_name || '/' || tenant, count(*) FROM audit_events WHERE tenant <> 'otel-audit' GROUP BY ALL"))
    assert tenants == {"json-client/acme": 1, "json-client/globex": 1, "grpc-acme/acme": 5}, tenants
    assert_intact(c.store)


def test_validate_config_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers:\n  otlp:\n    grpc:\n      endpoint: localhost\n")
    r = subprocess.run([collector_bin(), "--config", str(bad), "--validate-config"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "receivers.otlp.grpc.endpoint" in r.stderr, r.stderr
    for config in sorted((Path(__file__).parents[2] / "collector-config").glob("*.yaml")):
        if config.name in ("otelcol-forward.yaml", "tls-auth.yaml"):
            continue  # not ours / needs certificate files on this machine
        r = subprocess.run([collector_bin(), "--config", str(config), "--validate-config"],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{config.name}: {r.stderr}"
