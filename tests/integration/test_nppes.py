"""NPPES bulk import into PostgreSQL: values in COPY's binary form, dates the reader refuses, the key and
indexes of npi_providers rebuilt after a straight load, the NPI rule of migrations 013 and 015, the codes
compared byte by byte (migration 022)."""
import hashlib
import pathlib
import secrets

import psycopg2
import psycopg2.extras

import harness
import npi_cases


class Nppes(npi_cases.NppesFiles, harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        self.sql("TRUNCATE coordinators, referral_sources, npi_providers RESTART IDENTITY CASCADE")

    def indexes(self):
        return self.sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'npi_providers' ORDER BY 1")

    def test_odd_values_survive_the_binary_copy(self):
        # Values go to PostgreSQL in COPY's binary form: each one must come back as the file held it,
        # into the empty table (straight) and through the staging table (a changed Last Update Date).
        odd = {"Provider Last Name (Legal Name)": "MÜLLER-ØSTBØ 東京", "Provider First Name": "ZOË",
               "Provider Credential Text": "M.D.\\PH.D", "Provider Middle Name": "",
               "Provider Second Line Business Practice Location Address": "SUITE\t5",
               "Provider Business Practice Location Address Fax Number": "$$$$",
               "Provider Enumeration Date": "02/29/2000"}
        rows = [self.provider("1600000000", "X", updated="12/31/1999", **odd),
                self.provider("1600000001", "LEAP", updated="02/29/2024", **{"Provider Enumeration Date": "",
                                                                             "Last Update Date": "2024-02-29"}),
                self.provider("1600000002", "GONE", **{"NPI Deactivation Date": "01/01/1900"})]
        want_odd = ("MÜLLER-ØSTBØ 東京", "ZOË", None, "M.D.\\PH.D", "SUITE\t5", None, "2000-02-29")
        query = ("SELECT last_name, first_name, middle_name, credential, address_line2, fax, enumeration_date::text, "
                 "last_updated::text, status, deactivation_date::text FROM npi_providers ORDER BY npi")
        for updated, how in (("12/31/1999", "straight into the empty table"), ("02/28/2001", "")):
            rows[0]["Last Update Date"] = updated
            p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(rows), check=True)
            if how:
                self.assertIn(how, p.stdout)
            got = self.sql(query)
            stamp = "%s-%s-%s 00:00:00+00" % (updated[6:], updated[:2], updated[3:5])
            self.assertEqual(got[0], want_odd + (stamp, "A", None))
            # A date not in MM/DD/YYYY form is no date (as before); a deactivation in 1900 is one.
            self.assertEqual(got[1][6:], (None, None, "A", None))
            self.assertEqual(got[2][8:], ("D", "1900-01-01"))
        self.assertEqual(self.sql_one("SELECT p.taxonomies FROM npi_providers p WHERE npi = '1600000000'"),
                         [{"code": "207R00000X", "primary": True}])

    def test_a_date_that_does_not_exist_is_refused_with_its_line(self):
        # Into the empty table (straight), then through the staging table: nothing of the file stays.
        rows = [self.provider("1700000000", "FINE"), self.provider("1700000001", "BAD", updated="02/30/2024")]
        for before in ([], [("1700000009",)]):
            if before:
                self.sql("INSERT INTO npi_providers (npi, origin) VALUES ('1700000009', 'api')")
            path = self.nppes_file(rows)
            p = self.run_bin("outreachctl", "import-nppes", path)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn('%s:3: "Last Update Date" is no date: "02/30/2024"' % path, p.stderr)
            self.assertEqual(self.sql("SELECT npi FROM npi_providers"), before)
        # A row left out by --state is not read closely enough to be refused.
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(rows), "--state", "WI", check=True)
        self.assertIn("2 filtered out", p.stdout)

    def test_the_key_and_indexes_are_built_again_after_a_straight_load(self):
        before = self.indexes()
        self.assertEqual(len(before), 3)
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(
            [self.provider("18000000%02d" % i, "DOE") for i in range(50)]), check=True)
        self.assertIn("straight into the empty table", p.stdout)
        self.assertEqual(self.indexes(), before)
        self.assertEqual(self.sql("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                  "WHERE conrelid = 'npi_providers'::regclass AND contype = 'p'"),
                         [("npi_providers_pkey", "PRIMARY KEY (npi)")])
        with self.assertRaises(psycopg2.errors.UniqueViolation):
            self.sql("INSERT INTO npi_providers (npi) VALUES ('1800000001')")

    def test_unchanged_means_the_same_day_in_utc(self):
        # Providers the API wrote keep their precise time; the file's Last Update Date (12/04/2012) only
        # changes those whose last update falls on another day, in UTC.
        self.sql("INSERT INTO npi_providers (npi, last_name, last_updated, status, origin) VALUES "
                 "('1900000000', 'API SAME DAY', '2012-12-04 23:59:59.999+00', 'A', 'api'), "
                 "('1900000001', 'API DAY BEFORE', '2012-12-03 23:59:59.999+00', 'A', 'api'), "
                 "('1900000002', 'API SAME DAY', '2012-12-04 00:00:00+00', 'A', 'api'), "
                 "('1900000003', 'API DAY AFTER', '2012-12-05 00:00:00+00', 'A', 'api'), "
                 "('1900000004', 'API DEACTIVATED', '2012-12-04 12:00:00+00', 'D', 'api')")
        rows = [self.provider("190000000%d" % i, "FILE") for i in range(5)]
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(rows), check=True)
        self.assertIn("3 providers written", p.stdout)
        self.assertEqual(self.sql("SELECT npi, last_name, origin FROM npi_providers ORDER BY npi"),
                         [("1900000000", "API SAME DAY", "api"), ("1900000001", "FILE", "nppes"),
                          ("1900000002", "API SAME DAY", "api"), ("1900000003", "FILE", "nppes"),
                          ("1900000004", "FILE", "nppes")])

    def test_the_npi_rule_of_migrations_013_015_and_020(self):
        self.sql("INSERT INTO npi_providers (npi) VALUES ('0123456789')")
        self.assertIn("textsend(npi", self.sql_one("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                                  "WHERE conname = 'npi_providers_npi_check'"))
        # Ten bytes that are not ten digits too: a character of two or three bytes at the end.
        bad_npis = ("123456789", "12345678901", "12345678x0", " 123456789", "１２３４５６７８９０", "123456789\n",
                    "12345678é", "1234567８", "+123456789", "-123456789", "12345.6789")
        for bad in bad_npis:
            with self.assertRaises(psycopg2.errors.CheckViolation, msg=bad):
                self.sql("INSERT INTO npi_providers (npi) VALUES (%s)", (bad,))
        # The same verdicts whatever the client's encoding: the rule reads the value's bytes in it. The
        # values are built on the server (from their UTF-8 bytes), so that a character the client's
        # encoding cannot hold reaches the rule too: it is refused with an error of its own.
        insert = "INSERT INTO npi_providers (npi) VALUES (convert_from(%s, 'UTF8'))"
        for encoding in ("LATIN1", "SJIS", "GB18030", "SQL_ASCII"):
            conn = psycopg2.connect(self.db_url)
            try:
                conn.set_client_encoding(encoding)
                with conn, conn.cursor() as cur:
                    cur.execute(insert, (psycopg2.Binary(b"98765432%02d" % len(encoding)),))
                for bad in bad_npis:
                    with self.assertRaises((psycopg2.errors.CheckViolation,
                                            psycopg2.errors.UntranslatableCharacter), msg=(encoding, bad)):
                        with conn, conn.cursor() as cur:
                            cur.execute(insert, (psycopg2.Binary(bad.encode("utf-8")),))
            finally:
                conn.close()
        self.assertEqual(self.sql_one("SELECT count(*) FROM npi_providers"), 5)

    def test_the_codes_compare_byte_by_byte_migration_022(self):
        # The NPI and the primary taxonomy code are in "C"; joins and lookups with texts of the
        # default collation (referral_sources.npi, taxonomies.code, a parameter) still match and
        # still use the key and the taxonomy index, the order of codes is the same, and a foreign key
        # of a default-collation column may reference the NPI.
        self.assertEqual(self.sql("SELECT attname::text, collname::text FROM pg_attribute a JOIN pg_collation c "
                                  "ON c.oid = a.attcollation WHERE attrelid = 'npi_providers'::regclass AND "
                                  "attname IN ('npi', 'primary_taxonomy_code', 'state', 'city') ORDER BY 1"),
                         [("city", "default"), ("npi", "C"), ("primary_taxonomy_code", "C"), ("state", "default")])
        rows = [self.provider(npi, "DOE", **{"Healthcare Provider Taxonomy Code_1": code})
                for npi, code in (("1993999999", "207R00000X"), ("1003000001", "2084N0400X"),
                                  ("1500000000", "207RC0000X"), ("1003000000", "363LF0000X"))]
        self.run_bin("outreachctl", "import-taxonomy", npi_cases.NPI_DIR / "nucc_taxonomy.csv", check=True)
        p = self.run_bin("outreachctl", "import-nppes", self.nppes_file(rows), "--prospects", check=True)
        self.assertIn("straight into the empty table", p.stdout)
        self.assertEqual(self.sql("SELECT npi, specialty FROM referral_sources ORDER BY npi"),
                         [("1003000000", "Nurse Practitioner"), ("1003000001", "Psychiatry & Neurology"),
                          ("1500000000", "Internal Medicine"), ("1993999999", "Internal Medicine")])
        self.assertEqual(self.sql("SELECT p.npi, p.primary_taxonomy_code FROM referral_sources r JOIN npi_providers p "
                                  "ON p.npi = r.npi JOIN taxonomies t ON t.code = p.primary_taxonomy_code "
                                  "ORDER BY p.primary_taxonomy_code"),
                         [("1993999999", "207R00000X"), ("1500000000", "207RC0000X"),
                          ("1003000001", "2084N0400X"), ("1003000000", "363LF0000X")])
        self.addCleanup(self.sql, "DROP TABLE IF EXISTS npi_notes")
        conn = psycopg2.connect(self.db_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL enable_seqscan = off")
                for query, params, index in (
                        ("SELECT * FROM npi_providers WHERE npi = %s", ("1500000000",), "npi_providers_pkey"),
                        ("SELECT * FROM npi_providers p JOIN referral_sources r ON r.npi = p.npi WHERE r.id = 1", (),
                         "npi_providers_pkey"),
                        ("SELECT * FROM npi_providers WHERE primary_taxonomy_code = %s", ("207R00000X",),
                         "npi_providers_taxonomy_idx")):
                    cur.execute("EXPLAIN " + query, params)
                    self.assertIn(index, "\n".join(r[0] for r in cur.fetchall()), query)
                cur.execute("CREATE TABLE npi_notes (npi text REFERENCES npi_providers (npi))")
                cur.execute("INSERT INTO npi_notes VALUES ('1500000000')")
            with self.assertRaises(psycopg2.errors.ForeignKeyViolation):
                with conn, conn.cursor() as cur:
                    cur.execute("INSERT INTO npi_notes VALUES ('1500000001')")
        finally:
            conn.close()

    def test_migration_015_moves_the_stored_taxonomies_into_the_arrays(self):
        # A database at migration 013 holding both JSON forms, an empty list and none; `outreachctl
        # migrate` applies 015, and p.taxonomies gives back what the column held.
        name = "outreach_t_" + secrets.token_hex(6)
        harness._admin_exec(self.admin_url, 'CREATE DATABASE "%s"' % name)
        self.addCleanup(harness._admin_exec, self.admin_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        url = harness.with_database(self.admin_url, name)
        sql_dir = pathlib.Path(__file__).resolve().parents[2] / "sql"
        api = [{"code": "207R00000X", "desc": "Internal Medicine", "state": "MN", "license": "43634", "primary": True},
               {"code": "208000000X", "desc": "Pediatrics", "state": None, "license": None, "primary": False}]
        nppes = [{"code": "251E00000X", "primary": False}, {"code": "251E00000X", "primary": True}]
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
                for f in sorted(sql_dir.glob("0*.sql")):
                    if int(f.name[:3]) > 13:
                        continue
                    text = f.read_text()
                    cur.execute(text)
                    cur.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                                (int(f.name[:3]), f.name, hashlib.sha256(text.encode()).hexdigest()))
                cur.execute("INSERT INTO npi_providers (npi, origin, taxonomies) VALUES ('1000000001', 'api', %s), "
                            "('1000000002', 'nppes', %s), ('1000000003', 'api', '[]'), ('1000000004', 'api', NULL)",
                            (psycopg2.extras.Json(api), psycopg2.extras.Json(nppes)))
        finally:
            conn.close()
        p = self.run_bin("outreachctl", "migrate", env={"OUTREACH_DATABASE_URL": url}, check=True)
        self.assertIn("015_nppes_columns.sql", p.stdout + p.stderr)
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT npi, taxonomy_codes, taxonomy_primary, taxonomy_descs, taxonomy_licenses, "
                            "p.taxonomies FROM npi_providers p ORDER BY npi")
                got = cur.fetchall()
        finally:
            conn.close()
        self.assertEqual(got, [
            ("1000000001", ["207R00000X", "208000000X"], [True, False], ["Internal Medicine", "Pediatrics"],
             ["43634", None], api),
            ("1000000002", ["251E00000X", "251E00000X"], [False, True], None, None, nppes),
            ("1000000003", [], [], None, None, []),
            ("1000000004", None, None, None, None, None)])


if __name__ == "__main__":
    harness.main()
