/* segment: a campaign segment's criteria (see segment.h): validation and the parameterized query. */
#include "common/segment.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum value_form {
	FORM_CODE,   /* a NUCC code: nine digits or capitals, then X */
	FORM_NAME,   /* any non-empty text of at most 200 bytes */
	FORM_STATE,  /* two capital letters */
	FORM_POSTAL, /* 1..10 digits */
	FORM_STATUS, /* prospect, active, inactive */
	FORM_ID,     /* a positive integer */
	FORM_TAG,    /* source_tags.tag */
	FORM_KIND,   /* physician, organization */
};

/* The keys in the order their conditions appear in the query; $P stands for the key's parameter. */
static const struct key {
	const char *name;
	enum value_form form;
	const char *sql;
} keys[] = {
	{ "specialty_codes", FORM_CODE, "s.specialty_code = ANY($P::text[])" },
	{ "specialty_groupings", FORM_NAME,
	  "EXISTS (SELECT 1 FROM taxonomies tx WHERE tx.code = s.specialty_code AND "
	  "(tx.grouping = ANY($P::text[]) OR tx.classification = ANY($P::text[])))" },
	{ "states", FORM_STATE, "s.state = ANY($P::text[])" },
	{ "cities", FORM_NAME, "lower(s.city) = ANY(SELECT lower(c) FROM unnest($P::text[]) c)" },
	{ "postal_prefixes", FORM_POSTAL,
	  "EXISTS (SELECT 1 FROM unnest($P::text[]) p WHERE left(s.postal_code, length(p)) = p)" },
	{ "statuses", FORM_STATUS, "s.status = ANY($P::text[])" },
	{ "coordinator_ids", FORM_ID, "s.coordinator_id = ANY($P::bigint[])" },
	{ "tags", FORM_TAG,
	  "EXISTS (SELECT 1 FROM source_tags st WHERE st.source_id = s.id AND st.tag = ANY($P::text[]))" },
	{ "kinds", FORM_KIND, "s.kind = ANY($P::text[])" },
};

const char segment_eligible_sql[] =
        "s.email IS NOT NULL AND s.email <> '' "
        "AND NOT EXISTS (SELECT 1 FROM suppressions sp WHERE sp.address = lower(s.email))";

static bool
all_chars(const char *s, int (*cls)(int))
{
	for (; *s; s++)
		if (!cls((unsigned char)*s))
			return false;
	return true;
}

static int
is_code_char(int c)
{
	return isdigit(c) || isupper(c);
}

static int
is_tag_char(int c)
{
	return islower(c) || isdigit(c) || c == '_' || c == '.' || c == ':' || c == '-';
}

/* What is wrong with one value, or NULL when it is right. */
static const char *
value_problem(enum value_form form, const json_t *v)
{
	if (form == FORM_ID) {
		if (!json_is_integer(v) || json_integer_value(v) < 1)
			return "must be a positive integer";
		return NULL;
	}
	if (!json_is_string(v))
		return "must be a string";
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (strlen(s) != n)
		return "must not contain a NUL character";
	switch (form) {
	case FORM_CODE:
		if (n != 10 || s[9] != 'X')
			return "must be a NUCC taxonomy code like 207X00000X";
		for (size_t i = 0; i < 9; i++)
			if (!is_code_char((unsigned char)s[i]))
				return "must be a NUCC taxonomy code like 207X00000X";
		return NULL;
	case FORM_NAME:
		if (n == 0 || n > 200)
			return "must be 1 to 200 characters";
		return NULL;
	case FORM_STATE:
		if (n != 2 || !all_chars(s, isupper))
			return "must be a two-letter state code in capitals like TX";
		return NULL;
	case FORM_POSTAL:
		if (n == 0 || n > 10 || !all_chars(s, isdigit))
			return "must be 1 to 10 digits";
		return NULL;
	case FORM_STATUS:
		if (strcmp(s, "prospect") && strcmp(s, "active") && strcmp(s, "inactive"))
			return "must be prospect, active or inactive";
		return NULL;
	case FORM_TAG:
		if (n == 0 || n > 63 || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])) ||
		    !all_chars(s, is_tag_char))
			return "must be a tag: a lower-case letter or digit, then up to 62 of a-z 0-9 _ . : "
			       "-";
		return NULL;
	case FORM_KIND:
		if (strcmp(s, "physician") && strcmp(s, "organization"))
			return "must be physician or organization";
		return NULL;
	case FORM_ID:
		break;
	}
	return NULL;
}

static const struct key *
find_key(const char *name)
{
	for (size_t i = 0; i < NELEM(keys); i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

int
segment_check(const json_t *criteria, char *err, size_t errlen)
{
	const char *name;
	json_t *v;

	if (!json_is_object(criteria)) {
		snprintf(err, errlen, "criteria must be a JSON object");
		return -1;
	}
	json_object_foreach((json_t *)criteria, name, v)
	{
		const struct key *k = find_key(name);
		if (k == NULL) {
			snprintf(err, errlen,
			         "%s: unknown criterion (known: specialty_codes, specialty_groupings, "
			         "states, cities, "
			         "postal_prefixes, statuses, coordinator_ids, tags, kinds)",
			         name);
			return -1;
		}
		if (!json_is_array(v)) {
			snprintf(err, errlen, "%s: must be a list", name);
			return -1;
		}
		if (json_array_size(v) == 0) {
			snprintf(err, errlen,
			         "%s: must not be an empty list (leave the key out to not filter on it)",
			         name);
			return -1;
		}
		if (json_array_size(v) > SEGMENT_MAX_VALUES) {
			snprintf(err, errlen, "%s: has %zu values, at most %d are allowed", name,
			         json_array_size(v), SEGMENT_MAX_VALUES);
			return -1;
		}
		size_t i;
		json_t *item;
		json_array_foreach(v, i, item)
		{
			const char *why = value_problem(k->form, item);
			if (why) {
				char *shown = json_dumps(item, JSON_ENCODE_ANY | JSON_COMPACT);
				snprintf(err, errlen, "%s[%zu]: %.80s %s", name, i, shown ? shown : "?", why);
				free(shown);
				return -1;
			}
		}
	}
	return 0;
}

char *
segment_pg_array(const json_t *list)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	size_t i;
	json_t *v;

	if (f == NULL)
		abort();
	fputc('{', f);
	json_array_foreach(list, i, v)
	{
		if (i > 0)
			fputc(',', f);
		if (json_is_integer(v)) {
			fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
			continue;
		}
		fputc('"', f);
		for (const char *p = json_string_value(v); p && *p; p++) {
			if (*p == '"' || *p == '\\')
				fputc('\\', f);
			fputc(*p, f);
		}
		fputc('"', f);
	}
	fputc('}', f);
	if (fclose(f) != 0)
		abort();
	return out;
}

char *
segment_where(const json_t *criteria, int first, char **params, int *nparams)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	int n = 0;

	if (f == NULL)
		abort();
	for (size_t i = 0; i < NELEM(keys); i++) {
		const json_t *v = json_object_get(criteria, keys[i].name);
		if (v == NULL)
			continue;
		if (n > 0)
			fputs(" AND ", f);
		for (const char *p = keys[i].sql; *p; p++) {
			if (p[0] == '$' && p[1] == 'P') {
				fprintf(f, "$%d", first + n);
				p++;
			} else {
				fputc(*p, f);
			}
		}
		params[(*nparams)++] = segment_pg_array(v);
		n++;
	}
	if (n == 0)
		fputs("true", f);
	if (fclose(f) != 0)
		abort();
	return out;
}

char *
segment_query(const json_t *criteria, char **params, int *nparams)
{
	char *where = segment_where(criteria, *nparams + 1, params, nparams);
	char *sql = xasprintf("SELECT s.id FROM referral_sources s WHERE (%s) AND %s ORDER BY s.id", where,
	                      segment_eligible_sql);
	free(where);
	return sql;
}
