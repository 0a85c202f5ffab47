/* SPDX-License-Identifier: MIT */
#include <search.h>
#include <signal.h>
#include <systemd/sd-daemon.h>

#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

#define STATUS_INTERVAL (200 * USEC_PER_MSEC)  /* at most 5 STATUS= updates a second */
#define ONCE_BUDGET_MAX (60 * USEC_PER_SEC)    /* --once: retry transient failures this long */
#define SCAN_MARGIN     (5 * USEC_PER_MINUTE)  /* clock skew between host and API server */
#define HOOK_TIMEOUT    (2 * USEC_PER_MINUTE)

/* ---- environments and their API calls ---- */

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

static Env *env_free(Env *e) {
        if (!e)
                return NULL;
        while (e->queue_head)
                call_cancel(e->queue_head);
        erase_and_free(e->auth);
        free(e->auth_error);
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
        r = read_token_file(path, &token, &why);
        free(e->auth_error);
        e->auth_error = NULL;
        if (r < 0) {
                e->auth_error = why ? strdup_printf("management token %s: %s", path, why)
                                    : strdup_printf("management token %s: %s", path, strerror(-r));
                return r;
        }
        if (!e->auth || !streq(e->auth, token))
                e->auth_generation++;
        erase_and_free(e->auth);
        e->auth = token;
        return 0;
}

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
        free(c->arg_name);
        strv_free(c->arg_scopes);
        free(c);
}

static void env_dispatch(Env *e);

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
        if (r < 0) {
                res.class = API_TRANSIENT;
                res.error = strdup_printf("%s: %s: %s", e->name, api_op_to_string(c->op), strerror(-r));
        } else if (res.status == 401 && c->auth_generation != e->auth_generation) {
                /* Built with a management token that has since been rotated away: the old
                 * one may already be revoked. Not the job's fault: send it again. */
                api_result_done(&res);
                c->request = api_request_free(c->request);
                c->queue_next = e->queue_head;
                e->queue_head = c;
                if (!e->queue_tail)
                        e->queue_tail = c;
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

static void env_dispatch(Env *e) {
        unsigned limit = e->config ? e->config->max_parallel : 1;

        while (e->queue_head && e->in_flight < limit) {
                Call *c = e->queue_head;
                int r;

                e->queue_head = c->queue_next;
                if (!e->queue_head)
                        e->queue_tail = NULL;
                c->queue_next = NULL;
                r = call_start(c);
                if (r < 0)
                        call_fail_now(c, r);
        }
}

void call_submit(Call *c) {
        Env *e = c->env;

        if (e->queue_tail)
                e->queue_tail->queue_next = c;
        else
                e->queue_head = c;
        e->queue_tail = c;
        env_dispatch(e);
}

void call_cancel(Call *c) {
        Env *e;

        if (!c)
                return;
        e = c->env;
        if (c->request) {
                curl_glue_remove(e->manager->curl, api_request_get_easy(c->request));
                e->in_flight--;
        } else {
                Call **p = &e->queue_head, *prev = NULL;
                for (; *p; prev = *p, p = &(*p)->queue_next)
                        if (*p == c) {
                                *p = c->queue_next;
                                if (e->queue_tail == c)
                                        e->queue_tail = prev;
                                break;
                        }
        }
        call_free(c);
        if (!e->manager->stopping)
                env_dispatch(e);
}

/* ---- scheduling helpers ---- */

/* Exponential backoff from about 1 s, doubling, ±25% jitter, capped at retry_max_delay;
 * permanent failures wait the cap. Never earlier than what the server asked for. */
usec_t manager_backoff(Manager *m, unsigned attempt, bool permanent, usec_t retry_at) {
        usec_t cap = m->config->retry_max_delay, delay = USEC_PER_SEC, now = now_realtime(), when;

        for (unsigned i = 1; i < attempt && delay < cap; i++)
                delay *= 2;
        if (permanent && m->once)
                return USEC_INFINITY; /* --once: a permanent failure is not retried */
        if (permanent || delay > cap)
                delay = cap;
        delay = delay * 3 / 4 + random_u64() % (delay / 2 + 1);
        when = now + delay;
        /* Honour the server's Retry-After, but not beyond a day: a bogus header must not
         * stall a token for years. */
        if (retry_at > when)
                when = MIN(retry_at, now + USEC_PER_DAY);
        return when;
}

/* Arms (or re-arms) a one-shot CLOCK_REALTIME timer: deadlines are wall-clock times so
 * that suspend, reboot or a long downtime never shortens a grace period. */
int manager_arm(Manager *m, sd_event_source **s, usec_t when, sd_event_time_handler_t cb, void *userdata) {
        int r;

        if (*s) {
                r = sd_event_source_set_time(*s, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(*s, SD_EVENT_ONESHOT);
                return r;
        }
        r = sd_event_add_time(m->event, s, CLOCK_REALTIME, when, USEC_PER_MSEC, cb, userdata);
        if (r >= 0)
                (void) sd_event_source_set_description(*s, "deadline");
        return r;
}

bool event_source_is_armed(sd_event_source *s) {
        int enabled = SD_EVENT_OFF;

        if (s)
                (void) sd_event_source_get_enabled(s, &enabled);
        return enabled != SD_EVENT_OFF;
}

bool manager_may_run_at(Manager *m, usec_t t, bool retry) {
        if (!m->once)
                return true;
        if (t == USEC_INFINITY)
                return false;
        /* --once: what is due now, follow-ups that fall due during this run, and retries
         * within the run's budget. */
        return t <= (retry ? m->once_deadline : now_realtime());
}

int manager_journal_append(Manager *m, const JournalRecord *r, size_t n) {
        int k = journal_append(m->journal, r, n);
        if (k < 0)
                return log_error_errno(k, "Cannot write the journal in %s: %m; the step will be retried",
                                       m->config->state_directory);
        return 0;
}

/* ---- status ---- */

static char *manager_status(Manager *m) {
        size_t idle = 0, rotating = 0, failing = 0, grace = 0, revoke = 0;
        usec_t next_rotation = USEC_INFINITY, next_delete = USEC_INFINITY, now = now_realtime();
        const char *first_fail = NULL, *first_fail_error = NULL, *next_delete_job = NULL;
        char d1[FORMAT_DURATION_MAX], d2[FORMAT_DURATION_MAX];
        char buf[512] = "", part[256];
        size_t n = 0;

        for (Job *j = m->jobs; j; j = j->next) {
                if (!j->config)
                        continue;
                n++;
                if (j->failed) {
                        failing++;
                        if (!first_fail) {
                                first_fail = j->name;
                                first_fail_error = j->last_error;
                        }
                } else if (j->state == JOB_IDLE)
                        idle++;
                else
                        rotating++;
                if (j->state == JOB_IDLE && j->timer) {
                        uint64_t t;
                        if (sd_event_source_get_time(j->timer, &t) >= 0 && t < next_rotation)
                                next_rotation = t;
                }
        }
        for (Retirement *r = m->retirements; r; r = r->next) {
                if (r->state == RETIRE_WAIT_DELETE) {
                        grace++;
                        if (r->delete_at < next_delete) {
                                next_delete = r->delete_at;
                                next_delete_job = r->job;
                        }
                } else
                        revoke++;
        }

        snprintf(part, sizeof(part), "%zu token%s: %zu idle", n, n == 1 ? "" : "s", idle);
        strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        if (rotating) {
                snprintf(part, sizeof(part), ", %zu rotating", rotating);
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (revoke) {
                snprintf(part, sizeof(part), ", %zu to revoke", revoke);
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (grace) {
                snprintf(part, sizeof(part), ", %zu in grace (delete %s in %s)", grace,
                         strna(next_delete_job),
                         format_duration(d1, sizeof(d1), next_delete > now ? next_delete - now : 0));
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (failing) {
                snprintf(part, sizeof(part), ", %zu failing (%s: %.80s)", failing, first_fail,
                         strna(first_fail_error));
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (next_rotation != USEC_INFINITY) {
                snprintf(part, sizeof(part), "; next rotation in %s",
                         format_duration(d2, sizeof(d2), next_rotation > now ? next_rotation - now : 0));
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        return strdup(buf);
}

static void manager_send_status(Manager *m) {
        _cleanup_free_ char *s = manager_status(m);

        m->status_dirty = false;
        if (!s || streq_ptr(s, m->last_status))
                return;
        (void) sd_notifyf(false, "STATUS=%s", s);
        free(m->last_status);
        m->last_status = TAKE_PTR(s);
}

/* READY=1 with the current STATUS=, remembered so the status timer does not repeat it. */
static void manager_send_ready(Manager *m) {
        char *s = manager_status(m);

        m->status_dirty = false;
        (void) sd_notifyf(false, "READY=1\nSTATUS=%s", strna(s));
        free(m->last_status);
        m->last_status = s;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        manager_send_status(userdata);
        return 0;
}

/* Coalesces STATUS= updates: one at most every STATUS_INTERVAL, none while idle. */
void manager_status_changed(Manager *m) {
        if (m->status_dirty)
                return;
        m->status_dirty = true;
        if (!m->status_timer) {
                if (sd_event_add_time_relative(m->event, &m->status_timer, CLOCK_MONOTONIC,
                                               STATUS_INTERVAL, USEC_PER_MSEC * 50, on_status_timer, m) < 0)
                        return;
                (void) sd_event_source_set_description(m->status_timer, "status");
                return;
        }
        (void) sd_event_source_set_time_relative(m->status_timer, STATUS_INTERVAL);
        (void) sd_event_source_set_enabled(m->status_timer, SD_EVENT_ONESHOT);
}

/* --once: exit when nothing is left to do in this run. */
void manager_check_once_done(Manager *m) {
        size_t left = 0;

        if (!m->once || m->stopping)
                return;
        for (Job *j = m->jobs; j; j = j->next)
                if (job_is_active(j))
                        return;
        for (Retirement *r = m->retirements; r; r = r->next)
                if (retirement_is_active(r))
                        return;
        for (Job *j = m->jobs; j; j = j->next)
                if (j->failed) {
                        log_job(LOG_ERR, j->name, MSGID_FAILED, j->cur_id, NULL, 0,
                                "left undone by this run: %s", strna(j->last_error));
                        left++;
                }
        for (Retirement *r = m->retirements; r; r = r->next)
                if (r->failed) {
                        log_job(LOG_ERR, strna(r->job), MSGID_FAILED, r->id, NULL, 0,
                                "%s of %s left undone by this run: %s",
                                r->state == RETIRE_WAIT_REVOKE ? "revoke" : "delete", r->id,
                                strna(r->last_error));
                        left++;
                }
        if (left)
                log_error("--once: %zu step%s failed; they are in the journal for the next run", left,
                          left == 1 ? "" : "s");
        m->exit_status = left ? EXIT_RUNTIME : 0;
        m->stopping = true;
        (void) sd_event_exit(m->event, m->exit_status);
}

/* ---- start-up, reload, shutdown ---- */

static int on_replay(const JournalRecord *r, void *userdata) {
        return job_apply_record(userdata, r);
}

static int emit_live_records(Journal *j, void *userdata) {
        Manager *m = userdata;
        int r;

        for (Job *job = m->jobs; job; job = job->next)
                if ((r = job_emit_records(job)) < 0)
                        return r;
        for (Retirement *ret = m->retirements; ret; ret = ret->next)
                if ((r = retirement_emit_records(ret)) < 0)
                        return r;
        return 0;
}

/* Compaction: rewrite the journal with just the live state once it has grown well past
 * it. Called when the loop is about to go idle, never in the middle of a step. */
static int on_idle_compact(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        size_t live = m->n_jobs * 2 + m->n_retirements * 2;
        int r;

        if (journal_n_records(m->journal) <= 2 * live + 256)
                return 0;
        r = journal_compact(m->journal, emit_live_records, m);
        if (r < 0)
                log_warning_errno(r, "Compacting the journal failed, keeping the old one: %m");
        return 0;
}

static void manager_adopt_config(Manager *m, Config *c) {
        /* Environments: point to the new settings; keep ones with pending steps. */
        for (Env *e = m->envs; e; e = e->next)
                e->config = config_find_env(c, e->name);
        for (size_t i = 0; i < c->n_envs; i++) {
                Env *e = manager_get_env(m, c->envs[i].name, true);
                if (!e)
                        continue;
                e->config = &c->envs[i];
                (void) env_load_auth(e); /* errors surface when a call needs the token */
        }
        for (Retirement *r = m->retirements; r; r = r->next)
                r->env = manager_get_env(m, r->env_name, false);
}

/* Frees the configurations that replaced ones no job or environment points into. */
void manager_config_released(Manager *m) {
        size_t k = 0;

        for (size_t i = 0; i < m->n_old_configs; i++) {
                Config *c = m->old_configs[i];
                bool used = false;
                for (Job *j = m->jobs; j && !used; j = j->next)
                        used = (j->config >= c->jobs && j->config < c->jobs + c->n_jobs);
                for (Env *e = m->envs; e && !used; e = e->next)
                        used = (e->config >= c->envs && e->config < c->envs + c->n_envs);
                if (used)
                        m->old_configs[k++] = c;
                else
                        config_free(c);
        }
        m->n_old_configs = k;
}

static int job_config_name_cmp(const void *a, const void *b) {
        return strcmp(((const JobConfig *) a)->name, ((const JobConfig *) b)->name);
}

static void free_nothing(void *p) {
}

static void manager_apply_jobs(Manager *m) {
        Config *c = m->config;
        void *names = NULL;          /* the configured names, for the second loop: asking */
        bool indexed = true;         /* config_find_job() for each job is O(n^2) */

        for (size_t i = 0; i < c->n_jobs; i++) {
                if (indexed && !tsearch(&c->jobs[i], &names, job_config_name_cmp))
                        indexed = false;
                Job *j = manager_find_job(m, c->jobs[i].name);
                bool fresh = !j;
                if (!j)
                        j = job_new(m, c->jobs[i].name);
                if (!j) {
                        log_error("Out of memory");
                        continue;
                }
                job_set_config(j, &c->jobs[i]);
                if (fresh && m->running)
                        job_start(j); /* added by a reload */
        }
        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next; /* an idle removed job is freed right away */
                if (indexed ? !tfind(&(JobConfig) { .name = j->name }, &names, job_config_name_cmp)
                            : !config_find_job(c, j->name))
                        job_set_config(j, NULL);
        }
        tdestroy(names, free_nothing);
}

static void report_config_problem(int prio, const char *msg, void *userdata) {
        log_full(prio, 0, "%s", msg);
}

int manager_reload(Manager *m) {
        Config *c = NULL, **old;
        usec_t now = now_monotonic();
        int r;

        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading %s",
                          (unsigned long long) now, m->config_path);
        log_info("Reloading %s", m->config_path);
        r = config_load(m->config_path, &c, report_config_problem, NULL);
        if (r < 0) {
                log_error("Configuration %s has errors; keeping the running configuration", m->config_path);
                goto done;
        }
        if (!streq(c->state_directory, m->config->state_directory))
                log_warning("state_directory changed to %s; this takes effect at the next start",
                            c->state_directory);
        old = realloc(m->old_configs, (m->n_old_configs + 1) * sizeof(Config *));
        if (!old) {
                config_free(c);
                r = log_error_errno(-ENOMEM, "Out of memory");
                goto done;
        }
        m->old_configs = old;
        m->old_configs[m->n_old_configs++] = m->config;
        free(c->state_directory);
        c->state_directory = strdup(m->config->state_directory);
        m->config = c;
        manager_adopt_config(m, c);
        manager_apply_jobs(m);
        manager_config_released(m);
        log_info("Reloaded %s: %zu token%s in %zu environment%s", m->config_path, c->n_jobs,
                 c->n_jobs == 1 ? "" : "s", c->n_envs, c->n_envs == 1 ? "" : "s");
done:
        manager_send_ready(m);
        return r;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("Received SIG%s, stopping; in-flight requests are abandoned, the journal resumes them",
                 sigabbrev_np((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        m->stopping = true;
        m->exit_status = 0;
        (void) sd_event_exit(m->event, 0);
        return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) manager_reload(userdata);
        return 0;
}

int manager_new(const char *config_path, Config *config, bool once, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_free_ char *error = NULL;
        sigset_t mask;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config_path = strdup(config_path);
        if (!m->config_path)
                return -ENOMEM;
        m->config = config;
        m->once = once;
        m->scan_margin = SCAN_MARGIN;
        m->hook_timeout = HOOK_TIMEOUT;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;

        r = sd_event_new(&m->event);
        if (r < 0)
                return r;
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_sigterm, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_sigterm, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m)) < 0)
                return r;
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return r;
        r = curl_glue_new(m->event, &m->curl);
        if (r < 0)
                return r;

        manager_adopt_config(m, config);

        r = journal_open(config->state_directory, on_replay, m, &m->journal, &error);
        if (r < 0) {
                if (error)
                        log_error("%s", error);
                else
                        log_error_errno(r, "Cannot open the journal in %s: %m", config->state_directory);
                return r;
        }
        {
                sd_event_source *s;
                r = sd_event_add_post(m->event, &s, on_idle_compact, m);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_floating(s, true);
                (void) sd_event_source_set_priority(s, SD_EVENT_PRIORITY_IDLE);
        }
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        m->stopping = true;
        while (m->jobs) {
                Job *j = m->jobs;
                m->jobs = j->next;
                job_free(j);
        }
        m->jobs_last = NULL;
        tdestroy(m->jobs_by_name, free_nothing);
        m->jobs_by_name = NULL;
        while (m->retirements) {
                Retirement *r = m->retirements;
                m->retirements = r->next;
                retirement_free(r);
        }
        while (m->envs) {
                Env *e = m->envs;
                m->envs = e->next;
                env_free(e);
        }
        curl_glue_free(m->curl);
        journal_close(m->journal);
        sd_event_source_disable_unref(m->status_timer);
        sd_event_unref(m->event);
        config_free(m->config);
        for (size_t i = 0; i < m->n_old_configs; i++)
                config_free(m->old_configs[i]);
        free(m->old_configs);
        free(m->last_status);
        free(m->config_path);
        free(m);
        return NULL;
}

int manager_run(Manager *m) {
        int r;

        m->once_started = now_realtime();
        /* --once retries transient failures for 10 x retry_max_delay, at most a minute. */
        m->once_deadline = m->once_started + MIN(ONCE_BUDGET_MAX, 10 * m->config->retry_max_delay);
        manager_apply_jobs(m);
        m->running = true;
        for (Retirement *ret = m->retirements; ret; ret = ret->next)
                retirement_start(ret);
        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next; /* a removed idle job is forgotten and freed */
                job_start(j);
        }

        /* Ready: configuration loaded, journal replayed, lock held; nothing sent yet. */
        manager_send_ready(m);
        log_info("dtrotated " VERSION " started: %zu token%s, %zu pending revoke/delete step%s, journal in %s",
                 m->config->n_jobs, m->config->n_jobs == 1 ? "" : "s", m->n_retirements,
                 m->n_retirements == 1 ? "" : "s", m->config->state_directory);
        manager_check_once_done(m);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_RUNTIME;
        return m->exit_status;
}
