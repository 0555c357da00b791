/**
 * The forwarding database: per VNI, which MAC lives where.
 *
 * Design notes
 * - Keys are MACs as numbers (src/vxlan/mac.ts): a lookup is one Map.get with no allocation.
 * - Every entry has a kind. Priority local > static > kv > learned: a lower kind never replaces a higher one
 *   (a learned entry can never hijack a configured MAC, the kernel's rule for NUD_PERMANENT entries). A
 *   refused write returns false so the caller can count it.
 * - The all-zeros MAC holds the flood list: the VTEPs that get a copy of every broadcast, multicast and
 *   unknown-unicast frame of the VNI (head-end replication, as `bridge fdb append 00:00:00:00:00:00 dst VTEP`
 *   does for the kernel). It is kept as an array, `Vnet.flood`, because the data plane walks it per frame.
 * - Ageing (kernel vxlan_snoop / vxlan_cleanup): snoop() refreshes `updated` whenever a learned MAC is seen
 *   again; lookups stamp `used` for display; one periodic sweep() removes learned entries whose `updated` is
 *   older than the ageing time and returns when the next one is due. The clock is injected, so tests don't sleep.
 * - Learning is bounded per VNI (`maxLearned`): a flood of random source MACs from a remote host cannot make
 *   the agent allocate without bound.
 * - The set of known VTEPs (flood list members and remote destinations of static/kv entries, reference
 *   counted) answers the receive path's "is this datagram from a VTEP we know?" in one Map.get.
 */
import { readU32 } from '../vxlan/ethernet.js';
import { formatVtepPort } from '../common/vtep.js';
import { formatMac, MAC_ZERO } from '../vxlan/mac.js';
import { MacTable } from './mactable.js';
import type { VnetSec } from './sec.js';

export type FdbKind = 'local' | 'static' | 'kv' | 'learned';
const PRIORITY: Record<FdbKind, number> = { local: 3, static: 2, kv: 1, learned: 0 };

/** A local endpoint as the FDB sees it. The data plane's port type extends this. */
export interface LocalPort {
  readonly id: string;
  readonly mac: number;
}

/** A known remote VTEP: reference counted, with its traffic counters (one shape, bumped by the data plane). */
export class Peer {
  refs = 0;
  tx_packets = 0;
  tx_bytes = 0;
  rx_packets = 0;
  rx_bytes = 0;
  constructor(readonly vtep: number) {}
}

export interface FdbEntry<P extends LocalPort = LocalPort> {
  mac: number;
  kind: FdbKind;
  /** Remote VTEP (host-order IPv4) and its UDP port; 0/0 for a local entry. */
  vtep: number;
  port: number;
  local: P | null;
  /** The remote VTEP's counters (null for local entries). */
  peer: Peer | null;
  /** ms: created or last refreshed (learned entries age from here). */
  updated: number;
  /** ms: last time the data plane forwarded to it. */
  used: number;
}

/** A remote destination in the flood list. */
export interface Rdst {
  vtep: number;
  port: number;
  kind: FdbKind;
  peer: Peer;
}

/** Per-VNI traffic counters (one shape), bumped by the data plane. */
export class VniCounters {
  tx_packets = 0;
  tx_bytes = 0;
  rx_packets = 0;
  rx_bytes = 0;
}

/** One IPv6 address (four big-endian 32-bit words, unsigned) and its MAC, in a chain of a Vnet's `nd` table. */
export interface Nd6 {
  w0: number;
  w1: number;
  w2: number;
  w3: number;
  mac: number;
  next: Nd6 | null;
}

/** The MAC of the IPv6 address in buf[at..at+16], or -1: the data plane's lookup, reading the frame in place. */
export function ndGet(nd: Map<number, Nd6>, buf: Uint8Array, at: number): number {
  const w3 = readU32(buf, at + 12);
  for (let e = nd.get(w3 | 0) ?? null; e !== null; e = e.next) {
    if (e.w3 === w3 && e.w2 === readU32(buf, at + 8) && e.w1 === readU32(buf, at + 4) && e.w0 === readU32(buf, at))
      return e.mac;
  }
  return -1;
}

/** Sets (mac >= 0) or removes (mac < 0) the entry of a 16-byte address: the control plane's side. */
export function ndSet(nd: Map<number, Nd6>, addr: Uint8Array, mac: number): void {
  const w = [0, 4, 8, 12].map((i) => readU32(addr, i));
  const key = w[3] | 0;
  let head = nd.get(key) ?? null;
  let prev: Nd6 | null = null;
  for (let e = head; e !== null; prev = e, e = e.next) {
    if (e.w0 === w[0] && e.w1 === w[1] && e.w2 === w[2] && e.w3 === w[3]) {
      if (mac >= 0) {
        e.mac = mac;
        return;
      }
      if (prev) prev.next = e.next;
      else head = e.next;
      if (head) nd.set(key, head);
      else nd.delete(key);
      return;
    }
  }
  if (mac >= 0) nd.set(key, { w0: w[0], w1: w[1], w2: w[2], w3: w[3], mac, next: head });
}

export class Vnet<P extends LocalPort = LocalPort> {
  readonly vni: number;
  readonly entries = new MacTable<FdbEntry<P>>();
  /** The all-zeros entry: VTEPs that get BUM traffic. */
  flood: Rdst[] = [];
  /** Local endpoints of this VNI (each also has a 'local' entry). */
  locals: P[] = [];
  learned = 0;
  learning: boolean;
  /** ARP table: overlay IPv4 (host order) -> MAC, for answering ARP requests locally (filled by the control plane,
   * between batches: the data plane and the control plane share one thread). */
  arp = new Map<number, number>();
  /** Neighbour table for IPv6 (dual-stack networks): the same, for answering neighbour solicitations. Keyed by the
   * address's last 32 bits as an int32 (a small integer: no number boxed per lookup), each a chain of the
   * addresses that share them (see ndGet). */
  nd = new Map<number, Nd6>();
  /** Frames and bytes of this VNI, each direction. */
  readonly counters = new VniCounters();
  /** An encrypted network's keys (src/fdb/sec.ts); null: a plaintext network. */
  sec: VnetSec | null = null;
  constructor(vni: number, learning: boolean) {
    this.vni = vni;
    this.learning = learning;
  }
}

export interface FdbOptions {
  /** Learned entries expire this long after they were last seen (default 300 s, as the kernel). */
  ageingMs?: number;
  /** At most this many learned entries per VNI (default 16384). */
  maxLearned?: number;
  now?: () => number;
}

export type SnoopResult = 'new' | 'refreshed' | 'moved' | 'refused' | 'full';

export class FdbError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'FdbError';
    this.code = code;
  }
}

export class Fdb<P extends LocalPort = LocalPort> {
  readonly vnets = new Map<number, Vnet<P>>();
  readonly ageingMs: number;
  readonly maxLearned: number;
  readonly now: () => number;
  /** VNIs with keys (Vnet.sec set): the receive path looks for sealed datagrams only while there are any. */
  sealed = 0;
  /** VTEP IPv4 -> Peer (reference counted by flood list memberships + static/kv remote entries). */
  private readonly vteps = new Map<number, Peer>();

  constructor(opts: FdbOptions = {}) {
    this.ageingMs = opts.ageingMs ?? 300_000;
    this.maxLearned = opts.maxLearned ?? 16384;
    this.now = opts.now ?? Date.now;
  }

  // ---- VNIs

  addVni(vni: number, learning = true): Vnet<P> {
    let v = this.vnets.get(vni);
    if (!v) {
      v = new Vnet<P>(vni, learning);
      this.vnets.set(vni, v);
    } else {
      v.learning = learning;
    }
    return v;
  }

  delVni(vni: number): void {
    const v = this.vnets.get(vni);
    if (!v) return;
    if (v.sec !== null) this.sealed--;
    for (const e of v.entries.values()) this.unrefEntry(e);
    for (const r of v.flood) this.unref(r.vtep);
    this.vnets.delete(vni);
  }

  /** Makes the VNI an encrypted network (sec) or a plaintext one (null). */
  setSec(vni: number, sec: VnetSec | null): void {
    const v = this.vnet(vni);
    this.sealed += (sec !== null ? 1 : 0) - (v.sec !== null ? 1 : 0);
    v.sec = sec;
  }

  vnet(vni: number): Vnet<P> {
    const v = this.vnets.get(vni);
    if (!v) throw new FdbError('ENOVNI', `VNI ${vni} is not configured on this agent`);
    return v;
  }

  // ---- known VTEPs

  isKnownVtep(ip: number): boolean {
    return this.vteps.has(ip | 0);
  }

  /** Hot path (receive): the known VTEP at `ip`, or undefined. */
  peer(ip: number): Peer | undefined {
    return this.vteps.get(ip | 0); // int32 keys: an address above 2^31 as a key would be boxed per lookup
  }

  peers(): Peer[] {
    return [...this.vteps.values()];
  }

  private ref(ip: number): Peer {
    let p = this.vteps.get(ip | 0);
    if (!p) this.vteps.set(ip | 0, (p = new Peer(ip)));
    p.refs++;
    return p;
  }

  private unref(ip: number): void {
    const p = this.vteps.get(ip | 0);
    if (p && --p.refs <= 0) this.vteps.delete(ip | 0);
  }

  private refEntry(e: FdbEntry<P>): void {
    if (e.local === null && e.kind !== 'learned') e.peer = this.ref(e.vtep);
  }

  private unrefEntry(e: FdbEntry<P>): void {
    if (e.local === null && e.kind !== 'learned') this.unref(e.vtep);
  }

  // ---- entries

  /**
   * Adds or replaces the entry for `mac`. Returns false (and changes nothing) when an entry of a higher kind
   * holds the MAC. The all-zeros MAC is not an entry: use floodAdd.
   */
  set(vni: number, mac: number, kind: FdbKind, dst: { vtep: number; port: number } | { local: P }): boolean {
    if (mac === MAC_ZERO) throw new FdbError('EINVAL', 'the all-zeros MAC is the flood list: use floodAdd/floodDel');
    const v = this.vnet(vni);
    const old = v.entries.get(mac);
    if (old && PRIORITY[old.kind] > PRIORITY[kind]) return false;
    const now = this.now();
    const local = 'local' in dst ? dst.local : null;
    if (kind === 'local' && !local) throw new FdbError('EINVAL', 'a local entry needs a local port');
    if (kind !== 'local' && local) throw new FdbError('EINVAL', `a ${kind} entry needs a remote VTEP`);
    const e: FdbEntry<P> = {
      mac,
      kind,
      vtep: local ? 0 : (dst as { vtep: number }).vtep >>> 0,
      port: local ? 0 : (dst as { port: number }).port,
      local,
      peer: null,
      updated: now,
      used: 0,
    };
    if (old) this.remove(v, old);
    if (kind === 'learned') {
      if (v.learned >= this.maxLearned) return false;
      v.learned++;
    }
    if (local) v.locals.push(local);
    v.entries.set(mac, e);
    this.refEntry(e);
    return true;
  }

  /** Deletes the entry for `mac` if it is of `kind` (any kind when omitted). Returns whether one was removed. */
  del(vni: number, mac: number, kind?: FdbKind): boolean {
    const v = this.vnets.get(vni);
    const e = v?.entries.get(mac);
    if (!v || !e || (kind !== undefined && e.kind !== kind)) return false;
    this.remove(v, e);
    return true;
  }

  private remove(v: Vnet<P>, e: FdbEntry<P>): void {
    v.entries.delete(e.mac);
    if (e.kind === 'learned') v.learned--;
    if (e.local) v.locals = v.locals.filter((p) => p !== e.local);
    this.unrefEntry(e);
  }

  /** Hot path: the entry for a unicast MAC, stamped as used. */
  lookup(v: Vnet<P>, mac: number, now: number): FdbEntry<P> | undefined {
    const e = v.entries.get(mac);
    if (e !== undefined) e.used = now;
    return e;
  }

  /** lookup() of the MAC in buf[off..off+6), read in place: the data plane's form (nothing allocated). */
  lookupAt(v: Vnet<P>, buf: Uint8Array, off: number, now: number): FdbEntry<P> | undefined {
    const e = v.entries.getAt(buf, off);
    if (e !== undefined) e.used = now;
    return e;
  }

  /**
   * Hot path (receive): source MAC `mac` was seen behind `vtep`. Learns it, refreshes it, or moves a learned
   * entry to the new VTEP. Never touches local/static/kv entries ('refused'), which also stops a remote host
   * from claiming a local endpoint's MAC.
   */
  snoop(
    v: Vnet<P>,
    mac: number,
    vtep: number,
    port: number,
    now: number,
    peer: Peer | null = this.vteps.get(vtep | 0) ?? null,
  ): SnoopResult {
    const e = v.entries.get(mac);
    if (e !== undefined) {
      if (e.kind !== 'learned') return e.local === null && e.vtep === vtep ? 'refreshed' : 'refused';
      if (e.vtep === vtep) {
        e.updated = now;
        return 'refreshed';
      }
      e.vtep = vtep;
      e.port = port;
      e.peer = peer;
      e.updated = now;
      return 'moved';
    }
    if (!v.learning) return 'refused';
    if (v.learned >= this.maxLearned) return 'full';
    v.learned++;
    v.entries.set(mac, { mac, kind: 'learned', vtep, port, local: null, peer, updated: now, used: 0 });
    return 'new';
  }

  // ---- flood list (the all-zeros entry)

  /** Appends a VTEP to the VNI's flood list (idempotent per vtep+port; a higher kind replaces a lower). */
  floodAdd(vni: number, vtep: number, port: number, kind: Exclude<FdbKind, 'local' | 'learned'>): boolean {
    const v = this.vnet(vni);
    const i = v.flood.findIndex((r) => r.vtep === vtep >>> 0 && r.port === port);
    if (i >= 0) {
      if (PRIORITY[v.flood[i].kind] > PRIORITY[kind]) return false;
      v.flood = v.flood.map((r, j) => (j === i ? { ...r, kind } : r));
      return true;
    }
    v.flood = [...v.flood, { vtep: vtep >>> 0, port, kind, peer: this.ref(vtep >>> 0) }];
    return true;
  }

  floodDel(vni: number, vtep: number, port: number, kind?: FdbKind): boolean {
    const v = this.vnets.get(vni);
    if (!v) return false;
    const r = v.flood.find((x) => x.vtep === vtep >>> 0 && x.port === port && (kind === undefined || x.kind === kind));
    if (!r) return false;
    v.flood = v.flood.filter((x) => x !== r); // a new array: a walk in progress keeps its snapshot
    this.unref(r.vtep);
    return true;
  }

  // ---- ageing

  /** Removes expired learned entries; returns ms until the next one expires (ageingMs if none). */
  sweep(now = this.now()): number {
    let next = this.ageingMs;
    for (const v of this.vnets.values()) {
      if (v.learned === 0) continue;
      for (const e of v.entries.values()) {
        if (e.kind !== 'learned') continue;
        const left = e.updated + this.ageingMs - now;
        if (left <= 0) this.remove(v, e);
        else if (left < next) next = left;
      }
    }
    return next;
  }

  // ---- display

  /** Every entry, with the flood list as all-zeros rows, for `vxtap fdb show`. */
  dump(vni?: number): FdbRow[] {
    const rows: FdbRow[] = [];
    const now = this.now();
    for (const v of this.vnets.values()) {
      if (vni !== undefined && v.vni !== vni) continue;
      for (const e of v.entries.values()) {
        rows.push({
          vni: v.vni,
          mac: formatMac(e.mac),
          kind: e.kind,
          dst: e.local ? `local:${e.local.id}` : formatVtepPort(e.vtep, e.port),
          ageMs: now - e.updated,
          usedMsAgo: e.used ? now - e.used : null,
        });
      }
      for (const r of v.flood) {
        rows.push({
          vni: v.vni,
          mac: formatMac(MAC_ZERO),
          kind: r.kind,
          dst: formatVtepPort(r.vtep, r.port),
          ageMs: null,
          usedMsAgo: null,
        });
      }
    }
    return rows;
  }

  size(): Record<FdbKind | 'flood', number> {
    const out = { local: 0, static: 0, kv: 0, learned: 0, flood: 0 };
    for (const v of this.vnets.values()) {
      for (const e of v.entries.values()) out[e.kind]++;
      out.flood += v.flood.length;
    }
    return out;
  }
}

export interface FdbRow {
  vni: number;
  mac: string;
  kind: FdbKind;
  dst: string;
  ageMs: number | null;
  usedMsAgo: number | null;
}
