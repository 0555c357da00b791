/**
 * Test hosts on one machine: "hosts" and "containers" are network namespaces, the underlay is a bridge in its own
 * namespace with a veth to each host (198.18.0.0/24), overlay addresses are 198.19.0.0/16. Every name carries a
 * per-run tag (vxt<pid><n>-...), every process is tracked by PID, and cleanup() deletes all of it; it is also
 * run on SIGINT/SIGTERM/exit so a failing or interrupted test leaves nothing behind.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { call } from '../../src/agent/client.js';
import { sleep, until } from './wait.js';
export { poll, sleep, until } from './wait.js';

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
export const CLI = join(ROOT, 'dist/src/cli/main.js');
export const TCPXFER = join(ROOT, 'dist/test/helpers/tcpxfer.js');

let counter = 0;
const live = new Set<Topo>();
function cleanupAll(): void {
  for (const t of live) t.cleanupSync();
}
process.once('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    cleanupAll();
    process.exit(130);
  });
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv synchronously with a timeout; never throws. */
export function sh(argv: string[], timeoutMs = 30_000): RunResult {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

/** Runs argv and throws with its stderr when it fails. */
export function must(argv: string[], timeoutMs = 30_000): string {
  const r = sh(argv, timeoutMs);
  if (r.code !== 0) throw new Error(`\`${argv.join(' ')}\` exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export interface Agent {
  host: string;
  socket: string;
  proc: ChildProcess;
  logFile: string;
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  /** Runs the vxtap CLI against this agent. */
  cli(args: string[]): RunResult;
}

/**
 * `vxtap agent` arguments for a test agent of `host` whose socket and state live in `dir`, plus `extra`. Networks
 * made without --subnet come from the test range, never the agent's default pool (10.0.0.0/8), unless `extra`
 * gives a --pool.
 */
export function agentArgs(dir: string, host: { ns: string; addr: string }, kv: string, extra: string[] = []): string[] {
  return [
    'agent',
    '--vtep',
    host.addr,
    '--host',
    host.ns,
    '--socket',
    join(dir, `${host.ns}.sock`),
    '--kv',
    kv,
    '--state-dir',
    join(dir, 'state'),
    ...(extra.includes('--pool') ? [] : ['--pool', '198.19.0.0/16']),
    ...(extra.includes('--pool6') ? [] : ['--pool6', '2001:db8:ff00::/48']), // documentation prefix only
    ...extra,
  ];
}

export class Topo {
  readonly tag: string;
  readonly dir: string;
  private readonly netns: string[] = [];
  private readonly procs: ChildProcess[] = [];
  private hosts = 0;
  private underlay: string;
  private serviceUp = false;
  private service6Up = false;
  private readonly hooks: (() => Promise<void>)[] = [];
  private readonly syncHooks: (() => void)[] = [];

  constructor() {
    this.tag = `vxt${process.pid % 100000}${counter++}`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.tag}-`));
    live.add(this);
    this.underlay = this.ns('sw');
    must(['ip', '-n', this.underlay, 'link', 'add', 'br0', 'type', 'bridge']);
    must(['ip', '-n', this.underlay, 'link', 'set', 'br0', 'up']);
  }

  /**
   * Creates a namespace named TAG-name with lo up; returns its name. `quiet` turns IPv6 off for interfaces that
   * arrive later, so no router solicitations or MLD reports flood the overlay while a test counts datagrams.
   */
  ns(name: string, opts: { quiet?: boolean } = {}): string {
    const full = `${this.tag}-${name}`;
    must(['ip', 'netns', 'add', full]);
    this.netns.push(full);
    must(['ip', '-n', full, 'link', 'set', 'lo', 'up']);
    if (opts.quiet) {
      for (const k of ['all', 'default'])
        must(['ip', 'netns', 'exec', full, 'sysctl', '-qw', `net.ipv6.conf.${k}.disable_ipv6=1`]);
    }
    return full;
  }

  /**
   * A host namespace on the underlay with address 198.18.0.N/24 and, if asked, 2001:db8:18::N/64 (nodad: usable at
   * once); returns its netns, addresses and underlay ifname.
   */
  host(name: string, opts: { ipv6?: boolean } = {}): { ns: string; addr: string; addr6: string; ifname: string } {
    const n = ++this.hosts;
    const ns = this.ns(name);
    const addr = `198.18.0.${n}`;
    const addr6 = opts.ipv6 ? `2001:db8:18::${n.toString(16)}` : '';
    const a = `${this.tag}u${n}`; // <= 15 chars
    const b = `${this.tag}s${n}`;
    must(['ip', 'link', 'add', a, 'netns', ns, 'type', 'veth', 'peer', 'name', b, 'netns', this.underlay]);
    must(['ip', '-n', this.underlay, 'link', 'set', b, 'master', 'br0', 'up']);
    must(['ip', '-n', ns, 'addr', 'add', `${addr}/24`, 'dev', a]);
    if (addr6) must(['ip', '-n', ns, 'addr', 'add', `${addr6}/64`, 'dev', a, 'nodad']);
    must(['ip', '-n', ns, 'link', 'set', a, 'up']);
    return { ns, addr, addr6, ifname: a };
  }

  /**
   * An address on the underlay itself (198.18.0.250, or 2001:db8:18::250 with `ipv6`, on the switch's bridge), for
   * a shared service like etcd.
   */
  service(opts: { ipv6?: boolean } = {}): { netns: string; addr: string } {
    if (!this.serviceUp) {
      must(['ip', '-n', this.underlay, 'addr', 'add', '198.18.0.250/24', 'dev', 'br0']);
      this.serviceUp = true;
    }
    if (opts.ipv6 && !this.service6Up) {
      must(['ip', '-n', this.underlay, 'addr', 'add', '2001:db8:18::250/64', 'dev', 'br0', 'nodad']);
      this.service6Up = true;
    }
    return { netns: this.underlay, addr: opts.ipv6 ? '2001:db8:18::250' : '198.18.0.250' };
  }

  /**
   * Starts `vxtap agent` inside a host namespace and waits for its control socket. By default every agent of
   * this topology shares one embedded store in the test's directory; `kv` points elsewhere (etcd://...).
   */
  async agent(
    host: { ns: string; addr: string },
    opts: {
      kv?: string;
      extra?: string[];
      /** a command the agent runs under (e.g. test/helpers/noring) */
      wrap?: string[];
      /** node's own options (default --no-memory-reducer, as the vxtap command's #! line has it) */
      nodeArgs?: string[];
    } = {},
  ): Promise<Agent> {
    const socket = join(this.dir, `${host.ns}.sock`);
    const logFile = join(this.dir, `${host.ns}.log`);
    const argv = agentArgs(this.dir, host, opts.kv ?? join(this.dir, 'store.db'), opts.extra);
    rmSync(socket, { force: true }); // a killed agent leaves its socket: wait for the new one, not the old
    const proc = spawn(
      'sh',
      [
        '-c',
        `exec ip netns exec ${host.ns} ${(opts.wrap ?? []).join(' ')} node ${(opts.nodeArgs ?? ['--no-memory-reducer']).join(' ')} ${CLI} ${argv.join(' ')} 2>>${logFile} >>${logFile}`,
      ],
      {
        stdio: 'ignore',
      },
    );
    this.procs.push(proc);
    return agentHandle(host.ns, socket, proc, logFile);
  }

  /** Stops an agent by PID (SIGTERM, then SIGKILL after 5 s). */
  async stopAgent(a: Agent): Promise<void> {
    await stopProc(a.proc);
  }

  /** Starts a background process we own (tracked by PID, killed at cleanup). */
  spawn(argv: string[]): ChildProcess {
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs.push(p);
    return p;
  }

  /** Tracks a process started elsewhere (killed at cleanup like our own). */
  own(p: ChildProcess): void {
    this.procs.push(p);
  }

  /** Runs `fn` at cleanup, before processes are stopped and namespaces deleted (latest first); `sync` on exit. */
  onCleanup(fn: () => Promise<void>, sync?: () => void): void {
    this.hooks.push(fn);
    if (sync) this.syncHooks.push(sync);
  }

  async cleanup(): Promise<void> {
    for (const h of this.hooks.reverse()) await h().catch((e) => console.error('cleanup hook failed:', e));
    this.hooks.length = 0;
    this.syncHooks.length = 0;
    await Promise.all(this.procs.map(stopProc));
    this.cleanupSync();
  }

  cleanupSync(): void {
    for (const h of this.syncHooks.reverse()) {
      try {
        h();
      } catch {
        /* best effort on exit */
      }
    }
    this.syncHooks.length = 0;
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null && p.pid) safeKill(p.pid, 'SIGKILL');
    for (const ns of this.netns.reverse()) sh(['ip', 'netns', 'del', ns]);
    this.netns.length = 0;
    // VXTAP_TEST_LOGS=DIR keeps the agents' logs of every topology there (for a failure to be read afterwards)
    const keep = process.env.VXTAP_TEST_LOGS;
    if (keep) {
      // the .log files of the topology and of its dockerds (never their data roots)
      const depth = (f: string) => relative(this.dir, f).split('/').length;
      cpSync(this.dir, join(keep, basename(this.dir)), {
        recursive: true,
        filter: (f) => f.endsWith('.log') || (depth(f) <= 2 && existsSync(f) && statSync(f).isDirectory()),
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }
}

/**
 * Waits until a just-spawned agent serves its control socket (and `alsoReady`, if given), then returns the
 * handle tests use; throws with the agent's log if it exits or takes over 20 s.
 */
export async function agentHandle(
  host: string,
  socket: string,
  proc: ChildProcess,
  logFile: string,
  alsoReady: () => boolean = () => true,
): Promise<Agent> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (
      existsSync(socket) &&
      alsoReady() &&
      (await call(socket, 'GET', '/v1/status').then(
        () => true,
        () => false,
      ))
    )
      break;
    if (proc.exitCode !== null || Date.now() > deadline) {
      throw new Error(
        `agent in ${host} did not start: ${existsSync(logFile) ? readFileSync(logFile, 'utf8') : '(no log)'}`,
      );
    }
    await sleep(20);
  }
  return {
    host,
    socket,
    proc,
    logFile,
    call: (method, path, body) => call(socket, method, path, body),
    cli: (args) => sh(['node', CLI, ...args, '--socket', socket]),
  };
}

/** Sends `sig` to a process we started; a process already gone is fine. */
export function safeKill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

async function stopProc(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null || !p.pid) return;
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  safeKill(p.pid, 'SIGTERM');
  const t = setTimeout(() => p.pid && safeKill(p.pid, 'SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

/** Byte-exact TCP transfer from one namespace to another; returns what each side counted and hashed. */
export async function tcpTransfer(
  topo: Topo,
  fromNs: string,
  toNs: string,
  toAddr: string,
  bytes: number,
): Promise<{ sent: { bytes: number; sha256: string }; got: { bytes: number; sha256: string } }> {
  const srv = topo.spawn(['ip', 'netns', 'exec', toNs, 'node', TCPXFER, 'server', toAddr, '5201']);
  let out = '';
  srv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((res, rej) => {
    srv.stderr!.once('data', () => res());
    srv.once('exit', (c) => rej(new Error(`tcpxfer server exited ${c}`)));
  });
  const cli = sh(['ip', 'netns', 'exec', fromNs, 'node', TCPXFER, 'client', toAddr, '5201', String(bytes)], 60_000);
  if (cli.code !== 0) throw new Error(`tcpxfer client failed: ${cli.stderr}`);
  if (srv.exitCode === null) await new Promise((res) => srv.once('exit', res));
  return { sent: JSON.parse(cli.stdout), got: JSON.parse(out) };
}

export interface PingResult {
  transmitted: number;
  received: number;
  avgMs: number;
}

/** ping from a namespace; count and per-reply timeout bounded. */
export function ping(ns: string, dst: string, count = 3, intervalS = 0.2): PingResult {
  const r = sh(
    ['ip', 'netns', 'exec', ns, 'ping', '-n', '-q', '-c', String(count), '-i', String(intervalS), '-W', '1', dst],
    30_000,
  );
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  const avg = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
  return { transmitted: m ? Number(m[1]) : 0, received: m ? Number(m[2]) : 0, avgMs: avg ? Number(avg[1]) : NaN };
}

/** Pings once a second-ish until one reply arrives (links drop packets for ~1 s after coming up). */
export async function waitPing(ns: string, dst: string, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (ping(ns, dst, 1).received === 1) return true;
    await sleep(100);
  }
  return false;
}

/** Waits until agent `a` lists network `name` (it learns networks from the store's watch); throws if it never does. */
export async function seesNetwork(a: Agent, name: string, timeoutMs = 10_000): Promise<void> {
  const ok = await until(
    async () => (await a.call<{ name: string }[]>('GET', '/v1/networks')).some((n) => n.name === name),
    timeoutMs,
    20,
  );
  if (!ok) throw new Error(`the agent at ${a.socket} did not see network ${name} within ${timeoutMs} ms`);
}

/** Waits until something in namespace `ns` listens on TCP `port` (a server just spawned); throws if nothing does. */
export async function listening(ns: string, port: number, timeoutMs = 10_000): Promise<void> {
  const ok = await until(
    () => sh(['ip', 'netns', 'exec', ns, 'ss', '-Hltn', `sport = :${port}`]).stdout.trim() !== '',
    timeoutMs,
  );
  if (!ok) throw new Error(`nothing listens on TCP ${port} in ${ns} after ${timeoutMs} ms`);
}
