"""outreachctl seed-demo: the demo data set a new user looks at first, built from real NPI records."""
import csv

import harness

NPI_DIR = harness.FIXTURES / "npi"
TABLES = ("coordinators", "referral_sources", "activities", "cases", "referrals", "encounters", "outreach_goals")
SERVICE_LINES = {"Physical Therapy", "Imaging", "Cardiology", "Oncology", "Hospice"}


def npi_valid(npi):
    """The NPI check digit: Luhn over the prefix 80840 and the first nine digits."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed("80840" + npi)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def nppes_rows():
    """The NPPES sample rows as dicts keyed by header name (read independently of the C reader)."""
    with open(NPI_DIR / "npidata_pfile_sample_rows_2021_330col_orgs.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def nucc_codes():
    with open(NPI_DIR / "nucc_taxonomy.csv", newline="", encoding="utf-8") as f:
        return {row["Code"]: row for row in csv.DictReader(f)}


class SeedDemo(harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()
        # The first call loads the data set; later ones (one per test) must change nothing.
        self.seed()

    # --- helpers ------------------------------------------------------------------------------
    def seed(self, check=True):
        return self.run_bin("outreachctl", "-c", str(harness.CONFIG), "seed-demo", "--data", str(NPI_DIR),
                            check=check)

    def rows(self, query, *params):
        return self.sql(query, params) if params else self.sql(query)

    def value(self, query, *params):
        return self.rows(query, *params)[0][0]

    def number(self, query, *params):
        return int(self.value(query, *params))

    def counts(self):
        return {t: self.number("SELECT count(*) FROM " + t) for t in TABLES}

    def source(self, npi):
        cols = ("kind", "first_name", "last_name", "organization_name", "credential", "specialty_code",
                "specialty", "status", "address_line1", "city", "state", "postal_code", "phone")
        rows = self.rows("SELECT " + ", ".join("coalesce(%s::text, '')" % c for c in cols)
                         + " FROM referral_sources WHERE npi = '" + npi + "'")
        self.assertEqual(len(rows), 1, "NPI %s is not loaded" % npi)
        return dict(zip(cols, (str(v) for v in rows[0])))

    # --- tests --------------------------------------------------------------------------------
    def test_coordinators_span_time_zones_under_one_manager(self):
        rows = self.rows("SELECT id, name, email, time_zone, coalesce(manager_id, 0) FROM coordinators")
        self.assertGreaterEqual(len(rows), 4)
        self.assertGreaterEqual(len({r[3] for r in rows}), 3, rows)
        managers = {int(r[4]) for r in rows if int(r[4]) != 0}
        self.assertEqual(len(managers), 1, "one coordinator manages the others")
        self.assertIn(managers.pop(), {int(r[0]) for r in rows})
        self.assertEqual(sum(1 for r in rows if int(r[4]) == 0), 1)
        self.assertTrue(all(str(r[2]).endswith("@demo.example.org") for r in rows))
        # A name beyond ASCII, for mail header encoding.
        self.assertTrue(any(any(ord(c) > 127 for c in str(r[1])) for r in rows), rows)

    def test_about_three_hundred_sources(self):
        n = self.number("SELECT count(*) FROM referral_sources")
        self.assertTrue(250 <= n <= 350, n)
        status = dict((str(s), int(c)) for s, c in
                      self.rows("SELECT status, count(*) FROM referral_sources GROUP BY status"))
        self.assertGreater(status.get("active", 0), n / 2, status)
        self.assertGreater(status.get("prospect", 0), 0, status)
        self.assertGreater(status.get("inactive", 0), 0, status)
        self.assertEqual(self.number("SELECT count(DISTINCT coordinator_id) FROM referral_sources"),
                         self.number("SELECT count(*) FROM coordinators"))
        self.assertEqual(self.number("SELECT count(*) FROM referral_sources WHERE coordinator_id IS NULL"), 0)
        emails = self.number("SELECT count(email) FROM referral_sources")
        self.assertTrue(n * 0.3 < emails < n * 0.7, emails)
        intervals = self.number("SELECT count(contact_interval_days) FROM referral_sources")
        self.assertTrue(0 < intervals < n / 2, intervals)

    def test_the_real_physician_from_the_npi_registry(self):
        s = self.source("1760485387")
        self.assertEqual(s["kind"], "physician")
        self.assertEqual((s["first_name"], s["last_name"], s["credential"]), ("PAUL", "DEWEY", "M.D."))
        self.assertEqual(s["specialty_code"], "207R00000X")  # the primary one, not Pediatrics
        self.assertEqual(s["specialty"], "Internal Medicine")
        self.assertEqual((s["address_line1"], s["city"], s["state"]), ("4570 CTY. HWY. 61", "MOOSE LAKE", "MN"))
        self.assertIn("485-4491", s["phone"])

    def test_the_real_organization_from_the_npi_registry(self):
        s = self.source("1174270805")
        self.assertEqual(s["kind"], "organization")
        self.assertEqual(s["organization_name"], "PEACH STATE MEDICAL PRACTICE, PC")
        # The LOCATION address, although the MAILING one (Chicago) comes second.
        self.assertEqual((s["city"], s["state"]), ("PHILADELPHIA", "PA"))
        self.assertEqual(s["specialty_code"], "207VE0102X")

    def test_the_nppes_organizations(self):
        rows = nppes_rows()
        self.assertEqual(len(rows), 12)
        for row in rows:
            s = self.source(row["NPI"])
            self.assertEqual(s["kind"], "organization")
            self.assertEqual(s["organization_name"], row["Provider Organization Name (Legal Business Name)"])
            self.assertEqual(s["city"], row["Provider Business Practice Location Address City Name"])
            self.assertEqual(s["state"], row["Provider Business Practice Location Address State Name"])
        s = self.source("1497758544")
        self.assertEqual(s["organization_name"], "CUMBERLAND COUNTY HOSPITAL SYSTEM, INC")
        self.assertEqual((s["city"], s["state"]), ("FAYETTEVILLE", "NC"))
        self.assertEqual(s["specialty_code"], "251G00000X")
        # The primary taxonomy by its switch, not the first column.
        self.assertEqual(self.source("1700889755")["specialty_code"], "207W00000X")
        self.assertEqual(self.source("1043213093")["specialty_code"], "3336H0001X")

    def test_every_npi_is_valid_and_every_specialty_is_real(self):
        codes = nucc_codes()
        rows = self.rows("SELECT npi, kind, coalesce(specialty_code, ''), coalesce(specialty, '') "
                         "FROM referral_sources")
        for npi, kind, code, specialty in rows:
            self.assertTrue(npi_valid(str(npi)), "NPI %s fails the check digit" % npi)
            self.assertIn(str(code), codes, npi)
            self.assertTrue(str(specialty), npi)
            if str(kind) == "physician":
                self.assertEqual(codes[str(code)]["Grouping"], "Allopathic & Osteopathic Physicians", npi)
        self.assertGreaterEqual(len({str(r[2]) for r in rows if str(r[1]) == "physician"}), 8)

    def test_some_sources_are_overdue_and_some_due_soon(self):
        active = self.number("SELECT count(*) FROM referral_sources WHERE status = 'active'")
        overdue = self.number("SELECT count(*) FROM referral_sources WHERE status = 'active' AND next_due_at < now()")
        soon = self.number("SELECT count(*) FROM referral_sources WHERE status = 'active'"
                           " AND next_due_at >= now() AND next_due_at < now() + interval '3 days'")
        self.assertTrue(0.12 * active <= overdue <= 0.22 * active, (overdue, active))
        self.assertTrue(0.06 * active <= soon <= 0.14 * active, (soon, active))
        self.assertEqual(self.number("SELECT count(*) FROM referral_sources"
                                     " WHERE status = 'inactive' AND next_due_at IS NOT NULL"), 0)
        # The due times follow from the history (the database derives them).
        self.assertEqual(self.number(
            "SELECT count(*) FROM referral_sources s WHERE status = 'active' AND last_contact_at IS DISTINCT FROM"
            " (SELECT max(completed_at) FROM activities a WHERE a.source_id = s.id AND a.canceled_at IS NULL)"), 0)

    def test_a_year_of_activity_history(self):
        done = self.number("SELECT count(*) FROM activities WHERE completed_at IS NOT NULL")
        active = self.number("SELECT count(*) FROM referral_sources WHERE status = 'active'")
        self.assertGreaterEqual(done, 3 * active)
        self.assertEqual(self.number("SELECT count(*) FROM activities WHERE completed_at > now()"), 0)
        self.assertEqual(self.number("SELECT count(*) FROM activities"
                                     " WHERE completed_at < now() - interval '1 year 1 day'"
                                     " AND source_id IN (SELECT id FROM referral_sources WHERE status = 'active')"), 0)
        self.assertEqual(self.number("SELECT count(DISTINCT kind) FROM activities"), 4)
        self.assertEqual(self.number("SELECT count(*) FROM activities WHERE completed_at IS NOT NULL"
                                     " AND coalesce(outcome, '') = ''"), 0)
        planned = self.number("SELECT count(*) FROM activities"
                              " WHERE scheduled_at > now() AND completed_at IS NULL AND canceled_at IS NULL")
        self.assertGreater(planned, 5)
        self.assertGreaterEqual(self.number("SELECT count(*) FROM activities WHERE canceled_at IS NOT NULL"), 2)
        # Each activity is by the coordinator who owns the source.
        self.assertEqual(self.number("SELECT count(*) FROM activities a JOIN referral_sources s ON s.id = a.source_id"
                                     " WHERE a.coordinator_id IS DISTINCT FROM s.coordinator_id"), 0)

    def test_cases_open_and_resolved(self):
        n = self.number("SELECT count(*) FROM cases")
        self.assertTrue(15 <= n <= 40, n)
        self.assertGreater(self.number("SELECT count(*) FROM cases WHERE status = 'open'"), 0)
        self.assertGreater(self.number("SELECT count(*) FROM cases WHERE status = 'resolved'"), n / 2)
        self.assertEqual(self.number("SELECT count(*) FROM cases WHERE resolved_at < opened_at"
                                     " OR resolved_at > now() OR opened_at > now()"), 0)
        self.assertGreaterEqual(self.number("SELECT count(DISTINCT category) FROM cases"), 3)
        self.assertGreaterEqual(self.number("SELECT count(DISTINCT priority) FROM cases"), 3)

    def test_referrals_and_encounters(self):
        n = self.number("SELECT count(*) FROM referrals")
        self.assertTrue(300 <= n <= 2000, n)
        self.assertEqual(self.number("SELECT count(DISTINCT patient_key) FROM referrals"), n)
        lines = {str(r[0]) for r in self.rows("SELECT DISTINCT service_line FROM referrals")}
        self.assertEqual(lines, SERVICE_LINES)
        self.assertEqual(self.number("SELECT count(*) FROM referrals"
                                     " WHERE referred_at > now() OR referred_at < now() - interval '14 months'"), 0)
        self.assertEqual(self.number("SELECT count(*) FROM referrals r JOIN referral_sources s ON s.id = r.source_id"
                                     " WHERE s.status <> 'active'"), 0)
        self.assertGreaterEqual(self.number("SELECT count(DISTINCT status) FROM referrals"), 4)
        # Most completed referrals brought revenue, never before the referral nor after today.
        completed = self.number("SELECT count(*) FROM referrals WHERE status = 'completed'")
        billed = self.number("SELECT count(DISTINCT referral_id) FROM encounters e"
                             " JOIN referrals r ON r.id = e.referral_id WHERE r.status = 'completed'")
        self.assertGreater(billed, 0.8 * completed)
        self.assertEqual(self.number("SELECT count(*) FROM encounters e JOIN referrals r ON r.id = e.referral_id"
                                     " WHERE r.status <> 'completed' OR e.service_date > current_date"
                                     " OR e.service_date < r.referred_at::date OR e.amount_cents <= 0"), 0)
        # Believable amounts: an imaging study costs less than a course of oncology treatment.
        avg = dict((str(l), float(a)) for l, a in self.rows(
            "SELECT r.service_line, avg(e.amount_cents) FROM encounters e JOIN referrals r ON r.id = e.referral_id"
            " GROUP BY r.service_line"))
        self.assertLess(avg["Physical Therapy"], avg["Imaging"])
        self.assertLess(avg["Imaging"], avg["Oncology"])
        self.assertTrue(5000 < avg["Physical Therapy"] < 30000, avg)

    def test_goals_for_this_month_and_quarter(self):
        periods = {
            "month": "date_trunc('month', now())::date"
                     " AND period_end = (date_trunc('month', now()) + interval '1 month - 1 day')::date",
            "quarter": "date_trunc('quarter', now())::date"
                       " AND period_end = (date_trunc('quarter', now()) + interval '3 months - 1 day')::date",
        }
        want = {(l, m) for l in SERVICE_LINES for m in ("referrals", "revenue_cents", "new_sources", "activities")}
        for unit, where in periods.items():
            rows = self.rows("SELECT service_line, metric, target FROM outreach_goals WHERE period_start = " + where)
            self.assertEqual({(str(l), str(m)) for l, m, _ in rows}, want, unit)
            self.assertTrue(all(float(t) > 0 for _, _, t in rows), rows)

    def test_a_second_run_changes_nothing(self):
        before = self.counts()
        p = self.seed()
        self.assertEqual(p.returncode, 0)
        self.assertIn("already loaded", p.stdout)
        self.assertEqual(self.counts(), before)


class SeedDemoErrors(harness.Case):
    def setUp(self):
        super().setUp()
        self.migrate()

    def test_a_missing_data_folder_is_named_and_nothing_is_written(self):
        p = self.run_bin("outreachctl", "-c", str(harness.CONFIG), "seed-demo", "--data", "/nonexistent/npi",
                         check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/nonexistent/npi/nucc_taxonomy.csv", p.stderr)
        for t in TABLES:
            self.assertEqual(int(self.sql("SELECT count(*) FROM " + t)[0][0]), 0, t)


if __name__ == "__main__":
    harness.main()
