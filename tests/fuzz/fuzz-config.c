/* SPDX-License-Identifier: MIT */
/* The configuration loader and validator: any text gives a Config or errors (at least
 * one, each "FILE:LINE: ..." or "FILE: ..."), never a crash. The input is the file. */
#include <syslog.h>

#include "dtrotated-config.h"
#include "dtrotated-util.h"
#include "fuzz-common.h"

static char path[PATH_MAX];

typedef struct Reports {
        size_t errors, warnings;
} Reports;

static void on_report(int prio, const char *msg, void *userdata) {
        Reports *r = userdata;

        fuzz_check(prio == LOG_ERR || prio == LOG_WARNING);
        /* "FILE:LINE: ..." or "FILE: ..." (FILE may be an included one). */
        fuzz_check(msg && strstr(msg, ": ") && msg[0] != ':');
        if (prio == LOG_ERR)
                r->errors++;
        else
                r->warnings++;
        if (getenv("FUZZ_LOG"))
                fprintf(stderr, "%s\n", msg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        fuzz_setup();
        snprintf(path, sizeof(path), "%s/dtrotated.conf", fuzz_dir);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Config *c = (Config *) 0x1;
        Reports reports = {};
        int r;

        fuzz_write_file(path, data, size);
        r = config_load(path, &c, on_report, &reports);
        if (r >= 0) {
                fuzz_check(r == 0);
                fuzz_check(c && c != (Config *) 0x1);
                fuzz_check(reports.errors == 0);
                fuzz_check(c->n_envs > 0 && c->state_directory);
                for (size_t i = 0; i < c->n_jobs; i++) {
                        const JobConfig *j = &c->jobs[i];
                        fuzz_check(j->env && j->name && j->file && j->file[0] == '/');
                        fuzz_check(config_find_job(c, j->name) == j);
                        fuzz_check(config_find_env(c, j->env->name) == j->env);
                        fuzz_check(j->rotate_every > 0);
                        fuzz_check(job_config_equal(j, j));
                }
                for (size_t i = 0; i < c->n_envs; i++)
                        fuzz_check(env_config_equal(&c->envs[i], &c->envs[i]));
                /* What --check-config adds: a look at every file the config names. */
                reports = (Reports) {};
                r = config_check_files(c, on_report, &reports);
                fuzz_check(r == 0 || r == -EINVAL);
                fuzz_check((r == -EINVAL) == (reports.errors > 0));
                config_free(c);
        } else {
                fuzz_check(c == (Config *) 0x1);
                fuzz_check(r != -ENOMEM);
                fuzz_check(reports.errors > 0);
        }
        return 0;
}
