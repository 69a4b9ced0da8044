/* inifile: an INI file read with libinih, its lines counted for error messages. */
#ifndef OUTREACH_INIFILE_H
#define OUTREACH_INIFILE_H

#include <ini.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/util.h"

struct inifile {
	FILE *fp;
	int lineno;       /* the line being parsed, from 1 */
	int section_line; /* the line of the last [section] header */
	bool new_section; /* a [section] header was read; the caller clears it */
	bool at_line_start;
	int max_line;     /* inifile_parse's */
	size_t line_len;  /* bytes of the current line read so far */
	int long_line;    /* the first line longer than libinih takes whole (it cuts it), or 0 */
};

/* Opens path for inifile_parse; -1 with errno set. */
int inifile_open(struct inifile *f, const char *path) MUSTCHECK;

/* Parses the file, calling handler(user, section, name, value) for each key, with long lines
 * (up to max_line bytes), no inline comments, continuation lines, stopping at the first error.
 * Returns ini_parse_stream's result: 0, or the line of the first error (a handler's 0 included).
 * A line of up to max_line - 1 bytes (before its newline; a CR counts) is parsed whole. libinih
 * cuts a longer one into pieces parsed as lines of their own; f->long_line then says which line was
 * cut, before the handler sees the first piece, so that the caller reports it rather than a piece's
 * key or value. */
int inifile_parse(struct inifile *f, ini_handler handler, void *user, int max_line);

/* What to say of f->long_line, the same for every INI file read: "the line is longer than N bytes"
 * into buf. The caller puts "PATH:LINE: " (the line f->long_line) before it. */
void inifile_long_line_msg(const struct inifile *f, char *buf, size_t len);

/* Closes the file; a closed or never opened one does nothing. */
void inifile_close(struct inifile *f);

#endif
