/**
 * Receive: wire -> container. The functions in this file run in the order a datagram meets them:
 *
 *   1. recv      one recvmmsg batch from the VXLAN socket into the rcv arena, each datagram at HEADROOM; with UDP
 *                GRO a buffer holds several datagrams of one size (the last shorter), taken one by one
 *   2. check     truncated (rx_truncated), shorter than VXLAN + Ethernet (rx_short)
 *   3. vtep      outer source address must be a known VTEP (RFC 7348 section 7) (rx_unknown_vtep)
 *   4. decap     flags octet exactly I (rx_bad_flags); VNI configured here (rx_unknown_vni); the inner frame is
 *                a subarray, nothing is copied
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
import { ETH_HLEN, ETH_OFF_DST, ETH_OFF_SRC, VXLAN_HLEN } from '../vxlan/constants.js';
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
    if (step < blen) c.rx_gro_buffers++;
    // at least once: an empty datagram is still a datagram (rx_short), never silently skipped
    for (let off = boff, first = true; first || off < boff + blen; off += step, first = false) {
      const len = Math.min(step, boff + blen - off);
      c.rx_datagrams++;
      c.rx_bytes += len;
      if (len < VXLAN_HLEN + ETH_HLEN) {
        c.rx_short++;
        continue;
      }
      // 3. vtep
      if (peer === undefined) {
        c.rx_unknown_vtep++;
        continue;
      }
      peer.rx_packets++;
      peer.rx_bytes += len;
      // 4. decap
      if (!vxlanFlagsValid(arena, off)) {
        c.rx_bad_flags++;
        continue;
      }
      const v = fdb.vnets.get(readVni(arena, off));
      if (v === undefined) {
        c.rx_unknown_vni++;
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
        const m = step < blen ? gro.run(arena, off, off + step, boff + blen, step) : 0;
        if (m > 0) {
          const b = gro.runBytes;
          c.rx_datagrams += m;
          c.rx_bytes += b;
          c.rx_frames += m;
          peer.rx_packets += m;
          peer.rx_bytes += b;
          vs.rx_packets += m;
          vs.rx_bytes += b - m * VXLAN_HLEN;
          off += m * step;
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
