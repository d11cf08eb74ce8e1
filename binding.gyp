# The native addon: the only place ipipd makes syscalls (see native/ipipd.cc).
# `npm ci` runs `node-gyp rebuild`, which builds build/Release/ipipd_native.node.
{
  "targets": [
    {
      "target_name": "ipipd_native",
      "sources": ["native/ipipd.cc"],
      # node-addon-api with C++ exceptions: a failed N-API call or a JS exception raised
      # through a callback becomes a Napi::Error we can catch.
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "configurations": {
        "Release": {
          # node's common.gypi asks for -O3; the data path needs nothing beyond -O2.
          "cflags!": ["-O3"],
          "cflags_cc!": ["-O3"],
          "cflags": ["-O2"],
          "cflags_cc": ["-O2"]
        }
      }
    }
  ]
}
