/**
 * Local endpoints: a container's TAP, its address and MAC claimed in the store, its port in the data plane.
 *
 * - attach: claim (address + MAC, one transaction) -> TAP, addresses and routes -> the data plane; each step is
 *   undone if a later one fails, so a failed attach leaves nothing behind.
 * - Endpoints survive an agent restart: TAPs are persistent (TUNSETPERSIST) and the state file lists them; recover()
 *   re-opens each TAP inside its namespace, found by MAC (Docker renames the TAP it was handed).
 * - Re-opening a TAP pins its namespace (see src/tap/tap.ts), so every 2 s a liveness check compares each
 *   endpoint's namespace inode with the one recorded at attach, and detaches endpoints whose namespace is gone.
 */
import { SEAL_OVERHEAD } from '../fdb/sec.js';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { formatAddress6 } from '../common/addr.js';
import { AgentError, invalid, notFound } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Port } from '../dataplane/port.js';
import { native } from '../sys/native.js';
import { ip, netnsPath } from '../sys/ip.js';
import { checkIfname, closeTap, createTap, ownerMarker, persistTap, type Tap, unpersistTap } from '../tap/tap.js';
import { formatIpv4, parseIpv4 } from '../vxlan/ipv4.js';
import { parseIpv6 } from '../vxlan/ipv6.js';
import { formatMac, isGroupMacNum, MAC_ZERO, parseMac } from '../vxlan/mac.js';
import type { Ipam } from './ipam.js';
import { kvCall, NAME, type Network, type Networks } from './networks.js';
import type { Registration } from './registration.js';
import type { Intent, LocalRecord } from './state.js';
import type { KvTables } from './tables.js';
import type { Kv } from '../kv/kv.js';

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
  /** Dual stack: the IPv6 address (default: the one that goes with the IPv4 address, see addr.ts ipv6ForIpv4). */
  ip6?: string;
  /** `ip6` was reserved with reserveAddress6(). */
  reserved6?: boolean;
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

export interface EndpointsOptions {
  kv: Kv;
  dp: Dataplane;
  networks: Networks;
  ipam: Ipam;
  reg: Registration;
  tables: KvTables<Port>;
  log: Logger;
  /** TAPs are opened with offloads (IFF_VNET_HDR). */
  offload: boolean;
  /** Called after the set of endpoints (or a record) changed: the state file must follow; throws if it cannot. */
  persist: () => void;
  /** This host's name: the TAPs it makes carry it in their marker. */
  host: string;
  /** The store's endpoint records of a network are followed while this host has an endpoint there (or is
   * attaching one): the Reconciler's per-network scopes. */
  follow: { watchNetwork(network: string): Promise<void>; unwatchNetwork(network: string): void };
  /** The largest network MTU this host's underlay carries (its MTU minus VXLAN's 50 or 70 bytes); 0: unknown. */
  mtuLimit?: number;
}

export class Endpoints {
  readonly byName = new Map<string, Endpoint>();
  private readonly perNetwork = new Map<string, number>();
  /** Attachments under way (written to the state file before they touch anything). */
  readonly intents = new Map<string, Intent>();
  /** Called after a local endpoint was detached, by request or because its namespace or TAP went away. */
  onRemoved: ((ep: Endpoint) => void) | null = null;
  private seq = 0;
  /** Networks already warned about: their MTU does not fit this host's underlay. */
  private readonly mtuWarned = new Set<string>();

  constructor(readonly o: EndpointsOptions) {}

  /** Says once per network, at its first attach here, that its MTU is more than the underlay carries: packets that
   * fill it would not fit one underlay datagram (the kernel refuses the large sends; TCP stalls). */
  private checkMtu(net: Network): void {
    const limit = Math.max(0, (this.o.mtuLimit ?? 0) - (net.encrypted ? SEAL_OVERHEAD : 0));
    if (!limit || net.mtu <= limit || this.mtuWarned.has(net.name)) return;
    this.mtuWarned.add(net.name);
    this.o.log.warn("network MTU is more than this host's underlay carries: large packets will be lost", {
      network: net.name,
      mtu: net.mtu,
      fits: limit,
      fix: `create the network with --mtu ${limit} or less, or raise the underlay interface's MTU`,
    });
  }

  /** Local endpoints on `network`. */
  /** Local endpoints on `network` (kept as a count: the tables ask for every change they apply). */
  countOn(network: string): number {
    return this.perNetwork.get(network) ?? 0;
  }

  /** Stops following the store's records of `network` when no local endpoint is there or on its way. */
  private unfollowIfUnused(network: string): void {
    if (this.countOn(network) > 0) return;
    for (const i of this.intents.values()) if (i.network === network) return;
    this.o.follow.unwatchNetwork(network);
  }

  private count(network: string, d: 1 | -1): number {
    const n = (this.perNetwork.get(network) ?? 0) + d;
    if (n > 0) this.perNetwork.set(network, n);
    else this.perNetwork.delete(network);
    return n;
  }

  records(): LocalRecord[] {
    return [...this.byName.values()].map((e) => e.rec);
  }

  get(name: string): Endpoint {
    const ep = this.byName.get(name);
    if (!ep) throw notFound(`endpoint ${JSON.stringify(name)} not found; \`vxtap endpoint ls\` lists them`);
    return ep;
  }

  async attach(spec: AttachSpec): Promise<Endpoint> {
    const { networks, ipam, reg, offload, log } = this.o;
    const net = await networks.known(spec?.network);
    this.checkMtu(net);
    if (typeof spec.netns !== 'string')
      throw invalid('netns is required: the name (ip netns list) or path of the container namespace');
    let nsIno = 0;
    try {
      // Docker names the namespace at Join but creates it later (runc's prestart hook): watched once it exists
      if (!(spec.handoff && spec.netns.startsWith('/') && !existsSync(spec.netns)))
        nsIno = statSync(netnsPath(spec.netns)).ino;
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
    if (!Array.isArray(aliases) || aliases.some((a) => typeof a !== 'string' || !NAME.test(a))) {
      throw invalid('aliases must be names (letters, digits, _ . -)');
    }
    for (const e of this.byName.values()) {
      if (e.name === name) throw new AgentError('ERR_EXISTS', `endpoint ${name} already exists (network ${e.network})`);
      if (!spec.handoff && e.netns === spec.netns && e.rec.ifname === ifname) {
        throw new AgentError(
          'ERR_EXISTS',
          `${spec.netns} already has ${ifname} from endpoint ${e.name}; pick --ifname`,
        );
      }
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
    if (this.intents.has(name)) throw new AgentError('ERR_EXISTS', `endpoint ${name} is being attached right now`);
    reg.requireRegistered('existing endpoints keep forwarding, try again when it is back');
    const rec: LocalRecord = {
      name,
      network: net.name,
      vni: net.vni,
      netns: spec.netns,
      ifname,
      ip: '',
      mac: fixedMac === null ? '' : formatMac(fixedMac),
      mtu: net.mtu,
      subnet: net.subnet.cidr,
      gateway: net.gateway ? formatIpv4(net.gateway) : null,
      ...(net.subnet6
        ? { subnet6: net.subnet6.cidr, gateway6: net.gateway6 ? formatAddress6(net.gateway6) : null }
        : {}),
      aliases,
      nsIno,
      vnetHdr: offload,
      ...(net.allowTagged ? { allowTagged: true } : {}),
      ...(net.encrypted ? { encrypted: true } : {}),
    };
    const reserved = spec.reserved === true && spec.ip !== undefined;
    if (reserved && !ipam.holds(net.name, spec.ip!))
      throw notFound(`address ${spec.ip} is not reserved on ${net.name} by this host`);
    // 0. the intent, on disk before anything else: a crash from here on is undone at the next start
    this.intents.set(name, { name, network: net.name, netns: spec.netns });
    try {
      this.o.persist();
    } catch (e) {
      this.intents.delete(name);
      throw stateError(e);
    }
    let claimed = false;
    let tap: Tap | null = null;
    let ep: Endpoint | null = null;
    try {
      // 1. the network's endpoints from the store (followed from now on: its tables need them), then the
      // address, the MAC and the name, cluster-wide, under this host's lease
      await kvCall(this.o.kv, `read the endpoints of ${net.name}`, () => this.o.follow.watchNetwork(net.name));
      const reserved6 = spec.reserved6 === true && spec.ip6 !== undefined;
      await ipam.claim(net, spec.ip, rec, fixedMac === null, reserved, spec.ip6, reserved6);
      claimed = true;
      if (reserved) ipam.take(net.name, spec.ip!);
      if (reserved6) ipam.take(net.name, rec.ip6!);
      // 2. the TAP (not persistent yet: if the agent dies before step 4, the kernel deletes it), addresses, routes
      const mac = parseMac(rec.mac);
      const alias = ownerMarker(this.o.host, name);
      try {
        tap = spec.handoff
          ? await createTap({
              ifname: `vx${randomBytes(4).toString('hex')}`,
              mac,
              mtu: net.mtu,
              alias,
              vnetHdr: offload,
            })
          : await createTap({ ifname, netns: spec.netns, mac, mtu: net.mtu, alias, vnetHdr: offload });
      } catch (e) {
        const code = (e as { code?: string }).code;
        throw new AgentError(code === 'EEXIST' ? 'ERR_EXISTS' : 'ERR_SETUP', (e as Error).message);
      }
      if (spec.handoff) rec.ifname = tap.ifname;
      else {
        try {
          await configure(rec, net, spec.defaultRoute !== false);
        } catch (e) {
          throw new AgentError('ERR_SETUP', `cannot set up ${ifname} in ${spec.netns}: ${(e as Error).message}`);
        }
      }
      // 3. forwarding, and the endpoint's record in place of the intent
      ep = this.adopt(rec, tap);
      this.intents.delete(name);
      try {
        this.o.persist();
      } catch (e) {
        throw stateError(e);
      }
      // 4. now the TAP may outlive the agent: the state file lists it
      persistTap(tap);
    } catch (e) {
      // undo in reverse; the TAP is not persistent, so closing its fd deletes it
      if (ep) {
        this.o.dp.removePort(ep.id);
        this.byName.delete(name);
        this.count(ep.network, -1);
      }
      if (tap) await closeTap(tap, { persist: true });
      if (claimed) await ipam.unclaim(rec); // a reservation it took over goes with it, as before the redesign
      this.intents.delete(name);
      this.unfollowIfUnused(net.name);
      try {
        this.o.persist();
      } catch (pe) {
        log.error('cannot write the state file while undoing a failed attach', { endpoint: name, err: pe });
      }
      throw e;
    }
    this.o.tables.syncMac(net.name, net.vni, rec.mac);
    log.info('endpoint attached', { endpoint: name, network: net.name, netns: spec.netns, ip: rec.ip, mac: rec.mac });
    return ep;
  }

  /** Puts an endpoint whose TAP is open into the data plane and the endpoint table: for attach and recovery. */
  adopt(r: LocalRecord, tap: Tap): Endpoint {
    const mac = parseMac(r.mac);
    const ip = parseIpv4(r.ip);
    const port = this.o.dp.addPort({
      id: r.name,
      mac,
      vni: r.vni,
      fd: tap.fd,
      ifname: r.ifname,
      ip,
      mtu: r.mtu,
      vnetHdr: !!r.vnetHdr,
      uso: !!tap.uso,
      checkIpv6Source: true,
      ip6: r.ip6 ? parseIpv6(r.ip6) : null,
      allowTagged: !!r.allowTagged,
    });
    const ep: Endpoint = { id: r.name, name: r.name, network: r.network, netns: r.netns, ip, mac, tap, port, rec: r };
    this.byName.set(r.name, ep);
    // the network's first endpoint here: its tables are made now (a network no local endpoint uses has none)
    const net = this.o.networks.byName.get(r.network);
    if (this.count(r.network, 1) === 1) {
      // recovery adopts before the store is read: the scope's first list fills the tables when it comes
      this.o.follow.watchNetwork(r.network).catch(() => {}); // a failure is logged and retried by the reconciler
      if (net) this.o.tables.syncNetwork(net.name, net.vni);
    }
    return ep;
  }

  async detach(name: string): Promise<void> {
    const ep = this.get(name);
    const { dp, networks, tables, log } = this.o;
    dp.removePort(ep.id);
    this.byName.delete(name);
    const left = this.count(ep.network, -1);
    // not persistent first: from here the TAP goes with its fd, even if the agent dies before the end
    safe(() => unpersistTap(ep.tap));
    try {
      this.o.persist();
    } catch (e) {
      log.error('cannot write the state file; the endpoint is detached all the same', { endpoint: name, err: e });
    }
    await closeTap(ep.tap);
    await this.o.ipam.unclaim(ep.rec);
    const net = networks.byName.get(ep.network);
    const rec = this.o.networks.storeRecord(ep.network);
    if (net && !rec)
      networks.apply(net.name, rec); // the network left the store while this endpoint kept it here
    else if (net && left === 0)
      tables.syncNetwork(net.name, net.vni); // the last one here: no tables any more
    else if (net) tables.syncMac(net.name, net.vni, ep.rec.mac); // its MAC may live on another host now
    this.unfollowIfUnused(ep.network);
    log.info('endpoint detached', { endpoint: name, network: ep.network });
    try {
      this.onRemoved?.(ep);
    } catch (e) {
      log.error('endpoint removal hook failed', { err: e });
    }
  }

  /** Replaces an endpoint's DNS aliases (Docker tells the container name only after Join); re-publishes it. */
  async setAliases(name: string, aliases: string[]): Promise<void> {
    const ep = this.get(name);
    const clean = [...new Set(aliases.map((a) => a.toLowerCase()).filter((a) => NAME.test(a)))].slice(0, 32);
    if (clean.join() === ep.rec.aliases.join()) return;
    ep.rec.aliases = clean;
    this.o.persist();
    const lease = this.o.reg.leaseId;
    if (lease)
      await kvCall(this.o.kv, 'publish aliases', () => this.o.kv.txn([], this.o.reg.endpointOps(ep.rec, lease)));
  }

  /** The data plane's report that a TAP failed (its namespace was deleted, say): the endpoint is detached. */
  portFailed(p: Port, err: Error): void {
    const ep = this.byName.get(p.id);
    this.o.log.warn('endpoint TAP failed; detaching it (was its namespace deleted?)', { endpoint: p.id, err });
    if (ep)
      void this.detach(ep.name).catch((e) =>
        this.o.log.error('detach after TAP failure failed', { endpoint: p.id, err: e }),
      );
  }

  /** Detaches endpoints whose namespace is gone or was replaced (a re-opened TAP pins its namespace). */
  async checkLiveness(): Promise<void> {
    for (const ep of [...this.byName.values()]) {
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
          this.o.persist();
        }
        continue;
      }
      if (ino !== ep.rec.nsIno && this.byName.get(ep.name) === ep) {
        this.o.log.warn('endpoint namespace is gone; detaching', { endpoint: ep.name, netns: ep.netns });
        await this.detach(ep.name).catch((e) => this.o.log.error('detach failed', { endpoint: ep.name, err: e }));
      }
    }
  }

  /** Closes every TAP fd; the devices stay (persistent), for the next agent to re-open. */
  closeAll(): void {
    for (const ep of this.byName.values()) safe(() => native().closeFd(ep.tap.fd));
  }
}

/** Gives a new TAP in its namespace the endpoint's address and, if wanted, the default route via the gateway. */
async function configure(rec: LocalRecord, net: Network, defaultRoute: boolean): Promise<void> {
  await ip(['addr', 'add', `${rec.ip}/${net.subnet.prefix}`, 'dev', rec.ifname], rec.netns);
  if (net.gateway && defaultRoute) {
    await ip(['route', 'replace', 'default', 'via', formatIpv4(net.gateway), 'dev', rec.ifname], rec.netns);
  }
  if (rec.ip6 && net.subnet6) {
    // nodad: the store's claim already made the address unique, and a tentative address would drop the first
    // packets for a second
    await ip(['-6', 'addr', 'add', `${rec.ip6}/${net.subnet6.prefix}`, 'dev', rec.ifname, 'nodad'], rec.netns);
    if (net.gateway6 && defaultRoute) {
      await ip(
        ['-6', 'route', 'replace', 'default', 'via', formatAddress6(net.gateway6), 'dev', rec.ifname],
        rec.netns,
      );
    }
  }
}

/** A state file that cannot be written fails the request that needed it, saying where and why. */
function stateError(e: unknown): AgentError {
  return new AgentError(
    'ERR_SETUP',
    `cannot write the agent's state file: ${(e as Error).message}; nothing was changed`,
  );
}

export function safe(f: () => unknown): void {
  try {
    f();
  } catch {
    /* best effort during teardown */
  }
}
