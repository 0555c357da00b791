/**
 * Addresses on overlay networks, allocated cluster-wide by transaction: an endpoint's address and MAC are claimed
 * together (compare: both absent) under the host lease before its TAP exists, so two hosts never hand out the same
 * one. Docker's IPAM asks for an address before the endpoint exists, so this host can also hold reservations
 * (`ipam/` keys with the value `<host>/reserved`) that a later claim turns into an endpoint's address.
 */
import {
  firstFree,
  formatAddress6,
  inSubnet,
  inSubnet6,
  ipv6ForIpv4,
  macForAddress,
  parseAddress,
  parseAddress6,
} from '../common/addr.js';
import { AgentError, invalid, notFound } from '../common/errors.js';
import type { Kv } from '../kv/kv.js';
import { type ClusterState, keys } from '../kv/schema.js';
import { formatIpv4, parseIpv4 } from '../vxlan/ipv4.js';
import { formatMac } from '../vxlan/mac.js';
import type { Network } from './networks.js';
import { kvCall } from './networks.js';
import type { Published, Registration, Reservation } from './registration.js';

/** Attempts at claiming a free address before giving up (each lost race tries the next free one). */
const CLAIM_ATTEMPTS = 64;

export class Ipam {
  /** Addresses this host holds without an endpoint yet, keyed "<network>/<ip>"; kept in the store under the host
   * lease like endpoints, and in the state file. */
  readonly reservations = new Map<string, Reservation>();

  constructor(
    private readonly kv: Kv,
    private readonly cluster: ClusterState,
    private readonly reg: Registration,
    /** Called after the reservations changed: the state file must follow. */
    private readonly persist: () => void,
    /** Whether `cluster` holds the network's endpoints (this host follows it); else the store is asked. */
    private readonly watching: (network: string) => boolean,
  ) {}

  /**
   * Claims `want` (or the first free address), the MAC and the name for the endpoint `rec` with one transaction;
   * fills rec.ip (and rec.mac when `macFromIp`). With `reserved`, `want` is this host's reservation: the
   * transaction takes it over. A MAC or name that is taken fails at once, with who holds it; a lost race for an
   * address tries the next free one.
   */
  async claim(
    net: Network,
    want: string | undefined,
    rec: Published,
    macFromIp: boolean,
    reserved = false,
    want6?: string,
    reserved6 = false,
  ): Promise<string> {
    // dual stack: the IPv6 address is `want6`, or the one that goes with the IPv4 address (addr.ts ipv6ForIpv4)
    const s6 = net.subnet6;
    let fixed6: string | undefined;
    if (want6 !== undefined) {
      if (!s6) throw invalid(`network ${net.name} has no IPv6 subnet; an IPv6 address needs a dual-stack network`);
      const a = parseAddress6(want6, 'IPv6 address');
      if (!inSubnet6(a, s6)) throw invalid(`IPv6 address ${want6} is not a host address of ${net.name} (${s6.cidr})`);
      if (a === net.gateway6) throw new AgentError('ERR_IN_USE', `IPv6 address ${want6} is the gateway of ${net.name}`);
      fixed6 = formatAddress6(a);
    }
    if (reserved6 && (fixed6 === undefined || !this.holds(net.name, fixed6)))
      throw notFound(`IPv6 address ${want6} is not reserved on ${net.name} by this host`);
    return this.search(net, want, 'allocate an address', async (addr) => {
      rec.ip = addr;
      if (macFromIp) rec.mac = formatMac(macForAddress(parseIpv4(addr)));
      let ip6: string | undefined;
      if (s6) {
        const derived = ipv6ForIpv4(s6, parseIpv4(addr), net.subnet);
        if (fixed6 === undefined && derived === net.gateway6) return false; // a gateway6 set by hand: next address
        ip6 = fixed6 ?? formatAddress6(derived);
        rec.ip6 = ip6;
      }
      const lease = this.reg.requireLease();
      const r = await this.kv.txn(
        [
          ...(reserved ? [] : [{ key: keys.ipam(net.name, addr), modRevision: 0 }]),
          ...(ip6 !== undefined && !reserved6 ? [{ key: keys.ipam(net.name, ip6), modRevision: 0 }] : []),
          { key: keys.endpoint(net.name, rec.mac), modRevision: 0 },
          { key: keys.name(net.name, rec.name), modRevision: 0 },
        ],
        this.reg.endpointOps(rec, lease),
      );
      if (r.succeeded) return true;
      // which compare failed: a taken MAC or name is final; only an address is worth another try
      // (a MAC derived from the address is taken exactly when the address is: another try)
      const mac = macFromIp ? null : await this.kv.get(keys.endpoint(net.name, rec.mac));
      if (mac)
        throw new AgentError('ERR_IN_USE', `MAC ${rec.mac} is already in use on ${net.name}${holder(mac.value)}`);
      const name = await this.kv.get(keys.name(net.name, rec.name));
      if (name) {
        throw new AgentError(
          'ERR_EXISTS',
          `endpoint name ${rec.name} is already used on ${net.name} by host ${name.value}; pick another --name`,
        );
      }
      if (fixed6 !== undefined && !reserved6) {
        const owner = await this.kv.get(keys.ipam(net.name, fixed6));
        if (owner)
          throw new AgentError(
            'ERR_IN_USE',
            `IPv6 address ${fixed6} is already in use on ${net.name} (by ${owner.value})`,
          );
      }
      if (reserved)
        throw new AgentError('ERR_IN_USE', `the reservation of ${addr} on ${net.name} changed meanwhile; try again`);
      return false;
    });
  }

  /**
   * reserve() for the IPv6 side of a dual-stack network (Docker asks for each family on its own): `want`, or the
   * lowest IPv6 address of the subnet that is not the gateway and not claimed.
   */
  async reserve6(net: Network, want?: string): Promise<string> {
    this.reg.requireRegistered('try again when it is back');
    const s6 = net.subnet6;
    if (!s6) throw invalid(`network ${net.name} has no IPv6 subnet`);
    let fixed: bigint | undefined;
    if (want !== undefined) {
      fixed = parseAddress6(want, 'IPv6 address');
      if (!inSubnet6(fixed, s6))
        throw invalid(`IPv6 address ${want} is not a host address of ${net.name} (${s6.cidr})`);
      if (fixed === net.gateway6)
        throw new AgentError('ERR_IN_USE', `IPv6 address ${want} is the gateway of ${net.name}`);
    }
    const tried = new Set<bigint>();
    if (net.gateway6) tried.add(net.gateway6);
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const used = new Set(tried);
      for (const a of await this.claimed(net.name, parseAddress6)) used.add(a);
      let cand = fixed;
      if (cand === undefined)
        for (let a = s6.network + 1n; a <= s6.last && cand === undefined; a++) if (!used.has(a)) cand = a;
      if (cand === undefined) throw new AgentError('ERR_NO_ADDRESS', `no free IPv6 address left in ${net.name}`);
      const addr = formatAddress6(cand);
      const key = keys.ipam(net.name, addr);
      const op = this.reg.reservationOp({ network: net.name, ip: addr }, this.reg.requireLease());
      if (
        (await kvCall(this.kv, 'reserve an IPv6 address', () => this.kv.txn([{ key, modRevision: 0 }], [op]))).succeeded
      ) {
        this.reservations.set(`${net.name}/${addr}`, { network: net.name, ip: addr });
        this.persist();
        return addr;
      }
      if (fixed !== undefined) {
        const owner = await this.kv.get(key).catch(() => null);
        throw new AgentError(
          'ERR_IN_USE',
          `IPv6 address ${addr} is already in use on ${net.name}${owner ? ` (by ${owner.value})` : ''}`,
        );
      }
      tried.add(cand);
    }
    throw new AgentError(
      'ERR_NO_ADDRESS',
      `could not reserve an IPv6 address in ${net.name}: too many concurrent claims; try again`,
    );
  }

  /** Gives up an endpoint's claim (its record and its address), now or at the next registration pass. */
  unclaim(r: Published): Promise<void> {
    return this.reg.deleteOrQueue(claimKeys(r));
  }

  /** Gives up, at the next registration pass, what an endpoint that is not here claimed: its name, and its address
   * and MAC when they are known. */
  forget(r: Pick<Published, 'network' | 'name'> & Partial<Pick<Published, 'ip' | 'ip6' | 'mac'>>): void {
    const ks = [keys.name(r.network, r.name)];
    if (r.mac) ks.push(keys.endpoint(r.network, r.mac));
    if (r.ip) ks.push(keys.ipam(r.network, r.ip));
    if (r.ip6) ks.push(keys.ipam(r.network, r.ip6));
    this.reg.deleteLater(ks);
  }

  /**
   * Claims an address on a network for this host without an endpoint yet: `want`, or the first free one. Held
   * under the host lease until claim() with `reserved` turns it into an endpoint's address, or release() frees it.
   */
  async reserve(net: Network, want?: string): Promise<string> {
    this.reg.requireRegistered('try again when it is back');
    const addr = await this.search(net, want, 'reserve an address', async (a) => {
      const key = keys.ipam(net.name, a);
      const op = this.reg.reservationOp({ network: net.name, ip: a }, this.reg.requireLease());
      return (await this.kv.txn([{ key, modRevision: 0 }], [op])).succeeded;
    });
    this.reservations.set(`${net.name}/${addr}`, { network: net.name, ip: addr });
    this.persist();
    return addr;
  }

  /** Takes a reservation over for an endpoint that is being claimed; false if this host holds no such one. */
  take(network: string, addr: string): boolean {
    return this.reservations.delete(`${network}/${addr}`);
  }

  holds(network: string, addr: string): boolean {
    return this.reservations.has(`${network}/${addr}`);
  }

  /** Frees a reservation (idempotent: an address that is not reserved here is left alone). */
  async release(network: string, addr: string): Promise<void> {
    if (!this.reservations.delete(`${network}/${addr}`)) return;
    this.persist();
    await this.reg.deleteOrQueue([keys.ipam(network, addr)]);
  }

  /** The addresses claimed on a network this host does not follow (a reservation before its first endpoint). */
  private async claimed<A>(network: string, parse: (s: string) => A): Promise<A[]> {
    const prefix = keys.ipamNet(network);
    const { entries } = await kvCall(this.kv, `list the addresses of ${network}`, () => this.kv.list(prefix));
    const out: A[] = [];
    for (const e of entries) {
      try {
        out.push(parse(e.key.slice(prefix.length)));
      } catch {
        // another family's address, or not an address claim: ignored, as the reconciler ignores invalid records
      }
    }
    return out;
  }

  /**
   * The address search every claim shares: `want`, or the lowest address that is not the gateway, not used by an
   * endpoint or a reservation, and not tried yet; `tryClaim` (a transaction) until one succeeds.
   */
  private async search(
    net: Network,
    want: string | undefined,
    what: string,
    tryClaim: (addr: string) => Promise<boolean>,
  ): Promise<string> {
    const tried = new Set<number>();
    if (net.gateway) tried.add(net.gateway);
    let fixed: number | undefined;
    if (want !== undefined) {
      fixed = parseAddress(want, 'address');
      if (!inSubnet(fixed, net.subnet))
        throw invalid(`address ${want} is not a host address of ${net.name} (${net.subnet.cidr})`);
      if (fixed === net.gateway) throw new AgentError('ERR_IN_USE', `address ${want} is the gateway of ${net.name}`);
    }
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const used = new Set(tried);
      if (this.watching(net.name)) for (const e of this.cluster.endpointsOf(net.name)) used.add(parseIpv4(e.ip));
      else for (const a of await this.claimed(net.name, parseIpv4)) used.add(a);
      for (const r of this.reservations.values())
        if (r.network === net.name && !r.ip.includes(':')) used.add(parseIpv4(r.ip));
      const cand = fixed ?? firstFree(net.subnet, used);
      if (cand < 0) throw new AgentError('ERR_NO_ADDRESS', `no free address left in ${net.name} (${net.subnet.cidr})`);
      const addr = formatIpv4(cand);
      if (await kvCall(this.kv, what, () => tryClaim(addr))) return addr;
      if (fixed !== undefined) {
        const owner = await this.kv.get(keys.ipam(net.name, addr)).catch(() => null);
        throw new AgentError(
          'ERR_IN_USE',
          `address ${addr} is already in use on ${net.name}${owner ? ` (by ${owner.value})` : ''}`,
        );
      }
      tried.add(cand);
    }
    throw new AgentError(
      'ERR_NO_ADDRESS',
      `could not claim an address in ${net.name}: too many concurrent claims; try again`,
    );
  }
}

/** The keys an endpoint's claim holds in the store. */
function claimKeys(r: Published): string[] {
  const ks = [keys.endpoint(r.network, r.mac), keys.ipam(r.network, r.ip), keys.name(r.network, r.name)];
  if (r.ip6) ks.push(keys.ipam(r.network, r.ip6));
  return ks;
}

/** " (by host/endpoint)" from an endpoint record's value, when it says. */
function holder(value: string): string {
  try {
    const v = JSON.parse(value) as { host?: unknown; name?: unknown };
    return typeof v.host === 'string' ? ` (by ${v.host}/${String(v.name)})` : '';
  } catch {
    return '';
  }
}
