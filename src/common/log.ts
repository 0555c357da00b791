/**
 * Structured logs: pino, one JSON object per line on stderr. The Logger interface keeps call sites free of
 * pino's argument order (message first, fields second). Per-packet events are never logged one by one: the
 * agent reports drop counter deltas at most once per interval (see Agent.reportDrops).
 */
import pino from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

function clean(fields?: Record<string, unknown>): Record<string, unknown> {
  if (!fields) return {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields))
    out[k] = v instanceof Error ? { message: v.message, code: (v as { code?: unknown }).code } : v;
  return out;
}

export function createLogger(
  opts: { level?: Level; name?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const p = pino(
    { name: opts.name ?? 'vxtap', level: opts.level ?? 'info', timestamp: pino.stdTimeFunctions.isoTime },
    opts.destination ?? pino.destination(2),
  );
  return {
    debug: (m, f) => p.debug(clean(f), m),
    info: (m, f) => p.info(clean(f), m),
    warn: (m, f) => p.warn(clean(f), m),
    error: (m, f) => p.error(clean(f), m),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * A warning that may repeat (a store that keeps failing): logged at once, then at most once per interval, which
 * doubles up to `maxMs` while it keeps coming; each line says how many were held back. Quiet for `maxMs`, it starts
 * again from `firstMs`.
 */
export function throttled(
  log: Logger,
  msg: string,
  firstMs = 1000,
  maxMs = 60_000,
  now: () => number = Date.now,
): (fields?: Record<string, unknown>) => void {
  let next = 0;
  let interval = firstMs;
  let held = 0;
  let last = -Infinity;
  return (fields) => {
    const t = now();
    if (t - last > maxMs) interval = firstMs;
    last = t;
    if (t < next) {
      held++;
      return;
    }
    log.warn(msg, held ? { ...fields, repeated: held } : fields);
    held = 0;
    next = t + interval;
    interval = Math.min(interval * 2, maxMs);
  };
}
