/* test_csv: the CSV reader against RFC 4180 corner cases and the real NUCC and NPPES files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/csv.h"

#define FIXTURES "tests/fixtures/npi/"

/* A reader over a copy of n bytes of text; the FILE is closed by reader_close. */
struct reader {
	FILE *fp;
	char *copy;
	struct csv *csv;
};

static void
reader_open_n(struct reader *rd, const char *text, size_t n)
{
	rd->copy = malloc(n + 1);
	assert_non_null(rd->copy);
	memcpy(rd->copy, text, n);
	rd->fp = fmemopen(rd->copy, n, "r");
	assert_non_null(rd->fp);
	rd->csv = csv_open(rd->fp, "test.csv");
	assert_non_null(rd->csv);
}

static void
reader_open(struct reader *rd, const char *text)
{
	reader_open_n(rd, text, strlen(text));
}

static void
reader_close(struct reader *rd)
{
	csv_free(rd->csv);
	fclose(rd->fp);
	free(rd->copy);
}

/* Reads one record and checks its fields; expected is NULL-terminated. */
static void
expect_record(struct csv *r, ...)
{
	const char *const *f = NULL;
	const char *want;
	va_list ap;
	int n = csv_read(r, &f), i = 0;

	if (n < 0)
		fail_msg("csv_read: %s", csv_error(r));
	va_start(ap, r);
	while ((want = va_arg(ap, const char *)) != NULL) {
		assert_true(i < n);
		assert_string_equal(f[i], want);
		assert_string_equal(csv_field(r, i), want);
		assert_int_equal(csv_field_len(r, i), strlen(want));
		i++;
	}
	va_end(ap);
	assert_int_equal(n, i);
	assert_int_equal(csv_nfields(r), n);
}

static void
expect_end(struct csv *r)
{
	assert_int_equal(csv_read(r, NULL), 0);
	assert_int_equal(csv_read(r, NULL), 0); /* and it stays at the end */
}

static void
test_plain(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "a,b,c\n1,2,3\n");
	assert_int_equal(csv_line(rd.csv), 0);
	expect_record(rd.csv, "a", "b", "c", NULL);
	assert_int_equal(csv_line(rd.csv), 1);
	assert_int_equal(csv_record(rd.csv), 1);
	expect_record(rd.csv, "1", "2", "3", NULL);
	assert_int_equal(csv_line(rd.csv), 2);
	assert_int_equal(csv_record(rd.csv), 2);
	expect_end(rd.csv);
	assert_string_equal(csv_error(rd.csv), "");
	reader_close(&rd);
}

static void
test_quoted_commas(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "\"Obstetrics & Gynecology, Gynecology\",x,\"a,b,c\"\n");
	expect_record(rd.csv, "Obstetrics & Gynecology, Gynecology", "x", "a,b,c", NULL);
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_embedded_newlines(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "\"line one\nline two\",x\r\n\"crlf\r\ninside\",y\nlast,z\n");
	expect_record(rd.csv, "line one\nline two", "x", NULL);
	assert_int_equal(csv_line(rd.csv), 1);
	expect_record(rd.csv, "crlf\r\ninside", "y", NULL);
	assert_int_equal(csv_line(rd.csv), 3);
	expect_record(rd.csv, "last", "z", NULL);
	assert_int_equal(csv_line(rd.csv), 5);
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_keep_fields(void **state)
{
	struct reader rd;

	(void)state;
	/* The tails hold commas, doubled quotes and line ends inside quotes, CRLF, and no last line end. */
	reader_open(&rd, "a,b,c,d\n1,\"2\",\"x,\"\"y\"\"\nz\",w\r\n3,4\n5\n6,7,\"8\nq\"");
	expect_record(rd.csv, "a", "b", "c", "d", NULL);
	csv_keep_fields(rd.csv, 2);
	expect_record(rd.csv, "1", "2", NULL);
	assert_int_equal(csv_line(rd.csv), 2);
	expect_record(rd.csv, "3", "4", NULL);
	assert_int_equal(csv_line(rd.csv), 4);
	expect_record(rd.csv, "5", NULL); /* a short record stays short */
	expect_record(rd.csv, "6", "7", NULL);
	assert_int_equal(csv_line(rd.csv), 6);
	expect_end(rd.csv);
	reader_close(&rd);

	reader_open(&rd, "1,2,\"open\n");
	csv_keep_fields(rd.csv, 1);
	assert_int_equal(csv_read(rd.csv, NULL), -1);
	assert_non_null(strstr(csv_error(rd.csv), "not closed"));
	reader_close(&rd);
}

/* Records whose skipped tails are long runs of quotes, commas, doubled quotes and line ends inside
 * quotes (the tail is read a chunk at a time): read with csv_keep_fields they give the same leading
 * fields and lines as read whole. */
static void
test_keep_fields_long_tails(void **state)
{
	static const char *const values[] = {"\"\"", "\"a,b\"", "\"x\"\"y\"", "plain", "\"line\nend\"",
	                                     "\"cr\r\nlf\"", "\"\"\"\"", "", "\"long value with, commas\""};
	char *text = malloc(200000);
	struct reader whole, kept;
	size_t n = 0;
	unsigned seed = 7;

	(void)state;
	assert_non_null(text);
	for (int rec = 0; rec < 500; rec++) {
		int nf = 1 + rec % 40;
		for (int f = 0; f < nf; f++) {
			seed = seed * 1103515245 + 12345;
			n += (size_t)sprintf(text + n, "%s%s", f ? "," : "", values[(seed >> 16) % NELEM(values)]);
		}
		n += (size_t)sprintf(text + n, "%s", rec % 3 ? "\r\n" : "\n");
	}
	reader_open_n(&whole, text, n);
	reader_open_n(&kept, text, n);
	csv_keep_fields(kept.csv, 2);
	for (;;) {
		int a = csv_read(whole.csv, NULL), b = csv_read(kept.csv, NULL);
		assert_int_not_equal(a, -1);
		assert_int_equal(b, a < 2 ? a : 2);
		if (a == 0)
			break;
		assert_int_equal(csv_line(kept.csv), csv_line(whole.csv));
		for (int i = 0; i < b; i++)
			assert_string_equal(csv_field(kept.csv, i), csv_field(whole.csv, i));
	}
	reader_close(&whole);
	reader_close(&kept);

	/* A quote left open in a long tail: the error names the line it opened on. */
	reader_open(&kept, "1,2,\"\",\"\",\"\",\"\"\n3,4,\"\",\"\",\"\",\"open,\"\"\",\"\n\n\n");
	csv_keep_fields(kept.csv, 1);
	expect_record(kept.csv, "1", NULL);
	assert_int_equal(csv_read(kept.csv, NULL), -1);
	assert_non_null(strstr(csv_error(kept.csv), ":2:"));
	reader_close(&kept);
	free(text);
}

static void
test_doubled_quotes(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "\"he said \"\"hi\"\"\",\"\"\"\",\"\"\"\"\"\"\n");
	expect_record(rd.csv, "he said \"hi\"", "\"", "\"\"", NULL);
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_lenient_quotes(void **state)
{
	struct reader rd;

	(void)state;
	/* A quote inside an unquoted field is kept; text after a closing quote is appended. */
	reader_open(&rd, "5'10\",ab\"c,\"x\"yz,\"q\"\n");
	expect_record(rd.csv, "5'10\"", "ab\"c", "xyz", "q", NULL);
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_bom(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "\xEF\xBB\xBF\"Code\",Name\n207X00000X,Orthopaedic Surgery\n");
	assert_int_equal(csv_read_header(rd.csv), 0);
	assert_int_equal(csv_header_index(rd.csv, "Code"), 0);
	assert_int_equal(csv_header_index(rd.csv, "Name"), 1);
	expect_record(rd.csv, "207X00000X", "Orthopaedic Surgery", NULL);
	expect_end(rd.csv);
	reader_close(&rd);

	/* Only at the very start: elsewhere the bytes are data. */
	reader_open(&rd, "a\n\xEF\xBB\xBF"
	                 "b\n");
	expect_record(rd.csv, "a", NULL);
	expect_record(rd.csv,
	              "\xEF\xBB\xBF"
	              "b",
	              NULL);
	expect_end(rd.csv);
	reader_close(&rd);

	/* A file that is only a byte order mark is empty. */
	reader_open(&rd, "\xEF\xBB\xBF");
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_line_ends(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "a,b\r\nc,d\r\n");
	expect_record(rd.csv, "a", "b", NULL);
	expect_record(rd.csv, "c", "d", NULL);
	assert_int_equal(csv_line(rd.csv), 2);
	expect_end(rd.csv);
	reader_close(&rd);

	/* A lone CR ends a line too, and mixed endings are fine. */
	reader_open(&rd, "a\rb\nc\r\nd\r");
	expect_record(rd.csv, "a", NULL);
	expect_record(rd.csv, "b", NULL);
	expect_record(rd.csv, "c", NULL);
	expect_record(rd.csv, "d", NULL);
	assert_int_equal(csv_line(rd.csv), 4);
	expect_end(rd.csv);
	reader_close(&rd);

	/* A quoted last field right before CRLF. */
	reader_open(&rd, "\"a\",\"b\"\r\n\"c\",\"d\"\r\n");
	expect_record(rd.csv, "a", "b", NULL);
	expect_record(rd.csv, "c", "d", NULL);
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_empty_fields(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, ",,\na,,\"\",b\n\"\"\n,\nx,\n");
	expect_record(rd.csv, "", "", "", NULL);
	expect_record(rd.csv, "a", "", "", "b", NULL);
	expect_record(rd.csv, "", NULL);
	expect_record(rd.csv, "", "", NULL);
	expect_record(rd.csv, "x", "", NULL);
	expect_end(rd.csv);
	reader_close(&rd);

	/* Empty lines between records are skipped but counted. */
	reader_open(&rd, "a\n\n\r\n\nb\n\n");
	expect_record(rd.csv, "a", NULL);
	expect_record(rd.csv, "b", NULL);
	assert_int_equal(csv_line(rd.csv), 5);
	expect_end(rd.csv);
	reader_close(&rd);

	reader_open(&rd, "");
	expect_end(rd.csv);
	assert_int_equal(csv_read_header(rd.csv), -1);
	assert_non_null(strstr(csv_error(rd.csv), "empty"));
	reader_close(&rd);
}

static void
test_no_trailing_newline(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "a,b\nc,d");
	expect_record(rd.csv, "a", "b", NULL);
	expect_record(rd.csv, "c", "d", NULL);
	expect_end(rd.csv);
	reader_close(&rd);

	reader_open(&rd, "a,\"b\"");
	expect_record(rd.csv, "a", "b", NULL);
	expect_end(rd.csv);
	reader_close(&rd);

	reader_open(&rd, "a,");
	expect_record(rd.csv, "a", "", NULL);
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_unterminated_quote(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "h1,h2\nok,1\nbad,\"never\nclosed\nat all\n");
	expect_record(rd.csv, "h1", "h2", NULL);
	expect_record(rd.csv, "ok", "1", NULL);
	assert_int_equal(csv_read(rd.csv, NULL), -1);
	assert_non_null(strstr(csv_error(rd.csv), "test.csv:3:"));
	assert_non_null(strstr(csv_error(rd.csv), "not closed"));
	/* Errors are final. */
	assert_int_equal(csv_read(rd.csv, NULL), -1);
	assert_null(csv_field(rd.csv, 0));
	reader_close(&rd);
}

static void
test_embedded_nul(void **state)
{
	struct reader rd;

	(void)state;
	reader_open_n(&rd, "a\0b,c\n", 6);
	assert_int_equal(csv_read(rd.csv, NULL), 2);
	assert_int_equal(csv_field_len(rd.csv, 0), 3);
	assert_memory_equal(csv_field(rd.csv, 0), "a\0b", 4);
	assert_string_equal(csv_field(rd.csv, 1), "c");
	reader_close(&rd);
}

static void
test_header_lookup(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "NPI,Provider Secondary Practice Location Address-  Address Line 2, City Name ,NPI\n"
	                 "1234567893,STE 200,NAPA,x\n"
	                 "1234567893\n");
	assert_int_equal(csv_header_index(rd.csv, "NPI"), -1); /* no header yet */
	assert_int_equal(csv_read_header(rd.csv), 0);
	assert_int_equal(csv_header_count(rd.csv), 4);
	assert_int_equal(csv_record(rd.csv), 1);
	assert_int_equal(csv_header_index(rd.csv, "NPI"), 0); /* the first of two */
	assert_int_equal(
	        csv_header_index(rd.csv, "Provider Secondary Practice Location Address-  Address Line 2"), 1);
	assert_int_equal(
	        csv_header_index(rd.csv, "Provider Secondary Practice Location Address- Address Line 2"), 1);
	assert_int_equal(csv_header_index(rd.csv, "city name"), 2);
	assert_int_equal(csv_header_index(rd.csv, "City"), -1);
	assert_int_equal(csv_header_index(rd.csv, "NPI2"), -1);
	assert_int_equal(csv_header_index(rd.csv, ""), -1);

	int city = csv_header_index(rd.csv, "City Name");
	expect_record(rd.csv, "1234567893", "STE 200", "NAPA", "x", NULL);
	assert_string_equal(csv_field(rd.csv, city), "NAPA");
	/* A short row: the missing columns are NULL, not a crash. */
	expect_record(rd.csv, "1234567893", NULL);
	assert_null(csv_field(rd.csv, city));
	assert_null(csv_field(rd.csv, -1));
	assert_int_equal(csv_field_len(rd.csv, city), 0);
	expect_end(rd.csv);
	reader_close(&rd);
}

static void
test_limits(void **state)
{
	struct reader rd;

	(void)state;
	reader_open(&rd, "short,row\n\"a runaway quoted field, x,y,z,\nand on and on and on\n");
	csv_set_limits(rd.csv, 24, 0);
	expect_record(rd.csv, "short", "row", NULL);
	assert_int_equal(csv_read(rd.csv, NULL), -1);
	assert_non_null(strstr(csv_error(rd.csv), "test.csv:2:"));
	if (strstr(csv_error(rd.csv), "longer than 24 bytes") == NULL)
		fail_msg("%s", csv_error(rd.csv));
	reader_close(&rd);

	reader_open(&rd, "a,b,c\na,b,c,d\n");
	csv_set_limits(rd.csv, 0, 3);
	expect_record(rd.csv, "a", "b", "c", NULL);
	assert_int_equal(csv_read(rd.csv, NULL), -1);
	assert_non_null(strstr(csv_error(rd.csv), "test.csv:2: record has more than 3 fields"));
	reader_close(&rd);

	/* The same limits on quoted fields, which are taken in one step until the buffers would grow. */
	reader_open(&rd, "\"aaaaaaaaaa\",\"bbbbbbbbbb\",\"cccccccccc\",\"d\"\n");
	csv_set_limits(rd.csv, 24, 0);
	assert_int_equal(csv_read(rd.csv, NULL), -1);
	if (strstr(csv_error(rd.csv), "test.csv:1: the record starting on this line is longer than 24 bytes") == NULL)
		fail_msg("%s", csv_error(rd.csv));
	reader_close(&rd);
	reader_open(&rd, "\"a\",\"b\",\"c\"\n\"a\",\"b\",\"c\",\"d\",\"e\"\n");
	csv_set_limits(rd.csv, 0, 3);
	expect_record(rd.csv, "a", "b", "c", NULL);
	assert_int_equal(csv_read(rd.csv, NULL), -1);
	assert_non_null(strstr(csv_error(rd.csv), "test.csv:2: record has more than 3 fields"));
	reader_close(&rd);

	/* Within the default limits a record grows as needed: 200 fields of 1000 bytes. */
	size_t n = 200 * 1001;
	char *big = malloc(n + 1);
	assert_non_null(big);
	for (size_t i = 0; i < 200; i++) {
		memset(big + i * 1001, 'a' + (int)(i % 26), 1000);
		big[i * 1001 + 1000] = i == 199 ? '\n' : ',';
	}
	reader_open_n(&rd, big, n);
	assert_int_equal(csv_read(rd.csv, NULL), 200);
	assert_int_equal(csv_field_len(rd.csv, 199), 1000);
	assert_int_equal(csv_field(rd.csv, 199)[0], 'a' + 199 % 26);
	expect_end(rd.csv);
	reader_close(&rd);
	free(big);
}

/* Every tricky token at every position around the reader's 64 KiB input buffer boundary. */
static void
test_buffer_boundaries(void **state)
{
	static const char tail[] = "\"x\"\"y\",\"p\r\nq\",z\r\n\"\",w\r\nlast";
	const size_t block = 64 * 1024;

	(void)state;
	for (size_t shift = 0; shift < sizeof(tail) + 2; shift++) {
		size_t padlen = block - shift, n = padlen + 1 + strlen(tail);
		char *text = malloc(n + 1);
		assert_non_null(text);
		memset(text, 'p', padlen);
		text[padlen] = '\n';
		memcpy(text + padlen + 1, tail, strlen(tail) + 1);

		struct reader rd;
		reader_open_n(&rd, text, n);
		assert_int_equal(csv_read(rd.csv, NULL), 1);
		assert_int_equal(csv_field_len(rd.csv, 0), padlen);
		expect_record(rd.csv, "x\"y", "p\r\nq", "z", NULL);
		assert_int_equal(csv_line(rd.csv), 2);
		expect_record(rd.csv, "", "w", NULL);
		assert_int_equal(csv_line(rd.csv), 4);
		expect_record(rd.csv, "last", NULL);
		expect_end(rd.csv);
		reader_close(&rd);
		free(text);
	}
}

static void
test_free_null(void **state)
{
	(void)state;
	csv_free(NULL);
}

static struct csv *
open_fixture(const char *name, FILE **fpp)
{
	FILE *fp = fopen(name, "r");

	if (fp == NULL)
		fail_msg("%s: cannot open (the tests run from the repository root)", name);
	*fpp = fp;
	return csv_open(fp, name);
}

static void
test_nucc_taxonomy(void **state)
{
	FILE *fp;
	struct csv *r = open_fixture(FIXTURES "nucc_taxonomy.csv", &fp);
	int n, records = 0, multiline = 0;
	bool saw_ortho = false, saw_group = false;

	(void)state;
	assert_int_equal(csv_read_header(r), 0);
	assert_int_equal(csv_header_count(r), 8);
	int code = csv_header_index(r, "Code");
	int cls = csv_header_index(r, "Classification");
	int spec = csv_header_index(r, "Specialization");
	int def = csv_header_index(r, "Definition");
	int disp = csv_header_index(r, "Display Name");
	int sect = csv_header_index(r, "Section");
	assert_int_equal(code, 0);
	assert_true(cls > 0 && spec > 0 && def > 0 && disp > 0);
	assert_int_equal(sect, 7); /* the last column: its name must not keep the CR of CRLF */

	while ((n = csv_read(r, NULL)) > 0) {
		records++;
		assert_int_equal(n, 8);
		const char *c = csv_field(r, code);
		assert_int_equal(strlen(c), 10);
		assert_int_equal(c[9], 'X');
		assert_null(strchr(csv_field(r, sect), '\r'));
		if (strchr(csv_field(r, def), '\n') != NULL)
			multiline++;
		if (strcmp(c, "207X00000X") == 0) {
			saw_ortho = true;
			assert_string_equal(csv_field(r, cls), "Orthopaedic Surgery");
			assert_string_equal(csv_field(r, spec), "");
			assert_string_equal(csv_field(r, disp), "Orthopaedic Surgery Physician");
		}
		if (strcmp(c, "193200000X") == 0) {
			saw_group = true;
			assert_non_null(strstr(csv_field(r, def), "individual practitioners, who practice"));
		}
	}
	if (n < 0)
		fail_msg("%s", csv_error(r));
	assert_int_equal(records, 883);
	assert_int_equal(csv_record(r), 884);
	assert_true(saw_ortho);
	assert_true(saw_group);
	(void)multiline;
	csv_free(r);
	fclose(fp);
}

static void
test_nppes_sample(void **state)
{
	FILE *fp;
	struct csv *r = open_fixture(FIXTURES "npidata_pfile_sample_rows_2021_330col_orgs.csv", &fp);
	const char *const *f;
	int n, rows = 0;

	(void)state;
	assert_int_equal(csv_read_header(r), 0);
	assert_int_equal(csv_header_count(r), 330);
	int npi = csv_header_index(r, "NPI");
	int org = csv_header_index(r, "Provider Organization Name (Legal Business Name)");
	int city = csv_header_index(r, "Provider Business Practice Location Address City Name");
	int state_ = csv_header_index(r, "Provider Business Practice Location Address State Name");
	int tax1 = csv_header_index(r, "Healthcare Provider Taxonomy Code_1");
	assert_int_equal(npi, 0);
	assert_int_equal(org, 4);
	assert_true(city > 0 && state_ > 0 && tax1 > 0);
	assert_true(csv_header_index(r, "Provider Gender Code") > 0);
	assert_int_equal(csv_header_index(r, "Provider Sex Code"), -1);

	while ((n = csv_read(r, &f)) > 0) {
		rows++;
		assert_int_equal(n, 330);
		assert_int_equal(strlen(f[npi]), 10);
		assert_string_equal(csv_field(r, csv_header_index(r, "Entity Type Code")), "2");
		if (rows == 1) {
			assert_string_equal(f[npi], "1497758544");
			assert_string_equal(f[org], "CUMBERLAND COUNTY HOSPITAL SYSTEM, INC");
			assert_string_equal(f[city], "FAYETTEVILLE");
			assert_string_equal(f[state_], "NC");
			assert_string_equal(f[tax1], "251G00000X");
		}
	}
	if (n < 0)
		fail_msg("%s", csv_error(r));
	assert_int_equal(rows, 12);
	csv_free(r);
	fclose(fp);
}

/* A small deterministic generator for the random round trips. */
static uint64_t
rnd_next(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

struct text {
	char *s;
	size_t len, cap;
};

static void
text_add(struct text *t, const char *p, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->s = realloc(t->s, t->cap);
		assert_non_null(t->s);
	}
	memcpy(t->s + t->len, p, n);
	t->len += n;
	t->s[t->len] = '\0';
}

/* Random records (commas, quotes, CR and LF inside fields, empty fields, long fields; quoted as a
 * writer would, or always, as NPPES does; CRLF, LF or CR between records), several 64 KiB buffers
 * long, read back whole and with csv_keep_fields: the same fields, lengths and lines. */
static void
test_random_round_trip(void **state)
{
	static const char *const pieces[] = {"a", "b", ",", "\"", "\n", "\r", " ", "xyz", "\"\"", "\",\"",
	                                     "0123456789ABCDEF0123"};
	static const char *const line_ends[] = {"\n", "\r\n", "\r"};
	static const size_t keeps[] = {0, 1, 2, 5, 17};
	enum { NREC = 4000, MAXF = 150 };
	static char long_piece[3001]; /* longer than the record buffer's first size */

	(void)state;
	memset(long_piece, 'L', sizeof(long_piece) - 1);
	for (uint64_t seed = 1; seed <= 6; seed++) {
		uint64_t x = seed * 0x9E3779B97F4A7C15u;
		struct text in = {0};
		static struct text want[NREC][MAXF];
		static int nf[NREC];
		static unsigned long line[NREC];
		unsigned long at = 1;
		bool quote_all = seed % 2 == 0;

		for (int i = 0; i < NREC; i++) {
			/* One record in fifty wider than the first field arrays (64). */
			nf[i] = rnd_next(&x) % 50 == 0 ? 65 + (int)(rnd_next(&x) % (MAXF - 64)) : 1 + (int)(rnd_next(&x) % 24);
			line[i] = at;
			for (int k = 0; k < nf[i]; k++) {
				struct text *f = &want[i][k];
				f->len = 0;
				text_add(f, "", 0);
				int npieces = rnd_next(&x) % 3 == 0 ? 0 : (int)(rnd_next(&x) % 6); /* a third empty */
				for (int j = 0; j < npieces; j++) {
					const char *pc = rnd_next(&x) % 200 == 0 ? long_piece : pieces[rnd_next(&x) % NELEM(pieces)];
					text_add(f, pc, strlen(pc));
				}
				bool special = strpbrk(f->s, ",\"\r\n") != NULL;
				if (k > 0)
					text_add(&in, ",", 1);
				if (special || quote_all || (nf[i] == 1 && f->len == 0) || rnd_next(&x) % 4 == 0) {
					text_add(&in, "\"", 1);
					for (const char *c = f->s; *c; c++) {
						text_add(&in, c, 1);
						if (*c == '"')
							text_add(&in, "\"", 1);
						if (*c == '\n')
							at++; /* a line end inside quotes counts as a line */
					}
					text_add(&in, "\"", 1);
				} else {
					text_add(&in, f->s, f->len);
				}
			}
			const char *le = line_ends[rnd_next(&x) % NELEM(line_ends)];
			text_add(&in, le, strlen(le));
			at++;
		}
		assert_true(in.len > 4 * 64 * 1024);

		for (size_t kk = 0; kk < NELEM(keeps); kk++) {
			struct reader rd;
			reader_open_n(&rd, in.s, in.len);
			csv_keep_fields(rd.csv, keeps[kk]);
			for (int i = 0; i < NREC; i++) {
				const char *const *f = NULL;
				int n = csv_read(rd.csv, &f);
				if (n < 0)
					fail_msg("seed %d record %d: %s", (int)seed, i, csv_error(rd.csv));
				int expect = keeps[kk] && (size_t)nf[i] > keeps[kk] ? (int)keeps[kk] : nf[i];
				assert_int_equal(n, expect);
				assert_int_equal(csv_line(rd.csv), line[i]);
				for (int k = 0; k < n; k++) {
					assert_int_equal(csv_field_len(rd.csv, k), want[i][k].len);
					assert_memory_equal(f[k], want[i][k].s, want[i][k].len);
					assert_int_equal(f[k][want[i][k].len], '\0');
				}
			}
			expect_end(rd.csv);
			reader_close(&rd);
		}
		for (int i = 0; i < NREC; i++)
			for (int k = 0; k < MAXF; k++) {
				free(want[i][k].s);
				want[i][k] = (struct text){0};
			}
		free(in.s);
	}
}

static void
test_nppes_header_file(void **state)
{
	FILE *fp;
	struct csv *r = open_fixture(FIXTURES "npidata_pfile_header.csv", &fp);

	(void)state;
	assert_int_equal(csv_read_header(r), 0);
	assert_int_equal(csv_header_count(r), 330);
	assert_int_equal(csv_header_index(r, "Provider Sex Code"), 41);
	assert_int_equal(csv_read(r, NULL), 0);
	csv_free(r);
	fclose(fp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_quoted_commas),
		cmocka_unit_test(test_embedded_newlines),
		cmocka_unit_test(test_doubled_quotes),
		cmocka_unit_test(test_lenient_quotes),
		cmocka_unit_test(test_bom),
		cmocka_unit_test(test_line_ends),
		cmocka_unit_test(test_empty_fields),
		cmocka_unit_test(test_no_trailing_newline),
		cmocka_unit_test(test_unterminated_quote),
		cmocka_unit_test(test_embedded_nul),
		cmocka_unit_test(test_header_lookup),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_buffer_boundaries),
		cmocka_unit_test(test_free_null),
		cmocka_unit_test(test_nucc_taxonomy),
		cmocka_unit_test(test_nppes_sample),
		cmocka_unit_test(test_keep_fields),
		cmocka_unit_test(test_keep_fields_long_tails),
		cmocka_unit_test(test_nppes_header_file),
		cmocka_unit_test(test_random_round_trip),
	};

	return cmocka_run_group_tests_name("csv", tests, NULL, NULL);
}
