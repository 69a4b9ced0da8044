"""The mailer against real SMTP servers: the stack's mail catcher and throwaway aiosmtpd servers that
accept, defer, refuse, hang up, time out and require AUTH or STARTTLS.

The C side is driven through the mailsend test helper (tests/tools/mailsend.c), which builds a message
with msg_* and sends it with mailer_*, printing one JSON line per message.
"""
import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import harness

MAILSEND = harness.BIN / "tests" / "mailsend"
FROM = "outreach@clinic.example.org"


class Recorder:
    """An aiosmtpd handler that keeps what it received; per-address and per-stage replies can be set."""

    def __init__(self, rcpt_replies=None, mail_reply=None, data_reply=None):
        self.rcpt_replies = rcpt_replies or {}
        self.mail_reply = mail_reply
        self.data_reply = data_reply
        self.messages = []  # (mail_from, rcpt_tos, content bytes)
        self.ehlos = 0
        self.logins = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Message accepted"


class RawServer:
    """A TCP server speaking just enough SMTP to misbehave: script is a list of replies to send, one
    per line read (the first before reading anything); None closes the connection; 'hang' stalls."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                f = conn.makefile("rb")
                for i, step in enumerate(self.script):
                    if i > 0 and not f.readline():
                        break
                    if step is None:
                        break
                    if step == "hang":
                        self.stop_event.wait(30)
                        break
                    conn.sendall(step.encode() + b"\r\n")

    def stop(self):
        self.stop_event.set()
        self.thread.join(5)
        self.sock.close()


class MailerTest(harness.Case):

    # --- helpers ----------------------------------------------------------------------------
    def smtp_server(self, handler, **kwargs):
        port = harness.free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        self.addCleanup(controller.stop)
        return port

    def mailsend(self, *args, host="127.0.0.1", port=None, extra_env=None, expect_rc=None, timeout=60):
        """Runs the helper; returns (list of result objects, completed process)."""
        if not MAILSEND.exists():
            self.fail("%s is missing: build it (see the Makefile rule for tests/tools/mailsend.c)" % MAILSEND)
        env = dict(self.env)
        for k in list(env):
            if k.startswith("OUTREACH_SMTP_"):
                del env[k]
        env["OUTREACH_CONFIG"] = "/dev/null"
        env["OUTREACH_SMTP_HOST"] = host
        env["OUTREACH_SMTP_PORT"] = str(port)
        env["OUTREACH_SMTP_FROM"] = FROM
        env["OUTREACH_SMTP_TIMEOUT"] = "10"
        env.update(extra_env or {})
        p = subprocess.run([str(MAILSEND), *args], env=env, capture_output=True, text=True, timeout=timeout)
        if expect_rc is not None:
            self.assertEqual(p.returncode, expect_rc, "mailsend exited %d:\n%s%s" % (p.returncode, p.stdout, p.stderr))
        results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        return results, p

    def one(self, *args, **kwargs):
        results, p = self.mailsend(*args, **kwargs)
        self.assertEqual(len(results), 1, p.stdout + p.stderr)
        return results[0], p

    # --- delivery -----------------------------------------------------------------------------
    def test_delivered_message_parses(self):
        """The message that reaches the stack's Maildir catcher: decoded name and subject, both
        parts, the Message-ID the caller was given, the extra headers, each header once."""
        self.clear_maildir()
        subject = "Référence: suivi de votre patient ✅ — merci de confirmer la réception avant vendredi"
        res, p = self.one("-n", "Dr. José Núñez", "-N", "Dr. Ana Lee", "-s", subject,
                          "-t", "Bonjour Dr. Lee,\nMerci pour la référence.\n",
                          "-H", "<p>Bonjour Dr. Lee,</p><p>Merci pour la référence.</p>",
                          "-x", "X-Outreach-Jid: 5f2c0e1a9b7d4c3e8a6f1b2d",
                          "-x", "List-Unsubscribe: <https://outreach.example.org/u/t0k3n>",
                          "-x", "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                          "dr.lee@practice.example.com",
                          host=harness.STACK["OUTREACH_SMTP_HOST"], port=harness.STACK["OUTREACH_SMTP_PORT"],
                          expect_rc=0)
        self.assertEqual(res["status"], "sent", res)
        self.assertEqual(res["stage"], "done")
        self.assertEqual(res["code"], 250)
        self.assertEqual(res["delivered"], 1)
        self.assertEqual(res["rejected"], [])

        msgs = [m for m in self.maildir_messages() if m["Message-ID"] == "<%s>" % res["message_id"]]
        self.assertEqual(len(msgs), 1, "the message did not arrive in the Maildir")
        m = msgs[0]
        self.assertEqual(m["From"].addresses[0].display_name, "Dr. José Núñez")
        self.assertEqual(m["From"].addresses[0].addr_spec, FROM)
        self.assertEqual(m["To"].addresses[0].display_name, "Dr. Ana Lee")
        self.assertEqual(m["To"].addresses[0].addr_spec, "dr.lee@practice.example.com")
        self.assertEqual(str(m["Subject"]), subject)
        self.assertTrue(res["message_id"].endswith("@clinic.example.org"))
        self.assertEqual(m["X-Outreach-Jid"], "5f2c0e1a9b7d4c3e8a6f1b2d")
        self.assertEqual(m["List-Unsubscribe"], "<https://outreach.example.org/u/t0k3n>")
        self.assertEqual(m["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        for name in ("Message-ID", "Date", "From", "To", "Subject", "MIME-Version"):
            self.assertEqual(len(m.get_all(name)), 1, "%s appears %d times" % (name, len(m.get_all(name))))
        self.assertEqual(m.get_content_type(), "multipart/alternative")
        parts = list(m.iter_parts())
        self.assertEqual([x.get_content_type() for x in parts], ["text/plain", "text/html"])
        self.assertEqual(parts[0].get_content_charset(), "utf-8")
        self.assertEqual(parts[0]["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(parts[0].get_content().rstrip("\n"), "Bonjour Dr. Lee,\nMerci pour la référence.")
        self.assertEqual(parts[1].get_content().rstrip("\n"),
                         "<p>Bonjour Dr. Lee,</p><p>Merci pour la référence.</p>")
        self.assertEqual(m.defects, [])

    def test_batch_uses_one_connection(self):
        """Messages of one batch share one SMTP connection (one EHLO)."""
        h = Recorder()
        port = self.smtp_server(h)
        results, _ = self.mailsend("-b", "3", "-s", "batch", "a@x.example", port=port, expect_rc=0)
        self.assertEqual([r["status"] for r in results], ["sent"] * 3)
        self.assertEqual(len({r["message_id"] for r in results}), 3)
        self.assertEqual(len(h.messages), 3)
        self.assertEqual(h.ehlos, 1)

    # --- refusals -----------------------------------------------------------------------------
    def test_450_is_temporary(self):
        h = Recorder(rcpt_replies={"busy@x.example": "450 4.2.1 Mailbox busy, try later"})
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "busy@x.example", port=port, expect_rc=1)
        self.assertEqual(res["status"], "temporary", res)
        self.assertEqual(res["stage"], "rcpt")
        self.assertEqual(res["code"], 450)
        self.assertEqual(res["delivered"], 0)
        self.assertEqual([(r["addr"], r["code"]) for r in res["rejected"]], [("busy@x.example", 450)])
        self.assertIn("Mailbox busy", res["rejected"][0]["text"])
        self.assertEqual(h.messages, [])

    def test_550_for_one_of_two_recipients(self):
        """The relay takes the message for the good recipient and refuses the other: PERMANENT, the
        refused one listed with its code and text, the good one delivered (so no retry)."""
        h = Recorder(rcpt_replies={"gone@x.example": "550 5.1.1 No such user here"})
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "dr.lee@x.example", "gone@x.example", port=port, expect_rc=1)
        self.assertEqual(res["status"], "permanent", res)
        self.assertEqual(res["stage"], "rcpt")
        self.assertEqual(res["code"], 550)
        self.assertEqual(res["delivered"], 1)
        self.assertEqual(len(res["rejected"]), 1)
        self.assertEqual(res["rejected"][0]["addr"], "gone@x.example")
        self.assertEqual(res["rejected"][0]["code"], 550)
        self.assertIn("No such user here", res["rejected"][0]["text"])
        self.assertEqual(len(h.messages), 1)
        self.assertEqual(h.messages[0][1], ["dr.lee@x.example"])

    def test_550_for_every_recipient(self):
        h = Recorder(rcpt_replies={"a@x.example": "550 5.1.1 No such user", "b@x.example": "553 5.1.3 Bad address"})
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "a@x.example", "b@x.example", port=port, expect_rc=1)
        self.assertEqual(res["status"], "permanent", res)
        self.assertEqual(res["delivered"], 0)
        self.assertEqual([(r["addr"], r["code"]) for r in res["rejected"]],
                         [("a@x.example", 550), ("b@x.example", 553)])
        self.assertEqual(h.messages, [])

    def test_450_and_550_mixed(self):
        """One deferred, one refused, one accepted: TEMPORARY (retry the deferred one only)."""
        h = Recorder(rcpt_replies={"later@x.example": "451 4.3.0 Greylisted",
                                   "gone@x.example": "550 5.1.1 No such user"})
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "ok@x.example", "later@x.example", "gone@x.example", port=port,
                          expect_rc=1)
        self.assertEqual(res["status"], "temporary", res)
        self.assertEqual(res["delivered"], 1)
        self.assertEqual({r["addr"]: r["code"] for r in res["rejected"]},
                         {"later@x.example": 451, "gone@x.example": 550})

    def test_mail_from_refused(self):
        h = Recorder(mail_reply="451 4.3.0 Local problem, try later")
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "a@x.example", port=port, expect_rc=1)
        self.assertEqual((res["status"], res["stage"], res["code"]), ("temporary", "mail", 451), res)

        h = Recorder(mail_reply="553 5.7.1 Sender not allowed")
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "a@x.example", port=port, expect_rc=1)
        self.assertEqual((res["status"], res["stage"], res["code"]), ("permanent", "mail", 553), res)
        self.assertIn("Sender not allowed", res["text"])

    def test_data_refused(self):
        h = Recorder(data_reply="554 5.6.0 Message content rejected")
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "a@x.example", port=port, expect_rc=1)
        self.assertEqual((res["status"], res["stage"], res["code"]), ("permanent", "data", 554), res)
        self.assertEqual(res["delivered"], 0)

        h = Recorder(data_reply="452 4.3.1 Insufficient system storage")
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "a@x.example", port=port, expect_rc=1)
        self.assertEqual((res["status"], res["stage"], res["code"]), ("temporary", "data", 452), res)

    # --- connection failures ------------------------------------------------------------------
    def test_connection_refused_is_temporary(self):
        port = harness.free_port()  # nothing listens there
        res, _ = self.one("-s", "hello", "a@x.example", port=port, expect_rc=1)
        self.assertEqual((res["status"], res["stage"], res["code"]), ("temporary", "connect", 0), res)
        self.assertIn("refused", res["text"].lower())
        self.assertIn("127.0.0.1:%d" % port, res["text"])

    def test_server_closes_the_connection(self):
        """A server that hangs up right away, one that says 421, and one that hangs up after MAIL."""
        for script, code in ((["220 hello", None], 0),
                             ([None], 0),
                             (["421 4.3.2 Service not available, closing channel", None], 421),
                             (["220 hello", "250 hello", None], 0)):
            srv = RawServer(script)
            try:
                res, _ = self.one("-s", "hello", "a@x.example", port=srv.port, expect_rc=1)
            finally:
                srv.stop()
            self.assertEqual(res["status"], "temporary", (script, res))
            self.assertEqual(res["code"], code, (script, res))
            self.assertEqual(res["delivered"], 0)

    def test_reply_timeout(self):
        """A server that accepts the connection and never greets: the send gives up after
        smtp.timeout seconds."""
        srv = RawServer(["hang"])
        self.addCleanup(srv.stop)
        start = time.monotonic()
        res, _ = self.one("-s", "hello", "a@x.example", port=srv.port, extra_env={"OUTREACH_SMTP_TIMEOUT": "1"},
                          expect_rc=1)
        elapsed = time.monotonic() - start
        self.assertEqual((res["status"], res["stage"]), ("temporary", "connect"), res)
        self.assertLess(elapsed, 8)

    # --- AUTH ---------------------------------------------------------------------------------
    def auth_server(self, h):
        def authenticator(server, session, envelope, mechanism, auth_data):
            if isinstance(auth_data, LoginPassword) and auth_data.login == b"sender" \
                    and auth_data.password == b"s3cret-pw":
                h.logins.append((mechanism, auth_data.login.decode()))
                return AuthResult(success=True)
            return AuthResult(success=False, handled=False)
        return self.smtp_server(h, authenticator=authenticator, auth_required=True, auth_require_tls=False)

    def test_auth_succeeds(self):
        h = Recorder()
        port = self.auth_server(h)
        res, p = self.one("-s", "hello", "a@x.example", port=port, expect_rc=0,
                          extra_env={"OUTREACH_SMTP_USERNAME": "sender", "OUTREACH_SMTP_PASSWORD": "s3cret-pw"})
        self.assertEqual(res["status"], "sent", res)
        self.assertEqual(len(h.messages), 1)
        self.assertEqual([login for _, login in h.logins], ["sender"])
        self.assertNotIn("s3cret-pw", p.stdout + p.stderr)

    def test_auth_wrong_password_is_permanent(self):
        h = Recorder()
        port = self.auth_server(h)
        res, p = self.one("-s", "hello", "a@x.example", port=port, expect_rc=1,
                          extra_env={"OUTREACH_SMTP_USERNAME": "sender", "OUTREACH_SMTP_PASSWORD": "wrong-pw",
                                     "OUTREACH_LOG_LEVEL": "debug"})
        self.assertEqual((res["status"], res["stage"], res["code"]), ("permanent", "auth", 535), res)
        self.assertIn("sender", res["text"])
        self.assertEqual(h.messages, [])
        self.assertNotIn("wrong-pw", p.stdout + p.stderr)

    def test_auth_required_without_credentials(self):
        h = Recorder()
        port = self.auth_server(h)
        res, _ = self.one("-s", "hello", "a@x.example", port=port, expect_rc=1)
        self.assertEqual((res["status"], res["stage"], res["code"]), ("permanent", "mail", 530), res)

    # --- TLS ----------------------------------------------------------------------------------
    def test_implicit_tls_is_refused_clearly(self):
        # refused with the configuration, before any mailer exists
        p = self.run_bin("outreach-worker", "-c", harness.CONFIG, "--check-config",
                         env={"OUTREACH_SMTP_TLS": "tls"})
        self.assertEqual(p.returncode, 1)
        self.assertIn("smtp.tls: implicit TLS (port 465) is not available", p.stderr)
        self.assertIn("use starttls", p.stderr)

    def test_starttls_required_but_not_offered(self):
        h = Recorder()
        port = self.smtp_server(h)
        res, _ = self.one("-s", "hello", "a@x.example", port=port, extra_env={"OUTREACH_SMTP_TLS": "starttls"},
                          expect_rc=1)
        self.assertEqual((res["status"], res["stage"]), ("temporary", "tls"), res)
        self.assertIn("STARTTLS", res["text"])
        self.assertEqual(h.messages, [])

    def make_certs(self, d):
        """A private CA and a certificate for localhost signed by it."""
        def run(*args):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=outreach test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")
        (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")

    def starttls_server(self, h, d):
        import ssl
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(d / "server.pem"), str(d / "server.key"))
        return self.smtp_server(h, tls_context=ctx, require_starttls=True)

    def test_starttls_verifies_the_certificate(self):
        """STARTTLS with a certificate that verifies (the test CA given through SSL_CERT_FILE, as an
        operator would for a private CA) sends, also a second time in the same process; with the
        system's CAs only, the certificate is refused and nothing is sent."""
        if shutil.which("openssl") is None:
            self.skipTest("openssl is not installed")
        d = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, d, True)
        self.make_certs(d)
        h = Recorder()
        port = self.starttls_server(h, d)

        results, _ = self.mailsend("-k", "2", "-s", "over TLS", "a@x.example", host="localhost", port=port,
                                   extra_env={"OUTREACH_SMTP_TLS": "starttls", "SSL_CERT_FILE": str(d / "ca.pem")},
                                   expect_rc=0)
        self.assertEqual([r["status"] for r in results], ["sent", "sent"], results)
        self.assertEqual(len(h.messages), 2)
        self.assertEqual(h.ehlos, 4)  # two connections, each EHLO before and after STARTTLS

        res, _ = self.one("-s", "over TLS", "a@x.example", host="localhost", port=port,
                          extra_env={"OUTREACH_SMTP_TLS": "starttls"}, expect_rc=1)
        self.assertEqual((res["status"], res["stage"]), ("temporary", "tls"), res)
        self.assertIn("certificate", res["text"])
        self.assertEqual(len(h.messages), 2)

        # The certificate names localhost, not 127.0.0.1.
        res, _ = self.one("-s", "over TLS", "a@x.example", host="127.0.0.1", port=port,
                          extra_env={"OUTREACH_SMTP_TLS": "starttls", "SSL_CERT_FILE": str(d / "ca.pem")},
                          expect_rc=1)
        self.assertEqual((res["status"], res["stage"]), ("temporary", "tls"), res)
        self.assertIn("host name", res["text"])
        self.assertEqual(len(h.messages), 2)

    # --- input checks -------------------------------------------------------------------------
    def test_injection_refused_before_sending(self):
        h = Recorder()
        port = self.smtp_server(h)
        _, p = self.mailsend("-s", "hi\r\nBcc: victim@x.example", "a@x.example", port=port, expect_rc=2)
        self.assertIn("line break", p.stderr)
        _, p = self.mailsend("-s", "hi", "a@x.example>\r\nRCPT TO:<victim@x.example", port=port, expect_rc=2)
        self.assertIn("line break", p.stderr)
        self.assertEqual(h.messages, [])


if __name__ == "__main__":
    harness.main()
