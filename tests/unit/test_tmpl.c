/* test_tmpl: Mustache templates as staff write them for emails: values, sections, layout, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/tmpl.h"

/* Renders text with the JSON context in mode and compares with want. */
static void
expect_mode(const char *text, const char *json, enum tmpl_escape mode, const char *want)
{
	char err[256] = "";
	json_error_t jerr;
	json_t *ctx = json_loads(json, 0, &jerr);
	struct tmpl *t;
	char *out;

	if (ctx == NULL)
		fail_msg("bad test JSON: %s", jerr.text);
	t = tmpl_parse(text, "t.mustache", err, sizeof(err));
	if (t == NULL)
		fail_msg("tmpl_parse: %s", err);
	out = tmpl_render(t, ctx, mode);
	assert_non_null(out);
	if (strcmp(out, want) != 0)
		fail_msg("template %s\nrendered [%s]\nwanted   [%s]", text, out, want);
	free(out);
	tmpl_free(t);
	json_decref(ctx);
}

static void
expect(const char *text, const char *json, const char *want)
{
	expect_mode(text, json, TMPL_HTML, want);
}

/* Parses text as "name.mustache" and checks that it fails with exactly want. */
static void
expect_error(const char *text, const char *want)
{
	char err[256] = "";
	struct tmpl *t = tmpl_parse(text, "name.mustache", err, sizeof(err));

	if (t != NULL) {
		tmpl_free(t);
		fail_msg("template %s parsed; wanted the error %s", text, want);
	}
	assert_string_equal(err, want);
}

static void
test_variables(void **state)
{
	(void)state;
	expect("Hello, {{name}}!", "{\"name\": \"Ada\"}", "Hello, Ada!");
	expect("[{{ name }}]", "{\"name\": \"Ada\"}", "[Ada]");
	expect("[{{missing}}]", "{}", "[]");
	expect("[{{n}}]", "{\"n\": null}", "[]");
	expect("{{i}} {{neg}} {{r}} {{third}} {{big}}",
	       "{\"i\": 42, \"neg\": -7, \"r\": 2.5, \"third\": 0.1, \"big\": 9007199254740993}",
	       "42 -7 2.5 0.1 9007199254740993");
	expect("{{whole}} {{sum}}", "{\"whole\": 3.0, \"sum\": 0.30000000000000004}", "3 0.3");
	expect("{{t}} {{f}}", "{\"t\": true, \"f\": false}", "true false");
	expect("[{{obj}}][{{list}}]", "{\"obj\": {\"a\": 1}, \"list\": [1, 2]}", "[][]");
	expect("no tags at all\n", "{}", "no tags at all\n");
	expect("", "{}", "");
	expect("a } b }} c {", "{}", "a } b }} c {");
}

static void
test_null_context(void **state)
{
	struct tmpl *t = tmpl_parse("[{{a}}{{#b}}x{{/b}}{{^c}}none{{/c}}]", NULL, NULL, 0);
	char *out;

	(void)state;
	assert_non_null(t);
	assert_string_equal(tmpl_name(t), "template");
	out = tmpl_render(t, NULL, TMPL_HTML);
	assert_string_equal(out, "[none]");
	free(out);
	tmpl_free(t);
}

static void
test_html_escaping(void **state)
{
	(void)state;
	expect("<p>{{v}}</p>", "{\"v\": \"<script>alert(\\\"x\\\" + 'y')</script> & co\"}",
	       "<p>&lt;script&gt;alert(&quot;x&quot; + &#39;y&#39;)&lt;/script&gt; &amp; co</p>");
	expect("Dear {{name}},", "{\"name\": \"Dr. José Núñez\"}", "Dear Dr. José Núñez,");
	expect("{{a}}", "{\"a\": \"&&<<\"}", "&amp;&amp;&lt;&lt;");
	/* Only values are escaped, never the template's own text. */
	expect("<b>&amp;</b>{{a}}", "{\"a\": \"ok\"}", "<b>&amp;</b>ok");
}

static void
test_unescaped(void **state)
{
	(void)state;
	expect("{{{v}}}|{{&v}}|{{& v }}|{{{ v }}}", "{\"v\": \"<b>&'\\\"\"}",
	       "<b>&'\"|<b>&'\"|<b>&'\"|<b>&'\"");
	expect("{{{missing}}}", "{}", "");
	expect("{{{n}}}", "{\"n\": 5}", "5");
}

static void
test_text_mode(void **state)
{
	const char *json = "{\"v\": \"<a href='x'>Tom & \\\"Jerry\\\"</a>\", \"name\": \"Dr. José Núñez\"}";

	(void)state;
	expect_mode("{{v}} {{{v}}} {{&v}}", json, TMPL_TEXT,
	            "<a href='x'>Tom & \"Jerry\"</a> <a href='x'>Tom & \"Jerry\"</a> "
	            "<a href='x'>Tom & \"Jerry\"</a>");
	expect_mode("Dear {{name}},", json, TMPL_TEXT, "Dear Dr. José Núñez,");
}

/* One compiled template renders both parts of a multipart email. */
static void
test_same_template_both_modes(void **state)
{
	struct tmpl *t = tmpl_parse("Hi {{name}}", "both", NULL, 0);
	json_t *ctx = json_pack("{s:s}", "name", "A&B <Clinic>");
	char *html, *text;

	(void)state;
	assert_non_null(t);
	html = tmpl_render(t, ctx, TMPL_HTML);
	text = tmpl_render(t, ctx, TMPL_TEXT);
	assert_string_equal(html, "Hi A&amp;B &lt;Clinic&gt;");
	assert_string_equal(text, "Hi A&B <Clinic>");
	free(html);
	free(text);
	tmpl_free(t);
	json_decref(ctx);
}

static void
test_dotted_names(void **state)
{
	const char *json = "{\"a\": {\"b\": {\"c\": \"deep\"}, \"s\": \"str\"}, \"b\": {\"c\": \"outer\"}}";

	(void)state;
	expect("{{a.b.c}}", json, "deep");
	expect("{{a.s}}", json, "str");
	expect("[{{a.x.c}}]", json, "[]");
	expect("[{{a.s.c}}]", json, "[]"); /* through a string */
	expect("[{{z.b.c}}]", json, "[]"); /* first part missing */
	expect("{{#a.b}}{{c}}{{/a.b}}", json, "deep");
	/* The first part is found in the innermost context that has it; the rest only inside that. */
	expect("{{#a}}[{{b.c}}]{{/a}}", json, "[deep]");
	expect("{{#a.b}}[{{b.c}}]{{/a.b}}", json, "[outer]");
	expect("{{#a}}[{{b.c}}]{{/a}}", "{\"a\": {\"b\": {}}, \"b\": {\"c\": \"outer\"}}", "[]");
	expect("{{#a}}{{#b}}[{{s}}]{{/b}}{{/a}}", json, "[str]");
}

static void
test_context_stack(void **state)
{
	const char *json = "{\"practice\": \"Main St Clinic\", \"sender\": \"Pat\","
	                   " \"doctor\": {\"name\": \"Dr. Lee\", \"sender\": \"Sam\"},"
	                   " \"patients\": [{\"name\": \"A\"}, {\"name\": \"B\", \"practice\": \"Other\"}]}";

	(void)state;
	expect("{{#doctor}}{{name}} at {{practice}}, from {{sender}}{{/doctor}}", json,
	       "Dr. Lee at Main St Clinic, from Sam");
	expect("{{#patients}}{{name}}@{{practice}};{{/patients}}", json, "A@Main St Clinic;B@Other;");
	expect("{{#doctor}}{{#patients}}{{name}}/{{sender}} {{/patients}}{{/doctor}}", json, "A/Sam B/Sam ");
	/* A key present with null hides the outer one. */
	expect("{{#inner}}[{{x}}]{{/inner}}", "{\"x\": \"outer\", \"inner\": {\"x\": null}}", "[]");
}

static void
test_list_sections(void **state)
{
	(void)state;
	expect("{{#items}}<li>{{title}} ({{n}})</li>{{/items}}",
	       "{\"items\": [{\"title\": \"One\", \"n\": 1}, {\"title\": \"Two\", \"n\": 2}]}",
	       "<li>One (1)</li><li>Two (2)</li>");
	expect("{{#l}}[{{.}}]{{/l}}", "{\"l\": [\"a\", 2, 1.5, true, \"<x>\"]}",
	       "[a][2][1.5][true][&lt;x&gt;]");
	expect("{{#l}}({{{.}}}){{/l}}", "{\"l\": [\"<x>\"]}", "(<x>)");
	expect("{{#l}}x{{/l}}", "{\"l\": []}", "");
	expect("{{#outer}}{{#.}}{{.}}{{/.}};{{/outer}}", "{\"outer\": [[1, 2], [3]]}", "12;3;");
	expect("{{#a}}{{#b}}{{a1}}{{b1}} {{/b}}{{/a}}",
	       "{\"a\": [{\"a1\": \"x\", \"b\": [{\"b1\": 1}, {\"b1\": 2}]}, {\"a1\": \"y\", \"b\": "
	       "[{\"b1\": 3}]}]}",
	       "x1 x2 y3 ");
	/* Nothing after the section depends on how many times it ran. */
	expect("{{#l}}{{.}}{{/l}}|{{after}}", "{\"l\": [1, 2, 3], \"after\": \"end\"}", "123|end");
}

static void
test_sections_truthiness(void **state)
{
	(void)state;
	expect("[{{#b}}yes{{/b}}]", "{\"b\": true}", "[yes]");
	expect("[{{#b}}yes{{/b}}]", "{\"b\": false}", "[]");
	expect("[{{#b}}yes{{/b}}]", "{\"b\": null}", "[]");
	expect("[{{#b}}yes{{/b}}]", "{}", "[]");
	/* Other scalars count as true and become the context, */
	expect("[{{#b}}{{.}}{{/b}}]", "{\"b\": 7}", "[7]");
	expect("[{{#b}}{{.}}{{/b}}]", "{\"b\": \"0\"}", "[0]");
	expect("[{{#b}}yes{{/b}}][{{^b}}no{{/b}}]", "{\"b\": \"\"}", "[][no]"); /* but an empty string is false, */
	/* and so is the number 0 (integer or real); any other number is true */
	expect("[{{#n}}yes{{/n}}][{{^n}}no{{/n}}]", "{\"n\": 0}", "[][no]");
	expect("[{{#n}}yes{{/n}}][{{^n}}no{{/n}}]", "{\"n\": 0.0}", "[][no]");
	expect("[{{#n}}{{n}}{{/n}}][{{^n}}no{{/n}}]", "{\"n\": 1}", "[1][]");
	expect("[{{#n}}yes{{/n}}][{{^n}}no{{/n}}]", "{\"n\": -0.5}", "[yes][]");
	expect("[{{#b}}<{{.}}>{{/b}}]", "{\"b\": \"t&t\"}", "[<t&amp;t>]");
	expect("{{#b}}[{{.}}]{{/b}}", "{\"b\": true}", "[true]");
}

static void
test_object_sections(void **state)
{
	(void)state;
	expect("{{#doc}}{{first}} {{last}}{{/doc}}", "{\"doc\": {\"first\": \"Ana\", \"last\": \"Ruiz\"}}",
	       "Ana Ruiz");
	expect("[{{#doc}}x{{/doc}}]", "{\"doc\": {}}", "[x]");
	expect("{{#doc}}{{#addr}}{{city}}{{/addr}}{{/doc}}", "{\"doc\": {\"addr\": {\"city\": \"Reno\"}}}",
	       "Reno");
}

static void
test_inverted_sections(void **state)
{
	(void)state;
	expect("{{^l}}no items{{/l}}", "{\"l\": []}", "no items");
	expect("{{^b}}off{{/b}}", "{\"b\": false}", "off");
	expect("{{^b}}off{{/b}}", "{\"b\": null}", "off");
	expect("{{^missing}}absent{{/missing}}", "{}", "absent");
	expect("[{{^l}}no items{{/l}}]", "{\"l\": [1]}", "[]");
	expect("[{{^b}}off{{/b}}]", "{\"b\": true}", "[]");
	expect("[{{^o}}x{{/o}}]", "{\"o\": {}}", "[]");
	expect("{{#l}}{{.}}{{/l}}{{^l}}none{{/l}}", "{\"l\": [1, 2]}", "12");
	expect("{{#l}}{{.}}{{/l}}{{^l}}none{{/l}}", "{\"l\": []}", "none");
	expect("{{^a}}{{^b}}{{c}}{{/b}}{{/a}}", "{\"c\": \"inner\"}", "inner");
}

static void
test_comments(void **state)
{
	(void)state;
	expect("a{{! a comment }}b", "{}", "ab");
	expect("a{{!}}b", "{}", "ab");
	expect("a{{! {{not}} a tag }}b", "{}", "a a tag }}b");
	expect("a{{!\nspans\nlines\n}}b", "{}", "ab");
	expect("a{{! <b> & }}b{{v}}", "{\"v\": 1}", "ab1");
}

static void
test_standalone_lines(void **state)
{
	const char *text = "Dear {{name}},\n"
	                   "\n"
	                   "{{! who to contact }}\n"
	                   "{{#patients}}\n"
	                   "  {{#urgent}}\n"
	                   "  * URGENT: {{name}}\n"
	                   "  {{/urgent}}\n"
	                   "  {{^urgent}}\n"
	                   "  * {{name}}\n"
	                   "  {{/urgent}}\n"
	                   "{{/patients}}\n"
	                   "{{^patients}}\n"
	                   "No referrals this week.\n"
	                   "{{/patients}}\n"
	                   "Thanks,\n"
	                   "\t{{#sig}}\t\n"
	                   "{{sig}}\n"
	                   "\t{{/sig}}";
	const char *json = "{\"name\": \"Dr. Lee\", \"sig\": \"Pat\","
	                   " \"patients\": [{\"name\": \"A\", \"urgent\": true}, {\"name\": \"B\"}]}";

	(void)state;
	expect(text, json,
	       "Dear Dr. Lee,\n"
	       "\n"
	       "  * URGENT: A\n"
	       "  * B\n"
	       "Thanks,\n"
	       "Pat\n");
	expect(text, "{\"name\": \"Dr. Lee\", \"patients\": []}",
	       "Dear Dr. Lee,\n"
	       "\n"
	       "No referrals this week.\n"
	       "Thanks,\n");
	/* CRLF line ends go with the line. */
	expect("|\r\n{{#b}}\r\n{{/b}}\r\n|", "{\"b\": true}", "|\r\n|");
	/* At the very start and the very end, and a multi-line comment. */
	expect("{{#b}}\nx\n{{/b}}", "{\"b\": true}", "x\n");
	expect("a\n  {{!\n  note\n  }}  \nb\n", "{}", "a\nb\n");
	/* Not alone on the line: nothing is removed. */
	expect(" {{#b}}x{{/b}} \n", "{\"b\": true}", " x \n");
	expect("a {{#b}}\nx\n{{/b}} c\n", "{\"b\": true}", "a \nx\n c\n");
	expect("{{#b}}{{/b}}\n", "{\"b\": true}", "\n");
	/* Variables are never standalone. */
	expect("  {{v}}  \n", "{\"v\": \"\"}", "    \n");
	expect("a\n{{v}}\nb", "{}", "a\n\nb");
}

static void
test_syntax_errors(void **state)
{
	(void)state;
	expect_error("line one\nHello {{name", "name.mustache:2: unclosed tag: '{{' without a matching '}}'");
	expect_error("Hello {{name and {{other}}",
	             "name.mustache:1: unclosed tag: '{{' without a matching '}}'");
	expect_error("\n\n{{{name}}", "name.mustache:3: '{{{' is closed by '}}' instead of '}}}'");
	expect_error("{{{name", "name.mustache:1: unclosed tag: '{{{' without a matching '}}}'");
	expect_error("a\n{{! note", "name.mustache:2: unclosed comment: '{{' without a matching '}}'");
	expect_error("x\n{{#a}}\ny\n", "name.mustache:2: unclosed section {{#a}}: no {{/a}} before the end");
	expect_error("{{#a}}{{^b}}{{/b}}\n{{^c}}",
	             "name.mustache:2: unclosed section {{^c}}: no {{/c}} before the end");
	expect_error("{{#a}}\n{{#b}}\n{{/a}}\n",
	             "name.mustache:3: {{/a}} does not match {{#b}} opened on line 2");
	expect_error("{{^a}}\n\n{{/b}}", "name.mustache:3: {{/b}} does not match {{^a}} opened on line 1");
	expect_error("a\nb\n{{/b}}", "name.mustache:3: {{/b}} closes a section that was never opened");
	expect_error("{{#a}}{{/a}}{{/a}}", "name.mustache:1: {{/a}} closes a section that was never opened");
	expect_error("one\n{{}}", "name.mustache:2: empty tag name");
	expect_error("{{  }}", "name.mustache:1: empty tag name");
	expect_error("{{#}}", "name.mustache:1: empty tag name");
	expect_error("{{/ }}", "name.mustache:1: empty tag name");
	expect_error("{{{}}}", "name.mustache:1: empty tag name");
	expect_error("{{&}}", "name.mustache:1: empty tag name");
	expect_error("{{first name}}", "name.mustache:1: bad tag name 'first name'");
	expect_error("{{a..b}}", "name.mustache:1: bad tag name 'a..b'");
	expect_error("{{a.}}", "name.mustache:1: bad tag name 'a.'");
	expect_error("{{.a}}", "name.mustache:1: bad tag name '.a'");
	expect_error("{{ #a }}", "name.mustache:1: bad tag name '#a'");
	expect_error("{{>footer}}", "name.mustache:1: partials ({{>name}}) are not supported");
	expect_error("{{=<% %>=}}", "name.mustache:1: changing delimiters ({{=...=}}) is not supported");
}

/* What outreachctl and the campaign worker refuse in an HTML template: the first tag that puts a
 * value in unescaped, by line, whatever section it sits in. */
static void
test_check_escaped(void **state)
{
	static const struct {
		const char *text;
		unsigned long line;
	} cases[] = {
		{"<p>{{a}} {{#s}}{{b.c}}{{/s}} {{^s}}{{.}}{{/s}} {{! {{{x}}} }}</p>", 0},
		{"<p>{{{a}}}</p>", 1},
		{"<p>{{a}}</p>\n<p>{{& b}}</p>\n{{{c}}}", 2},
		{"{{#l}}\n\n  <li>{{{.}}}</li>\n{{/l}}", 3},
	};
	char err[160];

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct tmpl *t = tmpl_parse(cases[i].text, "page.html", err, sizeof(err));
		assert_non_null(t);
		assert_int_equal(tmpl_raw_line(t), cases[i].line);
		strcpy(err, "untouched");
		if (cases[i].line == 0) {
			assert_int_equal(tmpl_check_escaped(t, err, sizeof(err)), 0);
			assert_string_equal(err, "untouched");
		} else {
			char want[160];
			snprintf(want, sizeof(want),
			         "page.html:%lu: {{{...}}} or {{&...}} would put a value into the HTML "
			         "unescaped; write {{...}}",
			         cases[i].line);
			assert_int_equal(tmpl_check_escaped(t, err, sizeof(err)), -1);
			assert_string_equal(err, want);
			assert_int_equal(tmpl_check_escaped(t, NULL, 0), -1);
		}
		tmpl_free(t);
	}
}

static void
test_error_name_default(void **state)
{
	char err[128];

	(void)state;
	assert_null(tmpl_parse("{{#a}}", NULL, err, sizeof(err)));
	assert_string_equal(err, "template:1: unclosed section {{#a}}: no {{/a}} before the end");
	/* No buffer for the message is fine too. */
	assert_null(tmpl_parse("{{#a}}", NULL, NULL, 0));
	/* A short buffer gets a truncated, terminated message. */
	assert_null(tmpl_parse("{{#a}}", "x", err, 8));
	assert_string_equal(err, "x:1: un");
}

static void
test_depth_limit(void **state)
{
	char err[256];
	size_t n = TMPL_MAX_DEPTH + 1, cap = n * 16 + 16, len = 0;
	char *text = malloc(cap);
	struct tmpl *t;
	char *out;
	json_t *ctx = json_pack("{s:b}", "a", 1);

	(void)state;
	assert_non_null(text);
	/* Exactly the limit parses and renders. */
	for (size_t i = 0; i < TMPL_MAX_DEPTH; i++)
		len += (size_t)snprintf(text + len, cap - len, "{{#a}}");
	len += (size_t)snprintf(text + len, cap - len, "x");
	for (size_t i = 0; i < TMPL_MAX_DEPTH; i++)
		len += (size_t)snprintf(text + len, cap - len, "{{/a}}");
	t = tmpl_parse(text, "deep", err, sizeof(err));
	if (t == NULL)
		fail_msg("%s", err);
	out = tmpl_render(t, ctx, TMPL_HTML);
	assert_string_equal(out, "x");
	free(out);
	tmpl_free(t);

	/* One more is an error on the line of the section too many. */
	len = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len, "{{#a}}\n");
	assert_null(tmpl_parse(text, "deep", err, sizeof(err)));
	assert_string_equal(err, "deep:65: sections nested more than 64 deep");
	free(text);
	json_decref(ctx);
}

/* A long list and a long template render in time proportional to their size. */
static void
test_large(void **state)
{
	json_t *ctx = json_object(), *list = json_array();
	struct tmpl *t;
	char *out;
	size_t want = 0;

	(void)state;
	for (int i = 0; i < 100000; i++) {
		json_array_append_new(list, json_pack("{s:i}", "n", i));
		want += (size_t)snprintf(NULL, 0, "%d,", i);
	}
	json_object_set_new(ctx, "l", list);
	t = tmpl_parse("{{#l}}{{n}},{{/l}}", "big", NULL, 0);
	assert_non_null(t);
	out = tmpl_render(t, ctx, TMPL_HTML);
	assert_int_equal(strlen(out), want);
	assert_memory_equal(out, "0,1,2,", 6);
	free(out);
	tmpl_free(t);
	json_decref(ctx);
}

static void
test_load_file(void **state)
{
	char dir[] = "/tmp/test_tmpl.XXXXXX", path[64], err[256];
	const char *text = "Dear {{name}},\n{{#items}}\n- {{.}}\n{{/items}}\n";
	struct tmpl *t;
	json_t *ctx = json_pack("{s:s, s:[s,s]}", "name", "Dr. José Núñez", "items", "a", "b<c");
	char *out;
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/welcome.html", dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);

	t = tmpl_load(path, err, sizeof(err));
	if (t == NULL)
		fail_msg("tmpl_load: %s", err);
	assert_string_equal(tmpl_name(t), path);
	out = tmpl_render(t, ctx, TMPL_HTML);
	assert_string_equal(out, "Dear Dr. José Núñez,\n- a\n- b&lt;c\n");
	free(out);
	tmpl_free(t);

	/* A syntax error names the file and the line. */
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("ok\n{{#a}}\n{{/b}}\n", fp);
	fclose(fp);
	assert_null(tmpl_load(path, err, sizeof(err)));
	char want[160];
	snprintf(want, sizeof(want), "%s:3: {{/b}} does not match {{#a}} opened on line 2", path);
	assert_string_equal(err, want);

	/* A NUL byte is refused rather than silently cutting the template short. */
	fp = fopen(path, "w");
	assert_non_null(fp);
	fwrite("a\0b", 1, 3, fp);
	fclose(fp);
	assert_null(tmpl_load(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: contains a NUL byte; a template must be text", path);
	assert_string_equal(err, want);
	unlink(path);

	/* A missing file names the file. */
	snprintf(path, sizeof(path), "%s/missing.txt", dir);
	assert_null(tmpl_load(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: cannot read the template: No such file or directory", path);
	assert_string_equal(err, want);

	assert_int_equal(rmdir(dir), 0);
	json_decref(ctx);
}

static void
test_free_null(void **state)
{
	(void)state;
	tmpl_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_variables),       cmocka_unit_test(test_null_context),
		cmocka_unit_test(test_html_escaping),   cmocka_unit_test(test_unescaped),
		cmocka_unit_test(test_text_mode),       cmocka_unit_test(test_same_template_both_modes),
		cmocka_unit_test(test_dotted_names),    cmocka_unit_test(test_context_stack),
		cmocka_unit_test(test_list_sections),   cmocka_unit_test(test_sections_truthiness),
		cmocka_unit_test(test_object_sections), cmocka_unit_test(test_inverted_sections),
		cmocka_unit_test(test_comments),        cmocka_unit_test(test_standalone_lines),
		cmocka_unit_test(test_syntax_errors),   cmocka_unit_test(test_error_name_default),
		cmocka_unit_test(test_depth_limit),     cmocka_unit_test(test_large),
		cmocka_unit_test(test_load_file),       cmocka_unit_test(test_free_null),
		cmocka_unit_test(test_check_escaped),
	};

	return cmocka_run_group_tests_name("tmpl", tests, NULL, NULL);
}
