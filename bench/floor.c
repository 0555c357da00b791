/*
 * The benchmark's "floor" path: the least a user-space L2-over-UDP forwarder can do. One TAP, one UDP socket,
 * one peer; every frame read from the TAP gets an 8-byte VXLAN header (VNI 42) and is sent to the peer, every
 * datagram received loses its header and is written to the TAP. poll() sleeps until one of the two is readable.
 * No checks, no tables, no batching, no offloads: not an overlay anyone should run, but what any forwarder that
 * sleeps between packets pays on this machine (the wake-ups and the copies through user space). The benchmark
 * reports it next to vxtap so the latency vxtap adds over the kernel can be read against that floor.
 *
 *   floor TAPNAME LOCAL_IPV4 PEER_IPV4 [PORT]     (run inside the host's netns; the TAP is created here)
 *   floor --syscall-ns                            prints the cost of a null syscall (getppid) in ns: on VMs it
 *                                                 varies several-fold and decides what per-frame syscalls cost
 *
 * Built by bench/forwarding.ts with the C compiler the native addon needs; exits on SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
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

int main(int argc, char **argv) {
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
  if (argc < 4) {
    fprintf(stderr, "usage: floor TAPNAME LOCAL_IPV4 PEER_IPV4 [PORT]\n");
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
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
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
