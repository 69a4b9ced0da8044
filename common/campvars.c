/* campvars: the template variables of a campaign message (see campvars.h). */
#include "common/campvars.h"

#include <stdlib.h>
#include <string.h>

/* Column order is the order of the names below. */
const char campvars_sql[] =
        "SELECT s.id, CASE WHEN s.kind = 'physician' THEN concat_ws(' ', s.first_name, s.last_name) "
        "ELSE s.organization_name END, s.first_name, s.last_name, s.credential, s.organization_name, "
        "s.specialty, "
        "s.city, s.state, s.email, co.name, split_part(co.name, ' ', 1), co.email, c.name, c.sender_name, "
        "c.sender_email, c.postal_address "
        "FROM referral_sources s CROSS JOIN campaigns c LEFT JOIN coordinators co ON co.id = "
        "s.coordinator_id "
        "WHERE s.id = $1 AND c.id = $2";

static const struct {
	const char *object, *key;
} columns[] = {
	{ "source", "id" },
	{ "source", "name" },
	{ "source", "first_name" },
	{ "source", "last_name" },
	{ "source", "credential" },
	{ "source", "organization_name" },
	{ "source", "specialty" },
	{ "source", "city" },
	{ "source", "state" },
	{ "source", "email" },
	{ "coordinator", "name" },
	{ "coordinator", "first_name" },
	{ "coordinator", "email" },
	{ "campaign", "name" },
	{ "campaign", "sender_name" },
	{ "campaign", "sender_email" },
	{ "campaign", "postal_address" },
};

_Static_assert(sizeof(columns) / sizeof(columns[0]) == CAMPVARS_N, "CAMPVARS_N is the number of columns");

json_t *
campvars_from(const char *const v[CAMPVARS_N])
{
	json_t *ctx = json_object();

	for (size_t i = 0; i < CAMPVARS_N; i++) {
		json_t *obj = json_object_get(ctx, columns[i].object);
		if (obj == NULL) {
			obj = json_object();
			json_object_set_new(ctx, columns[i].object, obj);
		}
		if (i == 0)
			json_object_set_new(obj, columns[i].key, json_integer(strtoll(v[i], NULL, 10)));
		else
			json_object_set_new(obj, columns[i].key, json_string(v[i] != NULL ? v[i] : ""));
	}
	return ctx;
}

json_t *
campvars_context(const PGresult *res, int row)
{
	const char *v[CAMPVARS_N];

	for (int i = 0; i < CAMPVARS_N; i++)
		v[i] = PQgetisnull(res, row, i) ? NULL : PQgetvalue(res, row, i);
	return campvars_from(v);
}
