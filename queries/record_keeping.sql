-- record_keeping.sql: one record per use of the AI system, in the spirit of EU AI Act Art. 12.
--
-- QUESTION
--   For each use of the system (each model call) in a period: when it started
--   and ended, which system version and model served it, who used it, what
--   input it was given (by reference: the digest of the input, not the input),
--   which reference data it drew on, what came of it, and who verified the
--   result. Art. 12(3) lists these for remote biometric identification systems:
--   (a) period of each use, (b) reference database, (c) input data, (d) persons
--   who verified the results; the same record serves any system's operation
--   monitoring (Art. 12(2), Art. 26(5)).
--
-- VARIABLES (all optional; see views.sql)
--   since, until   period [since, until) on the use's start time
--   tenant         only this tenant
--
-- RUN
--   duckdb -cmd "SET VARIABLE store = './audit-data'" -cmd ".read queries/views.sql" \
--          -cmd "SET VARIABLE since = '2026-01-01'" -csv -f queries/record_keeping.sql > uses.csv
--
-- WHAT IS A USE: one event of category `inference` (a chat, completion or
-- embeddings call). Tool calls and data access are not uses by themselves; a
-- use's retrievals appear in `reference_data` when they share its trace.
--
-- OUTPUT: one row per use, by start time. Column meanings and limits:
--   tenant, event_id    the use's audit event. With chain_id and seq it locates
--   chain_id, seq       the hash-chained record: `otel-audit prove <event_id>`
--                       proves that this row is in the store as signed.
--   use_start           `time`: when the call started. The otel-audit library
--                       stamps the start of the #[audit] span; an OpenTelemetry
--                       producer may stamp its log record when the call ended,
--                       then use_start is the end.
--   use_end             use_start + duration_ns; NULL when no duration was recorded.
--   duration_ms         duration_ns in milliseconds.
--   service_name, service_version
--                       the system (application) and its version.
--   provider, model, response_model
--                       gen_ai.provider.name, the requested model, the model
--                       that answered (a dated version or a fallback).
--   operation           gen_ai.operation.name (chat, text_completion, embeddings).
--   actor_id, actor_type, actor_role, actor_session
--                       who used the system, as which role, in which session.
--   conversation_id, trace_id
--                       to find the other events of the same conversation or
--                       request (tool calls, retrievals, reviews).
--   input_digest        hex digest of the input (content field
--                       'gen_ai.input.messages'): a reference to the input
--                       data, which is not stored. It proves which input was
--                       used when the input is produced later: recompute the
--                       HMAC with the key named in input_digest_key_id
--                       (docs/REDACTION.md). NULL when the producer recorded no
--                       input digest.
--   input_digest_algorithm, input_digest_key_id
--                       how the digest was made (hmac-sha256 + key id, or sha256).
--   input_sealed        true when an encrypted copy of the input is stored
--                       (sealed_content): the key holder can recover the input itself.
--   output_digest       hex digest of the output ('gen_ai.output.messages'),
--                       NULL when none (e.g. a blocked call produced no output).
--   reference_data      'target_type:target_id' of the data_access events
--                       (document.read, vector.search, ...) in the same trace:
--                       the reference data (collections, documents) the use
--                       retrieved from. Empty when none is recorded in the trace;
--                       retrievals not traced with the call cannot be linked.
--   outcome, safety_passed, safety_detectors
--                       what came of the use: success / failure / blocked, and
--                       the safety verdict (NULL = no check ran).
--   verified_by, verifier_roles, verified_at
--                       the persons who verified the result: the actors of
--                       successful governance events whose action ends in
--                       '.approve', '.verify' or '.review' and that either name
--                       the use as their target (target_id = the use's
--                       event_id) or belong to the use's trace and come after
--                       its start. verified_at is the first such event's time.
--                       The event model has no dedicated "verified by" field:
--                       empty lists / NULL mean NO VERIFICATION WAS RECORDED in
--                       this way, not that nobody looked. Approvals of a model
--                       or project in general (model.approve on a model id) are
--                       not verifications of one use's result; see admin_trail.sql.
WITH uses AS (
    SELECT *
    FROM audit_events
    WHERE category = 'inference'
      AND audit_in_scope(tenant, time, date)
),
-- Verification events are not limited to the period: a result may be reviewed later.
verifications AS (
    SELECT tenant, target_id, trace_id, actor_id, actor_role, time
    FROM audit_events
    WHERE category = 'governance'
      AND outcome = 'success'
      AND (action LIKE '%.approve' OR action LIKE '%.verify' OR action LIKE '%.review')
),
-- Two equality joins rather than one join on (target OR trace): each is a hash join.
verified AS (
    SELECT event_id,
           list_sort(list_distinct(list(verifier))) AS verified_by,
           list_sort(list_distinct(list(verifier_role))) AS verifier_roles,
           min(verified_at) AS verified_at
    FROM (
        SELECT u.event_id, v.actor_id AS verifier, v.actor_role AS verifier_role, v.time AS verified_at
        FROM uses u JOIN verifications v ON v.tenant = u.tenant AND v.target_id = u.event_id
        UNION ALL
        SELECT u.event_id, v.actor_id, v.actor_role, v.time
        FROM uses u JOIN verifications v ON v.tenant = u.tenant AND v.trace_id = u.trace_id AND v.time >= u.time
    ) AS links
    GROUP BY event_id
),
references_used AS (
    SELECT u.event_id,
           list_sort(list_distinct(list(concat_ws(':', d.target_type, d.target_id)))) AS reference_data
    FROM uses u
    JOIN audit_events d ON d.tenant = u.tenant AND d.trace_id = u.trace_id
    WHERE d.category = 'data_access' AND d.target_id IS NOT NULL
    GROUP BY u.event_id
)
SELECT
    u.tenant,
    u.event_id,
    u.chain_id,
    u.seq,
    u.time                                                               AS use_start,
    u.time + to_microseconds(u.duration_ns // 1000)                      AS use_end,
    round(u.duration_ns / 1e6, 3)                                        AS duration_ms,
    u.service_name,
    u.service_version,
    u.gen_ai_provider                                                    AS provider,
    u.gen_ai_request_model                                               AS model,
    u.gen_ai_response_model                                              AS response_model,
    u.gen_ai_operation                                                   AS operation,
    u.actor_id,
    u.actor_type,
    u.actor_role,
    u.actor_session,
    u.gen_ai_conversation_id                                             AS conversation_id,
    u.trace_id,
    audit_digest_hex(u.content_digests, 'gen_ai.input.messages')         AS input_digest,
    list_filter(u.content_digests, lambda d: d.field = 'gen_ai.input.messages')[1].algorithm AS input_digest_algorithm,
    list_filter(u.content_digests, lambda d: d.field = 'gen_ai.input.messages')[1].key_id    AS input_digest_key_id,
    len(list_filter(u.sealed_content, lambda s: s.field = 'gen_ai.input.messages')) > 0      AS input_sealed,
    audit_digest_hex(u.content_digests, 'gen_ai.output.messages')        AS output_digest,
    coalesce(r.reference_data, [])                                       AS reference_data,
    u.outcome,
    u.safety_passed,
    u.safety_detectors,
    coalesce(v.verified_by, [])                                          AS verified_by,
    coalesce(v.verifier_roles, [])                                       AS verifier_roles,
    v.verified_at
FROM uses u
LEFT JOIN verified v ON v.event_id = u.event_id
LEFT JOIN references_used r ON r.event_id = u.event_id
ORDER BY use_start, u.event_id;
