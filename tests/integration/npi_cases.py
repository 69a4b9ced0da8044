"""What the NPI test files share: test case mixins for the NPI Registry replay, the sync of a saved
search by a worker, and NPPES files written as CMS writes them.

    class Sync(npi_cases.Replay, npi_cases.SyncSteps, npi_cases.NppesFiles, harness.Case):
        ...

Each mixin comes before harness.Case among the bases and uses only what harness.Case gives.
"""
import csv
import json

import harness
import npi_replay

NPI_DIR = harness.FIXTURES / "npi"
# The saved search most sync tests use: internal medicine in Minnesota, postal codes 55*.
SEARCH = {"taxonomy_description": "Internal Medicine", "state": "MN", "postal_code": "55"}


class Replay:
    """The local NPI Registry replay for the class, serving replay_records (None: the standard set) at
    cls.base_url; cls.server.registry holds the data and the fault knobs."""
    replay_records = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server, cls.base_url = npi_replay.start(npi_replay.Registry(cls.replay_records))

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        super().tearDownClass()


class SyncSteps:
    """Saved searches synced by a worker against the replay (with Replay): the coordinator
    dana@example.org must exist."""

    def worker_env(self, **extra):
        env = {"OUTREACH_NPI_BASE_URL": self.base_url, "OUTREACH_NPI_REQUEST_INTERVAL_MS": "0",
               "OUTREACH_NPI_RETRY_BACKOFF_MS": "20", "OUTREACH_NPI_TIMEOUT": "2"}
        env.update(extra)
        return env

    def add_search(self, name="IM in MN", criteria=SEARCH):
        p = self.run_bin("outreachctl", "npi", "search", "add", name, "--criteria", json.dumps(criteria),
                         "--coordinator", "dana@example.org", check=True)
        return int(p.stdout.strip())

    def sync(self, search_id, wait=True, timeout=60):
        before = self.sql_one("SELECT count(*) FROM npi_sync_runs WHERE search_id = %s AND status <> 'running'",
                              (search_id,))
        self.run_bin("outreachctl", "npi", "sync", search_id, check=True)
        if wait:
            self.wait_for("the sync run to finish", lambda: self.sql_one(
                "SELECT count(*) FROM npi_sync_runs WHERE search_id = %s AND status <> 'running'",
                (search_id,)) > before, timeout=timeout)
        else:
            return None
        return self.sql("SELECT status, records_seen, created, updated, unchanged, errors, pages_fetched "
                        "FROM npi_sync_runs WHERE search_id = %s ORDER BY id DESC LIMIT 1", (search_id,))[0]

    def start_worker(self, **extra):
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "npi", env=self.worker_env(**extra))
        w.wait_log(r"ready: identity")
        return w


class NppesFiles:
    """NPPES files of the test's own rows, written to the temporary folder."""

    with open(NPI_DIR / "npidata_pfile_header.csv", newline="") as _f:
        HEADER = next(csv.reader(_f))
    del _f

    def nppes_file(self, rows, header=None):
        """Writes rows (dicts by header name) as CMS does: every value quoted, CRLF; returns the path."""
        header = header or self.HEADER
        lines = [",".join('"%s"' % h for h in header)] + [",".join('"%s"' % r.get(h, "") for h in header) for r in rows]
        return self.write_file("".join(line + "\r\n" for line in lines), prefix="npidata_", suffix=".csv")

    @staticmethod
    def provider(npi, last, city="DULUTH", updated="12/04/2012", etype="1", **extra):
        row = {"NPI": npi, "Entity Type Code": etype, "Provider Last Name (Legal Name)": last,
               "Provider First Name": "ANA", "Provider Credential Text": "M.D.",
               "Provider First Line Business Practice Location Address": "1 MAIN ST",
               "Provider Business Practice Location Address City Name": city,
               "Provider Business Practice Location Address State Name": "MN",
               "Provider Business Practice Location Address Postal Code": "55802",
               "Healthcare Provider Taxonomy Code_1": "207R00000X",
               "Healthcare Provider Primary Taxonomy Switch_1": "Y",
               "Provider Enumeration Date": "05/27/2005", "Last Update Date": updated}
        row.update(extra)
        return row
