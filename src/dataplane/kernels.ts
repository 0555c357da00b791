/**
 * The data plane's per-byte kernels: the ones'-complement sum, TSO segmentation, and the GRO segment and run steps.
 * Each has a JS reference (jsKernels: what the unit tests over fake I/O run) and a native version in the addon
 * (nativeKernels: what the agent runs). The data plane takes one set as an option, like its I/O, and checks every
 * function that is not the JS reference against it before it forwards a packet (checkKernels): a native kernel
 * that disagrees is a build or platform bug, and the agent refuses to start rather than corrupt traffic.
 */
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_OFF_PROTO,
  IPV6_OFF_NEXT_HDR,
  TCP_OFF_CSUM,
  TCP_OFF_SEQ,
  UDP_HLEN,
  UDP_OFF_CSUM,
  VXLAN_HLEN,
} from '../vxlan/constants.js';
import { finish, type Sum16, sum16 } from '../vxlan/checksum.js';
import { readU32, writeU16, writeU32 } from '../vxlan/ethernet.js';
import { type TsoSplit, tsoSplitJs } from '../vxlan/gso.js';
import { sampleTcpV4Frame, sampleTcpV6Frame, sampleUdpFrame } from '../vxlan/samples.js';
import { native } from '../sys/native.js';
import { type GroRun, groRunJs, type GroSegment, groSegmentJs, L3, L4, L4_V6, l4Of, protoOf, pseudoOf } from './gro.js';

export interface Kernels {
  sum16: Sum16;
  tsoSplit: TsoSplit;
  groSegment: GroSegment;
  groRun: GroRun;
}

/** The JS references. */
export const jsKernels: Readonly<Kernels> = Object.freeze({
  sum16,
  tsoSplit: tsoSplitJs,
  groSegment: groSegmentJs,
  groRun: groRunJs,
});

/** The native addon's kernels (not yet checked: the data plane checks them). */
export function nativeKernels(): Kernels {
  const n = native();
  return { sum16: n.sum16, tsoSplit: n.tsoSplit, groSegment: n.groSegment, groRun: n.groRun };
}

/** Checks every kernel that is not its JS reference against it; throws on the first disagreement. */
export function checkKernels(k: Kernels): void {
  if (k.sum16 !== jsKernels.sum16) checkSum16(k.sum16);
  if (k.tsoSplit !== jsKernels.tsoSplit) checkTsoSplit(k.tsoSplit);
  if (k.groSegment !== jsKernels.groSegment) checkGroSegment(k.groSegment);
  if (k.groRun !== jsKernels.groRun) checkGroRun(k.groRun);
}

/** Checks a sum16 against the JS one on odd and even offsets and lengths. */
export function checkSum16(f: Sum16): void {
  const buf = new Uint8Array(3001);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 131 + 7) & 0xff;
  for (const [a, b, init] of [
    [0, 0, 0],
    [0, 1, 0],
    [1, 2, 0xffff],
    [3, 1500, 0x1234],
    [14, 3001, 0xfffe],
    [7, 2048, 0x1ffff],
  ]) {
    if (f(buf, a, b, init) !== sum16(buf, a, b, init))
      throw new Error(`sum16 replacement disagrees with the JS sum16 on [${a}, ${b}) + ${init}`);
  }
}

/** Checks a tsoSplit: it must write the same bytes and results as tsoSplitJs. */
export function checkTsoSplit(f: TsoSplit): void {
  const cases: [
    number,
    number,
    { v6?: boolean; udp?: boolean; vlan?: boolean; ipOpts?: boolean; tcpOpts?: boolean; flags?: number },
  ][] = [
    [0, 1448, {}],
    [1, 1448, {}],
    [1448, 1448, {}],
    [1449, 1448, { flags: 0x19 }],
    [65000, 1398, { flags: 0x98 }],
    [4000, 7, { vlan: true }],
    [3001, 1000, { ipOpts: true, tcpOpts: true, flags: 0x99 }],
    [0, 1428, { v6: true }],
    [1429, 1428, { v6: true, flags: 0x19 }],
    [65000, 1378, { v6: true, tcpOpts: true, flags: 0x98 }],
    [4000, 7, { v6: true, vlan: true }],
    [0, 1200, { udp: true }],
    [1200, 1200, { udp: true }],
    [30001, 1200, { udp: true, ipOpts: true }],
    [60000, 1452, { udp: true, v6: true, vlan: true }],
  ];
  const outA = new Int32Array(3);
  const outB = new Int32Array(3);
  for (const [payload, mss, opts] of cases) {
    const frame = opts.udp
      ? sampleUdpFrame(payload, opts)
      : opts.v6
        ? sampleTcpV6Frame(payload, opts)
        : sampleTcpV4Frame(payload, opts);
    for (const vni of [-1, 0xabcdef]) {
      const size = 3 + frame.length + 2 * (frame.length + 64 * Math.ceil(payload / mss + 1)) + 200;
      const a = new Uint8Array(size);
      a.set(frame, 3);
      const b = a.slice();
      const ra = f(a, 3, frame.length, mss, frame.length + 9, 8, vni, outA);
      const rb = tsoSplitJs(b, 3, frame.length, mss, frame.length + 9, 8, vni, outB);
      if (ra !== rb || outA.join() !== outB.join() || !a.every((x, i) => x === b[i])) {
        throw new Error(
          `tsoSplit replacement disagrees with tsoSplitJs on a ${payload}-byte payload, mss ${mss}, vni ${vni}`,
        );
      }
    }
  }
}

/** A frame's TCP or UDP checksum recomputed in place (after a test edited it), for IPv4 or IPv6 alike. */
function fixChecksum(f: Uint8Array, off: number, len: number): void {
  const l4 = l4Of(f, off);
  const proto = protoOf(f, off, l4);
  const at = off + l4 + (proto === IPPROTO_UDP ? UDP_OFF_CSUM : TCP_OFF_CSUM);
  f[at] = 0;
  f[at + 1] = 0;
  const c = finish(sum16(f, off + l4, off + len, pseudoOf(f, off, len, l4, proto)));
  writeU16(f, at, proto === IPPROTO_UDP && c === 0 ? 0xffff : c);
}

/** Checks a groSegment against groSegmentJs, over TCP and UDP on IPv4 and IPv6: bad checksums, each header field
 * that must match, and the copy. */
export function checkGroSegment(f: GroSegment): void {
  for (const udp of [false, true]) {
    for (const v6 of [false, true]) {
      const mkFrame = (seed: number): Uint8Array =>
        udp
          ? sampleUdpFrame(1200, { v6, seed })
          : v6
            ? sampleTcpV6Frame(1428, { tcpOpts: true, seed })
            : sampleTcpV4Frame(1448, { tcpOpts: true, seed });
      const base = mkFrame(1);
      const l4 = v6 ? L4_V6 : L4;
      const hdrs = udp ? l4 + UDP_HLEN : l4 + 32;
      const what = `${udp ? 'UDP' : 'TCP'}/IPv${v6 ? 6 : 4}`;
      // IP fields compared: IPv4 TOS, DF/MF byte, TTL, protocol, addresses; IPv6 version/class/flow label, next
      // header, hop limit, addresses. Not compared: the IPv4 total length / IPv6 payload length (L3 + 4 in both)
      const ipEdits = v6
        ? [L3 + 1, L3 + 3, L3 + 6, L3 + 7, L3 + 8, L3 + 39]
        : [L3 + 1, L3 + 6, L3 + 8, L3 + 12, L3 + 19];
      // ports; TCP: seq (not compared), ack, flags, window, options; UDP: the length (not compared)
      const l4Edits = udp ? [l4 + 1, l4 + 3, l4 + 5] : [l4 + 1, l4 + 3, l4 + 4, l4 + 9, l4 + 15, l4 + 25];
      // [offset of a byte to change in the offered segment (-1: none), whether its checksum is then fixed]
      const edits: [number, boolean][] = [
        [-1, true],
        [hdrs + 100, false],
        [0, true],
        [11, true],
        ...[...ipEdits, ...l4Edits].map((o): [number, boolean] => [o, true]),
        [L3 + 4, true],
      ];
      for (const [at, fix] of edits) {
        for (const withRef of [false, true]) {
          const a = new Uint8Array(3 * base.length + 64);
          a.set(base, 0); // the pending frame
          const seg = mkFrame(2);
          seg.set(base.subarray(0, hdrs), 0); // the same flow as the pending frame ...
          seg[udp ? hdrs + 1 : l4 + 4] ^= 1; // ... with other data (TCP: at another sequence number)
          if (at >= 0) seg[at] ^= 0x5a;
          // keep the checksum right so only the edited field decides (the IPv4 header checksum is not checked)
          if (fix) fixChecksum(seg, 0, seg.length);
          a.set(seg, base.length + 7);
          const b = a.slice();
          const ref = withRef ? 0 : -1;
          const dst = withRef ? 2 * base.length + 9 : -1;
          const ra = f(a, base.length + 7, seg.length, hdrs, ref, dst);
          const rb = groSegmentJs(b, base.length + 7, seg.length, hdrs, ref, dst);
          const end = ra === 1 ? a.length : 2 * base.length + 9; // past the pending frame: scratch unless appended
          if (ra !== rb || !a.subarray(0, end).every((x, i) => x === b[i]))
            throw new Error(
              `groSegment replacement disagrees with groSegmentJs (${what}, byte ${at} changed, ref ${ref}): ${ra} vs ${rb}`,
            );
          if (at === -1 && withRef && ra !== 1)
            throw new Error(
              `groSegment reference check: an unedited ${what} segment of the flow was not appended (${ra})`,
            );
        }
      }
    }
  }
}

/**
 * Checks a groRun against groRunJs on GRO buffers of consecutive TCP segments, and of UDP
 * datagrams, of one flow (IPv4 and IPv6) with, at each position in turn, one datagram that must end the run (other
 * VXLAN header, other MAC, PSH, short, a gap in sequence, a bad checksum, another protocol, no UDP checksum,
 * another port), and with a maxTotal that ends it.
 */
export function checkGroRun(f: GroRun): void {
  const mss = 1000;
  const n = 8;
  for (const udp of [false, true]) {
    for (const v6 of [false, true]) {
      const l4 = v6 ? L4_V6 : L4;
      const hdrs = udp ? l4 + UDP_HLEN : l4 + 20;
      const step = VXLAN_HLEN + hdrs + mss;
      const mk = (i: number, edit: string): Uint8Array => {
        const d = new Uint8Array(step);
        const plen = edit === 'short' ? mss - 10 : mss;
        const shape = { flags: edit === 'psh' ? 0x18 : 0x10 };
        const fr = udp
          ? sampleUdpFrame(plen, { v6 })
          : v6
            ? sampleTcpV6Frame(plen, shape)
            : sampleTcpV4Frame(plen, shape);
        d.set(fr, VXLAN_HLEN);
        d[0] = 0x08;
        d[6] = edit === 'vni' ? 9 : 7;
        const t = VXLAN_HLEN + l4;
        if (udp)
          d[VXLAN_HLEN + hdrs] = i; // each datagram its own data
        else writeU32(d, t + TCP_OFF_SEQ, (readU32(d, t + TCP_OFF_SEQ) + i * mss + (edit === 'gap' ? 1 : 0)) >>> 0);
        if (edit === 'mac') d[VXLAN_HLEN + 5] ^= 1;
        if (edit === 'proto')
          d[VXLAN_HLEN + L3 + (v6 ? IPV6_OFF_NEXT_HDR : IPV4_OFF_PROTO)] = udp ? IPPROTO_TCP : IPPROTO_UDP;
        if (edit === 'flow' && v6) d[VXLAN_HLEN + L3 + 3] ^= 1; // another flow label
        if (edit === 'port') d[t + 1] ^= 1;
        const ilen = VXLAN_HLEN + fr.length;
        fixChecksum(d, VXLAN_HLEN, fr.length);
        if (edit === 'csum') d[t + (udp ? 8 : 16)] ^= 0xff;
        if (edit === 'nocsum' && udp) writeU16(d, t + UDP_OFF_CSUM, 0);
        return d.subarray(0, ilen);
      };
      const edits = [
        '',
        'vni',
        'mac',
        'short',
        'csum',
        'proto',
        'max',
        'port',
        ...(udp ? ['nocsum'] : ['psh', 'gap']),
        ...(v6 ? ['flow'] : []),
      ];
      for (const edit of edits) {
        for (let at = 1; at < n; at++) {
          const a = new Uint8Array(2 * n * step + 128); // the inputs, then the pending frame (grows by < n * mss)
          let end = 0;
          for (let i = 0; i < n; i++) {
            const d = mk(i, i === at ? edit : '');
            a.set(d, i * step);
            end = i * step + d.length;
          }
          const ref = n * step + 64;
          a.copyWithin(ref, VXLAN_HLEN, step); // the pending frame: the first datagram's inner frame
          const seq = udp ? 12345 : (readU32(a, VXLAN_HLEN + l4 + TCP_OFF_SEQ) + mss) | 0;
          const st = Int32Array.of(step - VXLAN_HLEN, mss, seq, edit === 'max' ? at * mss + hdrs : n * step, 0, 0);
          const b = a.slice();
          const sb = st.slice();
          const ra = f(a, 0, step, end, step, ref, hdrs, st);
          const rb = groRunJs(b, 0, step, end, step, ref, hdrs, sb);
          const upto = ref + st[0]; // bytes past the pending frame's end are scratch
          const what = `${udp ? 'UDP' : 'TCP'}/IPv${v6 ? 6 : 4}`;
          if (ra !== rb || st.join() !== sb.join() || !a.subarray(0, upto).every((x, i) => x === b[i])) {
            throw new Error(
              `groRun replacement disagrees with groRunJs (${what}, ${edit || 'no edit'} at ${at}): ${ra} vs ${rb}`,
            );
          }
          if (edit === '' && ra !== n - 1)
            throw new Error(`groRun reference check: an unbroken ${what} run took ${ra} of ${n - 1}`);
          // a short datagram can only be a GRO buffer's last: in the middle its IP length does not fit its slot
          const takes = edit === 'psh' || (edit === 'short' && at === n - 1) ? at : at - 1;
          if (edit !== '' && ra !== takes)
            throw new Error(
              `groRun reference check: ${what} ${edit} at ${at} did not end the run where it should (${ra})`,
            );
        }
      }
    }
  }
}
