-- otel-audit: DuckDB views and macros over an audit store (docs/FORMAT.md).
-- For DuckDB >= 1.3 (the queries use `lambda x: ...`); tested with 1.5.5.
--
-- PARAMETER
--   The DuckDB variable `store` (SET VARIABLE, DuckDB >= 1.1): the store's root, a local
--   directory or an S3 prefix. Set it BEFORE reading this file, because a view
--   is bound (its files globbed, its columns read) when it is created:
--
--     SET VARIABLE store = '/var/lib/otel-audit/store';   -- local directory
--     SET VARIABLE store = 's3://audit-bucket/prod';       -- S3: LOAD httpfs and CREATE SECRET first
--     .read queries/views.sql
--
--   The views call getvariable('store') again each time a query uses them, so
--   `SET VARIABLE store = ...` later points them at another store with the same
--   columns. A trailing '/' is ignored.
--
-- WHAT THIS FILE DEFINES (temporary objects: nothing is written to an attached
-- database file, and a read-only database works)
--   audit_events        one row per stored event: the 46 columns of FORMAT.md §2
--                       plus the partition columns `date` (DATE) and `hour`
--                       (two-digit VARCHAR). What the ready queries read.
--   audit_stored_rows   the same rows exactly as stored in each file, without
--                       hive partitioning, plus `path` (relative to the store)
--                       and `file_row_number` (0-based row in the file). For
--                       integrity checks (chain_check.sql).
--   audit_in_scope(tenant, time, date)
--                       the optional filters the queries share: the variables
--                       `tenant`, `since` and `until`.
--   audit_required(name) the value of a variable that must be set, or an error.
--   audit_digest_hex(content_digests, field)
--                       the hex digest a row holds for one content field.
--
-- SETTING
--   The session time zone is set to UTC: the partitions (`date`, `hour`) are UTC,
--   and a period given without an offset (SET VARIABLE since = '2026-01-05') is
--   then read as UTC too. Timestamps print in UTC. The queries that bucket by day
--   convert to UTC themselves, so they do not depend on this setting.
SET TimeZone = 'UTC';

-- audit_events
--
-- Why the glob names the three levels (not '**'): top-level names starting
-- with '_' (the signed digests under _digests/, FORMAT.md §9) are not data, and
-- a store may hold other objects there.
--
-- Why hive_types: DuckDB infers partition types from the directory names it
-- finds. `hour` comes out VARCHAR when some hour has a leading zero ('03') but
-- BIGINT when every hour of the store is 10..23, so a query written for one
-- store would fail on another. Declaring the types makes `hour` always the
-- two-digit text of the directory name and `date` always a DATE. Filters on
-- them prune whole directories before any file is opened:
--   WHERE date >= DATE '2026-01-05' AND hour = '03'
--
-- `tenant`: the files have a `tenant` column and the directories a `tenant=`
-- key. DuckDB keeps one `tenant` column, at the file column's position, and
-- fills it from the DIRECTORY name (it does not compare the two). In an intact
-- store they are equal (FORMAT.md §1); a file moved to another tenant's
-- directory would show the directory's tenant here. audit_stored_rows shows the
-- stored value, and chain_check.sql reports such a file as `misplaced_file`.
-- Filters on `tenant` prune directories too.
--
-- union_by_name = false: every data file has exactly the columns of
-- FORMAT.md §2, in order; a file that does not is an error, not a silent NULL.
CREATE OR REPLACE TEMP VIEW audit_events AS
SELECT *
FROM read_parquet(
    rtrim(coalesce(getvariable('store'), '<store is not set: SET VARIABLE store = ''/path/or/s3://bucket/prefix''>'), '/')
        || '/tenant=*/date=*/hour=*/*.parquet',
    hive_partitioning = true,
    hive_types = {'date': DATE, 'hour': VARCHAR},
    union_by_name = false
);

-- audit_stored_rows
--
-- No hive partitioning, so every value is the one stored in the file (the
-- `tenant` column included); `path` is the file's path relative to the store
-- root, as otel-audit verify reports it, whatever the store's prefix looks like.
CREATE OR REPLACE TEMP VIEW audit_stored_rows AS
SELECT * EXCLUDE (filename),
       regexp_extract(filename, '(tenant=[^/]*/date=[^/]*/hour=[^/]*/[^/]*)$', 1) AS path
FROM read_parquet(
    rtrim(coalesce(getvariable('store'), '<store is not set: SET VARIABLE store = ''/path/or/s3://bucket/prefix''>'), '/')
        || '/tenant=*/date=*/hour=*/*.parquet',
    hive_partitioning = false,
    filename = true,
    file_row_number = true,
    union_by_name = false
);

-- audit_in_scope(tenant, time, date): true for a row inside the optional scope
--   variable `tenant`: only this tenant (unset: all tenants)
--   variable `since`:  events with time >= since (unset: no lower bound)
--   variable `until`:  events with time <  until (unset: no upper bound)
-- `since`/`until` take a TIMESTAMPTZ, a DATE or a text such as
-- '2026-01-05 08:00:00+00'; a text without an offset is in the session time
-- zone (UTC after this file).
--
-- The period is on `time` (when the action happened). The extra condition on the
-- partition `date` (the UTC date the collector RECEIVED the row) only lets
-- DuckDB skip directories: a row is received after it happened, so its
-- receive date is at least the day of `since`. One day of margin covers
-- client clocks that run ahead of the collector's; a row stamped more than a
-- day after its receipt and before `since`'s day is the only thing it could
-- wrongly skip. There is no upper bound on `date`: late deliveries (an
-- application's queue replayed hours later) are still found.
CREATE OR REPLACE TEMP MACRO audit_in_scope(row_tenant, row_time, row_date) AS
    row_tenant = coalesce(CAST(getvariable('tenant') AS VARCHAR), row_tenant)
    AND row_time >= coalesce(CAST(getvariable('since') AS TIMESTAMPTZ), '-infinity'::TIMESTAMPTZ)
    AND row_time < coalesce(CAST(getvariable('until') AS TIMESTAMPTZ), 'infinity'::TIMESTAMPTZ)
    AND row_date >= coalesce(CAST(CAST(getvariable('since') AS TIMESTAMPTZ) AS DATE) - 1, DATE '0001-01-01');

-- audit_required(name): the variable's value, or an error naming it (instead
-- of a query that silently matches nothing because the variable is NULL).
CREATE OR REPLACE TEMP MACRO audit_required(name) AS
    CASE WHEN getvariable(name) IS NULL
         THEN error('the variable ' || name || ' is not set: SET VARIABLE ' || name || ' = ''...'' first')
         ELSE getvariable(name)
    END;

-- audit_digest_hex(content_digests, field): lower-case hex of the digest the
-- row stores for `field` (e.g. 'gen_ai.input.messages'), NULL when there is
-- none. Digests are HMAC-SHA256 (or SHA-256) of content that is not stored: to
-- show that a given input was the one used, recompute the digest of the
-- candidate with the key named by the digest's key_id and compare
-- (docs/REDACTION.md).
CREATE OR REPLACE TEMP MACRO audit_digest_hex(digests, field_name) AS
    lower(hex(list_filter(digests, lambda d: d.field = field_name)[1].digest));
