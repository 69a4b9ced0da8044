"""Outcome metrics: known answers on hand-made data, random data against a from-scratch computation, idempotence."""
import csv
import datetime as dt
import io
import json
import os
import random
import signal
import socket
import statistics
import time
from decimal import ROUND_HALF_UP, Decimal

import psycopg2

import harness

UTC = dt.timezone.utc
KINDS = ("day", "week", "month", "quarter")


def ts(s):
    """'2025-01-06 10:00' as an aware UTC datetime."""
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


def trunc(kind, d):
    if kind == "day":
        return d
    if kind == "week":
        return d - dt.timedelta(days=d.weekday())
    if kind == "month":
        return d.replace(day=1)
    return d.replace(month=(d.month - 1) // 3 * 3 + 1, day=1)


def step(kind, start, n=1):
    if kind == "day":
        return start + dt.timedelta(days=n)
    if kind == "week":
        return start + dt.timedelta(weeks=n)
    months = n if kind == "month" else 3 * n
    m = start.month - 1 + months
    return dt.date(start.year + m // 12, m % 12 + 1, 1)


def day_of(t):
    return t.astimezone(UTC).date()


class MetricsCase(harness.Case):
    def refresh(self, *args):
        """outreachctl metrics [args]; returns (run id, periods, rows changed) of the run."""
        p = self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", *args, check=True)
        return self.sql("SELECT id, periods, rows_changed FROM metric_runs ORDER BY id DESC LIMIT 1")[0]

    def dump(self):
        """Every metric table's rows, for comparisons."""
        out = {}
        for t in ("metric_referrals", "metric_new_sources", "metric_quiet_sources", "metric_coordinators",
                  "metric_service_lines", "metric_activity", "metric_cases", "metric_goal_progress",
                  "metric_source_first"):
            out[t] = sorted(self.sql("SELECT * FROM %s" % t))
        return out

    def rows(self, table, kind, start, cols):
        return sorted(self.sql("SELECT %s FROM %s WHERE period_kind = %%s AND period_start = %%s" % (cols, table),
                               (kind, start)))


class KnownAnswers(MetricsCase):
    """Four sources, two coordinators, a few months of 2025: every figure checked against a hand count."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.migrate()
        q = cls.sql_one
        cls.a = q("INSERT INTO coordinators (name, email) VALUES ('Ann Able', 'ann@x.example') RETURNING id")
        cls.b = q("INSERT INTO coordinators (name, email) VALUES ('Bo Baker', 'bo@x.example') RETURNING id")
        src = "INSERT INTO referral_sources (last_name, coordinator_id, status) VALUES (%s, %s, 'active') RETURNING id"
        cls.s1, cls.s2 = q(src, ("One", cls.a)), q(src, ("Two", cls.a))
        cls.s3, cls.s4 = q(src, ("Three", cls.b)), q(src, ("Four", None))
        ref = ("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) VALUES (%s, %s, %s, %s) "
               "RETURNING id")
        r1 = q(ref, (cls.s1, "Cardiology", ts("2025-01-06 10:00"), "p1"))
        q(ref, (cls.s1, "Cardiology", ts("2025-01-07 09:00"), "p2"))
        q(ref, (cls.s1, "Imaging", ts("2025-02-03 09:00"), "p3"))
        q(ref, (cls.s2, "Imaging", ts("2025-01-31 23:30"), "p4"))
        r5 = q(ref, (cls.s3, "Cardiology", ts("2025-02-10 12:00"), "p5"))
        q(ref, (cls.s3, "Cardiology", ts("2025-04-01 08:00"), "p6"))
        r7 = q(ref, (cls.s4, "Oncology", ts("2024-12-30 08:00"), "p7"))
        enc = "INSERT INTO encounters (referral_id, service_date, amount_cents) VALUES (%s, %s, %s)"
        cls.sql(enc, (r1, "2025-01-10", 10000))
        cls.sql(enc, (r1, "2025-02-02", 5000))
        cls.sql(enc, (r5, "2025-02-11", 20000))
        cls.sql(enc, (r7, "2025-01-02", 3000))
        goal = ("INSERT INTO outreach_goals (service_line, metric, period_start, period_end, target) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id")
        cls.g_ref = q(goal, ("Cardiology", "referrals", "2025-01-01", "2025-03-31", 4))
        cls.g_rev = q(goal, ("Imaging", "revenue_cents", "2025-01-01", "2025-01-31", 0))
        cls.g_new = q(goal, ("Cardiology", "new_sources", "2025-01-01", "2025-03-31", 2))
        cls.g_act = q(goal, ("Cardiology", "activities", "2025-01-01", "2025-01-31", 4))
        act = ("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at, canceled_at) "
               "VALUES (%s, %s, %s, %s, %s, %s)")
        cls.sql(act, (cls.s1, cls.a, "call", ts("2025-01-10 09:00"), ts("2025-01-12 09:00"), None))
        cls.sql(act, (cls.s1, cls.a, "call", ts("2025-01-20 09:00"), None, ts("2025-02-15 09:00")))
        cls.sql(act, (cls.s2, cls.a, "call", ts("2025-02-20 09:00"), ts("2025-03-05 09:00"), None))
        cls.sql(act, (cls.s3, cls.b, "meeting", None, ts("2025-01-15 09:00"), None))
        case = ("INSERT INTO cases (source_id, category, priority, status, summary, opened_at, resolved_at) "
                "VALUES (%s, 'billing', 'high', %s, 'x', %s, %s)")
        for opened, resolved in (("2025-01-05", "2025-01-06"), ("2025-01-10", "2025-01-12"),
                                 ("2025-01-03", "2025-01-07"), ("2025-01-20", "2025-02-10"), ("2025-01-25", None)):
            cls.sql(case, (cls.s1, "resolved" if resolved else "open", ts(opened + " 00:00"),
                           ts(resolved + " 00:00") if resolved else None))
        cls.first = cls.refresh(cls)

    def test_referrals_and_revenue_per_source_and_service_line(self):
        cols = "source_id, service_line, referrals, revenue_cents"
        self.assertEqual(self.rows("metric_referrals", "month", "2025-01-01", cols), sorted([
            (self.s1, "Cardiology", 2, 10000), (self.s2, "Imaging", 1, 0), (self.s4, "Oncology", 0, 3000)]))
        self.assertEqual(self.rows("metric_referrals", "month", "2025-02-01", cols), sorted([
            (self.s1, "Imaging", 1, 0), (self.s1, "Cardiology", 0, 5000), (self.s3, "Cardiology", 1, 20000)]))
        self.assertEqual(self.rows("metric_referrals", "month", "2025-03-01", cols), [])
        self.assertEqual(self.rows("metric_referrals", "quarter", "2025-01-01", cols), sorted([
            (self.s1, "Cardiology", 2, 15000), (self.s1, "Imaging", 1, 0), (self.s2, "Imaging", 1, 0),
            (self.s3, "Cardiology", 1, 20000), (self.s4, "Oncology", 0, 3000)]))
        # an ISO week from Monday across the new year; 23:30 UTC stays on its UTC day
        self.assertEqual(self.rows("metric_referrals", "week", "2024-12-30", cols), [(self.s4, "Oncology", 1, 3000)])
        self.assertEqual(self.rows("metric_referrals", "week", "2025-01-06", cols), [(self.s1, "Cardiology", 2, 10000)])
        self.assertEqual(self.rows("metric_referrals", "day", "2025-01-31", cols), [(self.s2, "Imaging", 1, 0)])

    def test_new_and_gone_quiet_sources(self):
        new = "source_id, service_line"
        self.assertEqual(self.rows("metric_new_sources", "month", "2024-12-01", new), [(self.s4, "Oncology")])
        self.assertEqual(self.rows("metric_new_sources", "month", "2025-01-01", new),
                         sorted([(self.s1, "Cardiology"), (self.s2, "Imaging")]))
        self.assertEqual(self.rows("metric_new_sources", "month", "2025-02-01", new), [(self.s3, "Cardiology")])
        self.assertEqual(self.rows("metric_new_sources", "quarter", "2025-01-01", new),
                         sorted([(self.s1, "Cardiology"), (self.s2, "Imaging"), (self.s3, "Cardiology")]))
        quiet = "source_id, referrals_before"
        self.assertEqual(self.rows("metric_quiet_sources", "month", "2025-01-01", quiet), [(self.s4, 1)])
        self.assertEqual(self.rows("metric_quiet_sources", "month", "2025-02-01", quiet), [(self.s2, 1)])
        self.assertEqual(self.rows("metric_quiet_sources", "month", "2025-03-01", quiet), sorted([(self.s1, 1), (self.s3, 1)]))
        self.assertEqual(self.rows("metric_quiet_sources", "month", "2025-04-01", quiet), [])
        self.assertEqual(self.rows("metric_quiet_sources", "month", "2025-05-01", quiet), [(self.s3, 1)])
        self.assertEqual(self.rows("metric_quiet_sources", "quarter", "2025-01-01", quiet), [(self.s4, 1)])
        self.assertEqual(self.rows("metric_quiet_sources", "quarter", "2025-04-01", quiet), sorted([(self.s1, 3), (self.s2, 1)]))
        self.assertEqual(self.rows("metric_quiet_sources", "quarter", "2025-07-01", quiet), [(self.s3, 1)])

    def test_per_coordinator_and_service_line(self):
        cols = "coordinator_id, service_line, referrals, revenue_cents, referring_sources, new_sources"
        self.assertEqual(self.rows("metric_coordinators", "month", "2025-01-01", cols), sorted([
            (self.a, "Cardiology", 2, 10000, 1, 1), (self.a, "Imaging", 1, 0, 1, 1), (0, "Oncology", 0, 3000, 0, 0)]))
        cols = "service_line, referrals, revenue_cents, referring_sources, new_sources"
        self.assertEqual(self.rows("metric_service_lines", "month", "2025-02-01", cols), sorted([
            ("Cardiology", 1, 25000, 1, 1), ("Imaging", 1, 0, 1, 0)]))

    def test_the_day_rows_and_first_referrals_every_path_takes(self):
        days = "SET TimeZone = 'UTC'; SELECT * FROM outreach_metrics_referral_days(%s, %s)"
        self.assertEqual(sorted(self.sql(days, ("2025-01-06", "2025-01-11"))), [
            ("day", dt.date(2025, 1, 6), self.s1, "Cardiology", 1, 0),
            ("day", dt.date(2025, 1, 7), self.s1, "Cardiology", 1, 0),
            ("day", dt.date(2025, 1, 10), self.s1, "Cardiology", 0, 10000)])
        # the window's last day holds its 23:30 referral, and the day rows kept are the function's
        self.assertEqual(self.sql(days, ("2025-01-31", "2025-02-01")),
                         [("day", dt.date(2025, 1, 31), self.s2, "Imaging", 1, 0)])
        self.assertEqual(sorted(self.sql(days, ("2024-01-01", "2026-01-01"))),
                         sorted(self.sql("SELECT * FROM metric_referrals WHERE period_kind = 'day'")))
        first = "SELECT * FROM outreach_metrics_first_referral(%s)"
        self.assertEqual(self.sql(first, (self.s1,)), [(ts("2025-01-06 10:00"), "Cardiology")])
        self.assertEqual(self.sql(first, (self.s4,)), [(ts("2024-12-30 08:00"), "Oncology")])
        # A source without referrals, in a transaction rolled back: the class's data stays as it was.
        conn = psycopg2.connect(self.db_url, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO referral_sources (last_name) VALUES ('None yet') RETURNING id")
                cur.execute(first, (cur.fetchone()[0],))
                self.assertEqual(cur.fetchall(), [])
        finally:
            conn.rollback()
            conn.close()

    def test_goal_progress(self):
        got = {r[0]: r[1:] for r in self.sql("SELECT goal_id, value, target, percent FROM metric_goal_progress")}
        self.assertEqual(got[self.g_ref], (3, 4, Decimal("75.0")))
        self.assertEqual(got[self.g_rev], (0, 0, None))       # no target: no percent
        self.assertEqual(got[self.g_new], (2, 2, Decimal("100.0")))
        self.assertEqual(got[self.g_act], (2, 4, Decimal("50.0")))

    def test_activity(self):
        cols = "coordinator_id, kind, planned, completed, overdue"
        self.assertEqual(self.rows("metric_activity", "month", "2025-01-01", cols), sorted([
            (self.a, "call", 1, 1, 1), (self.b, "meeting", 0, 1, 0)]))
        self.assertEqual(self.rows("metric_activity", "month", "2025-02-01", cols), [(self.a, "call", 1, 0, 1)])
        self.assertEqual(self.rows("metric_activity", "month", "2025-03-01", cols), [(self.a, "call", 0, 1, 0)])

    def test_cases_and_resolution_times(self):
        cols = "category, priority, opened, resolved, still_open, avg_resolution_hours, median_resolution_hours"
        self.assertEqual(self.rows("metric_cases", "month", "2025-01-01", cols),
                         [("billing", "high", 5, 3, 2, Decimal("56.00"), Decimal("48.00"))])
        self.assertEqual(self.rows("metric_cases", "month", "2025-02-01", cols),
                         [("billing", "high", 0, 1, 1, Decimal("504.00"), Decimal("504.00"))])
        # the open case stays open in every later period, up to now
        self.assertEqual(self.rows("metric_cases", "month", "2025-06-01", cols),
                         [("billing", "high", 0, 0, 1, None, None)])

    def test_running_again_changes_nothing(self):
        before = self.dump()
        p = self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", check=True)
        self.assertRegex(p.stdout, r"^metrics run \d+: \d+ periods, 0 rows changed in [\d.]+ s\n"
                                   r"  first referrals \d+ ms, referral days \d+ ms, ")
        self.assertEqual(self.dump(), before)
        run, periods, changed = self.refresh()
        self.assertEqual(changed, 0)
        self.assertEqual(self.dump(), before)
        run, periods, changed = self.refresh("--period", "full")
        self.assertEqual(changed, 0)
        self.assertEqual(self.dump(), before)
        self.assertEqual(self.sql_one("SELECT scope FROM metric_runs WHERE id = %s", (run,)), "full")

    def test_report_formats(self):
        text = self.run_bin("outreachctl", "-c", harness.CONFIG, "report", "--month", "2025-02", check=True).stdout
        self.assertIn("Outreach report for 2025-02", text)
        self.assertIn("Sources gone quiet", text)
        self.assertRegex(text, r"Cardiology\s+1\s")
        doc = json.loads(self.run_bin("outreachctl", "-c", harness.CONFIG, "report", "--month", "2025-02",
                                      "--format", "json", check=True).stdout)
        self.assertEqual(doc["month"], "2025-02")
        self.assertEqual(doc["summary"]["referrals"], 2)
        self.assertEqual(doc["summary"]["revenue"], 250.0)
        self.assertEqual(doc["summary"]["new_sources"], 1)
        self.assertEqual(doc["summary"]["gone_quiet"], 1)
        self.assertEqual([(g["source_id"], g["referrals_last_month"]) for g in doc["gone_quiet"]], [(self.s2, 1)])
        self.assertEqual([t["source_id"] for t in doc["top_referrers"]], [self.s3, self.s1])
        self.assertEqual(doc["cases"], [{"category": "billing", "priority": "high", "opened": 0, "resolved": 1,
                                         "open_at_end": 1, "avg_hours": 504.0, "median_hours": 504.0}])
        goals = {(g["service_line"], g["metric"]): g for g in doc["goals"]}
        self.assertEqual(goals[("Cardiology", "referrals")]["percent"], 75.0)
        out = self.run_bin("outreachctl", "-c", harness.CONFIG, "report", "--month", "2025-02", "--format", "csv",
                           check=True).stdout
        rows = list(csv.reader(io.StringIO(out)))
        self.assertEqual(rows[0][:3], ["section", "referrals", "revenue"])
        self.assertEqual(rows[1][:3], ["summary", "2", "250.00"])
        self.assertIn(["gone_quiet", str(self.s2), "Two", "Ann Able", "1"], rows)
        bad = self.run_bin("outreachctl", "-c", harness.CONFIG, "report", "--month", "2025-13")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("expected a month like", bad.stderr)

    def push(self, klass, args, queue="alerts"):
        job = {"class": klass, "args": args, "jid": os.urandom(12).hex(), "queue": queue, "retry": True,
               "created_at": time.time(), "enqueued_at": time.time()}
        self.redis().sadd("queues", queue)
        self.redis().lpush("queue:" + queue, json.dumps(job))

    def test_monthly_report_email_with_charts_sent_once(self):
        self.push("MonthlyReportJob", [self.a, "2025-02"])
        self.push("MonthlyReportJob", [self.a, "2025-02"])
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts")
        msgs = self.wait_mail(1)
        self.wait_for("both jobs done", lambda: self.redis().llen("queue:alerts") == 0 and not any(
            self.redis().llen(k) for k in self.redis().smembers("outreach:inflight")))
        time.sleep(0.5)
        msgs = self.maildir_messages()
        self.assertEqual(len(msgs), 1, w.log())
        m = msgs[0]
        self.assertEqual(m.defects, [])
        self.assertEqual(str(m["Subject"]), "February 2025: 1 referrals, $50.00 revenue")
        self.assertEqual(str(m["To"]), "Ann Able <ann@x.example>")
        text = m.get_body(("plain",)).get_content()
        self.assertIn("Referrals received:     1\n", text)
        self.assertIn("Revenue from referrals: $50.00", text)
        self.assertIn("2025-01  3  $100.00", text)        # Ann's sources in January: 2 + 1 referrals
        self.assertIn("2025-02  1  $50.00", text)
        self.assertIn("* Two (1 referrals the month before)", text)
        self.assertIn("Cardiology referrals (1 Jan 2025 to 31 Mar 2025): 3 of 4, 75%", text)
        html = m.get_body(("html",)).get_content()
        images = [p for p in m.walk() if p.get_content_type() == "image/png"]
        self.assertEqual(len(images), 3)
        for img in images:
            self.assertTrue(img.get_content().startswith(b"\x89PNG\r\n\x1a\n"))
            cid = img["Content-ID"].strip("<>")
            self.assertIn('src="cid:%s"' % cid, html)
        self.assertEqual(self.sql("SELECT status FROM alert_emails WHERE kind = 'monthly_report'"), [("sent",)])

    def test_monthly_report_counts_are_numbers(self):
        """The counts reach the templates as numbers, so that a section on one is skipped for 0, as
        Mustache skips the number 0 (the text "0" it shows)."""
        tmp = self.templates_copy()
        with open(os.path.join(tmp, "monthly_report.txt.mustache"), "a") as f:
            f.write("{{#activities_completed}}some activities{{/activities_completed}}"
                    "{{^activities_completed}}no activities{{/activities_completed}}\n"
                    "{{#referrals}}{{referrals}} referrals{{/referrals}}\n"
                    "{{#months}}[{{month}}{{^referrals}} none{{/referrals}}]{{/months}}\n")
        self.sql("DELETE FROM alert_emails WHERE kind = 'monthly_report'")
        self.addCleanup(self.sql, "DELETE FROM alert_emails WHERE kind = 'monthly_report'")
        self.push("MonthlyReportJob", [self.a, "2025-02"])
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts",
                           env={"OUTREACH_ALERTS_TEMPLATE_DIR": tmp})
        text = self.wait_mail(1)[0].get_body(("plain",)).get_content()
        self.assertIn("\nno activities\n1 referrals\n", text, w.log())
        self.assertIn("[2024-12 none][2025-01][2025-02]", text)

    def test_stop_while_a_report_waits_on_the_relay(self):
        """A relay that takes the connection and never greets holds a MonthlyReportJob past the
        shutdown timeout: the worker hands the job back and exits with its usual status. (The thread
        waits on the relay, so this checks the hand-back and the exit path, not a thread caught using
        what an exit would free.)"""
        self.sql("DELETE FROM alert_emails WHERE kind = 'monthly_report'")
        relay = socket.socket()
        self.addCleanup(relay.close)
        relay.bind(("127.0.0.1", 0))
        relay.listen(1)
        env = {"OUTREACH_SMTP_HOST": "127.0.0.1", "OUTREACH_SMTP_PORT": str(relay.getsockname()[1]),
               "OUTREACH_SMTP_TIMEOUT": "600", "OUTREACH_WORKER_SHUTDOWN_TIMEOUT": "1"}
        self.push("MonthlyReportJob", [self.a, "2025-02"])
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts", env=env)
        relay.settimeout(60)
        conn, _ = relay.accept()  # the report is rendered and waits for the greeting
        self.addCleanup(conn.close)
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(30), 0, w.log())
        self.assertIn("jobs still running after 1 s: handing them back", w.log())
        self.assertIn("outreach-worker stopped", w.log())
        back = [json.loads(j) for j in self.redis().lrange("queue:alerts", 0, -1)]
        self.assertEqual([(j["class"], j["args"]) for j in back], [("MonthlyReportJob", [self.a, "2025-02"])])

    def test_monthly_report_for_every_coordinator(self):
        self.sql("DELETE FROM alert_emails WHERE kind = 'monthly_report'")
        self.push("MonthlyReportJob", ["2025-02"])
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts")
        msgs = self.wait_mail(2)
        self.assertEqual(sorted(str(m["To"]) for m in msgs), ["Ann Able <ann@x.example>", "Bo Baker <bo@x.example>"])
        bo = [m for m in msgs if "bo@" in str(m["To"])][0]
        self.assertEqual(str(bo["Subject"]), "February 2025: 1 referrals, $200.00 revenue")

    def test_without_a_month_the_last_one_in_utc(self):
        """The scheduled MonthlyReportJob has no month: it reports the one before the current month
        in UTC (December's before January's); `report` without --month shows the current month."""
        def utc_months():
            today = dt.datetime.now(dt.timezone.utc).date()
            last = today.replace(day=1) - dt.timedelta(days=1)
            return today.strftime("%Y-%m"), last.strftime("%Y-%m")

        before = utc_months()
        self.push("MonthlyReportJob", [])
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts")
        m = w.wait_log(r"monthly report (\S+): \d+ email jobs? queued")
        text = self.run_bin("outreachctl", "-c", harness.CONFIG, "report", check=True).stdout
        if utc_months() != before:
            self.skipTest("the month in UTC changed during the test")
        self.assertEqual(m.group(1), before[1])
        self.assertIn("Outreach report for %s\n" % before[0], text)


class Changes(MetricsCase):
    """Writers change the source rows; the next run recomputes exactly what they touched."""

    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, metric_runs, metric_dirty_days, metric_dirty_sources "
                 "RESTART IDENTITY CASCADE")
        for t in ("metric_referrals", "metric_new_sources", "metric_quiet_sources", "metric_coordinators",
                  "metric_service_lines", "metric_activity", "metric_cases"):
            self.sql("TRUNCATE %s" % t)
        self.a = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('A', 'a@x.example') RETURNING id")
        self.b = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('B', 'b@x.example') RETURNING id")
        self.s = self.sql_one("INSERT INTO referral_sources (last_name, coordinator_id) VALUES ('S', %s) RETURNING id",
                              (self.a,))

    def referral(self, at, line="Cardiology", key=None):
        return self.sql_one("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                            "VALUES (%s, %s, %s, %s) RETURNING id", (self.s, line, ts(at), key or at))

    def test_a_new_coordinator_takes_the_history_and_an_earlier_referral_moves_new_source(self):
        r = self.referral("2025-03-10 10:00")
        self.sql("INSERT INTO encounters (referral_id, service_date, amount_cents) VALUES (%s, '2025-05-02', 700)", (r,))
        self.refresh()
        self.assertEqual(self.rows("metric_coordinators", "month", "2025-05-01", "coordinator_id, revenue_cents"),
                         [(self.a, 700)])
        self.sql("UPDATE referral_sources SET coordinator_id = %s WHERE id = %s", (self.b, self.s))
        run, periods, changed = self.refresh()
        self.assertGreater(changed, 0)
        self.assertEqual(self.rows("metric_coordinators", "month", "2025-05-01", "coordinator_id, revenue_cents"),
                         [(self.b, 700)])
        self.assertEqual(self.rows("metric_coordinators", "month", "2025-03-01", "coordinator_id, new_sources"),
                         [(self.b, 1)])
        self.referral("2025-01-15 10:00", "Imaging")
        self.refresh()
        self.assertEqual(self.rows("metric_new_sources", "month", "2025-03-01", "source_id"), [])
        self.assertEqual(self.rows("metric_new_sources", "month", "2025-01-01", "source_id, service_line"),
                         [(self.s, "Imaging")])
        # February: referred in January, not in February
        self.assertEqual(self.rows("metric_quiet_sources", "month", "2025-02-01", "source_id"), [(self.s,)])
        before = self.dump()
        self.assertEqual(self.refresh("--period", "full")[2], 0)
        self.assertEqual(self.dump(), before)

    def test_report_text_shows_control_characters_visibly(self):
        """Names other applications write may hold escape sequences; the text report shows them as
        \\x1b and \\u009b (the columns sized to what is shown), CSV and JSON carry them as they are."""
        self.sql("UPDATE referral_sources SET last_name = %s WHERE id = %s", ("S\x1b]0;pwned\x07", self.s))
        self.sql("UPDATE coordinators SET name = %s WHERE id = %s", ("A\u009b2J", self.a))
        self.referral("2025-03-10 10:00", "Cardio\x1b[2J")
        self.refresh()
        run = lambda *a: self.run_bin("outreachctl", "-c", harness.CONFIG, "report", "--month", "2025-03", *a,
                                      check=True).stdout
        text = run()
        for bad in ("\x1b", "\x07", "\u009b"):
            self.assertNotIn(bad, text)
        self.assertIn("S\\x1b]0;pwned\\x07", text)
        self.assertIn("A\\u009b2J", text)
        self.assertIn("Cardio\\x1b[2J", text)
        # Each table's lines are as wide as its header, the escapes counted as they are shown.
        table = text.split("Top referrers", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        self.assertTrue(any("pwned" in t for t in table), table)
        self.assertEqual(len({len(t) for t in table}), 1, table)
        self.assertIn("S\x1b]0;pwned\x07", run("--format", "csv"))
        doc = json.loads(run("--format", "json"))
        self.assertEqual(doc["top_referrers"][0]["name"], "S\x1b]0;pwned\x07")

    def test_deleting_the_only_referral_empties_its_periods(self):
        r = self.referral("2025-06-10 10:00")
        self.refresh()
        self.assertEqual(len(self.rows("metric_referrals", "quarter", "2025-04-01", "source_id")), 1)
        self.sql("DELETE FROM referrals WHERE id = %s", (r,))
        self.refresh()
        for kind, start in (("day", "2025-06-10"), ("week", "2025-06-09"), ("month", "2025-06-01"),
                            ("quarter", "2025-04-01")):
            self.assertEqual(self.rows("metric_referrals", kind, start, "source_id"), [], kind)
            self.assertEqual(self.rows("metric_new_sources", kind, start, "source_id"), [], kind)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_quiet_sources"), 0)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_source_first"), 0)

    def test_one_period_on_request(self):
        self.referral("2025-06-10 10:00")
        self.refresh()
        self.sql("DELETE FROM metric_referrals WHERE period_kind = 'month'")
        run, periods, changed = self.refresh("--period", "month:2025-06-17")
        self.assertEqual(periods, 31)  # June, and the 30 days it adds up
        self.assertEqual(self.rows("metric_referrals", "month", "2025-06-01", "source_id, referrals"), [(self.s, 1)])
        bad = self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", "--period", "year:2025-01-01")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("day, week, month or quarter", bad.stderr)

    def test_a_run_as_of_a_past_moment_and_the_moments_refused(self):
        self.referral("2025-06-10 10:00")
        # UTC, unless the time says otherwise, whatever the session's zone
        self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", "--as-of", "2025-07-01 00:30",
                     env={"PGTZ": "America/New_York"}, check=True)
        self.assertEqual(self.sql("SELECT scope, as_of FROM metric_runs"), [("full", ts("2025-07-01 00:30"))])
        # the figures as they stood: quiet since, in the periods begun by then and none later
        self.assertEqual(sorted(self.sql("SELECT period_kind, period_start FROM metric_quiet_sources")), sorted([
            ("day", dt.date(2025, 6, 11)), ("week", dt.date(2025, 6, 16)), ("month", dt.date(2025, 7, 1)),
            ("quarter", dt.date(2025, 7, 1))]))
        figures = self.dump()
        ahead = (dt.datetime.now(UTC) + dt.timedelta(hours=1)).isoformat()
        for as_of, says in (("2025-07-01 02:29+02", "is before the last run's"), (ahead, "lies ahead of now"),
                            ("last tuesday", "invalid input syntax")):
            p = self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", "--as-of", as_of)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(says, p.stderr)
        p = self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", "--as-of", "2025-07-02", "--enqueue")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--as-of runs here", p.stderr)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_runs"), 1)
        self.assertEqual(self.dump(), figures)
        # the next regular run brings them up to now
        run, periods, changed = self.refresh()
        self.assertEqual(self.sql_one("SELECT scope FROM metric_runs WHERE id = %s", (run,)), "incremental")
        self.assertGreater(self.sql_one("SELECT as_of FROM metric_runs WHERE id = %s", (run,)), ts("2025-07-01 00:30"))
        before = self.dump()
        self.assertEqual(self.refresh("--period", "full")[2], 0)
        self.assertEqual(self.dump(), before)

    def test_the_worker_runs_metrics_jobs_and_refuses_bad_args(self):
        self.referral("2025-06-10 10:00")
        r = self.redis()
        for args in ([], ["month", "2025-06-01"], ["year", "2025"]):
            job = {"class": "MetricsJob", "args": args, "jid": os.urandom(12).hex(), "queue": "metrics",
                   "retry": True, "created_at": time.time(), "enqueued_at": time.time()}
            r.sadd("queues", "metrics")
            r.lpush("queue:metrics", json.dumps(job))
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "metrics")
        self.wait_for("two metric runs", lambda: self.sql_one("SELECT count(*) FROM metric_runs") == 2)
        self.wait_for("the bad job in dead", lambda: r.zcard("dead") == 1)
        dead = json.loads(r.zrange("dead", 0, -1)[0])
        self.assertEqual(dead["error_class"], "ArgumentError")
        self.assertIn("period_kind", dead["error_message"])
        self.assertEqual(sorted(self.sql("SELECT scope FROM metric_runs")), [("full",), ("period",)])
        self.assertEqual(self.rows("metric_referrals", "month", "2025-06-01", "source_id, referrals"), [(self.s, 1)])
        # the time of each phase, in the log and with the run
        w.wait_log(r"metrics: run \d+ recomputed .* in \d+ ms "
                   r"\(first referrals \d+ ms, referral days \d+ ms, .*goals \d+ ms\)")
        phases = self.sql_one("SELECT phases FROM metric_runs ORDER BY id DESC LIMIT 1")
        for phase in ("first referrals", "referral days", "referral rollups", "new and quiet", "coordinators and lines",
                      "activity", "cases", "goals"):
            self.assertRegex(phases, phase + r" \d+ ms")
        enq = self.run_bin("outreachctl", "-c", harness.CONFIG, "metrics", "--enqueue", "--period", "full", check=True)
        self.wait_for("the enqueued run", lambda: self.sql_one("SELECT count(*) FROM metric_runs") == 3)


class RandomData(MetricsCase):
    """Random writes between runs; the tables must equal a computation from scratch (here, in Python)."""

    LINES = ("Cardiology", "Imaging", "Oncology", "Hospice")
    maxDiff = None

    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, outreach_goals, metric_runs, metric_dirty_days, "
                 "metric_dirty_sources, metric_dirty_spans, metric_source_owner, metric_referrals, metric_new_sources, "
                 "metric_quiet_sources, metric_coordinators, metric_service_lines, metric_activity, metric_cases "
                 "RESTART IDENTITY CASCADE")
        self.seed = int(os.environ.get("METRICS_SEED", "0")) or random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        # The rows are dated around now; METRICS_EDGE (ISO 8601, as printed on a failure) replays a run.
        edge = os.environ.get("METRICS_EDGE")
        self.edge = dt.datetime.fromisoformat(edge) if edge else dt.datetime.now(UTC)

    def rand_time(self):
        """A moment of the 420 days before self.edge (now, unless a test moves it) or the 6 days after it:
        rows dated ahead exist; one in ten falls within a week either side of the edge."""
        if self.rng.random() < 0.1:
            return self.edge + dt.timedelta(minutes=self.rng.randrange(-60 * 24 * 7, 60 * 24 * 7))
        return self.edge + dt.timedelta(minutes=self.rng.randrange(-60 * 24 * 420, 60 * 24 * 6))

    def populate(self, n):
        rng = self.rng
        coords = [r[0] for r in self.sql("SELECT id FROM coordinators")]
        sources = [r[0] for r in self.sql("SELECT id FROM referral_sources")]
        for _ in range(n):
            s = rng.choice(sources)
            rid = self.sql_one("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                               "VALUES (%s, %s, %s, %s) RETURNING id",
                               (s, rng.choice(self.LINES), self.rand_time(), os.urandom(6).hex()))
            for _ in range(rng.randrange(0, 3)):
                self.sql("INSERT INTO encounters (referral_id, service_date, amount_cents) VALUES (%s, %s, %s)",
                         (rid, self.rand_time().date(), rng.randrange(0, 100000)))
        for _ in range(n // 4):
            sched = self.rand_time() if rng.random() < 0.8 else None
            done = rng.random()
            comp = (sched or self.rand_time()) + dt.timedelta(hours=rng.randrange(1, 2000)) if done < 0.5 else None
            canc = (sched + dt.timedelta(hours=rng.randrange(1, 2000))) if sched and 0.5 <= done < 0.7 else None
            self.sql("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at, canceled_at) "
                     "VALUES (%s, %s, %s, %s, %s, %s)", (rng.choice(sources), rng.choice(coords + [None]),
                                                        rng.choice(("call", "email", "meeting")), sched, comp, canc))
        for _ in range(n // 5):
            opened = self.rand_time()
            resolved = opened + dt.timedelta(minutes=rng.randrange(1, 60 * 24 * 40)) if rng.random() < 0.7 else None
            self.sql("INSERT INTO cases (source_id, category, priority, status, summary, opened_at, resolved_at) "
                     "VALUES (%s, %s, %s, %s, 'x', %s, %s)",
                     (rng.choice(sources), rng.choice(("billing", "clinical")), rng.choice(("normal", "urgent")),
                      "resolved" if resolved else "open", opened, resolved))
        # Completions, openings and resolutions dated up to 6 days after the edge (an import, a wrong
        # time zone): counted when their day comes.
        for _ in range(max(1, n // 30)):
            ahead = self.edge + dt.timedelta(minutes=rng.randrange(1, 60 * 24 * 6))
            self.sql("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at) "
                     "VALUES (%s, %s, 'call', %s, %s)", (rng.choice(sources), rng.choice(coords + [None]),
                                                         ahead - dt.timedelta(hours=rng.randrange(1, 200)), ahead))
            self.sql("INSERT INTO cases (source_id, category, priority, status, summary, opened_at, resolved_at) "
                     "VALUES (%s, 'billing', 'normal', 'resolved', 'x', %s, %s), (%s, 'clinical', 'urgent', 'open', "
                     "'x', %s, NULL)", (rng.choice(sources), ahead - dt.timedelta(hours=rng.randrange(1, 200)), ahead,
                                        rng.choice(sources), ahead))

    def mutate(self):
        rng = self.rng
        coords = [r[0] for r in self.sql("SELECT id FROM coordinators")]
        sources = [r[0] for r in self.sql("SELECT id FROM referral_sources")]
        refs = [r[0] for r in self.sql("SELECT id FROM referrals")]
        for rid in rng.sample(refs, min(5, len(refs))):
            self.sql("DELETE FROM referrals WHERE id = %s", (rid,))
        refs = [r[0] for r in self.sql("SELECT id FROM referrals")]
        for rid in rng.sample(refs, min(5, len(refs))):
            self.sql("UPDATE referrals SET referred_at = %s WHERE id = %s", (self.rand_time(), rid))
        for rid in rng.sample(refs, min(4, len(refs))):
            self.sql("UPDATE referrals SET service_line = %s, source_id = %s WHERE id = %s",
                     (rng.choice(self.LINES), rng.choice(sources), rid))
        for s in rng.sample(sources, 3):
            self.sql("UPDATE referral_sources SET coordinator_id = %s WHERE id = %s", (rng.choice(coords + [None]), s))
        self.sql("UPDATE encounters SET service_date = service_date + 40, amount_cents = amount_cents + 1 "
                 "WHERE id IN (SELECT id FROM encounters ORDER BY random() LIMIT 5)")
        self.sql("UPDATE activities SET completed_at = scheduled_at + interval '3 days' "
                 "WHERE id IN (SELECT id FROM activities WHERE completed_at IS NULL AND canceled_at IS NULL "
                 "             AND scheduled_at IS NOT NULL ORDER BY random() LIMIT 3)")
        self.sql("UPDATE cases SET status = 'resolved', resolved_at = opened_at + interval '50 hours' "
                 "WHERE id IN (SELECT id FROM cases WHERE status = 'open' ORDER BY random() LIMIT 3)")
        self.sql("DELETE FROM activities WHERE id IN (SELECT id FROM activities ORDER BY random() LIMIT 2)")
        self.sql("DELETE FROM outreach_goals WHERE id IN (SELECT id FROM outreach_goals ORDER BY random() LIMIT 1)")
        self.goals(2)
        self.populate(30)

    def goals(self, n):
        for _ in range(n):
            start = self.rand_time().date()
            self.sql("INSERT INTO outreach_goals (service_line, metric, period_start, period_end, target) "
                     "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     (self.rng.choice(self.LINES),
                      self.rng.choice(("referrals", "revenue_cents", "new_sources", "activities")),
                      start, start + dt.timedelta(days=self.rng.randrange(0, 120)), self.rng.randrange(0, 50)))

    # --- the computation from scratch ----------------------------------------------------------------
    def expected(self, as_of):
        today = as_of.date()
        coord = dict(self.sql("SELECT id, coalesce(coordinator_id, 0) FROM referral_sources"))
        refs = self.sql("SELECT id, source_id, service_line, referred_at FROM referrals")
        line_of = {r[0]: (r[1], r[2]) for r in refs}
        encs = self.sql("SELECT referral_id, service_date, amount_cents FROM encounters")
        acts = self.sql("SELECT coalesce(coordinator_id, 0), kind, scheduled_at, completed_at, canceled_at FROM activities")
        cases = self.sql("SELECT category, priority, opened_at, resolved_at FROM cases")
        exp = {k: set() for k in ("metric_referrals", "metric_new_sources", "metric_quiet_sources",
                                  "metric_coordinators", "metric_service_lines", "metric_activity", "metric_cases")}
        first = {}
        for rid, s, line, at in sorted(refs, key=lambda r: (r[3], r[0])):
            first.setdefault(s, (at, line))
        earliest = min([day_of(r[3]) for r in refs] + [e[1] for e in encs] +
                       [day_of(t) for a in acts for t in (a[2], a[3]) if t] + [day_of(c[2]) for c in cases])
        for kind in KINDS:
            # A referral, an encounter, a first referral counts in its periods once its day has come.
            per = {}
            for rid, s, line, at in refs:
                if day_of(at) <= today:
                    x = per.setdefault((trunc(kind, day_of(at)), s, line), [0, 0])
                    x[0] += 1
            for rid, d, cents in encs:
                if d <= today:
                    s, line = line_of[rid]
                    x = per.setdefault((trunc(kind, d), s, line), [0, 0])
                    x[1] += cents
            for (p, s, line), (n, c) in per.items():
                exp["metric_referrals"].add((kind, p, s, line, n, c))
            news = {}
            for s, (at, line) in first.items():
                if day_of(at) <= today:
                    p = trunc(kind, day_of(at))
                    exp["metric_new_sources"].add((kind, p, s, line))
                    news[(p, s)] = line
            referring = {}
            for (p, s, line), (n, c) in per.items():
                if n > 0:
                    referring.setdefault(p, {}).setdefault(s, 0)
                    referring[p][s] += n
            for p, srcs in referring.items():
                nxt = step(kind, p)
                if nxt <= today:
                    for s, n in srcs.items():
                        if s not in referring.get(nxt, {}):
                            exp["metric_quiet_sources"].add((kind, nxt, s, n))
            for group, key in (("metric_coordinators", lambda s, line: (coord[s], line)),
                               ("metric_service_lines", lambda s, line: (line,))):
                agg = {}
                for (p, s, line), (n, c) in per.items():
                    x = agg.setdefault((p,) + key(s, line), [0, 0, 0, 0])
                    x[0] += n
                    x[1] += c
                    x[2] += n > 0
                for (p, s), line in news.items():
                    x = agg.setdefault((p,) + key(s, line), [0, 0, 0, 0])
                    x[3] += 1
                for k, v in agg.items():
                    exp[group].add((kind,) + k + tuple(v))
            p = trunc(kind, earliest)
            while p <= today:
                stop = dt.datetime.combine(step(kind, p), dt.time(), UTC)
                start = dt.datetime.combine(p, dt.time(), UTC)
                at = min(stop, as_of)
                agg = {}
                for c_id, k, sched, comp, canc in acts:
                    x = agg.setdefault((c_id, k), [0, 0, 0])
                    x[0] += bool(sched and start <= sched < stop and canc is None)
                    # a completion counts once its day has come; planned ones are forward-looking
                    x[1] += bool(comp and start <= comp < stop and canc is None and day_of(comp) <= today)
                    x[2] += bool(sched and sched < at and (comp is None or comp >= at) and (canc is None or canc >= at))
                for k, v in agg.items():
                    if any(v):
                        exp["metric_activity"].add((kind, p) + k + tuple(v))
                agg = {}
                for cat, prio, op, res in cases:
                    x = agg.setdefault((cat, prio), [0, 0, 0, []])
                    x[0] += start <= op < stop and day_of(op) <= today  # openings and resolutions too
                    if res and start <= res < stop and day_of(res) <= today:
                        x[1] += 1
                        x[3].append(Decimal((res - op).total_seconds()) / 3600)
                    x[2] += op < at and (res is None or res >= at)
                for k, (o, r, still, hours) in agg.items():
                    if o or r or still:
                        q = Decimal("0.01")
                        avg = (sum(hours) / len(hours)).quantize(q) if hours else None
                        med = Decimal(statistics.median(hours)).quantize(q) if hours else None
                        exp["metric_cases"].add((kind, p) + k + (o, r, still, avg, med))
                p = step(kind, p)
        return exp

    def expected_goals(self, exp):
        out = set()
        for gid, line, metric, ps, pe, target in self.sql(
                "SELECT id, service_line, metric, period_start, period_end, target FROM outreach_goals"):
            if metric == "activities":
                v = sum(r[5] for r in exp["metric_activity"] if r[0] == "day" and ps <= r[1] <= pe)
            else:
                col = {"referrals": 3, "revenue_cents": 4, "new_sources": 6}[metric]
                v = sum(r[col] for r in exp["metric_service_lines"]
                        if r[0] == "day" and r[2] == line and ps <= r[1] <= pe)
            pct = (Decimal(100) * v / target).quantize(Decimal("0.1"), ROUND_HALF_UP) if target > 0 else None
            out.add((gid, line, metric, ps, pe, Decimal(v), target, pct))
        return out

    def compare(self):
        as_of = self.sql_one("SELECT as_of FROM metric_runs ORDER BY id DESC LIMIT 1").astimezone(UTC)
        exp = self.expected(as_of)
        for table, rows in exp.items():
            got = set(self.sql("SELECT * FROM %s" % table))
            if table == "metric_cases":  # averages and medians: equal to the cent, rounding aside
                got, rows = ({r[:7] + tuple(None if v is None else round(float(v), 1) for v in r[7:]) for r in x}
                             for x in (got, rows))
            self.assertEqual({"not expected": sorted(got - rows, key=str)[:10], "missing": sorted(rows - got, key=str)[:10]},
                             {"not expected": [], "missing": []},
                             "%s (METRICS_SEED=%d METRICS_EDGE=%s, as of %s)"
                             % (table, self.seed, self.edge.isoformat(), as_of))
        got = set(self.sql("SELECT * FROM metric_goal_progress"))
        self.assertEqual(got, self.expected_goals(exp))

    def world(self, *run, before_run=lambda: None):
        """Coordinators, sources, random rows and goals (and what before_run writes), computed by a first
        run (outreachctl metrics *run) and checked."""
        for i in range(4):
            self.sql("INSERT INTO coordinators (name, email) VALUES (%s, %s)", ("C%d" % i, "c%d@x.example" % i))
        for i in range(25):
            self.sql("INSERT INTO referral_sources (last_name, coordinator_id) "
                     "VALUES (%s, (SELECT id FROM coordinators ORDER BY random() LIMIT 1))", ("S%d" % i,))
        self.populate(120)
        self.goals(6)
        before_run()
        self.refresh(*run)
        self.compare()

    def settle(self):
        """An incremental run equals the computation from scratch, and a full one then changes nothing."""
        run, periods, changed = self.refresh()
        self.assertEqual(self.sql_one("SELECT scope FROM metric_runs WHERE id = %s", (run,)), "incremental")
        self.compare()
        before = self.dump()
        self.assertEqual(self.refresh("--period", "full")[2], 0)
        self.assertEqual(self.dump(), before)

    def no_more_changes(self):
        """Another run changes nothing, nor does a full one after it."""
        before = self.dump()
        self.assertEqual(self.refresh()[2], 0)
        self.assertEqual(self.refresh("--period", "full")[2], 0)
        self.assertEqual(self.dump(), before)

    def test_incremental_runs_equal_a_computation_from_scratch(self):
        self.world()
        for _ in range(3):
            self.mutate()
            self.refresh()
            self.compare()
        self.no_more_changes()

    def test_rows_dated_ahead_are_counted_by_the_first_regular_run_of_their_day(self):
        """Rows written days ahead of their day, whose notes earlier runs took, are counted by the first
        regular run on their day, not before: "today" moves with --as-of, a run a day (and a gap of two)."""
        # Twelve days before the last whole hour: the last run, at 00:05 of day 12, never lies ahead of
        # now, even just after midnight.
        t0 = dt.datetime.combine((dt.datetime.now(UTC) - dt.timedelta(hours=1)).date() - dt.timedelta(days=12),
                                 dt.time(12, 5), UTC)
        d0 = t0.date()
        self.edge = t0  # the random rows gather around t0 and reach 7 days past it

        def moment(days, hour=0, minute=0):
            return dt.datetime.combine(d0 + dt.timedelta(days=days), dt.time(hour, minute), UTC)

        def as_of(t):
            return ("--as-of", t.isoformat())

        def referral(source, at, key):
            return self.sql_one("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                                "VALUES (%s, 'Hospice', %s, %s) RETURNING id", (source, at, key))

        def new_source(name, at):
            s = self.sql_one("INSERT INTO referral_sources (last_name) VALUES (%s) RETURNING id", (name,))
            referral(s, at, name)  # its first referral ever
            return s

        def ahead_rows():
            # A source whose first referral is 2 days ahead, and an activity completed 4 days ahead by
            # a coordinator of its own, written before the first run (a bulk load, as of t0).
            early["s"] = new_source("Early", moment(2, 17))
            early["c"] = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Ahead', 'ahead@x.example') "
                                      "RETURNING id")
            self.sql("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at) "
                     "VALUES (%s, %s, 'event', %s, %s)", (early["s"], early["c"], moment(-2, 10), moment(4, 8)))

        # Rows ahead: a new source, a completion; after the first run, another new source and a case
        # opened 3 days ahead and resolved 5 days ahead (a day without a run).
        early = {}
        self.world(*as_of(t0), before_run=ahead_rows)
        late = new_source("Late", moment(3, 9, 30))
        self.sql("INSERT INTO cases (source_id, category, priority, status, summary, opened_at, resolved_at) "
                 "VALUES (%s, 'ahead', 'high', 'resolved', 'x', %s, %s)", (late, moment(3, 10), moment(5, 9)))
        old, old_ref = self.sql("SELECT source_id, id FROM referrals WHERE referred_at < %s ORDER BY id LIMIT 1",
                                (t0,))[0]
        referral(old, moment(1), "midnight")
        referral(old, moment(9, 23, 59), "last minute")
        self.sql("INSERT INTO encounters (referral_id, service_date, amount_cents) VALUES (%s, %s, 777)",
                 (old_ref, d0 + dt.timedelta(days=2)))
        self.assertGreater(self.sql_one("SELECT count(*) FROM metric_dirty_days WHERE day > %s", (d0,)), 0)

        # An hour later a regular run takes their notes and counts none of them; a full run agrees.
        run, periods, changed = self.refresh(*as_of(t0 + dt.timedelta(hours=1)))
        self.assertEqual(self.sql_one("SELECT scope FROM metric_runs WHERE id = %s", (run,)), "incremental")
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_dirty_days"), 0)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_referrals WHERE period_start > %s", (d0,)), 0)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_new_sources WHERE source_id IN (%s, %s)",
                                      (early["s"], late)), 0)
        self.assertEqual(self.sql_one("SELECT sum(completed) FROM metric_activity WHERE coordinator_id = %s",
                                      (early["c"],)), 0)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_cases WHERE category = 'ahead'"), 0)
        self.compare()
        before = self.dump()
        self.assertEqual(self.refresh("--period", "full", *as_of(t0 + dt.timedelta(hours=1)))[2], 0)
        self.assertEqual(self.dump(), before)

        # Then one at :05 each day; none on day 5, so day 6's run brings two days in.
        for n in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12):
            run, periods, changed = self.refresh(*as_of(moment(n, 0, 5)))
            self.assertEqual(self.sql_one("SELECT scope FROM metric_runs WHERE id = %s", (run,)), "incremental")
            self.compare()
            for s, day in ((early["s"], 2), (late, 3)) if n <= 6 else ():  # (until random writes move them)
                first = moment(day).date()
                self.assertEqual(sorted(self.sql("SELECT period_kind, period_start, service_line "
                                                 "FROM metric_new_sources WHERE source_id = %s", (s,))),
                                 sorted((k, trunc(k, first), "Hospice") for k in KINDS) if n >= day else [],
                                 "as of day %d" % n)
            if n <= 6:  # the completion (day 4), the case's opening (day 3) and resolution (day 5)
                for what, day, query in (
                        ("completed", 4, "SELECT period_kind, period_start FROM metric_activity "
                                         "WHERE coordinator_id = %s AND completed > 0" % early["c"]),
                        ("opened", 3, "SELECT period_kind, period_start FROM metric_cases "
                                      "WHERE category = 'ahead' AND opened > 0"),
                        ("resolved", 5, "SELECT period_kind, period_start FROM metric_cases "
                                        "WHERE category = 'ahead' AND resolved > 0")):
                    self.assertEqual(sorted(self.sql(query)),
                                     sorted((k, trunc(k, moment(day).date())) for k in KINDS) if n >= day else [],
                                     "%s as of day %d" % (what, n))
            self.assertEqual(self.sql_one("SELECT count(*) FROM metric_referrals WHERE period_start > %s",
                                          (d0 + dt.timedelta(days=n),)), 0)
            if n == 2:  # the week, month and quarter of a new source's first day, each on its own: no change
                for k in ("week", "month", "quarter"):
                    run, periods, changed = self.refresh("--period", "%s:%s" % (k, moment(3).date()),
                                                         *as_of(moment(n, 0, 5)))
                    self.assertEqual(changed, 0, k)
            if n == 6:
                self.mutate()  # more random writes, around t0 and ahead of it

        # Now: the last run, then nothing more to change, whichever way.
        self.refresh()
        self.compare()
        self.no_more_changes()

    def test_the_first_computation_loads_in_bulk_and_builds_the_same_indexes(self):
        tables = ("metric_referrals", "metric_new_sources", "metric_quiet_sources")

        def schema():
            return (self.sql("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY (%s) "
                             "ORDER BY 2", (list(tables),)),
                    self.sql("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                             "WHERE conrelid::regclass::text = ANY (%s) ORDER BY 2", (list(tables),)))

        before = schema()
        self.assertEqual(sum(d.startswith("PRIMARY KEY") for _, _, d in before[1]), 3)
        self.world()  # the first run: into empty tables, checked against the computation from scratch
        self.assertRegex(self.sql_one("SELECT phases FROM metric_runs ORDER BY id DESC LIMIT 1"), r", indexes \d+ ms$")
        self.assertEqual(schema(), before)
        # Over existing figures a full run compares: nothing differs, nothing is written.
        figures = self.dump()
        run, periods, changed = self.refresh("--period", "full")
        self.assertEqual(changed, 0)
        self.assertNotIn("indexes", self.sql_one("SELECT phases FROM metric_runs WHERE id = %s", (run,)))
        self.assertEqual(self.dump(), figures)
        # Rows at the edges: today, yesterday, the days to come (not counted until they come), an
        # encounter of no amount. Emptied by an operator, the tables are loaded in bulk again; a full
        # run that compares then finds nothing to change, so both ways give the same figures.
        s, line = self.sql("SELECT source_id, service_line FROM referrals ORDER BY id LIMIT 1")[0]
        for at in ("now() - interval '1 minute'", "now() - interval '1 day'", "now() + interval '3 days'",
                   "date_trunc('week', now()) + interval '6 days 23 hours'"):
            rid = self.sql_one("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                               "VALUES (%%s, %%s, %s, %%s) RETURNING id" % at, (s, line, os.urandom(6).hex()))
            self.sql("INSERT INTO encounters (referral_id, service_date, amount_cents) "
                     "VALUES (%s, current_date + 2, 500), (%s, current_date, 0)", (rid, rid))
        self.sql("TRUNCATE metric_referrals, metric_new_sources, metric_quiet_sources, metric_coordinators, "
                 "metric_service_lines, metric_activity, metric_cases, metric_goal_progress")
        run, periods, changed = self.refresh("--period", "full")
        self.assertIn("indexes", self.sql_one("SELECT phases FROM metric_runs WHERE id = %s", (run,)))
        self.assertEqual(schema(), before)
        figures = self.dump()
        # (the random rows may give the source other service lines today too)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_referrals WHERE period_kind = 'day' "
                                      "AND period_start = current_date AND source_id = %s AND service_line = %s",
                                      (s, line)), 1)
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_referrals WHERE period_start > current_date"), 0)
        run, periods, changed = self.refresh("--period", "full")
        self.assertEqual(changed, 0)
        self.assertEqual(self.dump(), figures)

    def test_a_full_run_counts_the_same_periods_either_way(self):
        """A full run records as its periods every day, week, month and quarter from the day of the
        earliest record to today, whether it loads empty tables in bulk or compares with the figures
        kept (whose weeks and quarters begin before that day), with or without a day noted before it."""
        t = dt.datetime.now(UTC) - dt.timedelta(hours=1)
        # The earliest record: a case opened on a Wednesday in the middle of a quarter, long before
        # the random rows.
        q = trunc("quarter", (t - dt.timedelta(days=600)).date()) + dt.timedelta(days=40)
        first = q + dt.timedelta(days=(2 - q.weekday()) % 7)

        def early_case():
            self.sql("INSERT INTO cases (source_id, category, priority, status, summary, opened_at) "
                     "VALUES ((SELECT min(id) FROM referral_sources), 'billing', 'normal', 'open', 'x', %s)",
                     (dt.datetime.combine(first, dt.time(10), UTC),))

        def periods_of(run):
            return self.sql("SELECT periods, phases FROM metric_runs WHERE id = %s", (run,))[0]

        expect = sum(len({trunc(k, first + dt.timedelta(days=n)) for n in range((t.date() - first).days + 1)})
                     for k in KINDS)
        self.world("--as-of", t.isoformat(), before_run=early_case)
        run = self.sql_one("SELECT max(id) FROM metric_runs")
        bulk, phases = periods_of(run)
        self.assertIn("indexes", phases)
        # a referral written and deleted again: its day, before the earliest record, is noted
        s = self.sql_one("SELECT min(id) FROM referral_sources")
        rid = self.sql_one("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                           "VALUES (%s, 'Hospice', %s, 'gone') RETURNING id",
                           (s, dt.datetime.combine(first - dt.timedelta(days=30), dt.time(9), UTC)))
        self.sql("DELETE FROM referrals WHERE id = %s", (rid,))
        run, periods, changed = self.refresh("--period", "full", "--as-of", t.isoformat())
        compared, phases = periods_of(run)
        self.assertNotIn("indexes", phases)
        self.assertEqual(changed, 0)
        self.assertEqual({"bulk": bulk, "compared": compared}, {"bulk": expect, "compared": expect})

    def test_a_reader_of_the_empty_tables_is_not_waited_for(self):
        self.world()
        figures = self.dump()
        self.sql("TRUNCATE metric_referrals, metric_new_sources, metric_quiet_sources, metric_coordinators, "
                 "metric_service_lines, metric_activity, metric_cases, metric_goal_progress")
        reader = psycopg2.connect(self.db_url, connect_timeout=10)
        try:
            cur = reader.cursor()  # a transaction, open until closed
            cur.execute("SELECT count(*) FROM metric_quiet_sources")  # a dashboard's open transaction
            run, periods, changed = self.refresh("--period", "full")
            self.assertNotIn("indexes", self.sql_one("SELECT phases FROM metric_runs WHERE id = %s", (run,)))
            self.assertEqual(self.dump(), figures)
        finally:
            reader.close()

    def test_a_referral_moved_to_another_day_and_line(self):
        self.world()
        rid, s = self.sql("SELECT id, source_id FROM referrals ORDER BY referred_at LIMIT 1")[0]
        self.sql("INSERT INTO encounters (referral_id, service_date, amount_cents) VALUES (%s, '2025-03-03', 4200)",
                 (rid,))
        # the source's first referral moves from its old day to a later one, in another line
        self.sql("UPDATE referrals SET referred_at = referred_at + interval '45 days', service_line = 'Hospice' "
                 "WHERE id = %s", (rid,))
        self.settle()

    def test_deletions_of_referrals_encounters_and_a_whole_source(self):
        self.world()
        self.sql("DELETE FROM encounters WHERE id IN (SELECT id FROM encounters ORDER BY id LIMIT 10)")
        self.sql("DELETE FROM referrals WHERE id IN (SELECT id FROM referrals ORDER BY referred_at DESC LIMIT 10)")
        s = self.sql_one("SELECT source_id FROM referrals GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
        self.sql("DELETE FROM activities WHERE source_id = %s", (s,))
        self.sql("DELETE FROM cases WHERE source_id = %s", (s,))
        self.sql("DELETE FROM referrals WHERE source_id = %s", (s,))
        self.sql("DELETE FROM referral_sources WHERE id = %s", (s,))
        self.settle()
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_referrals WHERE source_id = %s", (s,)), 0)

    def test_sources_changing_owner(self):
        self.world()
        a, b = self.sql("SELECT id FROM referral_sources ORDER BY id LIMIT 2")
        c = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('New', 'new@x.example') RETURNING id")
        self.sql("UPDATE referral_sources SET coordinator_id = %s WHERE id = %s", (c, a[0]))
        self.sql("UPDATE referral_sources SET coordinator_id = NULL WHERE id = %s", (b[0],))
        self.settle()
        # and back, with a new referral of the source in the same run
        self.sql("UPDATE referral_sources SET coordinator_id = (SELECT min(id) FROM coordinators) WHERE id = %s", (a[0],))
        self.sql("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                 "VALUES (%s, 'Oncology', '2025-02-02 10:00+00', 'moved')", (a[0],))
        self.settle()
        # a single period's run after a change of owner and a new referral inside it, then the regular one
        self.sql("UPDATE referral_sources SET coordinator_id = %s WHERE id = %s", (c, b[0]))
        self.sql("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                 "VALUES (%s, 'Imaging', '2025-02-10 10:00+00', 'in-period')", (b[0],))
        run, periods, changed = self.refresh("--period", "month:2025-02-01")
        self.assertEqual(self.sql_one("SELECT scope FROM metric_runs WHERE id = %s", (run,)), "period")
        self.compare()
        self.settle()

    def test_encounters_of_no_amount_keep_their_rows(self):
        self.world()
        s = self.sql_one("INSERT INTO referral_sources (last_name) VALUES ('Zero') RETURNING id")
        rid = self.sql_one("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                           "VALUES (%s, 'Hospice', '2025-05-05 10:00+00', 'z') RETURNING id", (s,))
        self.settle()
        eid = self.sql_one("INSERT INTO encounters (referral_id, service_date, amount_cents) "
                           "VALUES (%s, '2025-06-06', 0) RETURNING id", (rid,))
        self.sql("DELETE FROM referrals WHERE patient_key <> 'z' AND id IN "
                 "(SELECT id FROM referrals ORDER BY random() LIMIT 3)")
        self.settle()
        for kind, start in (("day", "2025-06-06"), ("month", "2025-06-01"), ("quarter", "2025-04-01")):
            self.assertIn((s, "Hospice", 0 if kind != "quarter" else 1, 0),
                          self.rows("metric_referrals", kind, start, "source_id, service_line, referrals, revenue_cents"))
        self.assertIn((0, "Hospice", 0, 0, 0, 0),
                      self.rows("metric_coordinators", "month", "2025-06-01",
                                "coordinator_id, service_line, referrals, revenue_cents, referring_sources, new_sources"))
        self.sql("DELETE FROM encounters WHERE id = %s", (eid,))
        self.settle()
        self.sql("DELETE FROM referrals WHERE id = %s", (rid,))
        self.settle()

    def test_bulk_activities_note_two_days_each_and_stay_exact(self):
        self.world()
        self.sql("TRUNCATE metric_dirty_spans")
        # 2,000 activities, a tenth of them still open: one span per distinct (start, end), not a row per day
        self.sql("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at) "
                 "SELECT (SELECT min(id) FROM referral_sources), NULL, 'call', "
                 "       timestamptz '2024-10-01' + (i %% 400) * interval '1 day', "
                 "       CASE WHEN i %% 10 <> 0 THEN timestamptz '2024-10-03' + (i %% 400) * interval '1 day' END "
                 "  FROM generate_series(1, 2000) i")
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_dirty_spans"), 400)
        self.settle()
        self.sql("UPDATE activities SET canceled_at = scheduled_at + interval '30 days' "
                 "WHERE completed_at IS NULL AND canceled_at IS NULL AND id %% 3 = 0")
        self.settle()


if __name__ == "__main__":
    harness.main()
