/* File-system helpers; see fsutil.h. */
#include "core/fsutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int eddy_mkdir_p(const char *path) {
  char *p = strdup(path);
  if (!p) return -1;
  for (char *c = p + 1; *c; c++) {
    if (*c != '/') continue;
    *c = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      free(p);
      return -1;
    }
    *c = '/';
  }
  int rc = mkdir(p, 0755);
  int saved = errno;
  free(p);
  errno = saved;
  return rc != 0 && errno != EEXIST ? -1 : 0;
}
