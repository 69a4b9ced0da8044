"""NPI Registry sync against a local replay of the real API, NUCC taxonomy and NPPES bulk imports."""
import csv
import json
import os
import signal
import time

import harness
import npi_cases
import npi_replay
from npi_cases import NPI_DIR, SEARCH


class NpiSync(npi_cases.Replay, npi_cases.SyncSteps, harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, npi_searches, npi_providers RESTART IDENTITY CASCADE")
        reg = self.server.registry
        reg.requests.clear()
        reg.fail_every, reg.slow_requests, reg.delay = 0, set(), 0.0
        self.coord = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Dana Reyes', 'dana@example.org') "
                                  "RETURNING id")

    def expected(self, criteria=SEARCH):
        q = dict(criteria)
        if "postal_code" in q:
            q["postal_code"] += "*"
        return {str(r["number"]).zfill(10) for r in self.server.registry.matching(q)}

    # --- tests ------------------------------------------------------------------------------------
    def test_search_larger_than_cap_comes_back_complete(self):
        sid = self.add_search()
        self.start_worker()
        want = self.expected()
        self.assertGreater(len(want), 2000)
        status, seen, created, updated, unchanged, errors, pages = self.sync(sid)
        self.assertEqual(status, "done")
        got = {r[0] for r in self.sql("SELECT npi FROM npi_providers")}
        self.assertEqual(got, want)
        self.assertEqual((seen, created, errors), (len(want), len(want), 0))
        self.assertEqual(self.sql_one("SELECT count(*) FROM referral_sources WHERE status = 'prospect' "
                                      "AND coordinator_id = %s", (self.coord,)), len(want))
        # The API's rules were kept: no page over 200, no skip over 1000, a User-Agent on each request.
        for q, _ in self.server.registry.requests:
            self.assertLessEqual(int(q["limit"]), 200)
            self.assertLessEqual(int(q["skip"]), 1000)
            self.assertEqual(q["version"], "2.1")
        self.assertTrue(all(ua.startswith("outreach/") for ua in self.server.registry.user_agents))
        # Both forms of the data, addresses by purpose, the primary taxonomy by its flag.
        rows = self.sql("SELECT p.npi, p.sex, p.primary_taxonomy_code, p.postal_code, p.state, p.last_updated, "
                        "s.specialty_code, s.kind, p.mailing_address->>'city' FROM npi_providers p "
                        "JOIN referral_sources s USING (npi) WHERE p.npi IN ('1600000000', '1600000001', "
                        "'1300000001', '1300000002')")
        by = {r[0]: r for r in rows}
        self.assertEqual(by["1600000000"][1:5], ("M", "207R00000X", "55000", "MN"))  # old form, reversed lists
        self.assertEqual(by["1600000001"][1:5], ("M", "207R00000X", "55037", "MN"))
        self.assertEqual(by["1600000000"][5], by["1600000001"][5])  # seconds and milliseconds agree
        self.assertEqual(by["1300000001"][3:5], ("557674001", "MN"))  # LOCATION, though MAILING is in IL
        self.assertEqual(by["1300000001"][8], "CHICAGO")
        self.assertEqual(by["1300000001"][7], "organization")
        self.assertEqual(by["1600000001"][6], "207R00000X")
        # The registry's taxonomy lists, in its order (the primary second for some), through the arrays.
        records = {str(r["number"]).zfill(10): r for r in self.server.registry.records}
        for npi in ("1600000000", "1600000001", "1300000001"):
            want_tax = [{"code": t["code"], "desc": t["desc"], "state": t["state"], "license": t["license"],
                         "primary": t["primary"] is True} for t in records[npi]["taxonomies"]]
            got = self.sql("SELECT p.taxonomies, taxonomy_codes, taxonomy_primary, taxonomy_descs FROM npi_providers p "
                           "WHERE npi = %s", (npi,))[0]
            self.assertEqual(got, (want_tax, [t["code"] for t in want_tax], [t["primary"] for t in want_tax],
                                   [t["desc"] for t in want_tax]))
        self.assertEqual(self.sql_one("SELECT p.taxonomies->0->>'code' FROM npi_providers p WHERE npi = '1600000000'"),
                         "208000000X")  # listed second by the registry

        # A second sync changes nothing.
        stamp = self.sql_one("SELECT max(updated_at) FROM referral_sources")
        status, seen, created, updated, unchanged, errors, pages = self.sync(sid)
        self.assertEqual((status, seen, created, updated, unchanged), ("done", len(want), 0, 0, len(want)))
        self.assertEqual(self.sql_one("SELECT max(updated_at) FROM referral_sources"), stamp)

    def test_a_postal_code_over_the_cap_is_split_by_name(self):
        # 1,500 internists in one postal code: still at the cap by enumeration type, so the sync asks
        # by the first two characters of the last name (apostrophes and spaces included).
        reg = self.server.registry
        standard = reg.records
        starts = ["SMITH", "O'NEIL", "O BRIEN", "NGUYEN", "DE LA CRUZ", "MILLER"]
        people = []
        for i in range(1500):
            r = npi_replay.physician(i, "559050001" if i % 2 else "55905")
            r["basic"]["last_name"] = starts[i % len(starts)] + npi_replay._name(i)
            people.append(r)
        people += [npi_replay.organization(i, "559051000") for i in range(150)]
        reg.records = sorted(people, key=lambda r: int(r["number"]))
        try:
            crit = {"taxonomy_description": "Internal Medicine", "state": "MN", "postal_code": "55905"}
            sid = self.add_search("Rochester", crit)
            w = self.start_worker()
            status, seen, created, updated, unchanged, errors, pages = self.sync(sid, timeout=180)
            self.assertEqual((status, errors), ("done", 0))
            want = {str(r["number"]).zfill(10) for r in reg.records}
            self.assertEqual({r[0] for r in self.sql("SELECT npi FROM npi_providers")}, want)
            self.assertEqual(seen, 1650)
            w.wait_log(r"query part postal=55905 type=NPI-1 reached the 1200 cap: split in 754")
            names = {q.get("last_name") for q, _ in reg.requests}
            self.assertTrue({"O'*", "O *", "SM*", "ZZ*"} <= names)
            self.assertFalse(any("organization_name" in q for q, _ in reg.requests))  # 150: under the cap
        finally:
            reg.records = standard

    def test_coordinator_fields_survive_a_refresh(self):
        crit = {"taxonomy_description": "Internal Medicine", "state": "MN", "postal_code": "55000"}
        other = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Lee Park', 'lee@example.org') "
                             "RETURNING id")
        src = self.sql_one(
            "INSERT INTO referral_sources (npi, first_name, last_name, status, coordinator_id, notes, motivators, "
            "last_contact_at, email) VALUES ('1600000000', 'P', 'OLDNAME', 'active', %s, 'prefers mornings', "
            "'shorter wait times', '2026-01-05T10:00:00Z', 'dr@example.org') RETURNING id", (other,))
        self.sql("INSERT INTO activities (source_id, coordinator_id, kind, completed_at) VALUES (%s, %s, 'call', "
                 "'2026-01-05T10:00:00Z')", (src, other))
        sid = self.add_search("one zip", crit)
        self.start_worker()
        status, seen, created, updated, *_ = self.sync(sid)
        self.assertEqual(status, "done")
        self.assertEqual(updated, 1)
        row = self.sql("SELECT last_name, first_name, status, coordinator_id, notes, motivators, email, "
                       "last_contact_at::date::text, specialty_code, postal_code FROM referral_sources WHERE id = %s",
                       (src,))[0]
        self.assertEqual(row, ("DEWEYSON", "PAUL", "active", other, "prefers mornings", "shorter wait times",
                               "dr@example.org", "2026-01-05", "207R00000X", "55000"))
        self.assertEqual(self.sql_one("SELECT count(*) FROM activities WHERE source_id = %s", (src,)), 1)

    def test_error_answer_goes_to_dead_with_the_api_message(self):
        sid = self.sql_one("INSERT INTO npi_searches (name, criteria, coordinator_id) VALUES "
                           "('too broad', '{\"enumeration_type\": \"NPI-1\"}', %s) RETURNING id", (self.coord,))
        self.start_worker()
        self.run_bin("outreachctl", "npi", "sync", sid, check=True)
        r = self.redis()
        self.wait_for("the job in dead", lambda: r.zcard("dead") == 1)
        job = json.loads(r.zrange("dead", 0, 0)[0])
        self.assertEqual(job["class"], "NpiSyncJob")
        self.assertEqual(job["error_class"], "NpiRegistryError")
        self.assertIn("enumeration_type requires additional search criteria", job["error_message"])
        self.assertEqual(self.sql("SELECT status, last_error FROM npi_sync_runs WHERE search_id = %s", (sid,)),
                         [("failed", job["error_message"])])
        self.assertEqual(len(self.server.registry.requests), 1)  # not retried

    def test_server_errors_and_a_slow_answer_are_retried(self):
        reg = self.server.registry
        reg.fail_every = 7
        reg.slow_requests, reg.slow_seconds = {3}, 3.5
        sid = self.add_search()
        self.start_worker()
        status, seen, created, updated, unchanged, errors, pages = self.sync(sid, timeout=90)
        self.assertEqual(status, "done")
        self.assertEqual(seen, len(self.expected()))
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers"), len(self.expected()))
        self.assertTrue(any(s == 500 for _, s in reg.requests))
        self.assertEqual(self.redis().zcard("dead"), 0)

    def test_killed_sync_resumes(self):
        reg = self.server.registry
        reg.delay = 0.05
        sid = self.add_search()
        w = self.start_worker()
        self.sync(sid, wait=False)
        self.wait_for("a few pages", lambda: (self.sql_one(
            "SELECT pages_fetched FROM npi_sync_runs WHERE search_id = %s", (sid,)) or 0) >= 8, timeout=30)
        w.signal(signal.SIGKILL)
        w.wait(10)
        fetched = self.sql_one("SELECT pages_fetched FROM npi_sync_runs WHERE search_id = %s", (sid,))
        reg.delay = 0.0
        w2 = self.start_worker()
        self.wait_for("the run to finish", lambda: self.sql_one(
            "SELECT status FROM npi_sync_runs WHERE search_id = %s", (sid,)) == "done", timeout=60)
        w2.wait_log("resuming sync run")
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_sync_runs WHERE search_id = %s", (sid,)), 1)
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers"), len(self.expected()))
        self.assertEqual(self.sql_one("SELECT records_seen FROM npi_sync_runs WHERE search_id = %s", (sid,)),
                         len(self.expected()))
        # Pages taken in before the kill were not asked for again (at most the one in flight).
        keys = [json.dumps(q, sort_keys=True) for q, s in reg.requests if s == 200]
        self.assertLessEqual(len(keys) - len(set(keys)), 1)
        self.assertGreaterEqual(fetched, 8)

    def test_search_commands(self):
        sid = self.add_search()
        p = self.run_bin("outreachctl", "npi", "search", "list", "--json", check=True)
        listed = json.loads(p.stdout)
        self.assertEqual([(s["id"], s["name"], s["coordinator"]) for s in listed], [(sid, "IM in MN",
                                                                                     "dana@example.org")])
        self.assertEqual(listed[0]["criteria"], SEARCH)
        p = self.run_bin("outreachctl", "npi", "search", "add", "bad", "--state", "MN")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("needs a criterion besides state", p.stderr)
        p = self.run_bin("outreachctl", "npi", "search", "add", "cardio", "--taxonomy", "207RC0000X", "--state", "MN",
                         check=True)
        cid = int(p.stdout)
        self.assertEqual(self.sql_one("SELECT criteria->>'taxonomy_code' FROM npi_searches WHERE id = %s", (cid,)),
                         "207RC0000X")
        p = self.run_bin("outreachctl", "npi", "sync", check=True)
        self.assertEqual(len(p.stdout.splitlines()), 2)
        jobs = [json.loads(j) for j in self.redis().lrange("queue:npi", 0, -1)]
        self.assertEqual(sorted(j["args"][0] for j in jobs), sorted([sid, cid]))
        self.assertTrue(all(j["class"] == "NpiSyncJob" and j["queue"] == "npi" for j in jobs))
        self.run_bin("outreachctl", "npi", "search", "remove", "cardio", check=True)
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_searches"), 1)

    def test_search_list_shows_control_characters_visibly(self):
        """A search's name, its coordinator's address and its criteria (jsonb, which keeps DEL and
        U+0080..U+009F as they are) print as escapes in the text list, as they are in --json.
        `npi search add` refuses such criteria; another application may store them."""
        bad_criteria = json.dumps(dict(SEARCH, city="Duluth\u009b2J\x7f"))
        refused = self.run_bin("outreachctl", "npi", "search", "add", "x", "--criteria", bad_criteria)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("city must not contain control characters", refused.stderr)
        sid = self.add_search(name="IM\x1b]0;pwned\x07 in MN")
        self.sql("UPDATE npi_searches SET criteria = %s::jsonb WHERE id = %s", (bad_criteria, sid))
        self.sql("UPDATE coordinators SET email = %s WHERE email = 'dana@example.org'", ("dana\x1b[2J@example.org",))
        text = self.run_bin("outreachctl", "npi", "search", "list", check=True).stdout
        for bad in ("\x1b", "\x07", "\x7f", "\u009b"):
            self.assertNotIn(bad, text)
        self.assertIn("IM\\x1b]0;pwned\\x07 in MN", text)
        self.assertIn("dana\\x1b[2J@example.org", text)
        self.assertIn("Duluth\\u009b2J\\x7f", text)
        listed = json.loads(self.run_bin("outreachctl", "npi", "search", "list", "--json", check=True).stdout)
        self.assertEqual([(s["id"], s["name"], s["criteria"]["city"]) for s in listed],
                         [(sid, "IM\x1b]0;pwned\x07 in MN", "Duluth\u009b2J\x7f")])


class Imports(npi_cases.NppesFiles, harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, npi_providers, taxonomies RESTART IDENTITY CASCADE")

    def test_import_taxonomy(self):
        p = self.run_bin("outreachctl", "import-taxonomy", NPI_DIR / "nucc_taxonomy.csv", check=True)
        self.assertIn("883 codes read", p.stdout)
        self.assertEqual(self.sql_one("SELECT count(*) FROM taxonomies"), 883)
        self.assertEqual(self.sql("SELECT grouping, classification FROM taxonomies WHERE code = '207R00000X'"),
                         [("Allopathic & Osteopathic Physicians", "Internal Medicine")])
        p = self.run_bin("outreachctl", "import-taxonomy", NPI_DIR / "nucc_taxonomy.csv", check=True)
        self.assertIn("0 added or changed", p.stdout)

    def test_import_nppes_real_sample_rows(self):
        path = NPI_DIR / "npidata_pfile_sample_rows_2021_330col_orgs.csv"
        p = self.run_bin("outreachctl", "import-nppes", path, "--sources", check=True)
        self.assertIn("12 rows read", p.stdout)
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers"), 12)
        row = self.sql("SELECT enumeration_type, organization_name, primary_taxonomy_code, city, state, postal_code, "
                       "enumeration_date::text, last_updated::date::text, origin FROM npi_providers "
                       "WHERE npi = '1497758544'")[0]
        self.assertEqual(row, ("NPI-2", "CUMBERLAND COUNTY HOSPITAL SYSTEM, INC", "251G00000X", "FAYETTEVILLE",
                               "NC", "283044552", "2005-05-23", "2011-09-26", "nppes"))
        self.assertEqual(self.sql_one("SELECT count(*) FROM referral_sources WHERE status = 'prospect'"), 12)
        p = self.run_bin("outreachctl", "import-nppes", path, "--state", "ZZ", check=True)
        self.assertIn("12 filtered out", p.stdout)

    def test_import_nppes_real_sample_rows_keep_their_taxonomies(self):
        # Each real row's taxonomy codes and primary switches, in the file's order (some list a code
        # twice, once primary), come out of the arrays and of p.taxonomies as the file held them:
        # straight into the empty table, then again through the staging table.
        path = NPI_DIR / "npidata_pfile_sample_rows_2021_330col_orgs.csv"
        with open(path, newline="") as f:
            rows = csv.reader(f)
            col = {name: i for i, name in enumerate(next(rows))}
            want = {}
            for row in rows:
                taxes = [(row[col["Healthcare Provider Taxonomy Code_%d" % k]],
                          row[col["Healthcare Provider Primary Taxonomy Switch_%d" % k]] == "Y") for k in range(1, 16)]
                want[row[col["NPI"]]] = [t for t in taxes if t[0]]
        self.assertGreater(max(len(t) for t in want.values()), 3)
        query = "SELECT npi, taxonomy_codes, taxonomy_primary, p.taxonomies FROM npi_providers p ORDER BY npi"
        for how in ("straight into the empty table", "through the staging table"):
            if how != "straight into the empty table":  # every provider looks changed: all are written again
                self.sql("UPDATE npi_providers SET last_updated = NULL, taxonomy_codes = NULL, taxonomy_primary = NULL")
            p = self.run_bin("outreachctl", "import-nppes", path, check=True)
            self.assertEqual("straight into the empty table" in p.stdout, how == "straight into the empty table")
            got = self.sql(query)
            self.assertEqual(len(got), len(want))
            for npi, codes, primary, taxonomies in got:
                self.assertEqual(list(zip(codes, primary)), want[npi], (how, npi))
                self.assertEqual(taxonomies, [{"code": c, "primary": f} for c, f in want[npi]], (how, npi))

    def test_import_nppes_generated_file_with_the_real_header(self):
        rows = []
        for i in range(500):
            row = {"NPI": "%010d" % (1100000000 + i)}
            if i == 499:  # a deactivated NPI: only its number and deactivation date
                row["NPI Deactivation Date"] = "03/01/2024"
            else:
                row.update({"Entity Type Code": "1", "Provider Last Name (Legal Name)": "O'NEIL%d" % i,
                            "Provider First Name": "ANA", "Provider Sex Code": "F",
                            "Employer Identification Number (EIN)": "<UNAVAIL>",
                            "Provider Business Practice Location Address State Name": "MN" if i % 2 else "WI",
                            "Provider Business Practice Location Address Postal Code": "55767",
                            "Healthcare Provider Taxonomy Code_1": "208000000X",
                            "Healthcare Provider Taxonomy Code_2": "207R00000X",
                            "Healthcare Provider Primary Taxonomy Switch_2": "Y",
                            "Provider Enumeration Date": "05/27/2005", "Last Update Date": "12/04/2012"})
            rows.append(row)
        path = self.nppes_file(rows)
        self.assertEqual(len(self.HEADER), 330)
        p = self.run_bin("outreachctl", "import-nppes", path, "--state", "MN", "--taxonomy", "207R00000X", check=True)
        self.assertIn("500 rows read", p.stdout)
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers WHERE status = 'A'"), 249)
        self.assertEqual(self.sql("SELECT sex, primary_taxonomy_code, enumeration_date::text FROM npi_providers "
                                  "WHERE npi = '1100000001'"), [("F", "207R00000X", "2005-05-27")])
        self.assertEqual(self.sql("SELECT status, deactivation_date::text FROM npi_providers "
                                  "WHERE npi = '1100000499'"), [("D", "2024-03-01")])

    # --- weekly files, the deactivation file, repeated NPIs, NppesImportJob -------------------------
    def full_import(self, n=10):
        self.coord = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Dana Reyes', 'dana@example.org') "
                                  "RETURNING id")
        path = self.nppes_file([self.provider("12000000%02d" % i, "DOE%d" % i) for i in range(n)])
        p = self.run_bin("outreachctl", "import-nppes", path, "--kind", "full", "--prospects", "--coordinator",
                         "dana@example.org", check=True)
        self.assertIn("straight into the empty table", p.stdout)
        self.assertEqual(self.sql_one("SELECT count(*) FROM referral_sources WHERE coordinator_id = %s",
                                      (self.coord,)), n)

    def test_weekly_file_updates_some_providers_and_adds_others(self):
        self.full_import()
        self.sql("UPDATE referral_sources SET status = 'active', notes = 'likes email' WHERE npi = '1200000001'")
        self.sql("UPDATE npi_providers SET fetched_at = '2020-01-01'")
        weekly = [self.provider("1200000001", "DOE1", city="HERMANTOWN", updated="03/02/2026"),
                  self.provider("1200000002", "DOE-SMITH2", updated="03/03/2026"),
                  self.provider("1200000003", "DOE3"),  # unchanged: the same Last Update Date
                  self.provider("1200000050", "NEW50", updated="03/04/2026"),
                  self.provider("1200000051", "", etype="2", updated="03/04/2026",
                                **{"Provider Organization Name (Legal Business Name)": "LAKE CLINIC LLC"})]
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(weekly), "--kind", "weekly", "--prospects",
                         "--coordinator", str(self.coord), check=True)
        self.assertIn("5 rows read, 5 taken", p.stdout)
        self.assertIn("4 providers written", p.stdout)
        self.assertNotIn("straight into the empty table", p.stdout)
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers"), 12)
        self.assertEqual(self.sql("SELECT npi, city, last_name, last_updated::date::text FROM npi_providers "
                                  "WHERE fetched_at > '2020-01-01' ORDER BY npi"),
                         [("1200000001", "HERMANTOWN", "DOE1", "2026-03-02"),
                          ("1200000002", "DULUTH", "DOE-SMITH2", "2026-03-03"),
                          ("1200000050", "DULUTH", "NEW50", "2026-03-04"),
                          ("1200000051", "DULUTH", None, "2026-03-04")])
        # Referral sources: the registry's fields refreshed, the coordinator's kept, new prospects added.
        self.assertEqual(self.sql("SELECT status, notes, city FROM referral_sources WHERE npi = '1200000001'"),
                         [("active", "likes email", "HERMANTOWN")])
        self.assertEqual(self.sql_one("SELECT last_name FROM referral_sources WHERE npi = '1200000002'"), "DOE-SMITH2")
        self.assertEqual(self.sql("SELECT kind, organization_name, status, coordinator_id FROM referral_sources "
                                  "WHERE npi IN ('1200000050', '1200000051') ORDER BY npi"),
                         [("physician", None, "prospect", self.coord),
                          ("organization", "LAKE CLINIC LLC", "prospect", self.coord)])
        # The same weekly file again writes nothing.
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(weekly), "--prospects", check=True)
        self.assertIn("0 providers written, 0 referral sources written", p.stdout)

    def test_deactivation_file_marks_providers_and_closes_their_prospects(self):
        self.full_import()
        self.sql("UPDATE referral_sources SET status = 'active' WHERE npi = '1200000002'")
        # The deactivation report's layout (NPI, NPPES Deactivation Date); 1999999999 is not known here.
        path = self.nppes_file([{"NPI": "1200000001", "NPPES Deactivation Date": "02/10/2026"},
                                {"NPI": "1200000002", "NPPES Deactivation Date": "02/11/2026"},
                                {"NPI": "1999999999", "NPPES Deactivation Date": "02/12/2026"},
                                {"NPI": "12000", "NPPES Deactivation Date": "02/12/2026"}],
                               header=["NPI", "NPPES Deactivation Date"])
        bad = self.run_bin("outreachctl", "import-nppes", path, "--kind", "weekly")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("not a full or weekly NPPES file", bad.stderr)
        p = self.run_bin("outreachctl", "import-nppes", path, "--kind", "deactivation", check=True)
        self.assertIn("4 rows read, 3 taken, 0 filtered out, 1 malformed, 3 deactivated; 2 providers written",
                      p.stdout)
        self.assertIn("1 prospects closed", p.stdout)
        self.assertIn("1 active referral sources have a deactivated NPI", p.stdout)
        self.assertEqual(self.sql("SELECT npi, status, deactivation_date::text FROM npi_providers WHERE status = 'D' "
                                  "ORDER BY npi"),
                         [("1200000001", "D", "2026-02-10"), ("1200000002", "D", "2026-02-11")])
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers WHERE npi = '1999999999'"), 0)
        self.assertEqual(self.sql("SELECT npi, status FROM referral_sources WHERE npi IN ('1200000001', "
                                  "'1200000002', '1200000003') ORDER BY npi"),
                         [("1200000001", "inactive"), ("1200000002", "active"), ("1200000003", "prospect")])
        # A full file that is not a deactivation report is refused as one.
        full = self.nppes_file([self.provider("1200000009", "DOE9")])
        bad = self.run_bin("outreachctl", "import-nppes", full, "--kind", "deactivation")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("not a deactivation file", bad.stderr)
        self.assertIsNotNone(self.sql_one("SELECT closed_on_deactivation_at FROM referral_sources "
                                          "WHERE npi = '1200000001'"))
        # A later weekly file with a reactivation brings the provider back, and the prospect it closed.
        react = self.provider("1200000001", "DOE1", updated="03/01/2026", **{
            "NPI Deactivation Date": "02/10/2026", "NPI Reactivation Date": "02/20/2026"})
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file([react]), "--prospects", check=True)
        self.assertIn("1 prospects reopened (NPI reactivated)", p.stdout)
        self.assertEqual(self.sql("SELECT status, deactivation_date FROM npi_providers WHERE npi = '1200000001'"),
                         [("A", None)])
        self.assertEqual(self.sql("SELECT status, closed_on_deactivation_at FROM referral_sources "
                                  "WHERE npi = '1200000001'"), [("prospect", None)])
        # The active source the deactivation left alone is still as its coordinator set it.
        self.assertEqual(self.sql_one("SELECT status FROM referral_sources WHERE npi = '1200000002'"), "active")
        # Closed again; then a coordinator decides (active, then inactive for good): a reactivation
        # no longer reopens it.
        again = self.nppes_file([{"NPI": "1200000001", "NPPES Deactivation Date": "04/01/2026"}],
                                header=["NPI", "NPPES Deactivation Date"])
        p = self.run_bin("outreachctl", "import-nppes", again, "--kind", "deactivation", check=True)
        self.assertIn("1 prospects closed", p.stdout)
        self.sql("UPDATE referral_sources SET status = 'active' WHERE npi = '1200000001'")
        self.sql("UPDATE referral_sources SET status = 'inactive' WHERE npi = '1200000001'")
        react = self.provider("1200000001", "DOE1", updated="05/01/2026", **{
            "NPI Deactivation Date": "04/01/2026", "NPI Reactivation Date": "04/20/2026"})
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file([react]), "--prospects", check=True)
        self.assertNotIn("reopened", p.stdout)
        self.assertEqual(self.sql("SELECT p.status, r.status FROM npi_providers p JOIN referral_sources r USING (npi) "
                                  "WHERE npi = '1200000001'"), [("A", "inactive")])

    def test_a_file_with_an_npi_twice_keeps_its_latest_row(self):
        rows = [self.provider("1300000001", "OLD", updated="01/01/2020"),
                self.provider("1300000002", "ONCE"),
                self.provider("1300000001", "NEW", updated="01/01/2024")]
        # Into the empty table (the straight load meets the key and starts again through the stage) ...
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(rows), "--prospects", check=True)
        self.assertIn("duplicate NPIs", p.stdout)
        self.assertEqual(self.sql("SELECT npi, last_name FROM npi_providers ORDER BY npi"),
                         [("1300000001", "NEW"), ("1300000002", "ONCE")])
        self.assertEqual(self.sql_one("SELECT last_name FROM referral_sources WHERE npi = '1300000001'"), "NEW")
        # ... and into a table that has rows (the merge meets the NPI twice and sorts).
        rows.append(self.provider("1300000001", "NEWER", updated="01/01/2025"))
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(rows), check=True)
        self.assertIn("duplicate NPIs", p.stdout)
        self.assertEqual(self.sql_one("SELECT last_name FROM npi_providers WHERE npi = '1300000001'"), "NEWER")

    def test_import_from_standard_input(self):
        # Standard input cannot be read twice: even into the empty table it goes through the stage.
        rows = [self.provider("1500000000", "PIPED"), self.provider("1500000000", "PIPED AGAIN", updated="01/01/2024"),
                self.provider("1500000001", "ALSO")]
        with open(self.nppes_file(rows), newline="") as f:
            data = f.read()
        p = self.run_bin("outreachctl", "import-nppes", "-", "--kind", "full", input=data, check=True)
        self.assertIn("3 rows read, 3 taken", p.stdout)
        self.assertNotIn("straight into the empty table", p.stdout)
        self.assertEqual(self.sql("SELECT npi, last_name FROM npi_providers ORDER BY npi"),
                         [("1500000000", "PIPED AGAIN"), ("1500000001", "ALSO")])

    def push(self, args):
        job = {"class": "NppesImportJob", "args": args, "jid": os.urandom(12).hex(), "queue": "npi",
               "retry": True, "created_at": time.time(), "enqueued_at": time.time()}
        self.redis().sadd("queues", "npi")
        self.redis().lpush("queue:npi", json.dumps(job))
        return job["jid"]

    def dead(self, jid):
        for j in self.redis().zrange("dead", 0, -1):
            job = json.loads(j)
            if job["jid"] == jid:
                return job
        return None

    def test_nppes_import_job(self):
        coord = self.sql_one("INSERT INTO coordinators (name, email) VALUES ('Lee Park', 'lee@example.org') "
                             "RETURNING id")
        rows = [self.provider("1400000000", "KEPT"), self.provider("1400000001", "OTHER", **{
            "Healthcare Provider Taxonomy Code_1": "208000000X"})]
        path = self.nppes_file(rows)
        w = self.start_bin("outreach-worker", "-c", harness.CONFIG, "--queues", "npi")
        w.wait_log(r"ready: identity")
        p = self.run_bin("outreachctl", "enqueue", "NppesImportJob", "--args", json.dumps(
            [{"file": path, "kind": "full", "taxonomies": ["207R00000X"], "prospects": True, "coordinator": coord}]),
            check=True)
        self.assertEqual(p.returncode, 0)
        self.wait_for("the import", lambda: self.sql_one("SELECT count(*) FROM referral_sources") == 1, timeout=30)
        self.assertEqual(self.sql("SELECT npi, last_name, coordinator_id FROM referral_sources"),
                         [("1400000000", "KEPT", coord)])
        self.assertEqual(self.sql("SELECT npi FROM npi_providers"), [("1400000000",)])
        w.wait_log(r"nppes: .* \(full\): 2 rows read, 1 taken, 1 filtered out")
        # Bad arguments, a missing file and a file of another kind go to dead with the reason.
        bad = self.run_bin("outreachctl", "enqueue", "NppesImportJob", "--args", '[{"file": "relative.csv"}]')
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("file must be an absolute path", bad.stderr)
        j1 = self.push([{"file": path, "state": "Minnesota"}])
        j2 = self.push([{"file": path + ".missing"}])
        j3 = self.push([{"file": path, "kind": "deactivation"}])
        j4 = self.push([{"file": path, "prospects": True, "coordinator": "nobody@example.org"}])
        self.wait_for("four dead jobs", lambda: all(self.dead(j) for j in (j1, j2, j3, j4)), timeout=30)
        d = [self.dead(j) for j in (j1, j2, j3, j4)]
        self.assertEqual(d[0]["error_class"], "ArgumentError")
        self.assertIn("state must be a two-letter code", d[0]["error_message"])
        self.assertEqual(d[1]["error_class"], "NppesImportError")
        self.assertIn("cannot open " + path + ".missing: No such file or directory", d[1]["error_message"])
        self.assertIn("not a deactivation file", d[2]["error_message"])
        self.assertIn("no coordinator with id or email nobody@example.org", d[3]["error_message"])
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers"), 1)


if __name__ == "__main__":
    harness.main()
