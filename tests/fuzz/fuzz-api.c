/* SPDX-License-Identifier: MIT */
/* Every Tokens API answer parser, v1 and v2: the answer to a lookup, get, create,
 * revoke, delete or list (v2 list pages followed), error bodies (object and array),
 * Retry-After and X-RateLimit-Reset, through api_parse_answer() (the code of
 * api_request_finish() without a network).
 *
 * Input (text; see tests/fuzz/README.md):
 *   VERSION<TAB>OP<TAB>STATUS<TAB>CONTENT-TYPE<TAB>ARG\n   v1|v2, lookup|get|..., 0..999,
 *                                                        "-" for none; ARG: the token
 *                                                        looked up, the id, the list's
 *                                                        owner, or "-" for a default
 *   header lines ("Name: value\r\n"), an empty line, then the body up to
 *   "\n--next-page--\n", after which the next v2 list page follows as
 *   STATUS<TAB>CONTENT-TYPE\n, header lines, an empty line and its body. */
#include <ctype.h>

#include "dtrotated-api.h"
#include "dtrotated-util.h"
#include "fuzz-common.h"

#define AUTH_SECRET "AUTHSECRETAUTHSECRETAUTHSECRETAUTHSECRETAUTHSECRETAUTHSECRETAUTH"
#define AUTH_TOKEN "dt0c01.AUTHAUTHAUTHAUTHAUTHAUTH." AUTH_SECRET
#define LOOKUP_SECRET "LOOKUPSECRETLOOKUPSECRETLOOKUPSECRETLOOKUPSECRETLOOKUPSECRETLOOK"
#define LOOKUP_TOKEN "dt0c01.LOOKUPLOOKUPLOOKUPLOOKUP." LOOKUP_SECRET
#define PAGE_SEPARATOR "\n--next-page--\n"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        fuzz_setup();
        fuzz_check(api_global_init() == 0);
        return 0;
}

/* The next field up to sep (or the end): *p advances past sep. NULL when none is left. */
static char *next_field(const char **p, const char *end, char sep) {
        const char *s = *p, *e;
        char *f;

        if (s >= end)
                return NULL;
        e = memchr(s, sep, (size_t) (end - s));
        if (!e)
                e = end;
        f = strndup(s, (size_t) (e - s));
        fuzz_check(f);
        *p = e < end ? e + 1 : end;
        return f;
}

static bool parse_status(const char *s, long *ret) {
        char *e;
        long v;

        if (!s || !isdigit((unsigned char) s[0]) || strlen(s) > 3)
                return false;
        v = strtol(s, &e, 10);
        if (*e)
                return false;
        *ret = v;
        return true;
}

/* Headers up to an empty line ("\n" or "\r\n"); *p is left at the body. */
static void split_headers(const char **p, const char *end, const char **ret_headers, size_t *ret_size) {
        const char *s = *p;

        *ret_headers = s;
        while (s < end) {
                const char *nl = memchr(s, '\n', (size_t) (end - s));
                if (!nl) {
                        s = end;
                        break;
                }
                if (nl == s || (nl == s + 1 && *s == '\r')) {
                        *ret_size = (size_t) (s - *ret_headers);
                        *p = nl + 1;
                        return;
                }
                s = nl + 1;
        }
        *ret_size = (size_t) (s - *ret_headers);
        *p = s;
}

/* The secrets this request knows: the management token's, and a LOOKUP's token (the
 * part after the last '.'; all of a legacy token). */
static const char *lookup_secret;

static void check_no_secret(const char *s) {
        if (!s)
                return;
        fuzz_check(!strstr(s, AUTH_SECRET));
        if (lookup_secret && strlen(lookup_secret) >= 8)
                fuzz_check(!strstr(s, lookup_secret));
        /* Nothing that could forge a log line or steer a terminal. */
        for (const char *c = s; *c; c++)
                fuzz_check((unsigned char) *c >= 0x20 && *c != 0x7f);
}

static void check_info(const TokenInfo *t, ApiVersion v, bool full) {
        fuzz_check(api_id_is_valid(v, t->id));
        if (full)
                fuzz_check(t->name && t->scopes);
        for (char **s = t->scopes; s && *s; s++)
                fuzz_check(**s);
        check_no_secret(t->name);
        check_no_secret(t->owner);
}

static void check_result(const ApiResult *res, ApiOp op, ApiVersion v, long status) {
        usec_t now = now_realtime();

        fuzz_check(res->op == op);
        fuzz_check(res->status == status);
        fuzz_check(IN_SET(res->class, API_OK, API_TRANSIENT, API_PERMANENT));
        fuzz_check((res->class == API_OK) == !res->error);
        check_no_secret(res->error);
        fuzz_check(res->retry_at == 0 || res->retry_at <= now + USEC_PER_HOUR + 10 * USEC_PER_SEC);
        fuzz_check(!res->maybe_done || IN_SET(op, API_CREATE, API_REVOKE, API_ENABLE, API_DELETE));
        fuzz_check(!res->token || (op == API_CREATE && res->class == API_OK));
        fuzz_check(!res->list || (op == API_LIST && res->class == API_OK));
        if (res->class != API_OK)
                return;
        switch (op) {
        case API_LOOKUP:
        case API_GET:
                check_info(&res->info, v, true);
                break;
        case API_CREATE:
                fuzz_check(res->token && token_is_valid(res->token));
                if (v == API_V2)
                        fuzz_check(api_id_is_valid(v, res->info.id));
                break;
        case API_LIST:
                for (size_t i = 0; i < res->n_list; i++)
                        check_info(&res->list[i], v, false);
                break;
        default:
                break;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const ops[] = { "lookup", "get", "create", "revoke", "delete", "list", "enable" };
        _cleanup_free_ char *version = NULL, *op_name = NULL, *status_s = NULL, *ct = NULL, *arg = NULL;
        _cleanup_(api_request_freep) ApiRequest *req = NULL;
        const char *p = (const char *) data, *end = p + size;
        char *scopes[] = { (char *) "apiTokens.read", NULL };
        ApiEndpoint ep = { .env = "fuzz", .url = "http://127.0.0.1:9", .auth_token = AUTH_TOKEN };
        ApiArgs args = { .name = "fuzz", .scopes = scopes, .expires_in = USEC_PER_DAY };
        ApiOp op = _API_OP_MAX;
        long status;

        lookup_secret = NULL;
        const char *line_end;

        /* The first line: what was asked, and the status line's outcome. */
        line_end = memchr(p, '\n', size);
        if (!line_end)
                return 0;
        version = next_field(&p, line_end, '\t');
        op_name = next_field(&p, line_end, '\t');
        status_s = next_field(&p, line_end, '\t');
        ct = next_field(&p, line_end, '\t');
        arg = next_field(&p, line_end, '\t');
        p = line_end + 1;
        if (!version || !op_name || !ct || !arg || !parse_status(status_s, &status))
                return 0;
        if (strcmp(version, "v1") == 0)
                ep.version = API_V1;
        else if (strcmp(version, "v2") == 0)
                ep.version = API_V2;
        else
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                if (strcmp(op_name, ops[i]) == 0)
                        op = (ApiOp) i;
        if (op == _API_OP_MAX)
                return 0;
        fuzz_check(streq(api_op_to_string(op), op_name));
        if (streq(arg, "-"))
                arg = (free(arg), NULL);
        switch (op) {
        case API_LOOKUP:
                args.token = arg ?: LOOKUP_TOKEN;
                lookup_secret = strrchr(args.token, '.') ? strrchr(args.token, '.') + 1 : args.token;
                break;
        case API_GET:
        case API_REVOKE:
        case API_ENABLE:
        case API_DELETE:
                args.id = arg ?: ep.version == API_V1 ? "2b8b5a5e-8a2c-4a3e-9f31-0123456789ab" :
                                                        "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX";
                break;
        case API_LIST:
                args.owner = arg;
                break;
        default:
                break;
        }
        if (api_request_new(&ep, op, &args, &req) < 0)
                return 0;

        for (unsigned page = 0;; page++) {
                _cleanup_(api_result_done) ApiResult res = {};
                const char *headers, *body, *sep;
                size_t headers_size, body_size;
                int k;

                split_headers(&p, end, &headers, &headers_size);
                body = p;
                sep = memmem(p, (size_t) (end - p), PAGE_SEPARATOR, strlen(PAGE_SEPARATOR));
                body_size = (size_t) ((sep ?: end) - body);
                p = sep ? sep + strlen(PAGE_SEPARATOR) : end;

                k = api_parse_answer(req, status, streq(ct, "-") ? NULL : ct, headers, headers_size, body,
                                     body_size, &res);
                fuzz_check(k == 0);
                check_result(&res, op, ep.version, status);
                if (!api_request_wants_more(req))
                        break;
                /* Only a v2 list follows pages, and never mistakes a page for the list. */
                fuzz_check(op == API_LIST && ep.version == API_V2);
                fuzz_check(res.class == API_TRANSIENT && !res.list);
                fuzz_check(page + 1 < 1000);

                /* The next page's status line, if the input has one. */
                line_end = p < end ? memchr(p, '\n', (size_t) (end - p)) : NULL;
                if (!line_end)
                        break;
                free(status_s);
                free(ct);
                status_s = next_field(&p, line_end, '\t');
                ct = next_field(&p, line_end, '\t');
                p = line_end + 1;
                if (!ct || !parse_status(status_s, &status))
                        break;
        }
        return 0;
}
