/**
 * The cluster state turned into forwarding tables: for every network this host has endpoints on (`active`), the
 * `kv` FDB entries (remote endpoints -> their host's VTEP), the `kv` flood rows (the hosts with endpoints on the
 * network), the ARP table (every endpoint's IPv4 -> MAC) and, on dual-stack networks, the neighbour table (IPv6 ->
 * MAC). A network with no local endpoint gets no tables: a
 * host pays memory and table work only for the networks it uses, as Docker's overlay created a network's state on
 * a host with the first container there. The first local endpoint of a network syncs it whole, the last one's
 * detach clears it (Endpoints calls syncNetwork at both).
 *
 * Two ways in, with one set of rules:
 * - syncNetwork: one network whole, O(its endpoints); for a network that is new here (or changed its record).
 * - apply: a batch of changes (a watch batch, or what a re-list found different), O(the changes), so one
 *   attach anywhere in a large network costs each agent a few table writes, not a rebuild of the network
 *   (bench/results/history.md entry 13 has what the rebuilds cost).
 *
 * Both run on the data plane's thread between batches (Node runs one callback at a time), so the data plane
 * never sees a half-applied change.
 */
import { type Fdb, type LocalPort, type Nd6, ndSet, type Vnet } from '../fdb/fdb.js';
import type { Changes, ClusterState, EndpointRec, HostRec } from '../kv/schema.js';
import { parseVtep, vtepFamily } from '../common/vtep.js';
import { parseIpv4 } from '../vxlan/ipv4.js';
import { parseIpv6 } from '../vxlan/ipv6.js';
import { parseMac } from '../vxlan/mac.js';

interface Dst {
  vtep: number;
  port: number;
}

/** A flood row's key: a VTEP address and a port fit in 48 bits, so a number (no string built per row). */
const dstKey = (d: Dst): number => (d.vtep >>> 0) * 65536 + d.port;

export class KvTables<P extends LocalPort = LocalPort> {
  constructor(
    private readonly fdb: Fdb<P>,
    private readonly st: ClusterState,
    /** This host's name: its own endpoints get no kv entry and its VTEP no flood row. */
    private readonly self: string,
    /** Whether this host has endpoints on the network (only those get tables). */
    private readonly active: (network: string) => boolean = () => true,
    /** This agent's underlay family: hosts of the other one are unreachable and get nothing. */
    private readonly family: 4 | 6 = 4,
    /** Called once per host whose VTEP is of the other family (the agent says so in its log). */
    private readonly onOtherFamily: (h: HostRec) => void = () => {},
    /** Called after a network was synced whole (the keyring follows it: encrypted networks' keys). */
    private readonly onSynced: (network: string) => void = () => {},
  ) {}

  /** Hosts seen with a VTEP of the other family. */
  private readonly otherFamily = new Set<string>();

  /** A host's VTEP, or null if it is of the other underlay family (an IPv4 agent cannot reach an IPv6 VTEP, nor
   * the other way round: such a host gets no entries or rows here, as if it had no record). */
  private dstOf(h: HostRec): Dst | null {
    let vtep: number;
    try {
      vtep = parseVtep(h.vtep);
    } catch {
      return null; // the record was checked when read (schema.ts); never here
    }
    if (vtepFamily(vtep) === this.family) return { vtep, port: h.port };
    if (!this.otherFamily.has(h.host)) {
      this.otherFamily.add(h.host);
      this.onOtherFamily(h);
    }
    return null;
  }

  /** Host names by their VTEP (dstKey): made from the host records when first needed after they changed. */
  private byDst: Map<number, string[]> | null = null;

  /** Whether the network wants a flood row to `d`: some other host with endpoints on it has that VTEP. O(hosts
   * sharing the VTEP), usually one: a batch costs per host it touches, not per host of the network. */
  private rowWanted(net: string, d: Dst): boolean {
    if (!this.byDst) {
      this.byDst = new Map();
      for (const h of this.st.hosts.values()) {
        const d = this.dstOf(h);
        if (!d) continue;
        const k = dstKey(d);
        const l = this.byDst.get(k);
        if (l) l.push(h.host);
        else this.byDst.set(k, [h.host]);
      }
    }
    for (const h of this.byDst.get(dstKey(d)) ?? []) if (h !== this.self && this.st.hostCount(net, h) > 0) return true;
    return false;
  }

  /** Makes the network's kv entries, kv flood rows and ARP table equal to the state (or empty, if not active). */
  syncNetwork(name: string, vni: number): void {
    const v = this.fdb.vnet(vni);
    const want = new Map<number, Dst>();
    const arp = new Map<number, number>();
    const nd = new Map<number, Nd6>();
    const active = this.active(name);
    for (const ep of (active && this.st.endpoints.get(name)?.values()) || []) {
      const mac = parseMac(ep.mac);
      if (this.st.ipOwner(name, ep.ip) === ep) arp.set(parseIpv4(ep.ip), mac);
      if (ep.ip6 !== undefined && this.st.ipOwner(name, ep.ip6) === ep) ndSet(nd, parseIpv6(ep.ip6), mac);
      const dst = this.remoteDst(ep);
      if (dst) want.set(mac, dst);
    }
    for (const e of [...v.entries.values()]) {
      if (e.kind !== 'kv') continue;
      const w = want.get(e.mac);
      if (!w) this.fdb.del(vni, e.mac, 'kv');
      else if (w.vtep === e.vtep && w.port === e.port) want.delete(e.mac);
    }
    for (const [mac, dst] of want) this.fdb.set(vni, mac, 'kv', dst);
    const rows = active ? this.wantedRows(name) : new Map<number, Dst>();
    for (const r of [...v.flood]) {
      if (r.kind !== 'kv') continue;
      if (!rows.delete(dstKey(r))) this.fdb.floodDel(vni, r.vtep, r.port, 'kv');
    }
    for (const d of rows.values()) this.fdb.floodAdd(vni, d.vtep, d.port, 'kv');
    v.arp = arp;
    v.nd = nd;
    this.onSynced(name);
  }

  /**
   * Applies a batch of changes to the networks in `vnis` (name -> VNI: the networks this host has), except those
   * in `whole` (the caller syncs them whole).
   */
  apply(ch: Changes, vnis: ReadonlyMap<string, number>, whole: ReadonlySet<string> = new Set()): void {
    if (ch.hosts.size) this.byDst = null; // host records changed: the VTEP index is made again when needed
    const rows = new Map<string, Map<number, Dst>>(); // network -> flood rows to look at again
    const hostRows = new Map<string, Dst[]>(); // host -> its rows now and before the batch (once per host)
    const mark = (net: string, host: string | undefined): void => {
      if (host === undefined || host === this.self) return;
      let ds = hostRows.get(host);
      if (!ds) {
        ds = [this.st.hosts.get(host), ch.hosts.get(host)].flatMap((h) => (h ? (this.dstOf(h) ?? []) : []));
        hostRows.set(host, ds);
      }
      let m = rows.get(net);
      if (!m) rows.set(net, (m = new Map()));
      for (const d of ds) m.set(dstKey(d), d);
    };
    for (const [net, macs] of ch.endpoints) {
      const vni = vnis.get(net);
      if (vni === undefined || whole.has(net) || !this.active(net)) continue;
      const v = this.fdb.vnet(vni);
      for (const [mac, prev] of macs) {
        const cur = this.st.endpoints.get(net)?.get(mac) ?? null;
        this.syncMac(net, vni, mac);
        if (prev) this.syncArp(v, net, prev.ip);
        if (cur && cur.ip !== prev?.ip) this.syncArp(v, net, cur.ip);
        if (prev?.ip6 !== undefined) this.syncNd(v, net, prev.ip6);
        if (cur?.ip6 !== undefined && cur.ip6 !== prev?.ip6) this.syncNd(v, net, cur.ip6);
        mark(net, prev?.host);
        mark(net, cur?.host);
      }
    }
    for (const host of ch.hosts.keys()) {
      if (host === this.self) continue;
      for (const ep of this.st.byHost.get(host) ?? []) {
        const vni = vnis.get(ep.network);
        if (vni === undefined || whole.has(ep.network) || !this.active(ep.network)) continue;
        this.syncMac(ep.network, vni, ep.mac);
        mark(ep.network, host);
      }
      // a host whose last endpoint went in an earlier batch has no row to fix; one whose record went keeps its
      // endpoints in the state (their delete events follow) and is found above
    }
    for (const [net, ds] of rows) {
      const vni = vnis.get(net);
      if (vni === undefined || whole.has(net) || !this.active(net)) continue;
      const v = this.fdb.vnet(vni);
      for (const d of ds.values()) {
        const want = this.rowWanted(net, d);
        const have = v.flood.find((r) => r.vtep === d.vtep >>> 0 && r.port === d.port);
        if (want && !have) this.fdb.floodAdd(vni, d.vtep, d.port, 'kv');
        else if (!want && have?.kind === 'kv') this.fdb.floodDel(vni, have.vtep, have.port, 'kv');
      }
    }
  }

  /** Makes one MAC's kv entry equal to the state (after an attach or detach of it here, say). */
  syncMac(net: string, vni: number, mac: string): void {
    const ep = this.active(net) ? this.st.endpoints.get(net)?.get(mac) : undefined;
    const want = ep ? this.remoteDst(ep) : null;
    const m = parseMac(mac);
    const e = this.fdb.vnet(vni).entries.get(m);
    if (want) {
      if (!(e && e.kind === 'kv' && e.vtep === want.vtep && e.port === want.port)) this.fdb.set(vni, m, 'kv', want);
    } else if (e?.kind === 'kv') this.fdb.del(vni, m, 'kv');
  }

  private syncArp(v: Vnet<P>, net: string, ip: string): void {
    const owner = this.st.ipOwner(net, ip);
    const a = parseIpv4(ip);
    if (owner) v.arp.set(a, parseMac(owner.mac));
    else v.arp.delete(a);
  }

  private syncNd(v: Vnet<P>, net: string, ip6: string): void {
    const owner = this.st.ipOwner(net, ip6);
    ndSet(v.nd, parseIpv6(ip6), owner ? parseMac(owner.mac) : -1);
  }

  /** Where frames for this endpoint go: its host's VTEP, or null (ours, or its host's record is gone). */
  private remoteDst(ep: EndpointRec): Dst | null {
    if (ep.host === this.self) return null;
    const h = this.st.hosts.get(ep.host);
    return h ? this.dstOf(h) : null;
  }

  /** The flood rows the network wants: the VTEP of every other host with endpoints on it (dstKey -> dst). */
  private wantedRows(net: string): Map<number, Dst> {
    const out = new Map<number, Dst>();
    for (const host of this.st.hostsOn(net)) {
      if (host === this.self) continue;
      const h = this.st.hosts.get(host);
      if (!h) continue; // its lease is gone: so are its endpoints, their delete events are on the way
      const d = this.dstOf(h);
      if (d) out.set(dstKey(d), d);
    }
    return out;
  }
}
