"""outreachctl's error paths: each refusal or failure says what went wrong, exits with its status and
changes nothing; and it releases what it held first, which the sanitizer build checks (BIN=build/san/bin:
the harness fails a test whose outreachctl printed a LeakSanitizer, AddressSanitizer or UBSan report)."""
import json
import os
import shutil
import signal
import subprocess
import tempfile

import redis as redislib

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

    def test_create_fails_partway(self):
        # The database refuses the second segment, the second message or the second step rule: the
        # message names the part, and nothing of the campaign is kept (a replaced draft stays as it was).
        full = definition("Spring")
        full["segments"].append({"name": "california", "criteria": {"states": ["CA"]}})
        full["messages"].append({"variant": "followup", "subject": "Again", "html": "<p>Again</p>", "text": "Again"})
        full["steps"].append({"after_step": 1, "condition": "not_opened", "wait_days": 3, "action": "send",
                              "variant": "followup"})
        refusals = (
            ("campaign_segments", "name <> 'california'", 'segment "california"'),
            ("campaign_messages", "variant <> 'followup'", 'message "followup"'),
            ("campaign_steps", "after_step < 1", "step rule 2 (after step 1)"),
        )
        for table, check, part in refusals:
            with self.subTest(part=part):
                self.sql("DELETE FROM campaigns")
                self.sql("ALTER TABLE %s ADD CONSTRAINT refused CHECK (%s)" % (table, check))
                try:
                    path = self.write("full.json", full)
                    self.fails(("campaign", "create", path),
                               'campaign create: %s: ERROR:  new row for relation "%s" violates check constraint "refused"'
                               % (part, table))
                    self.assertEqual(self.state(), ([], [], [], []))
                    # A draft of that name is replaced in the same transaction: it is kept as it was.
                    cid = self.create("Spring")
                    before = self.state()
                    full["sender"]["name"] = "Changed Sender"
                    self.fails(("campaign", "create", self.write("full.json", full)), "campaign create: %s: " % part)
                    self.assertEqual(self.state(), before)
                    self.assertEqual(self.sql_one("SELECT sender_name FROM campaigns WHERE id = %s", (cid,)),
                                     "Riverside Physical Therapy")
                    full["sender"]["name"] = "Riverside Physical Therapy"
                finally:
                    self.sql("ALTER TABLE %s DROP CONSTRAINT refused" % table)
        # Once the database accepts it, the same file creates the campaign whole.
        self.sql("DELETE FROM campaigns")
        out = self.ctl("campaign", "create", self.write("full.json", full))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("2 segments, 2 messages, 2 step rules", out.stdout)

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
        # A stored HTML template that puts a value in unescaped, which the worker refuses to send.
        self.sql("UPDATE campaign_messages SET text_template = 'Hi', html_template = '<p>\n{{& source.name}}</p>' "
                 "WHERE campaign_id = %s", (cid,))
        p = self.fails(("campaign", "preview", "Spring", "1"),
                       "campaign preview: html:2: {{{...}}} or {{&...}} would put a value into the HTML unescaped; "
                       "write {{...}} (no message is sent from this variant)")
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
        for bad in ("2026-+1", "2026-02-30", "2026-1", " 2026-01", "1899-12"):
            self.fails(("report", "--month", bad), "report: --month %s: expected a month like 2026-11" % bad)
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

    def test_names_from_redis_print_control_characters_visibly(self):
        """What another client wrote to Redis (a queue name, a dead job's jid) prints as escapes, on
        stdout and stderr alike; stats --json keeps the name as it is, JSON-escaped."""
        r = self.redis()
        r.sadd("queues", "evil\x1b]0;pwned\x07")
        r.lpush("queue:evil\x1b]0;pwned\x07", "{}")
        self.addCleanup(r.delete, "queues", "queue:evil\x1b]0;pwned\x07", "dead")
        p = self.ctl("stats")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("\x1b", p.stdout)
        self.assertIn("evil\\x1b]0;pwned\\x07", p.stdout)
        doc = json.loads(self.ctl("stats", "--json").stdout)
        self.assertIn("evil\x1b]0;pwned\x07", [q["name"] for q in doc["queues"]])
        for jid, queue in (("ab\x1b[2J", "no queue"), ("cd\u009b2J", "default")):
            job = json.loads(dead_job(jid, queue))
            if queue == "default":
                job["class"] = "InvalidJob"
            r.zadd("dead", {json.dumps(job): 1700000001})
        p = self.ctl("retry-dead", "--all")
        for bad in ("\x1b", "\u009b"):
            self.assertNotIn(bad, p.stdout + p.stderr)
        self.assertIn("dead job ab\\x1b[2J has no valid queue", p.stderr)
        self.assertIn("dead job cd\\u009b2J is not a runnable job", p.stderr)

    def test_stats_lists_a_queue_whose_name_is_not_utf8(self):
        """A queue name another client wrote with a byte that is not UTF-8 cannot be a JSON string:
        stats --json lists the queue, its bad byte as \\xHH, with its size, as the text table does; a
        NUL byte in a name is shown so, and the size is its queue's, not that of the name before it."""
        r = self.redis()
        name = b"bad\xffname" + b"x" * 130  # longer than any key buffer: the size is its own queue's
        r.sadd("queues", name, "alerts", b"alerts\x00two")  # a NUL byte too: not the queue alerts
        r.lpush(b"queue:" + name, "{}", "{}", "{}")
        r.lpush("queue:alerts", "{}")
        r.lpush(b"queue:alerts\x00two", "{}", "{}")
        self.addCleanup(r.delete, "queues", b"queue:" + name, "queue:alerts", b"queue:alerts\x00two")
        doc = json.loads(self.ctl("stats", "--json").stdout)
        sizes = {q["name"]: q["size"] for q in doc["queues"]}
        self.assertEqual(sizes, {"bad\\xffname" + "x" * 130: 3, "alerts": 1, "alerts\\x00two": 2})
        p = self.ctl("stats")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"(?m)^bad\\xffnamex{130} +3 ")
        self.assertRegex(p.stdout, r"(?m)^alerts\\x00two +2 ")

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


def dead_job(jid, queue="default", size=0):
    """A dead job as a worker leaves it; size: bytes of padding in its argument."""
    return json.dumps({"class": "PingJob", "args": ["x" * size], "jid": jid, "queue": queue, "retry": True,
                       "created_at": 1700000000.0, "enqueued_at": 1700000000.0, "failed_at": 1700000001.0,
                       "retry_count": 3, "error_class": "RuntimeError", "error_message": "boom"})


class RedisTrouble(CtlCase):
    """A redis-server of the test's own, which closes outreachctl's connection or refuses a command
    partway through: the command says what failed, exits 1 and loses nothing."""

    migrated = False

    def setUp(self):
        super().setUp()
        sock = os.path.join(self.dir, "redis.sock")
        server = harness.Proc(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                               "--appendonly", "no", "--dir", self.dir], os.environ, self.failureException)
        self.addCleanup(server.kill)
        # Its default user is outreachctl's, which a test may deprive of rights; admin keeps them all.
        self.admin = redislib.Redis(unix_socket_path=sock, decode_responses=True, socket_timeout=30)
        self.wait_for("the private redis-server", lambda: os.path.exists(sock) and self._answers())
        self.admin.acl_setuser("admin", enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all"])
        self.admin = redislib.Redis(unix_socket_path=sock, username="admin", decode_responses=True,
                                    socket_timeout=30)
        self.renv = {"OUTREACH_REDIS_URL": "unix://" + sock, "OUTREACH_REDIS_PASSWORD": None}

    def _answers(self):
        try:
            return self.admin.ping()
        except redislib.ConnectionError:
            return False

    def deprive(self, *commands):
        """Takes the commands from outreachctl's (the default) user."""
        self.admin.execute_command("ACL", "SETUSER", "default", *("-" + c for c in commands))

    def restore_rights(self):
        """Gives outreachctl's user back every right deprive took."""
        self.admin.acl_setuser("default", reset=True, enabled=True, nopass=True, keys=["*"], channels=["*"],
                               commands=["+@all"])

    def bury(self, *jobs):
        """Puts the jobs in dead (a larger client query buffer for the time of it); returns their jids."""
        self.admin.config_set("client-query-buffer-limit", "64mb")
        for i, job in enumerate(jobs):
            self.admin.zadd("dead", {job: 1700000001 + i})
        return [json.loads(j)["jid"] for j in jobs]

    def where(self, jids):
        """For each jid, the places that hold it: "dead", "queue:Q"."""
        places = {jid: [] for jid in jids}
        for key in ["dead"] + sorted(self.admin.keys("queue:*")):
            if self.admin.type(key) == "zset":
                members = self.admin.zrange(key, 0, -1)
            elif self.admin.type(key) == "list":
                members = self.admin.lrange(key, 0, -1)
            else:
                continue
            for m in members:
                jid = json.loads(m)["jid"]
                if jid in places:
                    places[jid].append(key)
        return places

    def test_stats_connection_closed(self):
        # The oldest job of a queue is too large for the output buffer Redis allows a client: Redis
        # closes the connection while stats reads it, after the list of queues and a first queue.
        self.admin.lpush("queue:alerts", dead_job("a" * 24))
        self.admin.lpush("queue:bulk", dead_job("b" * 24, "bulk", 200000))
        self.admin.sadd("queues", "alerts", "bulk")
        self.admin.config_set("client-output-buffer-limit", "normal 64kb 0 0")
        for args in (("stats",), ("stats", "--json")):
            p = self.fails(args, "stats: LINDEX queue:bulk -1: Server closed the connection", env=self.renv)
            self.assertEqual(p.stdout, "")
        self.assertEqual(self.admin.llen("queue:bulk"), 1)

    def test_stats_refused(self):
        self.admin.sadd("processes", "worker-1:1234:0123456789ab")
        self.admin.hset("worker-1:1234:0123456789ab", "busy", 2)
        self.admin.lpush("queue:alerts", dead_job("a" * 24))
        self.admin.sadd("queues", "alerts")
        self.deprive("hget")
        p = self.fails(("stats",), "stats: HGET worker-1:1234:0123456789ab busy: NOPERM ", env=self.renv)
        self.assertIn("'hget'", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_retry_dead_connection_closed(self):
        # The third dead job is larger than the query buffer Redis allows a client: Redis closes the
        # connection when retry-dead moves it, after two were requeued.
        jids = self.bury(dead_job("1" * 24), dead_job("2" * 24), dead_job("3" * 24, size=1200000),
                         dead_job("4" * 24), dead_job("5" * 24))
        self.admin.config_set("client-query-buffer-limit", "1mb")
        p = self.fails(("retry-dead", "--all"), "retry-dead: job %s: move: " % jids[2], env=self.renv)
        self.assertIn("retry-dead: 2 jobs were requeued before the failure", p.stderr)
        self.assertEqual(self.where(jids), {jids[0]: ["queue:default"], jids[1]: ["queue:default"],
                                            jids[2]: ["dead"], jids[3]: ["dead"], jids[4]: ["dead"]})
        # Redis allowing it again, the rest follow.
        self.admin.config_set("client-query-buffer-limit", "64mb")
        out = self.ctl("retry-dead", "--all", env=self.renv)
        self.assertEqual((out.returncode, out.stdout), (0, "requeued 3 jobs\n"), out.stderr)
        self.assertEqual(self.where(jids), {jid: ["queue:default"] for jid in jids})

    def test_discard_dead_connection_closed(self):
        jids = self.bury(dead_job("1" * 24), dead_job("2" * 24), dead_job("3" * 24, size=1200000),
                         dead_job("4" * 24))
        self.admin.config_set("client-query-buffer-limit", "1mb")
        p = self.fails(("discard-dead", "--all"), "discard-dead: job %s: ZREM dead: " % jids[2], env=self.renv)
        self.assertIn("discard-dead: 2 jobs were discarded before the failure", p.stderr)
        self.assertEqual(self.where(jids), {jids[0]: [], jids[1]: [], jids[2]: ["dead"], jids[3]: ["dead"]})

    def test_retry_dead_refused(self):
        # Redis refuses a write of the move: the job stays in dead, never in neither place nor in both.
        for command in ("lpush", "sadd", "zrem"):
            with self.subTest(denied=command):
                self.admin.delete("dead", "queues", "queue:default")
                self.restore_rights()
                jids = self.bury(dead_job("1" * 24), dead_job("2" * 24))
                self.deprive(command)
                p = self.fails(("retry-dead", jids[1]), "retry-dead: job %s: move: " % jids[1], env=self.renv)
                self.assertEqual(self.where(jids), {jids[0]: ["dead"], jids[1]: ["dead"]})
                self.assertIn("NOPERM this user has no permissions to run %s on " % command.upper(), p.stderr)
                self.assertNotIn("before the failure", p.stderr)
        # A key of another type where a job's queue should be: refused partway, the job stays in dead.
        self.restore_rights()
        self.admin.delete("dead", "queues", "queue:default")
        jids = self.bury(dead_job("1" * 24), dead_job("2" * 24), dead_job("3" * 24, "broken"), dead_job("4" * 24))
        self.admin.set("queue:broken", "not a list")
        p = self.fails(("retry-dead", "--all"), "retry-dead: job %s: move: " % jids[2], env=self.renv)
        self.assertIn("WRONGTYPE", p.stderr)
        self.assertIn("retry-dead: 2 jobs were requeued before the failure", p.stderr)
        self.assertEqual(self.where(jids), {jids[0]: ["queue:default"], jids[1]: ["queue:default"],
                                            jids[2]: ["dead"], jids[3]: ["dead"]})
        self.assertEqual(self.admin.get("queue:broken"), "not a list")

    def test_discard_dead_refused(self):
        jids = self.bury(dead_job("1" * 24), dead_job("2" * 24))
        self.deprive("zrem")
        p = self.fails(("discard-dead", "--all"), "discard-dead: job %s: ZREM dead: NOPERM " % jids[0], env=self.renv)
        self.assertIn("discard-dead: 0 jobs were discarded before the failure", p.stderr)
        self.assertEqual(self.where(jids), {jids[0]: ["dead"], jids[1]: ["dead"]})


class Output(CtlCase):
    """Output outreachctl cannot write: a reader that went away ends it as SIGPIPE would (quietly,
    not with status 0); any other write error is said, with status 1."""

    def run_to(self, stdout, *args):
        """Runs outreachctl ARGS with stdout (a file descriptor); returns (status, stderr)."""
        p = subprocess.run(self._argv("outreachctl", args), env=self._env(None), stdout=stdout,
                           stderr=subprocess.PIPE, text=True, errors="replace", timeout=60)
        self.assertIsNone(harness.sanitizer_report(p.stderr), p.stderr)
        return p.returncode, p.stderr

    def test_reader_gone(self):
        self.redis().lpush("queue:alerts", dead_job("a" * 24))
        self.redis().sadd("queues", "alerts")
        for args in (("--help",), ("stats",), ("stats", "--json"), ("migrate", "--status")):
            with self.subTest(args=args):
                rd, wr = os.pipe()
                os.close(rd)
                try:
                    self.assertEqual(self.run_to(wr, *args), (-signal.SIGPIPE, ""))
                finally:
                    os.close(wr)

    def test_reader_gone_in_a_shell_pipeline(self):
        # More than a pipe holds, so head is gone before outreachctl is done.
        self.redis().sadd("queues", *("queue-%04d" % i for i in range(4000)))
        p = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" stats | head -1', self._argv("outreachctl", ())[0]],
                           env=self._env(None), capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stderr), (128 + signal.SIGPIPE, ""))
        self.assertNotEqual(p.stdout, "")

    def test_write_error(self):
        with open("/dev/full", "w") as full:
            status, err = self.run_to(full.fileno(), "--help")
        self.assertEqual(status, 1)
        self.assertIn("writing the output: No space left on device", err)


class MigrateRefused(CtlCase):
    """A database that refuses a migration: an object of the name a migration creates is there already."""

    migrated = False

    def schema(self):
        return self.sql("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'public' ORDER BY 1"), \
            self.sql("SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                     "WHERE n.nspname = 'public' ORDER BY 1")

    def test_migration_refused(self):
        names = sorted(os.listdir(harness.ROOT / "sql"))
        self.sql("CREATE TABLE suppressions (address text PRIMARY KEY)")
        self.sql("INSERT INTO suppressions VALUES ('kept@example.org')")
        p = self.fails(("migrate",), 'migrate: migration 007_campaigns.sql: ERROR:  relation "suppressions" already exists')
        self.assertIn("migrate: 6 migrations were applied before the failure; the schema is at version 6", p.stderr)
        self.assertEqual(p.stdout, "")
        # The six before it are applied, each in its own transaction; nothing of 007 is.
        self.assertEqual(self.sql("SELECT version, name FROM schema_migrations ORDER BY version"),
                         [(i + 1, names[i]) for i in range(6)])
        tables, functions = self.schema()
        for name in ("campaigns", "source_tags", "campaign_enrollments", "referral_sources_email_idx"):
            self.assertNotIn(name, [t for t, _ in tables])
        self.assertNotIn("campaign_add_days", [f for f, in functions])
        self.assertEqual(self.sql("SELECT * FROM suppressions"), [("kept@example.org",)])
        self.assertEqual(self.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'suppressions'"),
                         [("address",)])
        # Run again, it fails the same way and changes nothing.
        before = self.schema()
        self.fails(("migrate",), 'migrate: migration 007_campaigns.sql: ERROR:  relation "suppressions" already exists')
        self.assertEqual(self.schema(), before)
        p = self.ctl("migrate", "--status")
        self.assertEqual((p.returncode, p.stdout),
                         (1, "schema version 6, this build needs %d: run `outreachctl migrate`\n" % len(names)))
        # The object out of the way, the rest applies.
        self.sql("DROP TABLE suppressions")
        p = self.ctl("migrate")
        self.assertEqual((p.returncode, p.stdout),
                         (0, "applied %d migrations; schema version %d\n" % (len(names) - 6, len(names))), p.stderr)


class MigrateReadOnly(CtlCase):
    """A database whose transactions are read-only (a standby's, or default_transaction_read_only)."""

    migrated = False

    def test_read_only(self):
        self.sql('ALTER DATABASE "%s" SET default_transaction_read_only = on' % self.dbname)
        p = self.fails(("migrate",),
                       "migrate: creating schema_migrations: ERROR:  cannot execute CREATE TABLE in a read-only transaction")
        self.assertEqual(p.stdout, "")
        self.assertEqual(self.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), [(0,)])


class MigrateReadOnlyUpToDate(CtlCase):
    """A read-only database whose schema is current: nothing to write, so nothing to refuse."""

    def test_up_to_date(self):
        names = sorted(os.listdir(harness.ROOT / "sql"))
        self.sql('ALTER DATABASE "%s" SET default_transaction_read_only = on' % self.dbname)
        for _ in range(2):
            p = self.ctl("migrate")
            self.assertEqual((p.returncode, p.stdout, p.stderr),
                             (0, "applied 0 migrations; schema version %d, up to date\n" % len(names), ""))
        p = self.ctl("migrate", "--status")
        self.assertEqual((p.returncode, p.stdout), (0, "schema version %d, this build needs %d\n" % (len(names), len(names))))
        self.assertEqual(self.sql("SELECT count(*) FROM schema_migrations"), [(len(names),)])


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
