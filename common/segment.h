/* segment: a campaign segment's criteria (JSON): checked, and turned into one parameterized query. */
#ifndef OUTREACH_SEGMENT_H
#define OUTREACH_SEGMENT_H

#include <jansson.h>
#include <stddef.h>

#include "common/util.h"

/*
 * The criteria are a JSON object; every key is optional, all given keys must hold (AND), and each
 * value is a non-empty list of at most SEGMENT_MAX_VALUES values, any of which may match (OR):
 *
 *   specialty_codes      NUCC codes ("207X00000X") of referral_sources.specialty_code
 *   specialty_groupings  NUCC grouping or classification names, through taxonomies
 *                        ("Allopathic & Osteopathic Physicians", "Orthopaedic Surgery")
 *   states               two-letter codes ("TX")
 *   cities               city names, compared without regard to case
 *   postal_prefixes      1 to 10 digits that start referral_sources.postal_code
 *   statuses             prospect, active, inactive
 *   coordinator_ids      coordinator ids (positive integers)
 *   tags                 source_tags tags
 *   kinds                physician, organization
 *
 * {} matches every source. Values never enter the SQL text: each key present adds one condition
 * with one array parameter, so the query's text depends only on which keys are present.
 */

#define SEGMENT_MAX_VALUES 1000 /* values in one list */
#define SEGMENT_MAX_PARAMS 9    /* parameters one segment adds: one per key */

/* Checks criteria: an object with only the keys above, each a non-empty list within bounds whose
 * values have the right form. 0, or -1 with "KEY: what is wrong" (or what is wrong with the whole)
 * in err. */
int segment_check(const json_t *criteria, char *err, size_t errlen) MUSTCHECK;

/* The condition that criteria (checked with segment_check) put on the referral source aliased
 * "s", as SQL text with parameters numbered from first ($first, $first+1, ...); "true" when there
 * is none. The parameters' values (PostgreSQL array literals) are appended to params at *nparams,
 * which grows by at most SEGMENT_MAX_PARAMS. Caller frees the text and each value. */
char *segment_where(const json_t *criteria, int first, char **params, int *nparams);

/* The condition a source "s" must also meet to be enrolled in any campaign: an email address that
 * is not suppressed. Parameter-free SQL text. */
extern const char segment_eligible_sql[];

/* One query selecting the ids of the sources that criteria (checked) match and that are eligible,
 * ordered by id, with its parameters from $1 as segment_where sets them. Caller frees. */
char *segment_query(const json_t *criteria, char **params, int *nparams);

/* A PostgreSQL array literal ({"a","b\"c"}) of the strings of list (strings and integers),
 * quoted and escaped. Caller frees. */
char *segment_pg_array(const json_t *list);

#endif
