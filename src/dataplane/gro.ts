/**
 * Receive-side merging (GRO) for endpoints whose TAP takes virtio-net headers: consecutive in-order TCP segments
 * of one flow, arriving in one receive batch for one endpoint, are joined into one super-frame and written with
 * a GSO header (TCPV4, gso_size = the segment payload size, NEEDS_CSUM with the pseudo-header sum), so the
 * container's stack takes one skb where it would take dozens. The rules follow Linux's tcp_gro_receive:
 *   - IPv4 without options or fragmentation, TCP with only ACK/PSH set, a non-empty payload;
 *   - Ethernet header, IPv4 addresses/TOS/TTL/DF, TCP ports, ack, window, data offset and options identical;
 *   - sequence number = where the previous one ended; every segment but the last exactly `mss` long;
 *   - PSH ends the merge (it goes in, then the super-frame is written); at most 64 KB in all;
 *   - the segment's own TCP checksum verifies (as Linux validates before merging): the super-frame is written
 *     with NEEDS_CSUM, which the receiving stack does not re-check, so a bad segment must never be merged.
 * Anything else is written as it came, after the pending super-frame (so a flow's order is kept).
 */
import {
  ETH_HLEN,
  ETH_OFF_TYPE,
  ETH_P_IP,
  IPPROTO_TCP,
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
  TCP_FLAG_ACK,
  TCP_FLAG_PSH,
  TCP_OFF_CSUM,
  TCP_OFF_DOFF,
  TCP_OFF_FLAGS,
  TCP_OFF_SEQ,
} from '../vxlan/constants.js';
import { finish, internetChecksum, pseudoSumV4, sum16 } from '../vxlan/checksum.js';
import { readU16, readU32, writeU16 } from '../vxlan/ethernet.js';
import { sampleTcpV4Frame, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_HDR_LEN, writeU16le } from '../vxlan/gso.js';
import type { Counters } from './counters.js';
import type { OutQueue } from './out.js';
import type { Port } from './port.js';

const L3 = ETH_HLEN;
const L4 = ETH_HLEN + IPV4_HLEN_MIN;
const MAX_TOTAL = 65535 - 64;

export class Gro {
  private port: Port | null = null;
  private start = 0; // where the pending super-frame's virtio-net header begins in the arena
  private hdrs = 0; // Ethernet + IPv4 + TCP header bytes
  private len = 0; // frame bytes so far (headers + payload)
  private mss = 0;
  private nextSeq = 0;
  private segs = 0;
  private shortSeen = false;
  private cursor = 0;

  constructor(
    private readonly arena: Uint8Array,
    private readonly base: number,
    private readonly out: OutQueue,
    private readonly c: Counters,
  ) {}

  /** Start of a batch: the region is free again (the previous batch was flushed). */
  reset(): void {
    this.port = null;
    this.cursor = this.base;
  }

  /** Offers one inner frame for `port`; returns false if it is not mergeable (the caller writes it). */
  offer(port: Port, a: Uint8Array, off: number, len: number): boolean {
    if (len < L4 + 20 || readU16(a, off + ETH_OFF_TYPE) !== ETH_P_IP || a[off + L3 + IPV4_OFF_VER_IHL] !== 0x45 || a[off + L3 + IPV4_OFF_PROTO] !== IPPROTO_TCP) {
      this.flush();
      return false;
    }
    if ((readU16(a, off + L3 + IPV4_OFF_FRAG) & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK)) !== 0 || readU16(a, off + L3 + IPV4_OFF_TOT_LEN) !== len - ETH_HLEN) {
      this.flush();
      return false;
    }
    const flags = a[off + L4 + TCP_OFF_FLAGS];
    const doff = (a[off + L4 + TCP_OFF_DOFF] >>> 4) * 4;
    const hdrs = L4 + doff;
    const plen = len - hdrs;
    if ((flags & ~(TCP_FLAG_ACK | TCP_FLAG_PSH)) !== 0 || (flags & TCP_FLAG_ACK) === 0 || doff < 20 || plen <= 0) {
      this.flush();
      return false;
    }
    const seq = readU32(a, off + L4 + TCP_OFF_SEQ);
    const extend = this.port === port && hdrs === this.hdrs && seq === this.nextSeq && !this.shortSeen && plen <= this.mss && this.len + plen <= MAX_TOTAL;
    const ref = this.start + VNET_HDR_LEN;
    const r = extend ? groSegment(a, off, len, hdrs, ref, ref + this.len) : groSegment(a, off, len, hdrs, -1, -1);
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
        this.arena[ref + L4 + TCP_OFF_FLAGS] |= TCP_FLAG_PSH;
        this.flush();
      }
      return true;
    }
    this.flush();
    if (this.cursor + VNET_HDR_LEN + MAX_TOTAL + 64 > this.arena.length) return false; // region full: write as is
    this.port = port;
    this.start = this.cursor;
    this.hdrs = hdrs;
    this.len = len;
    this.mss = plen;
    this.nextSeq = (seq + plen) >>> 0;
    this.segs = 1;
    this.shortSeen = false;
    a.copyWithin(this.start + VNET_HDR_LEN, off, off + len);
    if ((flags & TCP_FLAG_PSH) !== 0) this.flush();
    return true;
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
      const ipLen = this.len - ETH_HLEN;
      writeU16(this.arena, f + L3 + IPV4_OFF_TOT_LEN, ipLen);
      writeU16(this.arena, f + L3 + IPV4_OFF_CSUM, 0);
      writeU16(this.arena, f + L3 + IPV4_OFF_CSUM, internetChecksum(this.arena, f + L3, f + L4));
      // CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the stack takes it as verified (it came
      // with a correct checksum per segment, and the outer UDP checksum covered every byte)
      const tcpLen = this.len - L4;
      const ps = pseudoSumV4(readU32(this.arena, f + L3 + IPV4_OFF_SRC), readU32(this.arena, f + L3 + IPV4_OFF_DST), IPPROTO_TCP, tcpLen);
      writeU16(this.arena, f + L4 + TCP_OFF_CSUM, ps);
      this.arena[h] = VNET_F_NEEDS_CSUM;
      this.arena[h + 1] = VNET_GSO_TCPV4;
      writeU16le(this.arena, h + 2, this.hdrs);
      writeU16le(this.arena, h + 4, this.mss);
      writeU16le(this.arena, h + 6, L4);
      writeU16le(this.arena, h + 8, TCP_OFF_CSUM);
      this.c.rx_gro_frames++;
      this.c.rx_gro_segments += this.segs;
    }
    this.out.tap(port, h, VNET_HDR_LEN + this.len, true);
    this.cursor = h + ((VNET_HDR_LEN + this.len + 63) & ~63);
  }
}

/**
 * The per-segment work of Gro.offer, for an inner frame a[off..off+len) already checked for form (IPv4 without
 * options, TCP with `hdrs` bytes of headers): -1 if its TCP checksum does not verify; 0 if it verifies and ref < 0
 * or it is not of the flow of the pending super-frame at a[ref..] (everything but seq, IPv4 id/length/checksum,
 * TCP checksum and PSH must match: Ethernet header, TOS, DF/MF byte, TTL, protocol, addresses, ports, ack, data
 * offset, window, options); 1 if it verifies, is of that flow, and its payload has been copied to a[dst..].
 * a[dst..dst + payload) is scratch unless the result is 1: the native version copies while it sums.
 */
export type GroSegment = (a: Uint8Array, off: number, len: number, hdrs: number, ref: number, dst: number) => number;

/** GroSegment in JS: the reference the native one is checked against. */
export function groSegmentJs(a: Uint8Array, off: number, len: number, hdrs: number, ref: number, dst: number): number {
  if (finish(sum16(a, off + L4, off + len, pseudoSumV4(readU32(a, off + L3 + IPV4_OFF_SRC), readU32(a, off + L3 + IPV4_OFF_DST), IPPROTO_TCP, len - L4))) !== 0) return -1;
  if (ref < 0) return 0;
  for (let i = 0; i < ETH_HLEN; i++) if (a[off + i] !== a[ref + i]) return 0;
  if (a[off + L3 + 1] !== a[ref + L3 + 1] || a[off + L3 + 6] !== a[ref + L3 + 6] || readU16(a, off + L3 + 8) !== readU16(a, ref + L3 + 8)) return 0;
  if (readU32(a, off + L3 + IPV4_OFF_SRC) !== readU32(a, ref + L3 + IPV4_OFF_SRC) || readU32(a, off + L3 + IPV4_OFF_DST) !== readU32(a, ref + L3 + IPV4_OFF_DST)) return 0;
  if (readU32(a, off + L4) !== readU32(a, ref + L4) || readU32(a, off + L4 + 8) !== readU32(a, ref + L4 + 8)) return 0;
  if (a[off + L4 + 12] !== a[ref + L4 + 12] || readU16(a, off + L4 + 14) !== readU16(a, ref + L4 + 14)) return 0;
  for (let i = L4 + 20; i < hdrs; i++) if (a[off + i] !== a[ref + i]) return 0;
  if (dst < 0) return 0;
  a.copyWithin(dst, off + hdrs, off + len);
  return 1;
}

/**
 * The per-segment step Gro.offer calls: groSegmentJs until useGroSegment() installs the native addon's (one call
 * per segment instead of a checksum call, a JS header compare and a copy). A live binding.
 */
export let groSegment: GroSegment = groSegmentJs;

/** Installs `f` as groSegment after checking it against groSegmentJs: bad checksums, each header field that
 * must match, and the copy. */
export function useGroSegment(f: GroSegment): void {
  const base = sampleTcpV4Frame(1448, { tcpOpts: true });
  const hdrs = L4 + 32;
  // [offset of a byte to change in the offered segment (-1: none), whether its checksum is then fixed]
  const edits: [number, boolean][] = [[-1, true], [hdrs + 100, false], [0, true], [11, true], [L3 + 1, true], [L3 + 6, true], [L3 + 8, true], [L3 + 12, true], [L3 + 19, true], [L4 + 1, true], [L4 + 3, true], [L4 + 4, true], [L4 + 9, true], [L4 + 15, true], [L4 + 25, true], [L3 + 4, true]];
  for (const [at, fix] of edits) {
    for (const withRef of [false, true]) {
      const a = new Uint8Array(3 * base.length + 64);
      a.set(base, 0); // the pending frame
      const seg = sampleTcpV4Frame(1448, { tcpOpts: true, seed: 1 });
      if (at >= 0) {
        seg[at] ^= 0x5a;
        if (fix) {
          // keep the checksums right so only the edited field decides (the IPv4 header checksum is not checked)
          seg[L4 + 16] = 0;
          seg[L4 + 17] = 0;
          writeU16(seg, L4 + 16, finish(sum16(seg, L4, seg.length, pseudoSumV4(readU32(seg, L3 + 12), readU32(seg, L3 + 16), IPPROTO_TCP, seg.length - L4))));
        }
      }
      a.set(seg, base.length + 7);
      const b = a.slice();
      const ref = withRef ? 0 : -1;
      const dst = withRef ? 2 * base.length + 9 : -1;
      const ra = f(a, base.length + 7, seg.length, hdrs, ref, dst);
      const rb = groSegmentJs(b, base.length + 7, seg.length, hdrs, ref, dst);
      const end = ra === 1 ? a.length : 2 * base.length + 9; // past the pending frame: scratch unless appended
      if (ra !== rb || !a.subarray(0, end).every((x, i) => x === b[i])) throw new Error(`groSegment replacement disagrees with groSegmentJs (byte ${at} changed, ref ${ref}): ${ra} vs ${rb}`);
    }
  }
  groSegment = f;
}
