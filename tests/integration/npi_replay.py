"""A local stand-in for the NPI Registry API v2.1, built from the real recorded answers.

Providers are made from the real records of tests/fixtures/npi by varying their NPI, name and postal
code while keeping the real structure; a third of them are served in the older form (number and
epochs as integers, epochs in seconds, basic.sex, addresses in the other order). The server applies
the API's rules: limit at most 200, skip at most 1000 (a larger skip is treated as 1000),
result_count the size of the page, errors served with HTTP 200 using the real error bodies, and on
demand an HTTP 500 now and then, a slow answer, or a pause before every answer.

    python3 tests/integration/npi_replay.py --port 8089     # serve the generated set by hand
"""
import copy
import http.server
import json
import pathlib
import threading
import time
import urllib.parse

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "npi"


def _load(name):
    return json.loads((FIXTURES / name).read_text())


def _raw(name):
    return (FIXTURES / name).read_bytes()


PHYSICIAN = _load("api_npi1_individual_physician_2022.json")["results"][0]
ORGANIZATION = _load("api_npi2_organization_2024.json")["results"][0]
ERROR_NO_CRITERIA = _raw("api_error_no_valid_search_criteria.json")
ERROR_ETYPE_ALONE = _raw("api_error_enumeration_type_needs_more_criteria.json")
EMPTY = _raw("api_empty_result.json")

SUFFIXES = ["SON", "MAN", "BERG", "LEY", "TON", "WOOD", "FIELD", "STROM", "QUIST", "LAND"]


def _name(i):
    s = ""
    while True:
        s += SUFFIXES[i % 10]
        i //= 10
        if i == 0:
            return s


def _old_form(r):
    """The pre-2022 form of a record: integers, epochs in seconds, basic.sex, addresses reversed."""
    r["number"] = int(r["number"])
    for k in ("created_epoch", "last_updated_epoch"):
        if k in r:
            r[k] = int(r[k]) // 1000
    b = r["basic"]
    if "gender" in b:
        b["sex"] = b.pop("gender")
    r["addresses"] = list(reversed(r["addresses"]))
    return r


def physician(i, postal, state="MN", old=False, updated_ms=None):
    r = copy.deepcopy(PHYSICIAN)
    r["number"] = "%010d" % (1600000000 + i)
    r["basic"]["last_name"] = "DEWEY" + _name(i)
    r["basic"]["first_name"] = ["PAUL", "ANNA", "MARIA", "JOHN"][i % 4]
    if updated_ms is not None:
        r["last_updated_epoch"] = str(updated_ms)
    for a in r["addresses"]:
        a["postal_code"] = postal
        a["state"] = state
    if i % 5 == 0:  # the primary taxonomy listed second
        r["taxonomies"] = list(reversed(r["taxonomies"]))
    return _old_form(r) if old else r


def organization(i, postal, state="MN", old=False):
    r = copy.deepcopy(ORGANIZATION)
    r["number"] = "%010d" % (1300000000 + i)
    r["basic"]["organization_name"] = "PEACH STATE MEDICAL PRACTICE %d, PC" % i
    # The organization practises internal medicine here (the physician record's real taxonomy list).
    r["taxonomies"] = copy.deepcopy(PHYSICIAN["taxonomies"])
    for a in r["addresses"]:
        if a["address_purpose"] == "LOCATION":
            a["postal_code"] = postal
            a["state"] = state
    return _old_form(r) if old else r


def standard_set():
    """About 2,500 providers: 2,300 internal-medicine providers in Minnesota (1,300 of them in one
    postal code, so that the search has to narrow down to the enumeration type), 200 in Wisconsin."""
    out = []
    for i in range(1000):
        out.append(physician(i, "55%03d" % ((i * 37) % 1000), old=i % 3 == 0))
    for i in range(1000, 1700):
        out.append(physician(i, "55767" if i % 2 else "557671234", old=i % 3 == 0))
    for i in range(600):
        out.append(organization(i, "557674001", old=i % 3 == 1))
    for i in range(1700, 1900):
        out.append(physician(i, "54%03d" % (i % 1000), state="WI", old=i % 3 == 0))
    return out


def location(r):
    for a in r["addresses"]:
        if a["address_purpose"] == "LOCATION":
            return a
    return {}


class Registry:
    """The data and the rules, plus the faults a test asks for."""

    def __init__(self, records=None):
        self.records = sorted(records if records is not None else standard_set(), key=lambda r: int(r["number"]))
        self.lock = threading.Lock()
        self.requests = []          # (query dict, status)
        self.fail_every = 0         # every Nth request answers HTTP 500
        self.slow_requests = set()  # request ordinals (1-based) that answer after slow_seconds
        self.slow_seconds = 0.0
        self.delay = 0.0            # seconds before every answer
        self.user_agents = set()

    def matches(self, r, q):
        loc = location(r)
        if "taxonomy_description" in q:
            want = q["taxonomy_description"].lower()
            if not any(want in (t.get("desc") or "").lower() or want == (t.get("code") or "").lower()
                       for t in r["taxonomies"]):
                return False
        if "state" in q and loc.get("state") != q["state"]:
            return False
        if "city" in q and (loc.get("city") or "").lower() != q["city"].lower():
            return False
        if "postal_code" in q:
            p = q["postal_code"]
            if p.endswith("*"):
                if not loc.get("postal_code", "").startswith(p[:-1]):
                    return False
            elif not loc.get("postal_code", "").startswith(p):
                return False
        if "enumeration_type" in q and r["enumeration_type"] != q["enumeration_type"]:
            return False
        for k in ("first_name", "last_name", "organization_name"):
            if k in q:
                v = (r["basic"].get(k) or "").lower()
                w = q[k].lower()
                if not (v.startswith(w[:-1]) if w.endswith("*") else v == w):
                    return False
        return True

    def matching(self, q):
        return [r for r in self.records if self.matches(r, q)]

    def answer(self, q):
        """(status, body bytes) for a query dict."""
        criteria = set(q) - {"version", "limit", "skip", "pretty", "country_code", "address_purpose"}
        if not criteria:
            return 200, ERROR_NO_CRITERIA
        if criteria <= {"enumeration_type", "state"}:
            return 200, ERROR_ETYPE_ALONE
        limit = min(max(int(q.get("limit", 10)), 1), 200)
        skip = min(max(int(q.get("skip", 0)), 0), 1000)
        page = self.matching(q)[skip:skip + limit]
        if not page:
            return 200, EMPTY
        return 200, json.dumps({"result_count": len(page), "results": page}, indent=4).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        reg = self.server.registry
        q = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).items()}
        with reg.lock:
            n = len(reg.requests) + 1
            reg.user_agents.add(self.headers.get("User-Agent", ""))
            fail = reg.fail_every and n % reg.fail_every == 0
            slow = n in reg.slow_requests
            reg.requests.append((q, 500 if fail else 200))
        if reg.delay:
            time.sleep(reg.delay)
        if slow:
            time.sleep(reg.slow_seconds)
        if fail:
            status, body = 500, b"<html><body>Internal Server Error</body></html>"
        else:
            status, body = reg.answer(q)
        try:
            self.send_response(status)
            # The registry's Content-Type is not to be trusted (text/plain for a while in 2022).
            self.send_header("Content-Type", "text/plain;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def start(registry=None, port=0):
    """Starts the replay server in a thread; returns (server, base_url). server.registry holds the
    data, the counters and the fault knobs; server.shutdown() stops it."""
    srv = Server(("127.0.0.1", port), Handler)
    srv.registry = registry or Registry()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, "http://127.0.0.1:%d/api/" % srv.server_address[1]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8089)
    args = ap.parse_args()
    srv, url = start(port=args.port)
    print("serving %d providers at %s" % (len(srv.registry.records), url), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.shutdown()
