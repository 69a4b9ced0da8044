-- 009_metrics_speed: the metric refresh computes each day once and rolls weeks, months and quarters up.
--
-- Referrals and revenue are aggregated from the source rows at the finest grain only (the touched
-- days); weeks and months are sums of their days, quarters sums of their months, read back from the
-- tables. Periods are matched to rows by equality on the truncated date (hash joins), not by a
-- range join per period. "Open at the end of the period" (overdue activities, cases still open) is
-- a running count over all openings and closings for a full refresh, an indexed count otherwise.
-- The tables are brought to the fresh result by set-based statements that write only what differs,
-- and every phase's time is recorded with the run.

ALTER TABLE metric_runs ADD COLUMN phases text;

-- Activities and cases still open at a moment: those that ended at or after it (or never).
CREATE INDEX activities_open_until_idx ON activities ((coalesce(least(completed_at, canceled_at), 'infinity'::timestamptz)))
    WHERE scheduled_at IS NOT NULL;
CREATE INDEX cases_open_until_idx ON cases ((coalesce(resolved_at, 'infinity'::timestamptz)));

DROP FUNCTION outreach_metrics_refresh(text, date);
DROP FUNCTION outreach_metrics_apply(text, text[], text[]);

-- Brings the rows of table tbl in the periods of mp_periods whose kind is in kinds to the rows of
-- the temporary table src (same columns) with period_kind in kinds: deletes what is gone, then
-- inserts what is new and updates only what differs, in one upsert. Returns how many rows changed. A large change is followed
-- (a tenth of the table or more) by ANALYZE, so that the statements after it are planned for the
-- table as it now is. Rows are inserted in key order, which keeps the index pages in cache.
CREATE FUNCTION outreach_metrics_apply(tbl text, src text, kinds text[], keys text[], vals text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    total bigint := 0;
    empty boolean;
    fk text := (SELECT string_agg('f.' || quote_ident(c), ', ') FROM unnest(keys) c);
    tk text := (SELECT string_agg('t.' || quote_ident(c), ', ') FROM unnest(keys) c);
    ev text := (SELECT string_agg('excluded.' || quote_ident(c), ', ') FROM unnest(vals) c);
    keycols text := (SELECT string_agg(quote_ident(c), ', ') FROM unnest(keys) c);
    tv text := (SELECT string_agg('t.' || quote_ident(c), ', ') FROM unnest(vals) c);
    cols text := (SELECT string_agg(quote_ident(c), ', ') FROM unnest(vals) c);
BEGIN
    EXECUTE format('ANALYZE %I', src);
    EXECUTE format('DELETE FROM %I t USING mp_periods p WHERE p.kind = ANY ($1) AND t.period_kind = p.kind '
                   'AND t.period_start = p.start AND NOT EXISTS (SELECT 1 FROM %I f WHERE (%s) = (%s))',
                   tbl, src, fk, tk) USING kinds;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I WHERE period_kind = ANY ($1))', tbl) INTO empty USING kinds;
    IF empty THEN
        -- Nothing of these kinds yet (a first run): a plain insert, without looking for conflicts.
        EXECUTE format('INSERT INTO %I SELECT f.* FROM %I f WHERE f.period_kind = ANY ($1) ORDER BY %s',
                       tbl, src, keycols) USING kinds;
    ELSE
        EXECUTE format('INSERT INTO %I AS t SELECT f.* FROM %I f WHERE f.period_kind = ANY ($1) ORDER BY %s '
                       'ON CONFLICT (%s) DO UPDATE SET (%s) = ROW(%s) WHERE (%s) IS DISTINCT FROM (%s)',
                       tbl, src, keycols, keycols, cols, ev, tv, ev) USING kinds;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    IF total > 1000 AND total > 0.1 * (SELECT reltuples FROM pg_class WHERE oid = tbl::regclass) THEN
        EXECUTE format('ANALYZE %I', tbl);
    END IF;
    RETURN total;
END $$;

-- How many intervals are open at each moment `at` of mp_periods, per group: intervals is a query
-- giving (g1 text, g2 text, s timestamptz, e timestamptz), open from s (excluded) until e (included;
-- NULL: still open). Open at T = opened before T minus opened and closed before T, one running sum
-- over every opening and closing, so the cost does not grow with the number of periods.
CREATE FUNCTION outreach_metrics_open_at(intervals text)
RETURNS TABLE (kind text, start date, g1 text, g2 text, n bigint) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH iv AS (%s),
        ev AS (SELECT iv.g1, iv.g2, iv.s AS t, 1 AS o, 1 AS d FROM iv
               UNION ALL
               SELECT iv.g1, iv.g2, greatest(iv.s, iv.e), 1, -1 FROM iv WHERE iv.e IS NOT NULL
               UNION ALL
               SELECT g.g1, g.g2, a.at, 0, 0 FROM (SELECT DISTINCT iv.g1, iv.g2 FROM iv) g,
                      (SELECT DISTINCT p.at FROM mp_periods p) a),
        run AS (SELECT ev.g1, ev.g2, ev.t, ev.o,
                       sum(ev.d) OVER (PARTITION BY ev.g1, ev.g2 ORDER BY ev.t, ev.o ROWS UNBOUNDED PRECEDING) AS n
                  FROM ev)
        SELECT p.kind, p.start, r.g1, r.g2, r.n::bigint FROM run r JOIN mp_periods p ON p.at = r.t
         WHERE r.o = 0 AND r.n > 0 $q$, intervals);
END $$;

-- The activity (per coordinator and kind) and service case (per category and priority) figures of
-- the periods in the temporary table mp_periods (kind, start, at: the moment its end means) of the
-- kinds p_kinds, from the rows dated p_lo to before p_hi. "Open at the end" (overdue activities,
-- cases still open) is one running count over all rows when p_running (many periods), else counted
-- once per moment (the current day, week, month and quarter share theirs). Returns how many rows
-- changed and the time each step took.
CREATE FUNCTION outreach_metrics_activity_cases(p_running boolean, p_lo date, p_hi date, p_kinds text[],
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
         WHERE a.canceled_at IS NULL AND a.completed_at >= p_lo AND a.completed_at < p_hi
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
         WHERE c.opened_at >= p_lo AND c.opened_at < p_hi
         GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT p.kind, p.start, c.category, c.priority, 0, count(*), 0,
               avg(extract(epoch FROM c.resolved_at - c.opened_at) / 3600),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.resolved_at - c.opened_at) / 3600)::numeric
          FROM cases c CROSS JOIN mp_kinds k
          JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, c.resolved_at)::date
         WHERE c.resolved_at >= p_lo AND c.resolved_at < p_hi
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

-- The value of goal g: its metric summed over the day rows of the goal's own period (both days
-- included). Activities carry no service line: an activities goal counts every completed activity.
CREATE FUNCTION outreach_metrics_goal_value(g outreach_goals) RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT coalesce(CASE g.metric
        WHEN 'referrals' THEN (SELECT sum(referrals) FROM metric_service_lines m WHERE m.period_kind = 'day'
                                 AND m.service_line = g.service_line AND m.period_start BETWEEN g.period_start AND g.period_end)
        WHEN 'revenue_cents' THEN (SELECT sum(revenue_cents) FROM metric_service_lines m WHERE m.period_kind = 'day'
                                 AND m.service_line = g.service_line AND m.period_start BETWEEN g.period_start AND g.period_end)
        WHEN 'new_sources' THEN (SELECT sum(new_sources) FROM metric_service_lines m WHERE m.period_kind = 'day'
                                 AND m.service_line = g.service_line AND m.period_start BETWEEN g.period_start AND g.period_end)
        WHEN 'activities' THEN (SELECT sum(completed) FROM metric_activity m WHERE m.period_kind = 'day'
                                 AND m.period_start BETWEEN g.period_start AND g.period_end)
        END, 0)::numeric
$$;

-- Brings metric_goal_progress to the goals recomputed in the temporary table fresh (then dropped),
-- and drops the rows of goals that are gone; returns how many rows changed.
CREATE FUNCTION outreach_metrics_goals_apply() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    total bigint;
BEGIN
    DELETE FROM metric_goal_progress t WHERE NOT EXISTS (SELECT 1 FROM outreach_goals g WHERE g.id = t.goal_id);
    GET DIAGNOSTICS total = ROW_COUNT;
    INSERT INTO metric_goal_progress AS t SELECT * FROM fresh
        ON CONFLICT (goal_id) DO UPDATE
       SET (service_line, metric, period_start, period_end, value, target, percent) =
           ROW(excluded.service_line, excluded.metric, excluded.period_start, excluded.period_end, excluded.value,
               excluded.target, excluded.percent)
     WHERE (t.service_line, t.metric, t.period_start, t.period_end, t.value, t.target, t.percent) IS DISTINCT FROM
           (excluded.service_line, excluded.metric, excluded.period_start, excluded.period_end, excluded.value,
            excluded.target, excluded.percent);
    GET DIAGNOSTICS n = ROW_COUNT;
    DROP TABLE fresh;
    RETURN total + n;
END $$;

-- Recomputes the metric tables. p_kind NULL: every period touched since the last refresh (the first
-- refresh computes everything); 'full': every period from the earliest data to today;
-- 'day'/'week'/'month'/'quarter' with p_start: that one period (p_start may be any day in it).
-- Serialized by an advisory lock; returns the run's id, how many periods it recomputed, how many
-- rows changed and the time each phase took.
CREATE FUNCTION outreach_metrics_refresh(p_kind text DEFAULT NULL, p_start date DEFAULT NULL,
                                         OUT run_id bigint, OUT periods integer, OUT rows_changed bigint,
                                         OUT phases text)
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
    v_now := v_started;
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
        SELECT least(
            (SELECT min(referred_at)::date FROM referrals), (SELECT min(service_date) FROM encounters),
            (SELECT min(scheduled_at)::date FROM activities), (SELECT min(completed_at)::date FROM activities),
            (SELECT min(opened_at)::date FROM cases), (SELECT min(period_start) FROM metric_referrals),
            (SELECT min(period_start) FROM metric_activity), (SELECT min(period_start) FROM metric_cases),
            v_today) INTO v_from;
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

    -- 5. New sources: the first referral ever falls in the period.
    CREATE TEMP TABLE fresh (period_kind, period_start, source_id, service_line) ON COMMIT DROP AS
    SELECT p.kind, p.start, f.source_id, f.service_line
      FROM metric_source_first f CROSS JOIN mp_kinds k
      JOIN mp_periods p ON p.kind = k.kind AND p.start = date_trunc(k.kind, f.first_at)::date;
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
