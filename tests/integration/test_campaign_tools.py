"""Campaign definitions and segments: outreachctl campaign create (and --dry-run), list, show, activate,
pause, finish and preview against the private PostgreSQL, with generated sources whose answers are known."""
import copy
import csv
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import unicodedata

import harness

TAXONOMY = harness.FIXTURES / "npi" / "nucc_taxonomy.csv"

CODES = ["207X00000X", "207XX0005X", "207QS0010X", "207R00000X", "2251S0007X", None]
STATES = ["TX", "OK", "CA", None]
CITIES = ["Austin", "AUSTIN", "Dallas", "San Antonio", "O'Fallon", None]
POSTALS = ["78701", "787019999", "78613", "75201", "7", None]
TAGS = ["ortho", "sports", "vip", "2026:q1"]

# Criteria with known answers: one key at a time, then combinations.
CASES = [
    {},
    {"specialty_codes": ["207X00000X"]},
    {"specialty_codes": ["207XX0005X", "2251S0007X"]},
    {"specialty_groupings": ["Allopathic & Osteopathic Physicians"]},
    {"specialty_groupings": ["Orthopaedic Surgery"]},
    {"specialty_groupings": ["Physical Therapist", "Family Medicine"]},
    {"states": ["TX"]},
    {"states": ["OK", "CA"]},
    {"cities": ["austin"]},
    {"cities": ["o'fallon", "San Antonio"]},
    {"postal_prefixes": ["787"]},
    {"postal_prefixes": ["78701", "75"]},
    {"postal_prefixes": ["7"]},
    {"statuses": ["active"]},
    {"statuses": ["prospect", "inactive"]},
    {"coordinator_ids": [1]},
    {"coordinator_ids": [1, 2]},
    {"tags": ["ortho"]},
    {"tags": ["vip", "2026:q1"]},
    {"kinds": ["organization"]},
    {"specialty_groupings": ["Orthopaedic Surgery"], "states": ["TX"], "kinds": ["physician"],
     "statuses": ["prospect", "active"]},
    {"states": ["TX"], "cities": ["Austin"], "postal_prefixes": ["787"], "tags": ["sports"]},
    {"specialty_codes": ["207QS0010X"], "coordinator_ids": [2], "statuses": ["active"]},
    {"tags": ["nobody-has-this"]},
]


def load_taxonomy():
    with open(TAXONOMY, newline="", encoding="utf-8") as f:
        return {r["Code"]: (r["Grouping"], r["Classification"]) for r in csv.DictReader(f)}


def matches(src, crit, taxonomy):
    """Whether the generated source src meets crit, computed independently of the SQL."""
    for key, values in crit.items():
        if key == "specialty_codes":
            ok = src["code"] in values
        elif key == "specialty_groupings":
            ok = src["code"] is not None and any(g in values for g in taxonomy.get(src["code"], ()))
        elif key == "states":
            ok = src["state"] in values
        elif key == "cities":
            ok = src["city"] is not None and src["city"].lower() in [v.lower() for v in values]
        elif key == "postal_prefixes":
            ok = src["postal"] is not None and any(src["postal"].startswith(p) for p in values)
        elif key == "statuses":
            ok = src["status"] in values
        elif key == "coordinator_ids":
            ok = src["coordinator"] in values
        elif key == "tags":
            ok = bool(set(values) & set(src["tags"]))
        elif key == "kinds":
            ok = src["kind"] in values
        else:
            raise AssertionError(key)
        if not ok:
            return False
    return True


def definition(segments, name="Test campaign"):
    """A valid definition with the given segments ([(name, criteria)]), one shared first message."""
    return {
        "name": name,
        "sender": {"name": "Riverside Physical Therapy", "email": "outreach@riverside-pt.example"},
        "postal_address": "1200 Congress Avenue\nAustin, TX 78701",
        "segments": [{"name": n, "criteria": c} for n, c in segments],
        "messages": [{"variant": "intro", "subject": "Hello {{source.last_name}}", "html": "<p>Hi</p>",
                      "text": "Hi"}],
        "steps": [{"after_step": 0, "condition": "always", "action": "send", "variant": "intro"}],
    }


class CampaignToolCase(harness.Case):
    """Shared: a migrated database, a folder for definition files, and the commands."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.migrate()

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="outreach-campaign-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write_def(self, d, name="campaign.json"):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            if isinstance(d, str):
                f.write(d)
            else:
                json.dump(d, f, indent=2)
        return path

    def ctl(self, *args, check=True):
        return self.run_bin("outreachctl", "campaign", *args, check=check)

    def create(self, d, *extra, check=True):
        return self.ctl("create", self.write_def(d), *extra, check=check)

    def enrolled(self, campaign_name):
        return {r[0]: r[1] for r in self.sql(
            "SELECT e.source_id, g.name FROM campaign_enrollments e JOIN campaign_segments g ON g.id = e.segment_id "
            "JOIN campaigns c ON c.id = e.campaign_id WHERE c.name = %s", (campaign_name,))}


class Segments(CampaignToolCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_bin("outreachctl", "import-taxonomy", TAXONOMY, check=True)
        cls.taxonomy = load_taxonomy()
        cls.sql("INSERT INTO coordinators (id, name, email) VALUES (1, 'Dana Reyes', 'dana@example.org'), "
                "(2, 'Lee Park', 'lee@example.org'), (3, 'Sam Ito', 'sam@example.org')")
        rng = random.Random(20261127)
        cls.sources = {}
        suppressed = []
        for i in range(400):
            kind = "organization" if rng.random() < 0.15 else "physician"
            src = {
                "kind": kind, "code": rng.choice(CODES), "state": rng.choice(STATES), "city": rng.choice(CITIES),
                "postal": rng.choice(POSTALS), "status": rng.choice(["prospect", "active", "inactive"]),
                "coordinator": rng.choice([1, 2, 3, None]),
                "tags": sorted(t for t in TAGS if rng.random() < 0.3),
                "email": None if rng.random() < 0.15 else ("Dr.%d@Example.org" % i if i % 3 else "dr%d@example.org" % i),
            }
            sid = cls.sql_one(
                "INSERT INTO referral_sources (kind, first_name, last_name, organization_name, specialty_code, state, "
                "city, postal_code, status, coordinator_id, email) VALUES (%s, 'Pat', %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s) RETURNING id",
                (kind, "Doe%d" % i, "Clinic %d" % i if kind == "organization" else None, src["code"], src["state"],
                 src["city"], src["postal"], src["status"], src["coordinator"], src["email"]))
            for t in src["tags"]:
                cls.sql("INSERT INTO source_tags (source_id, tag) VALUES (%s, %s)", (sid, t))
            if src["email"] and rng.random() < 0.1:
                suppressed.append(src["email"].lower())
            cls.sources[sid] = src
        for addr in suppressed:
            cls.sql("INSERT INTO suppressions (address, reason) VALUES (%s, 'unsubscribe')", (addr,))
        cls.suppressed = set(suppressed)
        assert len(suppressed) > 5

    def eligible(self, sid):
        email = self.sources[sid]["email"]
        return email is not None and email.lower() not in self.suppressed

    def expected(self, crit):
        return {sid for sid, s in self.sources.items() if matches(s, crit, self.taxonomy) and self.eligible(sid)}

    def test_segments_pick_exactly_the_right_sources(self):
        for i, crit in enumerate(CASES):
            with self.subTest(criteria=crit):
                name = "case %d" % i
                self.create(definition([("only", crit)], name=name))
                self.ctl("activate", name)
                got = set(self.enrolled(name))
                want = self.expected(crit)
                self.assertEqual(got, want, "criteria %s: extra %s, missing %s" % (crit, sorted(got - want),
                                                                                   sorted(want - got)))
                if crit.get("tags") != ["nobody-has-this"]:
                    self.assertTrue(want, "criteria %s match nothing: a weak case" % crit)
        # Never a source without email or with a suppressed address, whatever the criteria.
        self.assertEqual(self.sql_one(
            "SELECT count(*) FROM campaign_enrollments e JOIN referral_sources s ON s.id = e.source_id "
            "WHERE s.email IS NULL OR lower(s.email) IN (SELECT address FROM suppressions)"), 0)

    def test_first_segment_wins_and_dry_run_sizes(self):
        segs = [("texas", {"states": ["TX"]}), ("ortho", {"specialty_groupings": ["Orthopaedic Surgery"]}),
                ("tagged", {"tags": ["vip"]})]
        d = definition(segs, name="overlap")
        p = self.create(d, "--dry-run")
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaigns"), 0, "a dry run created something")
        self.assertIn("nothing was created", p.stdout)
        # The expected segment of each source: the first whose criteria hold.
        want = {}
        for sid, s in self.sources.items():
            for name, crit in segs:
                if matches(s, crit, self.taxonomy) and self.eligible(sid):
                    want[sid] = name
                    break
        rows = {}
        for line in p.stdout.splitlines():
            m = re.match(r"^(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", line)
            if m:
                rows[m.group(2)] = tuple(int(x) for x in m.group(3, 4, 5, 6))
        self.assertEqual(list(rows), ["texas", "ortho", "tagged"], p.stdout)
        for name, crit in segs:
            matched = [sid for sid, s in self.sources.items() if matches(s, crit, self.taxonomy)]
            eligible = [sid for sid in matched if self.eligible(sid)]
            enrolled = [sid for sid, n in want.items() if n == name]
            self.assertEqual(rows[name], (len(matched), len(matched) - len(eligible), len(eligible) - len(enrolled),
                                          len(enrolled)), name)
        self.assertGreater(rows["ortho"][2], 0, "no overlap: a weak case")
        self.assertIn("%d sources would be enrolled" % len(want), p.stdout)

        self.create(d)
        self.ctl("activate", "overlap")
        self.assertEqual(self.enrolled("overlap"), want)


class Lifecycle(CampaignToolCase):
    def setUp(self):
        super().setUp()
        self.sql("TRUNCATE campaigns, coordinators, referral_sources RESTART IDENTITY CASCADE")
        self.sql("INSERT INTO coordinators (name, email) VALUES ('José Núñez', 'jose@example.org')")
        for i, state in enumerate(["TX", "TX", "OK", "TX"]):
            self.sql("INSERT INTO referral_sources (first_name, last_name, credential, specialty, city, state, "
                     "coordinator_id, email, status) VALUES ('Ana', %s, 'MD', 'Orthopaedic Surgery', 'Austin', %s, 1, "
                     "%s, 'active')", ("Lopez%d" % i, state, "ana%d@example.org" % i))

    def test_create_replace_refuse(self):
        d = definition([("texas", {"states": ["TX"]})], name="Spring")
        p = self.create(d)
        self.assertRegex(p.stdout, r'^created campaign (\d+) "Spring" \(draft\): 1 segment, 1 message, 1 step rule')
        cid = self.sql_one("SELECT id FROM campaigns WHERE name = 'Spring'")
        # A draft of the same name is replaced in place: same id, the new segments, messages and steps.
        d["segments"].append({"name": "oklahoma", "criteria": {"states": ["OK"]}})
        d["messages"][0]["subject"] = "Changed"
        d["sender"]["name"] = "Riverside PT"
        p = self.create(d)
        self.assertIn('replaced campaign %d "Spring"' % cid, p.stdout)
        self.assertEqual(self.sql("SELECT id, sender_name, status FROM campaigns"), [(cid, "Riverside PT", "draft")])
        self.assertEqual(self.sql("SELECT name, position FROM campaign_segments ORDER BY position"),
                         [("texas", 1), ("oklahoma", 2)])
        self.assertEqual(self.sql("SELECT subject FROM campaign_messages"), [("Changed",)])
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaign_steps"), 1)
        # Once active, the name is taken: refused, nothing changed.
        self.ctl("activate", cid)
        d["messages"][0]["subject"] = "Again"
        p = self.create(d, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn('campaign "Spring" (id %d) exists and is active; only a draft is replaced' % cid, p.stderr)
        self.assertEqual(self.sql("SELECT subject FROM campaign_messages"), [("Changed",)])
        # Without a subcommand, or with a wrong one: the usage, status 2.
        for args in ((), ("launch", "Spring"), ("show",)):
            p = self.ctl(*args, check=False)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("usage: outreachctl campaign create FILE [--dry-run]\n", p.stderr)
        # list names it with its status and counts.
        out = self.ctl("list").stdout
        self.assertRegex(out, r"(?m)^%d\s+Spring\s+active\s+2\s+4\s+0 " % cid)

    def test_activate_once_pause_resume_finish(self):
        d = definition([("texas", {"states": ["TX"]})], name="Spring")
        self.create(d)
        p = self.ctl("pause", "Spring", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is draft; only an active campaign is paused", p.stderr)

        p = self.ctl("activate", "Spring")
        self.assertIn("activated: 3 sources newly enrolled", p.stdout)
        self.assertIn("campaigns.token_key_file is not set: the workers send no campaign message", p.stderr)
        rows = self.sql("SELECT e.step, e.state, e.next_step_id = st.id, e.next_action_at <= now(), "
                        "c.status, c.activated_at IS NOT NULL FROM campaign_enrollments e "
                        "JOIN campaigns c ON c.id = e.campaign_id JOIN campaign_steps st ON st.campaign_id = c.id "
                        "AND st.after_step = 0")
        self.assertEqual(rows, [(0, "active", True, True, "active", True)] * 3)
        first = self.sql("SELECT id, source_id, updated_at FROM campaign_enrollments ORDER BY id")
        activated = self.sql_one("SELECT activated_at FROM campaigns")

        # Twice: nothing more. (With a token key configured, no warning.)
        key = self.write_config("k" * 32)
        p = self.run_bin("outreachctl", "campaign", "activate", "Spring", env={"OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE": key},
                         check=True)
        self.assertNotIn("token_key_file", p.stderr)
        self.assertIn("is active: 0 sources newly enrolled", p.stdout)
        self.assertEqual(self.sql("SELECT id, source_id, updated_at FROM campaign_enrollments ORDER BY id"), first)

        # Paused, a new Texan arrives and one moves away; resuming enrolls only the newcomer and keeps
        # the enrollments (and the first activation time) as they were.
        p = self.ctl("pause", "Spring")
        self.assertIn("paused", p.stdout)
        self.assertEqual(self.sql_one("SELECT status FROM campaigns"), "paused")
        new = self.sql_one("INSERT INTO referral_sources (last_name, state, email) VALUES ('New', 'TX', "
                           "'new@example.org') RETURNING id")
        self.sql("UPDATE referral_sources SET state = 'CA' WHERE id = %s", (first[0][1],))
        p = self.ctl("activate", "Spring")
        self.assertIn("resumed: 1 source newly enrolled", p.stdout)
        self.assertEqual(self.sql_one("SELECT status FROM campaigns"), "active")
        self.assertEqual(self.sql_one("SELECT activated_at FROM campaigns"), activated)
        now = self.sql("SELECT id, source_id, updated_at FROM campaign_enrollments ORDER BY id")
        self.assertEqual(now[:3], first)
        self.assertEqual(now[3][1], new)

        out = self.ctl("show", "Spring").stdout
        self.assertIn("status:         active", out)
        self.assertRegex(out, r"1\. texas: 4 enrolled; criteria \{\"states\": \[\"TX\"\]\}")
        self.assertRegex(out, r"(?m)^  active\s+step 0\s+4$")
        self.assertIn("after step 0, always: at once send intro", out)
        self.assertIn("postal address: 1200 Congress Avenue, Austin, TX 78701", out)

        # Messages sent, opened, clicked, bounced and unsubscribed per variant, as the workers record them.
        eids = [r[0] for r in now]
        for i, eid in enumerate(eids):
            mid = self.sql_one(
                "INSERT INTO email_messages (enrollment_id, step, campaign_id, variant, source_id, recipient, "
                "message_id, status, opened_at, clicked_at) SELECT e.id, 1, e.campaign_id, 'intro', e.source_id, "
                "'x@example.org', %s, %s, CASE WHEN %s THEN now() END, CASE WHEN %s THEN now() END "
                "FROM campaign_enrollments e WHERE e.id = %s RETURNING id",
                ("m%d@example.org" % i, "bounced" if i == 3 else "sent", i < 2, i == 0, eid))
            if i == 1:
                self.sql("INSERT INTO email_events (message_id, kind, at) VALUES (%s, 'unsubscribe', now())", (mid,))
        out = self.ctl("show", "Spring").stdout
        self.assertRegex(out, r"(?m)^  intro\s+4\s+2\s+1\s+1\s+1$")

        p = self.ctl("finish", "Spring")
        self.assertIn("finished: 4 active enrollments ended", p.stdout)
        self.assertEqual(self.sql("SELECT DISTINCT state, next_action_at FROM campaign_enrollments"),
                         [("finished", None)])
        for cmd in ("activate", "pause", "finish"):
            p = self.ctl(cmd, "Spring", check=False)
            self.assertEqual(p.returncode, 1, cmd)
            self.assertIn("is finished", p.stderr)
        p = self.ctl("show", "No such", check=False)
        self.assertIn("no campaign with id or name No such", p.stderr)

    def test_two_activations_at_once_enroll_once(self):
        self.create(definition([("texas", {"states": ["TX"]})], name="Race"))
        procs = [subprocess.Popen([str(harness.BIN / "outreachctl"), "campaign", "activate", "Race"], env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=60) for p in procs]
        self.assertEqual([p.returncode for p in procs], [0] * 4, outs)
        counts = [int(re.search(r"(\d+) sources? newly enrolled", o).group(1)) for o, _ in outs]
        self.assertEqual(sorted(counts), [0, 0, 0, 3])
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT source_id) FROM campaign_enrollments"), [(3, 3)])

    def test_preview(self):
        d = definition([("texas", {"states": ["TX"]}), ("oklahoma", {"states": ["OK"]})], name="Spring")
        d["messages"] = [
            {"variant": "intro", "segment": "texas", "subject": "Dr. {{source.last_name}},\n  {{source.city}}",
             "html": "<p>{{source.first_name}} {{source.last_name}} ({{source.credential}}, {{source.specialty}}), "
                     "{{source.organization_name}} {{source.state}}</p><p>{{coordinator.name}} "
                     "{{coordinator.email}}</p><footer>{{campaign.sender_name}} {{campaign.postal_address}}</footer>"
                     "<a href=\"https://example.org/a\">a</a>",
             "text": "{{source.last_name}} / {{coordinator.name}} / {{campaign.sender_name}}\n"},
            {"variant": "intro", "subject": "Shared {{source.last_name}}", "html": "<p>shared</p>", "text": "shared"},
            {"variant": "later", "segment": "oklahoma", "subject": "OK later", "html": "<p>ok</p>", "text": "ok"},
            {"variant": "later", "subject": "later", "html": "<p>l</p>", "text": "l"},
        ]
        self.create(d)
        self.sql("UPDATE referral_sources SET last_name = 'O''Brien <b>&', organization_name = 'Bone & Joint' "
                 "WHERE id = 1")
        out = self.ctl("preview", "Spring", "1").stdout
        self.assertIn("Segment:  texas", out)
        self.assertIn("Variant:  intro\n", out)
        self.assertIn("From:     Riverside Physical Therapy <outreach@riverside-pt.example>", out)
        self.assertIn("To:       Ana O'Brien <b>& <ana0@example.org>", out)
        self.assertIn("Subject:  Dr. O'Brien <b>&, Austin\n", out)  # one line, not escaped
        self.assertIn("--- text/plain ---\nO'Brien <b>& / José Núñez / Riverside Physical Therapy\n", out)
        html = out.split("--- text/html ---\n", 1)[1]
        self.assertIn("<p>Ana O&#39;Brien &lt;b&gt;&amp; (MD, Orthopaedic Surgery), Bone &amp; Joint TX</p>", html)
        self.assertIn("<p>José Núñez jose@example.org</p>", html)
        self.assertIn("<footer>Riverside Physical Therapy 1200 Congress Avenue\nAustin, TX 78701</footer>", html)
        self.assertIn('<a href="https://example.org/a">a</a>', html)  # links as written

        # An Oklahoman falls back to the shared intro; --variant takes its own segment's first.
        out = self.ctl("preview", "Spring", "3").stdout
        self.assertIn("Segment:  oklahoma", out)
        self.assertIn("Variant:  intro (shared by every segment)", out)
        self.assertIn("Subject:  Shared Lopez2", out)
        out = self.ctl("preview", "Spring", "3", "--variant", "later").stdout
        self.assertIn("Subject:  OK later", out)
        out = self.ctl("preview", "Spring", "1", "--variant", "later").stdout
        self.assertIn("Subject:  later\n", out)

        # A suppressed address is said so; a source in no segment, or no variant, is an error.
        self.sql("INSERT INTO suppressions (address, reason) VALUES ('ana1@example.org', 'bounce')")
        out = self.ctl("preview", "Spring", "2").stdout
        self.assertIn("Note:     ana1@example.org is suppressed", out)
        self.sql("UPDATE referral_sources SET state = 'CA' WHERE id = 4")
        p = self.ctl("preview", "Spring", "4", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn('referral source 4 is in no segment of campaign', p.stderr)
        p = self.ctl("preview", "Spring", "1", "--variant", "nope", check=False)
        self.assertIn("has no variant nope for segment texas (nor a shared one)", p.stderr)
        p = self.ctl("preview", "Spring", "999", check=False)
        self.assertIn("no referral source 999", p.stderr)

    def test_control_characters_in_the_data_print_visibly(self):
        """Names and texts other applications write may hold escape sequences (retitle the terminal,
        clear it, CSI as U+009B): preview, list and show print them as \\x1b, \\x7f, \\u009b, never as
        the bytes themselves; line breaks and tabs in a body stay as they are."""
        d = definition([("texas", {"states": ["TX"]})], name="Spring")
        d["messages"][0]["text"] = "Dear {{source.name}},\n\tsee you\n"
        d["messages"][0]["html"] = "<p>{{source.last_name}}</p>"
        self.create(d)
        esc = "Lopez\x1b]0;pwned\x07\x1b[2J\x7f\u009b31m"
        shown = "Lopez\\x1b]0;pwned\\x07\\x1b[2J\\x7f\\u009b31m"
        self.sql("UPDATE referral_sources SET last_name = %s WHERE id = 1", (esc,))
        self.sql("UPDATE campaigns SET name = %s, sender_name = %s, postal_address = %s", (
            "Spring\x1b[8m", "Riverside\x1b[1m PT", "1200 Congress Avenue\x1b[A\nAustin, TX 78701"))
        self.sql("UPDATE campaign_segments SET name = 'texas\x1b[5m'")
        self.sql("UPDATE campaign_messages SET subject = 'Hello\u0085{{source.last_name}}'")

        out = self.ctl("preview", "1", "1").stdout
        for bad in ("\x1b", "\x07", "\x7f", "\u009b", "\u0085"):
            self.assertNotIn(bad, out)
        self.assertIn('Campaign: 1 "Spring\\x1b[8m" (draft)', out)
        self.assertIn("Segment:  texas\\x1b[5m", out)
        self.assertIn("From:     Riverside\\x1b[1m PT <outreach@riverside-pt.example>", out)
        self.assertIn("To:       Ana %s <ana0@example.org>" % shown, out)
        self.assertIn("--- text/plain ---\nDear Ana %s,\n\tsee you\n" % shown, out)
        self.assertIn("--- text/html ---\n<p>%s</p>\n" % shown, out)

        for args in (("list",), ("show", "1")):
            out = self.ctl(*args).stdout
            for bad in ("\x1b", "\u0085"):
                self.assertNotIn(bad, out, args)
            self.assertIn("Spring\\x1b[8m", out)
        self.assertIn("Riverside\\x1b[1m PT", out)
        self.assertIn("1200 Congress Avenue\\x1b[A, Austin, TX 78701", out)
        self.assertIn("texas\\x1b[5m", out)
        self.assertIn("subject: Hello\\u0085{{source.last_name}}", out)

    def test_text_tables_stay_in_line_with_accents_and_escapes(self):
        """A column is padded to the terminal columns its text takes, after escaping: a name with
        accents (two bytes a letter), an escape (one byte shown as four characters), wide CJK
        characters (two columns each) or a combining accent (none) used to push the columns after it
        out of line, as printf pads bytes; a line break or tab in a cell shows as a space."""
        for name in ("Plain", "Spring", "Wide", "Combined"):
            d = definition([("texas", {"states": ["TX"]})], name=name)
            d["messages"][0]["segment"] = "texas"
            self.create(d)
        self.sql("UPDATE campaigns SET name = %s WHERE name = 'Spring'", ("Ça Müller\x1b[1m",))
        self.sql("UPDATE campaign_segments SET name = %s WHERE campaign_id = 2", ("tëxäs",))
        self.sql("UPDATE campaigns SET name = %s WHERE name = 'Plain'", ("Plain\nnext\tline",))
        # Two terminal columns a character, and a u followed by a combining diaeresis (none).
        self.sql("UPDATE campaigns SET name = %s WHERE name = 'Wide'", ("山田クリニック",))
        self.sql("UPDATE campaigns SET name = %s WHERE name = 'Combined'", ("Mu\u0308ller",))
        out = self.ctl("list").stdout.splitlines()
        self.assertEqual(len(out), 5, out)  # a line break in a name does not break its row
        self.assertIn("Plain next line", out[1])
        self.assertIn("Ça Müller\\x1b[1m", out[2])

        def columns(text):  # as a terminal shows text
            return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
                       for c in text)
        # STATUS starts in the same column on every line, whatever came before it.
        self.assertEqual({columns(line[:line.index("draft") if "draft" in line else line.index("STATUS")])
                          for line in out}, {39}, out)
        out = self.ctl("show", "2").stdout.splitlines()
        subj = [line for line in out if "subject:" in line]
        self.assertEqual(len(subj), 1, out)
        self.assertTrue(subj[0].startswith("  intro            tëxäs                    subject: "), subj)

    def test_example_definition(self):
        example = harness.ROOT / "config" / "campaigns" / "example.json"
        p = self.ctl("create", example, "--dry-run")
        self.assertIn("orthopaedic-surgeons", p.stdout)
        self.assertIn("sports-medicine", p.stdout)
        p = self.ctl("create", example)
        self.assertIn("2 segments, 4 messages, 6 step rules", p.stdout)
        self.assertEqual(self.sql("SELECT after_step, position, condition, wait_days, business_days, action, variant "
                                  "FROM campaign_steps ORDER BY after_step, position"),
                         [(0, 0, "always", 0, False, "send", "intro"), (1, 0, "clicked", 0, False, "call", None),
                          (1, 1, "not_opened", 3, True, "send", "reminder"),
                          (1, 2, "not_clicked", 3, True, "send", "outcomes"), (2, 0, "clicked", 0, False, "call", None),
                          (2, 1, "no_action", 7, False, "stop", None)])
        # The html_file of the orthopaedic intro was read relative to the definition.
        html = self.sql_one("SELECT m.html_template FROM campaign_messages m JOIN campaign_segments g ON "
                            "g.id = m.segment_id WHERE g.name = 'orthopaedic-surgeons'")
        self.assertIn("post-operative knee, hip, shoulder and spine patients", html)


class IniDefinitions(CampaignToolCase):
    def rows(self, name):
        cid = self.sql_one("SELECT id FROM campaigns WHERE name = %s", (name,))
        return (
            self.sql("SELECT sender_name, sender_email, reply_to, postal_address, time_zone FROM campaigns "
                     "WHERE id = %s", (cid,)),
            self.sql("SELECT name, position, criteria FROM campaign_segments WHERE campaign_id = %s "
                     "ORDER BY position", (cid,)),
            self.sql("SELECT m.variant, g.name, m.subject, m.html_template IS NOT NULL FROM campaign_messages m "
                     "LEFT JOIN campaign_segments g ON g.id = m.segment_id WHERE m.campaign_id = %s "
                     "ORDER BY 1, 2", (cid,)),
            self.sql("SELECT after_step, position, condition, wait_days, business_days, action, variant "
                     "FROM campaign_steps WHERE campaign_id = %s ORDER BY after_step, position", (cid,)),
        )

    def test_example_ini_equals_example_json(self):
        root = harness.ROOT / "config" / "campaigns"
        self.ctl("create", root / "example.json")
        p = self.ctl("create", root / "example.ini")
        self.assertIn("2 segments, 4 messages, 6 step rules", p.stdout)
        self.assertEqual(self.rows("Riverside PT: orthopaedic and sports medicine referrers"),
                         self.rows("Riverside PT: orthopaedic and sports medicine referrers (INI)"))
        # The same file for the orthopaedic intro; continuation lines are new lines.
        html = self.sql("SELECT m.html_template FROM campaign_messages m JOIN campaign_segments g ON "
                        "g.id = m.segment_id WHERE m.variant = 'intro' ORDER BY m.campaign_id, g.position")
        self.assertEqual(html[0], html[2])
        self.assertTrue(html[3][0].startswith("<p>Dear Dr. {{source.last_name}},</p>\n<p>Our sports"), html[3][0])

    # Lists and the errors of an INI definition are tried on this file.
    LISTS = """[campaign]
name = Lists
sender_name = Riverside PT
sender_email = pt@example.org
postal_address = 1 Main St

[segment a b]
specialty_groupings = Orthopaedic Surgery, "Respiratory, Developmental, Rehabilitative and Restorative Service Providers"
states = TX, OK
states = CA
coordinator_ids = 1, 2

[message intro]
subject = Hi
html = <p>Hi</p>
text = Hi

[step]
after_step = 0
condition = always
action = send
variant = intro
"""

    def test_ini_lists_and_errors(self):
        ini = self.LISTS
        self.ctl("create", self.write_def(ini, "a.ini"))
        self.assertEqual(self.sql_one("SELECT criteria FROM campaign_segments WHERE name = 'a b'"), {
            "specialty_groupings": ["Orthopaedic Surgery",
                                    "Respiratory, Developmental, Rehabilitative and Restorative Service Providers"],
            "states": ["TX", "OK", "CA"], "coordinator_ids": [1, 2]})
        for old, new, want in [
            ("states = CA", "states = Texas", ":9: $.segments[0].criteria.states[2]: \"Texas\" must be a two-letter"),
            ("after_step = 0", "after_step = zero", ":19: $.steps[0].after_step: must be an integer from 0 to 1000"),
            ("[step]", "[steps]", ":18: [steps]: unknown section"),
            ("text = Hi", "text = Hi\nsubject = Again", ":17: [message intro] subject: set twice (first at line 14)"),
            ("1, 2", "1, \"2", ":11: a value opens a \" without closing it"),
            ("sender_email = pt@example.org\n", "", ": $.sender.email: is required"),
            ("html = <p>Hi</p>", "html = {{#x}}", ":15: $.messages[0].html:1: unclosed section"),
        ]:
            with self.subTest(want=want):
                self.assertIn(old, ini)
                path = self.write_def(ini.replace(old, new), "b.ini")
                p = self.ctl("create", path, check=False)
                self.assertEqual(p.returncode, 1)
                self.assertIn("campaign create: " + path + want, p.stderr)
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaigns WHERE name = 'Lists'"), 1)

    def test_ini_line_too_long(self):
        """A line libinih cuts in pieces (over 65535 bytes before its newline) is named with its own
        number, not read as the pieces: a piece went as a line of its own, a syntax error further
        on or a key of its own."""
        ini = self.LISTS.replace("name = Lists", "name = Long lines")
        html = "html = <p>Hi</p>"

        def html_line(n, tail="</p>"):
            return "html = <p>" + "a" * (n - 10 - len(tail)) + tail

        for old, new, want in [
            (html, html_line(70000), ":15: the line is longer than 65535 bytes"),
            (html, html_line(65536), ":15: the line is longer than 65535 bytes"),
            (html, html_line(65600, " title = y</p>"), ":15: the line is longer than 65535 bytes"),
            (html, "; " + "c" * 70000 + "\n" + html, ":15: the line is longer than 65535 bytes"),
            ("[message intro]", "[message " + "i" * 70000 + "]", ":13: the line is longer than 65535 bytes"),
            ("variant = intro\n", "variant = intro\n; " + "c" * 70000, ":23: the line is longer than 65535 bytes"),
        ]:
            with self.subTest(old=old, new=new[:40], want=want):
                self.assertIn(old, ini)
                path = self.write_def(ini.replace(old, new), "long.ini")
                p = self.ctl("create", path, check=False)
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertIn("campaign create: " + path + want + "\n", p.stderr)
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaigns WHERE name = 'Long lines'"), 0)
        # A line of 65535 bytes is read whole, its continuation line too, and the lines after it
        # keep their numbers.
        path = self.write_def(ini.replace(html, html_line(65535)).replace("text = Hi", "text is Hi"), "long.ini")
        p = self.ctl("create", path, check=False)
        self.assertIn("campaign create: " + path + ":16: syntax error", p.stderr)
        self.ctl("create", self.write_def(ini.replace(html, html_line(65535) + "\n  <p>Bye</p>"), "long.ini"))
        self.assertEqual(self.sql_one("SELECT m.html_template FROM campaign_messages m JOIN campaigns c ON "
                                      "c.id = m.campaign_id WHERE c.name = 'Long lines'"),
                         html_line(65535)[7:] + "\n<p>Bye</p>")


class Validation(CampaignToolCase):
    def setUp(self):
        super().setUp()
        self.sql("TRUNCATE campaigns RESTART IDENTITY CASCADE")

    def base(self):
        d = definition([("texas", {"states": ["TX"]}), ("ortho", {"specialty_codes": ["207X00000X"]})])
        d["messages"].append({"variant": "again", "segment": "texas", "subject": "s", "html": "h", "text": "t"})
        d["messages"].append({"variant": "again", "segment": "ortho", "subject": "s", "html": "h", "text": "t"})
        d["steps"].append({"after_step": 1, "condition": "not_opened", "wait_days": 3, "action": "send",
                           "variant": "again"})
        return d

    def expect_error(self, d, want, files=None):
        for name, text in (files or {}).items():
            self.write_def(text, name)
        path = self.write_def(d)
        for args in (("create", path, "--dry-run"), ("create", path)):
            p = self.ctl(*args, check=False)
            self.assertEqual(p.returncode, 1, "%s accepted; wanted %s" % (args, want))
            self.assertIn("campaign create: %s%s" % (path, want), p.stderr)
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaigns"), 0)

    def test_base_is_valid(self):
        self.create(self.base(), "--dry-run")
        self.create(self.base())
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaign_messages"), 3)

    def test_every_error_names_file_path_and_reason(self):
        def mutate(fn):
            d = self.base()
            fn(d)
            return d

        def set_(path, value):
            def fn(d):
                *parents, last = path
                obj = d
                for p in parents:
                    obj = obj[p]
                if value is KeyError:
                    del obj[last]
                else:
                    obj[last] = value
            return fn

        cases = [
            (set_(["name"], KeyError), ": $.name: is required"),
            (set_(["name"], ""), ": $.name: must not be empty"),
            (set_(["name"], 5), ": $.name: must be a string"),
            (set_(["colour"], "red"), ": $.colour: unknown key (known here: name, sender,"),
            (set_(["sender"], "x@example.org"), ": $.sender: must be an object with name and email"),
            (set_(["sender", "email"], "not an address"), ": $.sender.email: not an address is not an email address"),
            (set_(["sender", "name"], "Evil\r\nBcc: x@example.org"), ": $.sender.name: contains a line break"),
            # What every message would refuse is refused here (before, the campaign was stored and
            # each of its messages went to dead): a control character, an address msg cannot carry.
            (set_(["sender", "name"], "Lakeside\x1bPT"), ": $.sender.name: contains a control character"),
            (set_(["sender", "email"], "hello@lakeside..example.org"),
             ": $.sender.email: hello@lakeside..example.org is not an email address"),
            (set_(["reply_to"], "team;x@example.org"), ": $.reply_to: team;x@example.org is not an email address"),
            (set_(["sender", "title"], "x"), ": $.sender.title: unknown key"),
            (set_(["reply_to"], "a@b@c"), ": $.reply_to: a@b@c is not an email address"),
            (set_(["postal_address"], KeyError), ": $.postal_address: is required"),
            (set_(["time_zone"], "Mars/Olympus"), ": $.time_zone: Mars/Olympus is not a time zone PostgreSQL knows"),
            (set_(["time_zone"], "CET; DROP"), ": $.time_zone: CET; DROP is not an IANA time zone name"),
            (set_(["segments"], []), ": $.segments: must not be empty"),
            (set_(["segments"], {}), ": $.segments: must be a list"),
            (set_(["segments", 1, "name"], "texas"), ": $.segments[1].name: texas is the name of $.segments[0] too"),
            (set_(["segments", 1, "criteria"], {"states": ["Texas"]}),
             ': $.segments[1].criteria.states[0]: "Texas" must be a two-letter state code'),
            (set_(["segments", 0, "criteria"], {"zip": ["787"]}), ": $.segments[0].criteria.zip: unknown criterion"),
            (set_(["segments", 0, "criteria"], []), ": $.segments[0].criteria: criteria must be a JSON object"),
            (set_(["segments", 0, "criteria"], {"tags": ["x"] * 1001}),
             ": $.segments[0].criteria.tags: has 1001 values, at most 1000"),
            (set_(["messages", 0, "variant"], "in tro"), ": $.messages[0].variant: in tro must be 1 to 64 of"),
            (set_(["messages", 1, "segment"], "ohio"), ": $.messages[1].segment: no segment is named ohio"),
            (set_(["messages", 2, "segment"], "texas"),
             ": $.messages[2].variant: again is defined for segment texas already by $.messages[1]"),
            (set_(["messages", 0, "subject"], "Hi {{#x}}"), ": $.messages[0].subject:1: "),
            (set_(["messages", 0, "html"], "<p>\n{{/x}}</p>"), ": $.messages[0].html:2: "),
            (set_(["messages", 0, "html"], "<p>Dr.\n{{{source.last_name}}}</p>"),
             ": $.messages[0].html:2: {{{...}}} or {{&...}} would put a value into the HTML unescaped; write {{...}}"),
            (set_(["messages", 1, "html"], "<p>{{& coordinator.name}}</p>"), ": $.messages[1].html:1: {{{...}}}"),
            (set_(["messages", 0, "text"], KeyError), ": $.messages[0]: text or text_file is required"),
            (set_(["messages", 0, "html_file"], "intro.html"), ": $.messages[0]: give either html or html_file, not both"),
            (set_(["steps"], KeyError), ": $.steps: is required"),
            (set_(["steps", 0, "condition"], "opened"), ": $.steps[0].condition: after_step 0 (enrollment) takes only"),
            (set_(["steps", 0, "action"], "call"), ": $.steps[0].variant: only a send action takes a variant"),
            (set_(["steps", 1, "condition"], "bounced"), ": $.steps[1].condition: bounced is not one of always,"),
            (set_(["steps", 1, "action"], "sms"), ": $.steps[1].action: sms is not one of send, call, stop"),
            (set_(["steps", 1, "variant"], KeyError), ": $.steps[1].variant: is required when the action is send"),
            (set_(["steps", 1, "condition"], "replied"),
             ": $.steps[1].action: a reply stops the sequence, so a 'replied' rule takes call or stop"),
            (set_(["steps", 1, "variant"], "nope"), ": $.steps[1].variant: no message nope for segment texas"),
            (set_(["steps", 1, "wait_days"], 366), ": $.steps[1].wait_days: must be an integer from 0 to 365"),
            (set_(["steps", 1, "wait_days"], "3"), ": $.steps[1].wait_days: must be an integer from 0 to 365"),
            (set_(["steps", 1, "business_days"], "yes"), ": $.steps[1].business_days: must be true or false"),
            (set_(["steps", 1, "after_step"], 5), ": $.steps[1].after_step: no rule leads to step 5"),
            (set_(["steps", 1, "after_step"], -1), ": $.steps[1].after_step: must be an integer from 0 to 1000"),
            (lambda d: d["steps"].append(dict(d["steps"][0])),
             ": $.steps[2]: after_step 0 must have exactly one rule, $.steps[0] is one already"),
            (lambda d: d["steps"].__setitem__(0, dict(d["steps"][1], after_step=0)),
             ": $.steps[0].condition: after_step 0 (enrollment) takes only an 'always' rule"),
            (lambda d: d["steps"].__delitem__(0),
             ": $.steps: needs one 'always' send rule with after_step 0 (the first message)"),
            (lambda d: d["steps"][1].update(condition="always", wait_days=0) or d["steps"].append(
                {"after_step": 1, "condition": "clicked", "action": "call"}),
             ": $.steps[2]: never fires: the 'always' rule $.steps[1] comes first after step 1"),
            (lambda d: d["messages"].__delitem__(2),
             ": $.steps[1].variant: no message again for segment ortho (and no shared one)"),
        ]
        for fn, want in cases:
            with self.subTest(want=want):
                self.expect_error(mutate(fn), want)

    def test_files_and_json_errors(self):
        path = self.write_def('{"name": "x",\n  "sender": }')
        p = self.ctl("create", path, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, re.escape(path) + r":2:\d+: ")
        self.expect_error('{"name": "a", "name": "b"}', ":1:")  # a duplicate key is refused
        missing = os.path.join(self.dir, "nope.json")
        p = self.ctl("create", missing, check=False)
        self.assertIn(missing, p.stderr)

        d = self.base()
        del d["messages"][0]["html"]
        d["messages"][0]["html_file"] = "templates/intro.html"
        self.expect_error(d, ": $.messages[0].html_file: cannot read %s/templates/intro.html: No such file"
                          % self.dir)
        os.mkdir(os.path.join(self.dir, "templates"))
        self.expect_error(d, ": $.messages[0].html_file: %s/templates/intro.html:3: " % self.dir,
                          files={"templates/intro.html": "<p>\n\n{{#open}}</p>\n"})
        self.write_def("<p>{{source.last_name}}</p>\n", "templates/intro.html")
        p = self.create(d)
        self.assertIn("created campaign", p.stdout)
        self.assertEqual(self.sql_one("SELECT html_template FROM campaign_messages WHERE segment_id IS NULL"),
                         "<p>{{source.last_name}}</p>\n")


if __name__ == "__main__":
    harness.main()
