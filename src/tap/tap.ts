/**
 * TAP devices for endpoints. The agent opens the TAP inside the container's network namespace (the native call
 * enters it for the open only, on this thread), so the device is born where it lives and never has to be moved;
 * the fd keeps working from the agent's namespace. A device can also be created here and moved later
 * (moveTap), which is what Docker's Join wants. Closing a non-persistent TAP's last fd deletes the device.
 */
import { native } from '../sys/native.js';
import { ip, netnsPath } from '../sys/ip.js';
import { formatMac } from '../vxlan/mac.js';

export interface TapOptions {
  /** Interface name (<= 15 chars). */
  ifname: string;
  /** Network namespace (name or path) to create it in; the agent's own when undefined. */
  netns?: string;
  mac: number;
  mtu: number;
  /** Keep the device when the fd is closed (TUNSETPERSIST). */
  persist?: boolean;
  /** Open with IFF_VNET_HDR (offloads). */
  vnetHdr?: boolean;
}

export interface Tap {
  fd: number;
  ifname: string;
  netns: string | undefined;
  mac: number;
  mtu: number;
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

/** Opens a TAP device and sets MAC, MTU and up. On any failure nothing is left behind. */
export async function createTap(o: TapOptions): Promise<Tap> {
  checkIfname(o.ifname);
  const n = native();
  const k = n.constants;
  const path = o.netns === undefined ? null : netnsPath(o.netns);
  let flags = k.IFF_TAP | k.IFF_NO_PI;
  if (o.vnetHdr) flags |= k.IFF_VNET_HDR;
  let fd: number;
  try {
    [fd] = n.tapOpen(o.ifname, flags, path);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EUNKNOWN';
    if (code === 'EINVAL' || code === 'EBUSY')
      throw new TapError('EEXIST', `cannot create TAP ${o.ifname}${o.netns ? ` in ${o.netns}` : ''}: an interface of that name exists (${code}); pick another name`);
    if (code === 'EPERM' || code === 'EACCES') throw new TapError('EPERM', `cannot create TAP ${o.ifname}: needs root (CAP_NET_ADMIN)`);
    throw new TapError(code, `cannot create TAP ${o.ifname}: ${(e as Error).message}`);
  }
  try {
    if (o.persist) n.tapIoctl(fd, 0, 1);
    await ip(['link', 'set', 'dev', o.ifname, 'address', formatMac(o.mac), 'mtu', String(o.mtu), 'up'], o.netns);
  } catch (e) {
    if (o.persist) safe(() => n.tapIoctl(fd, 0, 0));
    safe(() => n.closeFd(fd));
    throw new TapError('ESETUP', `cannot configure TAP ${o.ifname}: ${(e as Error).message}`);
  }
  return { fd, ifname: o.ifname, netns: o.netns, mac: o.mac, mtu: o.mtu };
}

/** Moves the device to another namespace (optionally renaming it). The fd stays valid. */
export async function moveTap(tap: Tap, toNetns: string, newName?: string): Promise<void> {
  if (newName) checkIfname(newName);
  const target = netnsPath(toNetns);
  await ip(['link', 'set', 'dev', tap.ifname, 'netns', target, ...(newName ? ['name', newName] : [])], tap.netns);
  tap.netns = toNetns;
  if (newName) tap.ifname = newName;
}

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
