/* SPDX-License-Identifier: MIT */
/* dtrotatectl: asks a running dtrotated through its control socket (dtrotated(8),
 * CONTROL INTERFACE) to show its status, rotate, revoke now, restore, retry or reload.
 * Without a running daemon, `status` reads the journal read-only. See dtrotatectl(8). */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "dtrotated-config.h"
#include "dtrotated-journal.h"
#include "dtrotated-log.h"
#include "dtrotated-util.h"

#define EXIT_FAILING  1   /* status: a job or step is failing; other commands: failed */
#define EXIT_EXPIRING 2   /* status: a token expires before its rotation can succeed */
#define EXIT_DOWN     3   /* the daemon is not running */
#define EXIT_USAGE_   64
#define MESSAGE_MAX   (16 * 1024 * 1024) /* replies: a status of many thousand jobs */
#define NO_TIME       (-1LL)

typedef struct Args {
        const char *socket;
        const char *config;
        const char *command;
        char **names;                /* the command's JOB arguments */
        bool json, no_wait, all;
} Args;

static void usage(FILE *f) {
        fprintf(f,
                "Usage: dtrotatectl [-s SOCKET] [-c CONFIG] COMMAND [ARGS]\n"
                "\n"
                "Commands:\n"
                "  status [JOB...] [--json]  jobs, their tokens and schedules, pending steps\n"
                "  rotate JOB... [--no-wait] rotate now, whatever the schedule\n"
                "  revoke-now JOB [--no-wait] rotate, then revoke and delete the old token at once\n"
                "  restore JOB               put the previous token back (grace period)\n"
                "  retry JOB...|--all        clear the backoff of failing steps, try them now\n"
                "  reload                    reload the configuration, print its problems\n"
                "\n"
                "  -s, --socket SOCKET  the daemon's control socket (default: control_socket\n"
                "                       of the configuration, else " DEFAULT_CONTROL_SOCKET ")\n"
                "  -c, --config FILE    configuration (default " DEFAULT_CONFIG_FILE ")\n"
                "  -h, --help           print this help\n"
                "  -V, --version        print the version\n"
                "\n"
                "status exits 0 when all is healthy, 1 when a job or step is failing, 2 when a\n"
                "token expires before its rotation can succeed, 3 when dtrotated is not running.\n"
                "See dtrotatectl(8).\n");
}

/* ---- the model a status prints, from the daemon or from the journal ---- */

typedef struct Row {
        char *job, *env, *phase, *state, *token, *next_action, *error;
        long long created, expires, rotated, next_at, failures;
        usec_t created_us, expires_us, rotated_us; /* from the journal, for the schedule */
        bool failing, permanent, expiring, configured, rotate_requested, revoke_now, held;
} Row;

typedef struct Step {
        char *job, *env, *action, *token, *error;
        long long at, failures;
        bool failing;
} Step;

typedef struct Model {
        bool running;
        char *version;
        Row *rows;
        size_t n_rows;
        Step *steps;
        size_t n_steps;
} Model;

static void model_done(Model *m) {
        for (size_t i = 0; i < m->n_rows; i++) {
                Row *r = &m->rows[i];
                free(r->job), free(r->env), free(r->phase), free(r->state), free(r->token);
                free(r->next_action), free(r->error);
        }
        for (size_t i = 0; i < m->n_steps; i++) {
                Step *s = &m->steps[i];
                free(s->job), free(s->env), free(s->action), free(s->token), free(s->error);
        }
        free(m->rows);
        free(m->steps);
        free(m->version);
}

static Row *model_row(Model *m, const char *job, bool create) {
        Row *n;

        for (size_t i = 0; i < m->n_rows; i++)
                if (streq(m->rows[i].job, job))
                        return &m->rows[i];
        if (!create)
                return NULL;
        n = realloc(m->rows, (m->n_rows + 1) * sizeof(Row));
        if (!n)
                return NULL;
        m->rows = n;
        n = &m->rows[m->n_rows];
        *n = (Row) { .job = strdup(job), .created = NO_TIME, .expires = NO_TIME, .rotated = NO_TIME,
                     .next_at = NO_TIME, .configured = true };
        if (!n->job)
                return NULL;
        m->n_rows++;
        return n;
}

static Step *model_step(Model *m, const char *env, const char *token, const char *action, bool create) {
        Step *n;

        for (size_t i = 0; i < m->n_steps; i++)
                if (streq_ptr(m->steps[i].env, env) && streq_ptr(m->steps[i].token, token) &&
                    (streq(action, "scan") == streq_ptr(m->steps[i].action, "scan")))
                        return &m->steps[i];
        if (!create)
                return NULL;
        n = realloc(m->steps, (m->n_steps + 1) * sizeof(Step));
        if (!n)
                return NULL;
        m->steps = n;
        n = &m->steps[m->n_steps];
        *n = (Step) { .env = strdup(env), .token = strdup(token), .action = strdup(action), .at = NO_TIME };
        if (!n->env || !n->token || !n->action)
                return NULL;
        m->n_steps++;
        return n;
}

static void set_str(char **p, const char *v) {
        free(*p);
        *p = v ? strdup(v) : NULL;
}

static long long secs(usec_t t) {
        return t == 0 || t == USEC_INFINITY ? NO_TIME : (long long) (t / USEC_PER_SEC);
}

/* ---- the journal, read-only (the daemon is down) ---- */

static int on_record(const JournalRecord *r, void *userdata) {
        Model *m = userdata;
        Row *row;
        Step *st;

        switch (r->type) {
        case JOURNAL_JOB:
        case JOURNAL_ROTATED:
        case JOURNAL_RESTORED:
        case JOURNAL_CREATE:
        case JOURNAL_DELIVERED:
        case JOURNAL_RESTORE:
                if (!(row = model_row(m, r->job, true)))
                        return -ENOMEM;
                if (r->env && !row->env)
                        set_str(&row->env, r->env);
                if (r->type == JOURNAL_CREATE) {
                        set_str(&row->phase, "intent");
                        break;
                }
                if (r->type == JOURNAL_DELIVERED) {
                        set_str(&row->phase, "delivered");
                        break;
                }
                if (r->type == JOURNAL_RESTORE) {
                        set_str(&row->phase, "restore");
                        break;
                }
                set_str(&row->phase, "idle");
                set_str(&row->token, r->id);
                row->created = secs(r->created);
                row->expires = secs(r->expires);
                row->created_us = r->created;
                row->expires_us = r->expires;
                if (r->type != JOURNAL_JOB && r->at) {
                        row->rotated = secs(r->at);
                        row->rotated_us = r->at;
                }
                /* A restore holds the job until a rotation (the daemon's replay, alike). */
                if (r->type != JOURNAL_JOB)
                        row->held = r->type == JOURNAL_RESTORED;
                break;
        case JOURNAL_FORGET:
                if ((row = model_row(m, r->job, false)))
                        row->configured = false; /* printed as "removed" */
                break;
        case JOURNAL_RETIRE:
                if (!(st = model_step(m, r->env, r->id, "revoke", true)))
                        return -ENOMEM;
                if (r->job && !st->job)
                        set_str(&st->job, r->job);
                st->at = secs(r->at) == NO_TIME ? 0 : secs(r->at);
                break;
        case JOURNAL_REVOKED:
                if ((st = model_step(m, r->env, r->id, "revoke", false))) {
                        set_str(&st->action, "delete");
                        st->at = secs(r->at) == NO_TIME ? 0 : secs(r->at);
                }
                break;
        case JOURNAL_DELETED:
        case JOURNAL_UNRETIRE:
                if ((st = model_step(m, r->env, r->id, "revoke", false)))
                        set_str(&st->action, "done");
                break;
        case JOURNAL_SCAN:
                if (!(st = model_step(m, r->env, r->name, "scan", true)))
                        return -ENOMEM;
                if (!st->job)
                        set_str(&st->job, r->job);
                st->at = secs(r->until);
                break;
        case JOURNAL_SCANNED:
                for (size_t i = 0; i < m->n_steps; i++)
                        if (streq_ptr(m->steps[i].action, "scan") && streq_ptr(m->steps[i].job, r->job) &&
                            streq_ptr(m->steps[i].env, r->env))
                                set_str(&m->steps[i].action, "done");
                break;
        default:
                break;
        }
        return 0;
}

static int model_from_journal(Model *m, const Config *c) {
        _cleanup_free_ char *error = NULL;
        int r = journal_open_readonly(c->state_directory, on_record, m, &error);

        if (r == -ENOENT) {
                fprintf(stderr, "dtrotatectl: no journal in %s yet\n", c->state_directory);
                return 0;
        }
        if (r < 0) {
                if (error)
                        fprintf(stderr, "dtrotatectl: %s\n", error);
                else
                        fprintf(stderr, "dtrotatectl: cannot read the journal in %s: %s\n", c->state_directory,
                                strerror(-r));
                return r;
        }
        for (size_t i = 0; i < m->n_rows; i++) {
                Row *row = &m->rows[i];
                const JobConfig *jc = config_find_job(c, row->job);

                if (!row->phase)
                        set_str(&row->phase, "new");
                if (!jc || !row->configured || !streq(row->phase, "idle") || !row->created_us)
                        continue;
                /* What the daemon would do next, by the configuration's schedule. */
                if (row->held)
                        set_str(&row->next_action, "held");
                else {
                        set_str(&row->next_action, "rotate");
                        row->next_at = secs(job_config_rotation_due(jc, row->created_us, row->expires_us,
                                                                    row->rotated_us));
                }
        }
        return 0;
}

/* ---- talking to the daemon ---- */

static int connect_socket(const char *path, int *ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        /* cppcheck-suppress unreadVariable ; TAKE_FD() disarms the _cleanup_close_ */
        *ret = TAKE_FD(fd);
        return 0;
}

/* Sends the generator's document and a NUL; reads the NUL-terminated reply. */
static int call(int fd, yajl_gen g, yajl_val *ret) {
        const unsigned char *buf;
        _cleanup_free_ char *in = NULL;
        size_t len, n = 0, size = 0;
        char err[256] = "";
        int send_error = 0;

        if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
                return -EINVAL;
        for (size_t done = 0; done < len + 1;) {
                ssize_t k = send(fd, done < len ? buf + done : (const unsigned char *) "",
                                 done < len ? len - done : 1, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        /* The daemon may have refused us (and said why) before reading. */
                        send_error = -errno;
                        break;
                }
                done += (size_t) k;
        }
        for (;;) {
                ssize_t k;
                char *nul;
                if (n == size) {
                        char *p;
                        if (size >= MESSAGE_MAX)
                                return -EMSGSIZE;
                        size = size ? size * 2 : 65536;
                        if (!(p = realloc(in, size)))
                                return -ENOMEM;
                        in = p;
                }
                k = recv(fd, in + n, size - n, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return send_error ?: -errno;
                if (k == 0)
                        return send_error ?: -ECONNRESET;
                nul = memchr(in + n, 0, (size_t) k);
                n += (size_t) k;
                if (nul)
                        break;
        }
        *ret = yajl_tree_parse(in, err, sizeof(err));
        if (!*ret || !YAJL_IS_OBJECT(*ret)) {
                yajl_tree_free(*ret);
                *ret = NULL;
                fprintf(stderr, "dtrotatectl: the daemon's answer is not JSON: %s\n", err);
                return -EBADMSG;
        }
        return 0;
}

static yajl_val get(yajl_val v, const char *key, yajl_type t) {
        const char *path[] = { key, NULL };
        return v ? yajl_tree_get(v, path, t) : NULL;
}

static const char *get_str(yajl_val v, const char *key) {
        yajl_val s = get(v, key, yajl_t_string);
        return s ? s->u.string : NULL;
}

static long long get_int(yajl_val v, const char *key) {
        yajl_val i = get(v, key, yajl_t_number);
        return i && YAJL_IS_INTEGER(i) ? YAJL_GET_INTEGER(i) : NO_TIME;
}

static bool get_bool(yajl_val v, const char *key) {
        yajl_val b = get(v, key, yajl_t_any);
        return b && YAJL_IS_TRUE(b);
}

static void gen_str(yajl_gen g, const char *s) {
        if (s)
                yajl_gen_string(g, (const unsigned char *) s, strlen(s));
        else
                yajl_gen_null(g);
}

static void gen_kv_str(yajl_gen g, const char *key, const char *v) {
        gen_str(g, key);
        gen_str(g, v);
}

static void gen_kv_int(yajl_gen g, const char *key, long long v) {
        gen_str(g, key);
        if (v == NO_TIME)
                yajl_gen_null(g);
        else
                yajl_gen_integer(g, v);
}

static void gen_kv_bool(yajl_gen g, const char *key, bool v) {
        gen_str(g, key);
        yajl_gen_bool(g, v);
}

static yajl_gen request(const char *method) {
        yajl_gen g = yajl_gen_alloc(NULL);

        if (!g)
                return NULL;
        yajl_gen_map_open(g);
        gen_kv_str(g, "method", method);
        gen_str(g, "parameters");
        yajl_gen_map_open(g);
        return g;
}

static void gen_names(yajl_gen g, const char *key, char **names) {
        gen_str(g, key);
        yajl_gen_array_open(g);
        for (char **p = names; p && *p; p++)
                gen_str(g, *p);
        yajl_gen_array_close(g);
}

/* Sends the request begun by request(); the reply's parameters in *ret_params, its error
 * (or NULL) in *ret_error; both point into *ret. */
static int finish_call(int fd, yajl_gen g, yajl_val *ret, const char **ret_error, yajl_val *ret_params) {
        int r;

        if (!g)
                return -ENOMEM;
        yajl_gen_map_close(g);
        yajl_gen_map_close(g);
        r = call(fd, g, ret);
        yajl_gen_free(g);
        if (r < 0)
                return r;
        *ret_error = get_str(*ret, "error");
        *ret_params = get(*ret, "parameters", yajl_t_object);
        return 0;
}

/* Errors any method can answer with; true if handled (printed). */
static bool common_error(const char *error, yajl_val params) {
        if (streq(error, "io.dtrotated.NoSuchJob"))
                fprintf(stderr, "dtrotatectl: no such job: %s\n", strna(get_str(params, "job")));
        else if (streq(error, "io.dtrotated.PermissionDenied"))
                fprintf(stderr, "dtrotatectl: permission denied: only root and members of control_group may use the control socket\n");
        else if (streq(error, "io.dtrotated.TooManyConnections"))
                fprintf(stderr, "dtrotatectl: the daemon has too many control connections open; try again\n");
        else if (streq(error, "io.dtrotated.ShuttingDown"))
                fprintf(stderr, "dtrotatectl: the daemon is shutting down\n");
        else if (streq(error, "io.dtrotated.MessageTooLarge"))
                fprintf(stderr, "dtrotatectl: the request is too large\n");
        else
                return false;
        return true;
}

/* ---- printing ---- */

static void format_time(char *buf, size_t size, long long t) {
        struct tm tm;
        time_t tt = (time_t) t;

        if (t == NO_TIME || !gmtime_r(&tt, &tm))
                snprintf(buf, size, "-");
        else
                strftime(buf, size, "%Y-%m-%d %H:%M", &tm);
}

static void format_when(char *buf, size_t size, long long t, long long now) {
        char d[FORMAT_DURATION_MAX];

        if (t == NO_TIME)
                snprintf(buf, size, "-");
        else if (t <= now)
                snprintf(buf, size, "now");
        else
                snprintf(buf, size, "in %s", format_duration(d, sizeof(d), (usec_t) (t - now) * USEC_PER_SEC));
}

static int width(int w, const char *s) {
        int l = (int) strlen(s);
        return l > w ? l : w;
}

#define ERROR_SHOWN 100 /* characters of an error in the table; --json has all */

static void print_table(const Model *m) {
        long long now = (long long) time(NULL);
        int w[9] = { 3, 11, 5, 5, 7, 7, 4, 4, 7 };
        static const char *const head[] = { "JOB", "ENVIRONMENT", "PHASE", "TOKEN", "CREATED", "EXPIRES",
                                            "NEXT", "WHEN", "RETRIES" };
        char created[32], expires[32], when[64], retries[32], next[64];

        for (int pass = 0; pass < 2; pass++) {
                if (pass == 1) {
                        printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", w[0], head[0], w[1], head[1],
                               w[2], head[2], w[3], head[3], w[4], head[4], w[5], head[5], w[6], head[6], w[7], head[7],
                               w[8], head[8], "LAST ERROR");
                }
                for (size_t i = 0; i < m->n_rows; i++) {
                        const Row *r = &m->rows[i];
                        const char *phase = r->configured ? strna(r->phase) : "removed";
                        format_time(created, sizeof(created), r->created);
                        if (r->expires == NO_TIME && r->token)
                                snprintf(expires, sizeof(expires), "never");
                        else
                                format_time(expires, sizeof(expires), r->expires);
                        format_when(when, sizeof(when), r->next_at, now);
                        snprintf(retries, sizeof(retries), "%lld", r->failures > 0 ? r->failures : 0);
                        snprintf(next, sizeof(next), "%s%s", r->next_action ?: "-", r->revoke_now ? " (revoke-now)" : "");
                        if (pass == 0) {
                                w[0] = width(w[0], r->job);
                                w[1] = width(w[1], r->env ?: "-");
                                w[2] = width(w[2], phase);
                                w[3] = width(w[3], r->token ?: "-");
                                w[4] = width(w[4], created);
                                w[5] = width(w[5], expires);
                                w[6] = width(w[6], next);
                                w[7] = width(w[7], when);
                                w[8] = width(w[8], retries);
                                continue;
                        }
                        printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %.*s%s\n", w[0], r->job,
                               w[1], r->env ?: "-", w[2], phase, w[3], r->token ?: "-", w[4], created, w[5], expires,
                               w[6], next, w[7], when, w[8], retries, ERROR_SHOWN,
                               r->error ?: (r->expiring ? "" : "-"),
                               r->expiring ? (r->error ? " (EXPIRES BEFORE ITS ROTATION CAN SUCCEED)"
                                                       : "EXPIRES BEFORE ITS ROTATION CAN SUCCEED") : "");
                }
        }

        {
                int v[6] = { 7, 3, 11, 5, 4, 7 };
                size_t shown = 0;
                for (size_t i = 0; i < m->n_steps; i++)
                        if (!streq_ptr(m->steps[i].action, "done"))
                                shown++;
                if (!shown)
                        return;
                printf("\n");
                for (int pass = 0; pass < 2; pass++) {
                        if (pass == 1)
                                printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", v[0], "PENDING", v[1], "JOB", v[2],
                                       "ENVIRONMENT", v[3], "TOKEN", v[4], "WHEN", v[5], "RETRIES", "LAST ERROR");
                        for (size_t i = 0; i < m->n_steps; i++) {
                                const Step *s = &m->steps[i];
                                char at[64];
                                if (streq_ptr(s->action, "done"))
                                        continue;
                                if (m->running)
                                        format_when(when, sizeof(when), s->at, now);
                                else
                                        format_time(when, sizeof(when), s->at);
                                snprintf(retries, sizeof(retries), "%lld", s->failures > 0 ? s->failures : 0);
                                snprintf(at, sizeof(at), "%s", when);
                                if (pass == 0) {
                                        v[0] = width(v[0], s->action);
                                        v[1] = width(v[1], s->job ?: "-");
                                        v[2] = width(v[2], s->env);
                                        v[3] = width(v[3], s->token);
                                        v[4] = width(v[4], at);
                                        v[5] = width(v[5], retries);
                                        continue;
                                }
                                printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %.*s\n", v[0], s->action, v[1], s->job ?: "-",
                                       v[2], s->env, v[3], s->token, v[4], at, v[5], retries, ERROR_SHOWN,
                                       s->error ?: "-");
                        }
                }
        }
}

static void print_json(const Model *m) {
        yajl_gen g = yajl_gen_alloc(NULL);
        const unsigned char *buf;
        size_t len;

        if (!g)
                return;
        yajl_gen_config(g, yajl_gen_beautify, 1);
        yajl_gen_map_open(g);
        gen_kv_bool(g, "running", m->running);
        gen_kv_str(g, "version", m->version);
        gen_str(g, "jobs");
        yajl_gen_array_open(g);
        for (size_t i = 0; i < m->n_rows; i++) {
                const Row *r = &m->rows[i];
                yajl_gen_map_open(g);
                gen_kv_str(g, "job", r->job);
                gen_kv_str(g, "environment", r->env);
                gen_kv_str(g, "phase", r->phase);
                gen_kv_str(g, "state", r->state);
                gen_kv_str(g, "token", r->token);
                gen_kv_int(g, "created", r->created);
                gen_kv_int(g, "expires", r->expires);
                gen_kv_int(g, "rotated", r->rotated);
                gen_kv_str(g, "next_action", r->next_action);
                gen_kv_int(g, "next_at", r->next_at);
                gen_kv_int(g, "failures", r->failures > 0 ? r->failures : 0);
                gen_kv_str(g, "error", r->error);
                gen_kv_bool(g, "failing", r->failing);
                gen_kv_bool(g, "permanent", r->permanent);
                gen_kv_bool(g, "expiring", r->expiring);
                gen_kv_bool(g, "configured", r->configured);
                gen_kv_bool(g, "rotate_requested", r->rotate_requested);
                gen_kv_bool(g, "revoke_now", r->revoke_now);
                yajl_gen_map_close(g);
        }
        yajl_gen_array_close(g);
        gen_str(g, "pending");
        yajl_gen_array_open(g);
        for (size_t i = 0; i < m->n_steps; i++) {
                const Step *s = &m->steps[i];
                if (streq_ptr(s->action, "done"))
                        continue;
                yajl_gen_map_open(g);
                gen_kv_str(g, "job", s->job);
                gen_kv_str(g, "environment", s->env);
                gen_kv_str(g, "action", s->action);
                gen_kv_str(g, "token", s->token);
                gen_kv_int(g, "at", s->at);
                gen_kv_int(g, "failures", s->failures > 0 ? s->failures : 0);
                gen_kv_str(g, "error", s->error);
                gen_kv_bool(g, "failing", s->failing);
                yajl_gen_map_close(g);
        }
        yajl_gen_array_close(g);
        yajl_gen_map_close(g);
        if (yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok)
                fwrite(buf, 1, len, stdout);
        yajl_gen_free(g);
}

/* ---- commands ---- */

static int model_from_reply(Model *m, yajl_val params) {
        yajl_val jobs = get(params, "jobs", yajl_t_array), pending = get(params, "pending", yajl_t_array);

        m->running = true;
        set_str(&m->version, get_str(params, "version"));
        for (size_t i = 0; jobs && i < jobs->u.array.len; i++) {
                yajl_val v = jobs->u.array.values[i];
                Row *r;
                if (!get_str(v, "job"))
                        continue;
                if (!(r = model_row(m, get_str(v, "job"), true)))
                        return -ENOMEM;
                set_str(&r->env, get_str(v, "environment"));
                set_str(&r->phase, get_str(v, "phase"));
                set_str(&r->state, get_str(v, "state"));
                set_str(&r->token, get_str(v, "token"));
                set_str(&r->next_action, get_str(v, "next_action"));
                set_str(&r->error, get_str(v, "error"));
                r->created = get_int(v, "created");
                r->expires = get_int(v, "expires");
                r->rotated = get_int(v, "rotated");
                r->next_at = get_int(v, "next_at");
                r->failures = get_int(v, "failures");
                r->failing = get_bool(v, "failing");
                r->permanent = get_bool(v, "permanent");
                r->expiring = get_bool(v, "expiring");
                r->configured = get_bool(v, "configured");
                r->rotate_requested = get_bool(v, "rotate_requested");
                r->revoke_now = get_bool(v, "revoke_now");
        }
        for (size_t i = 0; pending && i < pending->u.array.len; i++) {
                yajl_val v = pending->u.array.values[i];
                Step *s;
                if (!get_str(v, "environment") || !get_str(v, "token") || !get_str(v, "action"))
                        continue;
                s = model_step(m, get_str(v, "environment"), get_str(v, "token"), get_str(v, "action"), true);
                if (!s)
                        return -ENOMEM;
                set_str(&s->job, get_str(v, "job"));
                set_str(&s->error, get_str(v, "error"));
                s->at = get_int(v, "at");
                s->failures = get_int(v, "failures");
                s->failing = get_bool(v, "failing");
        }
        return 0;
}

static int status_exit(const Model *m) {
        bool failing = false, expiring = false;

        for (size_t i = 0; i < m->n_rows; i++) {
                failing = failing || m->rows[i].failing;
                expiring = expiring || m->rows[i].expiring;
        }
        for (size_t i = 0; i < m->n_steps; i++)
                failing = failing || m->steps[i].failing;
        return expiring ? EXIT_EXPIRING : failing ? EXIT_FAILING : 0;
}

static int cmd_status(int fd, const Args *a, const Config *c, const char *down_why) {
        Model m = {};
        int r, ret;

        if (fd < 0) {
                fprintf(stderr, "dtrotatectl: %s; this is what its journal says:\n", down_why);
                if (!c) {
                        fprintf(stderr, "dtrotatectl: no usable configuration, so no journal to read\n");
                        return EXIT_DOWN;
                }
                r = model_from_journal(&m, c);
                if (r >= 0) {
                        if (a->names[0]) {
                                /* Only the jobs asked for, and their steps. */
                                size_t k = 0;
                                for (size_t i = 0; i < m.n_rows; i++) {
                                        if (strv_contains(a->names, m.rows[i].job))
                                                m.rows[k++] = m.rows[i];
                                        else {
                                                Row *x = &m.rows[i];
                                                free(x->job), free(x->env), free(x->phase), free(x->state);
                                                free(x->token), free(x->next_action), free(x->error);
                                        }
                                }
                                m.n_rows = k;
                                for (size_t i = 0; i < m.n_steps; i++)
                                        if (!m.steps[i].job || !strv_contains(a->names, m.steps[i].job))
                                                set_str(&m.steps[i].action, "done");
                        }
                        if (a->json)
                                print_json(&m);
                        else
                                print_table(&m);
                }
                model_done(&m);
                return EXIT_DOWN;
        }

        {
                yajl_gen g = request("io.dtrotated.Status");
                yajl_val reply = NULL, params;
                const char *error;
                if (g && a->names[0])
                        gen_names(g, "jobs", a->names);
                r = finish_call(fd, g, &reply, &error, &params);
                if (r < 0) {
                        fprintf(stderr, "dtrotatectl: status: %s\n", strerror(-r));
                        return EXIT_FAILING;
                }
                if (error) {
                        if (!common_error(error, params))
                                fprintf(stderr, "dtrotatectl: status: %s\n", error);
                        yajl_tree_free(reply);
                        return EXIT_FAILING;
                }
                r = model_from_reply(&m, params);
                yajl_tree_free(reply);
                if (r < 0) {
                        model_done(&m);
                        fprintf(stderr, "dtrotatectl: out of memory\n");
                        return EXIT_FAILING;
                }
        }
        if (a->json)
                print_json(&m);
        else
                print_table(&m);
        ret = status_exit(&m);
        model_done(&m);
        return ret;
}

/* rotate, revoke-now, restore: one line per job. */
static int cmd_jobs(int fd, const Args *a) {
        bool rotate = streq(a->command, "rotate"), restore = streq(a->command, "restore");
        yajl_gen g = request(rotate ? "io.dtrotated.Rotate" : restore ? "io.dtrotated.Restore" : "io.dtrotated.RevokeNow");
        yajl_val reply = NULL, params, results;
        const char *error;
        int r, ret = 0;

        if (g) {
                if (rotate)
                        gen_names(g, "jobs", a->names);
                else
                        gen_kv_str(g, "job", a->names[0]);
                if (!restore)
                        gen_kv_bool(g, "wait", !a->no_wait);
        }
        r = finish_call(fd, g, &reply, &error, &params);
        if (r < 0) {
                fprintf(stderr, "dtrotatectl: %s: %s\n", a->command, strerror(-r));
                return EXIT_FAILING;
        }
        if (error && common_error(error, params)) {
                yajl_tree_free(reply);
                return EXIT_FAILING;
        }
        results = get(params, "results", yajl_t_array);
        if (error && !results) {
                fprintf(stderr, "dtrotatectl: %s: %s\n", a->command, error);
                yajl_tree_free(reply);
                return EXIT_FAILING;
        }
        for (size_t i = 0; results && i < results->u.array.len; i++) {
                yajl_val v = results->u.array.values[i];
                const char *job = strna(get_str(v, "job")), *e = get_str(v, "error");
                if (e) {
                        fprintf(stderr, "%s: %s failed: %s%s\n", job, a->command, e,
                                streq(a->command, "revoke-now") && !strstr(e, "not in the configuration") ?
                                " (the daemon keeps trying; the old token is revoked and deleted at once when the rotation succeeds)" : "");
                        ret = EXIT_FAILING;
                } else if (a->no_wait)
                        printf("%s: %s started\n", job, a->command);
                else
                        printf("%s: %s\n", job, rotate ? "rotated: the new token is in place" :
                                                restore ? "restored: the previous token is back in place" :
                                                          "rotated: the old token is being revoked and deleted at once");
        }
        yajl_tree_free(reply);
        return ret;
}

static int cmd_retry(int fd, const Args *a) {
        yajl_gen g = request("io.dtrotated.Retry");
        yajl_val reply = NULL, params;
        const char *error;
        long long n;
        int r;

        if (g) {
                if (a->all)
                        gen_kv_bool(g, "all", true);
                else
                        gen_names(g, "jobs", a->names);
        }
        r = finish_call(fd, g, &reply, &error, &params);
        if (r < 0) {
                fprintf(stderr, "dtrotatectl: retry: %s\n", strerror(-r));
                return EXIT_FAILING;
        }
        if (error) {
                if (!common_error(error, params))
                        fprintf(stderr, "dtrotatectl: retry: %s\n", error);
                yajl_tree_free(reply);
                return EXIT_FAILING;
        }
        n = get_int(params, "retried");
        printf("retrying %lld failing step%s now\n", n < 0 ? 0 : n, n == 1 ? "" : "s");
        yajl_tree_free(reply);
        return 0;
}

static int cmd_reload(int fd) {
        yajl_gen g = request("io.dtrotated.Reload");
        yajl_val reply = NULL, params, problems;
        const char *error;
        int r;

        r = finish_call(fd, g, &reply, &error, &params);
        if (r < 0) {
                fprintf(stderr, "dtrotatectl: reload: %s\n", strerror(-r));
                return EXIT_FAILING;
        }
        if (error && common_error(error, params)) {
                yajl_tree_free(reply);
                return EXIT_FAILING;
        }
        problems = get(params, "problems", yajl_t_array);
        for (size_t i = 0; problems && i < problems->u.array.len; i++)
                if (YAJL_IS_STRING(problems->u.array.values[i]))
                        fprintf(stderr, "%s\n", problems->u.array.values[i]->u.string);
        if (error)
                fprintf(stderr, "dtrotatectl: reload failed: the configuration has errors; the daemon keeps the running one\n");
        else
                printf("reloaded\n");
        yajl_tree_free(reply);
        return error ? EXIT_FAILING : 0;
}

/* ---- main ---- */

static int parse_args(int argc, char **argv, Args *a) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, 's' },
                { "config", required_argument, NULL, 'c' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        size_t n = 0;
        int c;

        opterr = 0;
        /* "+": options of the command come after it. */
        while ((c = getopt_long(argc, argv, "+:s:c:hV", options, NULL)) >= 0)
                switch (c) {
                case 's':
                        a->socket = optarg;
                        break;
                case 'c':
                        a->config = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("dtrotatectl " VERSION "\n");
                        return 0;
                case ':':
                        fprintf(stderr, "dtrotatectl: option %s needs an argument\n", argv[optind - 1]);
                        return -1;
                default:
                        fprintf(stderr, "dtrotatectl: unknown option %s\n", argv[optind - 1]);
                        return -1;
                }
        if (optind >= argc) {
                fprintf(stderr, "dtrotatectl: no command given\n");
                usage(stderr);
                return -1;
        }
        a->command = argv[optind++];
        if (!IN_SET(0, strcmp(a->command, "status"), strcmp(a->command, "rotate"), strcmp(a->command, "revoke-now"),
                    strcmp(a->command, "restore"), strcmp(a->command, "retry"), strcmp(a->command, "reload"))) {
                fprintf(stderr, "dtrotatectl: unknown command '%s'\n", a->command);
                usage(stderr);
                return -1;
        }
        a->names = calloc((size_t) (argc - optind) + 1, sizeof(char *));
        if (!a->names)
                return -1;
        for (int i = optind; i < argc; i++) {
                const char *s = argv[i];
                if (streq(s, "--json") && streq(a->command, "status"))
                        a->json = true;
                else if (streq(s, "--no-wait") && (streq(a->command, "rotate") || streq(a->command, "revoke-now")))
                        a->no_wait = true;
                else if (streq(s, "--all") && streq(a->command, "retry"))
                        a->all = true;
                else if (s[0] == '-' && s[1]) {
                        fprintf(stderr, "dtrotatectl: %s: unknown option %s\n", a->command, s);
                        return -1;
                } else
                        a->names[n++] = (char *) s;
        }
        if (streq(a->command, "reload") && n > 0) {
                fprintf(stderr, "dtrotatectl: reload takes no arguments\n");
                return -1;
        }
        if ((streq(a->command, "rotate") && n == 0) ||
            ((streq(a->command, "revoke-now") || streq(a->command, "restore")) && n != 1)) {
                fprintf(stderr, "dtrotatectl: %s needs %s\n", a->command,
                        streq(a->command, "rotate") ? "at least one JOB" : "exactly one JOB");
                return -1;
        }
        if (streq(a->command, "retry") && (n > 0) == a->all) {
                fprintf(stderr, "dtrotatectl: retry needs JOB... or --all\n");
                return -1;
        }
        return 1;
}

static void collect_problem(int prio, const char *msg, void *userdata) {
        char *p = strdup_printf("%s%s", prio == LOG_WARNING ? "warning: " : "", msg);

        if (p && strv_push(userdata, p) < 0)
                free(p);
}

int main(int argc, char **argv) {
        _cleanup_(config_freep) Config *config = NULL;
        _cleanup_strv_free_ char **problems = NULL;
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *down_why = NULL;
        Args a = {};
        const char *path;
        int r;

        (void) signal(SIGPIPE, SIG_IGN);
        log_set_max_level(LOG_WARNING); /* the journal reader's notices are not ours to show */
        r = parse_args(argc, argv, &a);
        if (r <= 0) {
                free(a.names);
                return r == 0 ? 0 : EXIT_USAGE_;
        }
        /* The configuration names the socket (and, for a status without the daemon, the
         * state directory). The default one is optional unless it is needed. */
        if (a.config || !a.socket || streq(a.command, "status")) {
                const char *cpath = a.config ?: DEFAULT_CONFIG_FILE;
                r = config_load(cpath, &config, collect_problem, &problems);
                if (r < 0 && a.config) {
                        for (char **p = problems; p && *p; p++)
                                fprintf(stderr, "%s\n", *p);
                        fprintf(stderr, "dtrotatectl: cannot use the configuration %s\n", cpath);
                        if (!a.socket && !streq(a.command, "status")) {
                                free(a.names);
                                return EXIT_FAILING;
                        }
                }
        }
        path = a.socket ?: config ? config->control_socket : DEFAULT_CONTROL_SOCKET;
        if (!path) {
                if (!streq(a.command, "status")) {
                        fprintf(stderr, "dtrotatectl: control_socket is \"\" in the configuration: the daemon has no control socket\n");
                        free(a.names);
                        return EXIT_DOWN;
                }
                down_why = strdup("dtrotated has no control socket (control_socket = \"\")");
        } else {
                r = connect_socket(path, &fd);
                if (r < 0)
                        down_why = strdup_printf("dtrotated is not running (cannot connect to %s: %s)", path,
                                                 strerror(-r));
                /* Only a missing socket or nobody listening means the daemon is down;
                 * EACCES and the like are the caller's problem. */
                if (r < 0 && (!streq(a.command, "status") || !IN_SET(-r, ENOENT, ECONNREFUSED))) {
                        fprintf(stderr, "dtrotatectl: cannot connect to %s: %s\n", path, strerror(-r));
                        free(a.names);
                        return IN_SET(-r, ENOENT, ECONNREFUSED) ? EXIT_DOWN : EXIT_FAILING;
                }
        }
        if (streq(a.command, "status"))
                r = cmd_status(fd, &a, config, strna(down_why));
        else if (streq(a.command, "retry"))
                r = cmd_retry(fd, &a);
        else if (streq(a.command, "reload"))
                r = cmd_reload(fd);
        else
                r = cmd_jobs(fd, &a);
        free(a.names);
        return r;
}
