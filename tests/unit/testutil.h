/* Small helpers shared by the unit tests. */
#ifndef EDDY_TESTUTIL_H
#define EDDY_TESTUTIL_H

#include <stddef.h>

/* Creates a fresh temporary directory (removed by eddy_test_rmdir). Never NULL (aborts). */
char *eddy_test_tmpdir(void);
void eddy_test_rmdir(char *dir); /* recursive; frees dir */
/* Writes len bytes to dir/name; returns the malloc'ed full path. */
char *eddy_test_write_file(const char *dir, const char *name, const void *data, size_t len);

#endif
