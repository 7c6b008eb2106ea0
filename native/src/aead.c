// AES-256-GCM seal and open for small messages (log records, metadata pages).
//
// node:crypto took ~10 µs to seal a 4 KiB log record on this machine, most
// of it creating the cipher object and the Buffers around it, not
// encrypting (2.7 GB/s once under way). Every written-data record is sealed
// on its own (portal/wal.ts), so under 4 KiB random writes that was a tenth
// of the daemon's main thread. Here OpenSSL's EVP interface (the one inside
// Node, whose symbols addons link against) is called with one context per
// thread, reused, writing into a buffer the caller provides. The bytes are
// the same as node:crypto's; test/unit/crypto.test.ts checks both ways.
#include "aead.h"
#include <node_api.h>

// Worker threads load the addon too, and the blob encoder seals on the libuv
// pool's threads: a context per thread.
static __thread EVP_CIPHER_CTX *seal_ctx;
static __thread EVP_CIPHER_CTX *open_ctx;

EVP_CIPHER_CTX *s0fs_gcm_seal_begin(const unsigned char *key, const unsigned char *nonce, const unsigned char *aad, size_t aad_len) {
  if (!seal_ctx) {
    seal_ctx = EVP_CIPHER_CTX_new();
    if (!seal_ctx) return NULL;
    if (EVP_EncryptInit_ex(seal_ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) {
      EVP_CIPHER_CTX_free(seal_ctx);
      seal_ctx = NULL;
      return NULL;
    }
  }
  int n;
  if (EVP_EncryptInit_ex(seal_ctx, NULL, NULL, key, nonce) != 1) return NULL;
  if (aad_len && EVP_EncryptUpdate(seal_ctx, NULL, &n, aad, (int)aad_len) != 1) return NULL;
  return seal_ctx;
}

bool s0fs_gcm_seal_part(EVP_CIPHER_CTX *ctx, const unsigned char *data, size_t len, unsigned char **out) {
  if (!len) return true;
  int n;
  if (EVP_EncryptUpdate(ctx, *out, &n, data, (int)len) != 1) return false;
  *out += n;
  return true;
}

bool s0fs_gcm_seal_end(EVP_CIPHER_CTX *ctx, unsigned char **out) {
  int n;
  if (EVP_EncryptFinal_ex(ctx, *out, &n) != 1) return false;
  *out += n;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, *out) != 1) return false;
  *out += TAG_BYTES;
  return true;
}

static bool buffer_arg(napi_env env, napi_value v, unsigned char **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return false;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok;
}

static napi_value number(napi_env env, double n) {
  napi_value v;
  napi_create_double(env, n, &v);
  return v;
}

// gcmSeal(key, nonce, aad, parts: Buffer[], out, at): writes ciphertext then tag into out
// from `at`; returns the bytes written, or -1 (bad arguments or a cipher failure).
static napi_value GcmSeal(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6) return number(env, -1);
  unsigned char *key, *nonce, *aad, *out;
  size_t key_len, nonce_len, aad_len, out_len;
  uint32_t parts_count;
  int64_t at;
  if (!buffer_arg(env, argv[0], &key, &key_len) || key_len != KEY_BYTES) return number(env, -1);
  if (!buffer_arg(env, argv[1], &nonce, &nonce_len) || nonce_len != NONCE_BYTES) return number(env, -1);
  if (!buffer_arg(env, argv[2], &aad, &aad_len)) return number(env, -1);
  if (napi_get_array_length(env, argv[3], &parts_count) != napi_ok) return number(env, -1);
  if (!buffer_arg(env, argv[4], &out, &out_len)) return number(env, -1);
  if (napi_get_value_int64(env, argv[5], &at) != napi_ok || at < 0) return number(env, -1);
  // First pass: check every part and that the output fits, before any byte is written.
  size_t total = 0;
  for (uint32_t i = 0; i < parts_count; i++) {
    napi_value part;
    unsigned char *data;
    size_t len;
    if (napi_get_element(env, argv[3], i, &part) != napi_ok || !buffer_arg(env, part, &data, &len)) return number(env, -1);
    total += len;
  }
  if ((size_t)at + total + TAG_BYTES > out_len) return number(env, -1);

  EVP_CIPHER_CTX *ctx = s0fs_gcm_seal_begin(key, nonce, aad, aad_len);
  if (!ctx) return number(env, -1);
  unsigned char *p = out + at;
  for (uint32_t i = 0; i < parts_count; i++) {
    napi_value part;
    unsigned char *data;
    size_t len;
    napi_get_element(env, argv[3], i, &part);
    buffer_arg(env, part, &data, &len);
    if (!s0fs_gcm_seal_part(ctx, data, len, &p)) return number(env, -1);
  }
  if (!s0fs_gcm_seal_end(ctx, &p)) return number(env, -1);
  return number(env, (double)(p - (out + at)));
}

// gcmOpen(key, nonce, aad, ciphertext, tag, out): decrypts into out (at least as long as the
// ciphertext); true when the tag checks out, false otherwise (wrong key, damaged or swapped).
static napi_value GcmOpen(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_value result;
  napi_get_boolean(env, false, &result);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6) return result;
  unsigned char *key, *nonce, *aad, *ct, *tag, *out;
  size_t key_len, nonce_len, aad_len, ct_len, tag_len, out_len;
  if (!buffer_arg(env, argv[0], &key, &key_len) || key_len != KEY_BYTES) return result;
  if (!buffer_arg(env, argv[1], &nonce, &nonce_len) || nonce_len != NONCE_BYTES) return result;
  if (!buffer_arg(env, argv[2], &aad, &aad_len)) return result;
  if (!buffer_arg(env, argv[3], &ct, &ct_len)) return result;
  if (!buffer_arg(env, argv[4], &tag, &tag_len) || tag_len != TAG_BYTES) return result;
  if (!buffer_arg(env, argv[5], &out, &out_len) || out_len < ct_len) return result;

  if (!open_ctx) {
    open_ctx = EVP_CIPHER_CTX_new();
    if (!open_ctx || EVP_DecryptInit_ex(open_ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) return result;
  }
  EVP_CIPHER_CTX *ctx = open_ctx;
  int n;
  if (EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1) return result;
  if (aad_len && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1) return result;
  if (ct_len && EVP_DecryptUpdate(ctx, out, &n, ct, (int)ct_len) != 1) return result;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) != 1) return result;
  if (EVP_DecryptFinal_ex(ctx, out + n, &n) != 1) return result;
  napi_get_boolean(env, true, &result);
  return result;
}

napi_value s0fs_init_aead(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "gcmSeal", NAPI_AUTO_LENGTH, GcmSeal, NULL, &fn);
  napi_set_named_property(env, exports, "gcmSeal", fn);
  napi_create_function(env, "gcmOpen", NAPI_AUTO_LENGTH, GcmOpen, NULL, &fn);
  napi_set_named_property(env, exports, "gcmOpen", fn);
  return exports;
}
