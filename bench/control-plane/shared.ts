/**
 * What the two control-plane benchmarks (bench/control-plane.ts, bench/control-plane-scale.ts) share: percentiles,
 * a process's CPU and memory from /proc, a fast ping series, and an etcd on the test underlay that this process
 * (in the root namespace) reaches too.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { startEtcd, type EtcdServer } from '../../test/helpers/etcd.js';
import { must, type Topo } from '../../test/helpers/topo.js';

/** The p-th percentile (nearest rank); NaN for no values. */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
}

/** CPU seconds (user + system) a process has used. */
export function cpuSec(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** Resident memory of a process, MB. */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Pings `ip` from `ns` every 2 ms for `seconds`: the round-trip times in ms (one per reply), and how many were sent. */
export function pingSeries(
  ns: string,
  ip: string,
  seconds: number,
  /** a command to run the pinger under (taskset -c LIST, say) */
  wrap: string[] = [],
): Promise<{ rtts: number[]; sent: number }> {
  return new Promise((res) => {
    const argv = [
      ...wrap,
      'ip',
      'netns',
      'exec',
      ns,
      'ping',
      '-n',
      '-i',
      '0.002',
      '-W',
      '1',
      '-w',
      String(seconds),
      ip,
    ];
    const p = spawn(argv[0], argv.slice(1), {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.once('exit', () =>
      res({
        rtts: [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])),
        sent: Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? 0),
      }),
    );
  });
}

/**
 * etcd on the topology's underlay (where the agents' host namespaces reach it), and a veth from the root
 * namespace into the switch so this process reaches it as well (198.18.0.249). The veth goes at topo.cleanup();
 * stop etcd before that.
 */
export async function underlayEtcd(topo: Topo): Promise<EtcdServer> {
  const etcd = await startEtcd(topo.service());
  const [a, b] = [`${topo.tag}ra`, `${topo.tag}rb`];
  topo.onCleanup(async () => void must(['sh', '-c', `ip link del ${a} 2>/dev/null || true`]));
  must(['ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', topo.service().netns]);
  must(['ip', 'addr', 'add', '198.18.0.249/24', 'dev', a]);
  must(['ip', 'link', 'set', a, 'up']);
  must(['ip', '-n', topo.service().netns, 'link', 'set', b, 'master', 'br0', 'up']);
  return etcd;
}
