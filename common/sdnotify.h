/* sdnotify: the systemd notification calls (READY, STATUS, WATCHDOG, ...), with or without libsystemd. */
#ifndef OUTREACH_SDNOTIFY_H
#define OUTREACH_SDNOTIFY_H

#include <stdint.h>

#include "common/util.h"

/* Sends a state string such as "READY=1\nSTATUS=serving" to $NOTIFY_SOCKET; does nothing outside
 * systemd. Returns 1 when sent, 0 when not under systemd, -1 on error. */
int sdn_notify(const char *state);
int sdn_notifyf(const char *fmt, ...) PRINTFLIKE(1, 2);

/* The watchdog interval systemd asked for in microseconds, or 0 when none. */
uint64_t sdn_watchdog_usec(void);

#endif
