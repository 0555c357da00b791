/**
 * Who may ask the cluster name server (dns.ts `allowed`): this host and its containers, nobody else. A query
 * from another machine on the underlay must not learn container names, nor use the server as an open resolver.
 *
 *   - loopback, and any address of this host's own interfaces (re-read at most every 5 s);
 *   - the overlay address (IPv4 or IPv6) of a local endpoint;
 *   - with Docker, a container of this host's dockerd (its docker_gwbridge address: how Docker's embedded server
 *     forwards a container's queries), asked through `container`.
 */
import { networkInterfaces } from 'node:os';

const IFACES_MS = 5000;

export function localAsker(o: {
  /** The local endpoints' overlay addresses (IPv4 dotted, IPv6 canonical). */
  endpointAddrs: () => Iterable<string>;
  /** Whether `ip` is a container of the local dockerd (the Docker plugin's answer), if Docker is used. */
  container?: (ip: string) => Promise<boolean>;
}): (ip: string) => Promise<boolean> {
  let own = new Set<string>();
  let ownAt = -Infinity;
  const hostAddrs = (): Set<string> => {
    const now = Date.now();
    if (now - ownAt > IFACES_MS) {
      own = new Set(
        Object.values(networkInterfaces())
          .flat()
          .flatMap((a) => (a ? [a.address.toLowerCase()] : [])),
      );
      ownAt = now;
    }
    return own;
  };
  return async (raw: string): Promise<boolean> => {
    const ip = raw.toLowerCase().replace(/^::ffff:(?=\d+\.)/, '');
    if (ip.startsWith('127.') || ip === '::1') return true;
    if (hostAddrs().has(ip)) return true;
    for (const a of o.endpointAddrs()) if (a === ip) return true;
    return o.container ? o.container(ip) : false;
  };
}
