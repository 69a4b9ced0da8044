/* campvars: the template variables of a campaign message, the same for the sender and the preview. */
#ifndef OUTREACH_CAMPVARS_H
#define OUTREACH_CAMPVARS_H

#include <jansson.h>
#include <libpq-fe.h>

/*
 * The variables a campaign message's templates see:
 *
 *   source.{id,name,first_name,last_name,credential,organization_name,specialty,city,state,email}
 *   coordinator.{name,first_name,email}   the source's owner (empty when it has none)
 *   campaign.{name,sender_name,sender_email,postal_address}
 *
 * source.name is "First Last" for a physician, the organization's name otherwise.
 */

/* The query that reads them: $1 the referral source's id, $2 the campaign's id; one row, or none
 * when either does not exist. */
extern const char campvars_sql[];

/* How many variables there are, in the order above (and of campvars_sql's columns). */
#define CAMPVARS_N 17

/* The template context from CAMPVARS_N values in that order (v[0], the source's id, as decimal
 * text; NULL values become ""). A new object, caller decrefs. */
json_t *campvars_from(const char *const v[CAMPVARS_N]);

/* The template context built from row `row` of a result of campvars_sql (borrowed). A new
 * object, caller decrefs. */
json_t *campvars_context(const PGresult *res, int row);

#endif
