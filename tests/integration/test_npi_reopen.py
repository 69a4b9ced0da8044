"""The NPI Registry sync after an NPPES deactivation: the registry shows only active NPIs, so a provider it
returns is active again, and the prospect closed on its deactivation reopens (migrations 016 and 017)."""
import json

import harness
import npi_cases
import npi_replay

POSTAL = "55802"
SEARCH = {"taxonomy_description": "Internal Medicine", "state": "MN", "postal_code": POSTAL}
SAME_DAY_MS = 1354579200000  # 2012-12-04T00:00:00Z: the file's Last Update Date 12/04/2012, to the millisecond
# The registry's providers in POSTAL: 1, 3 and 4 last updated at the file's Last Update Date (the
# same last_updated), 2 and 5 later that day; 4 is never deactivated.
PROVIDERS = (1, 2, 3, 4, 5)
SAME = (1, 3, 4)


def npi(i):
    return "%010d" % (1600000000 + i)


class SyncAfterDeactivation(npi_cases.Replay, npi_cases.SyncSteps, npi_cases.NppesFiles, harness.Case):
    replay_records = [npi_replay.physician(i, POSTAL, updated_ms=SAME_DAY_MS if i in SAME else None)
                      for i in PROVIDERS]

    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, npi_searches, npi_providers RESTART IDENTITY CASCADE")
        self.coord = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Dana Reyes', 'dana@example.org') "
                                  "RETURNING id")
        # The NPPES full file knows the five as prospects of Dana; the deactivation report then takes
        # away all but 4. 5 is a source Dana already works with: it stays active, nothing to reopen.
        rows = [self.provider(npi(i), "DEWEY%d" % i, **{
            "Provider Business Practice Location Address Postal Code": POSTAL}) for i in PROVIDERS]
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(rows), "--kind", "full", "--prospects",
                         "--coordinator", "dana@example.org", check=True)
        self.assertIn("5 rows read", p.stdout)
        self.sql("UPDATE referral_sources SET status = 'active' WHERE npi = %s", (npi(5),))
        deact = self.nppes_file([{"NPI": npi(i), "NPPES Deactivation Date": "02/10/2026"} for i in (1, 2, 3, 5)],
                                header=["NPI", "NPPES Deactivation Date"])
        p = self.run_bin("outreachctl", "import-nppes", deact, "--kind", "deactivation", check=True)
        self.assertIn("3 prospects closed", p.stdout)
        self.assertEqual(self.providers(), [(npi(1), "D", "2026-02-10", "nppes"), (npi(2), "D", "2026-02-10", "nppes"),
                                            (npi(3), "D", "2026-02-10", "nppes"), (npi(4), "A", None, "nppes"),
                                            (npi(5), "D", "2026-02-10", "nppes")])
        self.assertEqual(self.sources(), [(npi(1), "inactive", True), (npi(2), "inactive", True),
                                          (npi(3), "inactive", True), (npi(4), "prospect", False),
                                          (npi(5), "active", False)])
        # The file's rows hold the very last_updated the registry shows for 1, 3 and 4.
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers WHERE last_updated = to_timestamp(%s)",
                                      (SAME_DAY_MS / 1000,)), 5)

    def providers(self):
        return self.sql("SELECT npi, status, deactivation_date::text, origin FROM npi_providers ORDER BY npi")

    def sources(self):
        return self.sql("SELECT npi, status, closed_on_deactivation_at IS NOT NULL FROM referral_sources ORDER BY npi")

    def run_sync(self, sid):
        """(status, seen, created, updated, unchanged, errors, reopened) of a sync of sid."""
        status, seen, created, updated, unchanged, errors, _ = self.sync(sid)
        reopened = self.sql_one("SELECT reopened FROM npi_sync_runs WHERE search_id = %s ORDER BY id DESC LIMIT 1",
                                (sid,))
        return status, seen, created, updated, unchanged, errors, reopened

    def test_a_sync_reactivates_the_providers_and_reopens_their_prospects(self):
        self.sql("UPDATE npi_providers SET fetched_at = '2020-01-01'")
        sid = self.add_search("Duluth", SEARCH)
        w = self.start_worker()
        self.assertEqual(self.run_sync(sid), ("done", 5, 0, 4, 1, 0, 3))
        w.wait_log(r"sync run \d+ of saved search %d done: .*, 4 updated, 1 unchanged, 0 errors, 3 prospects "
                   r"reopened" % sid)
        # Every provider the registry showed is active with no deactivation date, written by the sync
        # even where last_updated is the same (1 and 3); 4, never deactivated and unchanged, is not
        # rewritten.
        self.assertEqual(self.providers(), [(npi(1), "A", None, "api"), (npi(2), "A", None, "api"),
                                            (npi(3), "A", None, "api"), (npi(4), "A", None, "nppes"),
                                            (npi(5), "A", None, "api")])
        self.assertEqual(self.sql("SELECT npi FROM npi_providers WHERE fetched_at = '2020-01-01'"), [(npi(4),)])
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers WHERE last_updated = to_timestamp(%s)",
                                      (SAME_DAY_MS / 1000,)), 3)
        # The three prospects closed on the deactivation are prospects of Dana again; 5 stays active.
        self.assertEqual(self.sources(), [(npi(1), "prospect", False), (npi(2), "prospect", False),
                                          (npi(3), "prospect", False), (npi(4), "prospect", False),
                                          (npi(5), "active", False)])
        self.assertEqual(self.sql_one("SELECT count(DISTINCT coordinator_id) FROM referral_sources"), 1)
        # The operator sees it in the search list.
        p = self.run_bin("outreachctl", "npi", "search", "list", check=True)
        self.assertIn("5 providers, 0 created, 4 updated, 0 errors, 3 prospects reopened", p.stdout)
        p = self.run_bin("outreachctl", "npi", "search", "list", "--json", check=True)
        self.assertEqual([(s["updated"], s["reopened"]) for s in json.loads(p.stdout)], [(4, 3)])

        # A second sync changes nothing: every provider unchanged, nothing reopened, no row written.
        stamps = self.sql("SELECT (SELECT max(fetched_at) FROM npi_providers), "
                          "(SELECT max(updated_at) FROM referral_sources)")
        self.assertEqual(self.run_sync(sid), ("done", 5, 0, 0, 5, 0, 0))
        self.assertEqual(self.sql("SELECT (SELECT max(fetched_at) FROM npi_providers), "
                                  "(SELECT max(updated_at) FROM referral_sources)"), stamps)
        self.assertEqual(self.sources()[0], (npi(1), "prospect", False))
        p = self.run_bin("outreachctl", "npi", "search", "list", check=True)
        self.assertNotIn("reopened", p.stdout)

    def test_a_source_a_coordinator_changed_since_is_left_as_they_set_it(self):
        # Dana took up 1 (active) and let it go again (inactive); 2 she made a prospect herself; 3
        # stays as the deactivation left it.
        self.sql("UPDATE referral_sources SET status = 'active' WHERE npi = %s", (npi(1),))
        self.sql("UPDATE referral_sources SET status = 'inactive' WHERE npi = %s", (npi(1),))
        self.sql("UPDATE referral_sources SET status = 'prospect' WHERE npi = %s", (npi(2),))
        self.assertEqual(self.sources()[:3], [(npi(1), "inactive", False), (npi(2), "prospect", False),
                                              (npi(3), "inactive", True)])
        sid = self.add_search("Duluth", SEARCH)
        w = self.start_worker()
        self.assertEqual(self.run_sync(sid), ("done", 5, 0, 4, 1, 0, 1))
        w.wait_log(r"sync run \d+ of saved search %d done: .*, 1 prospects reopened" % sid)
        # The providers are active again all the same; only 3's prospect reopens.
        self.assertEqual([r[:3] for r in self.providers()], [(npi(i), "A", None) for i in PROVIDERS])
        self.assertEqual(self.sources(), [(npi(1), "inactive", False), (npi(2), "prospect", False),
                                          (npi(3), "prospect", False), (npi(4), "prospect", False),
                                          (npi(5), "active", False)])
        # Deactivated again and shown again by the registry, 1 stays as Dana set it.
        again = self.nppes_file([{"NPI": npi(1), "NPPES Deactivation Date": "04/01/2026"}],
                                header=["NPI", "NPPES Deactivation Date"])
        p = self.run_bin("outreachctl", "import-nppes", again, "--kind", "deactivation", check=True)
        self.assertNotIn("prospects closed", p.stdout)
        self.assertEqual(self.run_sync(sid), ("done", 5, 0, 1, 4, 0, 0))
        self.assertEqual(self.sources()[0], (npi(1), "inactive", False))
        self.assertEqual(self.providers()[0], (npi(1), "A", None, "api"))


if __name__ == "__main__":
    harness.main()
