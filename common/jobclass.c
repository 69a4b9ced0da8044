/* jobclass: the catalogue of job classes: name, default queue and argument validation. */
#include "common/jobclass.h"

#include <stdio.h>
#include <string.h>

#include "common/nppes.h"
#include "common/token.h"
#include "common/util.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* PingJob: [reply_key?, work_ms?]: reply_key a Redis key name or null, work_ms 0..60000. */
static int
validate_ping(const json_t *args, char *err, size_t errlen)
{
	size_t n = json_array_size(args);
	json_t *key = json_array_get(args, 0), *ms = json_array_get(args, 1);

	if (n > 2)
		return ERR("PingJob takes at most 2 arguments [reply_key, work_ms], got %zu", n);
	if (key && !json_is_null(key) && !(json_is_string(key) && json_string_length(key) > 0 &&
	                                   json_string_length(key) <= 200))
		return ERR("PingJob: reply_key must be null or a key name of 1..200 characters");
	if (ms && !(json_is_integer(ms) && json_integer_value(ms) >= 0 && json_integer_value(ms) <= 60000))
		return ERR("PingJob: work_ms must be an integer 0..60000");
	return 0;
}

/* [id, local_date]: a positive id and a "YYYY-MM-DD" date that exists; class names the job in messages.
 * Whether the date has come is the handler's question, when the job runs (it may be scheduled). */
static int
validate_id_date(const char *class, const char *idname, const json_t *args, char *err, size_t errlen)
{
	json_t *id = json_array_get(args, 0), *date = json_array_get(args, 1);

	if (json_array_size(args) != 2)
		return ERR("%s takes 2 arguments [%s, local_date], got %zu", class, idname, json_array_size(args));
	if (!json_is_integer(id) || json_integer_value(id) <= 0)
		return ERR("%s: %s must be a positive integer", class, idname);
	if (!util_parse_date(json_string_value(date), NULL, NULL, NULL))
		return ERR("%s: local_date must be a date that exists, like 2026-11-26", class);
	return 0;
}

static int
validate_digest(const json_t *args, char *err, size_t errlen)
{
	return validate_id_date("OverdueDigestJob", "coordinator_id", args, err, errlen);
}

static int
validate_manager_digest(const json_t *args, char *err, size_t errlen)
{
	return validate_id_date("ManagerDigestJob", "manager_id", args, err, errlen);
}

/* [id, n]: a positive id and an integer n in [lo, hi]. */
static int
validate_id_int(const char *class, const char *idname, const char *nname, long lo, long hi, const json_t *args,
                char *err, size_t errlen)
{
	json_t *id = json_array_get(args, 0), *n = json_array_get(args, 1);

	if (json_array_size(args) != 2)
		return ERR("%s takes 2 arguments [%s, %s], got %zu", class, idname, nname, json_array_size(args));
	if (!json_is_integer(id) || json_integer_value(id) <= 0)
		return ERR("%s: %s must be a positive integer", class, idname);
	if (!json_is_integer(n) || json_integer_value(n) < lo || json_integer_value(n) > hi)
		return ERR("%s: %s must be an integer %ld..%ld", class, nname, lo, hi);
	return 0;
}

static int
validate_invite(const json_t *args, char *err, size_t errlen)
{
	return validate_id_int("ActivityInviteJob", "activity_id", "sequence", 0, 1000000, args, err, errlen);
}

static int
validate_case_alert(const json_t *args, char *err, size_t errlen)
{
	return validate_id_int("CaseAlertJob", "case_id", "level", 1, 2, args, err, errlen);
}

/* NpiSyncJob: [search_id]: a positive saved-search id. */
static int
validate_npi_sync(const json_t *args, char *err, size_t errlen)
{
	json_t *id = json_array_get(args, 0);

	if (json_array_size(args) != 1)
		return ERR("NpiSyncJob takes 1 argument [search_id], got %zu", json_array_size(args));
	if (!json_is_integer(id) || json_integer_value(id) <= 0)
		return ERR("NpiSyncJob: search_id must be a positive integer (a saved search's id)");
	return 0;
}

/* MetricsJob: [] (every period touched since the last run), ["full"], or [period_kind, period_start]:
 * day, week, month or quarter and a "YYYY-MM-DD" day within the period. */
static int
validate_metrics(const json_t *args, char *err, size_t errlen)
{
	size_t n = json_array_size(args);
	json_t *kind = json_array_get(args, 0), *start = json_array_get(args, 1);
	const char *k = json_string_value(kind);

	if (n == 0)
		return 0;
	if (n > 2)
		return ERR("MetricsJob takes at most 2 arguments [period_kind, period_start], got %zu", n);
	if (k == NULL || (strcmp(k, "full") != 0 && strcmp(k, "day") != 0 && strcmp(k, "week") != 0 &&
	                  strcmp(k, "month") != 0 && strcmp(k, "quarter") != 0))
		return ERR("MetricsJob: period_kind must be \"day\", \"week\", \"month\", \"quarter\" or \"full\"");
	if (strcmp(k, "full") == 0)
		return n == 1 ? 0 : ERR("MetricsJob: \"full\" takes no period_start");
	if (n != 2 || !util_parse_date(json_string_value(start), NULL, NULL, NULL))
		return ERR("MetricsJob: period_start must be a date that exists, like 2026-11-01 (a day within the %s)", k);
	return 0;
}

/* A "YYYY-MM" month. */
static bool
is_month(const json_t *v)
{
	int y;

	return util_parse_month(json_string_value(v), &y, NULL) && y >= 1900;
}

/* MonthlyReportJob: [] or [month] (queue one email per coordinator; default: last month), or
 * [coordinator_id, month] (that coordinator's email). */
static int
validate_monthly(const json_t *args, char *err, size_t errlen)
{
	size_t n = json_array_size(args);
	json_t *a = json_array_get(args, 0), *b = json_array_get(args, 1);

	if (n > 2)
		return ERR("MonthlyReportJob takes at most 2 arguments [coordinator_id, month], got %zu", n);
	if (n == 1 && !is_month(a))
		return ERR("MonthlyReportJob: month must be like 2026-11");
	if (n == 2 && (!json_is_integer(a) || json_integer_value(a) <= 0))
		return ERR("MonthlyReportJob: coordinator_id must be a positive integer");
	if (n == 2 && !is_month(b))
		return ERR("MonthlyReportJob: month must be like 2026-11");
	return 0;
}

/* CampaignSendJob: [enrollment_id]: a positive campaign_enrollments id. */
static int
validate_campaign_send(const json_t *args, char *err, size_t errlen)
{
	json_t *id = json_array_get(args, 0);

	if (json_array_size(args) != 1)
		return ERR("CampaignSendJob takes 1 argument [enrollment_id], got %zu", json_array_size(args));
	if (!json_is_integer(id) || json_integer_value(id) <= 0)
		return ERR("CampaignSendJob: enrollment_id must be a positive integer (a campaign_enrollments id)");
	return 0;
}

/* A string of 1..max bytes without control characters (tab allowed). */
static bool
is_text(const json_t *v, size_t max)
{
	const char *s = json_string_value(v);

	if (s == NULL || json_string_length(v) == 0 || json_string_length(v) > max || strlen(s) != json_string_length(v))
		return false;
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return false;
	return true;
}

/* CampaignEventJob: [{"event", "message_id" | "message_id_header" | "email" | "token", "url"?, "at"?,
 * "detail"?}]. */
static int
validate_campaign_event(const json_t *args, char *err, size_t errlen)
{
	static const char *const events[] = {"open", "click", "unsubscribe", "bounce", "complaint", "replied"};
	static const char *const fields[] = {"event", "message_id", "message_id_header", "email", "token", "url", "at",
	                                     "detail"};
	json_t *o = json_array_get(args, 0), *v;
	const char *key, *ev;
	size_t ids = 0;
	bool known = false;

	if (json_array_size(args) != 1 || !json_is_object(o))
		return ERR("CampaignEventJob takes 1 argument, an object {\"event\", \"message_id\", ...}");
	json_object_foreach(o, key, v) {
		bool ok = false;
		for (size_t i = 0; i < NELEM(fields); i++)
			ok |= strcmp(key, fields[i]) == 0;
		if (!ok)
			return ERR("CampaignEventJob: unknown field \"%.64s\" (known: event, message_id, message_id_header, "
			           "email, token, url, at, detail)", key);
	}
	ev = json_string_value(json_object_get(o, "event"));
	for (size_t i = 0; ev && i < NELEM(events); i++)
		known |= strcmp(ev, events[i]) == 0;
	if (!known)
		return ERR("CampaignEventJob: event must be \"open\", \"click\", \"unsubscribe\", \"bounce\", "
		           "\"complaint\" or \"replied\"");
	if ((v = json_object_get(o, "message_id")) && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) <= 0)
			return ERR("CampaignEventJob: message_id must be a positive integer (an email_messages id)");
		ids++;
	}
	if ((v = json_object_get(o, "message_id_header")) && !json_is_null(v)) {
		if (!is_text(v, 250) || strpbrk(json_string_value(v), "<> \t") || !strchr(json_string_value(v), '@'))
			return ERR("CampaignEventJob: message_id_header must be a Message-ID without angle brackets");
		ids++;
	}
	if ((v = json_object_get(o, "email")) && !json_is_null(v)) {
		const char *at = json_string_value(v) ? strchr(json_string_value(v), '@') : NULL;
		if (!is_text(v, 254) || at == NULL || at == json_string_value(v) || at[1] == '\0' ||
		    strpbrk(json_string_value(v), " \t<>\"") || strchr(at + 1, '@'))
			return ERR("CampaignEventJob: email must be an address like name@example.org");
		ids++;
	}
	/* The token of an unsubscribe link (the TOKEN of /u/TOKEN, or of the subject "unsubscribe-TOKEN" of
	 * a mail to the List-Unsubscribe mailto address): the worker checks its signature. */
	if ((v = json_object_get(o, "token")) && !json_is_null(v)) {
		if (!is_text(v, 128) || !token_spelled(json_string_value(v), json_string_length(v)))
			return ERR("CampaignEventJob: token must be an unsubscribe link's token (base64url, '.', base64url; "
			           "at most 128 characters)");
		if (strcmp(ev, "unsubscribe") != 0)
			return ERR("CampaignEventJob: token names the message of an unsubscribe only");
		ids++;
	}
	if (ids != 1)
		return ERR("CampaignEventJob: exactly one of message_id, message_id_header, email and token must be given");
	if ((strcmp(ev, "open") == 0 || strcmp(ev, "click") == 0 || strcmp(ev, "unsubscribe") == 0) &&
	    json_object_get(o, "message_id") == NULL && json_object_get(o, "token") == NULL)
		return ERR("CampaignEventJob: a%s %s event needs message_id%s", ev[0] == 'o' || ev[0] == 'u' ? "n" : "", ev,
		           ev[0] == 'u' ? " or token" : "");
	/* A click's URL is one a token carries (at most TOKEN_URL_MAX bytes) as the listener enqueues it,
	 * its bytes outside ASCII percent-encoded: up to three characters a byte. */
	if ((v = json_object_get(o, "url")) && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0) &&
	    !is_text(v, 3 * TOKEN_URL_MAX))
		return ERR("CampaignEventJob: url must be a string of at most %d characters without control characters",
		           3 * TOKEN_URL_MAX);
	if ((v = json_object_get(o, "at")) && !json_is_null(v) &&
	    !(json_is_number(v) && json_number_value(v) > 946684800.0 && json_number_value(v) < 32503680000.0))
		return ERR("CampaignEventJob: at must be epoch seconds (a number after 2000-01-01)");
	if ((v = json_object_get(o, "detail")) && !json_is_null(v) &&
	    !(json_is_string(v) && json_string_length(v) <= 8192 && strlen(json_string_value(v)) == json_string_length(v)))
		return ERR("CampaignEventJob: detail must be a string of at most 8192 bytes");
	return 0;
}

/* NppesImportJob: [{"file": PATH, "state", "taxonomies", "prospects", "coordinator", "kind"}]. */
static int
validate_nppes_import(const json_t *args, char *err, size_t errlen)
{
	struct nppes_opts o;

	return nppes_job_args(args, &o, err, errlen);
}

static const struct jobclass classes[] = {
    {"PingJob", "default", validate_ping,
     "liveness probe: waits work_ms, then adds its jid to the set reply_key"},
    {"OverdueDigestJob", "alerts", validate_digest,
     "the coordinator's daily email of overdue and due-soon referral sources"},
    {"ManagerDigestJob", "alerts", validate_manager_digest,
     "the manager's daily email of their reports' sources overdue by more than alerts.escalate_after_days"},
    {"ActivityInviteJob", "alerts", validate_invite,
     "the calendar invite (or cancellation) of a scheduled activity for its coordinator"},
    {"CaseAlertJob", "alerts", validate_case_alert,
     "a case open past its SLA: level 1 to its assignee, level 2 to the assignee's manager"},
    {"NpiSyncJob", "npi", validate_npi_sync,
     "fetches a saved search's providers from the NPI Registry into npi_providers and referral_sources"},
    {"MetricsJob", "metrics", validate_metrics,
     "recomputes the outcome metric tables for the periods touched since the last run (or the one given)"},
    {"MonthlyReportJob", "alerts", validate_monthly,
     "the monthly email of figures and charts to a coordinator (without one: queues it for every coordinator)"},
    {"CampaignSendJob", "campaigns", validate_campaign_send,
     "takes an enrollment's due campaign step: sends its message, creates a call, or checks its timeouts"},
    {"CampaignEventJob", "campaigns", validate_campaign_event,
     "records an open, click, unsubscribe, bounce, complaint or reply and fires the campaign's rules"},
    {"NppesImportJob", "npi", validate_nppes_import,
     "imports an NPPES full, weekly or deactivation file on the worker's host into npi_providers"},
};

const struct jobclass *
jobclass_find(const char *name)
{
	for (size_t i = 0; i < NELEM(classes); i++)
		if (strcmp(classes[i].name, name) == 0)
			return &classes[i];
	return NULL;
}

const struct jobclass *
jobclass_all(size_t *n)
{
	*n = NELEM(classes);
	return classes;
}

void
jobclass_names(char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < NELEM(classes); i++) {
		size_t used = strlen(buf);
		snprintf(buf + used, len - used, "%s%s", i ? ", " : "", classes[i].name);
	}
}
