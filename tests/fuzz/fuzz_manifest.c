/* libFuzzer harness for manifest.json parsing: any bytes go to eddy_manifest_parse; whatever parses
 * must write back (the writer applies the same rules) and re-parse to the same text, so parse and
 * write can never disagree on what a valid manifest is. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  eddy_manifest_t m, again;
  if (eddy_manifest_parse((const char *)data, size, &m, err, sizeof err) != EDDY_OK) {
    if (!memchr(err, 0, sizeof err) || !err[0]) abort(); /* a failure always says why */
    eddy_manifest_clear(&m);
    return 0;
  }
  char *json = NULL, *json2 = NULL;
  if (eddy_manifest_to_json(&m, &json, err, sizeof err) != EDDY_OK) abort();
  if (eddy_manifest_parse(json, strlen(json), &again, err, sizeof err) != EDDY_OK) abort();
  if (eddy_manifest_to_json(&again, &json2, err, sizeof err) != EDDY_OK || strcmp(json, json2) != 0) abort();
  free(json);
  free(json2);
  eddy_manifest_clear(&again);
  eddy_manifest_clear(&m);
  return 0;
}
