/* SPDX-License-Identifier: MIT */
/* CurlGlue against a tiny HTTP server on 127.0.0.1 (a forked child, one process per
 * connection) answering canned responses by path:
 *   /hello/N    200 "hello N"
 *   /slow/MS    200 "slow" after MS milliseconds
 *   /close      connection closed without an answer
 *   /big        200, 1 MiB of 'x'
 */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "dtrotated-api.h"
#include "dtrotated-curl.h"

typedef struct Server {
        pid_t pid;
        int port;
} Server;

static void write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return;
                }
                p += k;
                n -= (size_t) k;
        }
}

static void answer(int fd, const char *body, size_t len) {
        char head[256];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n", len);
        write_all(fd, head, (size_t) n);
        write_all(fd, body, len);
}

static void handle(int fd) {
        char req[8192], path[256];
        size_t got = 0;

        while (got < sizeof(req) - 1) {
                ssize_t k = read(fd, req + got, sizeof(req) - 1 - got);
                if (k <= 0)
                        _exit(0);
                got += (size_t) k;
                req[got] = 0;
                if (strstr(req, "\r\n\r\n"))
                        break;
        }
        if (sscanf(req, "%*s %255s", path) != 1)
                _exit(0);

        if (strncmp(path, "/hello/", 7) == 0) {
                char body[300];
                int n = snprintf(body, sizeof(body), "hello %s", path + 7);
                answer(fd, body, (size_t) n);
        } else if (strncmp(path, "/slow/", 6) == 0) {
                long ms = strtol(path + 6, NULL, 10);
                struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
                nanosleep(&ts, NULL);
                answer(fd, "slow", 4);
        } else if (streq(path, "/big")) {
                size_t n = 1024 * 1024;
                char *b = malloc(n);
                if (!b)
                        _exit(1);
                memset(b, 'x', n);
                answer(fd, b, n);
        }
        /* "/close" and anything else: no answer */
        shutdown(fd, SHUT_WR);
        _exit(0);
}

static int server_start(Server *s) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof(a);
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(fd, 64) < 0 ||
            getsockname(fd, (struct sockaddr *) &a, &alen) < 0)
                return -errno;
        s->port = ntohs(a.sin_port);
        s->pid = fork();
        if (s->pid < 0)
                return -errno;
        if (s->pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                signal(SIGCHLD, SIG_IGN); /* connection children reap themselves */
                for (;;) {
                        int c = accept(fd, NULL, NULL);
                        if (c < 0) {
                                if (errno == EINTR)
                                        continue;
                                _exit(1);
                        }
                        if (fork() == 0) {
                                close(fd);
                                handle(c);
                        }
                        close(c);
                }
        }
        close(fd);
        return 0;
}

static void server_stop(Server *s) {
        if (s->pid > 0) {
                kill(s->pid, SIGKILL);
                (void) waitpid(s->pid, NULL, 0);
        }
        s->pid = 0;
}

/* ---- transfers ---- */

typedef struct Transfer {
        CURL *easy;
        char body[64 * 1024];
        size_t size;
        size_t total;
        int calls;
        CURLcode code;
        /* re-entrancy games, run from the callback */
        struct Transfer *remove_other;
        struct Transfer *add_other;
        bool free_easy;
        int *done_counter;
} Transfer;

static size_t on_data(char *p, size_t size, size_t n, void *userdata) {
        Transfer *t = userdata;
        size_t len = size * n, keep = MIN(len, sizeof(t->body) - 1 - t->size);

        memcpy(t->body + t->size, p, keep);
        t->size += keep;
        t->body[t->size] = 0;
        t->total += len;
        return len;
}

static void transfer_init(Transfer *t, const Server *s, const char *path) {
        char url[128];

        memset(t, 0, sizeof(*t));
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
        t->easy = curl_easy_init();
        assert_non_null(t->easy);
        curl_easy_setopt(t->easy, CURLOPT_URL, url);
        curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
}

static void transfer_done(Transfer *t) {
        if (t->easy)
                curl_easy_cleanup(t->easy);
        t->easy = NULL;
}

static void on_done(CurlGlue *g, CURL *easy, CURLcode code, void *userdata) {
        Transfer *t = userdata;

        assert_ptr_equal(easy, t->easy);
        t->calls++;
        t->code = code;
        if (t->done_counter)
                (*t->done_counter)++;
        if (t->remove_other)
                curl_glue_remove(g, t->remove_other->easy);
        if (t->add_other)
                assert_int_equal(curl_glue_add(g, t->add_other->easy, on_done, t->add_other), 0);
        if (t->free_easy) {
                curl_easy_cleanup(t->easy);
                t->easy = NULL;
        }
}

static usec_t now_mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

/* Runs the loop until *counter reaches want or the deadline passes. */
static void run_until(sd_event *e, int *counter, int want, usec_t max) {
        usec_t end = now_mono() + max;

        while (*counter < want) {
                usec_t now = now_mono();
                assert_true(now < end);
                assert_true(sd_event_run(e, end - now) >= 0);
        }
}

/* True when every timerfd of this process is disarmed: that's where sd-event arms its
 * timers, so no time source of the loop is pending. */
static bool no_timer_armed(void) {
        DIR *d = opendir("/proc/self/fdinfo");
        struct dirent *de;
        bool ok = true;

        if (!d)
                return true;
        while ((de = readdir(d))) {
                char path[300], line[256];
                bool timerfd = false;
                FILE *f;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", de->d_name);
                f = fopen(path, "re");
                if (!f)
                        continue;
                while (fgets(line, sizeof(line), f)) {
                        if (strncmp(line, "clockid:", 8) == 0)
                                timerfd = true;
                        if (timerfd && strncmp(line, "it_value:", 9) == 0 && !strstr(line, "(0, 0)"))
                                ok = false;
                }
                fclose(f);
        }
        closedir(d);
        return ok;
}

typedef struct Fixture {
        Server server;
        sd_event *event;
        CurlGlue *glue;
} Fixture;

static int setup(void **state) {
        Fixture *x = calloc(1, sizeof(*x));

        if (!x || server_start(&x->server) < 0)
                return -1;
        if (sd_event_new(&x->event) < 0 || curl_glue_new(x->event, &x->glue) < 0)
                return -1;
        *state = x;
        return 0;
}

static int teardown(void **state) {
        Fixture *x = *state;

        curl_glue_free(x->glue);
        sd_event_unref(x->event);
        server_stop(&x->server);
        free(x);
        return 0;
}

static void test_concurrent(void **state) {
        Fixture *x = *state;
        Transfer t[8];
        int done = 0;

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                char path[32];
                if (i == 6)
                        snprintf(path, sizeof(path), "/close");
                else if (i == 7)
                        snprintf(path, sizeof(path), "/big");
                else if (i % 2)
                        snprintf(path, sizeof(path), "/slow/%zu", 100 * i);
                else
                        snprintf(path, sizeof(path), "/hello/%zu", i);
                transfer_init(&t[i], &x->server, path);
                t[i].done_counter = &done;
                assert_int_equal(curl_glue_add(x->glue, t[i].easy, on_done, &t[i]), 0);
        }
        assert_int_equal(curl_glue_in_flight(x->glue), ELEMENTSOF(t));
        /* The same easy twice is refused. */
        assert_int_equal(curl_glue_add(x->glue, t[0].easy, on_done, &t[0]), -EBUSY);

        run_until(x->event, &done, (int) ELEMENTSOF(t), 10 * USEC_PER_SEC);
        assert_int_equal(curl_glue_in_flight(x->glue), 0);

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                char want[32];
                assert_int_equal(t[i].calls, 1);
                if (i == 6) {
                        assert_int_equal(t[i].code, CURLE_GOT_NOTHING);
                        continue;
                }
                assert_int_equal(t[i].code, CURLE_OK);
                if (i == 7) {
                        assert_int_equal(t[i].total, 1024 * 1024);
                        continue;
                }
                if (i % 2)
                        snprintf(want, sizeof(want), "slow");
                else
                        snprintf(want, sizeof(want), "hello %zu", i);
                assert_string_equal(t[i].body, want);
        }

        /* Nothing in flight: nothing ticks. */
        assert_int_equal(sd_event_run(x->event, 300 * USEC_PER_MSEC), 0);
        assert_true(no_timer_armed());

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                transfer_done(&t[i]);
}

static void test_remove_before_completion(void **state) {
        Fixture *x = *state;
        Transfer slow, fast;
        int done = 0;

        transfer_init(&slow, &x->server, "/slow/1500");
        transfer_init(&fast, &x->server, "/hello/fast");
        slow.done_counter = fast.done_counter = &done;
        assert_int_equal(curl_glue_add(x->glue, slow.easy, on_done, &slow), 0);
        assert_int_equal(curl_glue_add(x->glue, fast.easy, on_done, &fast), 0);

        /* Let both get going, then abandon the slow one. */
        run_until(x->event, &done, 1, 5 * USEC_PER_SEC);
        assert_int_equal(fast.calls, 1);
        /* The check below is not vacuous: with a transfer in flight, curl's timer ticks. */
        assert_true(sd_event_run(x->event, 0) >= 0); /* arms sd-event's timerfd */
        assert_false(no_timer_armed());
        curl_glue_remove(x->glue, slow.easy);
        curl_glue_remove(x->glue, slow.easy); /* twice is fine */
        assert_int_equal(curl_glue_in_flight(x->glue), 0);

        /* Long past the slow answer: no callback, nothing happens. */
        assert_int_equal(sd_event_run(x->event, 1800 * USEC_PER_MSEC), 0);
        assert_int_equal(slow.calls, 0);
        assert_true(no_timer_armed());

        /* The abandoned easy can be used again. */
        curl_easy_setopt(slow.easy, CURLOPT_URL, "http://127.0.0.1:1/");
        slow.size = 0;
        assert_int_equal(curl_glue_add(x->glue, slow.easy, on_done, &slow), 0);
        run_until(x->event, &done, 2, 5 * USEC_PER_SEC);
        assert_int_equal(slow.calls, 1);
        assert_int_equal(slow.code, CURLE_COULDNT_CONNECT);

        transfer_done(&slow);
        transfer_done(&fast);
}

/* Callbacks that remove another transfer (whether it finished in the same batch or is
 * still running, it must never be called back), add a new one, and free their own easy. */
static void test_reentrancy(void **state) {
        Fixture *x = *state;
        Transfer a, b, c;
        int done = 0;

        /* a and b fail at once (nothing listens on port 1), likely in the same batch. */
        memset(&a, 0, sizeof(a));
        transfer_init(&a, &x->server, "/x");
        transfer_init(&b, &x->server, "/x");
        transfer_init(&c, &x->server, "/hello/c");
        curl_easy_setopt(a.easy, CURLOPT_URL, "http://127.0.0.1:1/");
        curl_easy_setopt(b.easy, CURLOPT_URL, "http://127.0.0.1:1/");
        a.done_counter = b.done_counter = c.done_counter = &done;
        a.remove_other = &b;
        b.remove_other = &a;
        a.add_other = &c;
        b.add_other = &c;
        a.free_easy = b.free_easy = true;

        assert_int_equal(curl_glue_add(x->glue, a.easy, on_done, &a), 0);
        assert_int_equal(curl_glue_add(x->glue, b.easy, on_done, &b), 0);
        run_until(x->event, &done, 2, 5 * USEC_PER_SEC); /* the first of a/b, then c */

        assert_int_equal(a.calls + b.calls, 1);
        assert_int_equal(c.calls, 1);
        assert_int_equal(c.code, CURLE_OK);
        assert_string_equal(c.body, "hello c");
        assert_int_equal(curl_glue_in_flight(x->glue), 0);
        assert_int_equal(sd_event_run(x->event, 200 * USEC_PER_MSEC), 0);
        assert_int_equal(a.calls + b.calls, 1);

        transfer_done(&a);
        transfer_done(&b);
        transfer_done(&c);
}

static void test_timeout(void **state) {
        Fixture *x = *state;
        Transfer t;
        int done = 0;
        usec_t start = now_mono();

        transfer_init(&t, &x->server, "/slow/3000");
        curl_easy_setopt(t.easy, CURLOPT_TIMEOUT_MS, 300L);
        t.done_counter = &done;
        assert_int_equal(curl_glue_add(x->glue, t.easy, on_done, &t), 0);
        run_until(x->event, &done, 1, 5 * USEC_PER_SEC);
        assert_int_equal(t.code, CURLE_OPERATION_TIMEDOUT);
        assert_true(now_mono() - start < 2 * USEC_PER_SEC);
        assert_true(no_timer_armed());
        transfer_done(&t);
}

/* Freeing the glue with transfers in flight: no callbacks, nothing leaks (valgrind). */
static void test_free_in_flight(void **state) {
        Fixture *x = *state;
        CurlGlue *g = NULL;
        Transfer t[3];
        int done = 0;

        assert_int_equal(curl_glue_new(x->event, &g), 0);
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                transfer_init(&t[i], &x->server, "/slow/2000");
                t[i].done_counter = &done;
                assert_int_equal(curl_glue_add(g, t[i].easy, on_done, &t[i]), 0);
        }
        /* Connect and send. */
        for (int i = 0; i < 5; i++)
                (void) sd_event_run(x->event, 50 * USEC_PER_MSEC);
        assert_int_equal(curl_glue_in_flight(g), 3);
        g = curl_glue_free(g);
        assert_int_equal(sd_event_run(x->event, 200 * USEC_PER_MSEC), 0);
        assert_int_equal(done, 0);
        assert_true(no_timer_armed());
        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                transfer_done(&t[i]);
}

static void test_misc(void **state) {
        Fixture *x = *state;
        CURL *e = curl_easy_init();

        curl_glue_remove(x->glue, e);           /* never added: nothing happens */
        curl_glue_remove(x->glue, NULL);
        curl_glue_remove(NULL, e);
        assert_int_equal(curl_glue_add(x->glue, NULL, on_done, NULL), -EINVAL);
        assert_int_equal(curl_glue_add(x->glue, e, NULL, NULL), -EINVAL);
        assert_int_equal(curl_glue_in_flight(NULL), 0);
        assert_null(curl_glue_free(NULL));
        assert_int_equal(curl_glue_new(NULL, NULL), -EINVAL);
        curl_easy_cleanup(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_remove_before_completion, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reentrancy, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
                cmocka_unit_test_setup_teardown(test_misc, setup, teardown),
        };

        signal(SIGPIPE, SIG_IGN);
        /* As dtrotated does: the glue must work with the allocators that wipe. */
        if (api_global_init() < 0) {
                fprintf(stderr, "api_global_init() failed\n");
                return 1;
        }
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        api_global_cleanup();
        return r;
}
