/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* Many deadlines, one timer: a binary min-heap of deadlines, so that the manager arms a
 * single time source at the earliest. sd-event keeps its own sources in such a heap too,
 * but each source costs ~260 bytes, and 10,000 jobs each wait for their next rotation.
 * A Deadline is embedded in what waits for it (container_of()). */
typedef struct Deadline {
        usec_t at;
        size_t index;                /* position in the heap + 1; 0: not queued */
} Deadline;

typedef struct DeadlineHeap {
        Deadline **items;
        size_t n, allocated;
} DeadlineHeap;

/* Queues d for `at`, or moves it there if it is queued already. -ENOMEM. */
int deadline_heap_put(DeadlineHeap *h, Deadline *d, usec_t at);
/* Takes d out of the heap; nothing if it is not queued. */
void deadline_heap_remove(DeadlineHeap *h, Deadline *d);
/* The earliest, or NULL. */
Deadline *deadline_heap_peek(const DeadlineHeap *h);
void deadline_heap_free(DeadlineHeap *h);

static inline bool deadline_queued(const Deadline *d) {
        return d->index > 0;
}
