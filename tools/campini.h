/* campini: a campaign definition written as INI, read into the JSON form campdef checks. */
#ifndef OUTREACH_TOOLS_CAMPINI_H
#define OUTREACH_TOOLS_CAMPINI_H

#include <jansson.h>
#include <stddef.h>

#include "common/util.h"

/*
 * The INI form:
 *
 *   [campaign]                 name, sender_name, sender_email, reply_to, postal_address, time_zone
 *   [segment NAME]             criteria keys; values separated by commas ("double quotes" keep a
 *                              comma inside a value); a key repeated, or a continuation line, adds values
 *   [message VARIANT]          shared by every segment; [message VARIANT SEGMENT] for one segment:
 *                              subject, html or html_file, text or text_file
 *   [step]                     one rule: after_step, condition, wait_days, business_days, action, variant
 *
 * Continuation lines (indented) of postal_address, html and text are new lines of the value.
 */

/* Reads path into the JSON a definition file holds (a new object) and fills *lines (a new object)
 * with the line of every JSON path it made ("$.segments[0]", "$.segments[0].criteria.states"), for
 * error messages. NULL with "PATH:LINE: what is wrong" in err when the INI itself is wrong. */
json_t *campini_load(const char *path, json_t **lines, char *err, size_t errlen) MUSTCHECK;

#endif
