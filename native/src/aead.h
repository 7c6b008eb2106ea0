// AES-256-GCM sealing on the calling thread's reused context (src/aead.c),
// shared by gcmSeal and the blob encoder (src/encode.c, on the libuv pool).
#ifndef S0FS_AEAD_H
#define S0FS_AEAD_H
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>

#define KEY_BYTES 32
#define NONCE_BYTES 12
#define TAG_BYTES 16

// Starts a seal under key (32 bytes) and nonce (12 bytes) with the given AAD;
// returns this thread's context, or NULL on a cipher failure.
EVP_CIPHER_CTX *s0fs_gcm_seal_begin(const unsigned char *key, const unsigned char *nonce, const unsigned char *aad, size_t aad_len);
// Encrypts the next part of the plaintext to *out and advances *out past it.
bool s0fs_gcm_seal_part(EVP_CIPHER_CTX *ctx, const unsigned char *data, size_t len, unsigned char **out);
// Finishes the seal: writes the 16-byte tag to *out and advances *out past it.
bool s0fs_gcm_seal_end(EVP_CIPHER_CTX *ctx, unsigned char **out);
#endif
