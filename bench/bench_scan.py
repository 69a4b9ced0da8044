"""Benchmark: the follow-up scan over 1,000,000 referral sources and 10,000 coordinators.

Loads the data set into a scratch database, runs outreachd against it and reads the scan durations
from its /metrics; prints the first scan (which claims and enqueues a digest per due coordinator)
and the steady-state scans, and the daemon's resident memory. Goal: under 2 s per scan, under 16 MB.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "bin"))
CONFIG = os.path.join(ROOT, "config", "outreach.conf")
SOURCES = int(os.environ.get("BENCH_SOURCES", "1000000"))
COORDINATORS = int(os.environ.get("BENCH_COORDINATORS", "10000"))


def with_db(url, name):
    m = re.match(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    return m.group(1) + "/" + name + (m.group(3) or "")


def metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        body = r.read().decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), body, re.M)
    return float(m.group(1)) if m else None


def main():
    admin = os.environ["OUTREACH_DATABASE_URL"]
    db = "outreach_bench_scan"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    conn.cursor().execute("CREATE DATABASE %s" % db)
    conn.close()
    url = with_db(admin, db)
    env = dict(os.environ, OUTREACH_DATABASE_URL=url)
    subprocess.run([os.path.join(BIN, "outreachctl"), "-c", CONFIG, "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    t0 = time.time()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("""INSERT INTO coordinators (name, email, time_zone)
                   SELECT 'Coordinator ' || i, 'c' || i || '@bench.example.org',
                          (ARRAY['America/New_York','America/Chicago','America/Denver','America/Los_Angeles',
                                 'Pacific/Honolulu','UTC','Europe/London','Asia/Tokyo'])[1 + i %% 8]
                     FROM generate_series(1, %s) i""", (COORDINATORS,))
    # Contacts spread over the last 60 days with a 30-day interval: about half overdue.
    cur.execute("""INSERT INTO referral_sources (kind, last_name, status, coordinator_id, last_contact_at)
                   SELECT 'physician', 'Source ' || i, 'active', 1 + i %% %s,
                          now() - make_interval(secs => (i * 5.1843) %% (60 * 86400))
                     FROM generate_series(1, %s) i""", (COORDINATORS, SOURCES))
    cur.execute("VACUUM ANALYZE referral_sources")
    cur.execute("VACUUM ANALYZE coordinators")
    cur.execute("SELECT count(*) FILTER (WHERE next_due_at <= now()), "
                "count(*) FILTER (WHERE next_due_at <= now() + interval '3 days') FROM referral_sources")
    overdue, due = cur.fetchone()
    print("scan benchmark: %d sources (%d overdue, %d due within 3 days), %d coordinators; loaded in %.0f s"
          % (SOURCES, overdue, due, COORDINATORS, time.time() - t0))

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    denv = dict(env, OUTREACH_HTTP_LISTEN="127.0.0.1:%d" % port, OUTREACH_SCHEDULER_SCAN_INTERVAL="1",
                OUTREACH_ALERTS_DIGEST_HOUR="0")
    subprocess.run(["redis-cli", "-s", os.environ["OUTREACH_REDIS_SOCKET"], "flushall"], stdout=subprocess.DEVNULL)
    d = subprocess.Popen([os.path.join(BIN, "outreachd"), "-c", CONFIG], env=denv, stderr=subprocess.DEVNULL)
    try:
        durations = []
        last_count = 0
        end = time.time() + 120
        while len(durations) < 6 and time.time() < end:
            time.sleep(0.2)
            try:
                count = metric(port, "outreach_scans_total") or 0
            except OSError:
                continue
            if count > last_count:
                durations.append(metric(port, "outreach_scan_last_duration_seconds"))
                last_count = count
        digests = metric(port, "outreach_digests_enqueued_total")
        with open("/proc/%d/status" % d.pid) as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(30)
    if not durations:
        raise SystemExit("benchmark: no scan completed")
    steady = sorted(durations[1:]) or durations
    print("first scan (claims and enqueues %d digests): %.3f s" % (digests or 0, durations[0]))
    print("steady-state scans: median %.3f s, max %.3f s over %d scans (goal: under 2 s)"
          % (steady[len(steady) // 2], steady[-1], len(steady)))
    print("outreachd RSS: %.1f MB (goal: under 16 MB)" % (rss / 1024))
    conn.close()
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    conn.close()


if __name__ == "__main__":
    main()
