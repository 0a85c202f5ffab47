/* SPDX-License-Identifier: MIT */
#pragma once

#include <curl/curl.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* libcurl's multi interface driven by sd-event: io sources for curl's sockets, one
 * timer for curl's timeout, completions delivered to per-transfer callbacks. */

typedef struct CurlGlue CurlGlue;
typedef void (*curl_glue_done_t)(CurlGlue *g, CURL *easy, CURLcode result, void *userdata);

int curl_glue_new(sd_event *event, CurlGlue **ret);
CurlGlue *curl_glue_free(CurlGlue *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(CurlGlue *, curl_glue_free);

/* Starts the transfer; cb runs once from the event loop when it ends, after the easy
 * handle has left the multi. cb may add transfers (the same easy again too), remove
 * others and free its easy handle; it must not free the glue. -EBUSY if already added. */
int curl_glue_add(CurlGlue *g, CURL *easy, curl_glue_done_t cb, void *userdata);
/* Abandons a transfer (no callback). Safe to call for one not added. */
void curl_glue_remove(CurlGlue *g, CURL *easy);
size_t curl_glue_in_flight(CurlGlue *g);
