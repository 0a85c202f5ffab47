/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "dtrotated-deadline.h"

static void heap_set(DeadlineHeap *h, size_t i, Deadline *d) {
        h->items[i] = d;
        d->index = i + 1;
}

static void heap_up(DeadlineHeap *h, size_t i) {
        Deadline *d = h->items[i];

        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (h->items[parent]->at <= d->at)
                        break;
                heap_set(h, i, h->items[parent]);
                i = parent;
        }
        heap_set(h, i, d);
}

static void heap_down(DeadlineHeap *h, size_t i) {
        Deadline *d = h->items[i];

        for (;;) {
                size_t child = 2 * i + 1;
                if (child >= h->n)
                        break;
                if (child + 1 < h->n && h->items[child + 1]->at < h->items[child]->at)
                        child++;
                if (d->at <= h->items[child]->at)
                        break;
                heap_set(h, i, h->items[child]);
                i = child;
        }
        heap_set(h, i, d);
}

/* A deadline that moved: up or down, whichever restores the order. */
static void heap_fix(DeadlineHeap *h, size_t i) {
        Deadline *d = h->items[i];

        heap_up(h, i);
        if (d->index - 1 == i)       /* it did not move up: perhaps down */
                heap_down(h, i);
}

int deadline_heap_put(DeadlineHeap *h, Deadline *d, usec_t at) {
        d->at = at;
        if (deadline_queued(d)) {
                heap_fix(h, d->index - 1);
                return 0;
        }
        if (h->n == h->allocated) {
                size_t a = h->allocated ? h->allocated * 2 : 64;
                Deadline **items = reallocarray(h->items, a, sizeof(Deadline *));
                if (!items)
                        return -ENOMEM;
                h->items = items;
                h->allocated = a;
        }
        h->items[h->n++] = d;
        heap_up(h, h->n - 1);
        return 0;
}

void deadline_heap_remove(DeadlineHeap *h, Deadline *d) {
        size_t i;
        Deadline *last;

        if (!deadline_queued(d))
                return;
        i = d->index - 1;
        d->index = 0;
        last = h->items[--h->n];
        if (last == d)
                return;
        heap_set(h, i, last);
        heap_fix(h, i);
}

Deadline *deadline_heap_peek(const DeadlineHeap *h) {
        return h->n > 0 ? h->items[0] : NULL;
}

void deadline_heap_free(DeadlineHeap *h) {
        for (size_t i = 0; i < h->n; i++)
                h->items[i]->index = 0;
        free(h->items);
        *h = (DeadlineHeap) {};
}
