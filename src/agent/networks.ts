/**
 * Overlay networks: created and deleted cluster-wide by guarded transaction, and mirrored here from the store.
 *
 * - Writes: every create or delete reads guard/networks first and commits with a compare on its modRevision (and
 *   on the keys it changes), so any concurrent change makes the transaction fail and the caller retry with a fresh
 *   read (guardedTxn).
 * - Reads: the reconciler hands over the names of networks whose records changed; apply() adds, updates or
 *   removes each here (its VNI in the data plane, its tables synced whole). A network removed from the store while
 *   this host still has endpoints on it stays here until the last one leaves, so they keep forwarding.
 */
import {
  fitsIpv4,
  formatAddress6,
  inSubnet,
  inSubnet6,
  overlaps6,
  parseAddress,
  parseAddress6,
  parseSubnet,
  parseSubnet6,
  type Subnet,
  type Subnet6,
} from '../common/addr.js';
import { AgentError, invalid, notFound } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Port } from '../dataplane/port.js';
import { type Kv, KvError, type TxnResult } from '../kv/kv.js';
import type { Reconciler } from '../kv/reconciler.js';
import {
  type EndpointRec,
  keys,
  type NetworkRec,
  parseEndpoint,
  parseNetwork,
  ROTATE_MAX_SEC,
  ROTATE_MIN_SEC,
} from '../kv/schema.js';
import { SEAL_OVERHEAD, VnetSec } from '../fdb/sec.js';
import { DEFAULT_ROTATE_SEC, newNetKey } from './keyring.js';
import { VXLAN_IPV6_OVERHEAD, VXLAN_VNI_MAX } from '../vxlan/constants.js';
import { vtepOverhead } from '../common/vtep.js';
import { formatIpv4, parseIpv4 } from '../vxlan/ipv4.js';
import { sleep } from './registration.js';
import type { KvTables } from './tables.js';

export interface NetworkSpec {
  name: string;
  /** Omit to allocate the lowest free VNI from 4096 up. */
  vni?: number;
  /** Omit to take the first free block of the agent's pool (AgentOptions.pool / poolPrefix). */
  subnet?: string;
  gateway?: string | null;
  mtu?: number;
  learning?: boolean;
  /** Docker's --internal: Docker gives attached containers no way out of the network (see NetworkRec). */
  internal?: boolean;
  /** Forward 802.1Q/802.1ad-tagged frames from endpoints (default: drop them, as tags would slip past the
   * address checks). */
  allowTagged?: boolean;
  /** `subnet` was held for this network with holdSubnet(): the hold is given up in the same transaction. */
  held?: boolean;
  /** Dual stack: an IPv6 subnet beside the IPv4 one. `ipv6` without `subnet6` takes a block of the IPv6 pool. */
  ipv6?: boolean;
  subnet6?: string;
  /** Default: the subnet's first host address (::1); null or "none": no IPv6 gateway. */
  gateway6?: string | null;
  /** `subnet6` was held with holdSubnet6(). */
  held6?: boolean;
  /** An encrypted network (docs/encryption.md): every datagram between hosts sealed with AES-256-GCM. */
  encrypted?: boolean;
  /** Key rotation period of an encrypted network, seconds (default 12 h). */
  keyRotationSec?: number;
}

/** How long a subnet held for a network being created keeps others from taking it. */
export const HOLD_MS = 120_000;

export interface Network {
  name: string;
  vni: number;
  subnet: Subnet;
  gateway: number; // 0 = none
  mtu: number;
  learning: boolean;
  internal: boolean;
  allowTagged: boolean;
  /** Dual stack: the IPv6 subnet, or null (IPv4 only). */
  subnet6: Subnet6 | null;
  /** 0n: none. */
  gateway6: bigint;
  /** Sealed between hosts (docs/encryption.md); its keys rotate every keyRotationSec (0 when not encrypted). */
  encrypted: boolean;
  keyRotationSec: number;
}

/** Names of networks, endpoints and hosts. */
export const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** The default MTU of a network: what fits a 1500-byte underlay after the outer headers (50 bytes over IPv4, 70
 * over IPv6), as the kernel's VXLAN device and Docker's overlay default to. */
export const DEFAULT_MTU = 1450;
export const defaultMtu = (underlay: 4 | 6): number => 1500 - vtepOverhead(underlay);
const MTU_MIN = 68;
const MTU_MAX = 65535 - VXLAN_IPV6_OVERHEAD - 14;
const VNI_AUTO_FIRST = 4096;
/** Attempts of a guarded transaction before telling the caller to try again. */
const GUARD_ATTEMPTS = 8;

export class Networks {
  /** Networks as the cluster knows them (plus any a local endpoint still needs during a KV outage). */
  readonly byName = new Map<string, Network>();

  constructor(
    private readonly kv: Kv,
    private readonly reconciler: Reconciler,
    private readonly dp: Dataplane,
    private readonly tables: KvTables<Port>,
    private readonly log: Logger,
    /** How many local endpoints a network has: such a network is never removed here. */
    private readonly localEndpoints: (network: string) => number,
    /** Where networks created without a subnet get one: blocks of `prefix` bits inside `pool`. */
    private readonly pool: { subnet: Subnet; prefix: number } = parsePool(),
    /** Where dual-stack networks created without an IPv6 subnet get one: /64 blocks of it. */
    private readonly pool6: Subnet6 = parsePool6(),
    /** The MTU of a network created without one (1450 on an IPv4 underlay, 1430 on IPv6). */
    private readonly mtuDefault = DEFAULT_MTU,
    /** Create encrypted networks over a store that is not confidential (--insecure-kv). */
    private readonly insecureKv = false,
  ) {}

  get(name: string): Network {
    const n = this.byName.get(name);
    if (!n) throw notFound(`network ${JSON.stringify(name)} not found; \`vxtap network ls\` lists them`);
    return n;
  }

  /**
   * The network, waiting for this agent's watch if the store already has it: a network created on another host a
   * moment ago (or while this agent was starting) is found rather than refused. Not found only if the store says so.
   */
  async known(name: string): Promise<Network> {
    const have = this.byName.get(name);
    if (have || typeof name !== 'string' || !NAME.test(name)) return this.get(name);
    const e = await kvCall(this.kv, `read network ${name}`, () => this.kv.get(keys.network(name)));
    if (e) await this.reconciler.waitFor(e.modRevision, 5000);
    return this.get(name);
  }

  /** The network's record in the store as this agent last saw it (undefined: not in the store). */
  storeRecord(name: string): NetworkRec | undefined {
    return this.reconciler.state.networks.get(name);
  }

  /**
   * The endpoints of a network: from the state while this host follows the network (it has endpoints there),
   * otherwise read from the store now (one list of that network's records).
   */
  async endpointsOf(name: string): Promise<EndpointRec[]> {
    if (this.reconciler.watching(name)) return this.reconciler.state.endpointsOf(name);
    const prefix = keys.endpointsNet(name);
    const { entries } = await kvCall(this.kv, `list the endpoints of ${name}`, () => this.kv.list(prefix));
    return entries.flatMap((e) => parseEndpoint(name, e.key.slice(prefix.length), e.value) ?? []);
  }

  /** Name -> VNI of every network here. */
  vnis(): Map<string, number> {
    return new Map([...this.byName.values()].map((n) => [n.name, n.vni]));
  }

  /** Puts a network here from a local record while the store may be unreachable (start-up recovery). */
  adoptOffline(net: Network): void {
    if (this.byName.has(net.name)) return;
    this.byName.set(net.name, net);
    this.dp.addVni(net.vni, true);
    // keys come with the store: until then nothing of an encrypted network leaves this host (tx_no_key)
    if (net.encrypted) this.dp.fdb.setSec(net.vni, new VnetSec());
  }

  // ---- from the store

  /** Adds, updates or removes the network here; returns true when its tables were synced whole. */
  apply(name: string, rec: NetworkRec | undefined): boolean {
    const cur = this.byName.get(name);
    if (!rec || (cur && cur.vni !== rec.vni)) {
      if (!cur) return false;
      if (this.localEndpoints(name) > 0) {
        if (!rec)
          this.log.warn('network removed from the store but still has local endpoints; keeping it here', {
            network: name,
          });
        return false;
      }
      this.dp.delVni(cur.vni);
      this.byName.delete(name);
      if (!rec) {
        this.log.info('network removed', { network: name });
        return false;
      }
    }
    let net = this.byName.get(name);
    if (!net) {
      net = toNetwork(rec);
      this.byName.set(name, net);
      this.dp.addVni(net.vni, net.learning);
      this.log.info('network added', { network: name, vni: net.vni, subnet: net.subnet.cidr });
    } else {
      Object.assign(net, toNetwork(rec));
      this.dp.fdb.vnet(net.vni).learning = net.learning;
    }
    // fail safe: an encrypted network is never without its VnetSec, so no frame of it leaves in clear (the keyring
    // fills in its keys when the tables are synced, below)
    if (net.encrypted && this.dp.fdb.vnet(net.vni).sec === null) this.dp.fdb.setSec(net.vni, new VnetSec());
    else if (!net.encrypted && this.dp.fdb.vnet(net.vni).sec !== null) this.dp.fdb.setSec(net.vni, null);
    this.tables.syncNetwork(name, net.vni);
    return true;
  }

  // ---- cluster-wide writes

  async create(spec: NetworkSpec): Promise<Network> {
    if (typeof spec?.name !== 'string' || !NAME.test(spec.name)) {
      throw invalid(
        `network name ${JSON.stringify(spec?.name)}: 1-64 of letters, digits, _ . - (starting with a letter or digit)`,
      );
    }
    if (spec.vni !== undefined && (!Number.isInteger(spec.vni) || spec.vni < 1 || spec.vni > VXLAN_VNI_MAX)) {
      throw invalid(`VNI ${JSON.stringify(spec.vni)} must be an integer from 1 to ${VXLAN_VNI_MAX}`);
    }
    const given = spec.subnet === undefined || spec.subnet === '' ? null : parseSubnet(spec.subnet);
    const encrypted = spec.encrypted === true;
    const rotateSec = spec.keyRotationSec ?? DEFAULT_ROTATE_SEC;
    if (spec.keyRotationSec !== undefined && !encrypted)
      throw invalid('a key rotation period is for encrypted networks: add --encrypted');
    if (!Number.isInteger(rotateSec) || rotateSec < ROTATE_MIN_SEC || rotateSec > ROTATE_MAX_SEC)
      throw invalid(`key rotation ${rotateSec} s: ${ROTATE_MIN_SEC} s to ${ROTATE_MAX_SEC} s`);
    if (encrypted && !this.kv.confidential && !this.insecureKv)
      throw invalid(
        `an encrypted network keeps its keys in the store, and ${this.kv.where} is plain text: anyone on the path ` +
          'could read them. Give the agent --kv-ca/--kv-cert/--kv-key (etcd over TLS), or --insecure-kv to accept this',
      );
    // the crypto header and tag: 28 bytes more per datagram
    const mtu = spec.mtu ?? this.mtuDefault - (encrypted ? SEAL_OVERHEAD : 0);
    if (!Number.isInteger(mtu) || mtu < MTU_MIN || mtu > MTU_MAX) throw invalid(`MTU ${mtu}: ${MTU_MIN} to ${MTU_MAX}`);
    const noGateway = spec.gateway === null || spec.gateway === 'none';
    let fixedGateway: number | null = null;
    if (typeof spec.gateway === 'string' && spec.gateway !== 'none') {
      if (!given) throw invalid(`--gateway ${spec.gateway} needs --subnet: the pool's subnets get their first address`);
      const g = parseAddress(spec.gateway, 'gateway');
      if (!inSubnet(g, given)) throw invalid(`gateway ${spec.gateway} is not a host address of ${given.cidr}`);
      fixedGateway = g;
    }
    let subnet = given ?? this.pool.subnet;
    const given6 = spec.subnet6 === undefined || spec.subnet6 === '' ? null : parseSubnet6(spec.subnet6);
    const dual = given6 !== null || spec.ipv6 === true;
    const noGateway6 = spec.gateway6 === null || spec.gateway6 === 'none';
    let fixedGateway6: bigint | null = null;
    if (typeof spec.gateway6 === 'string' && !noGateway6) {
      if (!given6) throw invalid(`--gateway6 ${spec.gateway6} needs --subnet6`);
      const g = parseAddress6(spec.gateway6, 'IPv6 gateway');
      if (!inSubnet6(g, given6)) throw invalid(`IPv6 gateway ${spec.gateway6} is not a host address of ${given6.cidr}`);
      fixedGateway6 = g;
    }
    let subnet6: Subnet6 | null = given6;
    const revision = await this.guardedTxn('create the network', async (guardRev) => {
      const mine = [given && spec.held ? given.cidr : null, given6 && spec.held6 ? given6.cidr : null];
      const { names, vnis: taken, used, used6 } = await this.inUse(mine);
      if (names.has(spec.name)) throw new AgentError('ERR_EXISTS', `network ${spec.name} already exists`);
      // one address space, as Docker's global one: a container on two networks must never get two routes for
      // the same addresses. Without --subnet: the first block of the pool that overlaps nothing, chosen inside
      // this guarded transaction, so two hosts creating networks at once never get the same one
      if (given) {
        const clash = used.find((u) => overlaps(given, u.subnet));
        if (clash)
          throw new AgentError(
            'ERR_EXISTS',
            `subnet ${given.cidr} overlaps ${clash.subnet.cidr} of network ${clash.name}; pick another subnet`,
          );
      } else subnet = this.freeBlock(used.map((u) => u.subnet));
      if (given6) {
        const clash = used6.find((u) => overlaps6(given6, u.subnet));
        if (clash)
          throw new AgentError(
            'ERR_EXISTS',
            `IPv6 subnet ${given6.cidr} overlaps ${clash.subnet.cidr} of network ${clash.name}; pick another subnet`,
          );
      } else if (dual) subnet6 = this.freeBlock6(used6.map((u) => u.subnet));
      if (subnet6 && !fitsIpv4(subnet6, subnet))
        throw invalid(
          `IPv6 subnet ${subnet6.cidr} is smaller than IPv4 subnet ${subnet.cidr}: every IPv4 host index needs an IPv6 address; use a /${96 + subnet.prefix} or shorter`,
        );
      let vni = spec.vni;
      if (vni !== undefined && taken.has(vni))
        throw new AgentError('ERR_EXISTS', `VNI ${vni} is already used by network ${taken.get(vni)}`);
      if (vni === undefined) {
        vni = VNI_AUTO_FIRST;
        while (taken.has(vni)) vni++;
      }
      const gateway = noGateway ? null : formatIpv4(fixedGateway ?? (subnet.network + 1) >>> 0);
      const rec = {
        vni,
        subnet: subnet.cidr,
        gateway,
        mtu,
        learning: spec.learning ?? true,
        ...(spec.internal ? { internal: true } : {}),
        ...(spec.allowTagged ? { allowTagged: true } : {}),
        ...(subnet6
          ? {
              subnet6: subnet6.cidr,
              gateway6: noGateway6 ? null : formatAddress6(fixedGateway6 ?? subnet6.network + 1n),
            }
          : {}),
        ...(encrypted ? { encrypted: true, keys: [newNetKey(1, Date.now())], rotateSec } : {}),
      };
      return this.kv.txn(
        [
          { key: keys.guardNetworks, modRevision: guardRev },
          { key: keys.network(spec.name), modRevision: 0 },
          { key: keys.vni(vni), modRevision: 0 },
        ],
        [
          { type: 'put', key: keys.network(spec.name), value: JSON.stringify(rec) },
          { type: 'put', key: keys.vni(vni), value: spec.name },
          { type: 'put', key: keys.guardNetworks, value: spec.name },
          ...(spec.held ? [{ type: 'delete' as const, key: keys.subnetHold(subnet.cidr) }] : []),
          ...(spec.held6 && subnet6 ? [{ type: 'delete' as const, key: keys.subnetHold(subnet6.cidr) }] : []),
        ],
      );
    });
    await this.reconciler.waitFor(revision);
    const net = this.byName.get(spec.name);
    if (!net)
      throw new AgentError(
        'ERR_INTERNAL',
        `network ${spec.name} was stored at revision ${revision} but has not arrived here yet`,
      );
    this.log.info('network created', {
      network: net.name,
      vni: net.vni,
      subnet: net.subnet.cidr,
      ...(net.subnet6 ? { subnet6: net.subnet6.cidr } : {}),
      mtu,
      ...(encrypted ? { encrypted, keyRotationSec: rotateSec } : {}),
    });
    return net;
  }

  /**
   * What the store's networks take, read inside a guarded transaction: their names (every key, valid or not), their
   * VNIs, and the subnets of the networks and of the holds for networks being created (younger than HOLD_MS),
   * except the hold on `mine`.
   */
  private async inUse(mine: (string | null)[]): Promise<{
    names: Set<string>;
    vnis: Map<number, string>;
    used: { subnet: Subnet; name: string }[];
    used6: { subnet: Subnet6; name: string }[];
  }> {
    const names = new Set<string>();
    const vnis = new Map<number, string>();
    const used: { subnet: Subnet; name: string }[] = [];
    const used6: { subnet: Subnet6; name: string }[] = [];
    for (const e of (await this.kv.list(keys.networks)).entries) {
      const name = e.key.slice(keys.networks.length);
      names.add(name);
      const n = parseNetwork(name, e.value);
      if (!n) continue;
      vnis.set(n.vni, name);
      used.push({ subnet: parseSubnet(n.subnet), name });
      if (n.subnet6) used6.push({ subnet: parseSubnet6(n.subnet6), name });
    }
    for (const e of (await this.kv.list(keys.subnetHolds)).entries) {
      const cidr = e.key.slice(keys.subnetHolds.length).replace('_', '/');
      let at = 0;
      let host = '?';
      try {
        ({ at, host } = JSON.parse(e.value) as { at: number; host: string });
      } catch {
        continue;
      }
      if (mine.includes(cidr) || !(Date.now() - at < HOLD_MS)) continue;
      const name = `(held by ${host} for a network being created)`;
      try {
        if (cidr.includes(':')) used6.push({ subnet: parseSubnet6(cidr), name });
        else used.push({ subnet: parseSubnet(cidr), name });
      } catch {
        /* not a subnet: ignore */
      }
    }
    return { names, vnis, used, used6 };
  }

  /**
   * Takes the next free block of the pool for a network that will be created shortly (Docker's RequestPool comes
   * before the network exists) and holds it in the store, so no other host's network gets it meanwhile.
   */
  holdSubnet(host: string): Promise<Subnet> {
    return this.hold(host, 'subnet', (u) => this.freeBlock(u.used.map((x) => x.subnet)));
  }

  /** holdSubnet() for the IPv6 side of a dual-stack network: a /64 of the IPv6 pool. */
  holdSubnet6(host: string): Promise<Subnet6> {
    return this.hold(host, 'IPv6 subnet', (u) => this.freeBlock6(u.used6.map((x) => x.subnet)));
  }

  /** Picks a block (`pick`, from what the networks and holds take) and holds it, in one guarded transaction. */
  private async hold<S extends { cidr: string }>(
    host: string,
    what: string,
    pick: (u: Awaited<ReturnType<Networks['inUse']>>) => S,
  ): Promise<S> {
    let block: S | null = null;
    await this.guardedTxn(`hold a ${what} from the pool`, async (guardRev) => {
      const b = (block = pick(await this.inUse([])));
      return this.kv.txn(
        [{ key: keys.guardNetworks, modRevision: guardRev }],
        [
          { type: 'put', key: keys.subnetHold(b.cidr), value: JSON.stringify({ host, at: Date.now() }) },
          { type: 'put', key: keys.guardNetworks, value: `hold ${b.cidr}` },
        ],
      );
    });
    this.log.info(`${what} held for a network being created`, { subnet: block!.cidr });
    return block!;
  }

  /** Gives up a subnet (IPv4 or IPv6) held with holdSubnet() (its pool was released before a network was made of
   * it). */
  async releaseSubnet(cidr: string): Promise<void> {
    const norm = cidr.includes(':') ? parseSubnet6(cidr).cidr : parseSubnet(cidr).cidr;
    await kvCall(this.kv, 'release a held subnet', () => this.kv.delete(keys.subnetHold(norm)));
  }

  /** The first /64 of the IPv6 pool that overlaps none of `used`; ERR_NO_SUBNET if there is none. */
  private freeBlock6(used: Subnet6[]): Subnet6 {
    const pool = this.pool6;
    const size = 1n << BigInt(128 - POOL6_PREFIX);
    for (let a = pool.network; a + size - 1n <= pool.last; a += size) {
      const block = parseSubnet6(`${formatAddress6(a)}/${POOL6_PREFIX}`);
      const clash = used.find((u) => overlaps6(block, u));
      if (!clash) return block;
      // skip past whatever it overlaps
      const next = ((clash.last + 1n) >> BigInt(128 - POOL6_PREFIX)) << BigInt(128 - POOL6_PREFIX);
      a = (next > a ? next : a + size) - size;
    }
    throw new AgentError(
      'ERR_NO_SUBNET',
      `the IPv6 pool ${pool.cidr} has no free /${POOL6_PREFIX} left; pass --subnet6, or start the agents with a larger --pool6`,
    );
  }

  /** The first `pool.prefix` block of the pool that overlaps none of `used`; ERR_NO_SUBNET if there is none. */
  private freeBlock(used: Subnet[]): Subnet {
    const { subnet: pool, prefix } = this.pool;
    const size = 2 ** (32 - prefix);
    for (let a = pool.network; a + size - 1 <= pool.broadcast; a += size) {
      const block = {
        cidr: `${formatIpv4(a >>> 0)}/${prefix}`,
        network: a >>> 0,
        prefix,
        broadcast: (a + size - 1) >>> 0,
      };
      const clash = used.find((u) => overlaps(block, u));
      if (!clash) return block;
      // skip past whatever it overlaps (a larger network covers many blocks)
      a = Math.max(a, clash.broadcast + 1 - size);
    }
    throw new AgentError(
      'ERR_NO_SUBNET',
      `the subnet pool ${pool.cidr} has no free /${prefix} left; pass --subnet, or start the agents with a larger --pool`,
    );
  }

  async delete(name: string): Promise<void> {
    if (!this.reconciler.state.networks.has(name) && !this.byName.has(name)) this.get(name);
    const eps = await this.endpointsOf(name);
    if (eps.length) {
      const where = [...new Set(eps.map((e) => e.host))].join(', ');
      const names = eps.map((e) => e.name).join(', ');
      throw new AgentError(
        'ERR_IN_USE',
        `network ${name} has ${eps.length} endpoint(s) (${names}) on ${where}; detach them first`,
      );
    }
    const revision = await this.guardedTxn('delete the network', async (guardRev) => {
      const cur = await this.kv.get(keys.network(name));
      if (!cur) throw notFound(`network ${JSON.stringify(name)} not found; \`vxtap network ls\` lists them`);
      const vni = parseNetwork(name, cur.value)?.vni ?? 0;
      return this.kv.txn(
        [
          { key: keys.guardNetworks, modRevision: guardRev },
          { key: keys.network(name), modRevision: cur.modRevision },
        ],
        [
          { type: 'delete', key: keys.network(name) },
          { type: 'delete', key: keys.vni(vni) },
          { type: 'deletePrefix', prefix: keys.ipamNet(name) },
          { type: 'deletePrefix', prefix: keys.namesNet(name) },
          { type: 'put', key: keys.guardNetworks, value: `-${name}` },
        ],
      );
    });
    await this.reconciler.waitFor(revision);
    this.log.info('network deleted', { network: name });
  }

  /**
   * Runs `attempt` with the guard's current modRevision until its transaction succeeds (anything changed since
   * the guard was read makes it fail), with a short random pause between attempts. Returns the revision.
   */
  private async guardedTxn(what: string, attempt: (guardRev: number) => Promise<TxnResult>): Promise<number> {
    for (let i = 0; i < GUARD_ATTEMPTS; i++) {
      const r = await kvCall(this.kv, what, async () => {
        // the guard first: anything written after this read makes the transaction fail
        const guard = await this.kv.get(keys.guardNetworks);
        return attempt(guard?.modRevision ?? 0);
      });
      if (r.succeeded) return r.revision;
      await sleep(10 + Math.random() * 40);
    }
    throw new AgentError('ERR_IN_USE', 'networks are being changed concurrently; try again');
  }
}

/** Runs a store call for a client request: a store failure becomes ERR_KV_UNAVAILABLE that says what failed. */
export async function kvCall<T>(kv: Kv, what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof KvError) {
      throw new AgentError('ERR_KV_UNAVAILABLE', `cannot ${what}: the KV store at ${kv.where} failed: ${e.message}`);
    }
    throw e;
  }
}

export function toNetwork(rec: NetworkRec): Network {
  return {
    name: rec.name,
    vni: rec.vni,
    subnet: parseSubnet(rec.subnet),
    gateway: rec.gateway ? parseIpv4(rec.gateway) : 0,
    mtu: rec.mtu,
    learning: rec.learning,
    internal: rec.internal === true,
    allowTagged: rec.allowTagged === true,
    subnet6: rec.subnet6 ? parseSubnet6(rec.subnet6) : null,
    gateway6: rec.gateway6 ? parseAddress6(rec.gateway6) : 0n,
    encrypted: rec.encrypted === true,
    keyRotationSec: rec.rotateSec ?? 0,
  };
}

function overlaps(a: Subnet, b: Subnet): boolean {
  return a.network <= b.broadcast && b.network <= a.broadcast;
}

/** Default subnet pool: as Docker's swarm overlay, /24 blocks of 10.0.0.0/8 (`vxtap agent --pool` changes it). */
export const DEFAULT_POOL = '10.0.0.0/8';
export const DEFAULT_POOL_PREFIX = 24;
/** Default IPv6 pool of dual-stack networks created without an IPv6 subnet: /64 blocks of a unique local /48
 * (RFC 4193; the global ID spells "vxtap", so every agent of a cluster has the same default). `--pool6` changes
 * it. */
export const DEFAULT_POOL6 = 'fd76:7874:6170::/48';
export const POOL6_PREFIX = 64;

/** Parses and checks the IPv6 pool: /48 to /64 (it is cut into /64s). */
export function parsePool6(cidr: string = DEFAULT_POOL6): Subnet6 {
  const s = parseSubnet6(cidr);
  if (s.prefix > POOL6_PREFIX) throw invalid(`--pool6 ${cidr}: /${POOL6_PREFIX} or shorter (it is cut into /64s)`);
  return s;
}

/** Parses and checks a pool: a subnet, and a block size longer than it (and at most /30). */
export function parsePool(
  cidr: string = DEFAULT_POOL,
  prefix: number = DEFAULT_POOL_PREFIX,
): { subnet: Subnet; prefix: number } {
  const subnet = parseSubnet(cidr);
  if (!Number.isInteger(prefix) || prefix < subnet.prefix || prefix > 30)
    throw invalid(`--pool-prefix ${prefix}: from /${subnet.prefix} (the pool's own) to /30`);
  return { subnet, prefix };
}
