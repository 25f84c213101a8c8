-- model_usage.sql: which models are used, by whom, how much, and how fast?
--
-- QUESTION
--   Per UTC day, tenant, provider, model and actor: how many model calls were
--   made, how many did not succeed, how many input and output tokens they used,
--   and their latency (average and 95th percentile, in milliseconds). For cost
--   allocation, capacity planning and spotting a model or caller that degrades.
--
-- VARIABLES (all optional; see views.sql)
--   since, until   period [since, until) on the event time
--   tenant         only this tenant
--
-- RUN
--   duckdb -cmd "SET VARIABLE store = './audit-data'" -cmd ".read queries/views.sql" -f queries/model_usage.sql
--
-- WHAT COUNTS AS A CALL: one event of category `inference` (chat, completion,
-- embeddings). Other events may name a model too (an admin's `model.download`
-- carries the downloaded model in gen_ai_request_model) and are not calls.
--
-- OUTPUT: one row per (day, tenant, provider, model, response_model, actor_id)
--   day                the UTC date of the event time
--   provider           gen_ai.provider.name
--   model              gen_ai.request.model: what the caller asked for
--   response_model     gen_ai.response.model: what actually answered (a dated
--                      version, or a fallback); NULL when the provider did not say
--   calls              inference events
--   unsuccessful_calls calls whose outcome is not `success` (failure, blocked, denied)
--   input_tokens, output_tokens
--                      sums of gen_ai.usage.*_tokens; calls that did not report
--                      a count add nothing (NULL when none reported)
--   avg_latency_ms, p95_latency_ms
--                      duration_ns in milliseconds (3 decimals): the mean, and
--                      the 95th percentile interpolated between the two nearest
--                      calls (quantile_cont); calls without a duration are left
--                      out of both. With few calls in a group the p95 is close to
--                      the maximum: read it together with `calls`.
SELECT
    CAST(time AT TIME ZONE 'UTC' AS DATE)                    AS day,
    tenant,
    gen_ai_provider                                          AS provider,
    gen_ai_request_model                                     AS model,
    gen_ai_response_model                                    AS response_model,
    actor_id,
    count(*)                                                 AS calls,
    count(*) FILTER (WHERE outcome <> 'success')             AS unsuccessful_calls,
    CAST(sum(gen_ai_input_tokens) AS BIGINT)                 AS input_tokens,
    CAST(sum(gen_ai_output_tokens) AS BIGINT)                AS output_tokens,
    round(avg(duration_ns) / 1e6, 3)                         AS avg_latency_ms,
    round(quantile_cont(duration_ns, 0.95) / 1e6, 3)         AS p95_latency_ms
FROM audit_events
WHERE category = 'inference'
  AND audit_in_scope(tenant, time, date)
GROUP BY ALL
ORDER BY day, tenant, provider NULLS LAST, model NULLS LAST, response_model NULLS LAST, actor_id NULLS LAST;
