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
} from './constants.js';
import { finish, internetChecksum, pseudoSumV4, pseudoSumV6At, type Sum16, sum16 } from './checksum.js';
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

export function readU16le(buf: Uint8Array, off: number): number {
  return buf[off] | (buf[off + 1] << 8);
}

export function writeU16le(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 0xff;
  buf[off + 1] = (v >>> 8) & 0xff;
}

/**
 * Completes a NEEDS_CSUM checksum in the frame buf[off..off+len): folds in bytes csumStart..len (the field
 * already holds the pseudo-header sum) with `sum` and stores the result. Returns false if the offsets do not fit
 * the frame.
 */
export function finishChecksum(
  buf: Uint8Array,
  off: number,
  len: number,
  csumStart: number,
  csumOffset: number,
  sum: Sum16 = sum16,
): boolean {
  const field = csumStart + csumOffset;
  if (csumStart >= len || field + 2 > len) return false;
  const c = finish(sum(buf, off + csumStart, off + len));
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
export function segmentSuperFrame(
  src: Uint8Array,
  off: number,
  len: number,
  mss: number,
  dst: Uint8Array,
  dstOff: number,
  prefix: number,
): TsoResult | null {
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
export type TsoSplit = (
  buf: Uint8Array,
  off: number,
  len: number,
  mss: number,
  dstOff: number,
  prefix: number,
  vni: number,
  out: Int32Array,
) => number;

/** TsoSplit in JS, on top of segmentSuperFrame: the reference the native one is checked against. */
export function tsoSplitJs(
  buf: Uint8Array,
  off: number,
  len: number,
  mss: number,
  dstOff: number,
  prefix: number,
  vni: number,
  out: Int32Array,
): number {
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
 * Completes a partial L4 checksum in place. A Linux sender on the same machine or hypervisor (over a veth, or
 * virtio between VMs) with checksum offload on leaves CHECKSUM_PARTIAL packets with only the pseudo-header sum in
 * the TCP or UDP checksum field: its own receivers know from the skb that nobody computed the rest, but a frame
 * taken out of a VXLAN datagram has lost that mark, and the container's stack would drop it as corrupt. So: an
 * IPv4 (unfragmented) or IPv6 TCP/UDP frame whose checksum field equals its pseudo-header sum gets its checksum
 * computed over the payload (the sum the sender left undone) and written, as the kernel's skb_checksum_help does.
 * Returns true if it did. A frame whose complete checksum happens to equal that value (1 in 65536) is recomputed
 * to the same value. Costs a header parse and a few adds per frame that is not partial.
 */
export function completePartialChecksum(a: Uint8Array, off: number, len: number, sum: Sum16 = sum16): boolean {
  if (len < ETH_HLEN + 20) return false;
  const et = readU16(a, off + ETH_OFF_TYPE);
  const ip = off + ETH_HLEN;
  let proto: number;
  let l4: number;
  let end: number;
  let pseudo: number;
  if (et === 0x0800) {
    const vi = a[ip + IPV4_OFF_VER_IHL];
    const ihl = (vi & 0x0f) * 4;
    if (vi >>> 4 !== 4 || ihl < 20) return false;
    if ((readU16(a, ip + 6) & 0x3fff) !== 0) return false; // a fragment: its L4 checksum covers the whole datagram
    proto = a[ip + IPV4_OFF_PROTO];
    const tot = readU16(a, ip + IPV4_OFF_TOT_LEN);
    if (tot < ihl || ETH_HLEN + tot > len) return false;
    l4 = ip + ihl;
    end = ip + tot;
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return false;
    pseudo = pseudoSumV4(readU32(a, ip + IPV4_OFF_SRC), readU32(a, ip + IPV4_OFF_DST), proto, end - l4);
  } else if (et === 0x86dd) {
    if (len < ETH_HLEN + IPV6_HLEN) return false;
    proto = a[ip + IPV6_OFF_NEXT_HDR];
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return false;
    const plen = readU16(a, ip + IPV6_OFF_PAYLOAD_LEN);
    l4 = ip + IPV6_HLEN;
    end = l4 + plen;
    if (end > off + len) return false;
    pseudo = pseudoSumV6At(a, ip, proto, plen);
  } else return false;
  const at = l4 + (proto === IPPROTO_TCP ? TCP_OFF_CSUM : UDP_OFF_CSUM);
  if (at + 2 > end || readU16(a, at) !== pseudo) return false;
  writeU16(a, at, 0);
  const c = finish(sum(a, l4, end, pseudo));
  writeU16(a, at, proto === IPPROTO_UDP && c === 0 ? 0xffff : c);
  return true;
}
