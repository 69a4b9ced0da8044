/* cases: when a service case's SLA alerts are due (see cases.h). */
#include "common/cases.h"

#include <stdio.h>

void
cases_sla_params(const struct cfg *c, char out[5][16])
{
	const int hours[5] = {c->cases.sla_hours_low, c->cases.sla_hours_normal, c->cases.sla_hours_high,
	                      c->cases.sla_hours_urgent, c->cases.escalate_after_hours};

	for (int i = 0; i < 5; i++)
		snprintf(out[i], 16, "%d", hours[i]);
}
