/**
 * Typed view of the native addon (native/, see vxtap.h): the syscalls (TAP, sockets, batched I/O through io_uring or
 * plain calls, polling) and the per-byte kernels (sums, TSO, GRO; see src/dataplane/kernels.ts). Every argument
 * is validated here or by the caller before it crosses, and errors come back as Error objects whose `code` is
 * the errno name.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeConstants {
  IFF_TAP: number;
  IFF_NO_PI: number;
  IFF_VNET_HDR: number;
  IFF_MULTI_QUEUE: number;
  TUN_F_CSUM: number;
  TUN_F_TSO4: number;
  TUN_F_TSO6: number;
  TUN_F_TSO_ECN: number;
  TUN_F_USO4: number;
  TUN_F_USO6: number;
  MAX_BATCH: number;
  SEND_STRIDE: number;
  WRITE_STRIDE: number;
  EAGAIN: number;
  EMSGSIZE: number;
  ENOBUFS: number;
  VTEP6_MAX: number;
  AEAD_TAG: number;
  AEAD_AAD: number;
  AEAD_STRIDE: number;
  EBADMSG: number;
}

export type PollHandle = { readonly __brand: 'PollHandle' };

export interface NativeAddon {
  tapOpen(name: string, flags: number, netnsPath: string | null): [fd: number, ifname: string];
  /** which: 0 TUNSETPERSIST, 1 TUNSETOFFLOAD, 2 TUNSETVNETHDRSZ */
  tapIoctl(fd: number, which: 0 | 1 | 2, value: number): number;
  closeFd(fd: number): number;
  /** Ones'-complement sum of buf[start..end) as big-endian words, folded, plus initial (as src/vxlan/checksum.ts sum16). */
  sum16(buf: Uint8Array, start: number, end: number, initial?: number): number;
  /** TSO of a super-frame inside one buffer, VXLAN headers included (as src/vxlan/gso.ts tsoSplitJs). */
  tsoSplit(
    buf: Uint8Array,
    off: number,
    len: number,
    mss: number,
    dstOff: number,
    prefix: number,
    vni: number,
    out: Int32Array,
  ): number;
  /** Checksum check, flow compare and payload copy of one GRO segment (as src/dataplane/gro.ts groSegmentJs). */
  groSegment(buf: Uint8Array, off: number, len: number, hdrs: number, ref: number, dst: number): number;
  /** A run of GRO appends from one UDP GRO buffer (as src/dataplane/gro.ts groRunJs). */
  groRun(
    buf: Uint8Array,
    first: number,
    from: number,
    end: number,
    step: number,
    ref: number,
    hdrs: number,
    state: Int32Array,
  ): number;
  /** A UDP socket bound to `vtep` (an IPv4 address, or an IPv6 VTEP id registered with vtep6Set). */
  udpOpen(vtep: number, port: number, rcvbuf: number, sndbuf: number, gro: boolean): [fd: number, port: number];
  /** AES-256-GCM key slots for encrypted networks (native/crypto.c): a 32-byte key and the nonce's 4-byte salt. */
  aeadKey(slot: number, key: Uint8Array, salt: Uint8Array): number;
  aeadDrop(slot: number): number;
  /** Seal / open datagrams in place, descriptors [off, len, slot]; len is updated, or -errno for a failed one. */
  aeadSeal(arena: Uint8Array, descs: Int32Array, count: number): number;
  aeadOpen(arena: Uint8Array, descs: Int32Array, count: number): number;
  /** Registers an IPv6 VTEP address (16 bytes) under its id (src/common/vtep.ts). */
  vtep6Set(id: number, addr: Uint8Array): number;
  sockInfo(fd: number): [rcvbuf: number, sndbuf: number];
  readBatch(
    fd: number,
    arena: Uint8Array,
    slotSize: number,
    offset: number,
    maxCount: number,
    lens: Int32Array,
  ): number;
  writeBatch(arena: Uint8Array, descs: Int32Array, count: number): number;
  recvBatch(
    fd: number,
    arena: Uint8Array,
    slotSize: number,
    offset: number,
    maxCount: number,
    lens: Int32Array,
    addrs: Uint32Array,
    gsoSizes: Int32Array | null,
  ): number;
  sendBatch(fds: Int32Array, arena: Uint8Array, descs: Int32Array, count: number): number;
  pollStart(fd: number, events: number, cb: (status: number, events: number) => void): PollHandle;
  pollUpdate(handle: PollHandle, events: number): number;
  pollStop(handle: PollHandle): number;
  /** Sets the process-wide busy-poll window in microseconds (0: off; omit to only read) and returns the counters
   * so far: spins that found work, nanoseconds spent spinning. */
  busyPoll(windowUs?: number): [hits: number, spinNs: number];
  /** readBatch/writeBatch through one io_uring submission per batch: "on" or "off: why"; `true` switches it off
   * for the process, `false` back on if it was switched off that way. Also the io_uring_enter calls and the
   * requests they carried, and the readBatch calls that began with plain reads (the last call on that fd found
   * at most one frame: sparse traffic), whatever the status. */
  ioUring(disable?: boolean): [status: string, enters: number, ops: number, singleReads: number];
  /** sendBatch's coalescing so far (this process): sends that carried 2+ datagrams, and those datagrams. */
  coalesceStats(): [messages: number, datagrams: number];
  constants: NativeConstants;
}

/** An error from a syscall: `code` is the errno name (e.g. 'EPERM'). */
export interface SysError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

export function isSysError(e: unknown, code?: string): e is SysError {
  return (
    e instanceof Error &&
    typeof (e as SysError).code === 'string' &&
    (code === undefined || (e as SysError).code === code)
  );
}

let cached: NativeAddon | undefined;

/** Finds build/Release/vxtap_native.node from src/sys or dist/src/sys. */
export function native(): NativeAddon {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [
    resolve(here, '../../build/Release/vxtap_native.node'),
    resolve(here, '../../../build/Release/vxtap_native.node'),
  ];
  const path = candidates.find((p) => existsSync(p));
  if (!path) {
    throw new Error(
      `vxtap native addon not built (looked in ${candidates.join(', ')}); run \`npm install\` or \`npm run build:native\` (needs python3, make, g++)`,
    );
  }
  const require = createRequire(import.meta.url);
  cached = require(join(path)) as NativeAddon;
  return cached;
}
