/** UDP headers (RFC 768). The checksum is the caller's: see checksum.ts for the pseudo-header sums. */
import { UDP_HLEN, UDP_OFF_CSUM, UDP_OFF_DPORT, UDP_OFF_LEN, UDP_OFF_SPORT } from './constants.js';
import { readU16, writeU16 } from './ethernet.js';
import { type Codec, DecodeError, need } from './errors.js';

export interface UdpHeader {
  sport: number;
  dport: number;
  checksum: number;
  payload: Uint8Array; // view of length - 8 bytes
}

export const udp: Codec<UdpHeader> = {
  encodingLength: (h) => UDP_HLEN + h.payload.length,
  encode(h, buf, off) {
    const len = UDP_HLEN + h.payload.length;
    if (len > 0xffff) throw new RangeError(`udp: length ${len} > 65535`);
    need('udp', buf, off, len);
    writeU16(buf, off + UDP_OFF_SPORT, h.sport);
    writeU16(buf, off + UDP_OFF_DPORT, h.dport);
    writeU16(buf, off + UDP_OFF_LEN, len);
    writeU16(buf, off + UDP_OFF_CSUM, h.checksum);
    buf.set(h.payload, off + UDP_HLEN);
    return len;
  },
  decode(buf, off, end = buf.length) {
    need('udp', buf, off, UDP_HLEN, end);
    const len = readU16(buf, off + UDP_OFF_LEN);
    if (len < UDP_HLEN) throw new DecodeError('ERR_MALFORMED', `udp: length ${len} < 8`);
    need('udp payload', buf, off, len, end);
    return {
      sport: readU16(buf, off + UDP_OFF_SPORT),
      dport: readU16(buf, off + UDP_OFF_DPORT),
      checksum: readU16(buf, off + UDP_OFF_CSUM),
      payload: buf.subarray(off + UDP_HLEN, off + len),
    };
  },
};
