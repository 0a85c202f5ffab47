/* SPDX-License-Identifier: MIT */
#pragma once

#include <curl/curl.h>

#include "dtrotated-config.h"
#include "macro.h"

/* The Dynatrace Tokens API, v1 (/api/v1/tokens) and v2 (/api/v2/apiTokens).
 *
 * A request is built as a libcurl easy handle (api_request_new), run by whoever owns
 * the loop (a curl multi handle driven by sd-event, or api_request_perform() for
 * tools and tests), and turned into a plain C result (api_request_finish). */

typedef enum ApiOp {
        API_LOOKUP,   /* secret -> TokenInfo        v1: POST /api/v1/tokens/lookup */
        API_GET,      /* id -> TokenInfo            v1: GET /api/v1/tokens/{id} */
        API_CREATE,   /* name, scopes, expiry -> secret (+ id on v2) */
        API_REVOKE,   /* id                         v1: PUT {"revoked":true}; v2: PUT {"enabled":false} */
        API_DELETE,   /* id                         DELETE; 404 counts as done */
        API_LIST,     /* -> id + name of every token (v1: limit=, v2: follows nextPageKey) */
        API_ENABLE,   /* id                         v1: PUT {"revoked":false}; v2: PUT {"enabled":true}
                       * (undoes a REVOKE; a deleted token is 404) */
        _API_OP_MAX,
} ApiOp;

const char *api_op_to_string(ApiOp op);   /* "lookup", "get", "create", ... */
bool api_op_mutates(ApiOp op);             /* create, revoke, enable, delete */

/* Success is the documented status and nothing else: LOOKUP, GET, LIST 200, CREATE 201
 * (each with an application/json body of the documented shape), REVOKE, ENABLE and DELETE 204
 * (DELETE 404 with an empty or JSON body: already gone). Any other answer (another 2xx,
 * HTML, the wrong content type, a 1xx or a status above 599) is API_TRANSIENT with an
 * error like "revoke ID: unexpected answer HTTP 200 (text/html), expected 204". */
typedef enum ApiClass {
        API_OK,
        API_TRANSIENT,   /* network errors, timeouts, 5xx, 408, 429, malformed or
                          * unexpected answers, a v1 list that may be incomplete */
        API_PERMANENT,   /* 400, 401, 403, 404 (but DELETE 404 is API_OK), other 4xx,
                          * 3xx (redirects are not followed), and TLS certificate
                          * problems (untrusted or wrong-named certificate, unreadable
                          * ca_file) or a URL curl refuses (bad syntax, not http(s)):
                          * they will not fix themselves */
} ApiClass;

typedef struct ApiEndpoint {
        const char *env;          /* environment name, for messages */
        const char *url;          /* base URL without trailing '/' */
        ApiVersion version;
        const char *ca_file;      /* NULL: system store */
        usec_t timeout;           /* whole-request timeout */
        const char *auth_token;   /* secret: "Authorization: Api-Token <auth_token>" */
} ApiEndpoint;

typedef struct ApiArgs {
        const char *token;        /* LOOKUP: the secret to look up */
        const char *id;           /* GET, REVOKE, ENABLE, DELETE: must pass api_id_is_valid() */
        const char *name;         /* CREATE */
        char * const *scopes;     /* CREATE, NULL-terminated */
        usec_t expires_in;        /* CREATE: USEC_INFINITY = never expires */
        const char *owner;        /* LIST, optional: ask the server for this owner's tokens
                                   * only (v1 user=<owner>; v2 apiTokenSelector=owner("<owner>"),
                                   * left out when the owner holds '"' or '~'). A filter the
                                   * server may ignore: v2 entries carry .owner to check, v1
                                   * entries carry none (GET a candidate to learn its owner). */
        unsigned page_size;       /* LIST, optional: v1 limit (1..API_V1_LIST_LIMIT), v2
                                   * pageSize (100..10000); 0 = the defaults below */
} ApiArgs;

/* v1 LIST sends limit=API_V1_LIST_LIMIT, the documented maximum (the server's default
 * would be 1000). An answer with as many tokens as the limit may be cut short: it is
 * API_TRANSIENT ("list may be incomplete"), never a list. (A million v1 entries do not
 * fit in API_MAX_BODY: such a tenant gets "answer too large", also never a list.) */
#define API_V1_LIST_LIMIT 1000000U
/* v2 LIST pages: 1000 tokens a page keeps a page well below API_MAX_BODY (an entry is
 * 150-300 bytes, a page some 300 KiB even with long names) and fast within the request
 * timeout, while a tenant of 10,000 tokens still takes only 10 requests; with at most
 * API_MAX_PAGES pages this covers a million tokens, the same as v1's maximum. */
#define API_V2_PAGE_SIZE 1000U
#define API_MAX_PAGES 1000U

/* Whether id may name a token of this API version: v1 a UUID (8-4-4-4-12 hex digits);
 * v2 "dt0c01." and 24 characters [A-Z0-9], or (tokens from before 2021) 1..128 of
 * [A-Za-z0-9._-] not starting with '.'. Never anything token_is_valid() accepts: a
 * secret never goes into a URL. Ids the API answers are checked the same way. */
bool api_id_is_valid(ApiVersion v, const char *id);

/* Call once in main() before anything else uses libcurl (instead of curl_global_init();
 * after it, libcurl would silently keep its own allocators): installs allocators with
 * which every block libcurl frees (request and header buffers holding the Authorization
 * header, received data) is wiped first, and realloc() never leaves an unwiped copy
 * behind. OpenSSL allocates on its own: see the top of dtrotated-api.c for the copies
 * that remain there. 0, -ENOMEM or -EIO. */
int api_global_init(void);
void api_global_cleanup(void);

typedef struct TokenInfo {
        char *id;
        char *name;
        char *owner;              /* v1 userId, v2 owner; may be NULL */
        bool revoked;             /* v1 revoked; v2 !enabled */
        usec_t created;           /* 0 = unknown */
        usec_t expires;           /* USEC_INFINITY = never / not given */
        usec_t last_use;          /* 0 = never / unknown */
        char **scopes;            /* NULL-terminated, may be empty, never NULL after a lookup */
} TokenInfo;

void token_info_done(TokenInfo *t);

typedef struct ApiResult {
        ApiOp op;
        ApiClass class;
        long status;              /* HTTP status, 0 when none arrived */
        usec_t retry_at;          /* CLOCK_REALTIME µs: earliest retry; 0 = none given.
                                   * 429: the later of Retry-After and X-RateLimit-Reset;
                                   * 503: Retry-After; never more than an hour ahead */
        bool maybe_done;          /* a mutating request whose answer did not arrive
                                   * intact: it may have taken effect */
        char *error;              /* for logs, e.g. "create: HTTP 403: Token is missing
                                   * required scope"; NULL on success */
        char *token;              /* CREATE: the new secret (erase_and_free) */
        TokenInfo info;           /* LOOKUP, GET; CREATE fills id/expires where the API says */
        TokenInfo *list;          /* LIST: id and name of each token (v2 also owner,
                                   * created, revoked); every id valid */
        size_t n_list;
} ApiResult;

void api_result_done(ApiResult *r);

typedef struct ApiRequest ApiRequest;

/* Builds the request; copies what it needs from ep and args. -EINVAL for bad args, -ENOMEM. */
int api_request_new(const ApiEndpoint *ep, ApiOp op, const ApiArgs *args, ApiRequest **ret);
/* Remove the easy handle from any multi handle (curl_glue_remove()) before freeing. */
ApiRequest *api_request_free(ApiRequest *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(ApiRequest *, api_request_free);

CURL *api_request_get_easy(ApiRequest *r);
ApiOp api_request_get_op(ApiRequest *r);
/* v2 LIST pages: after finish(), a request that needs another page returns true here and
 * has re-armed its easy handle (with nextPageKey alone); run it again (results
 * accumulate). The *ret of such an intermediate finish() holds no list and is
 * API_TRANSIENT ("incomplete: more pages follow"), so a caller that ignores this never
 * mistakes a partial list for the whole: api_result_done() it and run the request
 * again. More than API_MAX_PAGES pages, or a nextPageKey seen before, fail the list. */
bool api_request_wants_more(ApiRequest *r);

/* Turn the finished transfer (CURLcode from the multi or easy interface) into *ret.
 * Always fills *ret (class, error) unless -ENOMEM. */
int api_request_finish(ApiRequest *r, CURLcode code, ApiResult *ret);

/* For tests and fuzzing: finish r as if its transfer had completed with this answer,
 * without any network: the header lines (each with its line end, as libcurl passes them
 * on, a status line included if wanted) and the body go through the same callbacks, and
 * the result through the same code as api_request_finish() (a callback's refusal, such
 * as a body over API_MAX_BODY, acts as CURLE_WRITE_ERROR). content_type as libcurl would
 * report it, NULL for none. A v2 LIST that wants more is re-armed as after a real page.
 * Returns like api_request_finish(), and -EINVAL for NULL arguments. */
int api_parse_answer(ApiRequest *r, long status, const char *content_type, const char *headers,
                     size_t headers_size, const char *body, size_t body_size, ApiResult *ret);

/* Blocking convenience: perform (with pages) and finish. */
int api_request_perform(ApiRequest *r, ApiResult *ret);

/* Answers larger than this are refused (transient error, "answer too large"). */
#define API_MAX_BODY (16U * 1024U * 1024U)
