/* stderr logger; see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

static int log_level = -1;
static char log_prefix[64]; /* " PREFIX" or "" */

static eddy_log_level_t level_from_env(void) {
  const char *env = getenv("EDDY_LOG");
  if (!env) return EDDY_LOG_INFO;
  if (!strcasecmp(env, "debug")) return EDDY_LOG_DEBUG;
  if (!strcasecmp(env, "warn")) return EDDY_LOG_WARN;
  if (!strcasecmp(env, "error")) return EDDY_LOG_ERROR;
  return EDDY_LOG_INFO;
}

void eddy_log_set_level(eddy_log_level_t level) { log_level = (int)level; }

void eddy_log_set_prefix(const char *prefix) {
  if (prefix && *prefix) snprintf(log_prefix, sizeof log_prefix, " %s", prefix);
  else log_prefix[0] = '\0';
}

eddy_log_level_t eddy_log_get_level(void) {
  if (log_level < 0) log_level = (int)level_from_env();
  return (eddy_log_level_t)log_level;
}

void eddy_log(eddy_log_level_t level, const char *module, const char *fmt, ...) {
  static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  if (level < eddy_log_get_level()) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  char stamp[40] = "";
  if (!isatty(STDERR_FILENO)) {
    int64_t ms = eddy_clock_wall_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03dZ ", (int)(ms % 1000));
  }
  fprintf(stderr, "%s%s eddy[%s]%s: %s\n", stamp, names[level], module ? module : "-", log_prefix, msg);
}
