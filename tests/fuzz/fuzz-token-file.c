/* SPDX-License-Identifier: MIT */
/* Token file reading: any bytes give a token or a clear refusal, never a partial secret.
 * The input is the file's content. */
#include <ctype.h>

#include "dtrotated-util.h"
#include "fuzz-common.h"

static char path[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        fuzz_setup();
        snprintf(path, sizeof(path), "%s/token", fuzz_dir);
        return 0;
}

/* The longest run of letters and digits: a secret (legacy: 16 or more, v2: 64) in a
 * message would be one. */
static size_t longest_alnum_run(const char *s) {
        size_t best = 0, n = 0;

        for (; *s; s++) {
                n = isalnum((unsigned char) *s) ? n + 1 : 0;
                best = MAX(best, n);
        }
        return best;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *token = (char *) 0x1;   /* must stay untouched on failure */
        const char *error = NULL;
        int r;

        fuzz_write_file(path, data, size);
        r = read_token_file(path, &token, &error);
        if (r >= 0) {
                const uint8_t *at;
                size_t n;

                fuzz_check(r == 0);
                fuzz_check(token && token != (char *) 0x1);
                fuzz_check(!error);
                fuzz_check(token_is_valid(token));
                fuzz_check(size <= 4096);
                /* The token is the file's one word: the whole input but white space. */
                n = strlen(token);
                at = memmem(data, size, token, n);
                fuzz_check(at);
                for (size_t i = 0; i < size; i++)
                        fuzz_check((data + i >= at && data + i < at + n) ||
                                   (data[i] != 0 && strchr(" \t\r\n\v\f", data[i])));
                erase_and_free(token);
        } else {
                fuzz_check(token == (char *) 0x1);
                fuzz_check(IN_SET(r, -EBADMSG, -EFBIG));
                fuzz_check(error && *error);
                fuzz_check(longest_alnum_run(error) < 16);
        }
        return 0;
}
