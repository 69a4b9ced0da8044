"""Benchmark: the outcome metrics over 10,000,000 referrals and encounters spread over three years.

Loads the data set into a scratch database, then times (1) the full computation (`outreachctl metrics
--period full`, the first, into empty tables), (2) an incremental run after an hour's worth of new
referrals, encounters, activities and cases and (3) a full computation again, over the figures kept;
beside each, the same figures computed by one plain SQL query per metric
(GROUP BY over all rows, nothing kept) in the same run. Goal: full under 60 s, incremental under
1 s. BENCH_REFERRALS sets the size (default 1,000,000; 10000000 for the full size).
"""
import os
import re
import subprocess
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "bin"))
CONFIG = os.path.join(ROOT, "config", "outreach.conf")
REFERRALS = int(os.environ.get("BENCH_REFERRALS", "1000000"))
SOURCES = max(100, REFERRALS // 200)
COORDINATORS = 200
DAYS = 3 * 365

# One plain query per metric, every period kind at once: what a BI tool would run without the tables.
KINDS = "(VALUES ('day'), ('week'), ('month'), ('quarter')) k(kind)"
PLAIN = {
    "referrals per source and line": "SELECT k.kind, date_trunc(k.kind, r.referred_at), r.source_id, r.service_line, "
                                     "count(*) FROM referrals r, " + KINDS + " GROUP BY 1, 2, 3, 4",
    "revenue per source and line": "SELECT k.kind, date_trunc(k.kind, e.service_date), r.source_id, r.service_line, "
                                   "sum(e.amount_cents) FROM encounters e JOIN referrals r ON r.id = e.referral_id, "
                                   + KINDS + " GROUP BY 1, 2, 3, 4",
    "per coordinator and line": "SELECT k.kind, date_trunc(k.kind, r.referred_at), s.coordinator_id, r.service_line, "
                                "count(*), count(DISTINCT r.source_id) FROM referrals r JOIN referral_sources s "
                                "ON s.id = r.source_id, " + KINDS + " GROUP BY 1, 2, 3, 4",
    "new sources": "SELECT k.kind, date_trunc(k.kind, f.first), count(*) FROM (SELECT source_id, min(referred_at) "
                   "AS first FROM referrals GROUP BY 1) f, " + KINDS + " GROUP BY 1, 2",
    "gone quiet": "WITH p AS (SELECT DISTINCT k.kind, date_trunc(k.kind, referred_at) AS start, source_id "
                  "FROM referrals, " + KINDS + ") SELECT a.kind, a.start, count(*) FROM p a WHERE NOT EXISTS "
                  "(SELECT 1 FROM p b WHERE b.kind = a.kind AND b.source_id = a.source_id AND b.start = a.start + "
                  "CASE a.kind WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week' WHEN 'month' "
                  "THEN interval '1 month' ELSE interval '3 months' END) GROUP BY 1, 2",
    "activity": "SELECT k.kind, date_trunc(k.kind, completed_at), coordinator_id, activities.kind, count(*) FROM activities, "
                + KINDS + " WHERE completed_at IS NOT NULL GROUP BY 1, 2, 3, 4",
    "cases": "SELECT k.kind, date_trunc(k.kind, resolved_at), category, priority, count(*), "
             "avg(resolved_at - opened_at), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
             "resolved_at - opened_at)) FROM cases, " + KINDS + " WHERE resolved_at IS NOT NULL GROUP BY 1, 2, 3, 4",
}


def with_db(url, name):
    m = re.match(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    return m.group(1) + "/" + name + (m.group(3) or "")


def ctl(env, *args):
    """Runs outreachctl; returns its time and its output (the run's summary, then its phases) on one line."""
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(BIN, "outreachctl"), "-c", CONFIG, *args], env=env, check=True,
                       capture_output=True, text=True)
    return time.monotonic() - t0, "; ".join(line.strip() for line in p.stdout.strip().splitlines())


def plain(cur):
    total = 0.0
    for name, q in PLAIN.items():
        t0 = time.monotonic()
        cur.execute("SELECT count(*) FROM (%s) x" % q)
        total += time.monotonic() - t0
    return total


def main():
    admin = os.environ["OUTREACH_DATABASE_URL"]
    db = "outreach_bench_metrics"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    conn.cursor().execute("CREATE DATABASE %s" % db)
    conn.close()
    url = with_db(admin, db)
    env = dict(os.environ, OUTREACH_DATABASE_URL=url, OUTREACH_DATABASE_STATEMENT_TIMEOUT="0")
    ctl(env, "migrate")

    t0 = time.monotonic()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET statement_timeout = 0")
    cur.execute("INSERT INTO coordinators (name, email) SELECT 'C' || i, 'c' || i || '@bench.example.org' "
                "FROM generate_series(1, %s) i", (COORDINATORS,))
    cur.execute("INSERT INTO referral_sources (last_name, status, coordinator_id) "
                "SELECT 'S' || i, 'active', 1 + i %% %s FROM generate_series(1, %s) i", (COORDINATORS, SOURCES))
    cur.execute("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                "SELECT 1 + (i::bigint * 7919) %% %s, (ARRAY['Cardiology','Imaging','Oncology','Hospice','Physical Therapy'])[1 + i %% 5], "
                "       date_trunc('day', now()) - interval '1 day' * %s + random() * interval '1 day' * %s, 'p' || i "
                "  FROM generate_series(1, %s) i", (SOURCES, DAYS, DAYS - 1, REFERRALS))
    cur.execute("INSERT INTO encounters (referral_id, service_date, amount_cents) "
                "SELECT id, least((referred_at + random() * interval '20 days')::date, current_date - 1), "
                "       (random() * 200000)::bigint FROM referrals")
    # One statement, as a bulk writer would: the activities trigger notes what it touches.
    t_act = time.monotonic()
    cur.execute("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at) "
                "SELECT 1 + i %% %s, 1 + i %% %s, 'call', t, CASE WHEN i %% 10 <> 0 THEN t + interval '2 days' END "
                "  FROM (SELECT i, now() - random() * interval '1 day' * %s AS t "
                "          FROM generate_series(1, %s) i) x", (SOURCES, COORDINATORS, DAYS, REFERRALS // 30))
    t_act = time.monotonic() - t_act
    cur.execute("INSERT INTO cases (source_id, category, priority, status, summary, opened_at, resolved_at) "
                "SELECT 1 + i %% %s, (ARRAY['billing','clinical','scheduling'])[1 + i %% 3], "
                "       (ARRAY['low','normal','high','urgent'])[1 + i %% 4], 'resolved', 'x', t, "
                "       t + random() * interval '10 days' "
                "  FROM (SELECT i, now() - interval '11 days' - random() * interval '1 day' * %s AS t "
                "          FROM generate_series(1, %s) i) x", (SOURCES, DAYS, REFERRALS // 300))
    cur.execute("INSERT INTO outreach_goals (service_line, metric, period_start, period_end, target) "
                "SELECT l, m, d, (d + interval '3 months' - interval '1 day')::date, 1000 "
                "  FROM unnest(ARRAY['Cardiology','Imaging','Oncology','Hospice','Physical Therapy']) l, "
                "       unnest(ARRAY['referrals','revenue_cents','new_sources','activities']) m, "
                "       generate_series(date_trunc('quarter', now() - interval '3 years'), now(), interval '3 months') d")
    cur.execute("VACUUM ANALYZE")
    print("loaded %d referrals, %d encounters, %d sources over %d days in %.0f s" % (
        REFERRALS, REFERRALS, SOURCES, DAYS, time.monotonic() - t0))
    print("  of which %d activities (a tenth still open) in one statement: %.1f s" % (REFERRALS // 30, t_act))

    full, out = ctl(env, "metrics", "--period", "full")
    peer = plain(cur)
    print("full computation:        %6.2f s  (%s)" % (full, out))
    print("  plain SQL, one query per metric, nothing kept: %6.2f s  (ratio %.2f)" % (peer, full / peer))

    # An hour's worth of new rows, spread over the last hour.
    per_hour = max(1, REFERRALS // (DAYS * 24))
    cur.execute("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                "SELECT 1 + (i::bigint * 104729) %% %s, 'Imaging', now() - random() * interval '1 hour', 'h' || i "
                "  FROM generate_series(1, %s) i", (SOURCES, per_hour))
    cur.execute("INSERT INTO encounters (referral_id, service_date, amount_cents) "
                "SELECT id, current_date, 12345 FROM referrals WHERE patient_key LIKE 'h%%'")
    cur.execute("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at) "
                "SELECT 1 + i %% %s, 1 + i %% %s, 'email', now() - interval '30 minutes', now() "
                "  FROM generate_series(1, %s) i", (SOURCES, COORDINATORS, max(1, per_hour // 30)))
    incr, out = ctl(env, "metrics")
    print("incremental, an hour (%d referrals and encounters): %6.2f s  (%s)" % (per_hour, incr, out))
    print("  plain SQL over everything again: %6.2f s  (ratio %.3f)" % (peer, incr / peer))
    idle, out = ctl(env, "metrics")
    print("incremental, nothing new: %6.2f s  (%s)" % (idle, out))
    again, out = ctl(env, "metrics", "--period", "full")
    print("full computation over the figures kept (compared, only differences written): %6.2f s  (%s)" % (again, out))
    print("  plain SQL: %6.2f s  (ratio %.2f)" % (peer, again / peer))
    conn.close()
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    conn.close()


if __name__ == "__main__":
    main()
