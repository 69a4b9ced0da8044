/* cases: when a service case's SLA alerts are due, as outreachd's scan and the worker's CaseAlertJob
 * both decide it: one test, so that the two never disagree on the same settings. */
#ifndef OUTREACH_CASES_H
#define OUTREACH_CASES_H

#include "common/cfg.h"

/* The query parameters $1 to $5 the fragments below use: cases.sla_hours_low, _normal, _high,
 * _urgent and cases.escalate_after_hours, as text. */
void cases_sla_params(const struct cfg *c, char out[5][16]);

/* FROM-clause fragment for a case aliased k: sla.h, the hours of its SLA by its priority. */
#define CASES_SLA_LATERAL                                                                                        \
	" CROSS JOIN LATERAL (SELECT CASE k.priority WHEN 'low' THEN $1::int WHEN 'high' THEN $3::int"           \
	" WHEN 'urgent' THEN $4::int ELSE $2::int END AS h) sla "

/* The moment level (an SQL expression: 1 or 2) of case k is due: its SLA passed, and for level 2
 * cases.escalate_after_hours more. */
#define CASES_DUE_AT(level) \
	"(k.opened_at + make_interval(hours => sla.h + CASE WHEN " level " = 2 THEN $5::int ELSE 0 END))"

/* FROM-clause fragment: case k's assignee a and a's manager m when active (NULL otherwise). An
 * alert goes to a, or to m when a is inactive or for level 2; with neither it waits. */
#define CASES_RECIPIENTS                                                                                         \
	" JOIN coordinators a ON a.id = k.assignee_id LEFT JOIN coordinators m ON m.id = a.manager_id AND m.active "
/* Whether someone can receive case k's alerts (with CASES_RECIPIENTS). */
#define CASES_HAS_RECIPIENT "(a.active OR m.id IS NOT NULL)"

#endif
