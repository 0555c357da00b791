{
  "targets": [
    {
      "target_name": "vxtap_native",
      "sources": ["native/binding.c", "native/sys.c", "native/io.c", "native/kernels.c", "native/vtep.c", "native/crypto.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-luring"]
    }
  ]
}
