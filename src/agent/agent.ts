/**
 * The per-host agent: lifecycle and wiring. It opens the VXLAN sockets, starts the data plane and joins the
 * cluster; the work is done by the parts it owns, each with its dependencies passed in:
 *
 *   Registration  the host lease, and this host's keys under it (registration.ts)
 *   Networks      networks created and deleted by guarded transaction, mirrored from the store (networks.ts)
 *   Ipam          addresses claimed by transaction, reservations for Docker's IPAM (ipam.ts)
 *   Endpoints     TAPs, attach/detach, recovery after a restart, liveness (endpoints.ts)
 *   StateFile     the local state file (state.ts)
 *   KvTables      the cluster state turned into forwarding tables (tables.ts)
 *   StaticFdb     entries the operator adds by hand (staticfdb.ts)
 *
 * The control plane writes, the data plane reads: KV events become idempotent table updates for exactly the keys
 * that changed; the data plane never waits on the store. A KV outage leaves forwarding on the last known tables;
 * writes (new networks, attachments) fail with ERR_KV_UNAVAILABLE meanwhile. Every client-facing method validates
 * its input and fails with an AgentError that says what to fix, leaving nothing half-done.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { formatAddress6, parseAddress6, type Subnet, type Subnet6 } from '../common/addr.js';
import { AgentError, invalid } from '../common/errors.js';
import { type Logger, silentLogger, throttled } from '../common/log.js';
import { formatVtep, parseVtepAddress, vtepFamily, vtepOverhead } from '../common/vtep.js';
import { Dataplane } from '../dataplane/dataplane.js';
import { type DataplaneIo, nativeIo } from '../dataplane/io.js';
import { nativeKernels } from '../dataplane/kernels.js';
import type { Port } from '../dataplane/port.js';
import { Fdb, type FdbRow } from '../fdb/fdb.js';
import { type Kv, KvError } from '../kv/kv.js';
import { openKv } from '../kv/open.js';
import { Reconciler } from '../kv/reconciler.js';
import { type Changes, type EndpointRec, keys } from '../kv/schema.js';
import { ipJson } from '../sys/ip.js';
import { native } from '../sys/native.js';
import { VXLAN_DEFAULT_PORT } from '../vxlan/constants.js';
import { type AttachSpec, type Endpoint, Endpoints, safe } from './endpoints.js';
import { Ipam } from './ipam.js';
import { defaultMtu, NAME, type Network, Networks, type NetworkSpec, parsePool, parsePool6 } from './networks.js';
import type { AgentOptions } from './options.js';
import { Recovery } from './recovery.js';
import { Registration, type Reservation } from './registration.js';
import { StateFile } from './state.js';
import { StaticFdb } from './staticfdb.js';
import {
  agentStats,
  type BusyPollStatus,
  busyPollStatus,
  type CoalesceStatus,
  coalesceStatus,
  describeEndpoint,
  describeNetwork,
  type IoUringStatus,
  ioUringStatus,
} from './status.js';
import { KvTables } from './tables.js';
import { Keyring } from './keyring.js';

export { type AttachSpec, type Endpoint } from './endpoints.js';
export { macForAddress } from '../common/addr.js';
export { DEFAULT_MTU, type Network, type NetworkSpec } from './networks.js';

export type { AgentOptions } from './options.js';

export const DEFAULT_STATE_DIR = '/var/lib/vxtap';
const LIVENESS_MS = 2000;
const DROP_REPORT_MS = 10_000;
/** Receive buffer of the VXLAN socket: absorbs the agent being off-CPU for a while under load. */
const DEFAULT_RCVBUF = 16 << 20;
const DEFAULT_SNDBUF = 4 << 20;

export class Agent {
  readonly host: string;
  readonly vtep: number;
  readonly port: number;
  readonly offload: boolean;
  readonly kv: Kv;
  readonly fdb: Fdb<Port>;
  readonly dp: Dataplane;
  readonly reconciler: Reconciler;
  /** Networks as the cluster knows them (plus any a local endpoint still needs during a KV outage). */
  readonly networks: Map<string, Network>;
  readonly endpoints: Map<string, Endpoint>;
  /** Addresses this host holds without an endpoint yet (Docker's IPAM asks for them before CreateEndpoint),
   * keyed "<network>/<ip>"; kept in the store under the host lease like endpoints. */
  readonly reservations: Map<string, Reservation>;
  /** Called after network records changed in the store (their names; endpoint changes do not call it). */
  onNetworksChanged: ((changed: Set<string>) => void) | null = null;
  /** Called if the store is lost for good (the embedded store's file deleted or replaced): the agent has stopped
   * its control plane and forwards on its last tables; the process should exit so that it is restarted. */
  onFatal: ((err: Error) => void) | null = null;
  /** The DNS server's counters when one runs (for `vxtap stats`). */
  dnsStats: Record<string, number> | null = null;
  private readonly log: Logger;
  private readonly fds: number[];
  private readonly reg: Registration;
  private readonly nets: Networks;
  private readonly ipam: Ipam;
  private readonly eps: Endpoints;
  private readonly recovery: Recovery;
  private readonly state: StateFile;
  private readonly tables: KvTables<Port>;
  private readonly staticFdb: StaticFdb;
  /** Keys of encrypted networks (keyring.ts). */
  readonly keyring: Keyring;
  /** This run's nonce: encrypted networks derive this host's send keys with it (never reused by a restart). */
  private readonly nonce = randomBytes(16).toString('hex');
  private lastDrops: Record<string, number> = {};
  private disconnectedSince = 0;
  private timers: NodeJS.Timeout[] = [];
  /** The busy-poll window this agent set (0: off). */
  private busyPollUs = 0;
  private closed = false;
  /** When (ms since the process started) the recovered endpoints forwarded again, with tables from the store. */
  private forwardingAt = 0;

  private constructor(
    o: AgentOptions,
    kv: Kv,
    vtep: number,
    port: number,
    udpFd: number,
    txFds: number[],
    io: DataplaneIo,
    /** The MTU of the interface holding the VTEP address (0: not found). */
    underlayMtu = 0,
  ) {
    this.host = o.host ?? hostname();
    if (!NAME.test(this.host))
      throw invalid(`host name ${JSON.stringify(this.host)}: 1-64 of letters, digits, _ . -; give --host`);
    this.vtep = vtep;
    this.port = port;
    this.kv = kv;
    this.log = o.log ?? silentLogger;
    this.fds = [udpFd, ...txFds];
    this.offload = o.offload ?? true;
    this.fdb = new Fdb<Port>({ ageingMs: (o.ageingSec ?? 300) * 1000, maxLearned: o.maxLearned });
    this.dp = new Dataplane({
      io,
      fdb: this.fdb,
      udpFd,
      txFds,
      vxlanPort: port,
      batch: o.batch,
      // the per-byte work in C, each kernel checked against its JS reference before the first packet: forwarding
      // on the JS references first and switching later cost a third of the 60 B frame rate (V8 optimized the
      // forwarding functions for the JS kernels and never recovered fully; history.md entry 21)
      kernels: o.io ? undefined : nativeKernels(),
      offload: this.offload,
      udpGro: this.offload,
      stormPps: o.stormPps,
      onPortError: (p, err) => this.eps.portFailed(p, err),
      onLoopError: (err) => this.log.error('data plane callback failed', { err }),
    });
    const watchWarning = throttled(this.log, 'KV watch');
    this.reconciler = new Reconciler(
      kv,
      (changes) => this.applyChanges(changes),
      (err) => {
        if (!this.disconnectedSince) this.disconnectedSince = Date.now();
        watchWarning({ err });
      },
      o.resyncMs,
    );
    // tables only for the networks this host has endpoints on (eps is made below; asked only once running)
    const family = vtepFamily(vtep);
    this.tables = new KvTables(
      this.fdb,
      this.reconciler.state,
      this.host,
      (n) => this.eps.countOn(n) > 0,
      family,
      (h) =>
        this.log.warn('a host of the cluster has a VTEP of the other IP family: unreachable from this agent', {
          peer: h.host,
          vtep: h.vtep,
          ours: formatVtep(vtep),
          fix: 'give every agent of a cluster a --vtep of the same family (all IPv4 or all IPv6)',
        }),
      (name) => this.keyring.sync(name),
    );
    this.state = new StateFile(o.stateDir ?? DEFAULT_STATE_DIR, this.host, this.log);
    this.reg = new Registration({
      kv,
      host: this.host,
      vtep,
      port,
      leaseTtl: o.leaseTtl ?? 10,
      nonce: this.nonce,
      log: this.log,
      held: () => ({ endpoints: this.eps.records(), reservations: this.ipam.reservations.values() }),
    });
    this.nets = new Networks(
      kv,
      this.reconciler,
      this.dp,
      this.tables,
      this.log,
      (name) => this.eps.countOn(name),
      parsePool(o.pool, o.poolPrefix),
      parsePool6(o.pool6),
      defaultMtu(family),
      o.insecureKv === true,
    );
    this.keyring = new Keyring({
      fdb: this.fdb,
      st: this.reconciler.state,
      kv,
      aead: native(),
      self: this.host,
      selfVtep: formatVtep(vtep),
      nonce: this.nonce,
      family,
      active: (n) => this.eps.countOn(n) > 0,
      log: this.log,
    });
    const persist = (): void => this.saveState();
    this.ipam = new Ipam(kv, this.reconciler.state, this.reg, persist, (n) => this.reconciler.watching(n));
    this.eps = new Endpoints({
      kv,
      dp: this.dp,
      networks: this.nets,
      ipam: this.ipam,
      reg: this.reg,
      tables: this.tables,
      log: this.log,
      offload: this.offload,
      persist,
      host: this.host,
      follow: this.reconciler,
      mtuLimit: underlayMtu ? underlayMtu - vtepOverhead(family) : 0,
    });
    this.recovery = new Recovery(this.eps);
    this.staticFdb = new StaticFdb(this.fdb, this.nets, this.tables, this.log, vtep, port);
    this.networks = this.nets.byName;
    this.endpoints = this.eps.byName;
    this.reservations = this.ipam.reservations;
  }

  /** Opens the sockets, re-adopts endpoints from the state file, joins the cluster and starts forwarding. */
  static async start(o: AgentOptions): Promise<Agent> {
    const tStart = performance.now(); // since the process started: node itself and the modules loaded so far
    const vtep = parseVtepAddress(o.vtep, 'VTEP address');
    const port = o.port ?? VXLAN_DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`port ${port} is not a UDP port (1-65535)`);
    const nTx = o.txSockets ?? 4;
    if (!Number.isInteger(nTx) || nTx < 1 || nTx > 64) throw invalid(`txSockets ${nTx}: 1 to 64`);
    const busyPollUs = o.busyPollUs ?? 0;
    if (!Number.isInteger(busyPollUs) || busyPollUs < 0 || busyPollUs > 10_000_000) {
      throw invalid(`busy-poll window ${busyPollUs}: 0 (off) to 10000000 microseconds`);
    }
    const storm = o.stormPps ?? 2000;
    if (!Number.isInteger(storm) || storm < 0 || storm > 10_000_000) {
      throw invalid(`storm-pps ${storm}: 0 (off) to 10000000 flood frames a second per endpoint`);
    }
    const ttl = o.leaseTtl ?? 10;
    if (!(ttl >= 2 && ttl <= 300)) throw invalid(`lease TTL ${ttl}: 2 to 300 seconds`);
    parsePool(o.pool, o.poolPrefix); // a bad pool is refused before anything is opened
    parsePool6(o.pool6);
    const rcvbuf = o.rcvbuf ?? DEFAULT_RCVBUF;
    const sndbuf = o.sndbuf ?? DEFAULT_SNDBUF;
    const io = o.io ?? nativeIo();
    const n = native();
    const opened: number[] = [];
    let kv: Kv | undefined;
    try {
      let udpFd: number;
      try {
        [udpFd] = n.udpOpen(vtep, port, rcvbuf, sndbuf, o.offload ?? true);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'EADDRNOTAVAIL') {
          throw invalid(
            `VTEP address ${o.vtep} is not an address of this host (netns); give --vtep one of \`ip addr\`` +
              (vtepFamily(vtep) === 6
                ? ' (a new IPv6 address may still be tentative: wait for DAD, or add it nodad)'
                : ''),
          );
        }
        if (code === 'EADDRINUSE') {
          throw new AgentError(
            'ERR_IN_USE',
            `UDP ${o.vtep}:${port} is in use: another agent or a kernel VXLAN device listens there`,
          );
        }
        throw new AgentError('ERR_SETUP', `cannot open the VXLAN socket on ${o.vtep}:${port}: ${(e as Error).message}`);
      }
      opened.push(udpFd);
      const mtu = underlayMtu(vtep); // an `ip` run: beside the store's opening, not before it
      const txFds: number[] = [];
      for (let i = 0; i < nTx; i++) {
        const [fd] = n.udpOpen(vtep, 0, 0, sndbuf, false);
        opened.push(fd);
        txFds.push(fd);
      }
      try {
        kv = typeof o.kv === 'object' ? o.kv : await openKv(o.kv, o.kvSecurity);
      } catch (e) {
        throw invalid((e as Error).message);
      }
      // a store that refuses who we are (TLS, user, password) is a configuration error, not an outage: say so now
      // (a store that does not answer is an outage: the agent starts and keeps trying)
      const check = `check --kv-ca (etcd's CA), --kv-cert/--kv-key (this agent's certificate) and --kv-user/--kv-password-file`;
      const probe = kv.get(keys.guardNetworks).then(
        () => null,
        (e: unknown) => e,
      );
      // a refusal comes at once; an outage only after the client's timeout: wait 1 s at most for it
      const e = await Promise.race([probe, new Promise((r) => setTimeout(r, 1000).unref())]);
      if (e instanceof KvError && e.code === 'ERR_KV_AUTH') throw invalid(`${e.message}; ${check}`);
      if (e !== null) {
        const tls = await kv.diagnose?.();
        if (tls) throw invalid(`TLS with the store at ${kv.where} failed: ${tls}; ${check}`);
      }
      const underlay = await mtu;
      const tSockets = performance.now();
      const agent = new Agent(o, kv, vtep, port, udpFd, txFds, io, underlay);
      const tKernels = performance.now(); // the data plane checked its native kernels
      agent.dp.start();
      if (busyPollUs > 0) {
        n.busyPoll(busyPollUs);
        agent.busyPollUs = busyPollUs;
      }
      const [uring] = n.ioUring(o.ioUring === false);
      if (uring !== 'on' && o.ioUring !== false) {
        agent.log.warn('io_uring unavailable: TAP reads and writes take one syscall per frame (slower)', {
          reason: uring.replace(/^off: /, ''),
        });
      }
      kv.onFatal?.((err) => {
        agent.log.error('KV STORE LOST', { err, kv: kv!.where });
        agent.reconciler.stop();
        agent.onFatal?.(err);
      });
      const tRecover = performance.now();
      await agent.recover();
      agent.startTimers();
      const ms = (a: number, b: number): number => Math.round(b - a);
      void agent.reg.register();
      agent.log.info('agent started', {
        host: agent.host,
        vtep: o.vtep,
        port,
        txSockets: nTx,
        busyPollUs,
        ioUring: uring,
        kv: kv.where,
        endpoints: agent.endpoints.size,
        // where start-up time goes (ms): process start -> here is the time before an endpoint forwards again
        startupMs: {
          boot: Math.round(tStart),
          sockets: ms(tStart, tSockets),
          kernels: ms(tSockets, tKernels),
          busyPollAndIoUring: ms(tKernels, tRecover),
          recover: ms(tRecover, agent.forwardingAt),
          forwarding: Math.round(agent.forwardingAt),
          total: Math.round(performance.now()),
        },
      });
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
    const live = setInterval(() => void this.eps.checkLiveness(), LIVENESS_MS);
    live.unref();
    this.timers.push(live);
    const drops = setInterval(() => this.reportDrops(), DROP_REPORT_MS);
    drops.unref();
    this.timers.push(drops);
  }

  // ---- cluster registration

  /** Grants a lease if needed and (re)puts the host key and every local endpoint's keys. Retries until done. */
  register(): Promise<void> {
    return this.reg.register();
  }

  isRegistered(): boolean {
    return this.reg.isRegistered();
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
    if (any)
      this.log.warn('packets dropped in the last interval', { drops: delta, intervalSec: DROP_REPORT_MS / 1000 });
  }

  // ---- reconcile: cluster state -> data plane tables (idempotent)

  private applyChanges(ch: Changes): void {
    this.disconnectedSince = 0;
    const st = this.reconciler.state;
    const names = new Set(ch.networks);
    // after a re-list, also the networks this host still has that the store no longer lists (a restart, say)
    if (ch.full) for (const name of this.networks.keys()) if (!st.networks.has(name)) names.add(name);
    const whole = new Set<string>();
    for (const name of names) {
      try {
        if (this.nets.apply(name, st.networks.get(name))) whole.add(name);
      } catch (e) {
        this.log.error('cannot apply network state', { network: name, err: e });
      }
    }
    try {
      this.tables.apply(ch, this.nets.vnis(), whole);
    } catch (e) {
      this.log.error('cannot apply cluster changes to the forwarding tables', { err: e });
    }
    try {
      // encrypted networks: the senders on them (and their nonces) may have changed; a network removed or no longer
      // encrypted gives its keys up
      // (those synced whole above were synced by the tables' hook already)
      if (ch.hosts.size !== 0 || ch.full) this.keyring.syncAll();
      else {
        for (const net of ch.endpoints.keys())
          if (!whole.has(net) && st.networks.get(net)?.encrypted) this.keyring.sync(net);
        for (const net of names) if (!whole.has(net)) this.keyring.sync(net);
      }
    } catch (e) {
      this.log.error('cannot apply cluster changes to the keys of encrypted networks', { err: e });
    }
    if (!names.size) return;
    try {
      this.onNetworksChanged?.(names);
    } catch (e) {
      this.log.error('network change hook failed', { err: e });
    }
  }

  // ---- networks

  createNetwork(spec: NetworkSpec): Promise<Network> {
    return this.nets.create(spec);
  }

  deleteNetwork(name: string): Promise<void> {
    return this.nets.delete(name);
  }

  /** Holds the next free subnet of the pool for a network about to be created (Docker's IPAM asks first). */
  holdSubnet(): Promise<Subnet> {
    return this.nets.holdSubnet(this.host);
  }

  /** holdSubnet() for the IPv6 side of a dual-stack network (Docker's RequestPool with V6). */
  holdSubnet6(): Promise<Subnet6> {
    return this.nets.holdSubnet6(this.host);
  }

  /** Gives up a subnet held with holdSubnet() that no network was made of. */
  releaseSubnet(cidr: string): Promise<void> {
    return this.nets.releaseSubnet(cidr);
  }

  network(name: string): Network {
    return this.nets.get(name);
  }

  // ---- endpoints and addresses

  attach(spec: AttachSpec): Promise<Endpoint> {
    return this.eps.attach(spec);
  }

  detach(name: string): Promise<void> {
    return this.eps.detach(name);
  }

  /** Replaces an endpoint's DNS aliases (Docker tells the container name only after Join); re-publishes it. */
  setAliases(name: string, aliases: string[]): Promise<void> {
    return this.eps.setAliases(name, aliases);
  }

  /** Called after a local endpoint was detached, by request or because its namespace or TAP went away. */
  set onEndpointRemoved(f: ((ep: Endpoint) => void) | null) {
    this.eps.onRemoved = f;
  }

  get onEndpointRemoved(): ((ep: Endpoint) => void) | null {
    return this.eps.onRemoved;
  }

  /**
   * Claims an address on a network for this host without an endpoint yet (for Docker's IPAM, which allocates
   * before it creates the endpoint): `ip`, or the first free one. Held under the host lease until attach() with
   * `reserved` turns it into an endpoint's address, or releaseAddress() frees it.
   */
  reserveAddress(network: string, want?: string): Promise<string> {
    return this.ipam.reserve(this.nets.get(network), want);
  }

  /** reserveAddress() for the IPv6 side of a dual-stack network. */
  reserveAddress6(network: string, want?: string): Promise<string> {
    return this.ipam.reserve6(this.nets.get(network), want);
  }

  /** Frees a reservation, IPv4 or IPv6 (idempotent: an address that is not reserved here is left alone). */
  releaseAddress(network: string, addr: string): Promise<void> {
    return this.ipam.release(network, addr.includes(':') ? formatAddress6(parseAddress6(addr)) : addr);
  }

  // ---- local state (restart recovery)

  private saveState(): void {
    this.state.save({
      endpoints: this.eps.records(),
      reservations: [...this.ipam.reservations.values()],
      intents: [...this.eps.intents.values()],
    });
  }

  /**
   * Start-up, around the first list from the store. While it is read (the store may be down): the state file's
   * endpoints forward again and interrupted attachments are undone. Then stray TAPs are removed; without a usable
   * state file, the endpoints the store lists for this host are adopted from their TAPs; and every claim of this
   * host that no local endpoint holds is given up.
   */
  private async recover(): Promise<void> {
    const loaded = this.state.load();
    const st = loaded.status === 'ok' ? loaded.state : null;
    for (const r of st?.reservations ?? [])
      this.ipam.reservations.set(`${r.network}/${r.ip}`, { network: r.network, ip: r.ip });
    // the TAPs re-open while the first list is read: forwarding needs both (a KV outage at start is logged, and
    // forwarding runs on the recovered endpoints)
    await Promise.all([this.recovery.recover(st), this.reconciler.start()]);
    // the endpoints of the recovered endpoints' networks: their lists started as each was adopted
    const used = new Set([...this.endpoints.values()].map((e) => e.network));
    await Promise.all([...used].map((n) => this.reconciler.watchNetwork(n).catch(() => {})));
    this.forwardingAt = performance.now();
    await this.recovery.sweepStrays(st);
    // this host's records in the store: those of the networks it follows; with no usable state file, a scan of
    // every network's records (once, at start-up) finds the endpoints to adopt again
    const mine =
      loaded.status === 'ok' ? [...(this.reconciler.state.byHost.get(this.host) ?? [])] : await this.ownRecords();
    if (loaded.status !== 'ok') {
      const n = await this.recovery.rebuild(this.reconciler.state.networks, mine);
      if (n > 0 && loaded.status === 'missing') {
        this.log.warn('STATE FILE MISSING: rebuilt the local endpoints from the store and their TAPs', {
          path: this.state.path,
          endpoints: n,
        });
      } else if (loaded.status === 'corrupt') {
        this.log.warn('local endpoints rebuilt from the store and their TAPs', { endpoints: n });
      }
    }
    this.recovery.settle(mine);
  }

  /** Every endpoint record of this host in the store, on any network: each network's records in turn (from the
   * state for a followed one, else listed and dropped once searched), so the agent never holds more than one
   * network's at a time. */
  private async ownRecords(): Promise<EndpointRec[]> {
    try {
      const out: EndpointRec[] = [];
      for (const network of [...this.reconciler.state.networks.keys()])
        for (const r of await this.nets.endpointsOf(network)) if (r.host === this.host) out.push(r);
      return out;
    } catch (e) {
      this.log.warn("cannot read the store for this host's endpoints; none rebuilt", { err: e });
      return [];
    }
  }

  // ---- static FDB

  fdbAdd(network: string, mac: string, dst: string): void {
    this.staticFdb.add(network, mac, dst);
  }

  fdbDel(network: string, mac: string, dst?: string): void {
    this.staticFdb.del(network, mac, dst);
  }

  fdbShow(network?: string): (FdbRow & { network: string })[] {
    return this.staticFdb.show(network);
  }

  // ---- views (status.ts)

  describeNetwork(n: Network): Promise<Record<string, unknown>> {
    return describeNetwork(this, n);
  }

  /** The endpoints of a network, cluster-wide (from the store when no local endpoint is on it). */
  endpointsOf(network: string): Promise<EndpointRec[]> {
    return this.nets.endpointsOf(network);
  }

  describeEndpoint(e: Endpoint): Record<string, unknown> {
    return describeEndpoint(e, this.host);
  }

  /** Everything `vxtap stats` shows. */
  stats(): Record<string, unknown> {
    return agentStats(this, this.busyPollUs, { registered: this.reg.isRegistered(), lease: this.reg.leaseId });
  }

  ioUringStatus(): IoUringStatus {
    return ioUringStatus();
  }

  coalesceStatus(): CoalesceStatus {
    return coalesceStatus();
  }

  busyPollStatus(): BusyPollStatus | null {
    return busyPollStatus(this.busyPollUs);
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
    this.keyring.close();
    const n = native();
    if (this.busyPollUs > 0) safe(() => n.busyPoll(0));
    this.eps.closeAll(); // persistent: the devices stay
    for (const fd of this.fds) safe(() => n.closeFd(fd));
    this.reg.close();
    await this.kv.close().catch(() => {});
    this.log.info('agent stopped', { host: this.host, endpointsKept: this.endpoints.size });
  }
}

/** The MTU of the interface that holds the VTEP address, or 0 if `ip` does not show it. */
async function underlayMtu(vtep: number): Promise<number> {
  try {
    const links = await ipJson<{ mtu?: number; addr_info?: { local?: string }[] }[]>(['addr', 'show']);
    const want = formatVtep(vtep);
    return links.find((l) => l.addr_info?.some((a) => a.local === want))?.mtu ?? 0;
  } catch {
    return 0;
  }
}
