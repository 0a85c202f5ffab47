/* SPDX-License-Identifier: MIT */
/* Loading and validating /etc/dtrotated/dtrotated.conf (libconfig syntax).
 *
 * Validation is complete: every problem is collected (never just the first one), the
 * messages are sorted by file and line and then handed to the caller's report
 * callback as "FILE:LINE: message". Anything that is not an error but is probably not
 * what was meant is a warning and does not make the load fail. */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* vasprintf, qsort_r */
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <grp.h>
#include <libconfig.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <search.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>

#include "dtrotated-config.h"
#include "dtrotated-util.h"

#define NAME_MAX_LEN 64
#define TOKEN_NAME_MAX_CHARS 100
#define SCOPE_MAX_LEN 100
#define URL_MAX_LEN 2048

#define DEFAULT_RETRY_MAX_DELAY (1 * USEC_PER_HOUR)
#define DEFAULT_REQUEST_TIMEOUT (30 * USEC_PER_SEC)
#define DEFAULT_MAX_PARALLEL 4U
#define DEFAULT_GRACE_PERIOD (7 * USEC_PER_DAY)
#define DEFAULT_REVOKE_WHEN_UNUSED_MAX (7 * USEC_PER_DAY)
#define DEFAULT_REVOKE_DELAY ((usec_t) 0)
/* renew_before: a third of the lifetime, at most this (and this for "never"). */
#define DEFAULT_RENEW_BEFORE_MAX (7 * USEC_PER_DAY)

#define MAX_ROTATE_EVERY (10 * USEC_PER_YEAR)

/* ---- collected messages ------------------------------------------------------- */

typedef struct Message {
        int prio;
        const char *file;     /* ctx->path or a string owned by the config_t */
        int line;             /* 0: no line */
        size_t seq;
        char *text;
} Message;

typedef struct Ctx {
        const char *path;
        Message *messages;
        size_t n_messages;
        unsigned n_errors;
        bool oom;
        bool env_names_incomplete; /* an environment without a usable name: do not
                                    * complain about references to unknown ones */
        /* tsearch() trees of the JobConfigs parsed so far, to find duplicates in
         * O(log n): comparing each token with all before it is O(n^2), seconds for
         * 10,000 tokens. They point into Config.jobs, which is allocated once. */
        void *job_names, *job_files, *job_token_names;
} Ctx;

static const char *setting_file(const Ctx *ctx, const config_setting_t *s) {
        const char *f = s ? config_setting_source_file(s) : NULL;
        return f ?: ctx->path;
}

static int setting_line(const config_setting_t *s) {
        return s ? (int) config_setting_source_line(s) : 0;
}

_printf_(5, 0)
static void add_messagev(Ctx *ctx, int prio, const char *file, int line, const char *fmt, va_list ap) {
        char *text;
        Message *m;

        if (prio <= LOG_ERR)
                ctx->n_errors++;

        if (vasprintf(&text, fmt, ap) < 0) {
                ctx->oom = true;
                return;
        }
        m = realloc(ctx->messages, (ctx->n_messages + 1) * sizeof(Message));
        if (!m) {
                free(text);
                ctx->oom = true;
                return;
        }
        ctx->messages = m;
        ctx->messages[ctx->n_messages] = (Message) {
                .prio = prio,
                .file = file,
                .line = line,
                .seq = ctx->n_messages,
                .text = text,
        };
        ctx->n_messages++;
}

_printf_(5, 6)
static void report_line(Ctx *ctx, int prio, const char *file, int line, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        add_messagev(ctx, prio, file, line, fmt, ap);
        va_end(ap);
}

/* A problem with setting s (NULL: the file as a whole). */
_printf_(4, 5)
static void report_at(Ctx *ctx, int prio, const config_setting_t *s, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        add_messagev(ctx, prio, setting_file(ctx, s), setting_line(s), fmt, ap);
        va_end(ap);
}

#define error_at(ctx, s, ...) report_at((ctx), LOG_ERR, (s), __VA_ARGS__)
#define warning_at(ctx, s, ...) report_at((ctx), LOG_WARNING, (s), __VA_ARGS__)

/* Main file first, then included files by name; messages without a line last within
 * their file; otherwise by line, and in the order they were found. */
static int message_cmp(const void *a, const void *b, void *userdata) {
        const Message *x = a, *y = b;
        const char *path = userdata;
        int r;

        if (!streq(x->file, y->file)) {
                if (streq(x->file, path))
                        return -1;
                if (streq(y->file, path))
                        return 1;
                r = strcmp(x->file, y->file);
                if (r != 0)
                        return r;
        }
        if ((x->line == 0) != (y->line == 0))
                return x->line == 0 ? 1 : -1;
        if (x->line != y->line)
                return x->line < y->line ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void ctx_flush(Ctx *ctx, config_report_t report, void *userdata) {
        if (ctx->n_messages > 1)
                qsort_r(ctx->messages, ctx->n_messages, sizeof(Message), message_cmp,
                        (void *) ctx->path);

        for (size_t i = 0; i < ctx->n_messages; i++) {
                const Message *m = &ctx->messages[i];
                _cleanup_free_ char *s = NULL;

                if (m->line > 0)
                        s = strdup_printf("%s:%d: %s", m->file, m->line, m->text);
                else
                        s = strdup_printf("%s: %s", m->file, m->text);
                if (!s) {
                        ctx->oom = true;
                        continue;
                }
                if (report)
                        report(m->prio, s, userdata);
        }
}

static void free_nothing(void *p) {
}

static void ctx_done(Ctx *ctx) {
        for (size_t i = 0; i < ctx->n_messages; i++)
                free(ctx->messages[i].text);
        free(ctx->messages);
        ctx->messages = NULL;
        ctx->n_messages = 0;
        tdestroy(ctx->job_names, free_nothing);
        tdestroy(ctx->job_files, free_nothing);
        tdestroy(ctx->job_token_names, free_nothing);
        ctx->job_names = ctx->job_files = ctx->job_token_names = NULL;
}

static int job_name_cmp(const void *a, const void *b) {
        return strcmp(((const JobConfig *) a)->name, ((const JobConfig *) b)->name);
}

static int job_file_cmp(const void *a, const void *b) {
        return strcmp(((const JobConfig *) a)->file, ((const JobConfig *) b)->file);
}

static int job_token_name_cmp(const void *a, const void *b) {
        const JobConfig *x = a, *y = b;
        int k = strcmp(x->environment, y->environment);

        return k != 0 ? k : strcmp(x->token_name, y->token_name);
}

/* The JobConfig that came first with the same key as j (j itself if none did), or NULL
 * when out of memory. */
static const JobConfig *ctx_first(void **tree, const JobConfig *j, int (*cmp)(const void *, const void *)) {
        const JobConfig *const *p = tsearch(j, tree, cmp);

        return p ? *p : NULL;
}

/* ---- small helpers ------------------------------------------------------------ */

static const char *type_name(int type) {
        switch (type) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a floating-point number";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        default:
                return "nothing";
        }
}

/* Levenshtein distance, for "did you mean" hints; large for long strings. */
static unsigned edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        unsigned row[NAME_MAX_LEN + 1];

        if (la > NAME_MAX_LEN || lb > NAME_MAX_LEN)
                return UINT_MAX;

        for (size_t j = 0; j <= lb; j++)
                row[j] = (unsigned) j;
        for (size_t i = 1; i <= la; i++) {
                unsigned diag = row[0];
                row[0] = (unsigned) i;
                for (size_t j = 1; j <= lb; j++) {
                        unsigned up = row[j];
                        unsigned cost = a[i - 1] == b[j - 1] ? 0 : 1;
                        row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), diag + cost);
                        diag = up;
                }
        }
        return row[lb];
}

/* The candidate closest to s if it is within an edit distance of 2, else NULL. */
static const char *closest(const char *s, const char *const *candidates, size_t n) {
        const char *best = NULL;
        unsigned best_d = 3;

        for (size_t i = 0; i < n; i++) {
                unsigned d;
                if (!candidates[i])
                        continue;
                d = edit_distance(s, candidates[i]);
                if (d < best_d) {
                        best_d = d;
                        best = candidates[i];
                }
        }
        return best;
}

static bool has_control_chars(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

static bool name_valid(const char *s, const char *extra) {
        size_t n = strlen(s);

        if (n < 1 || n > NAME_MAX_LEN || streq(s, ".") || streq(s, ".."))
                return false;
        for (; *s; s++)
                if (!isascii((unsigned char) *s) ||
                    (!isalnum((unsigned char) *s) && !strchr(extra, *s)))
                        return false;
        return true;
}

static size_t utf8_chars(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                if (((unsigned char) *s & 0xc0) != 0x80)
                        n++;
        return n;
}

/* Collapse duplicate '/', drop "." components and trailing '/'. For comparing and
 * storing absolute paths. */
static char *path_normalize(const char *p) {
        char *r = malloc(strlen(p) + 2), *o = r;

        if (!r)
                return NULL;
        while (*p) {
                size_t n;
                while (*p == '/')
                        p++;
                n = strcspn(p, "/");
                if (n == 0)
                        break;
                if (!(n == 1 && p[0] == '.')) {
                        *o++ = '/';
                        memcpy(o, p, n);
                        o += n;
                }
                p += n;
        }
        if (o == r)
                *o++ = '/';
        *o = 0;
        return r;
}

static bool path_has_dotdot(const char *p) {
        while (*p) {
                size_t n;
                while (*p == '/')
                        p++;
                n = strcspn(p, "/");
                if (n == 2 && p[0] == '.' && p[1] == '.')
                        return true;
                p += n;
        }
        return false;
}

/* ---- groups and their keys ----------------------------------------------------- */

static const char *const top_keys[] = {
        "state_directory", "retry_max_delay", "environments", "tokens",
        "metrics_file",
        "control_socket", "control_group",
};
static const char *const env_keys[] = {
        "name", "url", "api", "management_token_file", "management_token_credential",
        "ca_file", "request_timeout", "max_parallel",
};
static const char *const job_keys[] = {
        "name", "environment", "file", "rotate_every", "grace_period", "revoke_delay",
        "renew_before", "expires_in", "scopes", "token_name", "mode", "owner", "group",
        "on_rotate",
        "revoke_when_unused", "revoke_when_unused_max",
};

typedef struct KeySet {
        const char *const *keys;
        size_t n;
        const char *where;    /* "at the top level", "in an environment", "in a token" */
} KeySet;

static const KeySet key_sets[] = {
        { top_keys, ELEMENTSOF(top_keys), "at the top level" },
        { env_keys, ELEMENTSOF(env_keys), "in an environment" },
        { job_keys, ELEMENTSOF(job_keys), "in a token" },
};
enum { KEYS_TOP, KEYS_ENV, KEYS_JOB };

typedef struct Group {
        Ctx *ctx;
        const config_setting_t *g;
        const KeySet *keys;
        uint32_t suggested;   /* bit i: an unknown key looked like keys[i] */
        char what[NAME_MAX_LEN + 32]; /* "token 'x'", for messages */
} Group;

static void group_init(Group *grp, Ctx *ctx, const config_setting_t *g, int set, const char *what) {
        *grp = (Group) { .ctx = ctx, .g = g, .keys = &key_sets[set] };
        snprintf(grp->what, sizeof(grp->what), "%s", what);
}

static void group_check_keys(Group *grp) {
        const KeySet *ks = grp->keys;

        for (int i = 0; i < config_setting_length(grp->g); i++) {
                const config_setting_t *m = config_setting_get_elem(grp->g, (unsigned) i);
                const char *name = config_setting_name(m), *hint;
                bool known = false;

                if (!name)
                        continue;
                for (size_t k = 0; k < ks->n; k++)
                        if (streq(name, ks->keys[k]))
                                known = true;
                if (known)
                        continue;

                hint = closest(name, ks->keys, ks->n);
                if (hint) {
                        for (size_t k = 0; k < ks->n; k++)
                                if (ks->keys[k] == hint)
                                        grp->suggested |= UINT32_C(1) << k;
                        error_at(grp->ctx, m, "unknown key '%s' %s, did you mean '%s'?",
                                 name, ks->where, hint);
                        continue;
                }

                /* Known elsewhere? Then say where it belongs. */
                for (size_t o = 0; o < ELEMENTSOF(key_sets) && !hint; o++) {
                        if (&key_sets[o] == ks)
                                continue;
                        for (size_t k = 0; k < key_sets[o].n; k++)
                                if (streq(name, key_sets[o].keys[k]))
                                        hint = key_sets[o].where;
                }
                if (hint)
                        error_at(grp->ctx, m, "unknown key '%s' %s: it belongs %s",
                                 name, ks->where, hint);
                else
                        error_at(grp->ctx, m, "unknown key '%s' %s", name, ks->where);
        }
}

/* Whether an unknown key in this group looked like key (was reported as misspelt). */
static bool group_suggested(const Group *grp, const char *key) {
        for (size_t k = 0; k < grp->keys->n; k++)
                if (streq(grp->keys->keys[k], key))
                        return grp->suggested & (UINT32_C(1) << k);
        return false;
}

static void group_missing(Group *grp, const char *key) {
        if (group_suggested(grp, key))
                return; /* the misspelt key was reported already */
        error_at(grp->ctx, grp->g, "missing required key '%s' in %s", key, grp->what);
}

/* Returns the member if it is present and a string (*ret set), otherwise NULL:
 * a wrong type is reported, and so is absence when required. */
static const config_setting_t *group_string(Group *grp, const char *key, bool required,
                                            const char *expected, const char **ret) {
        const config_setting_t *s = config_setting_get_member(grp->g, key);

        if (!s) {
                if (required)
                        group_missing(grp, key);
                return NULL;
        }
        if (config_setting_type(s) != CONFIG_TYPE_STRING) {
                error_at(grp->ctx, s, "%s must be %s, not %s", key, expected ?: "a string",
                         type_name(config_setting_type(s)));
                return NULL;
        }
        *ret = config_setting_get_string(s);
        return s;
}

/* 1: set and valid (*ret assigned); 0: absent; -1: present but invalid (reported). */
static int group_duration(Group *grp, const char *key, bool required, bool allow_never,
                          usec_t min, usec_t max, const char *max_text,
                          usec_t *ret, const config_setting_t **ret_setting) {
        const config_setting_t *s;
        const char *v = NULL;
        usec_t d;
        int r;

        s = group_string(grp, key, required,
                         allow_never ? "a string such as \"30d\" or \"never\""
                                     : "a string such as \"30d\"", &v);
        if (ret_setting)
                *ret_setting = s;
        if (!s)
                return config_setting_get_member(grp->g, key) ? -1 : 0;

        if (allow_never && streq(v, "never")) {
                *ret = USEC_INFINITY;
                return 1;
        }
        r = parse_duration(v, &d);
        if (r == -ERANGE) {
                error_at(grp->ctx, s, "%s: duration '%s' is too large", key, v);
                return -1;
        }
        if (r < 0) {
                error_at(grp->ctx, s,
                         "%s: invalid duration '%s': expected a number and a unit "
                         "(ms, s, m, h, d, w), e.g. \"30d\"%s",
                         key, v, allow_never ? " or \"never\"" : "");
                return -1;
        }
        if (d < min) {
                char buf[FORMAT_DURATION_MAX];
                if (min == 1)
                        error_at(grp->ctx, s, "%s: '%s' must be greater than zero", key, v);
                else
                        error_at(grp->ctx, s, "%s: '%s' is too short: at least %s", key, v,
                                 format_duration(buf, sizeof(buf), min));
                return -1;
        }
        if (d > max) {
                error_at(grp->ctx, s, "%s: '%s' is longer than %s", key, v, max_text);
                return -1;
        }
        *ret = d;
        return 1;
}

typedef enum PathKind {
        PATH_FILE,      /* must not be "/" */
        PATH_DIRECTORY,
} PathKind;

/* An absolute path: 1 and *ret (normalized, malloc'ed), 0 absent, -1 invalid,
 * -ENOMEM. */
static int group_path(Group *grp, const char *key, bool required, PathKind kind,
                      char **ret, const config_setting_t **ret_setting) {
        const config_setting_t *s;
        const char *v = NULL;
        char *p;

        s = group_string(grp, key, required, "a string (an absolute path)", &v);
        if (ret_setting)
                *ret_setting = s;
        if (!s)
                return config_setting_get_member(grp->g, key) ? -1 : 0;

        if (v[0] != '/') {
                error_at(grp->ctx, s, "%s: '%s' is not an absolute path", key, v);
                return -1;
        }
        if (has_control_chars(v)) {
                error_at(grp->ctx, s, "%s: path contains control characters", key);
                return -1;
        }
        if (strlen(v) >= PATH_MAX) {
                error_at(grp->ctx, s, "%s: path is too long", key);
                return -1;
        }
        if (path_has_dotdot(v)) {
                error_at(grp->ctx, s, "%s: '%s' must not contain '..'", key, v);
                return -1;
        }
        p = path_normalize(v);
        if (!p)
                return -ENOMEM;
        if (kind == PATH_FILE && streq(p, "/")) {
                error_at(grp->ctx, s, "%s: '%s' does not name a file", key, v);
                free(p);
                return -1;
        }
        *ret = p;
        return 1;
}

static int strdup_to(char **dst, const char *s) {
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        free(*dst);
        *dst = c;
        return 0;
}

/* The name of the configuration file setting s is in, owned by c->sources (NULL: out
 * of memory, noted in ctx). Few distinct files: a linear search is fine. */
static const char *config_source(Ctx *ctx, Config *c, const config_setting_t *s) {
        const char *f = setting_file(ctx, s);
        char *copy;

        for (char **i = c->sources; i && *i; i++)
                if (streq(*i, f))
                        return *i;
        copy = strdup(f);
        if (!copy || strv_push(&c->sources, copy) < 0) {
                free(copy);
                ctx->oom = true;
                return NULL;
        }
        return copy;
}

/* ---- URLs --------------------------------------------------------------------- */

static bool host_is_loopback(const char *host, bool bracketed) {
        struct in_addr a4;
        struct in6_addr a6;

        if (bracketed)
                return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
        if (inet_pton(AF_INET, host, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        return strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0;
}

/* Checks "https://host[:port][/path]" ("http://" for loopback hosts). On success
 * returns 0 and the URL without trailing '/' in *ret; otherwise -EINVAL with *error
 * set, or -ENOMEM. */
static int url_check(const char *url, char **ret, const char **error) {
        char host[256];
        const char *p, *h, *end;
        bool https, bracketed = false;
        size_t n;

        if (strlen(url) > URL_MAX_LEN)
                return *error = "URL is too long", -EINVAL;
        for (p = url; *p; p++)
                if ((unsigned char) *p <= ' ' || *p == 0x7f)
                        return *error = "URL contains spaces or control characters", -EINVAL;

        if (strncasecmp(url, "https://", 8) == 0) {
                https = true;
                p = url + 8;
        } else if (strncasecmp(url, "http://", 7) == 0) {
                https = false;
                p = url + 7;
        } else if (strstr(url, "://"))
                return *error = "unsupported URL scheme, expected https://", -EINVAL;
        else
                return *error = "not a URL, expected https://HOST[:PORT][/PATH]", -EINVAL;

        if (strpbrk(p, "?#"))
                return *error = "URL must not contain a query or fragment", -EINVAL;

        end = p + strcspn(p, "/");      /* end of the authority */
        if (memchr(p, '@', (size_t) (end - p)))
                return *error = "URL must not contain user credentials", -EINVAL;

        if (*p == '[') {
                const char *close = memchr(p, ']', (size_t) (end - p));
                if (!close)
                        return *error = "URL has an unterminated IPv6 address", -EINVAL;
                h = p + 1;
                n = (size_t) (close - h);
                if (n == 0 || n >= sizeof(host))
                        return *error = "URL has an invalid IPv6 address", -EINVAL;
                memcpy(host, h, n);
                host[n] = 0;
                {
                        struct in6_addr a6;
                        if (inet_pton(AF_INET6, host, &a6) != 1)
                                return *error = "URL has an invalid IPv6 address", -EINVAL;
                }
                bracketed = true;
                p = close + 1;
        } else {
                h = p;
                n = strcspn(p, ":/");
                if (n == 0)
                        return *error = "URL has no host name", -EINVAL;
                if (n > 253)
                        return *error = "URL host name is too long", -EINVAL;
                memcpy(host, h, n);
                host[n] = 0;
                for (size_t i = 0; i < n; i++)
                        if (!isascii((unsigned char) host[i]) ||
                            (!isalnum((unsigned char) host[i]) && !strchr(".-_", host[i])))
                                return *error = "URL host name contains invalid characters "
                                                "(IPv6 addresses go in brackets)", -EINVAL;
                if (host[0] == '.' || host[0] == '-')
                        return *error = "URL has an invalid host name", -EINVAL;
                p += n;
        }

        if (*p == ':') {
                unsigned long port = 0;
                p++;
                if (!isdigit((unsigned char) *p))
                        return *error = "URL has an invalid port", -EINVAL;
                for (n = 0; isdigit((unsigned char) *p); p++, n++) {
                        port = port * 10 + (unsigned long) (*p - '0');
                        if (n > 5 || port > 65535)
                                return *error = "URL port is out of range (1-65535)", -EINVAL;
                }
                if (port == 0)
                        return *error = "URL port is out of range (1-65535)", -EINVAL;
        }
        if (*p != 0 && *p != '/')
                return *error = "not a URL, expected https://HOST[:PORT][/PATH]", -EINVAL;

        if (!https && !host_is_loopback(host, bracketed))
                return *error = "plain http:// is only allowed for loopback hosts "
                                "(127.0.0.1, [::1], localhost): use https://", -EINVAL;

        n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
                n--;
        *ret = strndup(url, n);
        return *ret ? 0 : -ENOMEM;
}

/* A URL that passed url_check(), in a form where two URLs of the same API compare
 * equal: scheme and host in lower case, no trailing dot on the host, no default port,
 * no trailing '/'. malloc'ed, NULL when out of memory. */
static char *url_normalize(const char *url) {
        const char *p = strstr(url, "://") + 3, *auth_end, *port = NULL;
        bool https = strncasecmp(url, "https", 5) == 0;
        size_t host_len, n;
        char *r, *o;

        auth_end = p + strcspn(p, "/");
        if (*p == '[') {
                const char *close = memchr(p, ']', (size_t) (auth_end - p));
                host_len = (size_t) (close - p) + 1;
        } else
                host_len = strcspn(p, ":/");
        if (p[host_len] == ':')
                port = p + host_len + 1;

        r = malloc(strlen(url) + 16);
        if (!r)
                return NULL;
        o = r + sprintf(r, "%s://", https ? "https" : "http");
        for (size_t i = 0; i < host_len; i++)
                *o++ = (char) tolower((unsigned char) p[i]);
        if (o > r && o[-1] == '.')
                o--;
        if (port) {
                unsigned long v = strtoul(port, NULL, 10);
                if (v != (https ? 443UL : 80UL))
                        o += sprintf(o, ":%lu", v);
        }
        n = strlen(auth_end);
        while (n > 0 && auth_end[n - 1] == '/')
                n--;
        memcpy(o, auth_end, n);
        o[n] = 0;
        return r;
}

/* ---- environments ------------------------------------------------------------- */

/* Parses the environment at list position pos into e, the last of c->envs. */
static int parse_env(Ctx *ctx, const config_setting_t *g, unsigned pos, Config *c, EnvConfig *e) {
        size_t idx = c->n_envs - 1;
        const config_setting_t *s, *s_file, *s_cred;
        const char *v = NULL;
        char what[NAME_MAX_LEN + 32];
        Group grp;
        int r;

        *e = (EnvConfig) {
                .api = API_V2,
                .request_timeout = DEFAULT_REQUEST_TIMEOUT,
                .max_parallel = DEFAULT_MAX_PARALLEL,
                .line = setting_line(g),
        };

        /* The name first: it makes the other messages clearer. */
        s = config_setting_get_member(g, "name");
        if (s && config_setting_type(s) == CONFIG_TYPE_STRING)
                snprintf(what, sizeof(what), "environment '%.64s'", config_setting_get_string(s));
        else
                snprintf(what, sizeof(what), "environment #%u", pos + 1);
        group_init(&grp, ctx, g, KEYS_ENV, what);
        group_check_keys(&grp);

        s = group_string(&grp, "name", true, NULL, &v);
        if (s) {
                if (strdup_to(&e->name, v) < 0)
                        return -ENOMEM;
                if (!name_valid(v, "._-"))
                        error_at(ctx, s, "name '%s' is invalid: use 1-64 characters of "
                                 "A-Z a-z 0-9 . _ - (not \".\" or \"..\")", v);
                for (size_t i = 0; i < idx; i++)
                        if (streq_ptr(c->envs[i].name, v)) {
                                error_at(ctx, s, "duplicate environment name '%s' "
                                         "(first defined at line %d)", v, c->envs[i].line);
                                break;
                        }
        } else
                ctx->env_names_incomplete = true;

        s = group_string(&grp, "url", true, NULL, &v);
        if (s) {
                const char *err = NULL;
                r = url_check(v, &e->url, &err);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        error_at(ctx, s, "url: '%s': %s", v, err);
                else {
                        _cleanup_free_ char *norm = url_normalize(e->url);
                        const char *api;

                        if (!norm)
                                return -ENOMEM;
                        /* Both would find each other's tokens in a leftover scan. */
                        for (size_t i = 0; i < idx; i++) {
                                _cleanup_free_ char *other = NULL;

                                if (!c->envs[i].url)
                                        continue;
                                other = url_normalize(c->envs[i].url);
                                if (!other)
                                        return -ENOMEM;
                                if (!streq(norm, other))
                                        continue;
                                if (c->envs[i].name)
                                        error_at(ctx, s, "%s has the same url as '%s' (line "
                                                 "%d): the leftover scan could take one's "
                                                 "tokens for the other's", what,
                                                 c->envs[i].name, c->envs[i].line);
                                else
                                        error_at(ctx, s, "%s has the same url as environment "
                                                 "#%zu (line %d): the leftover scan could "
                                                 "take one's tokens for the other's", what,
                                                 i + 1, c->envs[i].line);
                                break;
                        }
                        api = strstr(e->url + strcspn(e->url, ":") + 3, "/api");
                        if (api && (api[4] == 0 || api[4] == '/'))
                                warning_at(ctx, s, "url: '%s' looks like an API URL: give the "
                                           "environment's base URL, the API path is added", v);
                }
        }

        s = group_string(&grp, "api", false, "a string (\"v1\" or \"v2\")", &v);
        if (s) {
                if (streq(v, "v1"))
                        e->api = API_V1;
                else if (streq(v, "v2"))
                        e->api = API_V2;
                else
                        error_at(ctx, s, "api: '%s' is not supported: use \"v1\" or \"v2\"", v);
        }

        r = group_path(&grp, "management_token_file", false, PATH_FILE,
                       &e->management_token_file, &s_file);
        if (r == -ENOMEM)
                return r;
        if (r > 0) {
                e->management_token_file_source = config_source(ctx, c, s_file);
                e->management_token_file_line = setting_line(s_file);
        }
        s_cred = group_string(&grp, "management_token_credential", false, NULL, &v);
        if (s_cred) {
                if (strdup_to(&e->management_token_credential, v) < 0)
                        return -ENOMEM;
                if (!*v || strchr(v, '/') || streq(v, ".") || streq(v, "..") ||
                    has_control_chars(v) || strlen(v) > NAME_MAX)
                        error_at(ctx, s_cred, "management_token_credential: '%s' is not a "
                                 "credential name (a plain file name in "
                                 "$CREDENTIALS_DIRECTORY, without '/')", v);
        }
        if (s_file && s_cred)
                error_at(ctx, setting_line(s_cred) >= setting_line(s_file) ? s_cred : s_file,
                         "management_token_file and management_token_credential are "
                         "mutually exclusive: set only one");
        else if (!config_setting_get_member(g, "management_token_file") &&
                 !config_setting_get_member(g, "management_token_credential") &&
                 !group_suggested(&grp, "management_token_file") &&
                 !group_suggested(&grp, "management_token_credential"))
                error_at(ctx, g, "missing required key 'management_token_file' or "
                         "'management_token_credential' in %s", what);

        r = group_path(&grp, "ca_file", false, PATH_FILE, &e->ca_file, &s);
        if (r == -ENOMEM)
                return r;
        if (r > 0) {
                struct stat st;
                if (stat(e->ca_file, &st) < 0 || access(e->ca_file, R_OK) < 0)
                        error_at(ctx, s, "ca_file: cannot read '%s': %s", e->ca_file,
                                 strerror(errno));
                else if (S_ISDIR(st.st_mode))
                        error_at(ctx, s, "ca_file: '%s' is a directory, expected a PEM file",
                                 e->ca_file);
        }

        (void) group_duration(&grp, "request_timeout", false, false, USEC_PER_SEC,
                              10 * USEC_PER_MINUTE, "10m", &e->request_timeout, NULL);

        s = config_setting_get_member(g, "max_parallel");
        if (s) {
                int t = config_setting_type(s);
                if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
                        error_at(ctx, s, "max_parallel must be an integer, not %s", type_name(t));
                else {
                        long long n = config_setting_get_int64(s);
                        if (n < 1 || n > 64)
                                error_at(ctx, s, "max_parallel: %lld is out of range (1-64)", n);
                        else
                                e->max_parallel = (unsigned) n;
                }
        }

        return 0;
}

/* ---- tokens (jobs) ------------------------------------------------------------ */

static int parse_mode(const char *s, mode_t *ret) {
        unsigned long m = 0;

        if (!*s || strlen(s) > 6)
                return -EINVAL;
        for (; *s; s++) {
                if (*s < '0' || *s > '7')
                        return -EINVAL;
                m = m * 8 + (unsigned long) (*s - '0');
        }
        if (m > 07777)
                return -ERANGE;
        *ret = (mode_t) m;
        return 0;
}

static bool parse_numeric_id(const char *s, uint32_t *ret) {
        unsigned long long n = 0;

        if (!*s || strlen(s) > 10)
                return false;
        for (; *s; s++) {
                if (!isdigit((unsigned char) *s))
                        return false;
                n = n * 10 + (unsigned long long) (*s - '0');
        }
        if (n >= UINT32_MAX)   /* (uid_t) -1 means "unset" */
                return false;
        *ret = (uint32_t) n;
        return true;
}

static bool all_digits(const char *s) {
        if (!*s)
                return false;
        for (; *s; s++)
                if (!isdigit((unsigned char) *s))
                        return false;
        return true;
}

/* Resolves a user (group=false) or group name or numeric id. 0, -ENOENT (unknown),
 * -EINVAL (bad numeric id), -ENOMEM, other -errno from NSS. */
static int resolve_id(const char *name, bool group, uint32_t *ret) {
        size_t size = 16384;

        if (all_digits(name))
                return parse_numeric_id(name, ret) ? 0 : -EINVAL;

        for (;;) {
                _cleanup_free_ char *buf = malloc(size);
                int r;

                if (!buf)
                        return -ENOMEM;
                if (group) {
                        struct group gr, *res = NULL;
                        r = getgrnam_r(name, &gr, buf, size, &res);
                        if (r == 0 && res) {
                                *ret = (uint32_t) res->gr_gid;
                                return 0;
                        }
                } else {
                        struct passwd pw, *res = NULL;
                        r = getpwnam_r(name, &pw, buf, size, &res);
                        if (r == 0 && res) {
                                *ret = (uint32_t) res->pw_uid;
                                return 0;
                        }
                }
                if (r == ERANGE && size < 1024 * 1024) {
                        size *= 4;
                        continue;
                }
                /* Not found is r == 0 or one of the "no such entry" codes. */
                if (r == 0 || r == ENOENT || r == ESRCH || r == EBADF || r == EPERM)
                        return -ENOENT;
                return -r;
        }
}

static int parse_scopes(Ctx *ctx, const config_setting_t *s, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        int t = config_setting_type(s), n;
        bool bad = false;

        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
                error_at(ctx, s, "scopes must be an array of strings such as "
                         "[ \"ReadConfig\" ], not %s", type_name(t));
                return 0;
        }
        n = config_setting_length(s);
        if (n == 0) {
                error_at(ctx, s, "scopes: the list is empty (leave 'scopes' out to keep the "
                         "old token's scopes)");
                return 0;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                const char *v;
                char *copy;

                if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                        error_at(ctx, e, "scopes: element %d must be a string, not %s", i + 1,
                                 type_name(config_setting_type(e)));
                        bad = true;
                        continue;
                }
                v = config_setting_get_string(e);
                if (!*v) {
                        error_at(ctx, e, "scopes: element %d is an empty string", i + 1);
                        bad = true;
                        continue;
                }
                if (strlen(v) > SCOPE_MAX_LEN || strpbrk(v, " \t\"\\,") || has_control_chars(v)) {
                        error_at(ctx, e, "scopes: '%s' is not a valid scope name", v);
                        bad = true;
                        continue;
                }
                if (strv_contains(l, v)) {
                        warning_at(ctx, e, "scopes: '%s' is listed more than once", v);
                        continue;
                }
                copy = strdup(v);
                if (!copy)
                        return -ENOMEM;
                if (strv_push(&l, copy) < 0) {
                        free(copy);
                        return -ENOMEM;
                }
        }
        if (!bad)
                *ret = TAKE_PTR(l);
        return 0;
}

/* Parses the job at list position pos into the last of c->jobs, checking it against
 * the ones before it. */
static int parse_job(Ctx *ctx, const config_setting_t *g, unsigned pos, Config *c) {
        size_t idx = c->n_jobs - 1;
        JobConfig *j = &c->jobs[idx];
        const JobConfig *first;
        const config_setting_t *s, *s_rotate = NULL, *s_renew = NULL, *s_expires = NULL;
        const char *v = NULL;
        char what[NAME_MAX_LEN + 32];
        bool rotate_ok, renew_ok, renew_set, expires_ok, expires_set;
        Group grp;
        int r;

        *j = (JobConfig) {
                .grace_period = DEFAULT_GRACE_PERIOD,
                .revoke_delay = DEFAULT_REVOKE_DELAY,
                .revoke_when_unused_max = DEFAULT_REVOKE_WHEN_UNUSED_MAX,
                .mode = JOB_MODE_KEEP,
                .uid = (uid_t) -1,
                .gid = (gid_t) -1,
                .line = setting_line(g),
        };

        s = config_setting_get_member(g, "name");
        if (s && config_setting_type(s) == CONFIG_TYPE_STRING)
                snprintf(what, sizeof(what), "token '%.64s'", config_setting_get_string(s));
        else
                snprintf(what, sizeof(what), "token #%u", pos + 1);
        group_init(&grp, ctx, g, KEYS_JOB, what);
        group_check_keys(&grp);

        s = group_string(&grp, "name", true, NULL, &v);
        if (s) {
                if (strdup_to(&j->name, v) < 0)
                        return -ENOMEM;
                if (!name_valid(v, "._@:-"))
                        error_at(ctx, s, "name '%s' is invalid: use 1-64 characters of "
                                 "A-Z a-z 0-9 . _ @ : - (not \".\" or \"..\")", v);
                first = ctx_first(&ctx->job_names, j, job_name_cmp);
                if (!first)
                        return -ENOMEM;
                if (first != j)
                        error_at(ctx, s, "duplicate token name '%s' (first defined at "
                                 "line %d)", v, first->line);
        }

        s = group_string(&grp, "environment", true, NULL, &v);
        if (s && strdup_to(&j->environment, v) < 0)
                return -ENOMEM;
        /* Resolved (and unknown names reported) once all environments are known. */

        r = group_path(&grp, "file", true, PATH_FILE, &j->file, &s);
        if (r == -ENOMEM)
                return r;
        if (r > 0) {
                j->file_source = config_source(ctx, c, s);
                j->file_line = setting_line(s);
                first = ctx_first(&ctx->job_files, j, job_file_cmp);
                if (!first)
                        return -ENOMEM;
                if (first != j)
                        error_at(ctx, s, "file '%s' is also written by token '%s' "
                                 "(line %d)", j->file, strna(first->name), first->line);
        }

        rotate_ok = group_duration(&grp, "rotate_every", true, false, 1, MAX_ROTATE_EVERY,
                                   "10 years", &j->rotate_every, &s_rotate) > 0;
        (void) group_duration(&grp, "grace_period", false, false, 0, USEC_PER_YEAR,
                              "a year (365d)", &j->grace_period, NULL);
        (void) group_duration(&grp, "revoke_delay", false, false, 0, USEC_PER_YEAR,
                              "a year (365d)", &j->revoke_delay, NULL);
        {
                const config_setting_t *s_unused = NULL, *s_max = NULL;
                int ru = group_duration(&grp, "revoke_when_unused", false, false, 1, USEC_PER_YEAR,
                                        "a year (365d)", &j->revoke_when_unused, &s_unused);
                int rm = group_duration(&grp, "revoke_when_unused_max", false, false, 1, USEC_PER_YEAR,
                                        "a year (365d)", &j->revoke_when_unused_max, &s_max);
                if (rm > 0 && ru == 0)
                        warning_at(ctx, s_max, "revoke_when_unused_max has no effect without revoke_when_unused");
        }
        r = group_duration(&grp, "renew_before", false, false, 0, USEC_PER_YEAR,
                           "a year (365d)", &j->renew_before, &s_renew);
        renew_ok = r >= 0;
        renew_set = r > 0;
        r = group_duration(&grp, "expires_in", false, true, 0, USEC_INFINITY - 1, "",
                           &j->expires_in, &s_expires);
        expires_set = r > 0;
        expires_ok = r >= 0;
        if (!expires_set && rotate_ok)
                j->expires_in = 2 * j->rotate_every;
        /* Renew a third of the lifetime early, at most a week: "rotate_every = 1d" alone
         * makes a valid job. */
        if (!renew_set)
                j->renew_before = (expires_set || rotate_ok) && j->expires_in != USEC_INFINITY ?
                        MIN(j->expires_in / 3, DEFAULT_RENEW_BEFORE_MAX) : DEFAULT_RENEW_BEFORE_MAX;

        /* New tokens must not be due for renewal the moment they are made. */
        if (renew_ok && expires_ok && (expires_set || rotate_ok) &&
            j->expires_in != USEC_INFINITY) {
                char e_buf[FORMAT_DURATION_MAX], r_buf[FORMAT_DURATION_MAX];
                char i_buf[FORMAT_DURATION_MAX], p_buf[FORMAT_DURATION_MAX];

                format_duration(e_buf, sizeof(e_buf), j->expires_in);
                format_duration(r_buf, sizeof(r_buf), j->renew_before);
                if (j->expires_in <= j->renew_before)
                        error_at(ctx, s_expires ?: s_renew ?: s_rotate,
                                 "expires_in (%s%s) must be longer than renew_before (%s%s): "
                                 "new tokens would be due for renewal as soon as they are "
                                 "created%s", e_buf,
                                 expires_set ? "" : ", the default of 2 x rotate_every", r_buf,
                                 renew_set ? "" : ", the default of a third of expires_in",
                                 expires_set ? "; set a shorter renew_before or a longer expires_in"
                                             : "; set expires_in, or a shorter renew_before");
                else if (rotate_ok && j->expires_in - j->renew_before < j->rotate_every)
                        warning_at(ctx, s_expires ?: s_renew ?: s_rotate,
                                   "tokens expire in %s and are renewed %s before that, so "
                                   "they will be rotated every %s rather than every %s "
                                   "(rotate_every)", e_buf, r_buf,
                                   format_duration(i_buf, sizeof(i_buf),
                                                   j->expires_in - j->renew_before),
                                   format_duration(p_buf, sizeof(p_buf), j->rotate_every));
        }

        s = config_setting_get_member(g, "scopes");
        if (s) {
                r = parse_scopes(ctx, s, &j->scopes);
                if (r < 0)
                        return r;
        }

        s = group_string(&grp, "token_name", false, NULL, &v);
        if (s) {
                if (!*v)
                        error_at(ctx, s, "token_name must not be empty (leave it out to keep "
                                 "the old token's name)");
                else if (utf8_chars(v) > TOKEN_NAME_MAX_CHARS)
                        error_at(ctx, s, "token_name is longer than %d characters",
                                 TOKEN_NAME_MAX_CHARS);
                else if (has_control_chars(v))
                        error_at(ctx, s, "token_name contains control characters");
                else {
                        if (strdup_to(&j->token_name, v) < 0)
                                return -ENOMEM;
                        /* The token name is how an interrupted create is found again:
                         * within one environment it must be unique. */
                        first = j->environment ?
                                ctx_first(&ctx->job_token_names, j, job_token_name_cmp) : j;
                        if (!first)
                                return -ENOMEM;
                        if (first != j)
                                error_at(ctx, s, "token_name '%s' is also used by token "
                                         "'%s' (line %d) in environment '%s': each "
                                         "token needs its own name", v,
                                         strna(first->name), first->line,
                                         j->environment);
                }
        }

        s = config_setting_get_member(g, "mode");
        if (s) {
                if (config_setting_type(s) != CONFIG_TYPE_STRING)
                        error_at(ctx, s, "mode must be a string of octal digits such as "
                                 "\"0640\", not %s", type_name(config_setting_type(s)));
                else {
                        mode_t m = 0;
                        v = config_setting_get_string(s);
                        r = parse_mode(v, &m);
                        if (r == -ERANGE)
                                error_at(ctx, s, "mode: '%s' is out of range (at most 07777)", v);
                        else if (r < 0)
                                error_at(ctx, s, "mode: '%s' is not an octal mode such as "
                                         "\"0640\"", v);
                        else if (m & (S_ISUID | S_ISGID | S_ISVTX))
                                error_at(ctx, s, "mode: '%s' sets the %s bit: a token file "
                                         "needs none of setuid, setgid and sticky; use "
                                         "permission bits only, such as \"0640\"", v,
                                         m & S_ISUID ? "setuid" : m & S_ISGID ? "setgid" : "sticky");
                        else if (m & S_IWOTH)
                                error_at(ctx, s, "mode: '%s' would make the token file "
                                         "writable by everyone", v);
                        else {
                                if (m & S_IROTH)
                                        warning_at(ctx, s, "mode: '%s' makes the token file "
                                                   "readable by everyone", v);
                                j->mode = m;
                        }
                }
        }

        s = group_string(&grp, "owner", false, "a string (a user name or a quoted numeric id)", &v);
        if (s) {
                uint32_t id;
                r = *v ? resolve_id(v, false, &id) : -EINVAL;
                if (r == -ENOMEM)
                        return r;
                if (!*v)
                        error_at(ctx, s, "owner must not be empty (leave it out to keep "
                                 "the current file's owner)");
                else if (r == -ENOENT)
                        error_at(ctx, s, "owner: unknown user '%s'", v);
                else if (r == -EINVAL)
                        error_at(ctx, s, "owner: '%s' is not a valid user id", v);
                else if (r < 0)
                        error_at(ctx, s, "owner: cannot look up user '%s': %s", v, strerror(-r));
                else
                        j->uid = (uid_t) id; /* NOLINT(clang-analyzer-core.uninitialized.Assign): set when r >= 0 */
        }

        s = group_string(&grp, "group", false, "a string (a group name or a quoted numeric id)", &v);
        if (s) {
                uint32_t id;
                r = *v ? resolve_id(v, true, &id) : -EINVAL;
                if (r == -ENOMEM)
                        return r;
                if (!*v)
                        error_at(ctx, s, "group must not be empty (leave it out to keep "
                                 "the current file's group)");
                else if (r == -ENOENT)
                        error_at(ctx, s, "group: unknown group '%s'", v);
                else if (r == -EINVAL)
                        error_at(ctx, s, "group: '%s' is not a valid group id", v);
                else if (r < 0)
                        error_at(ctx, s, "group: cannot look up group '%s': %s", v, strerror(-r));
                else
                        j->gid = (gid_t) id; /* NOLINT(clang-analyzer-core.uninitialized.Assign): set when r >= 0 */
        }

        s = config_setting_get_member(g, "on_rotate");
        if (s && config_setting_type(s) == CONFIG_TYPE_STRING &&
            strpbrk(config_setting_get_string(s), " \t")) {
                error_at(ctx, s, "on_rotate: '%s': give the absolute path of a program, "
                         "without arguments (use a script to pass some)",
                         config_setting_get_string(s));
        } else {
                r = group_path(&grp, "on_rotate", false, PATH_FILE, &j->on_rotate, &s);
                if (r == -ENOMEM)
                        return r;
                if (r > 0) {
                        struct stat st;
                        if (stat(j->on_rotate, &st) < 0)
                                error_at(ctx, s, "on_rotate: cannot execute '%s': %s",
                                         j->on_rotate, strerror(errno));
                        else if (!S_ISREG(st.st_mode))
                                error_at(ctx, s, "on_rotate: '%s' is not a regular file",
                                         j->on_rotate);
                        else if (access(j->on_rotate, X_OK) < 0)
                                error_at(ctx, s, "on_rotate: cannot execute '%s': %s",
                                         j->on_rotate, strerror(errno));
                }
        }

        return 0;
}

/* ---- the file as a whole ------------------------------------------------------ */

/* The "environments" or "tokens" list: returns the setting if it is a list (elements
 * that are not groups are reported; the caller skips them), else NULL (reported). */
static const config_setting_t *top_list(Ctx *ctx, Group *top, const char *key, const char *noun) {
        const config_setting_t *s = config_setting_get_member(top->g, key);
        int t, n;

        if (!s) {
                if (group_suggested(top, key))
                        return NULL; /* misspelt, reported already */
                error_at(ctx, NULL, "no %s (add a '%s = ( { ... } );' list)", noun, key);
                return NULL;
        }
        t = config_setting_type(s);
        if (t != CONFIG_TYPE_LIST && t != CONFIG_TYPE_ARRAY) {
                error_at(ctx, s, "%s must be a list of groups: %s = ( { ... }, { ... } ); "
                         "not %s", key, key, type_name(t));
                return NULL;
        }
        n = config_setting_length(s);
        if (n == 0) {
                error_at(ctx, s, "no %s: the %s list is empty", noun, key);
                return NULL;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                if (config_setting_type(e) != CONFIG_TYPE_GROUP)
                        error_at(ctx, e, "%s: element %d must be a group { ... }, not %s",
                                 key, i + 1, type_name(config_setting_type(e)));
        }
        return s;
}

/* control_socket: an absolute path that fits a sockaddr_un, or "" (no control socket);
 * control_group: who besides root may use it. */
static int parse_control(Ctx *ctx, Group *top, Config *c) {
        const config_setting_t *s;
        const char *v = NULL;
        int r;

        c->control_gid = (gid_t) -1;
        s = group_string(top, "control_socket", false, "a string (an absolute path, or \"\" for none)", &v);
        if (s && !*v)
                ; /* disabled */
        else if (s) {
                _cleanup_free_ char *p = NULL;
                r = group_path(top, "control_socket", false, PATH_FILE, &p, NULL);
                if (r == -ENOMEM)
                        return r;
                if (r > 0 && strlen(p) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                        error_at(ctx, s, "control_socket: '%s' is too long for a socket path (at most %zu bytes)",
                                 p, sizeof(((struct sockaddr_un *) NULL)->sun_path) - 1);
                else if (r > 0)
                        c->control_socket = TAKE_PTR(p);
        } else if (!config_setting_get_member(top->g, "control_socket") &&
                   strdup_to(&c->control_socket, DEFAULT_CONTROL_SOCKET) < 0)
                return -ENOMEM;

        s = group_string(top, "control_group", false, "a string (a group name or a quoted numeric id)", &v);
        if (s) {
                uint32_t id;
                r = *v ? resolve_id(v, true, &id) : -EINVAL;
                if (r == -ENOMEM)
                        return r;
                if (!*v)
                        error_at(ctx, s, "control_group must not be empty (leave it out: root only)");
                else if (r == -ENOENT)
                        error_at(ctx, s, "control_group: unknown group '%s'", v);
                else if (r == -EINVAL)
                        error_at(ctx, s, "control_group: '%s' is not a valid group id", v);
                else if (r < 0)
                        error_at(ctx, s, "control_group: cannot look up group '%s': %s", v, strerror(-r));
                else {
                        c->control_gid = (gid_t) id; /* NOLINT(clang-analyzer-core.uninitialized.Assign): set when r >= 0 */
                        if (strdup_to(&c->control_group, v) < 0)
                                return -ENOMEM;
                }
        }
        return 0;
}

static int parse_config(Ctx *ctx, const config_t *cfg, Config *c) {
        const config_setting_t *root = config_root_setting(cfg), *envs, *jobs;
        _cleanup_free_ const config_setting_t **env_groups = NULL, **job_groups = NULL;
        const char *env;
        Group top;
        int r;

        group_init(&top, ctx, root, KEYS_TOP, "the configuration");
        group_check_keys(&top);

        /* state_directory: default is the first entry of $STATE_DIRECTORY. */
        r = group_path(&top, "state_directory", false, PATH_DIRECTORY, &c->state_directory, NULL);
        if (r == -ENOMEM)
                return r;
        if (r == 0) {
                env = getenv("STATE_DIRECTORY");
                if (env && env[0] == '/') {
                        c->state_directory = strndup(env, strcspn(env, ":"));
                        if (!c->state_directory)
                                return -ENOMEM;
                } else if (strdup_to(&c->state_directory, DEFAULT_STATE_DIRECTORY) < 0)
                        return -ENOMEM;
        }

        c->retry_max_delay = DEFAULT_RETRY_MAX_DELAY;
        (void) group_duration(&top, "retry_max_delay", false, false, USEC_PER_SEC, USEC_PER_DAY,
                              "a day (1d)", &c->retry_max_delay, NULL);

        {
                const config_setting_t *s_metrics = NULL;
                r = group_path(&top, "metrics_file", false, PATH_FILE, &c->metrics_file, &s_metrics);
                if (r == -ENOMEM)
                        return r;
                size_t n = r > 0 ? strlen(c->metrics_file) : 0;
                if (r > 0 && (n < 5 || !streq(c->metrics_file + n - 5, ".prom")))
                        warning_at(ctx, s_metrics, "metrics_file: '%s' does not end in .prom: node_exporter's textfile collector reads only *.prom files",
                                   c->metrics_file);
        }
        r = parse_control(ctx, &top, c);
        if (r < 0)
                return r;

        envs = top_list(ctx, &top, "environments", "environments defined");
        jobs = top_list(ctx, &top, "tokens", "tokens to rotate");

        if (envs) {
                unsigned n = (unsigned) config_setting_length(envs);

                c->envs = calloc(n, sizeof(EnvConfig));
                env_groups = calloc(n, sizeof(config_setting_t *));
                if (!c->envs || !env_groups)
                        return -ENOMEM;
                for (unsigned i = 0; i < n; i++) {
                        const config_setting_t *g = config_setting_get_elem(envs, i);

                        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
                                ctx->env_names_incomplete = true;
                                continue;
                        }
                        env_groups[c->n_envs] = g;
                        c->n_envs++;   /* counted first, so config_free() frees a partial one */
                        r = parse_env(ctx, g, i, c, &c->envs[c->n_envs - 1]);
                        if (r < 0)
                                return r;
                }
        }

        if (jobs) {
                unsigned n = (unsigned) config_setting_length(jobs);

                c->jobs = calloc(n, sizeof(JobConfig));
                job_groups = calloc(n, sizeof(config_setting_t *));
                if (!c->jobs || !job_groups)
                        return -ENOMEM;
                for (unsigned i = 0; i < n; i++) {
                        const config_setting_t *g = config_setting_get_elem(jobs, i);

                        if (config_setting_type(g) != CONFIG_TYPE_GROUP)
                                continue;
                        job_groups[c->n_jobs] = g;
                        c->n_jobs++;
                        r = parse_job(ctx, g, i, c);
                        if (r < 0)
                                return r;
                }
        }

        /* Resolve each job's environment. Unknown names are only reported when the
         * environments list itself is in order; otherwise every job would repeat the
         * same complaint. */
        for (size_t i = 0; i < c->n_jobs; i++) {
                JobConfig *j = &c->jobs[i];
                _cleanup_free_ const char **names = NULL;
                const config_setting_t *s;
                const char *hint;

                if (!j->environment)
                        continue;
                for (size_t k = 0; k < c->n_envs && !j->env; k++)
                        if (streq_ptr(c->envs[k].name, j->environment))
                                j->env = &c->envs[k];
                if (j->env || c->n_envs == 0 || ctx->env_names_incomplete)
                        continue;

                s = config_setting_get_member(job_groups[i], "environment");
                names = calloc(c->n_envs, sizeof(char *));
                if (!names)
                        return -ENOMEM;
                for (size_t k = 0; k < c->n_envs; k++)
                        names[k] = c->envs[k].name;
                hint = closest(j->environment, names, c->n_envs);
                if (hint)
                        error_at(ctx, s, "unknown environment '%s', did you mean '%s'?",
                                 j->environment, hint);
                else
                        error_at(ctx, s, "unknown environment '%s' (not defined in "
                                 "'environments')", j->environment);
        }

        /* An environment nobody uses is probably a mistake, but a harmless one. */
        if (c->n_jobs > 0)
                for (size_t k = 0; k < c->n_envs; k++) {
                        bool used = false;

                        if (!c->envs[k].name)
                                continue;
                        for (size_t i = 0; i < c->n_jobs && !used; i++)
                                used = streq_ptr(c->jobs[i].environment, c->envs[k].name);
                        if (!used)
                                warning_at(ctx, env_groups[k],
                                           "environment '%s' is not used by any token",
                                           c->envs[k].name);
                }

        return 0;
}

/* libconfig (1.5) opens the file of an "@include" line with fopen() and, when reading
 * it fails (a directory), calls exit() from its scanner: a reload would kill the daemon.
 * A FIFO would block it and a device never end. So every file an @include line (at the
 * start of a line, as libconfig takes them) names is looked at first, in included files
 * too: one that exists must be a regular file. A missing one is left to libconfig's
 * "cannot open include file". Lines in comments or strings are looked at as well (a
 * false alarm at worst). The names go to *names (messages point to them). Returns 0,
 * -ENOMEM, or -EINVAL once reported. */
#define CONFIG_MAX_INCLUDE_DEPTH 10   /* libconfig's */
static int check_includes(Ctx *ctx, char ***names, const char *file, FILE *f, unsigned depth) {
        _cleanup_free_ char *line = NULL;
        size_t allocated = 0;
        int lineno = 0, r = 0;

        while (getline(&line, &allocated, f) >= 0) {
                _cleanup_fclose_ FILE *inc = NULL;
                const char *p = line;
                struct stat st;
                char *name;
                size_t n;

                lineno++;
                p += strspn(p, " \t");
                if (strncmp(p, "@include", strlen("@include")) != 0)
                        continue;
                p += strlen("@include");
                n = strspn(p, " \t");
                if (n == 0 || p[n] != '"')
                        continue;
                p += n + 1;
                n = strcspn(p, "\"\n");
                if (p[n] != '"')
                        continue;
                name = strndup(p, n);
                if (!name || strv_push(names, name) < 0) {
                        free(name);
                        ctx->oom = true;
                        return -ENOMEM;
                }
                if (stat(name, &st) < 0)
                        continue;
                if (!S_ISREG(st.st_mode)) {
                        report_line(ctx, LOG_ERR, file, lineno, "@include \"%s\": is %s, not a regular file",
                                    name, file_type_name(st.st_mode));
                        r = -EINVAL;
                        continue;
                }
                if (depth + 1 >= CONFIG_MAX_INCLUDE_DEPTH)
                        continue; /* libconfig refuses it */
                inc = fopen(name, "re");
                if (inc && check_includes(ctx, names, name, inc, depth + 1) < 0)
                        r = ctx->oom ? -ENOMEM : -EINVAL;
        }
        return r;
}

#define CONFIG_MAX_SIZE (64U << 20)

/* The whole stream, NUL-terminated; -EBADMSG if it holds a NUL byte, -EFBIG past
 * CONFIG_MAX_SIZE. */
static int read_whole(FILE *f, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, allocated = 0;

        for (;;) {
                size_t n;
                if (allocated - size < 4096) {
                        char *b;
                        if (allocated >= CONFIG_MAX_SIZE)
                                return -EFBIG;
                        allocated = allocated ? allocated * 2 : 16384;
                        b = realloc(buf, allocated + 1);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                }
                n = fread(buf + size, 1, allocated - size, f);
                size += n;
                if (n == 0) {
                        if (ferror(f))
                                return -EIO;
                        break;
                }
        }
        if (size > CONFIG_MAX_SIZE)
                return -EFBIG;
        buf[size] = 0;
        if (memchr(buf, 0, size))
                return -EBADMSG;
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

int config_load(const char *path, Config **ret, config_report_t report, void *userdata) {
        _cleanup_free_ char *text = NULL;
        size_t text_size = 0;
        _cleanup_strv_free_ char **included = NULL;
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        Ctx ctx = { .path = path };
        struct stat st;
        int r;

        if (!path || !ret)
                return -EINVAL;

        f = fopen(path, "re");
        if (!f)
                r = -errno;
        else if (fstat(fileno(f), &st) < 0)
                r = -errno;
        else if (S_ISDIR(st.st_mode))
                r = -EISDIR;
        else
                r = 0;
        if (r < 0) {
                if (report) {
                        _cleanup_free_ char *m = strdup_printf("%s: cannot read: %s", path,
                                                               strerror(-r));
                        if (m)
                                report(LOG_ERR, m, userdata);
                }
                return r;
        }

        c = calloc(1, sizeof(Config));
        if (!c)
                return -ENOMEM;
        c->path = strdup(path);
        if (!c->path)
                return -ENOMEM;

        /* Read once, into memory: the file may be a pipe (process substitution, a FIFO),
         * and the @include check and libconfig must see the same text. */
        r = read_whole(f, &text, &text_size);
        if (r == -EBADMSG)
                report_line(&ctx, LOG_ERR, path, 0, "contains a NUL byte: not a configuration file");
        else if (r == -EFBIG)
                report_line(&ctx, LOG_ERR, path, 0, "larger than %u MiB", CONFIG_MAX_SIZE >> 20);
        else if (r < 0)
                report_line(&ctx, LOG_ERR, path, 0, "cannot read: %s", strerror(-r));
        if (r >= 0 && text_size > 0) {
                _cleanup_fclose_ FILE *m = fmemopen(text, text_size, "r");
                r = m ? check_includes(&ctx, &included, path, m, 0) : -errno;
        }
        if (r < 0) {
                ctx_flush(&ctx, report, userdata);
                ctx_done(&ctx);
                return r;
        }

        {
                _cleanup_(config_destroy) config_t cfg;

                config_init(&cfg);
                config_set_options(&cfg, 0);    /* in particular: no CONFIG_OPTION_AUTOCONVERT */

                /* From a stream over the text, not config_read_string(): that makes the
                 * scanner copy the whole text, at the startup's peak of memory. */
                _cleanup_fclose_ FILE *stream = text_size > 0 ? fmemopen(text, text_size, "r") : NULL;

                if (text_size > 0 && !stream) {
                        r = -errno;
                        report_line(&ctx, LOG_ERR, path, 0, "cannot read: %s", strerror(-r));
                        ctx_flush(&ctx, report, userdata);
                        ctx_done(&ctx);
                        return r;
                }
                if ((stream ? config_read(&cfg, stream) : config_read_string(&cfg, "")) != CONFIG_TRUE) {
                        const char *file = config_error_file(&cfg) ?: path;
                        int line = config_error_line(&cfg);

                        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO) {
                                report_line(&ctx, LOG_ERR, file, 0, "cannot read: %s",
                                            config_error_text(&cfg));
                                r = -EIO;
                        } else {
                                report_line(&ctx, LOG_ERR, file, line, "%s",
                                            config_error_text(&cfg));
                                r = -EINVAL;
                        }
                        ctx_flush(&ctx, report, userdata);
                        ctx_done(&ctx);
                        return r;
                }
                /* libconfig keeps its own strings: the text is not needed any more,
                 * and building the jobs is the startup's peak of memory. */
                if (stream)
                        (void) fclose(TAKE_PTR(stream));
                free(TAKE_PTR(text));

                r = parse_config(&ctx, &cfg, c);
                if (r >= 0 && ctx.oom)
                        r = -ENOMEM;
                ctx_flush(&ctx, report, userdata);
        }
        ctx_done(&ctx);

        if (r < 0)
                return r;
        if (ctx.oom)
                return -ENOMEM;
        if (ctx.n_errors > 0)
                return -EINVAL;

        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- --check-config: the token files ------------------------------------------ */

/* follow: the management token is only read, so a link to it is fine (it may even point
 * at a job's file: the token the daemon rotates for itself); a job's file is replaced by
 * rename, which would replace the link and leave its target behind. */
static void check_token_path(Ctx *ctx, const char *source, int line, const char *key,
                             const char *path, bool follow) {
        _cleanup_free_ char *dir = NULL;
        struct stat st;

        if ((follow ? stat(path, &st) : lstat(path, &st)) >= 0) {
                if (S_ISLNK(st.st_mode)) {
                        _cleanup_free_ char *target = symlink_target(path);
                        if (!target) {
                                ctx->oom = true;
                                return;
                        }
                        report_line(ctx, LOG_ERR, source, line, "%s: '%s' is a symbolic link "
                                    "to '%s': symbolic links are refused, set %s to the real "
                                    "path", key, path, target, key);
                } else if (!S_ISREG(st.st_mode))
                        report_line(ctx, LOG_ERR, source, line, "%s: '%s' is not a regular "
                                    "file (%s)", key, path, file_type_name(st.st_mode));
                else if (!follow && st.st_nlink > 1)
                        report_line(ctx, LOG_ERR, source, line, "%s: '%s' has %lu hard links: "
                                    "its other names would keep the old token after a rotation",
                                    key, path, (unsigned long) st.st_nlink);
                return;
        }
        if (errno != ENOENT) {
                report_line(ctx, LOG_WARNING, source, line, "%s: cannot check '%s': %s", key,
                            path, strerror(errno));
                return;
        }
        /* Not there yet is fine (it must be before the job runs); its directory must be. */
        dir = dirname_malloc(path);
        if (!dir) {
                ctx->oom = true;
                return;
        }
        if (stat(dir, &st) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        report_line(ctx, LOG_ERR, source, line, "%s: the directory '%s' does "
                                    "not exist", key, dir);
                else
                        report_line(ctx, LOG_WARNING, source, line, "%s: cannot check '%s': "
                                    "%s", key, dir, strerror(errno));
        } else if (!S_ISDIR(st.st_mode))
                report_line(ctx, LOG_ERR, source, line, "%s: '%s' is not a directory", key, dir);
}

int config_check_files(const Config *c, config_report_t report, void *userdata) {
        Ctx ctx = { .path = c ? c->path : NULL };
        int r = 0;

        if (!c)
                return -EINVAL;
        for (size_t k = 0; k < c->n_envs; k++) {
                const EnvConfig *e = &c->envs[k];
                bool also_job = false;

                if (!e->management_token_file)
                        continue;
                /* A self-rotated management token is checked (and reported) as the job's. */
                for (size_t i = 0; i < c->n_jobs && !also_job; i++)
                        also_job = streq_ptr(c->jobs[i].file, e->management_token_file);
                if (!also_job)
                        check_token_path(&ctx, e->management_token_file_source ?: c->path,
                                         e->management_token_file_line, "management_token_file",
                                         e->management_token_file, true);
        }
        for (size_t i = 0; i < c->n_jobs; i++)
                if (c->jobs[i].file)
                        check_token_path(&ctx, c->jobs[i].file_source ?: c->path,
                                         c->jobs[i].file_line, "file", c->jobs[i].file, false);

        ctx_flush(&ctx, report, userdata);
        if (ctx.oom)
                r = -ENOMEM;
        else if (ctx.n_errors > 0)
                r = -EINVAL;
        ctx_done(&ctx);
        return r;
}

static void env_config_done(EnvConfig *e) {
        free(e->name);
        free(e->url);
        free(e->management_token_file);
        free(e->management_token_credential);
        free(e->ca_file);
}

static void job_config_done(JobConfig *j) {
        free(j->name);
        free(j->environment);
        free(j->file);
        strv_free(j->scopes);
        free(j->token_name);
        free(j->on_rotate);
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_envs; i++)
                env_config_done(&c->envs[i]);
        for (size_t i = 0; i < c->n_jobs; i++)
                job_config_done(&c->jobs[i]);
        free(c->envs);
        free(c->jobs);
        free(c->path);
        free(c->state_directory);
        free(c->metrics_file);
        free(c->control_socket);
        free(c->control_group);
        strv_free(c->sources);
        free(c);
        return NULL;
}

const EnvConfig *config_find_env(const Config *c, const char *name) {
        if (!c || !name)
                return NULL;
        for (size_t i = 0; i < c->n_envs; i++)
                if (streq_ptr(c->envs[i].name, name))
                        return &c->envs[i];
        return NULL;
}

const JobConfig *config_find_job(const Config *c, const char *name) {
        if (!c || !name)
                return NULL;
        for (size_t i = 0; i < c->n_jobs; i++)
                if (streq_ptr(c->jobs[i].name, name))
                        return &c->jobs[i];
        return NULL;
}

/* A token is due at creation + rotate_every, or at expiry - renew_before if earlier. The
 * expiry is the one the API reports, not the one asked for: a tenant policy may cap the
 * lifetime. When renew_before cannot be met for a token the daemon made, renew at two
 * thirds of its real lifetime (a token found in the file that close to its expiry is
 * simply due). Never sooner than a tenth of rotate_every after the last rotation (local
 * clock), so that no answer and no clock can make a job spin. */
usec_t job_config_rotation_due(const JobConfig *c, usec_t created, usec_t expires, usec_t rotated_at) {
        usec_t due = usec_add(created, c->rotate_every);

        if (expires != USEC_INFINITY) {
                usec_t life = expires > created ? expires - created : 0;
                usec_t early = c->renew_before < life ? expires - c->renew_before
                             : rotated_at ? created + life / 3 * 2 : 0;
                due = MIN(due, early);
        }
        if (rotated_at)
                due = MAX(due, usec_add(rotated_at, c->rotate_every / 10));
        return due;
}

bool env_config_equal(const EnvConfig *a, const EnvConfig *b) {
        if (a == b)
                return true;
        if (!a || !b)
                return false;
        return streq_ptr(a->name, b->name) &&
               streq_ptr(a->url, b->url) &&
               a->api == b->api &&
               streq_ptr(a->management_token_file, b->management_token_file) &&
               streq_ptr(a->management_token_credential, b->management_token_credential) &&
               streq_ptr(a->ca_file, b->ca_file) &&
               a->request_timeout == b->request_timeout &&
               a->max_parallel == b->max_parallel;
        /* line: only for messages */
}

bool job_config_equal(const JobConfig *a, const JobConfig *b) {
        if (a == b)
                return true;
        if (!a || !b)
                return false;
        if (!(streq_ptr(a->name, b->name) &&
              streq_ptr(a->environment, b->environment) &&
              streq_ptr(a->file, b->file) &&
              a->rotate_every == b->rotate_every &&
              a->grace_period == b->grace_period &&
              a->revoke_delay == b->revoke_delay &&
              a->revoke_when_unused == b->revoke_when_unused &&
              a->revoke_when_unused_max == b->revoke_when_unused_max &&
              a->renew_before == b->renew_before &&
              a->expires_in == b->expires_in &&
              ((!a->scopes && !b->scopes) ||
               (a->scopes && b->scopes && strv_equal(a->scopes, b->scopes))) &&
              streq_ptr(a->token_name, b->token_name) &&
              a->mode == b->mode &&
              a->uid == b->uid &&
              a->gid == b->gid &&
              streq_ptr(a->on_rotate, b->on_rotate)))
                return false;

        /* Same environment name, but does it still point at the same tenant with the
         * same API? (Its management token, CA, timeout or parallelism may change
         * without affecting which token the job manages.) */
        if (a->env && b->env)
                return streq_ptr(a->env->url, b->env->url) && a->env->api == b->env->api;
        return !a->env == !b->env;
}
