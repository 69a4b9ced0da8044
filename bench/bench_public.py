"""Benchmark: tracking-pixel hits on outreachd's public listener, each enqueued as a CampaignEventJob.

Runs wrk against /o/<token> (BENCH_SECONDS, default 10, over BENCH_CONNECTIONS, default 8) and, as
the peer, against the same daemon's private /healthz, which answers from the same libevent HTTP
server but checks no token and enqueues nothing. Prints hits/s, latency p50/p99, outreachd's RSS,
and checks that every hit was enqueued: the queue holds exactly as many jobs as the daemon served
pixels (wrk counts only the answers that arrived before it stopped, so it may count up to one
request per connection less). Goal: at least 10,000 hits/s, each enqueued. The one token is hit over
and over, so http.public_repeat_window is 0 here: every hit is recorded, as distinct opens would be.
Exits non-zero only when hits go missing, never on speed.
"""
import base64
import hashlib
import hmac
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import psycopg2

from bench_digest import free_port, rss_kb, with_db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "bin"))
CONFIG = os.path.join(ROOT, "config", "outreach.conf")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
GOAL = 10000


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def open_token(key, message_id):
    payload = bytes([1, ord("o")]) + struct.pack(">q", message_id)
    return b64(payload) + "." + b64(hmac.new(key, payload, hashlib.sha256).digest())


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def metric(port, line_re):
    _, body = get("http://127.0.0.1:%d/metrics" % port)
    m = re.search(r"^%s (\S+)$" % line_re, body, re.M)
    return float(m.group(1)) if m else None


def seconds(text):
    m = re.match(r"([0-9.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def wrk(url):
    """wrk's request count, rate and latency percentiles for SECONDS over CONNECTIONS."""
    out = subprocess.run(["wrk", "-t2", "-c%d" % CONNECTIONS, "-d%ds" % SECONDS, "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"^\s*(\d+) requests in", out, re.M).group(1))
    rate = float(re.search(r"^Requests/sec:\s*([0-9.]+)", out, re.M).group(1))
    pct = {p: seconds(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    return requests, rate, pct, errors.group(0) if errors else None


def main():
    if shutil.which("wrk") is None:
        raise SystemExit("benchmark: wrk is missing (scripts/deps installs it: apt-get install wrk)")
    admin = os.environ["OUTREACH_DATABASE_URL"]
    db = "outreach_bench_public"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
    conn.cursor().execute("CREATE DATABASE %s" % db)
    conn.close()
    env = dict(os.environ, OUTREACH_DATABASE_URL=with_db(admin, db))
    subprocess.run([os.path.join(BIN, "outreachctl"), "-c", CONFIG, "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    tmp = tempfile.mkdtemp(prefix="outreach-bench-public-")
    key = base64.b64encode(os.urandom(32))
    key_file = os.path.join(tmp, "token.key")
    with open(key_file, "wb") as f:
        f.write(key + b"\n")
    port, public = free_port(), free_port()
    env.update(OUTREACH_HTTP_LISTEN="127.0.0.1:%d" % port, OUTREACH_HTTP_PUBLIC_LISTEN="127.0.0.1:%d" % public,
               OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE=key_file, OUTREACH_HTTP_PUBLIC_REPEAT_WINDOW="0")
    redis_cli = ["redis-cli", "-s", os.environ["OUTREACH_REDIS_SOCKET"]]
    subprocess.run(redis_cli + ["del", "queue:campaigns"], stdout=subprocess.DEVNULL, check=True)
    d = subprocess.Popen([os.path.join(BIN, "outreachd"), "-c", CONFIG], env=env, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 30
        while True:
            try:
                if get("http://127.0.0.1:%d/readyz" % port)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > end or d.poll() is not None:
                raise SystemExit("benchmark: outreachd did not become ready")
            time.sleep(0.1)

        print("public listener benchmark: wrk, 2 threads, %d connections, %d s per run" % (CONNECTIONS, SECONDS))
        peer_requests, peer_rate, peer_pct, _ = wrk("http://127.0.0.1:%d/healthz" % port)
        requests, rate, pct, errors = wrk("http://127.0.0.1:%d/o/%s" % (public, open_token(key, 4242)))
        end = time.time() + 30
        while metric(port, "outreach_public_pending_events") and time.time() < end:
            time.sleep(0.1)
        served = metric(port, r'outreach_public_requests_total\{route="open",code="200"\}')
        enqueued = metric(port, r'outreach_public_events_enqueued_total\{event="open"\}')
        failures = metric(port, "outreach_public_enqueue_failures_total")
        queued = int(subprocess.run(redis_cli + ["llen", "queue:campaigns"], capture_output=True, text=True,
                                    check=True).stdout)
        rss = rss_kb(d.pid)
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(30)
        shutil.rmtree(tmp, True)
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
        conn.close()

    print("GET /o/<token>: %.0f hits/s, latency p50 %.2f ms, p99 %.2f ms (goal: %d hits/s, each enqueued): %.1fx the goal"
          % (rate, pct["50"] * 1e3, pct["99"] * 1e3, GOAL, rate / GOAL))
    print("peer, GET /healthz on the same daemon (no token, no enqueue): %.0f requests/s, p50 %.2f ms, p99 %.2f ms;"
          " the pixel runs at %.2fx its rate" % (peer_rate, peer_pct["50"] * 1e3, peer_pct["99"] * 1e3, rate / peer_rate))
    print("hits: wrk counted %d answers, outreachd served %d pixels, enqueued %d events (%d failures); "
          "queue:campaigns holds %d jobs" % (requests, served, enqueued, failures, queued))
    print("outreachd RSS after the run: %.1f MB" % (rss / 1024))
    if errors:
        print("wrk: " + errors)
    if queued != served or enqueued != served or failures or not 0 <= queued - requests <= CONNECTIONS:
        print("benchmark: hits went missing: %d served, %d queued, %d counted by wrk" % (served, queued, requests))
        sys.exit(1)
    print("every hit enqueued: yes")


if __name__ == "__main__":
    main()
