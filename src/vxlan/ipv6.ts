/** IPv6 fixed header (RFC 8200). Extension headers are left in the payload. */
import {
  IPV6_ALEN,
  IPV6_HLEN,
  IPV6_OFF_DST,
  IPV6_OFF_HOP_LIMIT,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_PAYLOAD_LEN,
  IPV6_OFF_SRC,
  IPV6_OFF_VER_TC_FL,
} from './constants.js';
import { readU16, readU32, writeU16, writeU32 } from './ethernet.js';
import { type Codec, DecodeError, need } from './errors.js';

export interface Ipv6Header {
  trafficClass: number;
  flowLabel: number;
  nextHeader: number;
  hopLimit: number;
  src: Uint8Array; // 16-byte view
  dst: Uint8Array;
  payload: Uint8Array; // view of payload_length bytes
}

export const ipv6: Codec<Ipv6Header> = {
  encodingLength: (h) => IPV6_HLEN + h.payload.length,
  encode(h, buf, off) {
    if (h.payload.length > 0xffff) throw new RangeError('ipv6: payload > 65535 (jumbograms are not supported)');
    if (h.src.length !== IPV6_ALEN || h.dst.length !== IPV6_ALEN)
      throw new RangeError('ipv6: addresses must be 16 bytes');
    need('ipv6', buf, off, IPV6_HLEN + h.payload.length);
    writeU32(
      buf,
      off + IPV6_OFF_VER_TC_FL,
      ((6 << 28) | ((h.trafficClass & 0xff) << 20) | (h.flowLabel & 0xfffff)) >>> 0,
    );
    writeU16(buf, off + IPV6_OFF_PAYLOAD_LEN, h.payload.length);
    buf[off + IPV6_OFF_NEXT_HDR] = h.nextHeader;
    buf[off + IPV6_OFF_HOP_LIMIT] = h.hopLimit;
    buf.set(h.src, off + IPV6_OFF_SRC);
    buf.set(h.dst, off + IPV6_OFF_DST);
    buf.set(h.payload, off + IPV6_HLEN);
    return IPV6_HLEN + h.payload.length;
  },
  decode(buf, off, end = buf.length) {
    need('ipv6', buf, off, IPV6_HLEN, end);
    const w = readU32(buf, off + IPV6_OFF_VER_TC_FL);
    if (w >>> 28 !== 6) throw new DecodeError('ERR_MALFORMED', `ipv6: version ${w >>> 28}`);
    const plen = readU16(buf, off + IPV6_OFF_PAYLOAD_LEN);
    need('ipv6 payload', buf, off, IPV6_HLEN + plen, end);
    return {
      trafficClass: (w >>> 20) & 0xff,
      flowLabel: w & 0xfffff,
      nextHeader: buf[off + IPV6_OFF_NEXT_HDR],
      hopLimit: buf[off + IPV6_OFF_HOP_LIMIT],
      src: buf.subarray(off + IPV6_OFF_SRC, off + IPV6_OFF_SRC + IPV6_ALEN),
      dst: buf.subarray(off + IPV6_OFF_DST, off + IPV6_OFF_DST + IPV6_ALEN),
      payload: buf.subarray(off + IPV6_HLEN, off + IPV6_HLEN + plen),
    };
  },
};

/**
 * Parses an IPv6 address in text form (RFC 4291 2.2: hex groups, one "::", an embedded dotted quad at the end) to
 * 16 bytes; throws a TypeError naming the bad input. No zone index, no prefix length.
 */
export function parseIpv6(s: string): Uint8Array {
  const bad = (): never => {
    throw new TypeError(`invalid IPv6 address ${JSON.stringify(s)}`);
  };
  if (typeof s !== 'string' || s.length < 2 || s.length > 45) bad();
  const halves = s.split('::');
  if (halves.length > 2) bad();
  const groups = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const g = items[i];
      if (i === items.length - 1 && g.includes('.')) {
        const q = g.split('.');
        if (q.length !== 4) bad();
        const b = q.map((x) => (/^(0|[1-9]\d{0,2})$/.test(x) && Number(x) <= 255 ? Number(x) : bad()));
        out.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) bad();
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const n = head.length + tail.length;
  if (halves.length === 1 ? n !== 8 : n > 7) bad();
  const all = [...head, ...new Array<number>(8 - n).fill(0), ...tail];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = all[i] >> 8;
    out[2 * i + 1] = all[i] & 0xff;
  }
  return out;
}

/** 16 bytes -> the canonical text form of RFC 5952 (lower case, the longest run of two or more zero groups as
 * "::", the first of equal runs). */
export function formatIpv6(b: Uint8Array, off = 0): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[off + 2 * i] << 8) | b[off + 2 * i + 1]);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** 16 bytes <-> a bigint (for address arithmetic in the control plane; never on the data path). */
export function ipv6ToBigInt(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = 0; i < 16; i++) v = (v << 8n) | BigInt(b[i]);
  return v;
}

export function bigIntToIpv6(v: bigint): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}
