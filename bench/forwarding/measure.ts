/**
 * What the benchmark measures on a path, the same way on every path: TCP Gbit/s with 1 and 4 streams (iperf3);
 * 60-byte frames (trafgen) delivered per second at full rate and loss at half that rate; ping avg/p99 (iputils
 * ping, which busy-waits between echoes) and the sleeping pinger's avg/p50/p99 and slow share (bench/pinger.c),
 * after an unmeasured warm-up; CPU seconds per Gbit and CPU while pinging for userspace paths; and, separately,
 * the vxtap agents' memory under a long TCP load (soak).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { must, sh, sleep } from '../../test/helpers/topo.js';
import { buildTool, teardown, type Topo } from './topology.js';

export function progress(msg: string): void {
  process.stderr.write(`\r\x1b[K${msg}`);
}

function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime in clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

export interface Sample {
  tcp1: number; // Gbit/s
  tcp4: number;
  retrans1: number;
  pps60: number; // delivered 60-byte frames per second, generator at full rate
  loss60: number; // % of the frames trafgen sent at full rate that never reached the receiving container
  lossHalf: number; // the same at half the delivered rate (below saturation)
  senderDrops60: number; // frames the sending container's interface refused at full rate (its tx_dropped)
  senderRefused60: number; // those as % of what trafgen offered (sent + refused): back-pressure, not loss (see flood)
  senderRefusedHalf: number;
  pingAvg: number; // ms, NaN when no echo came back
  pingLoss: number; // % of iputils ping's echoes with no reply
  pingP99: number;
  sleepAvg: number; // ms, bench/pinger.c: the same schedule from a pinger that sleeps between echoes
  sleepP50: number;
  sleepP99: number;
  sleepSlow: number; // % of the sleeping pinger's replies that took over 1 ms (the kernel paths: none)
  sleepLoss: number; // % of the sleeping pinger's echoes with no reply
  cpuPerGbit: number; // CPU seconds per Gbit moved (userspace paths), NaN otherwise
  pingCores: number; // CPU the path's processes used during the ping phase, in cores (CPU s / s), NaN for kernel paths
}

export async function warm(t: Topo): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (sh(['ip', 'netns', 'exec', t.c2, 'ping', '-c', '1', '-W', '1', '198.19.1.1']).code === 0) return;
    await sleep(200);
  }
  throw new Error('path never came up (no ping reply in 20 s)');
}

async function iperf(t: Topo, T: number, args: string[]): Promise<Record<string, any>> {
  const srv = spawn('ip', ['netns', 'exec', t.c1, 'iperf3', '-s', '-1', '-B', '198.19.1.1'], { stdio: 'ignore' });
  await sleep(300);
  const r = sh(
    ['ip', 'netns', 'exec', t.c2, 'iperf3', '-c', '198.19.1.1', '-J', '-t', String(T), ...args],
    (T + 30) * 1000,
  );
  await new Promise((res) =>
    srv.exitCode !== null
      ? res(null)
      : (srv.once('exit', res),
        setTimeout(() => {
          try {
            process.kill(srv.pid!, 'SIGKILL');
          } catch {
            /* gone */
          }
        }, 5000)),
  );
  const j = JSON.parse(r.stdout || '{}');
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  return j;
}

function linkInfo(ns: string, dev: string): { mac: string; rx: number; tx: number; txDropped: number } {
  const l = JSON.parse(must(['ip', '-n', ns, '-j', '-s', 'link', 'show', 'dev', dev]))[0];
  return { mac: l.address, rx: l.stats64.rx.packets, tx: l.stats64.tx.packets, txDropped: l.stats64.tx.dropped };
}

const hexBytes = (xs: number[]) => xs.map((b) => `0x${b.toString(16).padStart(2, '0')}`).join(', ');

/**
 * 60-byte frames (Ethernet 14 + IPv4 20 + UDP 8 + 18 bytes of payload) from c2 (198.19.1.2) to c1 (198.19.1.1,
 * UDP port 9: discard) for T seconds with trafgen, at full rate or `rate` pps. "Sent" is what trafgen itself
 * reports having sent, "got" what c1's eth0 received: the same two counts on every path, so loss is every frame
 * the generator sent that did not arrive. What differs between paths is the sending interface: a TAP whose reader
 * (the forwarder) falls behind refuses frames (counted in its tx_dropped) and trafgen does not count them as sent
 * (measured: vxtap's TAP refused a million frames in a run whose loss was 0), as a full socket buffer pushes back on
 * an application; a veth takes every frame and the path behind it drops what it cannot carry, which is loss. The
 * refusals are reported next to the loss ("refused"). --no-sock-mem: trafgen leaves the host's socket memory
 * settings alone.
 */
async function flood(t: Topo, T: number, rate?: number): Promise<{ sent: number; got: number; senderDrops: number }> {
  const src = linkInfo(t.c2, 'eth0');
  const dst = linkInfo(t.c1, 'eth0');
  // on a routed path the frames go to the next hop's MAC (the host routes them on)
  const dstMac = t.c2NextHop ? linkInfo(...t.c2NextHop).mac : dst.mac;
  const mac = (m: string) => m.split(':').map((x) => parseInt(x, 16));
  const conf = join(t.dir, 'udp60.cfg');
  writeFileSync(
    conf,
    `{ ${hexBytes([...mac(dstMac), ...mac(src.mac), 0x08, 0x00])},
  0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, csumip(14, 33), 198, 19, 1, 2, 198, 19, 1, 1,
  0x30, 0x39, 0x00, 0x09, 0x00, 0x1a, 0x00, 0x00,
  fill(0x41, 18) }
`,
  );
  const r = sh(
    [
      'ip',
      'netns',
      'exec',
      t.c2,
      'timeout',
      '-s',
      'INT',
      String(T),
      'trafgen',
      '--dev',
      'eth0',
      '--conf',
      conf,
      '--cpus',
      '1',
      '--no-sock-mem',
      ...(rate ? ['-b', `${Math.round(rate)}pps`] : []),
    ],
    (T + 20) * 1000,
  );
  const out = /(\d+) packets outgoing/.exec(r.stdout + r.stderr);
  if (!out || (r.code !== 0 && r.code !== 124))
    throw new Error(`trafgen: ${(r.stderr || r.stdout).trim().slice(-300)}`);
  // frames still in flight: wait until the receiver's count stops moving (at most 5 s)
  let got = linkInfo(t.c1, 'eth0').rx;
  for (let i = 0; i < 50; i++) {
    await sleep(100);
    const now = linkInfo(t.c1, 'eth0').rx;
    if (now === got) break;
    got = now;
  }
  const src1 = linkInfo(t.c2, 'eth0');
  return { sent: Number(out[1]), got: got - dst.rx, senderDrops: src1.txDropped - src.txDropped };
}

/** Every measurement of one path, `T` seconds each. */
export async function measure(t: Topo, T: number): Promise<Sample> {
  const cpu0 = t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const j1 = await iperf(t, T, []);
  const cpu1 = t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const bytes1 = j1.end.sum_received.bytes as number;
  const j4 = await iperf(t, T, ['-P', '4']);
  const full = await flood(t, T);
  const pps60 = full.got / T;
  await sleep(1000); // let the full-rate run's queues drain before the run below saturation
  const half = await flood(t, T, pps60 / 2);
  // Unmeasured warm-up, the same for every path: 400 echoes per second of --time (2000 at 5 s), 0.5 ms apart.
  // A JIT-compiled forwarder meets ICMP here for the first time after the TCP and UDP phases; until V8 has
  // re-optimized its forwarding functions for it (a count of calls, not a time), the first thousand-odd echoes
  // run partly in baseline code, 1.5-2x slower (history.md entry 18). The rows below are the steady state, which
  // a long-running agent is in.
  sh(
    ['ip', 'netns', 'exec', t.c2, buildTool('pinger'), '198.19.1.1', String(Math.round(T * 400)), '500'],
    (T + 30) * 1000,
  );
  // one echo every 5 ms for T seconds (1000 at the default 5 s): enough samples that one stall does not make the p99
  const echoes = Math.round(T * 200);
  const cpuP0 = t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const tP0 = Date.now();
  const pr = sh(
    ['ip', 'netns', 'exec', t.c2, 'ping', '-n', '-c', String(echoes), '-i', '0.005', '-W', '1', '198.19.1.1'],
    (T + 30) * 1000,
  );
  const pingCores = t.cpuPids.length
    ? (t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0) - cpuP0) / ((Date.now() - tP0) / 1000)
    : NaN;
  const rtts = [...pr.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  // the same schedule again from a pinger that sleeps between echoes (iputils ping at -i 0.005 spins a CPU)
  const sp = sh(
    ['ip', 'netns', 'exec', t.c2, buildTool('pinger'), '198.19.1.1', String(Math.round(T * 200)), '5000'],
    (T + 30) * 1000,
  );
  const [spSent, spGot, spAvg, spP50, spP99, , spSlow] = sp.stdout.trim().split(/\s+/).map(Number);
  const spOk = sp.code === 0 && spGot > 0;
  const lossPct = (sent: number, got: number) => (sent > 0 ? (100 * Math.max(0, sent - got)) / sent : NaN);
  return {
    tcp1: j1.end.sum_received.bits_per_second / 1e9,
    tcp4: j4.end.sum_received.bits_per_second / 1e9,
    retrans1: j1.end.sum_sent.retransmits ?? 0,
    pps60,
    loss60: lossPct(full.sent, full.got),
    lossHalf: lossPct(half.sent, half.got),
    senderDrops60: full.senderDrops,
    senderRefused60: lossPct(full.sent + full.senderDrops, full.sent),
    senderRefusedHalf: lossPct(half.sent + half.senderDrops, half.sent),
    pingAvg: rtts.length ? rtts.reduce((s, x) => s + x, 0) / rtts.length : NaN,
    pingLoss: lossPct(echoes, rtts.length),
    pingP99: rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * 0.99))] ?? NaN,
    sleepAvg: spOk ? spAvg / 1000 : NaN,
    sleepP50: spOk ? spP50 / 1000 : NaN,
    sleepP99: spOk ? spP99 / 1000 : NaN,
    sleepSlow: spOk ? (100 * spSlow) / spGot : NaN,
    sleepLoss: sp.code === 0 ? lossPct(spSent, spGot) : NaN,
    cpuPerGbit: t.cpuPids.length ? (cpu1 - cpu0) / ((bytes1 * 8) / 1e9) : NaN,
    pingCores,
  };
}

/** The fields of a Sample, in the order the JSON summary lists them. */
export const KEYS: (keyof Sample)[] = [
  'tcp1',
  'tcp4',
  'pps60',
  'loss60',
  'lossHalf',
  'senderDrops60',
  'senderRefused60',
  'senderRefusedHalf',
  'pingAvg',
  'pingLoss',
  'pingP99',
  'sleepAvg',
  'sleepP50',
  'sleepP99',
  'sleepSlow',
  'sleepLoss',
  'cpuPerGbit',
  'pingCores',
  'retrans1',
];

/** Resident memory of each vxtap agent, sampled every second under full TCP load for SOAK seconds. */
export async function soak(
  vxtap: () => Promise<Topo>,
  SOAK: number,
): Promise<{
  seconds: number;
  agents: { start: number; end: number; max: number }[];
  gbit: number;
} | null> {
  const t = await vxtap();
  try {
    await warm(t);
    const srv = spawn('ip', ['netns', 'exec', t.c1, 'iperf3', '-s', '-1', '-B', '198.19.1.1'], { stdio: 'ignore' });
    t.procs.push(srv);
    await sleep(300);
    const cli = spawn('ip', ['netns', 'exec', t.c2, 'iperf3', '-c', '198.19.1.1', '-J', '-t', String(SOAK)], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    t.procs.push(cli);
    let out = '';
    cli.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const rss = (pid: number) =>
      Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
    const series: number[][] = t.cpuPids.map(() => []);
    const t0 = Date.now();
    while (cli.exitCode === null && Date.now() - t0 < (SOAK + 30) * 1000) {
      progress(
        `soak: ${Math.round((Date.now() - t0) / 1000)}/${SOAK} s under load, agent RSS ${t.cpuPids.map((p) => rss(p).toFixed(1)).join(' / ')} MB`,
      );
      t.cpuPids.forEach((p, i) => series[i].push(rss(p)));
      await sleep(1000);
    }
    const j = JSON.parse(out || '{}');
    // from 5 s in (after start-up allocations) to the end
    const agents = series.map((s) => ({
      start: s[Math.min(5, s.length - 1)],
      end: s[s.length - 1],
      max: Math.max(...s),
    }));
    return { seconds: SOAK, agents, gbit: (j.end?.sum_received?.bits_per_second ?? NaN) / 1e9 };
  } finally {
    await teardown(t);
    progress('');
  }
}
