"""Benchmark: campaign segments over many referral sources: `outreachctl campaign create --dry-run`
and `campaign activate` (one set-based INSERT ... SELECT of every segment, first segment winning),
beside the peer: the same enrollment written by hand as one SQL statement with the values pasted in
(CASE WHEN for the first segment), run with psycopg2. Both must enroll exactly the same sources.

BENCH_SOURCES (default 200,000; 1,000,000 for the full size) referral sources, a tenth of them tagged,
2% suppressed, 10% without email; three segments of the kinds operators write.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402  (the integration tests' helpers: database URLs, admin statements)

BIN = os.environ.get("BIN", os.path.join(ROOT, "bin"))
CONFIG = os.path.join(ROOT, "config", "outreach.conf")
TAXONOMY = os.path.join(ROOT, "tests", "fixtures", "npi", "nucc_taxonomy.csv")
SOURCES = int(os.environ.get("BENCH_SOURCES", "200000"))

SEGMENTS = [
    ("ortho", {"specialty_groupings": ["Orthopaedic Surgery"], "states": ["TX", "OK"], "kinds": ["physician"]}),
    ("sports", {"specialty_codes": ["207QS0010X", "207RS0010X", "2081S0010X"], "postal_prefixes": ["787", "750"]}),
    ("tagged", {"tags": ["vip", "2026:q1"], "cities": ["austin", "dallas"], "statuses": ["prospect", "active"]}),
]
# The peer's hand-written conditions, values pasted in (what the tool never does).
PEER = [
    "EXISTS (SELECT 1 FROM taxonomies t WHERE t.code = s.specialty_code AND (t.grouping = 'Orthopaedic Surgery' "
    "OR t.classification = 'Orthopaedic Surgery')) AND s.state IN ('TX', 'OK') AND s.kind = 'physician'",
    "s.specialty_code IN ('207QS0010X', '207RS0010X', '2081S0010X') AND (s.postal_code LIKE '787%' "
    "OR s.postal_code LIKE '750%')",
    "EXISTS (SELECT 1 FROM source_tags g WHERE g.source_id = s.id AND g.tag IN ('vip', '2026:q1')) "
    "AND lower(s.city) IN ('austin', 'dallas') AND s.status IN ('prospect', 'active')",
]


def ctl(env, *args):
    t = time.monotonic()
    p = subprocess.run([os.path.join(BIN, "outreachctl"), "-c", CONFIG, *map(str, args)], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("outreachctl %s failed:\n%s%s" % (" ".join(map(str, args)), p.stdout, p.stderr))
    return time.monotonic() - t, p.stdout


def definition(name):
    return {"name": name, "sender": {"name": "Riverside PT", "email": "pt@bench.example.org"},
            "postal_address": "1 Main St, Austin, TX",
            "segments": [{"name": n, "criteria": c} for n, c in SEGMENTS],
            "messages": [{"variant": "intro", "subject": "Hi", "html": "<p>Hi</p>", "text": "Hi"}],
            "steps": [{"after_step": 0, "condition": "always", "action": "send", "variant": "intro"}]}


def main():
    admin = os.environ["OUTREACH_DATABASE_URL"]
    db = "outreach_bench_campaign"
    harness._admin_exec(admin, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    harness._admin_exec(admin, "CREATE DATABASE %s" % db)
    url = harness.with_database(admin, db)
    env = dict(os.environ, OUTREACH_DATABASE_URL=url)
    ctl(env, "migrate")
    ctl(env, "import-taxonomy", TAXONOMY)

    t0 = time.monotonic()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("""INSERT INTO referral_sources (kind, last_name, organization_name, specialty_code, state, city,
                          postal_code, status, email)
                   SELECT CASE WHEN i %% 20 = 0 THEN 'organization' ELSE 'physician' END, 'Source ' || i,
                          'Practice ' || i,
                          (ARRAY['207X00000X','207XX0005X','207QS0010X','207RS0010X','2081S0010X','207R00000X',
                                 '207Q00000X','208000000X'])[1 + i %% 8],
                          (ARRAY['TX','OK','CA','NY','IL','FL'])[1 + (i / 8) %% 6],
                          (ARRAY['Austin','Dallas','Houston','Tulsa','Chicago','Miami','AUSTIN'])[1 + (i / 3) %% 7],
                          (ARRAY['78701','75201','77002','74103','60601','33101','78613'])[1 + (i / 5) %% 7],
                          (ARRAY['prospect','active','inactive'])[1 + (i / 7) %% 3],
                          CASE WHEN i %% 10 = 3 THEN NULL ELSE 'dr' || i || '@bench.example.org' END
                     FROM generate_series(1, %s) i""", (SOURCES,))
    cur.execute("""INSERT INTO source_tags (source_id, tag)
                   SELECT id, (ARRAY['vip','2026:q1','other'])[1 + id % 3] FROM referral_sources WHERE id % 10 = 1""")
    cur.execute("""INSERT INTO suppressions (address, reason)
                   SELECT lower(email), 'unsubscribe' FROM referral_sources WHERE id % 50 = 7 AND email IS NOT NULL""")
    cur.execute("ANALYZE")
    print("data: %d sources loaded in %.1f s" % (SOURCES, time.monotonic() - t0))

    tmp = tempfile.mkdtemp(prefix="outreach-bench-")
    paths = []
    for name in ("bench", "peer"):
        path = os.path.join(tmp, name + ".json")
        with open(path, "w") as f:
            json.dump(definition(name), f)
        paths.append(path)

    dry, out = ctl(env, "campaign", "create", paths[0], "--dry-run")
    would = int(re.search(r"^(\d+) sources would be enrolled", out, re.M).group(1))
    ctl(env, "campaign", "create", paths[0])
    act, out = ctl(env, "campaign", "activate", "bench")
    enrolled = int(re.search(r"(\d+) sources? newly enrolled", out).group(1))
    again, out = ctl(env, "campaign", "activate", "bench")
    again_n = int(re.search(r"(\d+) sources? newly enrolled", out).group(1))

    # The peer: the same enrollment, hand-written, into a second campaign of the same definition.
    ctl(env, "campaign", "create", paths[1])
    cur.execute("SELECT c.id, st.id FROM campaigns c JOIN campaign_steps st ON st.campaign_id = c.id "
                "WHERE c.name = 'peer'")
    cid, step = cur.fetchone()
    cur.execute("SELECT id FROM campaign_segments WHERE campaign_id = %s ORDER BY position", (cid,))
    segs = [r[0] for r in cur.fetchall()]
    case = " ".join("WHEN %s THEN %d" % (c, s) for c, s in zip(PEER, segs))
    sql = ("INSERT INTO campaign_enrollments (campaign_id, source_id, segment_id, next_action_at, next_step_id) "
           "SELECT %d, s.id, CASE %s END, now(), %d FROM referral_sources s WHERE (%s) AND s.email IS NOT NULL "
           "AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.address = lower(s.email))"
           % (cid, case, step, " OR ".join("(%s)" % c for c in PEER)))
    cur.execute("SET statement_timeout = 0")
    t = time.monotonic()
    cur.execute(sql)
    peer = time.monotonic() - t
    peer_n = cur.rowcount

    cur.execute("""SELECT count(*) FROM (
                     SELECT source_id, g.position FROM campaign_enrollments e JOIN campaign_segments g ON g.id = e.segment_id
                      WHERE e.campaign_id = (SELECT id FROM campaigns WHERE name = 'bench')
                     EXCEPT
                     SELECT source_id, g.position FROM campaign_enrollments e JOIN campaign_segments g ON g.id = e.segment_id
                      WHERE e.campaign_id = %s) d""", (cid,))
    differ = cur.fetchone()[0]
    conn.close()

    print("segments: 3 over %d sources" % SOURCES)
    print("  dry run (process included):  %.2f s, %d would be enrolled" % (dry, would))
    print("  activate:                    %.2f s, %d enrolled (%.0f enrollments/s)" % (act, enrolled, enrolled / act))
    print("  activate again:              %.2f s, %d more" % (again, again_n))
    print("  peer, hand-written SQL with pasted values (psycopg2): %.2f s, %d enrolled" % (peer, peer_n))
    print("  ratio activate / peer: %.2f" % (act / peer))
    if not (would == enrolled == peer_n) or again_n != 0 or differ != 0:
        sys.exit("MISMATCH: dry run %d, activate %d, again %d, peer %d, differing %d"
                 % (would, enrolled, again_n, peer_n, differ))
    harness._admin_exec(admin, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)


if __name__ == "__main__":
    main()
