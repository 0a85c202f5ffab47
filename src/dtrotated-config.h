/* SPDX-License-Identifier: MIT */
#pragma once

#include <sys/types.h>

#include "macro.h"

#define DEFAULT_CONFIG_FILE "/etc/dtrotated/dtrotated.conf"
#define DEFAULT_STATE_DIRECTORY "/var/lib/dtrotated"
#define DEFAULT_CONTROL_SOCKET "/run/dtrotated/control"

typedef enum ApiVersion {
        API_V1,
        API_V2,
} ApiVersion;

typedef struct EnvConfig {
        char *name;
        char *url;                    /* base URL, trailing '/' removed */
        ApiVersion api;               /* default API_V2 (v1 is deprecated) */
        char *management_token_file;  /* path; NULL when the credential is used */
        const char *management_token_file_source; /* where it is set, for messages: */
        int management_token_file_line;           /* a file name owned by Config.sources */
        char *management_token_credential; /* name in $CREDENTIALS_DIRECTORY, or NULL */
        char *ca_file;                /* NULL: system CA store */
        usec_t request_timeout;       /* default 30s */
        unsigned max_parallel;        /* default 4, 1..64 */
        int line;                     /* where it is defined, for messages */
} EnvConfig;

/* JobConfig.mode when `mode` is not set: keep the mode of the file being replaced
 * (without write permission for others); a new file gets JOB_MODE_NEW. */
#define JOB_MODE_KEEP ((mode_t) -1)
#define JOB_MODE_NEW ((mode_t) 0600)

typedef struct JobConfig {
        char *name;                   /* [A-Za-z0-9._@:-]{1,64} */
        char *environment;            /* name as written */
        EnvConfig *env;               /* resolved, points into Config.envs */
        char *file;                   /* absolute path */
        const char *file_source;      /* where it is set, for messages (Config.sources) */
        int file_line;
        usec_t rotate_every;          /* required, > 0 */
        usec_t grace_period;          /* default 7d, <= 1 year */
        usec_t revoke_delay;          /* default 0s, <= 1 year */
        usec_t revoke_when_unused;    /* 0 (default): revoke when due; else revoke only once
                                       * the old token was not used for this long, <= 1 year */
        usec_t revoke_when_unused_max;/* default 7d, <= 1 year: then revoke anyway */
        usec_t renew_before;          /* default (filled in by the loader) a third of
                                       * expires_in, at most 7d; 7d when expires_in is
                                       * "never" */
        usec_t expires_in;            /* default (filled in by the loader) 2 x rotate_every;
                                       * USEC_INFINITY = "never" */
        char **scopes;                /* NULL: the old token's scopes */
        char *token_name;             /* NULL: the old token's name */
        mode_t mode;                  /* 0..0777; default JOB_MODE_KEEP */
        uid_t uid;                    /* (uid_t) -1: keep the current file's owner; a new
                                       * file gets the daemon's */
        gid_t gid;                    /* (gid_t) -1: keep the current file's group; a new
                                       * file gets the one the directory gives it */
        char *on_rotate;              /* absolute path of a program, or NULL */
        int line;
} JobConfig;

typedef struct Config {
        char *path;
        char **sources;               /* the configuration files read (main, included) */
        char *state_directory;        /* default $STATE_DIRECTORY, else /var/lib/dtrotated */
        usec_t retry_max_delay;       /* default 1h */
        char *metrics_file;           /* Prometheus textfile, absolute path, or NULL */
        char *control_socket;         /* default DEFAULT_CONTROL_SOCKET; NULL: none ("") */
        char *control_group;          /* NULL: root only */
        gid_t control_gid;            /* (gid_t) -1: none */
        EnvConfig *envs;
        size_t n_envs;
        JobConfig *jobs;
        size_t n_jobs;
} Config;

/* Reports a problem: prio is LOG_ERR or LOG_WARNING, msg is "FILE:LINE: what is wrong"
 * (or "FILE: ..." where no line applies). */
typedef void (*config_report_t)(int prio, const char *msg, void *userdata);

/* Parse and validate completely; every problem is reported (not just the first).
 * Returns 0 and *ret on success (warnings may have been reported), -EINVAL when any
 * error was reported, -ENOMEM, or -errno when the file cannot be read (reported too). */
int config_load(const char *path, Config **ret, config_report_t report, void *userdata);
Config *config_free(Config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

/* For --check-config (config_load() does not look at them, so that one broken token
 * file cannot stop the daemon from running the other jobs): checks every job's `file`
 * and every `management_token_file` as the caller sees it. A path that exists must be a
 * regular file, not a symbolic link (the message names the link's target) and not a
 * FIFO, device, directory or socket; its directory must exist. A path that does not
 * exist yet is fine; one that cannot be looked at (permissions) draws a warning.
 * Problems are reported like config_load()'s, "FILE:LINE: what is wrong", at the line
 * of the setting. Returns 0 when no error was reported, -EINVAL when one was, -ENOMEM. */
int config_check_files(const Config *c, config_report_t report, void *userdata);

const EnvConfig *config_find_env(const Config *c, const char *name);
const JobConfig *config_find_job(const Config *c, const char *name);

/* When a token created at `created`, expiring at `expires` (USEC_INFINITY: never), is
 * due for rotation under job c; rotated_at is when the daemon last rotated the job
 * (0: never). For the daemon's schedule and for dtrotatectl reading the journal. */
usec_t job_config_rotation_due(const JobConfig *c, usec_t created, usec_t expires, usec_t rotated_at);

/* True when the two jobs would do exactly the same thing (reload keeps their state). */
bool job_config_equal(const JobConfig *a, const JobConfig *b);
bool env_config_equal(const EnvConfig *a, const EnvConfig *b);
