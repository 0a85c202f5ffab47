/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* vasprintf, reallocarray */
#endif
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <strings.h>
#include <time.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "dtrotated-api.h"
#include "dtrotated-util.h"

/* The Tokens API client. Everything a request needs is copied into the ApiRequest; the
 * answer is collected (capped at API_MAX_BODY) by the write callback, the few headers we
 * care about by the header callback, and api_request_finish() turns status, headers and
 * body into an ApiResult. Buffers that may hold a secret (the request body of LOOKUP,
 * the Authorization header, the answer of CREATE, the parsed JSON) are wiped before
 * they are freed. Error strings name tokens by id or public part, never by secret, and
 * are scrubbed of the secrets the request knows about as a last line of defence. */

#define API_MAX_PAGES 1000U           /* v2 LIST: nextPageKey is followed this often at most */
#define API_V2_PAGE_SIZE 500
#define API_MAX_DEPTH 64              /* JSON nesting we accept (yajl_tree_free recurses) */
#define API_MAX_MESSAGE 256           /* bytes of the API's error.message quoted */
#define API_MAX_ID 128
#define API_MAX_FIELD 1024            /* auth token, name, scopes */
#define API_CONNECT_TIMEOUT (10 * USEC_PER_SEC)
#define API_LOW_SPEED_TIME 30L        /* s below 1 byte/s before giving up */
#define API_DEFAULT_TIMEOUT (30 * USEC_PER_SEC)

typedef struct Buffer {
        char *data;
        size_t size;
        size_t allocated;
} Buffer;

struct ApiRequest {
        ApiOp op;
        ApiVersion version;
        char *env;
        char *target;                 /* what messages call the request's object: an id,
                                       * a token's public part; NULL for CREATE, LIST */
        char *base_url;
        char *secrets[2];             /* auth token, LOOKUP token: scrubbed from messages */

        CURL *easy;
        struct curl_slist *headers;   /* holds the Authorization header: wiped */
        char *body;                   /* request body, may hold a secret: wiped */
        size_t body_size;
        char errbuf[CURL_ERROR_SIZE];

        /* State of the current transfer, reset by request_reset_transfer(). */
        Buffer answer;
        usec_t retry_after;           /* Retry-After, absolute CLOCK_REALTIME */
        usec_t rate_reset;            /* X-RateLimit-Reset */
        bool too_large;
        bool oom;

        /* LIST: accumulates over pages. */
        TokenInfo *list;
        size_t n_list;
        size_t n_list_allocated;
        unsigned pages;
        bool wants_more;
};

static const char *const op_table[_API_OP_MAX] = {
        [API_LOOKUP] = "lookup",
        [API_GET] = "get",
        [API_CREATE] = "create",
        [API_REVOKE] = "revoke",
        [API_DELETE] = "delete",
        [API_LIST] = "list",
};

const char *api_op_to_string(ApiOp op) {
        if ((unsigned) op >= _API_OP_MAX)
                return "unknown";
        return op_table[op];
}

static bool op_is_mutating(ApiOp op) {
        return op == API_CREATE || op == API_REVOKE || op == API_DELETE;
}

static bool op_takes_id(ApiOp op) {
        return op == API_GET || op == API_REVOKE || op == API_DELETE;
}

/* ---- small helpers ---- */

static void buffer_wipe(Buffer *b) {
        if (b->data) {
                explicit_bzero(b->data, b->allocated);
                free(b->data);
        }
        *b = (Buffer) {};
}

/* Grows without realloc() so that no unwiped copy of a secret is left behind. */
static int buffer_reserve(Buffer *b, size_t need) {
        size_t n;
        char *p;

        if (need <= b->allocated)
                return 0;
        n = MAX(MAX(b->allocated * 2, (size_t) 4096), need);
        n = MIN(n, (size_t) API_MAX_BODY + 1);
        if (n < need)
                return -EFBIG;
        p = malloc(n);
        if (!p)
                return -ENOMEM;
        if (b->data) {
                memcpy(p, b->data, b->size);
                explicit_bzero(b->data, b->allocated);
                free(b->data);
        }
        b->data = p;
        b->allocated = n;
        return 0;
}

static void slist_wipe_free(struct curl_slist *l) {
        for (struct curl_slist *i = l; i; i = i->next)
                if (i->data)
                        explicit_bzero(i->data, strlen(i->data));
        curl_slist_free_all(l);
}

/* Printable ASCII without spaces: what may go into a header or a JSON string unquoted. */
static bool string_is_safe_token(const char *s, size_t max) {
        size_t n;

        if (!s)
                return false;
        n = strnlen(s, max + 1);
        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f)
                        return false;
        return true;
}

static bool id_is_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strnlen(id, API_MAX_ID + 1);
        if (n == 0 || n > API_MAX_ID)
                return false;
        if (strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n)
                return false;
        /* An id is public; a whole token is a secret and never goes into a URL or a log. */
        return !token_is_valid(id);
}

/* Copies at most max bytes of s into a new string, control characters replaced by
 * spaces, cut at a UTF-8 character boundary. */
static char *sanitize(const char *s, size_t len, size_t max) {
        bool cut = len > max;
        char *t;

        if (cut) {
                len = max;
                while (len > 0 && ((unsigned char) s[len] & 0xC0) == 0x80)
                        len--;
        }
        t = malloc(len + (cut ? 4 : 1));
        if (!t)
                return NULL;
        for (size_t i = 0; i < len; i++)
                t[i] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
        if (cut)
                memcpy(t + len, "...", 3), len += 3;
        t[len] = 0;
        return t;
}

/* Masks every occurrence of the secret part (after the last '.') of each known secret. */
static void scrub_secrets(ApiRequest *r, char *s) {
        for (size_t k = 0; k < ELEMENTSOF(r->secrets); k++) {
                const char *secret = r->secrets[k], *dot;
                size_t n;
                char *p;

                if (!secret)
                        continue;
                dot = strrchr(secret, '.');
                if (dot && strlen(dot + 1) >= 8)
                        secret = dot + 1;
                n = strlen(secret);
                if (n < 8)
                        continue;
                while ((p = strstr(s, secret)))
                        memset(p, '*', n);
        }
}

static int set_error(ApiRequest *r, ApiResult *res, const char *fmt, ...) _printf_(3, 4);
static int set_error(ApiRequest *r, ApiResult *res, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0) {
                msg = NULL;
                return -ENOMEM;
        }
        free(res->error);
        res->error = strdup_printf("%s: %s%s%s: %s", r->env, api_op_to_string(r->op),
                                   r->target ? " " : "", r->target ?: "", msg);
        if (!res->error)
                return -ENOMEM;
        scrub_secrets(r, res->error);
        return 0;
}

/* ---- JSON: building ---- */

typedef struct yajl_gen_t *YajlGen;
static void yajl_gen_freep(YajlGen *g) {
        if (*g)
                yajl_gen_free(*g);
}

static int gen_string(YajlGen g, const char *s) {
        return yajl_gen_string(g, (const unsigned char *) s, strlen(s)) == yajl_gen_status_ok ? 0 : -EINVAL;
}

static int gen_body(ApiRequest *r, YajlGen g) {
        const unsigned char *buf;
        size_t len;

        if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
                return -EINVAL;
        r->body = malloc(len + 1);
        if (!r->body)
                return -ENOMEM;
        memcpy(r->body, buf, len);
        r->body[len] = 0;
        r->body_size = len;
        /* yajl's buffer may hold the secret of a LOOKUP. */
        explicit_bzero((void *) buf, len);
        return 0;
}

static int format_iso8601(char *buf, size_t size, usec_t t) {
        time_t sec = (time_t) ((t + USEC_PER_SEC - 1) / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&sec, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return -ERANGE;
        return 0;
}

static int build_body(ApiRequest *r, const ApiArgs *args) {
        _cleanup_(yajl_gen_freep) YajlGen g = NULL;
        int k;

        g = yajl_gen_alloc(NULL);
        if (!g)
                return -ENOMEM;
        (void) yajl_gen_config(g, yajl_gen_validate_utf8, 1);

        if (yajl_gen_map_open(g) != yajl_gen_status_ok)
                return -ENOMEM;
        switch (r->op) {
        case API_LOOKUP:
                if ((k = gen_string(g, "token")) < 0 || (k = gen_string(g, args->token)) < 0)
                        return k;
                break;
        case API_REVOKE:
                if ((k = gen_string(g, r->version == API_V1 ? "revoked" : "enabled")) < 0)
                        return k;
                if (yajl_gen_bool(g, r->version == API_V1) != yajl_gen_status_ok)
                        return -ENOMEM;
                break;
        case API_CREATE:
                if ((k = gen_string(g, "name")) < 0 || (k = gen_string(g, args->name)) < 0 ||
                    (k = gen_string(g, "scopes")) < 0)
                        return k;
                if (yajl_gen_array_open(g) != yajl_gen_status_ok)
                        return -ENOMEM;
                for (char * const *s = args->scopes; *s; s++)
                        if ((k = gen_string(g, *s)) < 0)
                                return k;
                if (yajl_gen_array_close(g) != yajl_gen_status_ok)
                        return -ENOMEM;
                if (args->expires_in == USEC_INFINITY)
                        break;
                if (r->version == API_V1) {
                        usec_t secs = (args->expires_in + USEC_PER_SEC - 1) / USEC_PER_SEC;
                        if ((k = gen_string(g, "expiresIn")) < 0 ||
                            yajl_gen_map_open(g) != yajl_gen_status_ok ||
                            (k = gen_string(g, "value")) < 0 ||
                            yajl_gen_integer(g, (long long) secs) != yajl_gen_status_ok ||
                            (k = gen_string(g, "unit")) < 0 || (k = gen_string(g, "SECONDS")) < 0 ||
                            yajl_gen_map_close(g) != yajl_gen_status_ok)
                                return k < 0 ? k : -ENOMEM;
                } else {
                        char date[64];
                        usec_t now = now_realtime();

                        if (args->expires_in > USEC_INFINITY - 1 - now)
                                return -ERANGE;
                        if ((k = format_iso8601(date, sizeof(date), now + args->expires_in)) < 0)
                                return k;
                        if ((k = gen_string(g, "expirationDate")) < 0 || (k = gen_string(g, date)) < 0)
                                return k;
                }
                break;
        default:
                return -EINVAL;
        }
        if (yajl_gen_map_close(g) != yajl_gen_status_ok)
                return -ENOMEM;
        return gen_body(r, g);
}

/* ---- JSON: parsing ---- */

/* JSON without comments (yajl's tree parser would allow them) and not nested deeper than
 * max: checked before parsing, since yajl_tree_free() recurses. No NUL either. */
static bool json_shape_ok(const char *s, size_t n, unsigned max) {
        bool in_string = false, escaped = false;
        unsigned depth = 0;

        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == 0)
                        return false;
                if (in_string) {
                        if (escaped)
                                escaped = false;
                        else if (c == '\\')
                                escaped = true;
                        else if (c == '"')
                                in_string = false;
                        continue;
                }
                if (c == '"')
                        in_string = true;
                else if (c == '/')
                        return false;
                else if (c == '[' || c == '{') {
                        if (++depth > max)
                                return false;
                } else if ((c == ']' || c == '}') && depth > 0)
                        depth--;
        }
        return true;
}

static void json_wipe(yajl_val v) {
        if (!v)
                return;
        switch (v->type) {
        case yajl_t_string:
                if (v->u.string)
                        explicit_bzero(v->u.string, strlen(v->u.string));
                break;
        case yajl_t_number:
                if (v->u.number.r)
                        explicit_bzero(v->u.number.r, strlen(v->u.number.r));
                break;
        case yajl_t_object:
                for (size_t i = 0; i < v->u.object.len; i++) {
                        if (v->u.object.keys[i])
                                explicit_bzero((char *) v->u.object.keys[i], strlen(v->u.object.keys[i]));
                        json_wipe(v->u.object.values[i]);
                }
                break;
        case yajl_t_array:
                for (size_t i = 0; i < v->u.array.len; i++)
                        json_wipe(v->u.array.values[i]);
                break;
        default:
                break;
        }
}

static void json_freep(yajl_val *v) {
        if (*v) {
                json_wipe(*v);
                yajl_tree_free(*v);
        }
}
#define _cleanup_json_ _cleanup_(json_freep)

/* The value of key in object o, or NULL when missing or JSON null. */
static yajl_val json_get(yajl_val o, const char *key) {
        if (!YAJL_IS_OBJECT(o))
                return NULL;
        for (size_t i = 0; i < o->u.object.len; i++)
                if (streq_ptr(o->u.object.keys[i], key))
                        return YAJL_IS_NULL(o->u.object.values[i]) ? NULL : o->u.object.values[i];
        return NULL;
}

/* Parsing errors: a short description of what is wrong (never a value) in why. */
typedef struct Why {
        char text[160];
} Why;

static int bad(Why *why, const char *fmt, ...) _printf_(2, 3);
static int bad(Why *why, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why->text, sizeof(why->text), fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

static int json_string(yajl_val o, const char *key, bool required, char **ret, Why *why) {
        yajl_val v = json_get(o, key);
        char *s;

        if (!v) {
                if (required)
                        return bad(why, "\"%s\" is missing", key);
                *ret = NULL;
                return 0;
        }
        if (!YAJL_IS_STRING(v))
                return bad(why, "\"%s\" is not a string", key);
        s = strdup(v->u.string);
        if (!s)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

static int json_bool(yajl_val o, const char *key, bool def, bool *ret, Why *why) {
        yajl_val v = json_get(o, key);

        if (!v)
                *ret = def;
        else if (YAJL_IS_TRUE(v))
                *ret = true;
        else if (YAJL_IS_FALSE(v))
                *ret = false;
        else
                return bad(why, "\"%s\" is not a boolean", key);
        return 0;
}

static int parse_epoch_ms_string(const char *s, usec_t *ret) {
        size_t n = strlen(s);
        unsigned long long ms;

        if (n == 0 || n > 17 || strspn(s, "0123456789") != n)
                return -EINVAL;
        ms = strtoull(s, NULL, 10);
        *ret = (usec_t) ms * USEC_PER_MSEC;
        return 0;
}

/* Epoch milliseconds as a JSON number or a numeric string, or an ISO 8601 string. */
static int json_time(yajl_val o, const char *key, usec_t def, usec_t *ret, Why *why) {
        yajl_val v = json_get(o, key);

        if (!v) {
                *ret = def;
                return 0;
        }
        if (YAJL_IS_INTEGER(v)) {
                long long ms = v->u.number.i;
                if (ms < 0 || (unsigned long long) ms > (USEC_INFINITY - 1) / USEC_PER_MSEC)
                        return bad(why, "\"%s\" is out of range", key);
                *ret = (usec_t) ms * USEC_PER_MSEC;
                return 0;
        }
        if (YAJL_IS_DOUBLE(v)) {
                double ms = v->u.number.d;
                if (!isfinite(ms) || ms < 0 || ms > 1e16)
                        return bad(why, "\"%s\" is out of range", key);
                *ret = (usec_t) (ms * (double) USEC_PER_MSEC);
                return 0;
        }
        if (YAJL_IS_STRING(v)) {
                if (parse_epoch_ms_string(v->u.string, ret) >= 0 || parse_iso8601(v->u.string, ret) >= 0)
                        return 0;
                return bad(why, "\"%s\" is not a timestamp", key);
        }
        return bad(why, "\"%s\" is not a timestamp", key);
}

static int json_scopes(yajl_val o, const char *key, char ***ret, Why *why) {
        yajl_val v = json_get(o, key);
        _cleanup_strv_free_ char **l = NULL;
        size_t n;

        if (v && !YAJL_IS_ARRAY(v))
                return bad(why, "\"%s\" is not an array", key);
        n = v ? v->u.array.len : 0;
        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                yajl_val e = v->u.array.values[i];
                if (!YAJL_IS_STRING(e))
                        return bad(why, "\"%s\" holds something else than strings", key);
                l[i] = strdup(e->u.string);
                if (!l[i])
                        return -ENOMEM;
        }
        strv_free(*ret);
        *ret = TAKE_PTR(l);
        return 0;
}

/* A token's metadata, v1 or v2 field names. LIST entries need only an id. */
static int parse_token_info(yajl_val o, ApiVersion version, bool full, TokenInfo *t, Why *why) {
        bool v1 = version == API_V1, b = false;
        int k;

        if (!YAJL_IS_OBJECT(o))
                return bad(why, "expected an object");
        if ((k = json_string(o, "id", true, &t->id, why)) < 0 ||
            (k = json_string(o, "name", full, &t->name, why)) < 0 ||
            (k = json_string(o, v1 ? "userId" : "owner", false, &t->owner, why)) < 0 ||
            (k = json_bool(o, v1 ? "revoked" : "enabled", !v1, &b, why)) < 0 ||
            (k = json_time(o, v1 ? "created" : "creationDate", 0, &t->created, why)) < 0 ||
            (k = json_time(o, v1 ? "expires" : "expirationDate", USEC_INFINITY, &t->expires, why)) < 0 ||
            (k = json_time(o, v1 ? "lastUse" : "lastUsedDate", 0, &t->last_use, why)) < 0 ||
            (k = json_scopes(o, "scopes", &t->scopes, why)) < 0)
                return k;
        t->revoked = v1 ? b : !b;
        return 0;
}

/* The body as a JSON object, or -EBADMSG with why. */
static int parse_answer(ApiRequest *r, yajl_val *ret, Why *why) {
        yajl_val v;

        if (r->answer.size == 0)
                return bad(why, "empty answer");
        if (!json_shape_ok(r->answer.data, r->answer.size, API_MAX_DEPTH))
                return bad(why, "expected JSON");
        /* No error buffer: yajl's verbose message quotes the input, which may hold a secret. */
        v = yajl_tree_parse(r->answer.data, NULL, 0);
        if (!v)
                return bad(why, "expected JSON");
        if (!YAJL_IS_OBJECT(v)) {
                json_wipe(v);
                yajl_tree_free(v);
                return bad(why, "expected a JSON object");
        }
        *ret = v;
        return 0;
}

/* ---- callbacks ---- */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        ApiRequest *r = userdata;
        size_t n = size * nmemb;

        if (n > API_MAX_BODY - r->answer.size) {
                r->too_large = true;
                return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
        }
        if (buffer_reserve(&r->answer, r->answer.size + n + 1) < 0) {
                r->oom = true;
                return 0;
        }
        memcpy(r->answer.data + r->answer.size, ptr, n);
        r->answer.size += n;
        r->answer.data[r->answer.size] = 0;
        return n;
}

/* If the header line is "name: value", copies the trimmed value into buf. */
static bool header_value(const char *line, size_t n, const char *name, char *buf, size_t size) {
        size_t l = strlen(name), a, b;

        if (n <= l || line[l] != ':' || strncasecmp(line, name, l) != 0)
                return false;
        a = l + 1;
        b = n;
        while (a < b && (line[a] == ' ' || line[a] == '\t'))
                a++;
        while (b > a && (line[b - 1] == '\r' || line[b - 1] == '\n' || line[b - 1] == ' ' || line[b - 1] == '\t'))
                b--;
        if (b - a >= size)
                return false;
        memcpy(buf, line + a, b - a);
        buf[b - a] = 0;
        return true;
}

static bool parse_uint(const char *s, size_t max_digits, unsigned long long *ret) {
        size_t n = strlen(s);

        if (n == 0 || n > max_digits || strspn(s, "0123456789") != n)
                return false;
        *ret = strtoull(s, NULL, 10);
        return true;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata) {
        ApiRequest *r = userdata;
        size_t n = size * nitems;
        unsigned long long u;
        char value[128];

        if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
                /* A new status line (after a 1xx): forget what came before. */
                r->retry_after = r->rate_reset = 0;
                return n;
        }
        if (header_value(line, n, "Content-Length", value, sizeof(value))) {
                if (parse_uint(value, 19, &u) && u > API_MAX_BODY) {
                        r->too_large = true;
                        return 0; /* no point in receiving it */
                }
        } else if (header_value(line, n, "Retry-After", value, sizeof(value))) {
                if (parse_uint(value, 19, &u)) {
                        u = MIN(u, (unsigned long long) (10 * USEC_PER_YEAR / USEC_PER_SEC));
                        r->retry_after = now_realtime() + (usec_t) u * USEC_PER_SEC;
                } else {
                        time_t t = curl_getdate(value, NULL);
                        if (t > 0)
                                r->retry_after = (usec_t) t * USEC_PER_SEC;
                }
        } else if (header_value(line, n, "X-RateLimit-Reset", value, sizeof(value))) {
                if (parse_uint(value, 19, &u) && u < USEC_INFINITY)
                        r->rate_reset = (usec_t) u;
        }
        return n;
}

/* ---- building requests ---- */

static void token_info_free_array(TokenInfo *l, size_t n) {
        for (size_t i = 0; i < n; i++)
                token_info_done(&l[i]);
        free(l);
}

static void request_reset_transfer(ApiRequest *r) {
        buffer_wipe(&r->answer);
        r->retry_after = r->rate_reset = 0;
        r->too_large = r->oom = false;
        r->errbuf[0] = 0;
}

ApiRequest *api_request_free(ApiRequest *r) {
        if (!r)
                return NULL;
        if (r->easy)
                curl_easy_cleanup(r->easy);
        slist_wipe_free(r->headers);
        if (r->body) {
                explicit_bzero(r->body, r->body_size);
                free(r->body);
        }
        buffer_wipe(&r->answer);
        for (size_t k = 0; k < ELEMENTSOF(r->secrets); k++)
                erase_and_free(r->secrets[k]);
        token_info_free_array(r->list, r->n_list);
        free(r->env);
        free(r->target);
        free(r->base_url);
        free(r);
        return NULL;
}

static int add_header(ApiRequest *r, const char *h) {
        struct curl_slist *l = curl_slist_append(r->headers, h);
        if (!l)
                return -ENOMEM;
        r->headers = l;
        return 0;
}

static long usec_to_msec_long(usec_t u) {
        usec_t ms = (u + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
        return ms > LONG_MAX ? LONG_MAX : (long) ms;
}

#define SETOPT(easy, opt, value)                                        \
        do {                                                            \
                if (curl_easy_setopt((easy), (opt), (value)) != CURLE_OK) \
                        return -EIO;                                    \
        } while (0)

static int request_set_url(ApiRequest *r, const char *page_key) {
        const char *path = r->version == API_V1 ? "/api/v1/tokens" : "/api/v2/apiTokens";
        _cleanup_free_ char *url = NULL, *escaped = NULL;

        switch (r->op) {
        case API_LOOKUP:
                url = strdup_printf("%s%s/lookup", r->base_url, path);
                break;
        case API_GET:
        case API_REVOKE:
        case API_DELETE:
                url = strdup_printf("%s%s/%s", r->base_url, path, r->target);
                break;
        case API_CREATE:
                url = strdup_printf("%s%s", r->base_url, path);
                break;
        case API_LIST:
                if (r->version == API_V1)
                        url = strdup_printf("%s%s", r->base_url, path);
                else if (!page_key)
                        url = strdup_printf("%s%s?pageSize=%d", r->base_url, path, API_V2_PAGE_SIZE);
                else {
                        escaped = curl_easy_escape(r->easy, page_key, 0);
                        if (!escaped)
                                return -ENOMEM;
                        url = strdup_printf("%s%s?nextPageKey=%s", r->base_url, path, escaped);
                }
                break;
        default:
                return -EINVAL;
        }
        if (!url)
                return -ENOMEM;
        SETOPT(r->easy, CURLOPT_URL, url);
        return 0;
}

static int validate(const ApiEndpoint *ep, ApiOp op, const ApiArgs *args) {
        if (!ep || !ep->env || !ep->url || !*ep->url || (unsigned) op >= _API_OP_MAX)
                return -EINVAL;
        if (ep->version != API_V1 && ep->version != API_V2)
                return -EINVAL;
        if (!string_is_safe_token(ep->auth_token, API_MAX_FIELD))
                return -EINVAL;
        if (op == API_LIST)
                return 0;
        if (!args)
                return -EINVAL;
        switch (op) {
        case API_LOOKUP:
                return string_is_safe_token(args->token, API_MAX_FIELD) ? 0 : -EINVAL;
        case API_GET:
        case API_REVOKE:
        case API_DELETE:
                return id_is_valid(args->id) ? 0 : -EINVAL;
        case API_CREATE:
                if (!args->name || !*args->name || strlen(args->name) > API_MAX_FIELD)
                        return -EINVAL;
                if (!args->scopes || !args->scopes[0])
                        return -EINVAL;
                for (char * const *s = args->scopes; *s; s++)
                        if (!**s || strlen(*s) > API_MAX_FIELD)
                                return -EINVAL;
                if (args->expires_in < USEC_PER_SEC)
                        return -EINVAL;
                return 0;
        default:
                return -EINVAL;
        }
}

int api_request_new(const ApiEndpoint *ep, ApiOp op, const ApiArgs *args, ApiRequest **ret) {
        _cleanup_(api_request_freep) ApiRequest *r = NULL;
        _cleanup_erase_ char *auth = NULL;
        usec_t timeout;
        size_t n;
        int k;

        k = validate(ep, op, args);
        if (k < 0)
                return k;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->op = op;
        r->version = ep->version;
        r->env = strdup(ep->env);
        n = strlen(ep->url);
        while (n > 0 && ep->url[n - 1] == '/')
                n--;
        r->base_url = strndup(ep->url, n);
        r->secrets[0] = strdup(ep->auth_token);
        if (!r->env || !r->base_url || !r->secrets[0])
                return -ENOMEM;
        if (op == API_LOOKUP) {
                char pub[TOKEN_PUBLIC_MAX];
                r->secrets[1] = strdup(args->token);
                r->target = strdup(token_public_part(pub, sizeof(pub), args->token));
                if (!r->secrets[1] || !r->target)
                        return -ENOMEM;
        } else if (op_takes_id(op)) {
                r->target = strdup(args->id);
                if (!r->target)
                        return -ENOMEM;
        }

        r->easy = curl_easy_init();
        if (!r->easy)
                return -ENOMEM;
        k = request_set_url(r, NULL);
        if (k < 0)
                return k;

        /* Method and body. */
        switch (op) {
        case API_LOOKUP:
        case API_CREATE:
        case API_REVOKE:
                k = build_body(r, args);
                if (k < 0)
                        return k;
                SETOPT(r->easy, CURLOPT_POSTFIELDS, r->body);
                SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_size);
                if (op == API_REVOKE)
                        SETOPT(r->easy, CURLOPT_CUSTOMREQUEST, "PUT");
                break;
        case API_DELETE:
                SETOPT(r->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
                break;
        default:
                SETOPT(r->easy, CURLOPT_HTTPGET, 1L);
                break;
        }

        /* Headers. */
        auth = strdup_printf("Authorization: Api-Token %s", ep->auth_token);
        if (!auth)
                return -ENOMEM;
        if ((k = add_header(r, auth)) < 0 ||
            (k = add_header(r, "Accept: application/json")) < 0 ||
            (k = add_header(r, "Expect:")) < 0 ||
            (r->body && (k = add_header(r, "Content-Type: application/json; charset=utf-8")) < 0))
                return k;
        SETOPT(r->easy, CURLOPT_HTTPHEADER, r->headers);

        /* Transport: http(s) only, TLS always verified, no redirects, bounded in time. */
        timeout = ep->timeout == 0 ? API_DEFAULT_TIMEOUT : ep->timeout;
        SETOPT(r->easy, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
        SETOPT(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
        SETOPT(r->easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
        SETOPT(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
        /* On a reused connection that closes without an answer, libcurl quietly sends the
         * request again on a new one. For CREATE that could make a second token whose
         * secret we never see: CREATE always opens its own connection, so its outcome is
         * reported (maybe_done) instead. The other requests are idempotent. */
        if (op == API_CREATE)
                SETOPT(r->easy, CURLOPT_FRESH_CONNECT, 1L);
        SETOPT(r->easy, CURLOPT_SSL_VERIFYPEER, 1L);
        SETOPT(r->easy, CURLOPT_SSL_VERIFYHOST, 2L);
        SETOPT(r->easy, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
        if (ep->ca_file)
                SETOPT(r->easy, CURLOPT_CAINFO, ep->ca_file);
        if (timeout != USEC_INFINITY)
                SETOPT(r->easy, CURLOPT_TIMEOUT_MS, usec_to_msec_long(timeout));
        SETOPT(r->easy, CURLOPT_CONNECTTIMEOUT_MS, usec_to_msec_long(MIN(timeout, API_CONNECT_TIMEOUT)));
        SETOPT(r->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        SETOPT(r->easy, CURLOPT_LOW_SPEED_TIME,
               MAX(1L, MIN(API_LOW_SPEED_TIME, (long) MIN(timeout / USEC_PER_SEC, (usec_t) LONG_MAX))));
        SETOPT(r->easy, CURLOPT_USERAGENT, "dtrotated/" VERSION);
        SETOPT(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
        SETOPT(r->easy, CURLOPT_WRITEFUNCTION, on_write);
        SETOPT(r->easy, CURLOPT_WRITEDATA, r);
        SETOPT(r->easy, CURLOPT_HEADERFUNCTION, on_header);
        SETOPT(r->easy, CURLOPT_HEADERDATA, r);
        SETOPT(r->easy, CURLOPT_PRIVATE, r);

        *ret = TAKE_PTR(r);
        return 0;
}

CURL *api_request_get_easy(ApiRequest *r) {
        return r ? r->easy : NULL;
}

ApiOp api_request_get_op(ApiRequest *r) {
        return r->op;
}

bool api_request_wants_more(ApiRequest *r) {
        return r && r->wants_more;
}

/* ---- results ---- */

void token_info_done(TokenInfo *t) {
        if (!t)
                return;
        free(t->id);
        free(t->name);
        free(t->owner);
        strv_free(t->scopes);
        *t = (TokenInfo) {};
}

void api_result_done(ApiResult *r) {
        if (!r)
                return;
        free(r->error);
        erase_and_free(r->token);
        token_info_done(&r->info);
        token_info_free_array(r->list, r->n_list);
        *r = (ApiResult) {};
}

static bool code_is_certificate_error(CURLcode code) {
        switch (code) {
        case CURLE_PEER_FAILED_VERIFICATION: /* = CURLE_SSL_CACERT */
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
                return true;
        default:
                return false;
        }
}

/* Errors that happen before any byte of the request left. */
static bool code_is_before_send(CURLcode code) {
        switch (code) {
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
        case CURLE_SSL_CONNECT_ERROR:
                return true;
        default:
                return code_is_certificate_error(code);
        }
}

static const char *content_type(ApiRequest *r, char *buf, size_t size) {
        char *ct = NULL;
        size_t n;

        if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK || !ct || !*ct)
                return "no content type";
        n = strcspn(ct, ";");
        while (n > 0 && ct[n - 1] == ' ')
                n--;
        n = MIN(n, size - 1);
        for (size_t i = 0; i < n; i++)
                buf[i] = ((unsigned char) ct[i] <= 0x20 || (unsigned char) ct[i] >= 0x7f) ? '?' : ct[i];
        buf[n] = 0;
        return buf;
}

static int finish_transport_error(ApiRequest *r, CURLcode code, ApiResult *res) {
        _cleanup_free_ char *detail = NULL;
        curl_off_t pretransfer = 0;
        long request_size = 0;
        char ct[64];
        bool sent;

        (void) curl_easy_getinfo(r->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
        (void) curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &request_size);
        sent = !code_is_before_send(code) && (pretransfer > 0 || request_size > 0 || res->status > 0);
        res->maybe_done = op_is_mutating(r->op) && sent;
        res->class = code_is_certificate_error(code) || code == CURLE_URL_MALFORMAT ||
                             code == CURLE_UNSUPPORTED_PROTOCOL ? API_PERMANENT : API_TRANSIENT;

        if (r->too_large) {
                res->class = API_TRANSIENT;
                if (res->status > 0)
                        return set_error(r, res, "answer too large (HTTP %ld, %s, over %u MiB)", res->status,
                                         content_type(r, ct, sizeof(ct)), API_MAX_BODY / 1024U / 1024U);
                return set_error(r, res, "answer too large (over %u MiB)", API_MAX_BODY / 1024U / 1024U);
        }

        detail = sanitize(r->errbuf, strlen(r->errbuf), 200);
        if (!detail)
                return -ENOMEM;
        if (code == CURLE_PARTIAL_FILE && res->status > 0)
                return set_error(r, res, "malformed answer (HTTP %ld, %s): truncated (%s)", res->status,
                                 content_type(r, ct, sizeof(ct)), *detail ? detail : curl_easy_strerror(code));
        if (code == CURLE_OPERATION_TIMEDOUT)
                return set_error(r, res, "timed out: %s", *detail ? detail : curl_easy_strerror(code));
        if (code_is_certificate_error(code))
                return set_error(r, res, "TLS certificate verification failed: %s", *detail ? detail : curl_easy_strerror(code));
        if (*detail && !streq(detail, curl_easy_strerror(code)))
                return set_error(r, res, "%s: %s", curl_easy_strerror(code), detail);
        return set_error(r, res, "%s", curl_easy_strerror(code));
}

/* A non-2xx answer: the API's error.message if it sent one, else a hint at what came. */
static int finish_http_error(ApiRequest *r, ApiResult *res) {
        _cleanup_json_ yajl_val v = NULL;
        _cleanup_free_ char *msg = NULL;
        long s = res->status;
        yajl_val m;
        char ct[64];
        Why why;

        if (s == 429 || s == 408 || (s >= 500 && s <= 599))
                res->class = API_TRANSIENT;
        else
                res->class = API_PERMANENT;
        res->maybe_done = op_is_mutating(r->op) && s >= 500;
        res->retry_at = MAX(r->retry_after, r->rate_reset);

        if (parse_answer(r, &v, &why) >= 0 && (m = json_get(json_get(v, "error"), "message")) && YAJL_IS_STRING(m)) {
                msg = sanitize(m->u.string, strlen(m->u.string), API_MAX_MESSAGE);
                if (!msg)
                        return -ENOMEM;
                return set_error(r, res, "HTTP %ld: %s", s, msg);
        }
        if (s >= 300 && s <= 399)
                return set_error(r, res, "HTTP %ld (redirects are not followed: check the URL)", s);
        if (r->answer.size == 0)
                return set_error(r, res, "HTTP %ld (empty answer)", s);
        return set_error(r, res, "HTTP %ld (%s answer)", s, content_type(r, ct, sizeof(ct)));
}

static int list_append(ApiRequest *r, TokenInfo *t) {
        if (r->n_list == r->n_list_allocated) {
                size_t n = MAX(r->n_list_allocated * 2, (size_t) 16);
                TokenInfo *l = reallocarray(r->list, n, sizeof(TokenInfo));
                if (!l)
                        return -ENOMEM;
                r->list = l;
                r->n_list_allocated = n;
        }
        r->list[r->n_list++] = *t;
        *t = (TokenInfo) {};
        return 0;
}

/* Parses a 2xx answer into res. -EBADMSG with why for a malformed one. */
static int parse_success(ApiRequest *r, ApiResult *res, Why *why) {
        _cleanup_json_ yajl_val v = NULL;
        yajl_val a, key;
        int k;

        if (r->op == API_REVOKE || r->op == API_DELETE)
                return 0; /* REVOKE, DELETE: nothing to read */

        k = parse_answer(r, &v, why);
        if (k < 0)
                return k;

        switch (r->op) {
        case API_LOOKUP:
        case API_GET:
                return parse_token_info(v, r->version, true, &res->info, why);

        case API_CREATE: {
                yajl_val t = json_get(v, "token");
                if (!t)
                        return bad(why, "\"token\" is missing");
                if (!YAJL_IS_STRING(t))
                        return bad(why, "\"token\" is not a string");
                if (!token_is_valid(t->u.string))
                        return bad(why, "\"token\" is not a token of the form dt0c01.<24 chars>.<64 chars>");
                if (r->version == API_V2 &&
                    ((k = json_string(v, "id", false, &res->info.id, why)) < 0 ||
                     (k = json_time(v, "expirationDate", USEC_INFINITY, &res->info.expires, why)) < 0))
                        return k;
                res->token = strdup(t->u.string);
                return res->token ? 0 : -ENOMEM;
        }

        case API_LIST:
                a = json_get(v, r->version == API_V1 ? "values" : "apiTokens");
                if (!a)
                        return bad(why, "\"%s\" is missing", r->version == API_V1 ? "values" : "apiTokens");
                if (!YAJL_IS_ARRAY(a))
                        return bad(why, "\"%s\" is not an array", r->version == API_V1 ? "values" : "apiTokens");
                for (size_t i = 0; i < a->u.array.len; i++) {
                        TokenInfo t = { .expires = USEC_INFINITY };
                        k = parse_token_info(a->u.array.values[i], r->version, false, &t, why);
                        if (k >= 0)
                                k = list_append(r, &t);
                        token_info_done(&t);
                        if (k < 0)
                                return k;
                }
                if (r->version == API_V1)
                        return 0;
                key = json_get(v, "nextPageKey");
                if (!key)
                        return 0;
                if (!YAJL_IS_STRING(key))
                        return bad(why, "\"nextPageKey\" is not a string");
                if (!*key->u.string)
                        return 0;
                if (strlen(key->u.string) > 4096)
                        return bad(why, "\"nextPageKey\" is too long");
                if (++r->pages >= API_MAX_PAGES)
                        return bad(why, "more than %u pages", API_MAX_PAGES);
                k = request_set_url(r, key->u.string);
                if (k < 0)
                        return k;
                r->wants_more = true;
                return 0;

        default:
                return 0;
        }
}

static int finish_success(ApiRequest *r, ApiResult *res) {
        char ct[64];
        Why why = {};
        int k;

        k = parse_success(r, res, &why);
        if (k == -ENOMEM)
                return k;
        if (k < 0) {
                /* Drop whatever was half-filled. */
                ApiOp op = res->op;
                long status = res->status;

                r->wants_more = false;
                api_result_done(res);
                *res = (ApiResult) { .op = op, .status = status, .class = API_TRANSIENT,
                                     .info.expires = USEC_INFINITY };
                /* A CREATE that answered 2xx most likely created a token we cannot see. */
                res->maybe_done = op_is_mutating(r->op);
                return set_error(r, res, "malformed answer (HTTP %ld, %s): %s", status,
                                 content_type(r, ct, sizeof(ct)), why.text);
        }
        res->class = API_OK;
        if (r->op == API_LIST) {
                if (r->wants_more) {
                        /* Fail-safe for callers that ignore api_request_wants_more(). */
                        res->class = API_TRANSIENT;
                        return set_error(r, res, "incomplete: more pages follow");
                }
                res->list = TAKE_PTR(r->list);
                res->n_list = r->n_list;
                r->n_list = r->n_list_allocated = 0;
        }
        return 0;
}

int api_request_finish(ApiRequest *r, CURLcode code, ApiResult *ret) {
        ApiResult res = { .info.expires = USEC_INFINITY };
        long status = 0;
        int k;

        if (!r || !ret)
                return -EINVAL;
        res.op = r->op;
        r->wants_more = false;

        if (r->oom) {
                request_reset_transfer(r);
                return -ENOMEM;
        }
        (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        res.status = status;

        if (code != CURLE_OK)
                k = finish_transport_error(r, code, &res);
        else if (status >= 200 && status <= 299)
                k = finish_success(r, &res);
        else if (r->op == API_DELETE && status == 404) {
                res.class = API_OK; /* already gone */
                k = 0;
        } else
                k = finish_http_error(r, &res);

        request_reset_transfer(r);
        if (k < 0) {
                api_result_done(&res);
                r->wants_more = false;
                return k;
        }
        if (!r->wants_more) {
                /* Done (or failed): a later run of this request starts from scratch. */
                token_info_free_array(r->list, r->n_list);
                r->list = NULL;
                r->n_list = r->n_list_allocated = 0;
                r->pages = 0;
        }
        *ret = res;
        return 0;
}

int api_request_perform(ApiRequest *r, ApiResult *ret) {
        int k;

        if (!r || !ret)
                return -EINVAL;
        for (;;) {
                CURLcode code = curl_easy_perform(r->easy);

                k = api_request_finish(r, code, ret);
                if (k < 0)
                        return k;
                if (!api_request_wants_more(r))
                        return 0;
                api_result_done(ret);
        }
}
