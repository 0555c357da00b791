{
  "targets": [
    {
      "target_name": "vxtap_native",
      "sources": ["native/vxtap.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
