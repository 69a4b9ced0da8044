-- 014_metrics_rebuild: the first computation loads the metric tables in bulk.
--
-- A full refresh that finds the referral metric tables empty (the first refresh, or after an
-- operator emptied them) has nothing to compare its results with. It writes them straight into
-- the tables, whose indexes it drops first and builds again at the end, instead of into temporary
-- tables that are then compared and copied row by row in key order. Each source's first referral
-- is read through the referrals' (source_id, referred_at) index, and gone-quiet sources are one
-- ordered pass over the sources' periods (the next period with referrals, by a window) instead of
-- an anti-join of every period with the one before. The figures are those of 009's computation:
-- a full refresh after this one finds nothing to change (the tests check it).
-- The tables stay locked for readers until the computation commits; they were empty before it.
-- If a reader holds one of them when the refresh starts, the refresh does not wait for it: it takes
-- 009's path, which compares (with nothing to compare, every row is new) and locks nobody out.
-- 012's refresh is unchanged: the function it calls, outreach_metrics_recompute, is now the choice
-- between the two, and 009's computation is outreach_metrics_compare.

-- Whether the referral metric tables are empty (as before a first refresh).
CREATE FUNCTION outreach_metrics_empty() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM metric_referrals) AND NOT EXISTS (SELECT 1 FROM metric_new_sources)
       AND NOT EXISTS (SELECT 1 FROM metric_quiet_sources) AND NOT EXISTS (SELECT 1 FROM metric_coordinators)
       AND NOT EXISTS (SELECT 1 FROM metric_service_lines)
$$;

-- Drops the indexes of tbl, its primary key included; returns the statements that build them again.
CREATE FUNCTION outreach_metrics_drop_indexes(tbl regclass) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    stmts text[] := '{}';
    r record;
BEGIN
    FOR r IN SELECT c.conname, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c
              WHERE c.conrelid = tbl AND c.contype IN ('p', 'u') ORDER BY c.conname LOOP
        stmts := stmts || format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, r.conname, r.def);
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', tbl, r.conname);
    END LOOP;
    FOR r IN SELECT i.indexrelid::regclass AS idx, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
              WHERE i.indrelid = tbl ORDER BY 1 LOOP
        stmts := stmts || r.def;
        EXECUTE format('DROP INDEX %s', r.idx);
    END LOOP;
    RETURN stmts;
END $$;

-- The full computation into empty tables, for outreach_metrics_refresh (which has set
-- metric_source_owner). Returns what outreach_metrics_compare returns, or a NULL run_id, having done
-- nothing, when the tables are not empty or a reader holds one of them.
CREATE FUNCTION outreach_metrics_rebuild(OUT run_id bigint, OUT periods integer, OUT rows_changed bigint,
                                         OUT phases text)
LANGUAGE plpgsql SET TimeZone = 'UTC' SET work_mem = '256MB' SET maintenance_work_mem = '512MB' SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_started timestamptz := clock_timestamp();
    v_t timestamptz := clock_timestamp();
    v_today date := v_started::date;
    v_from date;
    v_lo date;
    v_hi date;
    v_n bigint;
    v_took text;
    v_build text[];
    v_kind text;
    v_stmt text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('outreach_metrics_refresh'));
    IF NOT outreach_metrics_empty() THEN
        RETURN;
    END IF;
    -- The tables it drops the indexes of, if they can be had at once: a reader holding one (an open
    -- dashboard transaction, a backup) means the comparing computation, rather than a wait that
    -- would hold up every other reader and the writers of the sources.
    BEGIN
        LOCK TABLE metric_referrals, metric_new_sources, metric_quiet_sources IN ACCESS EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE NOTICE 'metrics: a reader holds the metric tables; the full computation compares instead';
        RETURN;
    END;
    SET LOCAL client_min_messages = warning;
    DROP TABLE IF EXISTS mp_kinds, mp_periods, mp_open, fresh;
    v_build := outreach_metrics_drop_indexes('metric_referrals') || outreach_metrics_drop_indexes('metric_new_sources')
            || outreach_metrics_drop_indexes('metric_quiet_sources');
    DELETE FROM metric_dirty_days;
    DELETE FROM metric_dirty_sources;
    rows_changed := 0;

    -- 1. Each source's first referral: one index probe per source.
    DELETE FROM metric_source_first;
    INSERT INTO metric_source_first
    SELECT s.id, f.referred_at, f.service_line FROM referral_sources s
     CROSS JOIN LATERAL (SELECT r.referred_at, r.service_line FROM referrals r WHERE r.source_id = s.id
                          ORDER BY r.referred_at, r.id LIMIT 1) f;
    ANALYZE metric_source_first;
    phases := 'first referrals ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 2. Every period from the earliest row to today (as 009 for a full refresh).
    CREATE TEMP TABLE mp_kinds (kind, step) ON COMMIT DROP AS
    VALUES ('day', interval '1 day'), ('week', interval '1 week'), ('month', interval '1 month'),
           ('quarter', interval '3 months');
    ANALYZE mp_kinds;
    SELECT least(
        (SELECT min(referred_at)::date FROM referrals), (SELECT min(service_date) FROM encounters),
        (SELECT min(scheduled_at)::date FROM activities), (SELECT min(completed_at)::date FROM activities),
        (SELECT min(opened_at)::date FROM cases), (SELECT min(period_start) FROM metric_activity),
        (SELECT min(period_start) FROM metric_cases), v_today) INTO v_from;
    CREATE TEMP TABLE mp_periods ON COMMIT DROP AS
    WITH starts AS (
        SELECT DISTINCT k.kind, k.step, date_trunc(k.kind, d)::date AS start
          FROM mp_kinds k, generate_series(v_from, v_today, interval '1 day') d)
    SELECT kind, start, (start + step)::date AS stop, (start - step)::date AS prev,
           least((start + step)::timestamptz, v_started) AS at
      FROM starts;
    CREATE UNIQUE INDEX ON mp_periods (kind, start);
    ANALYZE mp_periods;
    SELECT count(*), min(start), max(stop) INTO periods, v_lo, v_hi FROM mp_periods;

    -- 3. Referrals and revenue per source, service line and day, up to today.
    INSERT INTO metric_referrals
    SELECT 'day', day, source_id, service_line, sum(n)::integer, sum(cents)::bigint FROM (
        SELECT r.referred_at::date AS day, r.source_id, r.service_line, count(*) AS n, 0::numeric AS cents
          FROM referrals r WHERE r.referred_at < v_today + 1
         GROUP BY 1, 2, 3
        UNION ALL
        SELECT e.service_date, r.source_id, r.service_line, 0, sum(e.amount_cents)
          FROM encounters e JOIN referrals r ON r.id = e.referral_id
         WHERE e.service_date < v_today + 1
         GROUP BY 1, 2, 3) x
     GROUP BY 2, 3, 4;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    ANALYZE metric_referrals;
    phases := phases || ', referral days ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- ... weeks and months as sums of their days, quarters as sums of their months.
    FOREACH v_kind IN ARRAY '{week,month,quarter}'::text[] LOOP
        INSERT INTO metric_referrals
        SELECT v_kind, date_trunc(v_kind, m.period_start)::date, m.source_id, m.service_line, sum(m.referrals)::integer,
               sum(m.revenue_cents)::bigint
          FROM metric_referrals m
         WHERE m.period_kind = CASE v_kind WHEN 'quarter' THEN 'month' ELSE 'day' END
         GROUP BY 2, 3, 4;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        rows_changed := rows_changed + v_n;
    END LOOP;
    ANALYZE metric_referrals;
    phases := phases || ', referral rollups ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 4. New sources: the first referral ever falls in the period.
    INSERT INTO metric_new_sources
    SELECT p.kind, p.start, f.source_id, f.service_line
      FROM metric_source_first f CROSS JOIN mp_kinds k
      JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, f.first_at)::date;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;

    -- 5. Gone quiet: referred in a period, not in the next one (which has begun by today).
    INSERT INTO metric_quiet_sources
    SELECT kind, next, source_id, n FROM (
        SELECT m.period_kind AS kind, m.source_id, (m.period_start + k.step)::date AS next,
               sum(m.referrals)::integer AS n,
               lead(m.period_start) OVER (PARTITION BY m.period_kind, m.source_id ORDER BY m.period_start) AS following
          FROM metric_referrals m JOIN mp_kinds k ON k.kind = m.period_kind
         WHERE m.referrals > 0
         GROUP BY m.period_kind, m.source_id, m.period_start, k.step) x
     WHERE next <= v_today AND following IS DISTINCT FROM next;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    phases := phases || ', new and quiet ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 6. Per coordinator (the source's owner now) and service line; per service line, their sum.
    INSERT INTO metric_coordinators
    SELECT kind, start, coordinator_id, service_line, sum(n)::integer, sum(cents)::bigint, sum(srcs)::integer,
           sum(news)::integer FROM (
        SELECT m.period_kind AS kind, m.period_start AS start, o.coordinator_id, m.service_line,
               sum(m.referrals) AS n, sum(m.revenue_cents) AS cents, count(*) FILTER (WHERE m.referrals > 0) AS srcs,
               0 AS news
          FROM metric_referrals m JOIN metric_source_owner o USING (source_id)
         GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT m.period_kind, m.period_start, o.coordinator_id, m.service_line, 0, 0, 0, count(*)
          FROM metric_new_sources m JOIN metric_source_owner o USING (source_id)
         GROUP BY 1, 2, 3, 4) x
     GROUP BY 1, 2, 3, 4;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    INSERT INTO metric_service_lines
    SELECT period_kind, period_start, service_line, sum(referrals)::integer, sum(revenue_cents)::bigint,
           sum(referring_sources)::integer, sum(new_sources)::integer
      FROM metric_coordinators GROUP BY 1, 2, 3;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    ANALYZE metric_coordinators;
    ANALYZE metric_service_lines;
    phases := phases || ', coordinators and lines ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    SELECT x.changed, x.took INTO v_n, v_took
      FROM outreach_metrics_activity_cases(true, v_lo, v_hi, '{day,week,month,quarter}') x;
    rows_changed := rows_changed + v_n;
    phases := phases || ', ' || v_took;
    v_t := clock_timestamp();

    -- 7. Goals, from the daily figures over each goal's own period.
    CREATE TEMP TABLE fresh ON COMMIT DROP AS
    SELECT g.id, g.service_line, g.metric, g.period_start, g.period_end, v.value, g.target,
           CASE WHEN g.target > 0 THEN round(100 * v.value / g.target, 1) END AS percent
      FROM outreach_goals g CROSS JOIN LATERAL (SELECT outreach_metrics_goal_value(g) AS value) v;
    rows_changed := rows_changed + outreach_metrics_goals_apply();
    phases := phases || ', goals ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 8. The indexes, built once over all the rows.
    FOREACH v_stmt IN ARRAY v_build LOOP
        EXECUTE v_stmt;
    END LOOP;
    ANALYZE metric_new_sources;
    ANALYZE metric_quiet_sources;
    phases := phases || ', indexes ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';

    INSERT INTO metric_runs (scope, as_of, periods, rows_changed, started_at, finished_at, phases)
    VALUES ('full', v_started, periods, rows_changed, v_started, clock_timestamp(), phases)
    RETURNING id INTO run_id;
    DROP TABLE mp_periods, mp_kinds;
END $$;

-- 009's computation keeps its work: a full one over figures already kept, a single period.
ALTER FUNCTION outreach_metrics_recompute(text, date) RENAME TO outreach_metrics_compare;

-- What 012's outreach_metrics_refresh calls: a full computation into empty tables is a bulk load when
-- it can have them, everything else 009's computation.
CREATE FUNCTION outreach_metrics_recompute(p_kind text DEFAULT NULL, p_start date DEFAULT NULL,
                                           OUT run_id bigint, OUT periods integer, OUT rows_changed bigint,
                                           OUT phases text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF p_kind = 'full' THEN
        SELECT * INTO run_id, periods, rows_changed, phases FROM outreach_metrics_rebuild();
        IF run_id IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    SELECT * INTO run_id, periods, rows_changed, phases FROM outreach_metrics_compare(p_kind, p_start);
END $$;
