"""The three binaries: --help, --version, --check-config errors, migrate twice, start and stop."""
import os
import re
import signal
import subprocess

import harness


class Basics(harness.Case):
    def test_help_and_version(self):
        for name in ("outreachd", "outreach-worker", "outreachctl"):
            p = self.run_bin(name, "--version", check=True)
            self.assertRegex(p.stdout, r"^%s \d+\.\d+\.\d+\n$" % name)
            p = self.run_bin(name, "--help", check=True)
            self.assertIn("usage: " + name, p.stdout)
            self.assertIn("--check-config", p.stdout)

    def test_example_config_is_valid(self):
        for name in ("outreachd", "outreach-worker", "outreachctl"):
            p = self.run_bin(name, "-c", harness.CONFIG, "--check-config")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("valid", p.stdout)

    def check_error(self, text, pattern, env=None):
        path = self.write_config(text)
        for name in ("outreachd", "outreach-worker", "outreachctl"):
            p = self.run_bin(name, "-c", path, "--check-config", env=env)
            self.assertNotEqual(p.returncode, 0, name)
            self.assertRegex(p.stderr, pattern.replace("FILE", re.escape(path)), name)

    def test_config_errors_name_file_line_key(self):
        self.check_error("[smtp]\nhost = mail.example.org\nport = 70000\n",
                         r"^config: FILE:3: smtp\.port: 70000 is out of range 1\.\.65535\n$")
        self.check_error("[smtp]\nhots = x\n", r"^config: FILE:2: smtp\.hots: unknown key\n$")
        self.check_error("[database]\nurl = postgresql:///x\n\n[databse]\nurl = y\n",
                         r"^config: FILE:4: \[databse\]: unknown section\n$")
        self.check_error("[smtp]\npassword_file = /nonexistent/smtp.secret\n",
                         r"^config: FILE:2: smtp\.password_file: cannot read the secret file /nonexistent/smtp\.secret: "
                         r"No such file or directory\n$")
        self.check_error("", r"^config: environment OUTREACH_REDIS_TIMEOUT: redis\.timeout: 5 is out of range",
                         env={"OUTREACH_REDIS_TIMEOUT": "5"})

    def test_secret_never_printed(self):
        secret = self.write_config("s3cr3t-value\n")
        path = self.write_config("[smtp]\npassword_file = %s\nport = 99999\n" % secret)
        p = self.run_bin("outreachd", "-c", path, "--check-config")
        self.assertNotIn("s3cr3t", p.stdout + p.stderr)

    def test_database_derives_due_times(self):
        self.run_bin("outreachctl", "-c", harness.CONFIG, "migrate", check=True)
        c = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('A', 'a@x.org') RETURNING id")
        s = self.sql_one("INSERT INTO referral_sources (last_name, coordinator_id, status, contact_interval_days, "
                         "last_contact_at) VALUES ('Doe', %s, 'active', 10, '2026-01-01T00:00:00Z') RETURNING id", (c,))
        self.assertEqual(str(self.sql_one("SELECT next_due_at AT TIME ZONE 'UTC' FROM referral_sources")),
                         "2026-01-11 00:00:00")
        # completing an activity moves the last contact forward (never back)
        self.sql("INSERT INTO activities (source_id, kind, completed_at) VALUES (%s, 'call', '2026-02-01T00:00:00Z')", (s,))
        self.sql("INSERT INTO activities (source_id, kind, completed_at) VALUES (%s, 'call', '2026-01-15T00:00:00Z')", (s,))
        self.assertEqual(str(self.sql_one("SELECT next_due_at AT TIME ZONE 'UTC' FROM referral_sources")),
                         "2026-02-11 00:00:00")
        # the default interval comes from settings
        self.sql("UPDATE referral_sources SET contact_interval_days = NULL")
        self.sql("UPDATE settings SET value = '45' WHERE name = 'default_contact_interval_days'")
        self.assertEqual(str(self.sql_one("SELECT next_due_at AT TIME ZONE 'UTC' FROM referral_sources")),
                         "2026-03-18 00:00:00")
        with self.assertRaises(Exception):
            self.sql("INSERT INTO coordinators (name, email, time_zone) VALUES ('B', 'b@x.org', 'Mars/Olympus')")
        with self.assertRaises(Exception):
            self.sql("INSERT INTO referral_sources (last_name, npi) VALUES ('X', '12345')")

    def test_journald_priorities(self):
        """Under systemd (JOURNAL_STREAM names our stderr) lines carry <N> priorities, no timestamps."""
        r, w = os.pipe()
        st = os.fstat(w)
        env = dict(self.env, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        p = subprocess.Popen([str(harness.BIN / "outreachctl"), "-c", str(harness.CONFIG), "enqueue", "NoSuchJob"],
                             env=env, stdout=subprocess.DEVNULL, stderr=w)
        os.close(w)
        with os.fdopen(r) as f:
            out = f.read()
        self.assertEqual(p.wait(30), 1, out)
        self.assertIn("<3>enqueue: unknown job class NoSuchJob", out)
        lines = [l for l in out.splitlines() if l]
        self.assertTrue(lines, out)
        for line in lines:
            self.assertRegex(line, r"^<[3-7]>")
        # elsewhere: a UTC timestamp, the program and its pid, the level
        q = self.run_bin("outreachctl", "-c", harness.CONFIG, "enqueue", "NoSuchJob")
        self.assertRegex(q.stderr, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z outreachctl\[\d+\] error: ")

    def test_binaries_start_and_stop(self):
        self.run_bin("outreachctl", "-c", harness.CONFIG, "migrate", check=True)
        port = harness.free_port()
        d = self.start_bin("outreachd", "-c", harness.CONFIG, env={"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % port})
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "default")
        d.wait_log(r"outreachd \S+ ready")
        w.wait_log(r"outreach-worker \S+ ready")
        for p in (d, w):
            p.signal(signal.SIGTERM)
            self.assertEqual(p.wait(30), 0, p.log())
            self.assertIn("stopped", p.log())


class Migrate(harness.Case):
    """A class of its own: a database nothing has migrated yet."""

    def test_migrate_twice(self):
        first = self.run_bin("outreachctl", "-c", harness.CONFIG, "migrate", check=True)
        self.assertRegex(first.stdout, r"applied [1-9]\d* migrations?; schema version \d+")
        tables = self.sql_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        second = self.run_bin("outreachctl", "-c", harness.CONFIG, "migrate", check=True)
        self.assertRegex(second.stdout, r"applied 0 migrations; schema version \d+")
        self.assertEqual(self.sql_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), tables)
        status = self.run_bin("outreachctl", "-c", harness.CONFIG, "migrate", "--status")
        self.assertEqual(status.returncode, 0)
        for t in ("coordinators", "referral_sources", "activities", "cases", "referrals", "encounters",
                  "outreach_goals", "schema_migrations"):
            self.assertEqual(self.sql_one("SELECT to_regclass(%s) IS NOT NULL", (t,)), True, t)


if __name__ == "__main__":
    harness.main()
