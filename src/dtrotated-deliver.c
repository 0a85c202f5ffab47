/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
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

/* The secret and its newline in one write(): one system call per staged token. A short
 * write (not expected for ~100 bytes to a regular file) finishes with write_all(). */
static int write_line(int fd, const char *line) {
        size_t n = strlen(line);
        struct iovec iov[2] = { { (void *) line, n }, { (void *) "\n", 1 } };
        ssize_t k;

        do
                k = writev(fd, iov, 2);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return -errno;
        if ((size_t) k >= n + 1)
                return 0;
        if ((size_t) k < n) {
                int r = write_all(fd, line + k, n - (size_t) k);
                if (r < 0)
                        return r;
        }
        return write_all(fd, "\n", 1);
}

static int set_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int set_error(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (ret_error) {
                free(*ret_error);
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

/* The target as it is now, never followed: 1 and *ret when it is a regular file, 0
 * when it does not exist, or an error (a symbolic link or another kind of file). */
static int inspect_target(const char *file, struct stat *ret, char **ret_error) {
        if (lstat(file, ret) < 0) {
                if (errno == ENOENT)
                        return 0;
                return set_error(ret_error, -errno, "cannot inspect %s: %s", file, strerror(errno));
        }
        if (S_ISLNK(ret->st_mode)) {
                _cleanup_free_ char *target = symlink_target(file);
                return set_error(ret_error, -ELOOP, "%s is a symbolic link to %s; set file to "
                                 "the real path", file, target ?: "(unknown)");
        }
        if (!S_ISREG(ret->st_mode))
                return set_error(ret_error, S_ISDIR(ret->st_mode) ? -EISDIR : -EBADMSG,
                                 "%s is not a regular file (%s)", file, file_type_name(ret->st_mode));
        return 1;
}

static bool have_cap_chown(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};

        if (syscall(SYS_capget, &h, d) < 0)
                return geteuid() == 0;
        return d[0].effective & (UINT32_C(1) << CAP_CHOWN);
}

static bool in_group(gid_t gid) {
        _cleanup_free_ gid_t *groups = NULL;
        int n;

        if (gid == getegid())
                return true;
        n = getgroups(0, NULL);
        if (n <= 0)
                return false;
        groups = calloc((size_t) n, sizeof(gid_t));
        if (!groups)
                return false;
        n = getgroups(n, groups);
        for (int i = 0; i < n; i++)
                if (groups[i] == gid)
                        return true;
        return false;
}

/* The owner, group and mode the new file gets; 0, or an error when the target cannot
 * be replaced (a symbolic link, not a regular file). */
static int plan_target(const JobConfig *j, uid_t *ret_uid, gid_t *ret_gid, mode_t *ret_mode,
                       char **ret_error) {
        struct stat cur;
        int r;

        *ret_uid = j->uid;
        *ret_gid = j->gid;
        *ret_mode = j->mode;
        /* Unless the configuration says otherwise, the new file looks like the old one. */
        r = inspect_target(j->file, &cur, ret_error);
        if (r < 0)
                return r;
        if (r > 0 && cur.st_nlink > 1)
                /* The rename gives the path a new file; the other names keep the old one,
                 * whose token is then revoked under their readers. */
                return set_error(ret_error, -EMLINK, "%s has %lu hard links: its other names would keep "
                                 "the old token after the rotation; give readers one name (a "
                                 "symbolic link to it is fine)", j->file, (unsigned long) cur.st_nlink);
        if (r > 0) {
                if (*ret_uid == (uid_t) -1)
                        *ret_uid = cur.st_uid;
                if (*ret_gid == (gid_t) -1)
                        *ret_gid = cur.st_gid;
                if (*ret_mode == JOB_MODE_KEEP)
                        *ret_mode = cur.st_mode & 0777 & ~(mode_t) S_IWOTH;
        }
        if (*ret_mode == JOB_MODE_KEEP)
                *ret_mode = JOB_MODE_NEW;
        return 0;
}

static int chown_refused(const JobConfig *j, int r, uid_t uid, gid_t gid, char **ret_error) {
        if (uid != (uid_t) -1)
                return set_error(ret_error, r, "cannot give %s to uid %u%s: that needs "
                                 "CAP_CHOWN; chown it to the user dtrotated runs as (readers "
                                 "can get in through the group), or set owner",
                                 j->file, (unsigned) uid,
                                 j->uid == (uid_t) -1 ? ", the owner of the current file" : "");
        return set_error(ret_error, r, "cannot give %s to gid %u%s: dtrotated must be a member "
                         "of that group (SupplementaryGroups=), or the directory setgid to it",
                         j->file, (unsigned) gid,
                         j->gid == (gid_t) -1 ? ", the group of the current file" : "");
}

int deliver_check(const JobConfig *j, char **ret_error) {
        uid_t uid;
        gid_t gid;
        mode_t mode;
        int r;

        if (ret_error)
                *ret_error = NULL;
        r = plan_target(j, &uid, &gid, &mode, ret_error);
        if (r < 0)
                return r;
        if (have_cap_chown())
                return 0;
        if (uid != (uid_t) -1 && uid != geteuid())
                return chown_refused(j, -EPERM, uid, (gid_t) -1, ret_error);
        /* A new file may get the directory's group (setgid): that one needs no chown. */
        if (gid != (gid_t) -1 && !in_group(gid)) {
                _cleanup_free_ char *dir = dirname_malloc(j->file);
                struct stat st;

                if (!dir)
                        return -ENOMEM;
                if (stat(dir, &st) < 0 || !(st.st_mode & S_ISGID) || st.st_gid != gid)
                        return chown_refused(j, -EPERM, (uid_t) -1, gid, ret_error);
        }
        return 0;
}

int deliver_stage_full(const JobConfig *j, const char *secret, char **ret_error) {
        _cleanup_free_ char *staged = deliver_staged_path(j->file);
        _cleanup_close_ int fd = -1;
        uid_t uid;
        gid_t gid;
        mode_t mode;
        struct stat st;
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (!staged)
                return -ENOMEM;
        r = plan_target(j, &uid, &gid, &mode, ret_error);
        if (r < 0)
                return r;

        if (unlink(staged) < 0 && errno != ENOENT) {
                /* A read-only or unwritable directory says so here first. */
                if (IN_SET(errno, EROFS, EACCES, EPERM))
                        return set_error(ret_error, -errno, "cannot write the new token next to %s: %s",
                                         j->file, strerror(errno));
                return set_error(ret_error, -errno, "cannot remove the stale %s: %s", staged,
                                 strerror(errno));
        }
        /* Mode and owner are set before a byte of the secret is written. */
        fd = open(staged, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return set_error(ret_error, -errno, "cannot create %s: %s", staged, strerror(errno));
        if (fstat(fd, &st) < 0) {
                r = set_error(ret_error, -errno, "cannot inspect %s: %s", staged, strerror(errno));
                goto fail;
        }
        /* Only what differs: a new file already has our uid and the directory's group. */
        if (uid == st.st_uid)
                uid = (uid_t) -1;
        if (gid == st.st_gid)
                gid = (gid_t) -1;
        if ((uid != (uid_t) -1 || gid != (gid_t) -1) && fchown(fd, uid, gid) < 0) {
                r = -errno;
                if (r == -EPERM)
                        chown_refused(j, r, uid, gid, ret_error);
                else
                        set_error(ret_error, r, "cannot change the owner of %s: %s", staged,
                                  strerror(-r));
                goto fail;
        }
        if (fchmod(fd, mode) < 0) {
                r = set_error(ret_error, -errno, "cannot set mode %04o on %s: %s",
                              (unsigned) mode, staged, strerror(errno));
                goto fail;
        }
        r = write_line(fd, secret);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0) {
                set_error(ret_error, r, "cannot write %s: %s", staged, strerror(-r));
                goto fail;
        }
        return 0;
fail:
        (void) unlink(staged);
        return r;
}

int deliver_stage(const JobConfig *j, const char *secret) {
        return deliver_stage_full(j, secret, NULL);
}

int deliver_commit_full(const JobConfig *j, const char *expected, char **ret_error) {
        _cleanup_free_ char *staged = deliver_staged_path(j->file);
        struct stat cur;
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (!staged)
                return -ENOMEM;
        /* rename() would replace a symbolic link itself, leaving readers of its target
         * with the old token: refuse, as reading it does. */
        r = inspect_target(j->file, &cur, ret_error);
        if (r < 0)
                return r;
        if (rename(staged, j->file) < 0) {
                _cleanup_erase_ char *have = NULL;
                const char *why;

                r = -errno;
                /* Renamed before, and only the directory's fsync failed? Then the target
                 * holds the expected token: finish the job instead of failing forever. */
                if (r != -ENOENT || !expected || read_token_file(j->file, &have, &why) < 0 ||
                    !streq(have, expected))
                        return set_error(ret_error, r, "cannot rename %s to %s: %s", staged,
                                         j->file, strerror(-r));
        }
        r = fsync_parent_dir(j->file);
        if (r < 0)
                return set_error(ret_error, r, "cannot sync the directory of %s: %s", j->file,
                                 strerror(-r));
        return 0;
}

int deliver_commit(const JobConfig *j) {
        return deliver_commit_full(j, NULL, NULL);
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
