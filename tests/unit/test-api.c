/* SPDX-License-Identifier: MIT */
/* The Tokens API client against tests/fake-api/fake-api (python3) over real sockets,
 * plus a few canned answers the fake cannot give (served by a forked child). */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include <cmocka.h>
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "dtrotated-api.h"
#include "dtrotated-curl.h"
#include "dtrotated-util.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* Peak RSS growth (KiB) between two getrusage() calls stays below limit. Not under
 * valgrind (make valgrind) nor AddressSanitizer (make check SANITIZE=1): their shadow
 * memory and their quarantine of freed blocks (20 MB, 256 MB) grow the peak by more
 * than the program itself does. */
#define assert_rss_growth_below(before, after, limit)                                 \
        do {                                                                        \
                if (!RUNNING_ON_VALGRIND && !UNDER_ASAN)                            \
                        assert_true((after).ru_maxrss - (before).ru_maxrss < (limit)); \
        } while (0)

#define V1_SCOPE "TenantTokenManagement"
#define ALL_SCOPES "[\"TenantTokenManagement\",\"apiTokens.read\",\"apiTokens.write\"]"
#define MAX_SECRETS 256

typedef struct Planted {
        char id[128];          /* v1 id (UUID) */
        char pub[128];         /* public part = v2 id */
        char token[256];       /* the secret */
        usec_t created;        /* as the fake says */
        usec_t expires;        /* USEC_INFINITY: none */
} Planted;

typedef struct Fake {
        const char *timestamps;
        bool tls;
        const char *skip;      /* why the fake-dependent tests are skipped, or NULL */
        pid_t pid;
        char dir[PATH_MAX];
        char cert[PATH_MAX + 16];
        char url[128];
        CURL *ctl;             /* control API connection */
        Planted mgmt;          /* management token of the current test */
        char *secrets[MAX_SECRETS];
        size_t n_secrets;
        size_t since;          /* fake_requests() and fake_query() look at events from here */
} Fake;

/* ---- small helpers ---- */

static usec_t now_mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

static void sleep_ms(long ms) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

static bool find_in_path(const char *prog) {
        const char *path = getenv("PATH");
        _cleanup_free_ char *copy = strdup(path ? path : "/usr/bin:/bin");

        for (char *dir = strtok(copy, ":"); dir; dir = strtok(NULL, ":")) {
                char p[PATH_MAX];
                snprintf(p, sizeof(p), "%s/%s", dir, prog);
                if (access(p, X_OK) == 0)
                        return true;
        }
        return false;
}

static void fake_script(char *buf, size_t size) {
        const char *e = getenv("DTROTATED_FAKE_API");
        char exe[PATH_MAX];
        ssize_t n;

        if (e) {
                snprintf(buf, size, "%s", e);
                return;
        }
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
                char *slash;
                exe[n] = 0;
                slash = strrchr(exe, '/');
                if (slash) {
                        *slash = 0;
                        if (snprintf(buf, size, "%s/../tests/fake-api/fake-api", exe) < (int) size &&
                            access(buf, R_OK) == 0)
                                return;
                }
        }
        snprintf(buf, size, "tests/fake-api/fake-api");
}

static int run_quiet(char *const argv[]) {
        pid_t pid = fork();
        int status;

        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (null >= 0) {
                        dup2(null, STDOUT_FILENO);
                        dup2(null, STDERR_FILENO);
                }
                execvp(argv[0], argv);
                _exit(127);
        }
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* The secret (third) part of every token a test used must never show up in an error. */
static void register_secret(Fake *f, const char *token) {
        if (f->n_secrets < MAX_SECRETS)
                f->secrets[f->n_secrets++] = strdup(token);
}

static void assert_no_secret(Fake *f, const char *s) {
        if (!s)
                return;
        for (size_t i = 0; i < f->n_secrets; i++) {
                const char *secret = strrchr(f->secrets[i], '.');
                secret = secret ? secret + 1 : f->secrets[i];
                if (strstr(s, secret)) {
                        print_error("secret of token %zu found in \"%s\"\n", i, s);
                        fail();
                }
        }
}

/* ---- the control API ---- */

typedef struct Answer {
        char *data;
        size_t size;
} Answer;

static size_t on_ctl_data(char *p, size_t size, size_t n, void *userdata) {
        Answer *a = userdata;
        char *d = realloc(a->data, a->size + size * n + 1);
        if (!d)
                return 0;
        memcpy(d + a->size, p, size * n);
        a->size += size * n;
        d[a->size] = 0;
        a->data = d;
        return size * n;
}

/* Returns the parsed JSON answer of a control request (status must be 200). */
static yajl_val ctl(Fake *f, const char *method, const char *path, const char *body) {
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        char url[256];
        Answer a = {};
        long status = 0;
        CURLcode c;
        yajl_val v;

        snprintf(url, sizeof(url), "%s%s", f->url, path);
        curl_easy_reset(f->ctl);
        curl_easy_setopt(f->ctl, CURLOPT_URL, url);
        curl_easy_setopt(f->ctl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(f->ctl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(f->ctl, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(f->ctl, CURLOPT_TIMEOUT, 30L);
        if (body)
                curl_easy_setopt(f->ctl, CURLOPT_POSTFIELDS, body);
        if (f->tls)
                curl_easy_setopt(f->ctl, CURLOPT_CAINFO, f->cert);
        curl_easy_setopt(f->ctl, CURLOPT_WRITEFUNCTION, on_ctl_data);
        curl_easy_setopt(f->ctl, CURLOPT_WRITEDATA, &a);
        c = curl_easy_perform(f->ctl);
        curl_easy_getinfo(f->ctl, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(h);
        if (c != CURLE_OK || status != 200) {
                print_error("control %s %s: %s, HTTP %ld: %s\n", method, path, curl_easy_strerror(c),
                            status, a.data ? a.data : "");
                free(a.data);
                fail();
        }
        v = yajl_tree_parse(a.data, NULL, 0);
        free(a.data);
        assert_non_null(v);
        return v;
}

static yajl_val jget(yajl_val o, const char *key) {
        const char *path[] = { key, NULL };
        return yajl_tree_get(o, path, yajl_t_any);
}

static void ctl_ok(Fake *f, const char *method, const char *path, const char *body) {
        yajl_tree_free(ctl(f, method, path, body));
}

static void fault(Fake *f, const char *json) {
        _cleanup_free_ char *body = strdup_printf("{\"faults\":[%s]}", json);
        assert_non_null(body);
        ctl_ok(f, "POST", "/_fake/faults", body);
}

/* extra: more JSON members for /_fake/tokens, e.g. "\"expiresInMs\":60000", or NULL */
static void plant(Fake *f, const char *name, const char *scopes, const char *extra, Planted *p) {
        char body[1024];
        yajl_val v, e;

        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"scopes\":%s%s%s}", name, scopes,
                 extra ? "," : "", extra ? extra : "");
        v = ctl(f, "POST", "/_fake/tokens", body);
        memset(p, 0, sizeof(*p));
        snprintf(p->id, sizeof(p->id), "%s", YAJL_GET_STRING(jget(v, "id")));
        snprintf(p->pub, sizeof(p->pub), "%s", YAJL_GET_STRING(jget(v, "publicId")));
        snprintf(p->token, sizeof(p->token), "%s", YAJL_GET_STRING(jget(v, "token")));
        p->created = (usec_t) YAJL_GET_INTEGER(jget(v, "created")) * USEC_PER_MSEC;
        e = jget(v, "expires");
        p->expires = YAJL_IS_INTEGER(e) ? (usec_t) YAJL_GET_INTEGER(e) * USEC_PER_MSEC : USEC_INFINITY;
        yajl_tree_free(v);
        register_secret(f, p->token);
}

/* Live (not deleted) tokens in the fake and how many carry this name. */
static size_t fake_count(Fake *f, const char *name, size_t *ret_live) {
        yajl_val v = ctl(f, "GET", "/_fake/state?events=0", NULL), tokens = jget(v, "tokens");
        size_t n = 0, live = 0;

        for (size_t i = 0; i < tokens->u.array.len; i++) {
                yajl_val t = tokens->u.array.values[i];
                if (!YAJL_IS_NULL(jget(t, "deletedAt")))
                        continue;
                live++;
                if (streq_ptr(YAJL_GET_STRING(jget(t, "name")), name))
                        n++;
        }
        yajl_tree_free(v);
        if (ret_live)
                *ret_live = live;
        return n;
}

static yajl_val fake_events(Fake *f, yajl_val *ret_state) {
        char path[64];

        snprintf(path, sizeof(path), "/_fake/state?since=%zu", f->since);
        *ret_state = ctl(f, "GET", path, NULL);
        return jget(*ret_state, "events");
}

/* From now on, fake_requests() and fake_query() see only the events that follow. */
static void fake_mark(Fake *f) {
        yajl_val v = ctl(f, "GET", "/_fake/state?events=0", NULL);
        f->since = (size_t) YAJL_GET_INTEGER(jget(v, "eventCount"));
        yajl_tree_free(v);
}

/* The query string of the nth request with this op (since the mark), "" if none. */
static const char *fake_query(Fake *f, const char *op, size_t nth) {
        static char bufs[4][4096];
        static unsigned k;
        char *buf = bufs[k++ % ELEMENTSOF(bufs)];
        yajl_val v, ev = fake_events(f, &v);

        buf[0] = 0;
        for (size_t i = 0; i < ev->u.array.len; i++)
                if (streq_ptr(YAJL_GET_STRING(jget(ev->u.array.values[i], "op")), op) && nth-- == 0) {
                        snprintf(buf, sizeof(bufs[0]), "%s",
                                 strna(YAJL_GET_STRING(jget(ev->u.array.values[i], "query"))));
                        break;
                }
        yajl_tree_free(v);
        return buf;
}

/* Number of API requests (events) with this op since the mark. */
static size_t fake_requests(Fake *f, const char *op) {
        yajl_val v, ev = fake_events(f, &v);
        size_t n = 0;

        for (size_t i = 0; i < ev->u.array.len; i++)
                if (streq_ptr(YAJL_GET_STRING(jget(ev->u.array.values[i], "op")), op))
                        n++;
        yajl_tree_free(v);
        return n;
}

/* ---- starting and stopping the fake ---- */

static int fake_start(Fake *f) {
        char script[PATH_MAX], portfile[PATH_MAX + 16], key[PATH_MAX + 16];
        usec_t deadline;
        char *argv[16];
        int n = 0, port = 0;

        if (!find_in_path("python3")) {
                f->skip = "python3 not found: the fake Tokens API cannot run";
                return 0;
        }
        fake_script(script, sizeof(script));
        if (access(script, R_OK) < 0) {
                f->skip = "tests/fake-api/fake-api not found";
                return 0;
        }
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-api.XXXXXX");
        if (!mkdtemp(f->dir))
                return -errno;
        snprintf(portfile, sizeof(portfile), "%s/port", f->dir);
        snprintf(f->cert, sizeof(f->cert), "%s/cert.pem", f->dir);
        snprintf(key, sizeof(key), "%s/key.pem", f->dir);

        if (f->tls) {
                char *req[] = { "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                "-keyout", key, "-out", f->cert, "-days", "2",
                                "-subj", "/CN=localhost",
                                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", NULL };
                if (!find_in_path("openssl")) {
                        f->skip = "openssl not found: no certificate for the HTTPS test";
                        return 0;
                }
                if (run_quiet(req) < 0)
                        return -EIO;
        }

        argv[n++] = "python3";
        argv[n++] = script;
        argv[n++] = "--port";
        argv[n++] = "0";
        argv[n++] = "--port-file";
        argv[n++] = portfile;
        argv[n++] = "--timestamps";
        argv[n++] = (char *) f->timestamps;
        argv[n++] = "--quiet";
        if (f->tls) {
                argv[n++] = "--tls-cert";
                argv[n++] = f->cert;
                argv[n++] = "--tls-key";
                argv[n++] = key;
        }
        argv[n] = NULL;

        f->pid = fork();
        if (f->pid < 0)
                return -errno;
        if (f->pid == 0) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (null >= 0)
                        dup2(null, STDOUT_FILENO);
                execvp(argv[0], argv);
                _exit(127);
        }

        /* Wait for the port file: every 20 ms, for 10 s at most. */
        deadline = now_mono() + 10 * USEC_PER_SEC;
        for (;;) {
                FILE *pf = fopen(portfile, "re");
                int status;

                if (pf) {
                        if (fscanf(pf, "%d", &port) != 1)
                                port = 0;
                        fclose(pf);
                        if (port > 0)
                                break;
                }
                if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
                        f->pid = 0;
                        return -ECHILD;
                }
                if (now_mono() > deadline)
                        return -ETIMEDOUT;
                sleep_ms(20);
        }
        snprintf(f->url, sizeof(f->url), "%s://%s:%d", f->tls ? "https" : "http",
                 "127.0.0.1", port);
        f->ctl = curl_easy_init();
        return f->ctl ? 0 : -ENOMEM;
}

static void rm_dir(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        char p[PATH_MAX + 300];
                        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
                        unlink(p);
                }
        closedir(d);
        rmdir(dir);
}

static void fake_stop(Fake *f) {
        if (f->pid > 0) {
                usec_t deadline = now_mono() + 5 * USEC_PER_SEC;
                kill(f->pid, SIGTERM);
                while (waitpid(f->pid, NULL, WNOHANG) == 0) {
                        if (now_mono() > deadline) {
                                kill(f->pid, SIGKILL);
                                (void) waitpid(f->pid, NULL, 0);
                                break;
                        }
                        sleep_ms(20);
                }
                f->pid = 0;
        }
        if (f->ctl)
                curl_easy_cleanup(f->ctl);
        f->ctl = NULL;
        if (f->dir[0])
                rm_dir(f->dir);
        for (size_t i = 0; i < f->n_secrets; i++)
                free(f->secrets[i]);
        f->n_secrets = 0;
}

static int group_setup(void **state, const char *timestamps, bool tls) {
        Fake *f = calloc(1, sizeof(*f));
        int r;

        if (!f)
                return -1;
        f->timestamps = timestamps;
        f->tls = tls;
        r = fake_start(f);
        if (r < 0) {
                fprintf(stderr, "cannot start the fake API: %s\n", strerror(-r));
                fake_stop(f);
                free(f);
                return -1;
        }
        if (f->skip)
                fprintf(stderr, "SKIP: %s\n", f->skip);
        *state = f;
        return 0;
}

static int group_setup_ms(void **state) {
        return group_setup(state, "ms", false);
}
static int group_setup_iso(void **state) {
        return group_setup(state, "iso", false);
}
static int group_setup_tls(void **state) {
        return group_setup(state, "ms", true);
}

static int group_teardown(void **state) {
        Fake *f = *state;
        fake_stop(f);
        free(f);
        return 0;
}

/* Each test: a clean fake and a fresh management token allowed everything. */
static int test_setup(void **state) {
        Fake *f = *state;

        if (f->skip)
                return 0;
        ctl_ok(f, "POST", "/_fake/reset", "{}");
        f->since = 0;
        plant(f, "management", ALL_SCOPES, NULL, &f->mgmt);
        return 0;
}

#define NEED_FAKE(f)                                                    \
        do {                                                            \
                if ((f)->skip) {                                        \
                        fprintf(stderr, "SKIP: %s\n", (f)->skip);       \
                        skip();                                         \
                }                                                       \
        } while (0)

/* ---- running requests ---- */

static ApiEndpoint endpoint(Fake *f, ApiVersion v) {
        return (ApiEndpoint) {
                .env = "prod",
                .url = f->url,
                .version = v,
                .ca_file = f->tls ? f->cert : NULL,
                .timeout = 10 * USEC_PER_SEC,
                .auth_token = f->mgmt.token,
        };
}

static void run_ep(Fake *f, const ApiEndpoint *ep, ApiOp op, const ApiArgs *args, ApiResult *res) {
        _cleanup_(api_request_freep) ApiRequest *r = NULL;

        assert_int_equal(api_request_new(ep, op, args, &r), 0);
        assert_int_equal(api_request_get_op(r), op);
        assert_non_null(api_request_get_easy(r));
        assert_int_equal(api_request_perform(r, res), 0);
        assert_int_equal(res->op, op);
        assert_false(api_request_wants_more(r));
        if (res->class == API_OK)
                assert_null(res->error);
        else {
                assert_non_null(res->error);
                /* Names the environment and the request. */
                assert_true(strncmp(res->error, "prod: ", 6) == 0);
                assert_non_null(strstr(res->error, api_op_to_string(op)));
        }
        assert_no_secret(f, res->error);
        if (getenv("TEST_API_VERBOSE"))
                print_message("%s v%d -> class %d, HTTP %ld%s: %s\n", api_op_to_string(op), ep->version + 1,
                              res->class, res->status, res->maybe_done ? ", maybe done" : "",
                              strna(res->error));
}

static void run(Fake *f, ApiVersion v, ApiOp op, const ApiArgs *args, ApiResult *res) {
        ApiEndpoint ep = endpoint(f, v);
        run_ep(f, &ep, op, args, res);
}

static void assert_near(usec_t a, usec_t b, usec_t tolerance) {
        if ((a > b ? a - b : b - a) > tolerance) {
                print_error("%llu and %llu differ by more than %llu\n", (unsigned long long) a,
                            (unsigned long long) b, (unsigned long long) tolerance);
                fail();
        }
}

static void assert_contains(const char *s, const char *part) {
        if (!s || !strstr(s, part)) {
                print_error("\"%s\" does not contain \"%s\"\n", strna(s), part);
                fail();
        }
}

static char *scopes_1[] = { (char *) V1_SCOPE, NULL };
static char *scopes_2[] = { (char *) "apiTokens.read", (char *) "metrics.ingest", NULL };

/* ---- tests without the fake ---- */

static void test_op_names(void **state) {
        assert_string_equal(api_op_to_string(API_LOOKUP), "lookup");
        assert_string_equal(api_op_to_string(API_GET), "get");
        assert_string_equal(api_op_to_string(API_CREATE), "create");
        assert_string_equal(api_op_to_string(API_REVOKE), "revoke");
        assert_string_equal(api_op_to_string(API_DELETE), "delete");
        assert_string_equal(api_op_to_string(API_LIST), "list");
        assert_string_equal(api_op_to_string(API_ENABLE), "enable");
        assert_string_equal(api_op_to_string(_API_OP_MAX), "unknown");
}

#define TOKEN_A "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
#define TOKEN_A_ID "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX"
/* The ids raw_run() asks for. */
#define RAW_ID1 "0a1b2c3d-4e5f-4a6b-8c7d-0123456789ab"
#define RAW_ID2 "dt0c01.RAWRAWRAWRAWRAWRAWRAWRAW"

static void test_invalid_args(void **state) {
        ApiEndpoint ep = { .env = "prod", .url = "http://127.0.0.1:1", .version = API_V1,
                           .timeout = USEC_PER_SEC, .auth_token = TOKEN_A };
        ApiArgs a = { .id = RAW_ID1, .token = TOKEN_A, .name = "n", .scopes = scopes_1,
                      .expires_in = USEC_PER_DAY };
        ApiRequest *r = NULL;

        for (ApiOp op = 0; op < _API_OP_MAX; op++) {
                assert_int_equal(api_request_new(&ep, op, &a, &r), 0);
                r = api_request_free(r);
        }
        assert_int_equal(api_request_new(NULL, API_GET, &a, &r), -EINVAL);
        assert_int_equal(api_request_new(&ep, _API_OP_MAX, &a, &r), -EINVAL);
        assert_int_equal(api_request_new(&ep, API_GET, NULL, &r), -EINVAL);
        ep.url = "";
        assert_int_equal(api_request_new(&ep, API_LIST, NULL, &r), -EINVAL);
        ep.url = "http://127.0.0.1:1/";
        ep.auth_token = "dt0c01.X\r\nX-Evil: 1";
        assert_int_equal(api_request_new(&ep, API_LIST, NULL, &r), -EINVAL);
        ep.auth_token = NULL;
        assert_int_equal(api_request_new(&ep, API_LIST, NULL, &r), -EINVAL);
        ep.auth_token = TOKEN_A;

        a.id = "../../etc";
        assert_int_equal(api_request_new(&ep, API_GET, &a, &r), -EINVAL);
        a.id = "";
        assert_int_equal(api_request_new(&ep, API_DELETE, &a, &r), -EINVAL);
        a.id = TOKEN_A; /* a secret is never an id */
        assert_int_equal(api_request_new(&ep, API_REVOKE, &a, &r), -EINVAL);
        a.id = NULL;
        assert_int_equal(api_request_new(&ep, API_GET, &a, &r), -EINVAL);
        a.id = "abc"; /* v1 ids are UUIDs */
        assert_int_equal(api_request_new(&ep, API_DELETE, &a, &r), -EINVAL);
        a.id = RAW_ID2; /* a v2 id is no v1 id */
        assert_int_equal(api_request_new(&ep, API_REVOKE, &a, &r), -EINVAL);
        a.id = RAW_ID1;

        a.token = NULL;
        assert_int_equal(api_request_new(&ep, API_LOOKUP, &a, &r), -EINVAL);
        a.token = "with space";
        assert_int_equal(api_request_new(&ep, API_LOOKUP, &a, &r), -EINVAL);
        a.token = TOKEN_A;

        a.expires_in = 0;
        assert_int_equal(api_request_new(&ep, API_CREATE, &a, &r), -EINVAL);
        a.expires_in = USEC_INFINITY;
        assert_int_equal(api_request_new(&ep, API_CREATE, &a, &r), 0);
        r = api_request_free(r);
        a.scopes = NULL;
        assert_int_equal(api_request_new(&ep, API_CREATE, &a, &r), -EINVAL);
        a.scopes = (char *[]) { NULL };
        assert_int_equal(api_request_new(&ep, API_CREATE, &a, &r), -EINVAL);
        a.scopes = scopes_1;
        a.name = "";
        assert_int_equal(api_request_new(&ep, API_CREATE, &a, &r), -EINVAL);
        a.name = "bad \xff utf-8";
        assert_int_equal(api_request_new(&ep, API_CREATE, &a, &r), -EINVAL);
        a.name = "forged\nlog line";
        assert_int_equal(api_request_new(&ep, API_CREATE, &a, &r), -EINVAL);
        a.name = "n";

        /* LIST: owner and page size. */
        a.owner = "someone\r\nX-Evil: 1";
        assert_int_equal(api_request_new(&ep, API_LIST, &a, &r), -EINVAL);
        a.owner = "";
        assert_int_equal(api_request_new(&ep, API_LIST, &a, &r), -EINVAL);
        a.owner = "jane@example.com";
        a.page_size = API_V1_LIST_LIMIT + 1;
        assert_int_equal(api_request_new(&ep, API_LIST, &a, &r), -EINVAL);
        a.page_size = 1;
        assert_int_equal(api_request_new(&ep, API_LIST, &a, &r), 0);
        r = api_request_free(r);
        ep.version = API_V2;
        a.page_size = 99;
        assert_int_equal(api_request_new(&ep, API_LIST, &a, &r), -EINVAL);
        a.page_size = 10001;
        assert_int_equal(api_request_new(&ep, API_LIST, &a, &r), -EINVAL);
        a.page_size = 100;
        assert_int_equal(api_request_new(&ep, API_LIST, &a, &r), 0);
        r = api_request_free(r);

        /* v2 ids */
        a.id = RAW_ID1; /* tokens from before 2021: permissive */
        assert_int_equal(api_request_new(&ep, API_GET, &a, &r), 0);
        r = api_request_free(r);
        a.id = "dt0c01.NOPE";
        assert_int_equal(api_request_new(&ep, API_GET, &a, &r), -EINVAL);
        a.id = "..";
        assert_int_equal(api_request_new(&ep, API_DELETE, &a, &r), -EINVAL);
        a.id = "a/b";
        assert_int_equal(api_request_new(&ep, API_DELETE, &a, &r), -EINVAL);
        a.id = TOKEN_A;
        assert_int_equal(api_request_new(&ep, API_DELETE, &a, &r), -EINVAL);
        assert_null(r);

        assert_null(api_request_free(NULL));
        api_result_done(NULL);
        token_info_done(NULL);
}

static void test_connection_refused(void **state) {
        Fake f = {};
        ApiEndpoint ep = { .env = "prod", .url = "http://127.0.0.1:1", .version = API_V2,
                           .timeout = 5 * USEC_PER_SEC, .auth_token = TOKEN_A };
        ApiArgs a = { .name = "n", .scopes = scopes_1, .expires_in = USEC_PER_DAY };
        ApiResult res = {};

        register_secret(&f, TOKEN_A);
        run_ep(&f, &ep, API_CREATE, &a, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_int_equal(res.status, 0);
        assert_false(res.maybe_done); /* never sent */
        assert_contains(res.error, "prod: create: ");
        api_result_done(&res);
        free(f.secrets[0]);
}

/* A server that gives every connection the same canned answer. "chunked" answers with
 * a chunked body of that many bytes of a JSON string instead (no Content-Length). */
typedef struct Raw {
        pid_t pid;
        char url[64];
} Raw;

static void raw_handle(int fd, const char *answer, size_t len, size_t chunked) {
        char req[16384], *subst = NULL;
        size_t got = 0;
        char *end, *at;

        /* "@PID@" in the answer becomes this connection's pid: a new answer each time. */
        if ((at = strstr(answer, "@PID@"))) {
                if (asprintf(&subst, "%.*s%d%s", (int) (at - answer), answer, (int) getpid(), at + 5) < 0)
                        _exit(1);
                answer = subst;
                len = strlen(subst);
        }

        /* Read the whole request (headers and body), so closing sends no RST. */
        for (;;) {
                ssize_t k = read(fd, req + got, sizeof(req) - 1 - got);
                if (k <= 0)
                        _exit(0);
                got += (size_t) k;
                req[got] = 0;
                end = strstr(req, "\r\n\r\n");
                if (end) {
                        char *cl = strcasestr(req, "\r\nContent-Length:");
                        size_t need = (size_t) (end + 4 - req) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
                        if (got >= need || got == sizeof(req) - 1)
                                break;
                }
        }
        if (chunked) {
                static char chunk[65536];
                const char *head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                char line[32];
                memset(chunk, 'x', sizeof(chunk));
                if (write(fd, head, strlen(head)) < 0 || write(fd, "3\r\n{\"a\r\n", 8) < 0)
                        _exit(0);
                for (size_t sent = 0; sent < chunked; sent += sizeof(chunk)) {
                        int n = snprintf(line, sizeof(line), "%zx\r\n", sizeof(chunk));
                        if (write(fd, line, (size_t) n) < 0 || write(fd, chunk, sizeof(chunk)) < 0 ||
                            write(fd, "\r\n", 2) < 0)
                                _exit(0);
                }
                _exit(0);
        }
        while (len > 0) {
                ssize_t k = write(fd, answer, len);
                if (k <= 0)
                        _exit(0);
                answer += k;
                len -= (size_t) k;
        }
        shutdown(fd, SHUT_WR);
        while (read(fd, req, sizeof(req)) > 0)
                ;
        _exit(0);
}

static void raw_start(Raw *raw, const char *answer, size_t chunked) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(listen(fd, 16), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &alen), 0);
        snprintf(raw->url, sizeof(raw->url), "http://127.0.0.1:%d", ntohs(a.sin_port));
        raw->pid = fork();
        assert_true(raw->pid >= 0);
        if (raw->pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                signal(SIGCHLD, SIG_IGN);
                for (;;) {
                        int c = accept(fd, NULL, NULL);
                        if (c < 0)
                                _exit(errno == EINTR ? 0 : 1);
                        if (fork() == 0)
                                raw_handle(c, answer, strlen(answer), chunked);
                        close(c);
                }
        }
        close(fd);
}

static void raw_stop(Raw *raw) {
        kill(raw->pid, SIGKILL);
        (void) waitpid(raw->pid, NULL, 0);
}

/* extra_secret: another secret that must not show up in the error, or NULL */
static void raw_run_args(const char *answer, size_t chunked, ApiVersion v, ApiOp op, const ApiArgs *a,
                         const char *extra_secret, ApiResult *res) {
        Fake f = {};
        Raw raw;
        ApiEndpoint ep = { .env = "prod", .version = v, .timeout = 10 * USEC_PER_SEC,
                           .auth_token = TOKEN_A };

        raw_start(&raw, answer, chunked);
        ep.url = raw.url;
        register_secret(&f, TOKEN_A);
        if (extra_secret)
                register_secret(&f, extra_secret);
        run_ep(&f, &ep, op, a, res);
        raw_stop(&raw);
        for (size_t i = 0; i < f.n_secrets; i++)
                free(f.secrets[i]);
}

static void raw_run(const char *answer, size_t chunked, ApiVersion v, ApiOp op, ApiResult *res) {
        ApiArgs a = { .id = v == API_V1 ? RAW_ID1 : RAW_ID2, .token = TOKEN_A, .name = "n",
                      .scopes = scopes_1, .expires_in = USEC_PER_DAY };

        raw_run_args(answer, chunked, v, op, &a, NULL, res);
}

#define HTTP200 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"

static void test_raw_answers(void **state) {
        ApiResult res = {};
        struct rusage before, after;
        char *deep;

        /* Numeric strings, doubles, nulls, unknown nested fields: all fine. */
        raw_run(HTTP200 "{\"id\":\"" RAW_ID1 "\",\"name\":\"n\",\"x\":{\"y\":[1,{\"z\":null}]},"
                        "\"created\":\"1700000000123\",\"expires\":1.7e12,\"lastUse\":null,"
                        "\"revoked\":false,\"userId\":null,\"scopes\":[\"a\",\"b\"],\"more\":[[]]}",
                0, API_V1, API_GET, &res);
        assert_int_equal(res.class, API_OK);
        assert_string_equal(res.info.id, RAW_ID1);
        assert_null(res.info.owner);
        assert_int_equal(res.info.created, 1700000000123ULL * USEC_PER_MSEC);
        assert_int_equal(res.info.expires, 1700000000000ULL * USEC_PER_MSEC);
        assert_int_equal(res.info.last_use, 0);
        assert_string_equal(res.info.scopes[1], "b");
        api_result_done(&res);

        /* An empty scopes list: empty, never NULL; no expiry given: never. */
        raw_run(HTTP200 "{\"id\":\"" RAW_ID1 "\",\"name\":\"n\",\"revoked\":true,\"scopes\":[]}", 0,
                API_V1, API_LOOKUP, &res);
        assert_int_equal(res.class, API_OK);
        assert_true(res.info.revoked);
        assert_non_null(res.info.scopes);
        assert_null(res.info.scopes[0]);
        assert_int_equal(res.info.expires, USEC_INFINITY);
        api_result_done(&res);

        /* Missing scopes or revoked: not the documented shape. */
        raw_run(HTTP200 "{\"id\":\"" RAW_ID1 "\",\"name\":\"n\",\"revoked\":false}", 0, API_V1, API_LOOKUP, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "\"scopes\" is missing");
        api_result_done(&res);
        raw_run(HTTP200 "{\"id\":\"" RAW_ID2 "\",\"name\":\"n\",\"scopes\":[]}", 0, API_V2, API_GET, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "\"enabled\" is missing");
        api_result_done(&res);

        /* Required fields. */
        raw_run(HTTP200 "{\"name\":\"n\"}", 0, API_V2, API_GET, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "prod: get " RAW_ID2 ": malformed answer (HTTP 200, application/json): \"id\" is missing");
        api_result_done(&res);

        /* Nested 200000 deep: refused before yajl sees it (its tree free recurses). */
        deep = malloc(strlen(HTTP200) + 400001);
        assert_non_null(deep);
        strcpy(deep, HTTP200);
        memset(deep + strlen(HTTP200), '[', 200000);
        memset(deep + strlen(HTTP200) + 200000, ']', 200000);
        deep[strlen(HTTP200) + 400000] = 0;
        raw_run(deep, 0, API_V1, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "prod: list: malformed answer");
        api_result_done(&res);
        free(deep);

        /* Comments are not JSON. */
        raw_run(HTTP200 "{\"values\":[] /* \" */}", 0, API_V1, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        api_result_done(&res);

        /* A chunked answer of 20 MiB: the write callback stops it at the cap. */
        getrusage(RUSAGE_SELF, &before);
        raw_run("", 20U << 20, API_V1, API_CREATE, &res);
        getrusage(RUSAGE_SELF, &after);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_true(res.maybe_done);
        assert_contains(res.error, "prod: create: answer too large");
        assert_rss_growth_below(before, after, 40 * 1024);
        api_result_done(&res);

        /* Not followed. */
        raw_run("HTTP/1.1 301 Moved\r\nLocation: http://evil.example/\r\nContent-Length: 0\r\n\r\n", 0,
                API_V1, API_LIST, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 301);
        assert_contains(res.error, "HTTP 301");
        api_result_done(&res);

        /* Error messages are cut and cleaned of control characters. */
        raw_run("HTTP/1.1 400 Bad\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                "{\"error\":{\"code\":400,\"message\":\"line1\\nline2 "
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}",
                0, API_V1, API_DELETE, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_contains(res.error, "prod: delete " RAW_ID1 ": HTTP 400: line1 line2 xxx");
        assert_contains(res.error, "...");
        assert_null(strchr(res.error, '\n'));
        assert_true(strlen(res.error) < 350); /* the message cut at 256 bytes */
        api_result_done(&res);

        /* A 2xx answer to CREATE with a valid body but no token. */
        raw_run("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                "{\"id\":\"" RAW_ID2 "\"}", 0, API_V2, API_CREATE, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_true(res.maybe_done);
        assert_null(res.token);
        assert_contains(res.error, "\"token\" is missing");
        api_result_done(&res);
}


/* ---- the documented answer and nothing else (raw answers) ---- */

#define HEAD(status, ctype) "HTTP/1.1 " status "\r\nContent-Type: " ctype "\r\nConnection: close\r\n\r\n"
#define HEAD_NONE(status) "HTTP/1.1 " status "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
#define V1_INFO(id) "{\"id\":\"" id "\",\"name\":\"n\",\"revoked\":false,\"scopes\":[\"a\"]"
#define V2_INFO(id) "{\"id\":\"" id "\",\"name\":\"n\",\"enabled\":true,\"scopes\":[\"a\"]"

static void assert_unexpected(ApiResult *res, long status, bool maybe_done, const char *error) {
        assert_int_equal(res->class, API_TRANSIENT);
        assert_int_equal(res->status, status);
        assert_int_equal(res->maybe_done, maybe_done);
        assert_null(res->token);
        assert_null(res->list);
        assert_null(res->info.id);
        assert_string_equal(res->error, error);
        api_result_done(res);
}

static void test_unexpected_answers(void **state) {
        ApiResult res = {};

        /* A proxy's 200 page to a revoke: not revoked, maybe done, retried. */
        raw_run(HEAD("200 OK", "text/html; charset=utf-8") "<html>fine</html>", 0, API_V1, API_REVOKE, &res);
        assert_unexpected(&res, 200, true, "prod: revoke " RAW_ID1 ": unexpected answer HTTP 200 (text/html), expected 204");
        raw_run(HEAD("200 OK", "application/json") "{}", 0, API_V2, API_REVOKE, &res);
        assert_unexpected(&res, 200, true,
                          "prod: revoke " RAW_ID2 ": unexpected answer HTTP 200 (application/json), expected 204");
        /* Likewise a 200 to an enable: strict, 204 only. */
        raw_run(HEAD("200 OK", "application/json") "{}", 0, API_V1, API_ENABLE, &res);
        assert_unexpected(&res, 200, true,
                          "prod: enable " RAW_ID1 ": unexpected answer HTTP 200 (application/json), expected 204");
        raw_run(HEAD("200 OK", "text/html") "<html>deleted</html>", 0, API_V2, API_DELETE, &res);
        assert_unexpected(&res, 200, true, "prod: delete " RAW_ID2 ": unexpected answer HTTP 200 (text/html), expected 204");
        raw_run(HEAD_NONE("202 Accepted"), 0, API_V1, API_DELETE, &res);
        assert_unexpected(&res, 202, true,
                          "prod: delete " RAW_ID1 ": unexpected answer HTTP 202 (no content type), expected 204");

        /* DELETE 404: gone when it is the API's (empty or JSON), not when it is a page. */
        raw_run(HEAD("404 Not Found", "text/html") "<html>no such page</html>", 0, API_V1, API_DELETE, &res);
        assert_unexpected(&res, 404, true,
                          "prod: delete " RAW_ID1 ": unexpected answer HTTP 404 (text/html), expected 204");
        raw_run(HEAD_NONE("404 Not Found"), 0, API_V2, API_DELETE, &res);
        assert_int_equal(res.class, API_OK);
        api_result_done(&res);
        raw_run(HEAD("404 Not Found", "application/json") "{\"error\":{\"code\":404,\"message\":\"gone\"}}", 0,
                API_V1, API_DELETE, &res);
        assert_int_equal(res.class, API_OK);
        api_result_done(&res);

        /* CREATE is 201: a 200 with a perfectly good token is not taken. */
        raw_run(HEAD("200 OK", "application/json") "{\"token\":\"" TOKEN_A "\"}", 0, API_V1, API_CREATE, &res);
        assert_unexpected(&res, 200, true,
                          "prod: create: unexpected answer HTTP 200 (application/json), expected 201 with application/json");
        raw_run(HEAD("201 Created", "text/plain") "{\"token\":\"" TOKEN_A "\"}", 0, API_V1, API_CREATE, &res);
        assert_unexpected(&res, 201, true,
                          "prod: create: unexpected answer HTTP 201 (text/plain), expected 201 with application/json");

        /* LOOKUP, GET, LIST: 200 and JSON. */
        raw_run(HEAD("200 OK", "text/plain") V1_INFO(RAW_ID1) "}", 0, API_V1, API_GET, &res);
        assert_unexpected(&res, 200, false,
                          "prod: get " RAW_ID1 ": unexpected answer HTTP 200 (text/plain), expected 200 with application/json");
        raw_run(HEAD("200 OK", "application/jsonp") V1_INFO(RAW_ID1) "}", 0, API_V1, API_GET, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        api_result_done(&res);
        raw_run(HEAD("203 Non-Authoritative Information", "application/json") V2_INFO(TOKEN_A_ID) "}", 0, API_V2,
                API_LOOKUP, &res);
        assert_unexpected(&res, 203, false,
                          "prod: lookup " TOKEN_A_ID ": unexpected answer HTTP 203 (application/json), expected 200 "
                          "with application/json");
        raw_run("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"values\":[]}", 0, API_V1, API_LIST, &res);
        assert_unexpected(&res, 200, false,
                          "prod: list: unexpected answer HTTP 200 (no content type), expected 200 with application/json");

        /* The content type in any case, with parameters. */
        raw_run(HEAD("200 OK", "Application/JSON ; charset=UTF-8") V1_INFO(RAW_ID1) "}", 0, API_V1, API_GET, &res);
        assert_int_equal(res.class, API_OK);
        api_result_done(&res);
}

static void test_error_bodies(void **state) {
        ApiResult res = {};

        /* {"error":...} and [{"error":...}] */
        raw_run(HEAD("400 Bad Request", "application/json") "[{\"error\":{\"code\":400,\"message\":\"Array form\"}}]", 0,
                API_V2, API_CREATE, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_string_equal(res.error, "prod: create: HTTP 400: Array form");
        api_result_done(&res);
        raw_run(HEAD("403 Forbidden", "application/json; charset=utf-8")
                "{\"error\":{\"code\":403,\"message\":\"Object form\"}}", 0, API_V1, API_LIST, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_string_equal(res.error, "prod: list: HTTP 403: Object form");
        api_result_done(&res);
        raw_run(HEAD("404 Not Found", "application/json") "[]", 0, API_V2, API_GET, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_string_equal(res.error, "prod: get " RAW_ID2 ": HTTP 404 (application/json answer)");
        api_result_done(&res);
        /* A message from a page that is not JSON is not quoted. */
        raw_run(HEAD("401 Unauthorized", "text/html") "{\"error\":{\"message\":\"pretend\"}}", 0, API_V2, API_LIST, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_string_equal(res.error, "prod: list: HTTP 401 (text/html answer)");
        api_result_done(&res);
}

#define HTTP201 HEAD("201 Created", "application/json")
/* A token in the format from before 2021: one alphanumeric string without dots. */
#define LEGACY "Ab3dE5gH7jK9mN1pQ3sT5"

static void test_create_answers(void **state) {
        ApiResult res = {};

        raw_run(HTTP201 "{\"id\":\"" TOKEN_A_ID "\",\"token\":\"" TOKEN_A "\",\"expirationDate\":\"2030-01-01T00:00:00Z\"}",
                0, API_V2, API_CREATE, &res);
        assert_int_equal(res.class, API_OK);
        assert_string_equal(res.token, TOKEN_A);
        assert_string_equal(res.info.id, TOKEN_A_ID);
        assert_int_equal(res.info.expires, 1893456000ULL * USEC_PER_SEC);
        api_result_done(&res);

        /* v2: the id must be there, valid, and the token's. */
        raw_run(HTTP201 "{\"token\":\"" TOKEN_A "\"}", 0, API_V2, API_CREATE, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_true(res.maybe_done);
        assert_contains(res.error, "malformed answer (HTTP 201, application/json): \"id\" is missing");
        assert_null(res.token);
        api_result_done(&res);
        raw_run(HTTP201 "{\"id\":\"" RAW_ID2 "\",\"token\":\"" TOKEN_A "\"}", 0, API_V2, API_CREATE, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "\"id\" is not the id of the token");
        assert_null(res.token);
        assert_null(res.info.id);
        api_result_done(&res);
        raw_run(HTTP201 "{\"id\":\"../../x\",\"token\":\"" TOKEN_A "\"}", 0, API_V2, API_CREATE, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "\"id\" is not a valid v2 token id");
        api_result_done(&res);

        /* v1: the token; an id only if valid. */
        raw_run(HTTP201 "{\"token\":\"dt0c01.SHORT.X\"}", 0, API_V1, API_CREATE, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "\"token\" is not a valid token");
        api_result_done(&res);
        raw_run(HTTP201 "{\"token\":\"" TOKEN_A "\",\"id\":\"x\"}", 0, API_V1, API_CREATE, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_contains(res.error, "\"id\" is not a valid v1 token id");
        api_result_done(&res);

        /* A token from before 2021, accepted as soon as util's token_is_valid() knows the
         * format; never quoted in an error either way. */
        raw_run_args(HTTP201 "{\"token\":\"" LEGACY "\"}", 0, API_V1, API_CREATE,
                     &(ApiArgs) { .name = "n", .scopes = scopes_1, .expires_in = USEC_PER_DAY }, LEGACY, &res);
        if (token_is_valid(LEGACY)) {
                assert_int_equal(res.class, API_OK);
                assert_string_equal(res.token, LEGACY);
        } else {
                print_message("util does not accept tokens from before 2021 (yet): checking the refusal\n");
                assert_int_equal(res.class, API_TRANSIENT);
                assert_contains(res.error, "\"token\" is not a valid token");
        }
        api_result_done(&res);
        raw_run_args(HTTP201 "{\"id\":\"" RAW_ID1 "\",\"token\":\"" LEGACY "\"}", 0, API_V2, API_CREATE,
                     &(ApiArgs) { .name = "n", .scopes = scopes_1, .expires_in = USEC_PER_DAY }, LEGACY, &res);
        if (token_is_valid(LEGACY)) {
                assert_int_equal(res.class, API_OK);
                assert_string_equal(res.info.id, RAW_ID1);
        } else
                assert_int_equal(res.class, API_TRANSIENT);
        api_result_done(&res);
}

static void test_answers_validated(void **state) {
        static const struct {
                const char *answer;
                ApiVersion v;
                ApiOp op;
                const char *why;   /* NULL: fine */
        } cases[] = {
                /* The token asked for and no other. */
                { V1_INFO("0a1b2c3d-4e5f-4a6b-8c7d-0123456789ac") "}", API_V1, API_GET, "\"id\" is not the token asked for" },
                { V1_INFO("0A1B2C3D-4E5F-4A6B-8C7D-0123456789AB") "}", API_V1, API_GET, NULL },
                { V2_INFO("dt0c01.RAWRAWRAWRAWRAWRAWRAWRAX") "}", API_V2, API_GET, "\"id\" is not the token asked for" },
                { V2_INFO(RAW_ID2) "}", API_V2, API_LOOKUP, "\"id\" is not the token looked up" },
                { V2_INFO(TOKEN_A_ID) "}", API_V2, API_LOOKUP, NULL },
                { V1_INFO("../../../api/v1/tokens") "}", API_V1, API_LOOKUP, "\"id\" is not a valid v1 token id" },
                { V2_INFO(TOKEN_A) "}", API_V2, API_LOOKUP, "\"id\" is not a valid v2 token id" },
                /* Names and owners: no control characters, UTF-8, bounded. */
                { "{\"id\":\"" RAW_ID1 "\",\"name\":\"forged\\nlog line\",\"revoked\":false,\"scopes\":[]}", API_V1,
                  API_GET, "\"name\" is not valid" },
                { "{\"id\":\"" RAW_ID1 "\",\"name\":\"c1 \\u0085 control\",\"revoked\":false,\"scopes\":[]}", API_V1,
                  API_GET, "\"name\" is not valid" },
                { "{\"id\":\"" RAW_ID1 "\",\"name\":\"\",\"revoked\":false,\"scopes\":[]}", API_V1, API_GET,
                  "\"name\" is not valid" },
                { "{\"id\":\"" RAW_ID1 "\",\"name\":\"caf\\u00e9 \\u2603\",\"revoked\":false,\"scopes\":[]}", API_V1,
                  API_GET, NULL },
                { V2_INFO(RAW_ID2) ",\"owner\":\"\\u001b[31mroot\"}", API_V2, API_GET, "\"owner\" is not valid" },
                { V1_INFO(RAW_ID1) ",\"userId\":\"nul\\u0000cut\"}", API_V1, API_GET, "expected JSON" },
                { "{\"id\":\"" RAW_ID1 "\",\"name\":\"n\",\"revoked\":false,\"scopes\":[\"a b\"]}", API_V1, API_GET,
                  "\"scopes\" holds something that is not a scope" },
                /* Lists: one bad entry spoils the answer. */
                { "{\"values\":[{\"id\":\"" RAW_ID1 "\",\"name\":\"a\"},{\"id\":\"not-a-uuid\",\"name\":\"b\"}]}",
                  API_V1, API_LIST, "values[1]: \"id\" is not a valid v1 token id" },
                { "{\"apiTokens\":[{\"name\":\"a\"}]}", API_V2, API_LIST, "apiTokens[0]: \"id\" is missing" },
                { "{\"apiTokens\":[{\"id\":\"" RAW_ID2 "\",\"name\":\"a\\rb\"}]}", API_V2, API_LIST,
                  "apiTokens[0]: \"name\" is not valid" },
                { "{\"totalCount\":\"many\",\"apiTokens\":[]}", API_V2, API_LIST, "\"totalCount\" is not a count" },
                { "{\"apiTokens\":[],\"nextPageKey\":\"a key\"}", API_V2, API_LIST, "\"nextPageKey\" is too long or holds" },
                { "{\"values\":{}}", API_V1, API_LIST, "\"values\" is not an array" },
                /* Timestamps: no wrapping. */
                { V1_INFO(RAW_ID1) ",\"created\":-1}", API_V1, API_GET, "\"created\" is out of range" },
                { V1_INFO(RAW_ID1) ",\"created\":18446744073709552}", API_V1, API_GET, "\"created\" is out of range" },
                { V1_INFO(RAW_ID1) ",\"expires\":\"999999999999999999\"}", API_V1, API_GET, "\"expires\" is out of range" },
                { V1_INFO(RAW_ID1) ",\"expires\":\"99999999999999999999999\"}", API_V1, API_GET, "\"expires\" is out of range" },
                { V1_INFO(RAW_ID1) ",\"lastUse\":99999999999999999999}", API_V1, API_GET, "\"lastUse\" is out of range" },
                { V1_INFO(RAW_ID1) ",\"lastUse\":1e300}", API_V1, API_GET, "\"lastUse\" is out of range" },
                { V1_INFO(RAW_ID1) ",\"lastUse\":1e400}", API_V1, API_GET, "\"lastUse\" is out of range" },
                { V2_INFO(RAW_ID2) ",\"creationDate\":-1e3}", API_V2, API_GET, "\"creationDate\" is out of range" },
                { V1_INFO(RAW_ID1) ",\"created\":18446744073709551}", API_V1, API_GET, NULL },
        };
        ApiResult res = {};

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *answer = strdup_printf(HEAD("200 OK", "application/json") "%s", cases[i].answer);

                raw_run(answer, 0, cases[i].v, cases[i].op, &res);
                if (!cases[i].why) {
                        if (res.class != API_OK)
                                print_error("case %zu: %s\n", i, strna(res.error));
                        assert_int_equal(res.class, API_OK);
                } else {
                        if (res.class != API_TRANSIENT)
                                print_error("case %zu: accepted\n", i);
                        assert_int_equal(res.class, API_TRANSIENT);
                        assert_contains(res.error, "malformed answer (HTTP 200, application/json): ");
                        assert_contains(res.error, cases[i].why);
                        assert_null(res.info.id);
                        assert_null(res.list);
                        /* Never quoted: what the server sent stays out of the message. */
                        assert_null(strstr(res.error, "forged"));
                        assert_null(strstr(res.error, "root"));
                }
                if (i == ELEMENTSOF(cases) - 1)
                        assert_int_equal(res.info.created, 18446744073709551ULL * USEC_PER_MSEC);
                api_result_done(&res);
        }
}

static void test_v2_page_loops(void **state) {
        ApiResult res = {};
        usec_t start;

        /* A server that sends the same key again. */
        raw_run(HTTP200 "{\"apiTokens\":[" V2_INFO(RAW_ID2) "}],\"nextPageKey\":\"SAME\"}", 0, API_V2, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_null(res.list);
        assert_string_equal(res.error,
                            "prod: list: malformed answer (HTTP 200, application/json): \"nextPageKey\" repeats the key of page 2");
        api_result_done(&res);

        /* ... and one with a new key every time: bounded. */
        start = now_mono();
        raw_run(HTTP200 "{\"apiTokens\":[],\"nextPageKey\":\"page-@PID@\"}", 0, API_V2, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_null(res.list);
        assert_contains(res.error, "more than 1000 pages");
        assert_true(now_mono() - start < 60 * USEC_PER_SEC);
        api_result_done(&res);

        /* null and absent keys end the list. */
        raw_run(HTTP200 "{\"apiTokens\":[" V2_INFO(RAW_ID2) ",\"owner\":\"o@example.com\",\"creationDate\":"
                "\"2024-01-02T03:04:05Z\"}],\"nextPageKey\":null,\"totalCount\":1,\"pageSize\":1000}",
                0, API_V2, API_LIST, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.n_list, 1);
        assert_string_equal(res.list[0].owner, "o@example.com");
        assert_int_equal(res.list[0].created, 1704164645ULL * USEC_PER_SEC);
        api_result_done(&res);
}

static void test_retry_headers(void **state) {
        ApiResult res = {};
        char answer[512];
        usec_t now = now_realtime();

        /* 503: Retry-After counts, X-RateLimit-Reset (for 429 only) does not. */
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\nX-RateLimit-Reset: %llu\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n", (unsigned long long) (now + 600 * USEC_PER_SEC));
        raw_run(answer, 0, API_V1, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_near(res.retry_at, now + 30 * USEC_PER_SEC, 5 * USEC_PER_SEC);
        api_result_done(&res);

        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 503 Service Unavailable\r\nX-RateLimit-Reset: %llu\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n", (unsigned long long) (now + 600 * USEC_PER_SEC));
        raw_run(answer, 0, API_V1, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_int_equal(res.retry_at, 0);
        api_result_done(&res);

        /* Neither on a 500. */
        raw_run("HTTP/1.1 500 Internal Server Error\r\nRetry-After: 30\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n", 0, API_V2, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_int_equal(res.retry_at, 0);
        api_result_done(&res);

        /* 429: X-RateLimit-Reset a day ahead is honoured for an hour at most. */
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 429 Too Many Requests\r\nX-RateLimit-Reset: %llu\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n", (unsigned long long) (now + USEC_PER_DAY));
        raw_run(answer, 0, API_V2, API_LIST, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_near(res.retry_at, now + USEC_PER_HOUR, 5 * USEC_PER_SEC);
        api_result_done(&res);
}

/* ---- v1 ---- */

static void check_info(const TokenInfo *t, const Planted *p, bool v1, const char *name) {
        assert_string_equal(t->id, v1 ? p->id : p->pub);
        assert_string_equal(t->name, name);
        assert_string_equal(t->owner, "fake-user@example.com");
        assert_int_equal(t->created, p->created);
        assert_int_equal(t->expires, p->expires);
        assert_non_null(t->scopes);
}

static void test_v1_lookup_get(void **state) {
        Fake *f = *state;
        ApiResult res = {};
        Planted p;
        NEED_FAKE(f);

        plant(f, "job-a", "[\"metrics.ingest\",\"logs.ingest\"]", "\"expiresInMs\":86400000", &p);
        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = p.token }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.status, 200);
        check_info(&res.info, &p, true, "job-a");
        assert_false(res.info.revoked);
        assert_int_equal(res.info.last_use, 0); /* never used */
        assert_string_equal(res.info.scopes[0], "metrics.ingest");
        assert_string_equal(res.info.scopes[1], "logs.ingest");
        assert_null(res.info.scopes[2]);
        assert_near(res.info.expires, now_realtime() + USEC_PER_DAY, 60 * USEC_PER_SEC);
        api_result_done(&res);

        run(f, API_V1, API_GET, &(ApiArgs) { .id = p.id }, &res);
        assert_int_equal(res.class, API_OK);
        check_info(&res.info, &p, true, "job-a");
        api_result_done(&res);

        /* The management token itself: used, so lastUse is set; no expiry. */
        run(f, API_V1, API_GET, &(ApiArgs) { .id = f->mgmt.id }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.info.expires, USEC_INFINITY);
        assert_near(res.info.last_use, now_realtime(), 60 * USEC_PER_SEC);
        api_result_done(&res);

        /* Unknown token: 404, permanent, named by its public part only. */
        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = TOKEN_A }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 404);
        assert_string_equal(res.error, "prod: lookup dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX: HTTP 404: Token not found");
        api_result_done(&res);

        /* GET of an unknown id: 404 is permanent. */
        run(f, API_V1, API_GET, &(ApiArgs) { .id = "00000000-0000-0000-0000-000000000000" }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 404);
        assert_contains(res.error, "prod: get 00000000-0000-0000-0000-000000000000: HTTP 404: ");
        api_result_done(&res);
}

static void test_v1_create(void **state) {
        Fake *f = *state;
        ApiResult res = {}, look = {};
        usec_t before = now_realtime();
        NEED_FAKE(f);

        run(f, API_V1, API_CREATE,
            &(ApiArgs) { .name = "new \"quoted\" \\ name", .scopes = scopes_2, .expires_in = 3 * USEC_PER_HOUR },
            &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.status, 201);
        assert_true(token_is_valid(res.token));
        assert_null(res.info.id); /* v1 says only the token */
        register_secret(f, res.token);

        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = res.token }, &look);
        assert_int_equal(look.class, API_OK);
        assert_string_equal(look.info.name, "new \"quoted\" \\ name");
        assert_string_equal(look.info.scopes[0], "apiTokens.read");
        assert_string_equal(look.info.scopes[1], "metrics.ingest");
        assert_near(look.info.expires, before + 3 * USEC_PER_HOUR, 5 * USEC_PER_SEC);
        api_result_done(&look);
        api_result_done(&res);

        /* Never expires: no expiresIn sent. */
        run(f, API_V1, API_CREATE, &(ApiArgs) { .name = "forever", .scopes = scopes_2, .expires_in = USEC_INFINITY },
            &res);
        assert_int_equal(res.class, API_OK);
        register_secret(f, res.token);
        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = res.token }, &look);
        assert_int_equal(look.info.expires, USEC_INFINITY);
        api_result_done(&look);
        api_result_done(&res);
}

static void test_revoke_delete(Fake *f, ApiVersion v) {
        bool v1 = v == API_V1;
        ApiResult res = {};
        Planted p;
        const char *id;

        plant(f, "old", "[\"metrics.ingest\"]", NULL, &p);
        id = v1 ? p.id : p.pub;

        run(f, v, API_REVOKE, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.status, 204);
        api_result_done(&res);
        run(f, v, API_GET, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_OK);
        assert_true(res.info.revoked);
        api_result_done(&res);

        /* Enabled again (a restore): v1 revoked:false, v2 enabled:true, 204; the fake
         * logs such a PUT as op "update". Twice is fine. */
        fake_mark(f);
        for (int i = 0; i < 2; i++) {
                run(f, v, API_ENABLE, &(ApiArgs) { .id = id }, &res);
                assert_int_equal(res.class, API_OK);
                assert_int_equal(res.status, 204);
                assert_null(res.error);
                api_result_done(&res);
        }
        assert_int_equal(fake_requests(f, "update"), 2);
        assert_int_equal(fake_requests(f, "revoke"), 0);
        run(f, v, API_GET, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_OK);
        assert_false(res.info.revoked);
        api_result_done(&res);

        run(f, v, API_DELETE, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.status, 204);
        api_result_done(&res);
        /* Already gone: fine for DELETE ... */
        run(f, v, API_DELETE, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.status, 404);
        assert_null(res.error);
        api_result_done(&res);
        /* ... but not for REVOKE or GET. */
        run(f, v, API_REVOKE, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 404);
        assert_false(res.maybe_done);
        api_result_done(&res);
        /* Nor ENABLE: a deleted token cannot be put back. */
        run(f, v, API_ENABLE, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 404);
        assert_false(res.maybe_done);
        api_result_done(&res);
        run(f, v, API_GET, &(ApiArgs) { .id = id }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        api_result_done(&res);

        /* The token used for auth cannot be revoked: 400, with the API's message. */
        run(f, v, API_REVOKE, &(ApiArgs) { .id = v1 ? f->mgmt.id : f->mgmt.pub }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 400);
        assert_contains(res.error, v1 ? "prod: revoke " : "prod: revoke dt0c01.");
        assert_contains(res.error, ": HTTP 400: The token used for authentication cannot be updated");
        api_result_done(&res);
}

static void test_v1_revoke_delete(void **state) {
        Fake *f = *state;
        NEED_FAKE(f);
        test_revoke_delete(f, API_V1);
}

static bool list_has(const ApiResult *res, const char *id, const char *name) {
        for (size_t i = 0; i < res->n_list; i++)
                if (streq_ptr(res->list[i].id, id))
                        return streq_ptr(res->list[i].name, name);
        return false;
}

static void test_v1_list(void **state) {
        Fake *f = *state;
        ApiResult res = {};
        Planted a, b;
        NEED_FAKE(f);

        plant(f, "a", "[]", NULL, &a);
        plant(f, "b", "[]", NULL, &b);
        run(f, API_V1, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.n_list, 3);
        assert_true(list_has(&res, a.id, "a"));
        assert_true(list_has(&res, b.id, "b"));
        assert_true(list_has(&res, f->mgmt.id, "management"));
        /* v1 has no pages: the documented maximum, the owner filter, and a full answer is
         * not a list. */
        assert_string_equal(fake_query(f, "list", 0), "limit=1000000");
        api_result_done(&res);

        fake_mark(f);
        run(f, API_V1, API_LIST, &(ApiArgs) { .owner = "fake-user@example.com" }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.n_list, 3);
        assert_string_equal(fake_query(f, "list", 0), "limit=1000000&user=fake-user%40example.com");
        api_result_done(&res);

        /* As many tokens as the limit: maybe more. */
        run(f, API_V1, API_LIST, &(ApiArgs) { .page_size = 3 }, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_false(res.maybe_done);
        assert_null(res.list);
        assert_int_equal(res.n_list, 0);
        assert_string_equal(res.error, "prod: list: list may be incomplete: 3 tokens, as many as limit=3 allows");
        api_result_done(&res);

        fake_mark(f);
        run(f, API_V1, API_LIST, &(ApiArgs) { .page_size = 4 }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.n_list, 3);
        assert_string_equal(fake_query(f, "list", 0), "limit=4");
        api_result_done(&res);
}

/* ---- v2 ---- */

static void test_v2_lookup_get(void **state) {
        Fake *f = *state;
        ApiResult res = {};
        Planted p;
        NEED_FAKE(f);

        plant(f, "job-b", "[\"metrics.ingest\"]", "\"expiresInMs\":3600000,\"revoked\":true", &p);
        run(f, API_V2, API_LOOKUP, &(ApiArgs) { .token = p.token }, &res);
        assert_int_equal(res.class, API_OK);
        check_info(&res.info, &p, false, "job-b");
        assert_true(res.info.revoked); /* enabled: false */
        assert_string_equal(res.info.scopes[0], "metrics.ingest");
        api_result_done(&res);

        run(f, API_V2, API_GET, &(ApiArgs) { .id = p.pub }, &res);
        assert_int_equal(res.class, API_OK);
        check_info(&res.info, &p, false, "job-b");
        api_result_done(&res);

        run(f, API_V2, API_GET, &(ApiArgs) { .id = f->mgmt.pub }, &res);
        assert_int_equal(res.class, API_OK);
        assert_false(res.info.revoked);
        assert_int_equal(res.info.expires, USEC_INFINITY);
        assert_near(res.info.last_use, now_realtime(), 60 * USEC_PER_SEC);
        api_result_done(&res);

        run(f, API_V2, API_GET, &(ApiArgs) { .id = RAW_ID2 }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 404);
        assert_contains(res.error, "prod: get " RAW_ID2 ": HTTP 404");
        api_result_done(&res);
}

static void test_v2_create(void **state) {
        Fake *f = *state;
        ApiResult res = {}, look = {};
        char pub[TOKEN_PUBLIC_MAX];
        usec_t before = now_realtime();
        NEED_FAKE(f);

        run(f, API_V2, API_CREATE, &(ApiArgs) { .name = "n2", .scopes = scopes_2, .expires_in = USEC_PER_DAY },
            &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.status, 201);
        assert_true(token_is_valid(res.token));
        register_secret(f, res.token);
        assert_string_equal(res.info.id, token_public_part(pub, sizeof(pub), res.token));
        /* Sent as whole seconds, rounded up. */
        assert_near(res.info.expires, before + USEC_PER_DAY, 3 * USEC_PER_SEC);
        assert_true(res.info.expires >= before + USEC_PER_DAY - USEC_PER_SEC);

        run(f, API_V2, API_GET, &(ApiArgs) { .id = res.info.id }, &look);
        assert_int_equal(look.class, API_OK);
        assert_string_equal(look.info.name, "n2");
        assert_int_equal(look.info.expires, res.info.expires);
        api_result_done(&look);
        api_result_done(&res);

        run(f, API_V2, API_CREATE, &(ApiArgs) { .name = "n3", .scopes = scopes_2, .expires_in = USEC_INFINITY },
            &res);
        assert_int_equal(res.class, API_OK);
        register_secret(f, res.token);
        assert_int_equal(res.info.expires, USEC_INFINITY);
        api_result_done(&res);
}

static void test_v2_revoke_delete(void **state) {
        Fake *f = *state;
        NEED_FAKE(f);
        test_revoke_delete(f, API_V2);
}

static void test_v2_list_paging(void **state) {
        Fake *f = *state;
        ApiResult res = {};
        size_t live;
        Planted p;
        NEED_FAKE(f);

        /* 1050 + the management token: pages of 1000 and 51. */
        for (int i = 0; i < 1050; i++) {
                char name[32];
                snprintf(name, sizeof(name), "bulk-%d", i);
                plant(f, name, "[]", NULL, &p);
                f->n_secrets--; /* not worth checking each */
                free(f->secrets[f->n_secrets]);
        }
        run(f, API_V2, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.n_list, 1051);
        assert_true(list_has(&res, p.pub, "bulk-1049"));
        assert_true(list_has(&res, f->mgmt.pub, "management"));
        /* v2 list entries carry more than id and name. */
        assert_false(res.list[0].revoked);
        assert_true(res.list[0].created > 0);
        assert_int_equal(fake_requests(f, "list"), 2);
        assert_string_equal(fake_query(f, "list", 0), "pageSize=1000");
        assert_true(strncmp(fake_query(f, "list", 1), "nextPageKey=", 12) == 0);
        /* The key alone, URL-encoded (the fake's keys hold '+', '/' and '='). */
        assert_null(strchr(fake_query(f, "list", 1), '&'));
        api_result_done(&res);

        /* Smaller pages, for the owner's tokens: the selector on the first page only. */
        fake_mark(f);
        run(f, API_V2, API_LIST, &(ApiArgs) { .page_size = 100, .owner = "fake-user@example.com" }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.n_list, 1051);
        for (size_t i = 0; i < res.n_list; i++) {
                assert_true(api_id_is_valid(API_V2, res.list[i].id));
                assert_string_equal(res.list[i].owner, "fake-user@example.com");
        }
        assert_int_equal(fake_requests(f, "list"), 11);
        assert_string_equal(fake_query(f, "list", 0),
                            "pageSize=100&apiTokenSelector=owner%28%22fake-user%40example.com%22%29");
        for (size_t i = 1; i < 11; i++) {
                assert_true(strncmp(fake_query(f, "list", i), "nextPageKey=", 12) == 0);
                assert_null(strchr(fake_query(f, "list", i), '&'));
        }
        api_result_done(&res);
        (void) fake_count(f, "x", &live);
        assert_int_equal(live, 1051);

        /* Page by page: the first fine, the second broken, which fails the whole list. */
        {
                _cleanup_(api_request_freep) ApiRequest *r = NULL;
                ApiEndpoint ep = endpoint(f, API_V2);
                assert_int_equal(api_request_new(&ep, API_LIST, NULL, &r), 0);
                assert_int_equal(curl_easy_perform(api_request_get_easy(r)), CURLE_OK);
                assert_int_equal(api_request_finish(r, CURLE_OK, &res), 0);
                assert_true(api_request_wants_more(r));
                /* A caller that ignores wants_more does not get a partial list. */
                assert_int_equal(res.class, API_TRANSIENT);
                assert_int_equal(res.n_list, 0);
                assert_contains(res.error, "prod: list: incomplete");
                api_result_done(&res);
                fault(f, "{\"op\":\"list\",\"kind\":\"503\",\"count\":1}");
                assert_int_equal(curl_easy_perform(api_request_get_easy(r)), CURLE_OK);
                assert_int_equal(api_request_finish(r, CURLE_OK, &res), 0);
                assert_false(api_request_wants_more(r));
                assert_int_equal(res.class, API_TRANSIENT);
                assert_int_equal(res.status, 503);
                assert_int_equal(res.n_list, 0);
                api_result_done(&res);
        }
}

static void test_v2_scopes(void **state) {
        Fake *f = *state;
        ApiEndpoint ep = endpoint(f, API_V2);
        ApiResult res = {};
        Planted ro;
        NEED_FAKE(f);

        /* Read-only management token: 403 for create, fine for list. */
        plant(f, "ro", "[\"apiTokens.read\"]", NULL, &ro);
        ep.auth_token = ro.token;
        run_ep(f, &ep, API_CREATE, &(ApiArgs) { .name = "x", .scopes = scopes_2, .expires_in = USEC_PER_DAY }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 403);
        assert_false(res.maybe_done);
        assert_string_equal(res.error, "prod: create: HTTP 403: Token is missing required scope");
        api_result_done(&res);
        run_ep(f, &ep, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_OK);
        api_result_done(&res);
}

/* ---- classes ---- */

static void test_status_classes(void **state) {
        Fake *f = *state;
        ApiEndpoint ep = endpoint(f, API_V1);
        ApiResult res = {};
        Planted noscope;
        static const struct {
                const char *kind;
                long status;
                ApiClass class;
        } faults[] = {
                { "\"500\"", 500, API_TRANSIENT },
                { "\"502\"", 502, API_TRANSIENT },
                { "\"503\"", 503, API_TRANSIENT },
                { "\"error\",\"status\":504", 504, API_TRANSIENT },
                { "\"error\",\"status\":408", 408, API_TRANSIENT },
                { "\"error\",\"status\":400", 400, API_PERMANENT },
                { "\"error\",\"status\":404", 404, API_PERMANENT },
                { "\"error\",\"status\":409", 409, API_PERMANENT },
                { "\"error\",\"status\":418", 418, API_PERMANENT },
        };
        NEED_FAKE(f);

        /* 401: unknown token */
        ep.auth_token = TOKEN_A;
        register_secret(f, TOKEN_A);
        run_ep(f, &ep, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 401);
        assert_string_equal(res.error, "prod: list: HTTP 401: Token Authentication failed: unknown token");
        api_result_done(&res);

        /* 403: missing scope */
        plant(f, "noscope", "[\"metrics.ingest\"]", NULL, &noscope);
        ep.auth_token = noscope.token;
        run_ep(f, &ep, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_int_equal(res.status, 403);
        api_result_done(&res);

        ep.auth_token = f->mgmt.token;
        for (size_t i = 0; i < ELEMENTSOF(faults); i++) {
                char json[128], want[64];
                for (size_t o = 0; o < 2; o++) {
                        ApiOp op = o == 0 ? API_CREATE : API_LIST;
                        ApiArgs a = { .name = "x", .scopes = scopes_2, .expires_in = USEC_PER_DAY };
                        snprintf(json, sizeof(json), "{\"op\":\"any\",\"kind\":%s}", faults[i].kind);
                        fault(f, json);
                        run_ep(f, &ep, op, &a, &res);
                        assert_int_equal(res.status, faults[i].status);
                        assert_int_equal(res.class, faults[i].class);
                        snprintf(want, sizeof(want), ": HTTP %ld: Injected fault: HTTP %ld", faults[i].status,
                                 faults[i].status);
                        assert_contains(res.error, want);
                        /* A 5xx to a CREATE: the token may exist. */
                        assert_int_equal(res.maybe_done, op == API_CREATE && faults[i].status >= 500);
                        assert_null(res.token);
                        assert_int_equal(res.retry_at, 0);
                        api_result_done(&res);
                }
        }
        /* Nothing got created by the failed CREATEs. */
        assert_int_equal(fake_count(f, "x", NULL), 0);
}

static void test_429(void **state) {
        Fake *f = *state;
        ApiResult res = {};
        usec_t now, reset;
        char json[256];
        NEED_FAKE(f);

        /* Retry-After in seconds */
        fault(f, "{\"op\":\"lookup\",\"kind\":\"429\",\"retryAfter\":120}");
        now = now_realtime();
        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = f->mgmt.token }, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_int_equal(res.status, 429);
        assert_false(res.maybe_done);
        assert_near(res.retry_at, now + 120 * USEC_PER_SEC, 5 * USEC_PER_SEC);
        assert_contains(res.error, "prod: lookup dt0c01.");
        assert_contains(res.error, ": HTTP 429: Too Many Requests");
        api_result_done(&res);

        /* X-RateLimit-Reset (µs) later than Retry-After: it wins */
        reset = now_realtime() + 300 * USEC_PER_SEC + 123;
        snprintf(json, sizeof(json), "{\"op\":\"create\",\"kind\":\"429\",\"retryAfter\":1,\"resetMicros\":%llu}",
                 (unsigned long long) reset);
        fault(f, json);
        run(f, API_V2, API_CREATE, &(ApiArgs) { .name = "x", .scopes = scopes_2, .expires_in = USEC_PER_DAY }, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_false(res.maybe_done);
        assert_int_equal(res.retry_at, reset);
        api_result_done(&res);

        /* ... and earlier: Retry-After wins */
        snprintf(json, sizeof(json), "{\"op\":\"any\",\"kind\":\"429\",\"retryAfter\":60,\"resetMicros\":%llu}",
                 (unsigned long long) (now_realtime() + 10 * USEC_PER_SEC));
        fault(f, json);
        now = now_realtime();
        run(f, API_V2, API_LIST, NULL, &res);
        assert_near(res.retry_at, now + 60 * USEC_PER_SEC, 5 * USEC_PER_SEC);
        api_result_done(&res);

        /* Retry-After as an HTTP date: honoured up to an hour ahead */
        fault(f, "{\"op\":\"any\",\"kind\":\"429\",\"retryAfter\":\"Wed, 21 Oct 2037 07:28:00 GMT\"}");
        now = now_realtime();
        run(f, API_V1, API_LIST, NULL, &res);
        assert_near(res.retry_at, now + USEC_PER_HOUR, 5 * USEC_PER_SEC);
        api_result_done(&res);

        /* Seconds beyond the hour: the same */
        fault(f, "{\"op\":\"any\",\"kind\":\"429\",\"retryAfter\":999999999}");
        now = now_realtime();
        run(f, API_V2, API_GET, &(ApiArgs) { .id = f->mgmt.pub }, &res);
        assert_near(res.retry_at, now + USEC_PER_HOUR, 5 * USEC_PER_SEC);
        api_result_done(&res);

        /* A date in the past: retry as usual */
        fault(f, "{\"op\":\"any\",\"kind\":\"429\",\"retryAfter\":\"Wed, 21 Oct 2015 07:28:00 GMT\"}");
        run(f, API_V1, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_int_equal(res.retry_at, 0);
        api_result_done(&res);

        /* Rubbish in Retry-After: no retry_at, still transient */
        fault(f, "{\"op\":\"any\",\"kind\":\"429\",\"retryAfter\":\"soon-ish\"}");
        run(f, API_V1, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_int_equal(res.retry_at, 0);
        api_result_done(&res);
}

static void test_malformed(void **state) {
        Fake *f = *state;
        static const char *kinds[] = { "html", "truncated", "notjson", "wrongtypes", "huge", "empty" };
        static const ApiOp ops[] = { API_CREATE, API_LOOKUP, API_GET, API_LIST, API_REVOKE, API_DELETE };
        struct rusage before, after;
        NEED_FAKE(f);

        getrusage(RUSAGE_SELF, &before);
        for (ApiVersion v = API_V1; v <= API_V2; v++)
                for (size_t k = 0; k < ELEMENTSOF(kinds); k++)
                        for (size_t o = 0; o < ELEMENTSOF(ops); o++) {
                                ApiOp op = ops[o];
                                bool mutating = op == API_CREATE || op == API_REVOKE || op == API_DELETE;
                                ApiArgs a = { .name = "x", .scopes = scopes_2, .expires_in = USEC_PER_DAY,
                                              .token = f->mgmt.token,
                                              .id = v == API_V1 ? f->mgmt.id : f->mgmt.pub };
                                ApiResult res = {};
                                char json[128], want[128];
                                Planted victim;

                                if (op == API_REVOKE || op == API_DELETE) {
                                        /* Faults after the work really revoke or delete. */
                                        plant(f, "victim", "[]", NULL, &victim);
                                        a.id = v == API_V1 ? victim.id : victim.pub;
                                }
                                snprintf(json, sizeof(json), "{\"op\":\"any\",\"kind\":\"%s\"}", kinds[k]);
                                fault(f, json);
                                run(f, v, op, &a, &res);
                                if (res.class != API_TRANSIENT)
                                        print_error("v%d %s %s: %s\n", v + 1, kinds[k], api_op_to_string(op),
                                                    strna(res.error));
                                assert_int_equal(res.class, API_TRANSIENT);
                                assert_true(res.status == 200 || res.status == 201);
                                /* Whatever answered, a change may have been made. */
                                assert_int_equal(res.maybe_done, mutating);
                                snprintf(want, sizeof(want), "prod: %s", api_op_to_string(op));
                                assert_contains(res.error, want);
                                if (streq(kinds[k], "huge"))
                                        assert_contains(res.error, "answer too large");
                                else if (streq(kinds[k], "truncated"))
                                        assert_contains(res.error, "malformed answer (HTTP 20");
                                else if (streq(kinds[k], "html")) {
                                        /* A proxy's page is never success, whatever the status. */
                                        if (op == API_REVOKE || op == API_DELETE)
                                                assert_contains(res.error,
                                                                ": unexpected answer HTTP 200 (text/html), expected 204");
                                        else {
                                                snprintf(want, sizeof(want),
                                                         ": unexpected answer HTTP 200 (text/html), expected %d with "
                                                         "application/json", op == API_CREATE ? 201 : 200);
                                                assert_contains(res.error, want);
                                        }
                                } else if (op == API_CREATE)
                                        /* JSON, but 200 where CREATE answers 201 */
                                        assert_contains(res.error,
                                                        ": unexpected answer HTTP 200 (application/json), expected 201");
                                else if (op == API_REVOKE || op == API_DELETE)
                                        assert_contains(res.error,
                                                        ": unexpected answer HTTP 200 (application/json), expected 204");
                                else
                                        assert_contains(res.error, "malformed answer (HTTP 200, application/json): ");
                                if (streq(kinds[k], "empty") && !mutating)
                                        assert_contains(res.error, "empty answer");
                                assert_null(res.token);
                                assert_null(res.list);
                                assert_null(res.info.id);
                                api_result_done(&res);
                        }
        getrusage(RUSAGE_SELF, &after);
        /* "huge" is 40 MiB: refused from its Content-Length, never buffered. */
        assert_rss_growth_below(before, after, 20 * 1024);
}

static void test_drop_lost(void **state) {
        Fake *f = *state;
        ApiArgs create = { .name = "dropped", .scopes = scopes_2, .expires_in = USEC_PER_DAY };
        ApiResult res = {};
        NEED_FAKE(f);

        fault(f, "{\"op\":\"create\",\"kind\":\"drop\"}");
        run(f, API_V2, API_CREATE, &create, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_int_equal(res.status, 0);
        assert_true(res.maybe_done);
        assert_contains(res.error, "prod: create: ");
        api_result_done(&res);
        assert_int_equal(fake_count(f, "dropped", NULL), 0);

        create.name = "lost";
        fault(f, "{\"op\":\"create\",\"kind\":\"lost\"}");
        run(f, API_V1, API_CREATE, &create, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_true(res.maybe_done);
        api_result_done(&res);
        assert_int_equal(fake_count(f, "lost", NULL), 1); /* it did happen */

        fault(f, "{\"op\":\"lookup\",\"kind\":\"drop\"}");
        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = f->mgmt.token }, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_false(res.maybe_done); /* not a change */
        api_result_done(&res);

        fault(f, "{\"op\":\"revoke\",\"kind\":\"lost\"}");
        run(f, API_V1, API_REVOKE, &(ApiArgs) { .id = "00000000-0000-0000-0000-000000000000" }, &res);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_true(res.maybe_done);
        api_result_done(&res);
}

static void test_slow_timeout(void **state) {
        Fake *f = *state;
        ApiEndpoint ep = endpoint(f, API_V1);
        ApiResult res = {};
        usec_t start;
        NEED_FAKE(f);

        ep.timeout = USEC_PER_SEC;
        fault(f, "{\"op\":\"create\",\"kind\":\"slow\",\"delay\":3}");
        start = now_mono();
        run_ep(f, &ep, API_CREATE, &(ApiArgs) { .name = "slow", .scopes = scopes_2, .expires_in = USEC_PER_DAY },
               &res);
        assert_true(now_mono() - start < 2500 * USEC_PER_MSEC);
        assert_int_equal(res.class, API_TRANSIENT);
        assert_true(res.maybe_done);
        assert_contains(res.error, "prod: create: timed out");
        api_result_done(&res);

        /* Slow but within the timeout: fine. */
        ep.timeout = 10 * USEC_PER_SEC;
        fault(f, "{\"op\":\"list\",\"kind\":\"slow\",\"delay\":1}");
        run_ep(f, &ep, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_OK);
        api_result_done(&res);
}

static void test_secret_never_in_errors(void **state) {
        Fake *f = *state;
        ApiResult res = {};
        char json[1024];
        Planted p;
        NEED_FAKE(f);

        /* A server that quotes secrets back in its message. */
        plant(f, "victim", "[]", NULL, &p);
        snprintf(json, sizeof(json), "{\"op\":\"any\",\"kind\":\"error\",\"status\":400,"
                 "\"message\":\"bad token %s, auth %s\"}", p.token, f->mgmt.token);
        fault(f, json);
        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = p.token }, &res); /* asserts */
        assert_int_equal(res.class, API_PERMANENT);
        assert_contains(res.error, "prod: lookup ");
        assert_contains(res.error, p.pub);
        assert_contains(res.error, "****");
        api_result_done(&res);

        /* ... where the message is cut in the middle of the secret: no part of it left. */
        {
                char pad[201], head[17];
                memset(pad, 'x', sizeof(pad) - 1);
                pad[sizeof(pad) - 1] = 0;
                snprintf(json, sizeof(json), "{\"op\":\"any\",\"kind\":\"error\",\"status\":400,"
                         "\"message\":\"%s %s\"}", pad, p.token);
                fault(f, json);
                run(f, API_V2, API_LOOKUP, &(ApiArgs) { .token = p.token }, &res);
                assert_int_equal(res.class, API_PERMANENT);
                snprintf(head, sizeof(head), "%s", strrchr(p.token, '.') + 1);
                assert_contains(res.error, "...");
                assert_null(strstr(res.error, head));
                api_result_done(&res);
        }
}

/* Several API requests at once through CurlGlue, a v2 list with pages among them, and
 * a CREATE whose answer is lost on what would be a reused connection: it must not be
 * sent twice. */
typedef struct Call {
        ApiRequest *req;
        ApiResult res;
        int *done;
        int calls;
} Call;

static void on_call_done(CurlGlue *g, CURL *easy, CURLcode code, void *userdata) {
        Call *c = userdata;

        assert_ptr_equal(easy, api_request_get_easy(c->req));
        assert_int_equal(api_request_finish(c->req, code, &c->res), 0);
        if (api_request_wants_more(c->req)) {
                api_result_done(&c->res);
                assert_int_equal(curl_glue_add(g, easy, on_call_done, c), 0);
                return;
        }
        c->calls++;
        (*c->done)++;
}

static void run_calls(Fake *f, sd_event *e, CurlGlue *g, Call *calls, size_t n) {
        usec_t end = now_mono() + 20 * USEC_PER_SEC;
        int done = 0;

        for (size_t i = 0; i < n; i++) {
                calls[i].done = &done;
                assert_int_equal(curl_glue_add(g, api_request_get_easy(calls[i].req), on_call_done, &calls[i]), 0);
        }
        while (done < (int) n) {
                assert_true(now_mono() < end);
                assert_true(sd_event_run(e, end - now_mono()) >= 0);
        }
        for (size_t i = 0; i < n; i++) {
                assert_int_equal(calls[i].calls, 1);
                assert_no_secret(f, calls[i].res.error);
        }
        assert_int_equal(curl_glue_in_flight(g), 0);
}

static void test_glue(void **state) {
        Fake *f = *state;
        ApiEndpoint ep1 = endpoint(f, API_V1), ep2 = endpoint(f, API_V2);
        sd_event *e = NULL;
        CurlGlue *g = NULL;
        Call calls[6] = {};
        Planted p;
        NEED_FAKE(f);

        for (int i = 0; i < 520; i++) {
                plant(f, "bulk", "[]", NULL, &p);
                f->n_secrets--;
                free(f->secrets[f->n_secrets]);
        }
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(curl_glue_new(e, &g), 0);

        assert_int_equal(api_request_new(&ep2, API_LIST, NULL, &calls[0].req), 0);
        assert_int_equal(api_request_new(&ep1, API_LIST, NULL, &calls[1].req), 0);
        assert_int_equal(api_request_new(&ep1, API_LOOKUP, &(ApiArgs) { .token = p.token }, &calls[2].req), 0);
        assert_int_equal(api_request_new(&ep2, API_GET, &(ApiArgs) { .id = p.pub }, &calls[3].req), 0);
        assert_int_equal(api_request_new(&ep2, API_CREATE,
                                         &(ApiArgs) { .name = "glued", .scopes = scopes_2, .expires_in = USEC_PER_DAY },
                                         &calls[4].req), 0);
        assert_int_equal(api_request_new(&ep1, API_DELETE, &(ApiArgs) { .id = p.id }, &calls[5].req), 0);
        /* GET and DELETE race: run DELETE on its own afterwards. */
        run_calls(f, e, g, calls, 5);

        assert_int_equal(calls[0].res.class, API_OK);
        /* 520 + management, + the CREATE running alongside if it came first */
        assert_in_range(calls[0].res.n_list, 521, 522);
        assert_int_equal(calls[1].res.class, API_OK);
        assert_in_range(calls[1].res.n_list, 521, 522);
        assert_int_equal(calls[2].res.class, API_OK);
        assert_string_equal(calls[2].res.info.id, p.id);
        assert_int_equal(calls[3].res.class, API_OK);
        assert_string_equal(calls[3].res.info.name, "bulk");
        assert_int_equal(calls[4].res.class, API_OK);
        assert_true(token_is_valid(calls[4].res.token));
        register_secret(f, calls[4].res.token);

        run_calls(f, e, g, calls + 5, 1);
        assert_int_equal(calls[5].res.class, API_OK);

        for (size_t i = 0; i < ELEMENTSOF(calls); i++) {
                api_result_done(&calls[i].res);
                calls[i].req = api_request_free(calls[i].req);
                calls[i].calls = 0;
        }

        /* Warm connections are in the multi's cache now. A lost CREATE answer must not
         * be retried by libcurl behind our back. */
        fault(f, "{\"op\":\"create\",\"kind\":\"lost\"}");
        assert_int_equal(api_request_new(&ep1, API_CREATE,
                                         &(ApiArgs) { .name = "once", .scopes = scopes_2, .expires_in = USEC_PER_DAY },
                                         &calls[0].req), 0);
        run_calls(f, e, g, calls, 1);
        assert_int_equal(calls[0].res.class, API_TRANSIENT);
        assert_true(calls[0].res.maybe_done);
        assert_int_equal(fake_count(f, "once", NULL), 1);
        api_result_done(&calls[0].res);
        calls[0].req = api_request_free(calls[0].req);

        curl_glue_free(g);
        sd_event_unref(e);
}

/* ---- timestamps as ISO 8601 strings (v1 answers under --timestamps iso) ---- */

static void test_iso_timestamps(void **state) {
        Fake *f = *state;
        ApiResult res = {};
        Planted p;
        NEED_FAKE(f);

        plant(f, "iso", "[\"a\"]", "\"expiresInMs\":7200000,\"lastUseMs\":1700000000456", &p);
        run(f, API_V1, API_LOOKUP, &(ApiArgs) { .token = p.token }, &res);
        assert_int_equal(res.class, API_OK);
        check_info(&res.info, &p, true, "iso");
        assert_int_equal(res.info.last_use, 1700000000456ULL * USEC_PER_MSEC);
        api_result_done(&res);

        plant(f, "iso-never", "[]", NULL, &p);
        run(f, API_V1, API_GET, &(ApiArgs) { .id = p.id }, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.info.expires, USEC_INFINITY);
        assert_int_equal(res.info.last_use, 0);
        assert_null(res.info.scopes[0]);
        api_result_done(&res);
}

/* ---- HTTPS ---- */

static void test_https(void **state) {
        Fake *f = *state;
        ApiEndpoint ep = endpoint(f, API_V2);
        ApiResult res = {};
        NEED_FAKE(f);

        run_ep(f, &ep, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_OK);
        assert_int_equal(res.n_list, 1);
        api_result_done(&res);

        /* Without the CA: not trusted, permanent, never sent. */
        ep.ca_file = NULL;
        run_ep(f, &ep, API_CREATE, &(ApiArgs) { .name = "x", .scopes = scopes_2, .expires_in = USEC_PER_DAY }, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_false(res.maybe_done);
        assert_int_equal(res.status, 0);
        assert_contains(res.error, "prod: create: TLS certificate verification failed");
        api_result_done(&res);

        /* A CA file that does not exist. */
        ep.ca_file = "/nonexistent/ca.pem";
        run_ep(f, &ep, API_LIST, NULL, &res);
        assert_int_equal(res.class, API_PERMANENT);
        assert_false(res.maybe_done);
        api_result_done(&res);

        /* Plain HTTP to the TLS port: a transport error, transient. */
        {
                char url[128];
                snprintf(url, sizeof(url), "http://127.0.0.1%s", strrchr(f->url, ':'));
                ep.url = url;
                run_ep(f, &ep, API_LIST, NULL, &res);
                assert_int_equal(res.class, API_TRANSIENT);
                api_result_done(&res);
        }
}

#define T(f) cmocka_unit_test_setup(f, test_setup)

int main(void) {
        const struct CMUnitTest offline[] = {
                cmocka_unit_test(test_op_names),
                cmocka_unit_test(test_invalid_args),
                cmocka_unit_test(test_connection_refused),
                cmocka_unit_test(test_raw_answers),
                cmocka_unit_test(test_unexpected_answers),
                cmocka_unit_test(test_error_bodies),
                cmocka_unit_test(test_create_answers),
                cmocka_unit_test(test_answers_validated),
                cmocka_unit_test(test_v2_page_loops),
                cmocka_unit_test(test_retry_headers),
        };
        const struct CMUnitTest fake_ms[] = {
                T(test_v1_lookup_get),
                T(test_v1_create),
                T(test_v1_revoke_delete),
                T(test_v1_list),
                T(test_v2_lookup_get),
                T(test_v2_create),
                T(test_v2_revoke_delete),
                T(test_v2_list_paging),
                T(test_v2_scopes),
                T(test_status_classes),
                T(test_429),
                T(test_malformed),
                T(test_drop_lost),
                T(test_slow_timeout),
                T(test_secret_never_in_errors),
                T(test_glue),
        };
        const struct CMUnitTest fake_iso[] = {
                T(test_iso_timestamps),
        };
        const struct CMUnitTest fake_tls[] = {
                T(test_https),
        };
        int r = 0;

        signal(SIGPIPE, SIG_IGN);
        /* As dtrotated does: libcurl's memory is wiped before it is freed. */
        if (api_global_init() < 0) {
                fprintf(stderr, "api_global_init() failed\n");
                return 1;
        }
        r |= cmocka_run_group_tests_name("offline", offline, NULL, NULL);
        r |= cmocka_run_group_tests_name("fake API, epoch ms", fake_ms, group_setup_ms, group_teardown);
        r |= cmocka_run_group_tests_name("fake API, ISO 8601", fake_iso, group_setup_iso, group_teardown);
        r |= cmocka_run_group_tests_name("fake API, HTTPS", fake_tls, group_setup_tls, group_teardown);
        api_global_cleanup();
        return r ? 1 : 0;
}
