/* SPDX-License-Identifier: MIT */
/* Journal replay: any bytes as DIR/journal give replayed state or a clean refusal
 * ("DIR/journal: offset N: ..."), never a crash. The records replayed are applied to a
 * manager's state with the daemon's own manager_apply_record(). Then, when the journal
 * opens for writing, what the daemon would do next must keep that state: compaction
 * (the live state rewritten) and an append, replayed again, give the same state.
 *
 * Each input runs twice: as it is, and with the checksum of every record line
 * recomputed, so that mutations reach the record parser and the state machine instead
 * of stopping at a checksum the fuzzer cannot guess. */
#include <syslog.h>
#include <zlib.h>

#include "dtrotated-journal.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"
#include "fuzz-common.h"

static char journal_path[PATH_MAX];
static Config config;

typedef struct Replay {
        Manager *m;
        FILE *log;              /* the records, one line each */
        char *text;
        size_t size;
} Replay;

static void replay_init(Replay *rp) {
        *rp = (Replay) {};
        rp->m = calloc(1, sizeof(Manager));
        fuzz_check(rp->m);
        rp->m->config = &config;
        rp->log = open_memstream(&rp->text, &rp->size);
        fuzz_check(rp->log);
}

static void replay_done(Replay *rp) {
        if (rp->log)
                fclose(rp->log);
        free(rp->text);
        rp->m->config = NULL; /* static, not the manager's to free */
        manager_free(rp->m);
        *rp = (Replay) {};
}

static const char *str(const char *s) {
        return s ?: "(null)";
}

static int on_replay(const JournalRecord *r, void *userdata) {
        Replay *rp = userdata;

        fprintf(rp->log, "%s job=%s env=%s id=%s old=%s name=%s at=%llu created=%llu expires=%llu grace=%llu until=%llu\n",
                journal_type_to_string(r->type), str(r->job), str(r->env), str(r->id), str(r->old_id),
                str(r->name), (unsigned long long) r->at, (unsigned long long) r->created,
                (unsigned long long) r->expires, (unsigned long long) r->grace,
                (unsigned long long) r->until);
        return manager_apply_record(rp->m, r);
}

static const char *replay_records(Replay *rp) {
        fuzz_check(fflush(rp->log) == 0);
        return rp->text ?: "";
}

static int cmp_lines(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

/* The manager's persistent state as sorted lines (list order may differ after a
 * compaction, the state may not). malloc'ed. */
static char *dump_state(Manager *m) {
        char *lines[4096], *text = NULL;
        size_t n = 0, size = 0;
        FILE *f;

#define LINE(...) do { fuzz_check(n < ELEMENTSOF(lines)); fuzz_check(asprintf(&lines[n++], __VA_ARGS__) >= 0); } while (0)
        for (Job *j = m->jobs; j; j = j->next) {
                LINE("job %s env=%s phase=%s cur=%s %llu %llu rotated=%llu held=%d restore=%s", j->name,
                     j->env ? j->env->name : "-", job_phase_to_string(j->phase), str(j->cur_id),
                     (unsigned long long) j->cur_created, (unsigned long long) j->cur_expires,
                     (unsigned long long) j->rotated_at, (int) j->held, str(j->restore_id));
                if (j->phase == PHASE_INTENT || j->phase == PHASE_DELIVERED)
                        LINE("job %s create %llu..%llu name=%s", j->name,
                             (unsigned long long) j->create_first, (unsigned long long) j->create_last,
                             str(j->create_name));
                if (j->phase == PHASE_DELIVERED)
                        LINE("job %s delivered=%s %llu %llu", j->name, str(j->delivered_id),
                             (unsigned long long) j->delivered_created,
                             (unsigned long long) j->delivered_expires);
        }
        for (Retirement *r = m->retirements; r; r = r->next)
                LINE("retire env=%s id=%s job=%s revoke=%llu grace=%llu state=%d delete=%llu unused=%llu until=%llu",
                     r->env_name, r->id, str(r->job), (unsigned long long) r->revoke_at,
                     (unsigned long long) r->grace, (int) r->state,
                     r->state == RETIRE_WAIT_DELETE ? (unsigned long long) r->delete_at : 0ULL,
                     (unsigned long long) r->unused, (unsigned long long) r->unused_until);
        for (Scan *s = m->scans; s; s = s->next)
                LINE("scan env=%s job=%s name=%s %llu..%llu grace=%llu", s->env_name, s->job, s->name,
                     (unsigned long long) s->from, (unsigned long long) s->until,
                     (unsigned long long) s->grace);
#undef LINE
        qsort(lines, n, sizeof(char *), cmp_lines);
        f = open_memstream(&text, &size);
        fuzz_check(f);
        for (size_t i = 0; i < n; i++) {
                fprintf(f, "%s\n", lines[i]);
                free(lines[i]);
        }
        fuzz_check(fclose(f) == 0);
        return text;
}

/* A refusal names the file and, but for the few that concern the file as a whole,
 * the offset. */
static void check_error(int r, const char *error) {
        fuzz_check(r != -ENOMEM && r != -EINVAL && r != -EBUSY);
        fuzz_check(error);
        fuzz_check(strncmp(error, journal_path, strlen(journal_path)) == 0);
        fuzz_check(error[strlen(journal_path)] == ':');
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        fuzz_setup();
        snprintf(journal_path, sizeof(journal_path), "%s/journal", fuzz_dir);
        config = (Config) { .state_directory = fuzz_dir, .retry_max_delay = USEC_PER_HOUR };
        return 0;
}

/* A copy with "CCCCCCCC " in front of each line after the first replaced by the CRC-32
 * of the rest of the line (the journal's checksum). */
static uint8_t *fix_checksums(const uint8_t *data, size_t size) {
        uint8_t *copy = malloc(size ?: 1);
        const uint8_t *nl = memchr(data, '\n', size);

        fuzz_check(copy);
        memcpy(copy, data, size);
        for (size_t i = nl ? (size_t) (nl - data) + 1 : size; i < size;) {
                const uint8_t *e = memchr(copy + i, '\n', size - i);
                size_t end = e ? (size_t) (e - copy) : size;

                if (end - i >= 9 && copy[i + 8] == ' ') {
                        char hex[9];
                        uLong crc = crc32(0L, copy + i + 9, (uInt) (end - i - 9));
                        snprintf(hex, sizeof(hex), "%08lx", crc & 0xffffffffUL);
                        memcpy(copy + i, hex, 8);
                }
                i = end + 1;
        }
        return copy;
}

static void run_one(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ uint8_t *fixed = fix_checksums(data, size);

        run_one(data, size);
        if (memcmp(fixed, data, size) != 0)
                run_one(fixed, size);
        return 0;
}

static void run_one(const uint8_t *data, size_t size) {
        _cleanup_free_ char *error_ro = NULL, *error_rw = NULL, *error_again = NULL;
        _cleanup_free_ char *state_before = NULL, *state_after = NULL;
        Replay ro, rw, again;
        Journal *j = NULL;
        int r_ro, r_rw, r;

        fuzz_clean_dir();
        fuzz_write_file(journal_path, data, size);

        /* A status reader's view. */
        replay_init(&ro);
        r_ro = journal_open_readonly(fuzz_dir, on_replay, &ro, &error_ro);
        if (r_ro < 0)
                check_error(r_ro, error_ro);
        else
                fuzz_check(r_ro == 0 && !error_ro);

        /* The daemon's: the same verdict on the same records. */
        replay_init(&rw);
        r_rw = journal_open(fuzz_dir, on_replay, &rw, &j, &error_rw);
        if (r_rw < 0) {
                check_error(r_rw, error_rw);
                fuzz_check(!j);
        } else
                fuzz_check(r_rw == 0 && j && !error_rw);
        fuzz_check(r_ro == r_rw);
        fuzz_check(strcmp(replay_records(&ro), replay_records(&rw)) == 0);
        replay_done(&ro);

        if (r_rw < 0) {
                replay_done(&rw);
                return;
        }

        /* Compaction, then one more batch (cutting off any torn tail): replayed, the
         * same state as in memory. */
        rw.m->journal = j;
        state_before = dump_state(rw.m);
        r = journal_compact(j, manager_emit_live_records, rw.m);
        fuzz_check(r == 0);
        {
                JournalRecord batch[2] = {
                        { .type = JOURNAL_JOB, .job = "fuzz-job", .env = "fuzz-env",
                          .id = "00000000-0000-0000-0000-000000000000", .created = 1, .expires = USEC_INFINITY },
                        { .type = JOURNAL_RETIRE, .env = "fuzz-env", .id = "fuzz-id", .at = 2, .grace = 3 },
                };
                r = journal_append(j, batch, ELEMENTSOF(batch));
                fuzz_check(r == 0);
                for (size_t i = 0; i < ELEMENTSOF(batch); i++)
                        fuzz_check(manager_apply_record(rw.m, &batch[i]) == 0);
        }
        state_after = dump_state(rw.m);
        rw.m->journal = NULL;
        journal_close(j);

        replay_init(&again);
        r = journal_open_readonly(fuzz_dir, on_replay, &again, &error_again);
        if (r < 0)
                fprintf(stderr, "%s\n", strna(error_again));
        fuzz_check(r == 0);
        {
                _cleanup_free_ char *state = dump_state(again.m);
                if (strcmp(state, state_after) != 0)
                        fprintf(stderr, "before compaction:\n%sin memory:\n%sreplayed:\n%s", state_before,
                                state_after, state);
                fuzz_check(strcmp(state, state_after) == 0);
        }
        replay_done(&again);
        replay_done(&rw);
}
