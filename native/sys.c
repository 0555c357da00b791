/*
 * sys.c: the setup syscalls (a TAP opened inside a container's namespace, its ioctls, the UDP sockets) and busy
 * polling of the event loop. Plain C: each returns its result or -errno, and says which step failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include "vxtap.h"

/* ---------------------------------------------------------------- TAP */

/* Run fn in the network namespace at ns_path (e.g. /run/netns/X), on this thread only, then come back. */
static int with_netns(const char *ns_path, int (*fn)(void *), void *arg, int *fn_result) {
  if (!ns_path || !*ns_path) {
    *fn_result = fn(arg);
    return 0;
  }
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) return errno;
  int target = open(ns_path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(self);
    return e;
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int e = errno;
    close(self);
    close(target);
    return e;
  }
  *fn_result = fn(arg);
  int saved = errno;
  int back = setns(self, CLONE_NEWNET);
  close(self);
  close(target);
  if (back < 0) {
    /* We cannot continue in the wrong namespace: everything after this would act on the container. */
    fprintf(stderr, "vxtap_native: FATAL: cannot return to the agent's network namespace: %s\n", strerror(errno));
    abort();
  }
  errno = saved;
  return 0;
}

typedef struct {
  char name[IFNAMSIZ];
  int flags;
  int fd;
  int err;
} tap_open_args;

static int do_tap_open(void *arg) {
  tap_open_args *a = arg;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    a->err = errno;
    return -1;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = (short)a->flags;
  memcpy(ifr.ifr_name, a->name, IFNAMSIZ - 1); /* a->name is NUL-terminated within IFNAMSIZ */
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    a->err = errno;
    close(fd);
    return -1;
  }
  memcpy(a->name, ifr.ifr_name, IFNAMSIZ);
  a->name[IFNAMSIZ - 1] = 0;
  a->fd = fd;
  return 0;
}

int vx_tap_open(char name[16], int flags, const char *ns_path, const char **where) {
  tap_open_args a;
  memset(&a, 0, sizeof a);
  memcpy(a.name, name, IFNAMSIZ);
  a.name[IFNAMSIZ - 1] = 0;
  a.flags = flags;
  int r = 0;
  int e = with_netns(ns_path, do_tap_open, &a, &r);
  if (e) {
    *where = "setns";
    return -e;
  }
  if (r < 0) {
    *where = "TUNSETIFF";
    return -a.err;
  }
  memcpy(name, a.name, IFNAMSIZ);
  return a.fd;
}

int vx_tap_ioctl(int fd, int which, int value) {
  int r;
  switch (which) {
    case 0: r = ioctl(fd, TUNSETPERSIST, (unsigned long)value); break;
    case 1: r = ioctl(fd, TUNSETOFFLOAD, (unsigned long)value); break;
    case 2: r = ioctl(fd, TUNSETVNETHDRSZ, &value); break;
    default: return -EINVAL;
  }
  return r < 0 ? -errno : 0;
}

const char *vx_tap_ioctl_name(int which) {
  return which == 0 ? "TUNSETPERSIST" : which == 1 ? "TUNSETOFFLOAD" : "TUNSETVNETHDRSZ";
}

/* ---------------------------------------------------------------- UDP sockets */

int vx_udp_open(uint32_t vtep, uint16_t port, uint32_t rcvbuf, uint32_t sndbuf, bool gro, uint16_t *bound_port,
                const char **where) {
  vx_sockaddr sa;
  socklen_t sl = vx_vtep_sockaddr(vtep, port, &sa);
  if (!sl) {
    *where = "VTEP id";
    return -EDESTADDRREQ;
  }
  int fd = socket(sa.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *where = "socket";
    return -errno;
  }
  int one = 1;
  /* IPv6 only: an IPv4 datagram never arrives as a v4-mapped source the VTEP table does not know */
  if (sa.sa.sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    *where = "setsockopt(IPV6_V6ONLY)";
    return -e;
  }
  /* FORCE variants pass rmem_max/wmem_max as root; fall back to the capped ones otherwise. */
  if (rcvbuf && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (sndbuf && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (gro && setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    *where = "setsockopt(UDP_GRO)";
    return -e;
  }
  if (bind(fd, &sa.sa, sl) < 0) {
    int e = errno;
    close(fd);
    *where = "bind";
    return -e;
  }
  getsockname(fd, &sa.sa, &sl);
  uint16_t p;
  vx_vtep_of(&sa, &p);
  *bound_port = p;
  return fd;
}

int vx_sock_info(int fd, int *rcvbuf, int *sndbuf) {
  socklen_t l = sizeof *rcvbuf;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, rcvbuf, &l) < 0) return -errno;
  l = sizeof *sndbuf;
  getsockopt(fd, SOL_SOCKET, SO_SNDBUF, sndbuf, &l);
  return 0;
}

/* ---------------------------------------------------------------- busy polling
 *
 * Off by default. With a window W > 0, the event loop does not go to sleep for W after the last data-plane
 * callback: just before libuv would block in epoll_wait (a uv_prepare handle), the thread polls libuv's epoll fd
 * with a zero timeout, yielding the CPU between polls (sched_yield: a runnable container or peer on this CPU still
 * gets it), until an fd is ready, a libuv timer is due, or W has passed. A packet then finds the agent running
 * instead of asleep: no wake-up, no cold caches. The cost is a CPU kept busy while traffic flows (the same trade as
 * the kernel's SO_BUSY_POLL or a DPDK poll-mode driver), so it is the operator's choice (vxtap agent --busy-poll). */
typedef struct {
  uv_prepare_t prepare;
  int started;
  uint64_t window_ns;
  uint64_t last_activity_ns;
  /* counters: spins that found work, and nanoseconds spent spinning */
  double hits;
  double spin_ns;
} vx_busy_t;
static vx_busy_t busy;

static inline uint64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void busy_prepare_cb(uv_prepare_t *h) {
  if (busy.window_ns == 0) return;
  uint64_t now = mono_ns();
  uint64_t end = busy.last_activity_ns + busy.window_ns;
  if (now >= end) return;
  int t = uv_backend_timeout(h->loop); /* ms until the next libuv timer; -1: none, 0: work is pending */
  if (t == 0) return;
  if (t > 0 && now + (uint64_t)t * 1000000u < end) end = now + (uint64_t)t * 1000000u;
  struct pollfd pfd = {uv_backend_fd(h->loop), POLLIN, 0};
  uint64_t start = now;
  for (;;) {
    if (poll(&pfd, 1, 0) > 0) {
      busy.hits++;
      break;
    }
    now = mono_ns();
    if (now >= end) break;
    sched_yield();
  }
  busy.spin_ns += (double)(mono_ns() - start);
}

void vx_busy_touch(void) {
  if (busy.window_ns != 0) busy.last_activity_ns = mono_ns();
}

void vx_busy_set(uv_loop_t *loop, uint32_t window_us) {
  if (!busy.started && window_us > 0) {
    uv_prepare_init(loop, &busy.prepare);
    uv_prepare_start(&busy.prepare, busy_prepare_cb);
    uv_unref((uv_handle_t *)&busy.prepare); /* never keeps the process alive by itself */
    busy.started = 1;
  }
  busy.window_ns = (uint64_t)window_us * 1000u;
  busy.last_activity_ns = mono_ns();
}

void vx_busy_stats(double *hits, double *spin_ns) {
  *hits = busy.hits;
  *spin_ns = busy.spin_ns;
}
