-- admin_trail.sql: who changed the platform and its audit trail, and how?
--
-- QUESTION
--   Every administrative event, in time order: project lifecycle, configuration
--   and settings changes, user management, licences, import and export, model
--   downloads, governance decisions (approvals, assignments, policies), and the
--   audit system's own operations (backups, retention deletions and legal holds,
--   collector start/stop). Each with who did it, from where, on what, with what
--   result and the recorded details (e.g. a setting's old and new value).
--
-- VARIABLES (all optional; see views.sql)
--   since, until   period [since, until) on the event time
--   tenant         only this tenant
--
-- RUN
--   duckdb -cmd "SET VARIABLE store = './audit-data'" -cmd ".read queries/views.sql" -f queries/admin_trail.sql
--
-- WHICH EVENTS: categories `admin`, `governance`, `compliance` and `system`
-- (FORMAT.md §2). Security (logins, access checks), data access and model use
-- are other questions (activity_by_actor.sql, safety.sql, model_usage.sql).
--
-- OUTPUT: one row per event, by time
--   area        a grouping of the action for reading and filtering, first match wins:
--                 backup              backup.*        (backup.completed / backup.failed: the
--                                                      collector's scheduled, verified copy)
--                 retention           retention.*     (retention.delete: a deleted file or
--                                                      digest, recorded before deleting;
--                                                      retention.hold: a legal hold kept it)
--                 collector lifecycle collector.*     (start, stop)
--                 user management     user.*
--                 licence             license.*
--                 configuration       config.*, settings.*, and changes to a project's
--                                     set-up: project.<what>.update (team, labels)
--                 project lifecycle   any other project.* (create, delete, archive)
--                 import/export       *.import, *.export (tasks, models)
--                 model download      model.download
--                 governance          any other governance action (model.approve,
--                                     model.assign, analytics.approve, policy.update)
--                 otherwise the category (admin, compliance, system)
--   model       gen_ai_request_model: for model.download, the model downloaded
--   details     the event's attributes as 'key=value' pairs joined by '; ', in
--               key order (already redacted by the collector), e.g.
--               'setting.new=true; setting.old=false' or the backup.* and
--               retention.* attributes. Empty when there are none.
--   event_id, chain_id, seq
--               where the event is stored: `otel-audit prove <event_id>` proves it.
SELECT
    time,
    tenant,
    CASE
        WHEN action LIKE 'backup.%'                              THEN 'backup'
        WHEN action LIKE 'retention.%'                           THEN 'retention'
        WHEN action LIKE 'collector.%'                           THEN 'collector lifecycle'
        WHEN action LIKE 'user.%'                                THEN 'user management'
        WHEN action LIKE 'license.%'                             THEN 'licence'
        WHEN action LIKE 'config.%' OR action LIKE 'settings.%'
          OR action LIKE 'project.%.update'                      THEN 'configuration'
        WHEN action LIKE 'project.%'                             THEN 'project lifecycle'
        WHEN action LIKE '%.import' OR action LIKE '%.export'    THEN 'import/export'
        WHEN action = 'model.download'                           THEN 'model download'
        WHEN category = 'governance'                             THEN 'governance'
        ELSE category
    END                                                          AS area,
    category,
    action,
    outcome,
    actor_id,
    actor_type,
    actor_role,
    actor_ip,
    target_type,
    target_id,
    gen_ai_request_model                                         AS model,
    error_type,
    error_message,
    array_to_string(list_transform(map_entries(attributes), lambda e: e.key || '=' || e.value), '; ') AS details,
    event_id,
    chain_id,
    seq
FROM audit_events
WHERE category IN ('admin', 'governance', 'compliance', 'system')
  AND audit_in_scope(tenant, time, date)
ORDER BY time, event_id;
