"""outreachd's public listener: tracking pixel, click redirect and unsubscribe links, and the jobs they enqueue.

The tokens are made here with Python's hmac and base64 from the format common/token.h documents, so
that the test checks the format independently of the C code that makes them.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import harness

GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
CSP = "default-src 'none'; form-action 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(key, kind, message_id, url=None):
    """base64url(payload) "." base64url(HMAC-SHA256(key, payload)); payload = 1, kind, id (8 bytes
    big-endian), and a click's URL."""
    payload = bytes([1, ord(kind)]) + struct.pack(">q", message_id) + (url.encode() if url else b"")
    return b64(payload) + "." + b64(hmac.new(key, payload, hashlib.sha256).digest())


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key + b"\n")


class Public(harness.Case):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.migrate()
        cls.tmp = tempfile.mkdtemp(prefix="outreach-public-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.key = base64.b64encode(os.urandom(32))  # as `head -c 32 /dev/urandom | base64` makes it
        cls.key_file = os.path.join(cls.tmp, "token.key")
        write_key(cls.key_file, cls.key)

    def daemon(self, key_file=None, previous_key_file=None):
        port, public = harness.free_port(), harness.free_port()
        env = {"OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % port, "OUTREACH_HTTP_PUBLIC_LISTEN": "127.0.0.1:%d" % public,
               "OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE": key_file or self.key_file}
        if previous_key_file:
            env["OUTREACH_CAMPAIGNS_PREVIOUS_TOKEN_KEY_FILE"] = previous_key_file
        d = self.start_bin("outreachd", "-c", harness.CONFIG, env=env)
        d.port, d.public = port, public
        d.wait_log(r"outreachd \S+ ready")
        return d

    def setUp(self):
        super().setUp()
        self.d = self.daemon()

    # --- helpers ------------------------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, port=None):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.d.public, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def token(self, kind, message_id, url=None):
        return make_token(self.key, kind, message_id, url)

    def jobs(self):
        return [json.loads(j) for j in reversed(self.redis().lrange("queue:campaigns", 0, -1))]

    def wait_jobs(self, count):
        return self.wait_for("%d job(s) on queue:campaigns" % count, lambda: len(self.jobs()) >= count and self.jobs())

    def assert_common_headers(self, headers):
        self.assertEqual(headers["Referrer-Policy"], "no-referrer")
        self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
        self.assertIsNone(headers["Set-Cookie"])

    def assert_nothing_recorded(self):
        """A valid open after the requests under test: once its job is there, anything they had
        enqueued would be there too (one loop, one connection to Redis, in order)."""
        status, _, _ = self.request("GET", "/o/" + self.token("o", 999999))
        self.assertEqual(status, 200)
        jobs = self.wait_jobs(1)
        self.assertEqual([(j["args"][0]["event"], j["args"][0]["message_id"]) for j in jobs], [("open", 999999)])

    def assert_nothing_recorded_but(self, events):
        """Only events [(event, message_id, url or None)] were enqueued, in that order (checked as
        assert_nothing_recorded does, with an open of message 999999 after them)."""
        self.request("GET", "/o/" + self.token("o", 999999))
        jobs = self.wait_jobs(len(events) + 1)
        self.assertEqual([(j["args"][0]["event"], j["args"][0]["message_id"], j["args"][0].get("url")) for j in jobs],
                         events + [("open", 999999, None)])

    def assert_job(self, job, event, message_id, detail, url=None, before=None):
        self.assertEqual(job["class"], "CampaignEventJob")
        self.assertEqual(job["queue"], "campaigns")
        self.assertIs(job["retry"], True)
        self.assertRegex(job["jid"], r"^[0-9a-f]{24}$")
        self.assertIsInstance(job["created_at"], float)
        self.assertIsInstance(job["enqueued_at"], float)
        self.assertEqual(len(job["args"]), 1)
        args = job["args"][0]
        want = {"event", "message_id", "at", "detail"} | ({"url"} if url is not None else set())
        self.assertEqual(set(args), want)
        self.assertEqual(args["event"], event)
        self.assertEqual(args["message_id"], message_id)
        self.assertIsInstance(args["at"], float)
        self.assertLessEqual(before, args["at"])
        self.assertLessEqual(args["at"], time.time())
        self.assertEqual(args["detail"], detail)
        if url is not None:
            self.assertEqual(args["url"], url)
        self.assertIn("campaigns", self.redis().smembers("queues"))

    def metrics(self):
        status, _, body = self.request("GET", "/metrics", port=self.d.port)
        self.assertEqual(status, 200)
        return body.decode()

    # --- the routes --------------------------------------------------------------------------------
    def test_open_pixel(self):
        before = time.time()
        status, headers, body = self.request("GET", "/o/" + self.token("o", 1234567890123),
                                             headers={"User-Agent": 'Mozilla/5.0 (Mail; "quoted" \\back\\slash)'})
        self.assertEqual(status, 200)
        self.assertEqual(body, GIF)
        self.assertEqual(len(body), 43)
        self.assertEqual(headers["Content-Type"], "image/gif")
        self.assertEqual(headers["Cache-Control"], "no-store")
        self.assert_common_headers(headers)
        jobs = self.wait_jobs(1)
        self.assertEqual(len(jobs), 1)
        self.assert_job(jobs[0], "open", 1234567890123, 'Mozilla/5.0 (Mail; "quoted" \\back\\slash)', before=before)

    def test_click_redirects_to_the_signed_url_only(self):
        url = 'https://example.org/path?a=1&b="two"\\x#frag'
        tok = self.token("c", 77, url)
        before = time.time()
        status, headers, body = self.request("GET", "/c/" + tok, headers={"User-Agent": "UA"})
        self.assertEqual(status, 302)
        self.assertEqual(headers["Location"], url)
        self.assert_common_headers(headers)
        jobs = self.wait_jobs(1)
        self.assertEqual(len(jobs), 1)
        self.assert_job(jobs[0], "click", 77, "UA", url=url, before=before)
        # whatever is added to the link, the redirect goes to the signed URL (and the click, a repeat
        # within http.public_repeat_window, is not recorded again)
        for extra in ("?url=https://evil.example/", "?next=//evil.example", "#https://evil.example/"):
            status, headers, _ = self.request("GET", "/c/" + tok + extra)
            self.assertEqual(status, 302, extra)
            self.assertEqual(headers["Location"], url, extra)
        # a token whose URL was changed, with its MAC kept, redirects nowhere
        payload, mac = tok.split(".")
        evil = b64(bytes([1, ord("c")]) + struct.pack(">q", 77) + b"https://evil.example/") + "." + mac
        status, headers, _ = self.request("GET", "/c/" + evil)
        self.assertEqual(status, 404)
        self.assertIsNone(headers["Location"])
        self.assert_nothing_recorded_but([("click", 77, url)])
        self.assertRegex(self.metrics(), r'(?m)^outreach_public_events_repeated_total\{event="click"\} 3$')

    def test_a_repeated_open_or_click_is_recorded_once_per_window(self):
        """A mail client that loads the pixel again, or a script fetching one link in a loop, adds no
        event within http.public_repeat_window (60 s by default): each is answered as the first was.
        Another message, another link of the message or another kind is recorded; an unsubscribe
        always is."""
        url_a, url_b = "https://example.org/a", "https://example.org/b"
        for _ in range(3):
            self.assertEqual(self.request("GET", "/o/" + self.token("o", 11))[:3:2], (200, GIF))
            status, headers, _ = self.request("GET", "/c/" + self.token("c", 11, url_a))
            self.assertEqual((status, headers["Location"]), (302, url_a))
        self.request("GET", "/c/" + self.token("c", 11, url_b))
        self.request("GET", "/o/" + self.token("o", 12))
        for _ in range(2):
            self.assertEqual(self.request("POST", "/u/" + self.token("u", 11))[0], 200)
        self.assert_nothing_recorded_but([("open", 11, None), ("click", 11, url_a), ("click", 11, url_b),
                                          ("open", 12, None), ("unsubscribe", 11, None), ("unsubscribe", 11, None)])
        body = self.wait_for("the enqueued counters", lambda: (lambda b: re.search(
            r'^outreach_public_events_enqueued_total\{event="open"\} 3$', b, re.M) and b)(self.metrics()))
        for line in ('outreach_public_events_repeated_total{event="open"} 2',
                     'outreach_public_events_repeated_total{event="click"} 2',
                     'outreach_public_events_enqueued_total{event="click"} 2',
                     'outreach_public_requests_total{route="open",code="200"} 5'):
            self.assertRegex(body, "(?m)^" + re.escape(line) + "$")

        # after the window, the same open is recorded again; with 0, every one is
        self.restart(OUTREACH_HTTP_PUBLIC_REPEAT_WINDOW="2")
        self.redis().delete("queue:campaigns")
        self.request("GET", "/o/" + self.token("o", 13))
        self.request("GET", "/o/" + self.token("o", 13))
        time.sleep(2.1)
        self.request("GET", "/o/" + self.token("o", 13))
        self.assert_nothing_recorded_but([("open", 13, None)] * 2)
        self.restart(OUTREACH_HTTP_PUBLIC_REPEAT_WINDOW="0")
        self.redis().delete("queue:campaigns")
        for _ in range(3):
            self.request("GET", "/c/" + self.token("c", 14, url_a))
        self.assert_nothing_recorded_but([("click", 14, url_a)] * 3)
        self.assertRegex(self.metrics(), r'(?m)^outreach_public_events_repeated_total\{event="click"\} 0$')

    def test_unsubscribe_page_records_nothing(self):
        tok = self.token("u", 5)
        status, headers, body = self.request("GET", "/u/" + tok, headers={"User-Agent": "LinkScanner/1.0"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
        self.assertEqual(headers["Content-Security-Policy"], CSP)
        self.assert_common_headers(headers)
        page = body.decode()
        self.assertIn("Unsubscribe from these emails?", page)
        form = re.search(r"<form[^>]*>", page).group(0)
        self.assertRegex(form, r'method="post"')
        self.assertNotIn("action=", form)  # posts to the page's own URL
        self.assertNotIn("<script", page.lower())
        self.assert_nothing_recorded()

    def test_unsubscribe_one_click_post(self):
        before = time.time()
        # RFC 8058, as a mail provider sends it
        status, headers, body = self.request(
            "POST", "/u/" + self.token("u", 31), body="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Provider\x7f\x01One-Click"})
        self.assertEqual(status, 200)
        self.assertIn("You are unsubscribed", body.decode())
        self.assertEqual(headers["Content-Security-Policy"], CSP)
        self.assert_common_headers(headers)
        # the same as multipart/form-data
        boundary = "b0undary"
        multipart = ("--%s\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--%s--\r\n"
                     % (boundary, boundary))
        status, _, body = self.request("POST", "/u/" + self.token("u", 32), body=multipart, headers={
            "Content-Type": "multipart/form-data; boundary=" + boundary, "User-Agent": "x" * 300})
        self.assertEqual(status, 200)
        self.assertIn("You are unsubscribed", body.decode())
        jobs = self.wait_jobs(2)
        self.assertEqual(len(jobs), 2)
        self.assert_job(jobs[0], "unsubscribe", 31, "ProviderOne-Click", before=before)
        self.assert_job(jobs[1], "unsubscribe", 32, "x" * 200, before=before)

    def test_bad_tokens_get_404_and_record_nothing(self):
        other_key = base64.b64encode(os.urandom(32))
        o = self.token("o", 8)
        c = self.token("c", 8, "https://example.org/")
        u = self.token("u", 8)
        payload, mac = o.split(".")
        raw = base64.urlsafe_b64decode(payload + "==")
        v2 = b"\x02" + raw[1:]
        # the same bytes, spelled with an unused low bit set in the last character
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        noncanonical = payload[:-1] + alphabet[alphabet.index(payload[-1]) | 1]
        self.assertNotEqual(noncanonical, payload)
        self.assertEqual(base64.urlsafe_b64decode(noncanonical + "=="), raw)
        cases = {
            "forged MAC": "/o/" + payload + "." + b64(os.urandom(32)),
            "truncated": "/o/" + o[:-3],
            "truncated payload": "/o/" + payload[:-2] + "." + mac,
            "no MAC": "/o/" + payload,
            "other key": "/o/" + make_token(other_key, "o", 8),
            "altered id": "/o/" + b64(raw[:2] + struct.pack(">q", 9)) + "." + mac,
            "padded": "/o/" + o + "=",
            "non-canonical base64": "/o/" + noncanonical + "." + mac,
            "version 2": "/o/" + b64(v2) + "." + b64(hmac.new(self.key, v2, hashlib.sha256).digest()),
            "open under /c/": "/c/" + o,
            "open under /u/ (GET)": "/u/" + o,
            "click under /o/": "/o/" + c,
            "unsubscribe under /o/": "/o/" + u,
            "empty": "/o/",
            "percent-encoded": "/o/" + o.replace(".", "%2E"),
            "trailing slash": "/o/" + o + "/",
        }
        for what, path in cases.items():
            with self.subTest(what):
                status, headers, _ = self.request("GET", path)
                self.assertEqual(status, 404)
                self.assert_common_headers(headers)
                self.assertIsNone(headers["Location"])
        for what, path in (("open token", "/u/" + o), ("other key", "/u/" + make_token(other_key, "u", 8))):
            with self.subTest("POST " + what):
                status, _, _ = self.request("POST", path, body="List-Unsubscribe=One-Click",
                                            headers={"Content-Type": "application/x-www-form-urlencoded"})
                self.assertEqual(status, 404)
        self.assert_nothing_recorded()

    def test_unknown_paths_and_wrong_methods(self):
        o, u = self.token("o", 3), self.token("u", 3)
        for path in ("/", "/o", "/healthz", "/metrics", "/readyz", "/x/" + o, "/oo/" + o, "/O/" + o):
            with self.subTest(path):
                status, headers, _ = self.request("GET", path)
                self.assertEqual(status, 404)
                self.assert_common_headers(headers)
        for method, path, allow in (("POST", "/o/" + o, "GET, HEAD"), ("PUT", "/c/" + o, "GET, HEAD"),
                                    ("DELETE", "/u/" + u, "GET, HEAD, POST"),
                                    ("OPTIONS", "/u/" + u, "GET, HEAD, POST"), ("PATCH", "/u/" + u, "GET, HEAD, POST")):
            with self.subTest(method + " " + path[:3]):
                status, headers, _ = self.request(method, path)
                self.assertEqual(status, 405)
                self.assertEqual(headers["Allow"], allow)
                self.assert_common_headers(headers)
        status, headers, _ = self.request("GET", "/o/" + "A" * 5000)
        self.assertEqual(status, 414)
        self.assert_common_headers(headers)
        status, headers, _ = self.request("POST", "/u/" + u, body="x" * 5000,
                                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 413)
        self.assert_common_headers(headers)
        self.assert_nothing_recorded()

    def raw(self, request):
        """The whole answer to a raw HTTP/1.1 request, read until the listener closes."""
        with socket.create_connection(("127.0.0.1", self.d.public), timeout=10) as sock:
            sock.sendall(request.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data

    def test_head_is_answered_as_get_without_body_and_records_nothing(self):
        """Link checkers send HEAD (RFC 9110: wherever GET works): the same status and headers as a
        GET, no body, and nothing recorded (no open, no click)."""
        for path, status, header in (("/o/" + self.token("o", 1), 200, "Content-Type: image/gif"),
                                     ("/c/" + self.token("c", 1, "https://example.org/a"), 302,
                                      "Location: https://example.org/a"),
                                     ("/u/" + self.token("u", 1), 200, "Content-Type: text/html; charset=utf-8")):
            with self.subTest(path[:3]):
                data = self.raw("HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
                head, _, body = data.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 %d " % status), head)
                self.assertIn(header.encode(), head.split(b"\r\n"))
                self.assertEqual(body, b"")
                if path[1] != "c":  # the length a GET gets (a GET of /u/ records nothing either)
                    get_body = GIF if path[1] == "o" else self.request("GET", path)[2]
                    self.assertIn(b"Content-Length: %d" % len(get_body), head.split(b"\r\n"))
        self.assert_nothing_recorded()

    # --- metrics, outages, reload ------------------------------------------------------------------
    def test_counters_on_the_private_metrics(self):
        self.request("GET", "/o/" + self.token("o", 1))
        self.request("GET", "/o/" + self.token("o", 2))
        self.request("GET", "/c/" + self.token("c", 3, "http://example.org/"))
        self.request("POST", "/u/" + self.token("u", 4))
        self.request("GET", "/u/" + self.token("u", 4))
        self.request("GET", "/o/bad.token")
        self.request("PUT", "/u/x")
        self.wait_jobs(4)
        body = self.wait_for("the enqueued counters", lambda: (lambda b: re.search(
            r'^outreach_public_events_enqueued_total\{event="unsubscribe"\} 1$', b, re.M) and b)(self.metrics()))
        for line in ('outreach_public_requests_total{route="open",code="200"} 2',
                     'outreach_public_requests_total{route="open",code="404"} 1',
                     'outreach_public_requests_total{route="click",code="302"} 1',
                     'outreach_public_requests_total{route="unsubscribe",code="200"} 2',
                     'outreach_public_requests_total{route="unsubscribe",code="405"} 1',
                     'outreach_public_events_enqueued_total{event="open"} 2',
                     'outreach_public_events_enqueued_total{event="click"} 1',
                     'outreach_public_enqueue_failures_total 0'):
            self.assertRegex(body, "(?m)^" + re.escape(line) + "$")
        p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_redis_down_hits_still_answered_and_failures_counted(self):
        sock = harness.STACK["OUTREACH_REDIS_SOCKET"]
        subprocess.run(["redis-cli", "-s", sock, "shutdown", "nosave"], capture_output=True)
        try:
            self.d.wait_log("redis: connection lost")
            for i in range(5):
                status, _, body = self.request("GET", "/o/" + self.token("o", i))
                self.assertEqual((status, body), (200, GIF))
                status, headers, _ = self.request("GET", "/c/" + self.token("c", i, "https://example.org/x"))
                self.assertEqual((status, headers["Location"]), (302, "https://example.org/x"))
            # an unsubscribe that could not be recorded says so, rather than pretending
            status, headers, body = self.request("POST", "/u/" + self.token("u", 1))
            self.assertEqual(status, 503)
            self.assertEqual(headers["Retry-After"], "120")
            self.assertIn("try again", body.decode())
            self.assertRegex(self.metrics(), r"(?m)^outreach_public_enqueue_failures_total 11$")
            # logged, but not once per hit
            self.d.wait_log(r"campaign event\(s\) not enqueued")
            self.assertEqual(len(re.findall(r"campaign event\(s\) not enqueued", self.d.log())), 1, self.d.log())
        finally:
            subprocess.run(["bash", str(harness.ROOT / "scripts" / "stack"), "start"], capture_output=True)
        self.d.wait_log("connected to redis", since=self.d.wait_log("redis: connection lost").end())
        self.wait_for("enqueueing again", lambda: self.request("GET", "/o/" + self.token("o", 100))[0] == 200
                      and self.jobs())
        self.assertEqual(self.jobs()[0]["args"][0]["message_id"], 100)
        # an open lost in the outage is no repeat: loaded again within the window, it is recorded
        self.request("GET", "/o/" + self.token("o", 0))
        self.assertEqual([j["args"][0]["message_id"] for j in self.wait_jobs(2)][-1], 0)

    def restart(self, **settings):
        """outreachd again, on the same ports, with settings (OUTREACH_... variables) added."""
        self.d.kill()
        d = self.start_bin("outreachd", "-c", harness.CONFIG, env=dict({
            "OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % self.d.port,
            "OUTREACH_HTTP_PUBLIC_LISTEN": "127.0.0.1:%d" % self.d.public,
            "OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE": self.key_file}, **settings))
        d.port, d.public = self.d.port, self.d.public
        self.d = d
        d.wait_log(r"outreachd \S+ ready")
        return d

    def test_a_stalled_redis_caps_what_waits(self):
        """While Redis accepts no writes, at most 10,000 events wait; the rest are dropped and counted,
        and every hit is either enqueued or counted as a failure."""
        # every hit of the one token counts: no repeat is left out
        d = self.restart(OUTREACH_REDIS_TIMEOUT="60000", OUTREACH_HTTP_PUBLIC_REPEAT_WINDOW="0")
        r = self.redis()
        r.execute_command("CLIENT", "PAUSE", "50000", "WRITE")  # within redis.timeout: no reconnect
        try:
            url = "http://127.0.0.1:%d/o/%s" % (d.public, self.token("o", 7))
            for _ in range(20):  # until more than 10,000 hits were served, however fast the machine
                out = subprocess.run(["wrk", "-t1", "-c4", "-d2s", url], capture_output=True, text=True,
                                     check=True).stdout
                body = self.metrics()
                served = int(re.search(r'(?m)^outreach_public_requests_total\{route="open",code="200"\} (\d+)$',
                                       body).group(1))
                if served > 10000:
                    break
            pending = int(re.search(r"(?m)^outreach_public_pending_events (\d+)$", body).group(1))
            self.assertGreater(served, 10000, out)
            self.assertEqual(pending, 10000)
            # an unsubscribe that cannot wait is refused at once, not left hanging
            status, _, _ = self.request("POST", "/u/" + self.token("u", 7))
            self.assertEqual(status, 503)
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        body = self.wait_for("the waiting events", lambda: (lambda b: re.search(
            r"(?m)^outreach_public_pending_events 0$", b) and b)(self.metrics()), timeout=60)
        enqueued = int(re.search(r'(?m)^outreach_public_events_enqueued_total\{event="open"\} (\d+)$', body).group(1))
        failures = int(re.search(r"(?m)^outreach_public_enqueue_failures_total (\d+)$", body).group(1))
        self.assertEqual(enqueued, 10000)
        self.assertEqual(enqueued + failures, served + 1)  # the refused unsubscribe counts as a failure
        self.assertEqual(r.llen("queue:campaigns"), enqueued)
        status, _, _ = self.request("POST", "/u/" + self.token("u", 8))
        self.assertEqual(status, 200)

    def test_a_redis_that_stops_answering_is_dropped_after_redis_timeout(self):
        """A Redis that takes commands and answers none (paused, frozen, a network black hole) is
        dropped after redis.timeout: the unsubscribe waiting on it is answered 503 then, not when
        Redis answers again, and outreachd connects anew and enqueues once Redis answers."""
        d = self.restart(OUTREACH_REDIS_TIMEOUT="1000")
        r = self.redis()
        r.execute_command("CLIENT", "PAUSE", "120000", "WRITE")  # far longer than the request may wait
        try:
            self.assertEqual(self.request("GET", "/o/" + self.token("o", 21))[0], 200)  # lost with the push
            status, _, _ = self.request("POST", "/u/" + self.token("u", 7))
            self.assertEqual(status, 503)
            # the line is written before the 503 goes out, but read from the pipe by another thread
            mark = d.wait_log("no reply for 1000 ms: dropping the connection").end()
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        d.wait_log("connected to redis", since=mark)
        status, _, _ = self.request("POST", "/u/" + self.token("u", 8))
        self.assertEqual(status, 200)
        # the open whose push was lost is no repeat: loaded again within the window, it is recorded
        self.request("GET", "/o/" + self.token("o", 21))
        self.assertEqual([j["args"][0]["message_id"] for j in self.wait_jobs(2)][-1], 21)
        self.assertIn(8, [job["args"][0]["message_id"] for job in self.jobs()])

    def test_reload_reads_a_rotated_key(self):
        self.d.kill()
        key_file = os.path.join(self.tmp, "rotated.key")
        write_key(key_file, self.key)
        d = self.daemon(key_file=key_file)
        old = make_token(self.key, "o", 1)
        self.assertEqual(self.request("GET", "/o/" + old, port=d.public)[0], 200)
        new_key = b"k" * 40
        write_key(key_file, new_key)
        d.reload()
        self.assertEqual(self.request("GET", "/o/" + old, port=d.public)[0], 404)
        self.assertEqual(self.request("GET", "/o/" + make_token(new_key, "o", 2), port=d.public)[0], 200)
        # a key file that became unreadable keeps the running key
        write_key(key_file, b"short")
        d.reload(failure="campaigns.token_key_file")
        self.assertEqual(self.request("GET", "/o/" + make_token(new_key, "o", 3), port=d.public)[0], 200)


    def test_a_rotation_keeps_the_links_of_the_previous_key(self):
        """campaigns.previous_token_key_file holds the key before the last rotation: the links it
        signed (opens, clicks, unsubscribes in inboxes) keep working; the key before that does not.
        Rotating again is: the running key into the previous file, a new key into the key file, SIGHUP."""
        self.d.kill()
        key0, key1, key2 = b"0" * 40, b"1" * 40, b"2" * 40
        key_file, prev_file = os.path.join(self.tmp, "rotation.key"), os.path.join(self.tmp, "rotation.key.previous")
        write_key(key_file, key1)
        write_key(prev_file, key0)
        d = self.daemon(key_file=key_file, previous_key_file=prev_file)
        for key in (key1, key0):
            self.assertEqual(self.request("POST", "/u/" + make_token(key, "u", 1), port=d.public)[0], 200)
            status, headers, _ = self.request("GET", "/c/" + make_token(key, "c", 1, "https://example.org/a"),
                                              port=d.public)
            self.assertEqual((status, headers["Location"]), (302, "https://example.org/a"))
        write_key(prev_file, key1)
        write_key(key_file, key2)
        d.reload()
        for key, status in ((key2, 200), (key1, 200), (key0, 404)):
            self.assertEqual(self.request("POST", "/u/" + make_token(key, "u", 2), port=d.public)[0], status, key)
        # a previous key file that is refused (too short) keeps the running keys
        write_key(prev_file, b"short")
        d.reload(failure="campaigns.previous_token_key_file")
        self.assertEqual(self.request("POST", "/u/" + make_token(key1, "u", 3), port=d.public)[0], 200)


class PublicConfig(harness.Case):
    def check(self, **env):
        return self.run_bin("outreachd", "-c", harness.CONFIG, "--check-config",
                            env={"OUTREACH_" + k.upper(): v for k, v in env.items()})

    def test_public_listen_needs_the_key_file(self):
        p = self.check(http_public_listen="127.0.0.1:9465")
        self.assertEqual(p.returncode, 1)
        self.assertIn("http.public_listen is set but campaigns.token_key_file is not", p.stderr)
        p = self.check(campaigns_previous_token_key_file="/nonexistent/token.key.previous")
        self.assertEqual(p.returncode, 1)
        self.assertIn("campaigns.previous_token_key_file is set but campaigns.token_key_file is not", p.stderr)

    def test_bad_address(self):
        for bad in ("nonsense", "127.0.0.1:99999", "::1:80", ":"):
            with self.subTest(bad):
                p = self.check(http_public_listen=bad)
                self.assertEqual(p.returncode, 1)
                self.assertIn("http.public_listen: '%s' is not host:port" % bad, p.stderr)

    def test_repeat_window_out_of_range(self):
        for bad in ("-1", "3601", "1m"):
            with self.subTest(bad):
                p = self.check(http_public_repeat_window=bad)
                self.assertEqual(p.returncode, 1)
                self.assertIn("http.public_repeat_window", p.stderr)
        self.assertEqual(self.check(http_public_repeat_window="0").returncode, 0)

    def test_bad_key_file_names_file_line_key(self):
        fd, key_file = tempfile.mkstemp()
        os.write(fd, b"too short\n")
        os.close(fd)
        self.addCleanup(os.unlink, key_file)
        conf = self.write_config(open(harness.CONFIG).read().replace(
            "# token_key_file = /etc/outreach/token.key", "token_key_file = " + key_file))
        p = self.run_bin("outreachd", "-c", conf, "--check-config")
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"config: %s:\d+: campaigns.token_key_file: %s: a token key needs 32 to 256 bytes"
                         % (re.escape(conf), re.escape(key_file)))
        p = self.run_bin("outreachd", "-c", conf, "--check-config",
                         env={"OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE": key_file + ".missing"})
        self.assertEqual(p.returncode, 1)
        self.assertIn("campaigns.token_key_file: %s.missing: No such file or directory" % key_file, p.stderr)
        good_key_file = key_file + ".good"
        write_key(good_key_file, b"g" * 32)
        self.addCleanup(os.unlink, good_key_file)
        p = self.run_bin("outreachd", "-c", conf, "--check-config",
                         env={"OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE": good_key_file,
                              "OUTREACH_CAMPAIGNS_PREVIOUS_TOKEN_KEY_FILE": key_file})
        self.assertEqual(p.returncode, 1)
        self.assertIn("campaigns.previous_token_key_file: %s: a token key needs 32 to 256 bytes" % key_file, p.stderr)

    def test_busy_public_port_is_a_clear_error(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        port = s.getsockname()[1]
        fd, key_file = tempfile.mkstemp()
        os.write(fd, b"0123456789abcdef0123456789abcdef\n")
        os.close(fd)
        self.addCleanup(os.unlink, key_file)
        p = self.run_bin("outreachd", "-c", harness.CONFIG, timeout=10, env={
            "OUTREACH_HTTP_LISTEN": "127.0.0.1:%d" % harness.free_port(),
            "OUTREACH_HTTP_PUBLIC_LISTEN": "127.0.0.1:%d" % port, "OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE": key_file})
        self.assertEqual(p.returncode, 1)
        self.assertIn("http.public_listen: cannot listen on 127.0.0.1:%d" % port, p.stderr)


if __name__ == "__main__":
    harness.main()
