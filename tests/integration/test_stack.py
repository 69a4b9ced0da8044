"""The private stack and the test harness themselves: PostgreSQL, Redis and the mail catcher answer."""
import os
import smtplib
import socket
from email.message import EmailMessage
from email.utils import parseaddr

import harness


class Stack(harness.Case):
    def test_database_is_fresh_and_private(self):
        self.assertEqual(self.sql_one("SELECT current_database()"), self.dbname)
        self.assertTrue(self.dbname.startswith("outreach_t_"))
        self.assertEqual(self.sql_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), 0)
        self.assertEqual(self.sql_one("SHOW server_encoding"), "UTF8")
        # unix socket only: the server listens on no TCP port
        self.assertEqual(self.sql_one("SHOW listen_addresses"), "")
        self.assertEqual(self.env["OUTREACH_DATABASE_URL"], self.db_url)
        self.sql("CREATE TABLE t (id int PRIMARY KEY, name text)")
        self.sql("INSERT INTO t VALUES (%s, %s)", (1, "Zoë"))
        self.assertEqual(self.sql("SELECT id, name FROM t"), [(1, "Zoë")])
        self.assertIsNone(self.sql_one("SELECT name FROM t WHERE id = 2"))

    def test_database_url_reaches_libpq_clients(self):
        psql = os.path.join(harness.STACK["OUTREACH_PG_BIN"], "psql")
        out = self.run_bin(psql, "-X", "-A", "-t", "-c", "SELECT current_database()", self.db_url, check=True)
        self.assertEqual(out.stdout.strip(), self.dbname)

    def test_redis(self):
        r = self.redis()
        self.assertTrue(r.ping())
        self.assertEqual(r.config_get("maxmemory-policy")["maxmemory-policy"], "noeviction")
        self.assertEqual(r.dbsize(), 0)  # flushed before each test
        r.lpush("queue:default", "{}")
        self.assertEqual(r.llen("queue:default"), 1)
        self.assertTrue(self.env["OUTREACH_REDIS_URL"].startswith("unix://"))

    def test_mail_lands_in_the_maildir(self):
        self.assertEqual(self.maildir_messages(), [])
        msg = EmailMessage()
        msg["From"] = "Zoë Ångström <zoe@outreach.example>"
        msg["To"] = "Dr. Ada Lovelace <ada@clinic.example>"
        msg["Subject"] = "Referral follow-up: café meeting"
        msg.set_content("Dear Dr. Lovelace,\nthank you for your referrals.\n")
        with smtplib.SMTP(self.env["OUTREACH_SMTP_HOST"], int(self.env["OUTREACH_SMTP_PORT"]), timeout=10) as s:
            s.send_message(msg)
        [got] = self.wait_mail(1)
        self.assertEqual(got["Subject"], "Referral follow-up: café meeting")
        self.assertEqual(parseaddr(str(got["From"])), ("Zoë Ångström", "zoe@outreach.example"))
        self.assertEqual(got["X-RcptTo"], "ada@clinic.example")
        self.assertIn("thank you for your referrals", got.get_content())
        self.clear_maildir()
        self.assertEqual(self.maildir_messages(), [])

    def test_processes_and_logs(self):
        p = self.start_bin("/bin/sh", "-c", 'echo "starting $OUTREACH_SMTP_TLS" >&2; echo ready; exec sleep 30')
        m = p.wait_log(r"^ready$")
        self.assertEqual(m.group(0), "ready")
        self.assertIn("starting none", p.log())
        self.assertTrue(p.running())
        p.signal(15)
        self.assertEqual(p.wait(5), -15)
        out = self.run_bin("/bin/sh", "-c", "cat; echo $OUTREACH_X", env={"OUTREACH_X": "y"}, input="in\n")
        self.assertEqual(out.stdout, "in\ny\n")
        with self.assertRaises(AssertionError):
            self.run_bin("/bin/false", check=True)

    def test_write_config(self):
        paths = []
        self.addCleanup(lambda: self.assertFalse(os.path.exists(paths[0])))  # runs after the removal
        paths.append(self.write_config("[smtp]\nport = 2525\n"))
        with open(paths[0]) as f:
            self.assertEqual(f.read(), "[smtp]\nport = 2525\n")

    def test_free_port(self):
        port = harness.free_port()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


if __name__ == "__main__":
    harness.main()
