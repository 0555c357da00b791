/**
 * The Docker remote network driver and IPAM driver ("vxtap"), on top of the agent.
 *
 * What dockerd sends and expects is in docs/docker.md (observed against dockerd 20.10). The mapping:
 *   IPAM RequestPool        a pool = one subnet; bound to a vxtap network (by -o/--ipam-opt vxtap.network, or at
 *                           CreateNetwork)
 *   IPAM RequestAddress     reserves the address cluster-wide in the store (agent.reserveAddress), so addresses
 *                           never collide across hosts; the gateway address is the network's, never reserved
 *   CreateNetwork           binds the Docker network to a vxtap network: the one named by -o vxtap.network (created
 *                           if absent), else one named like the Docker network. The driver is never told that
 *                           name: the plugin asks the local dockerd once the network exists there, then creates
 *                           the vxtap network in the store (other hosts' agents then create it in their dockerd)
 *   CreateEndpoint          records the address and MAC (02:76 + IPv4, as the agent's own default)
 *   Join                    creates the endpoint's TAP in the agent's namespace and hands its name to Docker, which
 *                           moves it into the container; no Gateway, so Docker also attaches docker_gwbridge for
 *                           outbound traffic and -p port publishing, as its own overlay driver does
 *   DeleteEndpoint          removes the TAP, the endpoint and its address from the store
 *   DeleteNetwork           removes the vxtap network cluster-wide when no endpoint uses it anywhere
 *
 * State (pools, networks, endpoints) persists in <stateDir>/<host>.docker.json: Docker never replays
 * CreateNetwork after a plugin restart. A reconcile pass (start, every 5 s, on network changes) makes the local
 * dockerd's vxtap networks equal to the store's, and removes endpoints and reservations dockerd no longer has
 * (a dockerd killed and restarted drops its endpoints without calling the plugin).
 *
 * Length: one method per protocol call, in the order of the table above, each with the validation and the
 * answer dockerd expects; split it when the swarm (v2) calls come, along the IPAM / network-driver line.
 */
import { existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Agent } from '../agent/agent.js';

/** A network as the agent describes it (the plugin imports the Agent only). */
type Network = ReturnType<Agent['network']>;
import {
  formatAddress6,
  inSubnet,
  inSubnet6,
  macForAddress,
  parseAddress,
  parseAddress6,
  parseSubnet,
  parseSubnet6,
  type Subnet6,
} from '../common/addr.js';
import { AgentError, invalid, notFound } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { writeStateFile } from '../common/statefile.js';
import { formatIpv4 } from '../vxlan/ipv4.js';
import { formatMac, parseMac } from '../vxlan/mac.js';
import { type Body, id, type JoinResponse, NO_BODY_CALLS, obj, optStr, str, strMap } from './api.js';
import { Engine, type EngineNetwork } from './engine.js';

export const ADDRESS_SPACE = 'vxtap';
export const OPT_NETWORK = 'vxtap.network';
export const OPT_VNI = 'vxtap.vni';
const OPT_MTU = 'com.docker.network.driver.mtu';
/** Docker's own option name for encrypted overlay networks (`docker network create -o encrypted`). */
export const OPT_ENCRYPTED = 'encrypted';
const GATEWAY_TYPE = 'com.docker.network.gateway';
const BIND_WAIT_MS = 30_000;
const RECONCILE_MS = 5000;
/** An endpoint or reservation dockerd does not show is removed after it was missing this long. */
const STALE_MS = 10_000;
const POOL_UNCLAIMED_MS = 10 * 60_000;

interface PoolRec {
  subnet: string;
  gateway?: string;
  /** The vxtap network, once known. */
  network?: string;
  networkId?: string;
  /** When Docker asked for it: a pool no CreateNetwork claimed within POOL_UNCLAIMED_MS is a failed create's. */
  created?: number;
  /** Taken from the agent's subnet pool (no --subnet) and held in the store until the network is created. */
  held?: boolean;
  /** An IPv6 pool (Docker's --ipv6: RequestPool with V6). */
  v6?: boolean;
}

interface NetRec {
  /** The vxtap network; null until the Docker name is known. */
  network: string | null;
  subnet: string;
  gateway: string | null;
  vni?: number;
  mtu?: number;
  /** docker network create --internal: recorded in the store so every host's dockerd gets it too. */
  internal?: boolean;
  /** The subnet is held in the store for this network (no --subnet): creating it gives the hold up. */
  held?: boolean;
  /** -o encrypted: an encrypted vxtap network (docs/encryption.md). */
  encrypted?: boolean;
  /** Dual stack (--ipv6): the IPv6 subnet and gateway, and whether the subnet is held. */
  subnet6?: string;
  gateway6?: string | null;
  held6?: boolean;
  /** Why binding to a vxtap network failed (CreateEndpoint reports it). */
  error?: string;
}

interface EpRec {
  networkId: string;
  network: string;
  ip: string;
  /** Dual stack: the address Docker's IPv6 pool gave (reserved by RequestAddress). */
  ip6?: string;
  mac: string;
  /** The agent's endpoint name, after Join. */
  vxtap?: string;
  created: number;
}

interface State {
  version: 1;
  pools: Record<string, PoolRec>;
  networks: Record<string, NetRec>;
  endpoints: Record<string, EpRec>;
}

export class PluginError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class DockerPlugin {
  readonly engine: Engine;
  // null-prototype maps: an ID such as __proto__ or constructor is a key like any other, never an inherited one
  private st: State = { version: 1, pools: dict(), networks: dict(), endpoints: dict() };
  private readonly path: string;
  private readonly binders = new Map<string, Promise<string>>();
  private readonly missingSince = new Map<string, number>();
  private reconciling: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private lastError = '';
  /** docker_gwbridge addresses of this dockerd's containers, and when they were read (isContainer). */
  private gwIps = new Set<string>();
  private gwAt = -Infinity;
  private gwRead: Promise<void> | null = null;

  constructor(
    readonly agent: Agent,
    dockerUrl: string,
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.engine = new Engine(dockerUrl);
    this.path = join(stateDir, `${agent.host}.docker.json`);
    this.load();
    agent.onNetworksChanged = () => this.kick();
    agent.onEndpointRemoved = (ep) => {
      for (const [id, e] of Object.entries(this.st.endpoints)) if (e.vxtap === ep.name) delete this.st.endpoints[id];
      this.save();
    };
  }

  start(): void {
    for (const [id, n] of Object.entries(this.st.networks)) if (n.network === null && !n.error) this.bind(id);
    this.kick();
    this.timer = setInterval(() => this.kick(), RECONCILE_MS);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }

  // ---- the remote API: one method per call; each validates its body and throws PluginError / AgentError

  async handle(method: string, body: Body | null): Promise<unknown> {
    if (!NO_BODY_CALLS.has(method) && body === null)
      throw new PluginError(400, `${method}: empty request body (a retried request?); nothing was done`);
    const b = body ?? {};
    switch (method) {
      case 'Plugin.Activate':
        return { Implements: ['NetworkDriver', 'IpamDriver'] };
      case 'NetworkDriver.GetCapabilities':
        return { Scope: 'local', ConnectivityScope: 'global' };
      case 'NetworkDriver.CreateNetwork':
        return this.createNetwork(b);
      case 'NetworkDriver.DeleteNetwork':
        return this.deleteNetwork(b);
      case 'NetworkDriver.CreateEndpoint':
        return this.createEndpoint(b);
      case 'NetworkDriver.EndpointOperInfo':
        return this.operInfo(b);
      case 'NetworkDriver.DeleteEndpoint':
        return this.deleteEndpoint(b);
      case 'NetworkDriver.Join':
        return this.join(b);
      case 'NetworkDriver.Leave':
        id(b, 'NetworkID');
        id(b, 'EndpointID');
        return {};
      case 'NetworkDriver.ProgramExternalConnectivity':
      case 'NetworkDriver.RevokeExternalConnectivity':
        id(b, 'NetworkID');
        id(b, 'EndpointID');
        return {}; // port publishing and outbound NAT: Docker's docker_gwbridge (Join returns no gateway)
      case 'NetworkDriver.DiscoverNew':
      case 'NetworkDriver.DiscoverDelete':
        return {};
      case 'IpamDriver.GetCapabilities':
        return { RequiresMACAddress: false, RequiresRequestReplay: false };
      case 'IpamDriver.GetDefaultAddressSpaces':
        return { LocalDefaultAddressSpace: ADDRESS_SPACE, GlobalDefaultAddressSpace: ADDRESS_SPACE };
      case 'IpamDriver.RequestPool':
        return this.requestPool(b);
      case 'IpamDriver.ReleasePool':
        return this.releasePool(str(b, 'PoolID'));
      case 'IpamDriver.RequestAddress':
        return this.requestAddress(b);
      case 'IpamDriver.ReleaseAddress':
        return this.releaseAddress(b);
      default:
        throw new PluginError(404, `${method} is not implemented by vxtap`);
    }
  }

  // ---- IPAM

  private async releasePool(poolId: string): Promise<unknown> {
    const p = this.st.pools[poolId];
    delete this.st.pools[poolId];
    this.save();
    // a subnet held for a network that was never created goes back to the pool (once the network exists, its
    // creation already gave the hold up, and the subnet is the network's)
    if (p?.held && !p.networkId)
      await this.agent.releaseSubnet(p.subnet).catch((e: unknown) => {
        this.log.warn('cannot give up a held subnet; it is free again in 2 minutes', { subnet: p.subnet, err: e });
      });
    return {};
  }

  /** RequestPool: the subnet given, or the next free block of the agent's pool (IPv4), or of --pool6 (V6, a
   * dual-stack network's IPv6 side), held in the store until the network is created. */
  private async requestPool(b: Body): Promise<unknown> {
    const space = optStr(b, 'AddressSpace') ?? ADDRESS_SPACE;
    if (space !== ADDRESS_SPACE) throw invalid(`address space ${JSON.stringify(space)} is not vxtap's; leave it out`);
    if (optStr(b, 'SubPool')) throw invalid('vxtap allocates from the whole subnet; --ip-range is not supported');
    const v6 = b.V6 === true;
    const fam = v6
      ? {
          what: 'IPv6 subnet',
          of: (n: Network) => n.subnet6?.cidr,
          parse: parseSubnet6,
          hold: () => this.agent.holdSubnet6(),
        }
      : { what: 'subnet', of: (n: Network) => n.subnet.cidr, parse: parseSubnet, hold: () => this.agent.holdSubnet() };
    const opts = strMap(b, 'Options');
    const network = opts[OPT_NETWORK];
    let pool = optStr(b, 'Pool') ?? '';
    const n = network === undefined ? undefined : this.agent.networks.get(network);
    if (n) {
      const have = fam.of(n);
      if (!have) throw invalid(`vxtap network ${network} has no IPv6 subnet; create it again with --ipv6`);
      if (!pool) pool = have;
      if (fam.parse(pool).cidr !== have) throw invalid(`vxtap network ${network} has ${fam.what} ${have}, not ${pool}`);
    }
    const held = !pool;
    const subnet = held ? await fam.hold() : fam.parse(pool);
    const poolId = `vxtap${v6 ? '6' : ''}-${subnet.cidr.replace(/[/:]/g, '-')}-${randomBytes(4).toString('hex')}`;
    this.st.pools[poolId] = {
      subnet: subnet.cidr,
      created: Date.now(),
      ...(v6 ? { v6 } : {}),
      ...(network ? { network } : {}),
      ...(held ? { held } : {}),
    };
    this.save();
    return { PoolID: poolId, Pool: subnet.cidr, Data: {} };
  }

  private async requestAddress(b: Body): Promise<unknown> {
    const poolId = str(b, 'PoolID');
    const pool = this.st.pools[poolId];
    if (!pool) throw notFound(`unknown pool ${poolId}: it was released, or the plugin's state was lost`);
    if (pool.v6) return this.requestAddress6(b, poolId, pool);
    const subnet = parseSubnet(pool.subnet);
    const want = optStr(b, 'Address') || undefined;
    const opts = strMap(b, 'Options');
    if (opts.RequestAddressType === GATEWAY_TYPE) {
      const net = pool.network ? this.agent.networks.get(pool.network) : undefined;
      let gw = want ?? (net?.gateway ? formatIpv4(net.gateway) : formatIpv4((subnet.network + 1) >>> 0));
      const g = parseAddress(gw, 'gateway');
      if (!inSubnet(g, subnet)) throw invalid(`gateway ${gw} is not a host address of ${subnet.cidr}`);
      gw = formatIpv4(g);
      pool.gateway = gw;
      this.save();
      return { Address: `${gw}/${subnet.prefix}`, Data: {} };
    }
    const network = await this.poolNetwork(poolId, pool);
    const ip = await this.agent.reserveAddress(network, want);
    return { Address: `${ip}/${subnet.prefix}`, Data: {} };
  }

  private async requestAddress6(b: Body, poolId: string, pool: PoolRec): Promise<unknown> {
    const subnet = parseSubnet6(pool.subnet);
    const want = optStr(b, 'Address') || undefined;
    if (strMap(b, 'Options').RequestAddressType === GATEWAY_TYPE) {
      const net = pool.network ? this.agent.networks.get(pool.network) : undefined;
      const g = want ? parseAddress6(want, 'IPv6 gateway') : net?.gateway6 || subnet.network + 1n;
      if (!inSubnet6(g, subnet)) throw invalid(`IPv6 gateway ${want} is not a host address of ${subnet.cidr}`);
      pool.gateway = formatAddress6(g);
      this.save();
      return { Address: `${pool.gateway}/${subnet.prefix}`, Data: {} };
    }
    const network = await this.poolNetwork(poolId, pool);
    const ip6 = await this.agent.reserveAddress6(network, want);
    return { Address: `${ip6}/${subnet.prefix}`, Data: {} };
  }

  private async releaseAddress(b: Body): Promise<unknown> {
    const pool = this.st.pools[str(b, 'PoolID')];
    const addr = str(b, 'Address');
    if (!pool?.network || addr.replace(/\/\d+$/, '') === pool.gateway) return {};
    await this.agent.releaseAddress(pool.network, addr.replace(/\/\d+$/, ''));
    return {};
  }

  /** The vxtap network a pool allocates in; waits for its network's name to be known. */
  private async poolNetwork(poolId: string, pool: PoolRec): Promise<string> {
    if (pool.network) return pool.network;
    if (!pool.networkId)
      throw new AgentError(
        'ERR_NOT_FOUND',
        `pool ${poolId} has no network yet: Docker asked for an address before CreateNetwork`,
      );
    return (pool.network = await this.bound(pool.networkId));
  }

  // ---- networks

  private async createNetwork(b: Body): Promise<unknown> {
    const networkId = id(b, 'NetworkID');
    const opts = obj(b, 'Options');
    const generic = strMap(opts, 'com.docker.network.generic');
    // dual stack (--ipv6): one IPv6 subnet from vxtap's IPAM beside the IPv4 one
    let subnet6: Subnet6 | null = null;
    let gateway6: string | null = null;
    if (opts['com.docker.network.enable_ipv6'] === true || (Array.isArray(b.IPv6Data) && b.IPv6Data.length)) {
      const v6 = b.IPv6Data;
      if (!Array.isArray(v6) || v6.length !== 1 || typeof v6[0] !== 'object' || v6[0] === null)
        throw invalid('a dual-stack vxtap network has exactly one IPv6 subnet: give at most one IPv6 --subnet');
      const d6 = v6[0] as Body;
      if (optStr(d6, 'AddressSpace') !== ADDRESS_SPACE)
        throw invalid('vxtap networks need vxtap IPAM so addresses are unique across hosts: add --ipam-driver vxtap');
      subnet6 = parseSubnet6(str(d6, 'Pool'));
      const g6 = optStr(d6, 'Gateway');
      gateway6 = g6 ? formatAddress6(parseAddress6(g6.replace(/\/\d+$/, ''), 'IPv6 gateway')) : null;
    }
    const v4 = b.IPv4Data;
    if (!Array.isArray(v4) || v4.length !== 1 || typeof v4[0] !== 'object' || v4[0] === null) {
      throw invalid('a vxtap network has exactly one IPv4 subnet: give one --subnet');
    }
    const d = v4[0] as Body;
    if (optStr(d, 'AddressSpace') !== ADDRESS_SPACE) {
      throw invalid('vxtap networks need vxtap IPAM so addresses are unique across hosts: add --ipam-driver vxtap');
    }
    const subnet = parseSubnet(str(d, 'Pool'));
    const gwCidr = optStr(d, 'Gateway');
    const gateway = gwCidr ? formatIpv4(parseAddress(gwCidr.replace(/\/\d+$/, ''), 'gateway')) : null;
    const vni = generic[OPT_VNI] === undefined ? undefined : Number(generic[OPT_VNI]);
    if (vni !== undefined && !Number.isInteger(vni))
      throw invalid(`-o ${OPT_VNI}=${generic[OPT_VNI]}: give an integer VNI (1-16777215)`);
    const mtu = generic[OPT_MTU] === undefined ? undefined : Number(generic[OPT_MTU]);
    if (mtu !== undefined && !Number.isInteger(mtu))
      throw invalid(`-o ${OPT_MTU}=${generic[OPT_MTU]}: give an integer MTU`);
    // the pool Docker asked for just before this call: the newest unclaimed one of this subnet
    const pool = Object.entries(this.st.pools)
      .reverse()
      .find(
        ([, p]) =>
          p.subnet === subnet.cidr &&
          !p.networkId &&
          (!generic[OPT_NETWORK] || !p.network || p.network === generic[OPT_NETWORK]),
      );
    const pool6 = subnet6
      ? Object.entries(this.st.pools)
          .reverse()
          .find(([, p]) => p.v6 && p.subnet === subnet6.cidr && !p.networkId)
      : undefined;
    const name = generic[OPT_NETWORK] ?? pool?.[1].network ?? null;
    const internal = opts['com.docker.network.internal'] === true;
    const enc = generic[OPT_ENCRYPTED];
    if (enc !== undefined && !['', 'true', 'false'].includes(enc))
      throw invalid(`-o ${OPT_ENCRYPTED}=${enc}: give -o ${OPT_ENCRYPTED} alone (or =true / =false)`);
    const encrypted = enc === '' || enc === 'true';
    const rec: NetRec = {
      network: name,
      subnet: subnet.cidr,
      gateway,
      ...(vni !== undefined ? { vni } : {}),
      ...(mtu !== undefined ? { mtu } : {}),
      ...(internal ? { internal } : {}),
      ...(encrypted ? { encrypted } : {}),
      ...(pool?.[1].held ? { held: true } : {}),
      ...(subnet6 ? { subnet6: subnet6.cidr, gateway6, ...(pool6?.[1].held ? { held6: true } : {}) } : {}),
    };
    if (name !== null) await this.ensureNetwork(name, rec); // named: bound now, so a wrong name or subnet is this call's error
    this.st.networks[networkId] = rec;
    if (pool) Object.assign(pool[1], { networkId, ...(name ? { network: name } : {}) });
    if (pool6) Object.assign(pool6[1], { networkId, ...(name ? { network: name } : {}) });
    this.save();
    if (name === null) this.bind(networkId);
    this.log.info('docker network created', {
      networkId: networkId.slice(0, 12),
      network: name ?? '(name pending)',
      subnet: subnet.cidr,
      ...(subnet6 ? { subnet6: subnet6.cidr } : {}),
      ...(encrypted ? { encrypted } : {}),
    });
    return {};
  }

  /** Learns the Docker network's name from dockerd (it shows the network once CreateNetwork returned), then binds
   * it to the vxtap network of that name, creating it in the store. */
  private bind(networkId: string): void {
    if (this.binders.has(networkId)) return;
    const p = (async () => {
      const deadline = Date.now() + BIND_WAIT_MS;
      let dn: EngineNetwork | null = null;
      while (!this.closed && Date.now() < deadline) {
        dn = await this.engine.network(networkId).catch(() => null);
        if (dn) break;
        await sleep(50);
      }
      const rec = this.st.networks[networkId];
      if (!rec) throw notFound(`network ${networkId.slice(0, 12)} was deleted`);
      if (!dn)
        throw new AgentError(
          'ERR_SETUP',
          `dockerd at ${this.engine.url} did not show network ${networkId.slice(0, 12)} within ${BIND_WAIT_MS / 1000} s`,
        );
      const name = dn.Name;
      rec.network = name; // before the store has it: the reconcile pass must see this Docker network as bound
      try {
        await this.ensureNetwork(name, rec);
      } catch (e) {
        rec.network = null;
        throw e;
      }
      for (const pool of Object.values(this.st.pools)) if (pool.networkId === networkId) pool.network = name;
      this.save();
      this.log.info('docker network bound to vxtap network', { networkId: networkId.slice(0, 12), network: name });
      this.binders.delete(networkId);
      this.kick();
      return name;
    })();
    p.catch((e) => {
      this.binders.delete(networkId);
      const rec = this.st.networks[networkId];
      if (rec) rec.error = (e as Error).message;
      this.save();
      this.log.error('cannot register the docker network in the cluster', {
        networkId: networkId.slice(0, 12),
        err: e,
      });
    });
    this.binders.set(networkId, p);
  }

  /** Makes sure the vxtap network `name` exists with rec's subnet: the existing one, or created now (one created
   * concurrently elsewhere with the same subnet counts as success). */
  private async ensureNetwork(name: string, rec: NetRec): Promise<void> {
    const matches = (): boolean => {
      const have = this.agent.networks.get(name);
      if (have && have.subnet.cidr !== rec.subnet)
        throw new AgentError(
          'ERR_EXISTS',
          `vxtap network ${name} exists with subnet ${have.subnet.cidr}, not ${rec.subnet}`,
        );
      if (have && (have.subnet6?.cidr ?? null) !== (rec.subnet6 ?? null))
        throw new AgentError(
          'ERR_EXISTS',
          `vxtap network ${name} exists with IPv6 subnet ${have.subnet6?.cidr ?? 'none'}, not ${rec.subnet6 ?? 'none'}`,
        );
      if (have && have.internal !== (rec.internal === true)) {
        const how = have.internal ? 'with' : 'without';
        throw new AgentError(
          'ERR_EXISTS',
          `vxtap network ${name} exists ${how} --internal; create it ${how} --internal, or under another name`,
        );
      }
      if (have && have.encrypted !== (rec.encrypted === true)) {
        const how = have.encrypted ? 'with' : 'without';
        throw new AgentError(
          'ERR_EXISTS',
          `vxtap network ${name} exists ${how} encryption; create it ${how} -o ${OPT_ENCRYPTED}, or under another name`,
        );
      }
      return have !== undefined;
    };
    if (matches()) return;
    try {
      await this.agent.createNetwork({
        name,
        subnet: rec.subnet,
        gateway: rec.gateway ?? undefined,
        vni: rec.vni,
        mtu: rec.mtu,
        internal: rec.internal,
        encrypted: rec.encrypted,
        held: rec.held,
        ...(rec.subnet6 ? { subnet6: rec.subnet6, gateway6: rec.gateway6 ?? undefined, held6: rec.held6 } : {}),
      });
    } catch (e) {
      if (!(e instanceof AgentError && e.code === 'ERR_EXISTS' && matches())) throw e;
    }
  }

  /** The vxtap network a Docker network is bound to (waiting for a pending bind). */
  private async bound(networkId: string): Promise<string> {
    const rec = this.st.networks[networkId];
    if (!rec)
      throw notFound(
        `network ${networkId.slice(0, 12)} is not a vxtap network here (was the plugin's state lost? recreate the network)`,
      );
    if (rec.network && !this.binders.has(networkId)) return rec.network;
    if (rec.error)
      throw new AgentError(
        'ERR_SETUP',
        `the network could not be registered in the cluster: ${rec.error}; remove it and create it again`,
      );
    const p = this.binders.get(networkId);
    if (!p)
      throw new AgentError('ERR_INTERNAL', `network ${networkId.slice(0, 12)} has no name and no bind in progress`);
    try {
      return await p;
    } catch (e) {
      throw new AgentError(
        'ERR_SETUP',
        `the network could not be registered in the cluster: ${(e as Error).message}; remove it and create it again`,
      );
    }
  }

  private async deleteNetwork(b: Body): Promise<unknown> {
    const networkId = id(b, 'NetworkID');
    const rec = this.st.networks[networkId];
    delete this.st.networks[networkId];
    for (const [pid, p] of Object.entries(this.st.pools)) if (p.networkId === networkId) delete this.st.pools[pid];
    this.binders.delete(networkId);
    this.save();
    const name = rec?.network;
    if (!name) return {};
    // Docker cannot refuse a delete: remove the network cluster-wide when nothing uses it anywhere, otherwise keep
    // it (the reconcile pass creates the Docker side again, since the cluster still has it)
    // a container removed just before (`docker run --rm` on another host: its daemon removes it after the command
    // returned) may still have its record for a moment: give the users up to 2 s to go before keeping the network
    let users = await this.agent.endpointsOf(name).catch(() => null);
    for (let i = 0; i < 10 && users?.length; i++) {
      await sleep(200);
      users = await this.agent.endpointsOf(name).catch(() => null);
    }
    if (users === null) {
      this.log.warn('cannot read the store: the vxtap network is kept (remove it with `vxtap network rm`)', {
        network: name,
      });
    } else if (!users.length && this.agent.reconciler.state.networks.has(name)) {
      await this.agent
        .deleteNetwork(name)
        .catch((e) => this.log.warn('cannot delete the vxtap network', { network: name, err: e }));
    } else if (users.length) {
      this.log.warn(
        'docker network removed here, but the vxtap network is in use on other hosts: it is re-created here',
        { network: name, hosts: [...new Set(users.map((u) => u.host))] },
      );
    }
    this.kick();
    return {};
  }

  // ---- endpoints

  private async createEndpoint(b: Body): Promise<unknown> {
    const networkId = id(b, 'NetworkID');
    const endpointId = id(b, 'EndpointID');
    const iface = obj(b, 'Interface');
    const cidr6 = optStr(iface, 'AddressIPv6');
    const cidr = optStr(iface, 'Address');
    if (!cidr) throw invalid('CreateEndpoint without an IPv4 address: the network needs --ipam-driver vxtap');
    const network = await this.bound(networkId);
    const net = this.agent.network(network);
    const ip = parseAddress(cidr.replace(/\/\d+$/, ''), 'endpoint address');
    if (!inSubnet(ip, net.subnet))
      throw invalid(`address ${formatIpv4(ip)} is not in ${net.name} (${net.subnet.cidr})`);
    const given = optStr(iface, 'MacAddress') ?? '';
    const mac = given ? formatMac(parseMac(given)) : formatMac(macForAddress(ip));
    const addr = formatIpv4(ip);
    if (!this.agent.reservations.has(`${network}/${addr}`)) await this.agent.reserveAddress(network, addr); // e.g. the state was lost
    let ip6: string | undefined;
    if (cidr6) {
      if (!net.subnet6) throw invalid(`vxtap network ${net.name} has no IPv6 subnet; create it again with --ipv6`);
      const a6 = parseAddress6(cidr6.replace(/\/\d+$/, ''), 'endpoint IPv6 address');
      if (!inSubnet6(a6, net.subnet6))
        throw invalid(`IPv6 address ${formatAddress6(a6)} is not in ${net.name} (${net.subnet6.cidr})`);
      ip6 = formatAddress6(a6);
      if (!this.agent.reservations.has(`${network}/${ip6}`)) await this.agent.reserveAddress6(network, ip6);
    }
    const existing = this.st.endpoints[endpointId];
    if (existing && existing.vxtap)
      throw new AgentError('ERR_EXISTS', `endpoint ${endpointId.slice(0, 12)} exists and is joined`);
    this.st.endpoints[endpointId] = { networkId, network, ip: addr, ...(ip6 ? { ip6 } : {}), mac, created: Date.now() };
    this.save();
    return given ? {} : { Interface: { MacAddress: mac } };
  }

  private operInfo(b: Body): unknown {
    id(b, 'NetworkID');
    const e = this.st.endpoints[id(b, 'EndpointID')];
    return { Value: e ? { network: e.network, ip: e.ip, mac: e.mac, ...(e.vxtap ? { endpoint: e.vxtap } : {}) } : {} };
  }

  private async join(b: Body): Promise<unknown> {
    const networkId = id(b, 'NetworkID');
    const endpointId = id(b, 'EndpointID');
    const sandbox = str(b, 'SandboxKey');
    if (!sandbox.startsWith('/')) throw invalid(`SandboxKey ${JSON.stringify(sandbox)} is not a namespace path`);
    const e = this.st.endpoints[endpointId];
    if (!e || e.networkId !== networkId)
      throw notFound(`endpoint ${endpointId.slice(0, 12)} was not created on network ${networkId.slice(0, 12)}`);
    if (e.vxtap && this.agent.endpoints.has(e.vxtap))
      throw new AgentError('ERR_EXISTS', `endpoint ${endpointId.slice(0, 12)} is already joined`);
    const name = `dk-${endpointId.slice(0, 12)}`;
    const ep = await this.agent.attach({
      network: e.network,
      netns: sandbox,
      name,
      ip: e.ip,
      mac: e.mac,
      handoff: true,
      reserved: true,
      ...(e.ip6 ? { ip6: e.ip6, reserved6: true } : {}),
    });
    e.vxtap = name;
    this.save();
    void this.learnNames(endpointId).catch((err) =>
      this.log.warn('cannot learn the container name for DNS', { endpoint: name, err }),
    );
    const answer: JoinResponse = {
      InterfaceName: { SrcName: ep.tap.ifname, DstPrefix: 'eth' },
      StaticRoutes: [],
      DisableGatewayService: false,
    };
    return answer;
  }

  private async deleteEndpoint(b: Body): Promise<unknown> {
    id(b, 'NetworkID');
    const endpointId = id(b, 'EndpointID');
    const e = this.st.endpoints[endpointId];
    if (!e) return {};
    delete this.st.endpoints[endpointId];
    this.save();
    if (e.vxtap && this.agent.endpoints.has(e.vxtap)) await this.agent.detach(e.vxtap);
    return {};
  }

  /** Docker tells a driver neither the container's name nor its aliases: read them from dockerd after Join. */
  private async learnNames(endpointId: string): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (!this.closed && Date.now() < deadline) {
      const e = this.st.endpoints[endpointId];
      if (!e?.vxtap) return;
      const dn = await this.engine.network(e.networkId).catch(() => null);
      // the key is the container ID once the endpoint's sandbox is attached ("ep-<endpoint ID>" before that)
      const hit = Object.entries(dn?.Containers ?? {}).find(
        ([k, c]) => c.EndpointID === endpointId && !k.startsWith('ep-'),
      );
      if (hit && dn) {
        const [cid, c] = hit;
        const info = await this.engine.container(cid);
        const aliases = info?.NetworkSettings?.Networks?.[dn.Name]?.Aliases ?? [];
        await this.agent.setAliases(e.vxtap, [c.Name.replace(/^\//, ''), ...aliases]);
        return;
      }
      await sleep(200);
    }
  }

  /**
   * For DNS scoping: the vxtap networks of the container that owns `srcIp` (its docker_gwbridge address), asked
   * of dockerd at each query: nothing cached, because Docker hands a removed container's gwbridge address to the
   * next one at once, and a new container asks for names before the plugin has learned anything about it.
   * null (no scoping) when dockerd cannot tell.
   */
  /** Whether `ip` is the docker_gwbridge address of a container of this dockerd (the name server's access
   * check). An address not known yet (a new container's first query) has the addresses read again from dockerd:
   * at most 4 times a second however many queries arrive, so a query may wait up to 250 ms for its turn. */
  async isContainer(ip: string): Promise<boolean> {
    if (this.gwIps.has(ip)) return true;
    const asked = Date.now();
    this.gwRead ??= (async () => {
      const wait = this.gwAt + 250 - Date.now();
      if (wait > 0) await sleep(wait);
      this.gwAt = Date.now();
      try {
        const gw = await this.engine.network('docker_gwbridge');
        this.gwIps = new Set(Object.values(gw?.Containers ?? {}).map((c) => c.IPv4Address.replace(/\/\d+$/, '')));
      } catch {
        // dockerd does not answer: keep what was known
      }
    })().finally(() => (this.gwRead = null));
    await this.gwRead;
    // a read that began before this query asked may have missed its container: one more
    if (!this.gwIps.has(ip) && this.gwAt < asked) return this.isContainer(ip);
    return this.gwIps.has(ip);
  }

  async networksOf(srcIp: string): Promise<Set<string> | null> {
    try {
      const gw = await this.engine.network('docker_gwbridge');
      const cid = Object.entries(gw?.Containers ?? {}).find(
        ([, c]) => c.IPv4Address.replace(/\/\d+$/, '') === srcIp,
      )?.[0];
      if (!cid) return null;
      const info = await this.engine.container(cid);
      const nets = new Set<string>();
      for (const n of Object.values(info?.NetworkSettings?.Networks ?? {})) {
        const name = n.NetworkID ? this.st.networks[n.NetworkID]?.network : null;
        if (name) nets.add(name);
      }
      return nets;
    } catch {
      return null;
    }
  }

  // ---- reconcile with the local dockerd

  kick(): void {
    if (this.closed) return;
    if (this.reconciling) {
      this.again = true;
      return;
    }
    this.reconciling = (async () => {
      do {
        this.again = false;
        await this.reconcile().then(
          () => {
            if (this.lastError) this.log.info('docker reconcile works again', { docker: this.engine.url });
            this.lastError = '';
          },
          (e) => {
            // once per distinct failure (dockerd down is retried every 5 s): not a line every pass
            const msg = (e as Error).message;
            if (msg !== this.lastError) this.log.warn('docker reconcile failed; retrying every 5 s', { err: e });
            this.lastError = msg;
          },
        );
      } while (this.again && !this.closed);
    })().finally(() => (this.reconciling = null));
  }

  /** Waits for a running reconcile pass (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.reconciling) await this.reconciling;
  }

  private async reconcile(): Promise<void> {
    const dnets = await this.engine.networks();
    // the list leaves out Containers: inspect each vxtap network (a network gone meanwhile is skipped this pass)
    const ours: EngineNetwork[] = [];
    for (const n of dnets.filter((x) => x.Driver === 'vxtap')) {
      const full = await this.engine.network(n.Id);
      if (full) ours.push(full);
      else return;
    }
    const st = this.agent.reconciler.state;
    const synced = this.agent.reconciler.status.connected;
    const boundTo = (n: EngineNetwork): string | null =>
      this.st.networks[n.Id]?.network ?? n.Options?.[OPT_NETWORK] ?? null;
    // 1. every vxtap network of the cluster exists in the local dockerd
    for (const [name, rec] of st.networks) {
      if (ours.some((n) => boundTo(n) === name || (n.Name === name && !this.st.networks[n.Id]))) continue;
      if (Object.values(this.st.networks).some((r) => r.network === name)) continue; // being created or bound
      const clash = dnets.find((n) => n.Name === name);
      if (clash) {
        this.log.warn('cannot create the docker side of a vxtap network: dockerd has another network of that name', {
          network: name,
          driver: clash.Driver,
        });
        continue;
      }
      const cfg: Record<string, string> = { Subnet: rec.subnet };
      if (rec.gateway) cfg.Gateway = rec.gateway;
      const cfg6: Record<string, string>[] = rec.subnet6
        ? [{ Subnet: rec.subnet6, ...(rec.gateway6 ? { Gateway: rec.gateway6 } : {}) }]
        : [];
      try {
        await this.engine.createNetwork({
          Name: name,
          Driver: 'vxtap',
          CheckDuplicate: true,
          Internal: rec.internal === true,
          EnableIPv6: rec.subnet6 !== undefined,
          Options: { [OPT_NETWORK]: name, ...(rec.encrypted ? { [OPT_ENCRYPTED]: '' } : {}) },
          IPAM: { Driver: 'vxtap', Config: [cfg, ...cfg6], Options: { [OPT_NETWORK]: name } },
          Labels: { 'vxtap.network': name },
        });
        this.log.info('created the docker side of a vxtap network', { network: name });
      } catch (e) {
        this.log.warn('cannot create the docker side of a vxtap network', { network: name, err: e });
      }
    }
    // 2. Docker networks whose vxtap network is gone from the cluster go too (not during a KV outage)
    if (synced) {
      for (const n of ours) {
        const name = boundTo(n);
        const rec = this.st.networks[n.Id];
        if (!name || st.networks.has(name) || this.binders.has(n.Id) || (rec && rec.network === null)) continue;
        try {
          await this.engine.removeNetwork(n.Id);
          this.log.info('removed the docker side of a deleted vxtap network', { network: name });
        } catch (e) {
          this.log.warn('cannot remove the docker side of a deleted vxtap network (containers still attached?)', {
            network: name,
            err: e,
          });
        }
      }
    }
    // 3. forget networks dockerd no longer has
    const ids = new Set(dnets.map((n) => n.Id));
    for (const nid of Object.keys(this.st.networks)) {
      if (!ids.has(nid) && !this.binders.has(nid))
        this.stale(`net:${nid}`, () => {
          delete this.st.networks[nid];
          this.save();
        });
      else this.missingSince.delete(`net:${nid}`);
    }
    // 4. pools of network creates that failed after RequestPool (Docker then releases them, unless it died)
    for (const [pid, p] of Object.entries(this.st.pools)) {
      if (!p.networkId && Date.now() - (p.created ?? 0) > POOL_UNCLAIMED_MS) {
        delete this.st.pools[pid];
        this.save();
      }
    }
    // 5. endpoints dockerd dropped without telling us (dockerd killed), and reservations nobody uses
    const live = new Set<string>();
    const liveIps = new Set<string>();
    for (const n of ours) {
      const name = boundTo(n);
      for (const c of Object.values(n.Containers ?? {})) {
        live.add(c.EndpointID);
        if (name) liveIps.add(`${name}/${c.IPv4Address.replace(/\/\d+$/, '')}`);
        if (name && c.IPv6Address) {
          try {
            liveIps.add(`${name}/${formatAddress6(parseAddress6(c.IPv6Address.replace(/\/\d+$/, '')))}`);
          } catch {
            // not an address: nothing to keep
          }
        }
      }
    }
    for (const [eid, e] of Object.entries(this.st.endpoints)) {
      if (live.has(eid) || Date.now() - e.created < STALE_MS) {
        this.missingSince.delete(`ep:${eid}`);
        continue;
      }
      this.stale(`ep:${eid}`, () => {
        delete this.st.endpoints[eid];
        this.save();
        this.log.warn('dockerd no longer has this endpoint (was it restarted?); removing it', {
          endpoint: e.vxtap ?? eid.slice(0, 12),
          ip: e.ip,
        });
        if (e.vxtap && this.agent.endpoints.has(e.vxtap))
          void this.agent.detach(e.vxtap).catch((err) => this.log.warn('detach failed', { err }));
        else {
          void this.agent.releaseAddress(e.network, e.ip);
          if (e.ip6) void this.agent.releaseAddress(e.network, e.ip6);
        }
      });
    }
    const epIps = new Set(
      Object.values(this.st.endpoints).flatMap((e) => [
        `${e.network}/${e.ip}`,
        ...(e.ip6 ? [`${e.network}/${e.ip6}`] : []),
      ]),
    );
    for (const [k, r] of this.agent.reservations) {
      if (epIps.has(k) || liveIps.has(k)) {
        this.missingSince.delete(`res:${k}`);
        continue;
      }
      this.stale(`res:${k}`, () => {
        this.log.warn('releasing an address reserved for an endpoint that never came', {
          network: r.network,
          ip: r.ip,
        });
        void this.agent.releaseAddress(r.network, r.ip);
      });
    }
  }

  /** Runs `fn` once `key` has been missing for STALE_MS (two passes apart at least). */
  private stale(key: string, fn: () => void): void {
    const since = this.missingSince.get(key);
    if (since === undefined) this.missingSince.set(key, Date.now());
    else if (Date.now() - since >= STALE_MS) {
      this.missingSince.delete(key);
      fn();
    }
  }

  // ---- state file

  private load(): void {
    if (!existsSync(this.path)) return;
    try {
      const s = JSON.parse(readFileSync(this.path, 'utf8')) as State;
      if (
        s.version !== 1 ||
        typeof s.pools !== 'object' ||
        typeof s.networks !== 'object' ||
        typeof s.endpoints !== 'object'
      )
        throw new Error('unknown format');
      this.st = { version: 1, pools: dict(s.pools), networks: dict(s.networks), endpoints: dict(s.endpoints) };
    } catch (e) {
      this.log.error('docker plugin state unreadable; starting empty (recreate the Docker networks)', {
        path: this.path,
        err: e,
      });
    }
  }

  private save(): void {
    writeStateFile(this.path, this.st);
  }

  describe(): Record<string, unknown> {
    return {
      pools: Object.keys(this.st.pools).length,
      networks: this.st.networks,
      endpoints: Object.keys(this.st.endpoints).length,
    };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A record keyed by untrusted IDs: no prototype, so no key is inherited. */
function dict<T>(from?: Record<string, T>): Record<string, T> {
  return Object.assign(Object.create(null) as Record<string, T>, from);
}
