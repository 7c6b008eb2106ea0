// Blob encoding on the libuv thread pool: keyed content ID, zstd, AES-256-GCM.
//
// The same bytes as src/blob/codec.ts (encodeBlob) produces, and as the blob
// worker threads (src/blob/worker.ts) produced before: without the addon
// those still do the work. A worker thread is a V8 isolate of its own, and two
// of them added 45-80 MiB to the mount daemon's resident set during flushes
// (tar's commit, fio, jfsbench's 1 GiB write); a thread of the pool that
// already runs file I/O costs nothing but the buffers it encodes into.
//
// One call encodes a batch of ranges of one buffer (a SharedArrayBuffer the
// caller keeps unchanged until the promise settles). Nonces are not drawn
// here: the caller reserves a run of its sealer's counter values, and blob i
// takes counter + i, so batches running at once never share one.
#include "aead.h"
#include <node_api.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define ZSTD_STATIC_LINKING_ONLY
#include "zstd.h"

#define ID_BYTES 32
#define SALT_BYTES 16
#define SEAL_OVERHEAD (1 + SALT_BYTES + NONCE_BYTES + TAG_BYTES)
#define SEAL_VERSION 1

// src/blob/codec.ts: flags, frame size, level and the thresholds.
#define FLAG_RAW 0
#define FLAG_ZSTD 1
#define FLAG_ZSTD_FRAMES 2
#define FRAME_BYTES (128 * 1024)
#define ZSTD_LEVEL 1
#define MIN_COMPRESS 64
#define MAX_RATIO 0.97

typedef struct {
  size_t start, end;
  size_t sealed_off, sealed_len; // where the sealed blob sits in the job's arena
  bool zero;
} blob_t;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref; // keeps the input's memory alive while the pool reads it
  const unsigned char *data;
  size_t count;
  blob_t *blobs;
  // Every sealed blob of the job, back to back in one allocation that JavaScript
  // then owns: one buffer per batch instead of one per blob. Each segment keeps
  // its blobs until it is uploaded, and thousands of small allocations living
  // that long, interleaved with short-lived ones, fragmented the C heap.
  unsigned char *arena;
  size_t arena_len;
  unsigned char *ids; // ID_BYTES per blob
  unsigned char content_key[KEY_BYTES];
  unsigned char seal_key[KEY_BYTES];
  unsigned char salt[SALT_BYTES];
  uint64_t counter;
  bool frames;
  const char *error; // a static message, set on failure
} job_t;

// zstd contexts are reused across jobs (a level-1 context for a 1 MiB input
// is about a megabyte): a small stack under a mutex, as many as ran at once.
static uv_once_t cctx_once = UV_ONCE_INIT;
static uv_mutex_t cctx_lock;
static ZSTD_CCtx *cctx_free[8];
static int cctx_count;

static void init_cctx_lock(void) {
  uv_mutex_init(&cctx_lock);
}

static ZSTD_CCtx *take_cctx(void) {
  ZSTD_CCtx *c = NULL;
  uv_mutex_lock(&cctx_lock);
  if (cctx_count > 0) c = cctx_free[--cctx_count];
  uv_mutex_unlock(&cctx_lock);
  if (!c) {
    c = ZSTD_createCCtx();
    if (c) ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, ZSTD_LEVEL);
  }
  return c;
}

static void give_cctx(ZSTD_CCtx *c) {
  uv_mutex_lock(&cctx_lock);
  if (cctx_count < 8) {
    cctx_free[cctx_count++] = c;
    c = NULL;
  }
  uv_mutex_unlock(&cctx_lock);
  if (c) ZSTD_freeCCtx(c);
}

static bool all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

// Compresses `data` as codec.ts does: one frame, or (framed) a header of raw
// length, frame size and each frame's compressed size, then the frames.
// Returns the payload length, or 0 when compression fails.
static size_t compress_payload(ZSTD_CCtx *cctx, const unsigned char *data, size_t len, bool framed, unsigned char *out, size_t cap) {
  if (!framed) {
    size_t n = ZSTD_compress2(cctx, out, cap, data, len);
    return ZSTD_isError(n) ? 0 : n;
  }
  size_t count = (len + FRAME_BYTES - 1) / FRAME_BYTES;
  size_t header = 8 + 4 * count;
  uint32_t v = (uint32_t)len;
  memcpy(out, &v, 4); // little-endian, as Buffer.writeUInt32LE (x86-64 and arm64 Linux)
  v = FRAME_BYTES;
  memcpy(out + 4, &v, 4);
  size_t at = header;
  for (size_t i = 0; i < count; i++) {
    size_t from = i * FRAME_BYTES;
    size_t n = len - from < FRAME_BYTES ? len - from : FRAME_BYTES;
    size_t written = ZSTD_compress2(cctx, out + at, cap - at, data + from, n);
    if (ZSTD_isError(written)) return 0;
    v = (uint32_t)written;
    memcpy(out + 8 + 4 * i, &v, 4);
    at += written;
  }
  return at;
}

// Upper bound of compress_payload's output.
static size_t payload_bound(size_t len, bool framed) {
  if (!framed) return ZSTD_compressBound(len);
  size_t count = (len + FRAME_BYTES - 1) / FRAME_BYTES;
  return 8 + 4 * count + count * ZSTD_compressBound(FRAME_BYTES);
}

static bool seal(const job_t *job, uint64_t counter, const unsigned char *id, unsigned char flag, const unsigned char *payload,
                 size_t payload_len, unsigned char *out) {
  static const char hex[] = "0123456789abcdef";
  unsigned char aad[5 + 2 * ID_BYTES];
  memcpy(aad, "blob:", 5);
  for (int i = 0; i < ID_BYTES; i++) {
    aad[5 + 2 * i] = hex[id[i] >> 4];
    aad[6 + 2 * i] = hex[id[i] & 15];
  }
  // Layout of src/crypto/aead.ts: version | salt | nonce (0 u32 BE, counter u64 BE) | ciphertext | tag.
  out[0] = SEAL_VERSION;
  memcpy(out + 1, job->salt, SALT_BYTES);
  unsigned char *nonce = out + 1 + SALT_BYTES;
  memset(nonce, 0, 4);
  for (int i = 0; i < 8; i++) nonce[4 + i] = (unsigned char)(counter >> (56 - 8 * i));
  unsigned char *p = nonce + NONCE_BYTES;
  EVP_CIPHER_CTX *ctx = s0fs_gcm_seal_begin(job->seal_key, nonce, aad, sizeof aad);
  return ctx && s0fs_gcm_seal_part(ctx, &flag, 1, &p) && s0fs_gcm_seal_part(ctx, payload, payload_len, &p) && s0fs_gcm_seal_end(ctx, &p);
}

static void execute(napi_env env, void *arg) {
  (void)env;
  job_t *job = arg;
  ZSTD_CCtx *cctx = take_cctx();
  unsigned char *scratch = NULL;
  size_t scratch_cap = 0;
  if (!cctx) {
    job->error = "cannot create a compression context";
    goto done;
  }
  // A sealed blob is never longer than its plaintext plus the flag and the seal's overhead
  // (data that does not compress is stored raw); the arena shrinks to what was used below.
  size_t arena_cap = 0;
  for (size_t i = 0; i < job->count; i++) arena_cap += SEAL_OVERHEAD + 1 + (job->blobs[i].end - job->blobs[i].start);
  job->arena = malloc(arena_cap ? arena_cap : 1);
  job->ids = calloc(job->count ? job->count : 1, ID_BYTES);
  if (!job->arena || !job->ids) {
    job->error = "out of memory";
    goto done;
  }
  for (size_t i = 0; i < job->count; i++) {
    blob_t *b = &job->blobs[i];
    const unsigned char *data = job->data + b->start;
    size_t len = b->end - b->start;
    if (all_zero(data, len)) {
      b->zero = true;
      continue;
    }
    unsigned char *id = job->ids + i * ID_BYTES;
    unsigned int id_len = ID_BYTES;
    if (!HMAC(EVP_sha256(), job->content_key, KEY_BYTES, data, len, id, &id_len)) {
      job->error = "content ID (HMAC-SHA256) failed";
      goto done;
    }
    unsigned char flag = FLAG_RAW;
    const unsigned char *payload = data;
    size_t payload_len = len;
    if (len >= MIN_COMPRESS) {
      bool framed = job->frames && len > FRAME_BYTES;
      size_t bound = payload_bound(len, framed);
      if (bound > scratch_cap) {
        free(scratch);
        scratch = malloc(bound);
        scratch_cap = scratch ? bound : 0;
        if (!scratch) {
          job->error = "out of memory";
          goto done;
        }
      }
      size_t packed = compress_payload(cctx, data, len, framed, scratch, scratch_cap);
      if (packed == 0) {
        job->error = "zstd compression failed";
        goto done;
      }
      if ((double)packed <= (double)len * MAX_RATIO) {
        flag = framed ? FLAG_ZSTD_FRAMES : FLAG_ZSTD;
        payload = scratch;
        payload_len = packed;
      }
    }
    b->sealed_off = job->arena_len;
    b->sealed_len = SEAL_OVERHEAD + 1 + payload_len;
    if (!seal(job, job->counter + i, id, flag, payload, payload_len, job->arena + b->sealed_off)) {
      job->error = "AES-256-GCM seal failed";
      goto done;
    }
    job->arena_len += b->sealed_len;
  }
  if (job->arena_len < arena_cap) {
    unsigned char *shrunk = realloc(job->arena, job->arena_len ? job->arena_len : 1);
    if (shrunk) job->arena = shrunk;
  }
done:
  free(scratch);
  if (cctx) give_cctx(cctx);
}

static void free_arena(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void free_job(napi_env env, job_t *job) {
  free(job->arena);
  free(job->ids);
  free(job->blobs);
  napi_delete_reference(env, job->data_ref);
  napi_delete_async_work(env, job->work);
  free(job);
}

static void complete(napi_env env, napi_status status, void *arg) {
  job_t *job = arg;
  napi_value result, message;
  if (status != napi_ok || job->error) {
    napi_create_string_utf8(env, job->error ? job->error : "encode job cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &result);
    napi_reject_deferred(env, job->deferred, result);
    free_job(env, job);
    return;
  }
  // [ids, sealed, layout]: every blob's ID (ID_BYTES each) in one buffer, every sealed blob in
  // another (the arena, handed over without a copy), and per blob (offset, length, raw length)
  // into the latter, length -1 for an all-zero blob (which has neither).
  napi_value ids, sealed, layout_buffer, layout;
  double *table;
  napi_create_buffer_copy(env, job->count * ID_BYTES, job->ids, NULL, &ids);
  if (napi_create_external_buffer(env, job->arena_len, job->arena, free_arena, NULL, &sealed) == napi_ok) {
    job->arena = NULL; // JavaScript owns it now
  } else {
    napi_create_buffer_copy(env, job->arena_len, job->arena, NULL, &sealed);
  }
  napi_create_arraybuffer(env, job->count * 3 * sizeof(double), (void **)&table, &layout_buffer);
  napi_create_typedarray(env, napi_float64_array, job->count * 3, layout_buffer, 0, &layout);
  for (size_t i = 0; i < job->count; i++) {
    blob_t *b = &job->blobs[i];
    table[3 * i] = (double)b->sealed_off;
    table[3 * i + 1] = b->zero ? -1 : (double)b->sealed_len;
    table[3 * i + 2] = (double)(b->end - b->start);
  }
  napi_create_array_with_length(env, 3, &result);
  napi_set_element(env, result, 0, ids);
  napi_set_element(env, result, 1, sealed);
  napi_set_element(env, result, 2, layout);
  napi_resolve_deferred(env, job->deferred, result);
  free_job(env, job);
}

static bool key_arg(napi_env env, napi_value v, unsigned char *out, size_t want) {
  bool is;
  void *data;
  size_t len;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return false;
  if (napi_get_buffer_info(env, v, &data, &len) != napi_ok || len != want) return false;
  memcpy(out, data, want);
  return true;
}

#define FAIL(msg)                           \
  do {                                      \
    napi_throw_type_error(env, NULL, msg);  \
    if (job) free(job->blobs);              \
    free(job);                              \
    return NULL;                            \
  } while (0)

// encodeBlobs(data: Uint8Array, ranges: Float64Array (start, end pairs within data), contentKey, sealKey, salt,
//             counter: bigint, frames: boolean): Promise<(Buffer | number | boolean)[]>
static napi_value EncodeBlobs(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  job_t *job = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 7) FAIL("encodeBlobs: 7 arguments");
  job = calloc(1, sizeof(job_t));
  if (!job) FAIL("encodeBlobs: out of memory");
  napi_typedarray_type type;
  size_t length, offset;
  void *data;
  napi_value arraybuffer;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, &arraybuffer, &offset) != napi_ok || type != napi_uint8_array) FAIL("encodeBlobs: data must be a Uint8Array");
  double *ranges;
  size_t pairs;
  if (napi_get_typedarray_info(env, argv[1], &type, &pairs, (void **)&ranges, &arraybuffer, &offset) != napi_ok || type != napi_float64_array || pairs % 2) FAIL("encodeBlobs: ranges must be a Float64Array of start, end pairs");
  if (!key_arg(env, argv[2], job->content_key, KEY_BYTES) || !key_arg(env, argv[3], job->seal_key, KEY_BYTES) || !key_arg(env, argv[4], job->salt, SALT_BYTES)) FAIL("encodeBlobs: bad key or salt");
  bool lossless;
  if (napi_get_value_bigint_uint64(env, argv[5], &job->counter, &lossless) != napi_ok || !lossless) FAIL("encodeBlobs: counter must be a bigint");
  if (napi_get_value_bool(env, argv[6], &job->frames) != napi_ok) FAIL("encodeBlobs: frames must be a boolean");
  job->count = pairs / 2;
  job->blobs = calloc(job->count ? job->count : 1, sizeof(blob_t));
  if (!job->blobs) FAIL("encodeBlobs: out of memory");
  for (size_t i = 0; i < job->count; i++) {
    double s = ranges[2 * i], e = ranges[2 * i + 1];
    if (!(s >= 0 && e >= s && e <= (double)length)) FAIL("encodeBlobs: a range lies outside the data");
    job->blobs[i].start = (size_t)s;
    job->blobs[i].end = (size_t)e;
  }
  job->data = data;
  napi_value promise, name;
  napi_create_reference(env, argv[0], 1, &job->data_ref);
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "s0fs:encode", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

napi_value s0fs_init_encode(napi_env env, napi_value exports) {
  uv_once(&cctx_once, init_cctx_lock);
  napi_value fn;
  napi_create_function(env, "encodeBlobs", NAPI_AUTO_LENGTH, EncodeBlobs, NULL, &fn);
  napi_set_named_property(env, exports, "encodeBlobs", fn);
  return exports;
}
