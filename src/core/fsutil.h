/* Small file-system helpers shared by the modules that own folders (buffer, snapshot store). */
#ifndef EDDY_FSUTIL_H
#define EDDY_FSUTIL_H

/* Creates path and any missing parents (mode 0755), like `mkdir -p`. 0 on success (also when it
 * already exists), -1 with errno set otherwise. */
int eddy_mkdir_p(const char *path);

#endif
