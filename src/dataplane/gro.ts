/**
 * Receive-side merging (GRO) for endpoints whose TAP takes virtio-net headers: consecutive in-order TCP segments
 * of one flow, arriving in one receive batch for one endpoint, are joined into one super-frame and written with
 * a GSO header (TCPV4 or TCPV6, gso_size = the segment payload size, NEEDS_CSUM with the pseudo-header sum), so
 * the container's stack takes one skb where it would take dozens. Consecutive UDP datagrams of one flow are
 * joined the same way into a UDP_L4 (USO) super-frame, the form Linux's udp_gro_receive_segment builds: the
 * receiving stack hands it whole to a socket with UDP_GRO on and cuts it back into the same datagrams for any
 * other (udp_rcv_segment), so datagram boundaries are kept either way. The TCP rules follow Linux's
 * tcp_gro_receive (and inet_gro_receive / ipv6_gro_receive):
 *   - IPv4 without options or fragmentation, or IPv6 with TCP as the next header (no extension headers); TCP
 *     with only ACK/PSH set, a non-empty payload;
 *   - Ethernet header, IPv4 addresses/TOS/TTL/DF or IPv6 addresses/traffic class/flow label/hop limit, TCP
 *     ports, ack, window, data offset and options identical;
 *   - sequence number = where the previous one ended; every segment but the last exactly `mss` long;
 *   - PSH ends the merge (it goes in, then the super-frame is written); at most 64 KB in all;
 *   - the segment's own TCP checksum verifies (as Linux validates before merging): the super-frame is written
 *     with NEEDS_CSUM, which the receiving stack does not re-check, so a bad segment must never be merged.
 * UDP (udp_gro_receive_segment): the same IP and Ethernet rules, the same ports; every datagram but the last
 * exactly `mss` (the first one's payload) long, at most UDP_GSO_MAX_SEGS (64, the most a UDP_L4 frame from a TAP
 * may hold) and 64 KB in all; a checksum that verifies, and a datagram without one (IPv4, checksum 0) is not
 * merged. A merge never waits for more: whatever is pending is written at the end of the receive batch.
 * Anything else is written as it came, after the pending super-frame (so a flow's order is kept).
 */
import {
  ETH_HLEN,
  ETH_OFF_TYPE,
  ETH_P_IP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_HLEN_MIN,
  IPV4_OFF_CSUM,
  IPV4_OFF_DST,
  IPV4_OFF_FRAG,
  IPV4_OFF_PROTO,
  IPV4_OFF_SRC,
  IPV4_OFF_TOT_LEN,
  IPV4_OFF_VER_IHL,
  IPV4_FLAG_MF,
  IPV4_FRAG_OFFSET_MASK,
  ETH_P_IPV6,
  IPV6_HLEN,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_PAYLOAD_LEN,
  IPV6_OFF_SRC,
  TCP_FLAG_ACK,
  TCP_FLAG_PSH,
  TCP_OFF_CSUM,
  TCP_OFF_DOFF,
  TCP_OFF_FLAGS,
  TCP_OFF_SEQ,
  UDP_HLEN,
  UDP_OFF_CSUM,
  UDP_OFF_LEN,
  VXLAN_HLEN,
  IPV4_OFF_TOS,
  IPV4_OFF_TTL,
  IPV6_OFF_VER_TC_FL,
  TCP_HLEN_MIN,
  TCP_OFF_ACK,
  TCP_OFF_SPORT,
  TCP_OFF_WINDOW,
} from '../vxlan/constants.js';
import { finish, internetChecksum, pseudoSumV4, pseudoSumV6At, sum16 } from '../vxlan/checksum.js';
import { readU16, readU32, writeU16 } from '../vxlan/ethernet.js';
import {
  VNET_OFF_CSUM_OFFSET,
  VNET_OFF_CSUM_START,
  VNET_OFF_FLAGS,
  VNET_OFF_GSO_SIZE,
  VNET_OFF_GSO_TYPE,
  VNET_OFF_HDR_LEN,
  UDP_GSO_MAX_SEGS,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_TCPV4,
  VNET_GSO_TCPV6,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
  writeU16le,
} from '../vxlan/gso.js';
import type { Counters } from './counters.js';
import type { Kernels } from './kernels.js';
import type { OutQueue } from './out.js';
import type { Port } from './port.js';

export const L3 = ETH_HLEN;
/** Where TCP starts: after Ethernet + IPv4 without options, or after Ethernet + the IPv6 fixed header. */
export const L4 = ETH_HLEN + IPV4_HLEN_MIN;
export const L4_V6 = ETH_HLEN + IPV6_HLEN;
const MAX_TOTAL = 65535 - 64;

/** The TCP header's offset in a frame of the form mergeable() accepts: the Ethertype tells IPv4 from IPv6. */
export function l4Of(a: Uint8Array, off: number): number {
  return readU16(a, off + ETH_OFF_TYPE) === ETH_P_IPV6 ? L4_V6 : L4;
}

/** The L4 protocol of a frame of the form mergeable() accepts (TCP or UDP). */
export function protoOf(a: Uint8Array, off: number, l4: number): number {
  return a[off + L3 + (l4 === L4 ? IPV4_OFF_PROTO : IPV6_OFF_NEXT_HDR)];
}

/**
 * The form of a frame Gro merges: Ethernet + IPv4 without options or fragmentation whose length is the frame's,
 * or Ethernet + IPv6 with TCP or UDP as the next header whose payload length is the frame's, carrying either TCP
 * with only ACK (or ACK|PSH) set and a non-empty payload, or UDP whose length is the rest of the frame, with a
 * checksum (not 0) and a non-empty payload. Returns its header bytes (Ethernet + IP + TCP or UDP), or -1.
 */
function mergeable(a: Uint8Array, off: number, len: number): number {
  const type = readU16(a, off + ETH_OFF_TYPE);
  let l4: number;
  let proto: number;
  if (type === ETH_P_IP) {
    if (len < L4 + UDP_HLEN || a[off + L3 + IPV4_OFF_VER_IHL] !== 0x45) return -1;
    proto = a[off + L3 + IPV4_OFF_PROTO];
    if (
      (readU16(a, off + L3 + IPV4_OFF_FRAG) & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK)) !== 0 ||
      readU16(a, off + L3 + IPV4_OFF_TOT_LEN) !== len - ETH_HLEN
    )
      return -1;
    l4 = L4;
  } else if (type === ETH_P_IPV6) {
    if (
      len < L4_V6 + UDP_HLEN ||
      a[off + L3] >>> 4 !== 6 ||
      readU16(a, off + L3 + IPV6_OFF_PAYLOAD_LEN) !== len - L4_V6
    )
      return -1;
    proto = a[off + L3 + IPV6_OFF_NEXT_HDR];
    l4 = L4_V6;
  } else return -1;
  if (proto === IPPROTO_UDP) {
    if (
      len <= l4 + UDP_HLEN ||
      readU16(a, off + l4 + UDP_OFF_LEN) !== len - l4 ||
      readU16(a, off + l4 + UDP_OFF_CSUM) === 0
    )
      return -1;
    return l4 + UDP_HLEN;
  }
  if (proto !== IPPROTO_TCP || len < l4 + TCP_HLEN_MIN) return -1;
  const flags = a[off + l4 + TCP_OFF_FLAGS];
  const doff = (a[off + l4 + TCP_OFF_DOFF] >>> 4) * 4;
  if (
    (flags & ~(TCP_FLAG_ACK | TCP_FLAG_PSH)) !== 0 ||
    (flags & TCP_FLAG_ACK) === 0 ||
    doff < TCP_HLEN_MIN ||
    len <= l4 + doff
  )
    return -1;
  return l4 + doff;
}

/** The most frame bytes a pending super-frame may grow to: 64 KB, and for UDP also UDP_GSO_MAX_SEGS datagrams of
 * `mss` (all but the last are exactly mss long, so this bound is exactly the segment limit). */
function maxTotal(udp: boolean, hdrs: number, mss: number): number {
  return udp ? Math.min(MAX_TOTAL, hdrs + UDP_GSO_MAX_SEGS * mss) : MAX_TOTAL;
}

export class Gro {
  private port: Port | null = null;
  private start = 0; // where the pending super-frame's virtio-net header begins in the arena
  private hdrs = 0; // Ethernet + IP + TCP header bytes
  private l4 = 0; // where TCP or UDP starts: L4 (IPv4) or L4_V6
  private udp = false; // the pending super-frame is UDP datagrams (else TCP segments)
  private len = 0; // frame bytes so far (headers + payload)
  private mss = 0;
  private nextSeq = 0;
  private segs = 0;
  private shortSeen = false;
  private cursor = 0;
  /** Datagram bytes the last run() took. */
  runBytes = 0;
  private readonly runState = new Int32Array(6); // groRun's in/out state

  constructor(
    private readonly arena: Uint8Array,
    private readonly base: number,
    private readonly out: OutQueue,
    private readonly c: Counters,
    private readonly k: Kernels,
  ) {}

  /** Start of a batch: the region is free again (the previous batch was flushed). */
  reset(): void {
    this.port = null;
    this.cursor = this.base;
  }

  /**
   * Offers one inner frame for `port`; returns false if it is not mergeable (the caller writes it). `a` is the
   * arena this Gro was built on: the frame is compared with the pending super-frame there.
   */
  offer(port: Port, a: Uint8Array, off: number, len: number): boolean {
    const hdrs = mergeable(a, off, len);
    if (hdrs < 0) {
      this.flush();
      return false;
    }
    const l4 = l4Of(a, off);
    const udp = protoOf(a, off, l4) === IPPROTO_UDP;
    if (udp && !port.uso) {
      this.flush();
      return false; // a kernel before 6.2 refuses UDP_L4 super-frames
    }
    const flags = udp ? 0 : a[off + l4 + TCP_OFF_FLAGS];
    const plen = len - hdrs;
    const seq = udp ? 0 : readU32(a, off + l4 + TCP_OFF_SEQ);
    const extend =
      this.port === port &&
      hdrs === this.hdrs &&
      udp === this.udp &&
      (udp || seq === this.nextSeq) &&
      !this.shortSeen &&
      plen <= this.mss &&
      this.len + plen <= maxTotal(udp, hdrs, this.mss);
    const ref = this.start + VNET_HDR_LEN;
    const r = extend
      ? this.k.groSegment(a, off, len, hdrs, ref, ref + this.len)
      : this.k.groSegment(a, off, len, hdrs, -1, -1);
    if (r < 0) {
      this.flush();
      this.c.rx_gro_bad_csum++;
      return false; // written as it came: the container's stack drops it, as it would without us
    }
    if (r === 1) {
      this.len += plen;
      this.nextSeq = (seq + plen) >>> 0;
      this.segs++;
      if (plen < this.mss) this.shortSeen = true;
      if ((flags & TCP_FLAG_PSH) !== 0) {
        this.arena[ref + l4 + TCP_OFF_FLAGS] |= TCP_FLAG_PSH;
        this.flush();
      }
      return true;
    }
    this.flush();
    if (this.cursor + VNET_HDR_LEN + MAX_TOTAL + 64 > this.arena.length) return false; // region full: write as is
    this.port = port;
    this.start = this.cursor;
    this.hdrs = hdrs;
    this.l4 = l4;
    this.udp = udp;
    this.len = len;
    this.mss = plen;
    this.nextSeq = (seq + plen) >>> 0;
    this.segs = 1;
    this.shortSeen = false;
    a.copyWithin(this.start + VNET_HDR_LEN, off, off + len);
    if ((flags & TCP_FLAG_PSH) !== 0) this.flush();
    return true;
  }

  /**
   * After offer() took the datagram at a[first..] (VXLAN header at `first`, the inner frame after it), appends the
   * datagrams that follow it in one UDP GRO buffer, a[from..end) in `step`-byte datagrams, as long as they continue
   * the pending super-frame (groRun). Returns how many it took; `runBytes` has their datagram bytes.
   */
  run(a: Uint8Array, first: number, from: number, end: number, step: number): number {
    if (this.port === null || this.shortSeen || from >= end) return 0;
    const st = this.runState;
    st[0] = this.len;
    st[1] = this.mss;
    st[2] = this.nextSeq | 0;
    st[3] = maxTotal(this.udp, this.hdrs, this.mss);
    const n = this.k.groRun(a, first, from, end, step, this.start + VNET_HDR_LEN, this.hdrs, st);
    if (n === 0) return 0;
    this.len = st[0];
    this.nextSeq = st[2] >>> 0;
    this.segs += n;
    this.runBytes = st[4];
    if ((st[5] & 2) !== 0) this.shortSeen = true;
    if ((st[5] & 1) !== 0) this.flush();
    return n;
  }

  /** Writes the pending frame: as it came if it is one segment, else as a GSO super-frame. */
  flush(): void {
    const port = this.port;
    if (port === null) return;
    this.port = null;
    const h = this.start;
    const f = h + VNET_HDR_LEN;
    this.arena.fill(0, h, f);
    if (this.segs > 1) {
      const l4 = this.l4;
      const l4Len = this.len - l4;
      const proto = this.udp ? IPPROTO_UDP : IPPROTO_TCP;
      const csumOff = this.udp ? UDP_OFF_CSUM : TCP_OFF_CSUM;
      // CHECKSUM_PARTIAL: the TCP/UDP field holds the pseudo-header sum; the stack takes it as verified (it came
      // with a correct checksum per segment, and the outer UDP checksum covered every byte)
      if (l4 === L4) {
        writeU16(this.arena, f + L3 + IPV4_OFF_TOT_LEN, this.len - ETH_HLEN);
        writeU16(this.arena, f + L3 + IPV4_OFF_CSUM, 0);
        writeU16(this.arena, f + L3 + IPV4_OFF_CSUM, internetChecksum(this.arena, f + L3, f + L4));
      } else {
        writeU16(this.arena, f + L3 + IPV6_OFF_PAYLOAD_LEN, l4Len);
      }
      const ps = pseudoOf(this.arena, f, this.len, l4, proto);
      // a UDP super-frame's length field spans all its datagrams (as udp_gro_complete writes it; the stack's
      // segmentation sets each datagram's own)
      if (this.udp) writeU16(this.arena, f + l4 + UDP_OFF_LEN, l4Len);
      writeU16(this.arena, f + l4 + csumOff, ps);
      this.arena[h + VNET_OFF_FLAGS] = VNET_F_NEEDS_CSUM;
      this.arena[h + VNET_OFF_GSO_TYPE] = this.udp ? VNET_GSO_UDP_L4 : l4 === L4 ? VNET_GSO_TCPV4 : VNET_GSO_TCPV6;
      writeU16le(this.arena, h + VNET_OFF_HDR_LEN, this.hdrs);
      writeU16le(this.arena, h + VNET_OFF_GSO_SIZE, this.mss);
      writeU16le(this.arena, h + VNET_OFF_CSUM_START, l4);
      writeU16le(this.arena, h + VNET_OFF_CSUM_OFFSET, csumOff);
      this.c.rx_gro_frames++;
      this.c.rx_gro_segments += this.segs;
      if (this.udp) this.c.rx_gro_udp_frames++;
    }
    this.out.tap(port, h, VNET_HDR_LEN + this.len, true);
    this.cursor = h + ((VNET_HDR_LEN + this.len + 63) & ~63);
  }
}

/**
 * The per-segment work of Gro.offer, for an inner frame a[off..off+len) already checked for form (IPv4 without
 * options or IPv6 without extension headers, TCP or UDP with `hdrs` bytes of headers): -1 if its TCP or UDP
 * checksum does not verify; 0 if it verifies and ref < 0 or it is not of the flow of the pending super-frame at
 * a[ref..] (everything but seq, IP id/length/checksum, TCP checksum and PSH, UDP length and checksum must match:
 * Ethernet header; IPv4 TOS, DF/MF byte, TTL, protocol and addresses, or IPv6 version/traffic class/flow label,
 * next header, hop limit and addresses; ports; for TCP also ack, data offset, window, options); 1 if it verifies,
 * is of that flow, and its payload has been copied to a[dst..]. a[dst..dst + payload) is scratch unless the result
 * is 1: the native version copies while it sums.
 */
export type GroSegment = (a: Uint8Array, off: number, len: number, hdrs: number, ref: number, dst: number) => number;

/** The pseudo-header sum of a TCP or UDP frame of the form mergeable() accepts (its own length and protocol). */
export function pseudoOf(a: Uint8Array, off: number, len: number, l4: number, proto: number): number {
  return l4 === L4
    ? pseudoSumV4(readU32(a, off + L3 + IPV4_OFF_SRC), readU32(a, off + L3 + IPV4_OFF_DST), proto, len - l4)
    : pseudoSumV6At(a, off + L3, proto, len - l4);
}

/** GroSegment in JS: the reference the native one is checked against. */
export function groSegmentJs(a: Uint8Array, off: number, len: number, hdrs: number, ref: number, dst: number): number {
  const l4 = l4Of(a, off);
  const proto = protoOf(a, off, l4);
  if (finish(sum16(a, off + l4, off + len, pseudoOf(a, off, len, l4, proto))) !== 0) return -1;
  if (ref < 0) return 0;
  for (let i = 0; i < ETH_HLEN; i++) if (a[off + i] !== a[ref + i]) return 0; // the Ethertype too: same IP version
  if (l4 === L4) {
    // TOS, the DF/MF byte, TTL and protocol
    if (
      a[off + L3 + IPV4_OFF_TOS] !== a[ref + L3 + IPV4_OFF_TOS] ||
      a[off + L3 + IPV4_OFF_FRAG] !== a[ref + L3 + IPV4_OFF_FRAG]
    )
      return 0;
    if (readU16(a, off + L3 + IPV4_OFF_TTL) !== readU16(a, ref + L3 + IPV4_OFF_TTL)) return 0;
    if (
      readU32(a, off + L3 + IPV4_OFF_SRC) !== readU32(a, ref + L3 + IPV4_OFF_SRC) ||
      readU32(a, off + L3 + IPV4_OFF_DST) !== readU32(a, ref + L3 + IPV4_OFF_DST)
    )
      return 0;
  } else {
    // version, traffic class and flow label; next header and hop limit
    if (readU32(a, off + L3 + IPV6_OFF_VER_TC_FL) !== readU32(a, ref + L3 + IPV6_OFF_VER_TC_FL)) return 0;
    if (readU16(a, off + L3 + IPV6_OFF_NEXT_HDR) !== readU16(a, ref + L3 + IPV6_OFF_NEXT_HDR)) return 0;
    for (let i = L3 + IPV6_OFF_SRC; i < L4_V6; i++) if (a[off + i] !== a[ref + i]) return 0;
  }
  if (readU32(a, off + l4 + TCP_OFF_SPORT) !== readU32(a, ref + l4 + TCP_OFF_SPORT)) return 0; // both ports (TCP and UDP alike)
  if (proto === IPPROTO_TCP) {
    if (readU32(a, off + l4 + TCP_OFF_ACK) !== readU32(a, ref + l4 + TCP_OFF_ACK)) return 0;
    if (
      a[off + l4 + TCP_OFF_DOFF] !== a[ref + l4 + TCP_OFF_DOFF] ||
      readU16(a, off + l4 + TCP_OFF_WINDOW) !== readU16(a, ref + l4 + TCP_OFF_WINDOW)
    )
      return 0;
    for (let i = l4 + TCP_HLEN_MIN; i < hdrs; i++) if (a[off + i] !== a[ref + i]) return 0; // options
  }
  if (dst < 0) return 0;
  a.copyWithin(dst, off + hdrs, off + len);
  return 1;
}

/**
 * A run of GRO appends in one call (Gro.run): after the datagram at buf[first..] (VXLAN header + inner frame) went
 * into the pending super-frame at buf[ref..], appends the datagrams that follow in the same UDP GRO buffer,
 * buf[from..end) in `step`-byte datagrams, while each one has the first one's VXLAN and inner Ethernet headers
 * (so every lookup the data plane would make for it gives the first one's answer), has the form mergeable()
 * accepts with `hdrs` header bytes, carries 1..mss payload bytes (TCP: from the expected sequence number), fits
 * in maxTotal, and passes groSegment (checksum; the pending frame's flow, so its protocol too). A TCP segment with
 * PSH (which is set on the pending frame), or a segment or datagram shorter than mss, is appended and ends the run.
 * state: in [0] len, [1] mss, [2] nextSeq (TCP), [3] maxTotal; out [0] len, [2] nextSeq, [4] datagram bytes
 * taken, [5] 1 if the run ended on PSH | 2 if on a short one. Returns how many datagrams it took.
 */
export type GroRun = (
  buf: Uint8Array,
  first: number,
  from: number,
  end: number,
  step: number,
  ref: number,
  hdrs: number,
  state: Int32Array,
) => number;

/** GroRun in JS, on top of groSegmentJs: the reference the native one is checked against. */
export function groRunJs(
  buf: Uint8Array,
  first: number,
  from: number,
  end: number,
  step: number,
  ref: number,
  hdrs: number,
  state: Int32Array,
): number {
  let cur = state[0];
  const mss = state[1];
  let next = state[2] >>> 0;
  const max = state[3];
  let count = 0;
  let bytes = 0;
  let why = 0;
  for (let p = from; p < end && why === 0; p += step) {
    const len = Math.min(step, end - p);
    if (len < VXLAN_HLEN + hdrs) break;
    let same = true;
    for (let i = 0; i < VXLAN_HLEN + ETH_HLEN; i++) if (buf[p + i] !== buf[first + i]) same = false;
    if (!same) break;
    const off = p + VXLAN_HLEN;
    const ilen = len - VXLAN_HLEN;
    if (mergeable(buf, off, ilen) !== hdrs) break;
    const l4 = l4Of(buf, off);
    const udp = protoOf(buf, off, l4) === IPPROTO_UDP;
    const fl = udp ? 0 : buf[off + l4 + TCP_OFF_FLAGS];
    const plen = ilen - hdrs;
    if (plen > mss || (!udp && readU32(buf, off + l4 + TCP_OFF_SEQ) !== next) || cur + plen > max) break;
    if (groSegmentJs(buf, off, ilen, hdrs, ref, ref + cur) !== 1) break;
    cur += plen;
    if (!udp) next = (next + plen) >>> 0;
    count++;
    bytes += len;
    if ((fl & TCP_FLAG_PSH) !== 0) {
      buf[ref + l4 + TCP_OFF_FLAGS] |= TCP_FLAG_PSH;
      why = 1;
    } else if (plen < mss) {
      why = 2;
    }
  }
  state[0] = cur;
  state[2] = next | 0;
  state[4] = bytes;
  state[5] = why;
  return count;
}
