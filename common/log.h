/* log: levelled log lines on stderr, journald priorities under systemd, a per-thread context. */
#ifndef OUTREACH_LOG_H
#define OUTREACH_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

#include "common/util.h"

/* syslog priorities, so that journald's <N> prefixes are the levels themselves. */
enum log_level {
	LOG_LVL_ERROR = 3,
	LOG_LVL_WARNING = 4,
	LOG_LVL_NOTICE = 5,
	LOG_LVL_INFO = 6,
	LOG_LVL_DEBUG = 7,
};

/* Sets the program name shown in each line and detects journald (JOURNAL_STREAM naming stderr). */
void log_init(const char *progname);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "debug", "info", "notice", "warning" or "error"; -1 when unknown. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);

/* Context appended to this thread's lines, e.g. "class=PingJob jid=..."; NULL clears it. Copied. */
void log_set_context(const char *fmt, ...) PRINTFLIKE(1, 2);
void log_clear_context(void);

void log_write(enum log_level level, int errnum, const char *fmt, ...) PRINTFLIKE(3, 4);

/* Read by every thread, set again on a reload: atomic, read relaxed (a line logged at the old level
 * while the level changes is fine). */
extern _Atomic int log_level_current;

/* The level test comes before the arguments are evaluated. _warn and fatal append strerror(errno). */
#define LOG_AT(lvl, errnum, ...)                                                                   \
	do {                                                                                       \
		if ((int)(lvl) <= atomic_load_explicit(&log_level_current, memory_order_relaxed)) \
			log_write((lvl), (errnum), __VA_ARGS__);                                   \
	} while (0)
#define log_debug(...) LOG_AT(LOG_LVL_DEBUG, 0, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LVL_INFO, 0, __VA_ARGS__)
#define log_notice(...) LOG_AT(LOG_LVL_NOTICE, 0, __VA_ARGS__)
#define log_warnx(...) LOG_AT(LOG_LVL_WARNING, 0, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LVL_WARNING, errno, __VA_ARGS__)
#define log_errorx(...) LOG_AT(LOG_LVL_ERROR, 0, __VA_ARGS__)
#define log_error(...) LOG_AT(LOG_LVL_ERROR, errno, __VA_ARGS__)

/* Logs at error level and exits the process with status 1. */
void fatal(const char *fmt, ...) PRINTFLIKE(1, 2) __attribute__((noreturn));
void fatalx(const char *fmt, ...) PRINTFLIKE(1, 2) __attribute__((noreturn));

#endif
