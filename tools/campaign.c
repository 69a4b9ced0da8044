/* campaign: outreachctl's campaign commands (see campaign.h). */
#include "tools/campaign.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/campvars.h"
#include "common/db.h"
#include "common/log.h"
#include "common/mailtmpl.h"
#include "common/segment.h"
#include "common/tmpl.h"
#include "tools/campdef.h"
#include "tools/jobs.h"

static const char campaign_usage[] = "usage: outreachctl campaign create FILE [--dry-run]\n"
                                     "       outreachctl campaign list\n"
                                     "       outreachctl campaign show ID|NAME\n"
                                     "       outreachctl campaign activate|pause|finish ID|NAME\n"
                                     "       outreachctl campaign preview ID|NAME SOURCE_ID [--variant V]";

/* Prints the usage to stderr and exits with status 2. */
static void __attribute__((noreturn)) usage_exit(void)
{
	fprintf(stderr, "%s\n", campaign_usage);
	exit(2);
}

/* --- the segments' matches ----------------------------------------------------------------------- */

/* The rows (id, pos, seg, ok) of every source some segment's criteria match: pos is the segment's
 * place (1..n), seg its id ($ parameter, or NULL when seg_ids is NULL), ok whether the source is
 * eligible. Parameters are appended to params at *nparams (room for n * (SEGMENT_MAX_PARAMS + 1)).
 * Caller frees. */
static char *
matches_sql(json_t *const *criteria, const char *const *seg_ids, size_t n, char **params, int *nparams)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	if (f == NULL)
		fatal("open_memstream");
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			fputs(" UNION ALL ", f);
		if (seg_ids) {
			params[(*nparams)++] = xstrdup(seg_ids[i]);
			fprintf(f, "SELECT s.id, %zu AS pos, $%d::bigint AS seg, ", i + 1, *nparams);
		} else {
			fprintf(f, "SELECT s.id, %zu AS pos, NULL::bigint AS seg, ", i + 1);
		}
		char *where = segment_where(criteria[i], *nparams + 1, params, nparams);
		fprintf(f, "(%s) AS ok FROM referral_sources s WHERE %s", segment_eligible_sql, where);
		free(where);
	}
	if (fclose(f) != 0)
		fatal("open_memstream");
	return out;
}

static void
free_params(char **params, int n)
{
	for (int i = 0; i < n; i++)
		free(params[i]);
	free(params);
}

/* --- create -------------------------------------------------------------------------------------- */

/* 0, or -1 after logging when PostgreSQL does not know the definition's time zone. */
static int
check_time_zone(struct db *db, const struct campdef *d)
{
	PGresult *res = db_query(db, "SELECT now() AT TIME ZONE $1", DB_ARGS(d->time_zone));

	if (res == NULL) {
		log_errorx("campaign create: %s: $.time_zone: %s is not a time zone PostgreSQL knows",
		           d->path, d->time_zone);
		return -1;
	}
	PQclear(res);
	return 0;
}

static int
dry_run(struct db *db, const struct campdef *d)
{
	json_t **crit = xcalloc(d->nsegments, sizeof(*crit));
	char **params = xcalloc(d->nsegments * (SEGMENT_MAX_PARAMS + 1), sizeof(*params));
	int np = 0, rc = 1;

	for (size_t i = 0; i < d->nsegments; i++)
		crit[i] = d->segments[i].criteria;
	char *m = matches_sql(crit, NULL, d->nsegments, params, &np);
	char *sql = xasprintf(
	        "WITH m AS (%s), f AS (SELECT DISTINCT ON (id) id, pos FROM m WHERE ok ORDER BY id, pos) "
	        "SELECT m.pos, count(*), count(*) FILTER (WHERE m.ok), "
	        "(SELECT count(*) FROM f WHERE f.pos = m.pos) FROM m GROUP BY m.pos ORDER BY m.pos",
	        m);
	PGresult *res = NULL;
	/* Over millions of sources this takes longer than the configured statement_timeout. */
	if (db_exec(db, "SET statement_timeout = '30min'", 0, NULL) == -1) {
		log_errorx("campaign create --dry-run: %s", db_error(db));
		goto out;
	}
	if ((res = ctl_query(db, "campaign create --dry-run", sql, np, (const char *const *)params)) == NULL)
		goto out;
	long long total = 0;

	printf("campaign \"%s\": the definition is valid; dry run, nothing was created\n", d->name);
	static const int width[] = {-4, -32, 9, 9, 9, 9};
	ctl_row("", NELEM(width), width,
	        (const char *const[]){"POS", "SEGMENT", "MATCHED", "EXCLUDED", "EARLIER", "ENROLLED"});
	for (size_t i = 0; i < d->nsegments; i++) {
		long long matched = 0, eligible = 0, enrolled = 0;
		for (int r = 0; r < PQntuples(res); r++) {
			if (strtoul(PQgetvalue(res, r, 0), NULL, 10) != i + 1)
				continue;
			matched = strtoll(PQgetvalue(res, r, 1), NULL, 10);
			eligible = strtoll(PQgetvalue(res, r, 2), NULL, 10);
			enrolled = strtoll(PQgetvalue(res, r, 3), NULL, 10);
		}
		char pos[24], n[4][24];
		snprintf(pos, sizeof(pos), "%zu", i + 1);
		snprintf(n[0], sizeof(n[0]), "%lld", matched);
		snprintf(n[1], sizeof(n[1]), "%lld", matched - eligible);
		snprintf(n[2], sizeof(n[2]), "%lld", eligible - enrolled);
		snprintf(n[3], sizeof(n[3]), "%lld", enrolled);
		ctl_row("", NELEM(width), width, (const char *const[]){pos, d->segments[i].name, n[0], n[1], n[2], n[3]});
		total += enrolled;
	}
	printf("%lld sources would be enrolled (EXCLUDED: no email address or a suppressed one; EARLIER: in "
	       "an "
	       "earlier segment)\n",
	       total);
	rc = 0;
out:
	PQclear(res);
	free(sql);
	free(m);
	free_params(params, np);
	free(crit);
	return rc;
}

/* Inserts the definition's segments, messages and steps for campaign id; -1 after logging which
 * part the database refused and why. */
static int
insert_parts(struct db *db, const char *id, const struct campdef *d)
{
	char **seg_ids = xcalloc(d->nsegments, sizeof(*seg_ids));
	int rc = -1;

	for (size_t i = 0; i < d->nsegments; i++) {
		char pos[24];
		char *crit = json_dumps(d->segments[i].criteria, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(pos, sizeof(pos), "%zu", i + 1);
		PGresult *res =
		        db_query(db,
		                 "INSERT INTO campaign_segments (campaign_id, name, position, criteria) "
		                 "VALUES ($1, $2, $3, $4::jsonb) RETURNING id",
		                 DB_ARGS(id, d->segments[i].name, pos, crit));
		free(crit);
		if (res == NULL) {
			log_errorx("campaign create: segment \"%s\": %s", d->segments[i].name, db_error(db));
			goto out;
		}
		seg_ids[i] = xstrdup(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	for (size_t i = 0; i < d->nmessages; i++) {
		const struct campdef_message *m = &d->messages[i];
		const char *seg = NULL;
		for (size_t k = 0; m->segment && k < d->nsegments; k++)
			if (strcmp(d->segments[k].name, m->segment) == 0)
				seg = seg_ids[k];
		if (db_exec(db,
		            "INSERT INTO campaign_messages (campaign_id, segment_id, variant, subject, "
		            "html_template, "
		            "text_template) VALUES ($1, $2, $3, $4, $5, $6)",
		            DB_ARGS(id, seg, m->variant, m->subject, m->html, m->text)) == -1) {
			log_errorx("campaign create: message \"%s\"%s%s: %s", m->variant, m->segment ? " of segment " : "",
			           m->segment ? m->segment : "", db_error(db));
			goto out;
		}
	}
	for (size_t i = 0; i < d->nsteps; i++) {
		const struct campdef_step *s = &d->steps[i];
		char after[16], pos[16], wait[16];
		snprintf(after, sizeof(after), "%d", s->after_step);
		snprintf(pos, sizeof(pos), "%d", s->position);
		snprintf(wait, sizeof(wait), "%d", s->wait_days);
		if (db_exec(db,
		            "INSERT INTO campaign_steps (campaign_id, after_step, position, condition, "
		            "wait_days, "
		            "business_days, action, variant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
		            DB_ARGS(id, after, pos, s->condition, wait, s->business_days ? "true" : "false",
		                    s->action, s->variant)) == -1) {
			log_errorx("campaign create: step rule %zu (after step %d): %s", i + 1, s->after_step,
			           db_error(db));
			goto out;
		}
	}
	rc = 0;
out:
	for (size_t i = 0; i < d->nsegments; i++)
		free(seg_ids[i]);
	free(seg_ids);
	return rc;
}

static int
cmd_create(const struct cfg *c, int argc, char **argv)
{
	const char *file = NULL;
	bool dry = false;
	char err[1024];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--dry-run") == 0)
			dry = true;
		else if (argv[i][0] == '-' || file)
			fatalx("campaign create: unexpected argument %s (usage: campaign create FILE "
			       "[--dry-run])",
			       argv[i]);
		else
			file = argv[i];
	}
	if (file == NULL)
		usage_exit();
	struct campdef *d = campdef_load(file, err, sizeof(err));
	if (d == NULL)
		fatalx("campaign create: %s", err);
	struct db *db = ctl_db_open(c, true);
	PGresult *res = NULL;
	char id[24] = "";
	bool replaced = false;
	int rc = 1;
	if (db == NULL || check_time_zone(db, d) == -1)
		goto out;
	if (dry) {
		rc = dry_run(db, d);
		goto out;
	}
	if (db_begin(db) == -1) {
		log_errorx("campaign create: %s", db_error(db));
		goto out;
	}
	res = ctl_query(db, "campaign create", "SELECT id, status FROM campaigns WHERE name = $1 FOR UPDATE",
	                DB_ARGS(d->name));
	if (res == NULL)
		goto out;
	if (PQntuples(res) == 1) {
		if (strcmp(PQgetvalue(res, 0, 1), "draft") != 0) {
			log_errorx("campaign create: campaign \"%s\" (id %s) exists and is %s; only a draft "
			           "is replaced (give the new one another name)",
			           d->name, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
			goto out;
		}
		util_strlcpy(id, PQgetvalue(res, 0, 0), sizeof(id));
		replaced = true;
	}
	PQclear(res);
	res = NULL;
	if (replaced) {
		if (db_exec(db,
		            "UPDATE campaigns SET sender_name = $2, sender_email = $3, reply_to = $4, "
		            "postal_address = $5, "
		            "time_zone = $6 WHERE id = $1",
		            DB_ARGS(id, d->sender_name, d->sender_email, d->reply_to, d->postal_address,
		                    d->time_zone)) == -1 ||
		    db_exec(db, "DELETE FROM campaign_steps WHERE campaign_id = $1", DB_ARGS(id)) == -1 ||
		    db_exec(db, "DELETE FROM campaign_messages WHERE campaign_id = $1", DB_ARGS(id)) == -1 ||
		    db_exec(db, "DELETE FROM campaign_segments WHERE campaign_id = $1", DB_ARGS(id)) == -1) {
			log_errorx("campaign create: %s", db_error(db));
			goto out;
		}
	} else {
		res = db_query(db,
		               "INSERT INTO campaigns (name, sender_name, sender_email, reply_to, "
		               "postal_address, time_zone) "
		               "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
		               DB_ARGS(d->name, d->sender_name, d->sender_email, d->reply_to,
		                       d->postal_address, d->time_zone));
		if (res == NULL) {
			log_errorx("campaign create: %s",
			           strcmp(db_sqlstate(db), "23505") == 0
			                   ? "a campaign of that name was created meanwhile; run it again"
			                   : db_error(db));
			goto out;
		}
		util_strlcpy(id, PQgetvalue(res, 0, 0), sizeof(id));
	}
	if (insert_parts(db, id, d) == -1)
		goto out;
	if (db_commit(db) == -1) {
		log_errorx("campaign create: %s", db_error(db));
		goto out;
	}
	printf("%s campaign %s \"%s\" (draft): %zu segment%s, %zu message%s, %zu step rule%s\n",
	       replaced ? "replaced" : "created", id, d->name, d->nsegments, d->nsegments == 1 ? "" : "s",
	       d->nmessages, d->nmessages == 1 ? "" : "s", d->nsteps, d->nsteps == 1 ? "" : "s");
	rc = 0;
out:
	PQclear(res);
	db_free(db);
	campdef_free(d);
	return rc;
}

/* --- the others ---------------------------------------------------------------------------------- */

struct found {
	char id[24];
	char name[1024];
	char status[16];
};

/* The campaign named by an id or a name (an id wins); lock: FOR UPDATE. 0, or -1 after logging
 * when there is none or the query fails. */
static int
find_campaign(struct db *db, const char *what, const char *ref, bool lock, struct found *out)
{
	PGresult *res =
	        ctl_query(db, "campaign",
	                  lock ? "SELECT id, name, status FROM campaigns WHERE id::text = $1 OR name = $1 "
	                         "ORDER BY (id::text = $1) DESC LIMIT 1 FOR UPDATE"
	                       : "SELECT id, name, status FROM campaigns WHERE id::text = $1 OR name = $1 "
	                         "ORDER BY (id::text = $1) DESC LIMIT 1",
	                  DB_ARGS(ref));
	if (res == NULL)
		return -1;
	if (PQntuples(res) == 0) {
		log_errorx("campaign %s: no campaign with id or name %s", what, ref);
		PQclear(res);
		return -1;
	}
	util_strlcpy(out->id, PQgetvalue(res, 0, 0), sizeof(out->id));
	util_strlcpy(out->name, PQgetvalue(res, 0, 1), sizeof(out->name));
	util_strlcpy(out->status, PQgetvalue(res, 0, 2), sizeof(out->status));
	PQclear(res);
	return 0;
}

static int
cmd_list(const struct cfg *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		usage_exit();
	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	PGresult *res =
	        ctl_query(db, "campaign list",
	                  "SELECT c.id, c.name, c.status, (SELECT count(*) FROM campaign_segments g "
	                  "WHERE g.campaign_id = c.id), "
	                  "(SELECT count(*) FROM campaign_enrollments e WHERE e.campaign_id = c.id), "
	                  "(SELECT count(*) FROM email_messages m WHERE m.campaign_id = c.id AND "
	                  "m.status IN ('sent', 'bounced')), "
	                  "to_char(c.created_at, 'YYYY-MM-DD HH24:MI') FROM campaigns c ORDER BY c.id",
	                  0, NULL);
	if (res == NULL) {
		db_free(db);
		return 1;
	}
	static const int width[] = {-5, -32, -9, 8, 9, 8, 0};
	ctl_row("", NELEM(width), width,
	        (const char *const[]){"ID", "NAME", "STATUS", "SEGMENTS", "ENROLLED", "SENT", "CREATED"});
	for (int i = 0; i < PQntuples(res); i++)
		ctl_row("", NELEM(width), width,
		        (const char *const[]){PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
		                              PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
		                              PQgetvalue(res, i, 6)});
	PQclear(res);
	db_free(db);
	return 0;
}

static int
cmd_show(const struct cfg *c, int argc, char **argv)
{
	struct found f;

	if (argc != 2)
		usage_exit();
	struct db *db = ctl_db_open(c, true);
	PGresult *res = NULL;
	int rc = 1;
	if (db == NULL || find_campaign(db, "show", argv[1], false, &f) == -1)
		goto out;
	res = ctl_query(
	        db, "campaign show",
	        "SELECT name, status, sender_name, sender_email, coalesce(reply_to, ''), postal_address, "
	        "time_zone, "
	        "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS'), coalesce(to_char(activated_at, 'YYYY-MM-DD "
	        "HH24:MI:SS'), ''), "
	        "coalesce(to_char(finished_at, 'YYYY-MM-DD HH24:MI:SS'), '') FROM campaigns WHERE id = $1",
	        DB_ARGS(f.id));
	if (res == NULL)
		goto out;
	ctl_printf("campaign %s \"%s\"\n", f.id, PQgetvalue(res, 0, 0));
	printf("  status:         %s\n", PQgetvalue(res, 0, 1));
	ctl_printf("  sender:         %s <%s>\n", PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
	if (PQgetvalue(res, 0, 4)[0])
		ctl_printf("  reply to:       %s\n", PQgetvalue(res, 0, 4));
	printf("  postal address: ");
	for (const char *p = PQgetvalue(res, 0, 5);; p++) {
		size_t n = strcspn(p, "\n");
		ctl_printf("%.*s%s", (int)n, p, p[n] ? ", " : "");
		if (!*(p += n))
			break;
	}
	ctl_printf("\n  time zone:      %s\n", PQgetvalue(res, 0, 6));
	printf("  created:        %s UTC\n", PQgetvalue(res, 0, 7));
	if (PQgetvalue(res, 0, 8)[0])
		printf("  activated:      %s UTC\n", PQgetvalue(res, 0, 8));
	if (PQgetvalue(res, 0, 9)[0])
		printf("  finished:       %s UTC\n", PQgetvalue(res, 0, 9));
	PQclear(res);

	res = ctl_query(
	        db, "campaign show",
	        "SELECT g.position, g.name, g.criteria::text, (SELECT count(*) FROM campaign_enrollments e "
	        "WHERE e.segment_id = g.id) FROM campaign_segments g WHERE g.campaign_id = $1 ORDER BY "
	        "g.position",
	        DB_ARGS(f.id));
	if (res == NULL)
		goto out;
	printf("\nsegments (first match wins):\n");
	for (int i = 0; i < PQntuples(res); i++)
		ctl_printf("  %s. %s: %s enrolled; criteria %s\n", PQgetvalue(res, i, 0),
		           PQgetvalue(res, i, 1), PQgetvalue(res, i, 3), PQgetvalue(res, i, 2));
	PQclear(res);

	res = ctl_query(
	        db, "campaign show",
	        "SELECT m.variant, coalesce(g.name, '(every segment)'), m.subject FROM campaign_messages m "
	        "LEFT JOIN campaign_segments g ON g.id = m.segment_id WHERE m.campaign_id = $1 "
	        "ORDER BY m.variant, g.position NULLS LAST",
	        DB_ARGS(f.id));
	if (res == NULL)
		goto out;
	printf("\nmessages:\n");
	for (int i = 0; i < PQntuples(res); i++) {
		static const int width[] = {-16, -24, 0};
		char *subject = xasprintf("subject: %s", PQgetvalue(res, i, 2));
		ctl_row("  ", NELEM(width), width,
		        (const char *const[]){PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), subject});
		free(subject);
	}
	PQclear(res);

	res = ctl_query(
	        db, "campaign show",
	        "SELECT after_step, condition, wait_days, business_days, action, coalesce(variant, '') "
	        "FROM campaign_steps WHERE campaign_id = $1 ORDER BY after_step, position",
	        DB_ARGS(f.id));
	if (res == NULL)
		goto out;
	printf("\nstep rules (the first that holds fires):\n");
	for (int i = 0; i < PQntuples(res); i++) {
		const char *action = PQgetvalue(res, i, 4);
		char wait[64] = "at once";
		if (strcmp(PQgetvalue(res, i, 2), "0") != 0)
			snprintf(wait, sizeof(wait), "after %s %sday%s", PQgetvalue(res, i, 2),
			         PQgetvalue(res, i, 3)[0] == 't' ? "business " : "",
			         strcmp(PQgetvalue(res, i, 2), "1") == 0 ? "" : "s");
		ctl_printf("  after step %s, %s: %s %s%s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
		           wait,
		           strcmp(action, "send") == 0   ? "send "
		           : strcmp(action, "call") == 0 ? "a call for the coordinator"
		                                         : "stop",
		           PQgetvalue(res, i, 5));
	}
	PQclear(res);

	res = ctl_query(db, "campaign show",
	                "SELECT state, step, count(*) FROM campaign_enrollments WHERE campaign_id = $1 "
	                "GROUP BY state, step ORDER BY state, step",
	                DB_ARGS(f.id));
	if (res == NULL)
		goto out;
	printf("\nenrollments:%s\n", PQntuples(res) ? "" : " none");
	for (int i = 0; i < PQntuples(res); i++)
		ctl_printf("  %-9s step %-3s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
		           PQgetvalue(res, i, 2));
	PQclear(res);

	res = ctl_query(
	        db, "campaign show",
	        "SELECT m.variant, count(*) FILTER (WHERE m.status IN ('sent', 'bounced')), "
	        "count(m.opened_at), "
	        "count(m.clicked_at), count(*) FILTER (WHERE m.status = 'bounced' OR EXISTS (SELECT 1 FROM "
	        "email_events ev "
	        "WHERE ev.message_id = m.id AND ev.kind = 'bounce')), count(*) FILTER (WHERE EXISTS (SELECT "
	        "1 FROM "
	        "email_events ev WHERE ev.message_id = m.id AND ev.kind = 'unsubscribe')) "
	        "FROM email_messages m WHERE m.campaign_id = $1 GROUP BY m.variant ORDER BY m.variant",
	        DB_ARGS(f.id));
	if (res == NULL)
		goto out;
	printf("\nmessages sent:%s\n", PQntuples(res) ? "" : " none");
	static const int width[] = {-16, 8, 8, 8, 8, 12};
	if (PQntuples(res))
		ctl_row("  ", NELEM(width), width,
		        (const char *const[]){"VARIANT", "SENT", "OPENED", "CLICKED", "BOUNCED", "UNSUBSCRIBED"});
	for (int i = 0; i < PQntuples(res); i++)
		ctl_row("  ", NELEM(width), width,
		        (const char *const[]){PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
		                              PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), PQgetvalue(res, i, 5)});
	rc = 0;
out:
	PQclear(res);
	db_free(db);
	return rc;
}

/* Enrolls, in one statement, every eligible source that some segment of campaign id matches and
 * that is not enrolled yet, in the first segment (by position) that matches it, with its first
 * action due now. Returns how many, -1 after logging. */
static long long
enroll(struct db *db, const char *id, const char *first_step)
{
	PGresult *res = ctl_query(
	        db, "campaign activate",
	        "SELECT id, criteria::text FROM campaign_segments WHERE campaign_id = $1 ORDER BY position",
	        DB_ARGS(id));
	if (res == NULL)
		return -1;
	size_t n = (size_t)PQntuples(res);
	json_t **crit = xcalloc(n ? n : 1, sizeof(*crit));
	const char **seg_ids = xcalloc(n ? n : 1, sizeof(*seg_ids));
	char **params = xcalloc(2 + n * (SEGMENT_MAX_PARAMS + 1), sizeof(*params));
	char err[512];
	int np = 2;
	long long count = -1;

	params[0] = xstrdup(id);
	params[1] = xstrdup(first_step);
	for (size_t i = 0; i < n; i++) {
		crit[i] = json_loads(PQgetvalue(res, (int)i, 1), 0, NULL);
		seg_ids[i] = PQgetvalue(res, (int)i, 0);
		if (segment_check(crit[i], err, sizeof(err)) == -1) {
			log_errorx("campaign activate: segment %s: %s", seg_ids[i], err);
			goto out;
		}
	}
	count = 0;
	if (n > 0) {
		char *m = matches_sql(crit, seg_ids, n, params, &np);
		char *sql =
		        xasprintf("WITH m AS (%s), f AS (SELECT DISTINCT ON (id) id, seg FROM m WHERE ok "
		                  "ORDER BY id, pos) "
		                  "INSERT INTO campaign_enrollments (campaign_id, source_id, segment_id, "
		                  "step, step_at, next_action_at, "
		                  "next_step_id) SELECT $1, f.id, f.seg, 0, now(), (SELECT "
		                  "campaign_add_days(now(), s.wait_days, s.business_days, c.time_zone) FROM "
		                  "campaign_steps s JOIN campaigns c ON c.id = s.campaign_id WHERE s.id = $2), "
		                  "$2 FROM f WHERE "
		                  "NOT EXISTS (SELECT 1 FROM "
		                  "campaign_enrollments e WHERE e.campaign_id = $1 AND e.source_id = f.id) "
		                  "ON CONFLICT (campaign_id, source_id) DO NOTHING",
		                  m);
		PGresult *ins = ctl_query(db, "campaign activate", sql, np, (const char *const *)params);
		free(sql);
		free(m);
		if (ins == NULL) {
			count = -1;
		} else {
			count = strtoll(PQcmdTuples(ins), NULL, 10);
			PQclear(ins);
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		json_decref(crit[i]);
	free(crit);
	free(seg_ids);
	free_params(params, np);
	PQclear(res);
	return count;
}

static int
cmd_activate(const struct cfg *c, int argc, char **argv)
{
	struct found f;

	if (argc != 2)
		usage_exit();
	struct db *db = ctl_db_open(c, true);
	PGresult *res = NULL;
	int rc = 1;
	if (db == NULL)
		return 1;
	if (db_begin(db) == -1 || db_exec(db, "SET LOCAL statement_timeout = '30min'", 0, NULL) == -1) {
		log_errorx("campaign activate: %s", db_error(db));
		goto out;
	}
	if (find_campaign(db, "activate", argv[1], true, &f) == -1)
		goto out;
	if (strcmp(f.status, "finished") == 0) {
		log_errorx("campaign activate: campaign %s \"%s\" is finished; it cannot be activated again",
		           f.id, f.name);
		goto out;
	}
	res = ctl_query(db, "campaign activate",
	                "SELECT id FROM campaign_steps WHERE campaign_id = $1 AND after_step = 0 "
	                "AND condition = 'always' ORDER BY position LIMIT 1",
	                DB_ARGS(f.id));
	if (res == NULL)
		goto out;
	if (PQntuples(res) != 1) {
		log_errorx("campaign activate: campaign %s has no 'always' rule after step 0", f.id);
		goto out;
	}
	char step[24];
	util_strlcpy(step, PQgetvalue(res, 0, 0), sizeof(step));
	if (db_exec(db,
	            "UPDATE campaigns SET status = 'active', activated_at = coalesce(activated_at, now()) "
	            "WHERE id = $1",
	            DB_ARGS(f.id)) == -1) {
		log_errorx("campaign activate: %s", db_error(db));
		goto out;
	}
	long long n = enroll(db, f.id, step);
	if (n == -1)
		goto out;
	if (db_commit(db) == -1) {
		log_errorx("campaign activate: %s", db_error(db));
		goto out;
	}
	ctl_printf("campaign %s \"%s\" %s: %lld source%s newly enrolled\n", f.id, f.name,
	           strcmp(f.status, "paused") == 0   ? "resumed"
	           : strcmp(f.status, "active") == 0 ? "is active"
	                                             : "activated",
	           n, n == 1 ? "" : "s");
	if (c->campaigns.token_key_file == NULL || c->campaigns.token_key_file[0] == '\0')
		log_warnx("campaigns.token_key_file is not set: the workers send no campaign message until it is");
	rc = 0;
out:
	PQclear(res);
	db_free(db);
	return rc;
}

static int
cmd_pause_finish(const struct cfg *c, int argc, char **argv, bool finish)
{
	const char *what = finish ? "finish" : "pause";
	struct found f;

	if (argc != 2)
		usage_exit();
	struct db *db = ctl_db_open(c, true);
	PGresult *res = NULL;
	long long stopped = 0;
	int rc = 1;
	if (db == NULL)
		return 1;
	if (db_begin(db) == -1) {
		log_errorx("campaign %s: %s", what, db_error(db));
		goto out;
	}
	if (find_campaign(db, what, argv[1], true, &f) == -1)
		goto out;
	if (strcmp(f.status, "finished") == 0) {
		log_errorx("campaign %s: campaign %s \"%s\" is finished already", what, f.id, f.name);
		goto out;
	}
	if (!finish && strcmp(f.status, "active") != 0) {
		log_errorx("campaign pause: campaign %s \"%s\" is %s; only an active campaign is paused",
		           f.id, f.name, f.status);
		goto out;
	}
	if (finish) {
		if (db_exec(db, "UPDATE campaigns SET status = 'finished', finished_at = now() WHERE id = $1",
		            DB_ARGS(f.id)) == -1) {
			log_errorx("campaign finish: %s", db_error(db));
			goto out;
		}
		res = ctl_query(db, "campaign finish",
		                "UPDATE campaign_enrollments SET state = 'finished', "
		                "stop_reason = 'campaign finished', "
		                "next_action_at = NULL, next_step_id = NULL WHERE campaign_id "
		                "= $1 AND state = 'active'",
		                DB_ARGS(f.id));
		if (res == NULL)
			goto out;
		stopped = strtoll(PQcmdTuples(res), NULL, 10);
	} else if (db_exec(db, "UPDATE campaigns SET status = 'paused' WHERE id = $1", DB_ARGS(f.id)) == -1) {
		log_errorx("campaign pause: %s", db_error(db));
		goto out;
	}
	if (db_commit(db) == -1) {
		log_errorx("campaign %s: %s", what, db_error(db));
		goto out;
	}
	if (finish)
		ctl_printf("campaign %s \"%s\" finished: %lld active enrollment%s ended\n", f.id, f.name, stopped,
		           stopped == 1 ? "" : "s");
	else
		ctl_printf("campaign %s \"%s\" paused: nothing more is sent until `outreachctl campaign activate "
		           "%s`\n",
		           f.id, f.name, f.id);
	rc = 0;
out:
	PQclear(res);
	db_free(db);
	return rc;
}

/* --- preview ------------------------------------------------------------------------------------- */

/* The segment (id, name) source falls in: its enrollment's, else the first whose criteria match.
 * Returns 1, 0 when no segment matches, -1 after logging. */
static int
preview_segment(struct db *db, const char *cid, const char *sid, char *seg, size_t seglen, char *name,
                size_t namelen)
{
	PGresult *res =
	        ctl_query(db, "campaign preview",
	                  "SELECT g.id, g.name FROM campaign_enrollments e JOIN campaign_segments g ON "
	                  "g.id = e.segment_id WHERE e.campaign_id = $1 AND e.source_id = $2",
	                  DB_ARGS(cid, sid));
	if (res == NULL)
		return -1;
	int found = PQntuples(res) == 1;
	if (found) {
		util_strlcpy(seg, PQgetvalue(res, 0, 0), seglen);
		util_strlcpy(name, PQgetvalue(res, 0, 1), namelen);
	}
	PQclear(res);
	if (found)
		return 1;
	res = ctl_query(db, "campaign preview",
	                "SELECT id, name, criteria::text FROM campaign_segments WHERE campaign_id = $1 "
	                "ORDER BY position",
	                DB_ARGS(cid));
	if (res == NULL)
		return -1;
	for (int i = 0; i < PQntuples(res) && found == 0; i++) {
		json_t *crit = json_loads(PQgetvalue(res, i, 2), 0, NULL);
		char err[512], *params[SEGMENT_MAX_PARAMS + 1];
		int np = 1;
		if (segment_check(crit, err, sizeof(err)) == -1) {
			log_errorx("campaign preview: segment %s: %s", PQgetvalue(res, i, 0), err);
			json_decref(crit);
			found = -1;
			break;
		}
		params[0] = xstrdup(sid);
		char *where = segment_where(crit, 2, params, &np);
		char *sql = xasprintf("SELECT 1 FROM referral_sources s WHERE s.id = $1 AND %s", where);
		PGresult *m = ctl_query(db, "campaign preview", sql, np, (const char *const *)params);
		if (m == NULL) {
			found = -1;
		} else if (PQntuples(m) == 1) {
			found = 1;
			util_strlcpy(seg, PQgetvalue(res, i, 0), seglen);
			util_strlcpy(name, PQgetvalue(res, i, 1), namelen);
		}
		PQclear(m);
		free(sql);
		free(where);
		for (int k = 0; k < np; k++)
			free(params[k]);
		json_decref(crit);
	}
	PQclear(res);
	return found;
}

/* The three templates of a campaign_messages row (subject, text, html); -1 after logging, with
 * nothing held. An HTML template that puts a value in unescaped is refused as the worker refuses it:
 * the row may have been written other than by campaign create. */
static int
parse_message(PGresult *res, struct mailtmpl *t)
{
	static const char *const names[] = { "subject", "text", "html" };
	const char *src[] = { PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2) };
	char err[512];

	if (mailtmpl_parse(t, src, names, err, sizeof(err)) == -1) {
		log_errorx("campaign preview: %s (no message is sent from this variant)", err);
		return -1;
	}
	return 0;
}

static int
cmd_preview(const struct cfg *c, int argc, char **argv)
{
	const char *variant = NULL, *ref = NULL, *sid = NULL;
	struct found f;
	long id;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--variant") == 0 && i + 1 < argc)
			variant = argv[++i];
		else if (argv[i][0] == '-')
			fatalx("campaign preview: unknown option %s (usage: campaign preview ID|NAME "
			       "SOURCE_ID [--variant V])",
			       argv[i]);
		else if (ref == NULL)
			ref = argv[i];
		else if (sid == NULL)
			sid = argv[i];
		else
			usage_exit();
	}
	if (ref == NULL || sid == NULL)
		usage_exit();
	if (!util_parse_long(sid, 1, (long)(~0UL >> 1), &id))
		fatalx("campaign preview: SOURCE_ID must be a referral source's id, not %s", sid);
	struct db *db = ctl_db_open(c, true);
	PGresult *vars = NULL, *res = NULL;
	struct mailtmpl t = { 0 };
	json_t *ctx = NULL;
	char *subject = NULL, *text = NULL, *html = NULL, *chosen = NULL;
	char seg[24], segname[1024];
	int rc = 1;
	if (db == NULL || find_campaign(db, "preview", ref, false, &f) == -1)
		goto out;
	if ((vars = ctl_query(db, "campaign preview", campvars_sql, DB_ARGS(sid, f.id))) == NULL)
		goto out;
	if (PQntuples(vars) != 1) {
		log_errorx("campaign preview: no referral source %s", sid);
		goto out;
	}
	int in = preview_segment(db, f.id, sid, seg, sizeof(seg), segname, sizeof(segname));
	if (in == -1)
		goto out;
	if (in == 0) {
		log_errorx("campaign preview: referral source %s is in no segment of campaign %s \"%s\"", sid,
		           f.id, f.name);
		goto out;
	}
	if (variant == NULL) {
		res = ctl_query(
		        db, "campaign preview",
		        "SELECT variant FROM campaign_steps WHERE campaign_id = $1 AND after_step = 0 AND "
		        "action = 'send' ORDER BY position LIMIT 1",
		        DB_ARGS(f.id));
		if (res == NULL)
			goto out;
		if (PQntuples(res) != 1) {
			log_errorx("campaign preview: campaign %s has no first message; give --variant",
			           f.id);
			goto out;
		}
		chosen = xstrdup(PQgetvalue(res, 0, 0));
		PQclear(res);
	} else {
		chosen = xstrdup(variant);
	}
	res = ctl_query(
	        db, "campaign preview",
	        "SELECT subject, text_template, html_template, segment_id IS NULL FROM campaign_messages "
	        "WHERE campaign_id = $1 AND variant = $2 AND (segment_id = $3 OR segment_id IS NULL) "
	        "ORDER BY segment_id NULLS LAST LIMIT 1",
	        DB_ARGS(f.id, chosen, seg));
	if (res == NULL)
		goto out;
	if (PQntuples(res) != 1) {
		log_errorx(
		        "campaign preview: campaign %s has no variant %s for segment %s (nor a shared one)",
		        f.id, chosen, segname);
		goto out;
	}
	if (parse_message(res, &t) == -1)
		goto out;
	bool shared = PQgetvalue(res, 0, 3)[0] == 't';
	PQclear(res);
	ctx = campvars_context(vars, 0);
	mailtmpl_render(&t, ctx, &subject, &text, &html);

	const char *email = PQgetvalue(vars, 0, 9);
	res = ctl_query(db, "campaign preview",
	                "SELECT s.email IS NULL OR s.email = '', EXISTS (SELECT 1 FROM suppressions sp WHERE "
	                "sp.address = lower(s.email)) FROM referral_sources s WHERE s.id = $1",
	                DB_ARGS(sid));
	if (res == NULL)
		goto out;
	/* What the data holds is printed as it is but for control characters: an escape sequence in a
	 * name would reach the terminal (retitle it, clear it, move its cursor). */
	ctl_printf("Campaign: %s \"%s\" (%s)\n", f.id, f.name, f.status);
	ctl_printf("Segment:  %s\n", segname);
	ctl_printf("Variant:  %s%s\n", chosen, shared ? " (shared by every segment)" : "");
	ctl_printf("From:     %s <%s>\n", PQgetvalue(vars, 0, 14), PQgetvalue(vars, 0, 15));
	ctl_printf("To:       %s <%s>\n", PQgetvalue(vars, 0, 1), email);
	if (PQgetvalue(res, 0, 0)[0] == 't')
		printf("Note:     this source has no email address: it is never enrolled\n");
	else if (PQgetvalue(res, 0, 1)[0] == 't')
		ctl_printf("Note:     %s is suppressed: it is never mailed\n", email);
	ctl_printf("Subject:  %s\n\n--- text/plain ---\n%s", subject, text);
	if (text[0] && text[strlen(text) - 1] != '\n')
		putchar('\n');
	ctl_printf("--- text/html ---\n%s", html);
	if (html[0] && html[strlen(html) - 1] != '\n')
		putchar('\n');
	rc = 0;
out:
	PQclear(res);
	free(subject);
	free(text);
	free(html);
	json_decref(ctx);
	mailtmpl_free(&t);
	free(chosen);
	PQclear(vars);
	db_free(db);
	return rc;
}

int
ctl_campaign(const struct cfg *c, int argc, char **argv)
{
	if (argc >= 2) {
		const char *sub = argv[1];
		argc--;
		argv++;
		if (strcmp(sub, "create") == 0)
			return cmd_create(c, argc, argv);
		if (strcmp(sub, "list") == 0)
			return cmd_list(c, argc, argv);
		if (strcmp(sub, "show") == 0)
			return cmd_show(c, argc, argv);
		if (strcmp(sub, "activate") == 0)
			return cmd_activate(c, argc, argv);
		if (strcmp(sub, "pause") == 0)
			return cmd_pause_finish(c, argc, argv, false);
		if (strcmp(sub, "finish") == 0)
			return cmd_pause_finish(c, argc, argv, true);
		if (strcmp(sub, "preview") == 0)
			return cmd_preview(c, argc, argv);
	}
	usage_exit();
}
