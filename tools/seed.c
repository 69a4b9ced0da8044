/* seed: `outreachctl seed-demo`: a small, believable demo data set built from real NPI records. */
#include "tools/seed.h"

#include <errno.h>
#include <glob.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/csv.h"
#include "common/db.h"
#include "common/log.h"

/*
 * What is loaded: five coordinators, the real NPI records of the fixtures (API answers and NPPES
 * rows) and generated physicians around their locations up to DEMO_SOURCES referral sources, a
 * year of contact history, cases, referrals with encounter revenue, and this month's and this
 * quarter's goals. Times are relative to now() so the demo always looks current; everything else
 * comes from a fixed-seed generator, so two loads differ only by the clock.
 */

#define DEMO_DOMAIN        "demo.example.org" /* coordinators' addresses: their presence marks the demo */
#define DEMO_SOURCES       300
#define DEMO_CASES         25
#define DEMO_MAX_REFERRALS 2000
#define DEMO_LOCK_KEY      "7345820174" /* pg_advisory_xact_lock key: one seed-demo at a time */

/* --- the cast ----------------------------------------------------------------------------------- */

static const struct {
	const char *name;
	const char *email; /* local part */
	const char *tz;
	int weight; /* share of the referral sources owned */
} coordinator_defs[] = {
	{ "Denise Okafor", "denise.okafor", "America/Chicago", 1 }, /* the manager of the others */
	{ "José Núñez", "jose.nunez", "America/New_York", 3 },
	{ "Priya Raman", "priya.raman", "America/Denver", 3 },
	{ "Tyler Brooks", "tyler.brooks", "America/Los_Angeles", 3 },
	{ "Leilani Kahananui", "leilani.kahananui", "Pacific/Honolulu", 2 },
};
#define NCOORD ((int)NELEM(coordinator_defs))

/* Names with their ASCII spelling for email addresses (NULL: the name itself, lower-cased). */
struct name {
	const char *name;
	const char *ascii;
};

static const struct name first_names[] = {
	{ "Maria", NULL },    { "James", NULL },      { "Aisha", NULL },     { "Wei", NULL },
	{ "Rahul", NULL },    { "Emily", NULL },      { "Michael", NULL },   { "Sofia", NULL },
	{ "David", NULL },    { "Grace", NULL },      { "Daniel", NULL },    { "Olivia", NULL },
	{ "Hiroshi", NULL },  { "Fatima", NULL },     { "Robert", NULL },    { "Linh", NULL },
	{ "Carlos", NULL },   { "Hannah", NULL },     { "Samuel", NULL },    { "Priscilla", NULL },
	{ "Kevin", NULL },    { "Elena", NULL },      { "Thomas", NULL },    { "Nadia", NULL },
	{ "Andrew", NULL },   { "Chloe", NULL },      { "Marcus", NULL },    { "Ingrid", NULL },
	{ "Omar", NULL },     { "Rebecca", NULL },    { "Benjamin", NULL },  { "Yuki", NULL },
	{ "Jonathan", NULL }, { "Lauren", NULL },     { "Ethan", NULL },     { "Renée", "renee" },
	{ "Zoë", "zoe" },     { "André", "andre" },   { "Katherine", NULL }, { "Ravi", NULL },
	{ "Adebayo", NULL },  { "Mónica", "monica" }, { "Patrick", NULL },   { "Anika", NULL },
	{ "Luis", NULL },
};

static const struct name last_names[] = {
	{ "Patel", NULL },     { "Nguyen", NULL },   { "Johnson", NULL },     { "García", "garcia" },
	{ "Kim", NULL },       { "Williams", NULL }, { "Okonkwo", NULL },     { "Schmidt", NULL },
	{ "Rossi", NULL },     { "Cohen", NULL },    { "Brown", NULL },       { "Hernández", "hernandez" },
	{ "Singh", NULL },     { "Anderson", NULL }, { "O'Brien", "obrien" }, { "Lee", NULL },
	{ "Martinez", NULL },  { "Kowalski", NULL }, { "Murphy", NULL },      { "Chen", NULL },
	{ "Reyes", NULL },     { "Thompson", NULL }, { "Ali", NULL },         { "Walker", NULL },
	{ "Yamamoto", NULL },  { "Fischer", NULL },  { "Baker", NULL },       { "Mensah", NULL },
	{ "Lindqvist", NULL }, { "Dubois", NULL },   { "Novak", NULL },       { "Morales", NULL },
	{ "Hughes", NULL },    { "Sullivan", NULL }, { "Peña", "pena" },      { "Müller", "mueller" },
	{ "Gonzalez", NULL },  { "Shah", NULL },     { "Bennett", NULL },     { "Castillo", NULL },
	{ "Ramirez", NULL },   { "Foster", NULL },   { "Ivanova", NULL },     { "Park", NULL },
	{ "Hall", NULL },      { "Collins", NULL },  { "Jensen", NULL },      { "Wright", NULL },
	{ "Abubakar", NULL },  { "Ortiz", NULL },    { "Delgado", NULL },     { "Tran", NULL },
};

/* --- service lines and specialties ---------------------------------------------------------------- */

enum { SL_PT, SL_IMAGING, SL_CARDIO, SL_ONC, SL_HOSPICE, NLINES };

static const struct {
	const char *name;
	int visits_min, visits_max;  /* encounters per completed referral */
	int spacing;                 /* days between them */
	long amount_min, amount_max; /* cents per encounter */
} lines[NLINES] = {
	[SL_PT] = { "Physical Therapy", 4, 12, 7, 9500, 16500 },
	[SL_IMAGING] = { "Imaging", 1, 1, 0, 22000, 285000 },
	[SL_CARDIO] = { "Cardiology", 1, 3, 28, 28000, 780000 },
	[SL_ONC] = { "Oncology", 1, 6, 21, 140000, 1150000 },
	[SL_HOSPICE] = { "Hospice", 1, 3, 30, 420000, 690000 },
};

/* The physician specialties of the generated sources: NUCC codes, checked against the taxonomy
 * file at run time. mix: the relative share of each service line in their referrals. */
static const struct {
	const char *code;
	int weight;
	unsigned char mix[NLINES];
	const char *practice; /* for the practice's email domain */
} specialty_defs[] = {
	{ "207Q00000X", 16, { 3, 3, 2, 1, 1 }, "family-medicine" },
	{ "207R00000X", 14, { 2, 3, 3, 1, 1 }, "internal-medicine" },
	{ "207X00000X", 9, { 7, 3, 0, 0, 0 }, "orthopaedics" },
	{ "207XX0005X", 4, { 7, 3, 0, 0, 0 }, "sports-medicine" },
	{ "207QS0010X", 3, { 7, 2, 0, 0, 0 }, "sports-medicine" },
	{ "207RC0000X", 7, { 0, 3, 7, 0, 0 }, "heart" },
	{ "2084N0400X", 5, { 4, 5, 0, 1, 0 }, "neurology" },
	{ "207V00000X", 6, { 1, 6, 0, 3, 0 }, "womens-health" },
	{ "208000000X", 5, { 5, 5, 0, 0, 0 }, "pediatrics" },
	{ "207RX0202X", 4, { 0, 3, 0, 6, 2 }, "oncology" },
	{ "207RH0003X", 3, { 0, 3, 0, 6, 2 }, "cancer-care" },
	{ "207RG0300X", 4, { 3, 1, 1, 0, 5 }, "senior-care" },
	{ "207QG0300X", 2, { 3, 1, 1, 0, 5 }, "senior-care" },
	{ "207RP1001X", 3, { 1, 4, 2, 2, 1 }, "lung" },
	{ "208600000X", 4, { 4, 3, 0, 3, 0 }, "surgical" },
	{ "208100000X", 3, { 8, 2, 0, 0, 0 }, "rehab" },
};

/* Service line mix of the real records by taxonomy code prefix; the default mixes everything. */
static const struct {
	const char *prefix;
	unsigned char mix[NLINES];
} code_mix[] = {
	{ "251G", { 0, 0, 0, 1, 9 } }, /* hospice */
	{ "251E", { 6, 0, 0, 0, 4 } }, /* home health */
	{ "31", { 6, 1, 0, 0, 3 } },   /* nursing and assisted living facilities */
	{ "293D", { 0, 8, 2, 0, 0 } }, /* physiological laboratory */
	{ "3336", { 0, 0, 0, 5, 3 } }, /* home infusion pharmacy */
	{ "207P", { 3, 5, 2, 1, 0 } }, /* emergency medicine */
	{ "207V", { 1, 6, 0, 3, 0 } }, /* obstetrics and gynecology */
	{ "207W", { 0, 6, 0, 0, 0 } }, /* ophthalmology */
};
static const unsigned char default_mix[NLINES] = { 3, 3, 2, 1, 1 };

/* --- what coordinators write ---------------------------------------------------------------------- */

enum { K_CALL, K_EMAIL, K_MEETING, K_EVENT, NKINDS };
static const char *const kind_names[NKINDS] = { "call", "email", "meeting", "event" };
static const int kind_weights[NKINDS] = { 40, 30, 18, 12 };

static const char *const subjects[NKINDS][5] = {
	{ "Quarterly check-in", "Follow-up on a recent referral", "Introduce the new central scheduling line",
	  "Ask about patient experience", "Discuss referral turnaround times" },
	{ "Saturday MRI hours", "Updated referral form", "Outcomes report for your patients",
	  "Invitation: cardiac rehab open house", "Thank you for your referrals" },
	{ "Lunch-and-learn with clinical staff", "Office visit with the practice manager",
	  "Meet the new physical therapy director", "Review of referral data",
	  "Introduce the oncology nurse navigator" },
	{ "Community health fair", "Grand rounds: sports injuries", "Physician appreciation dinner",
	  "CME breakfast: stroke care", "Golf outing for referring physicians" },
};

static const char *const outcomes[NKINDS][5] = {
	{ "Spoke with the physician; happy with turnaround", "Left a voicemail with the front desk",
	  "Spoke with the office manager; will share with the physicians",
	  "Reached the physician; asked for updated referral forms", "Asked for a callback next week" },
	{ "Replied with thanks", "Opened; no reply", "Asked for self-pay pricing",
	  "Forwarded to the office manager", "No response" },
	{ "Good attendance; left brochures", "Agreed to pilot electronic referrals",
	  "Raised a concern about report delays", "Positive; wants referral data every quarter",
	  "Met the office manager only; physician in surgery" },
	{ "Attended; introduced to two partners", "Stopped by briefly", "Registered but did not attend",
	  "Attended with office staff", "Asked for a follow-up meeting" },
};

static const char *const motivators[] = {
	"Fast scheduling for patients",
	"Wants consult notes back within 24 hours",
	"Values Saturday imaging slots",
	"Prefers a single point of contact",
	"Patients ask for locations close to home",
	"Interested in outcomes data",
	"Needs help with prior authorizations",
	"Bilingual staff for Spanish-speaking patients",
	"Follow-up communication after discharge",
	"Short drive for elderly patients",
};

static const char *const notes[] = {
	"Office manager handles all referrals; call before 10 am.",
	"Prefers email over phone.",
	"Lunch-and-learn in the spring was well attended.",
	"Moved to a new building this year; mailing list updated.",
	"Sent patients elsewhere after scheduling delays last year.",
	"Plans to retire in two years; a partner will take over the panel.",
	"Front desk turns over often; reintroduce at each visit.",
	"Refers most orthopaedic patients to a competitor; open to a visit.",
};

static const struct {
	const char *category;
	const char *summary[3];
} case_defs[] = {
	{ "scheduling",
	  { "Patient waited three weeks for an MRI slot",
	    "Referral fax not acknowledged; patient never called",
	    "Asks for early-morning physical therapy appointments" } },
	{ "billing",
	  { "Patient billed as out of network in error",
	    "Question about prior authorization for cardiac imaging",
	    "Duplicate charge on a patient statement" } },
	{ "communication",
	  { "Consult note not received after the visit", "Office not told that a patient was admitted",
	    "Wants a direct line to the scheduling lead" } },
	{ "clinical",
	  { "Asks for the post-operative physical therapy protocol",
	    "Disagrees with an imaging report reading", "Concern about hospice admission criteria" } },
};

static const char *const streets[] = {
	"MAIN ST",           "MEDICAL CENTER DR", "HOSPITAL WAY", "PARK AVE",    "OAK ST",
	"WASHINGTON BLVD",   "CHURCH ST",         "RIVERSIDE DR", "COLLEGE AVE", "LAKEVIEW RD",
	"PROFESSIONAL PKWY", "HEALTH PARK BLVD",  "ELM ST",
};

/* --- state ------------------------------------------------------------------------------------------ */

struct taxon {
	char *code;
	char *name; /* "Classification" or "Classification, Specialization", as the NPI Registry writes it */
};

struct place {
	char *city, *state, *zip5;
	char area[4]; /* telephone area code */
};

enum bucket { B_FINE, B_DUE_SOON, B_OVERDUE };

struct source {
	long long id;
	bool real, org;
	char npi[11];
	char *first, *last, *org_name, *credential, *code, *specialty;
	char *email, *phone, *address, *city, *state, *zip;
	const char *motivators, *notes, *status;
	const unsigned char *mix;
	int coord;
	int interval; /* 0: the default */
	int created_days;
	double rate; /* referrals a month */
	enum bucket bucket;
};

struct seed {
	struct db *db;
	PGconn *conn;
	const char *datadir;
	char *err;
	size_t errlen;
	uint64_t rng;

	struct taxon *tax;
	size_t ntax;
	struct place *places;
	size_t nplaces;
	struct source *src;
	size_t nsrc, srccap, nreal;
	int default_interval;

	long long coord_id[NCOORD];
	long patient_seq;
	long nact, ncases, nref, nenc, ngoals;
	long ref_12m[NLINES];
	long long rev_12m[NLINES];
	bool prepared;
};

static int fail(struct seed *s, const char *fmt, ...) PRINTFLIKE(2, 3);

static int
fail(struct seed *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, s->errlen, fmt, ap);
	va_end(ap);
	util_rtrim(s->err);
	return -1;
}

/* --- a deterministic generator (xorshift64*) ------------------------------------------------------ */

static uint64_t
rnd(struct seed *s)
{
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 2685821657736338717ULL;
}

/* An integer in [lo, hi]. */
static int
rnd_int(struct seed *s, int lo, int hi)
{
	return hi <= lo ? lo : lo + (int)(rnd(s) % (uint64_t)(hi - lo + 1));
}

static long
rnd_long(struct seed *s, long lo, long hi)
{
	return hi <= lo ? lo : lo + (long)(rnd(s) % (uint64_t)(hi - lo + 1));
}

/* A double in [0, 1). */
static double
rnd_unit(struct seed *s)
{
	return (double)(rnd(s) >> 11) * (1.0 / 9007199254740992.0);
}

static int
rnd_weighted(struct seed *s, const int *w, int n)
{
	int total = 0;

	for (int i = 0; i < n; i++)
		total += w[i];
	int x = rnd_int(s, 0, total - 1);
	for (int i = 0; i < n; i++) {
		if (x < w[i])
			return i;
		x -= w[i];
	}
	return n - 1;
}

static int
rnd_mix(struct seed *s, const unsigned char *mix)
{
	int w[NLINES];

	for (int i = 0; i < NLINES; i++)
		w[i] = mix[i];
	return rnd_weighted(s, w, NLINES);
}

/* A Poisson draw (Knuth's method; the means here are small). */
static int
rnd_poisson(struct seed *s, double mean)
{
	double limit = exp(-mean), p = rnd_unit(s);
	int k = 0;

	while (p > limit && k < 100) {
		k++;
		p *= rnd_unit(s);
	}
	return k;
}

/* --- small text helpers ------------------------------------------------------------------------------ */

/* The NPI check digit: Luhn over the card-issuer prefix 80840 and the first nine digits. */
static int
npi_check_digit(const char *first9)
{
	char digits[15];
	int sum = 0;

	memcpy(digits, "80840", 5);
	memcpy(digits + 5, first9, 9);
	/* The check digit will be appended: double every second digit from the right, starting here. */
	for (int i = 13, dbl = 1; i >= 0; i--, dbl = !dbl) {
		int d = digits[i] - '0';
		if (dbl && (d *= 2) > 9)
			d -= 9;
		sum += d;
	}
	return (10 - sum % 10) % 10;
}

static bool
npi_valid(const char *npi)
{
	if (strlen(npi) != 10 || strspn(npi, "0123456789") != 10)
		return false;
	return npi[9] - '0' == npi_check_digit(npi);
}

static char *
dup_or_null(const char *v)
{
	return v && *v ? xstrdup(v) : NULL;
}

/* "9106096740" and "910-609-6740" become "910-609-6740"; anything else is kept. */
static char *
phone_format(const char *v)
{
	char d[11];
	size_t n = 0;

	if (v == NULL || *v == '\0')
		return NULL;
	for (const char *p = v; *p; p++) {
		if (*p >= '0' && *p <= '9') {
			if (n == 10)
				return xstrdup(v);
			d[n++] = *p;
		}
	}
	if (n != 10)
		return xstrdup(v);
	return xasprintf("%.3s-%.3s-%.4s", d, d + 3, d + 6);
}

/* Lower-case ASCII letters and digits of s, other runs as one sep (0: dropped). */
static char *
slug(const char *s, char sep)
{
	size_t n = strlen(s);
	char *out = xmalloc(n + 1), *o = out;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
			*o++ = (char)*p;
		else if (*p >= 'A' && *p <= 'Z')
			*o++ = (char)(*p - 'A' + 'a');
		else if (sep && o > out && o[-1] != sep)
			*o++ = sep;
	}
	while (o > out && o[-1] == sep)
		o--;
	*o = '\0';
	return out;
}

static const char *
name_ascii(const struct name *n, char *buf, size_t len)
{
	char *sl = slug(n->ascii ? n->ascii : n->name, 0);
	util_strlcpy(buf, sl, len);
	free(sl);
	return buf;
}

static char *
path_join(const struct seed *s, const char *name)
{
	return xasprintf("%s/%s", s->datadir, name);
}

/* --- the taxonomy ---------------------------------------------------------------------------------- */

static int
load_taxonomy(struct seed *s)
{
	char *path = path_join(s, "nucc_taxonomy.csv");
	FILE *fp = fopen(path, "r");
	struct csv *r = NULL;
	size_t cap = 1024;
	int n, rc = -1;

	if (fp == NULL) {
		fail(s, "%s: %s (--data names the folder of the NPI fixtures)", path, strerror(errno));
		goto out;
	}
	r = csv_open(fp, path);
	if (csv_read_header(r) == -1) {
		fail(s, "%s", csv_error(r));
		goto out;
	}
	int code = csv_header_index(r, "Code");
	int cls = csv_header_index(r, "Classification");
	int spec = csv_header_index(r, "Specialization");
	if (code < 0 || cls < 0 || spec < 0) {
		fail(s, "%s: no Code, Classification or Specialization column: is it the NUCC taxonomy?",
		     path);
		goto out;
	}
	s->tax = xmalloc(cap * sizeof(*s->tax));
	while ((n = csv_read(r, NULL)) > 0) {
		const char *c = csv_field(r, code), *k = csv_field(r, cls), *sp = csv_field(r, spec);
		if (c == NULL || k == NULL || *c == '\0')
			continue;
		if (s->ntax == cap)
			s->tax = xrealloc(s->tax, (cap *= 2) * sizeof(*s->tax));
		s->tax[s->ntax].code = xstrdup(c);
		s->tax[s->ntax].name = sp && *sp ? xasprintf("%s, %s", k, sp) : xstrdup(k);
		s->ntax++;
	}
	if (n < 0) {
		fail(s, "%s", csv_error(r));
		goto out;
	}
	if (s->ntax == 0) {
		fail(s, "%s: no taxonomy codes", path);
		goto out;
	}
	rc = 0;
out:
	csv_free(r);
	if (fp)
		fclose(fp);
	free(path);
	return rc;
}

static const char *
taxonomy_name(const struct seed *s, const char *code)
{
	if (code == NULL)
		return NULL;
	for (size_t i = 0; i < s->ntax; i++)
		if (strcmp(s->tax[i].code, code) == 0)
			return s->tax[i].name;
	return NULL;
}

static const unsigned char *
mix_for(const char *code)
{
	if (code == NULL)
		return default_mix;
	for (size_t i = 0; i < NELEM(specialty_defs); i++)
		if (strcmp(specialty_defs[i].code, code) == 0)
			return specialty_defs[i].mix;
	for (size_t i = 0; i < NELEM(code_mix); i++)
		if (strncmp(code_mix[i].prefix, code, strlen(code_mix[i].prefix)) == 0)
			return code_mix[i].mix;
	return default_mix;
}

/* --- the real records ------------------------------------------------------------------------------- */

/* A new, zeroed source at the end of the list (which may move). */
static struct source *
new_source(struct seed *s)
{
	if (s->nsrc == s->srccap) {
		s->srccap = s->srccap ? s->srccap * 2 : DEMO_SOURCES + 16;
		s->src = xrealloc(s->src, s->srccap * sizeof(*s->src));
	}
	struct source *x = &s->src[s->nsrc++];
	memset(x, 0, sizeof(*x));
	return x;
}

static bool
npi_taken(const struct seed *s, const char *npi)
{
	for (size_t i = 0; i < s->nsrc; i++)
		if (strcmp(s->src[i].npi, npi) == 0)
			return true;
	return false;
}

static void
source_clear(struct source *x)
{
	free(x->first);
	free(x->last);
	free(x->org_name);
	free(x->credential);
	free(x->code);
	free(x->specialty);
	free(x->email);
	free(x->phone);
	free(x->address);
	free(x->city);
	free(x->state);
	free(x->zip);
}

/* Checks the real record just added (the last of the list) and keeps it, or drops it when its NPI
 * is already there. desc: the registry's name of its taxonomy, for a code the taxonomy file lacks. */
static int
keep_real(struct seed *s, struct source *x, const char *where, const char *desc)
{
	if (!npi_valid(x->npi)) {
		fail(s, "%s: NPI \"%s\" is not a valid 10-digit NPI", where, x->npi);
		return -1;
	}
	if ((x->org && x->org_name == NULL) || (!x->org && x->last == NULL)) {
		fail(s, "%s: NPI %s has no %s", where, x->npi, x->org ? "organization name" : "last name");
		return -1;
	}
	/* The record is the last one added; look for its NPI among the others. */
	s->nsrc--;
	bool dup = npi_taken(s, x->npi);
	s->nsrc++;
	if (dup) {
		log_debug("seed-demo: %s: NPI %s is already loaded; skipped", where, x->npi);
		source_clear(x);
		s->nsrc--;
		return 0;
	}
	x->real = true;
	x->specialty = dup_or_null(taxonomy_name(s, x->code));
	if (x->specialty == NULL)
		x->specialty = dup_or_null(desc);
	x->mix = mix_for(x->code);
	s->nreal++;
	return 0;
}

static const char *
jstr(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int
load_api_result(struct seed *s, const json_t *res, const char *where)
{
	const json_t *num = json_object_get(res, "number"), *basic = json_object_get(res, "basic");
	const char *type = jstr(res, "enumeration_type");
	struct source *x;

	if (!json_is_object(basic) || type == NULL) {
		fail(s, "%s: no basic or enumeration_type: not an NPI Registry record", where);
		return -1;
	}
	x = new_source(s);
	/* Older answers give the number as an integer, newer ones as a string. */
	if (json_is_string(num))
		util_strlcpy(x->npi, json_string_value(num), sizeof(x->npi));
	else if (json_is_integer(num))
		snprintf(x->npi, sizeof(x->npi), "%lld", (long long)json_integer_value(num));
	x->org = strcmp(type, "NPI-2") == 0;
	if (x->org) {
		x->org_name = dup_or_null(jstr(basic, "organization_name"));
	} else {
		x->first = dup_or_null(jstr(basic, "first_name"));
		x->last = dup_or_null(jstr(basic, "last_name"));
		x->credential = dup_or_null(jstr(basic, "credential"));
	}

	/* The primary taxonomy by its flag, else the first. */
	const json_t *taxes = json_object_get(res, "taxonomies"), *t, *pick = NULL;
	for (size_t i = 0; i < json_array_size(taxes); i++) {
		t = json_array_get(taxes, i);
		if (pick == NULL)
			pick = t;
		if (json_is_true(json_object_get(t, "primary"))) {
			pick = t;
			break;
		}
	}
	const char *code = pick ? jstr(pick, "code") : NULL;
	x->code = dup_or_null(code);

	/* The practice location by its purpose, never by its position. */
	const json_t *addrs = json_object_get(res, "addresses"), *a, *loc = NULL;
	for (size_t i = 0; i < json_array_size(addrs) && loc == NULL; i++) {
		a = json_array_get(addrs, i);
		const char *purpose = jstr(a, "address_purpose");
		if (purpose && strcasecmp(purpose, "LOCATION") == 0)
			loc = a;
	}
	if (loc) {
		x->address = dup_or_null(jstr(loc, "address_1"));
		x->city = dup_or_null(jstr(loc, "city"));
		x->state = dup_or_null(jstr(loc, "state"));
		x->zip = dup_or_null(jstr(loc, "postal_code"));
		x->phone = phone_format(jstr(loc, "telephone_number"));
	}
	return keep_real(s, x, where, pick ? jstr(pick, "desc") : NULL);
}

static int
load_api_file(struct seed *s, const char *path)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	const json_t *results, *res;
	char where[512];
	int rc = 0;

	if (root == NULL)
		return fail(s, "%s:%d: %s", path, jerr.line, jerr.text);
	results = json_object_get(root, "results");
	const json_t *errors = json_object_get(root, "Errors");
	if (errors != NULL) {
		const char *desc = jstr(json_array_get(errors, 0), "description");
		fail(s, "%s: an NPI Registry error answer: %s", path, desc ? desc : "(no description)");
		json_decref(root);
		return -1;
	}
	if (!json_is_array(results)) {
		json_decref(root);
		return fail(s, "%s: not an NPI Registry answer: no results array", path);
	}
	for (size_t i = 0; i < json_array_size(results); i++) {
		res = json_array_get(results, i);
		snprintf(where, sizeof(where), "%s: results[%zu]", path, i);
		if ((rc = load_api_result(s, res, where)) == -1)
			break;
	}
	json_decref(root);
	return rc;
}

/* The columns of the NPPES file that the demo uses, found by name. */
struct nppes_cols {
	int npi, type, org, last, first, cred, addr, city, state, zip, phone;
	int tax[15], primary[15];
};

static int
nppes_columns(struct seed *s, const struct csv *r, const char *path, struct nppes_cols *c)
{
	const struct {
		int *col;
		const char *name;
	} cols[] = {
		{ &c->npi, "NPI" },
		{ &c->type, "Entity Type Code" },
		{ &c->org, "Provider Organization Name (Legal Business Name)" },
		{ &c->last, "Provider Last Name (Legal Name)" },
		{ &c->first, "Provider First Name" },
		{ &c->cred, "Provider Credential Text" },
		{ &c->addr, "Provider First Line Business Practice Location Address" },
		{ &c->city, "Provider Business Practice Location Address City Name" },
		{ &c->state, "Provider Business Practice Location Address State Name" },
		{ &c->zip, "Provider Business Practice Location Address Postal Code" },
		{ &c->phone, "Provider Business Practice Location Address Telephone Number" },
	};
	char name[80];

	for (size_t i = 0; i < NELEM(cols); i++)
		if ((*cols[i].col = csv_header_index(r, cols[i].name)) < 0)
			return fail(s, "%s: no column \"%s\": is this an NPPES npidata_pfile?", path,
			            cols[i].name);
	for (int i = 0; i < 15; i++) {
		snprintf(name, sizeof(name), "Healthcare Provider Taxonomy Code_%d", i + 1);
		c->tax[i] = csv_header_index(r, name);
		snprintf(name, sizeof(name), "Healthcare Provider Primary Taxonomy Switch_%d", i + 1);
		c->primary[i] = csv_header_index(r, name);
	}
	if (c->tax[0] < 0)
		return fail(s, "%s: no column \"Healthcare Provider Taxonomy Code_1\"", path);
	return 0;
}

static const char *
field(const struct csv *r, int col)
{
	const char *v = csv_field(r, col);
	return v && *v ? v : NULL;
}

static int
load_nppes_file(struct seed *s, const char *path)
{
	FILE *fp = fopen(path, "r");
	struct csv *r = NULL;
	struct nppes_cols c;
	char where[512];
	int n, rc = -1;

	if (fp == NULL)
		return fail(s, "%s: %s", path, strerror(errno));
	r = csv_open(fp, path);
	if (csv_read_header(r) == -1) {
		fail(s, "%s", csv_error(r));
		goto out;
	}
	if (nppes_columns(s, r, path, &c) == -1)
		goto out;
	while ((n = csv_read(r, NULL)) > 0) {
		const char *type = field(r, c.type), *npi = field(r, c.npi);
		snprintf(where, sizeof(where), "%s:%lu", path, csv_line(r));
		if (type == NULL || npi == NULL)
			continue; /* a deactivated NPI: only the number and the date are published */
		struct source *x = new_source(s);
		util_strlcpy(x->npi, npi, sizeof(x->npi));
		x->org = strcmp(type, "2") == 0;
		if (x->org) {
			x->org_name = dup_or_null(field(r, c.org));
		} else {
			x->first = dup_or_null(field(r, c.first));
			x->last = dup_or_null(field(r, c.last));
			x->credential = dup_or_null(field(r, c.cred));
		}
		x->address = dup_or_null(field(r, c.addr));
		x->city = dup_or_null(field(r, c.city));
		x->state = dup_or_null(field(r, c.state));
		x->zip = dup_or_null(field(r, c.zip));
		x->phone = phone_format(field(r, c.phone));
		/* The primary taxonomy by its switch, else the first. */
		const char *code = field(r, c.tax[0]);
		for (int i = 0; i < 15; i++) {
			const char *sw = c.primary[i] >= 0 ? field(r, c.primary[i]) : NULL;
			if (sw && strcmp(sw, "Y") == 0 && c.tax[i] >= 0 && field(r, c.tax[i])) {
				code = field(r, c.tax[i]);
				break;
			}
		}
		x->code = dup_or_null(code);
		if (keep_real(s, x, where, NULL) == -1)
			goto out;
	}
	if (n < 0) {
		fail(s, "%s", csv_error(r));
		goto out;
	}
	rc = 0;
out:
	csv_free(r);
	fclose(fp);
	return rc;
}

static int
load_glob(struct seed *s, const char *pattern, int (*load)(struct seed *, const char *))
{
	char *pat = path_join(s, pattern);
	glob_t g;
	int rc = glob(pat, 0, NULL, &g);

	if (rc != 0) {
		fail(s, "%s: %s", pat, rc == GLOB_NOMATCH ? "no such file" : "cannot list the folder");
		globfree(&g);
		free(pat);
		return -1;
	}
	for (size_t i = 0; i < g.gl_pathc && rc == 0; i++)
		rc = load(s, g.gl_pathv[i]);
	globfree(&g);
	free(pat);
	return rc;
}

/* The places of the real records, for the generated physicians to practise in. */
static void
collect_places(struct seed *s)
{
	s->places = xcalloc(s->nreal + 1, sizeof(*s->places));
	for (size_t i = 0; i < s->nsrc; i++) {
		const struct source *x = &s->src[i];
		bool seen = false;
		if (x->city == NULL || x->state == NULL || x->zip == NULL || strlen(x->zip) < 5)
			continue;
		for (size_t j = 0; j < s->nplaces && !seen; j++)
			seen = strcmp(s->places[j].city, x->city) == 0 &&
			       strcmp(s->places[j].state, x->state) == 0;
		if (seen)
			continue;
		struct place *p = &s->places[s->nplaces++];
		p->city = x->city;
		p->state = x->state;
		p->zip5 = xstrndup(x->zip, 5);
		util_strlcpy(p->area, x->phone && strlen(x->phone) >= 3 ? x->phone : "555", sizeof(p->area));
	}
}

/* --- the generated physicians --------------------------------------------------------------------- */

static int
generate_sources(struct seed *s)
{
	int sw[NELEM(specialty_defs)];
	int nspec = 0;
	char fa[32], la[32];

	/* Only the specialties the taxonomy file knows. */
	for (size_t i = 0; i < NELEM(specialty_defs); i++) {
		sw[i] = 0;
		if (taxonomy_name(s, specialty_defs[i].code) == NULL) {
			log_warnx("seed-demo: taxonomy code %s is not in %s/nucc_taxonomy.csv; "
			          "physicians of that specialty are left out",
			          specialty_defs[i].code, s->datadir);
			continue;
		}
		sw[i] = specialty_defs[i].weight;
		nspec++;
	}
	if (nspec == 0)
		return fail(s, "%s/nucc_taxonomy.csv: none of the demo's physician taxonomy codes is there",
		            s->datadir);
	if (s->nplaces == 0)
		return fail(s, "%s: the NPI records give no practice location to build the demo around",
		            s->datadir);

	while (s->nsrc < DEMO_SOURCES) {
		const struct name *fn = &first_names[rnd_int(s, 0, (int)NELEM(first_names) - 1)];
		const struct name *ln = &last_names[rnd_int(s, 0, (int)NELEM(last_names) - 1)];
		int sp = rnd_weighted(s, sw, (int)NELEM(specialty_defs));
		const struct place *pl = &s->places[rnd_int(s, 0, (int)s->nplaces - 1)];
		char first9[10], npi[11];

		do {
			snprintf(first9, sizeof(first9), "1%08d", rnd_int(s, 0, 99999999));
			snprintf(npi, sizeof(npi), "%s%d", first9, npi_check_digit(first9));
		} while (npi_taken(s, npi));

		struct source *x = new_source(s);
		memcpy(x->npi, npi, sizeof(x->npi));
		x->first = xstrdup(fn->name);
		x->last = xstrdup(ln->name);
		x->credential = xstrdup(rnd_int(s, 0, 99) < 78 ? "MD" : "DO");
		x->code = xstrdup(specialty_defs[sp].code);
		x->specialty = xstrdup(taxonomy_name(s, x->code));
		x->mix = specialty_defs[sp].mix;
		x->city = xstrdup(pl->city);
		x->state = xstrdup(pl->state);
		x->zip = xstrdup(pl->zip5);
		x->address = rnd_int(s, 0, 2) == 0
		                     ? xasprintf("%d %s STE %d", rnd_int(s, 10, 9800),
		                                 streets[rnd_int(s, 0, (int)NELEM(streets) - 1)],
		                                 rnd_int(s, 1, 6) * 100 + rnd_int(s, 0, 20))
		                     : xasprintf("%d %s", rnd_int(s, 10, 9800),
		                                 streets[rnd_int(s, 0, (int)NELEM(streets) - 1)]);
		/* 555-0100 to 555-0199 are reserved for fiction in every area code. */
		x->phone = xasprintf("%s-555-01%02d", pl->area, rnd_int(s, 0, 99));
		if (rnd_int(s, 0, 99) < 50) {
			char *city = slug(pl->city, '-');
			name_ascii(fn, fa, sizeof(fa));
			name_ascii(ln, la, sizeof(la));
			x->email = rnd_int(s, 0, 3) == 0 ? xasprintf("%c%s@%s-%s.example.org", fa[0], la,
			                                             city, specialty_defs[sp].practice)
			                                 : xasprintf("%s.%s@%s-%s.example.org", fa, la, city,
			                                             specialty_defs[sp].practice);
			free(city);
		}
	}
	return 0;
}

/* Status, owner, interval and story of every source, real or generated. */
static void
plan_sources(struct seed *s)
{
	int cw[NCOORD];

	for (int i = 0; i < NCOORD; i++)
		cw[i] = coordinator_defs[i].weight;
	for (size_t i = 0; i < s->nsrc; i++) {
		struct source *x = &s->src[i];
		int r = rnd_int(s, 0, 99);

		x->status = x->real || r < 76 ? "active" : r < 93 ? "prospect" : "inactive";
		x->coord = rnd_weighted(s, cw, NCOORD);
		r = rnd_int(s, 0, 99);
		x->interval = r < 70 ? 0 : r < 80 ? 14 : r < 92 ? 60 : 90;
		if (strcmp(x->status, "prospect") == 0)
			x->created_days = rnd_int(s, 5, 120);
		else
			x->created_days = rnd_int(s, 400, 1500);
		if (!x->real && rnd_int(s, 0, 99) < 40)
			x->motivators = motivators[rnd_int(s, 0, (int)NELEM(motivators) - 1)];
		if (!x->real && rnd_int(s, 0, 99) < 25)
			x->notes = notes[rnd_int(s, 0, (int)NELEM(notes) - 1)];
		/* A few sources send most referrals; organizations send more than one physician. */
		double u = rnd_unit(s);
		x->rate = (0.1 + 1.6 * u * u * u) * (x->org ? 3.0 : 1.0);
	}

	/* Of the active sources, 17% overdue and 10% due within three days, drawn without replacement. */
	int active = 0;
	for (size_t i = 0; i < s->nsrc; i++)
		active += strcmp(s->src[i].status, "active") == 0;
	int overdue = (active * 17 + 50) / 100, soon = (active * 10 + 50) / 100;
	for (size_t i = 0; i < s->nsrc; i++) {
		struct source *x = &s->src[i];
		if (strcmp(x->status, "active") != 0) {
			x->bucket = B_FINE;
			continue;
		}
		int d = rnd_int(s, 0, active - 1);
		active--;
		if (d < overdue) {
			x->bucket = B_OVERDUE;
			overdue--;
		} else if (d < overdue + soon) {
			x->bucket = B_DUE_SOON;
			soon--;
		} else {
			x->bucket = B_FINE;
		}
	}
}

/* --- the database ---------------------------------------------------------------------------------- */

static const struct {
	const char *name;
	const char *sql;
} stmts[] = {
	{ "seed_coordinator", "INSERT INTO coordinators (name, email, time_zone, manager_id)"
	                      " VALUES ($1, $2, $3, $4) RETURNING id" },
	{ "seed_source",
	  "INSERT INTO referral_sources (kind, npi, first_name, last_name, organization_name, credential,"
	  "  specialty_code, specialty, status, coordinator_id, contact_interval_days, email, phone,"
	  "  address_line1, city, state, postal_code, motivators, notes, created_at)"
	  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,"
	  "  now() - make_interval(days => $20::int, mins => $21::int))"
	  " RETURNING id" },
	/* Days before (or, negative, after) today and minutes after midnight, in the coordinator's zone;
	 * a canceled activity was called off two days before it was due. */
	{ "seed_activity",
	  "INSERT INTO activities (source_id, coordinator_id, kind, subject, scheduled_at, completed_at,"
	  "  canceled_at, outcome, notes, created_at)"
	  " SELECT $1, $2, $3, $4, t.sched, t.done, t.cancel, $11, $12,"
	  "  CASE WHEN t.done IS NOT NULL THEN t.done"
	  "   WHEN t.cancel IS NOT NULL THEN t.cancel - interval '5 days'"
	  "   ELSE least(now(), t.sched - interval '10 days') END"
	  " FROM (SELECT s.sched, s.done, CASE WHEN $10::bool THEN s.sched - interval '2 days' END AS cancel"
	  "  FROM (SELECT"
	  "   CASE WHEN $6::int IS NULL THEN NULL"
	  "    ELSE (d.today - $6::int + make_interval(mins => $7::int)) AT TIME ZONE $5::text END AS sched,"
	  "   CASE WHEN $8::int IS NULL THEN NULL"
	  "    ELSE (d.today - $8::int + make_interval(mins => $9::int)) AT TIME ZONE $5::text END AS done"
	  "   FROM (SELECT (now() AT TIME ZONE $5::text)::date AS today) d) s) t" },
	{ "seed_case",
	  "INSERT INTO cases (source_id, assignee_id, category, priority, status, summary, opened_at,"
	  "  resolved_at)"
	  " VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(mins => $7::int),"
	  "  CASE WHEN $8::int IS NULL THEN NULL ELSE now() - make_interval(mins => $8::int) END)" },
	/* A referral and the encounters it brought: day offsets after the referral and amounts. */
	{ "seed_referral",
	  "WITH r AS ("
	  "  INSERT INTO referrals (source_id, service_line, referred_at, patient_key, status, created_at)"
	  "  VALUES ($1, $2, now() - make_interval(mins => $3::int), $4, $5,"
	  "   now() - make_interval(mins => $3::int))"
	  "  RETURNING id, referred_at)"
	  " INSERT INTO encounters (referral_id, service_date, amount_cents)"
	  " SELECT r.id, (r.referred_at AT TIME ZONE 'UTC')::date + e.days, e.amount"
	  " FROM r, unnest($6::int[], $7::bigint[]) AS e(days, amount)" },
	{ "seed_goal", "INSERT INTO outreach_goals (service_line, metric, period_start, period_end, target)"
	               " SELECT $1, $2, p.start::date,"
	               "  (p.start + make_interval(months => $3::int) - interval '1 day')::date, $5::numeric"
	               " FROM (SELECT date_trunc($4::text, now()) AS start) p" },
};

static int
prepare(struct seed *s)
{
	for (size_t i = 0; i < NELEM(stmts); i++) {
		PGresult *res = PQprepare(s->conn, stmts[i].name, stmts[i].sql, 0, NULL);
		bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok)
			fail(s, "preparing %s: %s", stmts[i].name, PQresultErrorMessage(res));
		PQclear(res);
		if (!ok)
			return -1;
		s->prepared = true;
	}
	return 0;
}

static void
unprepare(struct seed *s)
{
	char sql[64];

	if (!s->prepared)
		return;
	for (size_t i = 0; i < NELEM(stmts); i++) {
		snprintf(sql, sizeof(sql), "DEALLOCATE %s", stmts[i].name);
		PQclear(PQexec(s->conn, sql));
	}
}

static int run(struct seed *s, const char *stmt, int n, const char *const *v, long long *id, const char *fmt,
               ...) PRINTFLIKE(6, 7);

/* Runs a prepared statement; *id gets the first column of its row when id is not NULL. On failure the
 * error names what was being written (fmt). */
static int
run(struct seed *s, const char *stmt, int n, const char *const *v, long long *id, const char *fmt, ...)
{
	PGresult *res = PQexecPrepared(s->conn, stmt, n, v, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	char what[256];
	va_list ap;

	if ((st == PGRES_COMMAND_OK && id == NULL) ||
	    (st == PGRES_TUPLES_OK && (id == NULL || PQntuples(res) == 1))) {
		if (id)
			*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		return 0;
	}
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	fail(s, "%s: %s", what, msg ? msg : PQerrorMessage(s->conn));
	PQclear(res);
	return -1;
}

static const char *
num(char *buf, size_t len, long long v)
{
	snprintf(buf, len, "%lld", v);
	return buf;
}
#define NUM(buf, v) num((buf), sizeof(buf), (v))

static int
insert_coordinators(struct seed *s)
{
	char email[128], mgr[24];

	for (int i = 0; i < NCOORD; i++) {
		snprintf(email, sizeof(email), "%s@" DEMO_DOMAIN, coordinator_defs[i].email);
		const char *v[] = { coordinator_defs[i].name, email, coordinator_defs[i].tz,
			            i == 0 ? NULL : NUM(mgr, s->coord_id[0]) };
		if (run(s, "seed_coordinator", 4, v, &s->coord_id[i], "coordinator %s",
		        coordinator_defs[i].name) == -1)
			return -1;
	}
	return 0;
}

static const char *
source_label(const struct source *x, char *buf, size_t len)
{
	if (x->org)
		snprintf(buf, len, "referral source NPI %s (%s)", x->npi, x->org_name);
	else
		snprintf(buf, len, "referral source NPI %s (%s %s)", x->npi, x->first ? x->first : "",
		         x->last);
	return buf;
}

static int
insert_sources(struct seed *s)
{
	char coord[24], interval[24], days[24], mins[24], label[256];

	for (size_t i = 0; i < s->nsrc; i++) {
		struct source *x = &s->src[i];
		const char *v[] = {
			x->org ? "organization" : "physician",
			x->npi,
			x->first,
			x->last,
			x->org_name,
			x->credential,
			x->code,
			x->specialty,
			x->status,
			NUM(coord, s->coord_id[x->coord]),
			x->interval ? NUM(interval, x->interval) : NULL,
			x->email,
			x->phone,
			x->address,
			x->city,
			x->state,
			x->zip,
			x->motivators,
			x->notes,
			NUM(days, x->created_days),
			NUM(mins, rnd_int(s, 0, 600)),
		};
		if (run(s, "seed_source", (int)NELEM(v), v, &x->id, "%s",
		        source_label(x, label, sizeof(label))) == -1)
			return -1;
	}
	return 0;
}

/* One activity. days: before today in the coordinator's zone (negative: after); NO_DAY: not set. */
#define NO_DAY (-100000)

static int
insert_activity(struct seed *s, const struct source *x, int kind, int subject, int sched_days, int sched_min,
                int done_days, int done_min, bool canceled, const char *outcome, const char *note)
{
	char id[24], coord[24], sd[24], sm[24], dd[24], dm[24], label[256];
	const char *v[] = {
		NUM(id, x->id),
		NUM(coord, s->coord_id[x->coord]),
		kind_names[kind],
		subjects[kind][subject],
		coordinator_defs[x->coord].tz,
		sched_days == NO_DAY ? NULL : NUM(sd, sched_days),
		NUM(sm, sched_min),
		done_days == NO_DAY ? NULL : NUM(dd, done_days),
		NUM(dm, done_min),
		canceled ? "true" : "false",
		outcome,
		note,
	};

	if (run(s, "seed_activity", (int)NELEM(v), v, NULL, "activity for %s",
	        source_label(x, label, sizeof(label))) == -1)
		return -1;
	s->nact++;
	return 0;
}

/* A completed activity days ago, during working hours. */
static int
completed_activity(struct seed *s, const struct source *x, int days)
{
	int kind = rnd_weighted(s, kind_weights, NKINDS);
	int subject = rnd_int(s, 0, 4), minute = rnd_int(s, 8 * 60, 17 * 60 + 30);
	bool planned = kind == K_MEETING || kind == K_EVENT;

	return insert_activity(s, x, kind, subject, planned ? days : NO_DAY, minute, days, minute, false,
	                       outcomes[kind][rnd_int(s, 0, 4)], NULL);
}

/*
 * The contact history. The last contact decides when a source is due again (the database derives
 * next_due_at = last contact + interval), so it is placed by the source's bucket: overdue (due 1 to
 * 20 days ago), due within the next three days, or fine (due in more than three days). Dates are in
 * the owner's zone at working hours, so every bucket holds whatever the hour is now.
 */
static int
insert_history(struct seed *s)
{
	for (size_t i = 0; i < s->nsrc; i++) {
		const struct source *x = &s->src[i];
		int interval = x->interval ? x->interval : s->default_interval;
		int last, count, oldest;

		if (strcmp(x->status, "prospect") == 0) {
			/* Half were contacted once or twice since they were added. */
			if (rnd_int(s, 0, 1) == 0 || x->created_days < 3)
				continue;
			count = rnd_int(s, 1, 2);
			last = rnd_int(s, 1, x->created_days - 1 < 40 ? x->created_days - 1 : 40);
			oldest = x->created_days - 1;
		} else if (strcmp(x->status, "inactive") == 0) {
			count = rnd_int(s, 2, 5);
			last = rnd_int(s, 200, 500);
			oldest = x->created_days - 1;
		} else {
			count = rnd_int(s, 3, 8);
			switch (x->bucket) {
			case B_OVERDUE:
				last = interval + rnd_int(s, 1, 20);
				break;
			case B_DUE_SOON:
				last = interval - rnd_int(s, 1, 2);
				break;
			default:
				last = rnd_int(s, 1, interval - 4);
				break;
			}
			oldest = x->created_days - 1 < 365 ? x->created_days - 1 : 365;
		}
		/* Newest first: only the first moves last_contact_at. */
		for (int k = 0, days = last; k < count && days <= oldest; k++) {
			if (completed_activity(s, x, days) == -1)
				return -1;
			days += rnd_int(s, interval * 7 / 10, interval * 3 / 2);
		}

		/* What is planned: often for sources that are due, sometimes for the others. */
		if (strcmp(x->status, "inactive") != 0) {
			int chance = x->bucket == B_OVERDUE ? 40 : x->bucket == B_DUE_SOON ? 50 : 8;
			if (rnd_int(s, 0, 99) < chance) {
				int kind = rnd_int(s, 0, 2) == 0 ? K_MEETING : K_CALL;
				if (insert_activity(s, x, kind, rnd_int(s, 0, 4), -rnd_int(s, 1, 21),
				                    rnd_int(s, 9 * 60, 16 * 60) / 15 * 15, NO_DAY, 0, false,
				                    NULL, NULL) == -1)
					return -1;
			}
		}
	}

	/* A couple of meetings called off, with three different sources. */
	const struct source *called_off[3] = { NULL, NULL, NULL };
	for (int n = 0, tries = 0; n < 3 && tries < 1000; tries++) {
		const struct source *x = &s->src[rnd_int(s, 0, (int)s->nsrc - 1)];
		if (strcmp(x->status, "active") != 0 || x == called_off[0] || x == called_off[1])
			continue;
		called_off[n] = x;
		if (insert_activity(s, x, n == 2 ? K_EVENT : K_MEETING, rnd_int(s, 0, 4), rnd_int(s, 5, 40),
		                    rnd_int(s, 10, 15) * 60, NO_DAY, 0, true, NULL,
		                    n == 1 ? "Office closed for weather; to be rescheduled"
		                           : "Physician called out; to be rescheduled") == -1)
			return -1;
		n++;
	}
	return 0;
}

static int
insert_cases(struct seed *s)
{
	static const char *const prio[] = { "low", "normal", "normal", "normal", "high", "high", "urgent" };
	char src[24], coord[24], opened[24], resolved[24], label[256];

	for (int i = 0; i < DEMO_CASES; i++) {
		const struct source *x;
		do
			x = &s->src[rnd_int(s, 0, (int)s->nsrc - 1)];
		while (strcmp(x->status, "active") != 0);
		/* Five open, three pending, the rest resolved. */
		const char *status = i < 5 ? "open" : i < 8 ? "pending" : "resolved";
		int cat = rnd_int(s, 0, (int)NELEM(case_defs) - 1);
		int open_min = status[0] == 'r' ? rnd_int(s, 3, 180) * 1440 : rnd_int(s, 1, 30) * 1440;
		open_min += rnd_int(s, 0, 1439);
		int res_min = open_min - rnd_int(s, 2 * 60, 20 * 1440);
		if (res_min < 60)
			res_min = open_min / 2;
		const char *v[] = {
			NUM(src, x->id),
			NUM(coord, s->coord_id[x->coord]),
			case_defs[cat].category,
			prio[rnd_int(s, 0, (int)NELEM(prio) - 1)],
			status,
			case_defs[cat].summary[rnd_int(s, 0, 2)],
			NUM(opened, open_min),
			status[0] == 'r' ? NUM(resolved, res_min) : NULL,
		};
		if (run(s, "seed_case", (int)NELEM(v), v, NULL, "case %d for %s", i + 1,
		        source_label(x, label, sizeof(label))) == -1)
			return -1;
		s->ncases++;
	}
	return 0;
}

/* A patient key that looks like a hashed record number; unique because the mixing is a bijection. */
static void
patient_key(struct seed *s, char *buf, size_t len)
{
	uint32_t x = (uint32_t)++s->patient_seq;

	x = (x ^ 0x5bd1e995u) * 0x9E3779B1u;
	x ^= x >> 15;
	x *= 0x85EBCA77u;
	x ^= x >> 13;
	snprintf(buf, len, "PT-%08X", x);
}

static int
insert_referral(struct seed *s, const struct source *x, int line, int minutes_ago)
{
	char id[24], mins[24], key[16], days[256], amounts[512], label[256];
	int age = minutes_ago / 1440, r = rnd_int(s, 0, 99);
	const char *status;
	size_t dl = 0, al = 0;

	if (age < 3)
		status = r < 70 ? "received" : "scheduled";
	else if (age < 21)
		status = r < 10   ? "received"
		         : r < 50 ? "scheduled"
		         : r < 90 ? "completed"
		         : r < 95 ? "canceled"
		                  : "declined";
	else
		status = r < 86 ? "completed" : r < 95 ? "canceled" : "declined";

	/* Most completed referrals have their encounters, none after today. */
	dl += (size_t)snprintf(days + dl, sizeof(days) - dl, "{");
	al += (size_t)snprintf(amounts + al, sizeof(amounts) - al, "{");
	if (strcmp(status, "completed") == 0 && rnd_int(s, 0, 99) < 92) {
		int first = rnd_int(s, 1, age - 1 < 14 ? age - 1 : 14);
		int visits = rnd_int(s, lines[line].visits_min, lines[line].visits_max);
		for (int v = 0; v < visits; v++) {
			int d = first + v * lines[line].spacing;
			if (d > age - 1 || dl > sizeof(days) - 16 || al > sizeof(amounts) - 24)
				break;
			long amount = rnd_long(s, lines[line].amount_min, lines[line].amount_max);
			dl += (size_t)snprintf(days + dl, sizeof(days) - dl, "%s%d", v ? "," : "", d);
			al += (size_t)snprintf(amounts + al, sizeof(amounts) - al, "%s%ld", v ? "," : "",
			                       amount);
			if (minutes_ago < 366 * 1440)
				s->rev_12m[line] += amount;
			s->nenc++;
		}
	}
	snprintf(days + dl, sizeof(days) - dl, "}");
	snprintf(amounts + al, sizeof(amounts) - al, "}");
	patient_key(s, key, sizeof(key));

	const char *v[] = { NUM(id, x->id), lines[line].name, NUM(mins, minutes_ago), key, status,
		            days,           amounts };
	if (run(s, "seed_referral", (int)NELEM(v), v, NULL, "referral %s for %s", key,
	        source_label(x, label, sizeof(label))) == -1)
		return -1;
	s->nref++;
	if (minutes_ago < 365 * 1440)
		s->ref_12m[line]++;
	return 0;
}

/*
 * Thirteen months of referrals from the active sources, month by month, growing a little over the
 * year; sources that went without a visit for too long have sent fewer lately.
 */
static int
insert_referrals(struct seed *s)
{
	for (size_t i = 0; i < s->nsrc && s->nref < DEMO_MAX_REFERRALS; i++) {
		const struct source *x = &s->src[i];
		if (strcmp(x->status, "active") != 0)
			continue;
		for (int month = 12; month >= 0; month--) {
			double mean = x->rate * (0.85 + 0.3 * (12 - month) / 12.0);
			if (x->bucket == B_OVERDUE && month < 2)
				mean *= 0.4;
			int n = rnd_poisson(s, mean);
			for (int k = 0; k < n && s->nref < DEMO_MAX_REFERRALS; k++) {
				int minutes = month * 30 * 1440 + rnd_int(s, 60, 30 * 1440);
				if (insert_referral(s, x, rnd_mix(s, x->mix), minutes) == -1)
					return -1;
			}
		}
	}
	return 0;
}

static int
insert_goals(struct seed *s)
{
	static const struct {
		const char *unit;
		int months;
	} periods[] = { { "month", 1 }, { "quarter", 3 } };
	static const char *const metrics[] = { "referrals", "revenue_cents", "new_sources", "activities" };
	char months[24], target[24];

	for (int l = 0; l < NLINES; l++) {
		for (size_t p = 0; p < NELEM(periods); p++) {
			int m = periods[p].months;
			for (size_t k = 0; k < NELEM(metrics); k++) {
				long long t;
				switch (k) {
				case 0: /* ten percent over last year's pace */
					t = (s->ref_12m[l] * m * 11 + 119) / 120;
					break;
				case 1: /* likewise, in whole thousands of dollars */
					t = (s->rev_12m[l] * m * 11 / 120 + 99999) / 100000 * 100000;
					break;
				case 2:
					t = m == 1 ? 2 : 5;
					break;
				default:
					t = (s->nact * m * 11 / 120 / NLINES) + 1;
					break;
				}
				const char *v[] = { lines[l].name, metrics[k], NUM(months, m),
					            periods[p].unit, NUM(target, t) };
				if (run(s, "seed_goal", (int)NELEM(v), v, NULL, "goal %s %s for this %s",
				        lines[l].name, metrics[k], periods[p].unit) == -1)
					return -1;
				s->ngoals++;
			}
		}
	}
	return 0;
}

/* --- the whole ---------------------------------------------------------------------------------------- */

static int
demo_present(struct seed *s, bool *present)
{
	PGresult *res = db_query(s->db, "SELECT pg_advisory_xact_lock($1::bigint)", DB_ARGS(DEMO_LOCK_KEY));

	if (res == NULL)
		return fail(s, "locking: %s", db_error(s->db));
	PQclear(res);
	res = db_query(s->db, "SELECT count(*) FROM coordinators WHERE lower(email) LIKE $1",
	               DB_ARGS("%@" DEMO_DOMAIN));
	if (res == NULL)
		return fail(s, "looking for demo data: %s", db_error(s->db));
	*present = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
	PQclear(res);
	res = db_query(s->db, "SELECT outreach_default_contact_interval()", 0, NULL);
	if (res == NULL)
		return fail(s, "reading the default contact interval: %s", db_error(s->db));
	s->default_interval = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (s->default_interval < 5)
		s->default_interval = 5;
	return 0;
}

static void
seed_free(struct seed *s)
{
	for (size_t i = 0; i < s->ntax; i++) {
		free(s->tax[i].code);
		free(s->tax[i].name);
	}
	free(s->tax);
	for (size_t i = 0; i < s->nplaces; i++)
		free(s->places[i].zip5);
	free(s->places);
	for (size_t i = 0; i < s->nsrc; i++)
		source_clear(&s->src[i]);
	free(s->src);
}

int
seed_demo(struct db *db, const char *datadir, char *err, size_t errlen)
{
	struct seed s = {
		.db = db,
		.conn = db_conn(db),
		.datadir = datadir,
		.err = err,
		.errlen = errlen,
		.rng = 0x2545F4914F6CDD1DULL,
	};
	int64_t start = util_mono_ms();
	bool present = false;
	int rc = -1;

	if (db_begin(db) == -1) {
		fail(&s, "BEGIN: %s", db_error(db));
		return -1;
	}
	if (demo_present(&s, &present) == -1)
		goto out;
	if (present) {
		rc = 1;
		goto out;
	}
	if (load_taxonomy(&s) == -1 || load_glob(&s, "api_npi*.json", load_api_file) == -1 ||
	    load_glob(&s, "npidata_pfile_sample_rows_*.csv", load_nppes_file) == -1)
		goto out;
	collect_places(&s);
	if (generate_sources(&s) == -1)
		goto out;
	plan_sources(&s);
	if (prepare(&s) == -1 || insert_coordinators(&s) == -1 || insert_sources(&s) == -1 ||
	    insert_history(&s) == -1 || insert_cases(&s) == -1 || insert_referrals(&s) == -1 ||
	    insert_goals(&s) == -1)
		goto out;
	if (db_commit(db) == -1) {
		fail(&s, "COMMIT: %s", db_error(db));
		goto out;
	}
	rc = 0;
	log_info("demo data loaded: %d coordinators, %zu referral sources (%zu from NPI records), %ld "
	         "activities, "
	         "%ld cases, %ld referrals, %ld encounters, %ld goals in %.2f s",
	         NCOORD, s.nsrc, s.nreal, s.nact, s.ncases, s.nref, s.nenc, s.ngoals,
	         (double)(util_mono_ms() - start) / 1000.0);
out:
	if (rc != 0)
		db_rollback(db);
	unprepare(&s);
	seed_free(&s);
	return rc;
}
