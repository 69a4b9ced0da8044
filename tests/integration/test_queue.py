"""The job queue: Sidekiq's wire format both ways, reliable fetch, retries, scheduled and dead jobs."""
import json
import os
import re
import signal
import subprocess
import time

import harness
from test_daemon import http_get

PEER = str(harness.ROOT / "tests" / "integration" / "sidekiq_peer.rb")


class QueueCase(harness.Case):
    """Workers, outreachd and outreachctl on a migrated database and an empty Redis."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_ctl = None

    def setUp(self):
        super().setUp()
        self.migrate()
        self.redis().flushall()

    # --- helpers ------------------------------------------------------------------------------
    def ruby(self, *args):
        p = subprocess.run(["ruby", PEER, *args], env=self.env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def worker(self, *extra, env=None, queues="default"):
        w = self.start_bin("outreach-worker", "-c", str(harness.CONFIG), "--queues", queues, *extra, env=env)
        w.wait_log(r"ready: identity")
        return w

    def daemon(self, env=None):
        d = self.start_bin("outreachd", "-c", str(harness.CONFIG), env=env)
        d.wait_log(r"outreachd \S+ ready")
        return d

    def ctl(self, *args, check=True):
        return self.run_bin("outreachctl", "-c", str(harness.CONFIG), *args, check=check)

    def push_raw(self, payload, queue="default"):
        r = self.redis()
        r.sadd("queues", queue)
        r.lpush("queue:" + queue, payload)

    def reload_with(self, proc, conf, text):
        """Writes text into conf and reloads proc (a worker or outreachd); the log's mark before the
        reload. Fails if the reload warns that a key takes effect only after a restart."""
        with open(conf, "w") as f:
            f.write(text)
        return proc.reload()

    def dead_jobs(self):
        return [json.loads(j) for j in self.redis().zrange("dead", 0, -1)]

    def ghost(self, queue, *jobs):
        """The private list of a worker that died on another host, holding jobs; its key."""
        key = "outreach:inflight:%s:ghost.example:%d:aaaaaaaaaaaa" % (queue, 4000 + len(self.redis().smembers("outreach:inflight")))
        r = self.redis()
        r.rpush(key, *jobs)
        r.sadd("outreach:inflight", key)
        return key



class Queue(QueueCase):
    def running_ping(self, reply, ms, env=None):
        """A worker running a PingJob of ms milliseconds (which records its jid in the set reply when
        done): the worker, the jid and a Redis client, once the job has started."""
        w = self.worker(env=env)
        jid = self.ctl("enqueue", "PingJob", "--args", json.dumps([reply, ms])).stdout.strip()
        r = self.redis()
        self.wait_for("the job to start", lambda: r.llen("queue:default") == 0)
        time.sleep(0.3)
        return w, jid, r

    def test_sidekiq_client_push_runs(self):
        self.worker()
        jid = self.ruby("push", "PingJob", "default", '["rb-reply", 0]')
        self.assertRegex(jid, r"^[0-9a-f]{24}$")
        self.wait_for("the job's jid in the reply set", lambda: self.redis().sismember("rb-reply", jid))

    def test_sidekiq_api_reads_what_outreach_writes(self):
        w = self.worker("--concurrency", "3", "--tag", "itest")
        self.ctl("enqueue", "PingJob", "--args", '["api-reply", 0]')
        self.push_raw('{"class":"PingJob","args":[1]}')  # invalid args: dead, counted as failed
        time.sleep(6)  # one heartbeat flushes the counters
        stats = json.loads(self.ruby("stats"))
        self.assertEqual(stats["processed"], 2)
        self.assertEqual(stats["failed"], 1)
        self.assertEqual(stats["dead_size"], 1)
        procs = [p for p in stats["processes"] if p["tag"] == "itest"]
        self.assertEqual(len(procs), 1, stats["processes"])
        self.assertEqual(procs[0]["queues"], ["default"])
        self.assertEqual(procs[0]["concurrency"], 3)
        self.assertEqual(procs[0]["pid"], w.p.pid)
        self.assertEqual(procs[0]["quiet"], "false")
        # outreachctl stats agrees
        ours = json.loads(self.ctl("stats", "--json").stdout)
        self.assertEqual(ours["processes"], 1)
        self.assertEqual(ours["processed"], stats["processed"])

    def test_busy_worker_shows_in_workers(self):
        self.worker()
        self.ctl("enqueue", "PingJob", "--args", '["busy-reply", 7000]')
        time.sleep(6)
        stats = json.loads(self.ruby("stats"))
        self.assertEqual([(w["queue"], w["class"]) for w in stats["workers"]], [("default", "PingJob")])
        self.assertEqual(stats["processes"][0]["busy"], 1)

    def test_scheduled_job_from_sidekiq_runs_on_time(self):
        self.daemon()
        self.worker()
        at = time.time() + 2
        jid = self.ruby("push", "PingJob", "default", '["sched-reply", 0]', str(at))
        self.assertEqual(self.redis().zcard("schedule"), 1)
        self.wait_for("the scheduled job", lambda: self.redis().sismember("sched-reply", jid))
        late = time.time() - at
        self.assertLess(late, 1.5, "ran %.2f s after its time" % late)
        self.assertEqual(self.redis().zcard("schedule"), 0)

    def test_retry_then_dead(self):
        self.daemon()
        self.worker()
        r = self.redis()
        r.set("not-a-set", "x")
        jid = self.ruby("push", "PingJob", "default", '["not-a-set", 0]')
        # "retry": 1 would need the Ruby side; push ours with retry 1 by hand as well
        job = {"class": "PingJob", "args": ["not-a-set", 0], "jid": "ab" * 12, "queue": "default",
               "retry": 1, "created_at": time.time(), "enqueued_at": time.time()}
        self.push_raw(json.dumps(job))
        retries = self.wait_for("two jobs in retry", lambda: r.zcard("retry") == 2 and r.zrange("retry", 0, -1))
        by_jid = {json.loads(j)["jid"]: json.loads(j) for j in retries}
        first = by_jid[jid]
        self.assertEqual(first["retry_count"], 0)
        self.assertEqual(first["error_class"], "RedisError")
        self.assertIn("not-a-set", first["error_message"])
        self.assertIsInstance(first["failed_at"], float)
        # Sidekiq's backoff for the first retry: 0**4 + 15 + rand(10)*1 -> 15..24 s
        score = r.zscore("retry", retries[0])
        self.assertTrue(14 <= score - first["failed_at"] <= 25, score - first["failed_at"])
        # make both due now: the daemon moves them back, they fail again
        for j in retries:
            r.zadd("retry", {j: time.time() - 1})
        self.wait_for("the retry:1 job in dead", lambda: any(d["jid"] == "ab" * 12 for d in self.dead_jobs()))
        dead = [d for d in self.dead_jobs() if d["jid"] == "ab" * 12][0]
        self.assertEqual(dead["retry_count"], 1)
        self.assertIn("retries exhausted", dead["error_message"])
        again = self.wait_for("the other job back in retry",
                              lambda: [json.loads(j) for j in r.zrange("retry", 0, -1) if json.loads(j)["jid"] == jid])
        self.assertEqual(again[0]["retry_count"], 1)
        self.assertIn("retried_at", again[0])
        # the Sidekiq API sees them
        stats = json.loads(self.ruby("stats"))
        self.assertEqual([x["jid"] for x in stats["retries"]], [jid])
        self.assertIn("ab" * 12, [x["jid"] for x in stats["dead"]])
        # retry-dead puts it back on its queue; discard-dead removes
        r.delete("not-a-set")
        self.ctl("retry-dead", "ab" * 12)
        self.wait_for("the requeued job to run", lambda: r.sismember("not-a-set", "ab" * 12))
        self.assertEqual(self.ctl("discard-dead", "--all").stdout.strip(), "discarded 0 jobs")

    def test_malformed_flood_goes_to_dead(self):
        w = self.worker()
        bad = ["", "not json", "[1,2]", "{}", '{"class":"PingJob"}', '{"args":[]}', '{"class":7,"args":[]}',
               '{"class":"PingJob","args":{}}', '{"class":"NoSuchJob","args":[]}',
               '{"class":"PingJob","args":[1,2,3]}', '{"class":"PingJob","args":["k",-1]}',
               '{"class":"PingJob","args":[],"retry":"often"}', b"\xff\xfe", '{"class":"PingJob","args":[],"queue":"../x"}',
               json.dumps({"class": "PingJob", "args": ["x" * (2 << 20)]})]
        r = self.redis()
        for i in range(20):
            for b in bad:
                self.push_raw(b)
        self.wait_for("every bad payload in dead", lambda: r.zcard("dead") == 20 * len(bad), timeout=30)
        reasons = {}
        for d in self.dead_jobs():
            reasons.setdefault(d["error_class"], []).append(d["error_message"])
            self.assertTrue(d["error_message"])
        self.assertEqual(set(reasons), {"InvalidJob", "UnknownJobClass", "ArgumentError"})
        msgs = " | ".join(m for ms in reasons.values() for m in ms)
        for want in ["not JSON", "no \"class\" field", "no \"args\" field", "\"args\" is not an array",
                     "no handler for class \"NoSuchJob\"", "at most 2 arguments", "work_ms must be",
                     "exceeds the limit of 1048576 bytes", "\"retry\" is not", "not a valid queue name"]:
            self.assertIn(want, msgs)
        # the worker is alive and serving
        self.assertIsNone(w.p.poll())
        self.assertIn("pong", self.ctl("ping", "--timeout", "10").stdout)
        self.assertEqual(r.llen("queue:default"), 0)

    def test_sigterm_mid_job_hands_it_back_to_the_head(self):
        w, jid, r = self.running_ping("term-reply", 5000, env={"OUTREACH_WORKER_SHUTDOWN_TIMEOUT": "1"})
        self.ctl("enqueue", "PingJob", "--args", '["later", 0]')
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(10), 0, w.log())
        self.assertIn("handing them back", w.log())
        # the interrupted job is at the head (the right end), before the one pushed after it
        head = json.loads(r.lindex("queue:default", -1))
        self.assertEqual(head["jid"], jid)
        self.assertEqual(r.llen("queue:default"), 2)
        self.assertEqual(r.smembers("processes"), set())
        self.assertEqual(r.smembers("outreach:inflight"), set())
        # and a new worker runs it
        self.worker()
        self.wait_for("the handed back job", lambda: r.sismember("term-reply", jid), timeout=15)

    def test_a_refused_hand_back_leaves_the_job_and_the_worker_stops(self):
        w, jid, r = self.running_ping("refused-reply", 5000, env={"OUTREACH_WORKER_SHUTDOWN_TIMEOUT": "1"})
        # The queue's key holds a string: Redis refuses to push the job back onto it.
        r.set("queue:default", "not a list")
        try:
            w.signal(signal.SIGTERM)
            self.assertIsNotNone(w.wait(15), "the worker did not stop")
            self.assertIn("wait for the sweep", w.log())
            kept = [json.loads(j)["jid"] for lst in r.smembers("outreach:inflight") for j in r.lrange(lst, 0, -1)]
            self.assertEqual(kept, [jid])
        finally:
            r.delete("queue:default")
        # Once the queue is a list again, the sweep of a new worker hands the job back and it runs.
        self.worker()
        self.wait_for("the job handed back by the sweep", lambda: r.sismember("refused-reply", jid), timeout=20)

    def test_second_sigterm_hands_back_at_once(self):
        w, jid, r = self.running_ping("term2-reply", 20000)
        w.signal(signal.SIGTERM)
        w.wait_log("running jobs have 25 s to finish")
        started = time.time()
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(10), 0)
        self.assertLess(time.time() - started, 3)
        self.assertIn("second stop signal", w.log())
        self.assertEqual(json.loads(r.lindex("queue:default", -1))["jid"], jid)

    def test_reloads_while_job_threads_run(self):
        """Four job threads run a stream of jobs while the worker is reloaded again and again, each
        time with another log.level and smtp.timeout (reloadable: each job thread makes its mailer
        anew from the new configuration): every job runs once, none is retried or dead, each reload
        is logged, and the worker serves on. Under ThreadSanitizer (BIN=build/tsan/bin) a race
        between a reload and the job threads fails it on the report."""
        text = open(harness.CONFIG).read()
        for line in ("\nlevel = info\n", "\ntimeout = 30\n\n[http]\n"):
            self.assertIn(line, text)
        conf = self.write_config(text)
        w = self.worker_with(conf, "--concurrency", "4")
        r = self.redis()
        r.sadd("queues", "default")
        jids = []
        for i in range(8):
            batch = ["%024x" % (0xab0000 + len(jids) + k) for k in range(40)]
            jids += batch
            r.lpush("queue:default", *(ping_job(jid, "default", "reload-reply") for jid in batch))
            level = "debug" if i % 2 == 0 else "info"
            self.reload_with(w, conf, text.replace("\nlevel = info\n", "\nlevel = %s\n" % level)
                             .replace("\ntimeout = 30\n\n[http]\n", "\ntimeout = %d\n\n[http]\n" % (20 + i)))
        self.wait_for("every job to run", lambda: r.scard("reload-reply") == len(jids), timeout=30)
        self.assertEqual(sorted(r.smembers("reload-reply")), sorted(jids))
        self.assertEqual((r.zcard("retry"), r.zcard("dead"), r.llen("queue:default")), (0, 0, 0))
        self.assertEqual(len(re.findall(r"configuration reloaded", w.log())), 8, w.log())
        self.assertIn("pong", self.ctl("ping", "--timeout", "10").stdout)
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(30), 0, w.log())
        # the reply set holds each jid once, however often it ran: the counts the worker flushed at its
        # stop say each ran once (and the ping's job)
        self.assertEqual((r.get("stat:processed"), r.get("stat:failed")), (str(len(jids) + 1), "0"))

    def test_replaced_configurations_are_freed_once_no_job_holds_them(self):
        """A reload's replaced configuration is freed at a heartbeat once every job thread has
        passed the top of its loop since; a thread busy with a job started before the reload holds
        it (and those after it) until the job ends."""
        text = open(harness.CONFIG).read()
        self.assertIn("\nlevel = info\n", text)
        debug = text.replace("\nlevel = info\n", "\nlevel = debug\n")
        conf = self.write_config(debug)
        w = self.worker_with(conf, "--concurrency", "2")
        held = r"replaced configurations: %d freed, %d still held by job threads$"

        def reload():
            return self.reload_with(w, conf, debug)

        # Idle threads pass the top of their loop at least once a second: freed at a heartbeat.
        w.wait_log(held % (1, 0), since=reload(), timeout=15)
        # A job that runs 16 s holds the two configurations replaced while it runs (a heartbeat comes
        # within 5 s of the reloads), then frees them.
        jid = self.ctl("enqueue", "PingJob", "--args", json.dumps(["epoch-reply", 16000])).stdout.strip()
        r = self.redis()
        self.wait_for("the job to start", lambda: r.llen("queue:default") == 0)
        mark = reload()
        reload()
        w.wait_log(held % (0, 2), since=mark, timeout=15)
        self.assertNotRegex(w.log()[mark:], r"replaced configurations: [12] freed")
        self.wait_for("the job to end", lambda: r.sismember("epoch-reply", jid), timeout=30)
        w.wait_log(held % (2, 0), since=mark, timeout=15)
        self.assertIn("pong", self.ctl("ping", "--timeout", "10").stdout)

    def test_sigkill_mid_job_comes_back(self):
        w = self.worker()
        jid = self.ctl("enqueue", "PingJob", "--args", '["kill-reply", 3000]').stdout.strip()
        r = self.redis()
        self.wait_for("the job to start", lambda: r.llen("queue:default") == 0)
        w.kill()
        w.p.wait()
        self.assertEqual(r.llen("queue:default"), 0)  # it sits in the dead worker's private list
        w2 = self.worker()
        self.wait_for("the job to run again", lambda: r.sismember("kill-reply", jid), timeout=20)
        self.assertIn("handed back 1 job", w2.log())

    def test_job_that_keeps_killing_workers_goes_to_dead(self):
        r = self.redis()
        job = {"class": "PingJob", "args": [], "jid": "cd" * 12, "queue": "default", "retry": True,
               "created_at": time.time(), "enqueued_at": time.time(), "outreach_recovered": 3}
        ghost = "outreach:inflight:default:ghost.example:4242:aaaaaaaaaaaa"
        r.lpush(ghost, json.dumps(job))
        r.sadd("outreach:inflight", ghost)
        self.worker()
        dead = self.wait_for("the job in dead", lambda: self.dead_jobs())
        self.assertEqual(dead[0]["jid"], "cd" * 12)
        self.assertEqual(dead[0]["error_class"], "WorkerLost")
        self.assertIn("died 4 times", dead[0]["error_message"])
        self.assertEqual(r.exists(ghost), 0)

    def test_daemon_recovers_jobs_of_dead_workers(self):
        self.daemon(env={"OUTREACH_SCHEDULER_SWEEP_INTERVAL": "1"})
        w = self.worker()
        jid = self.ctl("enqueue", "PingJob", "--args", '["orphan-reply", 4000]').stdout.strip()
        r = self.redis()
        self.wait_for("the job to start", lambda: r.llen("queue:default") == 0)
        w.kill()
        w.p.wait()
        # no worker runs: outreachd alone must hand it back to the queue
        self.wait_for("the job back on its queue", lambda: r.llen("queue:default") == 1, timeout=10)
        back = json.loads(r.lindex("queue:default", -1))
        self.assertEqual(back["jid"], jid)
        self.assertEqual(back["outreach_recovered"], 1)

    def test_web_ui_signals(self):
        w = self.worker()
        r = self.redis()
        ident = self.wait_for("the heartbeat", lambda: r.smembers("processes"))
        ident = next(iter(ident))
        r.lpush(ident + "-signals", "TSTP")
        self.wait_for("quiet", lambda: r.hget(ident, "quiet") == "true", timeout=12)
        r.lpush(ident + "-signals", "TERM")
        self.assertEqual(w.wait(15), 0)

    def test_strict_queue_order(self):
        r = self.redis()
        for i in range(5):
            self.ctl("enqueue", "PingJob", "--queue", "low", "--args", '["order", 0]')
        hi = self.ctl("enqueue", "PingJob", "--queue", "high", "--args", '["order-high", 300]').stdout.strip()
        self.worker(queues="high,low")
        self.wait_for("all jobs", lambda: r.scard("order") == 5, timeout=15)
        self.assertTrue(r.sismember("order-high", hi))

    def test_enqueue_rejects_bad_input(self):
        p = self.ctl("enqueue", "NoSuchJob", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("unknown job class NoSuchJob (known: PingJob", p.stderr)
        p = self.ctl("enqueue", "PingJob", "--args", "{", check=False)
        self.assertIn("--args is not JSON", p.stderr)
        p = self.ctl("enqueue", "PingJob", "--args", '[1,2,3]', check=False)
        self.assertIn("at most 2 arguments", p.stderr)
        p = self.ctl("enqueue", "PingJob", "--at", "tomorrow", check=False)
        self.assertIn("--at tomorrow", p.stderr)


def ping_job(jid, queue, reply, **extra):
    """A PingJob's JSON as Sidekiq writes it, which records its jid in the set reply when it runs."""
    job = {"class": "PingJob", "args": [reply, 0], "jid": jid, "queue": queue, "retry": True,
           "created_at": 1700000000.0, "enqueued_at": 1700000000.0}
    job.update(extra)
    return json.dumps(job)


class RefusedMoves(QueueCase):
    """Moves Redis refuses (here: a queue's key holds a string) leave their job where it is, logged
    once; the jobs after them still move, nothing spins, and the job moves once the key is mended."""

    REFUSED = "stays there: Redis refused to move it to queue:broken"

    def setUp(self):
        super().setUp()
        self.redis().set("queue:broken", "not a list")

    def daemon(self, env=None):
        port = harness.free_port()
        d = super().daemon(env=dict({"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % port}, **(env or {})))
        d.port = port
        return d

    def metrics(self, d):
        status, body = http_get(d.port, "/metrics")
        self.assertEqual(status, 200)
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(outreach_\S+) (\d+)$", body, re.M)}

    def passes(self, d, kind, n):
        """Waits until the daemon has made n more passes of kind ("poll", "sweep"); its metrics then."""
        key = 'outreach_maint_passes_total{kind="%s"}' % kind
        first = self.metrics(d)[key]
        return self.wait_for("%d passes" % n, lambda: (lambda m: m[key] >= first + n and m)(self.metrics(d)))

    def test_daemon_poller_skips_refused_due_jobs(self):
        r = self.redis()
        # More refused due jobs than a poll reads at once, then one that can move, due last.
        now = time.time()
        for i in range(101):
            # (one entry carries a NUL after its JSON: entries are bytes, not C strings)
            r.zadd("retry", {ping_job("b%023d" % i, "broken", "refused-due") + ("\0 and bytes after it" if i == 7 else ""): now - 200 + i})
        r.zadd("retry", {ping_job("d" * 24, "default", "refused-due"): now - 1})
        d = self.daemon(env={"OUTREACH_SCHEDULER_POLL_INTERVAL_MS": "50"})
        self.wait_for("the job behind the refused ones", lambda: r.llen("queue:default") == 1)
        m = self.passes(d, "poll", 10)
        # Each pass reads schedule once and retry twice (100, then the rest): no pass polls again at once.
        self.assertLessEqual(m['outreach_maint_passes_total{kind="poll_page"}'],
                             3 * m['outreach_maint_passes_total{kind="poll"}'] + 3)
        self.assertEqual(m['outreach_jobs_refused{kind="due"}'], 101)
        self.assertEqual(d.log().count(self.REFUSED), 101, d.log())
        self.assertIn("retry: job PingJob b%023d stays there" % 0, d.log())
        # The entry with a NUL is described as what its move would push: the job before the NUL.
        self.assertIn("retry: job PingJob b%023d stays there" % 7, d.log())
        self.assertNotIn("not a job", d.log())
        self.assertEqual((r.zcard("retry"), r.get("queue:broken")), (101, "not a list"))
        # Mended, they move at the next pass and run.
        r.delete("queue:broken")
        self.wait_for("the refused jobs on their queue", lambda: r.llen("queue:broken") == 101)
        moved = r.lrange("queue:broken", 0, -1)
        self.assertEqual([j for j in moved if "\0" in j], [])
        self.assertIn("b%023d" % 7, [json.loads(j)["jid"] for j in moved])
        self.assertEqual(r.zcard("retry"), 0)
        self.worker(queues="broken")
        self.wait_for("the refused jobs to run", lambda: r.scard("refused-due") == 101, timeout=30)
        self.assertEqual(self.passes(d, "poll", 2)['outreach_jobs_refused{kind="due"}'], 0)
        self.assertEqual(d.log().count(self.REFUSED), 101)

    def test_daemon_sweeper_skips_a_refused_job(self):
        r = self.redis()
        broken = self.ghost("broken", ping_job("b" * 24, "broken", "refused-sweep"))
        fine = self.ghost("default", ping_job("f" * 24, "default", "refused-sweep"))
        d = self.daemon(env={"OUTREACH_SCHEDULER_SWEEP_INTERVAL": "1"})
        self.wait_for("the other dead worker's job", lambda: r.llen("queue:default") == 1)
        m = self.passes(d, "sweep", 3)
        self.assertEqual(m['outreach_jobs_refused{kind="recovered"}'], 1)
        self.assertEqual(d.log().count(self.REFUSED), 1, d.log())
        self.assertIn("%s: job PingJob %s stays there" % (broken, "b" * 24), d.log())
        # The refused job stays in its list, which the sweep still knows; the emptied one is forgotten.
        self.assertEqual([json.loads(j)["jid"] for j in r.lrange(broken, 0, -1)], ["b" * 24])
        self.assertEqual(r.smembers("outreach:inflight"), {broken})
        self.assertEqual(r.exists(fine), 0)
        r.delete("queue:broken")
        self.wait_for("the refused job handed back", lambda: r.llen("queue:broken") == 1)
        self.wait_for("its list forgotten", lambda: r.smembers("outreach:inflight") == set())
        self.assertEqual(json.loads(r.lindex("queue:broken", -1))["outreach_recovered"], 1)
        self.worker(queues="broken")
        self.wait_for("the refused job to run", lambda: r.sismember("refused-sweep", "b" * 24))

    def sweeps(self, w):
        """How many sweeps of dead workers' lists worker w (logging at debug level) has done."""
        return len(re.findall(r"sweep \d+ of dead workers' lists done", w.log()))

    def test_worker_sweep_skips_a_refused_job(self):
        r = self.redis()
        # "dead" holds a string too: the first job of a list, handed back too often, cannot go there.
        r.set("dead", "not a sorted set")
        lists = [self.ghost("other", ping_job("k" * 24, "other", "refused-sweep", outreach_recovered=3),
                            ping_job("1" * 24, "other", "refused-sweep")),
                 self.ghost("broken", ping_job("b" * 24, "broken", "refused-sweep")),
                 self.ghost("other", ping_job("2" * 24, "other", "refused-sweep"))]
        w = self.worker(queues="idle", env={"OUTREACH_LOG_LEVEL": "debug"})
        self.wait_for("the other jobs of dead workers", lambda: r.llen("queue:other") == 2)
        ghosts = {lst for lst in r.smembers("outreach:inflight") if not lst.startswith("outreach:inflight:idle:")}
        self.assertEqual(ghosts, set(lists[:2]))
        self.assertEqual([json.loads(j)["jid"] for j in r.lrange(lists[0], 0, -1) + r.lrange(lists[1], 0, -1)],
                         ["k" * 24, "b" * 24])
        # The next sweeps (one per heartbeat) try them again, without logging them again.
        done = self.sweeps(w)
        self.wait_for("two more sweeps", lambda: self.sweeps(w) >= done + 2, timeout=20)
        self.assertEqual(w.log().count(self.REFUSED), 1, w.log())
        self.assertEqual(w.log().count("stays there: Redis refused to move it to dead: "), 1, w.log())
        self.assertEqual((r.llen(lists[0]), r.llen(lists[1])), (1, 1))
        r.delete("queue:broken", "dead")
        self.wait_for("the refused jobs moved", lambda: r.llen("queue:broken") == 1 and r.zcard("dead") == 1,
                      timeout=12)
        self.assertEqual(r.exists(*lists), 0)
        self.assertEqual(json.loads(r.zrange("dead", 0, -1)[0])["error_class"], "WorkerLost")

    def test_worker_sweep_skips_an_unreadable_list(self):
        r = self.redis()
        # A dead worker's heartbeat key holds a string, another dead worker's list is a string: Redis
        # refuses to read them. Six more dead workers' lists, in whatever order SMEMBERS gives them.
        beat = self.ghost("other", ping_job("h" * 24, "other", "unreadable"))
        r.set(beat.split(":", 3)[3], "not a hash")
        notlist = "outreach:inflight:other:ghost.example:4999:aaaaaaaaaaaa"
        r.set(notlist, "not a list")
        r.sadd("outreach:inflight", notlist)
        for i in range(6):
            self.ghost("other", ping_job("%024d" % i, "other", "unreadable"))
        w = self.worker(queues="idle", env={"OUTREACH_LOG_LEVEL": "debug"})
        self.wait_for("the readable lists handed back", lambda: r.llen("queue:other") == 6)
        done = self.sweeps(w)
        self.wait_for("two more sweeps", lambda: self.sweeps(w) >= done + 2, timeout=20)
        self.assertEqual(sorted(json.loads(j)["jid"] for j in r.lrange("queue:other", 0, -1)),
                         ["%024d" % i for i in range(6)])
        self.assertEqual(w.log().count("%s: its jobs stay there: Redis refused to read its heartbeat: WRONGTYPE" % beat),
                         1, w.log())
        self.assertEqual(w.log().count("%s: its jobs stay there: Redis refused to read the list: WRONGTYPE" % notlist),
                         1, w.log())
        self.assertNotIn("looking for jobs of dead workers", w.log())
        ghosts = {lst for lst in r.smembers("outreach:inflight") if not lst.startswith("outreach:inflight:idle:")}
        self.assertEqual(ghosts, {beat, notlist})
        self.assertEqual([json.loads(j)["jid"] for j in r.lrange(beat, 0, -1)], ["h" * 24])


class PollerReload(QueueCase):
    """scheduler.poll_interval_ms and scheduler.sweep_interval are reloadable: outreachd's poller and
    sweeper take a reloaded interval from their next pass, without a restart."""

    def passes(self, port, kind="poll"):
        status, body = http_get(port, "/metrics")
        self.assertEqual(status, 200)
        return int(re.search(r'(?m)^outreach_maint_passes_total\{kind="%s"\} (\d+)$' % kind, body).group(1))

    def rate(self, port, secs=3.0, kind="poll"):
        """Passes of kind during secs seconds."""
        first = self.passes(port, kind)
        time.sleep(secs)
        return self.passes(port, kind) - first

    def start(self, conf):
        port = harness.free_port()
        d = self.start_bin("outreachd", "-c", conf, env={"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % port})
        d.wait_log(r"outreachd \S+ ready")
        return d, port

    def test_a_reloaded_poll_interval_takes_effect(self):
        text = open(harness.CONFIG).read()
        self.assertIn("\npoll_interval_ms = 500\n", text)
        conf = self.write_config(text.replace("\npoll_interval_ms = 500\n", "\npoll_interval_ms = 1000\n"))
        d, port = self.start(conf)
        self.wait_for("the first poll passes", lambda: self.passes(port) >= 2)
        slow = self.rate(port)
        self.assertLessEqual(slow, 4)  # one a second: three in 3 s, four at a boundary
        self.reload_with(d, conf, text.replace("\npoll_interval_ms = 500\n", "\npoll_interval_ms = 50\n"))
        time.sleep(1.1)  # the pass armed with the old interval
        fast = self.rate(port)
        self.assertGreaterEqual(fast, 15, (slow, fast))  # one in 50 ms: 60 in 3 s, on a busy machine fewer

    def test_a_reloaded_sweep_interval_takes_effect(self):
        text = open(harness.CONFIG).read()
        self.assertIn("\nsweep_interval = 10\n", text)
        conf = self.write_config(text)
        d, port = self.start(conf)
        slow = self.rate(port, 4.0, "sweep")
        self.assertLessEqual(slow, 1)  # one in 10 s
        self.reload_with(d, conf, text.replace("\nsweep_interval = 10\n", "\nsweep_interval = 1\n"))
        time.sleep(10.5)  # the pass armed with the old interval
        fast = self.rate(port, 4.0, "sweep")
        self.assertGreaterEqual(fast, 3, (slow, fast))  # one a second: four in 4 s


class WorkerReload(QueueCase):
    """worker.max_job_size and worker.max_recoveries are reloadable: a worker applies reloaded values
    to the next job it parses and the next list it sweeps, without a restart."""

    def test_reloaded_job_limits_take_effect(self):
        text = open(harness.CONFIG).read()
        for line in ("\nmax_job_size = 1048576\n", "\nmax_recoveries = 3\n"):
            self.assertIn(line, text)
        conf = self.write_config(text)
        r = self.redis()
        r.sadd("queues", "default")
        # Before the reload: a job of about 6 KB runs, and a job handed back once already by a dead
        # worker is handed back again (onto "other", which no worker here serves).
        self.ghost("other", ping_job("a" * 24, "other", "limits-reply", outreach_recovered=1))
        w = self.worker_with(conf)
        self.wait_for("the dead worker's job handed back", lambda: r.llen("queue:other") == 1)
        big = ping_job("b" * 24, "default", "limits-reply", pad="x" * 6000)
        r.lpush("queue:default", big)
        self.wait_for("the 6 KB job to run", lambda: r.sismember("limits-reply", "b" * 24))
        self.reload_with(w, conf, text.replace("\nmax_job_size = 1048576\n", "\nmax_job_size = 4096\n")
                         .replace("\nmax_recoveries = 3\n", "\nmax_recoveries = 1\n"))
        # After it: the same size is too large, and a job handed back once goes to dead.
        r.lpush("queue:default", big.replace("b" * 24, "c" * 24))
        self.ghost("other", ping_job("d" * 24, "other", "limits-reply", outreach_recovered=1))
        self.wait_for("both jobs in dead", lambda: r.zcard("dead") == 2, timeout=20)
        dead = {d["jid"]: d for d in self.dead_jobs()}
        self.assertEqual(set(dead), {"c" * 24, "d" * 24})
        self.assertEqual(dead["c" * 24]["error_class"], "InvalidJob")
        self.assertIn("exceeds the limit of 4096 bytes", dead["c" * 24]["error_message"])
        self.assertEqual(dead["d" * 24]["error_class"], "WorkerLost")
        self.assertEqual(r.llen("queue:other"), 1)
        self.assertFalse(r.sismember("limits-reply", "c" * 24))
        self.assertIsNone(w.returncode)

    def test_a_reloaded_idle_poll_takes_effect(self):
        """A worker serving two empty queues looks again every idle_poll_ms, each look a BLMOVE that
        waits that long on the first queue: Redis counts them."""
        text = open(harness.CONFIG).read()
        self.assertIn("\nidle_poll_ms = 100\n", text)
        conf = self.write_config(text.replace("\nidle_poll_ms = 100\n", "\nidle_poll_ms = 2000\n"))
        r = self.redis()

        def blmoves():
            return r.info("commandstats").get("cmdstat_blmove", {}).get("calls", 0)

        def looks(secs=4.0):
            first = blmoves()
            time.sleep(secs)
            return blmoves() - first

        w = self.worker_with(conf, queues="default,other")
        self.wait_for("the first look", lambda: blmoves() > 0)
        slow = looks()
        self.assertLessEqual(slow, 3, slow)  # one in 2 s
        self.reload_with(w, conf, text.replace("\nidle_poll_ms = 100\n", "\nidle_poll_ms = 50\n"))
        time.sleep(2.1)  # the look begun with the old wait
        fast = looks()
        self.assertGreaterEqual(fast, 20, (slow, fast))  # one in 50 ms: 80 in 4 s, on a busy machine fewer

    def test_a_reloaded_dead_after_takes_effect(self):
        text = open(harness.CONFIG).read()
        self.assertIn("\ndead_after = 30\n", text)
        conf = self.write_config(text)
        r = self.redis()
        # A worker on another host whose last heartbeat is 20 s old: alive while dead_after is 30.
        ghost = self.ghost("other", ping_job("e" * 24, "other", "dead-after-reply"))
        identity = ghost.split(":", 3)[3]

        def beat_20_s_ago():
            r.hset(identity, "beat", "%.3f" % (time.time() - 20))

        beat_20_s_ago()
        w = self.worker_with(conf)  # after its first sweep
        self.assertEqual((r.llen(ghost), r.llen("queue:other")), (1, 0))
        self.reload_with(w, conf, text.replace("\ndead_after = 30\n", "\ndead_after = 15\n"))
        # The heartbeat stays 20 s old: dead now, so a sweep (one per heartbeat) hands its job back.
        self.wait_for("the job handed back", lambda: beat_20_s_ago() or r.llen("queue:other") == 1, timeout=15)
        self.assertEqual(json.loads(r.lindex("queue:other", -1))["jid"], "e" * 24)
        self.assertEqual(r.exists(ghost), 0)


if __name__ == "__main__":
    harness.main()
