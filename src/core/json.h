/* Strict JSON input: exactly one value with nothing but whitespace after it, and strings that
 * keep their meaning as C strings (no NUL, raw or escaped) and are well-formed UTF-8. cJSON alone
 * accepts trailing bytes, silently truncates a string at a NUL and copies invalid UTF-8. */
#ifndef EDDY_JSON_H
#define EDDY_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* Length (1..4) of the well-formed UTF-8 sequence at p, of which n bytes are available, or 0 when
 * the bytes there are not one (RFC 3629: no overlong forms, no surrogates, nothing past
 * U+10FFFF). */
size_t eddy_utf8_len(const unsigned char *p, size_t n);

/* The first problem of the strings in the JSON text[0..len) (a raw NUL, the escape \u0000, or
 * invalid UTF-8): true with *at its byte offset and *what a short phrase ("a raw NUL byte");
 * false when there is none. Only strings are checked: the rest is the parser's business. */
bool eddy_json_bad_string(const char *text, size_t len, size_t *at, const char **what);

/* Parses text[0..len) (it need not be NUL-terminated) as one JSON value with only whitespace
 * after it and strings as above. NULL on failure, with why ("not valid JSON (error near byte 12)",
 * "trailing data after the JSON value at byte 40", "a string holds invalid UTF-8 at byte 7").
 * The caller frees the result with cJSON_Delete. */
cJSON *eddy_json_parse(const char *text, size_t len, char *why, size_t why_size);

#endif
