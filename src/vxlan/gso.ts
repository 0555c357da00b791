/**
 * Offload helpers: the virtio-net header that a TAP opened with IFF_VNET_HDR puts in front of every frame, the
 * checksum completion it may ask for, and TCP segmentation (TSO) of a super-frame into MSS-sized frames.
 *
 * virtio_net_hdr (10 bytes, little-endian on x86):
 *   flags(1) gso_type(1) hdr_len(2) gso_size(2) csum_start(2) csum_offset(2)
 * NEEDS_CSUM: the checksum at csum_start + csum_offset holds only the pseudo-header sum; the sender must fold in
 * everything from csum_start to the end. gso_type TCPV4 / TCPV6: the frame is one large TCP segment to be cut into
 * gso_size-byte payloads; UDP_L4 (USO): one large UDP datagram to be cut into gso_size-byte datagrams, as a
 * UDP_SEGMENT send makes them (hdr_len is only a hint: header lengths, the IP version and the protocol are read from
 * the packet itself).
 */
import {
  ETH_HLEN,
  ETH_OFF_TYPE,
  ETH_P_8021Q,
  IPV4_OFF_CSUM,
  IPV4_OFF_ID,
  IPV4_OFF_SRC,
  IPV4_OFF_DST,
  IPV4_OFF_TOT_LEN,
  IPV4_OFF_VER_IHL,
  IPPROTO_TCP,
  TCP_FLAG_CWR,
  TCP_FLAG_FIN,
  TCP_FLAG_PSH,
  TCP_OFF_CSUM,
  TCP_OFF_DOFF,
  TCP_OFF_FLAGS,
  TCP_OFF_SEQ,
  VLAN_HLEN,
  IPV4_OFF_PROTO,
  IPPROTO_UDP,
  UDP_OFF_CSUM,
  UDP_OFF_LEN,
  IPV6_HLEN,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_PAYLOAD_LEN,
  IPV6_OFF_SRC,
  IPV6_OFF_DST,
  VXLAN_HLEN,
} from './constants.js';
import { finish, internetChecksum, pseudoSumV4, pseudoSumV6At, sum16 } from './checksum.js';
import { readU16, readU32, writeU16, writeU32 } from './ethernet.js';
import { writeVxlanHeader } from './vxlan.js';

export const VNET_HDR_LEN = 10;
export const VNET_OFF_FLAGS = 0;
export const VNET_OFF_GSO_TYPE = 1;
export const VNET_OFF_HDR_LEN = 2;
export const VNET_OFF_GSO_SIZE = 4;
export const VNET_OFF_CSUM_START = 6;
export const VNET_OFF_CSUM_OFFSET = 8;
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP = 3;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_UDP_L4 = 5;
export const VNET_GSO_ECN = 0x80;

/** Largest UDP payload one GSO send may carry (65535 - 8 UDP - 20 IPv4), and the kernel's segment limit. */
export const UDP_GSO_MAX_BYTES = 65507;
export const UDP_GSO_MAX_SEGS = 64;

/**
 * How many TCP segments a container's super-frame should hold so that all of them, each behind its VXLAN and
 * Ethernet headers, fit in ONE UDP GSO send: a 64 KB super-frame at MTU 1450 is 46 segments, but only 44 datagrams
 * of 1472 bytes fit in 65507, so every super-frame cost two sends (the second of 2 segments) and two receive
 * buffers on the other side. The agent sets this as the TAP's gso_max_segs; TCP then sizes its super-frames to it.
 */
export function tapGsoMaxSegs(mtu: number): number {
  return Math.max(1, Math.min(UDP_GSO_MAX_SEGS, Math.floor(UDP_GSO_MAX_BYTES / (VXLAN_HLEN + ETH_HLEN + mtu))));
}

export function readU16le(buf: Uint8Array, off: number): number {
  return buf[off] | (buf[off + 1] << 8);
}

export function writeU16le(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 0xff;
  buf[off + 1] = (v >>> 8) & 0xff;
}

/**
 * Completes a NEEDS_CSUM checksum in the frame buf[off..off+len): folds in bytes csumStart..len (the field
 * already holds the pseudo-header sum) and stores the result. Returns false if the offsets do not fit the frame.
 */
export function finishChecksum(buf: Uint8Array, off: number, len: number, csumStart: number, csumOffset: number): boolean {
  const field = csumStart + csumOffset;
  if (csumStart >= len || field + 2 > len) return false;
  const c = finish(sum16(buf, off + csumStart, off + len));
  writeU16(buf, off + field, c);
  return true;
}

export interface TsoResult {
  /** Number of frames written. */
  count: number;
  /** Bytes per slot (prefix + full-size frame); every frame but the last has exactly this size. */
  stride: number;
  /** Total bytes written from dstOff (count - 1 strides + the last, shorter one). */
  total: number;
}

/** Where segmentSuperFrame puts things: the super-frame's header sizes, and the output's frame count, stride and size. */
interface TsoLayout extends TsoResult {
  l2: number;
  /** 4 or 6 */
  version: number;
  /** IP header bytes: the IPv4 header with its options, or the 40-byte IPv6 header. */
  ihl: number;
  /** IPPROTO_TCP or IPPROTO_UDP */
  proto: number;
  doff: number;
  hdrs: number;
  payload: number;
}

function tsoLayout(src: Uint8Array, off: number, len: number, mss: number, prefix: number): TsoLayout | null {
  if (len < ETH_HLEN || mss < 1) return null;
  const l2 = readU16(src, off + ETH_OFF_TYPE) === ETH_P_8021Q ? ETH_HLEN + VLAN_HLEN : ETH_HLEN;
  const ip = off + l2;
  if (len < l2 + 20) return null;
  const version = src[ip + IPV4_OFF_VER_IHL] >>> 4;
  let ihl: number;
  let proto: number;
  if (version === 4) {
    proto = src[ip + IPV4_OFF_PROTO];
    ihl = (src[ip + IPV4_OFF_VER_IHL] & 0x0f) * 4;
    if (ihl < 20) return null;
  } else if (version === 6) {
    // the L4 header right after the fixed header: Linux never puts extension headers on the packets it offloads
    if (len < l2 + IPV6_HLEN) return null;
    proto = src[ip + IPV6_OFF_NEXT_HDR];
    ihl = IPV6_HLEN;
  } else return null;
  let doff: number;
  if (proto === IPPROTO_TCP) {
    if (len < l2 + ihl + 20) return null;
    doff = (src[ip + ihl + TCP_OFF_DOFF] >>> 4) * 4;
    if (doff < 20) return null;
  } else if (proto === IPPROTO_UDP) {
    doff = 8;
  } else return null;
  if (len < l2 + ihl + doff) return null;
  const hdrs = l2 + ihl + doff;
  const payload = len - hdrs;
  const count = Math.max(1, Math.ceil(payload / mss));
  const stride = prefix + hdrs + mss;
  const total = (count - 1) * stride + prefix + hdrs + (payload - (count - 1) * mss);
  return { l2, version, ihl, proto, doff, hdrs, payload, count, stride, total };
}

/**
 * Cuts the super-frame src[off..off+len) (TCP or UDP over IPv4, or over IPv6 as the next header) into frames
 * carrying at most `mss` payload bytes each, written back to back into dst from dstOff, each after `prefix` bytes
 * left free (room for a VXLAN header), so the output is what one UDP GSO send takes: equal-sized datagrams with a
 * shorter last one. Each frame gets its own IP length (IPv4: total length, id +1 per frame and header checksum;
 * IPv6: payload length) and a complete L4 checksum over its pseudo-header; TCP: its sequence number, FIN and PSH
 * on the last frame only, CWR on the first only; UDP (USO): its UDP length, and a computed checksum of 0 sent as
 * 0xffff (RFC 768). Returns null if the frame is neither, its headers do not fit, or dst is too small; nothing is
 * written then.
 */
export function segmentSuperFrame(src: Uint8Array, off: number, len: number, mss: number, dst: Uint8Array, dstOff: number, prefix: number): TsoResult | null {
  const lay = tsoLayout(src, off, len, mss, prefix);
  if (lay === null || dstOff + lay.total > dst.length) return null;
  const { l2, version, ihl, proto, doff, hdrs, payload, count, stride, total } = lay;
  const udp = proto === IPPROTO_UDP;
  const ip = off + l2;
  const l4 = ip + ihl;
  const seq0 = udp ? 0 : readU32(src, l4 + TCP_OFF_SEQ);
  const flags0 = udp ? 0 : src[l4 + TCP_OFF_FLAGS];
  const v4 = version === 4;
  const id0 = v4 ? readU16(src, ip + IPV4_OFF_ID) : 0;
  const saddr = v4 ? readU32(src, ip + IPV4_OFF_SRC) : 0;
  const daddr = v4 ? readU32(src, ip + IPV4_OFF_DST) : 0;
  for (let k = 0; k < count; k++) {
    const o = dstOff + k * stride + prefix;
    const plen = k === count - 1 ? payload - k * mss : mss;
    const from = off + hdrs + k * mss;
    if (dst === src) {
      // the data plane splits inside its own arena: copyWithin allocates nothing (two views per segment did)
      dst.copyWithin(o, off, off + hdrs);
      dst.copyWithin(o + hdrs, from, from + plen);
    } else {
      dst.set(src.subarray(off, off + hdrs), o);
      dst.set(src.subarray(from, from + plen), o + hdrs);
    }
    const dip = o + l2;
    const seg = doff + plen;
    if (v4) {
      writeU16(dst, dip + IPV4_OFF_TOT_LEN, ihl + seg);
      writeU16(dst, dip + IPV4_OFF_ID, (id0 + k) & 0xffff);
      writeU16(dst, dip + IPV4_OFF_CSUM, 0);
      writeU16(dst, dip + IPV4_OFF_CSUM, internetChecksum(dst, dip, dip + ihl));
    } else {
      writeU16(dst, dip + IPV6_OFF_PAYLOAD_LEN, seg);
    }
    const dt = dip + ihl;
    const csumAt = dt + (udp ? UDP_OFF_CSUM : TCP_OFF_CSUM);
    if (udp) {
      writeU16(dst, dt + UDP_OFF_LEN, seg);
    } else {
      writeU32(dst, dt + TCP_OFF_SEQ, (seq0 + k * mss) >>> 0);
      let f = flags0;
      if (k !== count - 1) f &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      if (k !== 0) f &= ~TCP_FLAG_CWR;
      dst[dt + TCP_OFF_FLAGS] = f;
    }
    writeU16(dst, csumAt, 0);
    const pseudo = v4 ? pseudoSumV4(saddr, daddr, proto, seg) : pseudoSumV6At(src, ip, proto, seg); // src's header is never written: the output does not overlap it
    const c = finish(sum16(dst, dt, dt + seg, pseudo));
    writeU16(dst, csumAt, udp && c === 0 ? 0xffff : c);
  }
  return { count, stride, total };
}

/**
 * The data plane's TSO step, in one call per super-frame: segmentSuperFrame inside one buffer (input and output must not
 * overlap), plus, if vni >= 0, the VXLAN header in the last 8 of each frame's `prefix` bytes. out[0..2] = count,
 * stride, total (as TsoResult). Returns count, or -1 (nothing written) where segmentSuperFrame returns null or the
 * output would overlap the input.
 */
export type TsoSplit = (buf: Uint8Array, off: number, len: number, mss: number, dstOff: number, prefix: number, vni: number, out: Int32Array) => number;

/** TsoSplit in JS, on top of segmentSuperFrame: the reference the native one is checked against. */
export function tsoSplitJs(buf: Uint8Array, off: number, len: number, mss: number, dstOff: number, prefix: number, vni: number, out: Int32Array): number {
  if (vni >= 0 && prefix < 8) throw new RangeError('tsoSplit: a VXLAN header needs prefix >= 8');
  const lay = tsoLayout(buf, off, len, mss, prefix);
  if (lay === null || (dstOff < off + len && dstOff + lay.total > off)) return -1;
  const r = segmentSuperFrame(buf, off, len, mss, buf, dstOff, prefix);
  if (r === null) return -1;
  if (vni >= 0) for (let k = 0; k < r.count; k++) writeVxlanHeader(buf, dstOff + k * r.stride + prefix - 8, vni);
  out[0] = r.count;
  out[1] = r.stride;
  out[2] = r.total;
  return r.count;
}

/**
 * The TSO step the data plane calls: tsoSplitJs until useTsoSplit() installs the native addon's (one call per
 * super-frame instead of a checksum call and two copies per segment; each segment is summed right after its copy,
 * while it is in cache). A live binding, as checksum.ts sum16.
 */
export let tsoSplit: TsoSplit = tsoSplitJs;

/** The Ethernet header of a sample frame: unicast MACs from the seed (`mul` varies them by family), an 802.1Q tag
 * if `vlan`. Returns the header length. */
function sampleEthernet(f: Uint8Array, vlan: boolean | undefined, seed: number, mul: number, etherType: number): number {
  const l2 = vlan ? 18 : 14;
  for (let i = 0; i < 12; i++) f[i] = (i * mul + seed) & 0xff;
  f[0] &= 0xfe; // unicast
  if (vlan) {
    writeU16(f, 12, ETH_P_8021Q);
    writeU16(f, 14, 42);
  }
  writeU16(f, l2 - 2, etherType);
  return l2;
}

/** The TCP header (data offset `doff`: 20, or 32 with 12 option bytes) and payload pattern of a sample frame at
 * f[t..]; the checksum is the caller's (it needs the pseudo-header). */
function sampleTcp(f: Uint8Array, t: number, doff: number, seed: number, flags: number | undefined): void {
  writeU16(f, t, 40000 + seed);
  writeU16(f, t + 2, 5201);
  writeU32(f, t + TCP_OFF_SEQ, (0xfffff000 + seed * 7919) >>> 0);
  writeU32(f, t + 8, 0x12345678);
  f[t + TCP_OFF_DOFF] = (doff / 4) << 4;
  f[t + TCP_OFF_FLAGS] = flags ?? 0x10;
  writeU16(f, t + 14, 502);
  if (doff > 20) f.fill(1, t + 20, t + doff);
  samplePayload(f, t + doff, 31, seed * 7);
}

/** Fills f[from..] with a byte pattern. Its own function so that V8 compiles this loop on its own: compiled on
 * stack (OSR) inside a longer function, the loop's code was reused at every call and deoptimized each time on the
 * code after it (sampleUdpFrame: ~1100 deoptimizations in the agent's start-up self-checks). */
function samplePayload(f: Uint8Array, from: number, mul: number, add: number): void {
  for (let i = from; i < f.length; i++) f[i] = (i * mul + add) & 0xff;
}

/**
 * A test frame: Ethernet (+ 802.1Q tag if `vlan`) / IPv4 (ihl 5, or 6 with a NOP option) / TCP (data offset 5, or
 * 8 with 12 option bytes) / `payload` bytes of a pattern, checksums complete. Used to check native codec
 * functions against their JS references before the data plane uses them.
 */
export function sampleTcpV4Frame(payload: number, o: { vlan?: boolean; ipOpts?: boolean; tcpOpts?: boolean; flags?: number; seed?: number } = {}): Uint8Array {
  const ihl = o.ipOpts ? 24 : 20;
  const doff = o.tcpOpts ? 32 : 20;
  const seed = o.seed ?? 1;
  const f = new Uint8Array((o.vlan ? 18 : 14) + ihl + doff + payload);
  const ip = sampleEthernet(f, o.vlan, seed, 17, 0x0800);
  f[ip] = 0x40 | (ihl / 4);
  f[ip + 1] = 0x10;
  writeU16(f, ip + IPV4_OFF_TOT_LEN, ihl + doff + payload);
  writeU16(f, ip + IPV4_OFF_ID, 0xfff0 + seed);
  f[ip + 6] = 0x40; // DF
  f[ip + 8] = 64;
  f[ip + IPV4_OFF_PROTO] = IPPROTO_TCP;
  writeU32(f, ip + IPV4_OFF_SRC, 0xc6130101);
  writeU32(f, ip + IPV4_OFF_DST, 0xc6130102 + seed);
  if (o.ipOpts) f.fill(1, ip + 20, ip + 24);
  writeU16(f, ip + IPV4_OFF_CSUM, internetChecksum(f, ip, ip + ihl));
  const t = ip + ihl;
  sampleTcp(f, t, doff, seed, o.flags);
  writeU16(f, t + TCP_OFF_CSUM, finish(sum16(f, t, f.length, pseudoSumV4(0xc6130101, 0xc6130102 + seed, IPPROTO_TCP, doff + payload))));
  return f;
}

/**
 * The IPv6 counterpart of sampleTcpV4Frame: Ethernet (+ 802.1Q tag if `vlan`) / IPv6 (next header TCP, a flow
 * label, fe80:: addresses) / TCP (data offset 5, or 8 with 12 option bytes) / `payload` bytes of a pattern,
 * checksum complete.
 */
export function sampleTcpV6Frame(payload: number, o: { vlan?: boolean; tcpOpts?: boolean; flags?: number; seed?: number } = {}): Uint8Array {
  const doff = o.tcpOpts ? 32 : 20;
  const seed = o.seed ?? 1;
  const f = new Uint8Array((o.vlan ? 18 : 14) + IPV6_HLEN + doff + payload);
  const ip = sampleEthernet(f, o.vlan, seed, 13, 0x86dd);
  writeU32(f, ip, (0x6 << 28) | (0x12 << 20) | ((0xabcde + seed) & 0xfffff));
  writeU16(f, ip + IPV6_OFF_PAYLOAD_LEN, doff + payload);
  f[ip + IPV6_OFF_NEXT_HDR] = IPPROTO_TCP;
  f[ip + 7] = 64;
  for (const [at, mul, add] of [[IPV6_OFF_SRC, 29, seed], [IPV6_OFF_DST, 37, seed * 3]]) {
    f[ip + at] = 0xfe;
    f[ip + at + 1] = 0x80;
    for (let i = 8; i < 16; i++) f[ip + at + i] = (i * mul + add) & 0xff;
  }
  const t = ip + IPV6_HLEN;
  sampleTcp(f, t, doff, seed, o.flags);
  writeU16(f, t + TCP_OFF_CSUM, finish(sum16(f, t, f.length, pseudoSumV6At(f, ip, IPPROTO_TCP, doff + payload))));
  return f;
}

/**
 * A UDP super-datagram as a TAP with USO hands it over: Ethernet (+ 802.1Q tag if `vlan`) / IPv4 (ihl 5, or 6
 * with a NOP option) or IPv6 (`v6`) / UDP / `payload` bytes of a pattern, checksums complete.
 */
export function sampleUdpFrame(payload: number, o: { v6?: boolean; vlan?: boolean; ipOpts?: boolean; seed?: number } = {}): Uint8Array {
  const seed = o.seed ?? 1;
  // the IP part of a TCP sample of the same shape, with its TCP header swapped for a UDP one
  const t = o.v6 ? sampleTcpV6Frame(payload, { vlan: o.vlan, seed }) : sampleTcpV4Frame(payload, { vlan: o.vlan, ipOpts: o.ipOpts, seed });
  const l2 = o.vlan ? 18 : 14;
  const ihl = o.v6 ? IPV6_HLEN : o.ipOpts ? 24 : 20;
  const f = t.subarray(0, t.length - 12); // TCP header (20) -> UDP header (8)
  const ip = l2;
  const u = ip + ihl;
  if (o.v6) {
    f[ip + IPV6_OFF_NEXT_HDR] = IPPROTO_UDP;
    writeU16(f, ip + IPV6_OFF_PAYLOAD_LEN, 8 + payload);
  } else {
    f[ip + IPV4_OFF_PROTO] = IPPROTO_UDP;
    writeU16(f, ip + IPV4_OFF_TOT_LEN, ihl + 8 + payload);
    writeU16(f, ip + IPV4_OFF_CSUM, 0);
    writeU16(f, ip + IPV4_OFF_CSUM, internetChecksum(f, ip, ip + ihl));
  }
  writeU16(f, u, 443);
  writeU16(f, u + 2, 50000 + seed);
  writeU16(f, u + UDP_OFF_LEN, 8 + payload);
  samplePayload(f, u + 8, 11, seed * 5);
  writeU16(f, u + UDP_OFF_CSUM, 0);
  const pseudo = o.v6
    ? pseudoSumV6At(f, ip, IPPROTO_UDP, 8 + payload)
    : pseudoSumV4(readU32(f, ip + IPV4_OFF_SRC), readU32(f, ip + IPV4_OFF_DST), IPPROTO_UDP, 8 + payload);
  const c = finish(sum16(f, u, f.length, pseudo));
  writeU16(f, u + UDP_OFF_CSUM, c === 0 ? 0xffff : c);
  return f.slice();
}

/** Installs `f` as tsoSplit after checking that it writes the same bytes and results as tsoSplitJs. */
export function useTsoSplit(f: TsoSplit): void {
  const cases: [number, number, { v6?: boolean; udp?: boolean; vlan?: boolean; ipOpts?: boolean; tcpOpts?: boolean; flags?: number }][] = [
    [0, 1448, {}], [1, 1448, {}], [1448, 1448, {}], [1449, 1448, { flags: 0x19 }], [65000, 1398, { flags: 0x98 }],
    [4000, 7, { vlan: true }], [3001, 1000, { ipOpts: true, tcpOpts: true, flags: 0x99 }],
    [0, 1428, { v6: true }], [1429, 1428, { v6: true, flags: 0x19 }], [65000, 1378, { v6: true, tcpOpts: true, flags: 0x98 }],
    [4000, 7, { v6: true, vlan: true }],
    [0, 1200, { udp: true }], [1200, 1200, { udp: true }], [30001, 1200, { udp: true, ipOpts: true }], [60000, 1452, { udp: true, v6: true, vlan: true }],
  ];
  const outA = new Int32Array(3);
  const outB = new Int32Array(3);
  for (const [payload, mss, opts] of cases) {
    const frame = opts.udp ? sampleUdpFrame(payload, opts) : opts.v6 ? sampleTcpV6Frame(payload, opts) : sampleTcpV4Frame(payload, opts);
    for (const vni of [-1, 0xabcdef]) {
      const size = 3 + frame.length + 2 * (frame.length + 64 * Math.ceil(payload / mss + 1)) + 200;
      const a = new Uint8Array(size);
      a.set(frame, 3);
      const b = a.slice();
      const ra = f(a, 3, frame.length, mss, frame.length + 9, 8, vni, outA);
      const rb = tsoSplitJs(b, 3, frame.length, mss, frame.length + 9, 8, vni, outB);
      if (ra !== rb || outA.join() !== outB.join() || !a.every((x, i) => x === b[i])) {
        throw new Error(`tsoSplit replacement disagrees with tsoSplitJs on a ${payload}-byte payload, mss ${mss}, vni ${vni}`);
      }
    }
  }
  tsoSplit = f;
}
