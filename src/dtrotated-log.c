/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "dtrotated-log.h"
#include "dtrotated-util.h"

/* The only process-wide state outside the Manager: where log lines go. It is set once
 * at start-up, before anything else runs. */
static struct {
        bool setup;
        bool stderr_too;
        bool stderr_broken;   /* a write to stderr failed (EPIPE, closed): stop trying */
        bool journald;
        usec_t syslog_missing_since; /* /dev/log was not there at this time (0: it was) */
        int max_level;
} log_target = { .max_level = LOG_INFO };

/* How long to believe that no syslog daemon listens before looking again. */
#define SYSLOG_RECHECK_USEC (10 * USEC_PER_SEC)

/* Without a listener on /dev/log, syslog(3) makes socket(), connect(), close() and
 * getpid() for every line only to drop it. Look for the socket at most every
 * SYSLOG_RECHECK_USEC instead; a syslog daemon started later is still found. */
static bool syslog_listening(void) {
        usec_t now;

        if (log_target.syslog_missing_since == 0)
                return true;
        now = now_monotonic();
        if (now - log_target.syslog_missing_since < SYSLOG_RECHECK_USEC)
                return false;
        if (access("/dev/log", W_OK) < 0) {
                log_target.syslog_missing_since = now;
                return false;
        }
        log_target.syslog_missing_since = 0;
        openlog("dtrotated", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        return true;
}

void log_setup(bool also_stderr) {
        log_target.stderr_too = also_stderr;
        /* Where journald runs, talk to it directly so that lines carry structured fields;
         * elsewhere plain syslog(3). */
        log_target.journald = access("/run/systemd/journal/socket", W_OK) == 0;
        if (!log_target.journald) {
                if (access("/dev/log", W_OK) < 0)
                        log_target.syslog_missing_since = MAX(now_monotonic(), (usec_t) 1);
                else
                        openlog("dtrotated", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        }
        log_target.setup = true;
}

void log_set_max_level(int prio) {
        log_target.max_level = prio;
}

static void add_field(struct iovec *iov, size_t *n, char *buf, size_t size, const char *fmt, ...)
        _printf_(5, 6);
static void add_field(struct iovec *iov, size_t *n, char *buf, size_t size, const char *fmt, ...) {
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        if (k < 0)
                return;
        iov[(*n)++] = (struct iovec) { buf, MIN((size_t) k, size - 1) };
}

/* Control characters in a line (a token name with a newline, an API message with an
 * escape sequence) would let an API answer forge log lines or terminal output: they are
 * written as \xNN. Returns buf. */
static char *escape_controls(char *buf, size_t size, const char *msg) {
        size_t o = 0;

        for (const unsigned char *p = (const unsigned char *) msg; *p && o + 5 < size; p++) {
                if (*p < 0x20 || *p == 0x7f)
                        o += (size_t) snprintf(buf + o, size - o, "\\x%02x", *p);
                else
                        buf[o++] = (char) *p;
        }
        buf[o] = 0;
        return buf;
}

static void log_to_stderr(const char *msg) {
        if (log_target.stderr_broken)
                return;
        /* SIGPIPE is ignored (main): a closed reader gives EPIPE here, never a dead daemon. */
        if (fprintf(stderr, "dtrotated: %s\n", msg) < 0 || fflush(stderr) == EOF) {
                log_target.stderr_broken = true;
                clearerr(stderr);
        }
}

static void log_emit(int prio, const char *raw, const char *job, const char *msgid,
                     const char *old_id, const char *new_id) {
        char msg[4 * 2048 + 8];

        if (prio > log_target.max_level)
                return;
        escape_controls(msg, sizeof(msg), raw);
        if (!log_target.setup || log_target.stderr_too)
                log_to_stderr(msg);
        if (!log_target.setup)
                return; /* unit tests: stderr only */
        if (log_target.journald) {
                char f[7][160];
                _cleanup_free_ char *m = strdup_printf("MESSAGE=%s", msg);
                struct iovec iov[8];
                size_t n = 0;

                if (m)
                        iov[n++] = (struct iovec) { m, strlen(m) };
                add_field(iov, &n, f[0], sizeof(f[0]), "PRIORITY=%d", prio);
                add_field(iov, &n, f[1], sizeof(f[1]), "SYSLOG_IDENTIFIER=dtrotated");
                add_field(iov, &n, f[2], sizeof(f[2]), "SYSLOG_FACILITY=%d", LOG_DAEMON >> 3);
                if (job)
                        add_field(iov, &n, f[3], sizeof(f[3]), "DTROTATED_JOB=%s", job);
                if (msgid)
                        add_field(iov, &n, f[4], sizeof(f[4]), "MESSAGE_ID=%s", msgid);
                if (old_id)
                        add_field(iov, &n, f[5], sizeof(f[5]), "DTROTATED_OLD_TOKEN_ID=%s", old_id);
                if (new_id)
                        add_field(iov, &n, f[6], sizeof(f[6]), "DTROTATED_TOKEN_ID=%s", new_id);
                if (m && sd_journal_sendv(iov, (int) n) >= 0)
                        return;
                /* journald went away: fall back to syslog below */
        }
        if (syslog_listening())
                syslog(LOG_DAEMON | prio, "%s", msg);
}

static int log_errno_result(int error) {
        return error == 0 ? 0 : -abs(error);
}

int log_full(int prio, int error, const char *fmt, ...) {
        char buf[2048];
        va_list ap;
        int saved = errno;

        if (prio > log_target.max_level)
                return log_errno_result(error);
        errno = abs(error); /* so that %m works */
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        log_emit(prio, buf, NULL, NULL, NULL, NULL);
        errno = saved;
        return log_errno_result(error);
}

int log_job(int prio, const char *job, const char *msgid, const char *old_id, const char *new_id,
            int error, const char *fmt, ...) {
        char buf[2048];
        va_list ap;
        int k, saved = errno;

        if (prio > log_target.max_level)
                return log_errno_result(error);
        errno = abs(error);
        k = snprintf(buf, sizeof(buf), "%s: ", job);
        if (k < 0 || (size_t) k >= sizeof(buf))
                k = 0;
        va_start(ap, fmt);
        vsnprintf(buf + k, sizeof(buf) - (size_t) k, fmt, ap);
        va_end(ap);
        log_emit(prio, buf, job, msgid, old_id, new_id);
        errno = saved;
        return log_errno_result(error);
}
