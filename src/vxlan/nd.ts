/**
 * IPv6 neighbour discovery (RFC 4861) answered in place, as arp.ts does for ARP: a neighbour solicitation for an
 * address the control plane knows becomes the neighbour advertisement its owner would send, and goes back to the
 * soliciting endpoint. Pure functions over the frame's bytes; no allocation.
 *
 *   solicitation:  Ethernet | IPv6 (hop limit 255, next header 58) | ICMPv6 135, code 0, checksum, reserved,
 *                  target (16) | options (a source link-layer address, absent when the source is ::)
 *   advertisement: Ethernet (to the solicitor, from the owner) | IPv6 (from the target address to the solicitor,
 *                  or to ff02::1 when it solicited from ::) | ICMPv6 136, code 0, checksum, flags S and O
 *                  (S only in answer to a unicast source, RFC 4861 7.2.4), target | target link-layer address
 */
import {
  ETH_HLEN,
  ETH_OFF_DST,
  ETH_OFF_SRC,
  IPPROTO_ICMPV6,
  IPV6_HLEN,
  IPV6_OFF_DST,
  IPV6_OFF_HOP_LIMIT,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_PAYLOAD_LEN,
  IPV6_OFF_SRC,
} from './constants.js';
import { finish, pseudoSumV6At, type Sum16 } from './checksum.js';
import { readU32, writeU16, writeU32 } from './ethernet.js';
import { writeMac } from './mac.js';

export const ND_NEIGHBOR_SOLICIT = 135;
export const ND_NEIGHBOR_ADVERT = 136;
/** ICMPv6 header (4), reserved or flags (4), target (16). */
export const ND_HLEN = 24;
export const ND_OFF_TARGET = 8;
export const ND_OPT_SOURCE_LL = 1;
export const ND_OPT_TARGET_LL = 2;
/** The advertisement's ICMPv6 part: the header and target, and one 8-byte target link-layer address option. */
const NA_LEN = ND_HLEN + 8;
/** Solicited (answering a unicast source) and override. */
const NA_FLAGS_SO = 0x60000000;
const NA_FLAGS_O = 0x20000000;

/**
 * Offset of the 16-byte target address if the frame at buf[off..off+len] is a neighbour solicitation that
 * vxtap may answer (IPv6 straight after Ethernet, ICMPv6 right after the fixed header, hop limit 255, code 0),
 * else -1.
 */
export function ndSolicitTarget(buf: Uint8Array, off: number, len: number): number {
  if (len < ETH_HLEN + IPV6_HLEN + ND_HLEN) return -1;
  const ip = off + ETH_HLEN;
  const icmp = ip + IPV6_HLEN;
  if (
    buf[ip + IPV6_OFF_NEXT_HDR] !== IPPROTO_ICMPV6 ||
    buf[ip + IPV6_OFF_HOP_LIMIT] !== 255 ||
    buf[icmp] !== ND_NEIGHBOR_SOLICIT ||
    buf[icmp + 1] !== 0
  ) {
    return -1;
  }
  return icmp + ND_OFF_TARGET;
}

/**
 * Rewrites the solicitation at buf[off..] in place into the advertisement from `mac` for its target; returns the
 * new frame length (always ETH_HLEN + 40 + 32 = 86; the buffer must have room for it, as an arena slot has).
 */
export function ndAdvertInPlace(buf: Uint8Array, off: number, mac: number, sum16: Sum16): number {
  const ip = off + ETH_HLEN;
  const icmp = ip + IPV6_HLEN;
  const src = ip + IPV6_OFF_SRC;
  const dst = ip + IPV6_OFF_DST;
  const unspecified =
    (readU32(buf, src) | readU32(buf, src + 4) | readU32(buf, src + 8) | readU32(buf, src + 12)) === 0;
  // Ethernet: back to the solicitor (or all nodes), from the owner
  if (unspecified) {
    writeU16(buf, off + ETH_OFF_DST, 0x3333);
    writeU32(buf, off + ETH_OFF_DST + 2, 1);
  } else buf.copyWithin(off + ETH_OFF_DST, off + ETH_OFF_SRC, off + ETH_OFF_SRC + 6);
  writeMac(mac, buf, off + ETH_OFF_SRC);
  // IPv6: from the target to the solicitor (or ff02::1)
  writeU32(buf, ip, 0x60000000);
  writeU16(buf, ip + IPV6_OFF_PAYLOAD_LEN, NA_LEN);
  buf[ip + IPV6_OFF_NEXT_HDR] = IPPROTO_ICMPV6;
  buf[ip + IPV6_OFF_HOP_LIMIT] = 255;
  if (unspecified) {
    writeU32(buf, dst, 0xff020000);
    writeU32(buf, dst + 4, 0);
    writeU32(buf, dst + 8, 0);
    writeU32(buf, dst + 12, 1);
  } else buf.copyWithin(dst, src, src + 16);
  buf.copyWithin(src, icmp + ND_OFF_TARGET, icmp + ND_OFF_TARGET + 16);
  // ICMPv6: advertisement, the same target, the owner's MAC as the target link-layer address
  buf[icmp] = ND_NEIGHBOR_ADVERT;
  buf[icmp + 1] = 0;
  writeU16(buf, icmp + 2, 0);
  writeU32(buf, icmp + 4, unspecified ? NA_FLAGS_O : NA_FLAGS_SO);
  buf[icmp + ND_HLEN] = ND_OPT_TARGET_LL;
  buf[icmp + ND_HLEN + 1] = 1;
  writeMac(mac, buf, icmp + ND_HLEN + 2);
  const sum = sum16(buf, icmp, icmp + NA_LEN, pseudoSumV6At(buf, ip, IPPROTO_ICMPV6, NA_LEN));
  writeU16(buf, icmp + 2, finish(sum));
  return ETH_HLEN + IPV6_HLEN + NA_LEN;
}
