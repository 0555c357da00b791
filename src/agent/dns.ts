/**
 * The cluster's name service: a small DNS server that answers A and AAAA queries for the endpoints of the networks this
 * host has endpoints on (the networks its agent follows; a container can only reach those), by name or alias
 * (`web`) or qualified with its network (`web.appnet`), and forwards every other name upstream.
 *
 * Why it exists: Docker's embedded DNS (127.0.0.11) knows only the containers of its own dockerd, and forwards
 * what it does not know to the container's external servers. Pointing dockerd at this server (`--dns <VTEP>` or
 * "dns" in daemon.json) makes names of containers on other hosts resolve, with no per-container flags.
 *
 * Scope: a bare name is looked up only in the networks the asking container is on when `scope(sourceIp)` can
 * tell (the Docker plugin maps the source address to a container); otherwise in every network. `name.network`
 * is always answered. Answers carry a short TTL (5 s): endpoints come and go.
 * Malformed queries are dropped and counted; unknown names get the upstream's answer, or SERVFAIL when no
 * upstream is configured or it does not answer within 2 s (Docker then tries its next server).
 *
 * Closed, as a stub resolver is: it answers only those `allowed` says are this host's (its own addresses, its
 * containers); anyone else, another underlay host most of all, gets REFUSED and learns no name, nor can it use the
 * server as an open resolver. A query it forwards goes out on a socket connected to the upstream (the kernel
 * delivers replies from that address and port only) with a random ID of its own; a reply is taken only if it
 * carries that ID and the question asked, then goes back under the client's ID. Anything else is dropped and
 * counted as forged, and the real answer is still waited for.
 */
import { randomInt } from 'node:crypto';
import { createSocket, type Socket, type RemoteInfo } from 'node:dgram';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';
import type { EndpointRec } from '../kv/schema.js';
import type { Logger } from '../common/log.js';

export interface DnsOptions {
  address: string;
  port: number;
  /** Upstream servers "ip" or "ip:port"; default: the nameservers of /etc/resolv.conf (minus this server);
   * ["none"]: answer SERVFAIL for names that are not ours (Docker then asks its next server). */
  upstream?: string[];
  /** The endpoints of a network whose name or an alias is `label` (lower case): an index lookup, since every
   * query for a name that is not ours (most of what containers ask) tries each network. */
  named: (network: string, label: string) => Iterable<EndpointRec>;
  networks: () => Iterable<string>;
  /** The networks the asker may see, or null for all. */
  scope?: (srcIp: string) => Promise<Set<string> | null> | Set<string> | null;
  /** Whether the asker is this host or one of its containers; others are REFUSED. Default: everyone (tests). */
  allowed?: (srcIp: string) => Promise<boolean> | boolean;
  log: Logger;
}

const TTL = 5;
const FORWARD_TIMEOUT_MS = 2000;
const MAX_PENDING = 256;

export class DnsServer {
  readonly stats = { queries: 0, answered: 0, forwarded: 0, servfail: 0, malformed: 0, refused: 0, forged: 0 };
  private sock: Socket | null = null;
  private pending = 0;
  private readonly upstream: { ip: string; port: number }[];

  constructor(private readonly o: DnsOptions) {
    const up = o.upstream ?? resolvConfServers();
    this.upstream = up.includes('none')
      ? []
      : up.map((u) => parseHostPort(u, 'DNS upstream')).filter((u) => !(u.ip === o.address && u.port === o.port));
  }

  async start(): Promise<void> {
    const s = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(this.o.port, this.o.address, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.on('error', (e) => this.o.log.warn('DNS socket error', { err: e }));
    s.on(
      'message',
      (msg, rinfo) => void this.onQuery(msg, rinfo).catch((e) => this.o.log.warn('DNS query failed', { err: e })),
    );
    this.sock = s;
  }

  close(): void {
    this.sock?.close();
    this.sock = null;
  }

  /** Answers a query from the store: the IPv4 addresses, null when the name is not one of ours. For tests. */
  lookup(name: string, scope: Set<string> | null): string[] | null {
    const found = this.lookupRecords(name, scope);
    return found ? [...new Set(found.map((e) => e.ip))] : null;
  }

  /** The endpoints a name stands for, or null when it is not one of ours. */
  lookupRecords(name: string, scope: Set<string> | null): EndpointRec[] | null {
    const q = name.toLowerCase().replace(/\.$/, '');
    const found: EndpointRec[] = [];
    const nets = [...this.o.networks()];
    const match = (net: string, label: string): void => {
      for (const e of this.o.named(net, label)) found.push(e);
    };
    const dot = q.lastIndexOf('.');
    if (dot > 0 && nets.includes(q.slice(dot + 1))) match(q.slice(dot + 1), q.slice(0, dot));
    if (!found.length && !q.includes('.')) for (const n of nets) if (!scope || scope.has(n)) match(n, q);
    if (!found.length && dot > 0) {
      // network names may contain dots: try every split
      for (const n of nets) if (q.endsWith(`.${n}`)) match(n, q.slice(0, q.length - n.length - 1));
    }
    return found.length ? found : null;
  }

  private async onQuery(msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    this.stats.queries++;
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      this.stats.malformed++;
      return;
    }
    const q = query.questions?.[0];
    if (query.type !== 'query' || !q || typeof q.name !== 'string') {
      this.stats.malformed++;
      return;
    }
    if (this.o.allowed && !(await this.o.allowed(rinfo.address))) {
      this.stats.refused++;
      this.reply(rinfo, {
        type: 'response',
        id: query.id,
        flags: 5 /* REFUSED rcode */,
        questions: [q],
        answers: [],
      });
      return;
    }
    let recs: EndpointRec[] | null = null;
    if (q.class === 'IN' || q.class === undefined) {
      // only a bare name is scoped to the asker's networks; finding them (the plugin asks dockerd) is skipped for
      // every other name, most of all the names that are not ours and go upstream
      const bare = !q.name.replace(/\.$/, '').includes('.');
      const scope = bare && this.o.scope ? await this.o.scope(rinfo.address) : null;
      recs = this.lookupRecords(q.name, scope);
    }
    if (recs) {
      this.stats.answered++;
      // A: the IPv4 addresses; AAAA: the IPv6 addresses of dual-stack endpoints (none: an empty answer, so the
      // resolver does not go on asking upstream for a name that is ours)
      const any = (q.type as string) === 'ANY';
      const v4 = q.type === 'A' || any ? [...new Set(recs.map((e) => e.ip))] : [];
      const v6 = q.type === 'AAAA' || any ? [...new Set(recs.flatMap((e) => (e.ip6 ? [e.ip6] : [])))] : [];
      const answers = [
        ...v4.map((ip) => ({ type: 'A' as const, name: q.name, ttl: TTL, class: 'IN' as const, data: ip })),
        ...v6.map((ip) => ({ type: 'AAAA' as const, name: q.name, ttl: TTL, class: 'IN' as const, data: ip })),
      ];
      this.reply(rinfo, {
        type: 'response',
        id: query.id,
        flags: dnsPacket.AUTHORITATIVE_ANSWER | ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED),
        questions: [q],
        answers,
      });
      return;
    }
    await this.forward(msg, query, rinfo);
  }

  private async forward(msg: Buffer, query: dnsPacket.Packet, rinfo: RemoteInfo): Promise<void> {
    const up = this.upstream[0];
    if (!up || this.pending >= MAX_PENDING) {
      this.servfail(query, rinfo);
      return;
    }
    this.pending++;
    const s = createSocket('udp4');
    // the upstream sees a random ID of ours; the client gets its own back
    const id = randomInt(0x10000);
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    const asked = questionKey(query);
    try {
      const answer = await new Promise<Buffer | null>((resolve) => {
        const t = setTimeout(() => resolve(null), FORWARD_TIMEOUT_MS);
        s.on('error', () => resolve(null));
        s.on('message', (m) => {
          // only from the upstream's address and port (a connected socket), and only the answer to this question
          let ok = false;
          try {
            const p = dnsPacket.decode(m);
            ok = p.id === id && p.type === 'response' && questionKey(p) === asked;
          } catch {
            ok = false;
          }
          if (!ok) {
            this.stats.forged++;
            return;
          }
          clearTimeout(t);
          resolve(m);
        });
        s.connect(up.port, up.ip, () => s.send(out));
      });
      if (answer) {
        this.stats.forwarded++;
        answer.writeUInt16BE(query.id ?? 0, 0);
        this.sock?.send(answer, rinfo.port, rinfo.address);
      } else this.servfail(query, rinfo);
    } finally {
      this.pending--;
      s.close();
    }
  }

  private servfail(query: dnsPacket.Packet, rinfo: RemoteInfo): void {
    this.stats.servfail++;
    this.reply(rinfo, {
      type: 'response',
      id: query.id,
      flags: 2 /* SERVFAIL rcode */,
      questions: query.questions ?? [],
      answers: [],
    });
  }

  private reply(rinfo: RemoteInfo, p: dnsPacket.Packet): void {
    this.sock?.send(dnsPacket.encode(p), rinfo.port, rinfo.address);
  }
}

/** "IPv4" or "IPv4:port" (port 53 when left out). */
/** A packet's question as one comparable string (name without case or the final dot, type, class). */
function questionKey(p: dnsPacket.Packet): string {
  const q = p.questions?.[0];
  return q ? `${String(q.name).toLowerCase().replace(/\.$/, '')}|${q.type}|${q.class ?? 'IN'}` : '';
}

export function parseHostPort(s: string, what = 'address'): { ip: string; port: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(s);
  if (!m) throw new Error(`${what} ${JSON.stringify(s)}: give IPv4[:port]`);
  return { ip: m[1], port: m[2] ? Number(m[2]) : 53 };
}

/**
 * The IPv4 nameservers of a resolv.conf, in order: the name server's default upstream. IPv6 nameservers are
 * skipped (the upstream socket is IPv4), as are comments, `options` and `search` lines. A missing file gives none.
 */
export function resolvConfServers(path = '/etc/resolv.conf'): string[] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .map((l) => /^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/.exec(l)?.[1])
      .filter((x): x is string => !!x);
  } catch {
    return [];
  }
}
