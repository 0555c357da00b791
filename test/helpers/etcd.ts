/** A real etcd server on loopback for tests: random free ports, a temp data dir, stopped by PID. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';

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

export async function startEtcd(): Promise<EtcdServer> {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-etcd-'));
  const client = await freePort();
  const peer = await freePort();
  const endpoint = `127.0.0.1:${client}`;
  const args = [
    '--name', 'vxt', '--data-dir', join(dir, 'data'),
    '--listen-client-urls', `http://${endpoint}`, '--advertise-client-urls', `http://${endpoint}`,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `vxt=http://127.0.0.1:${peer}`, '--log-level', 'error',
  ];
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
      srv.proc = spawn('etcd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      await ready(endpoint, srv.proc);
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

async function ready(endpoint: string, proc: ChildProcess): Promise<void> {
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
  const c = new Etcd3({ hosts: `http://${endpoint}`, dialTimeout: 500 });
  try {
    for (let i = 0; i < 100; i++) {
      if (proc.exitCode !== null) throw new Error(`etcd exited ${proc.exitCode}: ${err}`);
      try {
        await c.get('probe').string();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`etcd on ${endpoint} did not become ready: ${err}`);
  } finally {
    c.close();
  }
}
