/*
 * binding.c: the N-API glue of vxtap_native. Each method converts and checks its arguments (every buffer range
 * against its buffer), calls the part that does the work (sys.c, io.c, kernels.c; see vxtap.h), and turns a
 * -errno into an exception whose `code` is the errno name. The poll handles live here because their callbacks call
 * into JS. The methods' contracts, in TypeScript, are in src/sys/native.ts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include "vxtap.h"

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

/* A typed array of exactly n bytes (an address, a key). */
static bool get_bytes_n(napi_env env, napi_value v, size_t n, uint8_t **data) {
  size_t len;
  return get_bytes(env, v, data, &len) && len == n;
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

/* ---------------------------------------------------------------- setup (sys.c) */

/* tapOpen(name: string, flags: number, netnsPath: string | null) -> [fd, ifname] */
static napi_value TapOpen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[IFNAMSIZ] = {0};
  int32_t flags;
  size_t n;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &n) != napi_ok) return throw_type(env, "tapOpen: name must be a string");
  if (!get_i32(env, argv[1], &flags)) return throw_type(env, "tapOpen: flags must be a number");
  char ns[4096] = {0};
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t == napi_string) napi_get_value_string_utf8(env, argv[2], ns, sizeof ns, &n);
  const char *where = "";
  int fd = vx_tap_open(name, flags, ns, &where);
  if (fd < 0) return throw_errno(env, -fd, where);
  napi_value out, fdv, namev;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, fd, &fdv);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &namev);
  napi_set_element(env, out, 0, fdv);
  napi_set_element(env, out, 1, namev);
  return out;
}

/* tapIoctl(fd, which: 0 persist | 1 offload | 2 vnethdrsz, value) */
static napi_value TapIoctl(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, which, value;
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &which) || !get_i32(env, argv[2], &value))
    return throw_type(env, "tapIoctl(fd, which, value): numbers expected");
  if (which < 0 || which > 2) return throw_type(env, "tapIoctl: unknown request");
  int r = vx_tap_ioctl(fd, which, value);
  if (r < 0) return throw_errno(env, -r, vx_tap_ioctl_name(which));
  return make_i32(env, 0);
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

/* udpOpen(vtep: uint32 (IPv4, or a registered IPv6 VTEP id), port, rcvbuf, sndbuf, gro: bool) -> [fd, boundPort] */
static napi_value UdpOpen(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t ip, port, rcvbuf, sndbuf;
  bool gro = false;
  if (!get_u32(env, argv[0], &ip) || !get_u32(env, argv[1], &port) || !get_u32(env, argv[2], &rcvbuf) ||
      !get_u32(env, argv[3], &sndbuf) || port > 65535)
    return throw_type(env, "udpOpen(vtep, port, rcvbuf, sndbuf, gro): bad arguments");
  napi_get_value_bool(env, argv[4], &gro);
  const char *where = "";
  uint16_t bound = 0;
  int fd = vx_udp_open(ip, (uint16_t)port, rcvbuf, sndbuf, gro, &bound, &where);
  if (fd < 0) return throw_errno(env, -fd, where);
  return number_array(env, 2, (double[]){fd, bound});
}

/* vtep6Set(id, addr: 16 bytes) -> 0: registers an IPv6 VTEP address under its id (see vtep.c) */
static napi_value Vtep6Set(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t id;
  uint8_t *a;
  if (!get_u32(env, argv[0], &id) || !get_bytes_n(env, argv[1], 16, &a))
    return throw_type(env, "vtep6Set(id, addr): an id and 16 bytes expected");
  int e = vx_vtep6_set(id, a);
  if (e < 0) return throw_errno(env, -e, "vtep6Set");
  return make_i32(env, 0);
}

/* aeadKey(slot, key: 32 bytes, salt: 4 bytes) -> 0 */
static napi_value AeadKey(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t slot;
  uint8_t *key, *salt;
  if (!get_u32(env, argv[0], &slot) || !get_bytes_n(env, argv[1], VX_AEAD_KEY, &key) ||
      !get_bytes_n(env, argv[2], 4, &salt))
    return throw_type(env, "aeadKey(slot, key, salt): a slot, 32 bytes and 4 bytes expected");
  int e = vx_aead_key(slot, key, salt);
  if (e < 0) return throw_errno(env, -e, "aeadKey");
  return make_i32(env, 0);
}

/* aeadDrop(slot) */
static napi_value AeadDrop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t slot;
  if (!get_u32(env, argv[0], &slot)) return throw_type(env, "aeadDrop(slot): a slot expected");
  vx_aead_drop(slot);
  return make_i32(env, 0);
}

/* aeadSeal / aeadOpen (arena, descs: Int32Array [off, len, slot]*, count) -> done */
static napi_value aead_batch(napi_env env, napi_callback_info info, bool seal) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *arena;
  size_t alen, dcount;
  int32_t *d;
  uint32_t count;
  if (!get_bytes(env, argv[0], &arena, &alen) || !get_typed(env, argv[1], napi_int32_array, (void **)&d, &dcount) ||
      !get_u32(env, argv[2], &count) || (size_t)count * VX_AEAD_STRIDE > dcount)
    return throw_type(env, "aeadSeal/aeadOpen(arena, descs, count): bad arguments");
  return make_i32(env, seal ? vx_aead_seal(arena, alen, d, count) : vx_aead_open(arena, alen, d, count));
}
static napi_value AeadSeal(napi_env env, napi_callback_info info) {
  return aead_batch(env, info, true);
}
static napi_value AeadOpen(napi_env env, napi_callback_info info) {
  return aead_batch(env, info, false);
}

/* sockInfo(fd) -> [rcvbuf, sndbuf] as the kernel reports them */
static napi_value SockInfo(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (!get_i32(env, argv[0], &fd)) return throw_type(env, "sockInfo(fd): number expected");
  int r = 0, s = 0;
  int e = vx_sock_info(fd, &r, &s);
  if (e < 0) return throw_errno(env, -e, "getsockopt");
  return number_array(env, 2, (double[]){r, s});
}

/* busyPoll(windowUs?) -> [hits, spinNs]: sets the busy-poll window (0: off, the default) and returns the counters
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
    uv_loop_t *loop;
    NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
    vx_busy_set(loop, (uint32_t)us);
  }
  double hits, spin;
  vx_busy_stats(&hits, &spin);
  return number_array(env, 2, (double[]){hits, spin});
}

/* ---------------------------------------------------------------- batched I/O (io.c) */

/* ioUring(disable?) -> [status, enters, ops, singleReads]: "on", or "off: why"; true switches it off for the
 * process, false back on if it was switched off that way. singleReads: readBatch calls that took the sparse
 * path (plain reads, whatever the status). */
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
    if (t == napi_boolean) vx_uring_disable(off);
  }
  const char *why;
  bool on = vx_uring_status(&why);
  uint64_t enters, ops, single, cm, cd;
  vx_io_stats(&enters, &ops, &single, &cm, &cd);
  char msg[128];
  snprintf(msg, sizeof msg, on ? "on" : "off: %s", why);
  napi_value v, out = number_array(env, 4, (double[]){0, (double)enters, (double)ops, (double)single});
  NAPI_CALL(env, napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &v));
  napi_set_element(env, out, 0, v); /* the status string in place of the 0 */
  return out;
}

/* coalesceStats() -> [messages, datagrams]: sends that carried two or more datagrams, and how many they carried. */
static napi_value CoalesceStats(napi_env env, napi_callback_info info) {
  (void)info;
  uint64_t enters, ops, single, cm, cd;
  vx_io_stats(&enters, &ops, &single, &cm, &cd);
  return number_array(env, 2, (double[]){(double)cm, (double)cd});
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
      !vx_slots_ok(arena_len, slot, offset, max, lens_count))
    return throw_type(env, "readBatch(fd, arena, slotSize, offset, maxCount, lens): bad arguments");
  int64_t n = vx_read_batch(fd, arena, slot, offset, max, lens);
  if (n < 0) return throw_errno(env, (int)-n, "read");
  return make_i32(env, (int32_t)n);
}

/* writeBatch(arena, descs: Int32Array [fd, off, len, prefix]*, count) -> ok count; failed ones get len = -errno.
 * prefix > 0 writes that many zero bytes before the frame (a virtio-net header meaning "no offload, checksum
 * complete") with writev, so frames bound for IFF_VNET_HDR TAPs need no free room in front of them. */
static napi_value WriteBatch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *arena;
  size_t arena_len, dcount;
  int32_t *d;
  uint32_t count;
  if (!get_bytes(env, argv[0], &arena, &arena_len) || !get_typed(env, argv[1], napi_int32_array, (void **)&d, &dcount) ||
      !get_u32(env, argv[2], &count) || (size_t)count * VX_WRITE_STRIDE > dcount)
    return throw_type(env, "writeBatch(arena, descs, count): bad arguments");
  return make_i32(env, vx_write_batch(arena, arena_len, d, count));
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
      !vx_slots_ok(arena_len, slot, offset, max, lens_count) || addr_count < (size_t)max * 2)
    return throw_type(env, "recvBatch(fd, arena, slotSize, offset, maxCount, lens, addrs, gso): bad arguments");
  if (argc > 7) {
    napi_valuetype t;
    napi_typeof(env, argv[7], &t);
    if (t != napi_null && t != napi_undefined) {
      if (!get_typed(env, argv[7], napi_int32_array, (void **)&gso, &gso_count) || gso_count < max)
        return throw_type(env, "recvBatch: gsoSizes must be an Int32Array of maxCount");
    }
  }
  int64_t n = vx_recv_batch(fd, arena, slot, offset, max, lens, addrs, gso);
  if (n < 0) return throw_errno(env, (int)-n, "recvmmsg");
  return make_i32(env, (int32_t)n);
}

/* sendBatch(fds: Int32Array, arena, descs: Int32Array [sockIdx, off, len, vtep, port, gsoSize]*, count) -> sent
 * (io.c has the rules: per-socket order, coalescing, what a failure does). */
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
      (size_t)count * VX_SEND_STRIDE > dcount || count > VX_MAX_BATCH * 4 || nfds > VX_MAX_SOCKETS)
    return throw_type(env, "sendBatch(fds, arena, descs, count): bad arguments");
  return make_i32(env, vx_send_batch(fds, nfds, arena, arena_len, d, count));
}

/* ---------------------------------------------------------------- per-byte kernels (kernels.c) */

/* sum16(buf, start, end, initial?) */
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
  NAPI_CALL(env, napi_create_uint32(env, vx_sum16(buf + start, end - start, initial), &out));
  return out;
}

/* tsoSplit(buf, off, len, mss, dstOff, prefix, vni, out: Int32Array(3)) -> count or -1 */
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
  return make_i32(env, vx_tso_split(buf, blen, off, len, mss, dst_off, prefix, vni, out));
}

/* groSegment(buf, off, len, hdrs, ref, dst) -> -1 | 0 | 1 */
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
      (uint64_t)off + len > blen || len < 24 || hdrs > len || !vx_gro_hdrs_ok(buf + off, hdrs) || (ref >= 0 && (uint64_t)ref + hdrs > blen) ||
      (ref >= 0 && dst >= 0 && (uint64_t)dst + (len - hdrs) > blen))
    return throw_type(env, "groSegment(buf, off, len, hdrs, ref, dst): bad arguments");
  return make_i32(env, vx_gro_segment(buf, off, len, hdrs, ref, dst));
}

/* groRun(buf, first, from, end, step, ref, hdrs, state: Int32Array(6)) -> datagrams taken */
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
  return make_i32(env, vx_gro_run(buf, first, from, end, step, ref, hdrs, st));
}

/* ---------------------------------------------------------------- poll handles */

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

static void poll_cb(uv_poll_t *handle, int status, int events) {
  vx_poll_t *p = (vx_poll_t *)handle->data;
  if (p->closing) return;
  vx_busy_touch();
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

/* ---------------------------------------------------------------- exports */

static void set_const(napi_env env, napi_value obj, const char *name, int32_t v) {
  napi_set_named_property(env, obj, name, make_i32(env, v));
}

NAPI_MODULE_INIT() {
  vx_kernels_init();
  napi_property_descriptor props[] = {
    {"tapOpen", NULL, TapOpen, NULL, NULL, NULL, napi_default, NULL},
    {"tapIoctl", NULL, TapIoctl, NULL, NULL, NULL, napi_default, NULL},
    {"closeFd", NULL, CloseFd, NULL, NULL, NULL, napi_default, NULL},
    {"sum16", NULL, Sum16, NULL, NULL, NULL, napi_default, NULL},
    {"tsoSplit", NULL, TsoSplit, NULL, NULL, NULL, napi_default, NULL},
    {"groSegment", NULL, GroSegment, NULL, NULL, NULL, napi_default, NULL},
    {"groRun", NULL, GroRun, NULL, NULL, NULL, napi_default, NULL},
    {"udpOpen", NULL, UdpOpen, NULL, NULL, NULL, napi_default, NULL},
    {"vtep6Set", NULL, Vtep6Set, NULL, NULL, NULL, napi_default, NULL},
    {"aeadKey", NULL, AeadKey, NULL, NULL, NULL, napi_default, NULL},
    {"aeadDrop", NULL, AeadDrop, NULL, NULL, NULL, napi_default, NULL},
    {"aeadSeal", NULL, AeadSeal, NULL, NULL, NULL, napi_default, NULL},
    {"aeadOpen", NULL, AeadOpen, NULL, NULL, NULL, napi_default, NULL},
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
  set_const(env, c, "MAX_BATCH", VX_MAX_BATCH);
  set_const(env, c, "SEND_STRIDE", VX_SEND_STRIDE);
  set_const(env, c, "WRITE_STRIDE", VX_WRITE_STRIDE);
  set_const(env, c, "VTEP6_MAX", VX_VTEP6_MAX);
  set_const(env, c, "AEAD_TAG", VX_AEAD_TAG);
  set_const(env, c, "AEAD_AAD", VX_AEAD_AAD);
  set_const(env, c, "AEAD_STRIDE", VX_AEAD_STRIDE);
  set_const(env, c, "EBADMSG", EBADMSG);
  set_const(env, c, "EAGAIN", EAGAIN);
  set_const(env, c, "EMSGSIZE", EMSGSIZE);
  set_const(env, c, "ENOBUFS", ENOBUFS);
  napi_set_named_property(env, exports, "constants", c);
  return exports;
}
