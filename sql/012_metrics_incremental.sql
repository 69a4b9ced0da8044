-- 012_metrics_incremental: an hourly metric refresh costs what changed, not the size of its periods.
--
-- A regular refresh (after the first) no longer recomputes the weeks, months and quarters its days
-- fall in. It recomputes the touched days of referrals and revenue from the source rows, compares
-- them with the day rows kept, and adds only the differences to the weeks, months and quarters;
-- per-coordinator and per-service-line figures take the same differences (and the changes of a
-- source's "referred at all" and "new" states), gone-quiet sources are recomputed for the sources
-- whose count changed and for the periods that began since the last refresh. The coordinator a
-- source's figures are counted for is kept in metric_source_owner: a change of owner moves that
-- source's figures from one coordinator to the other at the next refresh, no trigger needed.
-- Activities and cases note the span of days they count in (two days per row) instead of every
-- day; the refresh expands the spans, merged, into days. Full and single-period refreshes are the
-- computation of 009 (outreach_metrics_recompute).

-- Spans of days an activity or a case counts in: from_day to to_day, both included; to_day NULL:
-- still open, up to the day of the refresh. Append-only like metric_dirty_days.
CREATE TABLE metric_dirty_spans (from_day date NOT NULL, to_day date);

-- The coordinator (0: none) each source's figures are counted for in metric_coordinators.
CREATE TABLE metric_source_owner (
    source_id      bigint PRIMARY KEY,
    coordinator_id bigint NOT NULL
);
CREATE INDEX metric_new_sources_source_idx ON metric_new_sources (source_id);

-- A change of owner is found by the refresh (referral_sources against metric_source_owner).
DROP TRIGGER referral_sources_metrics_upd ON referral_sources;
DROP FUNCTION outreach_metrics_note_sources();

CREATE OR REPLACE FUNCTION outreach_metrics_note_activities() RETURNS trigger LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO metric_dirty_spans
        SELECT DISTINCT least(scheduled_at, completed_at)::date,
               CASE WHEN completed_at IS NOT NULL OR canceled_at IS NOT NULL
                    THEN greatest(scheduled_at, completed_at, canceled_at)::date END
          FROM new_rows WHERE least(scheduled_at, completed_at) IS NOT NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO metric_dirty_spans
        SELECT DISTINCT least(scheduled_at, completed_at)::date,
               CASE WHEN completed_at IS NOT NULL OR canceled_at IS NOT NULL
                    THEN greatest(scheduled_at, completed_at, canceled_at)::date END
          FROM old_rows WHERE least(scheduled_at, completed_at) IS NOT NULL;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION outreach_metrics_note_cases() RETURNS trigger LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO metric_dirty_spans
        SELECT DISTINCT opened_at::date, CASE WHEN resolved_at IS NOT NULL THEN greatest(opened_at, resolved_at)::date END
          FROM new_rows;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO metric_dirty_spans
        SELECT DISTINCT opened_at::date, CASE WHEN resolved_at IS NOT NULL THEN greatest(opened_at, resolved_at)::date END
          FROM old_rows;
    END IF;
    RETURN NULL;
END $$;

-- The full and single-period computation of 009, called by the refresh below.
ALTER FUNCTION outreach_metrics_refresh(text, date) RENAME TO outreach_metrics_recompute;

-- Adds the differences of the temporary table d_coord (period_kind, period_start, coordinator_id,
-- service_line, referrals, revenue_cents, referring_sources, new_sources: differences; creates: a
-- row of metric_referrals or metric_new_sources behind it came to be) to metric_coordinators and,
-- summed over coordinators, to metric_service_lines. A row that falls to all zeros stays only
-- while a row of metric_referrals or metric_new_sources is behind it (as a fresh computation would
-- have it). Returns how many rows changed.
CREATE FUNCTION outreach_metrics_add_coord() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    INSERT INTO metric_coordinators AS t
    SELECT period_kind, period_start, coordinator_id, service_line, sum(referrals), sum(revenue_cents),
           sum(referring_sources), sum(new_sources)
      FROM d_coord GROUP BY 1, 2, 3, 4
    HAVING sum(referrals) <> 0 OR sum(revenue_cents) <> 0 OR sum(referring_sources) <> 0 OR sum(new_sources) <> 0
        OR bool_or(creates)
     ORDER BY 1, 2, 3, 4
        ON CONFLICT (period_kind, period_start, coordinator_id, service_line) DO UPDATE
       SET (referrals, revenue_cents, referring_sources, new_sources) =
           ROW(t.referrals + excluded.referrals, t.revenue_cents + excluded.revenue_cents,
               t.referring_sources + excluded.referring_sources, t.new_sources + excluded.new_sources)
     WHERE (excluded.referrals, excluded.revenue_cents, excluded.referring_sources, excluded.new_sources) <> (0, 0, 0, 0);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM metric_coordinators t
     USING (SELECT DISTINCT period_kind, period_start, coordinator_id, service_line FROM d_coord) d
     WHERE (t.period_kind, t.period_start, t.coordinator_id, t.service_line)
         = (d.period_kind, d.period_start, d.coordinator_id, d.service_line)
       AND (t.referrals, t.revenue_cents, t.referring_sources, t.new_sources) = (0, 0, 0, 0)
       AND NOT EXISTS (SELECT 1 FROM metric_referrals m JOIN metric_source_owner o ON o.source_id = m.source_id
                        WHERE m.period_kind = t.period_kind AND m.period_start = t.period_start
                          AND m.service_line = t.service_line AND o.coordinator_id = t.coordinator_id)
       AND NOT EXISTS (SELECT 1 FROM metric_new_sources m JOIN metric_source_owner o ON o.source_id = m.source_id
                        WHERE m.period_kind = t.period_kind AND m.period_start = t.period_start
                          AND m.service_line = t.service_line AND o.coordinator_id = t.coordinator_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;

    INSERT INTO metric_service_lines AS t
    SELECT period_kind, period_start, service_line, sum(referrals), sum(revenue_cents), sum(referring_sources),
           sum(new_sources)
      FROM d_coord GROUP BY 1, 2, 3
    HAVING sum(referrals) <> 0 OR sum(revenue_cents) <> 0 OR sum(referring_sources) <> 0 OR sum(new_sources) <> 0
        OR bool_or(creates)
     ORDER BY 1, 2, 3
        ON CONFLICT (period_kind, period_start, service_line) DO UPDATE
       SET (referrals, revenue_cents, referring_sources, new_sources) =
           ROW(t.referrals + excluded.referrals, t.revenue_cents + excluded.revenue_cents,
               t.referring_sources + excluded.referring_sources, t.new_sources + excluded.new_sources)
     WHERE (excluded.referrals, excluded.revenue_cents, excluded.referring_sources, excluded.new_sources) <> (0, 0, 0, 0);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM metric_service_lines t
     USING (SELECT DISTINCT period_kind, period_start, service_line FROM d_coord) d
     WHERE (t.period_kind, t.period_start, t.service_line) = (d.period_kind, d.period_start, d.service_line)
       AND (t.referrals, t.revenue_cents, t.referring_sources, t.new_sources) = (0, 0, 0, 0)
       AND NOT EXISTS (SELECT 1 FROM metric_referrals m WHERE m.period_kind = t.period_kind
                          AND m.period_start = t.period_start AND m.service_line = t.service_line)
       AND NOT EXISTS (SELECT 1 FROM metric_new_sources m WHERE m.period_kind = t.period_kind
                          AND m.period_start = t.period_start AND m.service_line = t.service_line);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DROP TABLE d_coord;
    RETURN total;
END $$;

-- Sources new since the last refresh get their owner; a source whose coordinator changed has its
-- figures (every period's referrals, revenue, referring and new) moved from the coordinator they
-- were counted for to its owner now. Returns how many rows changed.
CREATE FUNCTION outreach_metrics_move_owners() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    DROP TABLE IF EXISTS mp_moves, d_coord;
    INSERT INTO metric_source_owner
    SELECT s.id, coalesce(s.coordinator_id, 0) FROM referral_sources s
     WHERE NOT EXISTS (SELECT 1 FROM metric_source_owner o WHERE o.source_id = s.id);
    CREATE TEMP TABLE mp_moves ON COMMIT DROP AS
    SELECT s.id AS source_id, o.coordinator_id AS old_id, coalesce(s.coordinator_id, 0) AS new_id
      FROM referral_sources s JOIN metric_source_owner o ON o.source_id = s.id
     WHERE o.coordinator_id <> coalesce(s.coordinator_id, 0);
    IF NOT EXISTS (SELECT 1 FROM mp_moves) THEN
        DROP TABLE mp_moves;
        RETURN 0;
    END IF;
    CREATE TEMP TABLE d_coord ON COMMIT DROP AS
    SELECT m.period_kind, m.period_start, x.coordinator_id, m.service_line, x.sign * m.referrals AS referrals,
           x.sign * m.revenue_cents AS revenue_cents, x.sign * (m.referrals > 0)::integer AS referring_sources,
           0 AS new_sources, x.sign = 1 AS creates
      FROM mp_moves v JOIN metric_referrals m ON m.source_id = v.source_id
     CROSS JOIN LATERAL (VALUES (v.old_id, -1), (v.new_id, 1)) x (coordinator_id, sign)
    UNION ALL
    SELECT m.period_kind, m.period_start, x.coordinator_id, m.service_line, 0, 0, 0, x.sign, x.sign = 1
      FROM mp_moves v JOIN metric_new_sources m ON m.source_id = v.source_id
     CROSS JOIN LATERAL (VALUES (v.old_id, -1), (v.new_id, 1)) x (coordinator_id, sign);
    UPDATE metric_source_owner o SET coordinator_id = v.new_id FROM mp_moves v WHERE o.source_id = v.source_id;
    DROP TABLE mp_moves;
    RETURN outreach_metrics_add_coord();
END $$;

-- Brings the metric tables up to what changed since p_last (the as_of of the last regular refresh)
-- as of p_now: notes taken, days recomputed and their differences added (see the top of this file).
-- Returns how many periods it touched, how many rows changed and the time each phase took.
CREATE FUNCTION outreach_metrics_changes(p_last timestamptz, p_now timestamptz,
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
    SELECT s.source_id, f.referred_at AS first_at, f.service_line
      FROM mp_sources s CROSS JOIN LATERAL (
        SELECT r.referred_at, r.service_line FROM referrals r WHERE r.source_id = s.source_id
         ORDER BY r.referred_at, r.id LIMIT 1) f;
    DELETE FROM metric_source_first t
     WHERE t.source_id IN (SELECT source_id FROM mp_sources)
       AND NOT EXISTS (SELECT 1 FROM f_first f WHERE f.source_id = t.source_id);
    INSERT INTO metric_source_first AS t SELECT * FROM f_first
        ON CONFLICT (source_id) DO UPDATE SET (first_at, service_line) = ROW(excluded.first_at, excluded.service_line)
        WHERE (t.first_at, t.service_line) IS DISTINCT FROM (excluded.first_at, excluded.service_line);
    -- Sources whose first referral falls in a period that may have begun since the last refresh.
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
        INSERT INTO f_day
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

    -- 4. New sources of the sources whose first referral moved (or whose period began), against
    -- the rows kept for them.
    CREATE TEMP TABLE f_new ON COMMIT DROP AS
    SELECT k.kind AS period_kind, date_trunc(k.kind, f.first_at)::date AS period_start, f.source_id, f.service_line
      FROM metric_source_first f CROSS JOIN mp_kinds k
     WHERE f.source_id IN (SELECT source_id FROM mp_sources) AND date_trunc(k.kind, f.first_at)::date <= v_today;
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

    SELECT x.changed, x.took INTO v_n, v_took FROM outreach_metrics_activity_cases(periods > 60, v_lo, v_hi, v_all) x;
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

-- Recomputes the metric tables. p_kind NULL: what changed since the last refresh (the first refresh
-- computes everything); 'full': every period from the earliest data to today;
-- 'day'/'week'/'month'/'quarter' with p_start: that one period (p_start may be any day in it),
-- after what changed is brought in (so that its days and the weeks, months and quarters they add
-- up to agree). Serialized by an advisory lock; returns the run's id, how many periods it touched,
-- how many rows changed and the time each phase took.
CREATE FUNCTION outreach_metrics_refresh(p_kind text DEFAULT NULL, p_start date DEFAULT NULL,
                                         OUT run_id bigint, OUT periods integer, OUT rows_changed bigint,
                                         OUT phases text)
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
#variable_conflict use_column
DECLARE
    v_started timestamptz;
    v_last timestamptz;
    v_n bigint := 0;
    v_regular boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('outreach_metrics_refresh'));
    v_started := clock_timestamp();
    SELECT max(as_of) INTO v_last FROM metric_runs WHERE scope <> 'period';
    v_regular := v_last IS NOT NULL AND EXISTS (SELECT 1 FROM metric_source_owner);
    IF v_regular AND p_kind IS NULL THEN
        SELECT * INTO periods, rows_changed, phases FROM outreach_metrics_changes(v_last, v_started);
        INSERT INTO metric_runs (scope, as_of, periods, rows_changed, started_at, finished_at, phases)
        VALUES ('incremental', v_started, periods, rows_changed, v_started, clock_timestamp(), phases)
        RETURNING id INTO run_id;
        RETURN;
    END IF;
    -- The computation reads the owners of the sources as it goes: none may change meanwhile
    -- (writers of referrals do not wait; a change of owner does).
    LOCK TABLE referral_sources IN SHARE MODE;
    IF p_kind IS NULL OR p_kind = 'full' THEN
        DELETE FROM metric_dirty_spans;
        DELETE FROM metric_source_owner;
        INSERT INTO metric_source_owner SELECT id, coalesce(coordinator_id, 0) FROM referral_sources;
        SELECT * INTO run_id, periods, rows_changed, phases FROM outreach_metrics_recompute('full');
        RETURN;
    END IF;
    IF p_kind IN ('day', 'week', 'month', 'quarter') AND p_start IS NOT NULL THEN
        IF v_regular THEN
            -- Not a regular run: the next one starts from the same as_of and sees these days again.
            SELECT rows_changed INTO v_n FROM outreach_metrics_changes(v_last, v_started);
        ELSE
            v_n := outreach_metrics_move_owners();
        END IF;
    END IF;
    SELECT * INTO run_id, periods, rows_changed, phases FROM outreach_metrics_recompute(p_kind, p_start);
    IF v_n > 0 THEN
        rows_changed := rows_changed + v_n;
        UPDATE metric_runs SET rows_changed = rows_changed + v_n WHERE id = run_id;
    END IF;
END $$;
