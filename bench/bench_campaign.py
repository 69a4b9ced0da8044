"""Benchmark: a campaign to 20,000 physicians (100,000 with BENCH_CAMPAIGN_RECIPIENTS=100000) delivered
by 4 outreach workers with tracking on, against postfix's smtp-source to the same smtp-sink.

Loads the recipients, one campaign with a segment, a variant (text and HTML, three links) and the
first-step rule into a scratch database, and enrolls them all. outreachd's campaign scan claims the
due enrollments and queues one CampaignSendJob each; 4 outreach-worker processes (concurrency
BENCH_CAMPAIGN_CONCURRENCY, default 4) render every message, rewrite its links to signed click
tokens, add the open pixel, List-Unsubscribe and the footer, and send it to smtp-sink. The clock runs
from the daemon's start to the last message recorded as sent. In the same run smtp-source sends as
many messages of the same size (one real campaign message, sent first to the stack's mail catcher) to
the same sink with 4 sessions. Prints messages/s, the workers' RSS and the ratio. Goal: at least
2,000 messages/s with the rate limits off. Not a test: it never fails on speed, only when a message
goes missing or is sent twice.
"""
import glob
import os
import subprocess
import tempfile
import time

import psycopg2

from bench_digest import (BIN, CONFIG, Sink, bench_smtp_source, clean_up, client, prepare, redis_url_db, report,
                          rss_kb, stop, tail)

N = int(os.environ.get("BENCH_CAMPAIGN_RECIPIENTS", "20000"))
CONCURRENCY = int(os.environ.get("BENCH_CAMPAIGN_CONCURRENCY", "4"))
PROCS = 4
DB = "outreach_bench_campaign"
REDIS_DB = 10
SAMPLE = "sample@bench-sample.example.org"


def load(url):
    """N recipients plus the sample one; a campaign whose first step sends 'intro'. Returns the rule."""
    t0 = time.time()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("INSERT INTO coordinators (name, email) VALUES ('Bench Coordinator', 'coord@bench.example.org')")
    cur.execute("""INSERT INTO referral_sources (kind, first_name, last_name, credential, specialty, email, status,
                                                 coordinator_id, city, state)
                   SELECT 'physician',
                          (ARRAY['Anna','Robert','Linda','Michael','Susan','David','Karen','Thomas'])[1 + i %% 8],
                          (ARRAY['Okafor','Lindqvist','Ramirez','Chen','Novak','Patel','Haddad','Nguyen'])
                              [1 + (i / 8) %% 8] || '-' || i,
                          'MD', 'Orthopaedic Surgery', 'dr' || i || '@practice' || (i %% 500) || '.example.org',
                          'active', 1, 'Austin', 'TX'
                     FROM generate_series(1, %s) i""", (N,))
    cur.execute("INSERT INTO referral_sources (kind, first_name, last_name, email, status, coordinator_id) "
                "VALUES ('physician', 'Sam', 'Sample', %s, 'active', 1)", (SAMPLE,))
    cur.execute("""INSERT INTO campaigns (name, sender_name, sender_email, reply_to, postal_address, status)
                   VALUES ('Bench campaign', 'Lakeside Physical Therapy', 'hello@lakeside-pt.example.org',
                           'team@lakeside-pt.example.org', 'Lakeside PT, 12 Harbor Road, Austin, TX 78701', 'active')""")
    cur.execute("INSERT INTO campaign_segments (campaign_id, name, position) VALUES (1, 'everyone', 1)")
    text = ("Dear Dr. {{source.last_name}},\n\nOur post-operative rehabilitation programme for {{source.specialty}} patients in "
            "{{source.city}} now has same-week openings. Protocols: https://lakeside-pt.example.org/protocols\n"
            "Referral form: https://lakeside-pt.example.org/refer?from=email&src=bench\n\n"
            "Your coordinator, {{coordinator.name}}, will be glad to help.\n")
    html = ("<html><body><p>Dear Dr. {{source.last_name}},</p><p>Our post-operative rehabilitation programme for "
            "{{source.specialty}} patients in {{source.city}} now has same-week openings.</p><ul>"
            "<li><a href=\"https://lakeside-pt.example.org/protocols\">Our protocols</a></li>"
            "<li><a href=\"https://lakeside-pt.example.org/refer?from=email&amp;src=bench\">Referral form</a></li>"
            "<li><a href=\"https://lakeside-pt.example.org/team\">Meet the team</a></li></ul>"
            "<p>Your coordinator, {{coordinator.name}}, will be glad to help.</p></body></html>")
    cur.execute("INSERT INTO campaign_messages (campaign_id, variant, subject, text_template, html_template) "
                "VALUES (1, 'intro', 'Same-week rehab openings for your patients, Dr. {{source.last_name}}', %s, %s)",
                (text, html))
    cur.execute("INSERT INTO campaign_steps (campaign_id, after_step, position, condition, action, variant) "
                "VALUES (1, 0, 1, 'always', 'send', 'intro') RETURNING id")
    rule = cur.fetchone()[0]
    # Enrolled, not yet due; the sample first.
    cur.execute("INSERT INTO campaign_enrollments (campaign_id, source_id, segment_id) "
                "SELECT 1, id, 1 FROM referral_sources")
    cur.execute("UPDATE campaign_enrollments e SET next_action_at = now(), next_step_id = %s FROM referral_sources s "
                "WHERE s.id = e.source_id AND s.email = %s", (rule, SAMPLE))
    cur.execute("VACUUM ANALYZE")
    conn.close()
    return rule, time.time() - t0


def stat(pid):
    """The fields of /proc/PID/stat after the command name (state is [0], utime [11], stime [12])."""
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()


def proc_cpu(pids):
    """CPU seconds the processes have used so far (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            f = stat(pid)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def pg_cpu():
    """CPU seconds the private PostgreSQL has used: the postmaster, its live children and the ones it
    reaped (None when the stack's data folder is unknown)."""
    data = os.environ.get("OUTREACH_PG_DATA")
    if not data:
        return None
    try:
        with open(os.path.join(data, "postmaster.pid")) as f:
            pm = int(f.readline())
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")

    total = 0
    f = stat(pm)
    total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != pm:
            try:
                f = stat(int(d))
            except OSError:
                continue
            if int(f[1]) == pm:
                total += int(f[11]) + int(f[12])
    return total / tick


def sent(url):
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FILTER (WHERE status = 'sent'), count(*), count(DISTINCT enrollment_id) "
                "FROM email_messages")
    row = cur.fetchone()
    conn.close()
    return row


def start(env, argv, logpath):
    with open(logpath, "w") as log:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)


def daemon(env, workdir, tag):
    return start(dict(env, OUTREACH_HTTP_LISTEN="127.0.0.1:0", OUTREACH_CAMPAIGNS_SCAN_INTERVAL="1"),
                 [os.path.join(BIN, "outreachd"), "-c", CONFIG], os.path.join(workdir, tag + "-daemon.log"))


def workers(env, n, conc, workdir, tag):
    return [start(env, [os.path.join(BIN, "outreach-worker"), "-c", CONFIG, "--queues", "campaigns",
                        "--concurrency", str(conc)], os.path.join(workdir, "%s-worker-%d.log" % (tag, i)))
            for i in range(n)]


def wait_sent(url, want, procs, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if sent(url)[0] >= want:
            return time.time()
        if any(p.poll() is not None for p in procs):
            return None
        time.sleep(0.1)
    return None


def sample_message(env, url, workdir):
    """The sample recipient's message as the stack's mail catcher got it (its own headers dropped)."""
    maildir = os.environ.get("OUTREACH_MAILDIR", os.path.join(os.path.dirname(CONFIG), "..", "var", "mail"))
    procs = workers(env, 1, 1, workdir, "sample") + [daemon(env, workdir, "sample")]
    try:
        if wait_sent(url, 1, procs, 120) is None:
            raise SystemExit("benchmark: the sample message was not sent\n" +
                             tail(os.path.join(workdir, "sample-worker-0.log"), 5))
    finally:
        stop(procs)
    end = time.time() + 10
    while time.time() < end:
        for f in sorted(glob.glob(os.path.join(maildir, "new", "*")), key=os.path.getmtime, reverse=True):
            with open(f, "rb") as fh:
                raw = fh.read()
            if SAMPLE.encode() in raw:
                os.unlink(f)
                head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
                kept = [l for l in head.split(b"\n")
                        if l.split(b":", 1)[0].lower() not in (b"x-peer", b"x-mailfrom", b"x-rcptto")]
                return b"\n".join(kept) + sep + body
        time.sleep(0.1)
    raise SystemExit("benchmark: the sample message did not reach the mail catcher in " + maildir)


def main():
    admin, url = prepare(DB)
    rurl = redis_url_db(os.environ["OUTREACH_REDIS_URL"], REDIS_DB)
    workdir = tempfile.mkdtemp(prefix="bench-campaign-")
    os.chmod(workdir, 0o755)
    keyfile = os.path.join(workdir, "token.key")
    with open(keyfile, "w") as f:
        f.write(os.urandom(32).hex())
    env = dict(os.environ, OUTREACH_DATABASE_URL=url, OUTREACH_REDIS_URL=rurl,
               OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE=keyfile, OUTREACH_CAMPAIGNS_PUBLIC_URL="https://t.lakeside-pt.example.org",
               OUTREACH_CAMPAIGNS_MAX_PER_SECOND="0", OUTREACH_CAMPAIGNS_MAX_PER_DOMAIN_PER_MINUTE="0")
    subprocess.run([os.path.join(BIN, "outreachctl"), "-c", CONFIG, "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = client(rurl)
    r.flushdb()
    sink = None
    failures = []
    try:
        rule, secs = load(url)
        print("campaign benchmark: %d recipients at 500 domains, tracking on (3 links, open pixel, "
              "List-Unsubscribe), rate limits off; loaded in %.0f s; %d cores" % (N, secs, os.cpu_count()))
        message = sample_message(env, url, workdir)
        message_file = os.path.join(workdir, "campaign.eml")
        with open(message_file, "wb") as f:
            f.write(message)
        os.chmod(message_file, 0o644)
        size = len(message.replace(b"\n", b"\r\n"))
        print("one message: %d bytes on the wire (text and HTML)" % size)

        conn = psycopg2.connect(url)
        conn.autocommit = True
        conn.cursor().execute("UPDATE campaign_enrollments SET next_action_at = now(), next_step_id = %s "
                              "WHERE state = 'active' AND step = 0", (rule,))
        conn.close()
        sink = Sink(workdir)
        senv = dict(env, OUTREACH_SMTP_HOST="127.0.0.1", OUTREACH_SMTP_PORT=str(sink.port), OUTREACH_SMTP_TLS="none")
        before = sink.messages() or 0
        ws = workers(senv, PROCS, CONCURRENCY, workdir, "run")
        time.sleep(1)  # the workers are up before the clock starts
        cpu0 = pg_cpu()
        t0 = time.time()
        d = daemon(senv, workdir, "run")
        rss = 0
        t1 = None
        try:
            end = time.time() + max(600, N / 50)
            while time.time() < end:
                rss = max([rss] + [rss_kb(w.pid) for w in ws])
                if sent(url)[0] >= N + 1:
                    t1 = time.time()
                    wcpu = proc_cpu([w.pid for w in ws])
                    break
                if any(p.poll() is not None for p in ws + [d]):
                    break
                time.sleep(0.2)
        finally:
            stop(ws + [d])
        time.sleep(0.5)  # their server processes are reaped
        cpu1 = pg_cpu()
        ok, rows, enrollments = sent(url)
        received = (sink.messages() or 0) - before
        label = "outreach-worker x%d, concurrency %d:" % (PROCS, CONCURRENCY)
        if t1 is None or ok != N + 1 or rows != N + 1 or enrollments != N + 1 or received != N:
            failures.append("%d of %d messages sent (%d rows, %d enrollments); smtp-sink accepted %d\n%s"
                            % (ok - 1, N, rows - 1, enrollments - 1, received,
                               tail(os.path.join(workdir, "run-worker-0.log"), 5)))
            print("%-38s no figure: MESSAGES MISSING (below)" % label)
        else:
            rate = N / (t1 - t0)
            print("%-38s %7.0f messages/s   RSS %5.1f MB/process   all %d sent once (scan, render, track, send)"
                  % (label, rate, rss / 1024, N))
            if cpu0 is not None and cpu1 is not None:
                print("%-38s %7.3f ms of CPU per message" % ("PostgreSQL:", (cpu1 - cpu0) * 1000 / N))
            print("%-38s %7.3f ms of CPU per message" % ("outreach-worker (all 4):", wcpu * 1000 / N))
        srate, problems = bench_smtp_source(sink, message_file, N)
        failures += problems
        print("%-38s %7.0f messages/s (%d bytes each, -s 4, one connection per message)%s"
              % ("postfix smtp-source, 4 sessions:", srate, size, "   FAILED (below)" if problems else ""))
        if not failures:
            print("ratio outreach/smtp-source: %.2f (goal: at least 2,000 messages/s)" % (rate / srate))
    finally:
        clean_up(sink, r, admin, DB, workdir)
    report(failures, "campaign messages")


if __name__ == "__main__":
    main()
