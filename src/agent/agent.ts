/**
 * The per-host agent: opens the VXLAN sockets, runs the data plane, and keeps this host's part of the shared
 * state in the KV store (src/kv): its host record and its endpoints under a lease, networks and addresses by
 * transaction. The reconciler turns what the store says about every host into the data plane's tables.
 *
 * Design notes
 * - The control plane writes, the data plane reads: KV events become idempotent table updates for exactly the
 *   keys that changed (applyNetworks, tables.ts); the data plane never waits on the store. A KV outage leaves
 *   forwarding on the last known tables; writes (new networks, attachments) fail with ERR_KV_UNAVAILABLE
 *   meanwhile.
 * - Registration (host key + every local endpoint's keys) is level-triggered: register() puts them all, and runs
 *   at start, whenever the lease is lost (outage longer than the TTL), and retries with backoff until it succeeds.
 * - Local endpoints survive an agent restart: TAPs are persistent (TUNSETPERSIST), and a state file
 *   (<stateDir>/<host>.json) lists them; a restarted agent re-opens each TAP by name inside its namespace,
 *   re-registers it and forwards again. Re-opening pins the namespace (see src/tap/tap.ts), so every 2 s a
 *   liveness check compares each endpoint's namespace inode with the one recorded at attach, and detaches
 *   endpoints whose namespace is gone.
 * - Every client-facing method validates its input and fails with an AgentError that says what to fix, leaving
 *   nothing half-done (each step is undone on failure).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { Fdb, type FdbRow } from '../fdb/fdb.js';
import { Dataplane } from '../dataplane/dataplane.js';
import { type DataplaneIo, nativeIo } from '../dataplane/io.js';
import type { Port } from '../dataplane/port.js';
import { type Kv, KvError, type Lease, type Op } from '../kv/kv.js';
import { openKv } from '../kv/open.js';
import { Reconciler } from '../kv/reconciler.js';
import { type Changes, type EndpointRec, keys, type NetworkRec, parseNetwork } from '../kv/schema.js';
import { KvTables } from './tables.js';
import { native } from '../sys/native.js';
import { ip, ipJson, netnsPath } from '../sys/ip.js';
import { closeTap, createTap, checkIfname, setOffloads, setTapGsoMaxSegs, type Tap } from '../tap/tap.js';
import { VXLAN_DEFAULT_PORT, VXLAN_IPV4_OVERHEAD, VXLAN_VNI_MAX } from '../vxlan/constants.js';
import { useSum16 } from '../vxlan/checksum.js';
import { useTsoSplit } from '../vxlan/gso.js';
import { useGroRun, useGroSegment } from '../dataplane/gro.js';
import { formatIpv4, parseIpv4 } from '../vxlan/ipv4.js';
import { formatMac, MAC_ZERO, parseMac, isGroupMacNum } from '../vxlan/mac.js';
import { firstFree, inSubnet, parseAddress, parseSubnet, type Subnet } from './addr.js';
import { AgentError, invalid, notFound } from './errors.js';
import { type Logger, silentLogger } from './log.js';

export interface AgentOptions {
  /** This host's name (default: the OS hostname). Must be unique in the cluster. */
  host?: string;
  /** Underlay IPv4 address to bind and send from: this host's VTEP address. */
  vtep: string;
  /** UDP port VXLAN listens on and sends to (default 4789, IANA). */
  port?: number;
  /** KV store: `etcd://host:port[,...]` or a file path (default /var/lib/vxtap/store.db), or an open Kv. */
  kv?: string | Kv;
  /** Host lease TTL in seconds: a dead host's endpoints vanish from the others this long after it died (default 10). */
  leaseTtl?: number;
  /** Where the local state file lives (default /var/lib/vxtap). */
  stateDir?: string;
  /** Full KV resync period (default 30 s). */
  resyncMs?: number;
  txSockets?: number;
  batch?: number;
  /**
   * Busy polling: after each data-plane callback, keep the thread polling (yielding between polls) instead of
   * sleeping for this many microseconds (0, the default: off). Packets then find the agent running: lower and
   * steadier latency, for a CPU kept busy while traffic flows. Process-wide (one agent per process). 0 to 10 s.
   */
  busyPollUs?: number;
  /** TAP reads and writes batched through io_uring (one submission per batch instead of one syscall per frame)
   * when the kernel allows it. Default true; false: one syscall per frame. Process-wide. */
  ioUring?: boolean;
  /** TAP offloads (virtio-net header, checksum offload, TSO4/TSO6/USO split in userspace + UDP GSO). Default true. */
  offload?: boolean;
  rcvbuf?: number;
  sndbuf?: number;
  /** Learned MACs expire after this many seconds (default 300). */
  ageingSec?: number;
  maxLearned?: number;
  log?: Logger;
  /** For tests: another I/O backend. */
  io?: DataplaneIo;
}

export interface NetworkSpec {
  name: string;
  /** Omit to allocate the lowest free VNI from 4096 up. */
  vni?: number;
  subnet: string;
  gateway?: string | null;
  mtu?: number;
  learning?: boolean;
  /** Docker's --internal: Docker gives attached containers no way out of the network (see NetworkRec). */
  internal?: boolean;
}

export interface Network {
  name: string;
  vni: number;
  subnet: Subnet;
  gateway: number; // 0 = none
  mtu: number;
  learning: boolean;
  internal: boolean;
}

export interface AttachSpec {
  network: string;
  netns: string;
  name?: string;
  ip?: string;
  mac?: string;
  ifname?: string;
  defaultRoute?: boolean;
  aliases?: string[];
  /** Leave the TAP in the agent's namespace under a temporary name, unconfigured, for the caller to move into
   * `netns` (Docker does this with the name Join returns). `netns` is still where it will live: it is watched. */
  handoff?: boolean;
  /** `ip` was reserved with reserveAddress(): the claim turns the reservation into the endpoint's address. */
  reserved?: boolean;
}

/** What the state file keeps per local endpoint: enough to re-adopt it after a restart without the KV store. */
interface LocalRecord {
  name: string;
  network: string;
  vni: number;
  netns: string;
  ifname: string;
  ip: string;
  mac: string;
  mtu: number;
  subnet: string;
  gateway: string | null;
  aliases: string[];
  /** The TAP was opened with IFF_VNET_HDR (offloads): it must be re-opened the same way. */
  vnetHdr?: boolean;
  /** Inode of the namespace at attach time: a namespace recreated under the same name is another container. */
  nsIno: number;
}

export interface Endpoint {
  id: string;
  name: string;
  network: string;
  netns: string;
  ip: number;
  mac: number;
  tap: Tap;
  port: Port;
  rec: LocalRecord;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const DEFAULT_MTU = 1450;
export const DEFAULT_STATE_DIR = '/var/lib/vxtap';
const MTU_MIN = 68;
const MTU_MAX = 65535 - VXLAN_IPV4_OVERHEAD - 14;
const VNI_AUTO_FIRST = 4096;
const LIVENESS_MS = 2000;
const DROP_REPORT_MS = 10_000;

export class Agent {
  readonly host: string;
  readonly vtep: number;
  readonly port: number;
  readonly fdb: Fdb<Port>;
  private readonly tables: KvTables<Port>;
  readonly dp: Dataplane;
  readonly kv: Kv;
  readonly reconciler: Reconciler;
  /** Networks as the cluster knows them (plus any a local endpoint still needs during a KV outage). */
  readonly networks = new Map<string, Network>();
  readonly endpoints = new Map<string, Endpoint>();
  /** Addresses this host holds without an endpoint yet (Docker's IPAM asks for them before CreateEndpoint),
   * keyed "<network>/<ip>"; kept in the store under the host lease like endpoints. */
  readonly reservations = new Map<string, { network: string; ip: string }>();
  /** Called after network records changed in the store (their names; endpoint changes do not call it). */
  onNetworksChanged: ((changed: Set<string>) => void) | null = null;
  /** Called after a local endpoint was detached, by request or because its namespace or TAP went away. */
  onEndpointRemoved: ((ep: Endpoint) => void) | null = null;
  /** The DNS server's counters when one runs (for `vxtap stats`). */
  dnsStats: Record<string, number> | null = null;
  private readonly log: Logger;
  private readonly fds: number[];
  private readonly leaseTtl: number;
  readonly offload: boolean;
  private readonly statePath: string;
  private lease: Lease | null = null;
  private registering: Promise<void> | null = null;
  private registered = false;
  private pendingDeletes: string[] = [];
  private lastDrops: Record<string, number> = {};
  private disconnectedSince = 0;
  private timers: NodeJS.Timeout[] = [];
  /** The busy-poll window this agent set (0: off). */
  private busyPollUs = 0;
  private seq = 0;
  private closed = false;

  private constructor(o: AgentOptions, kv: Kv, vtep: number, port: number, udpFd: number, txFds: number[], io: DataplaneIo) {
    this.host = o.host ?? hostname();
    if (!NAME.test(this.host)) throw invalid(`host name ${JSON.stringify(this.host)}: 1-64 of letters, digits, _ . -; give --host`);
    this.vtep = vtep;
    this.port = port;
    this.kv = kv;
    this.log = o.log ?? silentLogger;
    this.fds = [udpFd, ...txFds];
    this.leaseTtl = o.leaseTtl ?? 10;
    this.offload = o.offload ?? true;
    this.statePath = join(o.stateDir ?? DEFAULT_STATE_DIR, `${this.host}.json`);
    this.fdb = new Fdb<Port>({ ageingMs: (o.ageingSec ?? 300) * 1000, maxLearned: o.maxLearned });
    this.dp = new Dataplane({
      io,
      fdb: this.fdb,
      udpFd,
      txFds,
      vxlanPort: port,
      batch: o.batch,
      offload: o.offload ?? true,
      udpGro: o.offload ?? true,
      onPortError: (p, err) => this.portFailed(p, err),
      onLoopError: (err) => this.log.error('data plane callback failed', { err }),
    });
    this.reconciler = new Reconciler(
      kv,
      (changes) => this.applyNetworks(changes),
      (err) => {
        if (!this.disconnectedSince) this.disconnectedSince = Date.now();
        this.log.warn('KV watch', { err });
      },
      o.resyncMs,
    );
    this.tables = new KvTables(this.fdb, this.reconciler.state, this.host);
  }

  /** Opens the sockets, re-adopts endpoints from the state file, joins the cluster and starts forwarding. */
  static async start(o: AgentOptions): Promise<Agent> {
    const vtep = parseAddress(o.vtep, 'VTEP address');
    const port = o.port ?? VXLAN_DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`port ${port} is not a UDP port (1-65535)`);
    const nTx = o.txSockets ?? 4;
    if (!Number.isInteger(nTx) || nTx < 1 || nTx > 64) throw invalid(`txSockets ${nTx}: 1 to 64`);
    const busyPollUs = o.busyPollUs ?? 0;
    if (!Number.isInteger(busyPollUs) || busyPollUs < 0 || busyPollUs > 10_000_000) {
      throw invalid(`busy-poll window ${busyPollUs}: 0 (off) to 10000000 microseconds`);
    }
    const ttl = o.leaseTtl ?? 10;
    if (!(ttl >= 2 && ttl <= 300)) throw invalid(`lease TTL ${ttl}: 2 to 300 seconds`);
    // 16 MiB: absorbs the agent being off-CPU for a while under load (a starved agent overflowed 4 MiB at 45k pps
    // of 60-byte frames on 2 busy vCPUs); memory is used only while a backlog exists
    const rcvbuf = o.rcvbuf ?? 16 << 20;
    const sndbuf = o.sndbuf ?? 4 << 20;
    const io = o.io ?? nativeIo();
    const n = native();
    // the data plane's per-byte work, in C: checksums, TSO segmentation, GRO segment checks (each checked against
    // its JS reference before it is used)
    useSum16(n.sum16);
    useTsoSplit(n.tsoSplit);
    useGroSegment(n.groSegment);
    useGroRun(n.groRun);
    const opened: number[] = [];
    let kv: Kv | undefined;
    try {
      let udpFd: number;
      try {
        [udpFd] = n.udpOpen(vtep, port, rcvbuf, sndbuf, o.offload ?? true);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'EADDRNOTAVAIL') throw invalid(`VTEP address ${o.vtep} is not an address of this host (netns); give --vtep one of \`ip -4 addr\``);
        if (code === 'EADDRINUSE') throw new AgentError('ERR_IN_USE', `UDP ${o.vtep}:${port} is in use: another agent or a kernel VXLAN device listens there`);
        throw new AgentError('ERR_SETUP', `cannot open the VXLAN socket on ${o.vtep}:${port}: ${(e as Error).message}`);
      }
      opened.push(udpFd);
      const txFds: number[] = [];
      for (let i = 0; i < nTx; i++) {
        const [fd] = n.udpOpen(vtep, 0, 0, sndbuf, false);
        opened.push(fd);
        txFds.push(fd);
      }
      try {
        kv = typeof o.kv === 'object' ? o.kv : openKv(o.kv);
      } catch (e) {
        throw invalid((e as Error).message);
      }
      const agent = new Agent(o, kv, vtep, port, udpFd, txFds, io);
      agent.dp.start();
      if (busyPollUs > 0) {
        n.busyPoll(busyPollUs);
        agent.busyPollUs = busyPollUs;
      }
      const [uring] = n.ioUring(o.ioUring === false);
      if (uring !== 'on' && o.ioUring !== false) agent.log.warn('io_uring unavailable: TAP reads and writes take one syscall per frame (slower)', { reason: uring.replace(/^off: /, '') });
      await agent.recover();
      await agent.reconciler.start(); // a KV outage at start is logged; forwarding runs on the recovered endpoints
      agent.startTimers();
      void agent.register();
      agent.log.info('agent started', { host: agent.host, vtep: o.vtep, port, txSockets: nTx, busyPollUs, ioUring: uring, kv: kv.where, endpoints: agent.endpoints.size });
      return agent;
    } catch (e) {
      for (const fd of opened) safe(() => n.closeFd(fd));
      if (kv && typeof o.kv !== 'object') await kv.close().catch(() => {});
      throw e;
    }
  }

  private startTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    const sweep = (ms: number): void => {
      if (this.closed) return;
      const t = setTimeout(() => sweep(Math.max(1000, this.fdb.sweep())), Math.max(1000, ms));
      t.unref();
      this.timers[0] = t;
    };
    sweep(this.fdb.ageingMs);
    const live = setInterval(() => void this.checkLiveness(), LIVENESS_MS);
    live.unref();
    this.timers.push(live);
    const drops = setInterval(() => this.reportDrops(), DROP_REPORT_MS);
    drops.unref();
    this.timers.push(drops);
  }

  // ---- cluster registration

  /** Grants a lease if needed and (re)puts the host key and every local endpoint's keys. Retries until done. */
  register(): Promise<void> {
    this.registering ??= (async () => {
      let delay = 500;
      while (!this.closed) {
        try {
          await this.registerOnce();
          this.registered = true;
          return;
        } catch (e) {
          this.registered = false;
          this.log.warn('cannot register with the KV store; retrying', { kv: this.kv.where, err: e, retryMs: delay });
          await sleep(delay);
          delay = Math.min(delay * 2, 5000);
        }
      }
    })().finally(() => (this.registering = null));
    return this.registering;
  }

  private async registerOnce(): Promise<void> {
    if (!this.lease) {
      const lease = await this.kv.grantLease(this.leaseTtl);
      lease.onLost((err) => {
        if (this.lease !== lease || this.closed) return;
        this.log.warn('host lease lost; registering again', { err });
        this.lease = null;
        this.registered = false;
        void this.register();
      });
      this.lease = lease;
    }
    const lease = this.lease.id;
    const ops: Op[] = [{ type: 'put', key: keys.host(this.host), value: JSON.stringify({ vtep: formatIpv4(this.vtep), port: this.port }), lease }];
    for (const ep of this.endpoints.values()) ops.push(...this.endpointOps(ep.rec, lease));
    for (const r of this.reservations.values()) ops.push({ type: 'put', key: keys.ipam(r.network, r.ip), value: `${this.host}/reserved`, lease });
    await this.kv.txn([], ops);
    const pending = this.pendingDeletes;
    this.pendingDeletes = [];
    for (const k of pending) {
      try {
        await this.kv.delete(k);
      } catch (e) {
        this.pendingDeletes.push(k);
        throw e;
      }
    }
  }

  private endpointOps(r: LocalRecord, lease: string): Op[] {
    const rec: Omit<EndpointRec, 'network' | 'mac'> = { ip: r.ip, host: this.host, name: r.name, aliases: r.aliases, netns: r.netns, ifname: r.ifname };
    return [
      { type: 'put', key: keys.ipam(r.network, r.ip), value: `${this.host}/${r.name}`, lease },
      { type: 'put', key: keys.endpoint(r.network, r.mac), value: JSON.stringify(rec), lease },
    ];
  }

  isRegistered(): boolean {
    return this.registered && this.lease !== null;
  }

  /** Seconds the watch has been disconnected (0 while connected): the control plane's view may be this stale. */
  watchLagSeconds(): number {
    const st = this.reconciler.status;
    if (st.connected) return 0;
    return this.disconnectedSince ? (Date.now() - this.disconnectedSince) / 1000 : 0;
  }

  /** Logs drop-counter deltas at most once per interval (never one line per packet). */
  private reportDrops(): void {
    const now = this.dp.counters.drops();
    const delta: Record<string, number> = {};
    let any = false;
    for (const [k, v] of Object.entries(now)) {
      const d = v - (this.lastDrops[k] ?? 0);
      if (d > 0) {
        delta[k] = d;
        any = true;
      }
    }
    this.lastDrops = now;
    if (any) this.log.warn('packets dropped in the last interval', { drops: delta, intervalSec: DROP_REPORT_MS / 1000 });
  }

  // ---- reconcile: cluster state -> data plane tables (idempotent)

  private applyNetworks(ch: Changes): void {
    this.disconnectedSince = 0;
    const st = this.reconciler.state;
    const names = new Set(ch.networks);
    // after a re-list, also the networks this host still has that the store no longer lists (a restart, say)
    if (ch.full) for (const name of this.networks.keys()) if (!st.networks.has(name)) names.add(name);
    const whole = new Set<string>();
    for (const name of names) {
      try {
        if (this.applyNetwork(name, st.networks.get(name))) whole.add(name);
      } catch (e) {
        this.log.error('cannot apply network state', { network: name, err: e });
      }
    }
    try {
      this.tables.apply(ch, this.vnis(), whole);
    } catch (e) {
      this.log.error('cannot apply cluster changes to the forwarding tables', { err: e });
    }
    if (!names.size) return;
    try {
      this.onNetworksChanged?.(names);
    } catch (e) {
      this.log.error('network change hook failed', { err: e });
    }
  }

  private vnis(): Map<string, number> {
    return new Map([...this.networks.values()].map((n) => [n.name, n.vni]));
  }

  /** Adds, updates or removes the network here; returns true when its tables were synced whole. */
  private applyNetwork(name: string, rec: NetworkRec | undefined): boolean {
    const cur = this.networks.get(name);
    const localEps = [...this.endpoints.values()].filter((e) => e.network === name);
    if (!rec || (cur && cur.vni !== rec.vni)) {
      if (!cur) return false;
      if (localEps.length) {
        if (!rec) this.log.warn('network removed from the store but still has local endpoints; keeping it here', { network: name });
        return false;
      }
      this.dp.delVni(cur.vni);
      this.networks.delete(name);
      if (!rec) {
        this.log.info('network removed', { network: name });
        return false;
      }
    }
    let net = this.networks.get(name);
    if (!net) {
      net = toNetwork(rec);
      this.networks.set(name, net);
      this.dp.addVni(net.vni, net.learning);
      this.log.info('network added', { network: name, vni: net.vni, subnet: net.subnet.cidr });
    } else {
      Object.assign(net, toNetwork(rec));
      this.fdb.vnet(net.vni).learning = net.learning;
    }
    this.tables.syncNetwork(name, net.vni);
    return true;
  }

  // ---- networks

  async createNetwork(spec: NetworkSpec): Promise<Network> {
    if (typeof spec?.name !== 'string' || !NAME.test(spec.name)) {
      throw invalid(`network name ${JSON.stringify(spec?.name)}: 1-64 of letters, digits, _ . - (starting with a letter or digit)`);
    }
    if (spec.vni !== undefined && (!Number.isInteger(spec.vni) || spec.vni < 1 || spec.vni > VXLAN_VNI_MAX)) {
      throw invalid(`VNI ${JSON.stringify(spec.vni)} must be an integer from 1 to ${VXLAN_VNI_MAX}`);
    }
    const subnet = parseSubnet(spec.subnet);
    const mtu = spec.mtu ?? DEFAULT_MTU;
    if (!Number.isInteger(mtu) || mtu < MTU_MIN || mtu > MTU_MAX) throw invalid(`MTU ${mtu}: ${MTU_MIN} to ${MTU_MAX}`);
    let gateway: string | null = formatIpv4((subnet.network + 1) >>> 0);
    if (spec.gateway === null || spec.gateway === 'none') gateway = null;
    else if (spec.gateway !== undefined) {
      const g = parseAddress(spec.gateway, 'gateway');
      if (!inSubnet(g, subnet)) throw invalid(`gateway ${spec.gateway} is not a host address of ${subnet.cidr}`);
      gateway = formatIpv4(g);
    }
    for (let attempt = 0; attempt < 8; attempt++) {
      const r = await this.kvCall('create the network', async () => {
        // guard first, then the list: anything created after the guard read makes the txn fail and us retry
        const guard = await this.kv.get(keys.guardNetworks);
        const { entries } = await this.kv.list(keys.networks);
        const taken = new Map<number, string>();
        for (const e of entries) {
          const name = e.key.slice(keys.networks.length);
          if (name === spec.name) throw new AgentError('ERR_EXISTS', `network ${spec.name} already exists`);
          const n = parseNetwork(name, e.value);
          if (n) taken.set(n.vni, name);
        }
        let vni = spec.vni;
        if (vni !== undefined && taken.has(vni)) throw new AgentError('ERR_EXISTS', `VNI ${vni} is already used by network ${taken.get(vni)}`);
        if (vni === undefined) {
          vni = VNI_AUTO_FIRST;
          while (taken.has(vni)) vni++;
        }
        const rec = { vni, subnet: subnet.cidr, gateway, mtu, learning: spec.learning ?? true, ...(spec.internal ? { internal: true } : {}) };
        return this.kv.txn(
          [{ key: keys.guardNetworks, modRevision: guard?.modRevision ?? 0 }, { key: keys.network(spec.name), modRevision: 0 }, { key: keys.vni(vni), modRevision: 0 }],
          [
            { type: 'put', key: keys.network(spec.name), value: JSON.stringify(rec) },
            { type: 'put', key: keys.vni(vni), value: spec.name },
            { type: 'put', key: keys.guardNetworks, value: spec.name },
          ],
        );
      });
      if (r.succeeded) {
        await this.reconciler.waitFor(r.revision);
        const net = this.networks.get(spec.name);
        if (!net) throw new AgentError('ERR_INTERNAL', `network ${spec.name} was stored at revision ${r.revision} but has not arrived here yet`);
        this.log.info('network created', { network: net.name, vni: net.vni, subnet: net.subnet.cidr, mtu });
        return net;
      }
      await sleep(10 + Math.random() * 40);
    }
    throw new AgentError('ERR_IN_USE', 'networks are being changed concurrently; try again');
  }

  async deleteNetwork(name: string): Promise<void> {
    if (!this.reconciler.state.networks.has(name) && !this.networks.has(name)) this.network(name);
    const eps = this.reconciler.state.endpointsOf(name);
    if (eps.length) {
      const where = [...new Set(eps.map((e) => e.host))].join(', ');
      throw new AgentError('ERR_IN_USE', `network ${name} has ${eps.length} endpoint(s) (${eps.map((e) => e.name).join(', ')}) on ${where}; detach them first`);
    }
    for (let attempt = 0; attempt < 8; attempt++) {
      const r = await this.kvCall('delete the network', async () => {
        const guard = await this.kv.get(keys.guardNetworks);
        const cur = await this.kv.get(keys.network(name));
        if (!cur) throw notFound(`network ${JSON.stringify(name)} not found; \`vxtap network ls\` lists them`);
        const vni = parseNetwork(name, cur.value)?.vni ?? 0;
        return this.kv.txn(
          [{ key: keys.guardNetworks, modRevision: guard?.modRevision ?? 0 }, { key: keys.network(name), modRevision: cur.modRevision }],
          [
            { type: 'delete', key: keys.network(name) },
            { type: 'delete', key: keys.vni(vni) },
            { type: 'deletePrefix', prefix: keys.ipamNet(name) },
            { type: 'put', key: keys.guardNetworks, value: `-${name}` },
          ],
        );
      });
      if (r.succeeded) {
        await this.reconciler.waitFor(r.revision);
        this.log.info('network deleted', { network: name });
        return;
      }
      await sleep(10 + Math.random() * 40);
    }
    throw new AgentError('ERR_IN_USE', 'networks are being changed concurrently; try again');
  }

  network(name: string): Network {
    const n = this.networks.get(name);
    if (!n) throw notFound(`network ${JSON.stringify(name)} not found; \`vxtap network ls\` lists them`);
    return n;
  }

  // ---- endpoints

  async attach(spec: AttachSpec): Promise<Endpoint> {
    const net = this.network(spec?.network);
    if (typeof spec.netns !== 'string') throw invalid('netns is required: the name (ip netns list) or path of the container namespace');
    let nsIno = 0;
    try {
      // Docker names the namespace at Join but creates it later (runc's prestart hook): watched once it exists
      if (!(spec.handoff && spec.netns.startsWith('/') && !existsSync(spec.netns))) nsIno = statSync(netnsPath(spec.netns)).ino;
    } catch (e) {
      throw invalid((e as Error).message);
    }
    const ifname = spec.ifname ?? 'eth0';
    try {
      checkIfname(ifname);
    } catch (e) {
      throw invalid((e as Error).message);
    }
    const name = spec.name ?? `ep${++this.seq}-${Math.random().toString(36).slice(2, 8)}`;
    if (!NAME.test(name)) throw invalid(`endpoint name ${JSON.stringify(name)}: 1-64 of letters, digits, _ . -`);
    const aliases = spec.aliases ?? [];
    if (!Array.isArray(aliases) || aliases.some((a) => typeof a !== 'string' || !NAME.test(a))) throw invalid('aliases must be names (letters, digits, _ . -)');
    for (const e of this.endpoints.values()) {
      if (e.name === name) throw new AgentError('ERR_EXISTS', `endpoint ${name} already exists (network ${e.network})`);
      if (!spec.handoff && e.netns === spec.netns && e.rec.ifname === ifname) throw new AgentError('ERR_EXISTS', `${spec.netns} already has ${ifname} from endpoint ${e.name}; pick --ifname`);
    }
    // Default MAC: derived from the address (02:76 + the IPv4 bytes), as Docker's overlay does, so an address
    // reused by a new endpoint keeps its MAC and stale ARP caches elsewhere stay right.
    let fixedMac: number | null = null;
    if (spec.mac !== undefined) {
      try {
        fixedMac = parseMac(spec.mac);
      } catch (e) {
        throw invalid((e as Error).message);
      }
      if (isGroupMacNum(fixedMac) || fixedMac === MAC_ZERO) throw invalid(`MAC ${spec.mac} must be a unicast address`);
    }
    if (!this.lease || !this.registered) {
      throw new AgentError('ERR_KV_UNAVAILABLE', `not registered with the KV store at ${this.kv.where} (is it reachable?); existing endpoints keep forwarding, try again when it is back`);
    }
    // 1. claim the address and the MAC cluster-wide, under this host's lease
    const rec: LocalRecord = {
      name, network: net.name, vni: net.vni, netns: spec.netns, ifname, ip: '', mac: fixedMac === null ? '' : formatMac(fixedMac), mtu: net.mtu,
      subnet: net.subnet.cidr, gateway: net.gateway ? formatIpv4(net.gateway) : null, aliases, nsIno, vnetHdr: this.offload,
    };
    const reservation = spec.reserved && spec.ip !== undefined ? `${net.name}/${spec.ip}` : null;
    if (reservation !== null && !this.reservations.has(reservation)) throw notFound(`address ${spec.ip} is not reserved on ${net.name} by this host`);
    await this.claimAddress(net, spec.ip, rec, fixedMac === null, reservation !== null);
    if (reservation !== null) this.reservations.delete(reservation);
    const mac = parseMac(rec.mac);
    // 2. the TAP, its addresses and routes
    let tap: Tap;
    try {
      if (spec.handoff) {
        tap = await createTap({ ifname: `vx${randomBytes(4).toString('hex')}`, mac, mtu: net.mtu, persist: true, vnetHdr: this.offload });
        rec.ifname = tap.ifname;
      } else tap = await createTap({ ifname, netns: spec.netns, mac, mtu: net.mtu, persist: true, vnetHdr: this.offload });
    } catch (e) {
      await this.unclaim(rec);
      const code = (e as { code?: string }).code;
      throw new AgentError(code === 'EEXIST' ? 'ERR_EXISTS' : 'ERR_SETUP', (e as Error).message);
    }
    let ep: Endpoint;
    try {
      if (!spec.handoff) await ip(['addr', 'add', `${rec.ip}/${net.subnet.prefix}`, 'dev', ifname], spec.netns);
      if (!spec.handoff && net.gateway && spec.defaultRoute !== false) {
        await ip(['route', 'replace', 'default', 'via', formatIpv4(net.gateway), 'dev', ifname], spec.netns);
      }
      ep = this.adopt(rec, tap); // last step: if it throws, nothing of it is left to undo
    } catch (e) {
      await closeTap(tap, { persist: true });
      await this.unclaim(rec);
      throw new AgentError('ERR_SETUP', `cannot set up ${ifname} in ${spec.netns}: ${(e as Error).message}`);
    }
    this.saveState();
    this.tables.syncMac(net.name, net.vni, rec.mac);
    this.log.info('endpoint attached', { endpoint: name, network: net.name, netns: spec.netns, ip: rec.ip, mac: rec.mac });
    return ep;
  }

  /** Puts an endpoint whose TAP is open into the data plane and the endpoint table: for attach and recovery. */
  private adopt(r: LocalRecord, tap: Tap): Endpoint {
    const mac = parseMac(r.mac);
    const ip = parseIpv4(r.ip);
    const port = this.dp.addPort({ id: r.name, mac, vni: r.vni, fd: tap.fd, ifname: r.ifname, ip, mtu: r.mtu, vnetHdr: !!r.vnetHdr, uso: !!tap.uso });
    const ep: Endpoint = { id: r.name, name: r.name, network: r.network, netns: r.netns, ip, mac, tap, port, rec: r };
    this.endpoints.set(r.name, ep);
    return ep;
  }

  /** Claims `want` (or the first free address), and the MAC, with a transaction; fills rec.ip (and rec.mac). With
   * `reserved`, `want` is this host's reservation: the txn takes it over, and fails only if the MAC is taken. */
  private async claimAddress(net: Network, want: string | undefined, rec: LocalRecord, macFromIp: boolean, reserved = false): Promise<string> {
    return this.searchAddress(net, want, 'allocate an address', async (addr) => {
      rec.ip = addr;
      if (macFromIp) rec.mac = formatMac(macForAddress(parseIpv4(addr)));
      const lease = this.leaseId();
      const r = await this.kv.txn(
        [...(reserved ? [] : [{ key: keys.ipam(net.name, addr), modRevision: 0 }]), { key: keys.endpoint(net.name, rec.mac), modRevision: 0 }],
        this.endpointOps(rec, lease),
      );
      if (!r.succeeded && reserved) throw new AgentError('ERR_IN_USE', `MAC ${rec.mac} is already in use on ${net.name}`);
      return r.succeeded;
    });
  }

  /**
   * The address search every claim shares: `want`, or the lowest address that is not the gateway, not used by an
   * endpoint or a reservation, and not tried yet; `tryClaim` (a transaction) until one succeeds.
   */
  private async searchAddress(net: Network, want: string | undefined, what: string, tryClaim: (addr: string) => Promise<boolean>): Promise<string> {
    const tried = new Set<number>();
    if (net.gateway) tried.add(net.gateway);
    let fixed: number | undefined;
    if (want !== undefined) {
      fixed = parseAddress(want, 'address');
      if (!inSubnet(fixed, net.subnet)) throw invalid(`address ${want} is not a host address of ${net.name} (${net.subnet.cidr})`);
      if (fixed === net.gateway) throw new AgentError('ERR_IN_USE', `address ${want} is the gateway of ${net.name}`);
    }
    for (let attempt = 0; attempt < 64; attempt++) {
      const used = new Set(tried);
      for (const e of this.reconciler.state.endpointsOf(net.name)) used.add(parseIpv4(e.ip));
      for (const r of this.reservations.values()) if (r.network === net.name) used.add(parseIpv4(r.ip));
      const cand = fixed ?? firstFree(net.subnet, used);
      if (cand < 0) throw new AgentError('ERR_NO_ADDRESS', `no free address left in ${net.name} (${net.subnet.cidr})`);
      const addr = formatIpv4(cand);
      if (await this.kvCall(what, () => tryClaim(addr))) return addr;
      if (fixed !== undefined) {
        const owner = await this.kv.get(keys.ipam(net.name, addr)).catch(() => null);
        throw new AgentError('ERR_IN_USE', `address ${addr} is already in use on ${net.name}${owner ? ` (by ${owner.value})` : ''}`);
      }
      tried.add(cand);
    }
    throw new AgentError('ERR_NO_ADDRESS', `could not claim an address in ${net.name}: too many concurrent claims; try again`);
  }

  private leaseId(): string {
    const lease = this.lease?.id;
    if (!lease) throw new AgentError('ERR_KV_UNAVAILABLE', `not registered with the KV store at ${this.kv.where}`);
    return lease;
  }

  private async unclaim(r: LocalRecord): Promise<void> {
    const ks = [keys.endpoint(r.network, r.mac), keys.ipam(r.network, r.ip)];
    try {
      await this.kv.txn([], ks.map((key) => ({ type: 'delete' as const, key })));
    } catch {
      this.pendingDeletes.push(...ks); // the next registration pass deletes them
    }
  }

  /**
   * Claims an address on a network for this host without an endpoint yet (for Docker's IPAM, which allocates
   * before it creates the endpoint): `ip`, or the first free one. Held under the host lease until attach() with
   * `reserved` turns it into an endpoint's address, or releaseAddress() frees it.
   */
  async reserveAddress(network: string, want?: string): Promise<string> {
    const net = this.network(network);
    if (!this.lease || !this.registered) throw new AgentError('ERR_KV_UNAVAILABLE', `not registered with the KV store at ${this.kv.where}; try again when it is back`);
    const addr = await this.searchAddress(net, want, 'reserve an address', async (a) => {
      const key = keys.ipam(net.name, a);
      return (await this.kv.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value: `${this.host}/reserved`, lease: this.leaseId() }])).succeeded;
    });
    this.reservations.set(`${net.name}/${addr}`, { network: net.name, ip: addr });
    this.saveState();
    return addr;
  }

  /** Frees a reservation (idempotent: an address that is not reserved here is left alone). */
  async releaseAddress(network: string, addr: string): Promise<void> {
    const k = `${network}/${addr}`;
    if (!this.reservations.delete(k)) return;
    this.saveState();
    try {
      await this.kv.delete(keys.ipam(network, addr));
    } catch {
      this.pendingDeletes.push(keys.ipam(network, addr));
    }
  }

  /** Replaces an endpoint's DNS aliases (Docker tells the container name only after Join); re-publishes it. */
  async setAliases(name: string, aliases: string[]): Promise<void> {
    const ep = this.endpoints.get(name);
    if (!ep) throw notFound(`endpoint ${JSON.stringify(name)} not found`);
    const clean = [...new Set(aliases.map((a) => a.toLowerCase()).filter((a) => NAME.test(a)))].slice(0, 32);
    if (clean.join() === ep.rec.aliases.join()) return;
    ep.rec.aliases = clean;
    this.saveState();
    const lease = this.lease?.id;
    if (lease) await this.kvCall('publish aliases', () => this.kv.txn([], this.endpointOps(ep.rec, lease)));
  }

  async detach(name: string): Promise<void> {
    const ep = this.endpoints.get(name);
    if (!ep) throw notFound(`endpoint ${JSON.stringify(name)} not found; \`vxtap endpoint ls\` lists them`);
    this.dp.removePort(ep.id);
    this.endpoints.delete(name);
    this.saveState();
    await closeTap(ep.tap, { persist: true });
    await this.unclaim(ep.rec);
    const net = this.networks.get(ep.network);
    const rec = this.reconciler.state.networks.get(ep.network);
    if (net && !rec) this.applyNetwork(net.name, rec); // the network left the store while this endpoint kept it here
    else if (net) this.tables.syncMac(net.name, net.vni, ep.rec.mac); // its MAC may live on another host now
    this.log.info('endpoint detached', { endpoint: name, network: ep.network });
    try {
      this.onEndpointRemoved?.(ep);
    } catch (e) {
      this.log.error('endpoint removal hook failed', { err: e });
    }
  }

  private portFailed(p: Port, err: Error): void {
    const ep = this.endpoints.get(p.id);
    this.log.warn('endpoint TAP failed; detaching it (was its namespace deleted?)', { endpoint: p.id, err });
    if (ep) void this.detach(ep.name).catch((e) => this.log.error('detach after TAP failure failed', { endpoint: p.id, err: e }));
  }

  /** Detaches endpoints whose namespace is gone or was replaced (a re-opened TAP pins its namespace). */
  private async checkLiveness(): Promise<void> {
    for (const ep of [...this.endpoints.values()]) {
      let ino = -1;
      try {
        ino = statSync(netnsPath(ep.netns)).ino;
      } catch {
        /* gone */
      }
      if (ep.rec.nsIno === 0) {
        // a handed-off TAP whose namespace did not exist yet at attach: start watching it when it appears
        if (ino > 0) {
          ep.rec.nsIno = ino;
          this.saveState();
        }
        continue;
      }
      if (ino !== ep.rec.nsIno && this.endpoints.get(ep.name) === ep) {
        this.log.warn('endpoint namespace is gone; detaching', { endpoint: ep.name, netns: ep.netns });
        await this.detach(ep.name).catch((e) => this.log.error('detach failed', { endpoint: ep.name, err: e }));
      }
    }
  }

  // ---- local state (restart recovery)

  private saveState(): void {
    const data = JSON.stringify({ version: 1, host: this.host, endpoints: [...this.endpoints.values()].map((e) => e.rec), reservations: [...this.reservations.values()] }, null, 1);
    mkdirSync(dirname(this.statePath), { recursive: true, mode: 0o700 });
    const tmp = `${this.statePath}.tmp`;
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, this.statePath);
  }

  /** Re-adopts the endpoints listed in the state file: re-opens each persistent TAP inside its namespace. */
  private async recover(): Promise<void> {
    if (!existsSync(this.statePath)) return;
    let recs: LocalRecord[];
    try {
      const st = JSON.parse(readFileSync(this.statePath, 'utf8')) as { endpoints: LocalRecord[]; reservations?: { network: string; ip: string }[] };
      recs = st.endpoints;
      if (!Array.isArray(recs)) throw new Error('no endpoints array');
      for (const r of st.reservations ?? []) if (typeof r?.network === 'string' && typeof r.ip === 'string') this.reservations.set(`${r.network}/${r.ip}`, { network: r.network, ip: r.ip });
    } catch (e) {
      this.log.error('state file unreadable; starting without local endpoints', { path: this.statePath, err: e });
      return;
    }
    const n = native();
    const k = n.constants;
    for (const r of recs) {
      let fd = -1;
      try {
        const path = netnsPath(r.netns);
        if (statSync(path).ino !== r.nsIno) throw new Error('namespace was replaced');
        if (!!r.vnetHdr !== this.offload) throw new Error(`it was attached with offloads ${r.vnetHdr ? 'on' : 'off'}; restart the agent the same way, or detach it`);
        // the TAP is the interface with the endpoint's MAC (Docker renames the one it was handed: vxNNNNNNNN -> ethN);
        // looked up before opening, so a missing one is never re-created by TUNSETIFF
        const links = await ipJson<{ ifname: string; address: string }[]>(['link', 'show'], r.netns);
        const found = links.find((l) => l.address === r.mac);
        if (!found) throw new Error(`no interface with MAC ${r.mac} in ${r.netns} (expected ${r.ifname})`);
        r.ifname = found.ifname;
        [fd] = n.tapOpen(r.ifname, k.IFF_TAP | k.IFF_NO_PI | (r.vnetHdr ? k.IFF_VNET_HDR : 0), path);
        let uso = false;
        if (r.vnetHdr) {
          uso = setOffloads(fd);
          if (!(await setTapGsoMaxSegs(r.ifname, r.mtu, r.netns))) this.log.warn('cannot set gso_max_segs on a recovered TAP (only speed)', { endpoint: r.name });
        }
        if (!this.networks.has(r.network)) {
          // the store may be unreachable: forward on what the state file says until it answers
          const net: Network = { name: r.network, vni: r.vni, subnet: parseSubnet(r.subnet), gateway: r.gateway ? parseIpv4(r.gateway) : 0, mtu: r.mtu, learning: true, internal: false };
          this.networks.set(r.network, net);
          this.dp.addVni(r.vni, true);
        }
        this.adopt(r, { fd, ifname: r.ifname, netns: r.netns, mac: parseMac(r.mac), mtu: r.mtu, uso });
        this.log.info('endpoint recovered', { endpoint: r.name, netns: r.netns, ip: r.ip });
      } catch (e) {
        if (fd >= 0) safe(() => n.closeFd(fd));
        this.pendingDeletes.push(keys.endpoint(r.network, r.mac), keys.ipam(r.network, r.ip));
        this.log.warn('cannot recover endpoint; dropping it', { endpoint: r.name, netns: r.netns, err: e });
      }
    }
    this.saveState();
  }

  // ---- static FDB

  fdbAdd(network: string, mac: string, dst: string): void {
    const net = this.network(network);
    const m = this.parseFdbMac(mac);
    const { vtep, port } = this.parseDst(dst);
    if (m === MAC_ZERO) this.fdb.floodAdd(net.vni, vtep, port, 'static');
    else if (!this.fdb.set(net.vni, m, 'static', { vtep, port })) {
      throw new AgentError('ERR_IN_USE', `MAC ${mac} is a local endpoint on ${network}; it cannot point at a remote VTEP`);
    }
    this.log.info('fdb entry added', { network, mac, dst });
  }

  fdbDel(network: string, mac: string, dst?: string): void {
    const net = this.network(network);
    const m = this.parseFdbMac(mac);
    let ok: boolean;
    if (m === MAC_ZERO) {
      if (dst === undefined) throw invalid('deleting from the flood list (00:00:00:00:00:00) needs the dst VTEP');
      const { vtep, port } = this.parseDst(dst);
      ok = this.fdb.floodDel(net.vni, vtep, port, 'static');
    } else ok = this.fdb.del(net.vni, m, 'static') || this.fdb.del(net.vni, m, 'learned');
    if (!ok) throw notFound(`no such static or learned entry for ${mac}${dst ? ` dst ${dst}` : ''} on ${network}`);
    this.tables.syncNetwork(net.name, net.vni); // what the static entry hid (a kv entry or flood row) comes back
  }

  fdbShow(network?: string): (FdbRow & { network: string })[] {
    const byVni = new Map([...this.networks.values()].map((n) => [n.vni, n.name]));
    const vni = network === undefined ? undefined : this.network(network).vni;
    return this.fdb.dump(vni).map((r) => ({ network: byVni.get(r.vni) ?? String(r.vni), ...r }));
  }

  private parseFdbMac(mac: string): number {
    try {
      return parseMac(mac);
    } catch (e) {
      throw invalid((e as Error).message);
    }
  }

  private parseDst(dst: string): { vtep: number; port: number } {
    if (typeof dst !== 'string') throw invalid('dst must be a VTEP address like 198.18.0.2 or 198.18.0.2:4789');
    const [a, p, ...rest] = dst.split(':');
    const vtep = parseAddress(a, 'dst VTEP');
    const port = p === undefined ? this.port : Number(p);
    if (rest.length || !Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`dst ${dst}: expected IPv4[:port]`);
    if (vtep === this.vtep && port === this.port) throw invalid(`dst ${dst} is this agent's own VTEP`);
    return { vtep, port };
  }

  // ---- views

  describeNetwork(n: Network): Record<string, unknown> {
    return {
      name: n.name,
      vni: n.vni,
      subnet: n.subnet.cidr,
      gateway: n.gateway ? formatIpv4(n.gateway) : null,
      mtu: n.mtu,
      learning: n.learning,
      internal: n.internal,
      endpoints: this.reconciler.state.endpointsOf(n.name).map((e) => ({ name: e.name, ip: e.ip, mac: e.mac, host: e.host, aliases: e.aliases })),
      local: [...this.endpoints.values()].filter((e) => e.network === n.name).map((e) => this.describeEndpoint(e)),
      flood: this.fdb.vnets.get(n.vni)?.flood.map((r) => `${formatIpv4(r.vtep)}:${r.port} (${r.kind})`) ?? [],
      fdb: this.fdbShow(n.name),
      stats: { ...this.dp.vniStats(n.vni) },
    };
  }

  describeEndpoint(e: Endpoint): Record<string, unknown> {
    return {
      name: e.name,
      network: e.network,
      netns: e.netns,
      ifname: e.tap.ifname,
      ip: formatIpv4(e.ip),
      mac: formatMac(e.mac),
      host: this.host,
      tx_frames: e.port.txFrames,
      tx_bytes: e.port.txBytes,
      rx_frames: e.port.rxFrames,
      rx_bytes: e.port.rxBytes,
    };
  }

  stats(): Record<string, unknown> {
    const n = native();
    const [rcvbuf, sndbuf] = n.sockInfo(this.dp.udpFd);
    return {
      host: this.host,
      vtep: `${formatIpv4(this.vtep)}:${this.port}`,
      socket: { rcvbuf, sndbuf, tx_sockets: this.dp.txSocketCount },
      offload: this.offload,
      ...(this.busyPollUs > 0 ? { busy_poll: this.busyPollStatus() } : {}),
      io_uring: this.ioUringStatus(),
      udp_coalesced: this.coalesceStatus(),
      kv: { where: this.kv.where, registered: this.registered, lease: this.lease?.id ?? null, ...this.reconciler.status },
      counters: this.dp.counters.snapshot(),
      drops: this.dp.counters.drops(),
      vnis: Object.fromEntries([...this.networks.values()].map((nw) => [nw.name, { vni: nw.vni, ...this.dp.vniStats(nw.vni) }])),
      fdb: this.fdb.size(),
      peers: this.fdb.peers().map((p) => ({ vtep: formatIpv4(p.vtep), tx_packets: p.tx_packets, tx_bytes: p.tx_bytes, rx_packets: p.rx_packets, rx_bytes: p.rx_bytes })),
      endpoints: [...this.endpoints.values()].map((e) => this.describeEndpoint(e)),
      reservations: [...this.reservations.keys()],
      ...(this.dnsStats ? { dns: { ...this.dnsStats } } : {}),
    };
  }

  /** The TAP batches' io_uring: on/off (why), io_uring_enter calls and the reads/writes they carried, and the
   * TAP reads that took the single-frame path (plain read() calls: the last read found at most one frame). */
  ioUringStatus(): { status: string; enters: number; ops: number; single_reads: number } {
    const [status, enters, ops, single] = native().ioUring();
    return { status, enters, ops, single_reads: single };
  }

  /** UDP GSO sends that carried 2+ queued datagrams (sendBatch's coalescing), and those datagrams. */
  coalesceStatus(): { sends: number; datagrams: number } {
    const [sends, datagrams] = native().coalesceStats();
    return { sends, datagrams };
  }

  /** Busy polling (--busy-poll): its window, polls that caught a packet, seconds spent polling; null when off. */
  busyPollStatus(): { window_us: number; hits: number; spin_seconds: number } | null {
    if (this.busyPollUs === 0) return null;
    const [hits, spinNs] = native().busyPoll();
    return { window_us: this.busyPollUs, hits, spin_seconds: Math.round(spinNs / 1e6) / 1e3 };
  }

  private async kvCall<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof AgentError) throw e;
      if (e instanceof KvError) {
        throw new AgentError('ERR_KV_UNAVAILABLE', `cannot ${what}: the KV store at ${this.kv.where} failed: ${(e as Error).message}`);
      }
      throw e;
    }
  }

  // ---- lifecycle

  /**
   * Stops the agent. Endpoints stay: their TAPs persist in the containers and their keys stay in the store until
   * the lease runs out, so a restarted agent picks them up (`detachAll` removes them instead).
   */
  async close(opts: { detachAll?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    if (opts.detachAll) for (const name of [...this.endpoints.keys()]) await this.detach(name).catch(() => {});
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.reconciler.stop();
    this.dp.stop();
    const n = native();
    if (this.busyPollUs > 0) safe(() => n.busyPoll(0));
    for (const ep of this.endpoints.values()) safe(() => n.closeFd(ep.tap.fd)); // persistent: the devices stay
    for (const fd of this.fds) safe(() => n.closeFd(fd));
    this.lease?.release();
    await this.kv.close().catch(() => {});
    this.log.info('agent stopped', { host: this.host, endpointsKept: this.endpoints.size });
  }
}

/** 02:76:a.b.c.d: unicast, locally administered, unique per address within a network. */
export function macForAddress(ip: number): number {
  return 0x0276 * 0x100000000 + (ip >>> 0);
}

function toNetwork(rec: NetworkRec): Network {
  return {
    name: rec.name,
    vni: rec.vni,
    subnet: parseSubnet(rec.subnet),
    gateway: rec.gateway ? parseIpv4(rec.gateway) : 0,
    mtu: rec.mtu,
    learning: rec.learning,
    internal: rec.internal === true,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function safe(f: () => unknown): void {
  try {
    f();
  } catch {
    /* best effort during teardown */
  }
}
