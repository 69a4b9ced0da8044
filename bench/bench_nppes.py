"""Benchmark: NPPES bulk import of a generated 1,000,000-row file in the real 330-column layout.

Writes the file from the real header (tests/fixtures/npi/npidata_pfile_header.csv), every value
double-quoted as CMS does, then imports it twice into scratch databases and prints rows/s and peak
RSS of each:
- outreach: `outreachctl import-nppes FILE` into the empty table (streaming reader, binary COPY
  straight into npi_providers, its key and secondary indexes built afterwards), then the same file
  again into the loaded table (binary COPY into a staging table, an anti-join leaves out the unchanged
  rows, one upsert);
- naive: `psql \\copy` of the raw CSV into a 330-column text table, then `INSERT ... SELECT` into the
  same npi_providers table.
Peak RSS is read by GNU time. Goal: at least 250,000 rows/s, 3x the naive path, RSS under 64 MB. Set BENCH_NPPES_ROWS for
another size; fails only when rows go missing.
"""
import csv
import os
import re
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


def with_db(url, name):
    m = re.match(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    return m.group(1) + "/" + name + (m.group(3) or "")


def generate(path):
    header = next(csv.reader(open(HEADER, newline="")))
    col = {n: i for i, n in enumerate(header)}
    fill = {
        "Entity Type Code": lambda i: "1" if i % 4 else "2",
        "Provider Last Name (Legal Name)": lambda i: "" if i % 4 == 0 else "SMITH%d" % (i % 9973),
        "Provider First Name": lambda i: "" if i % 4 == 0 else "ANA",
        "Provider Organization Name (Legal Business Name)": lambda i: "CLINIC %d LLC" % i if i % 4 == 0 else "",
        "Provider Credential Text": lambda i: "M.D.",
        "Employer Identification Number (EIN)": lambda i: "<UNAVAIL>",
        "Provider First Line Business Practice Location Address": lambda i: "%d MAIN ST" % (i % 5000),
        "Provider Business Practice Location Address City Name": lambda i: "MOOSE LAKE",
        "Provider Business Practice Location Address State Name": lambda i: ("MN", "WI", "NC", "PA")[i % 4],
        "Provider Business Practice Location Address Postal Code": lambda i: "5576%05d" % (i % 100000),
        "Provider Business Practice Location Address Telephone Number": lambda i: "2184854491",
        "Provider First Line Business Mailing Address": lambda i: "PO BOX %d" % (i % 900),
        "Provider Business Mailing Address City Name": lambda i: "DULUTH",
        "Provider Business Mailing Address State Name": lambda i: "MN",
        "Provider Enumeration Date": lambda i: "05/27/2005",
        "Last Update Date": lambda i: "12/04/2012",
        "Provider Sex Code": lambda i: "F" if i % 2 else "M",
        "Healthcare Provider Taxonomy Code_1": lambda i: "207R00000X",
        "Provider License Number_1": lambda i: "43634",
        "Provider License Number State Code_1": lambda i: "MN",
        "Healthcare Provider Primary Taxonomy Switch_1": lambda i: "Y",
        "Healthcare Provider Taxonomy Code_2": lambda i: "208000000X",
        "Healthcare Provider Primary Taxonomy Switch_2": lambda i: "N",
        "Other Provider Identifier_1": lambda i: "110007804",
        "Other Provider Identifier Type Code_1": lambda i: "05",
        "Certification Date": lambda i: "05/20/2024" if i % 4 == 0 else "",
    }
    idx = [(col[n], f) for n, f in fill.items()]
    empty = [""] * len(header)
    with open(path, "w", newline="") as f:
        f.write(",".join('"%s"' % h for h in header) + "\r\n")
        for i in range(ROWS):
            row = list(empty)
            row[0] = "%010d" % (1000000000 + i)
            for c, fn in idx:
                row[c] = fn(i)
            f.write('"' + '","'.join(row) + '"\r\n')
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

        # outreach
        url, e = fresh_db(admin, "outreach_bench_nppes", env)
        secs, rss, out = peak_rss_of([os.path.join(BIN, "outreachctl"), "import-nppes", path], e)
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM npi_providers")
            n_ours = cur.fetchone()[0]
        conn.close()
        ours = ROWS / secs
        print("outreach import-nppes: %d rows in %.2f s: %.0f rows/s, peak RSS %.1f MB" % (n_ours, secs, ours, rss))
        print("  " + out.strip().splitlines()[-1])
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
        print("ratio: %.2fx the naive path (goal 3x); %.0f rows/s (goal 250,000); RSS %.1f MB (goal under 64 MB); "
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
