"""Bad input from outside: malformed arguments of every job class, hostile values other
applications write into the core tables, and a mail relay that cannot be reached, as they reach the
dead set, the retry set and the delivered emails."""
import datetime
import json
import os
import signal
import time

import icalendar

import harness

TODAY = time.strftime("%Y-%m-%d", time.gmtime())
QUEUES = ("alerts", "npi", "metrics", "default")


class Hostile(harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, alert_emails, digest_runs, metric_runs "
                 "RESTART IDENTITY CASCADE")

    def push(self, klass, args, queue):
        job = {"class": klass, "args": args, "jid": os.urandom(12).hex(), "queue": queue, "retry": True,
               "created_at": time.time(), "enqueued_at": time.time()}
        r = self.redis()
        r.sadd("queues", queue)
        r.lpush("queue:" + queue, json.dumps(job))
        return job["jid"]

    def drain(self, queues=QUEUES):
        """Runs a worker until every queue and private list is empty; returns it, stopped."""
        r = self.redis()
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", ",".join(queues))
        w.wait_log(r"ready: identity")
        self.wait_for("the queues to drain",
                      lambda: not any(r.llen("queue:" + q) for q in queues)
                      and not any(r.llen(k) for k in r.smembers("outreach:inflight")), timeout=60)
        w.signal(signal.SIGTERM)
        w.wait(30)
        return w

    def where(self, jid):
        """The sorted set ("dead", "retry") holding the job, and the job as stored there."""
        for key in ("dead", "retry"):
            for j in self.redis().zrange(key, 0, -1):
                job = json.loads(j)
                if job["jid"] == jid:
                    return key, job
        return None, None

    def coordinator(self, name, email_addr, manager=None):
        return self.sql_one("INSERT INTO coordinators (name, email, manager_id) VALUES (%s, %s, %s) RETURNING id",
                            (name, email_addr, manager))

    def source(self, coord, last_name, first_name=None, org=None, kind="physician", days_ago=60):
        return self.sql_one(
            "INSERT INTO referral_sources (kind, first_name, last_name, organization_name, coordinator_id, status, "
            " last_contact_at, phone) VALUES (%s, %s, %s, %s, %s, 'active', now() - make_interval(days => %s), "
            " '555-0100') RETURNING id", (kind, first_name, last_name, org, coord, days_ago))

    # --- malformed arguments ----------------------------------------------------------------------
    def test_malformed_args_of_every_class_go_to_dead(self):
        # A real coordinator with due sources, so that args that slipped through validation would
        # send an email rather than fail for want of a coordinator.
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        self.source(c, "Doe")
        self.sql("INSERT INTO coordinators (name, email, manager_id) VALUES ('Rae Report', 'rae@clinic.example.org', "
                 "%s)", (c,))
        # West of UTC, UTC's tomorrow has not begun either. The dates are taken now, not at import;
        # a run that crosses midnight UTC is skipped below.
        west = self.sql_one("INSERT INTO coordinators (name, email, time_zone) VALUES ('Wes West', "
                            "'wes@clinic.example.org', 'America/Los_Angeles') RETURNING id")
        self.source(west, "Roe")
        now = datetime.datetime.now(datetime.timezone.utc).date()
        tomorrow, after_tomorrow = str(now + datetime.timedelta(days=1)), str(now + datetime.timedelta(days=2))
        this_month = now.strftime("%Y-%m")
        next_month = (now.replace(day=28) + datetime.timedelta(days=5)).strftime("%Y-%m")
        bad = [
            ("OverdueDigestJob", [], "takes 2 arguments"),
            ("OverdueDigestJob", [c], "takes 2 arguments"),
            ("OverdueDigestJob", [str(c), TODAY], "coordinator_id must be a positive integer"),
            ("OverdueDigestJob", [0, TODAY], "coordinator_id must be a positive integer"),
            ("OverdueDigestJob", [c + 0.5, TODAY], "coordinator_id must be a positive integer"),
            ("OverdueDigestJob", [c, "26/11/2026"], "local_date must be"),
            ("OverdueDigestJob", [c, "2026-13-01"], "local_date must be"),
            ("OverdueDigestJob", [c, "2026-02-30"], "local_date must be"),
            ("OverdueDigestJob", [c, "2026-+1-+1"], "local_date must be"),
            ("OverdueDigestJob", [c, " 2026-1-01"], "local_date must be"),
            ("OverdueDigestJob", [c, TODAY, 1], "takes 2 arguments"),
            ("OverdueDigestJob", [c, "2099-01-01"], "local_date 2099-01-01 is in the future"),
            ("ManagerDigestJob", [c, after_tomorrow], "local_date %s is in the future" % after_tomorrow),
            ("OverdueDigestJob", [west, tomorrow], "local_date %s is in the future: it is " % tomorrow),
            ("ManagerDigestJob", [-c, TODAY], "manager_id must be a positive integer"),
            ("ManagerDigestJob", [c, "2025-04-31"], "local_date must be"),
            ("ManagerDigestJob", [c, "2100-02-29"], "local_date must be"),
            ("ActivityInviteJob", [1], "takes 2 arguments"),
            ("ActivityInviteJob", [1, -1], "sequence must be an integer 0..1000000"),
            ("ActivityInviteJob", [1, 1000001], "sequence must be an integer 0..1000000"),
            ("ActivityInviteJob", ["1", 0], "activity_id must be a positive integer"),
            ("ActivityInviteJob", [1, 0.5], "sequence must be an integer"),
            ("CaseAlertJob", [1, 3], "level must be an integer 1..2"),
            ("CaseAlertJob", [1, 0], "level must be an integer 1..2"),
            ("CaseAlertJob", [None, 1], "case_id must be a positive integer"),
            ("NpiSyncJob", [], "takes 1 argument"),
            ("NpiSyncJob", ["1"], "search_id must be a positive integer"),
            ("NpiSyncJob", [0], "search_id must be a positive integer"),
            ("NpiSyncJob", [1, 2], "takes 1 argument"),
            ("MonthlyReportJob", ["2026-13"], "month must be like 2026-11"),
            ("MonthlyReportJob", ["26-11"], "month must be like 2026-11"),
            ("MonthlyReportJob", ["2026-+1"], "month must be like 2026-11"),
            ("MonthlyReportJob", [c, "2026-+1"], "month must be like 2026-11"),
            ("MonthlyReportJob", [0, "2026-10"], "coordinator_id must be a positive integer"),
            ("MonthlyReportJob", [c, next_month], "month %s has not ended" % next_month),
            ("MonthlyReportJob", [c, this_month], "month %s has not ended" % this_month),
            ("MonthlyReportJob", [this_month], "month %s has not ended" % this_month),
            ("MonthlyReportJob", ["2099-01"], "month 2099-01 has not ended"),
            ("MonthlyReportJob", [c, "2026-10", 1], "at most 2 arguments"),
            ("MetricsJob", ["day", "2026-02-30"], "period_start must be"),
            ("MetricsJob", ["month", "2026-+1-01"], "period_start must be"),
            ("MetricsJob", ["week"], "period_start must be"),
            ("MetricsJob", ["full", "2026-01-01"], "\"full\" takes no period_start"),
            ("MetricsJob", [7], "period_kind must be"),
            ("NppesImportJob", ["/srv/nppes.csv"], "takes 1 argument, an object"),
            ("NppesImportJob", [{}], "file is missing"),
            ("NppesImportJob", [{"file": "/srv/nppes.csv", "taxonomies": "207R00000X"}], "taxonomies must be a list"),
            ("NppesImportJob", [{"file": "/srv/nppes.csv", "taxonomies": ["207R"]}], "taxonomies[0] is not a NUCC code"),
            ("NppesImportJob", [{"file": "/srv/nppes.csv", "prospects": "yes"}], "prospects must be true or false"),
            ("NppesImportJob", [{"file": "/srv/nppes.csv", "coordinator": c}], "coordinator only goes with"),
            ("NppesImportJob", [{"file": "/srv/nppes.csv", "kind": "monthly"}], "kind must be"),
            ("NppesImportJob", [{"file": "/srv/nppes.csv", "files": []}], "unknown argument \"files\""),
        ]
        queue = {"OverdueDigestJob": "alerts", "ManagerDigestJob": "alerts", "ActivityInviteJob": "alerts",
                 "CaseAlertJob": "alerts", "NpiSyncJob": "npi", "MonthlyReportJob": "alerts", "MetricsJob": "metrics",
                 "NppesImportJob": "npi"}
        jids = {self.push(k, a, queue[k]): (k, a, why) for k, a, why in bad}
        self.drain()
        if datetime.datetime.now(datetime.timezone.utc).date() != now:
            self.skipTest("the UTC day changed while the jobs ran: the dates ahead are not ahead any more")
        wrong = []
        for jid, (k, a, why) in jids.items():
            key, job = self.where(jid)
            if key != "dead" or job["error_class"] != "ArgumentError" or why not in job["error_message"]:
                wrong.append("%s %s: in %s, %s: %s (wanted ArgumentError: ...%s...)"
                             % (k, json.dumps(a), key or "no set (it ran)", job and job.get("error_class"),
                                job and job.get("error_message"), why))
        self.assertEqual(wrong, [], "\n".join(wrong))
        self.assertEqual(self.maildir_messages(), [])
        self.assertEqual(self.sql("SELECT kind, key, status FROM alert_emails"), [])
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_runs"), 0)
        # the worker carried on: a good job after the bad ones runs
        jid = self.push("PingJob", ["pong-set", 0], "default")
        self.drain()
        self.assertTrue(self.redis().sismember("pong-set", jid))

    def test_a_digest_or_report_scheduled_for_its_day_is_taken(self):
        # A date still ahead is refused when the job runs, not when it is scheduled for that day.
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        now = datetime.datetime.now(datetime.timezone.utc).date()
        day = str(now + datetime.timedelta(days=3))
        month = now.strftime("%Y-%m")
        first = (now.replace(day=28) + datetime.timedelta(days=5)).replace(day=1)
        for klass, args, at in (("OverdueDigestJob", [c, day], day + "T08:00:00Z"),
                                ("MonthlyReportJob", [month], "%sT07:00:00Z" % first)):
            self.run_bin("outreachctl", "enqueue", klass, "--args", json.dumps(args), "--at", at, check=True)
        scheduled = [json.loads(j) for j in self.redis().zrange("schedule", 0, -1)]
        self.assertEqual(sorted((j["class"], j["args"]) for j in scheduled),
                         [("MonthlyReportJob", [month]), ("OverdueDigestJob", [c, day])])

    def test_a_digest_date_is_the_coordinators_own_day(self):
        # 26 hours apart: Kiritimati's today has begun there, and not yet at UTC-12. Whatever the hour,
        # a check against UTC's day would get one of the two wrong.
        east = self.sql_one("INSERT INTO coordinators (name, email, time_zone) VALUES ('Kai East', "
                            "'kai@clinic.example.org', 'Pacific/Kiritimati') RETURNING id")
        west = self.sql_one("INSERT INTO coordinators (name, email, time_zone) VALUES ('Wes West', "
                            "'wes@clinic.example.org', 'Etc/GMT+12') RETURNING id")
        for c in (east, west):
            self.source(c, "Doe", days_ago=90)
        day = self.sql_one("SELECT ((now() AT TIME ZONE 'Pacific/Kiritimati')::date)::text")
        late = self.push("OverdueDigestJob", [west, day], "alerts")
        self.push("OverdueDigestJob", [east, day], "alerts")
        self.drain(("alerts",))
        self.assertEqual([str(m["To"]) for m in self.maildir_messages()], ["Kai East <kai@clinic.example.org>"])
        key, job = self.where(late)
        self.assertEqual((key, job["error_class"]), ("dead", "ArgumentError"))
        self.assertIn("local_date %s is in the future: it is " % day, job["error_message"])
        self.assertEqual(self.sql("SELECT kind, status FROM alert_emails"), [("digest", "sent")])

    def test_an_inactive_coordinator_gets_no_digest_or_report(self):
        # Pushed for them directly by another application: nothing is sent and nothing claimed, so
        # the same jobs pushed again once they are active send their emails.
        m = self.coordinator("Max Manager", "max@clinic.example.org")
        c = self.coordinator("Ann Lee", "ann@clinic.example.org", manager=m)
        self.source(c, "Doe", days_ago=90)
        self.sql("UPDATE coordinators SET active = false")
        last_month = (datetime.datetime.now(datetime.timezone.utc).date().replace(day=1)
                      - datetime.timedelta(days=1)).strftime("%Y-%m")
        jobs = [("OverdueDigestJob", [c, TODAY]), ("ManagerDigestJob", [m, TODAY]), ("MonthlyReportJob", [c, last_month])]
        for klass, args in jobs:
            self.push(klass, args, "alerts")
        w = self.drain(("alerts",))
        self.assertEqual(self.maildir_messages(), [])
        self.assertEqual(self.sql("SELECT kind FROM alert_emails"), [])
        self.assertEqual(self.redis().zcard("dead") + self.redis().zcard("retry"), 0)
        self.assertEqual(sorted(line.split(": coordinator")[0].split()[-2] for line in w.log().splitlines()
                                if "is inactive, nothing sent" in line),
                         ["digest", "manager_digest", "monthly_report"])
        self.sql("UPDATE coordinators SET active = true")
        for klass, args in jobs:
            self.push(klass, args, "alerts")
        self.drain(("alerts",))
        self.assertEqual(sorted(self.sql("SELECT kind, status FROM alert_emails")),
                         [("digest", "sent"), ("manager_digest", "sent"), ("monthly_report", "sent")])

    def test_hostile_jid_and_class_are_refused_and_forge_no_log_line(self):
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        self.source(c, "Doe")
        r = self.redis()
        r.sadd("queues", "alerts")
        bad_jid = "ab\r\nBcc: victim@elsewhere.example.org"
        r.lpush("queue:alerts", json.dumps({"class": "OverdueDigestJob", "args": [c, TODAY], "jid": bad_jid,
                                           "queue": "alerts", "retry": True, "enqueued_at": time.time()}))
        r.lpush("queue:alerts", json.dumps({"class": "No\nforged: record", "args": [], "jid": "cd" * 12,
                                           "queue": "alerts", "retry": True, "enqueued_at": time.time()}))
        r.lpush("queue:alerts", json.dumps({"class": "Esc\x1b]0;retitled\x07\u009b2J", "args": [], "jid": "ef" * 12,
                                           "queue": "alerts", "retry": True, "enqueued_at": time.time()}))
        w = self.drain(("alerts",))
        dead = {d["class"]: d for d in map(json.loads, r.zrange("dead", 0, -1))}
        self.assertEqual(sorted(dead), ["Esc\x1b]0;retitled\x07\u009b2J", "No\nforged: record", "OverdueDigestJob"])
        self.assertEqual(dead["OverdueDigestJob"]["jid"], bad_jid)
        self.assertEqual(dead["OverdueDigestJob"]["error_class"], "InvalidJob")
        self.assertIn("\"jid\" is not a string of 1 to 64 printable ASCII characters",
                      dead["OverdueDigestJob"]["error_message"])
        self.assertEqual(dead["No\nforged: record"]["error_class"], "UnknownJobClass")
        # every log line is a record of the worker's own: none starts with what the job carried
        for line in w.log().splitlines():
            self.assertRegex(line, r"^(<\d>|\d{4}-\d\d-\d\dT)", line)
        # nor drives the terminal it is read on: control characters are shown as escapes
        self.assertIn("Esc\\x1b]0;retitled\\x07\\u009b2J", w.log())
        self.assertEqual([c for c in w.log() if c not in "\n\t" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f)], [])
        # the coordinator's digest is not spoiled: a good job sends it
        self.assertEqual(self.sql("SELECT kind FROM alert_emails"), [])
        self.push("OverdueDigestJob", [c, TODAY], "alerts")
        self.drain(("alerts",))
        self.assertEqual([str(m["To"]) for m in self.maildir_messages()], ["Ann Lee <ann@clinic.example.org>"])

    def test_invite_sequence_ahead_of_the_activity_is_refused(self):
        # A sequence the activity never had would be recorded as sent and silence every later
        # invite of the activity (each looks already sent).
        c = self.coordinator("Ann Lee", "ann@clinic.example.org")
        s = self.source(c, "Doe")
        aid = self.sql_one("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at) "
                           "VALUES (%s, %s, 'call', now() + interval '1 day') RETURNING id", (s, c))
        jid = self.push("ActivityInviteJob", [aid, 500], "alerts")
        self.drain(("alerts",))
        key, job = self.where(jid)
        self.assertEqual((key, job["error_class"]), ("dead", "ArgumentError"), job)
        self.assertIn("sequence 500 is ahead of activity %d's invite sequence 0" % aid, job["error_message"])
        self.assertEqual(self.maildir_messages(), [])
        self.assertIsNone(self.sql_one("SELECT invite_sent_sequence FROM activities WHERE id = %s", (aid,)))
        # the activity's own invites still go out
        self.sql("UPDATE activities SET scheduled_at = scheduled_at + interval '1 hour' WHERE id = %s", (aid,))
        self.push("ActivityInviteJob", [aid, 1], "alerts")
        self.drain(("alerts",))
        self.assertEqual(len(self.maildir_messages()), 1)
        self.assertEqual(self.sql_one("SELECT invite_sent_sequence FROM activities WHERE id = %s", (aid,)), 1)

    # --- hostile values from the database ---------------------------------------------------------
    def assert_refused(self, name, email_addr, reason, kinds=("digest",)):
        """The emails (a digest, a monthly report) to the coordinator named so send nothing: each job
        goes to dead and each email is recorded failed, with the reason."""
        c = self.coordinator(name, email_addr)
        self.source(c, "Doe")
        last_month = (datetime.datetime.now(datetime.timezone.utc).date().replace(day=1)
                      - datetime.timedelta(days=1)).strftime("%Y-%m")
        jobs = {"digest": ("OverdueDigestJob", [c, TODAY]), "monthly_report": ("MonthlyReportJob", [c, last_month])}
        jids = [self.push(*jobs[k], "alerts") for k in kinds]
        self.drain(("alerts",))
        self.assertEqual(self.maildir_messages(), [])
        for jid in jids:
            key, job = self.where(jid)
            self.assertEqual((key, job["error_class"]), ("dead", "InvalidEmail"), job)
            self.assertIn(reason, job["error_message"])
        rows = self.sql("SELECT kind, status, error FROM alert_emails ORDER BY kind")
        self.assertEqual([(k, st) for k, st, _ in rows], [(k, "failed") for k in sorted(kinds)])
        for _, _, error in rows:
            self.assertIn(reason, error)

    def test_coordinator_name_with_a_line_break_is_refused_and_recorded(self):
        self.assert_refused("Dana Smith\r\nBcc: victim@elsewhere.example.org", "dana@clinic.example.org",
                            "display name contains a line break")

    def test_a_coordinator_name_too_long_is_refused_as_such(self):
        # 257 bytes, one over the 256 a message takes: cut to fit, it ended inside an é and failed as
        # "not valid UTF-8"
        self.assert_refused("Nuñez-" + "é" * 125, "long@clinic.example.org", "their name is longer than 256 bytes",
                            kinds=("digest", "monthly_report"))
        # 256 bytes: the message takes it whole (and the greeting's first name, cut to 127 bytes, is cut
        # between two characters)
        c = self.coordinator("Nunez-" + "é" * 125, "just@clinic.example.org")
        self.source(c, "Doe")
        self.push("OverdueDigestJob", [c, TODAY], "alerts")
        self.drain(("alerts",))
        # (encoded-words over several lines: Python's parser keeps the folding spaces RFC 2047 drops)
        self.assertEqual([(a.display_name.replace(" ", ""), a.addr_spec) for m in self.maildir_messages()
                          for a in m["To"].addresses], [("Nunez-" + "é" * 125, "just@clinic.example.org")])

    def test_case_and_invite_values_stay_text(self):
        boss = self.coordinator("Denise O'Kafor", "denise@clinic.example.org")
        c = self.coordinator("Ann Lee", "ann@clinic.example.org", boss)
        evil_org = "<script>alert(1)</script> Clinic\r\nBcc: victim@elsewhere.example.org\x0b\x1b[2J"
        s = self.source(c, None, org=evil_org, kind="organization")
        case = self.sql_one(
            "INSERT INTO cases (source_id, assignee_id, category, priority, summary, opened_at) VALUES "
            "(%s, %s, %s, 'high', %s, now() - interval '30 hours') RETURNING id",
            (s, c, "billing\nX-Injected: yes", "<img src=x onerror=alert(1)> '); DROP TABLE cases; --"))
        jid = self.push("CaseAlertJob", [case, 1], "alerts")
        self.drain(("alerts",))
        key, job = self.where(jid)
        self.assertIsNone(key, job)
        msgs = self.maildir_messages()
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual(m.defects, [])
        self.assertIsNone(m["Bcc"])
        self.assertIsNone(m["X-Injected"])
        self.assertEqual(str(m["To"]), "Ann Lee <ann@clinic.example.org>")
        subject = str(m["Subject"])
        self.assertNotIn("\n", subject)
        self.assertIn("billing X-Injected: yes", subject)
        self.assertIn("<script>alert(1)</script> Clinic Bcc: victim@elsewhere.example.org", subject)
        html = m.get_body(("html",)).get_content()
        self.assertNotIn("<script>", html)
        self.assertNotIn("<img", html)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; Clinic", html)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt; &#39;); DROP TABLE cases; --", html)
        self.assertEqual(self.sql_one("SELECT alerted_level FROM cases WHERE id = %s", (case,)), 1)

        # An invite: the activity's text goes into the iCalendar part as values, never as lines.
        self.clear_maildir()
        when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=2)
        self.sql("UPDATE coordinators SET name = %s WHERE id = %s", ('Ann "AJ" Lee; ROLE=CHAIR:x', c))
        aid = self.sql_one(
            "INSERT INTO activities (source_id, coordinator_id, kind, subject, scheduled_at, location, notes) "
            "VALUES (%s, %s, 'meeting', %s, %s, %s, %s) RETURNING id",
            (s, c, "Lunch\r\nATTENDEE:mailto:victim@elsewhere.example.org", when, "Suite <b>200</b>",
             "END:VEVENT\nBEGIN:VEVENT\nSUMMARY:forged"))
        jid = self.push("ActivityInviteJob", [aid, 0], "alerts")
        self.drain(("alerts",))
        key, job = self.where(jid)
        self.assertIsNone(key, job)
        m = self.maildir_messages()[0]
        self.assertEqual(m.defects, [])
        part = [p for p in m.walk() if p.get_content_type() == "text/calendar"][0]
        ics = part.get_content()
        self.assertNotIn("\nATTENDEE:mailto:victim", ics.replace("\r\n", "\n"))
        self.assertNotIn("\nSUMMARY:forged", ics.replace("\r\n", "\n"))
        self.assertEqual([c for c in ics if ord(c) < 0x20 and c not in "\r\n"], [])  # the \x0b and \x1b too
        cal = icalendar.Calendar.from_ical(ics)
        events = list(cal.walk("VEVENT"))
        self.assertEqual(len(events), 1)
        ev = events[0]
        self.assertEqual(str(ev["SUMMARY"]).replace("\r", ""), "Lunch\nATTENDEE:mailto:victim@elsewhere.example.org")
        self.assertEqual(str(ev["LOCATION"]), "Suite <b>200</b>")
        self.assertIn("END:VEVENT\nBEGIN:VEVENT\nSUMMARY:forged", str(ev["DESCRIPTION"]))
        self.assertEqual(str(ev["ATTENDEE"]), "mailto:ann@clinic.example.org")
        self.assertEqual(ev["ATTENDEE"].params["ROLE"], "REQ-PARTICIPANT")
        self.assertIn(ev["ATTENDEE"].params["CN"], ('Ann "AJ" Lee; ROLE=CHAIR:x', "Ann ^'AJ^' Lee; ROLE=CHAIR:x"))
        html = m.get_body(("html",)).get_content()
        self.assertNotIn("<b>200", html)
        self.assertIn("Suite &lt;b&gt;200&lt;/b&gt;", html)

    # --- a relay that cannot be reached -----------------------------------------------------------
    def test_unreachable_relay_retries_every_kind_of_email(self):
        boss = self.coordinator("Denise Okafor", "denise@clinic.example.org")
        c = self.coordinator("Ann Lee", "ann@clinic.example.org", boss)
        s = self.source(c, "Doe", days_ago=90)
        case = self.sql_one("INSERT INTO cases (source_id, assignee_id, category, priority, summary, opened_at) "
                            "VALUES (%s, %s, 'billing', 'high', 'late', now() - interval '30 hours') RETURNING id",
                            (s, c))
        aid = self.sql_one("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at) "
                           "VALUES (%s, %s, 'call', now() + interval '1 day') RETURNING id", (s, c))
        month = (datetime.date.today().replace(day=1) - datetime.timedelta(days=1)).strftime("%Y-%m")
        jobs = {self.push("OverdueDigestJob", [c, TODAY], "alerts"): "digest",
                self.push("ManagerDigestJob", [boss, TODAY], "alerts"): "manager_digest",
                self.push("CaseAlertJob", [case, 1], "alerts"): "case",
                self.push("ActivityInviteJob", [aid, 0], "alerts"): "invite",
                self.push("MonthlyReportJob", [c, month], "alerts"): "monthly_report"}
        closed = harness.free_port()  # nothing listens there
        r = self.redis()
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts",
                           env={"OUTREACH_SMTP_PORT": closed})
        self.wait_for("every job in retry", lambda: r.zcard("retry") == len(jobs), timeout=30)
        w.signal(signal.SIGTERM)
        w.wait(30)
        self.assertEqual(r.zcard("dead"), 0)
        for jid, kind in jobs.items():
            key, job = self.where(jid)
            self.assertEqual((key, job["error_class"]), ("retry", "SMTPTemporaryFailure"), (kind, job))
            self.assertEqual(job["retry_count"], 0, job)
        rows = dict(self.sql("SELECT kind, status FROM alert_emails"))
        self.assertEqual(rows, {k: "sending" for k in jobs.values()})
        self.assertEqual(self.sql_one("SELECT count(*) FROM alert_emails WHERE error IS NULL"), 0)
        self.assertEqual(self.maildir_messages(), [])


if __name__ == "__main__":
    harness.main()
