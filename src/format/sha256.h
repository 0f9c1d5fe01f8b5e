/* SHA-256 helpers on OpenSSL's EVP API. */
#ifndef EDDY_SHA256_H
#define EDDY_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

void eddy_sha256(const void *data, size_t len, uint8_t out[32]);
/* Lowercase hex of 32 bytes into hex (65 bytes with NUL). */
void eddy_sha256_hex(const uint8_t digest[32], char hex[65]);
/* SHA-256 of a whole file. */
eddy_err_t eddy_sha256_file(const char *path, uint8_t out[32], char *errstr, size_t errstr_size);

#endif
