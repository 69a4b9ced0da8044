/* csv: a streaming RFC 4180 reader over a FILE*: one record at a time, a header map, size limits. */
#ifndef OUTREACH_CSV_H
#define OUTREACH_CSV_H

#include <stddef.h>
#include <stdio.h>

#include "common/util.h"

/*
 * What the reader accepts: fields separated by commas; records ended by CRLF, LF or a lone CR (the
 * last one may lack its line end); a field in double quotes may hold commas, CR, LF and doubled
 * quotes ("" for one "). A UTF-8 byte order mark at the very start is skipped. Empty lines between
 * records are skipped. Like Python's csv module, the reader is lenient where RFC 4180 is silent: a
 * quote inside an unquoted field is kept as it is, and text after a closing quote is appended to the
 * field. A quoted field still open at the end of the input is an error.
 *
 * Errors (unterminated quote, a record over the size limit, a read error) are final: every later
 * csv_read returns -1 and csv_error says what failed and where ("FILE:LINE: what").
 */

struct csv;

#define CSV_DEFAULT_MAX_RECORD (1024 * 1024) /* bytes of field data in one record */
#define CSV_DEFAULT_MAX_FIELDS 4096          /* fields in one record */

/* Starts reading fp (borrowed: the caller closes it after csv_free). name is used in error messages
 * (copied; NULL: "input"). Never fails. */
struct csv *csv_open(FILE *fp, const char *name);
void csv_free(struct csv *r);

/* Sets the largest record (bytes of field data, counting one byte per field for its terminator) and
 * the most fields a record may have; a larger record is an error instead of growing the buffer.
 * 0 keeps the current value. */
void csv_set_limits(struct csv *r, size_t max_record, size_t max_fields);

/* Keeps only the first n fields of each record read from now on (0: all, the default): the rest of a
 * longer record is read past, quotes and line ends respected, without being stored, and the record
 * counts n fields. For wide files of which few leading columns are wanted. */
void csv_keep_fields(struct csv *r, size_t n);

/* Reads the next record. Returns its number of fields (at least 1), 0 at the end of the input, or -1
 * on error (see csv_error). *fields (when fields is not NULL) points at the NUL-terminated fields,
 * borrowed until the next csv_read or csv_free. */
int csv_read(struct csv *r, const char *const **fields) MUSTCHECK;

/* The current record's fields, as csv_read gave them: field i (NULL when i is negative or not
 * below the record's field count, e.g. a short row or a column csv_header_index did not find) and
 * its length in bytes (a field may contain NUL bytes; 0 when out of range). Borrowed. */
const char *csv_field(const struct csv *r, int i);
size_t csv_field_len(const struct csv *r, int i);
int csv_nfields(const struct csv *r);

/* Reads the next record as the header (copied, kept until csv_free). 0, or -1 on error or when the
 * input is empty (see csv_error). */
int csv_read_header(struct csv *r) MUSTCHECK;
/* The index of the header column called name, or -1 when there is none (or no header was read).
 * An exact match wins; otherwise names are compared ignoring ASCII case, leading and trailing
 * blanks, and runs of blanks inside (CMS headers differ in spacing from release to release).
 * Map columns by name once, before the loop, never by position. */
int csv_header_index(const struct csv *r, const char *name);
int csv_header_count(const struct csv *r);

/* The physical line (1-based) on which the current record starts, and the record's ordinal among
 * the records read so far (the header, if read, is record 1); 0 before the first record. */
unsigned long csv_line(const struct csv *r);
unsigned long csv_record(const struct csv *r);

/* The last error, "" when none. */
const char *csv_error(const struct csv *r);

#endif
