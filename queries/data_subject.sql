-- data_subject.sql: everything the audit trail records about one person (or account, or object).
--
-- QUESTION
--   For a data subject access request (GDPR Art. 15) or an investigation: every
--   event in which the subject acted (actor_id) or was acted on (target_id),
--   in time order, across all tenants and categories, with the context each
--   event stores about them.
--
-- VARIABLES
--   subject   REQUIRED: the id as stored, e.g. SET VARIABLE subject = 'user-042';
--             the query stops with an error when it is not set.
--   since, until, tenant   optional, see views.sql
--
-- RUN
--   duckdb -cmd "SET VARIABLE store = './audit-data'" -cmd ".read queries/views.sql" \
--          -cmd "SET VARIABLE subject = 'user-042'" -f queries/data_subject.sql
--
-- LIMITS
--   - Exact match on actor_id and target_id only. Ids are stored as the
--     application sent them after redaction: if the redaction policy replaces
--     actor ids by an HMAC (docs/REDACTION.md), give the subject in that form.
--   - Attributes, error messages and other free text are not searched; content
--     (prompts, outputs) is not stored, only its digests (`digested_fields`)
--     or sealed (encrypted) copies (`sealed_fields`), which the key holder can
--     open.
--   - A person known under several ids (a user id and a service account) needs
--     one run per id.
--
-- OUTPUT: one row per matching event, by time
--   subject_as       'actor', 'target' or 'actor+target'
--   the event's who/what/when columns, and
--   details          the attributes as 'key=value' pairs joined by '; '
--   digested_fields  fields whose content is kept only as a digest
--   sealed_fields    fields whose content is kept encrypted
--   redacted_fields  fields that were redacted (method and detector are in the row)
--   event_id, chain_id, seq   where it is stored (`otel-audit prove <event_id>`)
SELECT
    time,
    tenant,
    CASE
        WHEN actor_id = audit_required('subject') AND target_id = audit_required('subject') THEN 'actor+target'
        WHEN actor_id = audit_required('subject') THEN 'actor'
        ELSE 'target'
    END                                                          AS subject_as,
    category,
    action,
    outcome,
    actor_id,
    actor_type,
    actor_role,
    actor_ip,
    actor_session,
    target_type,
    target_id,
    service_name,
    gen_ai_request_model                                         AS model,
    gen_ai_conversation_id                                       AS conversation_id,
    array_to_string(list_transform(map_entries(attributes), lambda e: e.key || '=' || e.value), '; ') AS details,
    list_transform(content_digests, lambda d: d.field)           AS digested_fields,
    list_transform(sealed_content, lambda s: s.field)            AS sealed_fields,
    list_transform(redactions, lambda r: r.field)                AS redacted_fields,
    event_id,
    chain_id,
    seq
FROM audit_events
WHERE (actor_id = audit_required('subject') OR target_id = audit_required('subject'))
  AND audit_in_scope(tenant, time, date)
ORDER BY time, event_id;
