/**
 * Waiting on a condition instead of sleeping a fixed time: a test that sleeps passes or fails with the machine's
 * load; one that polls the thing it needs is as fast as the system and fails only when the condition never holds.
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Polled<T> {
  /** the last value read */
  v: T;
  /** whether `ok(v)` held before the time ran out */
  ok: boolean;
  /** how long it took */
  ms: number;
}

/** Reads `f` every `step` ms until `ok` accepts its value or `ms` pass. Never throws on a timeout: check `.ok`. */
export async function poll<T>(
  f: () => T | Promise<T>,
  ok: (v: T) => boolean,
  ms: number,
  step = 20,
): Promise<Polled<T>> {
  const t0 = Date.now();
  let v = await f();
  while (!ok(v)) {
    if (Date.now() - t0 > ms) return { v, ok: false, ms: Date.now() - t0 };
    await sleep(step);
    v = await f();
  }
  return { v, ok: true, ms: Date.now() - t0 };
}

/** Like `poll` for a yes/no condition: true once `f` says so, false if `ms` pass first. */
export async function until(f: () => boolean | Promise<boolean>, ms: number, step = 50): Promise<boolean> {
  return (await poll(f, (x) => x, ms, step)).ok;
}
