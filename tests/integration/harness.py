"""Shared helpers of outreach's integration tests: the real binaries against the private stack.

Run by tests/run with /usr/bin/python3 (Debian's psycopg2 and redis modules), one file per process,
after `scripts/stack start`; a file also runs on its own: `/usr/bin/python3 tests/integration/test_x.py
[NAME...]` runs the tests whose id contains one of the NAMEs.

    import harness

    class Migrate(harness.Case):
        def test_schema(self):
            self.migrate()
            self.assertEqual(self.sql_one("SELECT count(*) FROM coordinators"), 0)

    if __name__ == "__main__":
        harness.main()

Each test class gets a fresh PostgreSQL database (dropped afterwards); Redis is flushed and the Maildir
emptied before each test (files run one at a time); processes started by a test are killed after it.
Results print as lines `ok - Class.test` / `not ok - Class.test` followed by `# ` diagnostics.
"""
import atexit
import email
import email.policy
import functools
import os
import pathlib
import random
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import psycopg2
import redis as redislib

__unittest = True  # failure tracebacks leave out the harness's own frames, as they do unittest's

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = (ROOT / os.environ.get("BIN", "bin")).resolve()  # an absolute BIN stays as it is
FIXTURES = ROOT / "tests" / "fixtures"
CONFIG = ROOT / "config" / "outreach.conf"
STACK_ENV = ROOT / "var" / "stack.env"


def _read_stack_env():
    """The OUTREACH_* variables of the private stack: var/stack.env, else the environment."""
    env = {k: v for k, v in os.environ.items() if k.startswith("OUTREACH_")}
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, value = words[1].split("=", 1)
                env[key] = value
    return env


# The stack's variables (OUTREACH_DATABASE_URL, OUTREACH_REDIS_SOCKET, OUTREACH_MAILDIR, ...).
STACK = _read_stack_env()


def _stack(key):
    try:
        return STACK[key]
    except KeyError:
        raise RuntimeError("%s is not set: is the private stack running? (bash scripts/stack start)" % key) from None


def free_port():
    """A free loopback TCP port, outside the range the kernel gives outgoing connections."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 20000..32000")


def with_database(url, dbname):
    """The libpq URI `url` naming database `dbname` instead (host, user and options kept)."""
    m = re.match(r"^(postgres(?:ql)?://[^/?#]*)(/[^?#]*)?(\?[^#]*)?$", url)
    if m is None:
        raise ValueError("not a postgresql:// URI: " + url)
    return m.group(1) + "/" + dbname + (m.group(3) or "")


def _admin_exec(url, statement):
    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


# Every process started and not yet reaped, to kill them when the file is interrupted.
_live = set()
_live_lock = threading.Lock()


def _kill_live():
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.kill()


atexit.register(_kill_live)


class Proc:
    """A started binary; its stderr (and stdout) are collected by a background thread, and by log()
    itself, which first reads what waits in the pipe: log() holds every line the process wrote before
    the call, so a test may read it right after the action that logs.

    `p` is the subprocess.Popen object, `name` the binary's name."""

    def __init__(self, argv, env, failure=AssertionError):
        self.argv = [str(a) for a in argv]
        self.name = os.path.basename(self.argv[0])
        self._failure = failure
        self._reported = False  # a sanitizer report already failed a test
        self._out = bytearray()  # what the process wrote so far, read under _lock
        self._text = ""  # _out[:_decoded] decoded: complete lines, kept so that each is decoded once
        self._decoded = 0
        self._eof = False
        self._lock = threading.Lock()
        # A process group of its own, so that kill() also ends what the process started.
        self.p = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        with _live_lock:
            _live.add(self)
        self._thread = threading.Thread(target=self._read, name="log " + self.name, daemon=True)
        self._thread.start()

    @property
    def pid(self):
        return self.p.pid

    @property
    def returncode(self):
        return self.p.poll()

    def running(self):
        return self.p.poll() is None

    def _read(self):
        fd = self.p.stdout.fileno()
        os.set_blocking(fd, False)
        poller = select.poll()  # any fd number, unlike select.select
        poller.register(fd, select.POLLIN)
        while not self._eof:
            poller.poll()
            with self._lock:
                self._drain()
        self.p.stdout.close()

    def _drain(self):
        """Moves what waits in the pipe into _out (under _lock; none once the pipe is at its end)."""
        while not self._eof:
            try:
                data = os.read(self.p.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                return
            if data:
                self._out += data
            else:
                self._eof = True

    def log(self):
        """Everything the process wrote so far: its complete lines (all of it once it has ended)."""
        with self._lock:
            self._drain()
            end = len(self._out) if self._eof else self._out.rfind(b"\n", self._decoded) + 1
            if end > self._decoded:
                self._text += self._out[self._decoded:end].decode("utf-8", "replace")
                self._decoded = end
            return self._text

    def mark(self):
        """The current length of the log, for wait_log(..., since=mark)."""
        return len(self.log())

    def wait_log(self, regex, timeout=20, since=0):
        """Waits until the log (from offset `since`) matches `regex` (re.MULTILINE) and returns the
        match; fails the test with the log so far on timeout or if the process exits first."""
        pat = re.compile(regex, re.MULTILINE)
        end = time.monotonic() + timeout
        while True:
            m = pat.search(self.log(), since)
            if m:
                return m
            if self.p.poll() is not None:
                self._thread.join(2)  # the last lines
                m = pat.search(self.log(), since)
                if m:
                    return m
                raise self._failure("%s exited (%s) before logging /%s/; its log:\n%s"
                                    % (self.name, _status(self.p.returncode), regex, self.log()))
            if time.monotonic() > end:
                raise self._failure("%s did not log /%s/ within %s s; its log:\n%s"
                                    % (self.name, regex, timeout, self.log()))
            time.sleep(0.02)

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def reload(self, failure=None, restart=None, timeout=20):
        """SIGHUP, then waits for the outcome the process logs, and returns the log's mark from before
        the signal. Without failure, the reload must succeed; with it, it must be refused with a
        message matching that pattern. A warning that a key takes effect only after a restart fails
        the test, unless restart is a pattern matching the whole list of keys it names."""
        mark = self.mark()
        self.signal(signal.SIGHUP)
        if failure is None:
            self.wait_log(r"configuration reloaded", timeout, since=mark)
        else:
            self.wait_log(r"reload failed, keeping the running configuration: .*(?:%s)" % failure, timeout, since=mark)
        # Logged before the outcome, by the same thread.
        warned = re.findall(r"warning: reload: (.*) changed; the new value takes effect after a restart",
                            self.log()[mark:])
        if restart is not None:
            if not warned or not all(re.fullmatch(restart, w) for w in warned):
                raise self._failure("%s did not warn that exactly /%s/ takes effect after a restart; its log since "
                                    "the reload:\n%s" % (self.name, restart, self.log()[mark:]))
        elif warned:
            raise self._failure("%s: reload warned that %s takes effect only after a restart"
                                % (self.name, ", ".join(warned)))
        return mark

    def wait(self, timeout=20):
        """Waits for the process to exit and returns its returncode (-N: killed by signal N); fails
        the test if the sanitizers reported an error."""
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self._failure("%s did not exit within %s s; its log:\n%s"
                                % (self.name, timeout, self.log())) from None
        self._reaped()
        self._check(rc)
        return rc

    def _check(self, rc):
        """Fails the test if the sanitizers reported an error (once per process)."""
        report = None if self._reported else sanitizer_report(self.log())
        if report:
            self._reported = True
            raise self._failure("%s (%s): the sanitizers reported an error:\n%s" % (self.name, _status(rc), report))

    def finish(self):
        """kill(), then fails the test if the sanitizers reported an error while the process ran
        (ThreadSanitizer reports a race and carries on): what start_bin registers for after the test."""
        self.kill()
        self._check(self.p.returncode)

    def kill(self):
        """SIGKILL to the process and its process group, then reap."""
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._reaped()

    def _reaped(self):
        self._thread.join(2)
        with _live_lock:
            _live.discard(self)

    def __repr__(self):
        return "<Proc %s pid %d>" % (self.name, self.p.pid)


# A report of AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer (BIN=build/san/bin), or
# of ThreadSanitizer (BIN=build/tsan/bin). Its exit status alone does not always show it: a leak found
# at an exit(1) still exits non-zero, as an error path was expected to, UBSan exits 1 like any
# failure, and a data race changes no exit status until the process ends.
_SANITIZER_RE = re.compile(r"^==\d+==(?:ERROR: \w*Sanitizer|\w*Sanitizer has encountered)|: runtime error: "
                           r"|^WARNING: ThreadSanitizer: ", re.MULTILINE)


# outreachctl is one thread that releases everything before it exits, also when a command fails. What
# a failing command still held at its exit sits in its stack frames, which LeakSanitizer would take
# for live memory: for it, run_bin has LeakSanitizer search only globals (the sanitizer build only;
# an LSAN_OPTIONS of the environment wins).
_LSAN_OPTIONS = {"outreachctl": "use_stacks=0:use_registers=0"}


def sanitizer_report(text):
    """The sanitizer report in a process's output (from its first line), or None."""
    m = _SANITIZER_RE.search(text or "")
    if m is None:
        return None
    return text[text.rfind("\n", 0, m.start()) + 1:]


def _status(rc):
    if rc is not None and rc < 0:
        try:
            return "signal " + signal.Signals(-rc).name
        except ValueError:
            return "signal %d" % -rc
    return "status %s" % rc


class _hybrid:
    """A method usable on the test (self.sql(...)) and on its class (cls.sql(...) in setUpClass)."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj, owner):
        return functools.partial(self.fn, owner if obj is None else obj)


def _register(target, fn, *args):
    """Runs fn(*args) after the test, or after the class when target is the class."""
    if isinstance(target, type):
        target.addClassCleanup(fn, *args)
    else:
        target.addCleanup(fn, *args)


class Case(unittest.TestCase):
    """Base class of the integration tests: a fresh database per class, clean Redis and Maildir per test."""

    db_url = None  # libpq URI of this class's database
    env = None  # environment of the binaries: os.environ + the stack + OUTREACH_DATABASE_URL=db_url
    dbname = None
    admin_url = None  # the stack's own database, for CREATE/DROP DATABASE

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin_url = _stack("OUTREACH_DATABASE_URL")
        cls.dbname = "outreach_t_" + secrets.token_hex(6)
        _admin_exec(cls.admin_url, 'CREATE DATABASE "%s"' % cls.dbname)
        cls.addClassCleanup(_admin_exec, cls.admin_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % cls.dbname)
        cls.db_url = with_database(cls.admin_url, cls.dbname)
        cls.env = dict(os.environ)
        cls.env.update(STACK)
        cls.env["OUTREACH_DATABASE_URL"] = cls.db_url
        # A port of its own, so that a `make run` of the same checkout does not hold it.
        cls.env["OUTREACH_HTTP_LISTEN"] = "127.0.0.1:%d" % free_port()
        cls.env["OUTREACH_CONFIG"] = str(CONFIG)
        cls.env["BIN"] = str(BIN)
        cls.redis().flushall()
        cls.clear_maildir()

    def setUp(self):
        super().setUp()
        self.redis().flushall()
        self.clear_maildir()

    # --- processes ------------------------------------------------------------------------------
    @_hybrid
    def _env(self, env):
        e = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        return e

    @_hybrid
    def _argv(self, name, args):
        path = BIN / name  # an absolute name stays as it is
        if not os.access(path, os.X_OK):
            raise self.failureException("%s: no such program (build with make, or set BIN)" % path)
        return [str(path), *map(str, args)]

    @_hybrid
    def run_bin(self, name, *args, env=None, timeout=60, check=False, input=None):
        """Runs BIN/name with self.env (+ env; a None value unsets) and returns the CompletedProcess
        (text stdout and stderr). check=True fails the test unless it exits 0; a sanitizer report on
        its stderr fails the test whatever the exit status."""
        argv = self._argv(name, args)
        full_env = self._env(env)
        if name in _LSAN_OPTIONS:
            full_env.setdefault("LSAN_OPTIONS", _LSAN_OPTIONS[name])
        try:
            p = subprocess.run(argv, env=full_env, capture_output=True, text=True, errors="replace",
                               timeout=timeout, input=input)
        except subprocess.TimeoutExpired as e:
            raise self.failureException("%s did not finish within %s s\nstdout:\n%s\nstderr:\n%s"
                                        % (" ".join(argv), timeout, _text(e.stdout), _text(e.stderr))) from None
        report = sanitizer_report(p.stderr)
        if report:
            raise self.failureException("%s (%s): the sanitizers reported an error:\n%s"
                                        % (" ".join(argv), _status(p.returncode), report))
        if check and p.returncode != 0:
            raise self.failureException("%s failed (%s)\nstdout:\n%s\nstderr:\n%s"
                                        % (" ".join(argv), _status(p.returncode), p.stdout, p.stderr))
        return p

    @_hybrid
    def start_bin(self, name, *args, env=None):
        """Starts BIN/name in the background and returns its Proc; it is killed after the test (or
        after the class, when started from setUpClass)."""
        proc = Proc(self._argv(name, args), self._env(env), self.failureException)
        if isinstance(self, type):
            self._class_procs = getattr(self, "_class_procs", [])
            self._class_procs.append(proc)
        else:
            self.__dict__.setdefault("_procs", []).append(proc)
        _register(self, proc.finish)
        return proc

    @_hybrid
    def wait_for(self, what, fn, timeout=15):
        """Polls fn() until it returns something true, and returns that; fails the test after
        timeout s, saying it was waiting for `what`."""
        end = time.monotonic() + timeout
        while True:
            v = fn()
            if v:
                return v
            if time.monotonic() > end:
                raise self.failureException("timed out after %s s waiting for %s" % (timeout, what))
            time.sleep(0.05)

    # --- servers ----------------------------------------------------------------------------------
    @_hybrid
    def sql(self, query, params=()):
        """Runs one statement on the class's database (autocommit); returns its rows as tuples."""
        conn = psycopg2.connect(self.db_url, connect_timeout=10)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    @_hybrid
    def sql_one(self, query, params=()):
        """The first column of the first row, or None."""
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    @_hybrid
    def redis(self):
        """A client (decode_responses=True) of the stack's Redis."""
        sock = STACK.get("OUTREACH_REDIS_SOCKET")
        if sock:
            return redislib.Redis(unix_socket_path=sock, decode_responses=True, socket_timeout=30)
        return redislib.Redis.from_url(_stack("OUTREACH_REDIS_URL"), decode_responses=True, socket_timeout=30)

    @_hybrid
    def migrate(self):
        """outreachctl -c CONFIG migrate on the class's database; fails the test if it fails."""
        return self.run_bin("outreachctl", "-c", CONFIG, "migrate", check=True)

    # --- mail -------------------------------------------------------------------------------------
    @_hybrid
    def maildir_messages(self):
        """The messages the mail catcher received, oldest first, as email.message.EmailMessage."""
        new = pathlib.Path(_stack("OUTREACH_MAILDIR")) / "new"
        files = []
        for f in new.iterdir():
            try:
                files.append((f.stat().st_mtime, f.name, f))
            except FileNotFoundError:  # cleared meanwhile
                pass
        out = []
        for _, _, f in sorted(files):
            with open(f, "rb") as fh:
                out.append(email.message_from_binary_file(fh, policy=email.policy.default))
        return out

    @_hybrid
    def wait_mail(self, count=1, timeout=20):
        """Waits until the Maildir holds at least `count` messages and returns them all."""
        end = time.monotonic() + timeout
        while True:
            msgs = self.maildir_messages()
            if len(msgs) >= count or time.monotonic() > end:
                break
            time.sleep(0.05)
        if len(msgs) < count:
            raise self.failureException("%d message(s) arrived within %s s, expected %d: %s"
                                        % (len(msgs), timeout, count, [m["Subject"] for m in msgs]))
        return msgs

    @_hybrid
    def clear_maildir(self):
        """Deletes every message the mail catcher received."""
        for sub in ("new", "cur", "tmp"):
            d = pathlib.Path(_stack("OUTREACH_MAILDIR")) / sub
            if d.is_dir():
                for f in d.iterdir():
                    try:
                        f.unlink()
                    except FileNotFoundError:
                        pass

    # --- files ------------------------------------------------------------------------------------
    @_hybrid
    def write_file(self, text, prefix="outreach-test-", suffix=""):
        """The path of a new temporary file holding `text` (written as it is, line ends included),
        removed after the test (or class)."""
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix)
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        _register(self, _unlink, path)
        return path

    @_hybrid
    def write_config(self, text):
        """A new temporary configuration file holding `text`, removed after the test (or class)."""
        return self.write_file(text, suffix=".conf")

    def worker_with(self, conf, *extra, queues="default"):
        """A worker on the configuration file conf (with the shipped templates), once ready."""
        w = self.start_bin("outreach-worker", "-c", conf, "--queues", queues, *extra,
                           env={"OUTREACH_ALERTS_TEMPLATE_DIR": str(ROOT / "config" / "templates")})
        w.wait_log(r"ready: identity")
        return w

    def templates_copy(self):
        """A new folder holding a copy of the shipped email templates (config/templates), to edit for
        the test (OUTREACH_ALERTS_TEMPLATE_DIR); removed after it."""
        tmp = tempfile.mkdtemp(prefix="outreach-templates-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for f in (ROOT / "config" / "templates").iterdir():
            shutil.copy(f, tmp)
        return tmp


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _text(b):
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


# --- results -------------------------------------------------------------------------------------
class _TapResult(unittest.TestResult):
    """Prints `ok - Class.test` / `not ok - Class.test` as each test ends, diagnostics as `# ` lines."""

    def _name(self, test):
        if isinstance(test, unittest.case._SubTest):
            return "%s %s" % (self._name(test.test_case), test._subDescription())
        if hasattr(test, "_testMethodName"):
            return "%s.%s" % (type(test).__name__, test._testMethodName)
        # an error in setUpClass, tearDownClass, setUpModule...: "setUpClass (module.Class)"
        m = re.match(r"^(\w+) \((?:.*\.)?(\w+)\)$", str(test))
        return "%s.%s" % (m.group(2), m.group(1)) if m else str(test)

    @staticmethod
    def _emit(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _diag(self, text):
        for line in text.rstrip("\n").splitlines():
            self._emit("# " + line)

    def _fail(self, test, err):
        self._emit("not ok - " + self._name(test))
        text = self._exc_info_to_string(err, getattr(test, "test_case", test))
        self._diag(text)
        # the last lines of the processes the test started, unless the message shows them already
        case = getattr(test, "test_case", test)
        for proc in getattr(case, "_procs", []) + getattr(type(case), "_class_procs", []):
            tail = "\n".join(proc.log().rstrip("\n").splitlines()[-25:])
            if tail and tail not in text:
                self._diag("--- last lines of %s (pid %d, %s):\n%s"
                           % (proc.name, proc.pid, "running" if proc.running() else _status(proc.returncode),
                              tail))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._emit("ok - " + self._name(test))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail(subtest, err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._emit("ok - %s # SKIP %s" % (self._name(test), reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._emit("ok - %s # expected failure" % self._name(test))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._emit("not ok - %s # unexpected success" % self._name(test))


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def _on_signal(sig, _frame):
    sys.stdout.write("# interrupted by %s; killing the processes the tests started\n" % signal.Signals(sig).name)
    sys.stdout.flush()
    _kill_live()
    os._exit(128 + sig)


def main():
    """Runs the tests of the calling module (`if __name__ == "__main__": harness.main()`); the
    arguments, if any, select the tests whose id contains one of them. Exits 1 if any failed."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules["__main__"])
    if len(sys.argv) > 1:
        suite = unittest.TestSuite(t for t in _flatten(suite) if any(a in t.id() for a in sys.argv[1:]))
    result = _TapResult()
    suite.run(result)
    if result.testsRun == 0 and result.wasSuccessful():
        _TapResult._emit("not ok - %s # no tests ran" % os.path.basename(sys.argv[0]))
        sys.exit(1)
    sys.exit(0 if result.wasSuccessful() else 1)
