/* inifile: an INI file read with libinih, its lines counted (see inifile.h). */
#include "common/inifile.h"

#include <string.h>

int
inifile_open(struct inifile *f, const char *path)
{
	memset(f, 0, sizeof(*f));
	f->at_line_start = true;
	f->fp = fopen(path, "r");
	return f->fp ? 0 : -1;
}

static char *
read_line(char *buf, int size, void *stream)
{
	struct inifile *f = stream;
	char *r = fgets(buf, size, f->fp);

	if (r == NULL)
		return NULL;
	if (f->at_line_start) {
		f->lineno++;
		f->line_len = 0;
		const char *p = buf;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '[') {
			f->section_line = f->lineno;
			f->new_section = true;
		}
	}
	f->at_line_start = strchr(buf, '\n') != NULL;
	f->line_len += strlen(buf);
	/* libinih's buffer is full and the line goes on. fgets stops there without reading further, so
	 * the end of the file is not seen yet: the next byte tells. At the end of the file or a newline
	 * (the next read, taken for an empty line) the line was read whole; anything else is cut. */
	if (!f->at_line_start && f->line_len + 1 >= (size_t)f->max_line && f->long_line == 0) {
		int c = getc(f->fp);
		if (c != EOF && c != '\n')
			f->long_line = f->lineno;
		if (c != EOF)
			ungetc(c, f->fp);
	}
	return r;
}

int
inifile_parse(struct inifile *f, ini_handler handler, void *user, int max_line)
{
	/* Debian's libinih exposes its compile-time switches as variables: long lines, no inline comments. */
	ini_use_stack = false;
	ini_allow_realloc = true;
	ini_max_line = max_line;
	f->max_line = max_line;
	ini_allow_inline_comments = false;
	ini_stop_on_first_error = true;
	return ini_parse_stream(read_line, f, handler, user);
}

void
inifile_long_line_msg(const struct inifile *f, char *buf, size_t len)
{
	snprintf(buf, len, "the line is longer than %d bytes", f->max_line - 1);
}

void
inifile_close(struct inifile *f)
{
	if (f->fp)
		fclose(f->fp);
	f->fp = NULL;
}
