/**
 * The per-host agent: opens the VXLAN sockets, runs the data plane, and owns this host's networks, endpoints
 * and static FDB entries. Clients (CLI, control socket) call its methods; every method validates its input and
 * fails with an AgentError that says what to fix, leaving nothing half-done (each step is undone on failure).
 *
 * Until the shared KV store lands, networks and peers are configured per agent: create the same network (same
 * VNI) on every host and add each peer VTEP to the flood list (`vxtap fdb add NET 00:00:00:00:00:00 VTEP`);
 * remote MACs are then learned from traffic, as the kernel's VXLAN device does.
 */
import { hostname } from 'node:os';
import { Fdb, type FdbRow } from '../fdb/fdb.js';
import { Dataplane } from '../dataplane/dataplane.js';
import { type DataplaneIo, nativeIo } from '../dataplane/io.js';
import type { Port } from '../dataplane/port.js';
import { native } from '../sys/native.js';
import { ip, netnsPath } from '../sys/ip.js';
import { closeTap, createTap, checkIfname, type Tap } from '../tap/tap.js';
import { VXLAN_DEFAULT_PORT, VXLAN_IPV4_OVERHEAD, VXLAN_VNI_MAX } from '../vxlan/constants.js';
import { formatIpv4 } from '../vxlan/ipv4.js';
import { formatMac, MAC_ZERO, parseMac, randomMac, isGroupMacNum } from '../vxlan/mac.js';
import { firstFree, inSubnet, parseAddress, parseSubnet, type Subnet } from './addr.js';
import { AgentError, invalid, notFound } from './errors.js';
import { type Logger, silentLogger } from './log.js';

export interface AgentOptions {
  /** This host's name (default: the OS hostname). */
  host?: string;
  /** Underlay IPv4 address to bind and send from: this host's VTEP address. */
  vtep: string;
  /** UDP port VXLAN listens on and sends to (default 4789, IANA). */
  port?: number;
  /** Transmit sockets (distinct outer source ports chosen by flow hash). Default 4. */
  txSockets?: number;
  batch?: number;
  /** Socket buffer sizes in bytes (default 4 MiB each; set with SO_*BUFFORCE as root). */
  rcvbuf?: number;
  sndbuf?: number;
  /** Learned MACs expire after this many seconds (default 300). */
  ageingSec?: number;
  maxLearned?: number;
  log?: Logger;
  /** For tests: another I/O backend (see test/helpers/fakeio.ts). */
  io?: DataplaneIo;
}

export interface NetworkSpec {
  name: string;
  vni: number;
  subnet: string;
  gateway?: string | null;
  mtu?: number;
  learning?: boolean;
}

export interface Network {
  name: string;
  vni: number;
  subnet: Subnet;
  gateway: number; // 0 = none
  mtu: number;
  learning: boolean;
}

export interface AttachSpec {
  network: string;
  netns: string;
  name?: string;
  ip?: string;
  mac?: string;
  ifname?: string;
  defaultRoute?: boolean;
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
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const DEFAULT_MTU = 1450;
const MTU_MIN = 68;
const MTU_MAX = 65535 - VXLAN_IPV4_OVERHEAD - 14;

export class Agent {
  readonly host: string;
  readonly vtep: number;
  readonly port: number;
  readonly fdb: Fdb<Port>;
  readonly dp: Dataplane;
  readonly networks = new Map<string, Network>();
  readonly endpoints = new Map<string, Endpoint>();
  private readonly log: Logger;
  private readonly fds: number[];
  private sweepTimer: NodeJS.Timeout | null = null;
  private seq = 0;
  private closed = false;

  private constructor(o: AgentOptions, vtep: number, port: number, udpFd: number, txFds: number[], io: DataplaneIo) {
    this.host = o.host ?? hostname();
    this.vtep = vtep;
    this.port = port;
    this.log = o.log ?? silentLogger;
    this.fds = [udpFd, ...txFds];
    this.fdb = new Fdb<Port>({ ageingMs: (o.ageingSec ?? 300) * 1000, maxLearned: o.maxLearned });
    this.dp = new Dataplane({
      io,
      fdb: this.fdb,
      udpFd,
      txFds,
      vxlanPort: port,
      batch: o.batch,
      onPortError: (p, err) => this.portFailed(p, err),
      onLoopError: (err) => this.log.error('data plane callback failed', { err }),
    });
  }

  /** Opens the sockets and starts forwarding. */
  static async start(o: AgentOptions): Promise<Agent> {
    const vtep = parseAddress(o.vtep, 'VTEP address');
    const port = o.port ?? VXLAN_DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`port ${port} is not a UDP port (1-65535)`);
    const nTx = o.txSockets ?? 4;
    if (!Number.isInteger(nTx) || nTx < 1 || nTx > 64) throw invalid(`txSockets ${nTx}: 1 to 64`);
    const rcvbuf = o.rcvbuf ?? 4 << 20;
    const sndbuf = o.sndbuf ?? 4 << 20;
    const io = o.io ?? nativeIo();
    const n = native();
    const opened: number[] = [];
    try {
      let udpFd: number;
      try {
        [udpFd] = n.udpOpen(vtep, port, rcvbuf, sndbuf, false);
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
      const agent = new Agent(o, vtep, port, udpFd, txFds, io);
      agent.dp.start();
      agent.scheduleSweep(agent.fdb.ageingMs);
      agent.log.info('agent started', { host: agent.host, vtep: o.vtep, port, txSockets: nTx });
      return agent;
    } catch (e) {
      for (const fd of opened) safe(() => n.closeFd(fd));
      throw e;
    }
  }

  // ---- networks

  createNetwork(spec: NetworkSpec): Network {
    if (typeof spec?.name !== 'string' || !NAME.test(spec.name)) {
      throw invalid(`network name ${JSON.stringify(spec?.name)}: 1-64 of letters, digits, _ . - (starting with a letter or digit)`);
    }
    if (this.networks.has(spec.name)) throw new AgentError('ERR_EXISTS', `network ${spec.name} already exists`);
    if (!Number.isInteger(spec.vni) || spec.vni < 1 || spec.vni > VXLAN_VNI_MAX) {
      throw invalid(`VNI ${JSON.stringify(spec.vni)} must be an integer from 1 to ${VXLAN_VNI_MAX}`);
    }
    const subnet = parseSubnet(spec.subnet);
    const mtu = spec.mtu ?? DEFAULT_MTU;
    if (!Number.isInteger(mtu) || mtu < MTU_MIN || mtu > MTU_MAX) throw invalid(`MTU ${mtu}: ${MTU_MIN} to ${MTU_MAX}`);
    let gateway = 0;
    if (spec.gateway === undefined) gateway = (subnet.network + 1) >>> 0;
    else if (spec.gateway !== null && spec.gateway !== 'none') {
      gateway = parseAddress(spec.gateway, 'gateway');
      if (!inSubnet(gateway, subnet)) throw invalid(`gateway ${spec.gateway} is not a host address of ${subnet.cidr}`);
    }
    for (const n of this.networks.values()) {
      if (n.vni === spec.vni) throw new AgentError('ERR_EXISTS', `VNI ${spec.vni} is already used by network ${n.name}`);
      if (overlaps(n.subnet, subnet)) throw new AgentError('ERR_EXISTS', `subnet ${subnet.cidr} overlaps network ${n.name} (${n.subnet.cidr})`);
    }
    const net: Network = { name: spec.name, vni: spec.vni, subnet, gateway, mtu, learning: spec.learning ?? true };
    this.dp.addVni(net.vni, net.learning);
    this.networks.set(net.name, net);
    this.log.info('network created', { network: net.name, vni: net.vni, subnet: subnet.cidr, mtu });
    return net;
  }

  deleteNetwork(name: string): void {
    const net = this.network(name);
    const eps = [...this.endpoints.values()].filter((e) => e.network === name);
    if (eps.length) throw new AgentError('ERR_IN_USE', `network ${name} has ${eps.length} endpoint(s) (${eps.map((e) => e.name).join(', ')}); detach them first`);
    this.dp.delVni(net.vni);
    this.networks.delete(name);
    this.log.info('network deleted', { network: name });
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
    try {
      netnsPath(spec.netns);
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
    for (const e of this.endpoints.values()) {
      if (e.name === name) throw new AgentError('ERR_EXISTS', `endpoint ${name} already exists (network ${e.network})`);
      if (e.netns === spec.netns && e.tap.ifname === ifname) throw new AgentError('ERR_EXISTS', `${spec.netns} already has ${ifname} from endpoint ${e.name}; pick --ifname`);
    }
    const addr = this.pickAddress(net, spec.ip);
    let mac: number;
    if (spec.mac !== undefined) {
      try {
        mac = parseMac(spec.mac);
      } catch (e) {
        throw invalid((e as Error).message);
      }
      if (isGroupMacNum(mac) || mac === MAC_ZERO) throw invalid(`MAC ${spec.mac} must be a unicast address`);
    } else mac = randomMac();
    let tap: Tap;
    try {
      tap = await createTap({ ifname, netns: spec.netns, mac, mtu: net.mtu });
    } catch (e) {
      const code = (e as { code?: string }).code;
      throw new AgentError(code === 'EEXIST' ? 'ERR_EXISTS' : 'ERR_SETUP', (e as Error).message);
    }
    let port: Port | undefined;
    try {
      await ip(['addr', 'add', `${formatIpv4(addr)}/${net.subnet.prefix}`, 'dev', ifname], spec.netns);
      if (net.gateway && spec.defaultRoute !== false) {
        await ip(['route', 'replace', 'default', 'via', formatIpv4(net.gateway), 'dev', ifname], spec.netns);
      }
      port = this.dp.addPort({ id: name, mac, vni: net.vni, fd: tap.fd, ifname });
    } catch (e) {
      if (port) this.dp.removePort(name);
      await closeTap(tap);
      throw new AgentError('ERR_SETUP', `cannot set up ${ifname} in ${spec.netns}: ${(e as Error).message}`);
    }
    const ep: Endpoint = { id: name, name, network: net.name, netns: spec.netns, ip: addr, mac, tap, port };
    this.endpoints.set(name, ep);
    this.log.info('endpoint attached', { endpoint: name, network: net.name, netns: spec.netns, ip: formatIpv4(addr), mac: formatMac(mac) });
    return ep;
  }

  private pickAddress(net: Network, want: string | undefined): number {
    const used = new Set<number>();
    if (net.gateway) used.add(net.gateway);
    for (const e of this.endpoints.values()) if (e.network === net.name) used.add(e.ip);
    if (want !== undefined) {
      const a = parseAddress(want, 'endpoint address');
      if (!inSubnet(a, net.subnet)) throw invalid(`address ${want} is not a host address of ${net.name} (${net.subnet.cidr})`);
      if (a === net.gateway) throw new AgentError('ERR_IN_USE', `address ${want} is the gateway of ${net.name}`);
      if (used.has(a)) throw new AgentError('ERR_IN_USE', `address ${want} is already in use on ${net.name}`);
      return a;
    }
    const a = firstFree(net.subnet, used);
    if (a < 0) throw new AgentError('ERR_NO_ADDRESS', `no free address left in ${net.name} (${net.subnet.cidr})`);
    return a;
  }

  async detach(name: string): Promise<void> {
    const ep = this.endpoints.get(name);
    if (!ep) throw notFound(`endpoint ${JSON.stringify(name)} not found; \`vxtap endpoint ls\` lists them`);
    this.dp.removePort(ep.id);
    this.endpoints.delete(name);
    await closeTap(ep.tap);
    this.log.info('endpoint detached', { endpoint: name, network: ep.network });
  }

  private portFailed(p: Port, err: Error): void {
    const ep = this.endpoints.get(p.id);
    this.log.warn('endpoint TAP failed; detaching it (was its namespace deleted?)', { endpoint: p.id, err });
    if (ep) void this.detach(ep.name).catch((e) => this.log.error('detach after TAP failure failed', { endpoint: p.id, err: e }));
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
      ok = this.fdb.floodDel(net.vni, vtep, port);
    } else ok = this.fdb.del(net.vni, m, 'static') || this.fdb.del(net.vni, m, 'learned');
    if (!ok) throw notFound(`no such static or learned entry for ${mac}${dst ? ` dst ${dst}` : ''} on ${network}`);
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
      endpoints: [...this.endpoints.values()].filter((e) => e.network === n.name).map((e) => this.describeEndpoint(e)),
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
      counters: this.dp.counters.snapshot(),
      drops: this.dp.counters.drops(),
      vnis: Object.fromEntries([...this.networks.values()].map((nw) => [nw.name, { vni: nw.vni, ...this.dp.vniStats(nw.vni) }])),
      fdb: this.fdb.size(),
      endpoints: [...this.endpoints.values()].map((e) => this.describeEndpoint(e)),
    };
  }

  // ---- lifecycle

  private scheduleSweep(ms: number): void {
    if (this.closed) return;
    this.sweepTimer = setTimeout(() => this.scheduleSweep(Math.max(1000, this.fdb.sweep())), Math.max(1000, ms));
    this.sweepTimer.unref();
  }

  /** Stops forwarding, detaches every endpoint (their TAPs go away) and closes the sockets. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    for (const name of [...this.endpoints.keys()]) await this.detach(name).catch(() => {});
    this.dp.stop();
    const n = native();
    for (const fd of this.fds) safe(() => n.closeFd(fd));
    this.log.info('agent stopped', { host: this.host });
  }
}

function overlaps(a: Subnet, b: Subnet): boolean {
  return a.network <= b.broadcast && b.network <= a.broadcast;
}

function safe(f: () => unknown): void {
  try {
    f();
  } catch {
    /* best effort during teardown */
  }
}
