/**
 * The KV schema (version 1). Everything vxtap shares lives under /vxtap/v1/:
 *
 *   networks/<name>               {"vni","subnet","gateway","mtu","learning"}        created by txn with vnis/<vni>
 *   vnis/<vni>                    "<network name>"                                  uniqueness index for VNIs
 *   hosts/<host>                  {"vtep","port"}                                   under the host's lease
 *   endpoints/<network>/<mac>     {"ip","host","name","aliases","netns","ifname"}    under the host's lease
 *   ipam/<network>/<ip>           "<host>/<endpoint name>" or "<host>/reserved"     under the host's lease, by txn
 *   guard/networks                touched by every network create/delete: its modRevision serialises them, so
 *                                 name, VNI and subnet checks are made against one consistent view
 *
 * A host that dies stops renewing its lease: its host key, endpoints and addresses vanish everywhere.
 * Values written by other hosts are untrusted input: parse*() validate every field and return null for anything
 * malformed (the reconciler skips and counts it).
 */
import { isValidVni } from '../vxlan/vxlan.js';
import { parseIpv4 } from '../vxlan/ipv4.js';
import { parseMac } from '../vxlan/mac.js';

export const ROOT = '/vxtap/v1/';
export const keys = {
  network: (name: string) => `${ROOT}networks/${name}`,
  networks: `${ROOT}networks/`,
  vni: (vni: number) => `${ROOT}vnis/${vni}`,
  host: (host: string) => `${ROOT}hosts/${host}`,
  hosts: `${ROOT}hosts/`,
  endpoint: (network: string, mac: string) => `${ROOT}endpoints/${network}/${mac}`,
  endpoints: `${ROOT}endpoints/`,
  ipam: (network: string, ip: string) => `${ROOT}ipam/${network}/${ip}`,
  ipamNet: (network: string) => `${ROOT}ipam/${network}/`,
  guardNetworks: `${ROOT}guard/networks`,
};

export interface NetworkRec {
  name: string;
  vni: number;
  subnet: string;
  gateway: string | null;
  mtu: number;
  learning: boolean;
  /** Docker's --internal: containers attached through Docker get no route out of the network (every host's
   * dockerd learns it from here). Written only when true. */
  internal?: boolean;
}

export interface HostRec {
  host: string;
  vtep: string;
  port: number;
}

export interface EndpointRec {
  network: string;
  mac: string;
  ip: string;
  host: string;
  name: string;
  aliases: string[];
  netns?: string;
  ifname?: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function obj(v: string): Record<string, unknown> | null {
  try {
    const o = JSON.parse(v);
    return typeof o === 'object' && o !== null && !Array.isArray(o) ? o : null;
  } catch {
    return null;
  }
}

function ipv4ok(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  try {
    parseIpv4(s);
    return true;
  } catch {
    return false;
  }
}

export function parseNetwork(name: string, v: string): NetworkRec | null {
  const o = obj(v);
  if (!o || !NAME.test(name)) return null;
  const { vni, subnet, gateway, mtu, learning, internal } = o;
  if (typeof vni !== 'number' || !isValidVni(vni)) return null;
  if (typeof subnet !== 'string' || !/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(subnet)) return null;
  if (gateway !== null && !ipv4ok(gateway)) return null;
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 68 || mtu > 65485) return null;
  if (internal !== undefined && typeof internal !== 'boolean') return null;
  return { name, vni, subnet, gateway: gateway as string | null, mtu, learning: learning !== false, ...(internal ? { internal: true } : {}) };
}

export function parseHost(host: string, v: string): HostRec | null {
  const o = obj(v);
  if (!o || !NAME.test(host) || !ipv4ok(o.vtep)) return null;
  const port = o.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { host, vtep: o.vtep, port };
}

export function parseEndpoint(network: string, mac: string, v: string): EndpointRec | null {
  const o = obj(v);
  if (!o || !NAME.test(network)) return null;
  try {
    parseMac(mac);
  } catch {
    return null;
  }
  if (!ipv4ok(o.ip) || typeof o.host !== 'string' || !NAME.test(o.host) || typeof o.name !== 'string' || !NAME.test(o.name)) return null;
  const aliases = Array.isArray(o.aliases) ? o.aliases.filter((a): a is string => typeof a === 'string' && NAME.test(a)).slice(0, 32) : [];
  return {
    network,
    mac,
    ip: o.ip,
    host: o.host,
    name: o.name,
    aliases,
    netns: typeof o.netns === 'string' ? o.netns : undefined,
    ifname: typeof o.ifname === 'string' ? o.ifname : undefined,
  };
}

/** The cluster as the KV store describes it, rebuilt from list() and kept current from watch events. */
export class ClusterState {
  readonly networks = new Map<string, NetworkRec>();
  readonly hosts = new Map<string, HostRec>();
  /** network -> mac -> endpoint */
  readonly endpoints = new Map<string, Map<string, EndpointRec>>();
  /** Records that failed validation (ignored). */
  invalid = 0;

  /** Applies one put/delete; returns the network it affects ('*' for host changes), or null if irrelevant. */
  apply(key: string, value: string | null): string | null {
    if (!key.startsWith(ROOT)) return null;
    const parts = key.slice(ROOT.length).split('/');
    const [kind] = parts;
    if (kind === 'networks' && parts.length === 2) {
      const name = parts[1];
      if (value === null) this.networks.delete(name);
      else {
        const n = parseNetwork(name, value);
        if (n) this.networks.set(name, n);
        else {
          this.invalid++;
          this.networks.delete(name);
        }
      }
      return name;
    }
    if (kind === 'hosts' && parts.length === 2) {
      if (value === null) this.hosts.delete(parts[1]);
      else {
        const h = parseHost(parts[1], value);
        if (h) this.hosts.set(h.host, h);
        else {
          this.invalid++;
          this.hosts.delete(parts[1]);
        }
      }
      return '*';
    }
    if (kind === 'endpoints' && parts.length === 3) {
      const [, network, mac] = parts;
      let m = this.endpoints.get(network);
      if (value === null) {
        m?.delete(mac);
        if (m && m.size === 0) this.endpoints.delete(network);
      } else {
        const e = parseEndpoint(network, mac, value);
        if (!e) {
          this.invalid++;
          m?.delete(mac);
        } else {
          if (!m) this.endpoints.set(network, (m = new Map()));
          m.set(mac, e);
        }
      }
      return network;
    }
    return null;
  }

  clear(): void {
    this.networks.clear();
    this.hosts.clear();
    this.endpoints.clear();
    this.invalid = 0;
  }

  endpointsOf(network: string): EndpointRec[] {
    return [...(this.endpoints.get(network)?.values() ?? [])];
  }
}
