// The C heap: how glibc keeps it, and returning its free memory to the kernel.
//
// The daemon's large buffers (1 MiB requests, log frames, 8 MiB chunker
// pieces and segments) live on glibc's heap: mapping each one separately
// costs an mmap, page faults and a munmap per request and cut sequential
// writes from ~150 to ~25 MiB/s. The daemon also keeps up to 64 MiB free at
// the top of the heap for reuse (src/mount/runtime.ts), and glibc gives back
// only free memory at the top anyway, so after a burst freed buffers stay
// resident. malloc_trim(0) releases every free page of the heap (madvise),
// which the daemon asks for when it idles with a large gap between its
// resident set and what it uses, or when it passes its memory budget.
#include <node_api.h>
#include <stdint.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static napi_value TrimHeap(napi_env env, napi_callback_info info) {
  int released = 0;
#ifdef __GLIBC__
  released = malloc_trim(0);
#endif
  napi_value result;
  napi_get_boolean(env, released != 0, &result);
  return result;
}

// Sets glibc's malloc parameters from inside the process: arenas, the size
// from which an allocation gets a mapping of its own, and how much free
// memory at the top of the heap is kept (see src/mount/runtime.ts). The
// daemon started by `s0fs mount` gets them from its environment before its
// first allocation; a daemon run in the foreground by a container or a
// service manager gets them here. Arguments: arena_max, mmap_threshold,
// trim_threshold (0 leaves one unchanged). Returns whether all were set.
static napi_value TuneMalloc(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  bool ok = false;
#ifdef __GLIBC__
  int64_t v[3] = {0, 0, 0};
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 3) {
    ok = true;
    for (int i = 0; i < 3; i++) ok = ok && napi_get_value_int64(env, argv[i], &v[i]) == napi_ok && v[i] >= 0 && v[i] <= INT32_MAX;
    if (ok && v[0]) ok = mallopt(M_ARENA_MAX, (int)v[0]) == 1;
    if (ok && v[1]) ok = mallopt(M_MMAP_THRESHOLD, (int)v[1]) == 1;
    if (ok && v[2]) ok = mallopt(M_TRIM_THRESHOLD, (int)v[2]) == 1;
  }
#else
  (void)info;
#endif
  napi_get_boolean(env, ok, &result);
  return result;
}

// Frees a buffer's memory now rather than when V8 next collects: detaching
// its ArrayBuffer drops the backing store, whose finalizer (free, for the
// blob encoder's arenas) then runs. V8 collects on account of memory outside
// its heap only after 64 MiB more of it, so a flush that stores tens of MiB
// otherwise carries all of it as garbage. Views of a detached buffer read as
// empty: a mistake shows as missing bytes, never as a read of freed memory.
// Returns whether the buffer was detached (false: not detachable, e.g. shared).
static napi_value DetachBuffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], arraybuffer, result;
  bool done = false, is_typedarray = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 && napi_is_typedarray(env, argv[0], &is_typedarray) == napi_ok &&
      is_typedarray) {
    napi_typedarray_type type;
    size_t length, offset;
    void *data;
    if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, &arraybuffer, &offset) == napi_ok) {
      bool detached = false;
      napi_is_detached_arraybuffer(env, arraybuffer, &detached);
      done = detached || napi_detach_arraybuffer(env, arraybuffer) == napi_ok;
    }
  }
  napi_get_boolean(env, done, &result);
  return result;
}

napi_value s0fs_init_memory(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "trimHeap", NAPI_AUTO_LENGTH, TrimHeap, NULL, &fn);
  napi_set_named_property(env, exports, "trimHeap", fn);
  napi_create_function(env, "tuneMalloc", NAPI_AUTO_LENGTH, TuneMalloc, NULL, &fn);
  napi_set_named_property(env, exports, "tuneMalloc", fn);
  napi_create_function(env, "detachBuffer", NAPI_AUTO_LENGTH, DetachBuffer, NULL, &fn);
  napi_set_named_property(env, exports, "detachBuffer", fn);
  return exports;
}
