/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* vasprintf, reallocarray */
#endif
#include <ctype.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <strings.h>
#include <time.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "dtrotated-api.h"
#include "dtrotated-util.h"

/* The Tokens API client. Everything a request needs is copied into the ApiRequest; the
 * answer is collected (capped at API_MAX_BODY) by the write callback, the few headers we
 * care about by the header callback, and api_request_finish() turns status, headers and
 * body into an ApiResult. Nothing in an answer is trusted: success is the documented
 * status with a JSON body of the documented shape, and every id, name and owner is
 * checked before it is handed on.
 *
 * Secrets: the Authorization header, the LOOKUP request body and the CREATE answer hold
 * one. Every buffer of ours that may hold one is wiped before it is freed; JSON is built
 * and parsed with yajl using allocators that wipe (the tree is built here from yajl's
 * callback parser, since yajl_tree_parse() allocates with plain malloc); libcurl's own
 * buffers are wiped by the allocators api_global_init() installs. Requests use HTTP/1.1,
 * so nghttp2 (which allocates on its own) never sees the Authorization header. Error
 * strings name tokens by id or public part, never by secret, and are scrubbed of the
 * secrets the request knows about as a last line of defence.
 *
 * Copies that remain, out of our reach:
 *  - libcurl's receive buffer (one per easy handle) holds the raw answer, a CREATE's new
 *    secret included, until api_request_free(); it is wiped then, by our free().
 *  - OpenSSL allocates with its own malloc, not libcurl's: the decrypted records of an
 *    answer (a CREATE's new secret) stay in the connection's read buffer until later
 *    records overwrite it, and it is freed unwiped when the connection closes (the
 *    connection may stay cached in the multi handle). SSL_OP_CLEANSE_PLAINTEXT (OpenSSL
 *    3) would wipe it, but setting it needs libssl linked (CURLOPT_SSL_CTX_FUNCTION).
 *    Outgoing plaintext (the Authorization header, a LOOKUP body) is copied into
 *    OpenSSL's write buffer and, as we understand its record layer, encrypted there in
 *    place (not verified for every cipher).
 *  - the kernel's socket buffers: plaintext only for http:// URLs. */

#define API_MAX_DEPTH 64              /* JSON nesting we accept (freeing recurses) */
#define API_MAX_MESSAGE 256           /* bytes of the API's error.message quoted */
#define API_MAX_ID 128
#define API_MAX_FIELD 1024            /* auth token, scopes */
#define API_MAX_NAME 1024
#define API_MAX_OWNER 512
#define API_MAX_PAGE_KEY 4096
#define API_MAX_LIST_ENTRIES 1000000U  /* v2: tokens over all pages */
#define API_MAX_RETRY_DELAY USEC_PER_HOUR /* Retry-After / X-RateLimit-Reset honoured up to */
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
        bool target_is_v2_id;         /* LOOKUP: target is what the v2 id must be */
        char *base_url;
        char *secrets[2];             /* auth token, LOOKUP token: scrubbed from messages */
        char *owner;                  /* LIST: owner filter, or NULL */
        unsigned page_size;           /* LIST: v1 limit, v2 pageSize */

        CURL *easy;
        struct curl_slist *headers;   /* holds the Authorization header: wiped */
        char *body;                   /* request body, may hold a secret: wiped */
        size_t body_size;
        char errbuf[CURL_ERROR_SIZE];

        /* State of the current transfer, reset by request_reset_transfer(). */
        Buffer answer;
        usec_t retry_after;           /* Retry-After, absolute CLOCK_REALTIME */
        usec_t rate_reset;            /* X-RateLimit-Reset */
        const char *content_type;     /* of the answer (curl's, or api_parse_answer()'s
                                       * caller's), NULL when none; valid during finish */
        bool too_large;
        bool oom;

        /* LIST: accumulates over pages. */
        TokenInfo *list;
        size_t n_list;
        size_t n_list_allocated;
        unsigned pages;
        uint64_t *page_keys;          /* hashes of the nextPageKeys followed */
        bool wants_more;
};

/* ---- memory that is wiped before it is freed ---- */

static void wipe_free(void *p) {
        if (!p)
                return;
        explicit_bzero(p, malloc_usable_size(p));
        free(p);
}

/* Grows by moving: the old block is wiped, never left behind with its contents. */
static void *wipe_realloc(void *p, size_t n) {
        size_t have;
        void *q;

        if (!p)
                return malloc(n);
        if (n == 0)
                n = 1;
        have = malloc_usable_size(p);
        if (n <= have)
                return p;
        q = malloc(n);
        if (!q)
                return NULL;
        memcpy(q, p, have);
        wipe_free(p);
        return q;
}

static char *wipe_strdup(const char *s) {
        size_t n = strlen(s) + 1;
        char *p = malloc(n);

        if (p)
                memcpy(p, s, n);
        return p;
}

static void *yajl_wipe_malloc(void *ctx, size_t n) {
        return malloc(n);
}
static void *yajl_wipe_realloc(void *ctx, void *p, size_t n) {
        return wipe_realloc(p, n);
}
static void yajl_wipe_free(void *ctx, void *p) {
        wipe_free(p);
}
static yajl_alloc_funcs wipe_alloc_funcs = {
        .malloc = yajl_wipe_malloc,
        .realloc = yajl_wipe_realloc,
        .free = yajl_wipe_free,
};

int api_global_init(void) {
        CURLcode c = curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, wipe_free, wipe_realloc,
                                          wipe_strdup, calloc);
        if (c == CURLE_OUT_OF_MEMORY)
                return -ENOMEM;
        return c == CURLE_OK ? 0 : -EIO;
}

void api_global_cleanup(void) {
        curl_global_cleanup();
}

static const char *const op_table[_API_OP_MAX] = {
        [API_LOOKUP] = "lookup",
        [API_GET] = "get",
        [API_CREATE] = "create",
        [API_REVOKE] = "revoke",
        [API_DELETE] = "delete",
        [API_LIST] = "list",
        [API_ENABLE] = "enable",
};

const char *api_op_to_string(ApiOp op) {
        if ((unsigned) op >= _API_OP_MAX)
                return "unknown";
        return op_table[op];
}

bool api_op_mutates(ApiOp op) {
        return op == API_CREATE || op == API_REVOKE || op == API_ENABLE || op == API_DELETE;
}

static bool op_takes_id(ApiOp op) {
        return op == API_GET || op == API_REVOKE || op == API_ENABLE || op == API_DELETE;
}

/* ---- small helpers ---- */

static void buffer_wipe(Buffer *b) {
        wipe_free(b->data);
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
                wipe_free(b->data);
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

static bool is_uuid(const char *s) {
        static const unsigned groups[] = { 8, 4, 4, 4, 12 };

        for (size_t g = 0; g < ELEMENTSOF(groups); g++) {
                for (unsigned i = 0; i < groups[g]; i++, s++)
                        if (!isxdigit((unsigned char) *s))
                                return false;
                if (*s != (g + 1 < ELEMENTSOF(groups) ? '-' : 0))
                        return false;
                s++;
        }
        return true;
}

bool api_id_is_valid(ApiVersion v, const char *id) {
        size_t n;

        if (!id)
                return false;
        /* An id is public; a whole token is a secret and never goes into a URL or a log. */
        if (token_is_valid(id))
                return false;
        if (v == API_V1)
                return is_uuid(id);
        if (v != API_V2)
                return false;
        n = strnlen(id, API_MAX_ID + 1);
        if (strncmp(id, "dt0c01.", 7) == 0)
                return n == 7 + 24 && strspn(id + 7, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == 24;
        /* Tokens from before 2021: be permissive but safe in a URL path (no "." or "..",
         * which curl would squash into another path). */
        if (n == 0 || n > API_MAX_ID || id[0] == '.')
                return false;
        return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* 1..max bytes of valid UTF-8 without control characters (C0, DEL, C1): what a name
 * or owner may be before it goes into a log line or the journal. */
static bool text_is_safe(const char *s, size_t max) {
        const unsigned char *p = (const unsigned char *) s;
        size_t n;

        if (!s)
                return false;
        n = strnlen(s, max + 1);
        if (n == 0 || n > max)
                return false;
        while (*p) {
                uint32_t cp;
                unsigned more;

                if (*p < 0x80) {
                        if (*p < 0x20 || *p == 0x7f)
                                return false;
                        p++;
                        continue;
                }
                if (*p >= 0xc2 && *p <= 0xdf)
                        cp = *p & 0x1f, more = 1;
                else if (*p >= 0xe0 && *p <= 0xef)
                        cp = *p & 0x0f, more = 2;
                else if (*p >= 0xf0 && *p <= 0xf4)
                        cp = *p & 0x07, more = 3;
                else
                        return false;
                p++;
                for (unsigned i = 0; i < more; i++, p++) {
                        if ((*p & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (*p & 0x3f);
                }
                if (cp < 0xa0 || /* C1 controls (and overlong two-byte forms) */
                    (more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
                    (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
                        return false;
        }
        return true;
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

        g = yajl_gen_alloc(&wipe_alloc_funcs);
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
        case API_ENABLE:
                if ((k = gen_string(g, r->version == API_V1 ? "revoked" : "enabled")) < 0)
                        return k;
                /* v1 revoked:true / v2 enabled:false revokes; the opposite enables. */
                if (yajl_gen_bool(g, (r->version == API_V1) == (r->op == API_REVOKE)) != yajl_gen_status_ok)
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

/* yajl_tree_parse() allocates with plain malloc() and cannot be told otherwise, and the
 * CREATE answer holds a secret: the tree (yajl's own yajl_val layout, so the accessors
 * work) is built here from yajl's callback parser with the wiping allocators, for yajl's
 * internal buffers as for the tree. Nesting deeper than API_MAX_DEPTH, strings with NUL
 * and anything but one JSON value without comments are refused. */

typedef struct JsonFrame {
        yajl_val v;                   /* an open object or array */
        char *key;                    /* object: key waiting for its value */
} JsonFrame;

typedef struct JsonBuild {
        JsonFrame stack[API_MAX_DEPTH];
        unsigned depth;
        yajl_val root;
        bool oom;
} JsonBuild;

static void json_free(yajl_val v) {
        if (!v)
                return;
        switch (v->type) {
        case yajl_t_string:
                wipe_free(v->u.string);
                break;
        case yajl_t_number:
                wipe_free(v->u.number.r);
                break;
        case yajl_t_object:
                for (size_t i = 0; i < v->u.object.len; i++) {
                        wipe_free((char *) v->u.object.keys[i]);
                        json_free(v->u.object.values[i]);
                }
                wipe_free(v->u.object.keys);
                wipe_free(v->u.object.values);
                break;
        case yajl_t_array:
                for (size_t i = 0; i < v->u.array.len; i++)
                        json_free(v->u.array.values[i]);
                wipe_free(v->u.array.values);
                break;
        default:
                break;
        }
        wipe_free(v);
}

static void json_freep(yajl_val *v) {
        json_free(*v);
        *v = NULL;
}
#define _cleanup_json_ _cleanup_(json_freep)

/* Room for n + 1 elements of size, growing geometrically (arrays of a big list). */
static void *json_grow(void *p, size_t n, size_t size) {
        size_t need = (n + 1) * size, have = p ? malloc_usable_size(p) : 0;

        if (need <= have)
                return p;
        return wipe_realloc(p, MAX(MAX(need, have * 2), 4 * size));
}

static char *json_strndup(JsonBuild *b, const unsigned char *s, size_t n) {
        char *t;

        if (memchr(s, 0, n))
                return NULL; /* "\u0000" would cut the string short: refused */
        t = malloc(n + 1);
        if (!t) {
                b->oom = true;
                return NULL;
        }
        memcpy(t, s, n);
        t[n] = 0;
        return t;
}

static yajl_val json_new(JsonBuild *b, yajl_type type) {
        yajl_val v = calloc(1, sizeof(*v));

        if (!v) {
                b->oom = true;
                return NULL;
        }
        v->type = type;
        return v;
}

/* Hangs v into the open container (or makes it the root). Takes v. 1 or 0 (abort). */
static int json_add(JsonBuild *b, yajl_val v) {
        JsonFrame *f;

        if (!v)
                return 0;
        if (b->depth == 0) {
                if (b->root) {
                        json_free(v);
                        return 0;
                }
                b->root = v;
                return 1;
        }
        f = &b->stack[b->depth - 1];
        if (f->v->type == yajl_t_object) {
                size_t n = f->v->u.object.len;
                const char **keys;
                yajl_val *values;

                if (!f->key) {
                        json_free(v);
                        return 0;
                }
                keys = json_grow(f->v->u.object.keys, n, sizeof(char *));
                if (keys)
                        f->v->u.object.keys = keys;
                values = keys ? json_grow(f->v->u.object.values, n, sizeof(yajl_val)) : NULL;
                if (!values) {
                        b->oom = true;
                        json_free(v);
                        return 0;
                }
                f->v->u.object.values = values;
                keys[n] = TAKE_PTR(f->key);
                values[n] = v;
                f->v->u.object.len++;
        } else {
                size_t n = f->v->u.array.len;
                yajl_val *values = json_grow(f->v->u.array.values, n, sizeof(yajl_val));

                if (!values) {
                        b->oom = true;
                        json_free(v);
                        return 0;
                }
                f->v->u.array.values = values;
                values[n] = v;
                f->v->u.array.len++;
        }
        return 1;
}

static int on_json_null(void *ctx) {
        return json_add(ctx, json_new(ctx, yajl_t_null));
}

static int on_json_boolean(void *ctx, int value) {
        return json_add(ctx, json_new(ctx, value ? yajl_t_true : yajl_t_false));
}

/* As yajl_tree does: an integer where it fits in long long, a double where it is finite. */
static int on_json_number(void *ctx, const char *s, size_t n) {
        JsonBuild *b = ctx;
        yajl_val v = json_new(b, yajl_t_number);
        char *end;

        if (!v)
                return 0;
        v->u.number.r = json_strndup(b, (const unsigned char *) s, n);
        if (!v->u.number.r) {
                json_free(v);
                return 0;
        }
        errno = 0;
        v->u.number.i = strtoll(v->u.number.r, &end, 10);
        if (errno == 0 && *end == 0)
                v->u.number.flags |= YAJL_NUMBER_INT_VALID;
        errno = 0;
        v->u.number.d = strtod(v->u.number.r, &end);
        if (errno == 0 && *end == 0 && isfinite(v->u.number.d))
                v->u.number.flags |= YAJL_NUMBER_DOUBLE_VALID;
        return json_add(b, v);
}

static int on_json_string(void *ctx, const unsigned char *s, size_t n) {
        JsonBuild *b = ctx;
        yajl_val v = json_new(b, yajl_t_string);

        if (!v)
                return 0;
        v->u.string = json_strndup(b, s, n);
        if (!v->u.string) {
                json_free(v);
                return 0;
        }
        return json_add(b, v);
}

static int json_open(JsonBuild *b, yajl_type type) {
        yajl_val v;

        if (b->depth >= API_MAX_DEPTH)
                return 0;
        v = json_new(b, type);
        if (!json_add(b, v))
                return 0;
        b->stack[b->depth++] = (JsonFrame) { .v = v };
        return 1;
}

static int on_json_start_map(void *ctx) {
        return json_open(ctx, yajl_t_object);
}

static int on_json_start_array(void *ctx) {
        return json_open(ctx, yajl_t_array);
}

static int on_json_map_key(void *ctx, const unsigned char *s, size_t n) {
        JsonBuild *b = ctx;
        JsonFrame *f = &b->stack[b->depth - 1];

        wipe_free(f->key);
        f->key = json_strndup(b, s, n);
        return f->key ? 1 : 0;
}

static int on_json_end(void *ctx) {
        JsonBuild *b = ctx;

        b->depth--;
        wipe_free(b->stack[b->depth].key);
        b->stack[b->depth] = (JsonFrame) {};
        return 1;
}

static const yajl_callbacks json_callbacks = {
        .yajl_null = on_json_null,
        .yajl_boolean = on_json_boolean,
        .yajl_number = on_json_number,
        .yajl_string = on_json_string,
        .yajl_start_map = on_json_start_map,
        .yajl_map_key = on_json_map_key,
        .yajl_end_map = on_json_end,
        .yajl_start_array = on_json_start_array,
        .yajl_end_array = on_json_end,
};

/* One JSON value of n bytes (yajl's defaults: no comments, valid UTF-8, nothing after
 * the value). -EBADMSG, -ENOMEM. */
static int json_parse(const char *s, size_t n, yajl_val *ret) {
        JsonBuild b = {};
        yajl_handle h;
        yajl_status st;

        h = yajl_alloc(&json_callbacks, &wipe_alloc_funcs, &b);
        if (!h)
                return -ENOMEM;
        st = yajl_parse(h, (const unsigned char *) s, n);
        if (st == yajl_status_ok)
                st = yajl_complete_parse(h);
        /* No yajl_get_error(): its message quotes the input, which may hold a secret. */
        yajl_free(h);
        while (b.depth > 0)
                wipe_free(b.stack[--b.depth].key);
        if (st != yajl_status_ok || b.oom || !b.root) {
                json_free(b.root);
                return b.oom ? -ENOMEM : -EBADMSG;
        }
        *ret = b.root;
        return 0;
}

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

/* A string member, checked by valid(s, max): ids, names, owners. */
static int json_checked_string(yajl_val o, const char *key, bool required, bool (*valid)(const char *, size_t),
                               size_t max, char **ret, Why *why) {
        yajl_val v = json_get(o, key);
        char *s;

        if (!v) {
                if (required)
                        return bad(why, "\"%s\" is missing", key);
                return 0;
        }
        if (!YAJL_IS_STRING(v))
                return bad(why, "\"%s\" is not a string", key);
        if (!valid(v->u.string, max))
                return bad(why, "\"%s\" is not valid (too long, control characters or not UTF-8)", key);
        s = strdup(v->u.string);
        if (!s)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

static int json_id(yajl_val o, ApiVersion version, bool required, char **ret, Why *why) {
        yajl_val v = json_get(o, "id");
        char *s;

        if (!v) {
                if (required)
                        return bad(why, "\"id\" is missing");
                return 0;
        }
        if (!YAJL_IS_STRING(v))
                return bad(why, "\"id\" is not a string");
        if (!api_id_is_valid(version, v->u.string))
                return bad(why, "\"id\" is not a valid %s token id", version == API_V1 ? "v1" : "v2");
        s = strdup(v->u.string);
        if (!s)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

static int json_bool(yajl_val o, const char *key, bool required, bool def, bool *ret, Why *why) {
        yajl_val v = json_get(o, key);

        if (!v) {
                if (required)
                        return bad(why, "\"%s\" is missing", key);
                *ret = def;
        } else if (YAJL_IS_TRUE(v))
                *ret = true;
        else if (YAJL_IS_FALSE(v))
                *ret = false;
        else
                return bad(why, "\"%s\" is not a boolean", key);
        return 0;
}

/* Epoch milliseconds to µs; negative or too large for usec_t is an error, not a wrap. */
static int ms_to_usec(unsigned long long ms, usec_t *ret) {
        if (ms > (USEC_INFINITY - 1) / USEC_PER_MSEC)
                return -ERANGE;
        *ret = (usec_t) ms * USEC_PER_MSEC;
        return 0;
}

static int parse_epoch_ms_string(const char *s, usec_t *ret) {
        unsigned long long ms;
        size_t n = strlen(s);

        if (n > 20)
                return -ERANGE;
        errno = 0;
        ms = strtoull(s, NULL, 10);
        if (errno != 0)
                return -ERANGE;
        return ms_to_usec(ms, ret);
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
                if (ms < 0 || ms_to_usec((unsigned long long) ms, ret) < 0)
                        return bad(why, "\"%s\" is out of range", key);
                return 0;
        }
        if (YAJL_IS_DOUBLE(v)) {
                double ms = v->u.number.d;
                /* Below 2^63 µs: exact enough, and far from usec_t's end. */
                if (!isfinite(ms) || ms < 0 || ms >= 9.2e15)
                        return bad(why, "\"%s\" is out of range", key);
                *ret = (usec_t) (ms * (double) USEC_PER_MSEC);
                return 0;
        }
        if (YAJL_IS_NUMBER(v))
                return bad(why, "\"%s\" is out of range", key); /* neither fits */
        if (YAJL_IS_STRING(v)) {
                const char *s = v->u.string;
                if (*s && strspn(s, "0123456789") == strlen(s)) {
                        if (parse_epoch_ms_string(s, ret) < 0)
                                return bad(why, "\"%s\" is out of range", key);
                        return 0;
                }
                if (parse_iso8601(s, ret) >= 0)
                        return 0;
                return bad(why, "\"%s\" is not a timestamp", key);
        }
        return bad(why, "\"%s\" is not a timestamp", key);
}

static int json_scopes(yajl_val o, const char *key, bool required, char ***ret, Why *why) {
        yajl_val v = json_get(o, key);
        _cleanup_strv_free_ char **l = NULL;
        size_t n;

        if (!v && required)
                return bad(why, "\"%s\" is missing", key);
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
                if (!string_is_safe_token(e->u.string, API_MAX_FIELD))
                        return bad(why, "\"%s\" holds something that is not a scope", key);
                l[i] = strdup(e->u.string);
                if (!l[i])
                        return -ENOMEM;
        }
        strv_free(*ret);
        *ret = TAKE_PTR(l);
        return 0;
}

/* A token's metadata, v1 or v2 field names. full (LOOKUP, GET): id, name, revoked or
 * enabled and scopes are required; a LIST entry needs only an id. Whatever is there is
 * checked. */
static int parse_token_info(yajl_val o, ApiVersion version, bool full, TokenInfo *t, Why *why) {
        bool v1 = version == API_V1, b = false;
        int k;

        if (!YAJL_IS_OBJECT(o))
                return bad(why, "expected an object");
        if ((k = json_id(o, version, true, &t->id, why)) < 0 ||
            (k = json_checked_string(o, "name", full, text_is_safe, API_MAX_NAME, &t->name, why)) < 0 ||
            (k = json_checked_string(o, v1 ? "userId" : "owner", false, text_is_safe, API_MAX_OWNER,
                                     &t->owner, why)) < 0 ||
            (k = json_bool(o, v1 ? "revoked" : "enabled", full, !v1, &b, why)) < 0 ||
            (k = json_time(o, v1 ? "created" : "creationDate", 0, &t->created, why)) < 0 ||
            (k = json_time(o, v1 ? "expires" : "expirationDate", USEC_INFINITY, &t->expires, why)) < 0 ||
            (k = json_time(o, v1 ? "lastUse" : "lastUsedDate", 0, &t->last_use, why)) < 0 ||
            (k = json_scopes(o, "scopes", full, &t->scopes, why)) < 0)
                return k;
        t->revoked = v1 ? b : !b;
        return 0;
}

/* The body as a JSON object (or, with allow_array, an array), or -EBADMSG with why. */
static int parse_answer(ApiRequest *r, bool allow_array, yajl_val *ret, Why *why) {
        yajl_val v = NULL;
        int k;

        if (r->answer.size == 0)
                return bad(why, "empty answer");
        k = json_parse(r->answer.data, r->answer.size, &v);
        if (k == -ENOMEM)
                return k;
        if (k < 0)
                return bad(why, "expected JSON");
        if (!YAJL_IS_OBJECT(v) && !(allow_array && YAJL_IS_ARRAY(v))) {
                json_free(v);
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
                /* Seconds or an HTTP date; bounded when the result is made. */
                if (parse_uint(value, 19, &u)) {
                        u = MIN(u, (unsigned long long) (API_MAX_RETRY_DELAY / USEC_PER_SEC + 1));
                        r->retry_after = now_realtime() + (usec_t) u * USEC_PER_SEC;
                } else {
                        time_t t = curl_getdate(value, NULL);
                        if (t > 0)
                                r->retry_after = (usec_t) t * USEC_PER_SEC;
                }
        } else if (header_value(line, n, "X-RateLimit-Reset", value, sizeof(value))) {
                /* Epoch µs; only a 429 is asked to honour it. */
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
        r->content_type = NULL;
        r->too_large = r->oom = false;
        r->errbuf[0] = 0;
}

ApiRequest *api_request_free(ApiRequest *r) {
        if (!r)
                return NULL;
        if (r->easy)
                curl_easy_cleanup(r->easy);
        slist_wipe_free(r->headers);
        wipe_free(r->body);
        buffer_wipe(&r->answer);
        for (size_t k = 0; k < ELEMENTSOF(r->secrets); k++)
                erase_and_free(r->secrets[k]);
        token_info_free_array(r->list, r->n_list);
        free(r->page_keys);
        free(r->env);
        free(r->target);
        free(r->base_url);
        free(r->owner);
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

static void curl_freep(char **p) {
        curl_free(*p);
}

static int request_set_url(ApiRequest *r, const char *page_key) {
        const char *path = r->version == API_V1 ? "/api/v1/tokens" : "/api/v2/apiTokens";
        _cleanup_(curl_freep) char *escaped = NULL;
        _cleanup_free_ char *url = NULL;

        switch (r->op) {
        case API_LOOKUP:
                url = strdup_printf("%s%s/lookup", r->base_url, path);
                break;
        case API_GET:
        case API_REVOKE:
        case API_ENABLE:
        case API_DELETE:
                url = strdup_printf("%s%s/%s", r->base_url, path, r->target);
                break;
        case API_CREATE:
                url = strdup_printf("%s%s", r->base_url, path);
                break;
        case API_LIST:
                if (page_key) {
                        /* Later pages: the key alone, as the API demands. */
                        escaped = curl_easy_escape(r->easy, page_key, 0);
                        if (!escaped)
                                return -ENOMEM;
                        url = strdup_printf("%s%s?nextPageKey=%s", r->base_url, path, escaped);
                        break;
                }
                if (r->owner && r->version == API_V1)
                        escaped = curl_easy_escape(r->easy, r->owner, 0);
                else if (r->owner && !strpbrk(r->owner, "\"~")) {
                        /* The selector's quoting is not documented: an owner that would need
                         * it is not sent (the caller checks owners anyway). */
                        _cleanup_free_ char *selector = strdup_printf("owner(\"%s\")", r->owner);
                        if (!selector)
                                return -ENOMEM;
                        escaped = curl_easy_escape(r->easy, selector, 0);
                } else {
                        url = strdup_printf("%s%s?%s=%u", r->base_url, path,
                                            r->version == API_V1 ? "limit" : "pageSize", r->page_size);
                        break;
                }
                if (!escaped)
                        return -ENOMEM;
                url = strdup_printf("%s%s?%s=%u&%s=%s", r->base_url, path,
                                    r->version == API_V1 ? "limit" : "pageSize", r->page_size,
                                    r->version == API_V1 ? "user" : "apiTokenSelector", escaped);
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
        if (op == API_LIST) {
                if (!args)
                        return 0;
                if (args->owner && !text_is_safe(args->owner, API_MAX_OWNER))
                        return -EINVAL;
                if (args->page_size == 0)
                        return 0;
                if (ep->version == API_V1)
                        return args->page_size <= API_V1_LIST_LIMIT ? 0 : -EINVAL;
                return args->page_size >= 100 && args->page_size <= 10000 ? 0 : -EINVAL;
        }
        if (!args)
                return -EINVAL;
        switch (op) {
        case API_LOOKUP:
                return string_is_safe_token(args->token, API_MAX_FIELD) ? 0 : -EINVAL;
        case API_GET:
        case API_REVOKE:
        case API_ENABLE:
        case API_DELETE:
                return api_id_is_valid(ep->version, args->id) ? 0 : -EINVAL;
        case API_CREATE:
                if (!text_is_safe(args->name, API_MAX_NAME))
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

#define AUTH_PREFIX "Authorization: Api-Token "
#define STRLEN(s) (sizeof(s) - 1)

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
                /* A token of the form prefix.public.secret: its v2 id is prefix.public. */
                r->target_is_v2_id = token_is_valid(args->token) && strchr(args->token, '.') &&
                                     api_id_is_valid(API_V2, r->target);
        } else if (op == API_LIST) {
                r->page_size = args && args->page_size > 0 ? args->page_size :
                               r->version == API_V1 ? API_V1_LIST_LIMIT : API_V2_PAGE_SIZE;
                if (args && args->owner) {
                        r->owner = strdup(args->owner);
                        if (!r->owner)
                                return -ENOMEM;
                }
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
        case API_ENABLE:
                k = build_body(r, args);
                if (k < 0)
                        return k;
                SETOPT(r->easy, CURLOPT_POSTFIELDS, r->body);
                SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_size);
                if (op == API_REVOKE || op == API_ENABLE)
                        SETOPT(r->easy, CURLOPT_CUSTOMREQUEST, "PUT");
                break;
        case API_DELETE:
                SETOPT(r->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
                break;
        default:
                SETOPT(r->easy, CURLOPT_HTTPGET, 1L);
                break;
        }

        /* Headers. Not through printf: glibc's vasprintf() formats on the stack first. */
        n = strlen(ep->auth_token);
        auth = malloc(STRLEN(AUTH_PREFIX) + n + 1);
        if (!auth)
                return -ENOMEM;
        memcpy(auth, AUTH_PREFIX, STRLEN(AUTH_PREFIX));
        memcpy(auth + STRLEN(AUTH_PREFIX), ep->auth_token, n + 1);
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
        /* HTTP/1.1: with HTTP/2, nghttp2 would keep the Authorization header in frame
         * buffers it allocates itself and frees without wiping. */
        SETOPT(r->easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
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
        const char *ct = r->content_type;
        size_t n;

        if (!ct || !*ct)
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
        res->maybe_done = api_op_mutates(r->op) && sent;
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

/* application/json, in any case, parameters allowed. */
static bool answer_is_json(ApiRequest *r) {
        const char *ct = r->content_type;

        if (!ct)
                return false;
        ct += strspn(ct, " \t");
        if (strncasecmp(ct, "application/json", STRLEN("application/json")) != 0)
                return false;
        ct += STRLEN("application/json");
        ct += strspn(ct, " \t");
        return *ct == 0 || *ct == ';';
}

static long expected_status(ApiOp op) {
        switch (op) {
        case API_CREATE:
                return 201;
        case API_REVOKE:
        case API_ENABLE:
        case API_DELETE:
                return 204;
        default:
                return 200;
        }
}

static bool op_has_answer(ApiOp op) {
        return op != API_REVOKE && op != API_ENABLE && op != API_DELETE;
}

/* Not the documented answer: a proxy's page, another 2xx, the wrong content type. */
static int finish_unexpected(ApiRequest *r, ApiResult *res) {
        char ct[64];

        res->class = API_TRANSIENT;
        /* Whatever answered, the request may have reached the API. */
        res->maybe_done = api_op_mutates(r->op);
        return set_error(r, res, "unexpected answer HTTP %ld (%s), expected %ld%s", res->status,
                         content_type(r, ct, sizeof(ct)), expected_status(r->op),
                         op_has_answer(r->op) ? " with application/json" : "");
}

/* Retry-After for 429 and 503, X-RateLimit-Reset for 429 only; none in the past, none
 * more than API_MAX_RETRY_DELAY ahead. */
static usec_t retry_at(ApiRequest *r, long status) {
        usec_t at = 0, now = now_realtime();

        if (status == 429)
                at = MAX(r->retry_after, r->rate_reset);
        else if (status == 503)
                at = r->retry_after;
        if (at <= now)
                return 0;
        return MIN(at, now + API_MAX_RETRY_DELAY);
}

/* A 3xx, 4xx or 5xx answer: the API's error.message if it sent one ({"error": {...}} or
 * [{"error": {...}}]), else a hint at what came. */
static int finish_http_error(ApiRequest *r, ApiResult *res) {
        _cleanup_json_ yajl_val v = NULL;
        _cleanup_erase_ char *msg = NULL;
        long s = res->status;
        yajl_val m = NULL;
        char ct[64];
        Why why;
        int k;

        if (s == 429 || s == 408 || (s >= 500 && s <= 599))
                res->class = API_TRANSIENT;
        else
                res->class = API_PERMANENT;
        res->maybe_done = api_op_mutates(r->op) && s >= 500;
        res->retry_at = retry_at(r, s);

        if (answer_is_json(r)) {
                k = parse_answer(r, true, &v, &why);
                if (k == -ENOMEM)
                        return k;
                if (k >= 0) {
                        yajl_val e = YAJL_IS_ARRAY(v) ? (v->u.array.len > 0 ? v->u.array.values[0] : NULL) : v;
                        m = json_get(json_get(e, "error"), "message");
                }
        }
        if (m && YAJL_IS_STRING(m)) {
                /* Scrubbed before it is cut (a secret cut in half would no longer match)
                 * and before it passes through printf's buffers. */
                scrub_secrets(r, m->u.string);
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

static uint64_t hash_string(const char *s) {
        uint64_t h = 14695981039346656037ULL; /* FNV-1a */

        for (; *s; s++)
                h = (h ^ (unsigned char) *s) * 1099511628211ULL;
        return h;
}

/* v2: the next page, if any. A key seen before (a server sending us round in circles)
 * or more than API_MAX_PAGES pages fail the whole list. */
static int follow_page_key(ApiRequest *r, yajl_val v, Why *why) {
        yajl_val key = json_get(v, "nextPageKey");
        uint64_t h;
        size_t n;
        int k;

        if (!key)
                return 0; /* absent or null: the last page */
        if (!YAJL_IS_STRING(key))
                return bad(why, "\"nextPageKey\" is not a string");
        n = strlen(key->u.string);
        if (n == 0)
                return 0;
        if (n > API_MAX_PAGE_KEY || !string_is_safe_token(key->u.string, API_MAX_PAGE_KEY))
                return bad(why, "\"nextPageKey\" is too long or holds spaces or control characters");
        if (r->pages + 1 >= API_MAX_PAGES)
                return bad(why, "more than %u pages", API_MAX_PAGES);
        if (!r->page_keys) {
                r->page_keys = calloc(API_MAX_PAGES, sizeof(uint64_t));
                if (!r->page_keys)
                        return -ENOMEM;
        }
        h = hash_string(key->u.string);
        for (unsigned i = 0; i < r->pages; i++)
                if (r->page_keys[i] == h)
                        return bad(why, "\"nextPageKey\" repeats the key of page %u", i + 2);
        r->page_keys[r->pages++] = h;
        k = request_set_url(r, key->u.string);
        if (k < 0)
                return k;
        r->wants_more = true;
        return 0;
}

/* Names, owners and scopes end up in logs and the journal: a server that puts a secret
 * of ours in one (echoing the Authorization header, say) gets it masked, as in error
 * messages. */
static void scrub_token_info(ApiRequest *r, TokenInfo *t) {
        if (t->name)
                scrub_secrets(r, t->name);
        if (t->owner)
                scrub_secrets(r, t->owner);
        for (char **s = t->scopes; s && *s; s++)
                scrub_secrets(r, *s);
}

static int parse_list(ApiRequest *r, yajl_val v, Why *why) {
        const char *field = r->version == API_V1 ? "values" : "apiTokens";
        yajl_val a = json_get(v, field);
        int k;

        if (!a)
                return bad(why, "\"%s\" is missing", field);
        if (!YAJL_IS_ARRAY(a))
                return bad(why, "\"%s\" is not an array", field);
        if (r->version == API_V2)
                for (size_t i = 0; i < 2; i++) {
                        const char *key = i == 0 ? "totalCount" : "pageSize";
                        yajl_val n = json_get(v, key);
                        if (n && (!YAJL_IS_INTEGER(n) || n->u.number.i < 0))
                                return bad(why, "\"%s\" is not a count", key);
                }
        if (r->n_list + a->u.array.len > API_MAX_LIST_ENTRIES)
                return bad(why, "more than %u tokens", API_MAX_LIST_ENTRIES);
        for (size_t i = 0; i < a->u.array.len; i++) {
                TokenInfo t = { .expires = USEC_INFINITY };
                Why entry = {};

                /* One bad entry spoils the answer: a scan must not miss a token silently. */
                k = parse_token_info(a->u.array.values[i], r->version, false, &t, &entry);
                if (k >= 0) {
                        scrub_token_info(r, &t);
                        k = list_append(r, &t);
                }
                token_info_done(&t);
                if (k == -EBADMSG)
                        return bad(why, "%s[%zu]: %s", field, i, entry.text);
                if (k < 0)
                        return k;
        }
        return r->version == API_V2 ? follow_page_key(r, v, why) : 0;
}

static int parse_create(ApiRequest *r, yajl_val v, ApiResult *res, Why *why) {
        yajl_val t = json_get(v, "token");
        int k;

        if (!t)
                return bad(why, "\"token\" is missing");
        if (!YAJL_IS_STRING(t))
                return bad(why, "\"token\" is not a string");
        if (!token_is_valid(t->u.string))
                return bad(why, "\"token\" is not a valid token");
        /* v2 names the new token by id; v1 says only the token (an id is taken if given). */
        k = json_id(v, r->version, r->version == API_V2, &res->info.id, why);
        if (k < 0)
                return k;
        if (r->version == API_V2 && strchr(t->u.string, '.')) {
                char pub[TOKEN_PUBLIC_MAX];
                if (!streq(token_public_part(pub, sizeof(pub), t->u.string), res->info.id))
                        return bad(why, "\"id\" is not the id of the token");
        }
        if (r->version == API_V2 && (k = json_time(v, "expirationDate", USEC_INFINITY, &res->info.expires, why)) < 0)
                return k;
        res->token = strdup(t->u.string);
        return res->token ? 0 : -ENOMEM;
}

/* Parses the documented answer into res. -EBADMSG with why for a malformed one. */
static int parse_success(ApiRequest *r, ApiResult *res, Why *why) {
        _cleanup_json_ yajl_val v = NULL;
        int k;

        if (!op_has_answer(r->op))
                return 0; /* REVOKE, ENABLE, DELETE: 204, nothing to read */

        k = parse_answer(r, false, &v, why);
        if (k < 0)
                return k;

        switch (r->op) {
        case API_LOOKUP:
        case API_GET:
                k = parse_token_info(v, r->version, true, &res->info, why);
                if (k < 0)
                        return k;
                scrub_token_info(r, &res->info);
                /* The token asked for, not another one. (Silenced below: parse_token_info() set
                 * the id; the analyzer does not see that the variadic bad() fails.) */
                if (r->op == API_GET && /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
                    (r->version == API_V1 ? strcasecmp(res->info.id, r->target) : strcmp(res->info.id, r->target)) != 0)
                        return bad(why, "\"id\" is not the token asked for");
                if (r->op == API_LOOKUP && r->version == API_V2 && r->target_is_v2_id &&
                    !streq(res->info.id, r->target)) /* NOLINT(clang-analyzer-core.NonNullParamChecker) */
                        return bad(why, "\"id\" is not the token looked up");
                return 0;

        case API_CREATE:
                return parse_create(r, v, res, why);

        case API_LIST:
                return parse_list(r, v, why);

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
                /* A CREATE that answered 201 most likely created a token we cannot see. */
                res->maybe_done = api_op_mutates(r->op);
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
                if (r->version == API_V1 && r->n_list >= r->page_size) {
                        /* v1 has no pages: as many as the limit may mean more exist. */
                        res->class = API_TRANSIENT;
                        return set_error(r, res, "list may be incomplete: %zu tokens, as many as limit=%u allows",
                                         r->n_list, r->page_size);
                }
                res->list = TAKE_PTR(r->list);
                res->n_list = r->n_list;
                r->n_list = r->n_list_allocated = 0;
        }
        return 0;
}

/* The transfer's outcome (code, status, content type; body and headers collected by
 * on_write() and on_header()) into *ret. */
static int request_finish(ApiRequest *r, CURLcode code, long status, const char *ct, ApiResult *ret) {
        ApiResult res = { .info.expires = USEC_INFINITY };
        int k;

        res.op = r->op;
        r->wants_more = false;

        if (r->oom) {
                request_reset_transfer(r);
                return -ENOMEM;
        }
        r->content_type = ct;
        res.status = status;

        if (code != CURLE_OK)
                k = finish_transport_error(r, code, &res);
        else if (status == expected_status(r->op) && (!op_has_answer(r->op) || answer_is_json(r)))
                k = finish_success(r, &res);
        else if (r->op == API_DELETE && status == 404 && (r->answer.size == 0 || answer_is_json(r))) {
                res.class = API_OK; /* already gone */
                k = 0;
        } else if (status >= 300 && status <= 599 && !(r->op == API_DELETE && status == 404))
                k = finish_http_error(r, &res); /* the API's (or a proxy's) error */
        else
                k = finish_unexpected(r, &res);

        request_reset_transfer(r);
        if (k < 0) {
                api_result_done(&res);
                r->wants_more = false;
        }
        if (!r->wants_more) {
                /* Done (or failed): a later run of this request starts from scratch. */
                token_info_free_array(r->list, r->n_list);
                r->list = NULL;
                r->n_list = r->n_list_allocated = 0;
                r->pages = 0;
        }
        if (k < 0)
                return k;
        *ret = res;
        return 0;
}

int api_request_finish(ApiRequest *r, CURLcode code, ApiResult *ret) {
        long status = 0;
        char *ct = NULL;

        if (!r || !ret)
                return -EINVAL;
        (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
                ct = NULL;
        return request_finish(r, code, status, ct, ret);
}

int api_parse_answer(ApiRequest *r, long status, const char *content_type, const char *headers,
                     size_t headers_size, const char *body, size_t body_size, ApiResult *ret) {
        CURLcode code = CURLE_OK;
        size_t size = MAX(headers_size, body_size);
        char *copy;

        if (!r || !ret || (headers_size > 0 && !headers) || (body_size > 0 && !body))
                return -EINVAL;
        /* curl hands the callbacks writable memory; the caller's may not be. */
        copy = malloc(MAX(size, (size_t) 1));
        if (!copy)
                return -ENOMEM;
        if (headers_size > 0)
                memcpy(copy, headers, headers_size);
        /* As libcurl hands them over: one header line (with its line end) at a time, then
         * the body in pieces of at most CURL_MAX_WRITE_SIZE; a callback that takes less
         * aborts the transfer with CURLE_WRITE_ERROR. */
        for (size_t i = 0; i < headers_size && code == CURLE_OK;) {
                const char *nl = memchr(copy + i, '\n', headers_size - i);
                size_t n = nl ? (size_t) (nl - (copy + i)) + 1 : headers_size - i;

                if (on_header(copy + i, 1, n, r) != n)
                        code = CURLE_WRITE_ERROR;
                i += n;
        }
        if (body_size > 0)
                memcpy(copy, body, body_size);
        for (size_t i = 0; i < body_size && code == CURLE_OK;) {
                size_t n = MIN(body_size - i, (size_t) CURL_MAX_WRITE_SIZE);

                if (on_write(copy + i, 1, n, r) != n)
                        code = CURLE_WRITE_ERROR;
                i += n;
        }
        explicit_bzero(copy, size);
        free(copy);
        return request_finish(r, code, status, content_type, ret);
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
