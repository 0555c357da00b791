/** IPv4 headers (RFC 791): a view with options and payload as subarrays; encode computes the header checksum. */
import {
  IPV4_FLAG_DF,
  IPV4_FLAG_MF,
  IPV4_FRAG_OFFSET_MASK,
  IPV4_HLEN_MIN,
  IPV4_OFF_CSUM,
  IPV4_OFF_DST,
  IPV4_OFF_FRAG,
  IPV4_OFF_ID,
  IPV4_OFF_PROTO,
  IPV4_OFF_SRC,
  IPV4_OFF_TOS,
  IPV4_OFF_TOT_LEN,
  IPV4_OFF_TTL,
  IPV4_OFF_VER_IHL,
} from './constants.js';
import { internetChecksum } from './checksum.js';
import { readU16, readU32, writeU16, writeU32 } from './ethernet.js';
import { type Codec, DecodeError, need } from './errors.js';

export interface Ipv4Header {
  tos: number;
  id: number;
  df: boolean;
  mf: boolean;
  fragOffset: number; // in 8-byte units
  ttl: number;
  proto: number;
  checksum: number; // as found on decode; recomputed on encode
  src: number; // host-order uint32
  dst: number;
  options: Uint8Array; // view, length a multiple of 4
  payload: Uint8Array; // view of total_length - ihl bytes
}

export const ipv4: Codec<Ipv4Header> = {
  encodingLength: (h) => IPV4_HLEN_MIN + h.options.length + h.payload.length,
  encode(h, buf, off) {
    if (h.options.length % 4 !== 0 || h.options.length > 40)
      throw new RangeError('ipv4: options must be 0..40 bytes, a multiple of 4');
    const hlen = IPV4_HLEN_MIN + h.options.length;
    const total = hlen + h.payload.length;
    if (total > 0xffff) throw new RangeError(`ipv4: total length ${total} > 65535`);
    need('ipv4', buf, off, total);
    buf[off + IPV4_OFF_VER_IHL] = 0x40 | (hlen >>> 2);
    buf[off + IPV4_OFF_TOS] = h.tos;
    writeU16(buf, off + IPV4_OFF_TOT_LEN, total);
    writeU16(buf, off + IPV4_OFF_ID, h.id);
    writeU16(
      buf,
      off + IPV4_OFF_FRAG,
      (h.df ? IPV4_FLAG_DF : 0) | (h.mf ? IPV4_FLAG_MF : 0) | (h.fragOffset & IPV4_FRAG_OFFSET_MASK),
    );
    buf[off + IPV4_OFF_TTL] = h.ttl;
    buf[off + IPV4_OFF_PROTO] = h.proto;
    writeU16(buf, off + IPV4_OFF_CSUM, 0);
    writeU32(buf, off + IPV4_OFF_SRC, h.src);
    writeU32(buf, off + IPV4_OFF_DST, h.dst);
    buf.set(h.options, off + IPV4_HLEN_MIN);
    writeU16(buf, off + IPV4_OFF_CSUM, internetChecksum(buf, off, off + hlen));
    buf.set(h.payload, off + hlen);
    return total;
  },
  decode(buf, off, end = buf.length) {
    need('ipv4', buf, off, IPV4_HLEN_MIN, end);
    const vi = buf[off + IPV4_OFF_VER_IHL];
    if (vi >>> 4 !== 4) throw new DecodeError('ERR_MALFORMED', `ipv4: version ${vi >>> 4}`);
    const hlen = (vi & 0x0f) * 4;
    if (hlen < IPV4_HLEN_MIN) throw new DecodeError('ERR_MALFORMED', `ipv4: header length ${hlen} < 20`);
    need('ipv4 options', buf, off, hlen, end);
    const total = readU16(buf, off + IPV4_OFF_TOT_LEN);
    if (total < hlen) throw new DecodeError('ERR_MALFORMED', `ipv4: total length ${total} < header length ${hlen}`);
    need('ipv4 payload', buf, off, total, end);
    const frag = readU16(buf, off + IPV4_OFF_FRAG);
    return {
      tos: buf[off + IPV4_OFF_TOS],
      id: readU16(buf, off + IPV4_OFF_ID),
      df: (frag & IPV4_FLAG_DF) !== 0,
      mf: (frag & IPV4_FLAG_MF) !== 0,
      fragOffset: frag & IPV4_FRAG_OFFSET_MASK,
      ttl: buf[off + IPV4_OFF_TTL],
      proto: buf[off + IPV4_OFF_PROTO],
      checksum: readU16(buf, off + IPV4_OFF_CSUM),
      src: readU32(buf, off + IPV4_OFF_SRC),
      dst: readU32(buf, off + IPV4_OFF_DST),
      options: buf.subarray(off + IPV4_HLEN_MIN, off + hlen),
      payload: buf.subarray(off + hlen, off + total),
    };
  },
};

/** True when the IPv4 header at buf[off] has a correct header checksum. */
export function ipv4ChecksumOk(buf: Uint8Array, off: number): boolean {
  const hlen = (buf[off + IPV4_OFF_VER_IHL] & 0x0f) * 4;
  return internetChecksum(buf, off, off + hlen) === 0;
}

/** "198.19.1.2" <-> host-order uint32. Strict dotted quad; throws TypeError naming the bad input. */
/** Parses dotted-quad IPv4 (four decimal octets, no leading zeros) to a host-order number; throws a TypeError.
 * A character loop, not split and regular expressions: the control plane parses one per endpoint record. */
export function parseIpv4(s: string): number {
  let v = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  let ok = s.length >= 7 && s.length <= 15;
  for (let i = 0; ok && i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46; // the end closes the last octet like a dot
    if (c === 46) {
      if (digits === 0 || octet > 255 || (i === s.length) !== (dots === 3)) ok = false;
      else {
        v = v * 256 + octet;
        dots += i < s.length ? 1 : 0;
        octet = 0;
        digits = 0;
      }
    } else if (c >= 48 && c <= 57 && digits < 3 && !(digits === 1 && octet === 0)) {
      octet = octet * 10 + (c - 48);
      digits++;
    } else ok = false;
  }
  if (!ok) throw new TypeError(`invalid IPv4 address ${JSON.stringify(s)}`);
  return v >>> 0;
}

export function formatIpv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}
