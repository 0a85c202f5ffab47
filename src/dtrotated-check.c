/* SPDX-License-Identifier: MIT */
/* `--check-config --online` and `--dry-run`: what the API says about every configured
 * token, without changing anything. Both run the daemon's own environments and request
 * queues (dtrotated-env.c) on a manager that has no journal open, no jobs started and
 * no timers: the only requests are lookups. */
#include <stdarg.h>
#include <syslog.h>

#include "dtrotated-check.h"
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

typedef struct Probe Probe;

/* One lookup and its answer. */
typedef struct Lookup {
        Probe *probe;
        bool done, ok;
        bool self;                   /* the management token's own lookup */
        char *error;                 /* why it failed (never a secret) */
        TokenInfo info;
} Lookup;

struct Probe {
        Manager *m;
        const Config *config;
        size_t pending;
        Lookup *envs;                /* per c->envs[i]: the management token */
        Lookup *jobs;                /* per c->jobs[i]: the file's token */
};

static void lookup_done(Lookup *l) {
        free(l->error);
        token_info_done(&l->info);
}

static void probe_done(Probe *p) {
        if (p->m) {
                p->m->config = NULL; /* borrowed */
                p->m = manager_free(p->m);
        }
        for (size_t i = 0; p->envs && i < p->config->n_envs; i++)
                lookup_done(&p->envs[i]);
        for (size_t i = 0; p->jobs && i < p->config->n_jobs; i++)
                lookup_done(&p->jobs[i]);
        free(p->envs);
        free(p->jobs);
}

static void on_lookup(ApiResult *res, void *userdata) {
        Lookup *l = userdata;

        l->done = true;
        l->probe->pending--;
        if (res->class == API_OK) {
                l->ok = true;
                l->info = res->info;
                res->info = (TokenInfo) {};
                return;
        }
        l->error = strdup_printf("%s%s", l->self ? "looking up the management token: " : "",
                                 res->error ?: "lookup failed");
}

static void lookup_fail(Lookup *l, const char *fmt, ...) _printf_(2, 3);
static void lookup_fail(Lookup *l, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&l->error, fmt, ap) < 0)
                l->error = NULL;
        va_end(ap);
        l->done = true;
}

static int lookup_submit(Lookup *l, Env *e, char *secret) {
        Call *c = call_new(e, API_LOOKUP, on_lookup, l);

        if (!c) {
                erase_and_free(secret);
                return -ENOMEM;
        }
        c->arg_token = secret;
        l->probe->pending++;
        call_submit(c); /* may finish at once (an unreadable management token) */
        return 0;
}

static int on_replay(const JournalRecord *r, void *userdata) {
        return manager_apply_record(userdata, r);
}

/* Loads the management tokens and looks up every token; with journal, replays the
 * journal read-only into the manager first. */
static int probe_run(Probe *p, const Config *c, bool journal) {
        _cleanup_free_ char *error = NULL;
        Manager *m;
        int r;

        *p = (Probe) { .config = c };
        p->envs = calloc(c->n_envs ?: 1, sizeof(Lookup));
        p->jobs = calloc(c->n_jobs ?: 1, sizeof(Lookup));
        m = p->m = calloc(1, sizeof(Manager));
        if (!p->envs || !p->jobs || !m)
                return -ENOMEM;
        m->config = (Config *) c;
        r = sd_event_new(&m->event);
        if (r < 0)
                return r;
        r = curl_glue_new(m->event, &m->curl);
        if (r < 0)
                return r;
        if (journal) {
                r = journal_open_readonly(c->state_directory, on_replay, m, &error);
                if (r < 0 && r != -ENOENT) {
                        if (error)
                                fprintf(stderr, "%s\n", error);
                        else
                                fprintf(stderr, "Cannot read the journal in %s: %s\n", c->state_directory, strerror(-r));
                        return r;
                }
        }

        for (size_t i = 0; i < c->n_envs; i++) {
                Lookup *l = &p->envs[i];
                Env *e = manager_get_env(m, c->envs[i].name, true);
                l->probe = p;
                l->self = true;
                if (!e)
                        return -ENOMEM;
                e->config = &c->envs[i];
                if (env_load_auth(e) < 0) {
                        lookup_fail(l, "%s", e->auth_error ?: "cannot read the management token");
                        continue;
                }
                _cleanup_free_ char *secret = strdup(e->auth);
                if (!secret)
                        return -ENOMEM;
                r = lookup_submit(l, e, TAKE_PTR(secret));
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < c->n_jobs; i++) {
                const JobConfig *jc = &c->jobs[i];
                Lookup *l = &p->jobs[i];
                Env *e = manager_get_env(m, jc->environment, false);
                char *secret = NULL;
                const char *why = NULL;

                l->probe = p;
                r = read_token_file(jc->file, &secret, &why);
                if (r < 0) {
                        lookup_fail(l, "token file %s: %s", jc->file, why ?: strerror(-r));
                        continue;
                }
                if (!e || !e->auth) {
                        erase_and_free(secret);
                        lookup_fail(l, "cannot look it up: %s",
                                    e && e->auth_error ? e->auth_error : "no management token");
                        continue;
                }
                r = lookup_submit(l, e, secret);
                if (r < 0)
                        return r;
        }
        while (p->pending > 0) {
                r = sd_event_run(m->event, UINT64_MAX);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- --check-config --online ---- */

static void report_line(config_report_t report, void *userdata, int prio, const char *file, int line,
                        const char *fmt, ...) _printf_(6, 7);
static void report_line(config_report_t report, void *userdata, int prio, const char *file, int line,
                        const char *fmt, ...) {
        _cleanup_free_ char *what = NULL, *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&what, fmt, ap) < 0)
                what = NULL;
        va_end(ap);
        if (line > 0)
                msg = strdup_printf("%s:%d: %s", file, line, strna(what));
        else
                msg = strdup_printf("%s: %s", file, strna(what));
        report(prio, msg ?: "out of memory", userdata);
}

/* What the management token must be allowed: v1 one scope for everything; v2 write to
 * create, revoke and delete, read to confirm revokes, to scan for leftovers and to see
 * when a token was last used. */
static const char *const scopes_v1[] = { "TenantTokenManagement", NULL };
static const char *const scopes_v2[] = { "apiTokens.read", "apiTokens.write", NULL };

int online_check(const Config *c, config_report_t report, void *userdata) {
        _cleanup_(probe_done) Probe p = {};
        usec_t now = now_realtime();
        size_t errors = 0;
        int r;

        r = probe_run(&p, c, false);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_envs; i++) {
                const EnvConfig *ec = &c->envs[i];
                const Lookup *l = &p.envs[i];
                const char *file = ec->management_token_file_source ?: c->path;
                int line = ec->management_token_file ? ec->management_token_file_line : ec->line;

                if (!l->ok) {
                        report_line(report, userdata, LOG_ERR, file, line, "environment '%s': %s",
                                    ec->name, strna(l->error));
                        errors++;
                        continue;
                }
                for (const char *const *s = ec->api == API_V1 ? scopes_v1 : scopes_v2; *s; s++)
                        if (!strv_contains(l->info.scopes, *s)) {
                                report_line(report, userdata, LOG_ERR, file, line,
                                            "environment '%s': the management token %s lacks the scope %s",
                                            ec->name, strna(l->info.id), *s);
                                errors++;
                        }
        }
        for (size_t i = 0; i < c->n_jobs; i++) {
                const JobConfig *jc = &c->jobs[i];
                const Lookup *l = &p.jobs[i];
                const char *file = jc->file_source ?: c->path;
                char ts[FORMAT_TIMESTAMP_MAX];

                if (!l->ok) {
                        report_line(report, userdata, LOG_ERR, file, jc->file_line, "token '%s': %s", jc->name,
                                    strna(l->error));
                        errors++;
                        continue;
                }
                if (!jc->scopes && strv_length(l->info.scopes) == 0) {
                        report_line(report, userdata, LOG_ERR, file, jc->file_line,
                                    "token '%s': token %s has no scopes and none are configured: it cannot be rotated",
                                    jc->name, strna(l->info.id));
                        errors++;
                }
                if (l->info.revoked)
                        report_line(report, userdata, LOG_WARNING, file, jc->file_line,
                                    "token '%s': token %s in %s is revoked: the daemon rotates it at once",
                                    jc->name, strna(l->info.id), jc->file);
                else if (l->info.expires != USEC_INFINITY && l->info.expires <= now)
                        report_line(report, userdata, LOG_WARNING, file, jc->file_line,
                                    "token '%s': token %s in %s expired at %s", jc->name, strna(l->info.id),
                                    jc->file, format_timestamp(ts, sizeof(ts), l->info.expires));
        }
        return errors ? -EINVAL : 0;
}

/* ---- --dry-run ---- */

/* Token names come from the API: no control characters on the terminal. */
static void print_escaped(FILE *f, const char *s) {
        for (const unsigned char *p = (const unsigned char *) (s ?: ""); *p; p++)
                if (*p < 0x20 || *p == 0x7f || *p == '\'')
                        fprintf(f, "\\x%02x", *p);
                else
                        fputc(*p, f);
}

static const char *when(char *buf, size_t size, usec_t t, usec_t now) {
        char ts[FORMAT_TIMESTAMP_MAX], d[FORMAT_DURATION_MAX];

        if (t == USEC_INFINITY)
                snprintf(buf, size, "never");
        else if (t <= now)
                snprintf(buf, size, "now (due %s)", format_timestamp(ts, sizeof(ts), t));
        else
                snprintf(buf, size, "%s (in %s)", format_timestamp(ts, sizeof(ts), t),
                         format_duration(d, sizeof(d), t - now));
        return buf;
}

static usec_t add_sat(usec_t a, usec_t b) {
        return a > USEC_INFINITY - b ? USEC_INFINITY : a + b;
}

static void dry_run_job(Manager *m, const JobConfig *jc, const Lookup *l, FILE *f, usec_t now) {
        const TokenInfo *info = &l->info;
        Job *journaled = manager_find_job(m, jc->name);
        char w[FORMAT_TIMESTAMP_MAX + FORMAT_DURATION_MAX + 32], ts[FORMAT_TIMESTAMP_MAX], d[FORMAT_DURATION_MAX];
        usec_t due, revoke_at;
        Job tmp;

        fprintf(f, "%s (%s): ", jc->name, jc->environment);
        if (!l->ok) {
                fprintf(f, "lookup failed: %s\n", strna(l->error));
                return;
        }
        fprintf(f, "%s holds token %s '", jc->file, strna(info->id));
        print_escaped(f, info->name);
        fprintf(f, "', created %s, expires %s%s\n", format_timestamp(ts, sizeof(ts), info->created),
                format_timestamp(w, sizeof(w), info->expires), info->revoked ? ", REVOKED" : "");
        if (journaled && journaled->phase >= PHASE_INTENT) {
                fprintf(f, "  resume: the interrupted rotation (phase %s) at once%s%s\n",
                        job_phase_to_string(journaled->phase), journaled->delivered_id ? ": new token " : "",
                        (journaled->delivered_id ?: ""));
                return;
        }
        /* The schedule the daemon computes: from the file's token as the API shows it
         * (as after its first lookup), and the journal's last rotation. */
        tmp = (Job) {
                .config = jc,
                .cur_created = info->created ?: now,
                .cur_expires = info->expires,
                .rotated_at = journaled ? journaled->rotated_at : 0,
        };
        due = info->revoked ? now : job_due_at(&tmp);
        if (due < now)
                due = now;
        fprintf(f, "  rotate: %s\n", when(w, sizeof(w), job_due_at(&tmp), now));
        fprintf(f, "  create: token '");
        print_escaped(f, jc->token_name ?: info->name);
        fprintf(f, "', scopes");
        for (char *const *s = jc->scopes ?: info->scopes; s && *s; s++) {
                fputc(' ', f);
                print_escaped(f, *s);
        }
        fprintf(f, ", expires %s\n", jc->expires_in == USEC_INFINITY ? "never"
                : format_timestamp(ts, sizeof(ts), add_sat(due, jc->expires_in)));
        fprintf(f, "  write: %s%s%s\n", jc->file, jc->on_rotate ? ", then run " : "", (jc->on_rotate ?: ""));
        revoke_at = add_sat(due, jc->revoke_delay);
        fprintf(f, "  revoke: %s at %s (revoke_delay %s)", strna(info->id),
                format_timestamp(ts, sizeof(ts), revoke_at), format_duration(d, sizeof(d), jc->revoke_delay));
        if (jc->revoke_when_unused)
                fprintf(f, ", once unused for %s, at %s at the latest",
                        format_duration(d, sizeof(d), jc->revoke_when_unused),
                        format_timestamp(ts, sizeof(ts), add_sat(revoke_at, jc->revoke_when_unused_max)));
        fputc('\n', f);
        fprintf(f, "  delete: %s at %s (grace_period %s after the confirmed revoke)\n", strna(info->id),
                format_timestamp(ts, sizeof(ts), add_sat(revoke_at, jc->grace_period)),
                format_duration(d, sizeof(d), jc->grace_period));
}

int dry_run(const Config *c, FILE *f) {
        _cleanup_(probe_done) Probe p = {};
        usec_t now = now_realtime();
        char w[FORMAT_TIMESTAMP_MAX + FORMAT_DURATION_MAX + 32];
        bool failed = false;
        int r;

        r = probe_run(&p, c, true);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_envs; i++)
                if (!p.envs[i].ok) {
                        fprintf(f, "environment %s: %s\n", c->envs[i].name, strna(p.envs[i].error));
                        failed = true;
                }
        for (size_t i = 0; i < c->n_jobs; i++) {
                dry_run_job(p.m, &c->jobs[i], &p.jobs[i], f, now);
                failed = failed || !p.jobs[i].ok;
        }
        for (Retirement *ret = p.m->retirements; ret; ret = ret->next) {
                bool del = ret->state == RETIRE_WAIT_DELETE;
                fprintf(f, "pending: %s %s (job %s, %s) %s", del ? "delete" : "revoke", ret->id,
                        strna(ret->job), ret->env_name, when(w, sizeof(w), del ? ret->delete_at : ret->revoke_at, now));
                if (!del && ret->unused) {
                        char d[FORMAT_DURATION_MAX], ts[FORMAT_TIMESTAMP_MAX];
                        fprintf(f, ", once unused for %s, at %s at the latest",
                                format_duration(d, sizeof(d), ret->unused),
                                format_timestamp(ts, sizeof(ts), ret->unused_until));
                }
                fputc('\n', f);
        }
        for (Scan *s = p.m->scans; s; s = s->next) {
                fprintf(f, "pending: leftover scan for '");
                print_escaped(f, s->name);
                fprintf(f, "' (job %s, %s)\n", s->job, s->env_name);
        }
        fprintf(f, "dry run: nothing was changed\n");
        if (fflush(f) == EOF)
                return -errno;
        return failed ? -EIO : 0;
}
