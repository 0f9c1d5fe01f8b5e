/* A small HTTP client on libcurl for eddy talking to its own services (eddy ctl, replicas fetching
 * versions and sending heartbeats, eddy demo): GET, or POST of a JSON body, an optional bearer
 * token, a hard cap on the answer, X-Eddy-Version picked up. A client is one libcurl handle
 * (connections are reused between calls); one thread uses it at a time. No libcurl types here. */
#ifndef EDDY_HTTP_CLIENT_H
#define EDDY_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/errors.h"

#define EDDY_HTTP_CLIENT_DEFAULT_MAX (1u << 20) /* answer cap when a request sets none */

typedef struct eddy_http_client eddy_http_client_t;

/* NULL when libcurl cannot start. user_agent may be NULL ("eddy"). */
eddy_http_client_t *eddy_http_client_new(const char *user_agent);
void eddy_http_client_destroy(eddy_http_client_t *c); /* NULL is a no-op */

typedef struct {
  const char *body;        /* POST this JSON when not NULL; GET otherwise */
  const char *token;       /* sent as "Authorization: Bearer TOKEN"; NULL = none */
  size_t max_answer;       /* answer cap in bytes; 0 = EDDY_HTTP_CLIENT_DEFAULT_MAX */
  long connect_timeout_ms; /* 0 = 3000 */
  long timeout_ms;         /* the whole request; 0 = no limit, but a transfer slower than 1 KiB/s
                              for 30 s fails */
} eddy_http_request_t;

typedef struct {
  long status;   /* the HTTP status; -1 when no answer came */
  char *body;    /* the answer, NUL-terminated (NULL when empty); eddy_http_answer_free */
  size_t len;
  bool too_large; /* the answer went over max_answer (the call failed) */
  long version;  /* X-Eddy-Version of the answer, -1 when absent */
} eddy_http_answer_t;

/* Performs one request. EDDY_OK when an answer came, whatever its status (ans->status);
 * EDDY_ERR_IO with "GET URL: reason" in errstr when none came (connection refused, timeout),
 * EDDY_ERR_TOO_LARGE when it went over the cap. ans is filled in every case (free it). */
eddy_err_t eddy_http_client_call(eddy_http_client_t *c, const char *url, const eddy_http_request_t *req,
                                 eddy_http_answer_t *ans, char *errstr, size_t errstr_size);
void eddy_http_answer_free(eddy_http_answer_t *ans);

#endif
