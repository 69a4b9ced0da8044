"""Calendar invites for scheduled activities and SLA alerts for open cases, end to end."""
import datetime
import json
import os
import re
import signal
import socket
import time

import icalendar

import harness




class Invites(harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, alert_emails, digest_runs RESTART IDENTITY CASCADE")
        self.clear_maildir()
        env = {"OUTREACH_SCHEDULER_SCAN_INTERVAL": "1", "OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % harness.free_port(),
               "OUTREACH_ALERTS_DIGEST_HOUR": "23"}
        self.start_bin("outreachd", "-c", harness.CONFIG, env=env).wait_log(r"ready")
        self.worker = self.start_worker()
        self.boss = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Denise Okafor', 'denise@x.org') "
                                 "RETURNING id")
        self.coord = self.sql_one("INSERT INTO coordinators (name, email, time_zone, manager_id) "
                                  "VALUES ('José Núñez', 'jose@x.org', 'America/Chicago', %s) RETURNING id", (self.boss,))
        self.src = self.sql_one(
            "INSERT INTO referral_sources (first_name, last_name, credential, specialty, phone, address_line1, city, "
            " state, postal_code, coordinator_id, status, last_contact_at) VALUES ('Paul', 'Dewey', 'MD', "
            "'Orthopaedic Surgery', '215-555-0100', '1 Main St', 'Philadelphia', 'PA', '19103', %s, 'active', now()) "
            "RETURNING id", (self.coord,))

    def start_worker(self):
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "alerts")
        w.wait_log(r"ready: identity")
        return w

    def push(self, klass, args):
        job = {"class": klass, "args": args, "jid": os.urandom(12).hex(), "queue": "alerts", "retry": True,
               "created_at": time.time(), "enqueued_at": time.time()}
        self.redis().lpush("queue:alerts", json.dumps(job))
        return job["jid"]

    def wait_mail(self, n, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            msgs = self.maildir_messages()
            if len(msgs) >= n:
                time.sleep(0.3)
                return self.maildir_messages()
            time.sleep(0.1)
        self.fail("expected %d emails, got %d" % (n, len(self.maildir_messages())))

    def calendar(self, m):
        parts = [p for p in m.walk() if p.get_content_type() == "text/calendar"]
        self.assertEqual(len(parts), 1)
        self.assertEqual(m.defects, [])
        cal = icalendar.Calendar.from_ical(parts[0].get_content())
        return parts[0], cal, [c for c in cal.walk("VEVENT")][0]

    def test_schedule_reschedule_cancel(self):
        when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, second=0) + datetime.timedelta(days=2)
        aid = self.sql_one("INSERT INTO activities (source_id, coordinator_id, kind, subject, scheduled_at, location, "
                           "notes) VALUES (%s, %s, 'meeting', 'Lunch & learn <PT program>', %s, 'Suite 200', "
                           "'Bring outcomes data') RETURNING id", (self.src, self.coord, when))
        first = self.wait_mail(1)[0]
        part, cal, ev = self.calendar(first)
        self.assertEqual(part.get_param("method"), "REQUEST")
        self.assertEqual(str(cal["METHOD"]), "REQUEST")
        uid = str(ev["UID"])
        self.assertEqual(uid, "activity-%d@localhost" % aid)
        self.assertEqual(int(ev["SEQUENCE"]), 0)
        self.assertEqual(ev.decoded("DTSTART"), when)
        self.assertEqual(ev.decoded("DTEND"), when + datetime.timedelta(minutes=30))
        self.assertEqual(str(ev["SUMMARY"]), "Lunch & learn <PT program>")
        self.assertEqual(str(ev["LOCATION"]), "Suite 200")
        self.assertIn("Paul Dewey, MD", str(ev["DESCRIPTION"]))
        self.assertIn("Bring outcomes data", str(ev["DESCRIPTION"]))
        self.assertEqual(str(ev["ORGANIZER"]), "mailto:outreach@localhost")
        self.assertEqual(str(ev["ATTENDEE"]), "mailto:jose@x.org")
        self.assertEqual(ev["ATTENDEE"].params["CN"], "José Núñez")
        self.assertEqual(str(first["To"]), "José Núñez <jose@x.org>")
        self.assertIn("&lt;PT program&gt;", first.get_body(("html",)).get_content())
        self.assertEqual(self.sql_one("SELECT invite_sent_sequence FROM activities"), 0)
        self.assertEqual(str(first["Subject"]).split(" with ")[0], "meeting")  # the first is no update

        # rescheduled: same UID, a higher SEQUENCE
        self.clear_maildir()
        later = when + datetime.timedelta(hours=3)
        self.sql("UPDATE activities SET scheduled_at = %s WHERE id = %s", (later, aid))
        part, cal, ev = self.calendar(self.wait_mail(1)[0])
        self.assertEqual(str(ev["UID"]), uid)
        self.assertEqual(int(ev["SEQUENCE"]), 1)
        self.assertEqual(ev.decoded("DTSTART"), later)
        self.assertTrue(str(self.maildir_messages()[0]["Subject"]).startswith("Updated: "))

        # canceled: METHOD:CANCEL, same UID, higher SEQUENCE
        self.clear_maildir()
        self.sql("UPDATE activities SET canceled_at = now() WHERE id = %s", (aid,))
        m = self.wait_mail(1)[0]
        part, cal, ev = self.calendar(m)
        self.assertEqual(part.get_param("method"), "CANCEL")
        self.assertEqual(str(cal["METHOD"]), "CANCEL")
        self.assertEqual(str(ev["STATUS"]), "CANCELLED")
        self.assertEqual(str(ev["UID"]), uid)
        self.assertEqual(int(ev["SEQUENCE"]), 2)
        self.assertTrue(str(m["Subject"]).startswith("Canceled: "))
        time.sleep(2.5)  # no more mail
        self.assertEqual(len(self.maildir_messages()), 1)

    def test_c1_controls_become_spaces(self):
        """U+0080..U+009F in an activity's text leave the invite as they leave an email's subject: as spaces."""
        when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, second=0) + datetime.timedelta(days=2)
        self.sql("INSERT INTO activities (source_id, coordinator_id, kind, subject, scheduled_at, location, notes) "
                 "VALUES (%s, %s, 'meeting', %s, %s, %s, %s)",
                 (self.src, self.coord, "Lunch\u0085and\u009blearn", when, "Suite\u0080200", "Bring\u009fdata"))
        m = self.wait_mail(1)[0]
        part, cal, ev = self.calendar(m)
        self.assertEqual([c for c in part.get_content() if 0x80 <= ord(c) <= 0x9f], [])
        self.assertEqual(str(ev["SUMMARY"]), "Lunch and learn")
        self.assertEqual(str(ev["LOCATION"]), "Suite 200")
        self.assertIn("Bring data", str(ev["DESCRIPTION"]))

    def test_completed_and_unsent_cancellations_send_nothing(self):
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        self.sql("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, canceled_at) "
                 "VALUES (%s, %s, 'call', %s, now())", (self.src, self.coord, when))
        self.sql("INSERT INTO activities (source_id, coordinator_id, kind, scheduled_at, completed_at) "
                 "VALUES (%s, %s, 'call', %s, now())", (self.src, self.coord, when))
        time.sleep(3)
        self.assertEqual(self.maildir_messages(), [])

    def test_case_alerts_once_per_level(self):
        self.sql("INSERT INTO cases (source_id, assignee_id, category, priority, summary, opened_at) VALUES "
                 "(%s, %s, 'scheduling', 'high', 'Patients wait 3 weeks for PT', now() - interval '30 hours'), "
                 "(%s, %s, 'billing', 'urgent', 'Claim denied <twice>', now() - interval '40 hours'), "
                 "(%s, %s, 'clinical', 'normal', 'Within SLA', now() - interval '2 hours')",
                 (self.src, self.coord, self.src, self.coord, self.src, self.coord))
        msgs = self.wait_mail(3)
        time.sleep(3)  # more scans: nothing more
        msgs = self.maildir_messages()
        self.assertEqual(len(msgs), 3, [str(m["Subject"]) for m in msgs])
        by = sorted((str(m["To"]), str(m["Subject"])) for m in msgs)
        # the high case (30 h > 24 h SLA) alerts the assignee; the urgent one (40 h > 4 + 24) also the manager
        self.assertEqual([t for t, _ in by], ["Denise Okafor <denise@x.org>", "José Núñez <jose@x.org>",
                                              "José Núñez <jose@x.org>"])
        self.assertTrue(by[0][1].startswith("Escalated: urgent case open 40 hours"))
        html = [m for m in msgs if str(m["To"]).startswith("Denise")][0].get_body(("html",)).get_content()
        self.assertIn("Claim denied &lt;twice&gt;", html)
        self.assertEqual(self.sql("SELECT priority, alerted_level FROM cases ORDER BY id"),
                         [("high", 1), ("urgent", 2), ("normal", 0)])

    def test_a_case_alert_not_due_sends_nothing_until_it_is(self):
        # pushed early by another application: level 2 before level 1, then level 1, of a case within its SLA
        case = self.sql_one("INSERT INTO cases (source_id, assignee_id, category, priority, summary, opened_at) "
                            "VALUES (%s, %s, 'billing', 'high', 'Statement unclear', now() - interval '2 hours') "
                            "RETURNING id", (self.src, self.coord))
        self.push("CaseAlertJob", [case, 2])
        self.push("CaseAlertJob", [case, 1])
        self.worker.wait_log(r"case %d: level 2 is not due until .* \(high priority, 24-hour SLA\): nothing sent" % case)
        self.worker.wait_log(r"case %d: level 1 is not due until .*: nothing sent" % case)
        time.sleep(1)
        self.assertEqual(self.maildir_messages(), [])
        self.assertEqual(self.sql("SELECT alerted_level FROM cases"), [(0,)])
        self.assertEqual(self.sql("SELECT count(*) FROM alert_emails"), [(0,)])
        # once the SLA passed, outreachd's scan pushes level 1, which reaches the assignee
        self.sql("UPDATE cases SET opened_at = now() - interval '30 hours'")
        msgs = self.wait_mail(1)
        self.assertEqual([str(m["To"]) for m in msgs], ["José Núñez <jose@x.org>"])
        self.assertTrue(str(msgs[0]["Subject"]).startswith("high case open 30 hours"), msgs[0]["Subject"])
        self.wait_alerted_levels([1])

    def test_a_case_alert_outreachd_pushed_goes_out_when_due_again(self):
        # outreachd pushes level 1 of an urgent case past its 4 hours; before a worker takes it, the case
        # is lowered to normal (48 hours): nothing is sent, and when the case passes 48 hours the scan
        # pushes the same alert again (its mark of the first push is gone) and it is sent
        self.worker.signal(signal.SIGTERM)
        self.worker.wait(30)
        self.sql("INSERT INTO cases (source_id, assignee_id, category, priority, summary, opened_at) "
                 "VALUES (%s, %s, 'clinical', 'urgent', 'Results not received', now() - interval '5 hours')",
                 (self.src, self.coord))
        r = self.redis()
        self.wait_for("the scan to push the alert", lambda: r.llen("queue:alerts") == 1)
        self.assertEqual(len(r.keys("outreach:pushed:*")), 1)
        self.sql("UPDATE cases SET priority = 'normal'")
        w = self.start_worker()
        w.wait_log(r"level 1 is not due until .* \(normal priority, 48-hour SLA\): nothing sent")
        self.assertEqual(r.keys("outreach:pushed:*"), [])  # removed before the line is logged
        time.sleep(2.5)  # scans: not due, nothing pushed
        self.assertEqual(self.maildir_messages(), [])
        self.sql("UPDATE cases SET opened_at = now() - interval '50 hours'")
        msgs = self.wait_mail(1)
        self.assertEqual([str(m["To"]) for m in msgs], ["José Núñez <jose@x.org>"])
        self.wait_alerted_levels([1])

    def wait_alerted_levels(self, levels):
        """The cases' alerted levels (by id) once they are so: a level is recorded after the relay
        answered, a moment after the email is in the mail catcher."""
        self.wait_for("alerted levels %s" % levels,
                      lambda: [lv for lv, in self.sql("SELECT alerted_level FROM cases ORDER BY id")] == levels)

    def test_an_inactive_assignees_case_alerts_go_to_their_manager(self):
        self.sql("UPDATE coordinators SET active = false WHERE id = %s", (self.coord,))
        alone = self.sql_one("INSERT INTO coordinators (name, email, active) VALUES ('Ann Lee', 'ann@x.org', false) "
                             "RETURNING id")
        first, second = (self.sql_one("INSERT INTO cases (source_id, assignee_id, category, priority, summary, "
                                      "opened_at) VALUES (%s, %s, %s, 'high', %s, now() - interval '30 hours') "
                                      "RETURNING id", (self.src, who, cat, summary))
                         for who, cat, summary in ((self.coord, "scheduling", "Patients wait 3 weeks"),
                                                   (alone, "billing", "Nobody to tell")))
        msgs = self.wait_mail(1)
        self.assertEqual([str(m["To"]) for m in msgs], ["Denise Okafor <denise@x.org>"])
        self.assertTrue(str(msgs[0]["Subject"]).startswith("Escalated: high case open 30 hours"), msgs[0]["Subject"])
        text = msgs[0].get_body(("plain",)).get_content()
        self.assertIn("A case assigned to José Núñez, who is no longer active, has been open longer than its "
                      "24-hour target", text)
        self.assertIn("who is no longer active", msgs[0].get_body(("html",)).get_content())
        # nobody can receive the other: outreachd pushes nothing, and one pushed by hand sends nothing
        self.push("CaseAlertJob", [second, 1])
        self.worker.wait_log(r"case %d: level 1: assignee %d is inactive and has no active manager: nothing sent"
                             % (second, alone))
        time.sleep(2.5)  # scans every second: were one to push it, the worker would say so again
        self.assertEqual(len(re.findall(r"case %d: .*nothing sent" % second, self.worker.log())), 1)
        self.assertEqual(len(self.maildir_messages()), 1)
        self.wait_alerted_levels([1, 0])
        # once the assignee has a manager the alert reaches them; both levels are due by then, and
        # the second alone goes out, saying how long past the target the case is
        self.sql("UPDATE cases SET opened_at = now() - interval '50 hours' WHERE id = %s", (second,))
        self.sql("UPDATE coordinators SET manager_id = %s WHERE id = %s", (self.boss, alone))
        self.wait_alerted_levels([1, 2])
        self.worker.wait_log(r"case %d: level 1 skipped: level 2 is due too, and both go to assignee %d's manager %d"
                             % (second, alone, self.boss))
        time.sleep(1)
        msgs = self.maildir_messages()
        self.assertEqual(len(msgs), 2)
        m = [m for m in msgs if "Nobody to tell" in m.get_body(("plain",)).get_content()][0]
        self.assertEqual(str(m["To"]), "Denise Okafor <denise@x.org>")
        self.assertIn("A case assigned to Ann Lee, who is no longer active, is still open, 26 hours past its 24-hour "
                      "target", m.get_body(("plain",)).get_content())

if __name__ == "__main__":
    harness.main()
