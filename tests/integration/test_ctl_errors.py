"""outreachctl's error paths: each refusal or failure says what went wrong, exits with its status and
changes nothing; and it releases what it held first, which the sanitizer build checks (BIN=build/san/bin:
the harness fails a test whose outreachctl printed a LeakSanitizer, AddressSanitizer or UBSan report)."""
import json
import os
import shutil
import tempfile

import harness


def definition(name, criteria=None):
    """A valid campaign definition: one segment, one shared message, one step."""
    return {
        "name": name,
        "sender": {"name": "Riverside Physical Therapy", "email": "outreach@riverside-pt.example"},
        "postal_address": "1200 Congress Avenue\nAustin, TX 78701",
        "segments": [{"name": "texas", "criteria": criteria or {"states": ["TX"]}}],
        "messages": [{"variant": "intro", "subject": "Hello {{source.last_name}}", "html": "<p>Hi</p>", "text": "Hi"}],
        "steps": [{"after_step": 0, "condition": "always", "action": "send", "variant": "intro"}],
    }


class CtlCase(harness.Case):
    migrated = True  # whether the class's database gets the schema

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.migrated:
            cls.migrate()

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="outreach-ctl-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def ctl(self, *args, env=None):
        return self.run_bin("outreachctl", *args, env=env)

    def fails(self, args, message, status=1, env=None):
        """Runs outreachctl ARGS, which must exit with status and say message on stderr; returns it."""
        p = self.ctl(*args, env=env)
        self.assertEqual(p.returncode, status, "%s\nstdout:\n%s\nstderr:\n%s" % (args, p.stdout, p.stderr))
        self.assertIn(message, p.stderr, args)
        return p

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text if isinstance(text, str) else json.dumps(text))
        return path


class Campaigns(CtlCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sql("INSERT INTO referral_sources (id, last_name, state, email) VALUES "
                "(1, 'Tex', 'TX', 'tex@example.org'), (2, 'Cal', 'CA', 'cal@example.org')")

    def setUp(self):
        super().setUp()
        self.sql("DELETE FROM campaigns")

    def create(self, name, criteria=None):
        out = self.ctl("campaign", "create", self.write(name + ".json", definition(name, criteria)))
        self.assertEqual(out.returncode, 0, out.stderr)
        return self.sql_one("SELECT id FROM campaigns WHERE name = %s", (name,))

    def state(self):
        return (self.sql("SELECT id, name, status FROM campaigns ORDER BY id"),
                self.sql("SELECT campaign_id, source_id, state FROM campaign_enrollments ORDER BY id"),
                self.sql("SELECT campaign_id, name, criteria::text FROM campaign_segments ORDER BY id"),
                self.sql("SELECT campaign_id, variant, subject FROM campaign_messages ORDER BY id"))

    def test_missing_campaign(self):
        for cmd in ("show", "activate", "pause", "finish"):
            self.fails(("campaign", cmd, "Nope"), "campaign %s: no campaign with id or name Nope" % cmd)
        self.fails(("campaign", "preview", "Nope", "1"), "campaign preview: no campaign with id or name Nope")
        self.assertEqual(self.sql_one("SELECT count(*) FROM campaigns"), 0)

    def test_create_refusals(self):
        cid = self.create("Spring")
        self.assertEqual(self.ctl("campaign", "activate", "Spring").returncode, 0)
        before = self.state()
        changed = definition("Spring")
        changed["messages"][0]["subject"] = "Changed"
        self.fails(("campaign", "create", self.write("again.json", changed)),
                   'campaign create: campaign "Spring" (id %d) exists and is active; only a draft is replaced' % cid)
        zone = definition("Autumn")
        zone["time_zone"] = "Mars/Olympus_Mons"
        path = self.write("zone.json", zone)
        self.fails(("campaign", "create", path),
                   "campaign create: %s: $.time_zone: Mars/Olympus_Mons is not a time zone PostgreSQL knows" % path)
        self.fails(("campaign", "create", path, "--dry-run"), "is not a time zone PostgreSQL knows")
        self.assertEqual(self.state(), before)

    def test_wrong_state(self):
        self.create("Spring")
        self.fails(("campaign", "pause", "Spring"),
                   'campaign pause: campaign %d "Spring" is draft; only an active campaign is paused'
                   % self.sql_one("SELECT id FROM campaigns"))
        self.assertEqual(self.ctl("campaign", "finish", "Spring").returncode, 0)
        before = self.state()
        for cmd in ("pause", "finish"):
            self.fails(("campaign", cmd, "Spring"), 'campaign %s: campaign' % cmd)
            self.fails(("campaign", cmd, "Spring"), '"Spring" is finished already')
        self.fails(("campaign", "activate", "Spring"), '"Spring" is finished; it cannot be activated again')
        self.assertEqual(self.state(), before)

    def test_activate_refused_enrolls_nobody(self):
        # No first rule: refused before anything is enrolled.
        cid = self.create("Spring")
        self.sql("UPDATE campaign_steps SET condition = 'opened' WHERE campaign_id = %s", (cid,))
        self.fails(("campaign", "activate", "Spring"),
                   "campaign activate: campaign %d has no 'always' rule after step 0" % cid)
        # A stored segment that no longer passes the checks: refused with the segment named, rolled back.
        cid = self.create("Summer")
        self.sql("UPDATE campaign_segments SET criteria = '{\"planets\": [\"Mars\"]}' WHERE campaign_id = %s", (cid,))
        seg = self.sql_one("SELECT id FROM campaign_segments WHERE campaign_id = %s", (cid,))
        before = self.state()
        p = self.fails(("campaign", "activate", "Summer"), "campaign activate: segment %d: " % seg)
        self.assertIn("planets", p.stderr)
        self.assertEqual(self.state(), before)
        self.assertEqual(self.sql_one("SELECT status FROM campaigns WHERE id = %s", (cid,)), "draft")

    def test_preview_refusals(self):
        cid = self.create("Spring")
        self.fails(("campaign", "preview", "Spring", "999"), "campaign preview: no referral source 999")
        self.fails(("campaign", "preview", "Spring", "2"),
                   'campaign preview: referral source 2 is in no segment of campaign %d "Spring"' % cid)
        self.fails(("campaign", "preview", "Spring", "1", "--variant", "later"),
                   "campaign preview: campaign %d has no variant later for segment texas (nor a shared one)" % cid)
        self.fails(("campaign", "preview", "Spring", "x"),
                   "campaign preview: SOURCE_ID must be a referral source's id, not x")
        # A broken template in a stored message, and no first message to show.
        self.sql("UPDATE campaign_messages SET text_template = 'Hi {{#source.city}} there' WHERE campaign_id = %s",
                 (cid,))
        p = self.fails(("campaign", "preview", "Spring", "1"), "campaign preview: text")
        self.assertNotIn("Subject:", p.stdout)
        self.sql("UPDATE campaign_steps SET action = 'call', variant = NULL WHERE campaign_id = %s", (cid,))
        self.fails(("campaign", "preview", "Spring", "1"),
                   "campaign preview: campaign %d has no first message; give --variant" % cid)
        # A stored segment that no longer passes the checks.
        self.sql("UPDATE campaign_segments SET criteria = '{\"planets\": [\"Mars\"]}' WHERE campaign_id = %s", (cid,))
        seg = self.sql_one("SELECT id FROM campaign_segments WHERE campaign_id = %s", (cid,))
        self.fails(("campaign", "preview", "Spring", "1", "--variant", "intro"), "campaign preview: segment %d: " % seg)


class Npi(CtlCase):
    def test_search_refusals(self):
        self.assertEqual(self.ctl("npi", "search", "add", "MN", "--state", "MN", "--city", "Duluth").returncode, 0)
        before = self.sql("SELECT id, name, criteria::text, coordinator_id FROM npi_searches ORDER BY id")
        self.fails(("npi", "search", "remove", "Nope"), "npi search remove: no saved search Nope")
        self.fails(("npi", "search", "add", "MN", "--state", "MN", "--city", "Duluth"),
                   "npi search add: a saved search of that name exists already")
        self.fails(("npi", "search", "add", "WI", "--state", "WI", "--city", "Madison", "--coordinator", "nobody@example.org"),
                   "npi search add: no coordinator with id or email nobody@example.org")
        self.fails(("npi", "search", "add", "WI", "--state", "WI", "--city", "Madison", "--criteria", "[1]"),
                   "npi search add: --criteria must be a JSON object")
        self.fails(("npi", "search", "add", "WI", "--criteria", "{"), "npi search add: --criteria must be a JSON object: ")
        self.fails(("npi", "search", "add", "WI", "--state", "WI", "--city", "Madison", "--shoe-size"), "npi search add: --shoe-size needs a value")
        self.fails(("npi", "search", "add", "WI", "--state", "WI", "--city", "Madison", "--shoe-size", "9"),
                   "npi search add: unknown option --shoe-size")
        self.fails(("npi", "search", "add", "WI", "--criteria", '{"planet": "Mars"}'), "npi search add: unknown criterion planet (known: ")
        self.fails(("npi", "sync", "Nope"), "npi sync: no saved search Nope")
        self.assertEqual(self.sql("SELECT id, name, criteria::text, coordinator_id FROM npi_searches ORDER BY id"),
                         before)
        self.assertEqual(self.redis().llen("queue:npi"), 0)

    def test_sync_without_redis(self):
        self.assertEqual(self.ctl("npi", "search", "add", "Duluth", "--state", "MN", "--city", "Duluth").returncode, 0)
        self.fails(("npi", "sync", "Duluth"), "cannot connect to Redis: ",
                   env={"OUTREACH_REDIS_URL": "unix://%s/no-redis.sock" % self.dir})

    def test_import_taxonomy_refusals(self):
        path = self.write("not-nucc.csv", "Code,Name\n207X00000X,Orthopaedic Surgery\n")
        self.fails(("import-taxonomy", path),
                   'import-taxonomy: %s: no column "Grouping"; is this the NUCC taxonomy CSV?' % path)
        path = self.write("empty.csv", "")
        self.fails(("import-taxonomy", path), "import-taxonomy: %s:1: the input is empty" % path)
        # Broken after two good rows, in the middle of the COPY: nothing of the file is kept.
        with open(harness.FIXTURES / "npi" / "nucc_taxonomy.csv", encoding="utf-8") as f:
            head = "".join(f.readlines()[:3])
        path = self.write("broken.csv", head + '207X00000X,"never closed\n')
        self.fails(("import-taxonomy", path),
                   "import-taxonomy: %s:4: the quoted field opened on this line is not closed" % path)
        self.assertEqual(self.sql_one("SELECT count(*) FROM taxonomies"), 0)

    def test_import_nppes_refusal(self):
        path = self.write("not-nppes.csv", "Name,City\nSomeone,Duluth\n")
        self.fails(("import-nppes", path), 'import-nppes: %s: no "NPI" column; is this an NPPES file?' % path)
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers"), 0)


class Demo(CtlCase):
    def test_seed_demo_without_its_data(self):
        self.fails(("seed-demo", "--data", os.path.join(self.dir, "none")),
                   "seed-demo: %s/nucc_taxonomy.csv: No such file or directory" % os.path.join(self.dir, "none"))
        self.assertEqual(self.sql_one("SELECT count(*) FROM coordinators"), 0)


class Reports(CtlCase):
    def test_bad_arguments(self):
        self.fails(("report", "--month", "2026-13"), "report: --month 2026-13: expected a month like 2026-11")
        self.fails(("report", "--format", "xml"), "report: --format xml: expected text, csv or json")
        self.fails(("metrics", "--period", "year:2026-01-01"),
                   "metrics: --period year:2026-01-01: the kind must be day, week, month or quarter")
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_runs"), 0)

    def test_failing_section(self):
        # A column only the last section reads is gone: the report stops there with the section named.
        self.sql("ALTER TABLE metric_cases RENAME COLUMN avg_resolution_hours TO avg_hours_away")
        self.addCleanup(self.sql, "ALTER TABLE metric_cases RENAME COLUMN avg_hours_away TO avg_resolution_hours")
        p = self.fails(("report", "--month", "2026-11", "--format", "json"), "report: cases: ")
        self.assertIn("avg_resolution_hours", p.stderr)
        self.assertEqual(p.stdout, "")
        # The campaign figures cannot be computed after the others: nothing of the run is kept.
        self.sql("ALTER FUNCTION campaign_metrics_refresh() RENAME TO campaign_metrics_refresh_away")
        self.addCleanup(self.sql, "ALTER FUNCTION campaign_metrics_refresh_away() RENAME TO campaign_metrics_refresh")
        self.fails(("metrics",), "metrics: ERROR:  function campaign_metrics_refresh() does not exist")
        self.assertEqual(self.sql_one("SELECT count(*) FROM metric_runs"), 0)


class Jobs(CtlCase):
    def test_dead_job_refusals(self):
        self.fails(("retry-dead", "ab" * 12), "retry-dead: no dead job with jid " + "ab" * 12)
        self.fails(("discard-dead", "ab" * 12), "discard-dead: no dead job with jid " + "ab" * 12)
        self.fails(("retry-dead",), "usage: outreachctl retry-dead JID|--all")

    def test_enqueue_refusals(self):
        self.fails(("enqueue", "PingJob", "--args", "{}"), "enqueue: --args must be a JSON array")
        self.fails(("enqueue", "PingJob", "--args", "[1"), "enqueue: --args is not JSON: ")
        self.fails(("enqueue", "MetricsJob", "--args", '["year"]'),
                   'enqueue: MetricsJob: period_kind must be "day", "week", "month", "quarter" or "full"')
        self.fails(("enqueue", "NoSuchJob"), "enqueue: unknown job class NoSuchJob")
        self.fails(("enqueue", "PingJob", "--queue", "no queue"), "enqueue: 'no queue' is not a queue name")
        self.assertEqual(self.redis().keys("queue:*"), [])

    def test_without_redis(self):
        env = {"OUTREACH_REDIS_URL": "unix://%s/no-redis.sock" % self.dir}
        for args in (("enqueue", "PingJob"), ("stats",), ("stats", "--json"), ("retry-dead", "--all"),
                     ("discard-dead", "--all"), ("ping", "--timeout", "1"), ("metrics", "--enqueue")):
            self.fails(args, "cannot connect to Redis: ", env=env)


class Unmigrated(CtlCase):
    """A database the schema was never applied to: every command that needs it says to migrate."""

    migrated = False

    def test_says_to_migrate(self):
        for args in (("campaign", "list"), ("campaign", "show", "1"), ("npi", "search", "list"),
                     ("npi", "search", "add", "MN", "--state", "MN", "--city", "Duluth"), ("npi", "sync"), ("report",), ("metrics",),
                     ("seed-demo",), ("campaign", "create", self.write("c.json", definition("Spring")))):
            self.fails(args, "run `outreachctl migrate`")
        p = self.ctl("migrate", "--status")
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stdout, r"^schema version 0, this build needs \d+: run `outreachctl migrate`")


if __name__ == "__main__":
    harness.main()
