/**
 * Offload helpers: the virtio-net header that a TAP opened with IFF_VNET_HDR puts in front of every frame, the
 * checksum completion it may ask for, and TCP segmentation (TSO) of a super-frame into MSS-sized frames.
 *
 * virtio_net_hdr (10 bytes, little-endian on x86):
 *   flags(1) gso_type(1) hdr_len(2) gso_size(2) csum_start(2) csum_offset(2)
 * NEEDS_CSUM: the checksum at csum_start + csum_offset holds only the pseudo-header sum; the sender must fold in
 * everything from csum_start to the end. gso_type TCPV4: the frame is one large TCP segment to be cut into
 * gso_size-byte payloads (hdr_len is only a hint: header lengths are read from the packet itself).
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
} from './constants.js';
import { finish, internetChecksum, pseudoSumV4, sum16 } from './checksum.js';
import { readU16, readU32, writeU16, writeU32 } from './ethernet.js';

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
export const VNET_GSO_ECN = 0x80;

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

/**
 * Cuts the IPv4/TCP super-frame src[off..off+len) into frames carrying at most `mss` payload bytes each, written
 * back to back into dst from dstOff, each after `prefix` bytes left free (room for a VXLAN header), so the
 * output is what one UDP GSO send takes: equal-sized datagrams with a shorter last one. Each frame gets its own
 * IPv4 total length, id (+1 per frame) and header checksum, TCP sequence number and complete TCP checksum; FIN
 * and PSH stay on the last frame only, CWR on the first only. Returns null if the frame is not IPv4/TCP or its
 * headers do not fit, or if dst is too small; nothing is written then.
 */
export function tsoSplitV4(src: Uint8Array, off: number, len: number, mss: number, dst: Uint8Array, dstOff: number, prefix: number): TsoResult | null {
  if (len < ETH_HLEN || mss < 1) return null;
  const l2 = readU16(src, off + ETH_OFF_TYPE) === ETH_P_8021Q ? ETH_HLEN + VLAN_HLEN : ETH_HLEN;
  const ip = off + l2;
  if (len < l2 + 20 || src[ip + IPV4_OFF_VER_IHL] >>> 4 !== 4 || src[ip + IPV4_OFF_PROTO] !== IPPROTO_TCP) return null;
  const ihl = (src[ip + IPV4_OFF_VER_IHL] & 0x0f) * 4;
  if (ihl < 20 || len < l2 + ihl + 20) return null;
  const tcp = ip + ihl;
  const doff = (src[tcp + TCP_OFF_DOFF] >>> 4) * 4;
  if (doff < 20 || len < l2 + ihl + doff) return null;
  const hdrs = l2 + ihl + doff;
  const payload = len - hdrs;
  const count = Math.max(1, Math.ceil(payload / mss));
  const stride = prefix + hdrs + mss;
  const total = (count - 1) * stride + prefix + hdrs + (payload - (count - 1) * mss);
  if (dstOff + total > dst.length) return null;
  const seq0 = readU32(src, tcp + TCP_OFF_SEQ);
  const id0 = readU16(src, ip + IPV4_OFF_ID);
  const flags0 = src[tcp + TCP_OFF_FLAGS];
  const saddr = readU32(src, ip + IPV4_OFF_SRC);
  const daddr = readU32(src, ip + IPV4_OFF_DST);
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
    writeU16(dst, dip + IPV4_OFF_TOT_LEN, ihl + doff + plen);
    writeU16(dst, dip + IPV4_OFF_ID, (id0 + k) & 0xffff);
    writeU16(dst, dip + IPV4_OFF_CSUM, 0);
    writeU16(dst, dip + IPV4_OFF_CSUM, internetChecksum(dst, dip, dip + ihl));
    const dt = dip + ihl;
    writeU32(dst, dt + TCP_OFF_SEQ, (seq0 + k * mss) >>> 0);
    let f = flags0;
    if (k !== count - 1) f &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
    if (k !== 0) f &= ~TCP_FLAG_CWR;
    dst[dt + TCP_OFF_FLAGS] = f;
    writeU16(dst, dt + TCP_OFF_CSUM, 0);
    const seg = doff + plen;
    writeU16(dst, dt + TCP_OFF_CSUM, finish(sum16(dst, dt, dt + seg, pseudoSumV4(saddr, daddr, IPPROTO_TCP, seg))));
  }
  return { count, stride, total };
}
