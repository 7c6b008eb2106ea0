// FastCDC cut-point search: the one sequential stage of the store pipeline.
// Same algorithm and output as src/blob/chunker.ts (the pure-JS fallback);
// test/unit/native.test.ts checks that both agree byte for byte.
#include <node_api.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static size_t next_cut(const uint8_t *data, size_t start, size_t end, const uint32_t *gear,
                       size_t min, size_t avg, size_t max, uint32_t mask_strict, uint32_t mask_loose) {
  size_t n = end - start;
  if (n <= min) return end;
  size_t limit = start + (n < max ? n : max);
  size_t span = avg < n ? avg : n;
  if (span > max) span = max;
  size_t normal = start + span;
  uint32_t fp = 0;
  size_t i = start + min;
  for (; i < normal; i++) {
    fp = (fp << 1) + gear[data[i]];
    if ((fp & mask_strict) == 0) return i + 1;
  }
  for (; i < limit; i++) {
    fp = (fp << 1) + gear[data[i]];
    if ((fp & mask_loose) == 0) return i + 1;
  }
  return limit;
}

typedef struct {
  size_t min, avg, max;
  uint32_t mask_strict, mask_loose;
  uint32_t gear[256];
} params_t;

// Every cut point of data[0, length): a malloc'ed array of `*count` offsets, or NULL (out of memory).
static double *cut_all(const uint8_t *data, size_t length, const params_t *p, size_t *count) {
  size_t capacity = length / (p->min ? p->min : 1) + 2, n = 0;
  double *cuts = malloc(capacity * sizeof(double));
  if (!cuts) return NULL;
  size_t at = 0;
  while (at < length) {
    at = next_cut(data, at, length, p->gear, p->min, p->avg, p->max, p->mask_strict, p->mask_loose);
    cuts[n++] = (double)at;
  }
  *count = n;
  return cuts;
}

// The arguments both entry points share: (data, gear, min, avg, max, maskStrict, maskLoose).
static bool read_args(napi_env env, napi_callback_info info, params_t *p, const uint8_t **data, size_t *length, napi_value *data_value) {
  size_t argc = 7;
  napi_value argv[7];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 7) return false;
  napi_typedarray_type type;
  size_t gear_length, offset;
  void *bytes, *gear;
  napi_value ab;
  if (napi_get_typedarray_info(env, argv[0], &type, length, &bytes, &ab, &offset) != napi_ok) return false;
  if (napi_get_typedarray_info(env, argv[1], &type, &gear_length, &gear, &ab, &offset) != napi_ok || gear_length != 256) return false;
  double params[5];
  for (int k = 0; k < 5; k++)
    if (napi_get_value_double(env, argv[2 + k], &params[k]) != napi_ok) return false;
  p->min = (size_t)params[0];
  p->avg = (size_t)params[1];
  p->max = (size_t)params[2];
  p->mask_strict = (uint32_t)(int64_t)params[3];
  p->mask_loose = (uint32_t)(int64_t)params[4];
  memcpy(p->gear, gear, sizeof(p->gear));
  *data = bytes;
  *data_value = argv[0];
  return true;
}

static napi_value to_float64_array(napi_env env, const double *cuts, size_t count) {
  napi_value buffer, out;
  void *out_data;
  if (napi_create_arraybuffer(env, count * sizeof(double), &out_data, &buffer) != napi_ok) return NULL;
  memcpy(out_data, cuts, count * sizeof(double));
  if (napi_create_typedarray(env, napi_float64_array, count, buffer, 0, &out) != napi_ok) return NULL;
  return out;
}

// cuts(data: Uint8Array, gear: Uint32Array, min, avg, max, maskStrict, maskLoose): Float64Array
static napi_value Cuts(napi_env env, napi_callback_info info) {
  params_t p;
  const uint8_t *data;
  size_t length, count;
  napi_value data_value;
  if (!read_args(env, info, &p, &data, &length, &data_value)) {
    napi_throw_error(env, NULL, "s0fs native chunker: bad arguments (data, 256-entry gear table, min, avg, max, masks)");
    return NULL;
  }
  double *cuts = cut_all(data, length, &p, &count);
  napi_value out = cuts ? to_float64_array(env, cuts, count) : NULL;
  free(cuts);
  if (!out) napi_throw_error(env, NULL, "s0fs native chunker: out of memory");
  return out;
}

// cutsAsync: the same search on the libuv thread pool. A 2 MiB piece takes a
// few milliseconds to scan, and a 1 GiB write has 500 of them: on the event
// loop they held every FUSE request behind them (17% of the daemon's main
// thread while writing 1 GiB, docs/performance.md).
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref; // keeps the input alive while the pool reads it
  const uint8_t *data;
  size_t length, count;
  double *cuts;
  params_t params;
} cut_job_t;

static void cut_execute(napi_env env, void *arg) {
  (void)env;
  cut_job_t *job = arg;
  job->cuts = cut_all(job->data, job->length, &job->params, &job->count);
}

static void cut_complete(napi_env env, napi_status status, void *arg) {
  cut_job_t *job = arg;
  napi_value out = status == napi_ok && job->cuts ? to_float64_array(env, job->cuts, job->count) : NULL;
  if (out) {
    napi_resolve_deferred(env, job->deferred, out);
  } else {
    napi_value message, error;
    napi_create_string_utf8(env, "s0fs native chunker: out of memory", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &error);
    napi_reject_deferred(env, job->deferred, error);
  }
  free(job->cuts);
  napi_delete_reference(env, job->data_ref);
  napi_delete_async_work(env, job->work);
  free(job);
}

// cutsAsync(data: Uint8Array, gear, min, avg, max, maskStrict, maskLoose): Promise<Float64Array>; data must not change until it settles.
static napi_value CutsAsync(napi_env env, napi_callback_info info) {
  cut_job_t *job = calloc(1, sizeof(cut_job_t));
  napi_value data_value, promise, name;
  if (!job) {
    napi_throw_error(env, NULL, "s0fs native chunker: out of memory");
    return NULL;
  }
  if (!read_args(env, info, &job->params, &job->data, &job->length, &data_value)) {
    free(job);
    napi_throw_error(env, NULL, "s0fs native chunker: bad arguments (data, 256-entry gear table, min, avg, max, masks)");
    return NULL;
  }
  napi_create_reference(env, data_value, 1, &job->data_ref);
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "s0fs:cuts", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, cut_execute, cut_complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

napi_value s0fs_init_poll(napi_env env, napi_value exports);
napi_value s0fs_init_memory(napi_env env, napi_value exports);
napi_value s0fs_init_aead(napi_env env, napi_value exports);
napi_value s0fs_init_encode(napi_env env, napi_value exports);

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "cuts", NAPI_AUTO_LENGTH, Cuts, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "cuts", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "cutsAsync", NAPI_AUTO_LENGTH, CutsAsync, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "cutsAsync", fn) != napi_ok) return NULL;
  s0fs_init_memory(env, exports);
  s0fs_init_aead(env, exports);
  s0fs_init_encode(env, exports);
  return s0fs_init_poll(env, exports);
}
