/* SPDX-License-Identifier: MIT */
/* The control socket (dtrotated-control.h). A stream socket; each message is a JSON
 * object terminated by a NUL byte, as in Varlink:
 *
 *   -> {"method":"io.dtrotated.Rotate","parameters":{"jobs":["app"]}}\0
 *   <- {"parameters":{"results":[{"job":"app"}]}}\0
 *   <- {"error":"io.dtrotated.NoSuchJob","parameters":{"job":"nope"}}\0
 *
 * One request at a time per connection: the next one is read once the reply to the
 * current one is written (a rotation may take a while). Messages are bounded; peers are
 * checked by SO_PEERCRED when they connect. Nothing here ever carries a secret. */
#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-event.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "dtrotated-control.h"
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

typedef struct Conn Conn;
typedef struct Pending Pending;

struct Control {
        Manager *manager;
        char *path;
        gid_t gid;
        int fd;
        sd_event_source *io;
        Conn *conns;
        size_t n_conns;
        bool full_reported;          /* the connection limit was logged */
};

struct Conn {
        Control *control;
        int fd;
        sd_event_source *io;
        uid_t uid;
        pid_t pid;
        char *in;                    /* received, not handled yet */
        size_t in_len;
        char *out;                   /* replies not written yet */
        size_t out_len, out_done;
        Pending *pending;            /* the request being answered later */
        bool eof;                    /* the peer will send nothing more */
        bool oneway;                 /* the call being handled wants no reply */
        bool close_after;            /* close once out is written */
        Conn *next;
};

/* A request answered once jobs have done what was asked (Rotate, RevokeNow, Restore). */
typedef struct PendingSlot {
        Pending *pending;
        char *job;
        int error;                   /* 1: not done yet */
        char *message;
} PendingSlot;

struct Pending {
        Conn *conn;                  /* NULL: the client went away, or wait was false */
        const char *method;          /* a string constant */
        size_t n, left;
        PendingSlot *slots;
};

static const char interface_description[] =
        "# dtrotated: Dynatrace API token rotation. See dtrotated(8).\n"
        "interface io.dtrotated\n"
        "\n"
        "type Job (\n"
        "  job: string,\n"
        "  environment: ?string,\n"
        "  phase: string,\n"
        "  state: string,\n"
        "  token: ?string,\n"
        "  created: ?int,\n"
        "  expires: ?int,\n"
        "  rotated: ?int,\n"
        "  next_action: ?string,\n"
        "  next_at: ?int,\n"
        "  failures: int,\n"
        "  error: ?string,\n"
        "  failing: bool,\n"
        "  permanent: bool,\n"
        "  expiring: bool,\n"
        "  configured: bool,\n"
        "  rotate_requested: bool,\n"
        "  revoke_now: bool\n"
        ")\n"
        "\n"
        "type Step (\n"
        "  job: ?string,\n"
        "  environment: string,\n"
        "  action: string,\n"
        "  token: string,\n"
        "  at: ?int,\n"
        "  failures: int,\n"
        "  error: ?string,\n"
        "  failing: bool\n"
        ")\n"
        "\n"
        "type Result (\n"
        "  job: string,\n"
        "  error: ?string\n"
        ")\n"
        "\n"
        "method Status(jobs: ?[]string) -> (version: string, jobs: []Job, pending: []Step)\n"
        "method Rotate(jobs: []string, wait: ?bool) -> (results: []Result)\n"
        "method RevokeNow(job: string, wait: ?bool) -> (results: []Result)\n"
        "method Restore(job: string) -> (results: []Result)\n"
        "method Retry(jobs: ?[]string, all: ?bool) -> (retried: int)\n"
        "method Reload() -> (problems: []string)\n"
        "\n"
        "error NoSuchJob (job: string)\n"
        "error RotationFailed (results: []Result)\n"
        "error RestoreRefused (results: []Result)\n"
        "error ConfigurationError (problems: []string)\n"
        "error PermissionDenied ()\n"
        "error MessageTooLarge (limit: int)\n"
        "error TooManyConnections (limit: int)\n"
        "error ShuttingDown ()\n";

static const char service_description[] =
        "interface org.varlink.service\n"
        "\n"
        "method GetInfo() -> (vendor: string, product: string, version: string, url: string, interfaces: []string)\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n"
        "\n"
        "error InterfaceNotFound (interface: string)\n"
        "error MethodNotFound (method: string)\n"
        "error MethodNotImplemented (method: string)\n"
        "error InvalidParameter (parameter: string)\n";

/* ---- JSON output ---- */

static void gen_str(yajl_gen g, const char *s) {
        if (s)
                yajl_gen_string(g, (const unsigned char *) s, strlen(s));
        else
                yajl_gen_null(g);
}

static void gen_key(yajl_gen g, const char *key) {
        gen_str(g, key);
}

static void gen_kv_str(yajl_gen g, const char *key, const char *v) {
        gen_key(g, key);
        gen_str(g, v);
}

static void gen_kv_int(yajl_gen g, const char *key, long long v) {
        gen_key(g, key);
        yajl_gen_integer(g, v);
}

static void gen_kv_bool(yajl_gen g, const char *key, bool v) {
        gen_key(g, key);
        yajl_gen_bool(g, v);
}

/* Seconds since the epoch; 0 (unknown) and USEC_INFINITY (never) are null. */
static void gen_kv_time(yajl_gen g, const char *key, usec_t t) {
        gen_key(g, key);
        if (t == 0 || t == USEC_INFINITY)
                yajl_gen_null(g);
        else
                yajl_gen_integer(g, (long long) (t / USEC_PER_SEC));
}

static void gen_strv(yajl_gen g, char **l) {
        yajl_gen_array_open(g);
        for (char **p = l; p && *p; p++)
                gen_str(g, *p);
        yajl_gen_array_close(g);
}

/* ---- connections ---- */

static void conn_free(Conn *c);
static void conn_update_events(Conn *c);
static void conn_process(Conn *c);

static void conn_unlink_and_free(Conn *c) {
        Control *ctl = c->control;

        for (Conn **p = &ctl->conns; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        ctl->n_conns--;
        conn_free(c);
}

static void conn_free(Conn *c) {
        if (c->pending)
                c->pending->conn = NULL; /* its jobs answer into the void */
        sd_event_source_disable_unref(c->io);
        if (c->fd >= 0)
                (void) close(c->fd);
        free(c->in);
        free(c->out);
        free(c);
}

/* Writes what it can; the rest waits for EPOLLOUT. -errno: the connection is broken. */
static int conn_flush(Conn *c) {
        while (c->out_done < c->out_len) {
                ssize_t k = send(c->fd, c->out + c->out_done, c->out_len - c->out_done, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        return -errno;
                }
                c->out_done += (size_t) k;
        }
        c->out = (free(c->out), NULL);
        c->out_len = c->out_done = 0;
        return 0;
}

/* Queues the generator's document and a NUL. */
static int conn_send(Conn *c, yajl_gen g) {
        const unsigned char *buf;
        size_t len;
        char *n;

        if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
                return -EINVAL;
        n = realloc(c->out, c->out_len + len + 1);
        if (!n)
                return -ENOMEM;
        memcpy(n + c->out_len, buf, len);
        n[c->out_len + len] = 0;
        c->out = n;
        c->out_len += len + 1;
        return 0;
}

/* After a reply: write it, then carry on with what the peer sent meanwhile. */
static void conn_replied(Conn *c) {
        if (conn_flush(c) < 0)
                return conn_unlink_and_free(c);
        conn_process(c);
}

static yajl_gen reply_begin(const char *error) {
        yajl_gen g = yajl_gen_alloc(NULL);

        if (!g)
                return NULL;
        yajl_gen_map_open(g);
        if (error)
                gen_kv_str(g, "error", error);
        gen_key(g, "parameters");
        yajl_gen_map_open(g);
        return g;
}

/* Closes the reply begun by reply_begin() and queues it. */
static void reply_end(Conn *c, yajl_gen g) {
        int r = -ENOMEM;

        if (g) {
                yajl_gen_map_close(g);
                yajl_gen_map_close(g);
                r = conn_send(c, g);
                yajl_gen_free(g);
        }
        if (r < 0)
                c->close_after = true; /* out of memory: the peer sees the connection go */
}

static void reply_error(Conn *c, const char *error, const char *key, const char *value) {
        yajl_gen g = reply_begin(error);

        if (g && key)
                gen_kv_str(g, key, value);
        reply_end(c, g);
}

static void reply_error_int(Conn *c, const char *error, const char *key, long long value) {
        yajl_gen g = reply_begin(error);

        if (g)
                gen_kv_int(g, key, value);
        reply_end(c, g);
}

/* ---- methods ---- */

static const char *tree_string(yajl_val v, const char *key) {
        const char *path[] = { key, NULL };
        yajl_val s = v ? yajl_tree_get(v, path, yajl_t_string) : NULL;
        return s ? s->u.string : NULL;
}

/* 1 true, 0 false or absent, -EINVAL not a boolean. */
static int tree_bool(yajl_val v, const char *key, bool *ret) {
        const char *path[] = { key, NULL };
        yajl_val b = v ? yajl_tree_get(v, path, yajl_t_any) : NULL;

        *ret = false;
        if (!b || YAJL_IS_NULL(b))
                return 0;
        if (!YAJL_IS_TRUE(b) && !YAJL_IS_FALSE(b))
                return -EINVAL;
        *ret = YAJL_IS_TRUE(b);
        return 0;
}

/* The job names of parameter key: a strv (empty when absent), or -EINVAL. */
static int tree_jobs(yajl_val v, const char *key, char ***ret) {
        const char *path[] = { key, NULL };
        yajl_val a = v ? yajl_tree_get(v, path, yajl_t_any) : NULL;
        _cleanup_strv_free_ char **l = NULL;

        *ret = NULL;
        if (!a || YAJL_IS_NULL(a)) {
                *ret = calloc(1, sizeof(char *));
                return *ret ? 0 : -ENOMEM;
        }
        if (YAJL_IS_STRING(a)) {
                char *s = strdup(a->u.string);
                if (!s || strv_push(&l, s) < 0)
                        return free(s), -ENOMEM;
        } else if (YAJL_IS_ARRAY(a)) {
                for (size_t i = 0; i < a->u.array.len; i++) {
                        yajl_val e = a->u.array.values[i];
                        char *s;
                        if (!YAJL_IS_STRING(e))
                                return -EINVAL;
                        s = strdup(e->u.string);
                        if (!s || strv_push(&l, s) < 0)
                                return free(s), -ENOMEM;
                }
        } else
                return -EINVAL;
        if (!l && !(l = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret = TAKE_PTR(l);
        return 0;
}

/* NoSuchJob for the first name that is not a job; true if all are. configured: the
 * job must be in the configuration (not just in the journal). */
static bool check_jobs(Conn *c, char **jobs, bool configured) {
        for (char **p = jobs; *p; p++) {
                Job *j = manager_find_job(c->control->manager, *p);
                if (!j || (configured && (!j->config || j->removed))) {
                        reply_error(c, "io.dtrotated.NoSuchJob", "job", *p);
                        return false;
                }
        }
        return true;
}

static void gen_step(yajl_gen g, const StepStatus *st) {
        yajl_gen_map_open(g);
        gen_kv_str(g, "job", st->job);
        gen_kv_str(g, "environment", st->env);
        gen_kv_str(g, "action", st->what);
        gen_kv_str(g, "token", st->id);
        gen_kv_time(g, "at", st->at);
        gen_kv_int(g, "failures", st->failures);
        gen_kv_str(g, "error", st->error);
        gen_kv_bool(g, "failing", st->failing);
        yajl_gen_map_close(g);
}

static void method_status(Conn *c, yajl_val params) {
        Manager *m = c->control->manager;
        _cleanup_strv_free_ char **jobs = NULL;
        bool all;
        yajl_gen g;

        if (tree_jobs(params, "jobs", &jobs) < 0)
                return reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "jobs");
        if (!check_jobs(c, jobs, false))
                return;
        all = !jobs[0];
        g = reply_begin(NULL);
        if (!g)
                return reply_end(c, g);
        gen_kv_str(g, "version", VERSION);
        gen_key(g, "jobs");
        yajl_gen_array_open(g);
        for (Job *j = m->jobs; j; j = j->next) {
                JobStatus st;
                if (!all && !strv_contains(jobs, j->name))
                        continue;
                job_get_status(j, &st);
                yajl_gen_map_open(g);
                gen_kv_str(g, "job", st.name);
                gen_kv_str(g, "environment", st.env);
                gen_kv_str(g, "phase", st.phase);
                gen_kv_str(g, "state", st.state);
                gen_kv_str(g, "token", st.token_id);
                gen_kv_time(g, "created", st.created);
                gen_kv_time(g, "expires", st.expires);
                gen_kv_time(g, "rotated", st.rotated_at);
                gen_kv_str(g, "next_action", st.next_action);
                gen_kv_time(g, "next_at", st.next_at);
                gen_kv_int(g, "failures", st.failures);
                gen_kv_str(g, "error", st.error);
                gen_kv_bool(g, "failing", st.failing);
                gen_kv_bool(g, "permanent", st.permanent);
                gen_kv_bool(g, "expiring", st.expiring);
                gen_kv_bool(g, "configured", st.configured);
                gen_kv_bool(g, "rotate_requested", st.forced);
                gen_kv_bool(g, "revoke_now", st.revoke_now);
                yajl_gen_map_close(g);
        }
        yajl_gen_array_close(g);
        gen_key(g, "pending");
        yajl_gen_array_open(g);
        for (Retirement *r = m->retirements; r; r = r->next) {
                StepStatus st;
                if (!all && !strv_contains(jobs, strna(r->job)))
                        continue;
                retirement_get_status(r, &st);
                gen_step(g, &st);
        }
        for (Scan *s = m->scans; s; s = s->next) {
                StepStatus st;
                if (!all && !strv_contains(jobs, s->job))
                        continue;
                scan_get_status(s, &st);
                gen_step(g, &st);
        }
        yajl_gen_array_close(g);
        reply_end(c, g);
}

static void gen_results(yajl_gen g, Pending *p) {
        gen_key(g, "results");
        yajl_gen_array_open(g);
        for (size_t i = 0; i < p->n; i++) {
                yajl_gen_map_open(g);
                gen_kv_str(g, "job", p->slots[i].job);
                if (p->slots[i].error < 0)
                        gen_kv_str(g, "error", p->slots[i].message ?: strerror(-p->slots[i].error));
                yajl_gen_map_close(g);
        }
        yajl_gen_array_close(g);
}

static Pending *pending_free(Pending *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n; i++) {
                free(p->slots[i].job);
                free(p->slots[i].message);
        }
        free(p->slots);
        free(p);
        return NULL;
}

/* The reply of a pending request, to its connection if it is still there. in_dispatch:
 * called while the request is being handled (conn_process() writes the reply). */
static void pending_reply(Pending *p, bool in_dispatch) {
        Conn *c = TAKE_PTR(p->conn);
        bool failed = false;
        yajl_gen g;

        if (!c)
                return;
        c->pending = NULL;
        for (size_t i = 0; i < p->n; i++)
                if (p->slots[i].error < 0)
                        failed = true;
        g = reply_begin(!failed ? NULL :
                        streq(p->method, "restore") ? "io.dtrotated.RestoreRefused" : "io.dtrotated.RotationFailed");
        if (g)
                gen_results(g, p);
        reply_end(c, g);
        if (!in_dispatch)
                conn_replied(c);
}

static void pending_slot_done(PendingSlot *s, int error, const char *message) {
        Pending *p = s->pending;

        if (s->error != 1)
                return; /* answered twice: a bug elsewhere; keep the first */
        s->error = error < 0 ? error : 0;
        if (error < 0 && message)
                s->message = strdup(message);
        if (--p->left > 0)
                return;
        pending_reply(p, false);
        pending_free(p);
}

static void on_job_request_done(int error, const char *message, void *userdata) {
        pending_slot_done(userdata, error, message);
}

static Pending *pending_new(Conn *c, const char *method, char **jobs) {
        Pending *p = calloc(1, sizeof(*p));
        size_t n = strv_length(jobs);

        if (!p)
                return NULL;
        p->method = method;
        p->slots = calloc(n ?: 1, sizeof(PendingSlot));
        if (!p->slots)
                return pending_free(p);
        for (size_t i = 0; i < n; i++) {
                p->slots[i] = (PendingSlot) { .pending = p, .error = 1, .job = strdup(jobs[i]) };
                p->n++;
                if (!p->slots[i].job)
                        return pending_free(p);
        }
        p->left = n;
        p->conn = c;
        return p;
}

/* Rotate, RevokeNow, Restore: starts the job requests; the reply waits for them unless
 * wait is false. */
static void start_job_requests(Conn *c, const char *method, char **jobs, bool wait) {
        Manager *m = c->control->manager;
        Pending *p;
        size_t sync_done = 0;

        if (m->stopping)
                return reply_error(c, "io.dtrotated.ShuttingDown", NULL, NULL);
        p = pending_new(c, method, jobs);
        if (!p)
                return reply_end(c, NULL);
        c->pending = p;
        /* Counted down as requests are started, so that an answer cannot free p early. */
        p->left++;
        for (size_t i = 0; i < p->n; i++) {
                PendingSlot *s = &p->slots[i];
                Job *j = manager_find_job(m, s->job);
                _cleanup_free_ char *refusal = NULL;
                int r;

                log_job(streq(method, "rotate") ? LOG_NOTICE : LOG_WARNING, s->job, MSGID_CONTROL, NULL, NULL, 0,
                        "%s requested through the control socket by uid %u (pid %d)", method,
                        (unsigned) c->uid, (int) c->pid);
                if (!j)
                        r = -ENOENT;
                else if (streq(method, "restore"))
                        r = job_restore(j, on_job_request_done, s, &refusal);
                else
                        r = job_rotate_now(j, streq(method, "revoke-now"), on_job_request_done, s);
                if (r < 0) {
                        s->error = r;
                        s->message = refusal ? TAKE_PTR(refusal) :
                                     r == -ENOENT ? strdup("not in the configuration") : NULL;
                        p->left--;
                        sync_done++;
                }
        }
        if (!wait) {
                /* Answer now; the jobs' answers go nowhere. */
                c->pending = NULL;
                p->conn = NULL;
                {
                        yajl_gen g = reply_begin(sync_done ? (streq(method, "restore") ? "io.dtrotated.RestoreRefused"
                                                                                         : "io.dtrotated.RotationFailed")
                                                           : NULL);
                        if (g)
                                gen_results(g, p);
                        reply_end(c, g);
                }
        }
        if (--p->left == 0) {
                pending_reply(p, true);
                pending_free(p);
        }
}

static void method_rotate(Conn *c, yajl_val params, const char *method) {
        _cleanup_strv_free_ char **jobs = NULL;
        bool wait = true;

        if (tree_jobs(params, streq(method, "rotate") ? "jobs" : "job", &jobs) < 0 || !jobs[0])
                return reply_error(c, "org.varlink.service.InvalidParameter", "parameter",
                                   streq(method, "rotate") ? "jobs" : "job");
        if (!streq(method, "rotate") && jobs[1])
                return reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "job");
        if (!streq(method, "restore") && params) {
                const char *path[] = { "wait", NULL };
                yajl_val w = yajl_tree_get(params, path, yajl_t_any);
                if (w && !YAJL_IS_NULL(w) && tree_bool(params, "wait", &wait) < 0)
                        return reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "wait");
                if (!w || YAJL_IS_NULL(w))
                        wait = true;
        }
        if (!check_jobs(c, jobs, true))
                return;
        /* No reply wanted: nothing to wait for either. */
        start_job_requests(c, method, jobs, wait && !c->oneway);
}

static void method_retry(Conn *c, yajl_val params) {
        Manager *m = c->control->manager;
        _cleanup_strv_free_ char **jobs = NULL;
        bool all;
        long long n = 0;
        yajl_gen g;

        if (tree_jobs(params, "jobs", &jobs) < 0)
                return reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "jobs");
        if (tree_bool(params, "all", &all) < 0 || (all && jobs[0]) || (!all && !jobs[0]))
                return reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "all");
        if (!check_jobs(c, jobs, false))
                return;
        log_notice("control: retry of %s requested by uid %u (pid %d)", all ? "every failing step" : "failing steps",
                   (unsigned) c->uid, (int) c->pid);
        for (Job *j = m->jobs; j; j = j->next)
                if (all || strv_contains(jobs, j->name))
                        n += job_retry_now(j);
        for (Retirement *r = m->retirements; r; r = r->next)
                if (all || (r->job && strv_contains(jobs, r->job)))
                        n += retirement_retry_now(r);
        for (Scan *s = m->scans; s; s = s->next)
                if (all || strv_contains(jobs, s->job))
                        n += scan_retry_now(s);
        g = reply_begin(NULL);
        if (g)
                gen_kv_int(g, "retried", n);
        reply_end(c, g);
}

static void method_reload(Conn *c) {
        _cleanup_strv_free_ char **problems = NULL;
        yajl_gen g;
        int r;

        log_notice("control: reload requested by uid %u (pid %d)", (unsigned) c->uid, (int) c->pid);
        r = manager_reload_full(c->control->manager, &problems);
        g = reply_begin(r < 0 ? "io.dtrotated.ConfigurationError" : NULL);
        if (g) {
                gen_key(g, "problems");
                if (r < 0 && !problems) {
                        char *l[] = { (char *) strerror(-r), NULL };
                        gen_strv(g, l);
                } else
                        gen_strv(g, problems);
        }
        reply_end(c, g);
}

static void method_get_info(Conn *c) {
        yajl_gen g = reply_begin(NULL);
        char *interfaces[] = { (char *) "org.varlink.service", (char *) "io.dtrotated", NULL };

        if (g) {
                gen_kv_str(g, "vendor", "dtrotated");
                gen_kv_str(g, "product", "dtrotated");
                gen_kv_str(g, "version", VERSION);
                gen_kv_str(g, "url", "man:dtrotated(8)");
                gen_key(g, "interfaces");
                gen_strv(g, interfaces);
        }
        reply_end(c, g);
}

static void method_get_interface_description(Conn *c, yajl_val params) {
        const char *name = tree_string(params, "interface");
        const char *text = !name ? NULL :
                           streq(name, "io.dtrotated") ? interface_description :
                           streq(name, "org.varlink.service") ? service_description : NULL;
        yajl_gen g;

        if (!name)
                return reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "interface");
        if (!text)
                return reply_error(c, "org.varlink.service.InterfaceNotFound", "interface", name);
        g = reply_begin(NULL);
        if (g)
                gen_kv_str(g, "description", text);
        reply_end(c, g);
}

/* Handles one NUL-terminated message. */
static void conn_dispatch(Conn *c, const char *msg) {
        char err[256] = "";
        yajl_val v = yajl_tree_parse(msg, err, sizeof(err)), params;
        const char *method, *ppath[] = { "parameters", NULL };
        bool oneway = false;

        if (!v || !YAJL_IS_OBJECT(v) || !(method = tree_string(v, "method"))) {
                /* Not a Varlink call: say so and hang up, there is no telling what follows. */
                reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "method");
                c->close_after = true;
                yajl_tree_free(v);
                return;
        }
        params = yajl_tree_get(v, ppath, yajl_t_any);
        if (params && !YAJL_IS_OBJECT(params) && !YAJL_IS_NULL(params)) {
                reply_error(c, "org.varlink.service.InvalidParameter", "parameter", "parameters");
                yajl_tree_free(v);
                return;
        }
        (void) tree_bool(v, "oneway", &oneway);
        c->oneway = oneway;
        if (streq(method, "io.dtrotated.Status"))
                method_status(c, params);
        else if (streq(method, "io.dtrotated.Rotate"))
                method_rotate(c, params, "rotate");
        else if (streq(method, "io.dtrotated.RevokeNow"))
                method_rotate(c, params, "revoke-now");
        else if (streq(method, "io.dtrotated.Restore"))
                method_rotate(c, params, "restore");
        else if (streq(method, "io.dtrotated.Retry"))
                method_retry(c, params);
        else if (streq(method, "io.dtrotated.Reload"))
                method_reload(c);
        else if (streq(method, "org.varlink.service.GetInfo"))
                method_get_info(c);
        else if (streq(method, "org.varlink.service.GetInterfaceDescription"))
                method_get_interface_description(c, params);
        else
                reply_error(c, "org.varlink.service.MethodNotFound", "method", method);
        yajl_tree_free(v);
        if (oneway && !c->pending) {
                /* No reply wanted: drop what was queued for it. */
                free(c->out);
                c->out = NULL;
                c->out_len = c->out_done = 0;
        }
}

/* Handles complete messages while no reply is owed, then decides what to wait for. */
static void conn_process(Conn *c) {
        for (;;) {
                char *nul;
                size_t n;

                if (c->pending || c->out_len > 0 || c->close_after)
                        break;
                nul = memchr(c->in, 0, c->in_len);
                if (!nul) {
                        if (c->in_len >= CONTROL_MESSAGE_MAX) {
                                reply_error_int(c, "io.dtrotated.MessageTooLarge", "limit", CONTROL_MESSAGE_MAX);
                                c->close_after = true;
                                if (conn_flush(c) < 0)
                                        return conn_unlink_and_free(c);
                        }
                        break;
                }
                n = (size_t) (nul - c->in) + 1;
                conn_dispatch(c, c->in);
                memmove(c->in, c->in + n, c->in_len - n);
                c->in_len -= n;
                if (conn_flush(c) < 0)
                        return conn_unlink_and_free(c);
        }
        if (c->out_len == 0 && !c->pending && (c->close_after || c->eof))
                return conn_unlink_and_free(c);
        conn_update_events(c);
}

static void conn_update_events(Conn *c) {
        uint32_t ev = 0;

        if (c->out_len > 0)
                ev = EPOLLOUT;
        else if (!c->pending && !c->eof && !c->close_after)
                ev = EPOLLIN;
        /* Waiting for a job: nothing; EPOLLHUP still says when the peer is gone. */
        (void) sd_event_source_set_io_events(c->io, ev);
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;

        if (revents & EPOLLOUT) {
                if (conn_flush(c) < 0) {
                        conn_unlink_and_free(c);
                        return 0;
                }
                conn_process(c);
                return 0;
        }
        if (revents & EPOLLIN) {
                ssize_t k = recv(c->fd, c->in + c->in_len, CONTROL_MESSAGE_MAX - c->in_len, MSG_DONTWAIT);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0;
                if (k < 0) {
                        conn_unlink_and_free(c);
                        return 0;
                }
                if (k == 0)
                        c->eof = true;
                c->in_len += (size_t) k;
                conn_process(c);
                return 0;
        }
        if (revents & (EPOLLHUP | EPOLLERR))
                conn_unlink_and_free(c);
        return 0;
}

/* Root, the daemon's own user, and members of control_group (primary or supplementary
 * group of the peer at connect time). */
static bool peer_allowed(Control *ctl, int fd, const struct ucred *cred) {
        gid_t groups[256];
        socklen_t len = sizeof(groups);

        if (cred->uid == 0 || cred->uid == geteuid())
                return true;
        if (ctl->gid == (gid_t) -1)
                return false;
        if (cred->gid == ctl->gid)
                return true;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
                return false; /* more than 256 groups, or an old kernel: refuse */
        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                if (groups[i] == ctl->gid)
                        return true;
        return false;
}

/* A refusal written straight away, best effort, before the connection is closed. */
static void refuse(int fd, const char *error, long long limit) {
        char buf[160];
        int n = limit ? snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"parameters\":{\"limit\":%lld}}", error, limit)
                      : snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"parameters\":{}}", error);

        if (n > 0 && (size_t) n < sizeof(buf))
                (void) send(fd, buf, (size_t) n + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Control *ctl = userdata;
        /* cppcheck-suppress nullPointer ; accept4() takes NULL for the peer's address */
        _cleanup_close_ int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        struct ucred cred;
        socklen_t len = sizeof(cred);
        Conn *c;
        int r;

        if (cfd < 0)
                return 0;
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                log_warning_errno(-errno, "control: cannot learn who connected: %m; refused");
                return 0;
        }
        if (!peer_allowed(ctl, cfd, &cred)) {
                log_warning("control: refused a connection from uid %u (pid %d): neither root nor in control_group",
                            (unsigned) cred.uid, (int) cred.pid);
                refuse(cfd, "io.dtrotated.PermissionDenied", 0);
                return 0;
        }
        if (ctl->n_conns >= CONTROL_CONNECTIONS_MAX) {
                if (!ctl->full_reported)
                        log_warning("control: %d connections are open; refusing more", CONTROL_CONNECTIONS_MAX);
                ctl->full_reported = true;
                refuse(cfd, "io.dtrotated.TooManyConnections", CONTROL_CONNECTIONS_MAX);
                return 0;
        }
        ctl->full_reported = false;
        c = calloc(1, sizeof(*c));
        if (!c || !(c->in = malloc(CONTROL_MESSAGE_MAX))) {
                free(c);
                return 0;
        }
        c->control = ctl;
        c->uid = cred.uid;
        c->pid = cred.pid;
        /* cppcheck-suppress unreadVariable ; TAKE_FD() disarms the _cleanup_close_ */
        c->fd = TAKE_FD(cfd);
        r = sd_event_add_io(ctl->manager->event, &c->io, c->fd, EPOLLIN, on_conn_io, c);
        if (r < 0) {
                log_warning_errno(r, "control: cannot watch a connection: %m");
                conn_free(c);
                return 0;
        }
        (void) sd_event_source_set_description(c->io, "control-connection");
        c->next = ctl->conns;
        ctl->conns = c;
        ctl->n_conns++;
        return 0;
}

/* ---- the listening socket ---- */

/* A socket file nobody listens on (a crash left it) is replaced; one that answers
 * belongs to another daemon and is left alone. */
static int remove_stale(const char *path, const struct sockaddr_un *sa, socklen_t salen) {
        struct stat st;
        _cleanup_close_ int fd = -1;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return log_error_errno(-EEXIST, "control: %s exists and is %s, not a socket; not replacing it",
                                       path, file_type_name(st.st_mode));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *) sa, salen) == 0)
                return log_error_errno(-EADDRINUSE, "control: another process listens on %s; not replacing it", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return log_error_errno(-errno, "control: cannot remove the stale socket %s: %m", path);
        return 0;
}

int control_new(Manager *m, const char *path, gid_t gid, Control **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t salen;
        Control *ctl;
        mode_t mask;
        int r;

        *ret = NULL;
        if (strlen(path) >= sizeof(sa.sun_path))
                return log_error_errno(-ENAMETOOLONG, "control: socket path %s is too long", path);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);

        ctl = calloc(1, sizeof(*ctl));
        if (!ctl || !(ctl->path = strdup(path))) {
                free(ctl);
                return log_error_errno(-ENOMEM, "Out of memory");
        }
        ctl->manager = m;
        ctl->gid = gid;
        ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (ctl->fd < 0) {
                r = log_error_errno(-errno, "control: cannot create a socket: %m; no control socket");
                goto fail_quiet;
        }
        r = remove_stale(path, &sa, salen);
        if (r < 0)
                goto fail_quiet;
        /* 0660 from the start: no moment in which others could connect. */
        mask = umask(0117);
        r = bind(ctl->fd, (struct sockaddr *) &sa, salen) < 0 ? -errno : 0;
        (void) umask(mask);
        if (r == -ENOENT) {
                /* Outside the unit (a manual run, tests) the default directory is missing. */
                log_warning("control: the directory of %s does not exist; no control socket (the unit's RuntimeDirectory=dtrotated creates it; control_socket = \"\" turns this off)",
                            path);
                goto fail_quiet;
        }
        if (r < 0) {
                log_error_errno(r, "control: cannot bind %s: %m; no control socket", path);
                goto fail_quiet;
        }
        if (gid != (gid_t) -1 && chown(path, (uid_t) -1, gid) < 0)
                log_warning_errno(-errno, "control: cannot give %s to control_group (gid %u): %m; only root and the daemon's user can connect (see CONTROL INTERFACE in dtrotated(8))",
                                  path, (unsigned) gid);
        if (listen(ctl->fd, 16) < 0) {
                r = log_error_errno(-errno, "control: cannot listen on %s: %m", path);
                goto fail_unlink;
        }
        r = sd_event_add_io(m->event, &ctl->io, ctl->fd, EPOLLIN, on_accept, ctl);
        if (r < 0) {
                log_error_errno(r, "control: cannot watch %s: %m", path);
                goto fail_unlink;
        }
        (void) sd_event_source_set_description(ctl->io, "control");
        log_debug("control: listening on %s", path);
        *ret = ctl;
        return 0;

fail_unlink:
        (void) unlink(path);
        goto fail_quiet;
fail_quiet:
        if (ctl->fd >= 0)
                (void) close(ctl->fd);
        free(ctl->path);
        free(ctl);
        return r;
}

Control *control_free(Control *ctl) {
        if (!ctl)
                return NULL;
        while (ctl->conns) {
                Conn *c = ctl->conns;
                ctl->conns = c->next;
                conn_free(c);
        }
        sd_event_source_disable_unref(ctl->io);
        if (ctl->fd >= 0) {
                (void) close(ctl->fd);
                (void) unlink(ctl->path);
        }
        free(ctl->path);
        free(ctl);
        return NULL;
}
