/* npi: the NPI Registry API v2.1 without the network: search criteria, query parts, URLs, answers. */
#ifndef OUTREACH_NPI_H
#define OUTREACH_NPI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define NPI_PAGE_LIMIT 200 /* the API's largest limit */
#define NPI_MAX_SKIP 1000  /* the API's largest skip: one query reaches at most 1,200 records */

/*
 * A query part: the saved search narrowed by a postal-code prefix, an enumeration type and a name
 * prefix, and the skip of its next page. A search starts as one part; a part whose last reachable page
 * is full (it hit the 1,200 cap) is split into narrower parts until each is under the cap.
 */
struct npi_part {
	char postal[10]; /* digits; "" for none; 2..4 digits are sent as a wildcard "55*" */
	char etype[6];   /* "NPI-1", "NPI-2" or "" */
	char name[4];    /* two characters of the last name (NPI-1) or organization name (NPI-2), sent as
	                    "SM*"; "" for none; "-" when the search names someone (no name split) */
	int skip;
};

/* The most parts one split makes (two-character name prefixes of an organization). */
#define NPI_MAX_SPLIT 1600

/* Checks saved-search criteria (a JSON object): only known keys, string values, at least one
 * criterion besides state and enumeration_type (the API refuses those alone), postal_code 1..9 digits,
 * enumeration_type NPI-1 or NPI-2. 0, or -1 with what is wrong in err. */
int npi_criteria_check(const json_t *criteria, char *err, size_t errlen) MUSTCHECK;

/* The first part of a search: its postal-code prefix, its enumeration type. */
void npi_part_root(const json_t *criteria, struct npi_part *out);

/* Whether a part can be sent as it is: a postal prefix of one digit cannot (the API needs at least
 * two characters before a wildcard), it is split right away. */
bool npi_part_queryable(const struct npi_part *p);

/* Splits a part that reached the cap into narrower parts written to out (room for NPI_MAX_SPLIT): by
 * one more postal digit (two when it had none), then, at five digits, by enumeration type when the
 * search does not fix one, then by the first two characters of the last name (NPI-1: a letter, then a
 * letter, apostrophe, space or hyphen) or organization name (NPI-2: a letter or digit, then a letter,
 * digit, space or one of ' - . & ,), the API's shortest wildcard, unless the search names someone.
 * Returns how many, 0 when the part cannot be narrowed further. */
int npi_part_split(const struct npi_part *p, struct npi_part *out);

/* The request URL for a page of a part: base_url plus version=2.1, the criteria, the part's
 * narrowing, limit and skip, every value percent-encoded. taxonomy_code must have been resolved into
 * taxonomy_description by the caller when wanted. Caller frees. */
char *npi_url(const char *base_url, const json_t *criteria, const struct npi_part *p);

enum npi_answer {
	NPI_ANSWER_OK,       /* results taken: *records holds the normalized records */
	NPI_ANSWER_REFUSED,  /* the API's Errors array (served with HTTP 200): the search cannot succeed */
	NPI_ANSWER_GARBLED,  /* not the JSON the API sends (a proxy's page, a cut-off body): may pass */
};

/* Parses an answer body (whatever its Content-Type said). On NPI_ANSWER_OK, *records is a new JSON
 * array (caller decrefs) of normalized records (see npi_normalize) and *count the number of results
 * on the page (records that could not be normalized are counted in *skipped). Otherwise err holds the
 * API's own messages ("enumeration_type: enumeration_type requires additional search criteria
 * (09)") or what was wrong with the body. */
enum npi_answer npi_parse_answer(const char *body, size_t len, json_t **records, int *count, int *skipped,
                                 char *err, size_t errlen) MUSTCHECK;

/* One API result as the npi_take_page SQL function takes it: npi, enumeration_type, names,
 * credential, sex (basic.sex or basic.gender), the primary taxonomy (by its primary flag), every
 * taxonomy, the LOCATION address (picked by address_purpose) with phone and fax, the MAILING address,
 * enumeration_date, last_updated (ISO 8601 from last_updated_epoch in seconds or milliseconds, as a
 * string or a number, else basic.last_updated), status and the raw result. number may be a string or
 * an integer. Returns a new object, or NULL when the result has no valid NPI. */
json_t *npi_normalize(const json_t *result);

/* An epoch (string or integer, seconds or milliseconds) as milliseconds; -1 when absent or invalid. */
int64_t npi_epoch_ms(const json_t *v);

/* Progress: the parts still to do, as JSON (a new array) and back (*out malloc'ed, caller frees);
 * -1 when the JSON is not such a list. */
json_t *npi_parts_to_json(const struct npi_part *parts, size_t n);
int npi_parts_from_json(const json_t *a, struct npi_part **out, size_t *n) MUSTCHECK;

#endif
