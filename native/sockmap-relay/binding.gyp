{
  "targets": [
    {
      "target_name": "sockmap_relay",
      "sources": ["sockmap_relay.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
