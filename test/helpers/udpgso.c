/*
 * A UDP_SEGMENT (UDP GSO) sender and a checking receiver for the netns tests: what a QUIC server does when it
 * sends with GSO. Node's dgram cannot set UDP_SEGMENT, hence C (built by the test with cc, like bench/floor.c).
 *
 *   udpgso send DST PORT COUNT SEGSIZE NSEGS   COUNT sends, each NSEGS datagrams of SEGSIZE bytes in one sendmsg
 *                                              with UDP_SEGMENT, 2 ms apart (bounded: at most 10000 sends)
 *   udpgso recv ADDR PORT EXPECT SEGSIZE       receives until EXPECT datagrams or 3 s of silence; datagram j must be
 *                                              SEGSIZE bytes of the value j % 251. Prints "got N bad M" (M: wrong
 *                                              length or content, i.e. lost, reordered or corrupted)
 * DST/ADDR: an IPv4 or IPv6 literal; IPv6 link-local with a scope (fe80::1%eth0).
 */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

static struct addrinfo *resolve(const char *addr, const char *port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  int e = getaddrinfo(addr, port, &hints, &ai);
  if (e != 0) {
    fprintf(stderr, "udpgso: %s: %s\n", addr, gai_strerror(e));
    exit(2);
  }
  return ai;
}

int main(int argc, char **argv) {
  if (argc < 6 || (strcmp(argv[1], "send") != 0 && strcmp(argv[1], "recv") != 0) || (strcmp(argv[1], "send") == 0 && argc < 7)) {
    fprintf(stderr, "usage: udpgso send DST PORT COUNT SEGSIZE NSEGS | udpgso recv ADDR PORT EXPECT SEGSIZE\n");
    return 2;
  }
  struct addrinfo *ai = resolve(argv[2], argv[3]);
  int fd = socket(ai->ai_family, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("udpgso: socket");
    return 1;
  }
  if (strcmp(argv[1], "send") == 0) {
    int count = atoi(argv[4]), seg = atoi(argv[5]), nsegs = atoi(argv[6]);
    if (count < 1 || count > 10000 || seg < 1 || seg > 8000 || nsegs < 1 || nsegs > 64 || seg * nsegs > 65000) {
      fprintf(stderr, "udpgso: COUNT 1-10000, SEGSIZE 1-8000, NSEGS 1-64, SEGSIZE x NSEGS <= 65000\n");
      return 2;
    }
    if (setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof seg) < 0) {
      perror("udpgso: setsockopt(UDP_SEGMENT)");
      return 1;
    }
    static unsigned char buf[65536];
    for (int i = 0; i < count; i++) {
      for (int k = 0; k < nsegs; k++) memset(buf + (size_t)k * seg, (i * nsegs + k) % 251, (size_t)seg);
      if (sendto(fd, buf, (size_t)seg * nsegs, 0, ai->ai_addr, ai->ai_addrlen) < 0) {
        perror("udpgso: sendto");
        return 1;
      }
      struct timespec ts = {0, 2000000};
      nanosleep(&ts, NULL);
    }
    printf("sent %d\n", count * nsegs);
    return 0;
  }
  int expect = atoi(argv[4]), seg = atoi(argv[5]);
  int rcvbuf = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
    perror("udpgso: bind");
    return 1;
  }
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  fprintf(stderr, "listening\n");
  static unsigned char buf[65536];
  int got = 0, bad = 0;
  while (got < expect) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) break; /* 3 s of silence */
    int ok = n == seg;
    for (ssize_t i = 0; ok && i < n; i++) ok = buf[i] == got % 251;
    if (!ok) bad++;
    got++;
  }
  printf("got %d bad %d\n", got, bad);
  return 0;
}
