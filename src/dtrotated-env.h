/* SPDX-License-Identifier: MIT */
#pragma once

#include "dtrotated-api.h"
#include "dtrotated-config.h"
#include "macro.h"

typedef struct Manager Manager;
typedef struct Env Env;
typedef struct Call Call;

/* A request to the Tokens API as the manager sees it: queued per environment so that at
 * most max_parallel run at once, built only when dispatched (so it authenticates with the
 * environment's current token), and retried at once when it met a 401 with a token that
 * has since been replaced (self-rotation, or an operator who replaced the file). */
/* The Call is gone (freed) by the time this runs; result is valid during the call. */
typedef void (*call_done_t)(ApiResult *result, void *userdata);

struct Call {
        Env *env;
        ApiOp op;
        bool housekeeping;           /* retirements and scans queue behind rotations */
        bool reauth_tried;           /* a 401 made us re-read the management token once */
        char *arg_token;             /* LOOKUP (secret) */
        char *arg_id;                /* GET, REVOKE, DELETE */
        char *arg_name;              /* CREATE */
        char **arg_scopes;           /* CREATE */
        char *arg_owner;             /* LIST: only this owner's tokens, where the API can */
        usec_t arg_expires_in;       /* CREATE */
        ApiRequest *request;         /* while in flight */
        unsigned auth_generation;    /* env->auth_generation it was built with */
        call_done_t done;
        void *userdata;
        Call *queue_next;
};

/* Creates of rotations already under way first: a create is journaled when it is queued,
 * and that time bounds the window in which a leftover of it is looked for, so it must not
 * wait behind the lookups of thousands of other jobs that an emergency starts at once.
 * Then the other steps of rotations, then housekeeping (retirements, scans): a token that
 * nears expiry must not wait behind housekeeping. */
typedef enum CallClass {
        CALL_CREATE,
        CALL_ROTATION,
        CALL_HOUSEKEEPING,
        _CALL_CLASS_MAX,
} CallClass;

typedef struct CallQueue {
        Call *head, *tail;
} CallQueue;

typedef enum EnvSelf {
        ENV_SELF_UNKNOWN,            /* the management token was not looked up yet */
        ENV_SELF_PENDING,
        ENV_SELF_KNOWN,              /* owner, self_id, scopes valid */
} EnvSelf;

struct Env {
        Manager *manager;
        char *name;
        const EnvConfig *config;     /* NULL: no longer configured (pending steps wait) */
        char *auth;                  /* the management token (secret), NULL if unreadable */
        char *auth_error;            /* why auth is NULL */
        unsigned auth_generation;
        unsigned in_flight;
        CallQueue queue[_CALL_CLASS_MAX];    /* served in this order */

        /* What the API says about the management token: whose it is (the daemon's own
         * creations are that user's) and what it may do. */
        EnvSelf self;
        Call *self_call;             /* that lookup, queued or in flight (owned) */
        unsigned self_generation;    /* auth_generation the lookup was sent with */
        char *self_id;
        char *owner;
        char **self_scopes;
        Env *next;
};

/* Environments and their calls (dtrotated-env.c) */
Env *manager_get_env(Manager *m, const char *name, bool create);
Env *env_free(Env *e);
int env_load_auth(Env *e);
void env_need_self(Env *e);                /* look up the management token if not done */
bool env_uses_file(Env *e, const char *path); /* same file (device+inode) as its token? */
Call *call_new(Env *env, ApiOp op, call_done_t done, void *userdata);
void call_submit(Call *c);
void call_cancel(Call *c);                 /* abandons and frees; no callback */
void env_flushed(Env *e);                  /* the journal flush ran: start what waited for it */
