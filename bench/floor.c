/*
 * The benchmark's "floor" path: the least a user-space L2-over-UDP forwarder can do. One TAP, one UDP socket,
 * one peer; every frame read from the TAP gets an 8-byte VXLAN header (VNI 42) and is sent to the peer, every
 * datagram received loses its header and is written to the TAP. poll() sleeps until one of the two is readable.
 * No checks, no tables, no batching, no offloads: not an overlay anyone should run, but what any forwarder that
 * sleeps between packets pays on this machine (the wake-ups and the copies through user space). The benchmark
 * reports it next to vxtap so the latency vxtap adds over the kernel can be read against that floor. With
 * --spin it never sleeps: it polls with a zero timeout and yields the CPU between polls, the loop vxtap's
 * --busy-poll runs, so it is the same yardstick for the vxtap-busy row.
 *
 *   floor [--spin] TAPNAME LOCAL_IPV4 PEER_IPV4 [PORT]   (run inside the host's netns; the TAP is created here)
 *   floor --syscall-ns    prints the cost of a null syscall (getppid) in ns: on VMs it varies several-fold and
 *                         decides what per-frame syscalls cost
 *   floor --wake-us       prints two medians in microseconds, from a write on a pipe to the reader running:
 *                         the reader on the writer's CPU (a hand-off: the writer then blocks), and the reader on
 *                         another CPU that went idle in the meantime ("-" on one CPU). A forwarder that sleeps
 *                         pays such wake-ups on every hop; on VMs waking an idle vCPU costs far more than on
 *                         bare metal, and it bounds the latency of every row that sleeps
 *
 * Built by bench/forwarding.ts with the C compiler the native addon needs; exits on SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define VXLAN_HLEN 8

static void die(const char *what) {
  fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

/* ---- --wake-us: one thread writes a timestamp on a pipe, another (blocked in read) notes when it runs. */

#define WAKE_ROUNDS 200
#define WAKE_GAP_NS 2000000 /* between rounds: long enough for an idle CPU to halt */

struct waker {
  int cpu_reader;
  int to_reader[2], to_writer[2];
  double us[WAKE_ROUNDS];
};

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) die("pthread_setaffinity_np");
}

static void *wake_reader(void *arg) {
  struct waker *w = arg;
  pin(w->cpu_reader);
  for (int i = 0; i < WAKE_ROUNDS; i++) {
    double sent;
    if (read(w->to_reader[0], &sent, sizeof sent) != sizeof sent) die("read");
    w->us[i] = (now_ns() - sent) / 1000;
    if (write(w->to_writer[1], "k", 1) != 1) die("write");
  }
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median time from the writer's write() to the reader returning from read(), the reader on cpu_reader. */
static double wake_median(int cpu_writer, int cpu_reader) {
  struct waker w = {.cpu_reader = cpu_reader};
  if (pipe(w.to_reader) < 0 || pipe(w.to_writer) < 0) die("pipe");
  pthread_t t;
  if (pthread_create(&t, NULL, wake_reader, &w) != 0) die("pthread_create");
  pin(cpu_writer);
  struct timespec gap = {0, WAKE_GAP_NS};
  for (int i = 0; i < WAKE_ROUNDS; i++) {
    nanosleep(&gap, NULL);
    double sent = now_ns();
    if (write(w.to_reader[1], &sent, sizeof sent) != sizeof sent) die("write");
    char k;
    if (read(w.to_writer[0], &k, 1) != 1) die("read");
  }
  pthread_join(t, NULL);
  close(w.to_reader[0]);
  close(w.to_reader[1]);
  close(w.to_writer[0]);
  close(w.to_writer[1]);
  qsort(w.us, WAKE_ROUNDS, sizeof w.us[0], cmp_double);
  return w.us[WAKE_ROUNDS / 2];
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--wake-us") == 0) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) die("sched_getaffinity");
    int a = -1, b = -1;
    for (int c = 0; c < CPU_SETSIZE && b < 0; c++)
      if (CPU_ISSET(c, &set)) *(a < 0 ? &a : &b) = c;
    double same = wake_median(a, a);
    if (b < 0) printf("%.1f -\n", same);
    else printf("%.1f %.1f\n", same, wake_median(a, b));
    return 0;
  }
  if (argc == 2 && strcmp(argv[1], "--syscall-ns") == 0) {
    double best = 1e18;
    for (int round = 0; round < 5; round++) { /* the best of 5 rounds of 200k */
      double t0 = now_ns();
      for (int i = 0; i < 200000; i++) syscall(SYS_getppid);
      double per = (now_ns() - t0) / 200000;
      if (per < best) best = per;
    }
    printf("%.0f\n", best);
    return 0;
  }
  int spin = argc > 1 && strcmp(argv[1], "--spin") == 0;
  if (spin) {
    argc--;
    argv++;
  }
  if (argc < 4) {
    fprintf(stderr, "usage: floor [--spin] TAPNAME LOCAL_IPV4 PEER_IPV4 [PORT]\n");
    return 2;
  }
  int port = argc > 4 ? atoi(argv[4]) : 4789;
  int tap = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (tap < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
  if (ioctl(tap, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  int udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (udp < 0) die("socket");
  int buf = 4 << 20;
  setsockopt(udp, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  setsockopt(udp, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
  struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  struct sockaddr_in peer = local;
  if (inet_pton(AF_INET, argv[2], &local.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &peer.sin_addr) != 1) {
    fprintf(stderr, "floor: LOCAL_IPV4 and PEER_IPV4 must be IPv4 addresses\n");
    return 2;
  }
  if (bind(udp, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
  static unsigned char frame[VXLAN_HLEN + 65536];
  struct pollfd fds[2] = {{tap, POLLIN, 0}, {udp, POLLIN, 0}};
  fprintf(stderr, "floor: ready\n");
  for (;;) {
    int ready = poll(fds, 2, spin ? 0 : -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (ready == 0) { /* --spin: nothing yet; let anything runnable on this CPU have it, then poll again */
      sched_yield();
      continue;
    }
    ssize_t n;
    while ((n = read(tap, frame + VXLAN_HLEN, sizeof frame - VXLAN_HLEN)) > 0) {
      memset(frame, 0, VXLAN_HLEN);
      frame[0] = 0x08; /* flags: I (VNI valid) */
      frame[6] = 42;   /* VNI 42 in bytes 4..6 */
      sendto(udp, frame, (size_t)n + VXLAN_HLEN, 0, (struct sockaddr *)&peer, sizeof peer);
    }
    while ((n = recv(udp, frame, sizeof frame, 0)) > 0) {
      if (n > VXLAN_HLEN) (void)!write(tap, frame + VXLAN_HLEN, (size_t)n - VXLAN_HLEN);
    }
  }
}
