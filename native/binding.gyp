{
  "targets": [
    {
      "target_name": "s0fs_native",
      "sources": ["src/chunker.c", "src/poll.c", "src/memory.c", "src/aead.c"],
      "cflags": ["-O3", "-Wall"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
