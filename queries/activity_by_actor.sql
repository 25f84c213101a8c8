-- activity_by_actor.sql: who did what, and when?
--
-- QUESTION
--   For a period: per actor, which actions they performed, how often, with
--   which results, on how many distinct objects, in which roles, and when they
--   first and last did so. The starting point of most audit questions
--   ("what did user-042 do last week?", "which service accounts export data?").
--
-- VARIABLES (all optional; set before running, see views.sql)
--   since   period start, inclusive, on the event time `time`  (e.g. '2026-01-05 00:00:00+00')
--   until   period end, exclusive                               (e.g. DATE '2026-01-12')
--   tenant  only this tenant
--
-- RUN
--   duckdb -cmd "SET VARIABLE store = './audit-data'" -cmd ".read queries/views.sql" \
--          -cmd "SET VARIABLE since = '2026-01-05'" -cmd "SET VARIABLE until = '2026-01-12'" \
--          -f queries/activity_by_actor.sql
--
-- OUTPUT: one row per (tenant, actor_id, actor_type, category, action)
--   events            events in the period
--   succeeded, failed, denied, blocked
--                     events per outcome (they add up to `events`)
--   distinct_targets  distinct target_id values acted on (NULL targets not counted)
--   roles             the distinct roles the actor acted in for this action
--   first_at, last_at earliest and latest event time (UTC)
-- Events without an actor (actor_id NULL) are grouped under actor_id NULL,
-- listed last: a producer that does not say who acted is itself worth seeing.
SELECT
    tenant,
    actor_id,
    actor_type,
    category,
    action,
    count(*)                                  AS events,
    count(*) FILTER (WHERE outcome = 'success') AS succeeded,
    count(*) FILTER (WHERE outcome = 'failure') AS failed,
    count(*) FILTER (WHERE outcome = 'denied')  AS denied,
    count(*) FILTER (WHERE outcome = 'blocked') AS blocked,
    count(DISTINCT target_id)                 AS distinct_targets,
    list_sort(list_distinct(list(actor_role))) AS roles,
    min(time)                                 AS first_at,
    max(time)                                 AS last_at
FROM audit_events
WHERE audit_in_scope(tenant, time, date)
GROUP BY tenant, actor_id, actor_type, category, action
ORDER BY tenant, actor_id NULLS LAST, actor_type NULLS LAST, category, action;
