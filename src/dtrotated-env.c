/* SPDX-License-Identifier: MIT */
#include <sys/stat.h>

#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-metrics.h"
#include "dtrotated-util.h"

/* An environment: one Tokens API, its management token and the queue of calls to it.
 * At most max_parallel calls run at once; rotations go before housekeeping. */

Env *manager_get_env(Manager *m, const char *name, bool create) {
        Env *e;

        for (e = m->envs; e; e = e->next)
                if (streq(e->name, name))
                        return e;
        if (!create)
                return NULL;
        e = calloc(1, sizeof(*e));
        if (!e || !(e->name = strdup(name))) {
                free(e);
                return NULL;
        }
        e->manager = m;
        e->next = m->envs;
        m->envs = e;
        return e;
}

Env *env_free(Env *e) {
        if (!e)
                return NULL;
        call_cancel(TAKE_PTR(e->self_call));
        for (CallClass k = 0; k < _CALL_CLASS_MAX; k++)
                while (e->queue[k].head)
                        call_cancel(e->queue[k].head);
        erase_and_free(e->auth);
        free(e->auth_error);
        free(e->self_id);
        free(e->owner);
        strv_free(e->self_scopes);
        free(e->name);
        free(e);
        return NULL;
}

/* (Re)reads the management token: from its file, or from the systemd credential. */
int env_load_auth(Env *e) {
        _cleanup_free_ char *cred = NULL;
        const char *path, *why = NULL;
        char *token = NULL;
        int r;

        if (!e->config)
                return -ENOENT;
        path = e->config->management_token_file;
        if (!path) {
                const char *dir = getenv("CREDENTIALS_DIRECTORY");
                if (!dir) {
                        free(e->auth_error);
                        e->auth_error = strdup_printf("management_token_credential '%s': $CREDENTIALS_DIRECTORY is not set (use LoadCredential=)",
                                                      e->config->management_token_credential);
                        return -ENOENT;
                }
                cred = strdup_printf("%s/%s", dir, e->config->management_token_credential);
                if (!cred)
                        return -ENOMEM;
                path = cred;
        }
        r = read_token_file_full(path, true, &token, &why);
        free(e->auth_error);
        e->auth_error = NULL;
        if (r < 0) {
                e->auth_error = why ? strdup_printf("management token %s: %s", path, why)
                                    : strdup_printf("management token %s: %s", path, strerror(-r));
                return r;
        }
        if (e->auth && !streq(e->auth, token)) {
                /* Another token (rotated, or replaced by the operator): the API must say
                 * again which one it is before it counts as the one in use. */
                e->self_id = (free(e->self_id), NULL);
                if (e->self == ENV_SELF_KNOWN)
                        e->self = ENV_SELF_UNKNOWN;
        }
        if (!e->auth || !streq(e->auth, token))
                e->auth_generation++;
        erase_and_free(e->auth);
        e->auth = token;
        return 0;
}

/* Whether path is the file this environment authenticates with: by device and inode, so
 * that another spelling of the path or a link to it counts too. */
bool env_uses_file(Env *e, const char *path) {
        struct stat a, b;

        if (!e->config || !e->config->management_token_file)
                return false;
        if (streq(e->config->management_token_file, path))
                return true;
        return stat(e->config->management_token_file, &a) >= 0 && stat(path, &b) >= 0 &&
               a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* What the management token needs: v1 one scope for everything; v2 write to create,
 * revoke and delete, read to list (leftover scans) and to confirm revokes. */
static void env_check_scopes(Env *e) {
        char *const *have = e->self_scopes;

        if (e->config->api == API_V1) {
                if (!strv_contains(have, "TenantTokenManagement"))
                        log_full(LOG_CRIT, 0, "%s: the management token lacks the scope TenantTokenManagement: dtrotated cannot create, revoke or delete tokens there",
                                 e->name);
                return;
        }
        if (!strv_contains(have, "apiTokens.write"))
                log_full(LOG_CRIT, 0, "%s: the management token lacks the scope apiTokens.write: dtrotated cannot create, revoke or delete tokens there",
                         e->name);
        if (!strv_contains(have, "apiTokens.read"))
                log_full(LOG_WARNING, 0, "%s: the management token lacks the scope apiTokens.read: leftover scans will fail and revokes are confirmed by their status only",
                         e->name);
}

static void env_wake_self_waiters(Env *e) {
        Manager *m = e->manager;

        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next;
                if (j->env == e)
                        job_self_known(j);
        }
        for (Scan *s = m->scans, *next; s; s = next) {
                next = s->next;
                if (s->env == e)
                        scan_self_known(s);
        }
}

static void on_self_lookup(ApiResult *res, void *userdata) {
        Env *e = userdata;
        bool first = !e->owner;

        e->self_call = NULL; /* freed by call_finish() */
        if (e->self_generation != e->auth_generation) {
                /* The token changed while it was being looked up: ask about the new one. */
                e->self = ENV_SELF_UNKNOWN;
                return env_need_self(e);
        }
        if (res->class != API_OK || !res->info.owner) {
                e->self = ENV_SELF_UNKNOWN;
                free(e->auth_error);
                e->auth_error = strdup_printf("looking up the management token: %s",
                                              res->error ?: "the answer names no owner");
                log_full(LOG_WARNING, 0, "%s: %s", e->name, strna(e->auth_error));
                env_wake_self_waiters(e);
                return manager_check_once_done(e->manager);
        }
        if (e->owner && !streq(e->owner, res->info.owner))
                log_full(LOG_WARNING, 0, "%s: the management token now belongs to another user; leftovers of earlier creates will not be recognised",
                         e->name);
        free(e->self_id);
        free(e->owner);
        strv_free(e->self_scopes);
        e->self_id = TAKE_PTR(res->info.id);
        e->owner = TAKE_PTR(res->info.owner);
        e->self_scopes = TAKE_PTR(res->info.scopes);
        e->self = ENV_SELF_KNOWN;
        if (first)
                env_check_scopes(e);
        env_wake_self_waiters(e);
        manager_check_once_done(e->manager);
}

void env_need_self(Env *e) {
        Call *c;

        if (e->self != ENV_SELF_UNKNOWN || !e->config)
                return;
        if (!e->auth && env_load_auth(e) < 0) {
                log_full(LOG_WARNING, 0, "%s: %s", e->name, strna(e->auth_error));
                return env_wake_self_waiters(e);
        }
        c = call_new(e, API_LOOKUP, on_self_lookup, e);
        if (!c || !(c->arg_token = strdup(e->auth))) {
                call_cancel(c);
                return;
        }
        e->self = ENV_SELF_PENDING;
        e->self_generation = e->auth_generation;
        e->self_call = c;
        call_submit(c);
}

/* A consumer must never be left holding a revoked token. */
Call *call_new(Env *env, ApiOp op, call_done_t done, void *userdata) {
        Call *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->env = env;
        c->op = op;
        c->arg_expires_in = USEC_INFINITY;
        c->done = done;
        c->userdata = userdata;
        return c;
}

static void call_free(Call *c) {
        if (!c)
                return;
        api_request_free(c->request);
        erase_and_free(c->arg_token);
        free(c->arg_id);
        free(c->arg_owner);
        free(c->arg_name);
        strv_free(c->arg_scopes);
        free(c);
}

static void env_dispatch(Env *e);
static void env_queue(Env *e, Call *c, bool front);

static void call_finish(Call *c, ApiResult *res) {
        call_done_t done = c->done;
        void *userdata = c->userdata;

        call_free(c);
        done(res, userdata);
}

static void on_transfer_done(CurlGlue *g, CURL *easy, CURLcode code, void *userdata) {
        Call *c = userdata;
        Env *e = c->env;
        ApiResult res = {};
        int r;

        r = api_request_finish(c->request, code, &res);
        if (r >= 0 && api_request_wants_more(c->request)) {
                /* A further page of a list: the request re-armed its easy handle. */
                if (curl_glue_add(g, easy, on_transfer_done, c) >= 0) {
                        api_result_done(&res);
                        return;
                }
        }
        e->in_flight--;
        metrics_count_request(e->manager, c->op, r < 0 ? 0 : res.status);
        if (r < 0) {
                res.class = API_TRANSIENT;
                res.error = strdup_printf("%s: %s: %s", e->name, api_op_to_string(c->op), strerror(-r));
        } else if (res.status == 401 && c->auth_generation == e->auth_generation && !c->reauth_tried) {
                /* The management token was refused: an operator may have put a fresh one
                 * into its file. Read it again (once per call) rather than wait for a reload. */
                c->reauth_tried = true;
                (void) env_load_auth(e);
        }
        if (r >= 0 && res.status == 401 && c->auth_generation != e->auth_generation) {
                /* Built with a management token that has since been replaced: the old one
                 * may already be revoked. Not the caller's fault: send it again. */
                api_result_done(&res);
                c->request = api_request_free(c->request);
                env_queue(e, c, true);
                env_dispatch(e);
                return;
        }
        env_dispatch(e);
        call_finish(c, &res);
        api_result_done(&res);
}

static int call_start(Call *c) {
        Env *e = c->env;
        ApiEndpoint ep;
        ApiArgs args = {
                .token = c->arg_token,
                .id = c->arg_id,
                .name = c->arg_name,
                .scopes = c->arg_scopes,
                .expires_in = c->arg_expires_in,
        };
        int r;

        if (!e->config)
                return -ENOENT;
        if (!e->auth) {
                r = env_load_auth(e);
                if (r < 0)
                        return r;
        }
        /* The write-ahead rule (dtrotated-manager.h): nothing changes at the API before
         * every record written so far is durable. */
        if (api_op_mutates(c->op)) {
                r = manager_journal_sync(e->manager);
                if (r < 0)
                        return r;
        }
        ep = (ApiEndpoint) {
                .env = e->name,
                .url = e->config->url,
                .version = e->config->api,
                .ca_file = e->config->ca_file,
                .timeout = e->config->request_timeout,
                .auth_token = e->auth,
        };
        r = api_request_new(&ep, c->op, &args, &c->request);
        if (r < 0)
                return r;
        c->auth_generation = e->auth_generation;
        r = curl_glue_add(e->manager->curl, api_request_get_easy(c->request), on_transfer_done, c);
        if (r < 0) {
                c->request = api_request_free(c->request);
                return r;
        }
        e->in_flight++;
        return 0;
}

static void call_fail_now(Call *c, int error) {
        Env *e = c->env;
        ApiResult res = { .op = c->op, .class = API_TRANSIENT };

        if (error == -ENOENT && !e->config)
                res.error = strdup_printf("%s: environment is no longer configured", e->name);
        else if (e->auth_error)
                res.error = strdup_printf("%s", e->auth_error);
        else
                res.error = strdup_printf("%s: %s: cannot start request: %s", e->name,
                                          api_op_to_string(c->op), strerror(-error));
        call_finish(c, &res);
        api_result_done(&res);
}

static CallClass call_class(const Call *c) {
        if (c->housekeeping)
                return CALL_HOUSEKEEPING;
        return c->op == API_CREATE ? CALL_CREATE : CALL_ROTATION;
}

static void env_queue(Env *e, Call *c, bool front) {
        CallQueue *q = &e->queue[call_class(c)];

        if (front) {
                c->queue_next = q->head;
                q->head = c;
                if (!q->tail)
                        q->tail = c;
                return;
        }
        c->queue_next = NULL;
        if (q->tail)
                q->tail->queue_next = c;
        else
                q->head = c;
        q->tail = c;
}

static CallQueue *env_next_queue(Env *e) {
        for (CallClass k = 0; k < _CALL_CLASS_MAX; k++)
                if (e->queue[k].head)
                        return &e->queue[k];
        return NULL;
}

static Call *env_peek(Env *e) {
        CallQueue *q = env_next_queue(e);

        return q ? q->head : NULL;
}

static Call *env_dequeue(Env *e) {
        CallQueue *q = env_next_queue(e);
        Call *c;

        if (!q)
                return NULL;
        c = q->head;
        q->head = c->queue_next;
        if (!q->head)
                q->tail = NULL;
        c->queue_next = NULL;
        return c;
}

/* Group commit: a request that changes something at the API waits for the journal's
 * sync (the write-ahead rule). Rather than sync for each, it stays queued until the
 * manager's flush, which runs once everything the event loop has ready was handled: the
 * records of every job that moved meanwhile share one fdatasync(). After the flush
 * (after_flush) the calls start, and should the sync have failed call_start() fails them. */
static void env_dispatch_full(Env *e, bool after_flush) {
        unsigned limit = e->config ? e->config->max_parallel : 1;
        Call *c;

        while (e->in_flight < limit && (c = env_peek(e))) {
                if (!after_flush && api_op_mutates(c->op) && manager_wait_for_flush(e->manager))
                        return;
                c = env_dequeue(e);
                int r = call_start(c);
                if (r < 0)
                        call_fail_now(c, r);
        }
}

static void env_dispatch(Env *e) {
        env_dispatch_full(e, false);
}

void env_flushed(Env *e) {
        env_dispatch_full(e, true);
}

void call_submit(Call *c) {
        env_queue(c->env, c, false);
        env_dispatch(c->env);
}

static void queue_unlink(CallQueue *q, Call *c) {
        Call *prev = NULL;

        for (Call **p = &q->head; *p; prev = *p, p = &(*p)->queue_next)
                if (*p == c) {
                        *p = c->queue_next;
                        if (q->tail == c)
                                q->tail = prev;
                        return;
                }
}

void call_cancel(Call *c) {
        Env *e;

        if (!c)
                return;
        e = c->env;
        if (c->request) {
                curl_glue_remove(e->manager->curl, api_request_get_easy(c->request));
                e->in_flight--;
        } else
                queue_unlink(&e->queue[call_class(c)], c);
        call_free(c);
        if (!e->manager->stopping)
                env_dispatch(e);
}
