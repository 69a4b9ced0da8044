"""Campaigns: outreachd's step scan, CampaignSendJob and CampaignEventJob against the real stack: the
messages that arrive at the mail catcher, the rows written, the follow-ups after the clock moves on."""
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import struct
import tempfile
import time
import urllib.parse

from aiosmtpd.controller import Controller

import harness
from test_mailer import Recorder  # an SMTP server that refuses the addresses it is told

PUBLIC = "https://t.clinic.example.org"
DAY = 86400


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Campaigns(harness.Case):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.migrate()
        fd, path = tempfile.mkstemp(prefix="outreach-token-")
        cls.key = os.urandom(24).hex().encode()
        os.write(fd, cls.key + b"\n")
        os.close(fd)
        cls.addClassCleanup(os.unlink, path)
        cls.env["OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE"] = path
        cls.env["OUTREACH_CAMPAIGNS_PUBLIC_URL"] = PUBLIC
        cls.env["OUTREACH_CAMPAIGNS_SCAN_INTERVAL"] = "1"
        cls.env["OUTREACH_CAMPAIGNS_UNSUBSCRIBE_MAILTO"] = "unsubscribe@clinic.example.org"

    def setUp(self):
        super().setUp()
        self.sql("TRUNCATE coordinators, referral_sources, campaigns, suppressions, activities RESTART IDENTITY CASCADE")
        self.coord = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Cora Ordinator', "
                                  "'cora@clinic.example.org') RETURNING id")

    # --- data -------------------------------------------------------------------------------------
    def source(self, last, email_addr, first="Ann", specialty="Orthopaedic Surgery", code="207X00000X"):
        return self.sql_one(
            "INSERT INTO referral_sources (kind, first_name, last_name, credential, specialty, specialty_code, email, "
            " coordinator_id, status, city, state) VALUES ('physician', %s, %s, 'MD', %s, %s, %s, %s, 'active', "
            " 'Austin', 'TX') RETURNING id", (first, last, specialty, code, email_addr, self.coord))

    def campaign(self, name="Spring outreach", status="active"):
        return self.sql_one(
            "INSERT INTO campaigns (name, sender_name, sender_email, reply_to, postal_address, status) "
            "VALUES (%s, 'Lakeside Physical Therapy', 'hello@lakeside-pt.example.org', 'team@lakeside-pt.example.org', "
            "'Lakeside PT, 12 Harbor Road, Austin, TX 78701', %s) RETURNING id", (name, status))

    def segment(self, campaign, name, position, criteria=None):
        return self.sql_one("INSERT INTO campaign_segments (campaign_id, name, position, criteria) "
                            "VALUES (%s, %s, %s, %s) RETURNING id", (campaign, name, position, json.dumps(criteria or {})))

    def variant(self, campaign, variant, subject, text, html, segment=None):
        return self.sql_one("INSERT INTO campaign_messages (campaign_id, segment_id, variant, subject, text_template, "
                            "html_template) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                            (campaign, segment, variant, subject, text, html))

    def rule(self, campaign, after, position, condition, action, variant=None, wait=0, business=False):
        return self.sql_one("INSERT INTO campaign_steps (campaign_id, after_step, position, condition, wait_days, "
                            "business_days, action, variant) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                            (campaign, after, position, condition, wait, business, action, variant))

    def enroll(self, campaign, source, segment):
        """Enrolls as activation does: the first step scheduled by the campaign's rules."""
        e = self.sql_one("INSERT INTO campaign_enrollments (campaign_id, source_id, segment_id) VALUES (%s, %s, %s) "
                         "RETURNING id", (campaign, source, segment))
        self.sql("SELECT campaign_schedule(%s, now())", (e,))
        return e

    def simple(self, rules=()):
        """A campaign with one segment and the variants intro, reminder, opened; intro goes out first."""
        c = self.campaign()
        seg = self.segment(c, "everyone", 1)
        for v in ("intro", "reminder", "opened"):
            self.variant(c, v, v.capitalize() + " for {{source.first_name}}", "Dear Dr. {{source.last_name}}, " + v + ".",
                         "<p>Dear Dr. {{source.last_name}}, " + v + ".</p>")
        self.rule(c, 0, 1, "always", "send", "intro")
        for r in rules:
            self.rule(c, *r)
        return c, seg

    # --- processes --------------------------------------------------------------------------------
    def daemon(self, env=None):
        e = {"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % harness.free_port()}
        e.update(env or {})
        d = self.start_bin("outreachd", "-c", harness.CONFIG, env=e)
        d.wait_log(r"outreachd \S+ ready")
        return d

    def worker(self, env=None, concurrency=1):
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "campaigns", "--concurrency",
                           concurrency, env=env)
        w.wait_log(r"ready: identity")
        return w

    def stop(self, *procs):
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)

    def smtp_server(self, rcpt_replies):
        """An SMTP server of the test's own that answers RCPT for the given addresses as told."""
        handler = Recorder(rcpt_replies=rcpt_replies)
        port = harness.free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        self.addCleanup(controller.stop)
        return handler, port

    def push(self, klass, args, jid=None):
        jid = jid or os.urandom(12).hex()
        job = {"class": klass, "args": args, "jid": jid, "queue": "campaigns", "retry": True,
               "created_at": time.time(), "enqueued_at": time.time()}
        r = self.redis()
        r.sadd("queues", "campaigns")
        r.lpush("queue:campaigns", json.dumps(job))
        return jid

    def event(self, kind, jid=None, **fields):
        """Pushes a CampaignEventJob the way the public listener does."""
        obj = {"event": kind, "at": time.time(), "detail": "Mozilla/5.0 (test)"}
        obj.update(fields)
        return self.push("CampaignEventJob", [obj], jid)

    def idle(self):
        """True when nothing waits in or runs from the campaigns queue."""
        r = self.redis()
        return r.llen("queue:campaigns") == 0 and not any(r.llen(k) for k in r.smembers("outreach:inflight"))

    def wait_idle(self, timeout=20):
        self.wait_for("the campaigns queue to drain", self.idle, timeout)

    def message_of(self, source, step=1):
        return self.sql_one("SELECT m.id FROM email_messages m JOIN campaign_enrollments e ON e.id = m.enrollment_id "
                            "WHERE e.source_id = %s AND m.step = %s", (source, step))

    def by_recipient(self, msgs):
        out = {}
        for m in msgs:
            out.setdefault(m["To"].addresses[0].addr_spec, []).append(m)
        return out

    def check_token(self, tok, key=None):
        """(kind, message id, url) of a token signed with key (the class's by default); fails on a
        bad one."""
        payload_b64, mac_b64 = tok.split(".")
        payload = b64d(payload_b64)
        mac = hmac.new(self.key if key is None else key, payload, hashlib.sha256).digest()
        self.assertTrue(hmac.compare_digest(b64d(mac_b64), mac),
                        "token MAC does not verify: " + tok)
        self.assertEqual(payload[0], 1)
        mid = struct.unpack(">Q", payload[2:10])[0]
        return chr(payload[1]), mid, payload[10:].decode() if payload[1] == ord("c") else None

    # --- tests ------------------------------------------------------------------------------------
    def test_each_segment_gets_its_variant_with_headers_footer_and_tracking(self):
        c = self.campaign()
        ortho = self.segment(c, "orthopaedics", 1, {"specialty_codes": ["207X00000X"]})
        sports = self.segment(c, "sports", 2, {"specialty_codes": ["207QS0010X"]})
        self.variant(c, "intro", "Post-op rehab for your patients, Dr. {{source.last_name}}",
                     "Dear Dr. {{source.last_name}},\nSee https://lakeside-pt.example.org/ortho?a=1&b=2 for details.\n",
                     "<html><body><p>Dear Dr. {{source.last_name}},</p>"
                     "<p><a href=\"https://lakeside-pt.example.org/ortho?a=1&amp;b=2\">our protocols</a> "
                     "<a href='mailto:team@lakeside-pt.example.org'>write</a></p></body></html>", ortho)
        self.variant(c, "intro", "Return-to-play programmes, Dr. {{source.last_name}}",
                     "Dear Dr. {{source.last_name}}, see https://lakeside-pt.example.org/sports.",
                     "<p>Dear Dr. {{source.last_name}}, <a href=\"https://lakeside-pt.example.org/sports\">see</a></p>", sports)
        self.rule(c, 0, 1, "always", "send", "intro")
        a = self.source("Bone", "bone@ortho.example.org")
        b = self.source("<b>O'Hara</b> & Co", "ohara@ortho.example.org")
        s = self.source("Sprint", "sprint@sports.example.org", specialty="Sports Medicine", code="207QS0010X")
        for src, seg in ((a, ortho), (b, ortho), (s, sports)):
            self.enroll(c, src, seg)
        d = self.daemon()
        w = self.worker()
        msgs = self.wait_mail(3)
        self.wait_for("the enrollments to finish",
                      lambda: self.sql_one("SELECT count(*) FROM campaign_enrollments WHERE state = 'finished'") == 3)
        self.stop(w, d)
        got = self.by_recipient(self.maildir_messages())
        self.assertEqual(sorted(got), ["bone@ortho.example.org", "ohara@ortho.example.org",
                                       "sprint@sports.example.org"])
        self.assertTrue(all(len(v) == 1 for v in got.values()), got)
        self.assertEqual(str(got["bone@ortho.example.org"][0]["Subject"]), "Post-op rehab for your patients, Dr. Bone")
        self.assertEqual(str(got["sprint@sports.example.org"][0]["Subject"]), "Return-to-play programmes, Dr. Sprint")

        m = got["ohara@ortho.example.org"][0]
        mid = self.message_of(b)
        self.assertEqual(m["From"].addresses[0].display_name, "Lakeside Physical Therapy")
        self.assertEqual(m["From"].addresses[0].addr_spec, "hello@lakeside-pt.example.org")
        self.assertEqual(m["Reply-To"].addresses[0].addr_spec, "team@lakeside-pt.example.org")
        self.assertEqual(m["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        self.assertEqual(m["Message-ID"].strip("<>"),
                         self.sql_one("SELECT message_id FROM email_messages WHERE id = %s", (mid,)))
        lu = re.fullmatch(r"<(https://[^>]+)>, <mailto:([^?>]+)\?subject=unsubscribe-([^>]+)>",
                          re.sub(r"\s+", " ", str(m["List-Unsubscribe"])))
        self.assertIsNotNone(lu, m["List-Unsubscribe"])
        self.assertTrue(lu.group(1).startswith(PUBLIC + "/u/"))
        self.assertEqual(lu.group(2), "unsubscribe@clinic.example.org")
        utok = lu.group(1)[len(PUBLIC) + 3:]
        self.assertEqual(lu.group(3), utok)
        self.assertEqual(self.check_token(utok), ("u", mid, None))

        text = m.get_body(("plain",)).get_content()
        html = m.get_body(("html",)).get_content()
        # the footer: postal address and unsubscribe link in both parts
        for part in (text, html):
            self.assertIn("Lakeside PT, 12 Harbor Road, Austin, TX 78701", part)
            self.assertIn(lu.group(1), part)
        # HTML escaped by Mustache's rules, text as it is
        self.assertIn("&lt;b&gt;O&#39;Hara&lt;/b&gt; &amp; Co", html)
        self.assertNotIn("<b>O'Hara", html)
        self.assertIn("Dear Dr. <b>O'Hara</b> & Co", text)
        # the open pixel
        pix = re.search(r'<img src="%s/o/([A-Za-z0-9_.-]+)" width="1" height="1" alt="">' % re.escape(PUBLIC), html)
        self.assertIsNotNone(pix, html)
        self.assertEqual(self.check_token(pix.group(1)), ("o", mid, None))
        # every http(s) link is a click token carrying the original URL; mailto stays
        hrefs = re.findall(r"href=[\"']([^\"']+)[\"']", html)
        clicks = [h for h in hrefs if h.startswith(PUBLIC + "/c/")]
        self.assertEqual(len(clicks), 1, hrefs)
        self.assertEqual(self.check_token(clicks[0][len(PUBLIC) + 3:]),
                         ("c", mid, "https://lakeside-pt.example.org/ortho?a=1&b=2"))
        self.assertIn("mailto:team@lakeside-pt.example.org", hrefs)
        self.assertNotIn("lakeside-pt.example.org/ortho", html)
        tclicks = re.findall(re.escape(PUBLIC) + r"/c/([A-Za-z0-9_.-]+)", text)
        self.assertEqual(len(tclicks), 1, text)
        self.assertEqual(self.check_token(tclicks[0]), ("c", mid, "https://lakeside-pt.example.org/ortho?a=1&b=2"))
        self.assertIn(" for details.", text)
        # a token altered by one character does not verify (not the last character: of its six bits
        # only four carry the MAC's last byte, so some changes there decode to the same bytes)
        forged = clicks[0][len(PUBLIC) + 3:]
        forged = forged[:-2] + ("A" if forged[-2] != "A" else "B") + forged[-1]
        payload_b64, mac_b64 = forged.split(".")
        self.assertFalse(hmac.compare_digest(b64d(mac_b64), hmac.new(self.key, b64d(payload_b64), hashlib.sha256)
                                             .digest()))
        rows = self.sql("SELECT status, step, variant FROM email_messages ORDER BY id")
        self.assertEqual(rows, [("sent", 1, "intro")] * 3)

    def test_follow_ups_by_what_each_recipient_did(self):
        """Clicked -> a call for the coordinator at once; opened, not clicked -> 'opened' three days
        later; did nothing -> 'reminder' after three days."""
        c, seg = self.simple([(1, 1, "clicked", "call"), (1, 2, "opened", "send", "opened", 3),
                              (1, 3, "not_opened", "send", "reminder", 3)])
        opener = self.source("Opener", "opener@example.org")
        clicker = self.source("Clicker", "clicker@example.org")
        idle = self.source("Idle", "idle@example.org")
        for s in (opener, clicker, idle):
            self.enroll(c, s, seg)
        d = self.daemon()
        w = self.worker()
        self.wait_mail(3)
        self.wait_for("the first messages to be recorded",
                      lambda: self.sql_one("SELECT count(*) FROM email_messages WHERE status = 'sent'") == 3)
        self.event("open", message_id=self.message_of(opener))
        self.event("open", message_id=self.message_of(clicker))
        self.event("click", message_id=self.message_of(clicker), url="https://lakeside-pt.example.org/x")
        self.wait_for("the call for the clicker",
                      lambda: self.sql("SELECT coordinator_id, kind FROM activities WHERE source_id = %s", (clicker,)))
        self.assertEqual(self.sql("SELECT coordinator_id, kind FROM activities WHERE source_id = %s", (clicker,)),
                         [(self.coord, "call")])
        self.assertIn("Spring outreach", self.sql_one("SELECT subject FROM activities WHERE source_id = %s", (clicker,)))
        self.wait_idle()
        time.sleep(2)  # two more scans: nothing else is due today
        self.stop(w, d)
        self.assertEqual(len(self.maildir_messages()), 3)
        self.assertEqual(self.sql("SELECT state, step FROM campaign_enrollments WHERE source_id = %s", (clicker,)),
                         [("finished", 2)])
        opened, clicked = self.sql("SELECT opened_at IS NOT NULL, clicked_at IS NOT NULL FROM email_messages "
                                   "WHERE id = %s", (self.message_of(clicker),))[0]
        self.assertTrue(opened and clicked)
        self.assertEqual(self.sql_one("SELECT count(*) FROM email_events"), 3)

        # Three days and an hour later.
        later = {"OUTREACH_NOW_OFFSET": str(3 * DAY + 3600)}
        d = self.daemon(later)
        w = self.worker(later)
        msgs = self.wait_mail(5)
        self.wait_for("the sequences to finish",
                      lambda: self.sql_one("SELECT count(*) FROM campaign_enrollments WHERE state = 'finished'") == 3)
        self.stop(w, d)
        got = {k: [str(m["Subject"]) for m in v] for k, v in self.by_recipient(self.maildir_messages()).items()}
        self.assertEqual(got, {"opener@example.org": ["Intro for Ann", "Opened for Ann"],
                               "clicker@example.org": ["Intro for Ann"],
                               "idle@example.org": ["Intro for Ann", "Reminder for Ann"]}, msgs)
        self.assertEqual(self.sql_one("SELECT count(*) FROM activities"), 1)

    def test_business_days_skip_the_weekend(self):
        # Friday 2026-11-27 10:00 in Chicago plus 1 business day is Monday 10:00 there.
        self.assertEqual(self.sql_one("SELECT campaign_add_days('2026-11-27 10:00 America/Chicago', 1, true, "
                                      "'America/Chicago') = '2026-11-30 10:00 America/Chicago'"), True)
        self.assertEqual(self.sql_one("SELECT campaign_add_days('2026-11-27 10:00 America/Chicago', 1, false, "
                                      "'America/Chicago') = '2026-11-28 10:00 America/Chicago'"), True)

    def test_job_run_twice_and_racing_workers_send_once(self):
        c, seg = self.simple()
        sources = [self.source("Doc%d" % i, "doc%d@example.org" % i) for i in range(20)]
        enrollments = [self.enroll(c, s, seg) for s in sources]
        for _ in range(3):
            for e in enrollments:
                self.push("CampaignSendJob", [e])
        jid = self.push("CampaignSendJob", [enrollments[0]])
        self.push("CampaignSendJob", [enrollments[0]], jid)
        workers = [self.worker(concurrency=4) for _ in range(2)]
        self.wait_mail(20)
        self.wait_idle()
        self.stop(*workers)
        for w in workers:
            self.assertNotIn("recording it failed", w.log())
        got = self.by_recipient(self.maildir_messages())
        self.assertEqual(len(got), 20)
        self.assertTrue(all(len(v) == 1 for v in got.values()), {k: len(v) for k, v in got.items()})
        self.assertEqual(self.sql_one("SELECT count(*) FROM email_messages"), 20)
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaign_enrollments WHERE state = 'finished' AND step = 1"),
                         20)
        self.assertEqual(self.redis().zcard("dead"), 0)

    def test_one_batch_sends_the_good_and_leaves_the_rest(self):
        """Jobs taken together: the enrollment already sent, suppressed, not due, with an unusable address
        or a refused recipient each get their own outcome; the others of the same batches go out once."""
        handler, port = self.smtp_server({"refused@example.org": "550 5.1.1 <refused@example.org>: no such user"})
        c, seg = self.simple()
        good = [self.source("Good%d" % i, "good%d@example.org" % i) for i in range(7)]
        eg = [self.enroll(c, s, seg) for s in good]
        sent_src = self.source("Sent", "sent@example.org")
        e_sent = self.enroll(c, sent_src, seg)
        # Its message went out, but the job runs again (the enrollment still shows the step due).
        self.sql("INSERT INTO email_messages (enrollment_id, step, campaign_id, variant, source_id, recipient, "
                 "message_id, status, sent_at) VALUES (%s, 1, %s, 'intro', %s, 'sent@example.org', "
                 "'earlier@lakeside-pt.example.org', 'sent', now())", (e_sent, c, sent_src))
        e_supp = self.enroll(c, self.source("Suppressed", "supp@example.org"), seg)
        self.sql("INSERT INTO suppressions (address, reason) VALUES ('supp@example.org', 'unsubscribe')")
        e_later = self.enroll(c, self.source("Later", "later@example.org"), seg)
        self.sql("UPDATE campaign_enrollments SET next_action_at = now() + interval '1 day' WHERE id = %s", (e_later,))
        e_bad = self.enroll(c, self.source("Bad", "bad..dots@example.org"), seg)
        refused = self.source("Refused", "refused@example.org")
        e_refused = self.enroll(c, refused, seg)
        order = [eg[0], eg[1], eg[2], eg[3], e_sent, e_supp, eg[4], e_later, e_bad, e_refused, eg[5]]
        for e in order:
            self.push("CampaignSendJob", [e])
        jid = self.push("CampaignSendJob", [eg[5]])
        self.push("CampaignSendJob", [eg[5]], jid)  # the same job twice
        self.push("CampaignSendJob", [eg[6]])
        self.push("CampaignSendJob", [eg[6]])  # two jobs for one enrollment
        w = self.worker({"OUTREACH_SMTP_PORT": port, "OUTREACH_LOG_LEVEL": "debug"})
        self.wait_idle()
        self.stop(w)
        self.assertEqual(w.returncode, 0, w.log())  # under the sanitizers: no leak, no error
        self.assertNotIn("runtime error", w.log())
        # The jobs were taken in batches, each loaded and claimed in one call.
        sizes = [int(n) for n in re.findall(r"campaign batch: (\d+) enrollment", w.log())]
        self.assertGreaterEqual(max(sizes), 4, w.log())
        self.assertNotIn("recording them failed", w.log())
        got = sorted(r for _, rcpts, _ in handler.messages for r in rcpts)
        self.assertEqual(got, sorted("good%d@example.org" % i for i in range(7)))
        self.assertEqual(self.sql("SELECT count(*) FROM email_messages WHERE status = 'sent'"), [(8,)])
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaign_enrollments WHERE id = ANY(%s) AND "
                                      "state = 'finished' AND step = 1", (eg,)), 7)
        self.assertEqual(self.sql("SELECT message_id, status FROM email_messages WHERE enrollment_id = %s", (e_sent,)),
                         [("earlier@lakeside-pt.example.org", "sent")])
        state = dict((e, (s, r)) for e, s, r in self.sql(
            "SELECT id, state, coalesce(stop_reason, '') FROM campaign_enrollments"))
        self.assertEqual(state[e_supp], ("stopped", "suppressed address (unsubscribe)"))
        self.assertEqual(state[e_later], ("active", ""))
        self.assertEqual(state[e_bad][0], "stopped")
        self.assertIn("no usable email address", state[e_bad][1])
        self.assertEqual(state[e_refused][0], "stopped")
        # Neither the suppressed, the later nor the unusable one keeps a message row; the refused one bounced.
        self.assertEqual(self.sql("SELECT enrollment_id, status FROM email_messages WHERE enrollment_id = ANY(%s)",
                                  ([e_supp, e_later, e_bad, e_refused],)), [(e_refused, "bounced")])
        self.assertEqual(self.sql("SELECT address, reason FROM suppressions ORDER BY address"),
                         [("refused@example.org", "bounce"), ("supp@example.org", "unsubscribe")])
        self.assertIsNone(self.sql_one("SELECT enqueued_at FROM campaign_enrollments WHERE id = %s", (e_later,)))
        self.assertEqual(self.redis().zcard("retry"), 0)
        self.assertEqual(self.redis().zcard("dead"), 0)

    def test_take_claims_once_and_gives_back(self):
        """campaign_take, campaign_unclaim and campaign_sent_batch (migration 011) on their own."""
        c, seg = self.simple()
        a = self.enroll(c, self.source("Alpha", "alpha@example.org"), seg)
        b = self.enroll(c, self.source("Beta", "beta@example.org"), seg)
        later = self.enroll(c, self.source("Later", "later@example.org"), seg)
        self.sql("UPDATE campaign_enrollments SET next_action_at = now() + interval '1 day' WHERE id = %s", (later,))

        def take(ids, jids=None):
            jids = jids or ["j%d" % i for i in range(len(ids))]
            return self.sql("SELECT ord, state, due, action, message, header, fresh FROM campaign_take(%s::bigint[], "
                            "%s::text[], %s::text[], now())", (ids, ["l%d" % i for i in range(len(ids))], jids))

        rows = take([a, b, a, later, 999999])
        self.assertEqual([r[0] for r in rows], [1, 2, 3, 4, 5])
        self.assertEqual([(r[1], r[2], r[3]) for r in rows[:4]],
                         [("active", True, "send")] * 3 + [("active", False, "send")])
        self.assertEqual(rows[4][1:], (None,) * 6)  # no such enrollment
        self.assertIsNotNone(rows[0][4])
        self.assertEqual(rows[0][5:], ("l0@lakeside-pt.example.org", True))
        self.assertEqual(rows[1][5:], ("l1@lakeside-pt.example.org", True))
        self.assertIsNone(rows[2][4])  # the same enrollment again in the batch: claimed once
        self.assertIsNone(rows[3][4])  # not due
        ma, mb = rows[0][4], rows[1][4]
        self.assertEqual(self.sql("SELECT enrollment_id, step, status, jid FROM email_messages ORDER BY id"),
                         [(a, 1, "sending", "j0"), (b, 1, "sending", "j1")])
        # Being sent: another attempt gets nothing.
        self.assertEqual([r[4] for r in take([a, b])], [None, None])
        # Given back: a's fresh row goes (only by the attempt that claimed it); a later claim writes it anew.
        self.sql("SELECT campaign_unclaim(%s::bigint[], %s::text[], %s::boolean[])", ([ma, mb], ["j0", "other"],
                                                                                      [True, True]))
        self.assertEqual(self.sql("SELECT id FROM email_messages"), [(mb,)])
        rows = take([a], ["j9"])
        self.assertTrue(rows[0][6])
        ma = rows[0][4]
        # An attempt cut off more than ten minutes ago is taken over, with its Message-ID; given back, it stays.
        self.sql("UPDATE email_messages SET attempt_at = now() - interval '11 minutes' WHERE id = %s", (mb,))
        rows = take([b], ["j7"])
        self.assertEqual(rows[0][4:], (mb, "l1@lakeside-pt.example.org", False))
        self.sql("SELECT campaign_unclaim(%s::bigint[], %s::text[], %s::boolean[])", ([mb], ["j7"], [False]))
        self.assertEqual(self.sql("SELECT status, attempt_at FROM email_messages WHERE id = %s", (mb,)),
                         [("sending", None)])
        rows = take([b], ["j8"])
        self.assertEqual(rows[0][4:], (mb, "l1@lakeside-pt.example.org", False))
        # Sent: both recorded in one call, the enrollments take the step; recording again changes nothing.
        self.assertEqual(self.sql_one("SELECT campaign_sent_batch(%s::bigint[], now())", ([ma, mb],)), 2)
        self.assertEqual(self.sql_one("SELECT campaign_sent_batch(%s::bigint[], now())", ([ma, mb],)), 0)
        self.assertEqual(self.sql("SELECT id, state, step FROM campaign_enrollments WHERE id IN (%s, %s) ORDER BY id",
                                  (a, b)), sorted([(a, "finished", 1), (b, "finished", 1)]))
        self.assertEqual(self.sql_one("SELECT count(*) FROM email_messages WHERE status = 'sent' AND sent_at IS NOT NULL"),
                         2)
        self.assertEqual([r[4] for r in take([a, b])], [None, None])

    def test_retired_claim_functions_are_gone(self):
        """Migration 019: campaign_claim and campaign_sent (007), which nothing calls, are gone; what the
        worker calls stays, and no function of the schema names them."""
        ours = "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        self.assertEqual(self.sql("SELECT proname " + ours + " AND proname IN ('campaign_claim', 'campaign_sent')"),
                         [])
        for name in ("campaign_take", "campaign_sent_batch", "campaign_unclaim", "campaign_load",
                     "campaign_step_done"):
            self.assertEqual(self.sql_one("SELECT count(*) " + ours + " AND proname = %s", (name,)), 1, name)
        self.assertEqual(self.sql("SELECT proname " + ours + " AND prosrc ~ 'campaign_(claim|sent)\\M'"), [])

    def test_connection_lost_between_send_and_record(self):
        """The worker's PostgreSQL connection ends while the relay takes the batch's first message: the
        batch is still recorded sent (on a new connection), and nothing is sent twice."""
        test = self

        class Terminating(Recorder):
            async def handle_DATA(self, server, session, envelope):
                if not self.messages:
                    test.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'outreach-worker'")
                    test.wait_for("the worker's connections to end", lambda: not test.sql(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'outreach-worker'"))
                return await super().handle_DATA(server, session, envelope)

        handler = Terminating()
        port = harness.free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        self.addCleanup(controller.stop)
        c, seg = self.simple()
        es = [self.enroll(c, self.source("Doc%d" % i, "doc%d@example.org" % i), seg) for i in range(6)]
        for e in es:
            self.push("CampaignSendJob", [e])
        w = self.worker({"OUTREACH_SMTP_PORT": port})
        self.wait_idle()
        self.stop(w)
        self.assertNotIn("recording them failed", w.log())
        got = sorted(r for _, rcpts, _ in handler.messages for r in rcpts)
        self.assertEqual(got, sorted("doc%d@example.org" % i for i in range(6)))
        self.assertEqual(self.sql("SELECT status, count(*) FROM email_messages GROUP BY status"), [("sent", 6)])
        self.assertEqual(self.sql("SELECT state, step, count(*) FROM campaign_enrollments GROUP BY 1, 2"),
                         [("finished", 1, 6)])

    def test_edited_variant_is_not_served_from_the_cache(self):
        """A worker keeps parsed variants; a variant row whose text changed is parsed again."""
        c, seg = self.simple()
        first = self.source("First", "first@example.org")
        self.push("CampaignSendJob", [self.enroll(c, first, seg)])
        w = self.worker()
        self.wait_mail(1)
        self.sql("UPDATE campaign_messages SET subject = 'Edited for {{source.first_name}}', "
                 "text_template = 'Edited text, Dr. {{source.last_name}}.' WHERE campaign_id = %s AND variant = 'intro'",
                 (c,))
        second = self.source("Second", "second@example.org", first="Bo")
        self.push("CampaignSendJob", [self.enroll(c, second, seg)])
        self.wait_mail(2)
        self.wait_idle()
        self.stop(w)
        self.assertEqual(w.returncode, 0, w.log())
        got = self.by_recipient(self.maildir_messages())
        self.assertEqual(got["first@example.org"][0]["Subject"], "Intro for Ann")
        self.assertEqual(got["second@example.org"][0]["Subject"], "Edited for Bo")
        text = got["second@example.org"][0].get_body(("plain",)).get_content()
        self.assertIn("Edited text, Dr. Second.", text)
        self.assertNotIn("intro.", text)

    def test_a_worker_reload_reads_rotated_keys(self):
        """A rotation without a restart: the previous key file gets the running key, the key file a
        new one, SIGHUP. The worker then checks tokens of both (and signs with the new one); a key
        file it cannot read on a later SIGHUP keeps the running keys (here the configuration's own
        check refuses it; tests/unit/test_campaign.c calls campaign_reload_keys with such a file)."""
        c, seg = self.simple()
        x = self.source("Rotated", "rotated@example.org")
        self.enroll(c, x, seg)
        key_file, prev_file = [tempfile.mkstemp(prefix="outreach-rotation-")[1] for _ in range(2)]
        for f in (key_file, prev_file):
            self.addCleanup(os.unlink, f)
        new_key, old_key = b"n" * 40, b"o" * 40

        def write(path, key):
            with open(path, "wb") as f:
                f.write(key + b"\n")

        def token(key, mid):
            payload = bytes([1, ord("u")]) + struct.pack(">q", mid)
            return ".".join(base64.urlsafe_b64encode(b).rstrip(b"=").decode()
                            for b in (payload, hmac.new(key, payload, hashlib.sha256).digest()))

        write(key_file, self.key)
        write(prev_file, old_key)
        d = self.daemon()
        w = self.worker({"OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE": key_file,
                         "OUTREACH_CAMPAIGNS_PREVIOUS_TOKEN_KEY_FILE": prev_file})
        self.wait_mail(1)
        self.wait_for("the message", lambda: self.sql_one("SELECT status FROM email_messages") == "sent")
        mid = self.message_of(x)
        j_early = self.event("unsubscribe", token=token(new_key, mid))
        self.wait_for("the new key's token in dead", lambda: self.redis().zcard("dead") == 1)
        self.assertEqual(json.loads(self.redis().zrange("dead", 0, -1)[0])["jid"], j_early)

        write(prev_file, self.key)
        write(key_file, new_key)
        w.reload()
        self.event("unsubscribe", token=token(new_key, mid), detail="new key")
        self.event("unsubscribe", token=token(self.key, mid), detail="previous key")
        self.wait_for("both recorded", lambda: self.sql_one("SELECT count(*) FROM email_events") == 2)
        y = self.source("Signed", "signed@example.org")
        self.enroll(c, y, seg)
        m = self.by_recipient(self.wait_mail(2))["signed@example.org"][0]
        utok = re.search(r"subject=unsubscribe-([^>]+)>", re.sub(r"\s+", " ", str(m["List-Unsubscribe"])))[1]
        self.assertEqual(self.check_token(utok, new_key), ("u", self.message_of(y), None))

        write(key_file, b"short")
        w.reload(failure="campaigns.token_key_file")
        self.event("unsubscribe", token=token(new_key, mid), detail="kept")
        self.wait_for("recorded with the running keys",
                      lambda: self.sql_one("SELECT count(*) FROM email_events") == 3)
        self.stop(w, d)
        self.assertEqual(self.sql("SELECT detail FROM email_events ORDER BY id"),
                         [("new key",), ("previous key",), ("kept",)])
        self.assertEqual(self.redis().zcard("dead"), 1)

    def test_unsubscribe_by_the_token_of_the_mailto_address(self):
        """A mail to List-Unsubscribe's mailto address carries the token in its subject
        ("unsubscribe-TOKEN"); whatever reads that mailbox enqueues an unsubscribe with the token,
        and the worker checks the signature and unsubscribes the message it names. A forged token,
        or an open pixel's, goes to dead with the reason and changes nothing."""
        c, seg = self.simple()
        x = self.source("Mailer", "mailer@example.org")
        self.enroll(c, x, seg)
        d = self.daemon()
        w = self.worker()
        self.wait_mail(1)
        self.wait_for("the message", lambda: self.sql_one("SELECT status FROM email_messages") == "sent")
        m = self.maildir_messages()[0]
        subject = re.search(r"<mailto:[^?>]+\?subject=([^>]+)>", re.sub(r"\s+", " ", str(m["List-Unsubscribe"])))[1]
        self.assertTrue(subject.startswith("unsubscribe-"), subject)
        tok = subject[len("unsubscribe-"):]
        otok = re.search(r'/o/([A-Za-z0-9_.-]+)"', m.get_body(("html",)).get_content())[1]
        self.assertEqual(self.check_token(otok)[0], "o")
        forged = tok[:-2] + ("AA" if tok[-2:] != "AA" else "BB")
        j_forged = self.event("unsubscribe", token=forged)
        j_open = self.event("unsubscribe", token=otok)
        self.wait_for("both in dead", lambda: self.redis().zcard("dead") == 2)
        dead = {job["jid"]: job for job in map(json.loads, self.redis().zrange("dead", 0, -1))}
        self.assertEqual(dead[j_forged]["error_class"], "TokenError")
        self.assertIn("was not signed with campaigns.token_key_file's key", dead[j_forged]["error_message"])
        self.assertEqual(dead[j_open]["error_message"], "the token is an open link's, not an unsubscribe link's")
        self.assertEqual(self.sql("SELECT * FROM suppressions"), [])
        # After a rotation (campaigns.previous_token_key_file) a token of the key before still counts.
        self.stop(w)
        prev_key = b"p" * 40
        fd, prev_file = tempfile.mkstemp()
        os.write(fd, prev_key + b"\n")
        os.close(fd)
        self.addCleanup(os.unlink, prev_file)
        w = self.worker({"OUTREACH_CAMPAIGNS_PREVIOUS_TOKEN_KEY_FILE": prev_file})
        payload = bytes([1, ord("u")]) + struct.pack(">q", self.message_of(x))
        ptok = ".".join(base64.urlsafe_b64encode(b).rstrip(b"=").decode()
                        for b in (payload, hmac.new(prev_key, payload, hashlib.sha256).digest()))
        self.event("unsubscribe", token=ptok, detail="mail to the List-Unsubscribe address")
        self.event("unsubscribe", token=tok, detail="mail to the List-Unsubscribe address")
        self.wait_for("both recorded", lambda: self.sql_one("SELECT count(*) FROM email_events") == 2)
        self.stop(w, d)
        self.assertEqual(self.sql("SELECT address, reason FROM suppressions"), [("mailer@example.org", "unsubscribe")])
        self.assertEqual(self.sql("SELECT DISTINCT message_id, kind FROM email_events"),
                         [(self.message_of(x), "unsubscribe")])
        self.assertEqual(self.redis().zcard("dead"), 2)

    def test_unsubscribe_stops_everything_for_that_address(self):
        c1, seg1 = self.simple([(1, 1, "not_opened", "send", "reminder", 1)])
        c2 = self.campaign("Autumn outreach")
        seg2 = self.segment(c2, "all", 1)
        self.variant(c2, "intro", "Autumn", "Autumn text", "<p>Autumn</p>")
        self.rule(c2, 0, 1, "always", "send", "intro", wait=1)
        x = self.source("Leaving", "Leaving@Example.org")
        other = self.source("Staying", "staying@example.org")
        e1 = self.enroll(c1, x, seg1)
        e2 = self.enroll(c2, x, seg2)
        self.enroll(c1, other, seg1)
        d = self.daemon()
        w = self.worker()
        self.wait_mail(2)
        self.wait_for("the messages to be recorded",
                      lambda: self.sql_one("SELECT count(*) FROM email_messages WHERE status = 'sent'") == 2)
        self.event("unsubscribe", message_id=self.message_of(x), detail="one-click POST")
        self.wait_for("the suppression", lambda: self.sql("SELECT reason FROM suppressions"))
        self.assertEqual(self.sql("SELECT address, reason FROM suppressions"), [("leaving@example.org", "unsubscribe")])
        self.assertEqual(self.sql("SELECT id, state FROM campaign_enrollments WHERE source_id = %s ORDER BY id", (x,)),
                         [(e1, "stopped"), (e2, "stopped")])
        self.stop(w, d)
        later = {"OUTREACH_NOW_OFFSET": str(2 * DAY)}
        d = self.daemon(later)
        w = self.worker(later)
        self.wait_mail(3)  # only the other recipient's reminder
        self.wait_for("the other sequence to finish", lambda: self.sql_one(
            "SELECT state FROM campaign_enrollments WHERE source_id = %s", (other,)) == "finished")
        time.sleep(2)
        self.stop(w, d)
        got = self.by_recipient(self.maildir_messages())
        self.assertEqual(len(got["Leaving@Example.org"]), 1)
        self.assertEqual(len(got["staying@example.org"]), 2)
        self.assertEqual(self.sql_one("SELECT kind FROM email_events"), "unsubscribe")

    def test_suppressed_address_is_never_mailed(self):
        c, seg = self.simple()
        x = self.source("Suppressed", "gone@example.org")
        ok = self.source("Fine", "fine@example.org")
        self.sql("INSERT INTO suppressions (address, reason) VALUES ('gone@example.org', 'manual')")
        ex = self.enroll(c, x, seg)
        self.enroll(c, ok, seg)
        d = self.daemon()
        w = self.worker()
        self.wait_mail(1)
        self.wait_for("the suppressed enrollment to stop", lambda: self.sql_one(
            "SELECT state FROM campaign_enrollments WHERE id = %s", (ex,)) == "stopped")
        self.wait_idle()
        self.stop(w, d)
        self.assertEqual([m["To"].addresses[0].addr_spec for m in self.maildir_messages()], ["fine@example.org"])
        self.assertIn("suppressed", self.sql_one("SELECT stop_reason FROM campaign_enrollments WHERE id = %s", (ex,)))
        self.assertEqual(self.sql_one("SELECT count(*) FROM email_messages WHERE recipient = 'gone@example.org'"), 0)

    def test_550_at_smtp_time_suppresses(self):
        handler, port = self.smtp_server({"nobody@example.org": "550 5.1.1 <nobody@example.org>: no such user"})
        c, seg = self.simple()
        bad = self.source("Nobody", "nobody@example.org")
        good = self.source("Somebody", "somebody@example.org")
        eb = self.enroll(c, bad, seg)
        self.enroll(c, good, seg)
        # The same address waits in a paused campaign: the suppression stops it there too.
        other = self.campaign("Autumn outreach", status="paused")
        eo = self.sql_one("INSERT INTO campaign_enrollments (campaign_id, source_id, segment_id) VALUES (%s, %s, %s) "
                          "RETURNING id", (other, bad, self.segment(other, "everyone", 1)))
        d = self.daemon()
        w = self.worker({"OUTREACH_SMTP_PORT": port})
        self.wait_for("the bounce", lambda: self.sql("SELECT reason FROM suppressions"))
        self.wait_for("the good message", lambda: handler.messages)
        self.wait_idle()
        self.stop(w, d)
        self.assertEqual([rcpts for _, rcpts, _ in handler.messages], [["somebody@example.org"]])
        self.assertEqual(self.sql("SELECT address, reason FROM suppressions"), [("nobody@example.org", "bounce")])
        status, error = self.sql("SELECT status, error FROM email_messages WHERE source_id = %s", (bad,))[0]
        self.assertEqual(status, "bounced")
        self.assertIn("550", error)
        self.assertEqual(self.sql("SELECT kind FROM email_events"), [("bounce",)])
        self.assertEqual(self.sql_one("SELECT state FROM campaign_enrollments WHERE id = %s", (eb,)), "stopped")
        self.assertEqual(self.sql("SELECT state, stop_reason FROM campaign_enrollments WHERE id = %s", (eo,)),
                         [("stopped", "bounce")])
        self.assertEqual(self.redis().zcard("dead"), 0)
        self.assertEqual(self.redis().zcard("retry"), 0)

    def test_4xx_retries_the_same_message_once(self):
        """A 451 leaves the message 'sending' and retries the job; the retry sends that message, once."""
        handler, port = self.smtp_server({"later@example.org": "451 4.7.1 greylisted, try again later"})
        c, seg = self.simple()
        e = self.enroll(c, self.source("Later", "later@example.org"), seg)
        d = self.daemon()
        w = self.worker({"OUTREACH_SMTP_PORT": port})
        r = self.redis()
        self.wait_for("the job in the retry set", lambda: r.zcard("retry") == 1)
        status, error, attempt = self.sql("SELECT status, error, attempt_at FROM email_messages")[0]
        self.assertEqual(status, "sending")
        self.assertIn("451", error)
        self.assertIsNone(attempt)
        first_id = self.sql_one("SELECT message_id FROM email_messages")
        handler.rcpt_replies.clear()
        for job in r.zrange("retry", 0, -1):
            r.zadd("retry", {job: time.time()})  # due now rather than after the backoff
        self.wait_for("the message", lambda: handler.messages)
        self.wait_for("the message recorded as sent",
                      lambda: self.sql_one("SELECT status FROM email_messages") == "sent")
        self.wait_idle()
        time.sleep(2)  # two more scans: nothing else goes out
        self.stop(w, d)
        self.assertEqual(len(handler.messages), 1)
        self.assertEqual(self.sql("SELECT count(*), min(message_id) FROM email_messages"), [(1, first_id)])
        self.assertIn(("<%s>" % first_id).encode(), handler.messages[0][2])
        self.assertEqual(self.sql("SELECT state, step FROM campaign_enrollments WHERE id = %s", (e,)),
                         [("finished", 1)])

    def test_rate_limit_reschedules(self):
        """Over max_per_domain_per_minute, the enrollments wait for the next minute; nothing fails or
        is lost, and other domains go on."""
        c, seg = self.simple()
        busy = [self.enroll(c, self.source("Same%d" % i, "d%d@busy.example.org" % i), seg) for i in range(4)]
        self.enroll(c, self.source("Other", "other@quiet.example.org"), seg)
        limited = {"OUTREACH_CAMPAIGNS_MAX_PER_DOMAIN_PER_MINUTE": 2}
        d = self.daemon(limited)
        w = self.worker(limited)
        self.wait_mail(3)
        w.wait_log(r"rate limit is reached; rescheduled in")
        self.wait_for("two to wait", lambda: self.sql_one(
            "SELECT count(*) FROM campaign_enrollments WHERE id = ANY(%s) AND state = 'active' AND enqueued_at IS NULL "
            "AND next_action_at > now() AND next_action_at <= now() + interval '95 seconds'", (busy,)) == 2)
        self.stop(w, d)
        got = self.by_recipient(self.maildir_messages())
        self.assertEqual(len(got), 3)
        self.assertIn("other@quiet.example.org", got)
        self.assertEqual(self.redis().zcard("dead") + self.redis().zcard("retry"), 0)
        # a minute and a half later they go out
        later = {"OUTREACH_NOW_OFFSET": 95}
        d = self.daemon(later)
        w = self.worker(later)
        self.wait_mail(5)
        self.wait_idle()
        self.stop(w, d)
        self.assertEqual(len(self.by_recipient(self.maildir_messages())), 5)

    def test_global_rate_limit_paces_the_scan(self):
        c, seg = self.simple()
        for i in range(6):
            self.enroll(c, self.source("Paced%d" % i, "p%d@example%d.org" % (i, i)), seg)
        limited = {"OUTREACH_CAMPAIGNS_MAX_PER_SECOND": 2}
        d = self.daemon(limited)
        w = self.worker(limited)
        self.wait_mail(6)
        self.wait_idle()
        self.stop(w, d)
        claims = [int(n) for n in re.findall(r"campaign step scan: (\d+) enrollments? due", d.log())]
        self.assertTrue(claims and max(claims) <= 2, d.log())
        self.assertEqual(len(self.by_recipient(self.maildir_messages())), 6)

    def test_reply_stops_the_sequence_and_creates_a_call(self):
        c, seg = self.simple([(1, 1, "not_opened", "send", "reminder", 1)])
        x = self.source("Replier", "replier@example.org")
        e = self.enroll(c, x, seg)
        d = self.daemon()
        w = self.worker()
        self.wait_mail(1)
        self.wait_for("the message to be recorded",
                      lambda: self.sql_one("SELECT status FROM email_messages") == "sent")
        header = self.sql_one("SELECT message_id FROM email_messages")
        self.event("replied", message_id_header=header, detail="Thanks, call me")
        self.wait_for("the call", lambda: self.sql("SELECT kind FROM activities"))
        self.assertEqual(self.sql("SELECT state, stop_reason FROM campaign_enrollments WHERE id = %s", (e,)),
                         [("stopped", "replied")])
        self.assertEqual(self.sql("SELECT coordinator_id, kind FROM activities"), [(self.coord, "call")])
        self.assertIsNotNone(self.sql_one("SELECT replied_at FROM email_messages"))
        self.stop(w, d)

    def test_events_recorded_once_and_unknown_messages_nowhere(self):
        c, seg = self.simple()
        x = self.source("Once", "once@example.org")
        self.enroll(c, x, seg)
        d = self.daemon()
        w = self.worker()
        self.wait_mail(1)
        self.wait_for("the message", lambda: self.sql_one("SELECT status FROM email_messages") == "sent")
        mid = self.message_of(x)
        jid = self.event("open", message_id=mid, detail="Mozilla/5.0 " + "x" * 3000)
        self.event("open", jid=jid, message_id=mid)
        # A link of 2048 bytes, the longest a token carries, outside ASCII: the listener enqueues it
        # percent-encoded, three characters a byte.
        long_url = "https://example.org/" + "%C3%A9" * 1014
        self.assertEqual(len(long_url), 6104)
        self.event("click", message_id=mid, url=long_url)
        self.event("click", message_id=999999, url="https://x.example.org/")
        self.event("bounce", email="Once@Example.org", detail="5.1.1 mailbox gone (from the bounce processor)")
        self.wait_for("the suppression", lambda: self.sql("SELECT 1 FROM suppressions"))
        self.wait_idle()
        self.stop(w, d)
        self.assertEqual(self.sql("SELECT kind, jid, length(detail) FROM email_events WHERE kind = 'open'"),
                         [("open", jid, 1000)])
        self.assertEqual(self.sql("SELECT url FROM email_events WHERE kind = 'click'"), [(long_url,)])
        self.assertEqual(self.sql_one("SELECT count(*) FROM email_events WHERE message_id = 999999"), 0)
        self.assertEqual(self.sql("SELECT address, reason FROM suppressions"), [("once@example.org", "bounce")])
        self.assertIn("no such campaign message", w.log())
        self.assertEqual(self.redis().zcard("dead"), 0)

    def test_malformed_args_go_to_dead_with_the_reason(self):
        bad = [
            ("CampaignSendJob", ["7"], "enrollment_id must be a positive integer"),
            ("CampaignSendJob", [], "takes 1 argument"),
            ("CampaignEventJob", [{"message_id": 1}], "event must be"),
            ("CampaignEventJob", [{"event": "explode", "message_id": 1}], "event must be"),
            ("CampaignEventJob", [{"event": "open", "message_id": 1, "email": "a@b.example"}], "exactly one of"),
            ("CampaignEventJob", [{"event": "open", "message_id": "1"}], "message_id must be a positive integer"),
            ("CampaignEventJob", [{"event": "open", "message_id": 1, "extra": 1}], "unknown field"),
            ("CampaignEventJob", [{"event": "bounce", "email": "not an address"}], "email must be"),
            ("CampaignEventJob", [{"event": "open", "email": "a@b.example"}], "needs message_id"),
            ("CampaignEventJob", [{"event": "open", "token": "abc.def"}], "token names the message of an unsubscribe only"),
            ("CampaignEventJob", [{"event": "unsubscribe", "token": "abc def"}], "token must be"),
            ("CampaignEventJob", [{"event": "unsubscribe", "token": "a.b", "message_id": 1}], "exactly one of"),
            ("CampaignEventJob", [{"event": "click", "message_id": 1, "url": "http://x/\n"}], "url must be"),
            ("CampaignEventJob", [{"event": "click", "message_id": 1, "url": "http://x/" + "a" * 6136}],
             "url must be a string of at most 6144 characters"),
            ("CampaignEventJob", ["open", 1], "takes 1 argument"),
            ("CampaignEventJob", [{"event": "open", "message_id": 1, "detail": "x" * 9000}], "detail must be"),
        ]
        jids = {self.push(k, a): why for k, a, why in bad}
        w = self.worker()
        self.wait_for("every job in dead", lambda: self.redis().zcard("dead") == len(bad))
        self.stop(w)
        for j in self.redis().zrange("dead", 0, -1):
            job = json.loads(j)
            self.assertEqual(job["error_class"], "ArgumentError", job)
            self.assertIn(jids[job["jid"]], job["error_message"])

    def test_recipient_name_with_a_line_break_is_refused_and_recorded(self):
        """A name another application wrote with a line break cannot become a To header: that message
        is refused and recorded (failed, the enrollment stopped, the job in dead), nobody else is
        reached through it, and the other recipient of the batch gets theirs, its markup escaped."""
        self.sql("UPDATE coordinators SET name = %s WHERE id = %s", ("Cora <script>x()</script>", self.coord))
        c = self.campaign()
        seg = self.segment(c, "everyone", 1)
        self.variant(c, "intro", "Rehab\tfor Dr.\n{{source.last_name}}", "From {{coordinator.name}}.",
                     "<p>From {{coordinator.name}}, for Dr. {{source.last_name}}.</p>")
        self.rule(c, 0, 1, "always", "send", "intro")
        bad = self.source("Moss", "moss@ortho.example.org", first="Ann\r\nBcc: victim@elsewhere.example.org")
        good = self.source("<b>Vega</b>", "vega@ortho.example.org")
        e_bad, e_good = self.enroll(c, bad, seg), self.enroll(c, good, seg)
        j_bad = self.push("CampaignSendJob", [e_bad])
        self.push("CampaignSendJob", [e_good])
        w = self.worker()
        self.wait_idle()
        self.stop(w)
        msgs = self.maildir_messages()
        self.assertEqual([m["To"].addresses[0].addr_spec for m in msgs], ["vega@ortho.example.org"])
        m = msgs[0]
        self.assertIsNone(m["Bcc"])
        self.assertEqual(str(m["Subject"]), "Rehab for Dr. <b>Vega</b>")
        html = m.get_body(("html",)).get_content()
        self.assertIn("From Cora &lt;script&gt;x()&lt;/script&gt;, for Dr. &lt;b&gt;Vega&lt;/b&gt;.", html)
        self.assertNotIn("<script>", html)
        dead = [json.loads(j) for j in self.redis().zrange("dead", 0, -1)]
        self.assertEqual([(d["jid"], d["error_class"]) for d in dead], [(j_bad, "InvalidEmail")])
        self.assertIn("to: display name contains a line break", dead[0]["error_message"])
        status, error = self.sql("SELECT status, error FROM email_messages WHERE enrollment_id = %s", (e_bad,))[0]
        self.assertEqual(status, "failed")
        self.assertIn("line break", error)
        state, reason = self.sql("SELECT state, stop_reason FROM campaign_enrollments WHERE id = %s", (e_bad,))[0]
        self.assertEqual(state, "stopped")
        self.assertIn("line break", reason)

    def test_variant_putting_a_value_in_unescaped_is_never_sent(self):
        """outreachctl refuses {{{...}}} and {{&...}} in an HTML template, but a variant written to the
        database another way may hold them: the worker sends nothing from it, stops the enrollment and
        puts the job in dead with a reason that names the campaign and the variant. A sound campaign
        in the same run still sends."""
        self.sql("UPDATE coordinators SET name = %s WHERE id = %s", ("Cora <img src=x onerror=alert(1)>", self.coord))
        sent = {}
        for name, html in (("Triple", "<p>Dear {{{source.name}}},</p>"),
                           ("Ampersand", "<p>Dear {{source.name}},</p>\n<p>{{& coordinator.name}}</p>"),
                           ("Sound", "<p>Dear {{source.name}}, from {{coordinator.name}}</p>")):
            c = self.campaign(name)
            seg = self.segment(c, "everyone", 1)
            self.variant(c, "intro", "Hello {{source.last_name}}", "Dear {{source.name}}.", html)
            self.rule(c, 0, 1, "always", "send", "intro")
            src = self.source("<b>%s</b>" % name, "%s@ortho.example.org" % name.lower())
            e = self.enroll(c, src, seg)
            sent[name] = (c, e, self.push("CampaignSendJob", [e]))
        w = self.worker()
        self.wait_for("two jobs in dead", lambda: self.redis().zcard("dead") == 2)
        self.wait_idle()
        self.stop(w)
        msgs = self.maildir_messages()
        self.assertEqual([m["To"].addresses[0].addr_spec for m in msgs], ["sound@ortho.example.org"])
        self.assertIn("from Cora &lt;img src=x", msgs[0].get_body(("html",)).get_content())
        dead = {d["jid"]: d for d in (json.loads(j) for j in self.redis().zrange("dead", 0, -1))}
        for name, line in (("Triple", 1), ("Ampersand", 2)):
            c, e, jid = sent[name]
            self.assertEqual(dead[jid]["error_class"], "CampaignError")
            why = dead[jid]["error_message"]
            self.assertIn('campaign %s variant "intro"' % c, why)
            self.assertIn("html_template:%d: {{{...}}} or {{&...}} would put a value into the HTML unescaped" % line,
                          why)
            state, reason = self.sql("SELECT state, stop_reason FROM campaign_enrollments WHERE id = %s", (e,))[0]
            self.assertEqual(state, "stopped")
            self.assertEqual(reason, why)
            self.assertEqual(self.sql("SELECT status, sent_at FROM email_messages WHERE enrollment_id = %s AND "
                                      "status <> 'sending'", (e,)), [])

    def test_paused_campaign_waits_and_resumes(self):
        c, seg = self.simple()
        self.sql("UPDATE campaigns SET status = 'paused' WHERE id = %s", (c,))
        e = self.enroll(c, self.source("Patient", "waits@example.org"), seg)
        self.push("CampaignSendJob", [e])  # queued before the pause took effect
        d = self.daemon()
        w = self.worker()
        self.wait_idle()
        time.sleep(2)  # two scans: nothing is claimed while paused
        self.assertEqual(len(self.maildir_messages()), 0)
        self.assertIsNone(self.sql_one("SELECT enqueued_at FROM campaign_enrollments WHERE id = %s", (e,)))
        self.sql("UPDATE campaigns SET status = 'active' WHERE id = %s", (c,))
        self.wait_mail(1)
        self.stop(w, d)

    def test_campaign_results_in_the_metrics(self):
        """sent, opened, clicked, replied, unsubscribed, bounced per campaign and variant, and the
        referrals of recipients within 90 days of their first message."""
        c, seg = self.simple()
        a, b, x = (self.source(n, n.lower() + "@example.org") for n in ("Alpha", "Beta", "Gamma"))
        ea, eb, ex = (self.enroll(c, s, seg) for s in (a, b, x))

        def message(e, s, step, variant, status, days_ago, opened=False, clicked=False, replied=False):
            return self.sql_one(
                "INSERT INTO email_messages (enrollment_id, step, campaign_id, variant, source_id, recipient, "
                " message_id, status, sent_at, opened_at, clicked_at, replied_at) "
                "VALUES (%s, %s, %s, %s, %s, 'r' || %s || '@example.org', 'm' || %s || '.' || %s || '@x', %s, "
                " now() - make_interval(days => %s), CASE WHEN %s THEN now() END, CASE WHEN %s THEN now() END, "
                " CASE WHEN %s THEN now() END) RETURNING id",
                (e, step, c, variant, s, s, e, step, status, days_ago, opened, clicked, replied))
        message(ea, a, 1, "intro", "sent", 120, opened=True, clicked=True)
        message(ea, a, 2, "reminder", "sent", 100, opened=True, replied=True)
        mb = message(eb, b, 1, "intro", "sent", 30, opened=True)
        message(ex, x, 1, "intro", "bounced", 30)
        self.sql("INSERT INTO email_events (message_id, kind, at) VALUES (%s, 'unsubscribe', now())", (mb,))

        def referral(s, days_ago, key):
            self.sql("INSERT INTO referrals (source_id, service_line, referred_at, patient_key) "
                     "VALUES (%s, 'pt', now() - make_interval(days => %s), %s)", (s, days_ago, key))
        referral(a, 110, "p1")  # 10 days after Alpha's intro, before the reminder
        referral(a, 5, "p2")    # 115 days after the intro, 95 after the reminder: neither
        referral(b, 40, "p3")   # before Beta's intro
        referral(b, 10, "p4")   # 20 days after
        referral(b, 1, "p5")    # 29 days after
        job = {"class": "MetricsJob", "args": [], "jid": os.urandom(12).hex(), "queue": "metrics", "retry": True,
               "created_at": time.time(), "enqueued_at": time.time()}
        r = self.redis()
        r.sadd("queues", "metrics")
        r.lpush("queue:metrics", json.dumps(job))
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "metrics")
        w.wait_log(r"metrics: campaign results, \d+ rows? changed")
        self.stop(w)
        rows = self.sql("SELECT variant, sent, opened, clicked, replied, unsubscribed, complained, bounced, recipients, "
                        "referring_recipients, referrals_90d FROM metric_campaigns WHERE campaign_id = %s "
                        "ORDER BY variant", (c,))
        self.assertEqual(rows, [("intro", 2, 2, 1, 0, 1, 0, 1, 2, 2, 3),
                                ("reminder", 1, 1, 0, 1, 0, 0, 0, 1, 0, 0)])


if __name__ == "__main__":
    harness.main()
