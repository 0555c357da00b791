/**
 * VTEP addresses as the data plane holds them: one number each, whatever the underlay's family.
 *
 * An IPv4 VTEP is its address as a uint32 (host order), as it always was. An IPv6 VTEP (VXLAN over UDP/IPv6, RFC
 * 7348 section 5) gets an id from 1 to VTEP6_MAX the first time it is parsed, registered with the native addon,
 * which turns it into a sockaddr_in6 on send and a received datagram's IPv6 source back into it (native/vtep.c).
 * The ids lie in 0.0.0.0/8, which is never an IPv4 VTEP's address, so a number names either family and the FDB,
 * flood lists, flood-row keys and the receive path's "known VTEP?" lookup need no change and no second code path.
 *
 * Ids are never reused (one per distinct IPv6 VTEP address this process has seen: one per host of the cluster),
 * so a datagram queued for an id can never go to another address.
 */
import { native } from '../sys/native.js';
import { ETH_HLEN, VXLAN_IPV4_OVERHEAD, VXLAN_IPV6_OVERHEAD } from '../vxlan/constants.js';
import { formatIpv4, parseIpv4 } from '../vxlan/ipv4.js';
import { formatIpv6, parseIpv6 } from '../vxlan/ipv6.js';
import { invalid } from './errors.js';

export const VTEP6_MAX = 0xffffff;

/** IPv6 VTEP text (canonical, RFC 5952) -> id, and id -> text. */
const ids = new Map<string, number>();
const texts: string[] = [''];

/** Whether the number is an IPv6 VTEP's id (else an IPv4 address). */
export function isVtep6(v: number): boolean {
  return v > 0 && v <= VTEP6_MAX;
}

export function vtepFamily(v: number): 4 | 6 {
  return isVtep6(v) ? 6 : 4;
}

/** What an overlay MTU gives up to the underlay's: outer IP + UDP + VXLAN + the inner Ethernet header, 50 bytes
 * over IPv4, 70 over IPv6 (an underlay MTU of 1500 leaves 1450 or 1430). */
export function vtepOverhead(family: 4 | 6): number {
  return (family === 6 ? VXLAN_IPV6_OVERHEAD : VXLAN_IPV4_OVERHEAD) + ETH_HLEN;
}

function intern6(s: string): number {
  const b = parseIpv6(s);
  if (b.every((x) => x === 0)) throw new RangeError(`${s} is the unspecified address, not a VTEP`);
  const text = formatIpv6(b);
  const have = ids.get(text);
  if (have !== undefined) return have;
  const id = texts.length;
  if (id > VTEP6_MAX) throw new RangeError(`more than ${VTEP6_MAX} IPv6 VTEP addresses`);
  native().vtep6Set(id, b);
  ids.set(text, id);
  texts.push(text);
  return id;
}

/**
 * A VTEP address (IPv4 dotted quad or IPv6 text) as its number. Throws TypeError for text that is neither and
 * RangeError for an IPv4 address in 0.0.0.0/8 (the ids' range) or :: (the mark of an unused id in native/vtep.c),
 * which are never VTEPs; says nothing else about whether the address may be a VTEP (see notUnicastVtep).
 */
export function parseVtep(s: string): number {
  const known = ids.get(s); // the store holds canonical text: most IPv6 lookups end here
  if (known !== undefined) return known;
  if (typeof s === 'string' && s.includes(':')) return intern6(s);
  const a = parseIpv4(s);
  if (a >>> 24 === 0) throw new RangeError(`${s} is in 0.0.0.0/8 ("this network"), not a VTEP`);
  return a;
}

export function formatVtep(v: number): string {
  return isVtep6(v) ? (texts[v] ?? `vtep6#${v}`) : formatIpv4(v >>> 0);
}

/** ADDR:PORT as a user writes it: 198.18.0.2:4789, [2001:db8::2]:4789. */
export function formatVtepPort(v: number, port: number): string {
  return isVtep6(v) ? `[${formatVtep(v)}]:${port}` : `${formatVtep(v)}:${port}`;
}

/**
 * "ADDR", "ADDR:PORT", "V6ADDR" or "[V6ADDR]:PORT" as an address (text, unchecked as a VTEP) and a port (the
 * default if none is given); an invalid() error that says the forms otherwise.
 */
export function splitVtepPort(s: string, defaultPort: number, what = 'dst'): { addr: string; port: number } {
  const bad = (): never => {
    throw invalid(`${what} ${JSON.stringify(s)}: expected IPv4[:port], IPv6 or [IPv6]:port`);
  };
  if (typeof s !== 'string' || !s) bad();
  let addr = s;
  let p: string | undefined;
  const br = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
  if (br) [addr, p] = [br[1], br[2]];
  else if ((s.match(/:/g) ?? []).length === 1) [addr, p] = s.split(':');
  const port = p === undefined ? defaultPort : Number(p);
  if (!addr || /[[\]]/.test(addr) || !/^\d+$/.test(p ?? '1') || !Number.isInteger(port) || port < 1 || port > 65535)
    bad();
  return { addr, port };
}

/** Why an address cannot be a VTEP (unspecified, loopback, multicast, ...), or null. */
export function notUnicastVtep(v: number): string | null {
  if (isVtep6(v)) {
    const b = parseIpv6(formatVtep(v));
    if (b[0] === 0xff) return 'a multicast address';
    if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80)
      return 'a link-local address (it needs an interface; give a global one)';
    if (b.subarray(0, 15).every((x) => x === 0) && b[15] === 1) return 'the loopback address';
    if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff)
      return 'an IPv4-mapped address (give the IPv4 address itself)';
    return null;
  }
  const a = v >>> 0;
  const first = a >>> 24;
  if (a === 0xffffffff) return 'the broadcast address';
  if (first === 127) return 'a loopback address';
  if (first >= 224 && first <= 239) return 'a multicast address';
  if (first >= 240) return 'a reserved address (240.0.0.0/4)';
  return null;
}

/**
 * Parses a VTEP address given by a user: an invalid() error that says what is wrong. A `remote` one (a peer's) must
 * also be a unicast address another host can have; this agent's own may be anything it can bind (loopback too:
 * several agents on one machine).
 */
export function parseVtepAddress(s: string, what = 'VTEP address', remote = false): number {
  const hint = remote ? 'the underlay address of the remote host' : 'an underlay address of this host';
  let v: number;
  try {
    v = parseVtep(s);
  } catch (e) {
    if (e instanceof RangeError) throw invalid(`${what} ${e.message}: give ${hint}`);
    throw invalid(`${what} ${JSON.stringify(s)} is not an IPv4 or IPv6 address (198.18.0.2, 2001:db8::2)`);
  }
  const why = remote ? notUnicastVtep(v) : null;
  if (why) throw invalid(`${what} ${s} is ${why}, not a VTEP: give ${hint}`);
  return v;
}
