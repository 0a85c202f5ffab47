/* SPDX-License-Identifier: MIT */
#pragma once

#include <sys/types.h>

#include "macro.h"

/* The control socket: Varlink-style JSON requests, each terminated by a NUL byte, from
 * dtrotatectl (or varlinkctl) to the daemon. Methods under io.dtrotated.* (Status, Rotate,
 * RevokeNow, Restore, Retry, Reload) and org.varlink.service's GetInfo and
 * GetInterfaceDescription; dtrotated(8) describes them. */

typedef struct Manager Manager;
typedef struct Control Control;

#define CONTROL_MESSAGE_MAX (64 * 1024)   /* a request this long without its NUL: refused */
#define CONTROL_CONNECTIONS_MAX 32

/* Binds path (mode 0660; group gid unless (gid_t) -1), replacing a stale socket file,
 * and answers requests from root, the daemon's own user and members of gid. Logs why
 * it cannot. */
int control_new(Manager *m, const char *path, gid_t gid, Control **ret);
/* Closes every connection (requests waiting for a job are detached: their replies go
 * nowhere) and removes the socket file. */
Control *control_free(Control *c);
