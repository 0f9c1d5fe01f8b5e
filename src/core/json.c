/* Strict JSON input on top of cJSON: one value, no trailing data, strings without NUL and in
 * well-formed UTF-8 (see json.h). */
#include "core/json.h"

#include <stdio.h>
#include <string.h>

size_t eddy_utf8_len(const unsigned char *p, size_t n) {
  if (n == 0) return 0;
  unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t k;
  unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
  if (c >= 0xc2 && c <= 0xdf) {
    k = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    k = 3;
    if (c == 0xe0) lo = 0xa0;      /* overlong */
    else if (c == 0xed) hi = 0x9f; /* surrogates */
  } else if (c >= 0xf0 && c <= 0xf4) {
    k = 4;
    if (c == 0xf0) lo = 0x90;      /* overlong */
    else if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
  } else {
    return 0;
  }
  if (n < k || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < k; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  return k;
}

bool eddy_json_bad_string(const char *text, size_t len, size_t *at, const char **what) {
  const unsigned char *s = (const unsigned char *)text;
  bool in_string = false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if (!in_string) {
      if (c == '"') in_string = true;
      continue;
    }
    const char *problem = NULL;
    if (c == '"') {
      in_string = false;
    } else if (c == '\\') {
      if (i + 5 < len && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0) problem = "the escape \\u0000";
      else i++; /* the escaped character */
    } else if (c == 0) {
      problem = "a raw NUL byte";
    } else if (c >= 0x80) {
      size_t k = eddy_utf8_len(s + i, len - i);
      if (k == 0) problem = "invalid UTF-8";
      else i += k - 1;
    }
    if (problem) {
      if (at) *at = i;
      if (what) *what = problem;
      return true;
    }
  }
  return false;
}

cJSON *eddy_json_parse(const char *text, size_t len, char *why, size_t why_size) {
  if (!text) {
    if (why && why_size) snprintf(why, why_size, "no JSON text");
    return NULL;
  }
  size_t at = 0;
  const char *what = NULL;
  if (eddy_json_bad_string(text, len, &at, &what)) {
    if (why && why_size) snprintf(why, why_size, "a string holds %s at byte %zu (not supported)", what, at);
    return NULL;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    if (why && why_size) snprintf(why, why_size, "not valid JSON (error near byte %zu)", at);
    return NULL;
  }
  size_t used = end && end >= text && end <= text + len ? (size_t)(end - text) : len;
  for (size_t i = used; i < len; i++) {
    char c = text[i];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      cJSON_Delete(root);
      if (why && why_size) snprintf(why, why_size, "trailing data after the JSON value at byte %zu", i);
      return NULL;
    }
  }
  return root;
}
