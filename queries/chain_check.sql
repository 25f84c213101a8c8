-- chain_check.sql: are the hash chains linked, gapless and placed right? (pure SQL)
--
-- QUESTION
--   Within each chain (chain_id), ordered by seq: does every row's prev_hash
--   equal the hash of the row before it, do the seqs run without gaps and
--   without duplicates from the chain's first stored seq, and is every file in
--   the directory its rows belong to? One row per problem; NO ROWS WHEN THE
--   CHAINS ARE INTACT. A quick check an analyst can run with DuckDB alone, e.g.
--   before trusting the other queries' answers.
--
-- VARIABLES: none (the store, see views.sql).
--
-- RUN
--   duckdb -cmd "SET VARIABLE store = './audit-data'" -cmd ".read queries/views.sql" -f queries/chain_check.sql
--
-- READS audit_stored_rows: the values as stored in the files (no hive
-- partitioning, which would replace the stored tenant by the directory's).
--
-- OUTPUT: chain_id, seq, seq_end, kind, path, row, detail; by chain, seq, kind, path, row
--   kind = 'seq_gap'        seqs seq..seq_end are held by no row, between two
--                           stored rows of the chain (a deleted file, deleted
--                           rows). path/row: the row where the chain resumes.
--   kind = 'duplicate_seq'  two or more rows hold this seq (an inserted row, a
--                           copied file). path/row: the first copy by path; the
--                           detail lists all copies. (otel-audit verify tells
--                           the genuine copy from the inserted one.)
--   kind = 'broken_link'    this row's prev_hash is not the hash of any row
--                           holding seq - 1; for seq 0, prev_hash is not 32 zero
--                           bytes. A row altered and re-hashed (FORMAT.md §6)
--                           shows up here, at the row AFTER it.
--   kind = 'misplaced_file' rows of this file do not belong in its directory or
--                           name: stored tenant <> tenant=, UTC date/hour of
--                           received_at <> date=/hour=, or chain_id <> the
--                           name's chain. One row per file, at its first
--                           misplaced row. (audit_events shows such a file's
--                           rows under the DIRECTORY's tenant.)
--   seq_end is the last seq of a gap, else equal to seq. row is 0-based in the file.
--
-- WHAT THIS DOES NOT CHECK (otel-audit verify does; docs/FORMAT.md §6, §9):
--   - Row content. The row hash is not recomputed (the canonical encoding of
--     FORMAT.md §3 is not practical in SQL): a row altered WITHOUT re-hashing
--     still links and is not reported here.
--   - The ends of a chain. A chain may start above seq 0 (retention deletes the
--     oldest files, recording each deletion as a `retention.delete` event) and
--     its newest files may be missing; only the signed digests tell.
--   - Footers, file names' first_seq, unreadable files (DuckDB stops with an
--     error on a file it cannot read), objects that are not data files.
WITH stored AS (
    SELECT chain_id, seq, prev_hash, hash, tenant, received_at, path, file_row_number AS row
    FROM audit_stored_rows
),
-- One row per (chain, seq) present, with its first copy by (path, row).
seqs AS (
    SELECT chain_id, seq, copies, first_copy.path AS path, first_copy.row AS row, places
    FROM (
        SELECT chain_id, seq, count(*) AS copies,
               min({'path': path, 'row': row}) AS first_copy,
               string_agg(path || '#' || row, ', ' ORDER BY path, row) AS places
        FROM stored
        GROUP BY chain_id, seq
    ) AS grouped
),
gaps AS (
    SELECT chain_id, prev_seq + 1 AS seq, seq - 1 AS seq_end, 'seq_gap' AS kind, path, row,
           'seqs ' || (prev_seq + 1) || '..' || (seq - 1) || ' are missing: no row holds them' AS detail
    FROM (
        SELECT *, lag(seq) OVER (PARTITION BY chain_id ORDER BY seq) AS prev_seq
        FROM seqs
    ) AS ordered
    WHERE seq > prev_seq + 1
),
duplicates AS (
    SELECT chain_id, seq, seq AS seq_end, 'duplicate_seq' AS kind, path, row,
           copies || ' rows hold this seq: ' || places AS detail
    FROM seqs
    WHERE copies > 1
),
-- A row is linked when SOME row holding seq - 1 has the hash it names, so a
-- duplicated predecessor does not also break the link of a genuine row.
links AS (
    SELECT r.chain_id, r.seq, r.seq AS seq_end, 'broken_link' AS kind, r.path, r.row,
           'prev_hash ' || lower(hex(r.prev_hash)) || ' is not the hash of the row with seq ' || (r.seq - 1) AS detail
    FROM stored r
    JOIN stored p ON p.chain_id = r.chain_id AND p.seq = r.seq - 1
    GROUP BY r.chain_id, r.seq, r.path, r.row, r.prev_hash
    HAVING NOT bool_or(p.hash = r.prev_hash)
    UNION ALL
    SELECT chain_id, seq, seq, 'broken_link', path, row,
           'seq 0 has prev_hash ' || lower(hex(prev_hash)) || ', not 32 zero bytes'
    FROM stored
    WHERE seq = 0 AND prev_hash <> unhex(repeat('00', 32))
),
placed AS (
    SELECT *,
           regexp_extract(path, '^tenant=([^/]*)/', 1)                AS dir_tenant,
           regexp_extract(path, '/date=([^/]*)/', 1)                  AS dir_date,
           regexp_extract(path, '/hour=([^/]*)/', 1)                  AS dir_hour,
           regexp_extract(path, '/([^/]*)-[0-9]+\.parquet$', 1)       AS name_chain,
           -- UTC whatever the session's time zone: epoch microseconds -> naive UTC timestamp
           strftime(make_timestamp(epoch_us(received_at)), '%Y-%m-%d') AS row_date,
           strftime(make_timestamp(epoch_us(received_at)), '%H')       AS row_hour
    FROM stored
),
misplaced AS (
    SELECT chain_id, seq, seq AS seq_end, 'misplaced_file' AS kind, path, row,
           concat_ws('; ',
               CASE WHEN tenant <> dir_tenant THEN 'tenant ' || tenant || ' in tenant=' || dir_tenant END,
               CASE WHEN row_date <> dir_date OR row_hour <> dir_hour
                    THEN 'received ' || row_date || ' hour ' || row_hour || ' in date=' || dir_date || '/hour=' || dir_hour END,
               CASE WHEN chain_id <> name_chain THEN 'chain ' || chain_id || ' in a file named for ' || name_chain END
           ) AS detail
    FROM placed
    WHERE tenant <> dir_tenant OR row_date <> dir_date OR row_hour <> dir_hour OR chain_id <> name_chain
    -- one row per file: its first misplaced row
    QUALIFY row_number() OVER (PARTITION BY path ORDER BY row) = 1
)
SELECT chain_id, seq, seq_end, kind, path, row, detail
FROM (
    SELECT * FROM gaps
    UNION ALL SELECT * FROM duplicates
    UNION ALL SELECT * FROM links
    UNION ALL SELECT * FROM misplaced
) AS problems
ORDER BY chain_id, seq, kind, path, row;
