/*
 * vxtap_native: the thin syscall layer of vxtap.
 *
 * C makes syscalls and reports errno names, does the per-byte codec work TypeScript hands it (checksums, TSO
 * segmentation, GRO segment checks) and, when asked, busy-polls the event loop (busyPoll); TypeScript validates
 * arguments and owns all logic (no forwarding decisions here). Layout: helpers, then the poll handle and its callback, then methods, then exports.
 *
 * Batched I/O works on one "arena" (a Buffer cut into fixed-size slots) so a call passes one pointer, not an
 * array of Buffers:
 *   readBatch   TAP fd  -> up to N frames, frame i at arena[i*slot + offset], lens[i] = bytes
 *   writeBatch  descs (fd, off, len, prefix) -> write() each (writev with `prefix` zero bytes first); failures
 *               leave -errno in len
 *   recvBatch   UDP fd  -> recvmmsg, datagram i at arena[i*slot + offset], lens[i], addrs[2i] = IPv4, addrs[2i+1] = port
 *   sendBatch   descs (sock, off, len, ipv4, port, gsoSize) -> one sendmmsg per socket; failures leave -errno in len
 * IPv4 addresses cross the boundary as host-order uint32.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
/* UDP segmentation offload on TAPs (Linux 6.2); older headers lack the flags, an older kernel refuses them */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define MAX_BATCH 256
#define MAX_SOCKETS 64

/* ---------------------------------------------------------------- helpers */

#define NAPI_CALL(env, call)                                                                          \
  do {                                                                                              \
    if ((call) != napi_ok) {                                                                        \
      const napi_extended_error_info *info_;                                                        \
      napi_get_last_error_info((env), &info_);                                                      \
      bool pending_;                                                                                \
      napi_is_exception_pending((env), &pending_);                                                  \
      if (!pending_) napi_throw_error((env), "EINTERNAL", info_->error_message ? info_->error_message : "napi call failed"); \
      return NULL;                                                                                  \
    }                                                                                               \
  } while (0)

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char msg[256];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s (%s)", what, strerror(err), name ? name : "?");
  napi_value code, message, error;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_value errnoval;
  napi_create_int32(env, -err, &errnoval);
  napi_set_named_property(env, error, "errno", errnoval);
  napi_value syscall;
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &syscall);
  napi_set_named_property(env, error, "syscall", syscall);
  napi_throw(env, error);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "EINVAL", msg);
  return NULL;
}

static bool get_i32(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

static bool get_u32(napi_env env, napi_value v, uint32_t *out) {
  return napi_get_value_uint32(env, v, out) == napi_ok;
}

/* Any Buffer / Uint8Array / typed array: its data pointer and byte length. */
static bool get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) return false;
  napi_typedarray_type type;
  size_t length, byte_offset;
  napi_value ab;
  void *p;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, &ab, &byte_offset) != napi_ok) return false;
  size_t elem = 1;
  switch (type) {
    case napi_int16_array: case napi_uint16_array: elem = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
    default: elem = 1;
  }
  *data = p;
  *len = length * elem;
  return true;
}

static bool get_typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *count) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) return false;
  napi_typedarray_type type;
  size_t byte_offset;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &type, count, data, &ab, &byte_offset) != napi_ok) return false;
  return type == want;
}

static napi_value make_i32(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

/* [v0, v1, ...] as a JS array of numbers (the counters and pairs the addon returns). */
static napi_value number_array(napi_env env, uint32_t n, const double *v) {
  napi_value out, x;
  napi_create_array_with_length(env, n, &out);
  for (uint32_t i = 0; i < n; i++) {
    napi_create_double(env, v[i], &x);
    napi_set_element(env, out, i, x);
  }
  return out;
}

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

/* ---------------------------------------------------------------- poll handle */

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int fd;
  int closing;
} vx_poll_t;

static void poll_close_cb(uv_handle_t *h) {
  vx_poll_t *p = (vx_poll_t *)h->data;
  napi_delete_reference(p->env, p->callback);
  napi_async_destroy(p->env, p->async);
  free(p);
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

static void poll_cb(uv_poll_t *handle, int status, int events) {
  vx_poll_t *p = (vx_poll_t *)handle->data;
  if (p->closing) return;
  if (busy.window_ns != 0) busy.last_activity_ns = mono_ns();
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2], result;
  napi_get_reference_value(env, p->callback, &cb);
  napi_get_global(env, &recv); /* make_callback needs an object receiver */
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  if (napi_make_callback(env, p->async, recv, cb, 2, argv, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

static void poll_finalize(napi_env env, void *data, void *hint) {
  /* The JS wrapper was collected: the handle must already be stopped (pollStop). If it is not, leak it rather
   * than free a live uv handle. */
  (void)env;
  (void)data;
  (void)hint;
}

/* ---------------------------------------------------------------- methods */

/* tapOpen(name: string, flags: number, netnsPath: string | null) -> [fd, ifname] */
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

static napi_value TapOpen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  tap_open_args a;
  memset(&a, 0, sizeof a);
  size_t n;
  if (napi_get_value_string_utf8(env, argv[0], a.name, sizeof a.name, &n) != napi_ok) return throw_type(env, "tapOpen: name must be a string");
  if (!get_i32(env, argv[1], &a.flags)) return throw_type(env, "tapOpen: flags must be a number");
  char ns[4096] = {0};
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t == napi_string) napi_get_value_string_utf8(env, argv[2], ns, sizeof ns, &n);
  int r = 0;
  int e = with_netns(ns, do_tap_open, &a, &r);
  if (e) return throw_errno(env, e, "setns");
  if (r < 0) return throw_errno(env, a.err, "TUNSETIFF");
  napi_value out, fdv, namev;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, a.fd, &fdv);
  napi_create_string_utf8(env, a.name, NAPI_AUTO_LENGTH, &namev);
  napi_set_element(env, out, 0, fdv);
  napi_set_element(env, out, 1, namev);
  return out;
}

/* tapIoctl(fd, request: 'persist'|'offload'|'vnethdrsz', value) */
static napi_value TapIoctl(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, which, value;
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &which) || !get_i32(env, argv[2], &value))
    return throw_type(env, "tapIoctl(fd, which, value): numbers expected");
  int r;
  switch (which) {
    case 0: r = ioctl(fd, TUNSETPERSIST, (unsigned long)value); break;
    case 1: r = ioctl(fd, TUNSETOFFLOAD, (unsigned long)value); break;
    case 2: r = ioctl(fd, TUNSETVNETHDRSZ, &value); break;
    default: return throw_type(env, "tapIoctl: unknown request");
  }
  if (r < 0) return throw_errno(env, errno, which == 0 ? "TUNSETPERSIST" : which == 1 ? "TUNSETOFFLOAD" : "TUNSETVNETHDRSZ");
  return make_i32(env, 0);
}

/* The tail of a sum: what is left after the wide loops (under 64 bytes), four bytes at a time. */
static uint64_t csum_tail(const uint8_t *q, size_t n, uint64_t s) {
  while (n >= 4) {
    uint32_t w;
    memcpy(&w, q, 4);
    s += w;
    q += 4;
    n -= 4;
  }
  if (n >= 2) {
    uint16_t w;
    memcpy(&w, q, 2);
    s += w;
    q += 2;
    n -= 2;
  }
  if (n) s += htons((uint16_t)(q[0] << 8)); /* the odd last byte is the high byte of a big-endian word */
  return s;
}

/* Ones'-complement sum of q[0..n) as big-endian 16-bit words, not yet folded: native-order 32-bit words summed in
 * 64-bit lanes (RFC 1071: the sum is byte-order independent; csum_fold() swaps once). If `dst`, the bytes are also
 * copied there (they must not overlap): one pass where a copy and a sum would read everything twice. */
static uint64_t csum_generic(uint8_t *dst, const uint8_t *q, size_t n) {
  uint64_t s = 0;
  while (n >= 16) {
    uint32_t w[4];
    memcpy(w, q, 16);
    if (dst) {
      memcpy(dst, w, 16);
      dst += 16;
    }
    s += (uint64_t)w[0] + w[1] + w[2] + w[3];
    q += 16;
    n -= 16;
  }
  if (dst) memcpy(dst, q, n);
  return csum_tail(q, n, s);
}

#if defined(__x86_64__)
/* The same with AVX2: 64 bytes per iteration, each 32-bit word widened into a 64-bit lane (no carries to track). */
__attribute__((target("avx2"))) static uint64_t csum_avx2(uint8_t *dst, const uint8_t *q, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  const __m256i zero = _mm256_setzero_si256();
  while (n >= 64) {
    __m256i x = _mm256_loadu_si256((const __m256i *)q), y = _mm256_loadu_si256((const __m256i *)(q + 32));
    if (dst) {
      _mm256_storeu_si256((__m256i *)dst, x);
      _mm256_storeu_si256((__m256i *)(dst + 32), y);
      dst += 64;
    }
    a0 = _mm256_add_epi64(a0, _mm256_unpacklo_epi32(x, zero));
    a1 = _mm256_add_epi64(a1, _mm256_unpackhi_epi32(x, zero));
    a0 = _mm256_add_epi64(a0, _mm256_unpacklo_epi32(y, zero));
    a1 = _mm256_add_epi64(a1, _mm256_unpackhi_epi32(y, zero));
    q += 64;
    n -= 64;
  }
  uint64_t l[4];
  _mm256_storeu_si256((__m256i *)l, _mm256_add_epi64(a0, a1));
  if (dst) memcpy(dst, q, n);
  return csum_tail(q, n, l[0] + l[1] + l[2] + l[3]);
}
#endif

/* Chosen once at load: AVX2 where the CPU has it (npm run bench:codec has both rates). */
static uint64_t (*csum_copy)(uint8_t *dst, const uint8_t *q, size_t n) = csum_generic;

static inline uint64_t csum_add(const uint8_t *q, size_t n) { return csum_copy(NULL, q, n); }

/* csum_add()'s accumulator folded to 16 bits, as a host-order value (the big-endian word sum), plus `initial`. */
static uint32_t csum_fold(uint64_t s, uint32_t initial) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  uint64_t t = (uint64_t)ntohs((uint16_t)s) + initial;
  while (t >> 16) t = (t & 0xffff) + (t >> 16);
  return (uint32_t)t;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static inline void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

/* IPv4 pseudo-header sum (addresses as stored in the packet) for an L4 segment of protocol `proto`, `len` bytes. */
static uint32_t pseudo_v4(const uint8_t *ip, uint32_t len, uint32_t proto) {
  uint64_t s = (uint64_t)rd16(ip + 12) + rd16(ip + 14) + rd16(ip + 16) + rd16(ip + 18) + proto + len;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint32_t)s;
}

/* The pseudo-header sum of the IPv6 header at ip (source and destination addresses, length, next header). */
static uint32_t pseudo_v6(const uint8_t *ip, uint32_t len, uint32_t proto) {
  uint64_t s = proto + (uint64_t)(len >> 16) + (len & 0xffff);
  for (int i = 8; i < 40; i += 2) s += rd16(ip + i);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint32_t)s;
}

/*
 * sum16(buf, start, end, initial): the ones'-complement sum of buf[start..end) as big-endian 16-bit words, folded
 * to 16 bits and added to `initial` (the same contract as src/vxlan/checksum.ts sum16js): checksums that JS completes
 * over whole frames (NEEDS_CSUM without GSO). See csum_add().
 */
static napi_value Sum16(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *buf;
  size_t len;
  uint32_t start, end, initial = 0;
  if (argc < 3 || !get_bytes(env, argv[0], &buf, &len) || !get_u32(env, argv[1], &start) || !get_u32(env, argv[2], &end) ||
      (argc > 3 && !get_u32(env, argv[3], &initial)) || start > end || end > len)
    return throw_type(env, "sum16(buf, start, end, initial?): bad arguments");
  napi_value out;
  NAPI_CALL(env, napi_create_uint32(env, csum_fold(csum_add(buf + start, end - start), initial), &out));
  return out;
}

/*
 * tsoSplit(buf, off, len, mss, dstOff, prefix, vni, out): src/vxlan/gso.ts segmentSuperFrame in one call (same
 * contract, same bytes; the agent checks the two agree before it uses this one). Cuts the super-frame
 * buf[off..off+len) (TCP or UDP over IPv4, or over IPv6 as the next header) into frames of at most `mss` payload
 * bytes, back to back from dstOff, each after `prefix` free bytes; if vni >= 0 the last 8 of those get the VXLAN
 * header (flags I, the VNI). Each frame: its own IP length (IPv4 total length, id +1 per frame and header checksum;
 * IPv6 payload length) and complete L4 checksum (the payload is summed as it is copied: one pass); TCP: sequence
 * number, FIN/PSH on the last only, CWR on the first only; UDP: length, a computed 0 sent as 0xffff. out[0..2] =
 * count, stride, total. Returns count, or -1 (nothing written) if the frame is neither, its headers do not fit, the
 * output would not fit in buf, or it would overlap the input.
 */
static napi_value TsoSplit(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *buf;
  size_t blen;
  uint32_t off, len, mss, dst_off, prefix;
  int32_t vni, *out;
  size_t out_n;
  if (argc < 8 || !get_bytes(env, argv[0], &buf, &blen) || !get_u32(env, argv[1], &off) || !get_u32(env, argv[2], &len) ||
      !get_u32(env, argv[3], &mss) || !get_u32(env, argv[4], &dst_off) || !get_u32(env, argv[5], &prefix) ||
      !get_i32(env, argv[6], &vni) || !get_typed(env, argv[7], napi_int32_array, (void **)&out, &out_n) || out_n < 3 ||
      (uint64_t)off + len > blen || (vni >= 0 && prefix < 8))
    return throw_type(env, "tsoSplit(buf, off, len, mss, dstOff, prefix, vni, out: Int32Array(3)): bad arguments");
  const uint8_t *src = buf + off;
  if (len < 14 || mss < 1) return make_i32(env, -1);
  uint32_t l2 = rd16(src + 12) == 0x8100 ? 18 : 14;
  const uint8_t *ip = src + l2;
  if (len < l2 + 20) return make_i32(env, -1);
  int v4 = (ip[0] >> 4) == 4;
  uint32_t ihl, proto;
  if (v4) {
    proto = ip[9];
    ihl = (ip[0] & 0x0f) * 4;
    if (ihl < 20) return make_i32(env, -1);
  } else if ((ip[0] >> 4) == 6) {
    if (len < l2 + 40) return make_i32(env, -1);
    proto = ip[6]; /* the L4 header right after the fixed header */
    ihl = 40;
  } else {
    return make_i32(env, -1);
  }
  int udp = proto == 17;
  uint32_t doff;
  const uint8_t *tcp = ip + ihl; /* the L4 header, TCP or UDP */
  if (proto == 6) {
    if (len < l2 + ihl + 20) return make_i32(env, -1);
    doff = (tcp[12] >> 4) * 4;
    if (doff < 20) return make_i32(env, -1);
  } else if (udp) {
    doff = 8;
  } else {
    return make_i32(env, -1);
  }
  if (len < l2 + ihl + doff) return make_i32(env, -1);
  uint32_t hdrs = l2 + ihl + doff;
  uint32_t payload = len - hdrs;
  uint32_t count = payload == 0 ? 1 : (payload + mss - 1) / mss;
  uint64_t stride = (uint64_t)prefix + hdrs + mss;
  uint64_t total = (count - 1) * stride + prefix + hdrs + (payload - (uint64_t)(count - 1) * mss);
  if ((uint64_t)dst_off + total > blen) return make_i32(env, -1);
  if (dst_off < (uint64_t)off + len && (uint64_t)dst_off + total > off) return make_i32(env, -1);
  uint32_t seq0 = udp ? 0 : rd32(tcp + 4);
  uint16_t id0 = v4 ? rd16(ip + 4) : 0;
  uint8_t flags0 = udp ? 0 : tcp[13];
  for (uint32_t k = 0; k < count; k++) {
    uint8_t *o = buf + dst_off + k * stride + prefix;
    uint32_t plen = k == count - 1 ? payload - k * mss : mss;
    memcpy(o, src, hdrs);
    if (vni >= 0) {
      uint8_t *v = o - 8;
      v[0] = 0x08; v[1] = 0; v[2] = 0; v[3] = 0;
      v[4] = (uint8_t)(vni >> 16); v[5] = (uint8_t)(vni >> 8); v[6] = (uint8_t)vni; v[7] = 0;
    }
    uint8_t *dip = o + l2;
    uint32_t seg = doff + plen;
    if (v4) {
      wr16(dip + 2, ihl + seg);
      wr16(dip + 4, (uint16_t)(id0 + k));
      wr16(dip + 10, 0);
      wr16(dip + 10, ~csum_fold(csum_add(dip, ihl), 0) & 0xffff);
    } else {
      wr16(dip + 4, seg); /* payload length */
    }
    uint8_t *dt = dip + ihl;
    uint8_t *csum = dt + (udp ? 6 : 16);
    if (udp) {
      wr16(dt + 4, seg); /* UDP length */
    } else {
      wr32(dt + 4, seq0 + k * mss);
      uint8_t f = flags0;
      if (k != count - 1) f &= (uint8_t)~(0x01 /* FIN */ | 0x08 /* PSH */);
      if (k != 0) f &= (uint8_t)~0x80 /* CWR */;
      dt[13] = f;
    }
    wr16(csum, 0);
    /* the payload is copied and summed in one pass; doff is a multiple of 4, so the two sums add up as words */
    uint64_t sum = csum_add(dt, doff) + csum_copy(o + hdrs, src + hdrs + (size_t)k * mss, plen);
    uint32_t c = ~csum_fold(sum, v4 ? pseudo_v4(dip, seg, proto) : pseudo_v6(dip, seg, proto)) & 0xffff;
    wr16(csum, udp && c == 0 ? 0xffff : c); /* UDP: a computed 0 is sent as all ones (RFC 768) */
  }
  out[0] = (int32_t)count;
  out[1] = (int32_t)stride;
  out[2] = (int32_t)total;
  return make_i32(env, (int32_t)count);
}

/* Where TCP or UDP starts in an inner frame Gro handles: after Ethernet + IPv4 without options, or + the IPv6
 * header; and its protocol (IPv4 protocol or IPv6 next header). */
static inline uint32_t gro_l4(const uint8_t *f) { return rd16(f + 12) == 0x86dd ? 54 : 34; }
static inline uint32_t gro_proto(const uint8_t *f, uint32_t l4) { return l4 == 34 ? f[14 + 9] : f[14 + 6]; }

/*
 * groSegment(buf, off, len, hdrs, ref, dst): the per-segment work of src/dataplane/gro.ts (Gro.offer), in one call,
 * for an inner TCP or UDP frame buf[off..off+len) over IPv4 without options or IPv6 without extension headers (the
 * Ethertype says which) whose headers (Ethernet + IP + TCP or UDP) are `hdrs` bytes (TCP: at least gro_l4 + 20;
 * UDP: gro_l4 + 8) and that the caller has already checked for form:
 *   -1  its TCP or UDP checksum does not verify;
 *    0  it verifies, and ref < 0 or it is not of the flow of the pending super-frame at buf[ref..] (same Ethernet
 *       header; IPv4 TOS, DF/MF byte, TTL, protocol and addresses, or IPv6 version/traffic class/flow label, next
 *       header, hop limit and addresses; same ports; for TCP also ack, data offset, window and options);
 *    1  it verifies, is of that flow, and its payload has been copied to buf[dst..].
 */
static int gro_segment(uint8_t *buf, uint32_t off, uint32_t len, uint32_t hdrs, int32_t ref, int32_t dst) {
  const uint8_t *f = buf + off;
  uint32_t l4 = gro_l4(f), proto = gro_proto(f, l4);
  const uint8_t *ip = f + 14, *tcp = f + l4;
  bool same = false;
  if (ref >= 0) {
    const uint8_t *r = buf + ref;
    const uint8_t *rip = r + 14, *rtcp = r + l4;
    same = memcmp(f, r, 14) == 0 && /* the Ethertype too: the same IP version */
           (l4 == 34 ? ip[1] == rip[1] && ip[6] == rip[6] && ip[8] == rip[8] && ip[9] == rip[9] && memcmp(ip + 12, rip + 12, 8) == 0
                     : memcmp(ip, rip, 4) == 0 && ip[6] == rip[6] && ip[7] == rip[7] && memcmp(ip + 8, rip + 8, 32) == 0) &&
           memcmp(tcp, rtcp, 4) == 0 &&
           (proto != 6 || (memcmp(tcp + 8, rtcp + 8, 5) == 0 && memcmp(tcp + 14, rtcp + 14, 2) == 0 && memcmp(tcp + 20, rtcp + 20, hdrs - l4 - 20) == 0));
  }
  uint32_t plen = len - hdrs;
  uint8_t *to = buf + dst;
  /* appending: copy while summing (one pass); bytes copied for a segment that then fails are past the pending
   * frame's end, so they are never written out. Overlapping spans (never the data plane's) take two passes. */
  bool fused = same && dst >= 0 && (to + plen <= f + hdrs || to >= f + len);
  uint64_t sum = csum_add(tcp, hdrs - l4) + (fused ? csum_copy(to, f + hdrs, plen) : csum_add(f + hdrs, plen));
  if (csum_fold(sum, l4 == 34 ? pseudo_v4(ip, len - l4, proto) : pseudo_v6(ip, len - l4, proto)) != 0xffff) return -1;
  if (!same || dst < 0) return 0;
  if (!fused) memmove(to, f + hdrs, plen);
  return 1;
}

/* The header bytes gro_segment may be given for the frame at f (what it reads): at least l4 + 20 for TCP, l4 + 8
 * for any other protocol (Gro itself only gives UDP, with exactly l4 + 8). */
static inline bool gro_hdrs_ok(const uint8_t *f, uint32_t hdrs) {
  uint32_t l4 = gro_l4(f);
  return hdrs >= l4 + (gro_proto(f, l4) == 6 ? 20 : 8);
}

static napi_value GroSegment(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *buf;
  size_t blen;
  uint32_t off, len, hdrs;
  int32_t ref, dst;
  if (argc < 6 || !get_bytes(env, argv[0], &buf, &blen) || !get_u32(env, argv[1], &off) || !get_u32(env, argv[2], &len) ||
      !get_u32(env, argv[3], &hdrs) || !get_i32(env, argv[4], &ref) || !get_i32(env, argv[5], &dst) ||
      (uint64_t)off + len > blen || len < 24 || hdrs > len || !gro_hdrs_ok(buf + off, hdrs) || (ref >= 0 && (uint64_t)ref + hdrs > blen) ||
      (ref >= 0 && dst >= 0 && (uint64_t)dst + (len - hdrs) > blen))
    return throw_type(env, "groSegment(buf, off, len, hdrs, ref, dst): bad arguments");
  return make_i32(env, gro_segment(buf, off, len, hdrs, ref, dst));
}

/*
 * groRun(buf, first, from, end, step, ref, hdrs, state): src/dataplane/gro.ts groRunJs in one call (the agent checks
 * they agree before using this one). After the datagram at buf[first..] (VXLAN header + inner frame) went into the
 * pending super-frame at buf[ref..], appends the datagrams that follow in the same UDP GRO buffer, buf[from..end)
 * in `step`-byte datagrams (the last may be shorter), while each one: has the first one's VXLAN header and inner
 * Ethernet header (so the data plane's lookups for it would be the first one's), is IPv4 without options or
 * fragmentation, or IPv6, whose IPv4 length or IPv6 payload length matches, with either a TCP segment of `hdrs`
 * header bytes with only ACK (or ACK|PSH) set starting at the expected sequence number, or a UDP datagram (hdrs =
 * IP + 8) whose UDP length matches and whose checksum is not 0; carries 1..mss payload bytes, fits in maxTotal,
 * and passes gro_segment (checksum; the pending frame's flow, so its protocol too). A TCP segment with PSH, or
 * one shorter than mss, is appended and ends the run.
 * state (Int32Array): in [0] len, [1] mss, [2] nextSeq, [3] maxTotal; out [0] len, [2] nextSeq, [4] bytes of
 * datagrams taken, [5] 1 if the run ended on PSH | 2 if on a short segment. Returns the number of datagrams taken.
 */
static napi_value GroRun(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *buf;
  size_t blen, sn;
  uint32_t first, from, end, step, hdrs;
  int32_t ref, *st;
  if (argc < 8 || !get_bytes(env, argv[0], &buf, &blen) || !get_u32(env, argv[1], &first) || !get_u32(env, argv[2], &from) ||
      !get_u32(env, argv[3], &end) || !get_u32(env, argv[4], &step) || !get_i32(env, argv[5], &ref) || !get_u32(env, argv[6], &hdrs) ||
      !get_typed(env, argv[7], napi_int32_array, (void **)&st, &sn) || sn < 6 || end > blen || (uint64_t)first + 22 > blen ||
      ref < 0 || hdrs < 42 || st[0] < (int32_t)hdrs || st[0] > st[3] || st[1] < 1 || (uint64_t)ref + (uint32_t)st[3] > blen || step < 1)
    return throw_type(env, "groRun(buf, first, from, end, step, ref, hdrs, state: Int32Array(6)): bad arguments");
  uint32_t cur = (uint32_t)st[0], mss = (uint32_t)st[1], next = (uint32_t)st[2], max = (uint32_t)st[3];
  uint32_t count = 0, bytes = 0, why = 0;
  for (uint32_t p = from; p < end && why == 0; p += step) {
    uint32_t len = end - p < step ? end - p : step;
    if (len < 8 + hdrs) break;
    if (memcmp(buf + p, buf + first, 22) != 0) break;
    uint32_t off = p + 8, ilen = len - 8;
    const uint8_t *f = buf + off, *ip = f + 14;
    uint32_t l4 = gro_l4(f), proto = gro_proto(f, l4);
    const uint8_t *tcp = f + l4; /* or the UDP header */
    if (l4 == 34 ? ip[0] != 0x45 || (rd16(ip + 6) & 0x3fff) != 0 || rd16(ip + 2) != ilen - 14
                 : (ip[0] >> 4) != 6 || rd16(ip + 4) != ilen - 54)
      break;
    /* hdrs fits this frame's protocol before any byte of its L4 header is read (len >= 8 + hdrs) */
    if ((proto != 6 && proto != 17) || !gro_hdrs_ok(f, hdrs) || (proto == 17 && hdrs != l4 + 8)) break;
    uint8_t fl = 0;
    if (proto == 6) {
      fl = tcp[13];
      if ((fl & ~(0x10 | 0x08)) != 0 || (fl & 0x10) == 0 || (uint32_t)(tcp[12] >> 4) * 4 + l4 != hdrs) break;
    } else if (rd16(tcp + 4) != ilen - l4 || rd16(tcp + 6) == 0) {
      break; /* UDP: the length must be the rest of the frame, and a datagram without a checksum is not merged */
    }
    uint32_t plen = ilen - hdrs;
    if (plen < 1 || plen > mss || (proto == 6 && rd32(tcp + 4) != next) || cur + plen > max) break;
    if (gro_segment(buf, off, ilen, hdrs, ref, (int32_t)(ref + cur)) != 1) break;
    cur += plen;
    if (proto == 6) next += plen;
    count++;
    bytes += len;
    if (fl & 0x08) {
      buf[ref + l4 + 13] |= 0x08;
      why = 1;
    } else if (plen < mss) {
      why = 2;
    }
  }
  st[0] = (int32_t)cur;
  st[2] = (int32_t)next;
  st[4] = (int32_t)bytes;
  st[5] = (int32_t)why;
  return make_i32(env, (int32_t)count);
}

static napi_value CloseFd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (!get_i32(env, argv[0], &fd)) return throw_type(env, "closeFd(fd): number expected");
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, errno, "close");
  return make_i32(env, 0);
}

/* udpOpen(ipv4: uint32, port, rcvbuf, sndbuf, gro: bool) -> [fd, boundPort] */
static napi_value UdpOpen(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t ip, port, rcvbuf, sndbuf;
  bool gro = false;
  if (!get_u32(env, argv[0], &ip) || !get_u32(env, argv[1], &port) || !get_u32(env, argv[2], &rcvbuf) ||
      !get_u32(env, argv[3], &sndbuf) || port > 65535)
    return throw_type(env, "udpOpen(ipv4, port, rcvbuf, sndbuf, gro): bad arguments");
  napi_get_value_bool(env, argv[4], &gro);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  int one = 1;
  /* FORCE variants pass rmem_max/wmem_max as root; fall back to the capped ones otherwise. */
  if (rcvbuf && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (sndbuf && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (gro && setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "setsockopt(UDP_GRO)");
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(ip);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "bind");
  }
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  return number_array(env, 2, (double[]){fd, ntohs(sa.sin_port)});
}

/* sockInfo(fd) -> [rcvbuf, sndbuf] as the kernel reports them */
static napi_value SockInfo(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (!get_i32(env, argv[0], &fd)) return throw_type(env, "sockInfo(fd): number expected");
  int r = 0, s = 0;
  socklen_t l = sizeof r;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &r, &l) < 0) return throw_errno(env, errno, "getsockopt");
  l = sizeof s;
  getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s, &l);
  return number_array(env, 2, (double[]){r, s});
}

/* ---- io_uring for TAP batches
 *
 * A TAP read or write moves one frame per syscall, and a syscall's entry and exit can cost far more than the
 * frame's own work on some VMs (history.md entry 12 measured a null syscall at several times a tun read).
 * readBatch and writeBatch therefore queue their reads/writes on one io_uring and submit them with ONE
 * io_uring_enter. Every request carries RWF_NOWAIT and tun supports it, so each runs inline during the enter
 * and completes at once (a read with nothing queued completes with -EAGAIN instead of waiting): the semantics
 * are those of the syscall loop. Requests are issued in order, so the frames of successful reads are in queue
 * order. Without io_uring (kernel too old, io_uring_disabled, seccomp, --no-io-uring) the syscall loop runs. */
#define URING_ENTRIES 512
static struct {
  int fd;                     /* -1: not set up; -2: off (reason in why) */
  unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  char why[96];
  uint64_t enters, ops;       /* io_uring_enter calls, requests completed through them */
} ur = {.fd = -1};
static uint8_t read_hint[4096]; /* per fd: frames the last readBatch found, to size the next one */
static uint64_t single_reads;    /* readBatch calls that began with plain reads (the last call found <= 1 frame) */

static void uring_off(const char *what, int err) {
  if (err) snprintf(ur.why, sizeof ur.why, "%s: %s", what, strerror(err));
  else snprintf(ur.why, sizeof ur.why, "%s", what);
  if (ur.fd >= 0) close(ur.fd);
  ur.fd = -2;
}

static bool uring_ready(void) {
  if (ur.fd >= 0) return true;
  if (ur.fd == -2) return false;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  /* one thread submits; requests complete inline, so nothing waits; a bad request does not stop the rest */
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
  int fd = (int)syscall(SYS_io_uring_setup, URING_ENTRIES, &p);
  if (fd < 0 && errno == EINVAL) {
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SUBMIT_ALL; /* 5.18 */
    fd = (int)syscall(SYS_io_uring_setup, URING_ENTRIES, &p);
  }
  if (fd < 0) {
    uring_off("io_uring_setup", errno);
    return false;
  }
  if (!(p.features & IORING_FEAT_NODROP) || p.sq_entries < URING_ENTRIES) {
    close(fd);
    uring_off("io_uring_setup: kernel too old (no IORING_FEAT_NODROP)", 0);
    return false;
  }
  size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && cq_len > sq_len) sq_len = cq_len;
  uint8_t *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  uint8_t *cq = single ? sq : mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
  void *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
    int e = errno;
    close(fd);
    uring_off("mmap of the io_uring", e);
    return false;
  }
  ur.sq_tail = (unsigned *)(sq + p.sq_off.tail);
  ur.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  ur.sq_array = (unsigned *)(sq + p.sq_off.array);
  ur.cq_head = (unsigned *)(cq + p.cq_off.head);
  ur.cq_tail = (unsigned *)(cq + p.cq_off.tail);
  ur.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  ur.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  ur.sqes = sqes;
  ur.fd = fd;
  return true;
}

static struct io_uring_sqe *uring_sqe(unsigned i, uint8_t op, int fd, uint64_t addr, uint32_t len) {
  unsigned idx = (*ur.sq_tail + i) & *ur.sq_mask;
  struct io_uring_sqe *q = &ur.sqes[idx];
  memset(q, 0, sizeof *q);
  q->opcode = op;
  q->fd = fd;
  q->addr = addr;
  q->len = len;
  q->off = (uint64_t)-1; /* the file's position: a stream */
  q->rw_flags = RWF_NOWAIT;
  q->user_data = i;
  ur.sq_array[idx] = idx;
  return q;
}

/* Submits the n requests prepared with uring_sqe and reaps their results into res[user_data]. false: io_uring
 * failed before taking any (it is switched off; the caller runs the syscall loop). A failure after that (never
 * seen) switches it off too and reports the requests without a result as -EIO. */
static bool uring_run(unsigned n, int32_t *res) {
  for (unsigned i = 0; i < n; i++) res[i] = -EIO;
  __atomic_store_n(ur.sq_tail, *ur.sq_tail + n, __ATOMIC_RELEASE);
  unsigned done = 0, submitted = 0;
  while (done < n) {
    /* with SUBMIT_ALL one enter takes all n; wait only for what was submitted */
    int r = (int)syscall(SYS_io_uring_enter, ur.fd, n - submitted, submitted == n ? n - done : 0, IORING_ENTER_GETEVENTS, NULL, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || (r == 0 && submitted < n && done == submitted)) {
      /* an error, or no progress: give up on io_uring (what completed is reported; the rest stays -EIO) */
      uring_off("io_uring_enter", r < 0 ? errno : EIO);
      return submitted > 0;
    }
    submitted += (unsigned)r;
    ur.enters++;
    unsigned h = *ur.cq_head, t = __atomic_load_n(ur.cq_tail, __ATOMIC_ACQUIRE);
    for (; h != t; h++) {
      struct io_uring_cqe *c = &ur.cqes[h & *ur.cq_mask];
      if (c->user_data < n) res[c->user_data] = c->res;
      done++;
    }
    __atomic_store_n(ur.cq_head, h, __ATOMIC_RELEASE);
  }
  ur.ops += n;
  return true;
}

/* ioUring(disable?) -> [status, enters, ops, singleReads]: "on", or "off: why"; true switches it off for the
 * process, false back on if it was switched off that way. singleReads: readBatch calls that took the sparse
 * path (plain reads, whatever the status). */
#define URING_OFF_BY_REQUEST "switched off (--no-io-uring)"
static napi_value IoUring(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) {
    bool off = false;
    napi_valuetype t;
    NAPI_CALL(env, napi_typeof(env, argv[0], &t));
    if (t == napi_boolean) NAPI_CALL(env, napi_get_value_bool(env, argv[0], &off));
    else if (t != napi_undefined) return throw_type(env, "ioUring(disable?: boolean)");
    if (off && ur.fd != -2) uring_off(URING_OFF_BY_REQUEST, 0);
    else if (!off && ur.fd == -2 && strcmp(ur.why, URING_OFF_BY_REQUEST) == 0) ur.fd = -1; /* on again (tests) */
  }
  bool on = uring_ready();
  char msg[128];
  snprintf(msg, sizeof msg, on ? "on" : "off: %s", ur.why);
  napi_value v, out = number_array(env, 4, (double[]){0, (double)ur.enters, (double)ur.ops, (double)single_reads});
  NAPI_CALL(env, napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &v));
  napi_set_element(env, out, 0, v); /* the status string in place of the 0 */
  return out;
}

/* Validates arena/slot/offset/count for the read-side batch calls. */
static bool check_slots(size_t arena_len, uint32_t slot, uint32_t offset, uint32_t max, size_t lens_count) {
  if (slot == 0 || offset >= slot || max == 0 || max > MAX_BATCH) return false;
  if ((size_t)slot * max > arena_len) return false;
  if (lens_count < max) return false;
  return true;
}

/* The fd's hint, or -1: no slot for it (fd past the table). */
static inline int read_hint_of(int32_t fd) { return fd >= 0 && fd < (int32_t)sizeof read_hint ? read_hint[fd] : -1; }
static inline void set_read_hint(int32_t fd, uint32_t n) {
  if (fd >= 0 && fd < (int32_t)sizeof read_hint) read_hint[fd] = (uint8_t)(n < 250 ? n : 250);
}

/* Plain read() calls into slots n, n+1, ... until `limit` frames are in or the queue is empty. Returns the new
 * count, or -errno when the first read of the call (n == 0) failed with anything but EAGAIN; a later failure
 * ends the batch quietly (the next call sees it). */
static int64_t read_plain(int fd, uint8_t *arena, uint32_t slot, uint32_t offset, uint32_t n, uint32_t limit, int32_t *lens) {
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

/* readBatch(fd, arena, slotSize, offset, maxCount, lens: Int32Array) -> n */
static napi_value ReadBatch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint32_t slot, offset, max;
  uint8_t *arena;
  size_t arena_len, lens_count;
  int32_t *lens;
  if (!get_i32(env, argv[0], &fd) || !get_bytes(env, argv[1], &arena, &arena_len) || !get_u32(env, argv[2], &slot) ||
      !get_u32(env, argv[3], &offset) || !get_u32(env, argv[4], &max) ||
      !get_typed(env, argv[5], napi_int32_array, (void **)&lens, &lens_count) ||
      !check_slots(arena_len, slot, offset, max, lens_count))
    return throw_type(env, "readBatch(fd, arena, slotSize, offset, maxCount, lens): bad arguments");
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
    if (r < 0) return throw_errno(env, (int)-r, "read");
    n = (uint32_t)r;
    if (n < 2 || n == max) {
      set_read_hint(fd, n);
      return make_i32(env, (int32_t)n);
    }
  }
  if (fd >= 0 && uring_ready()) {
    /* as many reads as the last batch found, plus a few (the one that finds the queue empty ends the batch);
     * again, larger, while every read found a frame */
    uint32_t want = hint >= 0 ? (uint32_t)hint + 4u : 4u; /* no hint kept past the table: start small, grow */
    int err = 0;
    while (n < max) {
      uint32_t k = want < max - n ? want : max - n;
      int32_t res[MAX_BATCH];
      for (uint32_t i = 0; i < k; i++) uring_sqe(i, IORING_OP_READ, fd, (uint64_t)(uintptr_t)(arena + (size_t)(n + i) * slot + offset), slot - offset);
      if (!uring_run(k, res)) goto syscalls;
      uint32_t got = 0;
      for (uint32_t i = 0; i < k; i++) {
        if (res[i] < 0) {
          if (res[i] != -EAGAIN && !err) err = -res[i];
          continue;
        }
        /* a frame after an empty read arrived meanwhile: it follows the earlier ones in the queue */
        if (i != got) memmove(arena + (size_t)(n + got) * slot + offset, arena + (size_t)(n + i) * slot + offset, (size_t)res[i]);
        lens[n + got++] = res[i];
      }
      n += got;
      if (got < k) break;
      want = k * 2;
    }
    set_read_hint(fd, n);
    if (n == 0 && err) return throw_errno(env, err, "read");
    return make_i32(env, (int32_t)n);
  }
syscalls:;
  int64_t r = read_plain(fd, arena, slot, offset, n, max, lens);
  if (r < 0) return throw_errno(env, (int)-r, "read");
  set_read_hint(fd, (uint32_t)r);
  return make_i32(env, (int32_t)r);
}

/* writeBatch(arena, descs: Int32Array [fd, off, len, prefix]*, count) -> ok count; failed ones get len = -errno.
 * prefix > 0 writes that many zero bytes before the frame (a virtio-net header meaning "no offload, checksum
 * complete") with writev, so frames bound for IFF_VNET_HDR TAPs need no free room in front of them. */
#define WRITE_STRIDE 4
static const uint8_t zero_prefix[64];
static inline bool write_desc_ok(const int32_t *m, size_t arena_len) {
  return m[1] >= 0 && m[2] > 0 && (size_t)m[1] + (size_t)m[2] <= arena_len && m[3] >= 0 && m[3] <= (int32_t)sizeof zero_prefix;
}
static napi_value WriteBatch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *arena;
  size_t arena_len, dcount;
  int32_t *d;
  uint32_t count;
  if (!get_bytes(env, argv[0], &arena, &arena_len) || !get_typed(env, argv[1], napi_int32_array, (void **)&d, &dcount) ||
      !get_u32(env, argv[2], &count) || (size_t)count * WRITE_STRIDE > dcount)
    return throw_type(env, "writeBatch(arena, descs, count): bad arguments");
  int32_t ok = 0;
  uint32_t i0 = 0;
  if (count > 1 && uring_ready()) {
    static struct iovec v[MAX_BATCH][2];
    int32_t res[MAX_BATCH];
    uint32_t idx[MAX_BATCH];
    while (i0 < count) {
      uint32_t k = 0, i = i0;
      for (; i < count && k < MAX_BATCH; i++) {
        int32_t *m = d + (size_t)i * WRITE_STRIDE;
        if (!write_desc_ok(m, arena_len)) {
          m[2] = -EINVAL;
          continue;
        }
        v[k][0] = (struct iovec){(void *)zero_prefix, (size_t)m[3]};
        v[k][1] = (struct iovec){arena + m[1], (size_t)m[2]};
        if (m[3] > 0) uring_sqe(k, IORING_OP_WRITEV, m[0], (uint64_t)(uintptr_t)v[k], 2);
        else uring_sqe(k, IORING_OP_WRITE, m[0], (uint64_t)(uintptr_t)(arena + m[1]), (uint32_t)m[2]);
        idx[k++] = i;
      }
      if (k && !uring_run(k, res)) break; /* io_uring went off: the rest by syscalls */
      for (uint32_t j = 0; j < k; j++) {
        if (res[j] < 0) d[(size_t)idx[j] * WRITE_STRIDE + 2] = res[j];
        else ok++;
      }
      i0 = i;
    }
  }
  for (uint32_t i = i0; i < count; i++) {
    int32_t *m = d + (size_t)i * WRITE_STRIDE;
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
  return make_i32(env, ok);
}

/* recvBatch(fd, arena, slotSize, offset, maxCount, lens: Int32Array, addrs: Uint32Array, gsoSizes: Int32Array|null) -> n
 * lens[i] = -EMSGSIZE for a truncated datagram. With UDP_GRO on, gsoSizes[i] is the segment size of a coalesced
 * datagram (0 when it is a single one). */
static napi_value RecvBatch(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint32_t slot, offset, max;
  uint8_t *arena;
  size_t arena_len, lens_count, addr_count, gso_count = 0;
  int32_t *lens, *gso = NULL;
  uint32_t *addrs;
  if (!get_i32(env, argv[0], &fd) || !get_bytes(env, argv[1], &arena, &arena_len) || !get_u32(env, argv[2], &slot) ||
      !get_u32(env, argv[3], &offset) || !get_u32(env, argv[4], &max) ||
      !get_typed(env, argv[5], napi_int32_array, (void **)&lens, &lens_count) ||
      !get_typed(env, argv[6], napi_uint32_array, (void **)&addrs, &addr_count) ||
      !check_slots(arena_len, slot, offset, max, lens_count) || addr_count < (size_t)max * 2)
    return throw_type(env, "recvBatch(fd, arena, slotSize, offset, maxCount, lens, addrs, gso): bad arguments");
  if (argc > 7) {
    napi_valuetype t;
    napi_typeof(env, argv[7], &t);
    if (t != napi_null && t != napi_undefined) {
      if (!get_typed(env, argv[7], napi_int32_array, (void **)&gso, &gso_count) || gso_count < max)
        return throw_type(env, "recvBatch: gsoSizes must be an Int32Array of maxCount");
    }
  }
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH];
  struct sockaddr_in sa[MAX_BATCH];
  char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(uint16_t))];
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
  if (r < 0) {
    if (errno == EAGAIN) return make_i32(env, 0);
    return throw_errno(env, errno, "recvmmsg");
  }
  for (int i = 0; i < r; i++) {
    lens[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -EMSGSIZE : (int32_t)msgs[i].msg_len;
    addrs[2 * i] = ntohl(sa[i].sin_addr.s_addr);
    addrs[2 * i + 1] = ntohs(sa[i].sin_port);
    if (gso) {
      gso[i] = 0;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int v = 0;
          memcpy(&v, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0) >= sizeof(int) ? sizeof(int) : sizeof(uint16_t));
          gso[i] = v & 0xffff;
        }
      }
    }
  }
  return make_i32(env, r);
}

/* sendBatch(fds: Int32Array, arena, descs: Int32Array [sockIdx, off, len, ipv4, port, gsoSize]*, count) -> sent
 * One sendmmsg per socket (messages keep their relative order per socket, hence per flow). A message the kernel
 * refuses gets len = -errno and the rest of its socket's batch is still tried, except after EAGAIN/ENOBUFS
 * (queue full), which fails the rest of that socket's batch at once. A descriptor whose sockIdx is not an index
 * of fds fails with -EINVAL.
 *
 * Coalescing: a run of consecutive datagrams of one socket to the same address and port, of equal length (the
 * last may be shorter), goes as ONE message with UDP_SEGMENT = that length and one iovec per datagram, up to
 * COALESCE_MAX datagrams and 65507 bytes: the kernel builds one skb and cuts it into exactly those datagrams
 * (in software at worst, on a veth not at all: a receiver with UDP_GRO takes it whole). The wire sees the same
 * datagrams; the sender pays one trip through the UDP/IP stack instead of one per datagram. A coalesced send
 * the kernel refuses as such (EINVAL, EIO, EMSGSIZE: a datagram over the path MTU, no UDP GSO on the path) is
 * sent again one datagram at a time; other errors fail each of its datagrams. Returns the datagrams
 * (descriptors) sent. */
#define SEND_STRIDE 6
#define COALESCE_MAX 64
#define UDP_MAX_PAYLOAD 65507
static uint64_t coalesced_msgs, coalesced_dgrams; /* sends that carried 2+ datagrams, and those datagrams */
/* A descriptor sendBatch can send: its socket is one of the nfds given, its bytes lie inside the arena. */
static inline bool send_desc_ok(const int32_t *m, size_t arena_len, size_t nfds) {
  return m[0] >= 0 && (size_t)m[0] < nfds && m[1] >= 0 && m[2] > 0 && (size_t)m[1] + (size_t)m[2] <= arena_len;
}
static napi_value SendBatch(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t *fds, *d;
  size_t nfds, dcount, arena_len;
  uint8_t *arena;
  uint32_t count;
  if (!get_typed(env, argv[0], napi_int32_array, (void **)&fds, &nfds) || !get_bytes(env, argv[1], &arena, &arena_len) ||
      !get_typed(env, argv[2], napi_int32_array, (void **)&d, &dcount) || !get_u32(env, argv[3], &count) ||
      (size_t)count * SEND_STRIDE > dcount || count > MAX_BATCH * 4 || nfds > MAX_SOCKETS)
    return throw_type(env, "sendBatch(fds, arena, descs, count): bad arguments");
  /* a descriptor that can never be sent fails in its own slot, here, once: from now on len > 0 means valid */
  for (uint32_t i = 0; i < count; i++) {
    int32_t *m = d + (size_t)i * SEND_STRIDE;
    if (!send_desc_ok(m, arena_len, nfds)) m[2] = -EINVAL;
  }
  if (count == 1 && d[2] > 0 && d[5] == 0) {
    /* one datagram (sparse traffic): a plain sendto, without building a message vector */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d[4]), .sin_addr.s_addr = htonl((uint32_t)d[3])};
    ssize_t r;
    do r = sendto(fds[d[0]], arena + d[1], (size_t)d[2], MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      d[2] = -errno;
      return make_i32(env, 0);
    }
    return make_i32(env, 1);
  }
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH];
  struct sockaddr_in sa[MAX_BATCH];
  char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(uint16_t))];
  int32_t *which[MAX_BATCH]; /* descriptor of each iovec */
  int first[MAX_BATCH + 1];  /* message j carries iovecs first[j] .. first[j+1]-1 */
  int32_t sent = 0;
  for (size_t s = 0; s < nfds; s++) {
    uint32_t i = 0;
    while (i < count) {
      /* gather up to MAX_BATCH datagrams of socket s, starting at i, into n messages */
      int n = 0, v = 0;
      int32_t *lead = NULL; /* the open run's first descriptor */
      size_t run_bytes = 0;
      bool run_closed = false; /* a shorter datagram ended it */
      for (; i < count && v < MAX_BATCH; i++) {
        int32_t *m = d + (size_t)i * SEND_STRIDE;
        if (m[0] != (int32_t)s || m[2] <= 0) continue; /* another socket's, or failed the check above */
        iov[v].iov_base = arena + m[1];
        iov[v].iov_len = (size_t)m[2];
        which[v] = m;
        if (lead && !run_closed && m[5] == 0 && m[3] == lead[3] && m[4] == lead[4] && m[2] <= lead[2] &&
            v - first[n - 1] < COALESCE_MAX && run_bytes + (size_t)m[2] <= UDP_MAX_PAYLOAD) {
          /* joins the open run (message n-1) */
          run_bytes += (size_t)m[2];
          if (m[2] < lead[2]) run_closed = true;
          v++;
          continue;
        }
        first[n] = v;
        memset(&sa[n], 0, sizeof sa[n]);
        sa[n].sin_family = AF_INET;
        sa[n].sin_addr.s_addr = htonl((uint32_t)m[3]);
        sa[n].sin_port = htons((uint16_t)m[4]);
        memset(&msgs[n], 0, sizeof msgs[n]);
        msgs[n].msg_hdr.msg_iov = &iov[v];
        msgs[n].msg_hdr.msg_name = &sa[n];
        msgs[n].msg_hdr.msg_namelen = sizeof sa[n];
        lead = m[5] == 0 ? m : NULL; /* a GSO send of its own (TSO split) is never joined */
        run_bytes = (size_t)m[2];
        run_closed = false;
        n++;
        v++;
      }
      first[n] = v;
      for (int j = 0; j < n; j++) {
        int k0 = first[j], cnt = first[j + 1] - k0;
        msgs[j].msg_hdr.msg_iovlen = (size_t)cnt;
        int32_t g = cnt > 1 ? which[k0][2] : which[k0][5];
        if (cnt > 1) {
          coalesced_msgs++;
          coalesced_dgrams += (uint64_t)cnt;
        }
        if (g > 0) {
          memset(ctrl[j], 0, sizeof ctrl[j]);
          msgs[j].msg_hdr.msg_control = ctrl[j];
          msgs[j].msg_hdr.msg_controllen = sizeof ctrl[j];
          struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[j].msg_hdr);
          c->cmsg_level = SOL_UDP;
          c->cmsg_type = UDP_SEGMENT;
          c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
          uint16_t g16 = (uint16_t)g;
          memcpy(CMSG_DATA(c), &g16, sizeof g16);
        }
      }
      int k = 0;
      while (k < n) {
        int r = sendmmsg(fds[s], msgs + k, (unsigned)(n - k), MSG_DONTWAIT);
        if (r < 0) {
          int e = errno;
          if (e == EINTR) continue;
          if (e == EAGAIN || e == ENOBUFS) {
            for (int q = first[k]; q < v; q++) which[q][2] = -e;
            break;
          }
          if (first[k + 1] - first[k] > 1 && (e == EINVAL || e == EIO || e == EMSGSIZE)) {
            /* the kernel refused the coalesced send (a datagram over the path MTU, a device or policy without
             * UDP GSO): its datagrams go one by one, as they would have without coalescing */
            for (int q = first[k]; q < first[k + 1]; q++) {
              struct msghdr one = msgs[k].msg_hdr;
              one.msg_iov = &iov[q];
              one.msg_iovlen = 1;
              one.msg_control = NULL;
              one.msg_controllen = 0;
              ssize_t r1;
              do r1 = sendmsg(fds[s], &one, MSG_DONTWAIT);
              while (r1 < 0 && errno == EINTR);
              if (r1 < 0) which[q][2] = -errno;
              else sent++;
            }
            k++;
            continue;
          }
          /* this one message is bad (e.g. EMSGSIZE, ENETUNREACH): skip it */
          for (int q = first[k]; q < first[k + 1]; q++) which[q][2] = -e;
          k++;
          continue;
        }
        sent += first[k + r] - first[k];
        k += r;
      }
    }
  }
  return make_i32(env, sent);
}

/* coalesceStats() -> [messages, datagrams]: sends that carried two or more datagrams, and how many they carried. */
static napi_value CoalesceStats(napi_env env, napi_callback_info info) {
  (void)info;
  return number_array(env, 2, (double[]){(double)coalesced_msgs, (double)coalesced_dgrams});
}

/* pollStart(fd, events: 1 readable | 2 writable, cb(status, events)) -> handle */
static napi_value PollStart(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, events;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &events) || t != napi_function)
    return throw_type(env, "pollStart(fd, events, callback): bad arguments");
  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  vx_poll_t *p = calloc(1, sizeof *p);
  if (!p) return throw_errno(env, ENOMEM, "calloc");
  p->env = env;
  p->fd = fd;
  int r = uv_poll_init(loop, &p->poll, fd);
  if (r < 0) {
    free(p);
    return throw_errno(env, -r, "uv_poll_init");
  }
  p->poll.data = p;
  napi_create_reference(env, argv[2], 1, &p->callback);
  napi_value name;
  napi_create_string_utf8(env, "vxtap.poll", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &p->async);
  r = uv_poll_start(&p->poll, ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0), poll_cb);
  if (r < 0) {
    p->closing = 1;
    uv_close((uv_handle_t *)&p->poll, poll_close_cb);
    return throw_errno(env, -r, "uv_poll_start");
  }
  napi_value ext;
  napi_create_external(env, p, poll_finalize, NULL, &ext);
  return ext;
}

static vx_poll_t *get_poll(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* pollUpdate(handle, events) */
static napi_value PollUpdate(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  vx_poll_t *p = get_poll(env, argv[0]);
  int32_t events;
  if (!p || !get_i32(env, argv[1], &events)) return throw_type(env, "pollUpdate(handle, events): bad arguments");
  if (p->closing) return throw_type(env, "pollUpdate: handle is stopped");
  int r = uv_poll_start(&p->poll, ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0), poll_cb);
  if (r < 0) return throw_errno(env, -r, "uv_poll_start");
  return make_i32(env, 0);
}

/* pollStop(handle): idempotent; the callback is never called again. Does not close the fd. */
static napi_value PollStop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  vx_poll_t *p = get_poll(env, argv[0]);
  if (!p) return throw_type(env, "pollStop(handle): bad handle");
  if (!p->closing) {
    p->closing = 1;
    uv_poll_stop(&p->poll);
    uv_close((uv_handle_t *)&p->poll, poll_close_cb);
  }
  return make_i32(env, 0);
}

/* busyPoll(windowUs) -> [hits, spinNs]: sets the busy-poll window (0: off, the default) and returns the counters
 * so far. The window is process-wide: one agent per process. */
static napi_value BusyPoll(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t us = -1;
  if (argc >= 1) {
    napi_valuetype t;
    napi_typeof(env, argv[0], &t);
    if (t != napi_undefined && (!get_i32(env, argv[0], &us) || us < 0 || us > 10000000))
      return throw_type(env, "busyPoll(windowUs): 0 to 10000000 microseconds");
  }
  if (us >= 0) {
    if (!busy.started && us > 0) {
      uv_loop_t *loop;
      NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
      uv_prepare_init(loop, &busy.prepare);
      uv_prepare_start(&busy.prepare, busy_prepare_cb);
      uv_unref((uv_handle_t *)&busy.prepare); /* never keeps the process alive by itself */
      busy.started = 1;
    }
    busy.window_ns = (uint64_t)us * 1000u;
    busy.last_activity_ns = mono_ns();
  }
  return number_array(env, 2, (double[]){busy.hits, busy.spin_ns});
}

/* ---------------------------------------------------------------- exports */

static void set_const(napi_env env, napi_value obj, const char *name, int32_t v) {
  napi_set_named_property(env, obj, name, make_i32(env, v));
}

NAPI_MODULE_INIT() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) csum_copy = csum_avx2;
#endif
  napi_property_descriptor props[] = {
    {"tapOpen", NULL, TapOpen, NULL, NULL, NULL, napi_default, NULL},
    {"tapIoctl", NULL, TapIoctl, NULL, NULL, NULL, napi_default, NULL},
    {"closeFd", NULL, CloseFd, NULL, NULL, NULL, napi_default, NULL},
    {"sum16", NULL, Sum16, NULL, NULL, NULL, napi_default, NULL},
    {"tsoSplit", NULL, TsoSplit, NULL, NULL, NULL, napi_default, NULL},
    {"groSegment", NULL, GroSegment, NULL, NULL, NULL, napi_default, NULL},
    {"groRun", NULL, GroRun, NULL, NULL, NULL, napi_default, NULL},
    {"udpOpen", NULL, UdpOpen, NULL, NULL, NULL, napi_default, NULL},
    {"sockInfo", NULL, SockInfo, NULL, NULL, NULL, napi_default, NULL},
    {"readBatch", NULL, ReadBatch, NULL, NULL, NULL, napi_default, NULL},
    {"writeBatch", NULL, WriteBatch, NULL, NULL, NULL, napi_default, NULL},
    {"recvBatch", NULL, RecvBatch, NULL, NULL, NULL, napi_default, NULL},
    {"sendBatch", NULL, SendBatch, NULL, NULL, NULL, napi_default, NULL},
    {"pollStart", NULL, PollStart, NULL, NULL, NULL, napi_default, NULL},
    {"pollUpdate", NULL, PollUpdate, NULL, NULL, NULL, napi_default, NULL},
    {"pollStop", NULL, PollStop, NULL, NULL, NULL, napi_default, NULL},
    {"busyPoll", NULL, BusyPoll, NULL, NULL, NULL, napi_default, NULL},
    {"ioUring", NULL, IoUring, NULL, NULL, NULL, napi_default, NULL},
    {"coalesceStats", NULL, CoalesceStats, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_value c;
  napi_create_object(env, &c);
  set_const(env, c, "IFF_TAP", IFF_TAP);
  set_const(env, c, "IFF_NO_PI", IFF_NO_PI);
  set_const(env, c, "IFF_VNET_HDR", IFF_VNET_HDR);
  set_const(env, c, "IFF_MULTI_QUEUE", IFF_MULTI_QUEUE);
  set_const(env, c, "TUN_F_CSUM", TUN_F_CSUM);
  set_const(env, c, "TUN_F_TSO4", TUN_F_TSO4);
  set_const(env, c, "TUN_F_TSO6", TUN_F_TSO6);
  set_const(env, c, "TUN_F_TSO_ECN", TUN_F_TSO_ECN);
  set_const(env, c, "TUN_F_USO4", TUN_F_USO4);
  set_const(env, c, "TUN_F_USO6", TUN_F_USO6);
  set_const(env, c, "MAX_BATCH", MAX_BATCH);
  set_const(env, c, "SEND_STRIDE", SEND_STRIDE);
  set_const(env, c, "WRITE_STRIDE", WRITE_STRIDE);
  set_const(env, c, "EAGAIN", EAGAIN);
  set_const(env, c, "EMSGSIZE", EMSGSIZE);
  set_const(env, c, "ENOBUFS", ENOBUFS);
  napi_set_named_property(env, exports, "constants", c);
  return exports;
}
