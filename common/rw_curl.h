/*
 * rw_curl: the one way rollwave sets up a curl handle for a plain request
 * to a URL an operator or an app configured (webhook receivers, health
 * checks): http and https only, no redirects followed, one total and one
 * connect timeout, no signals, the body discarded. The Lagoon client has
 * its own (it reads bodies and sends a token).
 */
#ifndef RW_CURL_H
#define RW_CURL_H

#include <curl/curl.h>

/* Reset easy and set it up for url as above; agent is the User-Agent. */
void rw_curl_plain(CURL *easy, const char *url, long timeout_ms,
                   const char *agent);

#endif
