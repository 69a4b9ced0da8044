/* npi: the NPI Registry API v2.1 without the network: search criteria, query parts, URLs, answers. */
#include "common/npi.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* The criteria a saved search may hold, and the API parameter each becomes (NULL: handled apart). */
static const struct {
	const char *key;
	const char *param;
} criteria_keys[] = {
    {"taxonomy_description", "taxonomy_description"},
    {"taxonomy_code", NULL},
    {"state", "state"},
    {"city", "city"},
    {"postal_code", NULL},
    {"enumeration_type", NULL},
    {"first_name", "first_name"},
    {"last_name", "last_name"},
    {"organization_name", "organization_name"},
};

static bool
all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

int
npi_criteria_check(const json_t *criteria, char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	bool narrowing = false;

	if (!json_is_object(criteria))
		return ERR("criteria must be a JSON object");
	json_object_foreach((json_t *)criteria, key, v) {
		size_t i;
		for (i = 0; i < NELEM(criteria_keys); i++)
			if (strcmp(criteria_keys[i].key, key) == 0)
				break;
		if (i == NELEM(criteria_keys))
			return ERR("unknown criterion %s (known: taxonomy_description, taxonomy_code, state, city, "
			           "postal_code, enumeration_type, first_name, last_name, organization_name)",
			           key);
		if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200)
			return ERR("%s must be a string of 1..200 characters", key);
		const char *s = json_string_value(v);
		/* A NUL ("\u0000") would cut the value where the registry's URL is built; a control
		 * character matches no provider and would reach terminals in listings. */
		if (strlen(s) != json_string_length(v))
			return ERR("%s must not contain a NUL character", key);
		for (const char *p = s; *p; p++)
			if (util_control_len(p) != 0)
				return ERR("%s must not contain control characters", key);
		if (strcmp(key, "postal_code") == 0 && (!all_digits(s) || strlen(s) > 9))
			return ERR("postal_code must be a prefix of 1..9 digits, e.g. 55 or 55767");
		if (strcmp(key, "enumeration_type") == 0 && strcmp(s, "NPI-1") != 0 && strcmp(s, "NPI-2") != 0)
			return ERR("enumeration_type must be NPI-1 (individuals) or NPI-2 (organizations)");
		if (strcmp(key, "state") == 0 && (strlen(s) != 2 || !isupper((unsigned char)s[0]) ||
		                                  !isupper((unsigned char)s[1])))
			return ERR("state must be a two-letter code like MN");
		if (strcmp(key, "taxonomy_code") == 0 && strlen(s) != 10)
			return ERR("taxonomy_code must be a NUCC code like 207R00000X");
		if (strcmp(key, "state") != 0 && strcmp(key, "enumeration_type") != 0)
			narrowing = true;
	}
	if (!narrowing)
		return ERR("the registry needs a criterion besides state and enumeration_type (a taxonomy, city, "
		           "postal code or name)");
	return 0;
}

void
npi_part_root(const json_t *criteria, struct npi_part *out)
{
	const char *postal = json_string_value(json_object_get(criteria, "postal_code"));
	const char *etype = json_string_value(json_object_get(criteria, "enumeration_type"));

	memset(out, 0, sizeof(*out));
	util_strlcpy(out->postal, postal ? postal : "", sizeof(out->postal));
	util_strlcpy(out->etype, etype ? etype : "", sizeof(out->etype));
	if (json_object_get(criteria, "first_name") || json_object_get(criteria, "last_name") ||
	    json_object_get(criteria, "organization_name"))
		util_strlcpy(out->name, "-", sizeof(out->name));
}

bool
npi_part_queryable(const struct npi_part *p)
{
	return strlen(p->postal) != 1;
}

int
npi_part_split(const struct npi_part *p, struct npi_part *out)
{
	size_t len = strlen(p->postal);
	int n = 0;

	if (len == 0) {
		for (int d = 0; d < 100; d++) {
			out[n] = *p;
			out[n].skip = 0;
			snprintf(out[n].postal, sizeof(out[n].postal), "%02d", d);
			n++;
		}
		return n;
	}
	if (len < 5) {
		for (int d = 0; d < 10; d++) {
			out[n] = *p;
			out[n].skip = 0;
			snprintf(out[n].postal, sizeof(out[n].postal), "%s%d", p->postal, d);
			n++;
		}
		return n;
	}
	if (p->etype[0] == '\0') {
		static const char *const types[] = {"NPI-1", "NPI-2"};
		for (int i = 0; i < 2; i++) {
			out[n] = *p;
			out[n].skip = 0;
			util_strlcpy(out[n].etype, types[i], sizeof(out[n].etype));
			n++;
		}
		return n;
	}
	if (p->name[0] == '\0') {
		bool org = strcmp(p->etype, "NPI-2") == 0;
		const char *first = org ? "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" : "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
		const char *second = org ? "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '-.&," : "ABCDEFGHIJKLMNOPQRSTUVWXYZ' -";
		for (const char *a = first; *a; a++)
			for (const char *b = second; *b; b++) {
				out[n] = *p;
				out[n].skip = 0;
				out[n].name[0] = *a;
				out[n].name[1] = *b;
				out[n].name[2] = '\0';
				n++;
			}
		return n;
	}
	return 0;
}

/* Appends "&name=value" to *buf (realloc'ed), the value percent-encoded (RFC 3986 unreserved kept). */
static void
add_param(char **buf, size_t *len, const char *name, const char *value)
{
	size_t need = *len + strlen(name) + 3 * strlen(value) + 3;
	char *b = xrealloc(*buf, need);
	char *o = b + *len;

	o += sprintf(o, "&%s=", name);
	for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
		if (isalnum(*s) || *s == '-' || *s == '_' || *s == '.' || *s == '~' || *s == '*')
			*o++ = (char)*s;
		else
			o += sprintf(o, "%%%02X", *s);
	}
	*o = '\0';
	*len = (size_t)(o - b);
	*buf = b;
}

char *
npi_url(const char *base_url, const json_t *criteria, const struct npi_part *p)
{
	char *buf = xasprintf("%s%sversion=2.1", base_url, strchr(base_url, '?') ? "&" : "?");
	size_t len = strlen(buf);
	char num[32];

	for (size_t i = 0; i < NELEM(criteria_keys); i++) {
		const char *v = json_string_value(json_object_get(criteria, criteria_keys[i].key));
		if (v && criteria_keys[i].param)
			add_param(&buf, &len, criteria_keys[i].param, v);
	}
	if (p->etype[0])
		add_param(&buf, &len, "enumeration_type", p->etype);
	if (p->name[0] && p->name[0] != '-') {
		char name[8];
		snprintf(name, sizeof(name), "%s*", p->name);
		add_param(&buf, &len, strcmp(p->etype, "NPI-2") == 0 ? "organization_name" : "last_name", name);
	}
	if (p->postal[0]) {
		char postal[16];
		snprintf(postal, sizeof(postal), strlen(p->postal) < 5 ? "%s*" : "%s", p->postal);
		add_param(&buf, &len, "postal_code", postal);
	}
	snprintf(num, sizeof(num), "%d", NPI_PAGE_LIMIT);
	add_param(&buf, &len, "limit", num);
	snprintf(num, sizeof(num), "%d", p->skip);
	add_param(&buf, &len, "skip", num);
	return buf;
}

int64_t
npi_epoch_ms(const json_t *v)
{
	long long e;

	if (json_is_integer(v))
		e = (long long)json_integer_value(v);
	else if (json_is_real(v))
		e = (long long)json_real_value(v);
	else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		if (!all_digits(s))
			return -1;
		e = strtoll(s, &end, 10);
	} else
		return -1;
	if (e <= 0)
		return -1;
	/* Seconds until the year 5138; anything larger is milliseconds. */
	return e < 100000000000LL ? e * 1000 : e;
}

/* A string member of o, NULL when absent, not a string, empty or the registry's "--" filler. */
static const char *
str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	if (s == NULL || *s == '\0' || strcmp(s, "--") == 0)
		return NULL;
	return s;
}

static void
set_str(json_t *o, const char *key, const char *v)
{
	json_object_set_new(o, key, v ? json_string(v) : json_null());
}

/* The NPI of a result: number as a 10-digit string or an integer. */
static bool
result_npi(const json_t *r, char out[11])
{
	json_t *n = json_object_get(r, "number");

	if (json_is_integer(n)) {
		json_int_t v = json_integer_value(n);
		if (v < 1000000000LL || v > 9999999999LL)
			return false;
		snprintf(out, 11, "%lld", (long long)v);
		return true;
	}
	if (json_is_string(n) && json_string_length(n) == 10 && all_digits(json_string_value(n))) {
		memcpy(out, json_string_value(n), 11);
		return true;
	}
	return false;
}

/* The address of a purpose (LOCATION or MAILING), whatever its position; NULL when none. */
static const json_t *
address_of(const json_t *r, const char *purpose)
{
	size_t i;
	json_t *a;

	json_array_foreach(json_object_get(r, "addresses"), i, a) {
		const char *p = json_string_value(json_object_get(a, "address_purpose"));
		if (p && strcasecmp(p, purpose) == 0)
			return a;
	}
	return NULL;
}

json_t *
npi_normalize(const json_t *r)
{
	char npi[11];
	const json_t *basic = json_object_get(r, "basic");
	json_t *o;

	if (!json_is_object(r) || !result_npi(r, npi))
		return NULL;
	o = json_object();
	set_str(o, "npi", npi);
	const char *etype = str(r, "enumeration_type");
	if (etype && strcmp(etype, "NPI-1") != 0 && strcmp(etype, "NPI-2") != 0)
		etype = NULL;
	if (etype == NULL)
		etype = str(basic, "organization_name") ? "NPI-2" : "NPI-1";
	set_str(o, "enumeration_type", etype);
	set_str(o, "first_name", str(basic, "first_name"));
	set_str(o, "middle_name", str(basic, "middle_name"));
	set_str(o, "last_name", str(basic, "last_name"));
	set_str(o, "organization_name", str(basic, "organization_name"));
	set_str(o, "credential", str(basic, "credential"));
	set_str(o, "sex", str(basic, "sex") ? str(basic, "sex") : str(basic, "gender"));
	set_str(o, "status", str(basic, "status"));

	const char *edate = str(basic, "enumeration_date");
	set_str(o, "enumeration_date", edate);

	/* last_updated: the epoch when there is one (more precise), else the date. */
	int64_t ms = npi_epoch_ms(json_object_get(r, "last_updated_epoch"));
	if (ms > 0) {
		time_t t = (time_t)(ms / 1000);
		struct tm tm;
		char iso[40];
		gmtime_r(&t, &tm);
		strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%S", &tm);
		char full[64];
		snprintf(full, sizeof(full), "%s.%03dZ", iso, (int)(ms % 1000));
		set_str(o, "last_updated", full);
	} else
		set_str(o, "last_updated", str(basic, "last_updated"));

	/* The primary taxonomy by its flag (true, "Y" or "true"), the first one when none is flagged. */
	json_t *taxes = json_object_get(r, "taxonomies");
	const json_t *primary = NULL;
	size_t i;
	json_t *t;
	json_t *list = json_array();
	json_array_foreach(taxes, i, t) {
		json_t *flag = json_object_get(t, "primary");
		const char *fs = json_string_value(flag);
		bool is_primary = json_is_true(flag) || (fs && (strcasecmp(fs, "Y") == 0 || strcasecmp(fs, "true") == 0));
		if (is_primary && primary == NULL)
			primary = t;
		json_array_append_new(list, json_pack("{s:s?, s:s?, s:s?, s:s?, s:b}", "code", str(t, "code"), "desc",
		                                      str(t, "desc"), "state", str(t, "state"), "license",
		                                      str(t, "license"), "primary", is_primary));
	}
	if (primary == NULL)
		primary = json_array_get(taxes, 0);
	set_str(o, "primary_taxonomy_code", primary ? str(primary, "code") : NULL);
	set_str(o, "primary_taxonomy_desc", primary ? str(primary, "desc") : NULL);
	json_object_set_new(o, "taxonomies", list);

	const json_t *loc = address_of(r, "LOCATION");
	set_str(o, "address_line1", loc ? str(loc, "address_1") : NULL);
	set_str(o, "address_line2", loc ? str(loc, "address_2") : NULL);
	set_str(o, "city", loc ? str(loc, "city") : NULL);
	set_str(o, "state", loc ? str(loc, "state") : NULL);
	set_str(o, "postal_code", loc ? str(loc, "postal_code") : NULL);
	set_str(o, "phone", loc ? str(loc, "telephone_number") : NULL);
	set_str(o, "fax", loc ? str(loc, "fax_number") : NULL);
	const json_t *mail = address_of(r, "MAILING");
	json_object_set_new(o, "mailing_address", mail ? json_deep_copy(mail) : json_null());
	json_object_set_new(o, "raw", json_deep_copy(r));
	return o;
}

enum npi_answer
npi_parse_answer(const char *body, size_t len, json_t **records, int *count, int *skipped, char *err,
                 size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *errors, *results;

	*records = NULL;
	*count = 0;
	*skipped = 0;
	if (root == NULL || !json_is_object(root)) {
		snprintf(err, errlen, "the answer is not a JSON object (%s)", root ? "other JSON" : jerr.text);
		json_decref(root);
		return NPI_ANSWER_GARBLED;
	}
	errors = json_object_get(root, "Errors");
	if (json_is_array(errors) && json_array_size(errors) > 0) {
		size_t i, used = 0;
		json_t *e;
		err[0] = '\0';
		json_array_foreach(errors, i, e) {
			const char *field = json_string_value(json_object_get(e, "field"));
			const char *desc = json_string_value(json_object_get(e, "description"));
			json_t *num = json_object_get(e, "number");
			char nbuf[32] = "";
			if (json_is_string(num))
				snprintf(nbuf, sizeof(nbuf), "%s", json_string_value(num));
			else if (json_is_integer(num))
				snprintf(nbuf, sizeof(nbuf), "%02lld", (long long)json_integer_value(num));
			if (used < errlen)
				used += (size_t)snprintf(err + used, errlen - used, "%s%s: %s%s%s%s", i ? "; " : "",
				                         field ? field : "request", desc ? desc : "refused",
				                         nbuf[0] ? " (" : "", nbuf, nbuf[0] ? ")" : "");
		}
		json_decref(root);
		return NPI_ANSWER_REFUSED;
	}
	results = json_object_get(root, "results");
	if (!json_is_array(results)) {
		snprintf(err, errlen, "the answer has neither results nor Errors");
		json_decref(root);
		return NPI_ANSWER_GARBLED;
	}
	json_t *out = json_array();
	size_t i;
	json_t *r;
	json_array_foreach(results, i, r) {
		json_t *n = npi_normalize(r);
		if (n)
			json_array_append_new(out, n);
		else
			(*skipped)++;
	}
	*count = (int)json_array_size(results);
	*records = out;
	json_decref(root);
	return NPI_ANSWER_OK;
}

json_t *
npi_parts_to_json(const struct npi_part *parts, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:i}", "postal", parts[i].postal, "etype",
		                                   parts[i].etype, "name", parts[i].name, "skip", parts[i].skip));
	return a;
}

int
npi_parts_from_json(const json_t *a, struct npi_part **out, size_t *n)
{
	size_t i;
	json_t *e;

	*out = NULL;
	*n = 0;
	if (!json_is_array(a))
		return -1;
	struct npi_part *parts = xcalloc(json_array_size(a) + 1, sizeof(*parts));
	json_array_foreach(a, i, e) {
		const char *postal = json_string_value(json_object_get(e, "postal"));
		const char *etype = json_string_value(json_object_get(e, "etype"));
		const char *name = json_string_value(json_object_get(e, "name")); /* absent in older progress */
		json_t *skip = json_object_get(e, "skip");
		if (postal == NULL || etype == NULL || !json_is_integer(skip) || strlen(postal) >= sizeof(parts[i].postal) ||
		    strlen(etype) >= sizeof(parts[i].etype) || (name && strlen(name) >= sizeof(parts[i].name))) {
			free(parts);
			return -1;
		}
		util_strlcpy(parts[i].postal, postal, sizeof(parts[i].postal));
		util_strlcpy(parts[i].etype, etype, sizeof(parts[i].etype));
		util_strlcpy(parts[i].name, name ? name : "", sizeof(parts[i].name));
		parts[i].skip = (int)json_integer_value(skip);
	}
	*out = parts;
	*n = json_array_size(a);
	return 0;
}
