"""Benchmark: 100,000 PingJobs drained by outreach workers and by Sidekiq's own server, same Redis, same run.

Prints jobs/s of each and their ratio, the workers' RSS, and the delay from a scheduled job's time to
its run (p50/p99). Not a test: it never fails on speed, only when a job goes missing.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "bin"))
N = int(os.environ.get("BENCH_JOBS", "100000"))
CONFIG = os.path.join(ROOT, "config", "outreach.conf")


def client():
    url = os.environ["OUTREACH_REDIS_URL"]
    if url.startswith("unix://"):
        return redis.Redis(unix_socket_path=url[len("unix://"):].split("?")[0], decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def push_many(r, queue, n, args=None):
    """Pushes n jobs the way any Sidekiq client does (SADD queues + LPUSH), in pipelined batches."""
    now = time.time()
    r.sadd("queues", queue)
    batch = []
    for i in range(n):
        batch.append(json.dumps({"class": "PingJob", "args": args or [], "jid": "%024x" % (i + 1),
                                 "queue": queue, "retry": True, "created_at": now, "enqueued_at": now}))
        if len(batch) == 1000:
            r.lpush("queue:" + queue, *batch)
            batch = []
    if batch:
        r.lpush("queue:" + queue, *batch)


def wait_started(r, queue, n, timeout=120):
    """The clock starts when the first job is taken, so that process start-up is not counted."""
    start = time.time()
    while r.llen("queue:" + queue) >= n and time.time() - start < timeout:
        time.sleep(0.0005)
    return time.time()


def wait_drained(r, queue, inflight_prefix, timeout=600):
    start = time.time()
    while time.time() - start < timeout:
        if r.llen("queue:" + queue) == 0:
            busy = sum(r.llen(k) for k in r.scan_iter(inflight_prefix + "*")) if inflight_prefix else 0
            if busy == 0:
                return time.time()
        time.sleep(0.005)
    raise SystemExit("benchmark: the queue did not drain within %d s" % timeout)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bench_outreach(r, procs, conc):
    r.flushall()
    push_many(r, "bench", N)
    env = dict(os.environ)
    workers = []
    for _ in range(procs):
        workers.append(subprocess.Popen([os.path.join(BIN, "outreach-worker"), "-c", CONFIG, "--queues", "bench",
                                         "--concurrency", str(conc)], env=env, stderr=subprocess.DEVNULL))
    t0 = wait_started(r, "bench", N)
    t1 = wait_drained(r, "bench", "outreach:inflight:bench:")
    rss = max(rss_kb(w.pid) for w in workers)
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(30)
    processed = int(r.get("stat:processed") or 0)
    dead = r.zcard("dead")
    return N / (t1 - t0), rss, processed, dead


def bench_sidekiq(r):
    r.flushall()
    push_many(r, "bench", N)
    env = dict(os.environ)
    p = subprocess.Popen(["sidekiq", "-r", os.path.join(ROOT, "bench", "sidekiq_app.rb"), "-c", "10", "-q", "bench"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = wait_started(r, "bench", N)
    # Sidekiq's basic fetch pops (BRPOP) without a private list: drained = queue empty and idle
    while r.llen("queue:bench") > 0:
        time.sleep(0.005)
    # the last popped jobs may still run: wait until no process reports busy
    while True:
        busy = sum(int(r.hget(k, "busy") or 0) for k in r.smembers("processes"))
        if busy == 0:
            break
        time.sleep(0.005)
    t1 = time.time()
    rss = rss_kb(p.pid)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    return N / (t1 - t0), rss, int(r.get("stat:processed") or 0)


def bench_schedule_delay(r, count=500):
    """Schedules count jobs spread over 2 s and records when each first shows as run."""
    r.flushall()
    d = subprocess.Popen([os.path.join(BIN, "outreachd"), "-c", CONFIG], stderr=subprocess.DEVNULL)
    w = subprocess.Popen([os.path.join(BIN, "outreach-worker"), "-c", CONFIG, "--queues", "sched",
                          "--concurrency", "4"], stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    base = time.time() + 1.0
    at = {}
    pipe = r.pipeline()
    for i in range(count):
        jid = "%024x" % (i + 1)
        when = base + 2.0 * i / count
        at[jid] = when
        pipe.zadd("schedule", {json.dumps({"class": "PingJob", "args": ["sched-done"], "jid": jid, "queue": "sched",
                                           "retry": True, "created_at": time.time(), "at": when}): when})
    pipe.execute()
    seen = {}
    deadline = base + 15
    while len(seen) < count and time.time() < deadline:
        now = time.time()
        for jid in r.smembers("sched-done"):
            seen.setdefault(jid, now)
        time.sleep(0.002)
    for p in (w, d):
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    delays = sorted(seen[j] - at[j] for j in seen)
    if not delays:
        return None, None, 0
    return delays[len(delays) // 2], delays[min(len(delays) - 1, int(len(delays) * 0.99))], len(seen)


def main():
    r = client()
    print("queue benchmark: %d PingJobs, Redis at %s, %d cores" % (N, os.environ["OUTREACH_REDIS_URL"], os.cpu_count()))
    results = {}
    for procs, conc in ((1, 1), (2, 2)):
        rate, rss, processed, dead = bench_outreach(r, procs, conc)
        results[(procs, conc)] = rate
        ok = "all %d accounted for" % N if processed == N and dead == 0 else "MISSING: processed %d, dead %d" % (processed, dead)
        print("outreach-worker x%d, concurrency %d, reliable fetch: %9.0f jobs/s   RSS %5.1f MB/process   %s"
              % (procs, conc, rate, rss / 1024, ok))
        if processed != N:
            sys.exit(1)
    srate, srss, sproc = bench_sidekiq(r)
    print("sidekiq 6.4 (Debian), concurrency 10, basic fetch:      %9.0f jobs/s   RSS %5.1f MB/process   processed %d"
          % (srate, srss / 1024, sproc))
    best = max(results.values())
    print("ratio outreach/sidekiq: %.1fx (goal: at least 4x)" % (best / srate))
    p50, p99, n = bench_schedule_delay(r)
    if n:
        print("scheduled jobs: %d run, delay from 'at' to run p50 %.0f ms, p99 %.0f ms (poll interval %s ms)"
              % (n, p50 * 1000, p99 * 1000, os.environ.get("OUTREACH_SCHEDULER_POLL_INTERVAL_MS", "500")))


if __name__ == "__main__":
    main()
