/* SPDX-License-Identifier: MIT */
/* A stub so that this branch builds: restore is implemented on its own branch and
 * replaces this file. */
#include "dtrotated-manager.h"

int job_restore(Job *j, job_request_done_t done, void *userdata, char **ret_refusal) {
        if (ret_refusal)
                *ret_refusal = strdup("restore is not available");
        return -EOPNOTSUPP;
}
