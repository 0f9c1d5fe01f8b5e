/* The two halves of eddy_event_from_json, for tests: the single-pass scanner that decodes events
 * of the common shape, and the cJSON decoder that handles everything else and defines the
 * behaviour (codes, messages, values) that the scanner must match bit for bit. */
#ifndef EDDY_EVENT_INTERNAL_H
#define EDDY_EVENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/event.h"

/* eddy_event_from_json without the scanner: always parses with cJSON. Same contract. */
eddy_err_t eddy_event_from_json_cjson(const char *json, size_t len, const eddy_event_schema_t *schema,
                                      eddy_event_t *ev, char *errstr, size_t errstr_size);

/* The scanner alone: true when it decoded json into a valid event (exactly what
 * eddy_event_from_json_cjson yields); false when the input is invalid or of a shape it leaves to
 * cJSON (escapes in strings, nesting deeper than its cap, ...), ev then being unspecified. */
bool eddy_event_scan_json(const char *json, size_t len, const eddy_event_schema_t *schema,
                          eddy_event_t *ev);

#endif
