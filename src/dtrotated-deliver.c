/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "dtrotated-deliver.h"
#include "dtrotated-log.h"
#include "dtrotated-util.h"

char *deliver_staged_path(const char *file) {
        const char *slash = strrchr(file, '/');
        const char *base = slash ? slash + 1 : file;

        return strdup_printf("%.*s.%s.dtrotated-new", (int) (base - file), file, base);
}

static int write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

int deliver_stage(const JobConfig *j, const char *secret) {
        _cleanup_free_ char *staged = deliver_staged_path(j->file);
        _cleanup_close_ int fd = -1;
        int r;

        if (!staged)
                return -ENOMEM;
        if (unlink(staged) < 0 && errno != ENOENT)
                return -errno;
        /* Mode and owner are set before a byte of the secret is written. */
        fd = open(staged, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        if ((j->uid != (uid_t) -1 || j->gid != (gid_t) -1) && fchown(fd, j->uid, j->gid) < 0)
                goto fail;
        if (fchmod(fd, j->mode) < 0)
                goto fail;
        r = write_all(fd, secret, strlen(secret));
        if (r == 0)
                r = write_all(fd, "\n", 1);
        if (r < 0) {
                errno = -r;
                goto fail;
        }
        if (fsync(fd) < 0)
                goto fail;
        return 0;
fail:
        r = -errno;
        (void) unlink(staged);
        return r;
}

int deliver_commit(const JobConfig *j) {
        _cleanup_free_ char *staged = deliver_staged_path(j->file);

        if (!staged)
                return -ENOMEM;
        if (rename(staged, j->file) < 0)
                return -errno;
        return fsync_parent_dir(j->file);
}

int deliver_read_staged(const JobConfig *j, char **ret) {
        _cleanup_free_ char *staged = deliver_staged_path(j->file);
        const char *why;

        if (!staged)
                return -ENOMEM;
        return read_token_file(staged, ret, &why);
}

int deliver_discard_staged(const JobConfig *j) {
        _cleanup_free_ char *staged = deliver_staged_path(j->file);

        if (!staged)
                return -ENOMEM;
        if (unlink(staged) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

struct Hook {
        pid_t pid;
        sd_event_source *child, *timer;
        usec_t timeout;
        hook_done_t done;
        void *userdata;
};

Hook *hook_free(Hook *h) {
        if (!h)
                return NULL;
        if (h->pid > 0) {
                (void) kill(-h->pid, SIGKILL);
                /* Reap it so it does not linger as a zombie; it was just SIGKILLed. */
                (void) waitpid(h->pid, NULL, 0);
        }
        sd_event_source_disable_unref(h->child);
        sd_event_source_disable_unref(h->timer);
        free(h);
        return NULL;
}

static void hook_finish(Hook *h, int error, const char *what) {
        hook_done_t done = h->done;
        void *userdata = h->userdata;

        h->pid = 0;
        done(h, error, what, userdata); /* the callback frees h */
}

static int on_hook_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Hook *h = userdata;
        char what[64];

        /* Reap it ourselves: the source may be gone by the time sd-event would. */
        (void) waitpid(h->pid, NULL, WNOHANG);
        if (si->si_code == CLD_EXITED && si->si_status == 0) {
                hook_finish(h, 0, "exited with status 0");
                return 0;
        }
        if (si->si_code == CLD_EXITED)
                snprintf(what, sizeof(what), "exited with status %d", si->si_status);
        else
                snprintf(what, sizeof(what), "killed by signal %s", sigabbrev_np(si->si_status) ?: "?");
        /* The group may still hold children of the hook: do not leave them behind. */
        (void) kill(-h->pid, SIGKILL);
        hook_finish(h, -EPROTO, what);
        return 0;
}

static int on_hook_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Hook *h = userdata;
        char what[64], d[FORMAT_DURATION_MAX];

        (void) kill(-h->pid, SIGKILL);
        (void) waitpid(h->pid, NULL, 0);
        snprintf(what, sizeof(what), "timed out after %s, killed",
                 format_duration(d, sizeof(d), h->timeout));
        hook_finish(h, -ETIME, what);
        return 0;
}

_noreturn_ static void hook_child(const char *program, char **envp) {
        sigset_t all;
        int null;

        /* The parent blocks signals for sd-event; the hook must not inherit that. */
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        for (int sig = 1; sig < _NSIG; sig++)
                (void) signal(sig, SIG_DFL);
        (void) setpgid(0, 0);
        null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, STDIN_FILENO) < 0)
                _exit(126);
        /* Everything but stdin/stdout/stderr is closed: the hook gets no journal lock or
         * sockets. */
        (void) close_range(3, ~0U, 0);
        execve(program, (char *[]) { (char *) program, NULL }, envp);
        _exit(127);
}

int hook_run(sd_event *event, const char *program, const char *job, const char *file,
             const char *old_id, const char *new_id, usec_t timeout, hook_done_t done,
             void *userdata, Hook **ret) {
        _cleanup_free_ char *e_job = strdup_printf("DTROTATED_JOB=%s", job);
        _cleanup_free_ char *e_file = strdup_printf("DTROTATED_FILE=%s", file);
        _cleanup_free_ char *e_old = strdup_printf("DTROTATED_OLD_TOKEN_ID=%s", strna(old_id));
        _cleanup_free_ char *e_new = strdup_printf("DTROTATED_NEW_TOKEN_ID=%s", strna(new_id));
        char *envp[] = { (char *) "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                         e_job, e_file, e_old, e_new, NULL };
        Hook *h;
        int r;

        if (!e_job || !e_file || !e_old || !e_new)
                return -ENOMEM;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->timeout = timeout;
        h->done = done;
        h->userdata = userdata;

        h->pid = fork();
        if (h->pid < 0) {
                r = -errno;
                free(h);
                return r;
        }
        if (h->pid == 0)
                hook_child(program, envp);
        (void) setpgid(h->pid, h->pid); /* also in the parent: no race with kill(-pid) */

        r = sd_event_add_child(event, &h->child, h->pid, WEXITED, on_hook_exit, h);
        if (r >= 0)
                r = sd_event_add_time_relative(event, &h->timer, CLOCK_MONOTONIC, timeout,
                                               USEC_PER_MSEC * 10, on_hook_timeout, h);
        if (r < 0) {
                hook_free(h);
                return r;
        }
        *ret = h;
        return 0;
}
