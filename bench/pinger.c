/*
 * The benchmark's second latency probe: ICMP echo requests on a fixed schedule, sleeping in between. iputils
 * ping at -i 0.005 busy-waits between probes (about one CPU on a 2-vCPU machine: 0.92 s of CPU per second
 * measured), which leaves every user-space path a CPU short while its latency is measured, and keeps one CPU
 * from ever going idle. This one sleeps (clock_nanosleep to the next slot, poll() for the reply), as an
 * application sending requests now and then would.
 *
 *   pinger DST_IPV4 COUNT INTERVAL_US     (run inside the client's netns; root: a raw ICMP socket)
 *
 * Prints one line: sent received avg_us p50_us p99_us max_us slow, where slow is how many replies took over 1 ms
 * (on a VM, a process that sleeps can wait milliseconds to run again: those echoes move the average far more than
 * the p50). A reply missing after 1 s counts as lost.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint16_t csum(const void *p, size_t n) {
  const uint8_t *b = p;
  uint32_t s = 0;
  for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)(b[i] << 8 | b[i + 1]);
  if (n & 1) s += (uint32_t)b[n - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return htons((uint16_t)~s);
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: pinger DST_IPV4 COUNT INTERVAL_US\n");
    return 2;
  }
  struct sockaddr_in dst = {.sin_family = AF_INET};
  if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
    fprintf(stderr, "pinger: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  int count = atoi(argv[2]);
  int64_t interval = (int64_t)atoi(argv[3]) * 1000;
  if (count < 1 || count > 1000000 || interval < 100000) {
    fprintf(stderr, "pinger: COUNT 1-1000000, INTERVAL_US >= 100\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (fd < 0) {
    perror("pinger: socket(SOCK_RAW, IPPROTO_ICMP)");
    return 1;
  }
  uint16_t ident = (uint16_t)getpid();
  int64_t *rtt = calloc((size_t)count, sizeof *rtt);
  int got = 0;
  int64_t next = now_ns();
  for (int seq = 0; seq < count; seq++) {
    struct timespec until = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
    }
    next += interval;
    uint8_t req[8 + 16] = {0};
    struct icmphdr *h = (struct icmphdr *)req;
    h->type = ICMP_ECHO;
    h->un.echo.id = htons(ident);
    h->un.echo.sequence = htons((uint16_t)seq);
    h->checksum = csum(req, sizeof req);
    int64_t t0 = now_ns();
    if (sendto(fd, req, sizeof req, 0, (struct sockaddr *)&dst, sizeof dst) < 0) continue;
    for (;;) {
      int64_t left = t0 + 1000000000 - now_ns();
      if (left <= 0) break;
      struct pollfd p = {.fd = fd, .events = POLLIN};
      if (poll(&p, 1, (int)(left / 1000000) + 1) <= 0) break;
      uint8_t buf[256];
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n < (ssize_t)sizeof(struct iphdr)) continue;
      size_t ihl = (size_t)(buf[0] & 0x0f) * 4;
      if ((size_t)n < ihl + 8) continue;
      struct icmphdr *r = (struct icmphdr *)(buf + ihl);
      if (r->type == ICMP_ECHOREPLY && ntohs(r->un.echo.id) == ident && ntohs(r->un.echo.sequence) == (uint16_t)seq) {
        rtt[got++] = now_ns() - t0;
        break;
      }
    }
  }
  if (got == 0) {
    printf("%d 0 0 0 0 0 0\n", count);
    return 0;
  }
  int64_t sum = 0;
  for (int i = 0; i < got; i++) sum += rtt[i];
  qsort(rtt, (size_t)got, sizeof *rtt, cmp);
  int p99 = (int)((got - 1) * 0.99);
  int slow = 0;
  while (slow < got && rtt[got - 1 - slow] > 1000000) slow++; /* rtt is sorted */
  printf("%d %d %.1f %.1f %.1f %.1f %d\n", count, got, sum / 1000.0 / got, rtt[got / 2] / 1000.0, rtt[p99] / 1000.0, rtt[got - 1] / 1000.0, slow);
  return 0;
}
