-- 021_metrics_alike: periods counted alike, completions and cases wait for their day, one day aggregation.
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
-- An activity's completion, a case's opening and a case's resolution count in their day, week,
-- month and quarter from the first run on or after their day (UTC), as referrals do since 018: one
-- dated later than the run's day (data entered in the wrong time zone, an import) was counted at
-- once in the current week, month and quarter, so those were not the sums of their days. Planned
-- activities (scheduled in the period) stay forward-looking: the current week's planned includes the
-- calls scheduled later that week. Figures of a moment (overdue, still open) were already counted at
-- the run's as-of. outreach_metrics_activity_cases (009) takes the run's day, p_today, for this; the
-- regular refresh already recomputes every day from the last run's to today's, so the first run on
-- or after such a row's day counts it.
--
-- The query "referrals and revenue per source, service line and day" was written out three times in
-- 018 (the comparing computation and the regular refresh, per run of days; the bulk load, for all
-- days up to today) and a source's first referral twice (the bulk load, the regular refresh), and
-- the earliest record's day in the comparing computation and the bulk load: each is now one function
-- (outreach_metrics_referral_days, outreach_metrics_first_referral, outreach_metrics_first_day). The
-- first two are plain SQL functions that PostgreSQL inlines into the calling statement, which is
-- planned as before. The comparing computation still reads first referrals in one ordered pass over
-- the sources that changed (every source, for a full run) rather than a probe per source.
--
-- The functions restated below are those of 009 (outreach_metrics_activity_cases) and 018
-- (outreach_metrics_compare, outreach_metrics_rebuild, outreach_metrics_changes), changed only where
-- said above: compare and rebuild take their first day from outreach_metrics_first_day and, for a
-- full run, record outreach_metrics_full_periods as their periods; all three pass their day to
-- outreach_metrics_activity_cases and take their day rows from outreach_metrics_referral_days
-- (the bulk load from the first period's start, not after the earliest record, to today); the bulk
-- load and the regular refresh take first referrals from outreach_metrics_first_referral.

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

DROP FUNCTION outreach_metrics_activity_cases(boolean, date, date, text[]);

-- The activity (per coordinator and kind) and service case (per category and priority) figures of
-- the periods in the temporary table mp_periods (kind, start, at: the moment its end means) of the
-- kinds p_kinds, from the rows dated p_lo to before p_hi; completions, openings and resolutions
-- only up to the day p_today (those dated later count from the first run on or after their day). "Open at the end" (overdue activities,
-- cases still open) is one running count over all rows when p_running (many periods), else counted
-- once per moment (the current day, week, month and quarter share theirs). Returns how many rows
-- changed and the time each step took.
CREATE FUNCTION outreach_metrics_activity_cases(p_running boolean, p_lo date, p_hi date, p_kinds text[], p_today date,
                                                OUT changed bigint, OUT took text)
LANGUAGE plpgsql AS $$
DECLARE
    v_t timestamptz := clock_timestamp();
BEGIN
    changed := 0;
    -- Overdue: open at the period's end; for many periods one running count over all activities.
    CREATE TEMP TABLE mp_open (kind text, start date, g1 text, g2 text, n bigint) ON COMMIT DROP;
    IF p_running THEN
        INSERT INTO mp_open SELECT * FROM outreach_metrics_open_at(
            'SELECT coalesce(coordinator_id, 0)::text AS g1, kind AS g2, scheduled_at AS s, '
            'least(completed_at, canceled_at) AS e FROM activities WHERE scheduled_at IS NOT NULL');
    ELSE
        -- Counted once per moment (the current day, week, month and quarter share as_of).
        INSERT INTO mp_open
        SELECT p.kind, p.start, o.g1, o.g2, o.n
          FROM mp_periods p JOIN (
            SELECT t.at, coalesce(a.coordinator_id, 0)::text AS g1, a.kind AS g2, count(*) AS n
              FROM (SELECT DISTINCT at FROM mp_periods) t JOIN activities a ON a.scheduled_at < t.at
               AND coalesce(least(a.completed_at, a.canceled_at), 'infinity'::timestamptz) >= t.at
             GROUP BY 1, 2, 3) o ON o.at = p.at;
    END IF;
    CREATE TEMP TABLE fresh (period_kind, period_start, coordinator_id, kind, planned, completed, overdue)
    ON COMMIT DROP AS
    SELECT kind, start, coordinator_id, akind, sum(planned)::integer, sum(completed)::integer, sum(overdue)::integer FROM (
        SELECT p.kind, p.start, coalesce(a.coordinator_id, 0) AS coordinator_id, a.kind AS akind,
               count(*) AS planned, 0 AS completed, 0 AS overdue
          FROM activities a CROSS JOIN mp_kinds k
          JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, a.scheduled_at)::date
         WHERE a.canceled_at IS NULL AND a.scheduled_at >= p_lo AND a.scheduled_at < p_hi
         GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT p.kind, p.start, coalesce(a.coordinator_id, 0), a.kind, 0, count(*), 0
          FROM activities a CROSS JOIN mp_kinds k
          JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, a.completed_at)::date
         WHERE a.canceled_at IS NULL AND a.completed_at >= p_lo AND a.completed_at < least(p_hi, p_today + 1)
         GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT o.kind, o.start, o.g1::bigint, o.g2, 0, 0, o.n FROM mp_open o) x
     GROUP BY 1, 2, 3, 4;
    changed := changed + outreach_metrics_apply('metric_activity', 'fresh', p_kinds,
        '{period_kind,period_start,coordinator_id,kind}', '{planned,completed,overdue}');
    DROP TABLE fresh;
    TRUNCATE mp_open;
    took := 'activity ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    IF p_running THEN
        INSERT INTO mp_open SELECT * FROM outreach_metrics_open_at(
            'SELECT category AS g1, priority AS g2, opened_at AS s, resolved_at AS e FROM cases');
    ELSE
        INSERT INTO mp_open
        SELECT p.kind, p.start, o.g1, o.g2, o.n
          FROM mp_periods p JOIN (
            SELECT t.at, c.category AS g1, c.priority AS g2, count(*) AS n
              FROM (SELECT DISTINCT at FROM mp_periods) t JOIN cases c ON c.opened_at < t.at
               AND coalesce(c.resolved_at, 'infinity'::timestamptz) >= t.at
             GROUP BY 1, 2, 3) o ON o.at = p.at;
    END IF;
    CREATE TEMP TABLE fresh (period_kind, period_start, category, priority, opened, resolved, still_open,
                             avg_resolution_hours, median_resolution_hours) ON COMMIT DROP AS
    SELECT kind, start, category, priority, sum(opened)::integer, sum(resolved)::integer, sum(still_open)::integer,
           max(avg_h)::numeric(12, 2), max(median_h)::numeric(12, 2) FROM (
        SELECT p.kind, p.start, c.category, c.priority, count(*) AS opened, 0 AS resolved, 0 AS still_open,
               NULL::numeric AS avg_h, NULL::numeric AS median_h
          FROM cases c CROSS JOIN mp_kinds k
          JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, c.opened_at)::date
         WHERE c.opened_at >= p_lo AND c.opened_at < least(p_hi, p_today + 1)
         GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT p.kind, p.start, c.category, c.priority, 0, count(*), 0,
               avg(extract(epoch FROM c.resolved_at - c.opened_at) / 3600),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.resolved_at - c.opened_at) / 3600)::numeric
          FROM cases c CROSS JOIN mp_kinds k
          JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, c.resolved_at)::date
         WHERE c.resolved_at >= p_lo AND c.resolved_at < least(p_hi, p_today + 1)
         GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT o.kind, o.start, o.g1, o.g2, 0, 0, o.n, NULL, NULL FROM mp_open o) x
     GROUP BY 1, 2, 3, 4;
    changed := changed + outreach_metrics_apply('metric_cases', 'fresh', p_kinds,
        '{period_kind,period_start,category,priority}',
        '{opened,resolved,still_open,avg_resolution_hours,median_resolution_hours}');
    DROP TABLE fresh, mp_open;
    took := took || ', cases ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
END $$;

-- Referrals (by the day they came in) and revenue (encounters by service date) per source, service
-- line and day, for the days from p_lo to before p_hi: the day rows of metric_referrals. Days are
-- those of the caller's time zone: every caller computes in UTC (SET TimeZone = 'UTC'). A plain SQL
-- function, inlined into the caller's statement and planned for its bounds: a few days through the
-- time indexes, years in one sequential pass.
CREATE FUNCTION outreach_metrics_referral_days(p_lo date, p_hi date) RETURNS SETOF metric_referrals
LANGUAGE sql STABLE AS $$
    SELECT 'day'::text, day, source_id, service_line, sum(n)::integer, sum(cents)::bigint FROM (
        SELECT r.referred_at::date AS day, r.source_id, r.service_line, count(*) AS n, 0::numeric AS cents
          FROM referrals r WHERE r.referred_at >= p_lo AND r.referred_at < p_hi
         GROUP BY 1, 2, 3
        UNION ALL
        SELECT e.service_date, r.source_id, r.service_line, 0, sum(e.amount_cents)
          FROM encounters e JOIN referrals r ON r.id = e.referral_id
         WHERE e.service_date >= p_lo AND e.service_date < p_hi
         GROUP BY 1, 2, 3) x
     GROUP BY 2, 3, 4
$$;

-- A source's first referral ever (earliest referred_at, then lowest id) and its service line; none
-- when it has no referral. One probe of the referrals' (source_id, referred_at) index; inlined like
-- the function above.
CREATE FUNCTION outreach_metrics_first_referral(p_source bigint)
RETURNS TABLE (first_at timestamptz, service_line text) LANGUAGE sql STABLE AS $$
    SELECT r.referred_at, r.service_line FROM referrals r WHERE r.source_id = p_source
     ORDER BY r.referred_at, r.id LIMIT 1
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
        INSERT INTO f_ref SELECT * FROM outreach_metrics_referral_days(v_lo, v_hi);
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

    SELECT x.changed, x.took INTO v_n, v_took
      FROM outreach_metrics_activity_cases(v_scope = 'full', v_lo, v_hi, v_all, v_today) x;
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
    SELECT s.id, f.first_at, f.service_line FROM referral_sources s
     CROSS JOIN LATERAL outreach_metrics_first_referral(s.id) f;
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
    -- (v_lo, the first period's start, is not after the earliest record's day.)
    INSERT INTO metric_referrals SELECT * FROM outreach_metrics_referral_days(v_lo, v_today + 1);
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
      FROM outreach_metrics_activity_cases(true, v_lo, v_hi, '{day,week,month,quarter}', v_today) x;
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

-- 012's regular refresh: what changed since p_last (the as_of of the last regular refresh), as of
-- p_now; the first referrals of new sources wait for their day.
CREATE OR REPLACE FUNCTION outreach_metrics_changes(p_last timestamptz, p_now timestamptz,
                                         OUT periods integer, OUT rows_changed bigint, OUT phases text)
LANGUAGE plpgsql SET TimeZone = 'UTC' SET work_mem = '256MB' SET plan_cache_mode = 'force_custom_plan' SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_t timestamptz := clock_timestamp();
    v_now timestamptz := p_now;
    v_today date := p_now::date;
    v_last timestamptz := p_last;
    v_lo date;
    v_hi date;
    v_n bigint;
    v_took text;
    v_all text[] := '{day,week,month,quarter}';
BEGIN
    SET LOCAL client_min_messages = warning;
    DROP TABLE IF EXISTS mp_days, mp_adays, mp_sources, mp_kinds, mp_periods, mp_qcand, mp_qper, mp_open, f_day,
        f_first, f_new, f_quiet, chg_ref, chg_new, d_coord, fresh;

    -- 1. Owners, then the first referrals of the sources noted as changed. Days: those noted, and
    -- every day from the last refresh to today (periods current then are final now, and days
    -- that have begun may hold rows written ahead of time). None after today.
    rows_changed := outreach_metrics_move_owners();
    CREATE TEMP TABLE mp_kinds (kind, step) ON COMMIT DROP AS
    VALUES ('day', interval '1 day'), ('week', interval '1 week'), ('month', interval '1 month'),
           ('quarter', interval '3 months');
    CREATE TEMP TABLE mp_days (day date) ON COMMIT DROP;
    WITH d AS (DELETE FROM metric_dirty_days RETURNING day) INSERT INTO mp_days SELECT day FROM d;
    INSERT INTO mp_days SELECT d::date FROM generate_series(v_last::date, v_today, interval '1 day') d;
    CREATE TEMP TABLE mp_sources ON COMMIT DROP AS
    WITH s AS (DELETE FROM metric_dirty_sources RETURNING source_id) SELECT DISTINCT source_id FROM s;
    CREATE TEMP TABLE f_first ON COMMIT DROP AS
    SELECT s.source_id, f.first_at, f.service_line
      FROM mp_sources s CROSS JOIN LATERAL outreach_metrics_first_referral(s.source_id) f;
    DELETE FROM metric_source_first t
     WHERE t.source_id IN (SELECT source_id FROM mp_sources)
       AND NOT EXISTS (SELECT 1 FROM f_first f WHERE f.source_id = t.source_id);
    INSERT INTO metric_source_first AS t SELECT * FROM f_first
        ON CONFLICT (source_id) DO UPDATE SET (first_at, service_line) = ROW(excluded.first_at, excluded.service_line)
        WHERE (t.first_at, t.service_line) IS DISTINCT FROM (excluded.first_at, excluded.service_line);
    -- Sources whose first referral's day, or a period it falls in, may have come since the last refresh.
    INSERT INTO mp_sources SELECT source_id FROM metric_source_first WHERE first_at >= v_last::date;
    phases := 'first referrals ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 2. The touched days of referrals and revenue, from the source rows (one statement per run of
    -- consecutive days), against the day rows kept: chg_ref holds every row that changed, with its
    -- old and new figures and whether it existed and exists.
    CREATE TEMP TABLE f_day (LIKE metric_referrals) ON COMMIT DROP;
    FOR v_lo, v_hi IN
        SELECT min(day), max(day) + 1 FROM (
            SELECT day, day - (row_number() OVER (ORDER BY day))::integer AS island
              FROM (SELECT DISTINCT day FROM mp_days WHERE day <= v_today) d) d
         GROUP BY island
    LOOP
        INSERT INTO f_day SELECT * FROM outreach_metrics_referral_days(v_lo, v_hi);
    END LOOP;
    ANALYZE f_day;
    CREATE TEMP TABLE chg_ref ON COMMIT DROP AS
    SELECT 'day'::text AS period_kind, coalesce(f.period_start, t.period_start) AS period_start,
           coalesce(f.source_id, t.source_id) AS source_id, coalesce(f.service_line, t.service_line) AS service_line,
           coalesce(t.referrals, 0) AS old_ref, coalesce(t.revenue_cents, 0) AS old_rev, t.source_id IS NOT NULL AS old_exists,
           coalesce(f.referrals, 0) AS new_ref, coalesce(f.revenue_cents, 0) AS new_rev, f.source_id IS NOT NULL AS new_exists
      FROM f_day f
      FULL JOIN (SELECT m.* FROM metric_referrals m
                  WHERE m.period_kind = 'day' AND m.period_start IN (SELECT day FROM mp_days WHERE day <= v_today)) t
        ON t.period_start = f.period_start AND t.source_id = f.source_id AND t.service_line = f.service_line
     WHERE (t.referrals, t.revenue_cents) IS DISTINCT FROM (f.referrals, f.revenue_cents);
    DELETE FROM metric_referrals t USING chg_ref c
     WHERE t.period_kind = 'day' AND (t.period_start, t.source_id, t.service_line) = (c.period_start, c.source_id, c.service_line)
       AND NOT c.new_exists;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    INSERT INTO metric_referrals AS t
    SELECT period_kind, period_start, source_id, service_line, new_ref, new_rev FROM chg_ref WHERE new_exists
     ORDER BY 1, 2, 3, 4
        ON CONFLICT (period_kind, period_start, source_id, service_line) DO UPDATE
       SET (referrals, revenue_cents) = ROW(excluded.referrals, excluded.revenue_cents);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    phases := phases || ', referral days ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 3. Weeks, months and quarters: their rows plus the differences of their days. A row whose
    -- figures fall to zero stays while a day row (an encounter of no amount) is behind it.
    INSERT INTO chg_ref
    SELECT kind, start, source_id, service_line, old_ref, old_rev, old_exists, new_ref, new_rev,
           CASE WHEN new_ref <> 0 OR new_rev <> 0 THEN true
                ELSE EXISTS (SELECT 1 FROM metric_referrals m WHERE m.source_id = x.source_id AND m.period_kind = 'day'
                                AND m.period_start >= x.start AND m.period_start < x.stop
                                AND m.service_line = x.service_line) END
      FROM (SELECT d.kind, d.start, d.stop, d.source_id, d.service_line,
                   coalesce(t.referrals, 0) AS old_ref, coalesce(t.revenue_cents, 0) AS old_rev,
                   t.source_id IS NOT NULL AS old_exists,
                   (coalesce(t.referrals, 0) + d.dref)::integer AS new_ref,
                   (coalesce(t.revenue_cents, 0) + d.drev)::bigint AS new_rev
              FROM (SELECT k.kind, date_trunc(k.kind, c.period_start)::date AS start,
                           (date_trunc(k.kind, c.period_start) + k.step)::date AS stop, c.source_id, c.service_line,
                           sum(c.new_ref - c.old_ref) AS dref, sum(c.new_rev - c.old_rev) AS drev
                      FROM chg_ref c CROSS JOIN mp_kinds k
                     WHERE c.period_kind = 'day' AND k.kind <> 'day'
                     GROUP BY 1, 2, 3, 4, 5) d
              LEFT JOIN metric_referrals t ON t.period_kind = d.kind AND t.period_start = d.start
                   AND t.source_id = d.source_id AND t.service_line = d.service_line) x;
    DELETE FROM chg_ref WHERE period_kind <> 'day' AND (old_ref, old_rev, old_exists) = (new_ref, new_rev, new_exists);
    DELETE FROM metric_referrals t USING chg_ref c
     WHERE c.period_kind <> 'day' AND (t.period_kind, t.period_start, t.source_id, t.service_line)
         = (c.period_kind, c.period_start, c.source_id, c.service_line)
       AND NOT c.new_exists;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    INSERT INTO metric_referrals AS t
    SELECT period_kind, period_start, source_id, service_line, new_ref, new_rev FROM chg_ref
     WHERE period_kind <> 'day' AND new_exists
     ORDER BY 1, 2, 3, 4
        ON CONFLICT (period_kind, period_start, source_id, service_line) DO UPDATE
       SET (referrals, revenue_cents) = ROW(excluded.referrals, excluded.revenue_cents);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    ANALYZE chg_ref;
    phases := phases || ', referral rollups ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 4. New sources of the sources whose first referral moved (or whose day may have come since
    -- the last refresh), against the rows kept for them.
    CREATE TEMP TABLE f_new ON COMMIT DROP AS
    SELECT k.kind AS period_kind, date_trunc(k.kind, f.first_at)::date AS period_start, f.source_id, f.service_line
      FROM metric_source_first f CROSS JOIN mp_kinds k
     WHERE f.source_id IN (SELECT source_id FROM mp_sources) AND f.first_at < v_today + 1;
    CREATE TEMP TABLE chg_new ON COMMIT DROP AS
    SELECT coalesce(f.period_kind, t.period_kind) AS period_kind, coalesce(f.period_start, t.period_start) AS period_start,
           coalesce(f.source_id, t.source_id) AS source_id, t.service_line AS old_line, f.service_line AS new_line
      FROM f_new f
      FULL JOIN (SELECT m.* FROM metric_new_sources m WHERE m.source_id IN (SELECT source_id FROM mp_sources)) t
        ON t.period_kind = f.period_kind AND t.period_start = f.period_start AND t.source_id = f.source_id
     WHERE t.service_line IS DISTINCT FROM f.service_line;
    DELETE FROM metric_new_sources t USING chg_new c
     WHERE (t.period_kind, t.period_start, t.source_id) = (c.period_kind, c.period_start, c.source_id)
       AND c.new_line IS NULL;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    INSERT INTO metric_new_sources AS t
    SELECT period_kind, period_start, source_id, new_line FROM chg_new WHERE new_line IS NOT NULL
        ON CONFLICT (period_kind, period_start, source_id) DO UPDATE SET service_line = excluded.service_line;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;

    -- 5. Gone quiet: recomputed for every source whose referral count changed in a period, in that
    -- period and the next; and whole for the periods that began since the last refresh.
    CREATE TEMP TABLE mp_qcand ON COMMIT DROP AS
    SELECT DISTINCT c.period_kind AS kind, s.start, c.source_id, (s.start - k.step)::date AS prev
      FROM chg_ref c JOIN mp_kinds k ON k.kind = c.period_kind
     CROSS JOIN LATERAL (VALUES (c.period_start), ((c.period_start + k.step)::date)) s (start)
     WHERE c.old_ref <> c.new_ref AND s.start <= v_today;
    CREATE TEMP TABLE mp_qper ON COMMIT DROP AS
    SELECT DISTINCT k.kind, date_trunc(k.kind, d.d)::date AS start, (date_trunc(k.kind, d.d) - k.step)::date AS prev
      FROM mp_kinds k, generate_series(v_last::date + 1, v_today, interval '1 day') d
     WHERE date_trunc(k.kind, d.d)::date > v_last::date;
    CREATE TEMP TABLE f_quiet ON COMMIT DROP AS
    SELECT q.kind AS period_kind, q.start AS period_start, q.source_id, b.n::integer AS referrals_before
      FROM mp_qcand q CROSS JOIN LATERAL (
        SELECT sum(m.referrals) AS n FROM metric_referrals m
         WHERE m.period_kind = q.kind AND m.period_start = q.prev AND m.source_id = q.source_id) b
     WHERE b.n > 0
       AND NOT EXISTS (SELECT 1 FROM metric_referrals c WHERE c.period_kind = q.kind AND c.period_start = q.start
                          AND c.source_id = q.source_id AND c.referrals > 0)
    UNION
    SELECT p.kind, p.start, b.source_id, sum(b.referrals)::integer
      FROM mp_qper p JOIN metric_referrals b ON b.period_kind = p.kind AND b.period_start = p.prev AND b.referrals > 0
     WHERE NOT EXISTS (SELECT 1 FROM metric_referrals c WHERE c.period_kind = p.kind AND c.period_start = p.start
                          AND c.source_id = b.source_id AND c.referrals > 0)
     GROUP BY 1, 2, 3;
    DELETE FROM metric_quiet_sources t USING mp_qcand q
     WHERE (t.period_kind, t.period_start, t.source_id) = (q.kind, q.start, q.source_id)
       AND NOT EXISTS (SELECT 1 FROM f_quiet f WHERE (f.period_kind, f.period_start, f.source_id)
                                                    = (t.period_kind, t.period_start, t.source_id));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    DELETE FROM metric_quiet_sources t USING mp_qper q
     WHERE (t.period_kind, t.period_start) = (q.kind, q.start)
       AND NOT EXISTS (SELECT 1 FROM f_quiet f WHERE (f.period_kind, f.period_start, f.source_id)
                                                    = (t.period_kind, t.period_start, t.source_id));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    INSERT INTO metric_quiet_sources AS t SELECT * FROM f_quiet ORDER BY 1, 2, 3
        ON CONFLICT (period_kind, period_start, source_id) DO UPDATE SET referrals_before = excluded.referrals_before
     WHERE t.referrals_before IS DISTINCT FROM excluded.referrals_before;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_changed := rows_changed + v_n;
    phases := phases || ', new and quiet ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 6. Per coordinator and service line: the differences of the rows of steps 2 to 4.
    INSERT INTO metric_source_owner
    SELECT s.id, coalesce(s.coordinator_id, 0) FROM referral_sources s
     WHERE s.id IN (SELECT source_id FROM chg_ref UNION SELECT source_id FROM chg_new)
        ON CONFLICT (source_id) DO NOTHING;
    CREATE TEMP TABLE d_coord ON COMMIT DROP AS
    SELECT c.period_kind, c.period_start, o.coordinator_id, c.service_line, c.new_ref - c.old_ref AS referrals,
           c.new_rev - c.old_rev AS revenue_cents, (c.new_ref > 0)::integer - (c.old_ref > 0)::integer AS referring_sources,
           0 AS new_sources, c.new_exists AND NOT c.old_exists AS creates
      FROM chg_ref c JOIN metric_source_owner o ON o.source_id = c.source_id
    UNION ALL
    SELECT c.period_kind, c.period_start, o.coordinator_id, x.line, 0, 0, 0, x.sign, x.sign = 1
      FROM chg_new c JOIN metric_source_owner o ON o.source_id = c.source_id
     CROSS JOIN LATERAL (VALUES (c.old_line, -1), (c.new_line, 1)) x (line, sign)
     WHERE x.line IS NOT NULL;
    rows_changed := rows_changed + outreach_metrics_add_coord();
    -- Owners of sources gone, once nothing of theirs is left.
    DELETE FROM metric_source_owner o
     WHERE NOT EXISTS (SELECT 1 FROM referral_sources s WHERE s.id = o.source_id)
       AND NOT EXISTS (SELECT 1 FROM metric_referrals m WHERE m.source_id = o.source_id)
       AND NOT EXISTS (SELECT 1 FROM metric_new_sources m WHERE m.source_id = o.source_id);
    phases := phases || ', coordinators and lines ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';
    v_t := clock_timestamp();

    -- 7. Activities and cases: the periods of the days noted, of the spans noted (merged, then
    -- expanded into days) and of the days since the last refresh, recomputed.
    CREATE TEMP TABLE mp_adays ON COMMIT DROP AS
    WITH s AS (DELETE FROM metric_dirty_spans RETURNING from_day, least(coalesce(to_day, v_today), v_today) AS to_day),
    iv AS (SELECT DISTINCT from_day, greatest(from_day, to_day) AS to_day FROM s WHERE from_day <= v_today),
    brk AS (SELECT from_day, to_day,
                   CASE WHEN from_day <= max(to_day) OVER (ORDER BY from_day, to_day ROWS BETWEEN UNBOUNDED PRECEDING
                                                           AND 1 PRECEDING) + 1 THEN 0 ELSE 1 END AS b
              FROM iv),
    isl AS (SELECT from_day, to_day, sum(b) OVER (ORDER BY from_day, to_day) AS island FROM brk)
    SELECT d::date AS day FROM (SELECT min(from_day) AS lo, max(to_day) AS hi FROM isl GROUP BY island) m,
           generate_series(m.lo, m.hi, interval '1 day') d
    UNION
    SELECT day FROM mp_days WHERE day <= v_today;
    CREATE TEMP TABLE mp_periods ON COMMIT DROP AS
    SELECT kind, start, (start + step)::date AS stop, (start - step)::date AS prev,
           least((start + step)::timestamptz, v_now) AS at
      FROM (SELECT DISTINCT k.kind, k.step, date_trunc(k.kind, d.day)::date AS start FROM mp_kinds k, mp_adays d) p;
    CREATE UNIQUE INDEX ON mp_periods (kind, start);
    ANALYZE mp_periods;
    SELECT count(*), min(start), max(stop) INTO periods, v_lo, v_hi FROM mp_periods;

    SELECT x.changed, x.took INTO v_n, v_took
      FROM outreach_metrics_activity_cases(periods > 60, v_lo, v_hi, v_all, v_today) x;
    rows_changed := rows_changed + v_n;
    phases := phases || ', ' || v_took;
    v_t := clock_timestamp();

    -- 8. Goals whose period holds a day that changed, and those new or changed since.
    CREATE TEMP TABLE fresh ON COMMIT DROP AS
    SELECT g.id, g.service_line, g.metric, g.period_start, g.period_end, v.value, g.target,
           CASE WHEN g.target > 0 THEN round(100 * v.value / g.target, 1) END AS percent
      FROM outreach_goals g
     CROSS JOIN LATERAL (SELECT outreach_metrics_goal_value(g) AS value) v
     WHERE EXISTS (SELECT 1 FROM mp_periods p WHERE p.kind = 'day' AND p.start BETWEEN g.period_start AND g.period_end)
        OR EXISTS (SELECT 1 FROM chg_ref c WHERE c.period_kind = 'day' AND c.period_start BETWEEN g.period_start AND g.period_end)
        OR EXISTS (SELECT 1 FROM chg_new c WHERE c.period_kind = 'day' AND c.period_start BETWEEN g.period_start AND g.period_end)
        OR NOT EXISTS (SELECT 1 FROM metric_goal_progress t WHERE t.goal_id = g.id
                          AND (t.service_line, t.metric, t.period_start, t.period_end, t.target)
                            = (g.service_line, g.metric, g.period_start, g.period_end, g.target));
    rows_changed := rows_changed + outreach_metrics_goals_apply();
    phases := phases || ', goals ' || round(extract(epoch FROM clock_timestamp() - v_t) * 1000) || ' ms';

    -- Periods touched: those of the activity and cases, and those whose referral figures changed.
    SELECT count(*) INTO periods FROM (
        SELECT kind, start FROM mp_periods UNION SELECT period_kind, period_start FROM chg_ref
        UNION SELECT period_kind, period_start FROM chg_new UNION SELECT kind, start FROM mp_qper) p;
    DROP TABLE mp_days, mp_adays, mp_sources, mp_kinds, mp_periods, mp_qcand, mp_qper, f_day, f_first, f_new, f_quiet,
        chg_ref, chg_new;
END $$;
