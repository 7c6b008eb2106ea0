// FastCDC cut-point search: the one sequential stage of the store pipeline.
// Same algorithm and output as src/blob/chunker.ts (the pure-JS fallback);
// test/unit/native.test.ts checks that both agree byte for byte.
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>

#define CHECK(call)                                                        \
  if ((call) != napi_ok) {                                                 \
    napi_throw_error(env, NULL, "s0fs native chunker: bad arguments");     \
    return NULL;                                                           \
  }

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

// cuts(data: Uint8Array, gear: Uint32Array, min, avg, max, maskStrict, maskLoose): Float64Array
static napi_value Cuts(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7) {
    napi_throw_error(env, NULL, "s0fs native chunker: expected 7 arguments");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length, gear_length;
  void *data, *gear;
  napi_value ab;
  size_t offset;
  CHECK(napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &offset));
  CHECK(napi_get_typedarray_info(env, argv[1], &type, &gear_length, &gear, &ab, &offset));
  if (gear_length != 256) {
    napi_throw_error(env, NULL, "s0fs native chunker: gear table must have 256 entries");
    return NULL;
  }
  double params[5];
  for (int k = 0; k < 5; k++) CHECK(napi_get_value_double(env, argv[2 + k], &params[k]));
  size_t min = (size_t)params[0], avg = (size_t)params[1], max = (size_t)params[2];
  uint32_t mask_strict = (uint32_t)(int64_t)params[3], mask_loose = (uint32_t)(int64_t)params[4];

  size_t capacity = length / (min ? min : 1) + 2, count = 0;
  double *cuts = malloc(capacity * sizeof(double));
  if (!cuts) {
    napi_throw_error(env, NULL, "s0fs native chunker: out of memory");
    return NULL;
  }
  size_t at = 0;
  while (at < length) {
    at = next_cut((const uint8_t *)data, at, length, (const uint32_t *)gear, min, avg, max, mask_strict, mask_loose);
    cuts[count++] = (double)at;
  }
  napi_value out_buffer, out;
  void *out_data;
  if (napi_create_arraybuffer(env, count * sizeof(double), &out_data, &out_buffer) != napi_ok) {
    free(cuts);
    napi_throw_error(env, NULL, "s0fs native chunker: cannot allocate result");
    return NULL;
  }
  for (size_t k = 0; k < count; k++) ((double *)out_data)[k] = cuts[k];
  free(cuts);
  CHECK(napi_create_typedarray(env, napi_float64_array, count, out_buffer, 0, &out));
  return out;
}

napi_value s0fs_init_poll(napi_env env, napi_value exports);
napi_value s0fs_init_memory(napi_env env, napi_value exports);
napi_value s0fs_init_aead(napi_env env, napi_value exports);
napi_value s0fs_init_encode(napi_env env, napi_value exports);

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "cuts", NAPI_AUTO_LENGTH, Cuts, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "cuts", fn) != napi_ok) return NULL;
  s0fs_init_memory(env, exports);
  s0fs_init_aead(env, exports);
  s0fs_init_encode(env, exports);
  return s0fs_init_poll(env, exports);
}
