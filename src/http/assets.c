/* Lookup over the embedded asset table that the build generates (eddy_assets_gen.c in the build
 * tree, from cmake/embed_assets.cmake). A handful of files: a linear scan is enough. */
#include "http/assets.h"

#include <string.h>

/* Defined by the generated source. */
extern const eddy_asset_t eddy_assets_table[];
extern const size_t eddy_assets_table_len;

const eddy_asset_t *eddy_assets_find(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < eddy_assets_table_len; i++)
    if (strcmp(eddy_assets_table[i].name, name) == 0) return &eddy_assets_table[i];
  return NULL;
}

size_t eddy_assets_count(void) { return eddy_assets_table_len; }

const eddy_asset_t *eddy_assets_at(size_t i) {
  return i < eddy_assets_table_len ? &eddy_assets_table[i] : NULL;
}
