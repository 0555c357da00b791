/** Decode failures. Thrown by the codec's decode() functions, never by the data plane's hot path. */
export type DecodeErrorCode = 'ERR_TRUNCATED' | 'ERR_MALFORMED';

export class DecodeError extends Error {
  readonly code: DecodeErrorCode;
  constructor(code: DecodeErrorCode, message: string) {
    super(message);
    this.name = 'DecodeError';
    this.code = code;
  }
}

/** Throws ERR_TRUNCATED unless buf holds `need` bytes from `offset` (before `end`). */
export function need(what: string, buf: Uint8Array, offset: number, count: number, end = buf.length): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + count > end || end > buf.length) {
    throw new DecodeError(
      'ERR_TRUNCATED',
      `${what}: need ${count} bytes at offset ${offset}, have ${Math.max(0, end - offset)}`,
    );
  }
}

/** The codec contract every header module follows (compact-encoding / dns-packet style). */
export interface Codec<T> {
  /** Bytes `encode(value)` will write. */
  encodingLength(value: T): number;
  /** Writes value at buf[offset..]; returns the number of bytes written. */
  encode(value: T, buf: Uint8Array, offset: number): number;
  /** Reads one value starting at buf[offset]; byte arrays in the result are views into buf, not copies. */
  decode(buf: Uint8Array, offset: number, end?: number): T;
}
