/** A real etcd server on loopback for tests: random free ports, a temp data dir, stopped by PID. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export interface EtcdServer {
  endpoint: string; // 127.0.0.1:PORT
  proc: ChildProcess;
  /** SIGSTOP / SIGCONT: an etcd that stops answering without closing connections (the nastier outage). */
  pause(): void;
  resume(): void;
  /** Stops it for good (SIGTERM by PID, then SIGKILL) and removes its data unless keepData. */
  stop(keepData?: boolean): Promise<void>;
  /** Starts it again on the same ports and data (after stop(true)). */
  restart(): Promise<void>;
}

/**
 * Starts etcd on loopback, or inside a test namespace on one of its addresses (`at`), so agents in host
 * namespaces reach it over the underlay like a real cluster's etcd.
 */
export async function startEtcd(
  at?: { netns: string; addr: string },
  /** serve clients over TLS with this certificate and key, and require client certificates signed by `ca` */
  tls?: { cert: string; key: string; ca: string },
): Promise<EtcdServer> {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-etcd-'));
  const host = at ? (at.addr.includes(':') ? `[${at.addr}]` : at.addr) : '127.0.0.1'; // IPv6 in URLs: brackets
  const client = at ? 2379 : await freePort();
  const peer = at ? 2380 : await freePort();
  const endpoint = `${host}:${client}`;
  const args = [
    '--name',
    'vxt',
    '--data-dir',
    join(dir, 'data'),
    '--listen-client-urls',
    `${tls ? 'https' : 'http'}://${endpoint}`,
    '--advertise-client-urls',
    `${tls ? 'https' : 'http'}://${endpoint}`,
    ...(tls ? ['--cert-file', tls.cert, '--key-file', tls.key, '--trusted-ca-file', tls.ca, '--client-cert-auth'] : []),
    '--listen-peer-urls',
    `http://${host}:${peer}`,
    '--initial-advertise-peer-urls',
    `http://${host}:${peer}`,
    '--initial-cluster',
    `vxt=http://${host}:${peer}`,
    '--log-level',
    'info',
  ];
  const argv = at ? ['ip', 'netns', 'exec', at.netns, 'etcd', ...args] : ['etcd', ...args];
  const srv: EtcdServer = {
    endpoint,
    proc: null as unknown as ChildProcess,
    pause: () => srv.proc.pid && process.kill(srv.proc.pid, 'SIGSTOP'),
    resume: () => srv.proc.pid && process.kill(srv.proc.pid, 'SIGCONT'),
    async stop(keepData = false) {
      const p = srv.proc;
      if (p.exitCode === null && p.signalCode === null && p.pid) {
        const done = new Promise((r) => p.once('exit', r));
        try {
          process.kill(p.pid, 'SIGCONT');
          process.kill(p.pid, 'SIGTERM');
        } catch {
          /* gone */
        }
        const t = setTimeout(() => p.pid && process.kill(p.pid, 'SIGKILL'), 5000);
        await done;
        clearTimeout(t);
      }
      if (!keepData) rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      srv.proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
      await ready(srv.proc);
    },
  };
  await srv.restart();
  process.once('exit', () => {
    if (srv.proc.exitCode === null && srv.proc.pid) {
      try {
        process.kill(srv.proc.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return srv;
}

/** Waits for etcd to log that it serves clients (works wherever it runs, even in another namespace). */
async function ready(proc: ChildProcess): Promise<void> {
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`etcd did not become ready in 15 s: ${err.slice(-1500)}`)), 15_000);
    proc.stderr?.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-20000);
      if (/ready to serve client requests/.test(err)) {
        clearTimeout(t);
        resolve();
      }
    });
    proc.once('exit', (c) => {
      clearTimeout(t);
      reject(new Error(`etcd exited ${c}: ${err.slice(-1500)}`));
    });
  });
  proc.stderr?.removeAllListeners('data');
  proc.stderr?.resume();
}
