/*
 * io.c: the data plane's batched I/O.
 *
 *   readBatch   TAP fd  -> up to N frames, frame i at arena[i*slot + offset], lens[i] = bytes
 *   writeBatch  descs (fd, off, len, prefix) -> write() each (writev with `prefix` zero bytes first); failures
 *               leave -errno in len
 *   recvBatch   UDP fd  -> recvmmsg, datagram i at arena[i*slot + offset], lens[i], addrs[2i] = IPv4, addrs[2i+1] =
 *               port, gso[i] = UDP GRO segment size
 *   sendBatch   descs (sock, off, len, ipv4, port, gsoSize) -> one sendmmsg per socket, equal datagrams to one
 *               destination coalesced into UDP GSO sends; failures leave -errno in len
 *
 * TAP reads and writes go through io_uring (liburing): a TAP moves one frame per read or write, and on some VMs a
 * syscall's entry and exit cost several times the frame's own work (history.md entry 12), so a batch's requests
 * are submitted with one io_uring_enter. Every request carries RWF_NOWAIT, which tun supports, so each runs
 * inline during the enter and completes at once (a read with nothing queued completes with -EAGAIN instead of
 * waiting): the semantics are those of the syscall loop, which runs where io_uring is missing or forbidden (kernel
 * too old, io_uring_disabled, seccomp, --no-io-uring). Requests are issued in order, so the frames of successful
 * reads are in queue order.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "vxtap.h"

/* ---------------------------------------------------------------- io_uring */

#define URING_ENTRIES 512
#define URING_OFF_BY_REQUEST "switched off (--no-io-uring)"

static struct {
  struct io_uring ring;
  int state;                  /* 0: not set up yet; 1: on; -1: off (reason in why) */
  char why[96];
  uint64_t enters, ops;       /* io_uring_enter calls, requests completed through them */
} ur;

static uint8_t read_hint[4096]; /* per fd: frames the last readBatch found, to size the next one */
static uint64_t single_reads;    /* readBatch calls that began with plain reads (the last call found <= 1 frame) */
static uint64_t coalesced_msgs, coalesced_dgrams; /* sends that carried 2+ datagrams, and those datagrams */

static void uring_off(const char *what, int err) {
  if (err) snprintf(ur.why, sizeof ur.why, "%s: %s", what, strerror(err));
  else snprintf(ur.why, sizeof ur.why, "%s", what);
  if (ur.state == 1) io_uring_queue_exit(&ur.ring);
  ur.state = -1;
}

/* Sets the ring up on first use: one thread submits, requests complete inline so nothing waits, and a bad request
 * does not stop the rest (SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL; SUBMIT_ALL alone before Linux 6.1). */
static bool uring_ready(void) {
  if (ur.state != 0) return ur.state == 1;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
  int r = io_uring_queue_init_params(URING_ENTRIES, &ur.ring, &p);
  if (r == -EINVAL) {
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SUBMIT_ALL; /* 5.18 */
    r = io_uring_queue_init_params(URING_ENTRIES, &ur.ring, &p);
  }
  if (r < 0) {
    uring_off("io_uring_setup", -r);
    return false;
  }
  ur.state = 1;
  if (!(p.features & IORING_FEAT_NODROP) || p.sq_entries < URING_ENTRIES) {
    uring_off("io_uring_setup: kernel too old (no IORING_FEAT_NODROP)", 0);
    return false;
  }
  return true;
}

bool vx_uring_status(const char **why) {
  bool on = uring_ready();
  *why = ur.why;
  return on;
}

void vx_uring_disable(bool off) {
  if (off && ur.state != -1) uring_off(URING_OFF_BY_REQUEST, 0);
  else if (!off && ur.state == -1 && strcmp(ur.why, URING_OFF_BY_REQUEST) == 0) ur.state = 0; /* on again (tests) */
}

void vx_io_stats(uint64_t *enters, uint64_t *ops, uint64_t *single, uint64_t *cmsgs, uint64_t *cdgrams) {
  *enters = ur.enters;
  *ops = ur.ops;
  *single = single_reads;
  *cmsgs = coalesced_msgs;
  *cdgrams = coalesced_dgrams;
}

/* Queues request i (its index is its user_data): a read, write or writev of the stream at fd, RWF_NOWAIT. */
static void uring_prep(unsigned i, uint8_t op, int fd, void *addr, uint32_t len) {
  struct io_uring_sqe *q = io_uring_get_sqe(&ur.ring); /* never NULL: a batch is at most VX_MAX_BATCH < entries */
  if (op == IORING_OP_READ) io_uring_prep_read(q, fd, addr, len, (uint64_t)-1);
  else if (op == IORING_OP_WRITE) io_uring_prep_write(q, fd, addr, len, (uint64_t)-1);
  else io_uring_prep_writev(q, fd, addr, len, (uint64_t)-1);
  q->rw_flags = RWF_NOWAIT;
  io_uring_sqe_set_data64(q, i);
}

/* Takes every completion there is: res[user_data] = its result. Returns how many. */
static unsigned uring_reap(unsigned n, int32_t *res) {
  struct io_uring_cqe *c;
  unsigned head, seen = 0;
  io_uring_for_each_cqe(&ur.ring, head, c) {
    if (c->user_data < n) res[c->user_data] = c->res;
    seen++;
  }
  io_uring_cq_advance(&ur.ring, seen);
  return seen;
}

/* Submits the n requests queued with uring_prep and reaps their results into res[user_data]. false: io_uring
 * failed before taking any (it is switched off; the caller runs the syscall loop). A failure after that (never
 * seen) switches it off too and reports the requests without a result as -EIO. */
static bool uring_run(unsigned n, int32_t *res) {
  for (unsigned i = 0; i < n; i++) res[i] = -EIO;
  int r;
  do r = io_uring_submit_and_wait(&ur.ring, n);
  while (r == -EINTR);
  if (r <= 0) {
    uring_off("io_uring_enter", r < 0 ? -r : EIO);
    return false;
  }
  ur.enters++;
  unsigned done = uring_reap(n, res);
  while (done < n) {
    if ((unsigned)r < n) {
      /* not everything was submitted: give up on io_uring (what completed is reported; the rest stays -EIO) */
      uring_off("io_uring_enter", EIO);
      return true;
    }
    struct io_uring_cqe *c;
    int w;
    do w = io_uring_wait_cqe_nr(&ur.ring, &c, n - done);
    while (w == -EINTR);
    if (w < 0) {
      uring_off("io_uring_enter", -w);
      return true;
    }
    ur.enters++;
    done += uring_reap(n, res);
  }
  ur.ops += n;
  return true;
}

/* ---------------------------------------------------------------- TAP reads */

bool vx_slots_ok(size_t arena_len, uint32_t slot, uint32_t offset, uint32_t max, size_t lens_count) {
  if (slot == 0 || offset >= slot || max == 0 || max > VX_MAX_BATCH) return false;
  if ((size_t)slot * max > arena_len) return false;
  return lens_count >= max;
}

/* The fd's hint, or -1: no slot for it (fd past the table). */
static inline int read_hint_of(int fd) { return fd >= 0 && fd < (int)sizeof read_hint ? read_hint[fd] : -1; }
static inline void set_read_hint(int fd, uint32_t n) {
  if (fd >= 0 && fd < (int)sizeof read_hint) read_hint[fd] = (uint8_t)(n < 250 ? n : 250);
}

/* Plain read() calls into slots n, n+1, ... until `limit` frames are in or the queue is empty. Returns the new
 * count, or -errno when the first read of the call (n == 0) failed with anything but EAGAIN; a later failure
 * ends the batch quietly (the next call sees it). */
static int64_t read_plain(int fd, uint8_t *arena, uint32_t slot, uint32_t offset, uint32_t n, uint32_t limit,
                          int32_t *lens) {
  while (n < limit) {
    ssize_t r = read(fd, arena + (size_t)n * slot + offset, slot - offset);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || n > 0) break;
      return -(int64_t)errno;
    }
    lens[n++] = (int32_t)r;
  }
  return n;
}

/* Reads through io_uring into slots *n.. (as many reads as the last batch found, plus a few: the one that finds
 * the queue empty ends the batch; again, larger, while every read found a frame); *n is the new count. Returns 0,
 * -errno if nothing was read and a read failed, or -ENOSYS if io_uring went off (what it read is in *n). */
static int read_uring(int fd, uint8_t *arena, uint32_t slot, uint32_t offset, uint32_t *n, uint32_t max,
                      int32_t *lens, int hint) {
  uint32_t want = hint >= 0 ? (uint32_t)hint + 4u : 4u; /* no hint kept past the table: start small, grow */
  int err = 0;
  while (*n < max) {
    uint32_t k = want < max - *n ? want : max - *n;
    int32_t res[VX_MAX_BATCH];
    for (uint32_t i = 0; i < k; i++) uring_prep(i, IORING_OP_READ, fd, arena + (size_t)(*n + i) * slot + offset, slot - offset);
    if (!uring_run(k, res)) return -ENOSYS;
    uint32_t got = 0;
    for (uint32_t i = 0; i < k; i++) {
      if (res[i] < 0) {
        if (res[i] != -EAGAIN && !err) err = -res[i];
        continue;
      }
      /* a frame after an empty read arrived meanwhile: it follows the earlier ones in the queue */
      if (i != got) memmove(arena + (size_t)(*n + got) * slot + offset, arena + (size_t)(*n + i) * slot + offset, (size_t)res[i]);
      lens[*n + got++] = res[i];
    }
    *n += got;
    if (got < k) break;
    want = k * 2;
  }
  return *n == 0 && err ? -err : 0;
}

int64_t vx_read_batch(int fd, uint8_t *arena, uint32_t slot, uint32_t offset, uint32_t max, int32_t *lens) {
  uint32_t n = 0;
  int hint = read_hint_of(fd);
  /* Sparse traffic: the last call found at most one frame (an echo, a request, its answer). One plain read()
   * takes the frame, a second finds the queue empty: two short syscalls instead of an io_uring submission of
   * several reads, whose fixed costs dominate when one frame is all there is. A second frame means a burst:
   * the rest of the batch goes the batched way below, and the hint keeps later calls there until a call finds
   * one frame or none again. */
  if (hint >= 0 && hint <= 1) {
    single_reads++;
    int64_t r = read_plain(fd, arena, slot, offset, 0, max < 2 ? max : 2, lens);
    if (r < 0) return r;
    n = (uint32_t)r;
    if (n < 2 || n == max) {
      set_read_hint(fd, n);
      return n;
    }
  }
  if (fd >= 0 && uring_ready()) {
    int r = read_uring(fd, arena, slot, offset, &n, max, lens, hint);
    if (r != -ENOSYS) {
      set_read_hint(fd, n);
      return r < 0 ? r : (int64_t)n;
    }
  }
  int64_t r = read_plain(fd, arena, slot, offset, n, max, lens); /* io_uring off: the rest by syscalls */
  if (r >= 0) set_read_hint(fd, (uint32_t)r);
  return r;
}

/* ---------------------------------------------------------------- TAP writes */

/* A zero virtio-net header: "no offload, checksum complete". */
static const uint8_t zero_prefix[64];

static inline bool write_desc_ok(const int32_t *m, size_t arena_len) {
  return m[1] >= 0 && m[2] > 0 && (size_t)m[1] + (size_t)m[2] <= arena_len && m[3] >= 0 &&
         m[3] <= (int32_t)sizeof zero_prefix;
}

/* Writes descriptors i0.. through io_uring; returns the first index it did not write (count when all went), and
 * adds the successes to *ok. Stops early only when io_uring went off. */
static uint32_t write_uring(uint8_t *arena, size_t arena_len, int32_t *d, uint32_t i0, uint32_t count, int32_t *ok) {
  static struct iovec v[VX_MAX_BATCH][2];
  int32_t res[VX_MAX_BATCH];
  uint32_t idx[VX_MAX_BATCH];
  while (i0 < count) {
    uint32_t k = 0, i = i0;
    for (; i < count && k < VX_MAX_BATCH; i++) {
      int32_t *m = d + (size_t)i * VX_WRITE_STRIDE;
      if (!write_desc_ok(m, arena_len)) {
        m[2] = -EINVAL;
        continue;
      }
      v[k][0] = (struct iovec){(void *)zero_prefix, (size_t)m[3]};
      v[k][1] = (struct iovec){arena + m[1], (size_t)m[2]};
      if (m[3] > 0) uring_prep(k, IORING_OP_WRITEV, m[0], v[k], 2);
      else uring_prep(k, IORING_OP_WRITE, m[0], arena + m[1], (uint32_t)m[2]);
      idx[k++] = i;
    }
    if (k && !uring_run(k, res)) return i0; /* io_uring went off: the rest by syscalls */
    for (uint32_t j = 0; j < k; j++) {
      if (res[j] < 0) d[(size_t)idx[j] * VX_WRITE_STRIDE + 2] = res[j];
      else (*ok)++;
    }
    i0 = i;
  }
  return i0;
}

int32_t vx_write_batch(uint8_t *arena, size_t arena_len, int32_t *d, uint32_t count) {
  int32_t ok = 0;
  uint32_t i0 = 0;
  if (count > 1 && uring_ready()) i0 = write_uring(arena, arena_len, d, 0, count, &ok);
  for (uint32_t i = i0; i < count; i++) {
    int32_t *m = d + (size_t)i * VX_WRITE_STRIDE;
    if (!write_desc_ok(m, arena_len)) {
      m[2] = -EINVAL;
      continue;
    }
    ssize_t r;
    if (m[3] > 0) {
      struct iovec v[2] = {{(void *)zero_prefix, (size_t)m[3]}, {arena + m[1], (size_t)m[2]}};
      do r = writev(m[0], v, 2);
      while (r < 0 && errno == EINTR);
    } else {
      do r = write(m[0], arena + m[1], (size_t)m[2]);
      while (r < 0 && errno == EINTR);
    }
    if (r < 0) m[2] = -errno;
    else ok++;
  }
  return ok;
}

/* ---------------------------------------------------------------- UDP receive */

/* The UDP GRO segment size in a received message's control data, or 0 (a single datagram). */
static int32_t gro_size(struct msghdr *h) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
      int v = 0;
      memcpy(&v, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0) >= sizeof(int) ? sizeof(int) : sizeof(uint16_t));
      return v & 0xffff;
    }
  }
  return 0;
}

int64_t vx_recv_batch(int fd, uint8_t *arena, uint32_t slot, uint32_t offset, uint32_t max, int32_t *lens,
                      uint32_t *addrs, int32_t *gso) {
  struct mmsghdr msgs[VX_MAX_BATCH];
  struct iovec iov[VX_MAX_BATCH];
  vx_sockaddr sa[VX_MAX_BATCH];
  char ctrl[VX_MAX_BATCH][CMSG_SPACE(sizeof(uint16_t))];
  for (uint32_t i = 0; i < max; i++) {
    iov[i].iov_base = arena + (size_t)i * slot + offset;
    iov[i].iov_len = slot - offset;
    memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &sa[i];
    msgs[i].msg_hdr.msg_namelen = sizeof sa[i];
    if (gso) {
      msgs[i].msg_hdr.msg_control = ctrl[i];
      msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
    }
  }
  int r;
  do r = recvmmsg(fd, msgs, max, MSG_DONTWAIT, NULL);
  while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN ? 0 : -(int64_t)errno;
  for (int i = 0; i < r; i++) {
    lens[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -EMSGSIZE : (int32_t)msgs[i].msg_len;
    uint16_t port;
    addrs[2 * i] = vx_vtep_of(&sa[i], &port);
    addrs[2 * i + 1] = port;
    if (gso) gso[i] = gro_size(&msgs[i].msg_hdr);
  }
  return r;
}

/* ---------------------------------------------------------------- UDP send
 *
 * One sendmmsg per socket (messages keep their relative order per socket, hence per flow). A message the kernel
 * refuses gets len = -errno and the rest of its socket's batch is still tried, except after EAGAIN/ENOBUFS (queue
 * full), which fails the rest of that socket's batch at once. A descriptor whose socket index is not an index of
 * fds fails with -EINVAL.
 *
 * Coalescing: a run of consecutive datagrams of one socket to the same address and port, of equal length (the last
 * may be shorter), goes as ONE message with UDP_SEGMENT = that length and one iovec per datagram, up to
 * COALESCE_MAX datagrams and 65507 bytes: the kernel builds one skb and cuts it into exactly those datagrams (in
 * software at worst, on a veth not at all: a receiver with UDP_GRO takes it whole). The wire sees the same
 * datagrams; the sender pays one trip through the UDP/IP stack instead of one per datagram. A coalesced send the
 * kernel refuses as such (EINVAL, EIO, EMSGSIZE: a datagram over the path MTU, no UDP GSO on the path) is sent
 * again one datagram at a time; other errors fail each of its datagrams.
 *
 * The steps: check every descriptor once (send_desc_ok); a lone datagram goes by sendto (send_lone); otherwise,
 * per socket, gather up to VX_MAX_BATCH datagrams into messages (gather), give each message its UDP_SEGMENT
 * (set_segment), and send them (send_msgs, which falls back to send_each for a refused coalesced message). */

#define COALESCE_MAX 64
#define UDP_MAX_PAYLOAD 65507

/* The messages of one gather pass for one socket. */
typedef struct {
  struct mmsghdr msgs[VX_MAX_BATCH];
  struct iovec iov[VX_MAX_BATCH];
  vx_sockaddr sa[VX_MAX_BATCH];
  char ctrl[VX_MAX_BATCH][CMSG_SPACE(sizeof(uint16_t))];
  int32_t *which[VX_MAX_BATCH]; /* the descriptor of each iovec */
  int first[VX_MAX_BATCH + 1];  /* message j carries iovecs first[j] .. first[j+1]-1 */
  int n, v;                     /* messages, iovecs */
} send_set;

/* A descriptor sendBatch can send: its socket is one of the nfds given, its bytes lie inside the arena. */
static inline bool send_desc_ok(const int32_t *m, size_t arena_len, size_t nfds) {
  return m[0] >= 0 && (size_t)m[0] < nfds && m[1] >= 0 && m[2] > 0 && (size_t)m[1] + (size_t)m[2] <= arena_len;
}

/* One datagram (sparse traffic): a plain sendto, without building a message vector. */
static int32_t send_lone(int fd, uint8_t *arena, int32_t *m) {
  vx_sockaddr to;
  socklen_t tl = vx_vtep_sockaddr((uint32_t)m[3], (uint16_t)m[4], &to);
  if (!tl) {
    m[2] = -EDESTADDRREQ;
    return 0;
  }
  ssize_t r;
  do r = sendto(fd, arena + m[1], (size_t)m[2], MSG_DONTWAIT, &to.sa, tl);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    m[2] = -errno;
    return 0;
  }
  return 1;
}

/* Gathers the valid descriptors of socket s from index *i on into messages, up to VX_MAX_BATCH iovecs; *i moves
 * past what was taken. A datagram joins the open run when it goes to the run's address and port, is no longer
 * than the run's first, the run has room (COALESCE_MAX, UDP_MAX_PAYLOAD) and no shorter datagram ended it; a
 * descriptor with its own gsoSize (a TSO split) is a message of its own and is never joined. */
static void gather(send_set *S, int s, uint8_t *arena, int32_t *d, uint32_t *i, uint32_t count) {
  int n = 0, v = 0;
  int32_t *lead = NULL; /* the open run's first descriptor */
  size_t run_bytes = 0;
  bool run_closed = false; /* a shorter datagram ended it */
  for (; *i < count && v < VX_MAX_BATCH; (*i)++) {
    int32_t *m = d + (size_t)*i * VX_SEND_STRIDE;
    if (m[0] != s || m[2] <= 0) continue; /* another socket's, or failed the check */
    S->iov[v].iov_base = arena + m[1];
    S->iov[v].iov_len = (size_t)m[2];
    S->which[v] = m;
    if (lead && !run_closed && m[5] == 0 && m[3] == lead[3] && m[4] == lead[4] && m[2] <= lead[2] &&
        v - S->first[n - 1] < COALESCE_MAX && run_bytes + (size_t)m[2] <= UDP_MAX_PAYLOAD) {
      run_bytes += (size_t)m[2];
      if (m[2] < lead[2]) run_closed = true;
      v++;
      continue;
    }
    socklen_t sl = vx_vtep_sockaddr((uint32_t)m[3], (uint16_t)m[4], &S->sa[n]);
    if (!sl) { /* an IPv6 id never registered: this datagram fails alone, and opens no message */
      m[2] = -EDESTADDRREQ;
      lead = NULL;
      continue;
    }
    S->first[n] = v;
    memset(&S->msgs[n], 0, sizeof S->msgs[n]);
    S->msgs[n].msg_hdr.msg_iov = &S->iov[v];
    S->msgs[n].msg_hdr.msg_name = &S->sa[n];
    S->msgs[n].msg_hdr.msg_namelen = sl;
    lead = m[5] == 0 ? m : NULL;
    run_bytes = (size_t)m[2];
    run_closed = false;
    n++;
    v++;
  }
  S->first[n] = v;
  S->n = n;
  S->v = v;
}

/* Gives message j its iovec count and, when it carries several datagrams or a TSO split's segments, its
 * UDP_SEGMENT control message. */
static void set_segment(send_set *S, int j) {
  int k0 = S->first[j], cnt = S->first[j + 1] - k0;
  struct msghdr *h = &S->msgs[j].msg_hdr;
  h->msg_iovlen = (size_t)cnt;
  int32_t g = cnt > 1 ? S->which[k0][2] : S->which[k0][5];
  if (cnt > 1) {
    coalesced_msgs++;
    coalesced_dgrams += (uint64_t)cnt;
  }
  if (g <= 0) return;
  memset(S->ctrl[j], 0, sizeof S->ctrl[j]);
  h->msg_control = S->ctrl[j];
  h->msg_controllen = sizeof S->ctrl[j];
  struct cmsghdr *c = CMSG_FIRSTHDR(h);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t g16 = (uint16_t)g;
  memcpy(CMSG_DATA(c), &g16, sizeof g16);
}

/* The datagrams of message k one by one, as they would have gone without coalescing. Returns those sent. */
static int32_t send_each(send_set *S, int fd, int k) {
  int32_t sent = 0;
  for (int q = S->first[k]; q < S->first[k + 1]; q++) {
    struct msghdr one = S->msgs[k].msg_hdr;
    one.msg_iov = &S->iov[q];
    one.msg_iovlen = 1;
    one.msg_control = NULL;
    one.msg_controllen = 0;
    ssize_t r;
    do r = sendmsg(fd, &one, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0) S->which[q][2] = -errno;
    else sent++;
  }
  return sent;
}

/* sendmmsg until every message went or failed. Returns the datagrams sent. */
static int32_t send_msgs(send_set *S, int fd) {
  int32_t sent = 0;
  int k = 0;
  while (k < S->n) {
    int r = sendmmsg(fd, S->msgs + k, (unsigned)(S->n - k), MSG_DONTWAIT);
    if (r >= 0) {
      sent += S->first[k + r] - S->first[k];
      k += r;
      continue;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == ENOBUFS) { /* queue full: the rest of this socket's batch fails now */
      for (int q = S->first[k]; q < S->v; q++) S->which[q][2] = -e;
      break;
    }
    if (S->first[k + 1] - S->first[k] > 1 && (e == EINVAL || e == EIO || e == EMSGSIZE)) {
      sent += send_each(S, fd, k); /* the kernel refused the coalesced send */
    } else {
      for (int q = S->first[k]; q < S->first[k + 1]; q++) S->which[q][2] = -e; /* this one message is bad */
    }
    k++;
  }
  return sent;
}

int32_t vx_send_batch(const int32_t *fds, size_t nfds, uint8_t *arena, size_t arena_len, int32_t *d,
                      uint32_t count) {
  /* a descriptor that can never be sent fails in its own slot, here, once: from now on len > 0 means valid */
  for (uint32_t i = 0; i < count; i++) {
    int32_t *m = d + (size_t)i * VX_SEND_STRIDE;
    if (!send_desc_ok(m, arena_len, nfds)) m[2] = -EINVAL;
  }
  if (count == 1 && d[2] > 0 && d[5] == 0) return send_lone(fds[d[0]], arena, d);
  static send_set S;
  int32_t sent = 0;
  for (size_t s = 0; s < nfds; s++) {
    uint32_t i = 0;
    while (i < count) {
      gather(&S, (int)s, arena, d, &i, count);
      for (int j = 0; j < S.n; j++) set_segment(&S, j);
      sent += send_msgs(&S, fds[s]);
    }
  }
  return sent;
}
