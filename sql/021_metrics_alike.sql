-- 021_metrics_alike: a full run counts its periods alike in every path.
--
-- metric_runs.periods of a full run is every day, week, month and quarter from the day of the
-- earliest record (referral, encounter, activity scheduled or completed, case opened) to today: the
-- periods that can hold figures. The bulk load (014) counted the periods from the earliest of those
-- days and of the activity and case rows kept; the comparing computation (009) counted every period
-- it went through, which also starts at the earliest row kept in the metric tables (whose weeks and
-- quarters begin before the earliest record) and takes in the days noted before it (a referral
-- written and deleted again): the same data gave a different count each way. Both still go through
-- those periods (so that what is kept there is emptied), and now both record the count above,
-- outreach_metrics_full_periods.
--
-- The functions restated below are those of 018 (outreach_metrics_compare, outreach_metrics_rebuild),
-- changed only where said above: each takes its first day from outreach_metrics_first_day and, for a
-- full run, records outreach_metrics_full_periods as its periods.

-- The day of the earliest record the figures are computed from, not after p_today.
CREATE FUNCTION outreach_metrics_first_day(p_today date) RETURNS date
LANGUAGE sql STABLE SET TimeZone = 'UTC' AS $$
    SELECT least(
        (SELECT min(referred_at)::date FROM referrals), (SELECT min(service_date) FROM encounters),
        (SELECT min(scheduled_at)::date FROM activities), (SELECT min(completed_at)::date FROM activities),
        (SELECT min(opened_at)::date FROM cases), p_today)
$$;

-- How many periods a full run computes: every day, week, month and quarter with a day from p_from to
-- p_to (both included).
CREATE FUNCTION outreach_metrics_full_periods(p_from date, p_to date) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((p_to - p_from + 1)
            + ((date_trunc('week', p_to::timestamp)::date - date_trunc('week', p_from::timestamp)::date) / 7 + 1)
            + ((extract(year FROM p_to) - extract(year FROM p_from)) * 12
               + extract(month FROM p_to) - extract(month FROM p_from) + 1)
            + ((extract(year FROM p_to) - extract(year FROM p_from)) * 4
               + extract(quarter FROM p_to) - extract(quarter FROM p_from) + 1))::integer
$$;

-- 009's computation: every period from the earliest data to today ('full'), or the one period of
-- p_kind ('day'/'week'/'month'/'quarter') that holds p_start, or (p_kind NULL) every period touched
-- since the last refresh, as of p_as_of (NULL: now). Serialized by an advisory lock; returns the
-- run's id, how many periods it recomputed (a full run: outreach_metrics_full_periods), how many rows
-- changed and the time each phase took.
CREATE OR REPLACE FUNCTION outreach_metrics_compare(p_kind text DEFAULT NULL, p_start date DEFAULT NULL,
                                         p_as_of timestamptz DEFAULT NULL, OUT run_id bigint,
                                         OUT periods integer, OUT rows_changed bigint, OUT phases text)
LANGUAGE plpgsql SET TimeZone = 'UTC' SET work_mem = '256MB' SET plan_cache_mode = 'force_custom_plan' SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_started timestamptz;
    v_t timestamptz;
    v_now timestamptz;
    v_today date;
    v_last timestamptz;
    v_scope text;
    v_first date;
    v_from date;
    v_lo date;
    v_hi date;
    v_n bigint;
    v_took text;
    v_all text[] := '{day,week,month,quarter}';
BEGIN
    IF p_kind IS NOT NULL AND p_kind NOT IN ('full', 'day', 'week', 'month', 'quarter') THEN
        RAISE EXCEPTION 'metrics: period kind must be day, week, month, quarter or full, not %', p_kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_kind IN ('day', 'week', 'month', 'quarter') AND p_start IS NULL THEN
        RAISE EXCEPTION 'metrics: a % needs its start date', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One refresh at a time; each statement below takes a fresh snapshot, so a refresh that waited
    -- here sees what the one before it wrote.
    PERFORM pg_advisory_xact_lock(hashtext('outreach_metrics_refresh'));
    v_started := clock_timestamp();
    v_t := v_started;
    v_now := coalesce(p_as_of, v_started);
    v_today := v_now::date;
    rows_changed := 0;
    SELECT max(as_of) INTO v_last FROM metric_runs WHERE scope <> 'period';
    v_scope := CASE WHEN p_kind = 'full' OR (p_kind IS NULL AND v_last IS NULL) THEN 'full'
                    WHEN p_kind IS NULL THEN 'incremental' ELSE 'period' END;

    SET LOCAL client_min_messages = warning;
    DROP TABLE IF EXISTS mp_days, mp_sources, mp_moved, mp_periods, mp_kinds, mp_open, f_ref, f_quiet, f_coord, f_line,
        fresh;
    CREATE TEMP TABLE mp_days (day date) ON COMMIT DROP;
    CREATE TEMP TABLE mp_sources (source_id bigint) ON COMMIT DROP;

    -- 1. What changed: noted days and sources (taken, so that the next refresh starts afresh), and
    -- for a refresh over time, every day from the last refresh to today (the periods that were
    -- current then are final now, and today's open cases and activities are counted as of now).
    IF v_scope <> 'period' THEN
        WITH d AS (DELETE FROM metric_dirty_days RETURNING day) INSERT INTO mp_days SELECT DISTINCT day FROM d;
    END IF;
    WITH s AS (DELETE FROM metric_dirty_sources RETURNING source_id)
    INSERT INTO mp_sources SELECT DISTINCT source_id FROM s;
    IF v_scope = 'full' THEN
        DELETE FROM mp_sources;
        INSERT INTO mp_sources SELECT id FROM referral_sources;
        -- From the earliest record, or the earliest row kept if that is earlier (to empty its periods).
        v_first := outreach_metrics_first_day(v_today);
        SELECT least(v_first, (SELECT min(period_start) FROM metric_referrals),
                     (SELECT min(period_start) FROM metric_activity), (SELECT min(period_start) FROM metric_cases))
          INTO v_from;
        INSERT INTO mp_days SELECT d::date FROM generate_series(v_from, v_today, interval '1 day') d;
    ELSIF v_scope = 'incremental' THEN
        INSERT INTO mp_days SELECT d::date FROM generate_series(v_last::date, v_today, interval '1 day') d;
    END IF;
    ANALYZE mp_sources;

    -- 2. First referrals of the sources that changed; a first referral that moved touches the
    -- periods it left and the ones it entered. A single period's refresh leaves those other
    -- periods to the next regular refresh.
    CREATE TEMP TABLE fresh ON COMMIT DROP AS
    SELECT DISTINCT ON (r.source_id) r.source_id, r.referred_at AS first_at, r.service_line
      FROM referrals r WHERE r.source_id IN (SELECT source_id FROM mp_sources)
     ORDER BY r.source_id, r.referred_at, r.id;
    ANALYZE fresh;
    CREATE TEMP TABLE mp_moved ON COMMIT DROP AS
    SELECT f.first_at::date AS day FROM fresh f LEFT JOIN metric_source_first t USING (source_id)
     WHERE (t.first_at, t.service_line) IS DISTINCT FROM (f.first_at, f.service_line)
    UNION
    SELECT t.first_at::date FROM metric_source_first t LEFT JOIN fresh f USING (source_id)
     WHERE t.source_id IN (SELECT source_id FROM mp_sources)
       AND (f.first_at, f.service_line) IS DISTINCT FROM (t.first_at, t.service_line);
    IF v_scope = 'period' THEN
        INSERT INTO metric_dirty_days SELECT day FROM mp_moved;
    ELSE
        INSERT INTO mp_days SELECT day FROM mp_moved;
    END IF;
    DELETE FROM metric_source_first t
     WHERE t.source_id IN (SELECT source_id FROM mp_sources)
       AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.source_id = t.source_id);
    INSERT INTO metric_source_first AS t SELECT * FROM fresh
        ON CONFLICT (source_id) DO UPDATE SET (first_at, service_line) = ROW(excluded.first_at, excluded.service_line)
        WHERE (t.first_at, t.service_line) IS DISTINCT FROM (excluded.first_at, excluded.service_line);
    DROP TABLE fresh, mp_moved;
    phases := 'first referrals ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 3. The periods to recompute: those of every touched day, and the period after each (whose
    -- gone-quiet sources depend on it), none starting after today. stop: the period's end; at: the
    -- moment "at the end of the period" means (as_of for the current period).
    CREATE TEMP TABLE mp_kinds (kind, step) ON COMMIT DROP AS
    VALUES ('day', interval '1 day'), ('week', interval '1 week'), ('month', interval '1 month'),
           ('quarter', interval '3 months');
    ANALYZE mp_kinds;
    -- A single period is recomputed with the days (and for a quarter, the months) it adds up.
    IF v_scope = 'period' THEN
        INSERT INTO mp_days
        SELECT d::date FROM mp_kinds k, generate_series(date_trunc(p_kind, p_start), date_trunc(p_kind, p_start) + k.step
                                                        - interval '1 day', interval '1 day') d
         WHERE k.kind = p_kind;
    END IF;
    CREATE TEMP TABLE mp_periods ON COMMIT DROP AS
    WITH starts AS (
        SELECT k.kind, k.step, date_trunc(k.kind, d.day)::date AS start FROM mp_kinds k, (SELECT DISTINCT day FROM mp_days) d
         WHERE v_scope <> 'period' OR k.kind IN (p_kind, 'day') OR (p_kind = 'quarter' AND k.kind = 'month')
        UNION
        SELECT k.kind, k.step, (date_trunc(k.kind, d.day) + k.step)::date FROM mp_kinds k, (SELECT DISTINCT day FROM mp_days) d
         WHERE v_scope <> 'period')
    SELECT kind, start, (start + step)::date AS stop, (start - step)::date AS prev,
           least((start + step)::timestamptz, v_now) AS at
      FROM starts WHERE start <= v_today;
    CREATE UNIQUE INDEX ON mp_periods (kind, start);
    ANALYZE mp_periods;
    SELECT count(*), min(start), max(stop) INTO periods, v_lo, v_hi FROM mp_periods;
    IF v_scope = 'full' THEN
        periods := outreach_metrics_full_periods(v_first, v_today);
    END IF;

    -- 4. Referrals and revenue per source and service line. Days from the source rows (a full
    -- refresh reads them whole, otherwise only the touched days through the time indexes)...
    -- One statement per run of consecutive days, planned for its own bounds (plan_cache_mode): a
    -- few days read through the time indexes, years in one sequential pass.
    CREATE TEMP TABLE f_ref (LIKE metric_referrals) ON COMMIT DROP;
    FOR v_lo, v_hi IN
        SELECT min(start), max(stop) FROM (
            SELECT start, stop, start - (row_number() OVER (ORDER BY start))::integer AS island
              FROM mp_periods WHERE kind = 'day') d
         GROUP BY island
    LOOP
        INSERT INTO f_ref
        SELECT 'day', day, source_id, service_line, sum(n)::integer, sum(cents)::bigint FROM (
            SELECT r.referred_at::date AS day, r.source_id, r.service_line, count(*) AS n, 0::numeric AS cents
              FROM referrals r WHERE r.referred_at >= v_lo AND r.referred_at < v_hi
             GROUP BY 1, 2, 3
            UNION ALL
            SELECT e.service_date, r.source_id, r.service_line, 0, sum(e.amount_cents)
              FROM encounters e JOIN referrals r ON r.id = e.referral_id
             WHERE e.service_date >= v_lo AND e.service_date < v_hi
             GROUP BY 1, 2, 3) x
         GROUP BY 2, 3, 4;
    END LOOP;
    rows_changed := rows_changed + outreach_metrics_apply('metric_referrals', 'f_ref', '{day}',
        '{period_kind,period_start,source_id,service_line}', '{referrals,revenue_cents}');
    phases := phases || ', referral days ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- ... weeks and months as sums of their days, quarters as sums of their months.
    SELECT min(start), max(stop) INTO v_lo, v_hi FROM mp_periods WHERE kind IN ('week', 'month');
    INSERT INTO f_ref
    SELECT p.kind, p.start, m.source_id, m.service_line, sum(m.referrals)::integer, sum(m.revenue_cents)::bigint
      FROM metric_referrals m CROSS JOIN mp_kinds k
      JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, m.period_start)::date
     WHERE m.period_kind = 'day' AND m.period_start >= v_lo AND m.period_start < v_hi AND k.kind IN ('week', 'month')
     GROUP BY 1, 2, 3, 4;
    rows_changed := rows_changed + outreach_metrics_apply('metric_referrals', 'f_ref', '{week,month}',
        '{period_kind,period_start,source_id,service_line}', '{referrals,revenue_cents}');
    SELECT min(start), max(stop) INTO v_lo, v_hi FROM mp_periods WHERE kind = 'quarter';
    INSERT INTO f_ref
    SELECT p.kind, p.start, m.source_id, m.service_line, sum(m.referrals)::integer, sum(m.revenue_cents)::bigint
      FROM metric_referrals m CROSS JOIN mp_kinds k
      JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, m.period_start)::date
     WHERE m.period_kind = 'month' AND m.period_start >= v_lo AND m.period_start < v_hi AND k.kind = 'quarter'
     GROUP BY 1, 2, 3, 4;
    rows_changed := rows_changed + outreach_metrics_apply('metric_referrals', 'f_ref', '{quarter}',
        '{period_kind,period_start,source_id,service_line}', '{referrals,revenue_cents}');
    phases := phases || ', referral rollups ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    SELECT min(start), max(stop) INTO v_lo, v_hi FROM mp_periods;
    v_t := clock_timestamp();

    -- 5. New sources: the first referral ever falls in the period, and its day has come.
    CREATE TEMP TABLE fresh (period_kind, period_start, source_id, service_line) ON COMMIT DROP AS
    SELECT p.kind, p.start, f.source_id, f.service_line
      FROM metric_source_first f CROSS JOIN mp_kinds k
      JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, f.first_at)::date
     WHERE f.first_at < v_today + 1;
    rows_changed := rows_changed + outreach_metrics_apply('metric_new_sources', 'fresh', v_all,
        '{period_kind,period_start,source_id}', '{service_line}');

    -- 6. Gone quiet: referred in the previous period, not in this one.
    CREATE TEMP TABLE f_quiet (period_kind, period_start, source_id, referrals_before) ON COMMIT DROP AS
    SELECT p.kind, p.start, b.source_id, sum(b.referrals)::integer
      FROM mp_periods p JOIN metric_referrals b ON b.period_kind = p.kind AND b.period_start = p.prev AND b.referrals > 0
     WHERE NOT EXISTS (SELECT 1 FROM f_ref c WHERE c.period_kind = p.kind AND c.period_start = p.start
                          AND c.source_id = b.source_id AND c.referrals > 0)
     GROUP BY 1, 2, 3;
    rows_changed := rows_changed + outreach_metrics_apply('metric_quiet_sources', 'f_quiet', v_all,
        '{period_kind,period_start,source_id}', '{referrals_before}');
    phases := phases || ', new and quiet ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 7. Per coordinator (the source's owner now) and service line, from the fresh rows of step 4
    -- (every row of every period recomputed).
    CREATE TEMP TABLE f_coord (period_kind, period_start, coordinator_id, service_line, referrals, revenue_cents,
                               referring_sources, new_sources) ON COMMIT DROP AS
    SELECT kind, start, coordinator_id, service_line, sum(n)::integer, sum(cents)::bigint, sum(srcs)::integer,
           sum(news)::integer FROM (
        SELECT m.period_kind AS kind, m.period_start AS start, coalesce(s.coordinator_id, 0) AS coordinator_id,
               m.service_line, sum(m.referrals) AS n, sum(m.revenue_cents) AS cents,
               count(*) FILTER (WHERE m.referrals > 0) AS srcs, 0 AS news
          FROM f_ref m JOIN referral_sources s ON s.id = m.source_id
         GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT m.period_kind, m.period_start, coalesce(s.coordinator_id, 0), m.service_line, 0, 0, 0, count(*)
          FROM fresh m JOIN referral_sources s ON s.id = m.source_id
         GROUP BY 1, 2, 3, 4) x
     GROUP BY 1, 2, 3, 4;
    rows_changed := rows_changed + outreach_metrics_apply('metric_coordinators', 'f_coord', v_all,
        '{period_kind,period_start,coordinator_id,service_line}',
        '{referrals,revenue_cents,referring_sources,new_sources}');

    -- 8. Per service line: the coordinators' figures added up.
    CREATE TEMP TABLE f_line (period_kind, period_start, service_line, referrals, revenue_cents, referring_sources,
                              new_sources) ON COMMIT DROP AS
    SELECT period_kind, period_start, service_line, sum(referrals)::integer, sum(revenue_cents)::bigint,
           sum(referring_sources)::integer, sum(new_sources)::integer
      FROM f_coord GROUP BY 1, 2, 3;
    rows_changed := rows_changed + outreach_metrics_apply('metric_service_lines', 'f_line', v_all,
        '{period_kind,period_start,service_line}', '{referrals,revenue_cents,referring_sources,new_sources}');
    DROP TABLE fresh, f_ref, f_quiet, f_coord, f_line;
    phases := phases || ', coordinators and lines ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    SELECT x.changed, x.took INTO v_n, v_took FROM outreach_metrics_activity_cases(v_scope = 'full', v_lo, v_hi, v_all) x;
    rows_changed := rows_changed + v_n;
    phases := phases || ', ' || v_took;
    v_t := clock_timestamp();

    -- 11. Goals, from the daily figures over each goal's own period. Activities carry no service
    -- line: an activities goal counts every completed activity. Only the goals whose period holds
    -- a recomputed day, and those new or changed since, can have moved.
    CREATE TEMP TABLE fresh ON COMMIT DROP AS
    SELECT g.id, g.service_line, g.metric, g.period_start, g.period_end, v.value, g.target,
           CASE WHEN g.target > 0 THEN round(100 * v.value / g.target, 1) END AS percent
      FROM outreach_goals g
     CROSS JOIN LATERAL (SELECT outreach_metrics_goal_value(g) AS value) v
     WHERE v_scope = 'full'
        OR EXISTS (SELECT 1 FROM mp_periods p WHERE p.kind = 'day' AND p.start BETWEEN g.period_start AND g.period_end)
        OR NOT EXISTS (SELECT 1 FROM metric_goal_progress t WHERE t.goal_id = g.id
                          AND (t.service_line, t.metric, t.period_start, t.period_end, t.target)
                            = (g.service_line, g.metric, g.period_start, g.period_end, g.target));
    rows_changed := rows_changed + outreach_metrics_goals_apply();
    phases := phases || ', goals ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';

    INSERT INTO metric_runs (scope, period_kind, period_start, as_of, periods, rows_changed, started_at, finished_at,
                             phases)
    VALUES (v_scope, CASE WHEN v_scope = 'period' THEN p_kind END,
            (SELECT start FROM mp_periods WHERE v_scope = 'period' LIMIT 1), v_now, periods, rows_changed,
            v_started, clock_timestamp(), phases)
    RETURNING id INTO run_id;
    DROP TABLE mp_days, mp_sources, mp_periods, mp_kinds;
END $$;

-- 014's bulk load of empty tables, as of p_as_of (NULL: now), for outreach_metrics_refresh (which has
-- set metric_source_owner). Returns what outreach_metrics_compare returns, or a NULL run_id, having
-- done nothing, when the tables are not empty or a reader holds one of them.
CREATE OR REPLACE FUNCTION outreach_metrics_rebuild(p_as_of timestamptz DEFAULT NULL, OUT run_id bigint,
                                         OUT periods integer, OUT rows_changed bigint, OUT phases text)
LANGUAGE plpgsql SET TimeZone = 'UTC' SET work_mem = '256MB' SET maintenance_work_mem = '512MB' SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_started timestamptz := clock_timestamp();
    v_t timestamptz := clock_timestamp();
    v_now timestamptz := coalesce(p_as_of, v_started);
    v_today date := v_now::date;
    v_first date;
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
    v_first := outreach_metrics_first_day(v_today);
    SELECT least(v_first, (SELECT min(period_start) FROM metric_activity), (SELECT min(period_start) FROM metric_cases))
      INTO v_from;
    CREATE TEMP TABLE mp_periods ON COMMIT DROP AS
    WITH starts AS (
        SELECT DISTINCT k.kind, k.step, date_trunc(k.kind, d)::date AS start
          FROM mp_kinds k, generate_series(v_from, v_today, interval '1 day') d)
    SELECT kind, start, (start + step)::date AS stop, (start - step)::date AS prev,
           least((start + step)::timestamptz, v_now) AS at
      FROM starts;
    CREATE UNIQUE INDEX ON mp_periods (kind, start);
    ANALYZE mp_periods;
    SELECT outreach_metrics_full_periods(v_first, v_today), min(start), max(stop) INTO periods, v_lo, v_hi
      FROM mp_periods;

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

    -- 4. New sources: the first referral ever falls in the period, and its day has come.
    INSERT INTO metric_new_sources
    SELECT p.kind, p.start, f.source_id, f.service_line
      FROM metric_source_first f CROSS JOIN mp_kinds k
      JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, f.first_at)::date
     WHERE f.first_at < v_today + 1;
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
    VALUES ('full', v_now, periods, rows_changed, v_started, clock_timestamp(), phases)
    RETURNING id INTO run_id;
    DROP TABLE mp_periods, mp_kinds;
END $$;
