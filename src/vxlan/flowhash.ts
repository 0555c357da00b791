/**
 * Flow hash of an inner Ethernet frame, for the outer UDP source port (RFC 7348 section 5: "it is recommended
 * that the UDP source port number be calculated using a hash of fields from the inner packet"), so that ECMP and
 * RSS on the underlay spread flows while each flow keeps one path (and so its order).
 *
 * Fields, as the kernel's flow dissector takes them: IPv4/IPv6 addresses + protocol (+ ports for TCP/UDP/SCTP
 * when not a non-first fragment), IPv6 flow label; otherwise MACs + EtherType. Never reads past `end`.
 * The mixing is a murmur3-style finaliser over 32-bit words: fast, no allocation.
 */
import {
  ETH_HLEN,
  ETH_OFF_DST,
  ETH_OFF_SRC,
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_FRAG_OFFSET_MASK,
  IPV4_HLEN_MIN,
  IPV4_OFF_DST,
  IPV4_OFF_FRAG,
  IPV4_OFF_PROTO,
  IPV4_OFF_SRC,
  IPV4_OFF_VER_IHL,
  IPV6_HLEN,
  IPV6_OFF_DST,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_SRC,
  IPV6_OFF_VER_TC_FL,
} from './constants.js';
import { ethInnerType, readU16, readU32 } from './ethernet.js';

const IPPROTO_SCTP = 132;

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hasPorts(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP;
}

/** 32-bit flow hash of the frame buf[off..end). `seed` lets a host pick its own spread. */
export function flowHash(buf: Uint8Array, off: number, end: number, seed = 0): number {
  let h = seed | 0;
  if (end - off < ETH_HLEN) return fmix(h ^ (end - off));
  const { type, l3 } = ethInnerType(buf, off, end);
  if (type === ETH_P_IP && end - l3 >= IPV4_HLEN_MIN) {
    const ihl = (buf[l3 + IPV4_OFF_VER_IHL] & 0x0f) * 4;
    const proto = buf[l3 + IPV4_OFF_PROTO];
    h = mix(h, readU32(buf, l3 + IPV4_OFF_SRC));
    h = mix(h, readU32(buf, l3 + IPV4_OFF_DST));
    h = mix(h, proto);
    const firstFrag = (readU16(buf, l3 + IPV4_OFF_FRAG) & IPV4_FRAG_OFFSET_MASK) === 0;
    if (firstFrag && hasPorts(proto) && ihl >= IPV4_HLEN_MIN && end - l3 >= ihl + 4) h = mix(h, readU32(buf, l3 + ihl));
    return fmix(h ^ 4);
  }
  if (type === ETH_P_IPV6 && end - l3 >= IPV6_HLEN) {
    for (let i = 0; i < 16; i += 4) h = mix(h, readU32(buf, l3 + IPV6_OFF_SRC + i));
    for (let i = 0; i < 16; i += 4) h = mix(h, readU32(buf, l3 + IPV6_OFF_DST + i));
    const nh = buf[l3 + IPV6_OFF_NEXT_HDR];
    h = mix(h, nh);
    h = mix(h, readU32(buf, l3 + IPV6_OFF_VER_TC_FL) & 0xfffff);
    if (hasPorts(nh) && end - l3 >= IPV6_HLEN + 4) h = mix(h, readU32(buf, l3 + IPV6_HLEN));
    return fmix(h ^ 6);
  }
  h = mix(h, readU32(buf, off + ETH_OFF_DST));
  h = mix(h, (readU16(buf, off + ETH_OFF_DST + 4) << 16) | readU16(buf, off + ETH_OFF_SRC));
  h = mix(h, readU32(buf, off + ETH_OFF_SRC + 2));
  h = mix(h, type);
  return fmix(h ^ 2);
}

/** Maps a hash onto [low, high] the way the kernel's udp_flow_src_port does (multiply-shift, no modulo bias). */
export function sourcePort(hash: number, low = 49152, high = 65535): number {
  return low + Math.floor(((hash >>> 0) * (high - low + 1)) / 0x100000000);
}

/** Picks one of `n` transmit sockets for a hash, by the same multiply-shift. */
export function pickIndex(hash: number, n: number): number {
  return Math.floor(((hash >>> 0) * n) / 0x100000000);
}
