/** TCP headers (RFC 9293): fixed fields, options and payload as views. */
import {
  TCP_HLEN_MIN,
  TCP_OFF_ACK,
  TCP_OFF_CSUM,
  TCP_OFF_DOFF,
  TCP_OFF_DPORT,
  TCP_OFF_FLAGS,
  TCP_OFF_SEQ,
  TCP_OFF_SPORT,
  TCP_OFF_URG,
  TCP_OFF_WINDOW,
} from './constants.js';
import { readU16, readU32, writeU16, writeU32 } from './ethernet.js';
import { type Codec, DecodeError, need } from './errors.js';

export interface TcpHeader {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  checksum: number;
  urgent: number;
  options: Uint8Array; // view, a multiple of 4 bytes
  payload: Uint8Array; // view: everything after the header up to `end`
}

export const tcp: Codec<TcpHeader> = {
  encodingLength: (h) => TCP_HLEN_MIN + h.options.length + h.payload.length,
  encode(h, buf, off) {
    if (h.options.length % 4 !== 0 || h.options.length > 40)
      throw new RangeError('tcp: options must be 0..40 bytes, a multiple of 4');
    const hlen = TCP_HLEN_MIN + h.options.length;
    need('tcp', buf, off, hlen + h.payload.length);
    writeU16(buf, off + TCP_OFF_SPORT, h.sport);
    writeU16(buf, off + TCP_OFF_DPORT, h.dport);
    writeU32(buf, off + TCP_OFF_SEQ, h.seq);
    writeU32(buf, off + TCP_OFF_ACK, h.ack);
    buf[off + TCP_OFF_DOFF] = (hlen >>> 2) << 4;
    buf[off + TCP_OFF_FLAGS] = h.flags;
    writeU16(buf, off + TCP_OFF_WINDOW, h.window);
    writeU16(buf, off + TCP_OFF_CSUM, h.checksum);
    writeU16(buf, off + TCP_OFF_URG, h.urgent);
    buf.set(h.options, off + TCP_HLEN_MIN);
    buf.set(h.payload, off + hlen);
    return hlen + h.payload.length;
  },
  decode(buf, off, end = buf.length) {
    need('tcp', buf, off, TCP_HLEN_MIN, end);
    const hlen = (buf[off + TCP_OFF_DOFF] >>> 4) * 4;
    if (hlen < TCP_HLEN_MIN) throw new DecodeError('ERR_MALFORMED', `tcp: data offset ${hlen} < 20`);
    need('tcp options', buf, off, hlen, end);
    return {
      sport: readU16(buf, off + TCP_OFF_SPORT),
      dport: readU16(buf, off + TCP_OFF_DPORT),
      seq: readU32(buf, off + TCP_OFF_SEQ),
      ack: readU32(buf, off + TCP_OFF_ACK),
      flags: buf[off + TCP_OFF_FLAGS],
      window: readU16(buf, off + TCP_OFF_WINDOW),
      checksum: readU16(buf, off + TCP_OFF_CSUM),
      urgent: readU16(buf, off + TCP_OFF_URG),
      options: buf.subarray(off + TCP_HLEN_MIN, off + hlen),
      payload: buf.subarray(off + hlen, end),
    };
  },
};
