"""Benchmark: 10,000 coordinator digests rendered and delivered by outreach workers, against postfix's smtp-source.

Loads 10,000 coordinators with 20 due or overdue referral sources each into a scratch database,
queues one OverdueDigestJob per coordinator and lets outreach-worker processes (4 x 1 thread, then
2 x 2 threads) render and send every digest to postfix's smtp-sink, which accepts mail and throws it
away. In the same run smtp-source sends as many messages of the same size (one real digest, rendered
first to the stack's mail catcher) to the same sink with 4 parallel sessions, one connection per
message like the workers. Prints emails/s of each, their ratio and the workers' RSS. Goal: at least
1,000 digests/s. Not a test: it never fails on speed, only when a digest goes missing.

BENCH_DIGESTS scales the run down (e.g. BENCH_DIGESTS=500 for a quick try). Needs Debian's postfix
package for /usr/sbin/smtp-sink and /usr/sbin/smtp-source (no postfix daemon is used).
"""
import email
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psycopg2
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "bin"))
CONFIG = os.path.join(ROOT, "config", "outreach.conf")
N = int(os.environ.get("BENCH_DIGESTS", "10000"))
PER_DIGEST = 20
DB = "outreach_bench_digest"
QUEUE = "alerts"
# A Redis database of its own on the stack's server, so that nothing else using the stack (and its
# database 0) is touched or can take our jobs.
REDIS_DB = 9
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
CONFIGS = ((4, 1), (2, 2))  # (processes, concurrency)


def with_db(url, name):
    m = re.match(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    return m.group(1) + "/" + name + (m.group(3) or "")


def redis_url_db(url, db):
    """The stack's Redis URL with another database number."""
    if url.startswith("unix://"):
        return url.split("?")[0] + "?db=%d" % db
    m = re.match(r"^(rediss?://[^/]*)(/\d*)?$", url)
    return m.group(1) + "/%d" % db


def client(url):
    if url.startswith("unix://"):
        path, _, query = url[len("unix://"):].partition("?")
        db = int(query[3:]) if query.startswith("db=") else 0
        return redis.Redis(unix_socket_path=path, db=db, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stop(procs, timeout=30):
    """SIGTERM to all, then SIGKILL to any that has not ended in time."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.time() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def load(url):
    t0 = time.time()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("""INSERT INTO coordinators (name, email, time_zone)
                   SELECT (ARRAY['Maria','James','Aisha','Wei','Carlos','Priya','John','Fatima'])[1 + i %% 8]
                          || ' Coordinator' || i, 'c' || i || '@bench.example.org', 'UTC'
                     FROM generate_series(1, %s) i""", (N,))
    # PER_DIGEST sources per coordinator, last contacted 27 to 60 days ago: with the default 30-day
    # interval each is overdue or due within alerts.due_soon_days (3), so each is in the digest. The
    # step of about 1.65 days spreads every coordinator's sources over the whole range: each digest
    # lists some sources due soon and many overdue by up to 30 days.
    cur.execute("""INSERT INTO referral_sources (kind, first_name, last_name, specialty, phone, status,
                                                 coordinator_id, last_contact_at)
                   SELECT 'physician',
                          (ARRAY['Anna','Robert','Linda','Michael','Susan','David','Karen','Thomas',
                                 'Nancy','Daniel','Grace','Samuel'])[1 + i %% 12],
                          (ARRAY['Okafor','Lindqvist','Ramirez','Chen','Novak','Patel','Haddad',
                                 'Kowalski','Nguyen','Schmidt','Moreau','Tanaka'])[1 + (i / 12) %% 12] || '-' || i,
                          (ARRAY['Internal Medicine','Family Medicine','Cardiology','Orthopaedic Surgery',
                                 'Neurology','Pulmonary Disease','Nephrology','Oncology'])[1 + i %% 8],
                          '(555) 01' || lpad((i %% 100)::text, 2, '0') || '-' || lpad((i %% 10000)::text, 4, '0'),
                          'active', 1 + (i - 1) / %s,
                          now() - make_interval(secs => 27 * 86400 + (i::bigint * 142567) %% (33 * 86400))
                     FROM generate_series(1, %s) i""", (PER_DIGEST, N * PER_DIGEST))
    cur.execute("VACUUM ANALYZE referral_sources")
    cur.execute("VACUUM ANALYZE coordinators")
    cur.execute("SELECT count(*) FILTER (WHERE next_due_at <= now()), "
                "count(*) FILTER (WHERE next_due_at > now() AND next_due_at <= now() + interval '3 days'), "
                "count(*) FROM referral_sources")
    overdue, soon, total = cur.fetchone()
    conn.close()
    return overdue, soon, total, time.time() - t0


def push_digests(r, ids, date):
    """Pushes one OverdueDigestJob per coordinator the way any Sidekiq client does, in pipelined batches."""
    now = time.time()
    r.sadd("queues", QUEUE)
    jids = []
    batch = []
    with r.pipeline(transaction=False) as p:
        for cid in ids:
            jid = os.urandom(12).hex()
            jids.append(jid)
            batch.append(json.dumps({"class": "OverdueDigestJob", "args": [cid, date], "jid": jid, "queue": QUEUE,
                                     "retry": True, "created_at": now, "enqueued_at": now}))
            if len(batch) == 1000:
                p.lpush("queue:" + QUEUE, *batch)
                batch = []
        if batch:
            p.lpush("queue:" + QUEUE, *batch)
        p.execute()
    return jids


def start_workers(env, procs, conc, logdir, tag):
    workers, logs = [], []
    for i in range(procs):
        log = open(os.path.join(logdir, "%s-%d.log" % (tag, i)), "w")
        logs.append(log.name)
        workers.append(subprocess.Popen([os.path.join(BIN, "outreach-worker"), "-c", CONFIG, "--queues", QUEUE,
                                         "--concurrency", str(conc)], env=env, stdout=subprocess.DEVNULL,
                                        stderr=log))
        log.close()
    return workers, logs


def wait_started(r, n, workers, timeout=120):
    """The clock starts when the first job is taken, so that process start-up is not counted."""
    end = time.time() + timeout
    while r.llen("queue:" + QUEUE) >= n:
        if time.time() > end or all(w.poll() is not None for w in workers):
            return None
        time.sleep(0.001)
    return time.time()


def wait_drained(r, workers, timeout):
    """Done when the queue and the workers' private lists are empty."""
    end = time.time() + timeout
    while time.time() < end:
        if r.llen("queue:" + QUEUE) == 0:
            if sum(r.llen(k) for k in r.scan_iter("outreach:inflight:%s:*" % QUEUE, count=1000)) == 0:
                return time.time()
        if all(w.poll() is not None for w in workers):
            return None
        time.sleep(0.01)
    return None


def tail(path, lines=10):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def failed_jobs(r, jids):
    """Our jobs in the retry and dead sets, with their error."""
    mine = set(jids)
    out = []
    for key in ("retry", "dead"):
        for payload in r.zrange(key, 0, -1):
            try:
                job = json.loads(payload)
            except ValueError:
                continue
            if job.get("jid") in mine:
                out.append("%s: %s %s: %s" % (key, job.get("args"), job.get("error_class"), job.get("error_message")))
    return out


def db_counts(url):
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    cur.execute("SELECT status, count(*) FROM alert_emails WHERE kind = 'digest' GROUP BY status ORDER BY status")
    counts = dict(cur.fetchall())
    cur.execute("SELECT status, error FROM alert_emails WHERE kind = 'digest' AND status <> 'sent' LIMIT 1")
    samples = cur.fetchall()
    conn.close()
    return counts, samples


def reset_emails(url):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("TRUNCATE alert_emails")
    cur.execute("VACUUM ANALYZE alert_emails")
    conn.close()


class Sink:
    """postfix's smtp-sink on a free loopback port; counts the messages it accepted (-c)."""

    def __init__(self, workdir):
        self.port = free_port()
        self.out = os.path.join(workdir, "smtp-sink.out")
        args = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # it refuses to run as root without dropping privileges
        args += ["127.0.0.1:%d" % self.port, "1000"]
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        end = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > end:
                raise SystemExit("benchmark: smtp-sink did not start on 127.0.0.1:%d: %s"
                                 % (self.port, tail(self.out, 5).strip()))
            time.sleep(0.05)

    def messages(self):
        """Messages accepted so far (the last "mesg=N" counter it printed), or None."""
        time.sleep(0.05)
        with open(self.out, "rb") as f:
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else None

    def stop(self):
        stop([self.proc], 10)


def sample_digest(env, r, date, workdir):
    """Renders coordinator 1's digest to the stack's mail catcher; returns it as sent (headers and
    body, without the catcher's own X-Peer/X-MailFrom/X-RcptTo) and its size on the wire."""
    maildir = os.environ.get("OUTREACH_MAILDIR", os.path.join(ROOT, "var", "mail"))
    known = set(glob.glob(os.path.join(maildir, "new", "*")))
    r.flushdb()
    jid = push_digests(r, [1], date)[0]
    workers, logs = start_workers(env, 1, 1, workdir, "sample")
    try:
        ok = wait_started(r, 1, workers) is not None and wait_drained(r, workers, 60) is not None
    finally:
        stop(workers)
    needle = ("X-Outreach-Jid: " + jid).encode()
    path = None
    end = time.time() + 5
    while path is None and time.time() < end:
        for f in set(glob.glob(os.path.join(maildir, "new", "*"))) - known:
            try:
                with open(f, "rb") as fh:
                    if needle in fh.read():
                        path = f
                        break
            except OSError:
                continue
        else:
            time.sleep(0.1)
    if path is None:
        bad = failed_jobs(r, [jid])
        raise SystemExit("benchmark: the sample digest did not reach the mail catcher in %s (%s)\n%s\n%s"
                         % (maildir, "drained" if ok else "not drained", "\n".join(bad), tail(logs[0], 4).rstrip()))
    with open(path, "rb") as fh:
        raw = fh.read()
    os.unlink(path)
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    kept, skip = [], False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skip:
                kept.append(line)
            continue
        skip = line.split(b":", 1)[0].lower() in (b"x-peer", b"x-mailfrom", b"x-rcptto")
        if not skip:
            kept.append(line)
    message = b"\n".join(kept) + sep + body
    if not message.endswith(b"\n"):
        message += b"\n"
    wire = len(message.replace(b"\n", b"\r\n"))
    msg = email.message_from_bytes(message)
    return message, wire, " ".join(str(msg.get("Subject", "")).split())


def bench_outreach(env, r, url, ids, date, procs, conc, sink, workdir):
    reset_emails(url)
    r.flushdb()
    before = sink.messages() or 0
    jids = push_digests(r, ids, date)
    n = len(ids)
    workers, logs = start_workers(env, procs, conc, workdir, "w%dx%d" % (procs, conc))
    problems = []
    rate = rss = None
    try:
        t0 = wait_started(r, n, workers)
        if t0 is None:
            problems.append("no worker took a job")
        else:
            t1 = wait_drained(r, workers, max(300, n / 20))
            if t1 is None:
                problems.append("the queue did not drain (queue %d, in flight %d)"
                                % (r.llen("queue:" + QUEUE),
                                   sum(r.llen(k) for k in r.scan_iter("outreach:inflight:%s:*" % QUEUE))))
            else:
                rate = n / (t1 - t0)
        rss = max(rss_kb(w.pid) for w in workers)
        exited = [w.pid for w in workers if w.poll() is not None]
        if exited:
            problems.append("worker processes exited early: %s" % exited)
    finally:
        stop(workers)
    counts, samples = db_counts(url)
    sent = counts.get("sent", 0)
    if sent != n:
        problems.append("%d of %d digests sent (alert_emails by status: %s)%s"
                        % (sent, n, counts, "; first error: %s" % samples[0][1] if samples else ""))
    bad = failed_jobs(r, jids)
    if bad:
        problems.append("%d jobs in the retry or dead set, e.g. %s" % (len(bad), bad[0]))
    if sum(counts.values()) + len(bad) < n and rate is not None:
        problems.append("%d jobs vanished from Redis without a trace: did another process flush it?"
                        % (n - sum(counts.values()) - len(bad)))
    received = sink.messages()
    if received is not None and received - before != n:
        problems.append("smtp-sink accepted %d messages, expected %d" % (received - before, n))
    if problems:
        problems.append("the end of a worker's log:\n" + tail(logs[0], 4).rstrip())
    return rate, rss, problems


def bench_smtp_source(sink, message_file, n, sessions=4):
    before = sink.messages() or 0
    t0 = time.time()
    p = subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-F", message_file,
                        "-f", "outreach@localhost", "-t", "c1@bench.example.org", "127.0.0.1:%d" % sink.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t1 = time.time()
    problems = []
    if p.returncode != 0:
        problems.append("smtp-source exited with %d: %s" % (p.returncode, p.stdout.decode(errors="replace")[-500:]))
    received = sink.messages()
    if received is not None and received - before != n:
        problems.append("smtp-sink accepted %d of smtp-source's %d messages" % (received - before, n))
    return n / (t1 - t0), problems


def prepare(db):
    """Checks for postfix's tools and creates the scratch database db afresh on the stack's server;
    returns the stack's URL and the scratch database's."""
    for tool in (SMTP_SINK, SMTP_SOURCE):
        if not os.access(tool, os.X_OK):
            raise SystemExit("benchmark: %s is missing: install Debian's postfix package (scripts/deps)" % tool)
    admin = os.environ["OUTREACH_DATABASE_URL"]
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    conn.cursor().execute("CREATE DATABASE %s" % db)
    conn.close()
    return admin, with_db(admin, db)


def clean_up(sink, r, admin, db, workdir):
    """Stops the sink, empties the benchmark's Redis database, drops its PostgreSQL database and
    removes its scratch folder."""
    if sink is not None:
        sink.stop()
    r.flushdb()
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    conn.close()
    for f in glob.glob(os.path.join(workdir, "*")):
        os.unlink(f)
    os.rmdir(workdir)


def report(failures, what):
    """Exits 1 after listing the failures, if any."""
    if failures:
        sys.stdout.flush()
        print("benchmark: %s went missing:" % what, file=sys.stderr)
        for p in failures:
            print("  " + p, file=sys.stderr)
        sys.exit(1)


def main():
    admin, url = prepare(DB)
    rurl = redis_url_db(os.environ["OUTREACH_REDIS_URL"], REDIS_DB)
    env = dict(os.environ, OUTREACH_DATABASE_URL=url, OUTREACH_REDIS_URL=rurl)
    subprocess.run([os.path.join(BIN, "outreachctl"), "-c", CONFIG, "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = client(rurl)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    failures = []
    workdir = tempfile.mkdtemp(prefix="bench-digest-")
    os.chmod(workdir, 0o755)
    sink = None
    try:
        overdue, soon, total, secs = load(url)
        print("digest benchmark: %d coordinator digests of %d sources each (%d overdue, %d due within 3 days, "
              "%d sources); loaded in %.0f s; %d cores"
              % (N, PER_DIGEST, overdue, soon, total, secs, os.cpu_count()))

        message, size, subject = sample_digest(env, r, date, workdir)
        message_file = os.path.join(workdir, "digest.eml")
        with open(message_file, "wb") as f:
            f.write(message)
        os.chmod(message_file, 0o644)
        print("one digest: %d bytes on the wire (text and HTML), subject %r" % (size, subject))

        sink = Sink(workdir)
        senv = dict(env, OUTREACH_SMTP_HOST="127.0.0.1", OUTREACH_SMTP_PORT=str(sink.port), OUTREACH_SMTP_TLS="none")
        ids = list(range(1, N + 1))
        rates = {}
        for procs, conc in CONFIGS:
            rate, rss, problems = bench_outreach(senv, r, url, ids, date, procs, conc, sink, workdir)
            label = "outreach-worker x%d, concurrency %d:" % (procs, conc)
            if rate is None:
                print("%-38s did not finish: DIGESTS MISSING (below)" % label)
            elif problems:
                print("%-38s no figure: DIGESTS MISSING (below)" % label)
            else:
                rates[(procs, conc)] = rate
                print("%-38s %7.0f digests/s   RSS %5.1f MB/process   all %d sent"
                      % (label, rate, (rss or 0) / 1024, N))
            failures += problems

        srate, problems = bench_smtp_source(sink, message_file, N)
        failures += problems
        print("%-38s %7.0f messages/s (%d bytes each, -s 4, one connection per message)%s"
              % ("postfix smtp-source, 4 sessions:", srate, size, "   FAILED (below)" if problems else ""))
        if rates and not problems:
            best = max(rates.values())
            print("ratio outreach/smtp-source: %.2f; best outreach: %.0f digests/s (goal: at least 1,000 digests/s)"
                  % (best / srate, best))
    finally:
        clean_up(sink, r, admin, DB, workdir)
    report(failures, "digests")


if __name__ == "__main__":
    main()
