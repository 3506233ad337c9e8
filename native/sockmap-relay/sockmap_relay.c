// The agent's in-kernel relay for large downloads (src/host/kernel-relay.ts wraps it).
//
// A guest's file server socket and the client's socket are joined in two eBPF sockhashes under
// one key (the guest socket's remote address and local port, unique among the agent's sockets):
// a verdict program attached to the guests' hash redirects every packet received from the guest
// to the send side of the client's socket and counts its bytes. The bytes never reach user space;
// the agent only watches the count and the client socket's progress.
//
// Each join has a limit: the most bytes the guest may have sent (what the agent allowed it). A
// sockmap does not push back on the sender, so without one a guest could pile up bytes in the
// kernel as fast as it sends while the client reads slowly. A packet past the limit is dropped and
// the join marked; the agent then ends that download.
//
// No libbpf: the program is 36 instructions, loaded with the raw bpf() syscall. Needs Linux with
// sockmap support (CONFIG_BPF_STREAM_PARSER) and root, or CAP_BPF + CAP_NET_ADMIN.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_JOINED 4096

struct join_key {
  uint32_t remote_ip4; // network order, as __sk_buff gives it
  uint32_t local_port; // host order, as __sk_buff gives it
};

struct join_count {
  uint64_t bytes;  // redirected so far
  uint64_t over;   // 1 once a packet past the limit was dropped
};

static int counts_map = -1;
static int limits_map = -1;
static int clients_map = -1;
static int guests_map = -1;

static int bpf(int cmd, union bpf_attr *attr) { return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr); }

static int create_map(uint32_t type, uint32_t value_size) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_type = type;
  attr.key_size = sizeof(struct join_key);
  attr.value_size = value_size;
  attr.max_entries = MAX_JOINED;
  return bpf(BPF_MAP_CREATE, &attr);
}

static napi_value throw_errno(napi_env env, const char *what) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(errno));
  napi_throw_error(env, errno == EPERM || errno == EACCES ? "EPERM" : NULL, message);
  return NULL;
}

static void close_all(void) {
  if (guests_map >= 0) close(guests_map);
  if (clients_map >= 0) close(clients_map);
  if (counts_map >= 0) close(counts_map);
  if (limits_map >= 0) close(limits_map);
  guests_map = clients_map = counts_map = limits_map = -1;
}

// open(): creates the maps, loads the verdict program and attaches it. Throws with the kernel's reason.
static napi_value open_relay(napi_env env, napi_callback_info info) {
  (void)info;
  if (guests_map >= 0) return NULL;
  counts_map = create_map(BPF_MAP_TYPE_HASH, sizeof(struct join_count));
  limits_map = create_map(BPF_MAP_TYPE_HASH, sizeof(uint64_t));
  if (counts_map < 0 || limits_map < 0) {
    int saved = errno;
    close_all();
    errno = saved;
    return throw_errno(env, "creating the byte counters");
  }
  clients_map = create_map(BPF_MAP_TYPE_SOCKHASH, sizeof(uint32_t));
  guests_map = create_map(BPF_MAP_TYPE_SOCKHASH, sizeof(uint32_t));
  if (clients_map < 0 || guests_map < 0) {
    int saved = errno;
    close_all();
    errno = saved;
    return throw_errno(env, "creating a sockhash");
  }
  struct bpf_insn program[] = {
      /* 0 */ {BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0}, // r6 = skb
      // key on the stack: {remote_ip4, local_port}
      /* 1 */ {BPF_LDX | BPF_MEM | BPF_W, 2, 6, offsetof(struct __sk_buff, remote_ip4), 0},
      /* 2 */ {BPF_STX | BPF_MEM | BPF_W, 10, 2, -8, 0},
      /* 3 */ {BPF_LDX | BPF_MEM | BPF_W, 2, 6, offsetof(struct __sk_buff, local_port), 0},
      /* 4 */ {BPF_STX | BPF_MEM | BPF_W, 10, 2, -4, 0},
      // r7 = lookup(counts, &key), or drop
      /* 5 */ {BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, 0},
      /* 6 */ {0, 0, 0, 0, 0},
      /* 7 */ {BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0},
      /* 8 */ {BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -8},
      /* 9 */ {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem},
      /* 10 */ {BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 23, 0}, // -> 34
      /* 11 */ {BPF_ALU64 | BPF_MOV | BPF_X, 7, 0, 0, 0},
      // r0 = lookup(limits, &key), or drop
      /* 12 */ {BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, 0},
      /* 13 */ {0, 0, 0, 0, 0},
      /* 14 */ {BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0},
      /* 15 */ {BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -8},
      /* 16 */ {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem},
      /* 17 */ {BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 16, 0}, // -> 34
      // r1 = bytes + skb->len; past the limit: mark and drop. A socket's packets meet the verdict
      // one at a time, so the plain store cannot lose a count.
      /* 18 */ {BPF_LDX | BPF_MEM | BPF_DW, 1, 7, 0, 0},
      /* 19 */ {BPF_LDX | BPF_MEM | BPF_W, 2, 6, offsetof(struct __sk_buff, len), 0},
      /* 20 */ {BPF_ALU64 | BPF_ADD | BPF_X, 1, 2, 0, 0},
      /* 21 */ {BPF_LDX | BPF_MEM | BPF_DW, 3, 0, 0, 0},
      /* 22 */ {BPF_JMP | BPF_JGT | BPF_X, 1, 3, 9, 0}, // -> 32
      /* 23 */ {BPF_STX | BPF_MEM | BPF_DW, 7, 1, 0, 0},
      // return bpf_sk_redirect_hash(skb, clients, &key, 0): out of the client's send side
      /* 24 */ {BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0},
      /* 25 */ {BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, 0},
      /* 26 */ {0, 0, 0, 0, 0},
      /* 27 */ {BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0},
      /* 28 */ {BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8},
      /* 29 */ {BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0},
      /* 30 */ {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash},
      /* 31 */ {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
      /* 32 */ {BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1},
      /* 33 */ {BPF_STX | BPF_MEM | BPF_DW, 7, 1, 8, 0},
      /* 34 */ {BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, SK_DROP},
      /* 35 */ {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  program[5].imm = counts_map;
  program[12].imm = limits_map;
  program[25].imm = clients_map;
  static char verifier_log[16384];
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SK_SKB;
  attr.insns = (uintptr_t)program;
  attr.insn_cnt = sizeof program / sizeof program[0];
  attr.license = (uintptr_t) "GPL";
  attr.log_buf = (uintptr_t)verifier_log;
  attr.log_size = sizeof verifier_log;
  attr.log_level = 1;
  verifier_log[0] = 0;
  int verdict = bpf(BPF_PROG_LOAD, &attr);
  if (verdict < 0) {
    int saved = errno;
    close_all();
    errno = saved;
    if (verifier_log[0] != 0) fprintf(stderr, "sockmap_relay: verifier: %s\n", verifier_log);
    return throw_errno(env, "loading the verdict program");
  }
  memset(&attr, 0, sizeof attr);
  attr.target_fd = guests_map;
  attr.attach_bpf_fd = verdict;
  attr.attach_type = BPF_SK_SKB_VERDICT;
  int attached = bpf(BPF_PROG_ATTACH, &attr);
  int saved = errno;
  close(verdict); // the attachment holds the program
  if (attached < 0) {
    close_all();
    errno = saved;
    return throw_errno(env, "attaching the verdict program");
  }
  return NULL;
}

static int update(int map, const struct join_key *key, const void *value, uint64_t flags) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = map;
  attr.key = (uintptr_t)key;
  attr.value = (uintptr_t)value;
  attr.flags = flags;
  return bpf(BPF_MAP_UPDATE_ELEM, &attr);
}

static void delete_key(int map, const struct join_key *key) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = map;
  attr.key = (uintptr_t)key;
  bpf(BPF_MAP_DELETE_ELEM, &attr);
}

/* The guest first, so that no packet meets the verdict while its client is gone. */
static void remove_join(const struct join_key *key) {
  delete_key(guests_map, key);
  delete_key(clients_map, key);
  delete_key(counts_map, key);
  delete_key(limits_map, key);
}

static int key_of(int guest_fd, struct join_key *key) {
  struct sockaddr_in local, remote;
  socklen_t length = sizeof local;
  if (getsockname(guest_fd, (struct sockaddr *)&local, &length) != 0) return -1;
  length = sizeof remote;
  if (getpeername(guest_fd, (struct sockaddr *)&remote, &length) != 0) return -1;
  if (local.sin_family != AF_INET || remote.sin_family != AF_INET) {
    errno = EAFNOSUPPORT;
    return -1;
  }
  key->remote_ip4 = remote.sin_addr.s_addr;
  key->local_port = ntohs(local.sin_port);
  return 0;
}

static napi_value number(napi_env env, double value) {
  napi_value result;
  napi_create_double(env, value, &result);
  return result;
}

// A join's handle for JavaScript: remote_ip4 * 65536 + local_port (under 2^48, exact in a double).
static double key_handle(const struct join_key *key) { return (double)key->remote_ip4 * 65536.0 + (double)key->local_port; }

/* The key a handle stands for; -1 when it is not one. */
static int key_of_handle(double handle, struct join_key *key) {
  if (!(handle >= 0 && handle < 281474976710656.0)) return -1;
  uint64_t whole = (uint64_t)handle;
  key->remote_ip4 = (uint32_t)(whole >> 16);
  key->local_port = (uint32_t)(whole & 0xffff);
  return 0;
}

static int key_arg(napi_env env, napi_callback_info info, struct join_key *key) {
  napi_value argv[1];
  size_t argc = 1;
  double handle;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &handle) != napi_ok || key_of_handle(handle, key) != 0) {
    napi_throw_type_error(env, NULL, "expected a join handle");
    return -1;
  }
  return 0;
}

static int int_args(napi_env env, napi_callback_info info, size_t count, int32_t *out) {
  napi_value argv[2];
  size_t argc = 2;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < count) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return -1;
  }
  for (size_t i = 0; i < count; i++) {
    if (napi_get_value_int32(env, argv[i], &out[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, "arguments must be numbers");
      return -1;
    }
  }
  return 0;
}

// join(guestFd, clientFd, limit): from now on what the guest sends goes to the client, up to
// `limit` bytes. Returns the join's handle for allow, leave and relayed (valid after either socket
// closed, unlike its fds).
static napi_value join(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  int32_t guest_fd, client_fd;
  double limit;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &guest_fd) != napi_ok || napi_get_value_int32(env, argv[1], &client_fd) != napi_ok ||
      napi_get_value_double(env, argv[2], &limit) != napi_ok || limit < 0) {
    napi_throw_type_error(env, NULL, "expected join(guestFd, clientFd, limit)");
    return NULL;
  }
  if (guests_map < 0) {
    errno = EBADF;
    return throw_errno(env, "join before open");
  }
  struct join_key key;
  if (key_of(guest_fd, &key) != 0) return throw_errno(env, "the guest socket's addresses");
  struct join_count zero = {0, 0};
  uint64_t allowed = (uint64_t)limit;
  uint32_t client = (uint32_t)client_fd, guest = (uint32_t)guest_fd;
  // The client before the guest: a packet the verdict redirects must find its target.
  const char *failed = NULL;
  if (update(counts_map, &key, &zero, BPF_ANY) != 0 || update(limits_map, &key, &allowed, BPF_ANY) != 0) {
    failed = "a byte counter";
  } else if (update(clients_map, &key, &client, BPF_NOEXIST) != 0) {
    failed = "putting the client socket in the sockhash";
  } else if (update(guests_map, &key, &guest, BPF_NOEXIST) != 0) {
    failed = "putting the guest socket in the sockhash";
  }
  if (failed != NULL) {
    int saved = errno;
    remove_join(&key); // what is not there is simply not found
    errno = saved;
    return throw_errno(env, failed);
  }
  return number(env, key_handle(&key));
}

// allow(handle, limit): the guest may now have sent up to `limit` bytes.
static napi_value allow(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  double handle, limit;
  struct join_key key;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_double(env, argv[0], &handle) != napi_ok || napi_get_value_double(env, argv[1], &limit) != napi_ok ||
      key_of_handle(handle, &key) != 0 || limit < 0) {
    napi_throw_type_error(env, NULL, "expected allow(handle, limit)");
    return NULL;
  }
  uint64_t allowed = (uint64_t)limit;
  if (update(limits_map, &key, &allowed, BPF_EXIST) != 0) return throw_errno(env, "raising a limit");
  return NULL;
}

// leave(handle): both sockets out of the relay, the counters gone.
static napi_value leave(napi_env env, napi_callback_info info) {
  struct join_key key;
  if (key_arg(env, info, &key) != 0) return NULL;
  remove_join(&key);
  return NULL;
}

// relayed(handle): bytes redirected since the join; negative (-1 - bytes) once the guest sent past
// its limit.
static napi_value relayed(napi_env env, napi_callback_info info) {
  struct join_key key;
  if (key_arg(env, info, &key) != 0) return NULL;
  struct join_count count = {0, 0};
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = counts_map;
  attr.key = (uintptr_t)&key;
  attr.value = (uintptr_t)&count;
  if (bpf(BPF_MAP_LOOKUP_ELEM, &attr) != 0) return throw_errno(env, "reading a byte counter");
  return number(env, count.over ? -1.0 - (double)count.bytes : (double)count.bytes);
}

// queued(fd): bytes written into this TCP socket since it connected (acknowledged + still in the
// send queue). Redirected bytes count once they left the sockmap's queue for the socket's own.
static napi_value queued(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (int_args(env, info, 1, &fd) != 0) return NULL;
  struct tcp_info tcp;
  socklen_t length = sizeof tcp;
  memset(&tcp, 0, sizeof tcp);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &tcp, &length) != 0) return throw_errno(env, "TCP_INFO");
  if (length < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof tcp.tcpi_bytes_acked) {
    errno = ENOTSUP;
    return throw_errno(env, "TCP_INFO without tcpi_bytes_acked");
  }
  int unacknowledged = 0;
  if (ioctl(fd, SIOCOUTQ, &unacknowledged) != 0) return throw_errno(env, "SIOCOUTQ");
  return number(env, (double)tcp.tcpi_bytes_acked + (double)unacknowledged);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      {"open", NULL, open_relay, NULL, NULL, NULL, napi_default, NULL},
      {"join", NULL, join, NULL, NULL, NULL, napi_default, NULL},
      {"allow", NULL, allow, NULL, NULL, NULL, napi_default, NULL},
      {"leave", NULL, leave, NULL, NULL, NULL, napi_default, NULL},
      {"relayed", NULL, relayed, NULL, NULL, NULL, napi_default, NULL},
      {"queued", NULL, queued, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
