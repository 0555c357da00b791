/**
 * The ICMP errors a tunnel owes the sender of a packet too large for it, built in place over the packet (as the
 * kernel's tunnel PMTU code does): IPv4 "fragmentation needed" (RFC 1191) and ICMPv6 "packet too big" (RFC 4443
 * 3.2, RFC 8201), each as if from the packet's destination. The data plane calls these per oversize frame, so
 * they allocate nothing: the frame's buffer becomes the reply, and the IPv4 quote is staged in a caller's scratch.
 */
import {
  DEFAULT_TTL,
  ETH_HLEN,
  ETH_OFF_DST,
  ETH_OFF_SRC,
  ETH_OFF_TYPE,
  ETH_P_IP,
  ETH_P_IPV6,
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_FRAG_NEEDED,
  ICMP_HLEN,
  ICMP_OFF_CODE,
  ICMP_OFF_CSUM,
  ICMP_OFF_NEXT_MTU,
  ICMP_OFF_TYPE,
  ICMPV6_INFO_MIN,
  ICMPV6_OFF_MTU,
  ICMPV6_PKT_TOOBIG,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPTOS_PREC_INTERNETCONTROL,
  IPV4_FLAG_DF,
  IPV4_HLEN_MIN,
  IPV4_OFF_CSUM,
  IPV4_OFF_DST,
  IPV4_OFF_FRAG,
  IPV4_OFF_PROTO,
  IPV4_OFF_SRC,
  IPV4_OFF_TOS,
  IPV4_OFF_TOT_LEN,
  IPV4_OFF_TTL,
  IPV4_OFF_VER_IHL,
  IPV6_ALEN,
  IPV6_HLEN,
  IPV6_MIN_MTU,
  IPV6_OFF_DST,
  IPV6_OFF_HOP_LIMIT,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_PAYLOAD_LEN,
  IPV6_OFF_SRC,
  IPV6_OFF_VER_TC_FL,
} from './constants.js';
import { finish, internetChecksum, pseudoSumV6At, type Sum16, sum16 } from './checksum.js';
import { readU16, readU32, writeU16, writeU32 } from './ethernet.js';

/** Bytes of the scratch buffer fragNeeded needs: the largest IPv4 header (60) and the 8 bytes it quotes. */
export const FRAG_NEEDED_SCRATCH = 68;

/** RFC 4443: an ICMPv6 error quotes as much of the invoking packet as fits in the minimum IPv6 MTU. */
const ICMPV6_QUOTE_MAX = IPV6_MIN_MTU - IPV6_HLEN - ICMP_HLEN;

/**
 * Swaps the Ethernet addresses of the frame at `off` in place (a reply goes back to the sender, from the MAC it
 * sent to), using the 6 bytes after the source (the Ethertype and 4 bytes of the header after it) as scratch: the
 * caller has saved or moved what was there, and writes it again.
 */
function swapEthAddrs(buf: Uint8Array, off: number): void {
  buf.copyWithin(off + ETH_OFF_SRC + 6, off + ETH_OFF_DST, off + ETH_OFF_DST + 6); // park dst MAC after src
  buf.copyWithin(off + ETH_OFF_DST, off + ETH_OFF_SRC, off + ETH_OFF_SRC + 6);
  buf.copyWithin(off + ETH_OFF_SRC, off + ETH_OFF_SRC + 6, off + ETH_OFF_SRC + 12);
}

/**
 * An oversize IPv4 packet with DF in the Ethernet frame buf[off..off+len): overwrites it, in place, with the ICMP
 * "fragmentation needed" its sender must get, as if from the destination: quoting the original IP header + 8
 * bytes, next-hop MTU = `mtu`. `scratch` (at least FRAG_NEEDED_SCRATCH bytes) holds the quote meanwhile. Returns
 * the reply's frame length, or 0 (nothing written) for a packet without DF, an ICMP error (no error about an
 * error), or a malformed header.
 */
export function fragNeeded(buf: Uint8Array, off: number, len: number, mtu: number, scratch: Uint8Array): number {
  const ip = off + ETH_HLEN;
  if (len < ETH_HLEN + IPV4_HLEN_MIN) return 0;
  const ihl = (buf[ip + IPV4_OFF_VER_IHL] & 0x0f) * 4;
  if (buf[ip + IPV4_OFF_VER_IHL] >>> 4 !== 4 || ihl < IPV4_HLEN_MIN || len < ETH_HLEN + ihl + 8) return 0;
  if ((readU16(buf, ip + IPV4_OFF_FRAG) & IPV4_FLAG_DF) === 0) return 0;
  const icmpType = buf[ip + ihl + ICMP_OFF_TYPE];
  if (buf[ip + IPV4_OFF_PROTO] === IPPROTO_ICMP && icmpType !== ICMP_ECHO_REQUEST && icmpType !== ICMP_ECHO_REPLY)
    return 0;
  const quoteLen = ihl + 8;
  if (scratch.length < quoteLen) throw new RangeError(`fragNeeded: scratch needs ${quoteLen} bytes`);
  scratch.set(buf.subarray(ip, ip + quoteLen));
  const src = readU32(scratch, IPV4_OFF_SRC);
  const dst = readU32(scratch, IPV4_OFF_DST);
  // Ethernet: the IP header is already quoted, so the destination MAC may be parked in bytes 12..18
  swapEthAddrs(buf, off);
  writeU16(buf, off + ETH_OFF_TYPE, ETH_P_IP);
  // IPv4
  const total = IPV4_HLEN_MIN + ICMP_HLEN + quoteLen;
  buf.fill(0, ip, ip + total);
  buf[ip + IPV4_OFF_VER_IHL] = 0x40 | (IPV4_HLEN_MIN / 4);
  buf[ip + IPV4_OFF_TOS] = IPTOS_PREC_INTERNETCONTROL;
  writeU16(buf, ip + IPV4_OFF_TOT_LEN, total);
  buf[ip + IPV4_OFF_TTL] = DEFAULT_TTL;
  buf[ip + IPV4_OFF_PROTO] = IPPROTO_ICMP;
  writeU32(buf, ip + IPV4_OFF_SRC, dst);
  writeU32(buf, ip + IPV4_OFF_DST, src);
  writeU16(buf, ip + IPV4_OFF_CSUM, internetChecksum(buf, ip, ip + IPV4_HLEN_MIN));
  // ICMP
  const icmp = ip + IPV4_HLEN_MIN;
  buf[icmp + ICMP_OFF_TYPE] = ICMP_DEST_UNREACH;
  buf[icmp + ICMP_OFF_CODE] = ICMP_FRAG_NEEDED;
  writeU16(buf, icmp + ICMP_OFF_NEXT_MTU, mtu);
  buf.set(scratch.subarray(0, quoteLen), icmp + ICMP_HLEN);
  writeU16(buf, icmp + ICMP_OFF_CSUM, internetChecksum(buf, icmp, icmp + ICMP_HLEN + quoteLen));
  return ETH_HLEN + total;
}

/**
 * An oversize IPv6 packet in the Ethernet frame buf[off..off+len): overwrites it, in place, with the ICMPv6
 * "packet too big" its sender must get, as if from the destination, MTU = `mtu`, quoting as much of the packet
 * as fits in 1280 bytes. IPv6 has no DF bit: routers never fragment, so every oversize packet gets one. Returns
 * the reply's frame length, or 0 (nothing written) for a malformed header, an unspecified source (RFC 4443 2.4 e)
 * or an ICMPv6 error (no error about an error). The reply is at most 1294 bytes, shorter than any packet over an
 * MTU of 1280 or more; over a smaller MTU (which breaks IPv6 anyway) it is written only if it fits before `end`.
 * `sum` sums the quote (up to 1232 bytes: the data plane passes its native sum).
 */
export function packetTooBig(
  buf: Uint8Array,
  off: number,
  len: number,
  end: number,
  mtu: number,
  sum: Sum16 = sum16,
): number {
  const ip = off + ETH_HLEN;
  if (len < ETH_HLEN + IPV6_HLEN || buf[ip + IPV6_OFF_VER_TC_FL] >>> 4 !== 6) return 0;
  const quoteLen = Math.min(len - ETH_HLEN, ICMPV6_QUOTE_MAX);
  const icmpLen = ICMP_HLEN + quoteLen;
  if (ip + IPV6_HLEN + icmpLen > Math.min(end, buf.length)) return 0;
  let unspecified = true;
  for (let i = IPV6_OFF_SRC; i < IPV6_OFF_DST; i++) if (buf[ip + i] !== 0) unspecified = false;
  if (unspecified) return 0;
  if (
    buf[ip + IPV6_OFF_NEXT_HDR] === IPPROTO_ICMPV6 &&
    (len < ETH_HLEN + IPV6_HLEN + 1 || buf[ip + IPV6_HLEN] < ICMPV6_INFO_MIN)
  ) {
    return 0;
  }
  const icmp = ip + IPV6_HLEN;
  // the quote first, moved to where it goes (overlapping: copyWithin moves like memmove); the header is then
  // rebuilt from the quoted one
  const q = icmp + ICMP_HLEN;
  buf.copyWithin(q, ip, ip + quoteLen);
  swapEthAddrs(buf, off);
  writeU16(buf, off + ETH_OFF_TYPE, ETH_P_IPV6);
  writeU32(buf, ip + IPV6_OFF_VER_TC_FL, 0x60000000); // version 6, traffic class 0, flow label 0
  writeU16(buf, ip + IPV6_OFF_PAYLOAD_LEN, icmpLen);
  buf[ip + IPV6_OFF_NEXT_HDR] = IPPROTO_ICMPV6;
  buf[ip + IPV6_OFF_HOP_LIMIT] = DEFAULT_TTL;
  buf.copyWithin(ip + IPV6_OFF_SRC, q + IPV6_OFF_DST, q + IPV6_OFF_DST + IPV6_ALEN); // from the original destination
  buf.copyWithin(ip + IPV6_OFF_DST, q + IPV6_OFF_SRC, q + IPV6_OFF_SRC + IPV6_ALEN); // to the original source
  buf[icmp + ICMP_OFF_TYPE] = ICMPV6_PKT_TOOBIG;
  buf[icmp + ICMP_OFF_CODE] = 0;
  writeU16(buf, icmp + ICMP_OFF_CSUM, 0);
  writeU32(buf, icmp + ICMPV6_OFF_MTU, mtu);
  writeU16(
    buf,
    icmp + ICMP_OFF_CSUM,
    finish(sum(buf, icmp, icmp + icmpLen, pseudoSumV6At(buf, ip, IPPROTO_ICMPV6, icmpLen))),
  );
  return ETH_HLEN + IPV6_HLEN + icmpLen;
}
