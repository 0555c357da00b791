/**
 * TAP devices for endpoints.
 *
 * A TAP is opened in the AGENT's network namespace under a temporary name (vxNNNNNNNN), configured, then moved
 * into the container's namespace and renamed in one `ip link set ... netns NS name IFNAME`. Why not open it
 * inside the container namespace directly (setns, open, TUNSETIFF)? The TAP's socket holds a reference to the
 * namespace it was opened in: opened inside the container it would keep a deleted container namespace alive for
 * as long as the agent holds the fd, and the agent would never learn the container is gone. Opened here, the
 * container namespace dies normally; the kernel then unregisters the device, the fd polls EPOLLERR, and the
 * data plane reports the port as failed. The fd keeps working after the move (checked on this kernel).
 * Closing a non-persistent TAP's last fd deletes the device.
 */
import { randomBytes } from 'node:crypto';
import { native } from '../sys/native.js';
import { ip, netnsPath } from '../sys/ip.js';
import { formatMac } from '../vxlan/mac.js';
import { ETH_HLEN, VXLAN_HLEN } from '../vxlan/constants.js';
import { UDP_GSO_MAX_BYTES, UDP_GSO_MAX_SEGS } from '../vxlan/gso.js';

/**
 * How many TCP segments a container's super-frame should hold so that all of them, each behind its VXLAN and
 * Ethernet headers, fit in ONE UDP GSO send: a 64 KB super-frame at MTU 1450 is 46 segments, but only 44 datagrams
 * of 1472 bytes fit in 65507, so every super-frame cost two sends (the second of 2 segments) and two receive
 * buffers on the other side. The agent sets this as the TAP's gso_max_segs; TCP then sizes its super-frames to it.
 */
export function tapGsoMaxSegs(mtu: number): number {
  return Math.max(1, Math.min(UDP_GSO_MAX_SEGS, Math.floor(UDP_GSO_MAX_BYTES / (VXLAN_HLEN + ETH_HLEN + mtu))));
}

export interface TapOptions {
  /** Interface name (<= 15 chars) it will have where it ends up. */
  ifname: string;
  /** Network namespace (name or path) to move it into; it stays in the agent's own when undefined. */
  netns?: string;
  mac: number;
  mtu: number;
  /** The owner's marker, set as the device's alias (IFLA_IFALIAS: it survives moves and renames), so the agent
   * can tell its own TAPs from every other interface (see ownerMarker). */
  alias?: string;
  /** Open with IFF_VNET_HDR and enable TUNSETOFFLOAD(CSUM | TSO4 | TSO6 | USO4 | USO6): the container's stack then hands over TCP
   * super-frames (up to 64 KB, at most tapGsoMaxSegs(mtu) segments: the device's gso_max_segs) and partial
   * checksums, each frame behind a virtio-net header. */
  vnetHdr?: boolean;
}

export interface Tap {
  fd: number;
  ifname: string;
  netns: string | undefined;
  mac: number;
  mtu: number;
  /** Offloads on, and the kernel took USO: the TAP hands over UDP super-datagrams, and takes UDP_L4 super-frames
   * (both came in Linux 6.2), so the data plane may merge UDP datagrams for it. */
  uso?: boolean;
}

export class TapError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'TapError';
    this.code = code;
  }
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function checkIfname(ifname: string): void {
  if (!IFNAME.test(ifname) || ifname === '.' || ifname === '..') {
    throw new TapError('EINVAL', `invalid interface name ${JSON.stringify(ifname)}: 1-15 of letters, digits, _ . -`);
  }
}

/**
 * Opens a TAP device, sets MAC, MTU and alias, moves it into `netns` as `ifname`, and sets it up. The device is
 * not persistent: it lives as long as the fd, so if this process dies at any point before persistTap(), the
 * kernel deletes it. On any failure nothing is left behind (the fd is closed, which deletes the device wherever
 * it is).
 */
export async function createTap(o: TapOptions): Promise<Tap> {
  checkIfname(o.ifname);
  const n = native();
  const k = n.constants;
  const target = o.netns === undefined ? undefined : netnsPath(o.netns);
  const tmp = target ? `vx${randomBytes(4).toString('hex')}` : o.ifname;
  let flags = k.IFF_TAP | k.IFF_NO_PI;
  if (o.vnetHdr) flags |= k.IFF_VNET_HDR;
  let fd: number;
  try {
    [fd] = n.tapOpen(tmp, flags, null);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EUNKNOWN';
    if (code === 'EINVAL' || code === 'EBUSY')
      throw new TapError(
        'EEXIST',
        `cannot create TAP ${tmp}: an interface of that name exists (${code}); pick another name`,
      );
    if (code === 'EPERM' || code === 'EACCES')
      throw new TapError('EPERM', `cannot create TAP ${tmp}: needs root (CAP_NET_ADMIN)`);
    throw new TapError(code, `cannot create TAP ${tmp}: ${(e as Error).message}`);
  }
  let uso = false;
  try {
    if (o.vnetHdr) uso = setOffloads(fd);
    const link = ['link', 'set', 'dev', tmp, 'address', formatMac(o.mac), 'mtu', String(o.mtu)];
    if (o.alias) link.push('alias', o.alias);
    if (o.vnetHdr) {
      // super-frames no bigger than one UDP GSO send (see tapGsoMaxSegs); an iproute2 or kernel that cannot set
      // gso_max_segs only costs speed, so the TAP is then configured without it
      try {
        await ip([...link, 'gso_max_segs', String(tapGsoMaxSegs(o.mtu))]);
      } catch {
        await ip(link);
      }
    } else await ip(link);
    if (target) {
      try {
        await ip(['link', 'set', 'dev', tmp, 'netns', target, 'name', o.ifname]);
      } catch (e) {
        if (/exists/i.test((e as Error).message)) {
          throw new TapError('EEXIST', `${o.netns} already has an interface named ${o.ifname}; pick another name`);
        }
        throw e;
      }
    }
    await ip(['link', 'set', 'dev', o.ifname, 'up'], o.netns);
  } catch (e) {
    safe(() => n.closeFd(fd));
    if (e instanceof TapError) throw e;
    throw new TapError(
      'ESETUP',
      `cannot configure TAP ${o.ifname}${o.netns ? ` for ${o.netns}` : ''}: ${(e as Error).message}`,
    );
  }
  return { fd, ifname: o.ifname, netns: o.netns, mac: o.mac, mtu: o.mtu, uso };
}

/**
 * Sets gso_max_segs (tapGsoMaxSegs) on a TAP that already exists: one re-adopted after an agent restart may come
 * from an agent that did not set it, or from a different MTU. Best effort, like in createTap: without it the TAP
 * works, only slower. Returns whether it was set.
 */
export async function setTapGsoMaxSegs(ifname: string, mtu: number, netns?: string): Promise<boolean> {
  try {
    await ip(['link', 'set', 'dev', ifname, 'gso_max_segs', String(tapGsoMaxSegs(mtu))], netns);
    return true;
  } catch {
    return false;
  }
}

/**
 * The offloads vxtap handles: checksum offload, TCP segmentation over IPv4 and IPv6 (with ECN: a super-frame with
 * CWR, cut like Linux's tcp_gso_segment, CWR on the first segment only), and UDP segmentation (USO:
 * an application's UDP_SEGMENT sends reach us whole) where the kernel has it (Linux 6.2+; older ones refuse the
 * USO flags with EINVAL, and then get the rest). See src/vxlan/gso.ts. Returns whether USO was taken: the same
 * kernels take UDP_L4 super-frames written to a TAP (the data plane's UDP merging), older ones refuse them.
 */
export function setOffloads(fd: number): boolean {
  const k = native().constants;
  const base = k.TUN_F_CSUM | k.TUN_F_TSO4 | k.TUN_F_TSO6 | k.TUN_F_TSO_ECN;
  try {
    native().tapIoctl(fd, 1, base | k.TUN_F_USO4 | k.TUN_F_USO6);
    return true;
  } catch {
    native().tapIoctl(fd, 1, base); // a kernel without USO (EINVAL); any other error is thrown from here
    return false;
  }
}

/** Moves the device to another namespace (optionally renaming it). The fd stays valid. */
export async function moveTap(tap: Tap, toNetns: string, newName?: string): Promise<void> {
  if (newName) checkIfname(newName);
  const target = netnsPath(toNetns);
  await ip(['link', 'set', 'dev', tap.ifname, 'netns', target, ...(newName ? ['name', newName] : [])], tap.netns);
  tap.netns = toNetns;
  if (newName) tap.ifname = newName;
}

/** Makes the TAP outlive its fd (TUNSETPERSIST): from here on only deleteTap() or `ip link del` removes it. */
export function persistTap(tap: Tap): void {
  native().tapIoctl(tap.fd, 0, 1);
}

/** Makes the TAP non-persistent again: it now goes with its fd (when closed, or when this process dies). */
export function unpersistTap(tap: Tap): void {
  native().tapIoctl(tap.fd, 0, 0);
}

/** The alias that marks a TAP as the endpoint `name` of the agent of `host`. */
export function ownerMarker(host: string, name: string): string {
  return `${MARKER_PREFIX}${host}:${name}`;
}

/** The endpoint name in an alias made by ownerMarker(host, ...), or null for any other interface. */
export function ownedBy(alias: string | undefined, host: string): string | null {
  const p = `${MARKER_PREFIX}${host}:`;
  return alias?.startsWith(p) ? alias.slice(p.length) : null;
}

const MARKER_PREFIX = 'vxtap:';

/** Closes the fd; a non-persistent TAP disappears with it. Persistent ones are deleted explicitly. */
export async function closeTap(tap: Tap, opts: { persist?: boolean } = {}): Promise<void> {
  const n = native();
  if (opts.persist) {
    safe(() => n.tapIoctl(tap.fd, 0, 0));
  }
  safe(() => n.closeFd(tap.fd));
}

function safe(f: () => unknown): void {
  try {
    f();
  } catch {
    /* teardown: best effort, the caller reports the primary error */
  }
}
