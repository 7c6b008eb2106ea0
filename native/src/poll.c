// Reading /dev/fuse on the event loop (uv_poll). The FUSE device is pollable,
// so requests are read on the main thread as they arrive: no thread-pool hop
// per request, and every request that is ready is read in one wake-up.
//
// The reads happen here, not in JavaScript: a non-blocking read that finds
// the queue empty is the normal end of every wake-up, and through fs.readSync
// it would cost a thrown exception each time. JavaScript is called once per
// request with its length (the request is in the buffer given to watch), or
// once with a negative errno when the session ends.
//
// Busy polling: after a request the loop keeps reading for a short window
// (busyPollUs) before it goes back to epoll. A program working through files
// sends its next request a few microseconds after each reply; caught here, it
// costs no sleep and wake-up of this thread (an interprocessor interrupt,
// dear in a VM). The trade Linux's net.core.busy_read makes for sockets: up to
// a window of CPU per request, for latency.
#include <errno.h>
#include <node_api.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

// Requests handled per wake-up before returning to the event loop, so timers
// and worker replies are not starved by a busy mount.
#define MAX_PER_WAKEUP 256

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref buffer_ref; // keeps the request buffer alive while watched
  napi_async_context context;
  int fd;
  void *buffer;
  size_t length;
  long poll_ns;   // busy-polling window after each request (0: off)
  double polled;  // requests that arrived while busy polling
  int closing;
} watcher_t;

// Calls the JavaScript callback with one number. make_callback, not
// call_function: microtasks and nextTicks run afterwards, so a request whose
// handler settles promises is answered before the next one is read.
static void deliver(watcher_t *w, int32_t value) {
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, receiver, argv[1];
  napi_get_reference_value(env, w->callback, &callback);
  napi_get_global(env, &receiver); // make_callback needs an object receiver
  napi_create_int32(env, value, &argv[0]);
  napi_make_callback(env, w->context, receiver, callback, 1, argv, NULL);
  napi_close_handle_scope(env, scope);
}

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  long poll_until = 0;
  int polling = 0; // the queue was empty and this loop kept reading
  watcher_t *w = (watcher_t *)handle->data;
  (void)events;
  if (w->closing) return;
  if (status < 0) {
    deliver(w, status);
    return;
  }
  for (int i = 0; i < MAX_PER_WAKEUP && !w->closing; i++) {
    ssize_t n = read(w->fd, w->buffer, w->length);
    if (n >= 0) {
      if (polling) w->polled++;
      polling = 0;
      deliver(w, (int32_t)n);
      poll_until = w->poll_ns ? now_ns() + w->poll_ns : 0;
      continue;
    }
    if (errno == EAGAIN) {
      // Within the window: read again (this iteration does not count as a request).
      if (poll_until && now_ns() < poll_until) {
        polling = 1;
        i--;
        continue;
      }
      return;
    }
    // ENOENT: the request was interrupted before we read it; EINTR: a signal.
    if (errno == ENOENT || errno == EINTR) continue;
    deliver(w, -errno);
    return;
  }
}

static void on_closed(uv_handle_t *handle) {
  free(handle->data);
}

// watch(fd: number, buffer: Buffer, callback: (n: number) => void, busyPollUs: number): external
// The fd must be non-blocking. callback(n >= 0): a request of n bytes is in
// the buffer (valid until the callback returns); callback(n < 0): the device
// failed with errno -n (ENODEV: unmounted), and the caller should unwatch.
static napi_value Watch(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) {
    napi_throw_error(env, NULL, "watch(fd, buffer, callback, busyPollUs)");
    return NULL;
  }
  int32_t poll_us;
  if (napi_get_value_int32(env, argv[3], &poll_us) != napi_ok || poll_us < 0) {
    napi_throw_error(env, NULL, "watch: busyPollUs must be a non-negative number");
    return NULL;
  }
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_error(env, NULL, "watch: fd must be a number");
    return NULL;
  }
  void *data;
  size_t length;
  if (napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok || length == 0) {
    napi_throw_error(env, NULL, "watch: buffer must be a non-empty Buffer");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "watch: no event loop");
    return NULL;
  }
  watcher_t *w = calloc(1, sizeof(watcher_t));
  w->env = env;
  w->fd = fd;
  w->buffer = data;
  w->length = length;
  w->poll_ns = (long)poll_us * 1000L;
  napi_create_reference(env, argv[1], 1, &w->buffer_ref);
  napi_create_reference(env, argv[2], 1, &w->callback);
  napi_value name;
  napi_create_string_utf8(env, "s0fs:fuse", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->context);
  int err = uv_poll_init(loop, &w->poll, fd);
  if (err == 0) err = uv_poll_start(&w->poll, UV_READABLE, on_readable);
  if (err != 0) {
    napi_delete_reference(env, w->callback);
    napi_delete_reference(env, w->buffer_ref);
    napi_async_destroy(env, w->context);
    free(w);
    napi_throw_error(env, NULL, uv_strerror(err));
    return NULL;
  }
  w->poll.data = w;
  napi_value external;
  napi_create_external(env, w, NULL, NULL, &external);
  return external;
}

// unwatch(handle: external): void — safe to call from inside the callback.
static napi_value Unwatch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  watcher_t *w;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&w) != napi_ok || !w || w->closing) return NULL;
  w->closing = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(env, w->callback);
  napi_delete_reference(env, w->buffer_ref);
  napi_async_destroy(env, w->context);
  uv_close((uv_handle_t *)&w->poll, on_closed); // frees w once libuv is done with it
  return NULL;
}

// polled(handle: external): number — requests that arrived while busy polling, so far.
static napi_value Polled(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  watcher_t *w;
  double polled = 0;
  if (argc >= 1 && napi_get_value_external(env, argv[0], (void **)&w) == napi_ok && w && !w->closing) polled = w->polled;
  napi_create_double(env, polled, &result);
  return result;
}

napi_value s0fs_init_poll(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "watch", NAPI_AUTO_LENGTH, Watch, NULL, &fn);
  napi_set_named_property(env, exports, "watch", fn);
  napi_create_function(env, "unwatch", NAPI_AUTO_LENGTH, Unwatch, NULL, &fn);
  napi_set_named_property(env, exports, "unwatch", fn);
  napi_create_function(env, "polled", NAPI_AUTO_LENGTH, Polled, NULL, &fn);
  napi_set_named_property(env, exports, "polled", fn);
  return exports;
}
