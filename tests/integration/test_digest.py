"""Alert emails: the coordinator's daily digest and the manager's, through real SMTP servers."""
import email
import email.policy
import json
import os
import re
import shutil
import signal
import socket
import threading
import time

from aiosmtpd.controller import Controller

import harness

TODAY = time.strftime("%Y-%m-%d", time.gmtime())


class Collector:
    """An SMTP server of the test's own that answers as told: 451 for the first `fail_first`
    transactions, or 550 for every recipient, and keeps what it accepted and how many sessions."""

    def __init__(self, fail_first=0, reject=False):
        self.fail_first = fail_first
        self.reject = reject
        self.seen = 0
        self.messages = []
        self.sessions = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.seen += 1
        if self.reject:
            return "550 5.1.1 no such mailbox"
        if self.seen <= self.fail_first:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"




class Digest(harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, alert_emails, digest_runs RESTART IDENTITY CASCADE")
        self.clear_maildir()

    # --- data -------------------------------------------------------------------------------------
    def coordinator(self, name, email_addr, manager=None, tz="UTC"):
        return self.sql_one("INSERT INTO coordinators (name, email, time_zone, manager_id) VALUES (%s, %s, %s, %s) "
                            "RETURNING id", (name, email_addr, tz, manager))

    def source(self, coord, last_name, days_ago, kind="physician", org=None, interval=None, first=None,
               specialty=None, phone=None):
        return self.sql_one(
            "INSERT INTO referral_sources (kind, first_name, last_name, organization_name, coordinator_id, status, "
            " contact_interval_days, last_contact_at, specialty, phone, credential) "
            "VALUES (%s, %s, %s, %s, %s, 'active', %s, now() - make_interval(days => %s), %s, %s, 'MD') RETURNING id",
            (kind, first, last_name, org, coord, interval, days_ago, specialty, phone))

    def run_job(self, klass, args, env=None, queue="alerts", expect_runs=1, timeout=20):
        """Pushes a job, runs a worker until it is done (or retried), returns the worker."""
        job = {"class": klass, "args": args, "jid": os.urandom(12).hex(), "queue": queue, "retry": True,
               "created_at": time.time(), "enqueued_at": time.time()}
        r = self.redis()
        r.sadd("queues", queue)
        r.lpush("queue:" + queue, json.dumps(job))
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", queue, env=env)
        w.wait_log(r"ready: identity")
        end = time.time() + timeout
        while time.time() < end and (r.llen("queue:" + queue) or any(r.llen(k) for k in r.smembers("outreach:inflight"))):
            time.sleep(0.05)
        w.signal(signal.SIGTERM)
        w.wait(30)
        return w, job

    def catcher(self):
        return self.maildir_messages()

    # --- tests ------------------------------------------------------------------------------------
    def test_digest_lists_due_sources_in_order_escaped(self):
        c = self.coordinator("José Núñez", "jose@clinic.example.org")
        other = self.coordinator("Other Person", "other@clinic.example.org")
        evil = self.source(c, "<script>alert(1)</script> O'Brien & Sons", 50, kind="organization",
                           org="<script>alert(1)</script> O'Brien & Sons")
        jose = self.source(c, "Núñez", 35, first="José", specialty="Orthopaedic Surgery", phone="555-0101")
        soon = self.source(c, "Soon", 28)          # due in 2 days
        self.source(c, "Fine", 5)                  # not due
        self.source(c, "Later", 20, interval=60)   # not due
        self.source(other, "NotMine", 90)          # another coordinator's
        self.sql("INSERT INTO activities (source_id, kind, completed_at, subject) "
                 "VALUES (%s, 'meeting', now() - interval '35 days', 'lunch')", (jose,))
        w, job = self.run_job("OverdueDigestJob", [c, TODAY])
        msgs = self.catcher()
        self.assertEqual(len(msgs), 1, w.log())
        m = msgs[0]
        self.assertEqual(m.defects, [])
        for part in m.walk():
            self.assertEqual(part.defects, [], part.get_content_type())
        self.assertEqual(str(m["To"]), "José Núñez <jose@clinic.example.org>")
        self.assertIn("2 overdue, 1 due within 3 days", str(m["Subject"]))
        self.assertEqual(m["Auto-Submitted"], "auto-generated")
        text = m.get_body(("plain",)).get_content()
        html = m.get_body(("html",)).get_content()
        # exactly these, most overdue first, then due soon
        order = [text.find("O'Brien & Sons"), text.find("José Núñez"), text.find("Soon")]
        self.assertTrue(all(i >= 0 for i in order) and order == sorted(order), text)
        for absent in ("Fine", "Later", "NotMine"):
            self.assertNotIn(absent, text)
            self.assertNotIn(absent, html)
        self.assertIn("Last contact: %s" % time.strftime("%-d %b %Y", time.gmtime(time.time() - 35 * 86400)), text)
        self.assertIn("(meeting)", text)
        # HTML: the names escaped, never markup
        self.assertNotIn("<script>", html)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; O&#39;Brien &amp; Sons", html)
        self.assertIn("José Núñez", html)
        self.assertIn('href="https://crm.example.org/sources/%d"' % evil, html)
        self.assertIn("20 days overdue", html.replace("\n", " "))  # 50 days since contact, 30-day interval
        # recorded once, sent, with the Message-ID that went out
        row = self.sql("SELECT status, message_id, recipient FROM alert_emails WHERE kind = 'digest'")[0]
        self.assertEqual(row[0], "sent")
        self.assertEqual("<%s>" % row[1], m["Message-ID"])
        self.assertEqual(row[2], "jose@clinic.example.org")

    def test_a_digest_run_twice_sends_once(self):
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        self.source(c, "Doe", 40)
        self.run_job("OverdueDigestJob", [c, TODAY])
        w, _ = self.run_job("OverdueDigestJob", [c, TODAY])
        self.assertEqual(len(self.catcher()), 1)
        self.assertIn("already sent: nothing to do", w.log())
        self.assertEqual(self.sql_one("SELECT attempts FROM alert_emails"), 2)

    def test_nothing_due_sends_nothing(self):
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        self.source(c, "Doe", 3)
        self.run_job("OverdueDigestJob", [c, TODAY])
        self.assertEqual(self.catcher(), [])
        self.assertEqual(self.sql_one("SELECT status FROM alert_emails"), "skipped")

    def test_unknown_coordinator_goes_to_dead(self):
        self.run_job("OverdueDigestJob", [999, TODAY])
        dead = [json.loads(j) for j in self.redis().zrange("dead", 0, -1)]
        self.assertEqual(dead[0]["error_message"], "there is no coordinator 999")

    def test_451_retries_then_succeeds(self):
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        self.source(c, "Doe", 40)
        handler = Collector(fail_first=1)
        port = harness.free_port()
        ctl = Controller(handler, hostname="127.0.0.1", port=port)
        ctl.start()
        self.addCleanup(ctl.stop)
        env = {"OUTREACH_SMTP_PORT": str(port)}
        self.run_job("OverdueDigestJob", [c, TODAY], env=env)
        r = self.redis()
        retry = [json.loads(j) for j in r.zrange("retry", 0, -1)]
        self.assertEqual(len(retry), 1)
        self.assertEqual(retry[0]["error_class"], "SMTPTemporaryFailure")
        self.assertIn("451", retry[0]["error_message"])
        self.assertEqual(self.sql_one("SELECT status FROM alert_emails"), "sending")
        # the retry comes due: this time the server accepts
        r.delete("retry")
        retry[0]["enqueued_at"] = time.time()
        self.run_job("OverdueDigestJob", retry[0]["args"], env=env)
        self.assertEqual(len(handler.messages), 1)
        self.assertEqual(self.sql_one("SELECT status FROM alert_emails"), "sent")
        self.assertEqual(self.sql_one("SELECT attempts FROM alert_emails"), 2)

    def test_550_is_recorded_and_not_retried(self):
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        self.source(c, "Doe", 40)
        port = harness.free_port()
        ctl = Controller(Collector(reject=True), hostname="127.0.0.1", port=port)
        ctl.start()
        self.addCleanup(ctl.stop)
        self.run_job("OverdueDigestJob", [c, TODAY], env={"OUTREACH_SMTP_PORT": str(port)})
        r = self.redis()
        self.assertEqual(r.zcard("retry"), 0)
        dead = [json.loads(j) for j in r.zrange("dead", 0, -1)]
        self.assertEqual(dead[0]["error_class"], "SMTPPermanentFailure")
        status, error = self.sql("SELECT status, error FROM alert_emails")[0]
        self.assertEqual(status, "failed")
        self.assertIn("550", error)

    def test_a_batch_of_digests_shares_connections(self):
        ids = []
        for i in range(12):
            c = self.coordinator("Coordinator %d" % i, "c%d@clinic.example.org" % i)
            self.source(c, "Doe", 40)
            ids.append(c)
        r = self.redis()
        for c in ids:
            r.lpush("queue:alerts", json.dumps({"class": "OverdueDigestJob", "args": [c, TODAY], "jid": os.urandom(12).hex(),
                                                "queue": "alerts", "retry": True, "enqueued_at": time.time()}))
        r.sadd("queues", "alerts")
        handler = Collector()
        port = harness.free_port()
        ctl = Controller(handler, hostname="127.0.0.1", port=port)
        ctl.start()
        self.addCleanup(ctl.stop)
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts",
                           env={"OUTREACH_SMTP_PORT": str(port)})
        self.wait_for("every digest", lambda: len(handler.messages) == 12, timeout=30)
        self.wait_for("every job done", lambda: self.sql_one("SELECT count(*) FROM alert_emails WHERE status = 'sent'") == 12)
        # batches of 1, 2, 4, 5: one connection per batch, not per email
        self.assertLessEqual(handler.sessions, 6, w.log())
        self.assertEqual(sorted(str(m["To"]).split("<")[1][:-1] for m in handler.messages),
                         sorted("c%d@clinic.example.org" % i for i in range(12)))

    def test_manager_gets_the_long_overdue(self):
        boss = self.coordinator("Denise Okafor", "denise@clinic.example.org")
        a = self.coordinator("Ann Lee", "ann@clinic.example.org", manager=boss)
        b = self.coordinator("Bob Ray", "bob@clinic.example.org", manager=boss)
        self.source(a, "LongAgo", 60)   # 30 days overdue: escalated
        self.source(a, "Recent", 35)    # 5 days overdue: not escalated
        self.source(b, "Forgotten", 80)
        self.run_job("ManagerDigestJob", [boss, TODAY])
        msgs = self.catcher()
        self.assertEqual(len(msgs), 1)
        text = msgs[0].get_body(("plain",)).get_content()
        self.assertEqual(str(msgs[0]["To"]), "Denise Okafor <denise@clinic.example.org>")
        self.assertIn("2 sources overdue by more than 14 days", text)
        self.assertIn("Ann Lee", text)
        self.assertIn("LongAgo", text)
        self.assertIn("Forgotten", text)
        self.assertNotIn("Recent", text)

    def test_scheduler_and_worker_end_to_end(self):
        boss = self.coordinator("Denise Okafor", "denise@clinic.example.org")
        a = self.coordinator("Ann Lee", "ann@clinic.example.org", manager=boss)
        self.source(a, "LongAgo", 60)
        env = {"OUTREACH_ALERTS_DIGEST_HOUR": "0", "OUTREACH_SCHEDULER_SCAN_INTERVAL": "1",
               "OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % harness.free_port()}
        d = self.start_bin("outreachd", "-c", harness.CONFIG, env=env)
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts")
        end = time.time() + 20
        while time.time() < end and len(self.catcher()) < 2:
            time.sleep(0.1)
        time.sleep(2)
        to = sorted(str(m["To"]) for m in self.catcher())
        self.assertEqual(to, ["Ann Lee <ann@clinic.example.org>", "Denise Okafor <denise@clinic.example.org>"],
                         d.log() + w.log())

    def test_broken_template_is_reported_with_its_line(self):
        tmp = self.templates_copy()
        with open(os.path.join(tmp, "digest.html.mustache"), "a") as f:
            f.write("<p>\n{{#overdue}}\nnever closed\n")
        lines = open(os.path.join(tmp, "digest.html.mustache")).read().count("\n")
        p = self.run_bin("outreach-worker", "-c", harness.CONFIG, "--check-config",
                         env={"OUTREACH_ALERTS_TEMPLATE_DIR": tmp})
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s/digest.html.mustache:%d: unclosed section {{#overdue}}" % (tmp, lines - 1), p.stderr)
        p = self.run_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts",
                         env={"OUTREACH_ALERTS_TEMPLATE_DIR": tmp}, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("digest.html.mustache:%d:" % (lines - 1), p.stderr)

    def test_raw_value_in_an_html_template_is_refused(self):
        """Every value put into an alert's HTML is escaped: {{{...}}} or {{&...}} in an HTML template
        stops --check-config and the start with the file and line (the text part may have them)."""
        tmp, src = self.templates_copy(), harness.ROOT / "config" / "templates"
        with open(os.path.join(tmp, "case.txt.mustache"), "a") as f:
            f.write("{{{case.summary}}}\n")
        p = self.run_bin("outreach-worker", "-c", harness.CONFIG, "--check-config",
                         env={"OUTREACH_ALERTS_TEMPLATE_DIR": tmp})
        self.assertEqual(p.returncode, 0, p.stderr)
        for tag in ("{{{case.summary}}}", "{{& case.summary}}"):
            shutil.copy(src / "case.html.mustache", tmp)
            with open(os.path.join(tmp, "case.html.mustache"), "a") as f:
                f.write("<p>\n%s</p>\n" % tag)
            lines = open(os.path.join(tmp, "case.html.mustache")).read().count("\n")
            want = ("%s/case.html.mustache:%d: {{{...}}} or {{&...}} would put a value into the HTML unescaped; "
                    "write {{...}}" % (tmp, lines))
            p = self.run_bin("outreach-worker", "-c", harness.CONFIG, "--check-config",
                             env={"OUTREACH_ALERTS_TEMPLATE_DIR": tmp})
            self.assertEqual(p.returncode, 1)
            self.assertIn(want, p.stderr)
        p = self.run_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts",
                         env={"OUTREACH_ALERTS_TEMPLATE_DIR": tmp}, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn(want, p.stderr)


if __name__ == "__main__":
    harness.main()
