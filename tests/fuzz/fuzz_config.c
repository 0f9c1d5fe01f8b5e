/* Fuzz harness for the INI configuration loader: the input is loaded as a config file from
 * memory, and its first line is also tried as a --set override. Any input must give EDDY_OK or an
 * error with a NUL-terminated message, never a crash, leak or sanitizer report. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  eddy_config_t cfg;
  char errstr[512];
  eddy_err_t err = eddy_config_load_string(&cfg, "fuzz.ini", (const char *)data, size, NULL, 0,
                                           errstr, sizeof errstr);
  if (err != EDDY_OK && memchr(errstr, '\0', sizeof errstr) == NULL) abort();
  if (err == EDDY_OK) (void)eddy_config_kafka(&cfg, "bootstrap.servers");
  eddy_config_free(&cfg);

  size_t line = 0;
  while (line < size && data[line] != '\n' && data[line] != '\0') line++;
  char *set = malloc(line + 1);
  if (!set) return 0;
  memcpy(set, data, line);
  set[line] = '\0';
  const char *sets[] = {set};
  err = eddy_config_load(&cfg, NULL, sets, 1, errstr, sizeof errstr);
  if (err != EDDY_OK && memchr(errstr, '\0', sizeof errstr) == NULL) abort();
  eddy_config_free(&cfg);
  free(set);
  return 0;
}
