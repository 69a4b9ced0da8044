/* log: levelled log lines on stderr, journald priorities under systemd, a per-thread context. */
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Atomic int log_level_current = LOG_LVL_INFO;

static const char *log_prog = "outreach";
static bool log_journal;
static _Thread_local char log_ctx[256];

static const char *const level_names[] = {
    [LOG_LVL_ERROR] = "error",   [LOG_LVL_WARNING] = "warning", [LOG_LVL_NOTICE] = "notice",
    [LOG_LVL_INFO] = "info",     [LOG_LVL_DEBUG] = "debug",
};

/* journald sets JOURNAL_STREAM=dev:ino for the stream it reads; believe it only if it is our stderr. */
static bool
stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) == -1)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
log_init(const char *progname)
{
	const char *slash = strrchr(progname, '/');

	log_prog = slash ? slash + 1 : progname;
	log_journal = stderr_is_journal();
}

void
log_set_level(enum log_level level)
{
	atomic_store_explicit(&log_level_current, (int)level, memory_order_relaxed);
}

enum log_level
log_get_level(void)
{
	return (enum log_level)atomic_load_explicit(&log_level_current, memory_order_relaxed);
}

int
log_level_parse(const char *name)
{
	for (size_t i = 0; i < NELEM(level_names); i++)
		if (level_names[i] && strcmp(level_names[i], name) == 0)
			return (int)i;
	return -1;
}

const char *
log_level_name(enum log_level level)
{
	if ((size_t)level < NELEM(level_names) && level_names[level])
		return level_names[level];
	return "unknown";
}

void
log_set_context(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(log_ctx, sizeof(log_ctx), fmt, ap);
	va_end(ap);
}

void
log_clear_context(void)
{
	log_ctx[0] = '\0';
}

static void
log_vwrite(enum log_level level, int errnum, const char *fmt, va_list ap)
{
	char msg[4096], err[256];
	/* The prefix, the message, the error and the context as shown (control characters as escapes,
	 * up to four bytes for one), each with room of its own: a long message never pushes out the
	 * context (a job's class and jid). */
	char line[128 + sizeof(msg) + sizeof(err) + 2 + sizeof(log_ctx) * 4 + 2];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_journal) {
		n = (size_t)snprintf(line, 128, "<%d>", (int)level);
	} else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		n = (size_t)snprintf(line, 128, "%s.%03ldZ %s[%d] %s: ", stamp, ts.tv_nsec / 1000000, log_prog,
		                     (int)getpid(), log_level_name(level));
	}
	if (n >= 128)
		n = 127;
	/* One line per record: a line break in the message or its context (a job's class and jid come
	 * from outside) would forge a second record, so it is written as a space. Other control
	 * characters (an escape sequence in a name from the data) are shown as escapes: the log is read
	 * on terminals. */
	n += util_visible_buf(line + n, sizeof(msg), msg, true);
	if (errnum != 0) {
		snprintf(err, sizeof(err), ": %s", strerror(errnum));
		n += util_visible_buf(line + n, sizeof(err), err, true);
	}
	if (log_ctx[0] != '\0') {
		memcpy(line + n, " (", 2);
		n += 2;
		n += util_visible_buf(line + n, sizeof(log_ctx) * 4, log_ctx, true);
		line[n++] = ')';
	}
	line[n++] = '\n';
	/* One write per line so that lines of concurrent threads and processes do not interleave. */
	(void)!write(STDERR_FILENO, line, n);
}

void
log_write(enum log_level level, int errnum, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_vwrite(level, errnum, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
fatal(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_vwrite(LOG_LVL_ERROR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LVL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
