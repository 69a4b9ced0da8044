"""outreachd: systemd notifications, the follow-up scan, periodic jobs, leader election, outages, HTTP."""
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import harness

STACK = harness.STACK




def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Daemon(harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, digest_runs RESTART IDENTITY CASCADE")

    def daemon(self, config=None, env=None, wait_ready=True):
        port = harness.free_port()
        e = {"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % port, "OUTREACH_SCHEDULER_SCAN_INTERVAL": "1"}
        e.update(env or {})
        d = self.start_bin("outreachd", "-c", config or harness.CONFIG, env=e)
        d.port = port
        if wait_ready:
            d.wait_log(r"outreachd \S+ ready")
        return d

    def leading(self, d):
        status, body = http_get(d.port, "/metrics")
        return status == 200 and re.search(r"^outreach_leader 1$", body, re.M) is not None

    # --- systemd --------------------------------------------------------------------------------
    def test_notify_ready_watchdog_reload_stopping(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.2)
        conf = self.write_config(open(harness.CONFIG).read())
        d = self.daemon(config=conf, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}, wait_ready=False)
        got = []

        def until(pred, timeout=10):
            end = time.time() + timeout
            while time.time() < end:
                try:
                    got.append(sock.recv(4096).decode())
                except socket.timeout:
                    pass
                if pred():
                    return
            self.fail("notifications so far: %r\n%s" % (got, d.log()))

        until(lambda: any("READY=1" in m for m in got))
        ready_at = next(i for i, m in enumerate(got) if "READY=1" in m)
        # READY only once both backends are up: the daemon logged both connections before it (the
        # log is read by another thread, so it may arrive a moment after the notification)
        d.wait_log("connected to PostgreSQL", timeout=5)
        d.wait_log("connected to redis", timeout=5)
        self.assertTrue(any(m.startswith("STATUS=") for m in got[:ready_at + 1]), got)
        until(lambda: sum("WATCHDOG=1" in m for m in got) >= 3)
        # a good reload: RELOADING=1 with MONOTONIC_USEC, then READY=1
        del got[:]
        d.reload()  # the notifications wait in the socket meanwhile
        until(lambda: any("READY=1" in m for m in got))
        self.assertTrue(re.search(r"RELOADING=1\nMONOTONIC_USEC=\d+", "".join(got)), got)
        # a bad config: logged, old one kept, READY again
        text = open(conf).read().replace("\nport = 25\n", "\nport = 70000\n")
        with open(conf, "w") as f:
            f.write(text)
        del got[:]
        d.reload(failure=r"config: .*:\d+: smtp\.port: 70000 is out of range")
        until(lambda: any("READY=1" in m for m in got))
        status, _ = http_get(d.port, "/healthz")
        self.assertEqual(status, 200)
        # SIGTERM: STOPPING=1 and a clean exit
        del got[:]
        d.signal(signal.SIGTERM)
        until(lambda: any("STOPPING=1" in m for m in got))
        self.assertEqual(d.wait(10), 0)

    def test_a_reload_keeps_the_keys_that_need_a_restart(self):
        """outreachd and a worker reloaded with a file that changes database.statement_timeout (a key
        that needs a restart), and worker.shutdown_timeout and log.level (reloadable): each names the
        first in a warning (test_cfg.c checks that its running value is kept), and the worker takes
        the other two."""
        conf = self.write_config(open(harness.CONFIG).read())
        d = self.daemon(config=conf)
        w = self.worker_with(conf)
        text = open(conf).read()
        for old in ("\nshutdown_timeout = 25\n", "\nlevel = info\n", "\nstatement_timeout = 30000\n"):
            self.assertIn(old, text)
        with open(conf, "w") as f:
            f.write(text.replace("\nshutdown_timeout = 25\n", "\nshutdown_timeout = 3\n")
                    .replace("\nlevel = info\n", "\nlevel = debug\n")
                    .replace("\nstatement_timeout = 30000\n", "\nstatement_timeout = 60000\n"))
        d.reload(restart=r"database\.statement_timeout")
        mark = w.reload(restart=r"database\.statement_timeout")
        w.wait_log(r"debug: ", since=mark)  # the reloadable key moved
        w.signal(signal.SIGTERM)
        w.wait_log(r"SIGTERM: stopping; running jobs have 3 s to finish")
        self.assertEqual(w.wait(30), 0)

    def test_units_are_hardened(self):
        for unit in ("outreachd.service", "outreach-worker@.service"):
            p = subprocess.run(["systemd-analyze", "security", "--offline=true", str(harness.ROOT / "systemd" / unit)],
                               capture_output=True, text=True)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
            self.assertIsNotNone(m, p.stdout + p.stderr)
            self.assertLessEqual(float(m.group(1)), 2.0, unit)

    # --- the follow-up scan ---------------------------------------------------------------------
    def coordinators_at_local_hours(self):
        """Two coordinators, one whose local time is 12:xx and one at 11:xx; digest_hour 12. In the last
        minute of an hour it waits for the next one: at the turn of the hour B's local time becomes 12:00
        and B's digest is due, which a test that runs across it would take for a second digest."""
        now = datetime.datetime.now(datetime.timezone.utc)
        left = 3600 - now.minute * 60 - now.second - now.microsecond / 1e6
        if left < 60:
            time.sleep(left + 0.5)
        hour = datetime.datetime.now(datetime.timezone.utc).hour
        east = 12 - hour  # UTC offset that makes it 12 o'clock there
        zone_a = "Etc/GMT%+d" % -east if east else "UTC"  # Etc/GMT-5 is UTC+5
        zone_b = "Etc/GMT%+d" % -(east - 1) if east - 1 else "UTC"
        a = self.sql_one("INSERT INTO coordinators (name, email, time_zone) VALUES ('A', 'a@x.org', %s) RETURNING id",
                         (zone_a,))
        b = self.sql_one("INSERT INTO coordinators (name, email, time_zone) VALUES ('B', 'b@x.org', %s) RETURNING id",
                         (zone_b,))
        c = self.sql_one("INSERT INTO coordinators (name, email, time_zone) VALUES ('C', 'c@x.org', %s) RETURNING id",
                         (zone_a,))
        # A and B have an overdue source; C has none due
        for coord, days_ago in ((a, 40), (b, 45), (c, 5)):
            self.sql("INSERT INTO referral_sources (last_name, status, coordinator_id, last_contact_at) "
                     "VALUES ('Doe', 'active', %s, now() - make_interval(days => %s))", (coord, days_ago))
        return a, b, c

    def digests(self):
        return [json.loads(j) for j in self.redis().lrange("queue:alerts", 0, -1)]

    def test_scan_enqueues_one_digest_per_due_coordinator_at_local_hour(self):
        a, b, c = self.coordinators_at_local_hours()
        env = {"OUTREACH_ALERTS_DIGEST_HOUR": "12"}
        d = self.daemon(env=env)
        self.wait_for("a digest", lambda: self.digests())
        time.sleep(2.5)  # more scans run; nothing more may come
        jobs = self.digests()
        self.assertEqual(len(jobs), 1, jobs)
        job = jobs[0]
        self.assertEqual(job["class"], "OverdueDigestJob")
        self.assertEqual(job["args"][0], a)
        local = self.sql_one("SELECT (now() AT TIME ZONE time_zone)::date::text FROM coordinators WHERE id = %s", (a,))
        self.assertEqual(job["args"][1], local)
        self.assertRegex(job["jid"], r"^[0-9a-f]{24}$")
        self.assertEqual(self.sql_one("SELECT count(*) FROM digest_runs WHERE enqueued_at IS NOT NULL"), 1)
        # a restart, and two daemons at once, enqueue nothing more
        d.signal(signal.SIGTERM)
        d.wait(10)
        d1, d2 = self.daemon(env=env), self.daemon(env=env)
        self.wait_for("a leader", lambda: self.leading(d1) or self.leading(d2))
        time.sleep(3)
        self.assertEqual(len(self.digests()), 1)
        # the overdue figures are on /metrics
        leader = d1 if self.leading(d1) else d2
        _, body = http_get(leader.port, "/metrics")
        self.assertIn('outreach_overdue_sources{coordinator_id="%d"} 1' % a, body)
        self.assertIn('outreach_overdue_sources{coordinator_id="%d"} 1' % b, body)
        self.assertNotIn('coordinator_id="%d"' % c, body)

    def test_unpushed_claim_is_pushed_again(self):
        a, _, _ = self.coordinators_at_local_hours()
        # a claim left by a daemon that died between claiming and pushing
        self.sql("INSERT INTO digest_runs (coordinator_id, local_date, jid, claimed_at) "
                 "VALUES (%s, (now() AT TIME ZONE 'UTC')::date - 1, 'aaaaaaaaaaaaaaaaaaaaaaaa', now() - interval '5 minutes')",
                 (a,))
        self.daemon(env={"OUTREACH_ALERTS_DIGEST_HOUR": "23"})
        job = self.wait_for("the re-pushed digest", lambda: [j for j in self.digests() if j["jid"] == "a" * 24])
        self.assertEqual(job[0]["args"][0], a)
        self.wait_for("the claim marked", lambda: self.sql_one(
            "SELECT enqueued_at IS NOT NULL FROM digest_runs WHERE jid = %s", ("a" * 24,)))

    def test_settings_follow_the_configuration(self):
        self.daemon(env={"OUTREACH_ALERTS_DEFAULT_CONTACT_INTERVAL_DAYS": "45"})
        self.wait_for("the setting", lambda: self.sql_one(
            "SELECT value FROM settings WHERE name = 'default_contact_interval_days'") == "45")

    # --- periodic jobs --------------------------------------------------------------------------
    def test_the_shipped_schedule_runs_metrics_hourly_and_the_monthly_report_on_the_1st(self):
        r = self.redis()
        now = int(time.time())
        # The clock moved on: the last runs were two hours and forty days ago.
        r.hset("outreach:periodic", "metrics", now - 2 * 3600)
        r.hset("outreach:periodic", "monthly_report", now - 40 * 86400)
        self.daemon()
        self.wait_for("the metrics job", lambda: r.llen("queue:metrics") >= 1)
        self.wait_for("the monthly report job", lambda: any(
            json.loads(j)["class"] == "MonthlyReportJob" for j in r.lrange("queue:alerts", 0, -1)))
        job = json.loads(r.lrange("queue:metrics", 0, -1)[0])
        self.assertEqual((job["class"], job["args"], job["periodic"]), ("MetricsJob", [], "metrics"))
        last = int(r.hget("outreach:periodic", "metrics"))
        self.assertEqual(last % 3600, 5 * 60)  # at :05
        self.assertLess(now - last, 3600)
        report = [json.loads(j) for j in r.lrange("queue:alerts", 0, -1)]
        self.assertEqual([(j["args"], j["periodic"]) for j in report if j["class"] == "MonthlyReportJob"],
                         [([], "monthly_report")])
        last = datetime.datetime.fromtimestamp(int(r.hget("outreach:periodic", "monthly_report")),
                                               datetime.timezone.utc)
        self.assertEqual((last.day, last.hour, last.minute, last.second), (1, 7, 0, 0))
        self.assertLess(now - last.timestamp(), 32 * 86400)
        time.sleep(6)  # another tick: nothing more
        self.assertEqual(r.llen("queue:metrics"), 1)

    def test_missed_periodic_runs_are_made_up_once(self):
        r = self.redis()
        conf = self.write_config(open(harness.CONFIG).read().replace(
            "# liveness = */10 * * * * PingJob", 'liveness = 0 0 * * * PingJob ["cron-reply"]'))
        r.hset("outreach:periodic", "liveness", int(time.time()) - 3 * 86400)  # three days down
        d = self.daemon(config=conf)
        self.wait_for("the periodic job", lambda: r.llen("queue:default") >= 1)
        time.sleep(6)  # another tick: nothing more
        jobs = [json.loads(j) for j in r.lrange("queue:default", 0, -1)]
        self.assertEqual(len(jobs), 1, jobs)
        self.assertEqual(jobs[0]["args"], ["cron-reply"])
        self.assertEqual(jobs[0]["periodic"], "liveness")
        last = int(r.hget("outreach:periodic", "liveness"))
        self.assertEqual(last % 86400, 0)  # the latest missed midnight, once
        self.assertLessEqual(time.time() - last, 86400)
        d.signal(signal.SIGTERM)
        d.wait(10)
        self.daemon(config=conf)
        time.sleep(6)
        self.assertEqual(r.llen("queue:default"), 1)

    def test_bad_schedule_line_names_file_line_key(self):
        conf = self.write_config(open(harness.CONFIG).read().replace(
            "# liveness = */10 * * * * PingJob", "liveness = 61 * * * * PingJob"))
        p = self.run_bin("outreachd", "-c", conf, "--check-config")
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr, r"config: %s:\d+: schedule.liveness: minute: 61 is out of range 0..59" % re.escape(conf))

    # --- leader election --------------------------------------------------------------------------
    def test_two_daemons_one_leader_and_takeover_after_sigkill(self):
        d1, d2 = self.daemon(), self.daemon()
        self.wait_for("a leader", lambda: self.leading(d1) or self.leading(d2))
        time.sleep(2)
        self.assertEqual([self.leading(d1), self.leading(d2)].count(True), 1)
        leader, other = (d1, d2) if self.leading(d1) else (d2, d1)
        leader.kill()
        killed = time.time()
        self.wait_for("the takeover", lambda: self.leading(other), timeout=20)
        self.assertLess(time.time() - killed, 15)

    def test_graceful_stop_hands_over_at_once(self):
        d1, d2 = self.daemon(), self.daemon()
        self.wait_for("a leader", lambda: self.leading(d1) or self.leading(d2))
        leader, other = (d1, d2) if self.leading(d1) else (d2, d1)
        leader.signal(signal.SIGTERM)
        stopped = time.time()
        self.wait_for("the takeover", lambda: self.leading(other), timeout=10)
        self.assertLess(time.time() - stopped, 3)

    # --- outages --------------------------------------------------------------------------------
    def test_redis_outage(self):
        d = self.daemon()
        self.wait_for("leadership", lambda: self.leading(d))
        sock = STACK["OUTREACH_REDIS_SOCKET"]
        subprocess.run(["redis-cli", "-s", sock, "shutdown", "nosave"], capture_output=True)
        try:
            time.sleep(10)
            self.assertIsNone(d.p.poll(), d.log())
            self.assertEqual(http_get(d.port, "/healthz")[0], 200)
            status, body = http_get(d.port, "/readyz")
            self.assertEqual(status, 503)
            self.assertIn("Redis", body)
            self.assertFalse(self.leading(d))
        finally:
            subprocess.run(["bash", str(harness.ROOT / "scripts" / "stack"), "start"], capture_output=True)
        self.wait_for("readiness", lambda: http_get(d.port, "/readyz")[0] == 200, timeout=20)
        self.wait_for("leadership again", lambda: self.leading(d), timeout=20)
        # scheduling resumed: a scheduled job is moved onto its queue
        job = {"class": "PingJob", "args": [], "jid": "e" * 24, "queue": "default", "retry": True,
               "created_at": time.time()}
        self.redis().zadd("schedule", {json.dumps(job): time.time()})
        self.wait_for("the scheduled job on its queue", lambda: self.redis().llen("queue:default") == 1)

    def test_postgresql_outage(self):
        d = self.daemon()
        pgbin = STACK["OUTREACH_PG_BIN"]
        data = os.path.join(os.path.realpath(harness.ROOT / "var" / "pg"), "data")
        run = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run(run + [pgbin + "/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        try:
            time.sleep(10)
            self.assertIsNone(d.p.poll(), d.log())
            self.assertEqual(http_get(d.port, "/healthz")[0], 200)
            status, body = http_get(d.port, "/readyz")
            self.assertEqual(status, 503)
            self.assertIn("PostgreSQL", body)
        finally:
            subprocess.run(["bash", str(harness.ROOT / "scripts" / "stack"), "start"], capture_output=True)
        self.wait_for("readiness", lambda: http_get(d.port, "/readyz")[0] == 200, timeout=40)
        # scans resume
        a, _, _ = self.coordinators_at_local_hours()
        self.assertTrue(a)

    # --- HTTP -------------------------------------------------------------------------------------
    def test_metrics_pass_promtool(self):
        # This month's figures: two referrals on a service line whose name needs escaping, revenue, a
        # goal running today and an open case, computed by a metrics run before the daemon starts.
        line = 'Sleep "Lab" \\ 2\nEast'
        c = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Fig', 'fig@x.example') RETURNING id")
        s = self.sql_one("INSERT INTO referral_sources (last_name, coordinator_id) VALUES ('Src', %s) RETURNING id", (c,))
        for key in ("p1", "p2"):
            r = self.sql_one("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                             "VALUES (%s, %s, now() - interval '1 second', %s) RETURNING id", (s, line, key))
        self.sql("INSERT INTO encounters (referral_id, service_date, amount_cents) "
                 "VALUES (%s, (now() AT TIME ZONE 'UTC')::date, 12345)", (r,))
        self.sql("DELETE FROM outreach_goals")
        goal = self.sql_one("INSERT INTO outreach_goals (service_line, metric, period_start, period_end, target) "
                            "VALUES (%s, 'referrals', (now() AT TIME ZONE 'UTC')::date, "
                            "(now() AT TIME ZONE 'UTC')::date + 30, 8) RETURNING id", (line,))
        self.sql("INSERT INTO cases (source_id, category, priority, status, summary, opened_at) "
                 "VALUES (%s, 'billing', 'urgent', 'open', 'x', now() - interval '1 second')", (s,))
        self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", "--period", "full", check=True)
        d = self.daemon()
        self.wait_for("leadership", lambda: self.leading(d))
        self.redis().lpush("queue:default", json.dumps({"class": "PingJob", "args": [], "enqueued_at": time.time() - 3}))
        self.redis().sadd("queues", "default")
        time.sleep(5.5)
        status, body = http_get(d.port, "/metrics")
        self.assertEqual(status, 200)
        for name in ("outreach_leader", "outreach_scans_total", "outreach_scan_duration_seconds_sum",
                     "outreach_queue_size", "outreach_queue_latency_seconds", "outreach_retry_jobs",
                     "outreach_scheduled_jobs", "outreach_dead_jobs", "outreach_up", "outreach_overdue_sources",
                     "outreach_digests_enqueued_total", "outreach_periodic_runs_total"):
            self.assertIn("# TYPE " + name.replace("_sum", ""), body)
        self.assertRegex(body, r'outreach_queue_size\{queue="default"\} 1')
        self.assertRegex(body, r'outreach_queue_latency_seconds\{queue="default"\} [3-9]\.')
        esc = 'service_line="Sleep \\"Lab\\" \\\\ 2\\nEast"'
        self.assertIn("outreach_month_referrals{%s} 2\n" % esc, body)
        self.assertIn("outreach_month_revenue_dollars{%s} 123.45\n" % esc, body)
        self.assertIn("outreach_month_referring_sources{%s} 1\n" % esc, body)
        self.assertIn("outreach_month_new_sources{%s} 1\n" % esc, body)
        self.assertIn('outreach_goal_target{goal_id="%d",%s,metric="referrals"} 8\n' % (goal, esc), body)
        self.assertIn('outreach_goal_value{goal_id="%d",%s,metric="referrals"} 2\n' % (goal, esc), body)
        self.assertIn('outreach_goal_percent{goal_id="%d",%s,metric="referrals"} 25.0\n' % (goal, esc), body)
        self.assertIn('outreach_open_cases{category="billing",priority="urgent"} 1\n', body)
        self.assertRegex(body, r"\noutreach_month_quiet_sources \d+\n")
        self.assertRegex(body, r"\noutreach_metrics_last_run_timestamp_seconds \d+\.\d+\n")
        for name in ("outreach_month_referrals", "outreach_month_revenue_dollars", "outreach_goal_percent",
                     "outreach_open_cases", "outreach_month_activities_completed"):
            self.assertIn("# HELP %s " % name, body)
            self.assertIn("# TYPE %s gauge\n" % name, body)
        p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(http_get(d.port, "/nope")[0], 404)

    def test_busy_port_is_a_clear_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = self.run_bin("outreachd", "-c", harness.CONFIG, env={"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % port},
                         timeout=10)
        s.close()
        self.assertEqual(p.returncode, 1)
        self.assertIn("http.listen: cannot listen on 127.0.0.1:%d" % port, p.stderr)

    def test_refuses_a_database_that_is_behind(self):
        row = self.sql("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations) "
                       "RETURNING version, name, checksum")[0]
        self.addCleanup(self.sql, "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)", row)
        p = self.run_bin("outreachd", "-c", harness.CONFIG, env={"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % harness.free_port()},
                         timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("run `outreachctl migrate`", p.stderr)
        p = self.run_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "default", timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("run `outreachctl migrate`", p.stderr)


if __name__ == "__main__":
    harness.main()
