/* SHA-256 over OpenSSL's EVP interface: one-shot digests of buffers and streamed digests of files.
 * Files are read in fixed 64 KiB chunks, so memory use does not grow with the file. */
#include "format/sha256.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eddy_sha256(const void *data, size_t len, uint8_t out[32]) {
  unsigned int n = 0;
  /* EVP_Digest with SHA-256 fails only when OpenSSL cannot allocate its context; the void contract
   * leaves no way to report that, and a silently wrong digest would be worse than stopping. */
  if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) || n != 32) {
    fprintf(stderr, "eddy_sha256: OpenSSL EVP_Digest failed\n");
    abort();
  }
}

void eddy_sha256_hex(const uint8_t digest[32], char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[digest[i] >> 4];
    hex[2 * i + 1] = digits[digest[i] & 15];
  }
  hex[64] = '\0';
}

eddy_err_t eddy_sha256_file(const char *path, uint8_t out[32], char *errstr, size_t errstr_size) {
  if (!path || !out) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "sha256: NULL argument");
  FILE *f = fopen(path, "rb");
  if (!f) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "sha256 %s: open: %s", path, strerror(errno));
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  uint8_t *buf = malloc(1 << 16);
  eddy_err_t err = EDDY_OK;
  if (!ctx || !buf) {
    err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "sha256 %s: out of memory", path);
    goto done;
  }
  if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "sha256 %s: EVP_DigestInit_ex failed", path);
    goto done;
  }
  for (;;) {
    size_t n = fread(buf, 1, 1 << 16, f);
    if (n > 0 && !EVP_DigestUpdate(ctx, buf, n)) {
      err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "sha256 %s: EVP_DigestUpdate failed", path);
      goto done;
    }
    if (n < (1 << 16)) {
      if (ferror(f)) {
        err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "sha256 %s: read: %s", path, strerror(errno));
        goto done;
      }
      break;
    }
  }
  unsigned int len = 0;
  if (!EVP_DigestFinal_ex(ctx, out, &len) || len != 32)
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "sha256 %s: EVP_DigestFinal_ex failed", path);
done:
  EVP_MD_CTX_free(ctx);
  free(buf);
  fclose(f);
  return err;
}
