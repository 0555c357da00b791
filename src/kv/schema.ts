/**
 * The KV schema (version 1). Everything vxtap shares lives under /vxtap/v1/:
 *
 *   networks/<name>               {"vni","subnet","gateway","mtu","learning"}        created by txn with vnis/<vni>
 *   vnis/<vni>                    "<network name>"                                  uniqueness index for VNIs
 *   hosts/<host>                  {"vtep","port"}                                   under the host's lease
 *   endpoints/<network>/<mac>     {"ip","host","name","aliases","netns","ifname"}    under the host's lease
 *   ipam/<network>/<ip>           "<host>/<endpoint name>" or "<host>/reserved"     under the host's lease, by txn
 *   names/<network>/<endpoint>    "<host>"                                          under the host's lease, by txn:
 *                                 an endpoint name is unique on its network across hosts (the name server
 *                                 answers it)
 *   guard/networks                touched by every network create/delete: its modRevision serialises them, so
 *                                 name, VNI and subnet checks are made against one consistent view
 *   subnets/<a.b.c.d_len>         {"host","at"}: a pool subnet held for a network being created (Docker asks for
 *                                 its pool before it creates the network); by txn with the guard, dropped when
 *                                 the network is created or the pool released, ignored after HOLD_MS
 *
 * A host that dies stops renewing its lease: its host key, endpoints and addresses vanish everywhere.
 * Values written by other hosts are untrusted input: parse*() validate every field and return null for anything
 * malformed (the reconciler skips and counts it).
 */
import { isValidVni } from '../vxlan/vxlan.js';
import { parseIpv4 } from '../vxlan/ipv4.js';
import { formatIpv6, parseIpv6 } from '../vxlan/ipv6.js';
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
  /** One network's endpoint records: what an agent lists and watches while it has endpoints there. */
  endpointsNet: (network: string) => `${ROOT}endpoints/${network}/`,
  ipam: (network: string, ip: string) => `${ROOT}ipam/${network}/${ip}`,
  ipamNet: (network: string) => `${ROOT}ipam/${network}/`,
  name: (network: string, name: string) => `${ROOT}names/${network}/${name}`,
  namesNet: (network: string) => `${ROOT}names/${network}/`,
  guardNetworks: `${ROOT}guard/networks`,
  /** A subnet taken from the pool for a network about to be created (Docker's RequestPool comes first). */
  subnetHold: (cidr: string) => `${ROOT}subnets/${cidr.replace('/', '_')}`,
  subnetHolds: `${ROOT}subnets/`,
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
  /** 802.1Q/802.1ad-tagged frames from endpoints are forwarded (by default they are dropped). Written only when
   * true. */
  allowTagged?: boolean;
  /** Dual stack: the network's IPv6 subnet (CIDR) and gateway. Written only for dual-stack networks. */
  subnet6?: string;
  gateway6?: string | null;
  /** An encrypted network: its keys (at least one) and their rotation period. Written only when encrypted. */
  encrypted?: true;
  keys?: NetKey[];
  rotateSec?: number;
}

/** One generation of an encrypted network's key (src/agent/keyring.ts). Senders use the newest whose `from` has
 * come; receivers accept every one listed. */
export interface NetKey {
  /** 1, 2, ...; the key id on the wire is gen & 0xff. */
  gen: number;
  /** 32 random bytes, base64. */
  key: string;
  /** ms since the epoch: senders switch to it then. */
  from: number;
}

export interface HostRec {
  host: string;
  vtep: string;
  port: number;
  /** 16 random bytes (hex) the agent drew at start: encrypted networks derive its send keys with them, so a
   * restarted agent never reuses a (key, nonce) pair. Absent from agents before encrypted networks. */
  nonce?: string;
}

export interface EndpointRec {
  network: string;
  mac: string;
  ip: string;
  /** The IPv6 address on a dual-stack network (canonical RFC 5952 text). */
  ip6?: string;
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

/** An IPv6 address in canonical form (what agents write): anything else is refused, so one address has one key. */
function ipv6ok(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  try {
    return formatIpv6(parseIpv6(s)) === s;
  } catch {
    return false;
  }
}

function subnet6ok(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  const i = s.indexOf('/');
  const p = Number(s.slice(i + 1));
  return i > 0 && ipv6ok(s.slice(0, i)) && Number.isInteger(p) && p >= 48 && p <= 120;
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
  const { vni, subnet, gateway, mtu, learning, internal, allowTagged, subnet6, gateway6, encrypted, keys, rotateSec } =
    o;
  if (typeof vni !== 'number' || !isValidVni(vni)) return null;
  if (typeof subnet !== 'string' || !/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(subnet)) return null;
  if (gateway !== null && !ipv4ok(gateway)) return null;
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 68 || mtu > 65485) return null;
  if (internal !== undefined && typeof internal !== 'boolean') return null;
  if (allowTagged !== undefined && typeof allowTagged !== 'boolean') return null;
  if (subnet6 !== undefined && !subnet6ok(subnet6)) return null;
  if (gateway6 !== undefined && gateway6 !== null && !ipv6ok(gateway6)) return null;
  if (encrypted !== undefined && encrypted !== true) return null;
  const netKeys = encrypted ? parseNetKeys(keys) : null;
  if (encrypted && (netKeys === null || !rotateOk(rotateSec))) return null;
  return {
    name,
    vni,
    subnet,
    gateway: gateway as string | null,
    mtu,
    learning: learning !== false,
    ...(internal ? { internal: true } : {}),
    ...(allowTagged ? { allowTagged: true } : {}),
    ...(subnet6 !== undefined ? { subnet6, gateway6: (gateway6 as string | null | undefined) ?? null } : {}),
    ...(netKeys ? { encrypted: true as const, keys: netKeys, rotateSec: rotateSec as number } : {}),
  };
}

/** Key rotation periods: 4 s (tests) to 10 years. */
export const ROTATE_MIN_SEC = 4;
export const ROTATE_MAX_SEC = 10 * 365 * 86400;

function rotateOk(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= ROTATE_MIN_SEC && v <= ROTATE_MAX_SEC;
}

/** 1 to 4 generations, strictly increasing, each a 32-byte key and a start time. */
function parseNetKeys(v: unknown): NetKey[] | null {
  if (!Array.isArray(v) || v.length < 1 || v.length > 4) return null;
  const out: NetKey[] = [];
  for (const k of v) {
    if (typeof k !== 'object' || k === null) return null;
    const { gen, key, from } = k as Record<string, unknown>;
    if (typeof gen !== 'number' || !Number.isInteger(gen) || gen < 1 || gen > 2 ** 40) return null;
    if (out.length && gen <= out[out.length - 1].gen) return null;
    if (typeof key !== 'string' || !/^[A-Za-z0-9+/]{43}=$/.test(key)) return null;
    if (typeof from !== 'number' || !Number.isFinite(from) || from < 0) return null;
    out.push({ gen, key, from });
  }
  return out;
}

export function parseHost(host: string, v: string): HostRec | null {
  const o = obj(v);
  if (!o || !NAME.test(host) || !(ipv4ok(o.vtep) || ipv6ok(o.vtep))) return null;
  const port = o.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  const nonce = o.nonce;
  if (nonce !== undefined && (typeof nonce !== 'string' || !/^[0-9a-f]{32}$/.test(nonce))) return null;
  return { host, vtep: o.vtep, port, ...(nonce !== undefined ? { nonce } : {}) };
}

export function parseEndpoint(network: string, mac: string, v: string): EndpointRec | null {
  const o = obj(v);
  if (!o || !NAME.test(network)) return null;
  try {
    parseMac(mac);
  } catch {
    return null;
  }
  if (
    !ipv4ok(o.ip) ||
    (o.ip6 !== undefined && !ipv6ok(o.ip6)) ||
    typeof o.host !== 'string' ||
    !NAME.test(o.host) ||
    typeof o.name !== 'string' ||
    !NAME.test(o.name)
  )
    return null;
  const aliases = Array.isArray(o.aliases)
    ? o.aliases.filter((a): a is string => typeof a === 'string' && NAME.test(a)).slice(0, 32)
    : [];
  return {
    network,
    mac,
    ip: o.ip,
    ...(o.ip6 !== undefined ? { ip6: o.ip6 as string } : {}),
    host: o.host,
    name: o.name,
    aliases,
    netns: typeof o.netns === 'string' ? o.netns : undefined,
    ifname: typeof o.ifname === 'string' ? o.ifname : undefined,
  };
}

/** The scope a tracked key belongs to: networks/, hosts/, or endpoints/NET/ (what one watch covers). */
function scopeOf(key: string): string {
  const i = key.indexOf('/', ROOT.length);
  if (!key.startsWith('endpoints/', ROOT.length)) return key.slice(0, i + 1);
  return key.slice(0, key.indexOf('/', i + 1) + 1);
}

/** An index slot: one record (nearly always), or a Set of them when records clash. */
type Slot = EndpointRec | Set<EndpointRec>;

function slotAdd<K>(m: Map<K, Slot>, k: K, e: EndpointRec): void {
  const cur = m.get(k);
  if (cur === undefined) m.set(k, e);
  else if (cur instanceof Set) cur.add(e);
  else if (cur !== e) m.set(k, new Set([cur, e]));
}

function slotDel<K>(m: Map<K, Slot>, k: K, e: EndpointRec): void {
  const cur = m.get(k);
  if (cur === e) m.delete(k);
  else if (cur instanceof Set) {
    cur.delete(e);
    if (cur.size === 1) m.set(k, cur.values().next().value as EndpointRec);
  }
}

/** Calls f with each name an endpoint answers to in DNS (its name and aliases, lower case), each once. */
function eachLabel(e: EndpointRec, f: (label: string) => void): void {
  const name = e.name.toLowerCase();
  f(name);
  for (let i = 0; i < e.aliases.length; i++) {
    const a = e.aliases[i].toLowerCase();
    if (a === name) continue;
    let dup = false;
    for (let j = 0; j < i && !dup; j++) dup = e.aliases[j].toLowerCase() === a;
    if (!dup) f(a);
  }
}

/**
 * What one batch of puts/deletes changed, with the records as they were before the batch (null: absent), so a
 * consumer can update its tables for exactly these keys instead of rebuilding them.
 */
export class Changes {
  /** Made by a re-list (ClusterState.replace) rather than a watch batch. */
  full = false;
  /** Network records put or deleted. */
  readonly networks = new Set<string>();
  /** host -> its record before the batch. */
  readonly hosts = new Map<string, HostRec | null>();
  /** network -> mac -> the endpoint before the batch. */
  readonly endpoints = new Map<string, Map<string, EndpointRec | null>>();

  get empty(): boolean {
    return !this.full && this.networks.size === 0 && this.hosts.size === 0 && this.endpoints.size === 0;
  }
}

/**
 * The cluster as the KV store describes it, rebuilt from list() and kept current from watch events. Besides the
 * records it keeps the indexes that let a change be applied in time proportional to the change: endpoints by
 * host, by (network, IP), and the number of endpoints each host has on each network.
 */
export class ClusterState {
  readonly networks = new Map<string, NetworkRec>();
  readonly hosts = new Map<string, HostRec>();
  /** network -> mac -> endpoint */
  readonly endpoints = new Map<string, Map<string, EndpointRec>>();
  /** host -> its endpoints (on every network) */
  readonly byHost = new Map<string, Set<EndpointRec>>();
  /** network -> IP -> the endpoint claiming it (a Set only if a host wrote a clashing record) */
  private readonly byIp = new Map<string, Map<string, Slot>>();
  /** network -> lower-case name or alias -> the endpoints answering to it (for the name server) */
  private readonly byName = new Map<string, Map<string, Slot>>();
  /** network -> host -> number of its endpoints there */
  private readonly hostCounts = new Map<string, Map<string, number>>();
  /** Every key applied, with its raw value: a re-list compares against it and re-parses only what differs. */
  private readonly raw = new Map<string, string>();
  /** Keys held per scope (networks/, hosts/, endpoints/NET/): a check compares them with the store's count. */
  private readonly scopeCounts = new Map<string, number>();
  private readonly invalidKeys = new Set<string>();

  /** Records that failed validation (ignored), as the store holds them now. */
  get invalid(): number {
    return this.invalidKeys.size;
  }

  /**
   * Applies one put/delete (keys other than network, host and endpoint records are ignored). With `ch`, also
   * notes the change there (the first prior record of each key in the batch).
   */
  apply(key: string, value: string | null, ch?: Changes): void {
    if (!key.startsWith(ROOT)) return;
    const parts = key.slice(ROOT.length).split('/');
    const [kind] = parts;
    const tracked =
      kind === 'networks' || kind === 'hosts' ? parts.length === 2 : kind === 'endpoints' && parts.length === 3;
    if (!tracked) return;
    const had = this.raw.has(key);
    if (value === null) this.raw.delete(key);
    else this.raw.set(key, value);
    if (had !== (value !== null)) {
      const scope = scopeOf(key);
      const n = (this.scopeCounts.get(scope) ?? 0) + (had ? -1 : 1);
      if (n > 0) this.scopeCounts.set(scope, n);
      else this.scopeCounts.delete(scope);
    }
    this.invalidKeys.delete(key);
    if (kind === 'networks') {
      const name = parts[1];
      ch?.networks.add(name);
      const n = value === null ? null : parseNetwork(name, value);
      if (value !== null && !n) this.invalidKeys.add(key);
      if (n) this.networks.set(name, n);
      else this.networks.delete(name);
      return;
    }
    if (kind === 'hosts') {
      const name = parts[1];
      if (ch && !ch.hosts.has(name)) ch.hosts.set(name, this.hosts.get(name) ?? null);
      const h = value === null ? null : parseHost(name, value);
      if (value !== null && !h) this.invalidKeys.add(key);
      if (h) this.hosts.set(name, h);
      else this.hosts.delete(name);
      return;
    }
    const [, network, mac] = parts;
    let m = this.endpoints.get(network);
    const old = m?.get(mac) ?? null;
    if (ch) {
      let cm = ch.endpoints.get(network);
      if (!cm) ch.endpoints.set(network, (cm = new Map()));
      if (!cm.has(mac)) cm.set(mac, old);
    }
    const e = value === null ? null : parseEndpoint(network, mac, value);
    if (value !== null && !e) this.invalidKeys.add(key);
    if (old) {
      m!.delete(mac);
      if (m!.size === 0) this.endpoints.delete(network);
      this.unindex(old);
    }
    if (e) {
      if (!m || m.size === 0) this.endpoints.set(network, (m = m ?? new Map()));
      m.set(mac, e);
      this.index(e);
    }
  }

  /**
   * Makes the state equal to a full listing: keys whose raw value differs are applied (and noted in the returned
   * Changes), keys the listing lacks are deleted. An unchanged listing costs one string compare per key.
   */
  replace(entries: Iterable<{ key: string; value: string }>, prefix = ROOT): Changes {
    const ch = new Changes();
    ch.full = true;
    const seen = new Set<string>();
    for (const { key, value } of entries) {
      seen.add(key);
      if (this.raw.get(key) !== value) this.apply(key, value, ch);
    }
    for (const key of [...this.raw.keys()]) if (key.startsWith(prefix) && !seen.has(key)) this.apply(key, null, ch);
    return ch;
  }

  /** Forgets every key under `prefix` (a scope no longer watched); what went is in the returned Changes. */
  drop(prefix: string): Changes {
    const ch = new Changes();
    if (!this.scopeCounts.has(prefix) && prefix !== ROOT) return ch;
    for (const key of [...this.raw.keys()]) if (key.startsWith(prefix)) this.apply(key, null, ch);
    return ch;
  }

  /** Keys held under a scope prefix (networks/, hosts/ or endpoints/NET/). */
  countUnder(scope: string): number {
    return this.scopeCounts.get(scope) ?? 0;
  }

  private index(e: EndpointRec): void {
    let h = this.byHost.get(e.host);
    if (!h) this.byHost.set(e.host, (h = new Set()));
    h.add(e);
    let ips = this.byIp.get(e.network);
    if (!ips) this.byIp.set(e.network, (ips = new Map()));
    slotAdd(ips, e.ip, e);
    if (e.ip6 !== undefined) slotAdd(ips, e.ip6, e);
    let counts = this.hostCounts.get(e.network);
    if (!counts) this.hostCounts.set(e.network, (counts = new Map()));
    counts.set(e.host, (counts.get(e.host) ?? 0) + 1);
    let names = this.byName.get(e.network);
    if (!names) this.byName.set(e.network, (names = new Map()));
    const n = names;
    eachLabel(e, (label) => slotAdd(n, label, e));
  }

  private unindex(e: EndpointRec): void {
    const h = this.byHost.get(e.host);
    h?.delete(e);
    if (h?.size === 0) this.byHost.delete(e.host);
    const ips = this.byIp.get(e.network);
    if (ips) {
      slotDel(ips, e.ip, e);
      if (e.ip6 !== undefined) slotDel(ips, e.ip6, e);
      if (ips.size === 0) this.byIp.delete(e.network);
    }
    const counts = this.hostCounts.get(e.network);
    const c = (counts?.get(e.host) ?? 0) - 1;
    if (c > 0) counts!.set(e.host, c);
    else counts?.delete(e.host);
    if (counts?.size === 0) this.hostCounts.delete(e.network);
    const names = this.byName.get(e.network);
    if (names) {
      eachLabel(e, (label) => slotDel(names, label, e));
      if (names.size === 0) this.byName.delete(e.network);
    }
  }

  /** Endpoints of `network` whose name or an alias is `label` (lower case). */
  named(network: string, label: string): Iterable<EndpointRec> {
    const x = this.byName.get(network)?.get(label);
    return x === undefined ? [] : x instanceof Set ? x : [x];
  }

  /** The endpoint that answers ARP (or neighbour discovery, for an IPv6 `ip`) for `ip` on `network`: of clashing records, the lowest MAC (any order of
   * arrival gives the same answer). */
  ipOwner(network: string, ip: string): EndpointRec | null {
    const x = this.byIp.get(network)?.get(ip);
    if (x === undefined || !(x instanceof Set)) return x ?? null;
    let best: EndpointRec | null = null;
    for (const e of x) if (!best || e.mac < best.mac) best = e;
    return best;
  }

  /** Number of endpoints `host` has on `network`. */
  hostCount(network: string, host: string): number {
    return this.hostCounts.get(network)?.get(host) ?? 0;
  }

  /** Hosts with endpoints on `network`. */
  hostsOn(network: string): IterableIterator<string> {
    return (this.hostCounts.get(network) ?? new Map<string, number>()).keys();
  }

  clear(): void {
    this.networks.clear();
    this.hosts.clear();
    this.endpoints.clear();
    this.byHost.clear();
    this.byIp.clear();
    this.hostCounts.clear();
    this.byName.clear();
    this.raw.clear();
    this.scopeCounts.clear();
    this.invalidKeys.clear();
  }

  endpointsOf(network: string): EndpointRec[] {
    return [...(this.endpoints.get(network)?.values() ?? [])];
  }
}
