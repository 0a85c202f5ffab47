/* SPDX-License-Identifier: MIT */
/* metrics_file: the Prometheus text format (version 0.0.4) for node_exporter's textfile
 * collector. It holds no secret, and the daemon rewrites it at start, so a rename makes
 * it atomic enough: readers see the old file or the new one, and after a power loss at
 * worst a stale one until the next write. No fsync, then: the file changes with every
 * step, and each sync would cost more than the whole step's metrics are worth. */
#include <fcntl.h>
#include <inttypes.h>
#include <search.h>
#include <sys/stat.h>

#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-metrics.h"
#include "dtrotated-util.h"

#define METRICS_INTERVAL USEC_PER_SEC   /* at most one write a second */

/* Counters of one job in one environment (kept when the job goes away: its retirements
 * still count). */
typedef struct JobCounters {
        char *job;
        char *env;
        uint64_t rotations, revokes, deletes;
        struct JobCounters *next;
} JobCounters;

typedef struct RequestCounter {
        ApiOp op;
        long status;
        uint64_t n;
} RequestCounter;

struct Metrics {
        JobCounters *jobs, *jobs_last;       /* in order of first use */
        void *jobs_by_key;                   /* tsearch() tree of the same, by job and env */
        RequestCounter *requests;
        size_t n_requests;

        sd_event_source *timer;
        bool dirty;
        bool write_failed;           /* warned; warn again only after a success */
        usec_t last_write;           /* CLOCK_MONOTONIC */
};

int metrics_new(Metrics **ret) {
        Metrics *x = calloc(1, sizeof(*x));

        if (!x)
                return -ENOMEM;
        *ret = x;
        return 0;
}

static void keep_node(void *p) {
}

Metrics *metrics_free(Metrics *x) {
        if (!x)
                return NULL;
        tdestroy(x->jobs_by_key, keep_node); /* the list owns them */
        while (x->jobs) {
                JobCounters *c = x->jobs;
                x->jobs = c->next;
                free(c->job);
                free(c->env);
                free(c);
        }
        free(x->requests);
        sd_event_source_disable_unref(x->timer);
        free(x);
        return NULL;
}

static int job_counters_cmp(const void *a, const void *b) {
        const JobCounters *x = a, *y = b;
        int r = strcmp(x->job, y->job);

        return r != 0 ? r : strcmp(x->env, y->env);
}

/* Looked up for each rotation, revoke and delete record: a tree, not a walk. */
static JobCounters *metrics_job(Metrics *x, const char *job, const char *env) {
        JobCounters key = { .job = (char *) (job ?: ""), .env = (char *) (env ?: "") }, *c;
        JobCounters *const *p = tfind(&key, &x->jobs_by_key, job_counters_cmp);

        if (p)
                return *p;
        c = calloc(1, sizeof(*c));
        if (!c || !(c->job = strdup(key.job)) || !(c->env = strdup(key.env)) ||
            !tsearch(c, &x->jobs_by_key, job_counters_cmp)) {
                if (c) {
                        free(c->job);
                        free(c->env);
                }
                free(c);
                return NULL;
        }
        /* In order of first use: the file reads in a stable order. */
        if (x->jobs_last)
                x->jobs_last->next = c;
        else
                x->jobs = c;
        x->jobs_last = c;
        return c;
}

void metrics_count_record(Manager *m, const JournalRecord *r) {
        const Retirement *ret;
        JobCounters *c;

        if (!m->metrics)
                return;
        switch (r->type) {
        case JOURNAL_ROTATED:
                if ((c = metrics_job(m->metrics, r->job, r->env)))
                        c->rotations++;
                break;
        case JOURNAL_REVOKED:
        case JOURNAL_DELETED:
                /* Before the record is applied: a DELETED frees the retirement. */
                ret = manager_find_retirement(m, r->env, r->id);
                if (!(c = metrics_job(m->metrics, ret ? ret->job : NULL, r->env)))
                        break;
                if (r->type == JOURNAL_REVOKED)
                        c->revokes++;
                else
                        c->deletes++;
                break;
        default:
                return;
        }
        metrics_changed(m);
}

void metrics_count_request(Manager *m, ApiOp op, long status) {
        Metrics *x = m->metrics;
        RequestCounter *l;

        if (!x)
                return;
        for (size_t i = 0; i < x->n_requests; i++)
                if (x->requests[i].op == op && x->requests[i].status == status) {
                        x->requests[i].n++;
                        return metrics_changed(m);
                }
        l = realloc(x->requests, (x->n_requests + 1) * sizeof(*l));
        if (!l)
                return;
        x->requests = l;
        x->requests[x->n_requests++] = (RequestCounter) { .op = op, .status = status, .n = 1 };
        metrics_changed(m);
}

/* ---- the text ---- */

char *metrics_escape_label(const char *s) {
        size_t n = 0;
        char *out, *p;

        for (const char *q = s; *q; q++)
                n += (*q == '\\' || *q == '"' || *q == '\n') ? 2 : 1;
        out = p = calloc(n + 1, 1);
        if (!out)
                return NULL;
        for (; *s; s++) {
                if (*s == '\\' || *s == '"') {
                        *p++ = '\\';
                        *p++ = *s;
                } else if (*s == '\n') {
                        *p++ = '\\';
                        *p++ = 'n';
                } else
                        *p++ = *s;
        }
        *p = 0;
        return out;
}

static void family(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int job_sample(FILE *f, const char *name, const char *job, const char *env, const char *value) {
        _cleanup_free_ char *j = metrics_escape_label(job ?: ""), *e = metrics_escape_label(env ?: "");

        if (!j || !e)
                return -ENOMEM;
        fprintf(f, "%s{job_name=\"%s\",environment=\"%s\"} %s\n", name, j, e, value);
        return 0;
}

static const char *seconds(char *buf, size_t size, usec_t t) {
        snprintf(buf, size, "%" PRIu64 ".%03" PRIu64, t / USEC_PER_SEC, t % USEC_PER_SEC / USEC_PER_MSEC);
        return buf;
}

static const char *number(char *buf, size_t size, uint64_t v) {
        snprintf(buf, size, "%" PRIu64, v);
        return buf;
}

static const char *job_env(Job *j) {
        return j->env ? j->env->name : j->config ? j->config->environment : "";
}

/* Every configured job gets a counter line (0 until something happens), so that rate()
 * and increase() see the first event. */
static int ensure_job_counters(Manager *m) {
        for (Job *j = m->jobs; j; j = j->next)
                if (j->config && !metrics_job(m->metrics, j->name, job_env(j)))
                        return -ENOMEM;
        return 0;
}

int metrics_format(Manager *m, FILE *f) {
        Metrics *x = m->metrics;
        char buf[64];
        int r = 0;

        if (!x)
                return -EINVAL;
        r = ensure_job_counters(m);
        if (r < 0)
                return r;

        family(f, "dtrotated_token_expiry_timestamp_seconds", "gauge",
               "When the job's current token expires (Unix time; absent: it never expires).");
        for (Job *j = m->jobs; j && r >= 0; j = j->next)
                if (j->config && j->cur_id && j->cur_expires != USEC_INFINITY && j->cur_expires)
                        r = job_sample(f, "dtrotated_token_expiry_timestamp_seconds", j->name, job_env(j),
                                       seconds(buf, sizeof(buf), j->cur_expires));

        family(f, "dtrotated_next_rotation_timestamp_seconds", "gauge",
               "When the job's token is due for rotation (Unix time; in the past: overdue or rotating).");
        for (Job *j = m->jobs; j && r >= 0; j = j->next)
                if (j->config && j->cur_id)
                        r = job_sample(f, "dtrotated_next_rotation_timestamp_seconds", j->name, job_env(j),
                                       seconds(buf, sizeof(buf), job_due_at(j)));

        family(f, "dtrotated_last_rotation_success_timestamp_seconds", "gauge",
               "When the job last rotated its token (Unix time; absent: not yet).");
        for (Job *j = m->jobs; j && r >= 0; j = j->next)
                if (j->config && j->rotated_at)
                        r = job_sample(f, "dtrotated_last_rotation_success_timestamp_seconds", j->name,
                                       job_env(j), seconds(buf, sizeof(buf), j->rotated_at));

        family(f, "dtrotated_consecutive_failures", "gauge",
               "Failed attempts of the job's current step since its last success.");
        for (Job *j = m->jobs; j && r >= 0; j = j->next)
                if (j->config)
                        r = job_sample(f, "dtrotated_consecutive_failures", j->name, job_env(j),
                                       number(buf, sizeof(buf), j->retry.failed ? j->retry.attempt : 0));

        family(f, "dtrotated_pending_retirements", "gauge",
               "Old tokens of the job waiting for their revoke or delete.");
        for (JobCounters *c = x->jobs; c && r >= 0; c = c->next) {
                uint64_t n = 0;
                for (Retirement *ret = m->retirements; ret; ret = ret->next)
                        if (streq(ret->job ?: "", c->job) && streq(ret->env_name, c->env))
                                n++;
                r = job_sample(f, "dtrotated_pending_retirements", c->job, c->env, number(buf, sizeof(buf), n));
        }

        family(f, "dtrotated_rotations_total", "counter", "Rotations completed since the daemon started.");
        for (JobCounters *c = x->jobs; c && r >= 0; c = c->next)
                r = job_sample(f, "dtrotated_rotations_total", c->job, c->env, number(buf, sizeof(buf), c->rotations));
        family(f, "dtrotated_revokes_total", "counter", "Old tokens revoked (confirmed) since the daemon started.");
        for (JobCounters *c = x->jobs; c && r >= 0; c = c->next)
                r = job_sample(f, "dtrotated_revokes_total", c->job, c->env, number(buf, sizeof(buf), c->revokes));
        family(f, "dtrotated_deletes_total", "counter",
               "Old tokens deleted (or found gone) since the daemon started.");
        for (JobCounters *c = x->jobs; c && r >= 0; c = c->next)
                r = job_sample(f, "dtrotated_deletes_total", c->job, c->env, number(buf, sizeof(buf), c->deletes));

        family(f, "dtrotated_api_requests_total", "counter",
               "Tokens API requests by operation and HTTP status (\"none\": no answer arrived).");
        for (size_t i = 0; i < x->n_requests && r >= 0; i++) {
                const RequestCounter *q = &x->requests[i];
                char status[24];
                if (q->status > 0)
                        snprintf(status, sizeof(status), "%ld", q->status);
                else
                        snprintf(status, sizeof(status), "none");
                fprintf(f, "dtrotated_api_requests_total{op=\"%s\",status=\"%s\"} %" PRIu64 "\n",
                        api_op_to_string(q->op), status, q->n);
        }
        if (r < 0)
                return r;
        return ferror(f) ? -EIO : 0;
}

/* ---- the file ---- */

static int metrics_write(Manager *m) {
        const char *path = m->config->metrics_file;
        _cleanup_free_ char *dir = dirname_malloc(path), *tmp = NULL;
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        FILE *f;
        int fd, r;

        if (!dir)
                return -ENOMEM;
        /* Hidden and without the .prom suffix: the collector never reads a half file. */
        tmp = strdup_printf("%s/.%s.tmp", dir, base);
        if (!tmp)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        /* node_exporter runs as another user; the unit's umask would hide the file. */
        if (fchmod(fd, 0644) < 0) {
                r = -errno;
                (void) close(fd);
                (void) unlink(tmp);
                return r;
        }
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                (void) close(fd);
                (void) unlink(tmp);
                return r;
        }
        r = metrics_format(m, f);
        if (fclose(f) == EOF && r >= 0)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        return r;
}

static void metrics_write_now(Manager *m) {
        Metrics *x = m->metrics;
        int r;

        x->dirty = false;
        x->last_write = now_monotonic();
        r = metrics_write(m);
        if (r < 0 && !x->write_failed)
                log_warning_errno(r, "Cannot write the metrics to %s: %m (is its directory writable for dtrotated? see ReadWritePaths= in dtrotated(8))",
                                  m->config->metrics_file);
        else if (r >= 0 && x->write_failed)
                log_info("Wrote the metrics to %s again", m->config->metrics_file);
        x->write_failed = r < 0;
}

static int on_metrics_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (m->metrics->dirty && m->config->metrics_file)
                metrics_write_now(m);
        return 0;
}

void metrics_changed(Manager *m) {
        Metrics *x = m->metrics;
        usec_t when;

        if (!x || !m->event || !m->config || !m->config->metrics_file)
                return;
        x->dirty = true;
        if (event_source_is_armed(x->timer))
                return;
        when = x->last_write ? x->last_write + METRICS_INTERVAL : 0;
        if (!x->timer) {
                if (sd_event_add_time(m->event, &x->timer, CLOCK_MONOTONIC, when, 10 * USEC_PER_MSEC,
                                      on_metrics_timer, m) < 0)
                        return;
                (void) sd_event_source_set_description(x->timer, "metrics");
                return;
        }
        (void) sd_event_source_set_time(x->timer, when);
        (void) sd_event_source_set_enabled(x->timer, SD_EVENT_ONESHOT);
}

void metrics_flush(Manager *m) {
        Metrics *x = m->metrics;

        if (x && x->dirty && m->config && m->config->metrics_file)
                metrics_write_now(m);
}
