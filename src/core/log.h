/* Logging to stderr: one line per message, "LEVEL eddy[module]: text" ("LEVEL eddy[module] PREFIX:
 * text" once a prefix is set, e.g. a trainer rank's "rank 1/2 (local 1)"), with an ISO-8601 UTC
 * time when stderr is not a terminal. Thread-safe (one fprintf per line). */
#ifndef EDDY_LOG_H
#define EDDY_LOG_H

typedef enum { EDDY_LOG_DEBUG = 0, EDDY_LOG_INFO, EDDY_LOG_WARN, EDDY_LOG_ERROR } eddy_log_level_t;

/* Messages below this level are dropped. Default INFO; EDDY_LOG=debug|info|warn|error overrides. */
void eddy_log_set_level(eddy_log_level_t level);
eddy_log_level_t eddy_log_get_level(void);

/* Text put after the module on every line from now on (copied, at most 63 bytes; NULL or "" for
 * none). Set it at start-up, before other threads log. */
void eddy_log_set_prefix(const char *prefix);

void eddy_log(eddy_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define EDDY_DEBUG(mod, ...) eddy_log(EDDY_LOG_DEBUG, mod, __VA_ARGS__)
#define EDDY_INFO(mod, ...) eddy_log(EDDY_LOG_INFO, mod, __VA_ARGS__)
#define EDDY_WARN(mod, ...) eddy_log(EDDY_LOG_WARN, mod, __VA_ARGS__)
#define EDDY_ERROR(mod, ...) eddy_log(EDDY_LOG_ERROR, mod, __VA_ARGS__)

#endif
