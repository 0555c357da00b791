/**
 * The data plane's seam to the kernel: exactly the batched calls of the native addon (their signatures and
 * documentation are in src/sys/native.ts). `nativeIo()` is the real thing; test/helpers/fakeio.ts is an
 * in-memory TAP/UDP world with the same signatures, so the forwarding logic can be tested without root.
 */
import { native, type NativeAddon } from '../sys/native.js';

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

export type DataplaneIo = Pick<
  NativeAddon,
  'readBatch' | 'writeBatch' | 'recvBatch' | 'sendBatch' | 'pollStart' | 'pollStop'
>;

/** The AEAD batch calls (native/crypto.c) the data plane seals and opens encrypted networks' datagrams with. */
export type DataplaneAead = Pick<NativeAddon, 'aeadSeal' | 'aeadOpen'>;

export function nativeIo(): DataplaneIo {
  return native();
}
