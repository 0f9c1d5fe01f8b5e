/* Embedded HTTP/1.1 server for the admin and serving APIs, on libmicrohttpd with a thread pool.
 * Routes are matched by method and path pattern; errors are JSON {"error": "..."}. Checks run in
 * the order route (404) -> method (405 + Allow) -> bearer auth (403/401) -> body cap (413) ->
 * handler. Handlers run on the pool threads, several at once, so they must be thread-safe.
 * Abusive clients are bounded: connections in all and per client IP, a deadline for the first
 * headers, a 413 as soon as a declared body is over the cap, and an idle timeout. */
#ifndef EDDY_HTTP_SERVER_H
#define EDDY_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

#define EDDY_HTTP_DEFAULT_BIND "127.0.0.1:8080"
#define EDDY_HTTP_DEFAULT_THREADS 4
#define EDDY_HTTP_DEFAULT_MAX_BODY (1u << 20)  /* bytes; DESIGN's http.max_body_bytes default */
#define EDDY_HTTP_DEFAULT_TIMEOUT_S 30         /* idle connection timeout */
#define EDDY_HTTP_DEFAULT_GRACE_MS 5000        /* destroy waits this long for in-flight requests */
#define EDDY_HTTP_DEFAULT_MAX_CONNECTIONS 4096 /* open connections in all (see eddy_http_opts_t) */
#define EDDY_HTTP_DEFAULT_MAX_PER_CLIENT 256   /* open connections from one IP address */
#define EDDY_HTTP_DEFAULT_HEADER_TIMEOUT_S 10  /* from accept to the end of the first headers */
#define EDDY_HTTP_FD_RESERVE 256               /* descriptors left to the rest of the process */
#define EDDY_HTTP_MAX_ROUTES 64
#define EDDY_HTTP_MAX_PARAMS 8      /* {param} segments per route */
#define EDDY_HTTP_MAX_HEADERS 16    /* extra response headers per response */
#define EDDY_HTTP_TOKEN_MAX 512     /* bytes of a bearer token */

/* Route flags. */
/* Needs "Authorization: Bearer <token>": 401 without or with a wrong one, 403 when the server has
 * no token configured. */
#define EDDY_HTTP_AUTH 1u

typedef struct eddy_http eddy_http_t;
typedef struct eddy_http_req eddy_http_req_t;
typedef struct eddy_http_resp eddy_http_resp_t;

/* Called once per answered request, from a pool thread: method, the matched route's pattern
 * (NULL when no route matched, so metric labels stay bounded), status and wall time. */
typedef void (*eddy_http_on_request_fn)(void *ctx, const char *method, const char *route,
                                        int status, double seconds);

/* Zero-initialised options mean the defaults. */
typedef struct {
  const char *bind;          /* "host:port" or "[v6]:port"; NULL/"" = EDDY_HTTP_DEFAULT_BIND;
                                port 0 = an ephemeral port (see eddy_http_port) */
  unsigned threads;          /* worker threads; 0 = EDDY_HTTP_DEFAULT_THREADS */
  uint64_t max_body_bytes;   /* request body cap (413 beyond); 0 = EDDY_HTTP_DEFAULT_MAX_BODY */
  const char *token;         /* bearer token for EDDY_HTTP_AUTH routes (copied); NULL/"" = none
                                configured: such routes answer 403 to everyone */
  unsigned timeout_s;        /* idle connection timeout; 0 = EDDY_HTTP_DEFAULT_TIMEOUT_S */
  unsigned grace_ms;         /* shutdown wait for requests in flight;
                                0 = EDDY_HTTP_DEFAULT_GRACE_MS */
  unsigned max_connections;  /* open connections in all; more are closed at accept. 0 =
                                EDDY_HTTP_DEFAULT_MAX_CONNECTIONS; never more than the open-file
                                limit less EDDY_HTTP_FD_RESERVE (logged when that lowers it) */
  unsigned max_per_client;   /* open connections from one IP address; 0 =
                                EDDY_HTTP_DEFAULT_MAX_PER_CLIENT */
  unsigned header_timeout_s; /* a connection whose first request's headers are not complete this
                                long after accept is closed; 0 =
                                EDDY_HTTP_DEFAULT_HEADER_TIMEOUT_S */
  eddy_http_on_request_fn on_request; /* optional */
  void *on_request_ctx;
} eddy_http_opts_t;

/* Returns 0 after filling resp (an unset status means 200). Any other value (an eddy_err_t)
 * answers 500 {"error": "internal error: <eddy_err_str>"} and discards what resp holds. */
typedef int (*eddy_http_handler_fn)(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp);

/* Creates a server and binds its listening socket (so the port is known and taken), without
 * serving yet: register routes, then eddy_http_start. opts may be NULL (all defaults). NULL with
 * errstr on a bad bind string ("http.bind \"x\" is not host:port"), an unresolvable host, or a
 * bind failure ("bind 127.0.0.1:8080: Address already in use"). */
eddy_http_t *eddy_http_new(const eddy_http_opts_t *opts, char *errstr, size_t errstr_size);

/* Registers a route before eddy_http_start. method: "GET", "POST", ... (a GET route also answers
 * HEAD). pattern: "/" followed by '/'-separated segments, each literal, "{name}" (one non-empty
 * segment; "." and ".." never match) or, last only, "*" (the rest of the path, maybe empty,
 * available as param "*"). Routes are tried in registration order. EDDY_ERR_INVALID_ARG on a bad
 * pattern or method, EDDY_ERR_TOO_LARGE past EDDY_HTTP_MAX_ROUTES, EDDY_ERR_STATE after start. */
eddy_err_t eddy_http_route(eddy_http_t *h, const char *method, const char *pattern, unsigned flags,
                           eddy_http_handler_fn handler, void *ctx, char *errstr,
                           size_t errstr_size);

/* Starts serving on the pool threads. EDDY_ERR_STATE if already started, EDDY_ERR_BACKEND when
 * libmicrohttpd refuses to start. */
eddy_err_t eddy_http_start(eddy_http_t *h, char *errstr, size_t errstr_size);

/* The bound port (the actual one when the bind asked for port 0). */
unsigned eddy_http_port(const eddy_http_t *h);

/* Stops accepting, waits up to grace_ms for requests in flight to finish, then stops the pool
 * threads and frees everything. NULL is a no-op. */
void eddy_http_destroy(eddy_http_t *h);

typedef struct {
  uint64_t requests;     /* answered requests */
  uint64_t by_class[6];  /* by status / 100: [2] = 2xx ... [5] = 5xx */
  uint64_t in_flight;    /* requests started and not yet completed */
  uint64_t connections;  /* connections open now */
  uint64_t header_timeouts; /* connections closed for headers not complete in header_timeout_s */
} eddy_http_stats_t;

/* A consistent-enough snapshot of the counters (each read atomically). */
void eddy_http_stats(const eddy_http_t *h, eddy_http_stats_t *out);

/* Request accessors; the strings live until the handler returns. */
const char *eddy_http_req_method(const eddy_http_req_t *req);
const char *eddy_http_req_path(const eddy_http_req_t *req);   /* percent-decoded, no query */
/* Path parameter {name} (or "*") of the matched route; NULL when the route has no such name. */
const char *eddy_http_req_param(const eddy_http_req_t *req, const char *name);
/* Query argument (percent-decoded); NULL when absent, "" for "?name". */
const char *eddy_http_req_query(const eddy_http_req_t *req, const char *name);
/* Request header, name case-insensitive; NULL when absent. */
const char *eddy_http_req_header(const eddy_http_req_t *req, const char *name);
/* The request body (NUL-terminated for convenience, may contain NULs); *len gets its length.
 * Never NULL ("" when there is no body). */
const char *eddy_http_req_body(const eddy_http_req_t *req, size_t *len);

/* Response setters. Each returns EDDY_OK or an error that also makes the response a 500. */
eddy_err_t eddy_http_resp_status(eddy_http_resp_t *resp, int status); /* 100..599 */
/* Copies len bytes as the body; content_type NULL = "text/plain; charset=utf-8". */
eddy_err_t eddy_http_resp_body(eddy_http_resp_t *resp, const char *content_type, const void *data,
                               size_t len);
/* Like eddy_http_resp_body, but takes ownership of the malloc'ed data (freed even on error). */
eddy_err_t eddy_http_resp_body_owned(eddy_http_resp_t *resp, const char *content_type, char *data,
                                     size_t len);
/* Sets status and a JSON body {"error": "<formatted message>"} (message capped at 1 KiB). */
eddy_err_t eddy_http_resp_error(eddy_http_resp_t *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds a response header (copied). EDDY_ERR_INVALID_ARG for a name that is not an HTTP token or
 * a value with CR/LF, EDDY_ERR_TOO_LARGE past EDDY_HTTP_MAX_HEADERS. */
eddy_err_t eddy_http_resp_header(eddy_http_resp_t *resp, const char *name, const char *value);
/* Streams the regular file at path as the body (opened now, so a later unlink or rename does not
 * cut the download). EDDY_ERR_NOT_FOUND when it does not exist, EDDY_ERR_IO otherwise (the
 * handler picks the status); the response is unchanged on error. */
eddy_err_t eddy_http_resp_file(eddy_http_resp_t *resp, const char *content_type, const char *path);

/* Reads a bearer token from path: trailing whitespace stripped; refuses a missing or unreadable
 * file (EDDY_ERR_IO), an empty token or one with spaces or control characters (EDDY_ERR_FORMAT),
 * and a token over EDDY_HTTP_TOKEN_MAX bytes or not fitting buf (EDDY_ERR_TOO_LARGE). A file
 * readable by group or others is accepted with a warning in the log. */
eddy_err_t eddy_http_load_token(const char *path, char *buf, size_t size, char *errstr,
                                size_t errstr_size);

#endif
