/* mailsend: test helper that builds a message with msg_* and sends it with mailer_*, printing JSON results.
 */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/log.h"
#include "common/mailer.h"
#include "common/msg.h"

/*
 * mailsend [options] TO...
 *
 * Reads the configuration like the daemons (cfg_load: $OUTREACH_CONFIG, then OUTREACH_SMTP_*
 * variables), builds one message to the TO addresses and sends it over one connection. With -b N
 * it sends N such messages (each with its own Message-ID) in one batch; with -k K it sends the
 * batch K times, one connection each, with the same mailer. Prints one JSON object per message
 * and send on stdout:
 *
 *   {"status": "sent"|"temporary"|"permanent", "stage": "...", "code": 250, "text": "...",
 *    "delivered": 1, "message_id": "...", "rejected": [{"addr": ..., "code": ..., "text": ...}]}
 *
 * Exit status: 0 when every message was sent, 1 when one was not, 2 on a usage, configuration or
 * message error (printed on stderr).
 */

static void
usage(void)
{
	fprintf(stderr,
	        "usage: mailsend [-n FROM_NAME] [-N TO_NAME] [-s SUBJECT] [-t TEXT] [-H HTML] [-r REPLY_TO]\n"
	        "                [-x 'Name: value']... [-i MESSAGE_ID] [-b COUNT] [-k TIMES] TO...\n");
	exit(2);
}

static void
must(struct msg *m, int rc)
{
	if (rc < 0) {
		fprintf(stderr, "mailsend: %s\n", msg_error(m));
		exit(2);
	}
}

static json_t *
result_json(const struct mailer_result *res, const char *id)
{
	json_t *o = json_object(), *rej = json_array();

	json_object_set_new(o, "status", json_string(mailer_status_name(res->status)));
	json_object_set_new(o, "stage", json_string(mailer_stage_name(res->stage)));
	json_object_set_new(o, "code", json_integer(res->code));
	json_object_set_new(o, "text", json_string(res->text));
	json_object_set_new(o, "delivered", json_integer((json_int_t)res->ndelivered));
	json_object_set_new(o, "message_id", json_string(id));
	for (size_t i = 0; i < res->nrejected; i++) {
		json_t *r = json_object();
		json_object_set_new(r, "addr", json_string(res->rejected[i].addr));
		json_object_set_new(r, "code", json_integer(res->rejected[i].code));
		json_object_set_new(r, "text", json_string(res->rejected[i].text));
		json_array_append_new(rej, r);
	}
	json_object_set_new(o, "rejected", rej);
	return o;
}

int
main(int argc, char **argv)
{
	const char *from_name = NULL, *to_name = NULL, *subject = NULL, *text = NULL, *html = NULL;
	const char *reply_to = NULL, *id = NULL;
	const char *headers[16];
	size_t nheaders = 0;
	long count = 1, times = 1;
	char err[512];
	int c;

	log_init("mailsend");
	signal(SIGPIPE, SIG_IGN);
	while ((c = getopt(argc, argv, "n:N:s:t:H:r:x:i:b:k:")) != -1) {
		switch (c) {
		case 'n':
			from_name = optarg;
			break;
		case 'N':
			to_name = optarg;
			break;
		case 's':
			subject = optarg;
			break;
		case 't':
			text = optarg;
			break;
		case 'H':
			html = optarg;
			break;
		case 'r':
			reply_to = optarg;
			break;
		case 'x':
			if (nheaders == sizeof(headers) / sizeof(headers[0]))
				usage();
			headers[nheaders++] = optarg;
			break;
		case 'i':
			id = optarg;
			break;
		case 'b':
			if (!util_parse_long(optarg, 1, 1000, &count))
				usage();
			break;
		case 'k':
			if (!util_parse_long(optarg, 1, 100, &times))
				usage();
			break;
		default:
			usage();
		}
	}
	if (optind >= argc)
		usage();

	struct cfg *cfg = cfg_load(NULL, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "mailsend: %s\n", err);
		return 2;
	}
	log_set_level(cfg_log_level(cfg));

	struct mailer_msg *batch = calloc((size_t)count, sizeof(*batch));
	struct msg **msgs = calloc((size_t)count, sizeof(*msgs));
	char **data = calloc((size_t)count, sizeof(*data));
	if (batch == NULL || msgs == NULL || data == NULL)
		return 2;
	for (long k = 0; k < count; k++) {
		struct msg *m = msg_new();
		size_t len, nrcpt;

		must(m, msg_set_from(m, from_name, cfg->smtp.from));
		for (int i = optind; i < argc; i++)
			must(m, msg_add_to(m, i == optind ? to_name : NULL, argv[i]));
		if (reply_to != NULL)
			must(m, msg_set_reply_to(m, NULL, reply_to));
		if (subject != NULL)
			must(m, msg_set_subject(m, subject));
		for (size_t i = 0; i < nheaders; i++) {
			char *name = xstrdup(headers[i]);
			char *colon = strchr(name, ':');
			if (colon == NULL)
				usage();
			*colon = '\0';
			const char *value = colon + 1;
			while (*value == ' ')
				value++;
			must(m, msg_add_header(m, name, value));
			free(name);
		}
		if (id != NULL && count == 1)
			must(m, msg_set_id(m, id));
		must(m, msg_set_text(m, text != NULL ? text : "(no text)"));
		if (html != NULL)
			must(m, msg_set_html(m, html));
		must(m, msg_render(m, &data[k], &len));
		batch[k] =
		        (struct mailer_msg){ msg_to_addrs(m, &nrcpt), 0, data[k], len, MAILER_RESULT_INIT };
		batch[k].nrcpt = nrcpt;
		msgs[k] = m;
	}

	struct mailer *mr = mailer_new(cfg);
	int rc = 0;
	for (long t = 0; t < times; t++) {
		if (mailer_send_batch(mr, NULL, batch, (size_t)count) < 0)
			rc = -1;
		for (long k = 0; k < count; k++) {
			json_t *o = result_json(&batch[k].res, msg_id(msgs[k]));
			char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
			printf("%s\n", s);
			free(s);
			json_decref(o);
		}
	}
	for (long k = 0; k < count; k++) {
		mailer_result_clear(&batch[k].res);
		free(data[k]);
		msg_free(msgs[k]);
	}
	if (rc < 0)
		fprintf(stderr, "mailsend: %s\n", mailer_error(mr));
	mailer_free(mr);
	free(batch);
	free(msgs);
	free(data);
	cfg_free(cfg);
	return rc < 0 ? 1 : 0;
}
