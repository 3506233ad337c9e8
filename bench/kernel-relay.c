// A TCP relay whose bytes never reach user space: each accepted connection and its connection to
// the target are put in an eBPF sockmap whose verdict program redirects every packet received on
// one socket to the other's send side. The bench sets it beside the agent's relay to tell what
// relaying at all costs on a machine from what a relay in user space costs (npm run bench -- proxy).
//
// usage: kernel-relay LISTEN_PORT TARGET_IP TARGET_PORT   (loopback only; root or CAP_BPF + CAP_NET_ADMIN)
// Exits 3 at once when the kernel refuses the program or the map (no sockmap support, not allowed).
//
// A measuring tool, not the agent's: a client that sends while its connection is being taken over
// could see those bytes reordered (the bench's HTTP and WebSocket clients send one request and wait).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int bpf(int cmd, union bpf_attr *attr) { return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr); }

static void reap(int signal_number) {
  (void)signal_number;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

/*
 * A sockmap of two (0: the client's socket, 1: the target's) with a verdict program attached:
 * a packet that arrived on the listening port's side (the client's) goes out of socket 1, any
 * other out of socket 0. Returns the map's fd, or -1 (errno set).
 */
static int pair_map(int listen_port) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_type = BPF_MAP_TYPE_SOCKMAP;
  attr.key_size = 4;
  attr.value_size = 4;
  attr.max_entries = 2;
  int map = bpf(BPF_MAP_CREATE, &attr);
  if (map < 0) return -1;
  struct bpf_insn program[] = {
      // r2 = skb->local_port (host order); r3 = 0, or 1 when r2 is the listening port
      {BPF_LDX | BPF_MEM | BPF_W, 2, 1, offsetof(struct __sk_buff, local_port), 0},
      {BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, 0},
      {BPF_JMP | BPF_JNE | BPF_K, 2, 0, 1, listen_port},
      {BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, 1},
      // return bpf_sk_redirect_map(skb, map, r3, 0): 0 = out of that socket's send side
      {BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, map},
      {0, 0, 0, 0, 0},
      {BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0},
      {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_map},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  static char verifier_log[16384];
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SK_SKB;
  attr.insns = (unsigned long)program;
  attr.insn_cnt = sizeof program / sizeof program[0];
  attr.license = (unsigned long)"GPL";
  attr.log_buf = (unsigned long)verifier_log;
  attr.log_size = sizeof verifier_log;
  attr.log_level = 1;
  int verdict = bpf(BPF_PROG_LOAD, &attr);
  if (verdict < 0) {
    int saved = errno;
    fprintf(stderr, "kernel-relay: verifier: %s\n", verifier_log);
    close(map);
    errno = saved;
    return -1;
  }
  memset(&attr, 0, sizeof attr);
  attr.target_fd = map;
  attr.attach_bpf_fd = verdict;
  attr.attach_type = BPF_SK_SKB_VERDICT;
  int attached = bpf(BPF_PROG_ATTACH, &attr);
  int saved = errno;
  close(verdict); // the attachment holds the program
  if (attached < 0) {
    close(map);
    errno = saved;
    return -1;
  }
  return map;
}

static int put(int map, int slot, int socket_fd) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = map;
  attr.key = (unsigned long)&slot;
  attr.value = (unsigned long)&socket_fd;
  attr.flags = BPF_ANY;
  return bpf(BPF_MAP_UPDATE_ELEM, &attr);
}

/* Bytes a socket received before it was in the map never meet the verdict: pass them on here. */
static void pass_queued(int from, int to) {
  static char buffer[65536];
  ssize_t n;
  while ((n = recv(from, buffer, sizeof buffer, MSG_DONTWAIT)) > 0) send(to, buffer, (size_t)n, 0);
}

static void relay(int client, const struct sockaddr_in *target, int listen_port) {
  int one = 1;
  int upstream = socket(AF_INET, SOCK_STREAM, 0);
  if (upstream < 0 || connect(upstream, (const struct sockaddr *)target, sizeof *target) != 0) _exit(1);
  setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int map = pair_map(listen_port);
  // The target first: it speaks only when spoken to, so nothing of its is redirected to an empty slot.
  if (map < 0 || put(map, 1, upstream) != 0 || put(map, 0, client) != 0) _exit(2);
  pass_queued(client, upstream);
  pass_queued(upstream, client);
  // The kernel carries the bytes from here; this process only waits for either side to finish.
  struct pollfd ends[2] = {{client, POLLRDHUP, 0}, {upstream, POLLRDHUP, 0}};
  poll(ends, 2, -1);
  usleep(200 * 1000); // what is already redirected goes out before both close
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: kernel-relay LISTEN_PORT TARGET_IP TARGET_PORT\n");
    return 64;
  }
  int listen_port = atoi(argv[1]);
  int probe = pair_map(listen_port);
  if (probe < 0) {
    perror("kernel-relay: sockmap with a verdict program");
    return 3;
  }
  close(probe);
  struct sigaction on_child = {0};
  on_child.sa_handler = reap;
  on_child.sa_flags = SA_RESTART;
  sigaction(SIGCHLD, &on_child, NULL);
  int one = 1;
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((unsigned short)listen_port)};
  inet_pton(AF_INET, "127.0.0.1", &local.sin_addr);
  struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
  if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
    fprintf(stderr, "kernel-relay: not an IPv4 address: %s\n", argv[2]);
    return 64;
  }
  if (bind(listener, (struct sockaddr *)&local, sizeof local) != 0 || listen(listener, 128) != 0) {
    perror("kernel-relay: listen");
    return 1;
  }
  for (;;) {
    int client = accept(listener, NULL, NULL);
    if (client < 0) continue;
    if (fork() == 0) {
      close(listener);
      relay(client, &target, listen_port);
    }
    close(client);
  }
}
