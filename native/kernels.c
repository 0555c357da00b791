/*
 * kernels.c: the per-byte work of the offloads, in C because JS cannot do it fast: the ones'-complement sum,
 * TSO segmentation of a super-frame, and the GRO per-segment check-and-append and run of appends. Each has a JS
 * reference with the same contract (src/vxlan/checksum.ts sum16, src/vxlan/gso.ts tsoSplitJs,
 * src/dataplane/gro.ts groSegmentJs and groRunJs), and the data plane checks these against them before it uses
 * them (src/dataplane/kernels.ts). No syscalls, no N-API: binding.c checks the arguments (every buffer range)
 * before it calls in.
 */
#include <arpa/inet.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "vxtap.h"

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

void vx_kernels_init(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) csum_copy = csum_avx2;
#endif
}

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

/* sum16: the ones'-complement sum of p[0..n) as big-endian 16-bit words, folded to 16 bits and added to
 * `initial` (the contract of src/vxlan/checksum.ts sum16). See csum_add(). */
uint32_t vx_sum16(const uint8_t *p, size_t n, uint32_t initial) { return csum_fold(csum_add(p, n), initial); }

/*
 * tsoSplit(buf, off, len, mss, dstOff, prefix, vni, out): src/vxlan/gso.ts tsoSplitJs in one call (same contract,
 * same bytes; the data plane checks the two agree before it uses this one). The caller has checked that
 * buf[off..off+len) lies in buf and that a VXLAN header (vni >= 0) has its 8 prefix bytes. Cuts the super-frame
 * buf[off..off+len) (TCP or UDP over IPv4, or over IPv6 as the next header) into frames of at most `mss` payload
 * bytes, back to back from dstOff, each after `prefix` free bytes; if vni >= 0 the last 8 of those get the VXLAN
 * header (flags I, the VNI). Each frame: its own IP length (IPv4 total length, id +1 per frame and header checksum;
 * IPv6 payload length) and complete L4 checksum (the payload is summed as it is copied: one pass); TCP: sequence
 * number, FIN/PSH on the last only, CWR on the first only; UDP: length, a computed 0 sent as 0xffff. out[0..2] =
 * count, stride, total. Returns count, or -1 (nothing written) if the frame is neither, its headers do not fit, the
 * output would not fit in buf, or it would overlap the input.
 */
int32_t vx_tso_split(uint8_t *buf, size_t blen, uint32_t off, uint32_t len, uint32_t mss, uint32_t dst_off,
                     uint32_t prefix, int32_t vni, int32_t out[3]) {
  const uint8_t *src = buf + off;
  if (len < 14 || mss < 1) return -1;
  uint32_t l2 = rd16(src + 12) == 0x8100 ? 18 : 14;
  const uint8_t *ip = src + l2;
  if (len < l2 + 20) return -1;
  int v4 = (ip[0] >> 4) == 4;
  uint32_t ihl, proto;
  if (v4) {
    proto = ip[9];
    ihl = (ip[0] & 0x0f) * 4;
    if (ihl < 20) return -1;
  } else if ((ip[0] >> 4) == 6) {
    if (len < l2 + 40) return -1;
    proto = ip[6]; /* the L4 header right after the fixed header */
    ihl = 40;
  } else {
    return -1;
  }
  int udp = proto == 17;
  uint32_t doff;
  const uint8_t *tcp = ip + ihl; /* the L4 header, TCP or UDP */
  if (proto == 6) {
    if (len < l2 + ihl + 20) return -1;
    doff = (tcp[12] >> 4) * 4;
    if (doff < 20) return -1;
  } else if (udp) {
    doff = 8;
  } else {
    return -1;
  }
  if (len < l2 + ihl + doff) return -1;
  uint32_t hdrs = l2 + ihl + doff;
  uint32_t payload = len - hdrs;
  uint32_t count = payload == 0 ? 1 : (payload + mss - 1) / mss;
  uint64_t stride = (uint64_t)prefix + hdrs + mss;
  uint64_t total = (count - 1) * stride + prefix + hdrs + (payload - (uint64_t)(count - 1) * mss);
  if ((uint64_t)dst_off + total > blen) return -1;
  if (dst_off < (uint64_t)off + len && (uint64_t)dst_off + total > off) return -1;
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
  return (int32_t)count;
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
int vx_gro_segment(uint8_t *buf, uint32_t off, uint32_t len, uint32_t hdrs, int32_t ref, int32_t dst) {
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
bool vx_gro_hdrs_ok(const uint8_t *f, uint32_t hdrs) {
  uint32_t l4 = gro_l4(f);
  return hdrs >= l4 + (gro_proto(f, l4) == 6 ? 20 : 8);
}

/*
 * groRun(buf, first, from, end, step, ref, hdrs, state): src/dataplane/gro.ts groRunJs in one call (the data plane
 * checks they agree before using this one; binding.c checks every range it reads against the buffer). After the datagram at buf[first..] (VXLAN header + inner frame) went into the
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
int32_t vx_gro_run(uint8_t *buf, uint32_t first, uint32_t from, uint32_t end, uint32_t step, int32_t ref,
                   uint32_t hdrs, int32_t st[6]) {
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
    if ((proto != 6 && proto != 17) || !vx_gro_hdrs_ok(f, hdrs) || (proto == 17 && hdrs != l4 + 8)) break;
    uint8_t fl = 0;
    if (proto == 6) {
      fl = tcp[13];
      if ((fl & ~(0x10 | 0x08)) != 0 || (fl & 0x10) == 0 || (uint32_t)(tcp[12] >> 4) * 4 + l4 != hdrs) break;
    } else if (rd16(tcp + 4) != ilen - l4 || rd16(tcp + 6) == 0) {
      break; /* UDP: the length must be the rest of the frame, and a datagram without a checksum is not merged */
    }
    uint32_t plen = ilen - hdrs;
    if (plen < 1 || plen > mss || (proto == 6 && rd32(tcp + 4) != next) || cur + plen > max) break;
    if (vx_gro_segment(buf, off, ilen, hdrs, ref, (int32_t)(ref + cur)) != 1) break;
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
  return (int32_t)count;
}

