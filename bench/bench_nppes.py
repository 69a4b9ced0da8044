"""Benchmark: NPPES bulk import of a generated 1,000,000-row file in the real 330-column layout.

Writes the file from the real header (tests/fixtures/npi/npidata_pfile_header.csv), every value
double-quoted as CMS does, with the real file's variety, drawn from a fixed seed (BENCH_NPPES_SEED):
NPIs with valid check digits, ascending with some local disorder; practice states weighted by
population and about 40,000 generated city names, the busiest cities taking most rows; the NUCC
codes of tests/fixtures/npi/nucc_taxonomy.csv, a few taking most rows, one to six a provider; tens of
thousands of names, thirty-odd credentials, enumeration and update dates since 2005; a fifth of the
rows organizations, and 1 in 50 deactivated (only the NPI and the deactivation date, as CMS
publishes them). Then it imports it twice into scratch databases and prints rows/s and peak
RSS of each:
- outreach: `outreachctl import-nppes FILE` into the empty table (streaming reader, binary COPY
  straight into npi_providers, its key and secondary indexes built afterwards), then the same file
  again into the loaded table (binary COPY into a staging table, an anti-join leaves out the unchanged
  rows, one upsert);
- naive: `psql \\copy` of the raw CSV into a 330-column text table, then `INSERT ... SELECT` into the
  same npi_providers table.
The first import runs BENCH_NPPES_RUNS times (3), each into a fresh database, and the median counts.
Peak RSS is read by GNU time. Goal: at least 250,000 rows/s, 3x the naive path, RSS under 64 MB. Set BENCH_NPPES_ROWS for
another size; fails only when rows go missing.
"""
import bisect
import csv
import datetime
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "bin"))
CONFIG = os.path.join(ROOT, "config", "outreach.conf")
ROWS = int(os.environ.get("BENCH_NPPES_ROWS", "1000000"))
HEADER = os.path.join(ROOT, "tests", "fixtures", "npi", "npidata_pfile_header.csv")
SEED = int(os.environ.get("BENCH_NPPES_SEED", "20260209"))
RUNS = max(1, int(os.environ.get("BENCH_NPPES_RUNS", "3")))
TAXONOMY = os.path.join(ROOT, "tests", "fixtures", "npi", "nucc_taxonomy.csv")

# The practice location's state: the 50 states, DC, the territories and the military post codes, weighted
# roughly by population (millions); about 1 in 2,000 rows is abroad (no state, a country code).
STATES = (("CA", 39.5), ("TX", 29.1), ("FL", 21.5), ("NY", 20.2), ("PA", 13.0), ("IL", 12.8), ("OH", 11.8),
          ("GA", 10.7), ("NC", 10.4), ("MI", 10.1), ("NJ", 9.3), ("VA", 8.6), ("WA", 7.7), ("AZ", 7.2),
          ("MA", 7.0), ("TN", 6.9), ("IN", 6.8), ("MD", 6.2), ("MO", 6.2), ("WI", 5.9), ("CO", 5.8), ("MN", 5.7),
          ("SC", 5.1), ("AL", 5.0), ("LA", 4.7), ("KY", 4.5), ("OR", 4.2), ("OK", 4.0), ("CT", 3.6), ("UT", 3.3),
          ("IA", 3.2), ("PR", 3.2), ("NV", 3.1), ("AR", 3.0), ("MS", 3.0), ("KS", 2.9), ("NM", 2.1), ("NE", 2.0),
          ("ID", 1.8), ("WV", 1.8), ("HI", 1.5), ("NH", 1.4), ("ME", 1.4), ("RI", 1.1), ("MT", 1.1), ("DE", 1.0),
          ("SD", 0.9), ("ND", 0.8), ("AK", 0.7), ("DC", 0.7), ("VT", 0.6), ("WY", 0.6), ("GU", 0.17),
          ("VI", 0.09), ("AS", 0.05), ("MP", 0.05), ("AE", 0.02), ("AP", 0.02), ("AA", 0.01), ("", 0.17))
ADDRESS_FIELDS = 8  # an address in the file: two lines, city, state, postal code, country, telephone, fax
CITIES_PER_MILLION = 120  # about 40,000 city names in all, a few hundred to several thousand a state
ROOTS = ("ash", "bel", "bright", "brook", "cam", "cedar", "clay", "clear", "crest", "dal", "day", "deer", "dun",
         "elm", "fair", "fal", "glen", "gran", "green", "hamp", "har", "hazel", "high", "hol", "kings", "lake",
         "lan", "lex", "lin", "mad", "mar", "max", "mil", "mont", "new", "nor", "oak", "pem", "pine", "plain",
         "port", "rich", "river", "rock", "ros", "salem", "sand", "shel", "spring", "stan", "stone", "sum",
         "tay", "thorn", "troy", "val", "war", "wash", "wel", "west", "whit", "wil", "win", "wood", "york")
ENDS = ("ville", "ton", "burg", "field", "wood", "dale", "port", "ford", "land", "haven", "view", "ridge",
        "mont", "more", "ley", "by", "stead", "chester", "ham", "well", "crest", "side", "brook", "")
CITY_PREFIX = ("", "", "", "", "", "", "NORTH ", "SOUTH ", "EAST ", "WEST ", "NEW ", "LAKE ", "MOUNT ", "FORT ",
               "PORT ", "SAINT ")
CITY_SUFFIX = ("",) * 12 + (" HEIGHTS", " SPRINGS", " CITY", " FALLS", " BEACH", " JUNCTION", " VALLEY")
SYL = ("an", "ber", "bro", "car", "cha", "da", "del", "der", "do", "el", "fer", "gal", "gar", "ha", "her", "ja",
       "ka", "kel", "ki", "la", "lan", "le", "li", "lo", "lu", "ma", "mar", "me", "mi", "mo", "na", "nel", "ni",
       "no", "pa", "per", "quin", "ra", "ren", "ri", "ro", "sa", "sch", "se", "son", "ta", "ter", "to", "tri",
       "va", "ven", "vi", "wa", "wes", "ya", "yo", "za", "zi")
STREETS = ("MAIN", "OAK", "PARK", "MAPLE", "PINE", "CEDAR", "ELM", "WASHINGTON", "LAKE", "HILL", "CHURCH",
           "MEDICAL CENTER", "HOSPITAL", "UNIVERSITY", "COLLEGE", "MARKET", "BROADWAY", "JEFFERSON", "LINCOLN",
           "MADISON", "FRANKLIN", "HIGHLAND", "RIVERSIDE", "SUNSET", "VILLAGE", "SPRING", "CENTER", "STATE",
           "PROFESSIONAL", "HEALTH PARK", "MILL", "RIDGE", "VALLEY", "FOREST", "MEADOW", "JACKSON", "KING")
STREET_KINDS = ("ST", "AVE", "RD", "DR", "BLVD", "LN", "WAY", "PKWY", "CT", "PL", "HWY", "CIR")
CREDENTIALS = (("M.D.", 30), ("MD", 14), ("", 14), ("D.O.", 4), ("DO", 2), ("NP", 5), ("FNP-C", 2), ("APRN", 2),
               ("PA-C", 5), ("PA", 1), ("RN", 3), ("LCSW", 3), ("LPC", 2), ("DDS", 3), ("DMD", 1), ("PT", 2),
               ("DPT", 2), ("PHARMD", 2), ("RPH", 1), ("OD", 1), ("DC", 1), ("PHD", 1), ("PSY.D.", 0.5),
               ("CRNA", 1), ("M.D., PH.D.", 0.5), ("MD, MPH", 0.5), ("OTR/L", 1), ("CCC-SLP", 1), ("RD", 0.5),
               ("LMFT", 1), ("DPM", 0.5), ("AU.D", 0.3), ("M.D", 1))
ORG_KINDS = ("MEDICAL GROUP", "FAMILY MEDICINE", "HOME HEALTH", "PHARMACY", "PHYSICAL THERAPY", "DENTAL CARE",
             "HOSPICE", "CLINIC", "IMAGING", "LABORATORY", "BEHAVIORAL HEALTH", "SURGERY CENTER", "AMBULANCE",
             "ORTHOPEDICS", "PEDIATRICS", "EYE CARE", "CHIROPRACTIC", "MEDICAL SUPPLY", "REHABILITATION",
             "NURSING AND REHAB CENTER", "CARDIOLOGY ASSOCIATES", "WOMENS HEALTH", "URGENT CARE")
ORG_SUFFIXES = ("LLC", "LLC", "INC", "INC.", "PC", "PLLC", "P.A.", "", "LLP", "CORPORATION", "LTD")
TITLES = ("CEO", "PRESIDENT", "OWNER", "ADMINISTRATOR", "OFFICE MANAGER", "MANAGING MEMBER", "CFO",
          "DIRECTOR", "COMPLIANCE OFFICER", "BILLING MANAGER")
# The busiest NUCC codes first (nurse practitioners, internal and family medicine, dentists, physical
# therapists, counsellors, pharmacists, nurses, students); the others in a seeded order behind them.
BUSY_CODES = ("363LF0000X", "207R00000X", "207Q00000X", "1223G0001X", "225100000X", "101YM0800X",
              "183500000X", "163W00000X", "390200000X", "363A00000X", "1041C0700X", "103T00000X",
              "332B00000X", "333600000X")
DAY0 = datetime.date(2005, 5, 23).toordinal()  # the first day of NPPES
LAST_DAY = datetime.date(2026, 2, 9).toordinal()  # the file's last day


def with_db(url, name):
    m = re.match(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    return m.group(1) + "/" + name + (m.group(3) or "")


def npi_check_digit(base):
    """The NPI's check digit: Luhn over the 80840 prefix and the nine digits (the prefix adds 24)."""
    s, double = 24, True
    while base:
        d = base % 10
        base //= 10
        if double:
            d *= 2
            d = d - 9 if d > 9 else d
        s += d
        double = not double
    return (10 - s % 10) % 10


def skewed(rng, n, power):
    """An index in [0, n) where small indexes are more likely: the busiest city, name or code first."""
    return int(n * rng.random() ** power)


def cum(pairs):
    total, out = 0.0, []
    for _, w in pairs:
        total += w
        out.append(total)
    return [v for v, _ in pairs], out


def word(rng, n):
    return "".join(rng.choice(SYL) for _ in range(n))


def generate(path):
    """Writes ROWS rows in the real header's 330 columns with the real file's variety, from SEED."""
    rng = random.Random(SEED)
    header = next(csv.reader(open(HEADER, newline="")))
    col = {n: i for i, n in enumerate(header)}
    c = lambda n: col[n]  # noqa: E731
    with open(TAXONOMY, newline="", encoding="utf-8") as f:
        nucc = [r for r in csv.DictReader(f)]
    ind = [r["Code"] for r in nucc if r["Section"] == "Individual" and r["Code"] not in BUSY_CODES]
    org = [r["Code"] for r in nucc if r["Section"] != "Individual" and r["Code"] not in BUSY_CODES]
    rng.shuffle(ind)
    rng.shuffle(org)
    ind_codes = list(BUSY_CODES) + ind
    org_codes = ["261QM1300X", "332B00000X", "333600000X", "251E00000X", "207Q00000X"] + org + ind
    state_codes, state_cum = cum(STATES)
    cities, zips, areas = {}, {}, {}
    for st, w in STATES:
        n = max(12, int(w * CITIES_PER_MILLION))
        names, seen = [], set()
        while len(names) < n:
            name = (rng.choice(CITY_PREFIX) + (rng.choice(ROOTS) + rng.choice(ENDS)).upper()
                    + rng.choice(CITY_SUFFIX))
            if name not in seen:
                seen.add(name)
                names.append(name)
        cities[st] = names
        lo = rng.randrange(1000, 99000)
        zips[st] = [lo + rng.randrange(0, 900) for _ in range(n)]
        areas[st] = [rng.randrange(201, 990) for _ in range(n)]
    surnames = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ",
                "MARTINEZ", "NGUYEN", "PATEL", "KIM", "LEE", "CHEN", "WILSON", "ANDERSON", "TAYLOR"]
    seen = set(surnames)
    while len(surnames) < 60000:
        s = word(rng, rng.choice((2, 2, 3, 3, 4))).upper()
        if s not in seen:
            seen.add(s)
            surnames.append(s)
    firsts = ["MICHAEL", "JENNIFER", "DAVID", "MARIA", "JOHN", "SARAH", "JAMES", "JESSICA", "ROBERT", "ELIZABETH"]
    seen = set(firsts)
    while len(firsts) < 3000:
        s = word(rng, rng.choice((2, 2, 3))).upper()
        if s not in seen:
            seen.add(s)
            firsts.append(s)
    creds, cred_cum = cum(CREDENTIALS)
    days = {}

    def date(ordinal):
        s = days.get(ordinal)
        if s is None:
            d = datetime.date.fromordinal(ordinal)
            s = days[ordinal] = "%02d/%02d/%04d" % (d.month, d.day, d.year)
        return s

    def enumerated():
        # A quarter in the first two years, when every provider took an NPI; the rest spread since.
        if rng.random() < 0.25:
            return DAY0 + skewed(rng, 730, 2)
        return DAY0 + rng.randrange(LAST_DAY - DAY0)

    def address(st, k, row, first):
        """The ADDRESS_FIELDS columns of an address from first on: two lines, city, state, postal code,
        country, telephone, fax."""
        row[first] = "%d %s %s" % (rng.randrange(1, 20000), rng.choice(STREETS), rng.choice(STREET_KINDS))
        if rng.random() < 0.3:
            row[first + 1] = rng.choice(("SUITE", "STE", "UNIT", "BLDG", "FLOOR")) + " %d" % rng.randrange(1, 900)
        if st:
            row[first + 2] = cities[st][k]
            row[first + 3] = st
            z = "%05d" % zips[st][k]
            row[first + 4] = z + "%04d" % rng.randrange(10000) if rng.random() < 0.6 else z
            row[first + 5] = "US"
            row[first + 6] = "%d%07d" % (areas[st][k], rng.randrange(2000000, 10000000))
            if rng.random() < 0.4:
                row[first + 7] = "%d%07d" % (areas[st][k], rng.randrange(2000000, 10000000))
        else:
            row[first + 2] = rng.choice(("TORONTO", "SEOUL", "MANILA", "LONDON", "MONTERREY"))
            row[first + 4] = "%d" % rng.randrange(10000, 99999)
            row[first + 5] = rng.choice(("CA", "KR", "PH", "GB", "MX"))

    n_state = len(state_codes)
    i_npi, i_deact, i_react, i_enum, i_upd = c("NPI"), c("NPI Deactivation Date"), c("NPI Reactivation Date"), \
        c("Provider Enumeration Date"), c("Last Update Date")
    i_tax, i_lic, i_licst, i_sw = (c("Healthcare Provider Taxonomy Code_1"), c("Provider License Number_1"),
                                   c("Provider License Number State Code_1"),
                                   c("Healthcare Provider Primary Taxonomy Switch_1"))
    i_loc, i_mail = (c("Provider First Line Business Practice Location Address"),
                     c("Provider First Line Business Mailing Address"))
    step = max(1, 99999999 // max(ROWS, 1))
    block = 4096
    with open(path, "w", newline="") as f:
        f.write(",".join('"%s"' % h for h in header) + "\r\n")
        done = 0
        while done < ROWS:
            nb = min(block, ROWS - done)
            # NPIs ascending with local disorder: now and then a row changes place with one a little ahead.
            bases = [100000000 + (done + k) * step + rng.randrange(step) for k in range(nb)]
            for k in range(nb):
                if rng.random() < 0.03:
                    j = min(nb - 1, k + rng.randrange(1, 64))
                    bases[k], bases[j] = bases[j], bases[k]
            out = []
            for base in bases:
                row = [""] * len(header)
                row[i_npi] = "%d%d" % (base, npi_check_digit(base))
                e = enumerated()
                u = rng.random()
                if u < 0.02:
                    # Deactivated: the NPI and its deactivation date only, as CMS publishes them.
                    row[i_deact] = date(e + rng.randrange(LAST_DAY - e + 1))
                    out.append(row)
                    continue
                person = u < 0.80
                st = state_codes[min(n_state - 1, bisect.bisect(state_cum, rng.random() * state_cum[-1]))]
                k = skewed(rng, len(cities[st]), 3) if st else 0
                row[c("Entity Type Code")] = "1" if person else "2"
                row[c("Employer Identification Number (EIN)")] = "" if person else "<UNAVAIL>"
                if person:
                    row[c("Provider Last Name (Legal Name)")] = surnames[skewed(rng, len(surnames), 2.5)]
                    row[c("Provider First Name")] = firsts[skewed(rng, len(firsts), 2.5)]
                    m = rng.random()
                    if m < 0.4:
                        row[c("Provider Middle Name")] = chr(65 + rng.randrange(26))
                    elif m < 0.7:
                        row[c("Provider Middle Name")] = firsts[skewed(rng, len(firsts), 2)]
                    row[c("Provider Credential Text")] = creds[bisect.bisect(cred_cum, rng.random() * cred_cum[-1])]
                    if rng.random() < 0.05:
                        row[c("Provider Name Prefix Text")] = rng.choice(("DR.", "MR.", "MS.", "MRS."))
                    row[c("Provider Sex Code")] = "F" if rng.random() < 0.55 else "M"
                    row[c("Is Sole Proprietor")] = rng.choice(("N", "N", "N", "Y", "X"))
                    codes = ind_codes
                else:
                    name = (cities[st][k] if st and rng.random() < 0.4
                            else surnames[skewed(rng, len(surnames), 2)])
                    row[c("Provider Organization Name (Legal Business Name)")] = " ".join(
                        filter(None, (name, rng.choice(ORG_KINDS), rng.choice(ORG_SUFFIXES))))
                    if rng.random() < 0.2:
                        row[c("Provider Other Organization Name")] = "%s %s" % (
                            surnames[skewed(rng, len(surnames), 2)], rng.choice(ORG_KINDS))
                        row[c("Provider Other Organization Name Type Code")] = "3"
                    row[c("Authorized Official Last Name")] = surnames[skewed(rng, len(surnames), 2.5)]
                    row[c("Authorized Official First Name")] = firsts[skewed(rng, len(firsts), 2.5)]
                    row[c("Authorized Official Title or Position")] = rng.choice(TITLES)
                    row[c("Authorized Official Telephone Number")] = "%d%07d" % (rng.randrange(201, 990),
                                                                                 rng.randrange(2000000, 10000000))
                    row[c("Is Organization Subpart")] = "Y" if rng.random() < 0.3 else "N"
                    codes = org_codes
                address(st, k, row, i_loc)
                if rng.random() < 0.7:
                    row[i_mail:i_mail + ADDRESS_FIELDS] = row[i_loc:i_loc + ADDRESS_FIELDS]
                else:
                    address(st, skewed(rng, len(cities[st]), 3) if st else 0, row, i_mail)
                row[i_enum] = date(e)
                row[i_upd] = date(e + skewed(rng, LAST_DAY - e + 1, 0.5))
                if rng.random() < 0.002:
                    row[i_deact] = date(e + 10)
                    row[i_react] = date(e + 40)
                # One to six taxonomies, the primary one most often first.
                t = rng.random()
                nt = 1 if t < 0.8 else 2 if t < 0.93 else 3 if t < 0.97 else rng.randrange(4, 7)
                primary = 0 if rng.random() < 0.85 else rng.randrange(nt)
                for j in range(nt):
                    row[i_tax + 4 * j] = codes[skewed(rng, len(codes), 3)]
                    row[i_sw + 4 * j] = "Y" if j == primary else "N"
                    if person and rng.random() < 0.7:
                        row[i_lic + 4 * j] = "%s%d" % (rng.choice(("", "", "MD", "A", "RN")),
                                                       rng.randrange(1000, 9999999))
                        row[i_licst + 4 * j] = st
                if rng.random() < 0.25:
                    row[c("Other Provider Identifier_1")] = "%d" % rng.randrange(100000, 999999999)
                    row[c("Other Provider Identifier Type Code_1")] = rng.choice(("01", "04", "05", "05"))
                    row[c("Other Provider Identifier State_1")] = st
                if rng.random() < 0.6:
                    row[c("Certification Date")] = date(LAST_DAY - rng.randrange(1500))
                out.append(row)
            f.write("".join('"' + '","'.join(r) + '"\r\n' for r in out))
            done += nb
    return len(header)


def peak_rss_of(argv, env):
    """Runs argv under GNU time to read its own peak RSS; returns (seconds, MB, output)."""
    tfd, tpath = tempfile.mkstemp(suffix=".time")
    os.close(tfd)
    out = tempfile.TemporaryFile(mode="w+")
    t0 = time.time()
    try:
        p = subprocess.run(["/usr/bin/time", "-o", tpath, "-f", "%M"] + list(argv), env=env, stdout=out,
                           stderr=subprocess.STDOUT, text=True)
        secs = time.time() - t0
        out.seek(0)
        text = out.read()
        if p.returncode != 0:
            sys.exit("%s failed:\n%s" % (" ".join(map(str, argv)), text))
        with open(tpath) as f:
            kb = int(f.read().split()[-1])
    finally:
        os.unlink(tpath)
    return secs, kb / 1024.0, text


def fresh_db(admin, name, env):
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        cur.execute("CREATE DATABASE " + name)
    conn.close()
    url = with_db(admin, name)
    e = dict(env, OUTREACH_DATABASE_URL=url, OUTREACH_CONFIG=CONFIG)
    subprocess.run([os.path.join(BIN, "outreachctl"), "migrate"], env=e, check=True, capture_output=True)
    return url, e


def main():
    admin = os.environ["OUTREACH_DATABASE_URL"]
    env = dict(os.environ)
    fd, path = tempfile.mkstemp(suffix=".csv", prefix="npidata_pfile_bench_")
    os.close(fd)
    try:
        t0 = time.time()
        ncols = generate(path)
        size = os.path.getsize(path)
        print("generated %d rows x %d columns (%.0f MB) in %.1f s; %d cores, load average %.2f"
              % (ROWS, ncols, size / 1e6, time.time() - t0, os.cpu_count(), os.getloadavg()[0]))

        # outreach, RUNS times into a fresh database: on a shared machine one run can take half as long
        # again as the next, so the median is the figure and the spread is shown.
        runs = []
        for i in range(RUNS):
            url, e = fresh_db(admin, "outreach_bench_nppes", env)
            secs, rss, out = peak_rss_of([os.path.join(BIN, "outreachctl"), "import-nppes", path], e)
            runs.append((secs, rss))
            print("outreach import-nppes, run %d of %d: %.2f s: %.0f rows/s, peak RSS %.1f MB"
                  % (i + 1, RUNS, secs, ROWS / secs, rss))
            print("  " + out.strip().splitlines()[-1])
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM npi_providers")
            n_ours = cur.fetchone()[0]
        conn.close()
        times = sorted(r[0] for r in runs)
        secs = statistics.median(times)
        rss = max(r[1] for r in runs)
        ours = ROWS / secs
        print("outreach import-nppes: %d rows; median of %d runs %.2f s: %.0f rows/s (best %.0f, worst %.0f), "
              "peak RSS %.1f MB" % (n_ours, RUNS, secs, ours, ROWS / times[0], ROWS / times[-1], rss))
        # The monthly refresh: the same file again into the loaded table (staging table, anti-join, upsert).
        rsecs, rrss, rout = peak_rss_of([os.path.join(BIN, "outreachctl"), "import-nppes", path], e)
        print("outreach import-nppes again into the loaded table: %.2f s: %.0f rows/s, peak RSS %.1f MB"
              % (rsecs, ROWS / rsecs, rrss))
        print("  " + rout.strip().splitlines()[-1])

        # naive: \copy into a 330-column text table, then INSERT ... SELECT into the same target
        url2, e2 = fresh_db(admin, "outreach_bench_nppes_naive", env)
        header = next(csv.reader(open(HEADER, newline="")))
        cols = ", ".join('c%d text' % i for i in range(len(header)))
        col = {n: "c%d" % i for i, n in enumerate(header)}

        def d(name):
            return "to_date(nullif(%s, ''), 'MM/DD/YYYY')" % col[name]

        def t(name):
            return "nullif(%s, '')" % col[name]
        script = (
            "CREATE UNLOGGED TABLE nppes_raw (%s);\n"
            "\\copy nppes_raw FROM '%s' WITH (FORMAT csv, HEADER true)\n"
            "INSERT INTO npi_providers (npi, enumeration_type, first_name, middle_name, last_name, organization_name, "
            "credential, sex, primary_taxonomy_code, address_line1, address_line2, city, state, postal_code, phone, fax, "
            "enumeration_date, last_updated, status, origin) SELECT %s, CASE %s WHEN '2' THEN 'NPI-2' ELSE 'NPI-1' END, "
            "%s, %s, %s, %s, %s, %s, CASE WHEN %s = 'Y' THEN %s ELSE %s END, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'A', "
            "'nppes' FROM nppes_raw ON CONFLICT (npi) DO NOTHING;\n" % (
                cols, path, col["NPI"], col["Entity Type Code"], t("Provider First Name"), t("Provider Middle Name"),
                t("Provider Last Name (Legal Name)"), t("Provider Organization Name (Legal Business Name)"),
                t("Provider Credential Text"), t("Provider Sex Code"),
                col["Healthcare Provider Primary Taxonomy Switch_1"], t("Healthcare Provider Taxonomy Code_1"),
                t("Healthcare Provider Taxonomy Code_2"),
                t("Provider First Line Business Practice Location Address"),
                t("Provider Second Line Business Practice Location Address"),
                t("Provider Business Practice Location Address City Name"),
                t("Provider Business Practice Location Address State Name"),
                t("Provider Business Practice Location Address Postal Code"),
                t("Provider Business Practice Location Address Telephone Number"),
                t("Provider Business Practice Location Address Fax Number"),
                d("Provider Enumeration Date"), d("Last Update Date")))
        sfd, spath = tempfile.mkstemp(suffix=".sql")
        with os.fdopen(sfd, "w") as f:
            f.write(script)
        try:
            nsecs, nrss, nout = peak_rss_of(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url2, "-f", spath], e2)
        finally:
            os.unlink(spath)
        conn = psycopg2.connect(url2)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM npi_providers")
            n_naive = cur.fetchone()[0]
        conn.close()
        naive = ROWS / nsecs
        print("naive psql \\copy + INSERT ... SELECT: %d rows in %.2f s: %.0f rows/s, psql peak RSS %.1f MB"
              % (n_naive, nsecs, naive, nrss))
        print("ratio: %.2fx the naive path (goal 3x); %.0f rows/s, the median (goal 250,000); RSS %.1f MB (goal under 64 MB); "
              "load average now %.2f" % (ours / naive, ours, rss, os.getloadavg()[0]))
        if n_ours != ROWS or n_naive != ROWS:
            sys.exit("rows went missing: outreach %d, naive %d, expected %d" % (n_ours, n_naive, ROWS))
    finally:
        os.unlink(path)
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS outreach_bench_nppes WITH (FORCE)")
            cur.execute("DROP DATABASE IF EXISTS outreach_bench_nppes_naive WITH (FORCE)")
        conn.close()


if __name__ == "__main__":
    main()
