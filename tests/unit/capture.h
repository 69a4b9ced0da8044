/* capture.h: what a call writes on stderr, for the unit tests. Include it after <cmocka.h>. */
#ifndef OUTREACH_TESTS_CAPTURE_H
#define OUTREACH_TESTS_CAPTURE_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Runs fn(arg) with stderr sent to a temporary file, then puts what it wrote in buf (len bytes with
 * the NUL, cut to fit) and returns its length. Fails the test if the output holds a NUL. */
static size_t
capture_stderr(void (*fn)(void *), void *arg, char *buf, size_t len)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);

	assert_non_null(f);
	assert_true(saved >= 0);
	assert_true(len > 0);
	fflush(stderr);
	assert_int_equal(dup2(fileno(f), STDERR_FILENO), STDERR_FILENO);
	fn(arg);
	fflush(stderr);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	rewind(f);
	size_t n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	assert_int_equal(strlen(buf), n);
	return n;
}

#endif
