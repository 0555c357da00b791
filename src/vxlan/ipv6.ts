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
