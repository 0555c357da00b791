/**
 * Addresses on overlay networks, allocated cluster-wide by transaction: an endpoint's address and MAC are claimed
 * together (compare: both absent) under the host lease before its TAP exists, so two hosts never hand out the same
 * one. Docker's IPAM asks for an address before the endpoint exists, so this host can also hold reservations
 * (`ipam/` keys with the value `<host>/reserved`) that a later claim turns into an endpoint's address.
 */
import { firstFree, inSubnet, macForAddress, parseAddress } from '../common/addr.js';
import { AgentError, invalid } from '../common/errors.js';
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
  ): Promise<string> {
    return this.search(net, want, 'allocate an address', async (addr) => {
      rec.ip = addr;
      if (macFromIp) rec.mac = formatMac(macForAddress(parseIpv4(addr)));
      const lease = this.reg.requireLease();
      const r = await this.kv.txn(
        [
          ...(reserved ? [] : [{ key: keys.ipam(net.name, addr), modRevision: 0 }]),
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
      if (reserved)
        throw new AgentError('ERR_IN_USE', `the reservation of ${addr} on ${net.name} changed meanwhile; try again`);
      return false;
    });
  }

  /** Gives up an endpoint's claim (its record and its address), now or at the next registration pass. */
  unclaim(r: Published): Promise<void> {
    return this.reg.deleteOrQueue(claimKeys(r));
  }

  /** Gives up, at the next registration pass, what an endpoint that is not here claimed: its name, and its address
   * and MAC when they are known. */
  forget(r: Pick<Published, 'network' | 'name'> & Partial<Pick<Published, 'ip' | 'mac'>>): void {
    const ks = [keys.name(r.network, r.name)];
    if (r.mac) ks.push(keys.endpoint(r.network, r.mac));
    if (r.ip) ks.push(keys.ipam(r.network, r.ip));
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
      for (const e of this.cluster.endpointsOf(net.name)) used.add(parseIpv4(e.ip));
      for (const r of this.reservations.values()) if (r.network === net.name) used.add(parseIpv4(r.ip));
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
  return [keys.endpoint(r.network, r.mac), keys.ipam(r.network, r.ip), keys.name(r.network, r.name)];
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
