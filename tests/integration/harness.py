"""Shared helpers for outreach's integration tests: real binaries against the private stack.

Every test class gets a fresh PostgreSQL database; Redis is flushed; processes started by a test are
stopped after it. Results print as TAP-like lines that tests/run counts.
"""
import email
import email.policy
import os
import pathlib
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest

import psycopg2
import redis as redislib

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("BIN", ROOT / "bin")).resolve()
FIXTURES = ROOT / "tests" / "fixtures"
CONFIG = ROOT / "config" / "outreach.conf"


def _stack_env():
    env = {}
    path = ROOT / "var" / "stack.env"
    if path.exists():
        for line in path.read_text().splitlines():
            m = re.match(r"export (\w+)='?(.*?)'?$", line)
            if m:
                env[m.group(1)] = m.group(2)
    return env


STACK = _stack_env()


def _with_db(url, dbname):
    """The stack's libpq URI with another database name."""
    m = re.match(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    if m is None:
        raise ValueError("not a postgresql:// URI: " + url)
    return m.group(1) + "/" + dbname + (m.group(3) or "")


def free_port():
    """A loopback TCP port nobody listens on right now."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _admin_exec(url, statement):
    conn = psycopg2.connect(url)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


class Proc:
    """A started binary whose stderr is collected in the background."""

    def __init__(self, argv, env):
        self.argv = argv
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace")
        self._lines = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.p.stdout:
            with self._lock:
                self._lines.append(line)

    def log(self):
        with self._lock:
            return "".join(self._lines)

    def wait_log(self, regex, timeout=20):
        end = time.time() + timeout
        pat = re.compile(regex)
        while time.time() < end:
            if pat.search(self.log()):
                return True
            if self.p.poll() is not None:
                time.sleep(0.1)
                if pat.search(self.log()):
                    return True
                raise AssertionError("%s exited (%s) before logging /%s/:\n%s"
                                     % (os.path.basename(self.argv[0]), self.p.returncode, regex, self.log()))
            time.sleep(0.02)
        raise AssertionError("%s did not log /%s/ within %s s:\n%s"
                             % (os.path.basename(self.argv[0]), regex, timeout, self.log()))

    def signal(self, sig):
        self.p.send_signal(sig)

    def wait(self, timeout=20):
        rc = self.p.wait(timeout)
        self._thread.join(2)
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()


class Case(unittest.TestCase):
    db_url = None
    env = None

    @classmethod
    def setUpClass(cls):
        admin = STACK.get("OUTREACH_DATABASE_URL") or os.environ["OUTREACH_DATABASE_URL"]
        cls.dbname = "outreach_t_" + secrets.token_hex(4)
        _admin_exec(admin, "CREATE DATABASE " + cls.dbname)
        cls.admin_url = admin
        cls.db_url = _with_db(admin, cls.dbname)
        cls.env = dict(os.environ)
        cls.env.update(STACK)
        cls.env["OUTREACH_DATABASE_URL"] = cls.db_url
        cls.env["OUTREACH_CONFIG"] = str(CONFIG)
        cls.env["BIN"] = str(BIN)
        cls._tmpfiles = []

    @classmethod
    def tearDownClass(cls):
        _admin_exec(cls.admin_url, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % cls.dbname)
        for f in cls._tmpfiles:
            try:
                os.unlink(f)
            except OSError:
                pass

    def setUp(self):
        self._procs = []
        self.redis().flushall()

    def tearDown(self):
        for p in self._procs:
            if p.p.poll() is None:
                p.signal(signal.SIGKILL)
                p.p.wait(10)

    # --- processes ----------------------------------------------------------------------------
    def _env(self, env):
        e = dict(self.env)
        if env:
            e.update(env)
        return e

    def run_bin(self, name, *args, env=None, timeout=60, check=False, input=None):
        p = subprocess.run([str(BIN / name), *map(str, args)], env=self._env(env), capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check:
            self.assertEqual(p.returncode, 0, "%s %s failed:\n%s%s" % (name, " ".join(map(str, args)), p.stdout,
                                                                       p.stderr))
        return p

    def start_bin(self, name, *args, env=None):
        proc = Proc([str(BIN / name), *map(str, args)], self._env(env))
        self._procs.append(proc)
        return proc

    def wait_for(self, what, fn, timeout=15):
        """Polls fn until it returns something true, and returns that; fails after timeout s."""
        end = time.time() + timeout
        while time.time() < end:
            v = fn()
            if v:
                return v
            time.sleep(0.05)
        self.fail("timed out waiting for " + what)

    # --- servers ------------------------------------------------------------------------------
    def sql(self, query, params=()):
        conn = psycopg2.connect(self.db_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def sql_one(self, query, params=()):
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def redis(self):
        sock = STACK.get("OUTREACH_REDIS_SOCKET")
        if sock:
            return redislib.Redis(unix_socket_path=sock, decode_responses=True)
        return redislib.Redis.from_url(os.environ["OUTREACH_REDIS_URL"], decode_responses=True)

    def migrate(self):
        self.run_bin("outreachctl", "-c", CONFIG, "migrate", check=True)

    def maildir_messages(self):
        new = pathlib.Path(STACK["OUTREACH_MAILDIR"]) / "new"
        out = []
        for f in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime):
            with open(f, "rb") as fh:
                out.append(email.message_from_binary_file(fh, policy=email.policy.default))
        return out

    def clear_maildir(self):
        for sub in ("new", "cur", "tmp"):
            d = pathlib.Path(STACK["OUTREACH_MAILDIR"]) / sub
            for f in d.iterdir():
                f.unlink()

    def write_config(self, text):
        fd, path = tempfile.mkstemp(suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        type(self)._tmpfiles.append(path)
        return path


class _TapResult(unittest.TextTestResult):
    def _name(self, test):
        if not hasattr(test, "_testMethodName"):  # an error in setUpClass or tearDownClass
            return str(test)
        return "%s.%s" % (type(test).__name__, test._testMethodName)

    def _diag(self, err):
        text = "".join(traceback.format_exception(*err))
        for line in text.rstrip().splitlines():
            print("# " + line)

    def addSuccess(self, test):
        print("ok - " + self._name(test), flush=True)

    def addFailure(self, test, err):
        print("not ok - " + self._name(test), flush=True)
        self._diag(err)
        self.failures.append((test, ""))

    def addError(self, test, err):
        print("not ok - " + self._name(test), flush=True)
        self._diag(err)
        self.errors.append((test, ""))

    def addSkip(self, test, reason):
        print("ok - %s # SKIP %s" % (self._name(test), reason), flush=True)


def main():
    module = sys.modules["__main__"]
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    if len(sys.argv) > 1:  # run only the tests whose names contain the arguments
        flat = []

        def walk(s):
            for t in s:
                if isinstance(t, unittest.TestSuite):
                    walk(t)
                else:
                    flat.append(t)
        walk(suite)
        suite = unittest.TestSuite([t for t in flat if any(a in t.id() for a in sys.argv[1:])])
    runner = unittest.TextTestRunner(resultclass=_TapResult, stream=open(os.devnull, "w"), verbosity=0)
    result = runner.run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
