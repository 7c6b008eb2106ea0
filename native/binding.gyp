{
  # zstd's compressor is compiled in from the sources zstd-napi ships (the same
  # version that decompresses the blobs), for src/encode.c. Hidden visibility keeps
  # its symbols out of the way of zstd-napi's own copy in the same process.
  "variables": {
    "zstd": "<!(node -p \"require('path').relative('.', require('path').join(require('path').dirname(require.resolve('zstd-napi/package.json')), 'deps/zstd/lib'))\")"
  },
  "targets": [
    {
      "target_name": "s0fs_native",
      "sources": [
        "src/chunker.c", "src/poll.c", "src/memory.c", "src/aead.c", "src/encode.c",
        "<(zstd)/common/debug.c",
        "<(zstd)/common/entropy_common.c",
        "<(zstd)/common/error_private.c",
        "<(zstd)/common/fse_decompress.c",
        "<(zstd)/common/xxhash.c",
        "<(zstd)/common/zstd_common.c",
        "<(zstd)/compress/fse_compress.c",
        "<(zstd)/compress/hist.c",
        "<(zstd)/compress/huf_compress.c",
        "<(zstd)/compress/zstd_compress.c",
        "<(zstd)/compress/zstd_compress_literals.c",
        "<(zstd)/compress/zstd_compress_sequences.c",
        "<(zstd)/compress/zstd_compress_superblock.c",
        "<(zstd)/compress/zstd_double_fast.c",
        "<(zstd)/compress/zstd_fast.c",
        "<(zstd)/compress/zstd_lazy.c",
        "<(zstd)/compress/zstd_ldm.c",
        "<(zstd)/compress/zstd_opt.c",
        "<(zstd)/compress/zstd_preSplit.c"
      ],
      "include_dirs": ["<(zstd)"],
      "cflags": ["-O3", "-Wall", "-fvisibility=hidden", "-Wno-deprecated-declarations"],
      "defines": ["NAPI_VERSION=8", "XXH_NAMESPACE=S0FS_ZSTD_", "ZSTD_NO_TRACE", "ZSTDLIB_VISIBLE=", "ZSTDERRORLIB_VISIBLE="]
    }
  ]
}
