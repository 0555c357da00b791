/**
 * The data plane's seam to the kernel: exactly the batched calls of the native addon. `nativeIo()` is the real
 * thing; test/helpers/fakeio.ts is an in-memory TAP/UDP world with the same signatures, so the forwarding logic
 * can be tested without root.
 */
import { native, type PollHandle } from '../sys/native.js';

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

export interface DataplaneIo {
  readBatch(fd: number, arena: Uint8Array, slotSize: number, offset: number, maxCount: number, lens: Int32Array): number;
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
  pollStop(handle: PollHandle): number;
}

export function nativeIo(): DataplaneIo {
  return native();
}
