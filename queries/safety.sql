-- safety.sql: whose requests tripped safety controls, which detectors fired, why were requests blocked?
--
-- QUESTION
--   Per actor and detector: how many events failed a safety check, how many
--   requests a safety or policy control blocked, for which reasons, with which
--   models, when, and which events they were (to pull them up one by one).
--
-- VARIABLES (all optional; see views.sql)
--   since, until   period [since, until) on the event time
--   tenant         only this tenant
--
-- RUN
--   duckdb -cmd "SET VARIABLE store = './audit-data'" -cmd ".read queries/views.sql" -f queries/safety.sql
--
-- WHICH EVENTS: any of
--   - safety_passed = false             a safety check ran and failed
--   - safety_detectors not empty        a detector triggered (also when the
--                                       event still passed, e.g. a warning)
--   - safety_block_reason set           the request was blocked, with a reason
--   - outcome = 'blocked'               stopped by a safety or policy control;
--                                       except category `compliance`, where
--                                       `blocked` is a legal hold keeping data
--                                       from deletion (`retention.hold`, see
--                                       admin_trail.sql), not a safety event.
--
-- OUTPUT: one row per (tenant, actor_id, actor_type, detector)
--   detector        one detector from safety_detectors. An event on which two
--                   detectors fired is counted in both rows; an event with no
--                   detector listed (blocked without one) has detector NULL.
--                   So sum(events) over an actor's rows can exceed the actor's
--                   number of flagged events: count distinct event_ids for that.
--   events          flagged events with this detector
--   failed_checks   of them, with safety_passed = false
--   blocked         of them, with outcome = 'blocked'
--   block_reasons   distinct safety_block_reason values
--   models          distinct requested models (tool calls have none)
--   first_at, last_at  earliest and latest event time (UTC)
--   event_ids       the events, by time
SELECT
    tenant,
    actor_id,
    actor_type,
    detector,
    count(*)                                           AS events,
    count(*) FILTER (WHERE safety_passed = false)      AS failed_checks,
    count(*) FILTER (WHERE outcome = 'blocked')        AS blocked,
    list_sort(list_distinct(list(safety_block_reason))) AS block_reasons,
    list_sort(list_distinct(list(gen_ai_request_model))) AS models,
    min(time)                                          AS first_at,
    max(time)                                          AS last_at,
    list(event_id ORDER BY time, event_id)             AS event_ids
FROM (
    SELECT *,
           unnest(CASE WHEN len(safety_detectors) = 0 THEN [NULL::VARCHAR] ELSE safety_detectors END) AS detector
    FROM audit_events
    WHERE (safety_passed = false
           OR len(safety_detectors) > 0
           OR safety_block_reason IS NOT NULL
           OR (outcome = 'blocked' AND category <> 'compliance'))
      AND audit_in_scope(tenant, time, date)
) AS flagged
GROUP BY tenant, actor_id, actor_type, detector
ORDER BY tenant, actor_id NULLS LAST, actor_type NULLS LAST, detector NULLS LAST;
