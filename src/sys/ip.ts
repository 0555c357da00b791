/**
 * Thin wrappers over iproute2 (`ip`), the tool every network engineer already reads. Namespaces are given by
 * name (/run/netns/NAME, as `ip netns add` makes) or by absolute path (a Docker sandbox key); commands run inside
 * one through `ip -n NAME` or `nsenter --net=PATH`.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export class CommandError extends Error {
  readonly code = 'ECOMMAND';
  readonly argv: string[];
  readonly stderr: string;
  constructor(argv: string[], stderr: string, message?: string) {
    super(message ?? `\`${argv.join(' ')}\` failed: ${stderr.trim() || 'no output'}`);
    this.name = 'CommandError';
    this.argv = argv;
    this.stderr = stderr;
  }
}

const NETNS_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** The path of a network namespace given by name or path; throws when it does not exist. */
export function netnsPath(ns: string): string {
  const path = ns.startsWith('/') ? ns : NETNS_NAME.test(ns) ? `/run/netns/${ns}` : '';
  if (!path)
    throw new TypeError(
      `invalid network namespace ${JSON.stringify(ns)}: give a name from \`ip netns list\` or an absolute path`,
    );
  if (!existsSync(path))
    throw new TypeError(
      `network namespace ${JSON.stringify(ns)} does not exist (${path}); create it with \`ip netns add\``,
    );
  return path;
}

/** argv prefix that runs a command inside `ns` (or here when ns is undefined). */
export function inNetns(ns: string | undefined, argv: string[]): string[] {
  if (ns === undefined) return argv;
  const path = netnsPath(ns);
  return ['nsenter', `--net=${path}`, ...argv];
}

export async function exec(argv: string[], timeoutMs = 10_000): Promise<string> {
  try {
    const { stdout } = await run(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 8 << 20 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message?: string; code?: string | number };
    if (err.code === 'ENOENT')
      throw new CommandError(argv, '', `\`${argv[0]}\` not found: install iproute2 / util-linux`);
    throw new CommandError(argv, err.stderr ?? err.message ?? '');
  }
}

/** Runs `ip ARGS` in `ns` (by name or path) or in the current namespace. */
export function ip(args: string[], ns?: string): Promise<string> {
  return exec(inNetns(ns, ['ip', ...args]));
}

/** `ip -j` output parsed. */
export async function ipJson<T = unknown>(args: string[], ns?: string): Promise<T> {
  const out = await ip(['-j', ...args], ns);
  return (out.trim() ? JSON.parse(out) : []) as T;
}

/** True when link `ifname` exists in `ns`. */
export async function linkExists(ifname: string, ns?: string): Promise<boolean> {
  try {
    await ip(['link', 'show', 'dev', ifname], ns);
    return true;
  } catch {
    return false;
  }
}
