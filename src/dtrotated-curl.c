/* SPDX-License-Identifier: MIT */
#include <sys/epoll.h>

#include "dtrotated-curl.h"
#include "dtrotated-log.h"
#include "dtrotated-util.h"

/* libcurl's multi socket interface on sd-event, after systemd's curl-util.c:
 *
 *  - CURLMOPT_SOCKETFUNCTION: one sd-event io source per socket curl wants watched,
 *    found again through curl_multi_assign();
 *  - CURLMOPT_TIMERFUNCTION: one CLOCK_MONOTONIC time source, re-armed or turned off
 *    as curl asks, so nothing ticks while nothing is in flight; "at once" (0 ms, which
 *    curl asks for each transfer it is given) is a defer source instead, which runs in
 *    the next event-loop iteration without re-arming a timerfd and waking up for it;
 *  - both handlers feed curl_multi_socket_action() and then hand finished transfers to
 *    their callbacks.
 *
 * CURLOPT_PRIVATE belongs to whoever built the easy handle (the API module), so the
 * glue keeps its own record per transfer in a list. Completions are first collected
 * (each easy removed from the multi and its record moved to the finished list), then
 * dispatched one by one: a callback may add transfers (even the same easy again),
 * remove others (a finished one not yet dispatched is then never called back) and free
 * its easy handle. It must not free the glue itself.
 *
 * Errors in curl's callbacks are not returned to curl: a -1 there marks the whole multi
 * handle dead in libcurl. A socket we could not watch still ends by its timeout. */

typedef struct GlueTransfer GlueTransfer;
struct GlueTransfer {
        CURL *easy;
        curl_glue_done_t cb;
        void *userdata;
        CURLcode result;
        GlueTransfer *next;
};

typedef struct GlueSocket GlueSocket;
struct GlueSocket {
        CurlGlue *glue;
        curl_socket_t fd;
        sd_event_source *source;
        GlueSocket *prev, *next;
};

struct CurlGlue {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        sd_event_source *now;         /* defer: curl's timeout of 0 ms */
        GlueTransfer *transfers;      /* in the multi */
        GlueTransfer *finished;       /* out of the multi, callback not yet run */
        size_t n_transfers;           /* both lists */
        GlueSocket *sockets;
};

/* ---- sockets ---- */

static void glue_socket_free(CurlGlue *g, GlueSocket *s) {
        if (!s)
                return;
        if (s->prev)
                s->prev->next = s->next;
        else
                g->sockets = s->next;
        if (s->next)
                s->next->prev = s->prev;
        sd_event_source_disable_unref(s->source);
        free(s);
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata);

static uint32_t poll_to_epoll(int what) {
        switch (what) {
        case CURL_POLL_IN:
                return EPOLLIN;
        case CURL_POLL_OUT:
                return EPOLLOUT;
        case CURL_POLL_INOUT:
                return EPOLLIN | EPOLLOUT;
        default:
                return 0;
        }
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        CurlGlue *g = userp;
        GlueSocket *s = socketp;
        uint32_t events;
        int r;

        if (what == CURL_POLL_REMOVE) {
                glue_socket_free(g, s);
                return 0;
        }
        events = poll_to_epoll(what);

        if (s) {
                r = sd_event_source_set_io_events(s->source, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s->source, SD_EVENT_ON);
                if (r < 0)
                        log_warning_errno(r, "Cannot watch curl's socket %d: %s", (int) fd, strerror(-r));
                return 0;
        }

        /* A record for this fd number that curl never told us to remove is stale (the
         * socket was closed behind our back): drop it before registering the new one. */
        for (GlueSocket *i = g->sockets; i; i = i->next)
                if (i->fd == fd) {
                        glue_socket_free(g, i);
                        break;
                }

        s = calloc(1, sizeof(*s));
        if (!s) {
                log_warning("Cannot watch curl's socket %d: out of memory", (int) fd);
                return 0;
        }
        s->glue = g;
        s->fd = fd;
        r = sd_event_add_io(g->event, &s->source, fd, events, on_io, s);
        if (r < 0) {
                free(s);
                log_warning_errno(r, "Cannot watch curl's socket %d: %s", (int) fd, strerror(-r));
                return 0;
        }
        (void) sd_event_source_set_description(s->source, "curl-io");
        if (curl_multi_assign(g->multi, fd, s) != CURLM_OK) {
                sd_event_source_disable_unref(s->source);
                free(s);
                log_warning("Cannot watch curl's socket %d: curl_multi_assign() failed", (int) fd);
                return 0;
        }
        s->next = g->sockets;
        if (g->sockets)
                g->sockets->prev = s;
        g->sockets = s;
        return 0;
}

/* ---- completions ---- */

static GlueTransfer *transfer_unlink(GlueTransfer **head, const CURL *easy) {
        for (GlueTransfer **p = head; *p; p = &(*p)->next)
                if ((*p)->easy == easy) {
                        GlueTransfer *t = *p;
                        *p = t->next;
                        t->next = NULL;
                        return t;
                }
        return NULL;
}

static void glue_dispatch(CurlGlue *g) {
        GlueTransfer **tail = &g->finished;
        CURLMsg *msg;
        int left;

        while (*tail)
                tail = &(*tail)->next;

        /* Collect first: the callbacks may change the multi. */
        while ((msg = curl_multi_info_read(g->multi, &left))) {
                CURL *easy = msg->easy_handle;
                CURLcode result = msg->data.result;
                GlueTransfer *t;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                /* msg is invalid after curl_multi_remove_handle(). */
                (void) curl_multi_remove_handle(g->multi, easy);
                t = transfer_unlink(&g->transfers, easy);
                if (!t)
                        continue;
                t->result = result;
                *tail = t;
                tail = &t->next;
        }

        /* Then dispatch, one at a time: curl_glue_remove() may take later ones away. */
        while (g->finished) {
                GlueTransfer *t = g->finished;
                curl_glue_done_t cb = t->cb;
                void *userdata = t->userdata;
                CURL *easy = t->easy;
                CURLcode result = t->result;

                g->finished = t->next;
                g->n_transfers--;
                free(t);
                cb(g, easy, result, userdata);
        }
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        GlueSocket *s = userdata;
        CurlGlue *g = s->glue; /* s may be freed by curl_multi_socket_action() */
        int action = 0, running;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;

        if (curl_multi_socket_action(g->multi, fd, action, &running) != CURLM_OK)
                log_debug("curl_multi_socket_action() failed on socket %d", fd);
        glue_dispatch(g);
        return 0;
}

/* ---- timer ---- */

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        CurlGlue *g = userdata;
        int running;

        if (curl_multi_socket_action(g->multi, CURL_SOCKET_TIMEOUT, 0, &running) != CURLM_OK)
                log_debug("curl_multi_socket_action() failed on timeout");
        glue_dispatch(g);
        return 0;
}

static int on_now(sd_event_source *source, void *userdata) {
        return on_timer(source, 0, userdata);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
        CurlGlue *g = userp;
        usec_t usec;
        int r;

        if (timeout_ms < 0) {
                if (g->timer)
                        (void) sd_event_source_set_enabled(g->timer, SD_EVENT_OFF);
                if (g->now)
                        (void) sd_event_source_set_enabled(g->now, SD_EVENT_OFF);
                return 0;
        }
        if (timeout_ms == 0) {
                /* An armed timer is left as it is: its firing early is harmless (curl
                 * looks at its own deadlines), turning it off would cost a re-arm. */
                if (g->now)
                        r = sd_event_source_set_enabled(g->now, SD_EVENT_ONESHOT);
                else {
                        r = sd_event_add_defer(g->event, &g->now, on_now, g);
                        if (r >= 0)
                                (void) sd_event_source_set_description(g->now, "curl-now");
                }
                if (r >= 0)
                        return 0;
                /* fall back to the timer */
        } else if (g->now)
                /* Each call replaces the one before: "at once" no longer holds. */
                (void) sd_event_source_set_enabled(g->now, SD_EVENT_OFF);
        usec = (usec_t) timeout_ms > (USEC_INFINITY - 1) / USEC_PER_MSEC ? USEC_INFINITY - 1
                                                                            : (usec_t) timeout_ms * USEC_PER_MSEC;
        if (g->timer) {
                uint64_t armed, now = now_monotonic();
                int enabled = SD_EVENT_OFF;

                /* curl moves its deadline on with every step of every transfer; each move
                 * would re-arm the timerfd. An earlier deadline that is still armed is
                 * kept instead: it fires early, curl finds nothing due and asks again. */
                if (timeout_ms > 0 && sd_event_source_get_enabled(g->timer, &enabled) >= 0 &&
                    enabled != SD_EVENT_OFF && sd_event_source_get_time(g->timer, &armed) >= 0 &&
                    (armed <= now || armed - now <= usec))
                        return 0;
                r = sd_event_source_set_time_relative(g->timer, usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(g->timer, SD_EVENT_ONESHOT);
        } else {
                r = sd_event_add_time_relative(g->event, &g->timer, CLOCK_MONOTONIC, usec,
                                               USEC_PER_MSEC, on_timer, g);
                if (r >= 0)
                        (void) sd_event_source_set_description(g->timer, "curl-timer");
        }
        if (r < 0)
                log_warning_errno(r, "Cannot arm curl's timer: %s", strerror(-r));
        return 0;
}

/* ---- public ---- */

int curl_glue_new(sd_event *event, CurlGlue **ret) {
        CurlGlue *g;

        if (!event || !ret)
                return -EINVAL;
        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->event = sd_event_ref(event);
        g->multi = curl_multi_init();
        if (!g->multi) {
                curl_glue_free(g);
                return -ENOMEM;
        }
        if (curl_multi_setopt(g->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_SOCKETDATA, g) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_TIMERDATA, g) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_MAXCONNECTS, 64L) != CURLM_OK) {
                curl_glue_free(g);
                return -EIO;
        }
        *ret = g;
        return 0;
}

CurlGlue *curl_glue_free(CurlGlue *g) {
        if (!g)
                return NULL;
        while (g->transfers) {
                GlueTransfer *t = g->transfers;
                g->transfers = t->next;
                (void) curl_multi_remove_handle(g->multi, t->easy);
                free(t);
        }
        while (g->finished) {
                GlueTransfer *t = g->finished;
                g->finished = t->next;
                free(t);
        }
        g->n_transfers = 0;
        if (g->multi)
                curl_multi_cleanup(g->multi); /* may still report sockets removed */
        while (g->sockets)
                glue_socket_free(g, g->sockets);
        sd_event_source_disable_unref(g->timer);
        sd_event_source_disable_unref(g->now);
        sd_event_unref(g->event);
        free(g);
        return NULL;
}

int curl_glue_add(CurlGlue *g, CURL *easy, curl_glue_done_t cb, void *userdata) {
        GlueTransfer *t;
        CURLMcode c;

        if (!g || !easy || !cb)
                return -EINVAL;
        for (t = g->transfers; t; t = t->next)
                if (t->easy == easy)
                        return -EBUSY;
        for (t = g->finished; t; t = t->next)
                if (t->easy == easy)
                        return -EBUSY;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *t = (GlueTransfer) { .easy = easy, .cb = cb, .userdata = userdata };
        /* Link first: adding makes curl arm the timer, which is all that runs now. */
        t->next = g->transfers;
        g->transfers = t;
        g->n_transfers++;
        c = curl_multi_add_handle(g->multi, easy);
        if (c != CURLM_OK) {
                (void) transfer_unlink(&g->transfers, easy);
                g->n_transfers--;
                free(t);
                return c == CURLM_OUT_OF_MEMORY ? -ENOMEM : c == CURLM_ADDED_ALREADY ? -EBUSY : -EIO;
        }
        return 0;
}

void curl_glue_remove(CurlGlue *g, CURL *easy) {
        GlueTransfer *t;

        if (!g || !easy)
                return;
        t = transfer_unlink(&g->transfers, easy);
        if (t)
                (void) curl_multi_remove_handle(g->multi, easy);
        else
                t = transfer_unlink(&g->finished, easy); /* out of the multi already */
        if (!t)
                return;
        g->n_transfers--;
        free(t);
}

size_t curl_glue_in_flight(CurlGlue *g) {
        return g ? g->n_transfers : 0;
}
