// Readiness of a file descriptor on the event loop (uv_poll), for /dev/fuse:
// the FUSE device is pollable, so requests can be read on the main thread as
// they arrive — no thread-pool hop per request, and every request that is
// ready is read in one wake-up.
#include <node_api.h>
#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int closing;
} watcher_t;

static void on_readable(uv_poll_t *handle, int status, int events) {
  watcher_t *w = (watcher_t *)handle->data;
  if (w->closing) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, receiver, argv[1];
  napi_get_reference_value(env, w->callback, &callback);
  napi_get_global(env, &receiver); // make_callback needs an object receiver
  napi_create_int32(env, status, &argv[0]);
  // make_callback, not call_function: microtasks and nextTicks run afterwards,
  // so promises the handler settles make progress at once.
  napi_make_callback(env, w->context, receiver, callback, 1, argv, NULL);
  napi_close_handle_scope(env, scope);
}

static void on_closed(uv_handle_t *handle) {
  free(handle->data);
}

static void finalize_watcher(napi_env env, void *data, void *hint) {
  // Freed by on_closed once stopped; nothing to do if it never was.
  (void)env; (void)data; (void)hint;
}

// watch(fd: number, callback: (status: number) => void): external
static napi_value Watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_error(env, NULL, "watch(fd, callback)");
    return NULL;
  }
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_error(env, NULL, "watch: fd must be a number");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "watch: no event loop");
    return NULL;
  }
  watcher_t *w = calloc(1, sizeof(watcher_t));
  w->env = env;
  napi_create_reference(env, argv[1], 1, &w->callback);
  napi_value name;
  napi_create_string_utf8(env, "s0fs:fuse", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->context);
  int err = uv_poll_init(loop, &w->poll, fd);
  if (err == 0) err = uv_poll_start(&w->poll, UV_READABLE, on_readable);
  if (err != 0) {
    napi_delete_reference(env, w->callback);
    napi_async_destroy(env, w->context);
    free(w);
    napi_throw_error(env, NULL, uv_strerror(err));
    return NULL;
  }
  w->poll.data = w;
  napi_value external;
  napi_create_external(env, w, finalize_watcher, NULL, &external);
  return external;
}

// unwatch(handle: external): void
static napi_value Unwatch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  watcher_t *w;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&w) != napi_ok || !w || w->closing) return NULL;
  w->closing = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->context);
  uv_close((uv_handle_t *)&w->poll, on_closed);
  return NULL;
}

napi_value s0fs_init_poll(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "watch", NAPI_AUTO_LENGTH, Watch, NULL, &fn);
  napi_set_named_property(env, exports, "watch", fn);
  napi_create_function(env, "unwatch", NAPI_AUTO_LENGTH, Unwatch, NULL, &fn);
  napi_set_named_property(env, exports, "unwatch", fn);
  return exports;
}
