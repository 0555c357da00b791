/**
 * Receive: wire -> container. The functions in this file run in the order a datagram meets them:
 *
 *   1. recv      one recvmmsg batch from the VXLAN socket into the rcv arena, each datagram at HEADROOM; with UDP
 *                GRO a buffer holds several datagrams of one size (the last shorter), taken one by one
 *   2. check     truncated (rx_truncated), shorter than VXLAN + Ethernet (rx_short)
 *   3. vtep      outer source address must be a known VTEP (RFC 7348 section 7) (rx_unknown_vtep)
 *   4. decap     flags octet exactly I (rx_bad_flags); VNI configured here (rx_unknown_vni); the inner frame is
 *                a subarray, nothing is copied. Encrypted networks: while this host has any, the batch's sealed
 *                datagrams are opened first, in one aeadOpen call (openSealed below: key, replay window, tag);
 *                an opened one continues here as a plain datagram 12 bytes further on, a plaintext datagram
 *                for an encrypted network is dropped (rx_unsealed)
 *   5. source    inner source MAC: never a group address (rx_group_src_mac) nor a local endpoint's
 *                (rx_src_mac_local)
 *   6. deliver   group destination -> every local endpoint of the VNI; unicast -> the local endpoint that owns
 *                the MAC, else rx_no_local_dst (frames from the wire never go back to the wire: split horizon);
 *                a delivered frame's source MAC is learned against the outer source when the VNI learns
 *                (bounded; snoop); a dropped one teaches nothing; a unicast TCP/UDP frame whose checksum field
 *                holds only the pseudo-header sum (a Linux sender with checksum offload on the same machine or
 *                hypervisor) gets its checksum completed (rx_csum_completed; gso.ts completePartialChecksum);
 *                with offloads, in-order TCP segments and equal-sized UDP datagrams of one flow for one endpoint
 *                are merged into super-frames (gro.ts); the rest of a UDP GRO buffer that continues the same
 *                super-frame is taken in one call (Gro.run)
 *   7. flush     one writeBatch for all TAP writes of the batch
 */
import { ETH_HLEN, ETH_OFF_DST, ETH_OFF_SRC, VXLAN_FLAG_I, VXLAN_HLEN } from '../vxlan/constants.js';
import { OpenBatch, readSealCounter, SEAL_HLEN, SEAL_OVERHEAD, SEALED_FLAGS } from '../fdb/sec.js';
import { isGroupMac, readMac } from '../vxlan/mac.js';
import { readVni, vxlanFlagsValid } from '../vxlan/vxlan.js';
import { completePartialChecksum } from '../vxlan/gso.js';
import type { FdbEntry, Peer, Vnet } from '../fdb/fdb.js';
import type { RcvContext } from './context.js';
import type { Port } from './port.js';

/** Receives and forwards one batch from the VXLAN socket. Returns the number of datagrams received. */
export function rcv(dp: RcvContext): number {
  const r = dp.rx;
  const { arena, lens, addrs, out } = r;
  const c = dp.counters;
  const fdb = dp.fdb;
  const sum = dp.kernels.sum16;
  // 1. recv
  const gsoSizes = r.gsoSizes;
  const n = dp.io.recvBatch(dp.udpFd, arena, dp.slotSize, dp.headroom, dp.batch, lens, addrs, gsoSizes);
  if (n === 0) return 0;
  c.rx_batches++;
  const now = dp.now();
  const gro = r.gro;
  gro?.reset();
  const compacted = fdb.sealed !== 0 ? openSealed(dp, n) : null;
  for (let i = 0; i < n; i++) {
    const boff = i * dp.slotSize + dp.headroom;
    const blen = lens[i];
    // 2. check
    if (blen < 0) {
      c.rx_truncated++;
      continue;
    }
    // the outer source is one per buffer (a UDP GRO buffer is one sender's): look its VTEP up once
    const src = addrs[2 * i];
    const peer = fdb.peer(src);
    const step = gsoSizes !== null && gsoSizes[i] > 0 ? gsoSizes[i] : blen;
    // a GRO buffer of sealed datagrams, all opened and moved together: plain VXLAN now, and authenticated (its
    // datagrams still count the bytes they had on the wire)
    const opened = compacted !== null && compacted[i] !== 0;
    const extra = opened ? SEAL_OVERHEAD : 0;
    if (step < blen) c.rx_gro_buffers++;
    // at least once: an empty datagram is still a datagram (rx_short), never silently skipped
    for (let seg = boff, first = true; first || seg < boff + blen; seg += step, first = false) {
      const dlen = Math.min(step, boff + blen - seg);
      c.rx_datagrams++;
      c.rx_bytes += dlen + extra;
      if (dlen < VXLAN_HLEN + ETH_HLEN) {
        c.rx_short++;
        continue;
      }
      // 3. vtep
      if (peer === undefined) {
        c.rx_unknown_vtep++;
        continue;
      }
      peer.rx_packets++;
      peer.rx_bytes += dlen + extra;
      // 4. decap (an opened datagram: its VXLAN header was moved up to the frame; a dropped one is counted)
      let off = seg;
      let len = dlen;
      const f = arena[seg];
      if (f === OPENED) {
        off += SEAL_HLEN;
        len -= SEAL_OVERHEAD;
      } else if (f === DROPPED) continue;
      else if (f === SEALED_FLAGS) {
        c.rx_sealed_unexpected++;
        continue;
      }
      if (!vxlanFlagsValid(arena, off)) {
        c.rx_bad_flags++;
        continue;
      }
      const v = fdb.vnets.get(readVni(arena, off));
      if (v === undefined) {
        c.rx_unknown_vni++;
        continue;
      }
      if (v.sec !== null && f !== OPENED && !opened) {
        c.rx_unsealed++;
        continue;
      }
      const inner = off + VXLAN_HLEN;
      const ilen = len - VXLAN_HLEN;
      // 5. source
      if (isGroupMac(arena, inner + ETH_OFF_SRC)) {
        c.rx_group_src_mac++;
        continue;
      }
      // MACs are looked up in place (fdb/mactable.ts): a MAC as one number would be boxed per lookup
      const se = v.entries.getAt(arena, inner + ETH_OFF_SRC);
      if (se !== undefined && se.local !== null) {
        c.rx_src_mac_local++;
        continue;
      }
      // 6. deliver (a frame that is dropped here teaches nothing: only delivered frames are snooped)
      const vs = v.counters;
      vs.rx_packets++;
      vs.rx_bytes += ilen;
      if (isGroupMac(arena, inner + ETH_OFF_DST)) {
        if (v.learning) snoop(dp, v, se, arena, inner, src, now, peer);
        gro?.flush(); // keep order with any pending super-frame
        const locals = v.locals;
        for (let j = 0; j < locals.length; j++) out.tap(locals[j], inner, ilen);
        c.rx_frames += locals.length;
        continue;
      }
      const e = fdb.lookupAt(v, arena, inner + ETH_OFF_DST, now);
      if (e === undefined || e.local === null) {
        c.rx_no_local_dst++;
        continue;
      }
      if (v.learning) snoop(dp, v, se, arena, inner, src, now, peer);
      c.rx_frames++;
      // a Linux sender with checksum offload next to us (veth, virtio) leaves partial TCP/UDP checksums
      if (completePartialChecksum(arena, inner, ilen, sum)) c.rx_csum_completed++;
      if (gro !== null && e.local.vnetHdrLen !== 0 && gro.offer(e.local, arena, inner, ilen)) {
        // the datagrams after it in this GRO buffer that continue the same super-frame (same VXLAN and Ethernet
        // headers, so every check and lookup above would answer the same) are taken in one call
        // (not for opened datagrams: those after it are at other offsets, each is taken on its own)
        const m = step < blen && f !== OPENED ? gro.run(arena, off, off + step, boff + blen, step) : 0;
        if (m > 0) {
          const b = gro.runBytes + m * extra;
          c.rx_datagrams += m;
          c.rx_bytes += b;
          c.rx_frames += m;
          peer.rx_packets += m;
          peer.rx_bytes += b;
          vs.rx_packets += m;
          vs.rx_bytes += b - m * (VXLAN_HLEN + extra);
          seg += m * step;
        }
        continue;
      }
      out.tap(e.local, inner, ilen);
    }
  }
  // 7. flush
  gro?.flush();
  out.flush();
  return n;
}

/** What openSealed leaves in a sealed datagram's flags octet: opened (its VXLAN header now sits SEAL_HLEN
 * further on, in front of the frame), or dropped and counted. Neither is a valid VXLAN flags octet. */
const OPENED = 0xff;
const DROPPED = 0xfe;

/**
 * Opens the batch's sealed datagrams in place, in one aeadOpen call: for each, its network must be encrypted here
 * (rx_sealed_unexpected), the sender must have a key of that id (rx_unknown_key), and its counter must be new to
 * the replay window (rx_replay, rx_too_old: checked before the decryption, so a replay costs none). After the
 * call a datagram whose tag verified commits its counter (a second copy in the same batch is a replay); one that
 * did not is rx_bad_tag and moves nothing. Datagrams from unknown VTEPs or too short for a VXLAN and Ethernet
 * header are left to the main loop, which counts them as it would any other.
 */
function openSealed(dp: RcvContext, n: number): Uint8Array | null {
  const r = dp.rx;
  const { arena, lens, addrs } = r;
  const c = dp.counters;
  const fdb = dp.fdb;
  const gsoSizes = r.gsoSizes;
  let ob = r.open;
  let gro = 0; // GRO buffers that may be compacted after the opening
  for (let i = 0; i < n; i++) {
    const boff = i * dp.slotSize + dp.headroom;
    const blen = lens[i];
    if (ob !== null) ob.compacted[i] = 0;
    if (blen < 0) continue;
    const src = addrs[2 * i];
    if (fdb.peer(src) === undefined) continue;
    const step = gsoSizes !== null && gsoSizes[i] > 0 ? gsoSizes[i] : blen;
    if (step < blen && arena[boff] === SEALED_FLAGS) gro++;
    for (let off = boff, first = true; first || off < boff + blen; off += step, first = false) {
      if (arena[off] !== SEALED_FLAGS) continue;
      const len = Math.min(step, boff + blen - off);
      if (len < VXLAN_HLEN + ETH_HLEN) continue;
      if (len < VXLAN_HLEN + SEAL_OVERHEAD + ETH_HLEN) {
        c.rx_short++;
        arena[off] = DROPPED;
        continue;
      }
      const sec = fdb.vnets.get(readVni(arena, off))?.sec ?? null;
      if (sec === null) {
        c.rx_sealed_unexpected++;
        arena[off] = DROPPED;
        continue;
      }
      const k = sec.rxKey(src, arena[off + VXLAN_HLEN]);
      if (k === undefined) {
        c.rx_unknown_key++;
        arena[off] = DROPPED;
        continue;
      }
      const ctr = readSealCounter(arena, off);
      const verdict = k.window.check(ctr);
      if (verdict !== 'ok') {
        if (verdict === 'replay') c.rx_replay++;
        else c.rx_too_old++;
        arena[off] = DROPPED;
        continue;
      }
      if (ob === null) ob = r.open = new OpenBatch(dp.batch * 64, dp.batch);
      if (ob.count === ob.max) openBatch(dp, ob);
      const j = ob.count++;
      ob.descs[3 * j] = off;
      ob.descs[3 * j + 1] = len;
      ob.descs[3 * j + 2] = k.slot;
      ob.keys[j] = k;
      ob.counters[j] = ctr;
    }
  }
  if (ob !== null && ob.count > 0) openBatch(dp, ob);
  if (ob === null) return null;
  if (gro !== 0) for (let i = 0; i < n; i++) compact(dp, ob, i);
  return ob.compacted;
}

/**
 * A UDP GRO buffer whose datagrams all opened becomes the plain GRO buffer those datagrams would have made: each
 * datagram's VXLAN header and frame move down over the crypto headers and tags before them, the segment size
 * shrinks by SEAL_OVERHEAD, so the main loop takes the buffer as it takes a plaintext one, and Gro.run merges the
 * rest of it in one call instead of one segment at a time. A memmove of the buffer costs far less than its
 * decryption. A buffer with any datagram not opened is left as it is (each datagram on its own).
 */
function compact(dp: RcvContext, ob: OpenBatch, i: number): void {
  const r = dp.rx;
  const { arena, lens } = r;
  const gsoSizes = r.gsoSizes!;
  const blen = lens[i];
  const step = gsoSizes[i];
  if (blen < 0 || step <= 0 || step >= blen) return;
  const boff = i * dp.slotSize + dp.headroom;
  const end = boff + blen;
  for (let off = boff; off < end; off += step) if (arena[off] !== OPENED) return;
  let to = boff;
  for (let off = boff; off < end; off += step) {
    const len = Math.min(step, end - off) - SEAL_OVERHEAD; // the plain datagram: VXLAN header and frame
    arena.copyWithin(to, off + SEAL_HLEN, off + SEAL_HLEN + len);
    to += len;
  }
  lens[i] = to - boff;
  gsoSizes[i] = step - SEAL_OVERHEAD;
  ob.compacted[i] = 1;
}

function openBatch(dp: RcvContext, ob: OpenBatch): void {
  const arena = dp.rx.arena;
  const c = dp.counters;
  const n = ob.count;
  ob.count = 0;
  dp.aead!.aeadOpen(arena, ob.descs, n);
  for (let j = 0; j < n; j++) {
    const off = ob.descs[3 * j];
    const k = ob.keys[j]!;
    ob.keys[j] = null;
    if (ob.descs[3 * j + 1] < 0) {
      c.rx_bad_tag++;
      arena[off] = DROPPED;
      continue;
    }
    const ctr = ob.counters[j];
    if (k.window.check(ctr) !== 'ok') {
      c.rx_replay++; // the same counter twice in this batch
      arena[off] = DROPPED;
      continue;
    }
    k.window.commit(ctr);
    c.rx_opened++;
    // the VXLAN header moves up to the frame; the flags octet where it was says so
    arena.copyWithin(off + SEAL_HLEN, off, off + VXLAN_HLEN);
    arena[off + SEAL_HLEN] = VXLAN_FLAG_I;
    arena[off] = OPENED;
  }
}

/** Learns (or refreshes) the inner source MAC against the outer source VTEP, unless a higher kind owns it. */
function snoop(
  dp: RcvContext,
  v: Vnet<Port>,
  se: FdbEntry<Port> | undefined,
  arena: Uint8Array,
  inner: number,
  src: number,
  now: number,
  peer: Peer,
): void {
  if (se !== undefined && se.kind !== 'learned') return;
  if (se !== undefined && se.vtep === src) {
    se.updated = now; // snoop()'s "refreshed", without a second lookup
    return;
  }
  const c = dp.counters;
  const res = dp.fdb.snoop(v, readMac(arena, inner + ETH_OFF_SRC), src, dp.vxlanPort, now, peer);
  if (res === 'new') c.learned++;
  else if (res === 'moved') c.moved++;
  else if (res === 'full') c.rx_learn_full++;
}
