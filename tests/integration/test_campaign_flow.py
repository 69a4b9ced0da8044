"""A campaign from end to end, every part real: the definition file through `outreachctl campaign
create` and `activate`, outreachd's step scan and public listener, the worker's messages in the mail
catcher, and the recipients' clicks, opens and one-click unsubscribes through the listener's links
(followed exactly as they appear in the messages), down to the follow-ups they trigger."""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import tempfile
import time
import urllib.parse

import harness

DEFINITION = {
    "name": "Knee rehab",
    "sender": {"name": "Lakeside Physical Therapy", "email": "hello@lakeside-pt.example.org"},
    "reply_to": "team@lakeside-pt.example.org",
    "postal_address": "Lakeside PT, 12 Harbor Road, Austin, TX 78701",
    "segments": [
        {"name": "orthopaedics", "criteria": {"specialty_codes": ["207X00000X"]}},
        {"name": "sports", "criteria": {"specialty_codes": ["207QS0010X"]}},
    ],
    "messages": [
        {"variant": "intro", "segment": "orthopaedics", "subject": "Post-op rehab, Dr. {{source.last_name}}",
         "text": "Dear Dr. {{source.last_name}}, see https://lakeside-pt.example.org/ortho\n",
         "html": "<p>Dear Dr. {{source.last_name}}, <a href=\"https://lakeside-pt.example.org/ortho\">see</a></p>"},
        {"variant": "intro", "segment": "sports", "subject": "Return to play, Dr. {{source.last_name}}",
         "text": "Dear Dr. {{source.last_name}}, see https://lakeside-pt.example.org/sports\n",
         "html": "<p>Dear Dr. {{source.last_name}}, <a href=\"https://lakeside-pt.example.org/sports\">see</a></p>"},
        {"variant": "reminder", "segment": None, "subject": "In case you missed it, Dr. {{source.last_name}}",
         "text": "A reminder from {{coordinator.name}}.\n", "html": "<p>A reminder from {{coordinator.name}}.</p>"},
        {"variant": "outcomes", "segment": None, "subject": "Our outcomes, Dr. {{source.last_name}}",
         "text": "Our outcomes.\n", "html": "<p>Our outcomes.</p>"},
    ],
    "steps": [
        {"after_step": 0, "condition": "always", "action": "send", "variant": "intro"},
        {"after_step": 1, "condition": "clicked", "action": "call"},
        {"after_step": 1, "condition": "not_opened", "wait_days": 3, "action": "send", "variant": "reminder"},
        {"after_step": 1, "condition": "not_clicked", "wait_days": 3, "action": "send", "variant": "outcomes"},
    ],
}

DAY = 86400


class CampaignFlow(harness.Case):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.migrate()
        cls.tmp = tempfile.mkdtemp(prefix="outreach-flow-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        key = os.path.join(cls.tmp, "token.key")
        with open(key, "wb") as f:
            f.write(base64.b64encode(os.urandom(32)) + b"\n")
        cls.public = harness.free_port()
        cls.env["OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE"] = key
        cls.env["OUTREACH_CAMPAIGNS_PUBLIC_URL"] = "http://127.0.0.1:%d" % cls.public
        cls.env["OUTREACH_CAMPAIGNS_SCAN_INTERVAL"] = "1"
        cls.definition = os.path.join(cls.tmp, "campaign.json")
        with open(cls.definition, "w") as f:
            json.dump(DEFINITION, f)

    def setUp(self):
        super().setUp()
        self.sql("TRUNCATE coordinators, referral_sources, campaigns, suppressions, activities RESTART IDENTITY CASCADE")
        self.clear_maildir()
        self.redis().delete("queue:campaigns")
        self.coord = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Cora Ordinator', "
                                  "'cora@clinic.example.org') RETURNING id")

    def source(self, last, code):
        return self.sql_one(
            "INSERT INTO referral_sources (kind, first_name, last_name, specialty_code, email, coordinator_id, status) "
            "VALUES ('physician', 'Ann', %s, %s, %s, %s, 'active') RETURNING id",
            (last, code, last.lower() + "@example.org", self.coord))

    def start(self, offset=0):
        env = {"OUTREACH_NOW_OFFSET": str(offset)}
        d = self.start_bin("outreachd", "-c", harness.CONFIG, env=dict(env, **{
            "OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % harness.free_port(),
            "OUTREACH_HTTP_PUBLIC_LISTEN": "127.0.0.1:%d" % self.public}))
        d.wait_log(r"outreachd \S+ ready")
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "campaigns", env=env)
        w.wait_log(r"ready: identity")
        return d, w

    def stop(self, *procs):
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)

    def fetch(self, method, url, body=None, headers=None):
        """Follows a link from a message as a mail reader would (no redirects followed)."""
        u = urllib.parse.urlsplit(url)
        self.assertEqual((u.hostname, u.port), ("127.0.0.1", self.public), url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        try:
            conn.request(method, u.path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def by_recipient(self):
        out = {}
        for m in self.maildir_messages():
            out.setdefault(m["To"].addresses[0].addr_spec, []).append(m)
        return out

    def test_definition_to_follow_ups_through_the_public_links(self):
        bone = self.source("Bone", "207X00000X")
        sprint = self.source("Sprint", "207QS0010X")
        quiet = self.source("Quiet", "207X00000X")
        leaver = self.source("Leaver", "207X00000X")
        self.source("Other", "208D00000X")  # in no segment

        self.run_bin("outreachctl", "campaign", "create", self.definition, check=True)
        p = self.run_bin("outreachctl", "campaign", "activate", "Knee rehab", check=True)
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaign_enrollments"), 4, p.stdout)

        d, w = self.start()
        self.wait_mail(4)
        self.wait_for("the four first messages to be recorded as sent",
                      lambda: self.sql_one("SELECT count(*) FROM email_messages WHERE status = 'sent'") == 4)
        got = self.by_recipient()
        self.assertEqual(sorted(got), ["bone@example.org", "leaver@example.org", "quiet@example.org",
                                       "sprint@example.org"])
        self.assertEqual(str(got["bone@example.org"][0]["Subject"]), "Post-op rehab, Dr. Bone")
        self.assertEqual(str(got["sprint@example.org"][0]["Subject"]), "Return to play, Dr. Sprint")

        # Bone clicks the link in the HTML part: the listener redirects to the original URL only.
        html = got["bone@example.org"][0].get_body(("html",)).get_content()
        click = re.search(r'href="(http://127\.0\.0\.1:%d/c/[^"]+)"' % self.public, html).group(1)
        status, headers, _ = self.fetch("GET", click)
        self.assertEqual((status, headers["Location"]), (302, "https://lakeside-pt.example.org/ortho"))
        # A click token with one character changed is refused and records nothing.
        forged = click[:-1] + ("A" if click[-1] != "A" else "B")
        self.assertEqual(self.fetch("GET", forged)[0], 404)

        # Sprint's mail reader loads the images: an open, no click.
        shtml = got["sprint@example.org"][0].get_body(("html",)).get_content()
        pixel = re.search(r'<img src="(http://127\.0\.0\.1:%d/o/[^"]+)"' % self.public, shtml).group(1)
        status, headers, gif = self.fetch("GET", pixel)
        self.assertEqual((status, headers["Content-Type"], gif[:6]), (200, "image/gif", b"GIF89a"))

        # Leaver's mail provider unsubscribes with RFC 8058's one-click POST to List-Unsubscribe.
        lu = str(got["leaver@example.org"][0]["List-Unsubscribe"])
        unsub = re.search(r"<(http://[^>]+/u/[^>]+)>", lu).group(1)
        self.assertEqual(self.fetch("GET", unsub)[0], 200)  # the confirmation page records nothing
        status, _, _ = self.fetch("POST", unsub, body="List-Unsubscribe=One-Click",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 200)

        self.wait_for("the click to hand Bone to the coordinator", lambda: self.sql_one(
            "SELECT count(*) FROM activities WHERE source_id = %s AND kind = 'call' AND coordinator_id = %s",
            (bone, self.coord)) == 1)
        self.wait_for("the open and the unsubscribe to be recorded", lambda: self.sql_one(
            "SELECT count(*) FROM email_events WHERE kind IN ('open', 'unsubscribe')") >= 2)
        self.assertEqual(self.sql("SELECT address, reason FROM suppressions"), [("leaver@example.org", "unsubscribe")])
        self.assertEqual(self.sql_one("SELECT state FROM campaign_enrollments WHERE source_id = "
                                      "(SELECT id FROM referral_sources WHERE last_name = 'Leaver')"), "stopped")
        self.assertIsNotNone(self.sql_one(
            "SELECT m.opened_at FROM email_messages m JOIN campaign_enrollments e ON e.id = m.enrollment_id "
            "WHERE e.source_id = %s", (sprint,)))
        self.stop(w, d)

        # Three days later: Quiet (never opened) gets the reminder, Sprint (opened, no click) the
        # outcomes; Bone was handed over and Leaver left, so neither gets anything more.
        self.clear_maildir()
        d, w = self.start(offset=3 * DAY + 60)
        self.wait_mail(2)
        self.wait_for("the follow-ups to be recorded", lambda: self.sql_one(
            "SELECT count(*) FROM email_messages WHERE step = 2 AND status = 'sent'") == 2)
        time.sleep(2)  # two more scans: nothing else may go out
        self.stop(w, d)
        got = self.by_recipient()
        self.assertEqual({k: [str(m["Subject"]) for m in v] for k, v in got.items()},
                         {"quiet@example.org": ["In case you missed it, Dr. Quiet"],
                          "sprint@example.org": ["Our outcomes, Dr. Sprint"]})
        self.assertIn("A reminder from Cora Ordinator.", got["quiet@example.org"][0].get_body(("plain",)).get_content())
        self.assertEqual(self.sql("SELECT kind, count(*) FROM email_events GROUP BY kind ORDER BY kind"),
                         [("click", 1), ("open", 1), ("unsubscribe", 1)])
        self.assertEqual(self.sql_one("SELECT count(*) FROM email_messages WHERE step = 1"), 4)
        self.assertEqual(quiet, self.sql_one(
            "SELECT e.source_id FROM email_messages m JOIN campaign_enrollments e ON e.id = m.enrollment_id "
            "WHERE m.variant = 'reminder'"))


if __name__ == "__main__":
    harness.main()
