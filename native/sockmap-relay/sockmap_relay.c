// The agent's in-kernel relay for large downloads (src/proxy/kernel-relay.ts wraps it).
//
// A guest's file server socket and the client's socket are joined in two eBPF sockhashes under
// one key (the guest socket's remote address and local port, unique among the agent's sockets):
// a verdict program attached to the guests' hash redirects every packet received from the guest
// to the send side of the client's socket, and adds its length to a per-key counter. The bytes
// never reach user space; the agent only watches the counter and the client socket's progress.
//
// No libbpf: the program is 21 instructions, loaded with the raw bpf() syscall. Needs Linux with
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

static int counts_map = -1;
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
  guests_map = clients_map = counts_map = -1;
}

// open(): creates the maps, loads the verdict program and attaches it. Throws with the kernel's reason.
static napi_value open_relay(napi_env env, napi_callback_info info) {
  (void)info;
  if (guests_map >= 0) return NULL;
  counts_map = create_map(BPF_MAP_TYPE_HASH, sizeof(uint64_t));
  if (counts_map < 0) return throw_errno(env, "creating the byte counters");
  clients_map = create_map(BPF_MAP_TYPE_SOCKHASH, sizeof(uint32_t));
  guests_map = create_map(BPF_MAP_TYPE_SOCKHASH, sizeof(uint32_t));
  if (clients_map < 0 || guests_map < 0) {
    int saved = errno;
    close_all();
    errno = saved;
    return throw_errno(env, "creating a sockhash");
  }
  struct bpf_insn program[] = {
      {BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0}, // r6 = skb
      // key on the stack: {remote_ip4, local_port}
      {BPF_LDX | BPF_MEM | BPF_W, 2, 6, offsetof(struct __sk_buff, remote_ip4), 0},
      {BPF_STX | BPF_MEM | BPF_W, 10, 2, -8, 0},
      {BPF_LDX | BPF_MEM | BPF_W, 2, 6, offsetof(struct __sk_buff, local_port), 0},
      {BPF_STX | BPF_MEM | BPF_W, 10, 2, -4, 0},
      // counter = bpf_map_lookup_elem(counts, &key); if (counter) *counter += skb->len (atomic)
      {BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, 0},
      {0, 0, 0, 0, 0},
      {BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0},
      {BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -8},
      {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem},
      {BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2, 0},
      {BPF_LDX | BPF_MEM | BPF_W, 1, 6, offsetof(struct __sk_buff, len), 0},
      {BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_ADD},
      // return bpf_sk_redirect_hash(skb, clients, &key, 0): out of the client's send side
      {BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0},
      {BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, 0},
      {0, 0, 0, 0, 0},
      {BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0},
      {BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8},
      {BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0},
      {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  program[5].imm = counts_map;
  program[14].imm = clients_map;
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

static int key_arg(napi_env env, napi_callback_info info, struct join_key *key) {
  napi_value argv[1];
  size_t argc = 1;
  double handle;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &handle) != napi_ok || handle < 0 || handle >= 281474976710656.0) {
    napi_throw_type_error(env, NULL, "expected a join handle");
    return -1;
  }
  uint64_t whole = (uint64_t)handle;
  key->remote_ip4 = (uint32_t)(whole >> 16);
  key->local_port = (uint32_t)(whole & 0xffff);
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

// join(guestFd, clientFd): from now on what the guest sends goes to the client. Returns the join's
// handle for detach, leave and relayed (valid after either socket closed, unlike its fds).
static napi_value join(napi_env env, napi_callback_info info) {
  int32_t fds[2];
  if (int_args(env, info, 2, fds) != 0) return NULL;
  if (guests_map < 0) {
    errno = EBADF;
    return throw_errno(env, "join before open");
  }
  struct join_key key;
  if (key_of(fds[0], &key) != 0) return throw_errno(env, "the guest socket's addresses");
  uint64_t zero = 0;
  uint32_t client = (uint32_t)fds[1], guest = (uint32_t)fds[0];
  if (update(counts_map, &key, &zero, BPF_ANY) != 0) return throw_errno(env, "a byte counter");
  // The client first: a packet the verdict redirects must find its target.
  if (update(clients_map, &key, &client, BPF_NOEXIST) != 0) {
    int saved = errno;
    delete_key(counts_map, &key);
    errno = saved;
    return throw_errno(env, "putting the client socket in the sockhash");
  }
  if (update(guests_map, &key, &guest, BPF_NOEXIST) != 0) {
    int saved = errno;
    delete_key(clients_map, &key);
    delete_key(counts_map, &key);
    errno = saved;
    return throw_errno(env, "putting the guest socket in the sockhash");
  }
  return number(env, key_handle(&key));
}

// detach(handle): the guest's packets reach user space again (already redirected ones go on).
static napi_value detach(napi_env env, napi_callback_info info) {
  struct join_key key;
  if (key_arg(env, info, &key) != 0) return NULL;
  delete_key(guests_map, &key);
  return NULL;
}

// leave(handle): both sockets out of the maps, the counter gone.
static napi_value leave(napi_env env, napi_callback_info info) {
  struct join_key key;
  if (key_arg(env, info, &key) != 0) return NULL;
  delete_key(guests_map, &key);
  delete_key(clients_map, &key);
  delete_key(counts_map, &key);
  return NULL;
}

// relayed(handle): bytes the verdict redirected since join.
static napi_value relayed(napi_env env, napi_callback_info info) {
  struct join_key key;
  if (key_arg(env, info, &key) != 0) return NULL;
  uint64_t value = 0;
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = counts_map;
  attr.key = (uintptr_t)&key;
  attr.value = (uintptr_t)&value;
  if (bpf(BPF_MAP_LOOKUP_ELEM, &attr) != 0) return throw_errno(env, "reading a byte counter");
  return number(env, (double)value);
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
      {"detach", NULL, detach, NULL, NULL, NULL, napi_default, NULL},
      {"leave", NULL, leave, NULL, NULL, NULL, napi_default, NULL},
      {"relayed", NULL, relayed, NULL, NULL, NULL, napi_default, NULL},
      {"queued", NULL, queued, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
