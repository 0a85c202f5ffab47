/* SPDX-License-Identifier: MIT */
/* One rotation job per configured token: the documented manual workflow as a state
 * machine. Every mutating step is journaled before (intent) and after (outcome), so a
 * crash at any instant resumes from the journal plus what the job's files hold:
 *
 *   IDLE --due--> LOOKUP_OLD --> CREATE --> LOOKUP_NEW --> (deliver) --> HOOK --> IDLE
 *                    (file)     [create]    (staged file)   [delivered]  [rotated+retire]
 *
 * The persistent phase (dtrotated-manager.h has the crash table) changes only through
 * job_apply_record(), for replay and live transitions alike (manager_record()). The old
 * token is retired independently (dtrotated-retire.c), leftovers of ambiguous creates
 * are looked for independently (dtrotated-scan.c): neither ever delays a rotation. */
#include <search.h>
#include <sys/stat.h>

#include "dtrotated-deliver.h"
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

static const char *const job_state_table[_JOB_STATE_MAX] = {
        [JOB_INIT] = "init",         [JOB_IDLE] = "idle",
        [JOB_LOOKUP_OLD] = "lookup", [JOB_CREATE] = "create",
        [JOB_LOOKUP_NEW] = "verify", [JOB_HOOK] = "hook",
        [JOB_RESTORE] = "restore",
};

static const char *const job_phase_table[_PHASE_MAX] = {
        [PHASE_NEW] = "new",         [PHASE_IDLE] = "idle",
        [PHASE_INTENT] = "intent",   [PHASE_DELIVERED] = "delivered",
        [PHASE_RESTORE] = "restore",
};

const char *job_state_to_string(JobState s) {
        return s < _JOB_STATE_MAX ? job_state_table[s] : "?";
}

const char *job_phase_to_string(JobPhase p) {
        return p < _PHASE_MAX ? job_phase_table[p] : "?";
}

/* An operator's request waiting for the job's rotation (job_rotate_now()). */
struct JobRequest {
        job_request_done_t done;
        void *userdata;
        JobRequest *next;
};

/* Answers every waiting request, in the order they came. */
static void job_requests_finish(Job *j, int error, const char *message) {
        JobRequest *l = TAKE_PTR(j->requests), *rev = NULL;

        while (l) {
                JobRequest *q = l;
                l = l->next;
                q->next = rev;
                rev = q;
        }
        while (rev) {
                JobRequest *q = rev;
                rev = rev->next;
                q->done(error, message, q->userdata);
                free(q);
        }
}

static int job_name_cmp(const void *a, const void *b) {
        return strcmp(((const Job *) a)->name, ((const Job *) b)->name);
}

/* The caller has made sure that no job of that name exists (manager_find_job()). */
Job *job_new(Manager *m, const char *name) {
        Job *j = calloc(1, sizeof(*j));

        if (!j || !(j->name = strdup(name)) || !tsearch(j, &m->jobs_by_name, job_name_cmp)) {
                if (j)
                        free(j->name);
                free(j);
                return NULL;
        }
        j->manager = m;
        j->cur_expires = USEC_INFINITY;
        /* Keep configuration order: status lines and logs read naturally. */
        if (m->jobs_last)
                m->jobs_last->next = j;
        else
                m->jobs = j;
        m->jobs_last = j;
        m->n_jobs++;
        return j;
}

/* cur_id, delivered_id and restore_id change only here: the manager counts the ids in
 * use (manager_token_in_use()). */
static int job_set_id(Job *j, char **slot, const char *id) {
        char *c = NULL;

        if (id && (!(c = strdup(id)) || manager_id_ref(j->manager, id) < 0)) {
                free(c);
                return -ENOMEM;
        }
        manager_id_unref(j->manager, *slot);
        free(*slot);
        *slot = c;
        return 0;
}

/* token_name changes only here: the manager counts the names (job_name_clash()). */
static int job_set_token_name(Job *j, const char *name) {
        char *c = NULL;

        if (name && (!(c = strdup(name)) || strcount_ref(&j->manager->token_names, name) < 0)) {
                free(c);
                return -ENOMEM;
        }
        strcount_unref(&j->manager->token_names, j->token_name);
        free(j->token_name);
        j->token_name = c;
        return 0;
}

static void job_clear_rotation(Job *j) {
        /* token_name stays: other jobs compare theirs against it. */
        j->scopes = strv_free(j->scopes);
        j->new_secret = erase_and_free(j->new_secret);
        free(j->new_id);
        j->new_id = NULL;
        j->old_secret = erase_and_free(j->old_secret);
        j->old_secret_id = (free(j->old_secret_id), NULL);
}

Job *job_free(Job *j) {
        if (!j)
                return NULL;
        job_requests_finish(j, -ECANCELED, j->manager && j->manager->stopping ? "dtrotated is stopping"
                                                                              : "the job was removed from the configuration");
        call_cancel(j->call);
        hook_free(j->hook);
        job_restore_free(j);
        retry_done(&j->retry);
        job_clear_rotation(j);
        if (j->manager)
                (void) job_set_token_name(j, NULL);
        free(j->token_name);
        free(j->name);
        if (j->manager) {
                (void) job_set_id(j, &j->cur_id, NULL);
                (void) job_set_id(j, &j->delivered_id, NULL);
                (void) job_set_id(j, &j->restore_id, NULL);
        }
        free(j->cur_id);
        free(j->create_name);
        free(j->delivered_id);
        free(j->restore_id);
        free(j);
        return NULL;
}

/* O(log n): replaying the journal and applying the configuration look up every job. */
Job *manager_find_job(Manager *m, const char *name) {
        Job *const *p = tfind(&(Job) { .name = (char *) name }, &m->jobs_by_name, job_name_cmp);

        return p ? *p : NULL;
}

static void job_unlink_and_free(Job *j) {
        Manager *m = j->manager;
        Job *prev = NULL;

        for (Job **p = &m->jobs; *p; prev = *p, p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        if (m->jobs_last == j)
                                m->jobs_last = prev;
                        break;
                }
        (void) tdelete(j, &m->jobs_by_name, job_name_cmp);
        if (m->once_job_cursor == j)
                m->once_job_cursor = NULL;
        m->n_jobs--;
        job_free(j);
}

static int set_str(char **p, const char *v) {
        char *c = NULL;
        if (v && !(c = strdup(v)))
                return -ENOMEM;
        free(*p);
        *p = c;
        return 0;
}

/* ---- records: the only place the persistent phase changes ---- */

static int replay_inconsistent(const JournalRecord *r, const char *what) {
        log_error("Journal: %s record for %s %s: %s; refusing to guess (see RECOVERY in dtrotated(8))",
                  journal_type_to_string(r->type), r->job ? "job" : "token",
                  r->job ? r->job : strna(r->id), what);
        return -EBADMSG;
}

static void job_clear_intent(Job *j) {
        j->create_first = j->create_last = 0;
        j->create_name = (free(j->create_name), NULL);
        (void) job_set_id(j, &j->delivered_id, NULL);
        j->delivered_created = 0;
        j->delivered_expires = USEC_INFINITY;
        (void) job_set_id(j, &j->restore_id, NULL);
}

int job_apply_record(Manager *m, const JournalRecord *r) {
        Job *j = manager_find_job(m, r->job);

        if (!j && !(j = job_new(m, r->job)))
                return -ENOMEM;
        switch (r->type) {
        case JOURNAL_JOB:
        case JOURNAL_ROTATED:
                if (job_set_id(j, &j->cur_id, r->id) < 0)
                        return -ENOMEM;
                j->cur_created = r->created;
                j->cur_expires = r->expires;
                if (r->type == JOURNAL_ROTATED && r->at)
                        j->rotated_at = r->at;
                /* A rotation ends the hold of a restore; the file's token changing does not. */
                if (r->type == JOURNAL_ROTATED)
                        j->held = false;
                /* A JOB record during an intent: the operator put another token in the
                 * file; the intent's scan was recorded in the same batch. */
                job_clear_intent(j);
                j->phase = PHASE_IDLE;
                break;
        case JOURNAL_CREATE:
                if (j->phase == PHASE_RESTORE)
                        return replay_inconsistent(r, "create during a restore");
                if (j->phase != PHASE_INTENT)
                        j->create_first = r->at;
                j->create_last = r->at;
                if (r->name && set_str(&j->create_name, r->name) < 0)
                        return -ENOMEM;
                j->phase = PHASE_INTENT;
                break;
        case JOURNAL_DELIVERED:
                if (j->phase != PHASE_INTENT)
                        return replay_inconsistent(r, "delivered without a create");
                if (job_set_id(j, &j->delivered_id, r->id) < 0)
                        return -ENOMEM;
                j->delivered_created = r->created;
                j->delivered_expires = r->expires;
                j->phase = PHASE_DELIVERED;
                break;
        case JOURNAL_RESTORE: {
                Retirement *ret;
                if (j->phase != PHASE_IDLE || !streq_ptr(j->cur_id, r->old_id))
                        return replay_inconsistent(r, "restore while the job is not idle with that token");
                if (job_set_id(j, &j->restore_id, r->id) < 0)
                        return -ENOMEM;
                j->phase = PHASE_RESTORE;
                /* From here on the previous token may be enabled again: if the restore is
                 * abandoned, its retirement revokes it again (and the grace period starts
                 * over from that confirmed revoke). A compacted journal lists the
                 * retirement after the job: then there is nothing to reset here. */
                ret = manager_find_retirement(m, r->env, r->id);
                if (ret) {
                        call_cancel(TAKE_PTR(ret->call));
                        retry_done(&ret->retry);
                        ret->state = RETIRE_WAIT_REVOKE;
                        ret->delete_at = 0;
                }
                break;
        }
        case JOURNAL_RESTORED:
                if (!(j->phase == PHASE_NEW ||
                      (j->phase == PHASE_RESTORE && streq_ptr(j->restore_id, r->id))))
                        return replay_inconsistent(r, "restored without a restore of that token");
                if (job_set_id(j, &j->cur_id, r->id) < 0)
                        return -ENOMEM;
                j->cur_created = r->created;
                j->cur_expires = r->expires;
                if (r->at)
                        j->rotated_at = r->at;
                job_clear_intent(j);
                j->held = true;
                j->phase = PHASE_IDLE;
                break;
        case JOURNAL_FORGET:
                job_unlink_and_free(j);
                return 0;
        default:
                return replay_inconsistent(r, "unexpected record type");
        }
        if (r->env) {
                Env *e = manager_get_env(m, r->env, true);
                if (!e)
                        return -ENOMEM;
                if (!j->env)
                        j->env = e;
        }
        return 0;
}

int job_emit_records(Job *j) {
        Journal *jn = j->manager->journal;
        const char *env = j->env ? j->env->name : NULL;
        int r = 0;

        if (j->cur_id)
                r = journal_compact_add(jn, &(JournalRecord) {
                        .type = j->held ? JOURNAL_RESTORED : j->rotated_at ? JOURNAL_ROTATED : JOURNAL_JOB,
                        .job = j->name, .env = env, .id = j->cur_id, .created = j->cur_created,
                        .expires = j->cur_expires, .at = j->rotated_at });
        if (r >= 0 && j->phase == PHASE_RESTORE)
                r = journal_compact_add(jn, &(JournalRecord) {
                        .type = JOURNAL_RESTORE, .job = j->name, .env = env, .id = j->restore_id,
                        .old_id = j->cur_id });
        if (r >= 0 && IN_SET(j->phase, PHASE_INTENT, PHASE_DELIVERED)) {
                /* First and last attempt: the window a later scan covers. */
                r = journal_compact_add(jn, &(JournalRecord) {
                        .type = JOURNAL_CREATE, .job = j->name, .env = env, .old_id = j->cur_id,
                        .name = j->create_name, .at = j->create_first });
                if (r >= 0 && j->create_last != j->create_first)
                        r = journal_compact_add(jn, &(JournalRecord) {
                                .type = JOURNAL_CREATE, .job = j->name, .env = env,
                                .old_id = j->cur_id, .name = j->create_name, .at = j->create_last });
        }
        if (r >= 0 && j->phase == PHASE_DELIVERED)
                r = journal_compact_add(jn, &(JournalRecord) {
                        .type = JOURNAL_DELIVERED, .job = j->name, .env = env, .id = j->delivered_id,
                        .old_id = j->cur_id, .created = j->delivered_created,
                        .expires = j->delivered_expires });
        return r;
}

/* ---- scheduling ---- */

static usec_t job_due(Job *j) {
        return job_config_rotation_due(j->config, j->cur_created, j->cur_expires, j->rotated_at);
}

/* For status and --dry-run: when the job's current token is due (j->config set). */
usec_t job_due_at(Job *j) {
        return job_due(j);
}

bool job_is_active(Job *j) {
        return j->call || j->hook || retry_armed(&j->retry) || j->waiting_self;
}

bool job_is_held(const Job *j) {
        return j->held;
}

bool job_is_restoring(const Job *j) {
        return j->phase == PHASE_RESTORE;
}

bool job_is_creating(const Job *j) {
        return (j->call && j->call->op == API_CREATE) || (j->new_secret && !j->new_id) ||
               /* An intent being resumed: the file may hold the token of a create whose
                * DELIVERED record (lazy) a crash lost; it is known once it is looked up. */
               (j->phase == PHASE_INTENT && (j->state == JOB_INIT || j->state == JOB_LOOKUP_OLD));
}

static void job_changed(Job *j) {
        manager_status_changed(j->manager);
        manager_check_once_done(j->manager);
}

static int on_job_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Job *j = userdata;

        if (j->state == JOB_IDLE)
                j->state = JOB_LOOKUP_OLD;
        job_step(j);
        return 0;
}

/* Arms the job's timer for `when`, unless --once says that is beyond this run. */
void job_schedule(Job *j, usec_t when, bool retry) {
        Manager *m = j->manager;

        if (m->once && !retry && j->rotated_this_run)
                when = USEC_INFINITY; /* --once: one rotation per job */
        (void) retry_schedule(m, &j->retry, when, retry, on_job_timer, j);
}

void job_succeeded(Job *j) {
        j->permanent = false;
        retry_succeeded(&j->retry);
}

/* "in 2s", or "at the next run" for --once; for "retrying %s". */
char *format_retry(char *buf, size_t size, usec_t retry_at) {
        char d[FORMAT_DURATION_MAX];
        usec_t now = now_realtime();

        if (retry_at == USEC_INFINITY)
                snprintf(buf, size, "at the next run");
        else
                snprintf(buf, size, "in %s", format_duration(d, sizeof(d), retry_at > now ? retry_at - now : 0));
        return buf;
}

void job_fail(Job *j, bool permanent, const char *error, usec_t retry_at) {
        Manager *m = j->manager;
        char when[FORMAT_DURATION_MAX + 16], ts[FORMAT_TIMESTAMP_MAX];

        j->permanent = permanent;
        format_retry(when, sizeof(when), retry_failed(m, &j->retry, permanent, error, retry_at));

        if (permanent)
                log_job(LOG_ERR, j->name, MSGID_FAILED, j->cur_id, NULL, 0, "%s failed: %s; retrying %s",
                        job_state_to_string(j->state), strna(error), when);
        else
                log_job(LOG_WARNING, j->name, NULL, j->cur_id, NULL, 0, "%s failed: %s; retrying %s (attempt %u)",
                        job_state_to_string(j->state), strna(error), when, j->retry.attempt + 1);
        if (j->cur_expires != USEC_INFINITY && j->cur_expires <= j->retry.at && j->retry.at != USEC_INFINITY)
                log_job(LOG_CRIT, j->name, MSGID_EXPIRY, j->cur_id, NULL, 0,
                        "token %s expires at %s, before rotation can be retried: its consumers will lose access",
                        strna(j->cur_id), format_timestamp(ts, sizeof(ts), j->cur_expires));
        job_schedule(j, j->retry.at, true);
        if (j->requests) {
                char msg[1024];
                snprintf(msg, sizeof(msg), "%s failed: %s; retrying %s", job_state_to_string(j->state),
                         strna(error), when);
                job_requests_finish(j, -EIO, msg);
        }
        job_changed(j);
}

static void job_fail_errno(Job *j, int error, const char *what) {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s: %s", what, strerror(-error));
        job_fail(j, false, buf, 0);
}

static void job_fail_result(Job *j, const ApiResult *res) {
        job_fail(j, res->class == API_PERMANENT, res->error, res->retry_at);
}

/* The new token exists but cannot be written next to the job's file. Permissions, a
 * read-only file system (ReadWritePaths= of the unit) or a missing directory will not
 * fix themselves: say so loudly; the token is kept in memory and staged again later. */
static void job_fail_stage(Job *j, int error, const char *why) {
        _cleanup_free_ char *dir = dirname_malloc(j->config->file);
        bool writable = IN_SET(-error, EROFS, EACCES, ENOENT, ENOTDIR);
        bool operator = writable || IN_SET(-error, EPERM, ELOOP, EISDIR, EBADMSG, EMLINK);
        char buf[1024];

        if (why)
                snprintf(buf, sizeof(buf), "%s", why);
        else
                snprintf(buf, sizeof(buf), "cannot write the new token next to %s: %s", j->config->file,
                         strerror(-error));
        if (writable)
                snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf),
                         " (is %s writable for dtrotated? see ReadWritePaths= in dtrotated(8))", strna(dir));
        job_fail(j, operator, buf, 0);
}

static int job_stage(Job *j) {
        _cleanup_free_ char *why = NULL;
        int r = deliver_stage_full(j->config, j->new_secret, &why);

        if (r < 0)
                job_fail_stage(j, r, why);
        return r;
}

/* ---- steps ---- */

static void on_lookup_old(ApiResult *res, void *userdata);
static void on_create(ApiResult *res, void *userdata);
static void on_lookup_new(ApiResult *res, void *userdata);
static void job_run_hook(Job *j);

static Call *job_call(Job *j, ApiOp op, call_done_t done) {
        Call *c = call_new(j->env, op, done, j);
        if (!c)
                log_job(LOG_ERR, j->name, NULL, NULL, NULL, -ENOMEM, "out of memory");
        return c;
}

static void job_step_lookup_old(Job *j) {
        _cleanup_erase_ char *secret = NULL;
        const char *why = NULL;
        char buf[512];
        int r;

        r = read_token_file(j->config->file, &secret, &why);
        if (r < 0) {
                snprintf(buf, sizeof(buf), "token file %s: %s", j->config->file, why ?: strerror(-r));
                /* Nothing will change without the operator: permanent. */
                job_fail(j, true, buf, 0);
                return;
        }
        j->call = job_call(j, API_LOOKUP, on_lookup_old);
        if (!j->call)
                return job_fail_errno(j, -ENOMEM, "lookup");
        /* Kept in memory (only) for a restore during the grace period of this token. */
        erase_and_free(j->old_secret);
        j->old_secret = strdup(secret);
        j->old_secret_id = (free(j->old_secret_id), NULL);
        j->call->arg_token = TAKE_PTR(secret);
        call_submit(j->call);
}

/* The window of one create attempt that may have been carried out although its answer
 * never arrived intact (or the process died): a scan looks for its token once any such
 * create must have completed. */
static int job_owe_scan(Job *j, usec_t attempt, JournalRecord *rec) {
        const EnvConfig *ec = j->env->config;

        *rec = (JournalRecord) {
                .type = JOURNAL_SCAN, .job = j->name, .env = j->env->name,
                .name = j->create_name ?: j->token_name, .at = attempt,
                .until = usec_add(attempt, ec ? ec->request_timeout : 30 * USEC_PER_SEC),
                .grace = j->config->grace_period,
        };
        return rec->name ? 0 : -EINVAL;
}

static void job_step_create(Job *j) {
        Manager *m = j->manager;
        usec_t now;
        int r;

        if (j->new_secret) {
                /* The create succeeded earlier but staging failed: stage again. */
                if (job_stage(j) < 0)
                        return;
                j->state = JOB_LOOKUP_NEW;
                return job_step(j);
        }
        /* Every attempt is journaled before it is sent: its time bounds the window in
         * which a leftover of it can have been created. The request waits for the
         * record's sync (the write-ahead rule). */
        now = now_realtime();
        r = manager_record_lazy(m, &(JournalRecord) {
                .type = JOURNAL_CREATE, .job = j->name, .env = j->env->name,
                .old_id = j->cur_id, .name = j->token_name, .at = now }, 1);
        if (r < 0)
                return job_fail_errno(j, r, "journal");
        j->call = job_call(j, API_CREATE, on_create);
        if (!j->call)
                return job_fail_errno(j, -ENOMEM, "create");
        j->call->arg_name = strdup(j->token_name);
        j->call->arg_scopes = strv_copy(j->scopes);
        j->call->arg_expires_in = j->config->expires_in;
        if (!j->call->arg_name || !j->call->arg_scopes) {
                call_cancel(TAKE_PTR(j->call));
                return job_fail_errno(j, -ENOMEM, "create");
        }
        call_submit(j->call);
}

static void job_step_lookup_new(Job *j) {
        j->call = job_call(j, API_LOOKUP, on_lookup_new);
        if (!j->call)
                return job_fail_errno(j, -ENOMEM, "lookup");
        j->call->arg_token = strdup(j->new_secret);
        if (!j->call->arg_token) {
                call_cancel(TAKE_PTR(j->call));
                return job_fail_errno(j, -ENOMEM, "lookup");
        }
        call_submit(j->call);
}

void job_step(Job *j) {
        if (j->call || j->hook)
                return; /* already under way */
        if (!j->config || !j->env) {
                job_fail(j, true, "not configured", 0);
                return;
        }
        switch (j->state) {
        case JOB_INIT:
        case JOB_LOOKUP_OLD:
                job_step_lookup_old(j);
                break;
        case JOB_CREATE:
                job_step_create(j);
                break;
        case JOB_LOOKUP_NEW:
                job_step_lookup_new(j);
                break;
        case JOB_HOOK:
                job_run_hook(j);
                break;
        case JOB_RESTORE:
                job_restore_step(j);
                break;
        case JOB_IDLE:
        default:
                break;
        }
        manager_status_changed(j->manager);
}

void job_self_known(Job *j) {
        if (!j->waiting_self)
                return;
        j->waiting_self = false;
        if (j->env && j->env->self != ENV_SELF_KNOWN) {
                char buf[512];
                snprintf(buf, sizeof(buf), "cannot look up the management token of %s: %s", j->env->name,
                         strna(j->env->auth_error));
                return job_fail(j, false, buf, 0);
        }
        job_step(j);
}

/* Two jobs of one environment must not give their tokens one name: the name is how the
 * leftovers of an interrupted create are found again. */
static const Job *job_name_clash(Job *j, const char *token_name) {
        /* Counted (job_set_token_name()): only a name that two jobs hold needs the walk. */
        if (!token_name || strcount_get(&j->manager->token_names, token_name) < 2)
                return NULL;
        for (Job *o = j->manager->jobs; o; o = o->next)
                if (o != j && o->env == j->env && o->config && o->token_name &&
                    streq(o->token_name, token_name))
                        return o;
        return NULL;
}

static JournalRecord job_current_record(Job *j, const TokenInfo *info) {
        return (JournalRecord) {
                .type = JOURNAL_JOB, .job = j->name, .env = j->env->name, .id = info->id,
                .created = info->created ?: now_realtime(), /* unknown: count from first sight */
                .expires = info->expires };
}

/* Resuming an intent, the file holds a token that is not the old one. It is the one the
 * interrupted rotation created only if the API shows our name, our owner and a creation
 * time inside the create attempts; otherwise an operator put it there. */
static void job_resume_other_token(Job *j, const TokenInfo *info) {
        Manager *m = j->manager;
        Env *e = j->env;
        const char *want = j->create_name ?: j->config->token_name;
        usec_t timeout = e->config ? e->config->request_timeout : 30 * USEC_PER_SEC;
        JournalRecord recs[2];
        bool ours;
        int r;

        if (e->self != ENV_SELF_KNOWN) {
                j->waiting_self = true;
                env_need_self(e);
                return;
        }
        ours = (!want || streq_ptr(info->name, want)) && streq_ptr(info->owner, e->owner) &&
               info->created && usec_add(info->created, m->scan_margin) >= j->create_first &&
               info->created <= usec_add(usec_add(j->create_last, timeout), m->scan_margin) && !info->revoked;
        if (ours) {
                r = manager_record(m, &(JournalRecord) {
                        .type = JOURNAL_DELIVERED, .job = j->name, .env = e->name, .id = info->id,
                        .old_id = j->cur_id, .created = info->created, .expires = info->expires }, 1);
                if (r < 0)
                        return job_fail_errno(j, r, "journal");
                log_job(LOG_INFO, j->name, NULL, j->cur_id, info->id, 0,
                        "resuming: new token %s is already in %s", info->id, j->config->file);
                job_succeeded(j);
                j->state = JOB_HOOK;
                return job_step(j);
        }
        log_job(LOG_WARNING, j->name, NULL, j->cur_id, info->id, 0,
                "%s holds token %s, which is not the one the interrupted rotation created (name, owner or creation time differ): tracking it; %s is left alone",
                j->config->file, info->id, strna(j->cur_id));
        recs[1] = job_current_record(j, info);
        r = job_owe_scan(j, j->create_last, &recs[0]);
        r = manager_record(m, recs + (r < 0), r < 0 ? 1 : 2);
        if (r < 0)
                return job_fail_errno(j, r, "journal");
        job_succeeded(j);
        job_go_idle(j);
}

static void on_lookup_old(ApiResult *res, void *userdata) {
        Job *j = userdata;
        const TokenInfo *info = &res->info;
        char ts[FORMAT_TIMESTAMP_MAX];
        const Job *clash;
        int r;

        j->call = NULL;
        if (res->class != API_OK) {
                j->old_secret = erase_and_free(j->old_secret);
                return job_fail_result(j, res);
        }
        /* The file's token is known from here on (job_is_creating()). */
        scan_job_settled(j->manager, j->env->name, j->name);
        if (j->old_secret && set_str(&j->old_secret_id, info->id) < 0)
                j->old_secret = erase_and_free(j->old_secret);
        if (j->phase == PHASE_INTENT && j->cur_id && !streq(info->id, j->cur_id))
                return job_resume_other_token(j, info);

        if (job_set_token_name(j, j->config->token_name ?: info->name) < 0)
                return job_fail_errno(j, -ENOMEM, "lookup");
        clash = job_name_clash(j, j->token_name);
        if (clash) {
                char buf[512];
                snprintf(buf, sizeof(buf),
                         "token name '%s' is also used by job '%s' in environment %s; give one of them token_name",
                         j->token_name, clash->name, j->env->name);
                return job_fail(j, true, buf, 0);
        }

        if (!streq_ptr(info->id, j->cur_id)) {
                bool first = !j->cur_id;
                JournalRecord rec = job_current_record(j, info);
                r = manager_record(j->manager, &rec, 1);
                if (r < 0)
                        return job_fail_errno(j, r, "journal");
                log_job(LOG_INFO, j->name, NULL, NULL, info->id, 0, "%s token %s (%s), due %s",
                        first ? "tracking" : "the file now holds another token, tracking", info->id,
                        info->name, format_timestamp(ts, sizeof(ts), job_due(j)));
                if ((job_due(j) > now_realtime() && !info->revoked && !j->force) || j->rotated_this_run) {
                        job_succeeded(j);
                        return job_go_idle(j);
                }
        } else if (j->state == JOB_INIT && job_due(j) > now_realtime() && !info->revoked && !j->force) {
                job_succeeded(j);
                return job_go_idle(j);
        }

        if (info->revoked)
                log_job(LOG_WARNING, j->name, NULL, info->id, NULL, 0,
                        "token %s in %s is revoked; rotating it now", info->id, j->config->file);

        strv_free(j->scopes);
        j->scopes = strv_copy(j->config->scopes ?: info->scopes);
        if (!j->scopes)
                return job_fail_errno(j, -ENOMEM, "lookup");
        if (strv_length(j->scopes) == 0)
                return job_fail(j, true, "the token has no scopes and none are configured", 0);
        /* Never create a token that cannot be delivered (a symlink, an owner that cannot
         * be kept): nothing would be gained but a token to clean up. */
        {
                _cleanup_free_ char *why = NULL;
                r = deliver_check(j->config, &why);
                if (r < 0)
                        return job_fail_stage(j, r, why);
        }

        if (j->phase == PHASE_INTENT) {
                /* The intent's creates did not reach the file; the last one may have
                 * happened all the same (a dead process, a lost answer): owe a scan for
                 * it, beside the job, then create afresh. */
                const Scan *owed = manager_find_scan(j->manager, j->env->name, j->name);
                JournalRecord rec;
                if (job_owe_scan(j, j->create_last, &rec) >= 0 &&
                    !(owed && owed->from <= rec.at && owed->until >= rec.until)) {
                        r = manager_record(j->manager, &rec, 1);
                        if (r < 0)
                                return job_fail_errno(j, r, "journal");
                }
        }
        job_succeeded(j);
        j->state = JOB_CREATE;
        job_step(j);
}

static void on_create(ApiResult *res, void *userdata) {
        Job *j = userdata;

        j->call = NULL;
        if (res->class != API_OK) {
                if (res->maybe_done) {
                        /* It may have been created anyway: look for it beside the job once
                         * nothing sent can complete any more. */
                        JournalRecord rec;
                        if (job_owe_scan(j, j->create_last, &rec) >= 0)
                                (void) manager_record(j->manager, &rec, 1);
                }
                scan_job_settled(j->manager, j->env->name, j->name);
                return job_fail_result(j, res);
        }
        j->new_secret = TAKE_PTR(res->token);
        if (job_stage(j) < 0)
                return;
        job_succeeded(j);
        j->state = JOB_LOOKUP_NEW;
        job_step(j);
}

/* The new token is in the file: every environment that authenticates with that file (this
 * job's, or another one's through the same file or an alias of it) switches to it before
 * anything else: the API refuses to revoke the token in use. */
void job_switch_auth(Job *j, const char *new_id) {
        for (Env *e = j->manager->envs; e; e = e->next) {
                int r;
                if (!e->config || !env_uses_file(e, j->config->file))
                        continue;
                r = env_load_auth(e);
                if (r < 0)
                        log_job(LOG_ERR, j->name, NULL, NULL, NULL, r,
                                "cannot re-read the new management token of %s: %m", e->name);
                else
                        log_job(LOG_INFO, j->name, NULL, j->cur_id, new_id, 0,
                                "now authenticating to %s with the new token %s", e->name, new_id);
        }
}

static void on_lookup_new(ApiResult *res, void *userdata) {
        Job *j = userdata;
        const TokenInfo *info = &res->info;
        _cleanup_free_ char *why = NULL;
        int r;

        j->call = NULL;
        if (res->class == API_OK && info->revoked)
                res->class = API_PERMANENT;
        if (res->class != API_OK) {
                if (res->status == 404 || (res->class == API_PERMANENT && info->revoked)) {
                        /* The staged token is useless: drop it and start the rotation over.
                         * A revoked one still exists: retire it, it is ours. */
                        if (info->revoked && info->id) {
                                JournalRecord rec = {
                                        .type = JOURNAL_RETIRE, .job = j->name, .env = j->env->name,
                                        .id = info->id, .at = now_realtime(), .grace = j->config->grace_period };
                                if (manager_record(j->manager, &rec, 1) < 0)
                                        return job_fail_errno(j, -EIO, "journal");
                        }
                        (void) deliver_discard_staged(j->config);
                        j->new_secret = erase_and_free(j->new_secret);
                        j->state = JOB_LOOKUP_OLD;
                        scan_job_settled(j->manager, j->env->name, j->name);
                        return job_fail(j, false, "the new token is unknown to the API or revoked", 0);
                }
                return job_fail_result(j, res);
        }
        if (set_str(&j->new_id, info->id) < 0)
                return job_fail_errno(j, -ENOMEM, "lookup");
        scan_job_settled(j->manager, j->env->name, j->name);

        /* Idempotent: a retry after a failed directory fsync finds the token in place. */
        r = deliver_commit_full(j->config, j->new_secret, &why);
        if (r < 0) {
                if (why)
                        return job_fail(j, false, why, 0);
                return job_fail_errno(j, r, "moving the new token into place");
        }
        job_switch_auth(j, info->id);
        j->new_secret = erase_and_free(j->new_secret);
        j->new_created = info->created ?: now_realtime();
        j->new_expires = info->expires;

        /* Lazy: the file is the durable part; its lookup re-derives this record. */
        r = manager_record_lazy(j->manager, &(JournalRecord) {
                .type = JOURNAL_DELIVERED, .job = j->name, .env = j->env->name, .id = info->id,
                .old_id = j->cur_id, .created = j->new_created, .expires = j->new_expires }, 1);
        if (r < 0) {
                /* The file holds the new token: the resume path (lookup of the file's token
                 * during the intent) finds it, now or after a restart. */
                j->state = JOB_LOOKUP_OLD;
                return job_fail_errno(j, r, "journal");
        }
        log_job(LOG_INFO, j->name, NULL, j->cur_id, info->id, 0, "new token %s written to %s",
                info->id, j->config->file);
        job_succeeded(j);
        j->state = JOB_HOOK;
        job_step(j);
}

/* A tenant policy may cap token lifetimes below what was asked for: say so once per job,
 * loudly when renew_before can no longer be met. */
static void job_check_lifetime(Job *j) {
        const JobConfig *c = j->config;
        char d1[FORMAT_DURATION_MAX], d2[FORMAT_DURATION_MAX], d3[FORMAT_DURATION_MAX];
        usec_t life;

        if (j->cap_reported || j->cur_expires == USEC_INFINITY)
                return;
        life = j->cur_expires > j->cur_created ? j->cur_expires - j->cur_created : 0;
        /* Some slack for the API's rounding and the request's time on the wire. */
        if (c->renew_before < life && (c->expires_in == USEC_INFINITY || life >= c->expires_in / 20 * 19))
                return;
        j->cap_reported = true;
        format_duration(d1, sizeof(d1), life);
        if (c->expires_in == USEC_INFINITY)
                snprintf(d2, sizeof(d2), "no expiry");
        else
                format_duration(d2, sizeof(d2), c->expires_in);
        format_duration(d3, sizeof(d3), c->renew_before);
        if (c->renew_before >= life)
                log_job(LOG_CRIT, j->name, MSGID_EXPIRY, NULL, j->cur_id, 0,
                        "the tenant caps token lifetime: token %s lives %s although %s was asked for; renew_before (%s) cannot be met, renewing at two thirds of the real lifetime (lower expires_in)",
                        j->cur_id, d1, d2, d3);
        else
                log_job(LOG_WARNING, j->name, NULL, NULL, j->cur_id, 0,
                        "the tenant caps token lifetime: token %s lives %s although %s was asked for",
                        j->cur_id, d1, d2);
}

static void job_finish_rotation(Job *j) {
        Manager *m = j->manager;
        const JobConfig *c = j->config;
        usec_t now = now_realtime();
        char due[FORMAT_TIMESTAMP_MAX];
        _cleanup_free_ char *old = j->cur_id ? strdup(j->cur_id) : NULL;
        int r;

        bool revoke_now = j->revoke_now;
        JournalRecord recs[2] = {
                /* One batch: the old token is never forgotten before its retirement is.
                 * revoke-now: revoked at once and deleted at once, which the record
                 * carries across a restart. */
                { .type = JOURNAL_RETIRE, .job = j->name, .env = j->env->name, .id = j->cur_id,
                  .at = revoke_now ? now : now + c->revoke_delay, .grace = revoke_now ? 0 : c->grace_period,
                  /* revoke_when_unused: the give-up time is fixed now, so that neither a
                   * restart nor an edit of the configuration moves it. A revoke-now does
                   * not wait for the leaked token to go unused. */
                  .unused = revoke_now ? 0 : c->revoke_when_unused,
                  .until = !revoke_now && c->revoke_when_unused ? now + c->revoke_delay + c->revoke_when_unused_max : 0 },
                { .type = JOURNAL_ROTATED, .job = j->name, .env = j->env->name, .id = j->delivered_id,
                  .old_id = j->cur_id, .created = j->delivered_created,
                  .expires = j->delivered_expires, .at = now },
        };
        bool retire = j->cur_id && !streq(j->cur_id, j->delivered_id);

        if (j->cur_id && !old)
                return job_fail_errno(j, -ENOMEM, "rotate");
        /* Lazy (the write-ahead rule in dtrotated-manager.h): the revoke that acts on
         * the retirement syncs it first. */
        r = manager_record_lazy(m, recs + !retire, retire ? 2 : 1);
        if (r < 0)
                return job_fail_errno(j, r, "journal");
        if (retire && !revoke_now && j->old_secret && streq_ptr(j->old_secret_id, old)) {
                /* The old token's secret, read from the file before this rotation, stays
                 * in memory with its retirement: dtrotatectl restore can put it back
                 * during the grace period. Only the latest previous token is kept. */
                Retirement *ret = manager_find_retirement(m, j->env->name, old);
                for (Retirement *o = m->retirements; o; o = o->next)
                        if (o != ret && streq_ptr(o->job, j->name))
                                o->secret = erase_and_free(o->secret);
                if (ret && !ret->secret)
                        ret->secret = TAKE_PTR(j->old_secret);
        }
        /* Not kept (a revoke-now, or not the token that was retired): wipe it now. */
        j->old_secret = erase_and_free(j->old_secret);
        j->old_secret_id = (free(j->old_secret_id), NULL);
        j->rotated_this_run = true;
        log_job(LOG_INFO, j->name, MSGID_ROTATED, old, j->cur_id, 0,
                "rotated: %s replaces %s; next rotation due %s", j->cur_id, strna(old),
                format_timestamp(due, sizeof(due), job_due(j)));
        if (revoke_now && retire) {
                log_job(LOG_WARNING, j->name, MSGID_REVOKE_NOW, old, j->cur_id, 0,
                        "revoke-now: %s replaces %s, which is revoked and deleted at once (no revoke_delay, no grace period)",
                        j->cur_id, strna(old));
                /* Its retirement was journaled by the request and waits for this. */
                Retirement *ret = manager_find_retirement(m, j->env->name, old);
                if (ret)
                        retirement_start(ret);
        }
        job_check_lifetime(j);
        job_succeeded(j);
        j->force = j->revoke_now = false;
        job_requests_finish(j, 0, NULL);
        job_go_idle(j);
}

static void on_hook_done(Hook *h, int error, const char *what, void *userdata) {
        Job *j = userdata;
        char buf[256];

        hook_free(h);
        j->hook = NULL;
        if (error < 0) {
                snprintf(buf, sizeof(buf), "on_rotate %s %s; the old token stays valid until it succeeds",
                         j->config->on_rotate, what);
                return job_fail(j, false, buf, 0);
        }
        log_job(LOG_INFO, j->name, NULL, j->cur_id, j->delivered_id, 0, "on_rotate %s succeeded",
                j->config->on_rotate);
        job_finish_rotation(j);
}

static void job_run_hook(Job *j) {
        int r;

        if (!j->config->on_rotate)
                return job_finish_rotation(j);
        r = manager_journal_sync(j->manager); /* the write-ahead rule: before anything leaves */
        if (r >= 0)
                r = hook_run(j->manager->event, j->config->on_rotate, j->name, j->config->file, j->cur_id,
                             j->delivered_id, j->manager->hook_timeout, on_hook_done, j, &j->hook);
        if (r < 0)
                job_fail_errno(j, r, "starting on_rotate");
}

/* ---- idle, configuration, start-up ---- */

void job_go_idle(Job *j) {
        Manager *m = j->manager;
        char ts[FORMAT_TIMESTAMP_MAX];

        j->state = JOB_IDLE;
        job_clear_rotation(j);
        if (j->removed) {
                log_job(LOG_INFO, j->name, NULL, j->cur_id, NULL, 0,
                        "removed from the configuration; its pending revoke/delete steps and scans continue");
                /* The record frees the job. */
                if (manager_record(m, &(JournalRecord) { .type = JOURNAL_FORGET, .job = j->name }, 1) >= 0) {
                        manager_config_released(m);
                        manager_status_changed(m);
                        manager_check_once_done(m);
                        return;
                }
        }
        if (j->next_config) {
                j->config = j->next_config;
                j->next_config = NULL;
                j->env = manager_get_env(m, j->config->environment, true);
                manager_config_released(m);
        }
        if (j->config && j->cur_id && j->held && !j->force) {
                log_job(LOG_DEBUG, j->name, NULL, NULL, j->cur_id, 0,
                        "held after a restore: no rotation until dtrotatectl rotate %s", j->name);
                retry_cancel(&j->retry);
        } else if (j->config && j->cur_id) {
                /* An operator's rotate that did not get to rotate yet (the file held
                 * another token, say): now. It also ends a hold. */
                usec_t due = j->force ? now_realtime() : job_due(j);
                log_job(LOG_DEBUG, j->name, NULL, NULL, j->cur_id, 0, "next rotation due %s",
                        format_timestamp(ts, sizeof(ts), due));
                job_schedule(j, due, false);
        }
        job_changed(j);
}

/* A create may have happened: the rotation must be finished with the settings it began with. */
static bool job_in_rotation(Job *j) {
        return j->phase >= PHASE_INTENT || j->new_secret || j->hook;
}

void job_set_config(Job *j, const JobConfig *c) {
        Manager *m = j->manager;

        if (!c) {
                j->removed = true;
                j->next_config = NULL;
                if ((j->state == JOB_IDLE || j->retry.failed) && !job_in_rotation(j)) {
                        call_cancel(TAKE_PTR(j->call));
                        job_go_idle(j); /* forgets it */
                }
                return;
        }
        j->removed = false;
        if (j->config == c)
                return;
        if (j->config && job_config_equal(j->config, c) &&
            streq(j->config->environment, c->environment)) {
                /* Unchanged: keep state and timers, just point at the new copy. */
                j->config = c;
                if (j->next_config)
                        j->next_config = c;
                return;
        }
        if (!j->config) {
                j->config = c;
                if (!j->env || !streq(j->env->name, c->environment))
                        j->env = manager_get_env(m, c->environment, true);
                return;
        }
        /* Changed: takes effect at the next idle moment, never in the middle of a rotation. */
        j->next_config = c;
        if (j->state == JOB_IDLE && !j->call && !j->hook)
                job_go_idle(j);
        else if (j->retry.failed && !job_in_rotation(j)) {
                /* Failing before anything was created (say, a wrong file path): the new
                 * settings may be the fix, so start over with them now. */
                call_cancel(TAKE_PTR(j->call));
                j->config = TAKE_PTR(j->next_config);
                j->env = manager_get_env(m, c->environment, true);
                job_succeeded(j);
                manager_config_released(m);
                job_start(j);
        }
}

/* A revoke-now journals the retirement of the job's current token (no grace) before it
 * rotates: found again after a restart, it makes the job finish what was asked. */
static void job_resume_revoke_now(Job *j) {
        Retirement *ret;

        if (j->revoke_now || !j->cur_id || !j->env)
                return;
        ret = manager_find_retirement(j->manager, j->env->name, j->cur_id);
        if (!ret || ret->state != RETIRE_WAIT_REVOKE || ret->grace != 0 || !streq_ptr(ret->job, j->name))
                return;
        j->force = j->revoke_now = true;
        log_job(LOG_WARNING, j->name, MSGID_REVOKE_NOW, j->cur_id, NULL, 0,
                "resuming a revoke-now: rotating, then revoking and deleting %s at once", j->cur_id);
}

void job_start(Job *j) {
        Manager *m = j->manager;
        _cleanup_erase_ char *staged = NULL;

        if (!j->config) {
                if (job_in_rotation(j)) {
                        log_job(LOG_ERR, j->name, MSGID_FAILED, j->cur_id, NULL, 0,
                                "was removed from the configuration in the middle of a rotation; put it back so the rotation can finish");
                        j->removed = true;
                        return;
                }
                j->removed = true;
                j->state = JOB_IDLE;
                job_go_idle(j); /* forgets it */
                return;
        }
        if (j->env && !streq(j->env->name, j->config->environment)) {
                if (job_in_rotation(j))
                        log_job(LOG_WARNING, j->name, NULL, NULL, NULL, 0,
                                "environment changed in the middle of a rotation; finishing it in %s first",
                                j->env->name);
                else {
                        /* Another environment: its tokens are unknown there; start afresh. */
                        (void) job_set_id(j, &j->cur_id, NULL);
                        j->phase = PHASE_NEW;
                        j->held = false; /* the restored token was of the other one */
                        j->env = manager_get_env(m, j->config->environment, true);
                }
        }
        if (!j->env)
                j->env = manager_get_env(m, j->config->environment, true);
        job_resume_revoke_now(j);

        switch (j->phase) {
        case PHASE_DELIVERED:
                /* The new token is in the file; the hook may not have run. */
                j->state = JOB_HOOK;
                break;
        case PHASE_RESTORE:
                /* An interrupted restore: what the file holds decides. */
                j->state = JOB_RESTORE;
                break;
        case PHASE_INTENT:
                if (deliver_read_staged(j->config, &staged) >= 0) {
                        /* A created token was staged but not moved into place: verify it. */
                        j->new_secret = TAKE_PTR(staged);
                        j->state = JOB_LOOKUP_NEW;
                } else
                        j->state = JOB_LOOKUP_OLD; /* on_lookup_old decides what the file holds */
                break;
        case PHASE_NEW:
                if (!j->cur_id) {
                        j->state = JOB_INIT;
                        break;
                }
                __attribute__((fallthrough));
        case PHASE_IDLE:
        default: {
                usec_t now = now_realtime(), due = j->force ? now : job_due(j);
                j->state = JOB_IDLE;
                if (j->held) {
                        log_job(LOG_INFO, j->name, NULL, NULL, j->cur_id, 0,
                                "holds its restored token %s: no rotation until dtrotatectl rotate %s",
                                j->cur_id, j->name);
                        return;
                }
                if (due <= now && !m->once) {
                        /* Overdue at start-up: spread a fleet of them over a few seconds. */
                        usec_t spread = MIN(m->n_jobs * 10 * USEC_PER_MSEC, 5 * USEC_PER_SEC);
                        due = now + (spread ? random_u64() % spread : 0);
                }
                job_schedule(j, due, false);
                return;
        }
        }
        if (j->state != JOB_INIT)
                log_job(LOG_INFO, j->name, NULL, j->cur_id, j->delivered_id, 0,
                        "resuming an interrupted rotation (%s)", job_state_to_string(j->state));
        /* Resumed and first-sight work runs at once. */
        job_schedule(j, now_realtime(), true);
}

/* ---- operator requests and status ---- */

int job_rotate_now(Job *j, bool revoke_now, job_request_done_t done, void *userdata) {
        Manager *m = j->manager;
        JobRequest *q;

        if (!j->config || j->removed)
                return -ENOENT;
        if (j->manager->stopping)
                return -ESHUTDOWN;
        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        if (revoke_now && j->cur_id && j->env && !manager_find_retirement(m, j->env->name, j->cur_id)) {
                /* Journaled first, so that a restart before the rotation is done still
                 * revokes and deletes at once (job_resume_revoke_now()). It waits for
                 * the rotation: the token is in use until then. */
                int r = manager_record(m, &(JournalRecord) {
                        .type = JOURNAL_RETIRE, .job = j->name, .env = j->env->name, .id = j->cur_id,
                        .at = now_realtime(), .grace = 0 }, 1);
                if (r < 0) {
                        free(q);
                        return r;
                }
        }
        *q = (JobRequest) { .done = done, .userdata = userdata, .next = j->requests };
        j->requests = q;
        j->force = true;
        if (revoke_now && !j->revoke_now) {
                j->revoke_now = true;
                log_job(LOG_WARNING, j->name, MSGID_REVOKE_NOW, j->cur_id, NULL, 0,
                        "revoke-now requested: rotating, then revoking and deleting %s at once",
                        strna(j->cur_id));
        }
        /* Idle or waiting for a retry: go now (from the loop, never from within this
         * call). A rotation under way carries on; the request waits for its end. */
        if (!j->call && !j->hook && !j->waiting_self) {
                if (j->retry.failed)
                        j->retry.attempt = 0;
                job_schedule(j, now_realtime(), true);
        }
        manager_status_changed(j->manager);
        return 0;
}

int job_retry_now(Job *j) {
        if (!j->retry.failed || j->call || j->hook || j->waiting_self || !j->config)
                return 0;
        /* The backoff starts over; the error stays until the attempt's outcome. */
        j->retry.attempt = 0;
        job_schedule(j, now_realtime(), true);
        manager_status_changed(j->manager);
        return 1;
}

void job_get_status(Job *j, JobStatus *ret) {
        usec_t now = now_realtime();
        uint64_t t;

        *ret = (JobStatus) {
                .name = j->name,
                .env = j->env ? j->env->name : j->config ? j->config->environment : NULL,
                .phase = job_phase_to_string(j->phase),
                .state = job_state_to_string(j->state),
                .token_id = j->cur_id,
                .created = j->cur_id ? j->cur_created : 0,
                .expires = j->cur_id ? j->cur_expires : 0,
                .rotated_at = j->rotated_at,
                .next_at = USEC_INFINITY,
                .failures = j->retry.failed ? j->retry.attempt : 0,
                .error = j->retry.failed ? j->retry.error : NULL,
                .failing = j->retry.failed,
                .permanent = j->retry.failed && j->permanent,
                .forced = j->force,
                .revoke_now = j->revoke_now,
                .configured = j->config != NULL,
        };
        if (j->call || j->hook || j->waiting_self) {
                ret->next_action = job_state_to_string(j->state);
                ret->next_at = now; /* under way */
        } else if (retry_next(&j->retry, &t)) {
                ret->next_action = j->state == JOB_IDLE ? "rotate" : job_state_to_string(j->state);
                ret->next_at = t;
        } else if (j->retry.failed) {
                ret->next_action = job_state_to_string(j->state);
                ret->next_at = j->retry.at;
        } else if (j->held && !j->force)
                ret->next_action = "held"; /* after a restore: until an operator's rotate */
        ret->expiring = ret->configured && ret->expires && ret->expires != USEC_INFINITY &&
                        (ret->expires <= now || (ret->next_at != USEC_INFINITY && ret->expires <= ret->next_at) ||
                         (ret->failing && ret->next_at == USEC_INFINITY));
}
