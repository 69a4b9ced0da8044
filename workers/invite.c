/* invite: ActivityInviteJob, the iMIP calendar invite (or cancellation) of a scheduled activity. */
#include <jansson.h>
#include <libical/ical.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "workers/alert.h"
#include "workers/handler.h"

static const char activity_sql[] =
    "SELECT a.kind, coalesce(a.subject, ''), extract(epoch FROM a.scheduled_at)::bigint, a.duration_minutes, "
    "       a.canceled_at IS NOT NULL, coalesce(a.location, ''), coalesce(a.notes, ''), a.invite_sequence, "
    "       coalesce(a.invite_sent_sequence, -1), a.completed_at IS NOT NULL, "
    "       to_char(a.scheduled_at AT TIME ZONE c.time_zone, 'FMDay, FMDD FMMonth YYYY, HH24:MI'), "
    "       c.id, c.name, c.email, c.time_zone, s.id, "
    "       CASE WHEN s.kind = 'organization' THEN s.organization_name "
    "            ELSE concat_ws(' ', s.first_name, s.last_name) END, "
    "       coalesce(s.credential, ''), coalesce(s.specialty, ''), coalesce(s.phone, ''), "
    "       concat_ws(', ', s.address_line1, s.city, concat_ws(' ', s.state, s.postal_code)) "
    "  FROM activities a JOIN coordinators c ON c.id = a.coordinator_id "
    "  JOIN referral_sources s ON s.id = a.source_id WHERE a.id = $1";

/* s without the control characters an iCalendar value may not hold (C0, DEL and C1, as a subject
 * drops them; RFC 5545 allows a TEXT value tabs and, escaped, line breaks; a parameter neither):
 * each becomes a space (caller frees). The values come from other applications' rows. */
static char *
ical_clean(const char *s, bool text)
{
	char *out = xstrdup(s), *w = out;

	for (const char *r = s; *r;) {
		size_t ctl = util_control_len(r);
		if (ctl > 0 && !(text && (*r == '\t' || *r == '\n' || *r == '\r'))) {
			*w++ = ' ';
			r += ctl;
		} else
			*w++ = *r++;
	}
	*w = '\0';
	return out;
}

/* The VCALENDAR of the invite, built with libical (caller frees). */
static char *
build_ics(const struct job_ctx *ctx, PGresult *r, const char *activity_id, int sequence, bool cancel)
{
	char uid[256], org[300], att[300], summary[512];
	const char *domain = strchr(ctx->cfg->smtp.from, '@') + 1;
	time_t start = (time_t)strtoll(PQgetvalue(r, 0, 2), NULL, 10);
	time_t end = start + (time_t)atoi(PQgetvalue(r, 0, 3)) * 60;
	icaltimezone *utc = icaltimezone_get_utc_timezone();
	const char *subject = PQgetvalue(r, 0, 1), *who = PQgetvalue(r, 0, 16), *kind = PQgetvalue(r, 0, 0);

	/* One UID per activity for its whole life: calendars update the event rather than add one. */
	snprintf(uid, sizeof(uid), "activity-%s@%s", activity_id, domain);
	snprintf(org, sizeof(org), "mailto:%s", ctx->cfg->smtp.from);
	snprintf(att, sizeof(att), "mailto:%s", PQgetvalue(r, 0, 13));
	if (*subject)
		util_strlcpy(summary, subject, sizeof(summary));
	else
		snprintf(summary, sizeof(summary), "%c%s with %s", kind[0] - 32, kind + 1, who);

	icalcomponent *cal = icalcomponent_new_vcalendar();
	icalcomponent_add_property(cal, icalproperty_new_prodid("-//outreach//outreach " OUTREACH_VERSION "//EN"));
	icalcomponent_add_property(cal, icalproperty_new_version("2.0"));
	icalcomponent_add_property(cal, icalproperty_new_calscale("GREGORIAN"));
	icalcomponent_add_property(cal, icalproperty_new_method(cancel ? ICAL_METHOD_CANCEL : ICAL_METHOD_REQUEST));

	icalcomponent *ev = icalcomponent_new_vevent();
	icalcomponent_add_property(ev, icalproperty_new_uid(uid));
	icalcomponent_add_property(ev, icalproperty_new_sequence(sequence));
	icalcomponent_add_property(ev, icalproperty_new_dtstamp(icaltime_from_timet_with_zone(time(NULL), 0, utc)));
	icalcomponent_add_property(ev, icalproperty_new_dtstart(icaltime_from_timet_with_zone(start, 0, utc)));
	icalcomponent_add_property(ev, icalproperty_new_dtend(icaltime_from_timet_with_zone(end, 0, utc)));
	char *clean = ical_clean(summary, true);
	icalcomponent_add_property(ev, icalproperty_new_summary(clean));
	free(clean);
	const char *where = *PQgetvalue(r, 0, 5) ? PQgetvalue(r, 0, 5) : PQgetvalue(r, 0, 20);
	if (*where) {
		clean = ical_clean(where, true);
		icalcomponent_add_property(ev, icalproperty_new_location(clean));
		free(clean);
	}
	char *desc = xasprintf("%s%s%s%s%s%s%s%s%s", who, *PQgetvalue(r, 0, 17) ? ", " : "", PQgetvalue(r, 0, 17),
	                       *PQgetvalue(r, 0, 18) ? "\n" : "", PQgetvalue(r, 0, 18),
	                       *PQgetvalue(r, 0, 19) ? "\nPhone: " : "", PQgetvalue(r, 0, 19),
	                       *PQgetvalue(r, 0, 6) ? "\n\n" : "", PQgetvalue(r, 0, 6));
	clean = ical_clean(desc, true);
	icalcomponent_add_property(ev, icalproperty_new_description(clean));
	free(clean);
	free(desc);
	icalcomponent_add_property(ev, icalproperty_new_status(cancel ? ICAL_STATUS_CANCELLED : ICAL_STATUS_CONFIRMED));
	icalcomponent_add_property(ev, icalproperty_new_transp(ICAL_TRANSP_OPAQUE));

	icalproperty *o = icalproperty_new_organizer(org);
	icalproperty_add_parameter(o, icalparameter_new_cn(ctx->cfg->alerts.from_name));
	icalcomponent_add_property(ev, o);
	icalproperty *a = icalproperty_new_attendee(att);
	clean = ical_clean(PQgetvalue(r, 0, 12), false);
	icalproperty_add_parameter(a, icalparameter_new_cn(clean));
	free(clean);
	icalproperty_add_parameter(a, icalparameter_new_role(ICAL_ROLE_REQPARTICIPANT));
	icalproperty_add_parameter(a, icalparameter_new_partstat(ICAL_PARTSTAT_NEEDSACTION));
	icalproperty_add_parameter(a, icalparameter_new_rsvp(ICAL_RSVP_FALSE));
	icalcomponent_add_property(ev, a);
	icalcomponent_add_component(cal, ev);

	char *text = icalcomponent_as_ical_string_r(cal);
	char *out = xstrdup(text);
	icalmemory_free_buffer(text);
	icalcomponent_free(cal);
	return out;
}

enum job_result
invite_run(struct job_ctx *ctx)
{
	json_int_t aid = json_integer_value(json_array_get(ctx->job->args, 0));
	int seq = (int)json_integer_value(json_array_get(ctx->job->args, 1));
	char id[24], key[64], seqs[16];

	snprintf(id, sizeof(id), "%lld", (long long)aid);
	snprintf(seqs, sizeof(seqs), "%d", seq);
	PGresult *r = db_query(ctx->db, activity_sql, DB_ARGS(id));
	if (r == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "loading activity %s: %s", id, db_error(ctx->db));
	if (PQntuples(r) == 0) {
		PQclear(r);
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "there is no activity %s with a coordinator", id);
	}
	int current = atoi(PQgetvalue(r, 0, 7)), sent = atoi(PQgetvalue(r, 0, 8));
	bool cancel = PQgetvalue(r, 0, 4)[0] == 't';
	enum job_result rc = JOB_DONE;

	if (seq > current) {
		/* The database only raises an activity's sequence, and the job is queued after it: a sequence
		 * ahead of it is not one of this activity's invites, and recorded as sent it would silence
		 * every later one. */
		rc = job_fail(ctx, JOB_DEAD, "ArgumentError", "ActivityInviteJob: sequence %d is ahead of activity %s's invite "
		              "sequence %d", seq, id, current);
		goto out;
	}
	if (seq < current || sent >= seq) {
		log_info("activity %s: invite %d is %s: nothing to do", id, seq, seq < current ? "superseded" : "sent");
		goto out;
	}
	if (cancel && sent < 0) {
		/* Canceled before any invite went out: nothing to take back. */
		if (db_exec(ctx->db, "UPDATE activities SET invite_sent_sequence = $2 WHERE id = $1", DB_ARGS(id, seqs)) ==
		    -1)
			rc = job_fail(ctx, JOB_RETRY, "DatabaseError", "%s", db_error(ctx->db));
		goto out;
	}

	struct alert_person to;
	alert_person_set(&to, PQgetvalue(r, 0, 11), PQgetvalue(r, 0, 12), PQgetvalue(r, 0, 13), PQgetvalue(r, 0, 14),
	                 true);
	snprintf(key, sizeof(key), "%s:%d", id, seq);
	char message_id[256], first[128];
	bool go;
	if ((rc = alert_claim(ctx, "invite", key, &to, message_id, &go)) != JOB_DONE || !go)
		goto out;

	char *ics = build_ics(ctx, r, id, seq, cancel);
	char *url = alert_record_url(ctx, PQgetvalue(r, 0, 15));
	json_t *context = json_pack(
	    "{s:{s:s, s:s}, s:{s:s, s:s, s:s, s:i, s:s, s:s, s:b, s:i}, s:{s:s, s:s, s:s, s:s, s:s, s:s}}",
	    "coordinator", "name", to.name, "first_name", alert_first_name(to.name, first, sizeof(first)), "activity",
	    "kind", PQgetvalue(r, 0, 0), "subject", PQgetvalue(r, 0, 1), "when", PQgetvalue(r, 0, 10), "minutes",
	    atoi(PQgetvalue(r, 0, 3)), "location", PQgetvalue(r, 0, 5), "notes", PQgetvalue(r, 0, 6), "canceled", cancel,
	    "sequence", seq, "source", "name", PQgetvalue(r, 0, 16), "credential", PQgetvalue(r, 0, 17), "specialty",
	    PQgetvalue(r, 0, 18), "phone", PQgetvalue(r, 0, 19), "address", PQgetvalue(r, 0, 20), "record_url", url);
	free(url);
	rc = alert_deliver(ctx, "invite", key, &to, message_id, context, cancel ? "CANCEL" : "REQUEST", ics,
	                   "UPDATE activities SET invite_sent_sequence = "
	                   "greatest(coalesce(invite_sent_sequence, -1), $2::int) WHERE id = $1",
	                   DB_ARGS(id, seqs));
	json_decref(context);
	free(ics);
out:
	PQclear(r);
	return rc;
}
