/* SPDX-License-Identifier: MIT */
/* Unit tests for the configuration loader: every rule, with the exact line reported.
 * Run from the repository root (loads etc/dtrotated.conf). */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <syslog.h>

#include "dtrotated-config.h"
#include "dtrotated-util.h"

/* ---- harness ------------------------------------------------------------------ */

#define MAX_MESSAGES 64

typedef struct Reported {
        int prio;
        char *text;
} Reported;

static Reported reported[MAX_MESSAGES];
static size_t n_reported;
static char cur_path[64];

static void collect(int prio, const char *msg, void *userdata) {
        size_t *calls = userdata;

        (*calls)++;
        assert_true(n_reported < MAX_MESSAGES);
        reported[n_reported].prio = prio;
        reported[n_reported].text = strdup(msg);
        assert_non_null(reported[n_reported].text);
        n_reported++;
}

static void clear_reported(void) {
        for (size_t i = 0; i < n_reported; i++)
                free(reported[i].text);
        n_reported = 0;
}

static void dump_reported(void) {
        print_message("reported %zu message(s):\n", n_reported);
        for (size_t i = 0; i < n_reported; i++)
                print_message("  [%s] %s\n", reported[i].prio == LOG_ERR ? "ERR" : "WARN",
                              reported[i].text);
}

static int load_path(const char *path, Config **ret) {
        size_t calls = 0;
        int r;

        clear_reported();
        r = config_load(path, ret, collect, &calls);
        assert_int_equal(calls, n_reported);
        return r;
}

/* Writes text to a temporary file and loads it; the file is removed again. */
static int load_text(const char *text, Config **ret) {
        _cleanup_close_ int fd = -1;
        size_t len = strlen(text);
        int r;

        snprintf(cur_path, sizeof(cur_path), "/tmp/test-config-XXXXXX");
        fd = mkstemp(cur_path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, len), (ssize_t) len);

        r = load_path(cur_path, ret);
        unlink(cur_path);
        return r;
}

static size_t count_prio(int prio) {
        size_t n = 0;
        for (size_t i = 0; i < n_reported; i++)
                n += reported[i].prio == prio;
        return n;
}

/* Asserts that a message "<cur_path>:LINE: ..." with that priority contains substr
 * (line 0: "<cur_path>: ..."). */
static void expect_msg(int prio, int line, const char *substr) {
        char prefix[128];

        if (line > 0)
                snprintf(prefix, sizeof(prefix), "%s:%d: ", cur_path, line);
        else
                snprintf(prefix, sizeof(prefix), "%s: ", cur_path);
        for (size_t i = 0; i < n_reported; i++)
                if (reported[i].prio == prio &&
                    strncmp(reported[i].text, prefix, strlen(prefix)) == 0 &&
                    strstr(reported[i].text + strlen(prefix), substr))
                        return;
        dump_reported();
        fail_msg("no %s message \"%s...%s\"", prio == LOG_ERR ? "error" : "warning",
                 prefix, substr);
}

#define expect_error(line, s) expect_msg(LOG_ERR, (line), (s))
#define expect_warning(line, s) expect_msg(LOG_WARNING, (line), (s))

static void expect_counts(size_t errors, size_t warnings) {
        if (count_prio(LOG_ERR) != errors || count_prio(LOG_WARNING) != warnings) {
                dump_reported();
                fail_msg("expected %zu error(s) and %zu warning(s), got %zu and %zu", errors,
                         warnings, count_prio(LOG_ERR), count_prio(LOG_WARNING));
        }
}

static void expect_no_substring(const char *substr) {
        for (size_t i = 0; i < n_reported; i++)
                if (strstr(reported[i].text, substr)) {
                        dump_reported();
                        fail_msg("unexpected message containing \"%s\"", substr);
                }
}

/* Expects the text to be rejected with exactly `errors` errors. */
static void load_invalid(const char *text, size_t errors) {
        Config *c = (Config *) 0x1;
        int r = load_text(text, &c);

        if (r != -EINVAL) {
                dump_reported();
                fail_msg("expected -EINVAL, got %d", r);
        }
        assert_ptr_equal(c, (Config *) 0x1); /* untouched on failure */
        expect_counts(errors, count_prio(LOG_WARNING));
}

/* Expects the text to load; returns the config. */
static Config *load_valid(const char *text) {
        Config *c = NULL;
        int r = load_text(text, &c);

        if (r != 0) {
                dump_reported();
                fail_msg("expected success, got %d", r);
        }
        assert_non_null(c);
        return c;
}

static int teardown(void **state) {
        clear_reported();
        return 0;
}

/* Line 1 of most test files: one valid environment. */
#define ENV_PROD                                                                        \
        "environments = ( { name = \"prod\"; url = \"https://abc12345.live.dynatrace.com\"; " \
        "management_token_file = \"/etc/dtrotated/prod.token\"; } );\n"

/* A valid job on one line, with more keys appended. */
#define JOB(name, file, extra)                                                         \
        "{ name = \"" name "\"; environment = \"prod\"; file = \"" file "\"; "         \
        "rotate_every = \"30d\"; " extra " }"

/* ENV_PROD, then a tokens list with one job whose extra keys are on line 3. */
#define ONE_JOB(extra)                                                                 \
        ENV_PROD                                                   /* 1 */             \
        "tokens = (\n"                                             /* 2 */             \
        "  " JOB("a", "/etc/a.token", extra) "\n"                  /* 3 */             \
        ");\n"

/* ---- valid files -------------------------------------------------------------- */

static void test_example_file(void **state) {
        _cleanup_(config_freep) Config *c = NULL;
        int r = load_path("etc/dtrotated.conf", &c);

        if (r != 0) {
                dump_reported();
                fail_msg("etc/dtrotated.conf: %d (run the tests from the repository root)", r);
        }
        expect_counts(0, 0);
        assert_true(c->n_envs >= 1);
        assert_true(c->n_jobs >= 2);
        for (size_t i = 0; i < c->n_jobs; i++)
                assert_non_null(c->jobs[i].env);
}

static void test_full(void **state) {
        char ca[] = "/tmp/test-config-ca-XXXXXX", text[4096];
        _cleanup_close_ int fd = mkstemp(ca);
        _cleanup_(config_freep) Config *c = NULL;
        const EnvConfig *e;
        const JobConfig *j;

        assert_true(fd >= 0);
        snprintf(text, sizeof(text),
                 "state_directory = \"/var/lib/dtrotated-test//\";\n"
                 "retry_max_delay = \"30m\";\n"
                 "environments = (\n"
                 "  { name = \"prod\"; url = \"https://abc12345.live.dynatrace.com/\"; api = \"v2\";\n"
                 "    management_token_file = \"/etc/dtrotated/prod-admin.token\";\n"
                 "    ca_file = \"%s\"; request_timeout = \"45s\"; max_parallel = 8; },\n"
                 "  { name = \"dev.local_1\"; url = \"http://127.0.0.1:8080/e/abc//\"; api = \"v1\";\n"
                 "    management_token_credential = \"dev-admin\"; }\n"
                 ");\n"
                 "tokens = (\n"
                 "  { name = \"agent-config@host:1\"; environment = \"prod\";\n"
                 "    file = \"/etc/myapp//dynatrace.token\";\n"
                 "    rotate_every = \"30d\"; grace_period = \"3d\"; revoke_delay = \"10m\";\n"
                 "    renew_before = \"2w\"; expires_in = \"60d\";\n"
                 "    scopes = [ \"ReadConfig\", \"apiTokens.read\" ]; token_name = \"myapp agent\";\n"
                 "    mode = \"0640\"; owner = \"root\"; group = \"0\";\n"
                 "    on_rotate = \"/bin/true\"; },\n"
                 "  { name = \"b\"; environment = \"dev.local_1\"; file = \"/etc/b.token\";\n"
                 "    rotate_every = \"1h\"; renew_before = \"0s\"; expires_in = \"never\";\n"
                 "    scopes = ( \"DataExport\" ); }\n"
                 ");\n", ca);

        c = load_valid(text);
        unlink(ca);
        expect_counts(0, 0);

        assert_string_equal(c->state_directory, "/var/lib/dtrotated-test");
        assert_int_equal(c->retry_max_delay, 30 * USEC_PER_MINUTE);
        assert_int_equal(c->n_envs, 2);
        assert_int_equal(c->n_jobs, 2);

        e = config_find_env(c, "prod");
        assert_ptr_equal(e, &c->envs[0]);
        assert_string_equal(e->url, "https://abc12345.live.dynatrace.com");
        assert_int_equal(e->api, API_V2);
        assert_string_equal(e->management_token_file, "/etc/dtrotated/prod-admin.token");
        assert_null(e->management_token_credential);
        assert_string_equal(e->ca_file, ca);
        assert_int_equal(e->request_timeout, 45 * USEC_PER_SEC);
        assert_int_equal(e->max_parallel, 8);
        assert_int_equal(e->line, 4);

        e = config_find_env(c, "dev.local_1");
        assert_non_null(e);
        assert_string_equal(e->url, "http://127.0.0.1:8080/e/abc");
        assert_int_equal(e->api, API_V1);
        assert_null(e->management_token_file);
        assert_string_equal(e->management_token_credential, "dev-admin");
        assert_null(e->ca_file);
        assert_int_equal(e->line, 7);

        j = config_find_job(c, "agent-config@host:1");
        assert_ptr_equal(j, &c->jobs[0]);
        assert_string_equal(j->environment, "prod");
        assert_ptr_equal(j->env, &c->envs[0]);
        assert_string_equal(j->file, "/etc/myapp/dynatrace.token");
        assert_int_equal(j->rotate_every, 30 * USEC_PER_DAY);
        assert_int_equal(j->grace_period, 3 * USEC_PER_DAY);
        assert_int_equal(j->revoke_delay, 10 * USEC_PER_MINUTE);
        assert_int_equal(j->renew_before, 14 * USEC_PER_DAY);
        assert_int_equal(j->expires_in, 60 * USEC_PER_DAY);
        assert_int_equal(strv_length(j->scopes), 2);
        assert_string_equal(j->scopes[0], "ReadConfig");
        assert_string_equal(j->scopes[1], "apiTokens.read");
        assert_string_equal(j->token_name, "myapp agent");
        assert_int_equal(j->mode, 0640);
        assert_int_equal(j->uid, 0);
        assert_int_equal(j->gid, 0);
        assert_string_equal(j->on_rotate, "/bin/true");
        assert_int_equal(j->line, 11);
        assert_int_equal(j->file_line, 12);
        assert_string_equal(j->file_source, cur_path);

        j = config_find_job(c, "b");
        assert_ptr_equal(j->env, &c->envs[1]);
        assert_int_equal(j->expires_in, USEC_INFINITY);
        assert_int_equal(j->renew_before, 0);
        assert_int_equal(strv_length(j->scopes), 1);
        assert_string_equal(j->scopes[0], "DataExport");
        assert_int_equal(j->line, 18);

        assert_null(config_find_job(c, "nope"));
        assert_null(config_find_env(c, "nope"));
        assert_null(config_find_job(NULL, "b"));
}

static void test_defaults(void **state) {
        _cleanup_(config_freep) Config *c = NULL;
        const char *text = ONE_JOB("");
        const JobConfig *j;
        const EnvConfig *e;

        unsetenv("STATE_DIRECTORY");
        c = load_valid(text);
        expect_counts(0, 0);

        assert_string_equal(c->path, cur_path);
        assert_string_equal(c->state_directory, DEFAULT_STATE_DIRECTORY);
        assert_int_equal(c->retry_max_delay, USEC_PER_HOUR);

        e = &c->envs[0];
        assert_int_equal(e->api, API_V2);     /* v1 is deprecated */
        assert_int_equal(e->management_token_file_line, 1);
        assert_string_equal(e->management_token_file_source, cur_path);
        assert_int_equal(e->request_timeout, 30 * USEC_PER_SEC);
        assert_int_equal(e->max_parallel, 4);
        assert_null(e->ca_file);
        assert_int_equal(e->line, 1);

        j = &c->jobs[0];
        assert_ptr_equal(j->env, e);
        assert_int_equal(j->grace_period, 7 * USEC_PER_DAY);
        assert_int_equal(j->revoke_delay, 0);
        assert_int_equal(j->renew_before, 7 * USEC_PER_DAY);  /* 60d / 3, at most 7d */
        assert_int_equal(j->expires_in, 60 * USEC_PER_DAY);   /* 2 x rotate_every */
        assert_null(j->scopes);
        assert_null(j->token_name);
        assert_int_equal(j->mode, JOB_MODE_KEEP);
        assert_int_equal(j->uid, (uid_t) -1);
        assert_int_equal(j->gid, (gid_t) -1);
        assert_null(j->on_rotate);
        assert_int_equal(j->line, 3);
        c = config_free(c);

        /* $STATE_DIRECTORY: the first of possibly several entries. */
        setenv("STATE_DIRECTORY", "/var/lib/dtrotated-a:/var/lib/other", 1);
        c = load_valid(text);
        assert_string_equal(c->state_directory, "/var/lib/dtrotated-a");
        unsetenv("STATE_DIRECTORY");
}

static void test_control_socket(void **state) {
        _cleanup_(config_freep) Config *c = NULL;

        /* Default: /run/dtrotated/control, root only. */
        c = load_valid(ONE_JOB(""));
        assert_string_equal(c->control_socket, DEFAULT_CONTROL_SOCKET);
        assert_null(c->control_group);
        assert_int_equal(c->control_gid, (gid_t) -1);
        c = config_free(c);

        /* "" disables it; a group by name or number. */
        c = load_valid(ONE_JOB("") "control_socket = \"\";\ncontrol_group = \"0\";\n");
        assert_null(c->control_socket);
        assert_string_equal(c->control_group, "0");
        assert_int_equal(c->control_gid, 0);
        c = config_free(c);
        c = load_valid(ONE_JOB("") "control_socket = \"/run/x//ctl\";\n");
        assert_string_equal(c->control_socket, "/run/x/ctl");
        c = config_free(c);

        load_invalid(ONE_JOB("") "control_socket = \"run/ctl\";\n", 1);
        expect_error(5, "control_socket: 'run/ctl' is not an absolute path");
        load_invalid(ONE_JOB("") "control_socket = \"/run/"
                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                     "\";\n", 1);
        expect_error(5, "is too long for a socket path (at most 107 bytes)");
        load_invalid(ONE_JOB("") "control_socket = 1;\n", 1);
        expect_error(5, "control_socket must be a string");
        load_invalid(ONE_JOB("") "control_group = \"no-such-group-here\";\n", 1);
        expect_error(5, "control_group: unknown group 'no-such-group-here'");
        load_invalid(ONE_JOB("") "control_group = \"\";\n", 1);
        expect_error(5, "control_group must not be empty");
}

/* ---- reading and syntax ------------------------------------------------------- */

static void test_cannot_read(void **state) {
        Config *c = NULL;

        assert_int_equal(load_path("/nonexistent/dtrotated.conf", &c), -ENOENT);
        assert_null(c);
        assert_int_equal(n_reported, 1);
        assert_int_equal(reported[0].prio, LOG_ERR);
        assert_string_equal(reported[0].text,
                            "/nonexistent/dtrotated.conf: cannot read: No such file or directory");

        assert_int_equal(load_path("/tmp", &c), -EISDIR);
        assert_int_equal(n_reported, 1);
        assert_string_equal(reported[0].text, "/tmp: cannot read: Is a directory");

        /* No callback: still fails, quietly. */
        assert_int_equal(config_load("/nonexistent/dtrotated.conf", &c, NULL, NULL), -ENOENT);
}

static void test_syntax_error(void **state) {
        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  { name = \"a\"; environment = ; }\n"            /* 3: no value */
                     ");\n", 1);
        expect_error(3, "syntax error");
        expect_counts(1, 0);   /* nothing else is checked */

        load_invalid("state_directory = \"/var/lib/x;\n", 1);   /* unterminated string */
        assert_int_equal(n_reported, 1);
        assert_true(strncmp(reported[0].text, cur_path, strlen(cur_path)) == 0);
}

static void test_include_of_a_directory(void **state) {
        /* libconfig 1.5 calls exit() when it cannot read an included directory (a SIGHUP
         * would kill the daemon): refused before libconfig opens it. Found by fuzz-config. */
        load_invalid("@include \"/tmp\"\n" ONE_JOB(""), 1);
        expect_error(1, "@include \"/tmp\": is a directory, not a regular file");
}

static void test_duplicate_setting(void **state) {
        /* libconfig itself rejects a key given twice in one group. */
        load_invalid(ONE_JOB("") "retry_max_delay = \"1h\";\nretry_max_delay = \"2h\";\n", 1);
        expect_error(6, "duplicate setting name");

        load_invalid(ENV_PROD
                     "tokens = ( { name = \"a\"; environment = \"prod\";\n"
                     "  file = \"/etc/a\"; rotate_every = \"30d\";\n"
                     "  rotate_every = \"1d\"; } );\n", 1);
        expect_error(4, "duplicate setting name");
}

/* ---- keys and types ------------------------------------------------------------ */

static void test_unknown_keys(void **state) {
        load_invalid("state_dir = \"/var/lib/x\";\n"                         /* 1 */
                     "environments = (\n"                                   /* 2 */
                     "  { name = \"prod\"; url = \"https://x.example.com\";\n"  /* 3 */
                     "    management_token_file = \"/etc/t\";\n"             /* 4 */
                     "    max_paralel = 2; colour = \"blue\"; } );\n"        /* 5 */
                     "tokens = ( { name = \"a\"; environment = \"prod\";\n"  /* 6 */
                     "  file = \"/etc/a\";\n"                                /* 7 */
                     "  rotate_evry = \"30d\";\n"                            /* 8 */
                     "  ca_file = \"/etc/ssl/x.pem\"; } );\n",              /* 9 */
                     5);
        expect_error(1, "unknown key 'state_dir' at the top level");
        expect_error(5, "unknown key 'max_paralel' in an environment, did you mean 'max_parallel'?");
        expect_error(5, "unknown key 'colour' in an environment");
        expect_error(8, "unknown key 'rotate_evry' in a token, did you mean 'rotate_every'?");
        expect_error(9, "unknown key 'ca_file' in a token: it belongs in an environment");
        /* The misspelt required key is not reported a second time as missing. */
        expect_no_substring("missing required key 'rotate_every'");
        expect_no_substring("did you mean 'state_directory'"); /* distance > 2 */

        /* A misspelt top-level list is reported once, not also as missing. */
        load_invalid(ENV_PROD "tokenz = ( " JOB("a", "/etc/a", "") " );\n", 1);
        expect_error(2, "unknown key 'tokenz' at the top level, did you mean 'tokens'?");
}

static void test_wrong_types(void **state) {
        load_invalid("retry_max_delay = 3600;\n"                              /* 1 */
                     "environments = (\n"                                     /* 2 */
                     "  { name = \"prod\"; url = 42;\n"                       /* 3 */
                     "    management_token_file = \"/etc/t\";\n"              /* 4 */
                     "    max_parallel = \"4\"; request_timeout = 30; } );\n" /* 5 */
                     "tokens = ( { name = \"a\"; environment = \"prod\";\n"   /* 6 */
                     "  file = \"/etc/a\"; rotate_every = 30;\n"              /* 7 */
                     "  mode = 0640;\n"                                       /* 8 */
                     "  scopes = \"ReadConfig\"; owner = 0;\n"                /* 9 */
                     "  token_name = true; grace_period = 1.5; } );\n",       /* 10 */
                     10);
        expect_error(1, "retry_max_delay must be a string such as \"30d\", not an integer");
        expect_error(3, "url must be a string, not an integer");
        expect_error(5, "max_parallel must be an integer, not a string");
        expect_error(5, "request_timeout must be a string such as \"30d\", not an integer");
        expect_error(7, "rotate_every must be a string such as \"30d\", not an integer");
        expect_error(8, "mode must be a string of octal digits such as \"0640\", not an integer");
        expect_error(9, "scopes must be an array of strings");
        expect_error(9, "owner must be a string");
        expect_error(10, "token_name must be a string, not a boolean");
        expect_error(10, "grace_period must be a string such as \"30d\", not a floating-point number");
}

static void test_lists_not_groups(void **state) {
        load_invalid("environments = { name = \"prod\"; };\n"
                     "tokens = \"all\";\n", 2);
        expect_error(1, "environments must be a list of groups");
        expect_error(2, "tokens must be a list of groups");
}

static void test_lists_not_groups_reports(void **state) {
        /* A non-group element is reported, and the valid groups are still checked. */
        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  \"a\",\n"                                     /* 3 */
                     "  " JOB("b", "/etc/b", "") ",\n"                /* 4 */
                     "  { name = \"c\"; environment = \"prod\"; file = \"/etc/c\"; rotate_every = \"0s\"; }\n" /* 5 */
                     ");\n", 2);
        expect_error(3, "tokens: element 1 must be a group { ... }, not a string");
        expect_error(5, "rotate_every: '0s' must be greater than zero");
}

static void test_no_envs_no_tokens(void **state) {
        load_invalid("retry_max_delay = \"1h\";\n", 2);
        expect_error(0, "no environments defined");
        expect_error(0, "no tokens to rotate");

        load_invalid("environments = ();\ntokens = ();\n", 2);
        expect_error(1, "no environments defined: the environments list is empty");
        expect_error(2, "no tokens to rotate: the tokens list is empty");

        /* Without environments, jobs do not each complain about theirs. */
        load_invalid("tokens = ( " JOB("a", "/etc/a", "") " );\n", 1);
        expect_no_substring("unknown environment");
}

static void test_missing_keys(void **state) {
        load_invalid("environments = (\n"                                    /* 1 */
                     "  { url = \"https://x.example.com\"; },\n"            /* 2 */
                     "  {\n"                                                /* 3 */
                     "    name = \"prod\";\n"                               /* 4 */
                     "    management_token_credential = \"admin\";\n"       /* 5 */
                     "  }\n"                                                /* 6 */
                     ");\n"                                                 /* 7 */
                     "tokens = (\n"                                         /* 8 */
                     "  { name = \"a\"; },\n"                               /* 9 */
                     "  { environment = \"prod\"; file = \"/etc/b\"; rotate_every = \"30d\"; }\n" /* 10 */
                     ");\n", 7);
        expect_error(2, "missing required key 'name' in environment #1");
        expect_error(2, "missing required key 'management_token_file' or "
                        "'management_token_credential' in environment #1");
        expect_error(3, "missing required key 'url' in environment 'prod'");
        expect_error(9, "missing required key 'environment' in token 'a'");
        expect_error(9, "missing required key 'file' in token 'a'");
        expect_error(9, "missing required key 'rotate_every' in token 'a'");
        expect_error(10, "missing required key 'name' in token #2");
}

/* ---- names and references ------------------------------------------------------ */

static void test_duplicate_names(void **state) {
        load_invalid("environments = (\n"                                                       /* 1 */
                     "  { name = \"prod\"; url = \"https://a.example.com\"; management_token_file = \"/etc/a\"; },\n" /* 2 */
                     "  { name = \"prod\"; url = \"https://b.example.com\"; management_token_file = \"/etc/b\"; }\n"  /* 3 */
                     ");\n"                                                                    /* 4 */
                     "tokens = (\n"                                                            /* 5 */
                     "  " JOB("x", "/etc/x1", "") ",\n"                                        /* 6 */
                     "  " JOB("y", "/etc/y", "") ",\n"                                         /* 7 */
                     "  " JOB("x", "/etc/x2", "") "\n"                                         /* 8 */
                     ");\n", 2);
        expect_error(3, "duplicate environment name 'prod' (first defined at line 2)");
        expect_error(8, "duplicate token name 'x' (first defined at line 6)");
}

static void test_invalid_names(void **state) {
        load_invalid("environments = ( { name = \"pr od\"; url = \"https://a.example.com\"; management_token_file = \"/etc/a\"; },\n" /* 1 */
                     "  { name = \"..\"; url = \"https://b.example.com\"; management_token_file = \"/etc/b\"; } );\n"       /* 2 */
                     "tokens = (\n"                                                            /* 3 */
                     "  { name = \"a/b\"; environment = \"pr od\"; file = \"/etc/x\"; rotate_every = \"30d\"; },\n" /* 4 */
                     "  { name = \"\"; environment = \"..\"; file = \"/etc/y\"; rotate_every = \"30d\"; },\n" /* 5 */
                     "  { name = \"" "0123456789012345678901234567890123456789012345678901234567890123456789"
                     "\"; environment = \"..\"; file = \"/etc/z\"; rotate_every = \"30d\"; }\n" /* 6 */
                     ");\n", 5);
        expect_error(1, "name 'pr od' is invalid");
        expect_error(2, "name '..' is invalid");
        expect_error(4, "name 'a/b' is invalid");
        expect_error(5, "name '' is invalid");
        expect_error(6, "is invalid: use 1-64 characters");
}

static void test_unknown_environment(void **state) {
        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  { name = \"a\"; environment = \"prd\"; file = \"/etc/a\"; rotate_every = \"30d\"; },\n" /* 3 */
                     "  { name = \"b\"; environment = \"staging\";\n"       /* 4 */
                     "    file = \"/etc/b\"; rotate_every = \"30d\"; }\n"
                     ");\n", 2);
        expect_error(3, "unknown environment 'prd', did you mean 'prod'?");
        expect_error(4, "unknown environment 'staging' (not defined in 'environments')");
        expect_warning(1, "environment 'prod' is not used by any token");
}

static void test_same_file(void **state) {
        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  " JOB("a", "/etc/myapp/dt.token", "") ",\n"         /* 3 */
                     "  " JOB("b", "/etc/other.token", "") ",\n"            /* 4 */
                     "  { name = \"c\"; environment = \"prod\";\n"          /* 5 */
                     "    file = \"/etc//myapp/./dt.token/\"; rotate_every = \"30d\"; }\n" /* 6 */
                     ");\n", 1);
        expect_error(6, "file '/etc/myapp/dt.token' is also written by token 'a' (line 3)");
}

static void test_same_token_name(void **state) {
        load_invalid("environments = (\n"
                     "  { name = \"prod\"; url = \"https://a.example.com\"; management_token_file = \"/etc/a\"; },\n" /* 2 */
                     "  { name = \"dev\"; url = \"https://b.example.com\"; management_token_file = \"/etc/b\"; }\n"   /* 3 */
                     ");\n"
                     "tokens = (\n"
                     "  " JOB("a", "/etc/a.token", "token_name = \"agent\";") ",\n" /* 6 */
                     "  { name = \"b\"; environment = \"dev\"; file = \"/etc/b.token\"; rotate_every = \"30d\";\n" /* 7 */
                     "    token_name = \"agent\"; },\n"                               /* 8: other env: fine */
                     "  { name = \"c\"; environment = \"prod\"; file = \"/etc/c.token\"; rotate_every = \"30d\";\n" /* 9 */
                     "    token_name = \"agent\"; }\n"                                /* 10 */
                     ");\n", 1);
        expect_error(10, "token_name 'agent' is also used by token 'a' (line 6) in environment 'prod'");

        load_invalid(ONE_JOB("token_name = \"\";"), 1);
        expect_error(3, "token_name must not be empty");

        load_invalid(ONE_JOB("token_name = \""
                             "01234567890123456789012345678901234567890123456789"
                             "01234567890123456789012345678901234567890123456789x\";"), 1);
        expect_error(3, "token_name is longer than 100 characters");
}

/* ---- values --------------------------------------------------------------------- */

#define ENV_URL(url)                                                                   \
        "environments = ( { name = \"prod\"; url = \"" url "\"; "                      \
        "management_token_file = \"/etc/t\"; } );\n"                                   \
        "tokens = ( " JOB("a", "/etc/a", "") " );\n"

static void expect_url_ok(const char *url_text, const char *stored) {
        _cleanup_(config_freep) Config *c = load_valid(url_text);
        assert_string_equal(c->envs[0].url, stored);
}

static void test_urls(void **state) {
        expect_url_ok(ENV_URL("https://abc12345.live.dynatrace.com/"), "https://abc12345.live.dynatrace.com");
        expect_url_ok(ENV_URL("https://dt.example.com:9999/e/abc-123///"), "https://dt.example.com:9999/e/abc-123");
        expect_url_ok(ENV_URL("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        expect_url_ok(ENV_URL("http://127.9.8.7/"), "http://127.9.8.7");
        expect_url_ok(ENV_URL("http://localhost:1234/x"), "http://localhost:1234/x");
        expect_url_ok(ENV_URL("http://[::1]:8443"), "http://[::1]:8443");
        expect_url_ok(ENV_URL("https://[2001:db8::1]"), "https://[2001:db8::1]");

        load_invalid(ENV_URL("http://abc12345.live.dynatrace.com"), 1);
        expect_error(1, "plain http:// is only allowed for loopback hosts");
        load_invalid(ENV_URL("http://128.0.0.1"), 1);
        expect_error(1, "plain http:// is only allowed for loopback hosts");
        load_invalid(ENV_URL("http://localhost.example.com"), 1);
        expect_error(1, "plain http:// is only allowed for loopback hosts");
        load_invalid(ENV_URL("http://[::2]/"), 1);
        expect_error(1, "plain http:// is only allowed for loopback hosts");
        load_invalid(ENV_URL("abc12345.live.dynatrace.com"), 1);
        expect_error(1, "url: 'abc12345.live.dynatrace.com': not a URL");
        load_invalid(ENV_URL("ftp://x.example.com"), 1);
        expect_error(1, "unsupported URL scheme");
        load_invalid(ENV_URL("https://"), 1);
        expect_error(1, "URL has no host name");
        load_invalid(ENV_URL("https://x.example.com/?a=b"), 1);
        expect_error(1, "must not contain a query");
        load_invalid(ENV_URL("https://user:pw@x.example.com"), 1);
        expect_error(1, "must not contain user credentials");
        load_invalid(ENV_URL("https://x.example.com:70000"), 1);
        expect_error(1, "port is out of range");
        load_invalid(ENV_URL("https://x.example.com:"), 1);
        expect_error(1, "invalid port");
        load_invalid(ENV_URL("https://x y.example.com"), 1);
        expect_error(1, "spaces or control characters");
        load_invalid(ENV_URL("https://[::1"), 1);
        expect_error(1, "unterminated IPv6 address");

        /* An API URL where the base URL belongs: a warning. */
        {
                _cleanup_(config_freep) Config *c = load_valid(ENV_URL("https://x.example.com/api/v2"));
                expect_warning(1, "looks like an API URL");
        }
}

static void test_env_values(void **state) {
        load_invalid("environments = (\n"                                                    /* 1 */
                     "  { name = \"prod\"; url = \"https://x.example.com\"; api = \"v3\";\n"  /* 2 */
                     "    management_token_file = \"etc/t\";\n"                             /* 3 */
                     "    ca_file = \"/nonexistent/ca.pem\";\n"                             /* 4 */
                     "    request_timeout = \"0s\";\n"                                      /* 5 */
                     "    max_parallel = 65; },\n"                                          /* 6 */
                     "  { name = \"dev\"; url = \"https://y.example.com\";\n"               /* 7 */
                     "    management_token_file = \"/etc/t\";\n"                            /* 8 */
                     "    management_token_credential = \"a/b\";\n"                         /* 9 */
                     "    request_timeout = \"11m\"; max_parallel = 0; ca_file = \"/tmp\"; }\n" /* 10 */
                     ");\n"
                     "tokens = ( " JOB("a", "/etc/a", "") ",\n"                             /* 12 */
                     "  { name = \"b\"; environment = \"dev\"; file = \"/etc/b\"; rotate_every = \"30d\"; } );\n",
                     10);
        expect_error(2, "api: 'v3' is not supported: use \"v1\" or \"v2\"");
        expect_error(3, "management_token_file: 'etc/t' is not an absolute path");
        expect_error(4, "ca_file: cannot read '/nonexistent/ca.pem': No such file or directory");
        expect_error(5, "request_timeout: '0s' is too short: at least 1s");
        expect_error(6, "max_parallel: 65 is out of range (1-64)");
        expect_error(9, "management_token_credential: 'a/b' is not a credential name");
        expect_error(9, "management_token_file and management_token_credential are mutually exclusive");
        expect_error(10, "request_timeout: '11m' is longer than 10m");
        expect_error(10, "max_parallel: 0 is out of range (1-64)");
        expect_error(10, "ca_file: '/tmp' is a directory");
}

static void test_durations(void **state) {
        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  " JOB("a", "/etc/a", "grace_period = \"30\";") ",\n"          /* 3 */
                     "  { name = \"b\"; environment = \"prod\"; file = \"/etc/b\";\n" /* 4 */
                     "    rotate_every = \"0s\";\n"                                   /* 5 */
                     "    grace_period = \"366d\";\n"                                 /* 6 */
                     "    revoke_delay = \"53w\";\n"                                  /* 7 */
                     "    renew_before = \"8761h\"; },\n"                             /* 8 */
                     "  " JOB("c", "/etc/c", "expires_in = \"30 d\"; revoke_delay = \"1y\";") ",\n" /* 9 */
                     "  { name = \"d\"; environment = \"prod\"; file = \"/etc/d\";\n" /* 10 */
                     "    rotate_every = \"3651d\"; grace_period = \"99999999999999999999d\"; }\n" /* 11 */
                     ");\n"
                     "retry_max_delay = \"25h\";\n",                                  /* 13 */
                     10);
        expect_error(3, "grace_period: invalid duration '30': expected a number and a unit "
                        "(ms, s, m, h, d, w), e.g. \"30d\"");
        expect_error(5, "rotate_every: '0s' must be greater than zero");
        expect_error(6, "grace_period: '366d' is longer than a year");
        expect_error(7, "revoke_delay: '53w' is longer than a year");
        expect_error(8, "renew_before: '8761h' is longer than a year");
        expect_error(9, "expires_in: invalid duration '30 d'");
        expect_error(9, "revoke_delay: invalid duration '1y'");
        expect_error(11, "rotate_every: '3651d' is longer than 10 years");
        expect_error(11, "grace_period: duration '99999999999999999999d' is too large");
        expect_error(13, "retry_max_delay: '25h' is longer than a day");

        load_invalid(ONE_JOB("revoke_delay = \"never\";"), 1);
        expect_error(3, "revoke_delay: invalid duration 'never'");
        load_invalid(ONE_JOB("") "retry_max_delay = \"500ms\";\n", 1);
        expect_error(5, "retry_max_delay: '500ms' is too short: at least 1s");
}

static void test_expires_vs_renew(void **state) {
        /* Explicit expires_in not longer than renew_before: at expires_in's line. */
        load_invalid(ENV_PROD
                     "tokens = ( { name = \"a\"; environment = \"prod\"; file = \"/etc/a\";\n" /* 2 */
                     "  rotate_every = \"30d\"; renew_before = \"7d\";\n"                    /* 3 */
                     "  expires_in = \"7d\"; } );\n", 1);                                     /* 4 */
        expect_error(4, "expires_in (7d) must be longer than renew_before (7d): new tokens "
                        "would be due for renewal as soon as they are created");

        /* The default (2 x rotate_every) is checked too, at renew_before's line. */
        load_invalid(ENV_PROD
                     "tokens = ( { name = \"a\"; environment = \"prod\"; file = \"/etc/a\";\n" /* 2 */
                     "  rotate_every = \"1d\";\n"                                             /* 3 */
                     "  renew_before = \"2d\"; } );\n", 1);                                   /* 4 */
        expect_error(4, "expires_in (2d, the default of 2 x rotate_every) must be longer than "
                        "renew_before (2d)");

        /* A lifetime of 0s leaves no default renew_before that fits. */
        load_invalid(ENV_PROD
                     "tokens = ( { name = \"a\"; environment = \"prod\"; file = \"/etc/a\";\n" /* 2 */
                     "  rotate_every = \"1h\";\n"                                             /* 3 */
                     "  expires_in = \"0s\"; } );\n", 1);                                     /* 4 */
        expect_error(4, "expires_in (0s) must be longer than renew_before (0s, the default of "
                        "a third of expires_in)");

        /* "never" and expires_in > renew_before are fine. */
        {
                _cleanup_(config_freep) Config *c =
                        load_valid(ENV_PROD
                                   "tokens = ( { name = \"a\"; environment = \"prod\"; file = \"/etc/a\";\n"
                                   "  rotate_every = \"1h\"; expires_in = \"never\"; } );\n");
                (void) c;
        }
}

static usec_t renew_before_of(const char *extra) {
        _cleanup_(config_freep) Config *c = NULL;
        char text[512];

        snprintf(text, sizeof(text), ENV_PROD "tokens = ( { name = \"a\"; environment = \"prod\"; "
                 "file = \"/etc/a\"; %s } );\n", extra);
        c = load_valid(text);
        expect_counts(0, 0);
        return c->jobs[0].renew_before;
}

static void test_renew_before_default(void **state) {
        /* A third of the lifetime, at most 7 days: rotate_every alone is a valid job. */
        assert_int_equal(renew_before_of("rotate_every = \"1d\";"), 16 * USEC_PER_HOUR);
        assert_int_equal(renew_before_of("rotate_every = \"1h\";"), 40 * USEC_PER_MINUTE);
        assert_int_equal(renew_before_of("rotate_every = \"1d\"; expires_in = \"9d\";"),
                         3 * USEC_PER_DAY);
        assert_int_equal(renew_before_of("rotate_every = \"30d\"; expires_in = \"90d\";"),
                         7 * USEC_PER_DAY);
        assert_int_equal(renew_before_of("rotate_every = \"30d\"; expires_in = \"never\";"),
                         7 * USEC_PER_DAY);
        /* Set explicitly, it is kept (and checked, see test_expires_vs_renew). */
        assert_int_equal(renew_before_of("rotate_every = \"1d\"; renew_before = \"1h\";"),
                         USEC_PER_HOUR);
}

static void test_expires_soon_warning(void **state) {
        _cleanup_(config_freep) Config *c =
                load_valid(ONE_JOB("expires_in = \"30d\";"));
        expect_counts(0, 1);
        expect_warning(3, "rotated every 23d rather than every 30d");
}

static void test_modes(void **state) {
        _cleanup_(config_freep) Config *c = NULL;

        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  " JOB("a", "/etc/a", "mode = \"0666\";") ",\n"   /* 3 */
                     "  " JOB("b", "/etc/b", "mode = \"0648\";") ",\n"   /* 4 */
                     "  " JOB("c", "/etc/c", "mode = \"17777\";") ",\n"  /* 5 */
                     "  " JOB("d", "/etc/d", "mode = \"\";") ",\n"       /* 6 */
                     "  " JOB("e", "/etc/e", "mode = \"rw-r-----\";") "\n" /* 7 */
                     ");\n", 5);
        expect_error(3, "mode: '0666' would make the token file writable by everyone");
        expect_error(4, "mode: '0648' is not an octal mode");
        expect_error(5, "mode: '17777' is out of range (at most 07777)");
        expect_error(6, "mode: '' is not an octal mode");
        expect_error(7, "mode: 'rw-r-----' is not an octal mode");

        /* setuid, setgid, sticky: refused, at the line of the setting. */
        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  " JOB("a", "/etc/a", "mode = \"4600\";") ",\n"   /* 3 */
                     "  " JOB("b", "/etc/b", "mode = \"2640\";") ",\n"   /* 4 */
                     "  " JOB("c", "/etc/c", "mode = \"1600\";") ",\n"   /* 5 */
                     "  " JOB("d", "/etc/d", "mode = \"06600\";") "\n"   /* 6 */
                     ");\n", 4);
        expect_error(3, "mode: '4600' sets the setuid bit");
        expect_error(4, "mode: '2640' sets the setgid bit");
        expect_error(5, "mode: '1600' sets the sticky bit");
        expect_error(6, "mode: '06600' sets the setuid bit");

        /* World-readable: only a warning. */
        c = load_valid(ONE_JOB("mode = \"644\";"));
        expect_counts(0, 1);
        expect_warning(3, "mode: '644' makes the token file readable by everyone");
        assert_int_equal(c->jobs[0].mode, 0644);
}

static void test_same_url(void **state) {
        _cleanup_(config_freep) Config *c = NULL;

        /* Case, a trailing '/', the default port: still the same tenant. */
        load_invalid("environments = (\n"                                                           /* 1 */
                     "  { name = \"a\"; url = \"https://abc.live.dynatrace.com\"; management_token_file = \"/etc/a\"; },\n" /* 2 */
                     "  { name = \"b\";\n"                                                         /* 3 */
                     "    url = \"HTTPS://ABC.Live.Dynatrace.com:443/\"; management_token_file = \"/etc/b\"; },\n" /* 4 */
                     "  { name = \"c\"; url = \"https://abc.live.dynatrace.com./\"; management_token_file = \"/etc/c\"; },\n" /* 5 */
                     "  { name = \"d\"; url = \"http://127.0.0.1:80/e/x/\"; management_token_file = \"/etc/d\"; },\n" /* 6 */
                     "  { name = \"e\"; url = \"http://127.0.0.1/e/x\"; management_token_file = \"/etc/e\"; }\n" /* 7 */
                     ");\n"
                     "tokens = ( { name = \"t\"; environment = \"a\"; file = \"/etc/t\"; rotate_every = \"1d\"; } );\n",
                     3);
        expect_error(4, "environment 'b' has the same url as 'a' (line 2): the leftover scan "
                        "could take one's tokens for the other's");
        expect_error(5, "environment 'c' has the same url as 'a' (line 2)");
        expect_error(7, "environment 'e' has the same url as 'd' (line 6)");

        /* Another path, port, host or scheme is another environment. */
        c = load_valid("environments = (\n"
                       "  { name = \"a\"; url = \"https://x.example.com/e/1\"; management_token_file = \"/etc/a\"; },\n"
                       "  { name = \"b\"; url = \"https://x.example.com/e/2\"; management_token_file = \"/etc/b\"; },\n"
                       "  { name = \"c\"; url = \"https://x.example.com:8443/e/1\"; management_token_file = \"/etc/c\"; },\n"
                       "  { name = \"d\"; url = \"https://y.example.com/e/1\"; management_token_file = \"/etc/d\"; },\n"
                       "  { name = \"e\"; url = \"http://localhost/e/1\"; management_token_file = \"/etc/e\"; },\n"
                       "  { name = \"f\"; url = \"https://localhost/e/1\"; management_token_file = \"/etc/f\"; }\n"
                       ");\n"
                       "tokens = ( { name = \"t\"; environment = \"a\"; file = \"/etc/t\"; rotate_every = \"1d\"; } );\n");
        expect_counts(0, 5); /* the unused ones */
}

static void test_owner_group(void **state) {
        _cleanup_(config_freep) Config *c = NULL;

        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  " JOB("a", "/etc/a", "owner = \"no-such-user-dtrotated\";") ",\n"  /* 3 */
                     "  " JOB("b", "/etc/b", "group = \"no-such-group-dtrotated\";") ",\n" /* 4 */
                     "  " JOB("c", "/etc/c", "owner = \"4294967295\"; group = \"\";") "\n" /* 5 */
                     ");\n", 4);
        expect_error(3, "owner: unknown user 'no-such-user-dtrotated'");
        expect_error(4, "group: unknown group 'no-such-group-dtrotated'");
        expect_error(5, "owner: '4294967295' is not a valid user id");
        expect_error(5, "group must not be empty");

        c = load_valid(ONE_JOB("owner = \"1234\"; group = \"root\";"));
        assert_int_equal(c->jobs[0].uid, 1234);
        assert_int_equal(c->jobs[0].gid, 0);
}

static void test_paths_and_hooks(void **state) {
        char hook[] = "/tmp/test-config-hook-XXXXXX", text[2048];
        _cleanup_close_ int fd = mkstemp(hook);

        assert_true(fd >= 0);
        assert_int_equal(fchmod(fd, 0644), 0);  /* not executable */

        snprintf(text, sizeof(text),
                 ENV_PROD
                 "tokens = (\n"
                 "  " JOB("a", "etc/a", "") ",\n"                                      /* 3 */
                 "  " JOB("b", "/etc/../b", "on_rotate = \"/nonexistent/hook\";") ",\n" /* 4 */
                 "  " JOB("c", "/etc/c", "on_rotate = \"%s\";") ",\n"                  /* 5 */
                 "  " JOB("d", "/etc/d", "on_rotate = \"/tmp\";") ",\n"                /* 6 */
                 "  " JOB("e", "/", "on_rotate = \"/usr/sbin/service x reload\";") ",\n" /* 7 */
                 "  " JOB("f", "/etc/f", "on_rotate = \"bin/true\";") "\n"             /* 8 */
                 ");\n", hook);

        /* As root, access(X_OK) still needs an execute bit. */
        load_invalid(text, 8);
        unlink(hook);
        expect_error(3, "file: 'etc/a' is not an absolute path");
        expect_error(4, "file: '/etc/../b' must not contain '..'");
        expect_error(4, "on_rotate: cannot execute '/nonexistent/hook': No such file or directory");
        expect_error(5, "on_rotate: cannot execute");
        expect_error(5, "Permission denied");
        expect_error(6, "on_rotate: '/tmp' is not a regular file");
        expect_error(7, "file: '/' does not name a file");
        expect_error(7, "give the absolute path of a program, without arguments");
        expect_error(8, "on_rotate: 'bin/true' is not an absolute path");
}

static void test_scopes(void **state) {
        _cleanup_(config_freep) Config *c = NULL;

        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  " JOB("a", "/etc/a", "scopes = [];") ",\n"                        /* 3 */
                     "  " JOB("b", "/etc/b", "scopes = [ 1, 2 ];") ",\n"                  /* 4 */
                     "  { name = \"c\"; environment = \"prod\"; file = \"/etc/c\";\n"     /* 5 */
                     "    rotate_every = \"30d\"; scopes = ( \"ReadConfig\",\n"            /* 6 */
                     "      \"\" ); }\n"                                                  /* 7 */
                     ");\n", 4);
        expect_error(3, "scopes: the list is empty");
        expect_error(4, "scopes: element 1 must be a string, not an integer");
        expect_error(4, "scopes: element 2 must be a string, not an integer");
        expect_error(7, "scopes: element 2 is an empty string");

        c = load_valid(ONE_JOB("scopes = [ \"a\", \"b\", \"a\" ];"));
        expect_warning(3, "scopes: 'a' is listed more than once");
        assert_int_equal(strv_length(c->jobs[0].scopes), 2);
}

static void test_management_token(void **state) {
        load_invalid("environments = ( { name = \"prod\"; url = \"https://x.example.com\";\n" /* 1 */
                     "  management_token_file = \"/etc/a\";\n"                                 /* 2 */
                     "  management_token_credential = \"admin\"; } );\n"                       /* 3 */
                     "tokens = ( " JOB("a", "/etc/a.token", "") " );\n", 1);
        expect_error(3, "management_token_file and management_token_credential are mutually exclusive");

        load_invalid("environments = ( { name = \"prod\"; url = \"https://x.example.com\";\n" /* 1 */
                     "  management_token_credential = \"..\"; } );\n"                          /* 2 */
                     "tokens = ( " JOB("a", "/etc/a.token", "") " );\n", 1);
        expect_error(2, "management_token_credential: '..' is not a credential name");

        /* Misspelt: one error, not also "missing". */
        load_invalid("environments = ( { name = \"prod\"; url = \"https://x.example.com\";\n" /* 1 */
                     "  managment_token_file = \"/etc/a\"; } );\n"                          /* 2 */
                     "tokens = ( " JOB("a", "/etc/a.token", "") " );\n", 1);
        expect_error(2, "unknown key 'managment_token_file' in an environment, did you mean "
                        "'management_token_file'?");
}

/* ---- warnings and many problems at once --------------------------------------- */

static void test_unused_env_warning(void **state) {
        _cleanup_(config_freep) Config *c = NULL;

        c = load_valid("environments = (\n"
                       "  { name = \"prod\"; url = \"https://a.example.com\"; management_token_file = \"/etc/a\"; },\n" /* 2 */
                       "  { name = \"idle\"; url = \"https://b.example.com\"; management_token_file = \"/etc/b\"; }\n"  /* 3 */
                       ");\n"
                       "tokens = ( " JOB("a", "/etc/a.token", "") " );\n");
        expect_counts(0, 1);
        expect_warning(3, "environment 'idle' is not used by any token");
        assert_int_equal(c->n_envs, 2);
}

static void test_three_mistakes(void **state) {
        load_invalid("# a realistic file with three mistakes\n"                              /* 1 */
                     "state_directory = \"/var/lib/dtrotated\";\n"                          /* 2 */
                     "environments = (\n"                                                   /* 3 */
                     "  { name = \"prod\";\n"                                               /* 4 */
                     "    url = \"http://abc12345.live.dynatrace.com\";\n"                  /* 5: http */
                     "    management_token_file = \"/etc/dtrotated/prod-admin.token\"; }\n" /* 6 */
                     ");\n"                                                                 /* 7 */
                     "tokens = (\n"                                                         /* 8 */
                     "  { name = \"agent-config\"; environment = \"prod\";\n"               /* 9 */
                     "    file = \"/etc/myapp/dynatrace.token\";\n"                         /* 10 */
                     "    rotate_every = \"30\";\n"                                         /* 11: no unit */
                     "    mode = \"0640\"; },\n"                                            /* 12 */
                     "  { name = \"agent-config\"; environment = \"prod\";\n"               /* 13: duplicate */
                     "    file = \"/etc/other/dynatrace.token\"; rotate_every = \"30d\"; }\n" /* 14 */
                     ");\n", 3);
        expect_error(5, "plain http:// is only allowed for loopback hosts");
        expect_error(11, "rotate_every: invalid duration '30'");
        expect_error(13, "duplicate token name 'agent-config' (first defined at line 9)");

        /* Sorted by line. */
        assert_true(strstr(reported[0].text, ":5: ") != NULL);
        assert_true(strstr(reported[1].text, ":11: ") != NULL);
        assert_true(strstr(reported[2].text, ":13: ") != NULL);
}

static void test_sorted_by_line(void **state) {
        /* tokens before environments: messages still come in line order. */
        load_invalid("tokens = ( " JOB("a", "/etc/a", "mode = \"0777\";") " );\n"      /* 1 */
                     "environments = ( { name = \"prod\"; url = \"ftp://x\";\n"         /* 2 */
                     "  management_token_file = \"/etc/t\"; } );\n", 2);
        assert_true(strstr(reported[0].text, ":1: ") != NULL);
        assert_true(strstr(reported[1].text, ":2: ") != NULL);
}

static void test_revoke_when_unused(void **state) {
        _cleanup_(config_freep) Config *c = NULL, *d = NULL;

        /* Off by default; the give-up defaults to a week. */
        c = load_valid(ONE_JOB(""));
        assert_int_equal(c->jobs[0].revoke_when_unused, 0);
        assert_int_equal(c->jobs[0].revoke_when_unused_max, 7 * USEC_PER_DAY);
        c = config_free(c);

        c = load_valid(ONE_JOB("revoke_when_unused = \"1h\"; revoke_when_unused_max = \"2d\";"));
        expect_counts(0, 0);
        assert_int_equal(c->jobs[0].revoke_when_unused, USEC_PER_HOUR);
        assert_int_equal(c->jobs[0].revoke_when_unused_max, 2 * USEC_PER_DAY);
        d = load_valid(ONE_JOB("revoke_when_unused = \"2h\"; revoke_when_unused_max = \"2d\";"));
        assert_false(job_config_equal(&c->jobs[0], &d->jobs[0]));
        d = config_free(d);
        d = load_valid(ONE_JOB("revoke_when_unused = \"1h\";"));
        assert_false(job_config_equal(&c->jobs[0], &d->jobs[0]));
        d = config_free(d);

        /* The limit alone does nothing: a warning at its line. */
        clear_reported();
        d = load_valid(ENV_PROD "tokens = (\n  " JOB("a", "/etc/a", "") ",\n"
                       "  " JOB("b", "/etc/b", "revoke_when_unused_max = \"1d\";") "\n);\n");
        expect_counts(0, 1);
        expect_warning(4, "revoke_when_unused_max has no effect without revoke_when_unused");
        clear_reported();

        load_invalid(ENV_PROD
                     "tokens = (\n"
                     "  " JOB("a", "/etc/a", "revoke_when_unused = \"0s\";") ",\n"                  /* 3 */
                     "  " JOB("b", "/etc/b", "revoke_when_unused = \"1h\"; revoke_when_unused_max = \"366d\";") ",\n" /* 4 */
                     "  " JOB("c", "/etc/c", "revoke_when_unused = 3600;") ",\n"                    /* 5 */
                     "  " JOB("d", "/etc/d", "revoke_when_unused = \"never\";") ",\n"               /* 6 */
                     "  " JOB("e", "/etc/e", "revoke_when_unsed = \"1h\";") "\n"                    /* 7 */
                     ");\n", 5);
        expect_error(3, "revoke_when_unused: '0s' must be greater than zero");
        expect_error(4, "revoke_when_unused_max: '366d' is longer than a year");
        expect_error(5, "revoke_when_unused must be a string such as \"30d\", not");
        expect_error(6, "revoke_when_unused: invalid duration 'never'");
        expect_error(7, "unknown key 'revoke_when_unsed' in a token, did you mean 'revoke_when_unused'?");
}

static void test_metrics_file(void **state) {
        _cleanup_(config_freep) Config *c = NULL;

        c = load_valid(ONE_JOB(""));
        assert_null(c->metrics_file);
        c = config_free(c);

        c = load_valid(ONE_JOB("") "metrics_file = \"/var/lib/prometheus/node-exporter//dtrotated.prom\";\n");
        expect_counts(0, 0);
        assert_string_equal(c->metrics_file, "/var/lib/prometheus/node-exporter/dtrotated.prom");
        c = config_free(c);

        c = load_valid(ONE_JOB("") "metrics_file = \"/run/dtrotated.txt\";\n");
        expect_counts(0, 1);
        expect_warning(5, "metrics_file: '/run/dtrotated.txt' does not end in .prom");
        c = config_free(c);
        clear_reported();

        load_invalid("metrics_file = \"dtrotated.prom\";\n" ONE_JOB(""), 1);
        expect_error(1, "metrics_file: 'dtrotated.prom' is not an absolute path");
        load_invalid("metrics_file = 1;\n" ONE_JOB(""), 1);
        expect_error(1, "metrics_file must be a string (an absolute path), not");
        load_invalid("metrics_file = \"/\";\n" ONE_JOB(""), 1);
        expect_error(1, "metrics_file: '/' does not name a file");
        load_invalid(ONE_JOB("metrics_file = \"/x.prom\";"), 1);
        expect_error(3, "unknown key 'metrics_file' in a token: it belongs at the top level");
}

/* ---- equality -------------------------------------------------------------------- */

static void test_equal(void **state) {
        _cleanup_(config_freep) Config *a = NULL, *b = NULL, *d = NULL, *e = NULL;

        a = load_valid(ONE_JOB("scopes = [ \"ReadConfig\" ]; mode = \"0640\";"));
        b = load_valid(ONE_JOB("scopes = [ \"ReadConfig\" ]; mode = \"0640\";"));
        assert_true(job_config_equal(&a->jobs[0], &b->jobs[0]));
        assert_true(env_config_equal(&a->envs[0], &b->envs[0]));
        assert_true(job_config_equal(&a->jobs[0], &a->jobs[0]));
        assert_false(job_config_equal(&a->jobs[0], NULL));

        d = load_valid(ONE_JOB("scopes = [ \"ReadConfig\", \"DataExport\" ]; mode = \"0640\";"));
        assert_false(job_config_equal(&a->jobs[0], &d->jobs[0]));
        d = config_free(d);

        d = load_valid(ONE_JOB("scopes = [ \"ReadConfig\" ]; mode = \"0600\";"));
        assert_false(job_config_equal(&a->jobs[0], &d->jobs[0]));
        d = config_free(d);

        d = load_valid(ONE_JOB("mode = \"0640\";"));   /* scopes NULL vs given */
        assert_false(job_config_equal(&a->jobs[0], &d->jobs[0]));
        d = config_free(d);

        /* Same job, but the environment now points at another tenant. */
        d = load_valid("environments = ( { name = \"prod\"; url = \"https://other.live.dynatrace.com\"; "
                       "management_token_file = \"/etc/dtrotated/prod.token\"; } );\n"
                       "tokens = ( " JOB("a", "/etc/a.token", "scopes = [ \"ReadConfig\" ]; mode = \"0640\";") " );\n");
        assert_false(env_config_equal(&a->envs[0], &d->envs[0]));
        assert_false(job_config_equal(&a->jobs[0], &d->jobs[0]));

        /* A different management token changes the environment, not the job. */
        e = load_valid("environments = ( { name = \"prod\"; url = \"https://abc12345.live.dynatrace.com\"; "
                       "management_token_credential = \"admin\"; max_parallel = 2; } );\n"
                       "tokens = ( " JOB("a", "/etc/a.token", "scopes = [ \"ReadConfig\" ]; mode = \"0640\";") " );\n");
        assert_false(env_config_equal(&a->envs[0], &e->envs[0]));
        assert_true(job_config_equal(&a->jobs[0], &e->jobs[0]));
}

/* ---- --check-config: token files ---------------------------------------------- */

static int check_files(const Config *c) {
        size_t calls = 0;
        int r;

        clear_reported();
        r = config_check_files(c, collect, &calls);
        assert_int_equal(calls, n_reported);
        return r;
}

static void test_check_files(void **state) {
        char dir[] = "/tmp/test-config-files-XXXXXX", text[4096], p[PATH_MAX + 256], real[PATH_MAX];
        /* real: where link.token leads (the management token may be a link) */
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_close_ int fd = -1;

        assert_non_null(mkdtemp(dir));
        snprintf(p, sizeof(p), "%s/real.token", dir);
        fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_non_null(realpath(p, real));
        snprintf(p, sizeof(p), "%s/link.token", dir);
        assert_int_equal(symlink("real.token", p), 0);
        snprintf(p, sizeof(p), "%s/dangling.token", dir);
        assert_int_equal(symlink("/nonexistent/x.token", p), 0);
        snprintf(p, sizeof(p), "%s/fifo.token", dir);
        assert_int_equal(mkfifo(p, 0600), 0);
        snprintf(p, sizeof(p), "%s/dir.token", dir);
        assert_int_equal(mkdir(p, 0700), 0);

        snprintf(text, sizeof(text),
                 "environments = (\n"                                                          /* 1 */
                 "  { name = \"prod\"; url = \"https://a.example.com\";\n"                    /* 2 */
                 "    management_token_file = \"%1$s/link.token\"; },\n"                      /* 3 */
                 "  { name = \"self\"; url = \"https://b.example.com\";\n"                    /* 4 */
                 "    management_token_file = \"%1$s/fifo.token\"; }\n"                       /* 5 */
                 ");\n"                                                                        /* 6 */
                 "tokens = (\n"                                                                /* 7 */
                 "  { name = \"real\"; environment = \"prod\"; rotate_every = \"1d\";\n"      /* 8 */
                 "    file = \"%1$s/real.token\"; },\n"                                       /* 9 */
                 "  { name = \"fifo\"; environment = \"self\"; rotate_every = \"1d\";\n"      /* 10 */
                 "    file = \"%1$s/fifo.token\"; },\n"                                       /* 11 */
                 "  { name = \"dir\"; environment = \"prod\"; rotate_every = \"1d\";\n"       /* 12 */
                 "    file = \"%1$s/dir.token\"; },\n"                                        /* 13 */
                 "  { name = \"dangling\"; environment = \"prod\"; rotate_every = \"1d\";\n"  /* 14 */
                 "    file = \"%1$s/dangling.token\"; },\n"                                   /* 15 */
                 "  { name = \"new\"; environment = \"prod\"; rotate_every = \"1d\";\n"       /* 16 */
                 "    file = \"%1$s/new.token\"; },\n"                                        /* 17 */
                 "  { name = \"nodir\"; environment = \"prod\"; rotate_every = \"1d\";\n"     /* 18 */
                 "    file = \"%1$s/nodir/x.token\"; }\n"                                     /* 19 */
                 ");\n", dir);

        /* Loading does not look at the files: one broken job must not stop the others. */
        c = load_valid(text);
        expect_counts(0, 0);

        assert_int_equal(check_files(c), -EINVAL);
        /* Line 3: a link to the management token is fine, it is only read. */
        expect_error(11, "is not a regular file (a FIFO)");   /* reported once, as the job's */
        expect_error(13, "is not a regular file (a directory)");
        expect_error(15, "is a symbolic link to '/nonexistent/x.token'");
        snprintf(p, sizeof(p), "file: the directory '%s/nodir' does not exist", dir);
        expect_error(19, p);
        expect_counts(4, 0);

        /* All in order: 0, nothing reported. */
        c = config_free(c);
        snprintf(text, sizeof(text),
                 "environments = ( { name = \"prod\"; url = \"https://a.example.com\";\n"
                 "    management_token_file = \"%1$s/real.token\"; } );\n"
                 "tokens = ( { name = \"new\"; environment = \"prod\"; rotate_every = \"1d\";\n"
                 "    file = \"%1$s/new.token\"; } );\n", dir);
        c = load_valid(text);
        assert_int_equal(check_files(c), 0);
        expect_counts(0, 0);

        snprintf(p, sizeof(p), "rm -rf '%s'", dir);
        assert_int_equal(system(p), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_example_file, teardown),
                cmocka_unit_test_teardown(test_full, teardown),
                cmocka_unit_test_teardown(test_defaults, teardown),
                cmocka_unit_test_teardown(test_cannot_read, teardown),
                cmocka_unit_test_teardown(test_syntax_error, teardown),
                cmocka_unit_test_teardown(test_include_of_a_directory, teardown),
                cmocka_unit_test_teardown(test_duplicate_setting, teardown),
                cmocka_unit_test_teardown(test_unknown_keys, teardown),
                cmocka_unit_test_teardown(test_wrong_types, teardown),
                cmocka_unit_test_teardown(test_lists_not_groups, teardown),
                cmocka_unit_test_teardown(test_lists_not_groups_reports, teardown),
                cmocka_unit_test_teardown(test_no_envs_no_tokens, teardown),
                cmocka_unit_test_teardown(test_missing_keys, teardown),
                cmocka_unit_test_teardown(test_duplicate_names, teardown),
                cmocka_unit_test_teardown(test_invalid_names, teardown),
                cmocka_unit_test_teardown(test_unknown_environment, teardown),
                cmocka_unit_test_teardown(test_same_file, teardown),
                cmocka_unit_test_teardown(test_same_token_name, teardown),
                cmocka_unit_test_teardown(test_urls, teardown),
                cmocka_unit_test_teardown(test_env_values, teardown),
                cmocka_unit_test_teardown(test_durations, teardown),
                cmocka_unit_test_teardown(test_expires_vs_renew, teardown),
                cmocka_unit_test_teardown(test_renew_before_default, teardown),
                cmocka_unit_test_teardown(test_expires_soon_warning, teardown),
                cmocka_unit_test_teardown(test_modes, teardown),
                cmocka_unit_test_teardown(test_same_url, teardown),
                cmocka_unit_test_teardown(test_owner_group, teardown),
                cmocka_unit_test_teardown(test_paths_and_hooks, teardown),
                cmocka_unit_test_teardown(test_scopes, teardown),
                cmocka_unit_test_teardown(test_management_token, teardown),
                cmocka_unit_test_teardown(test_unused_env_warning, teardown),
                cmocka_unit_test_teardown(test_three_mistakes, teardown),
                cmocka_unit_test_teardown(test_sorted_by_line, teardown),
                cmocka_unit_test_teardown(test_equal, teardown),
                cmocka_unit_test_teardown(test_revoke_when_unused, teardown),
                cmocka_unit_test_teardown(test_metrics_file, teardown),
                cmocka_unit_test_teardown(test_check_files, teardown),
                cmocka_unit_test_teardown(test_control_socket, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
