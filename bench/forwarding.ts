/**
 * The side-by-side forwarding benchmark. Every path gets the same topology, built fresh: two "hosts" (netns)
 * joined by a direct veth underlay (MTU 1500, 198.18.0.1/.2), one "container" per host (MTU 1450,
 * 198.19.1.1/.2). Paths, measured in ONE run:
 *
 *   direct   a veth straight between the two containers: no overlay (the ceiling)
 *   kernel   Linux VXLAN: container veth -> bridge -> vxlan0 (VNI 42, port 4789) on each host (the reference)
 *   tinc     tinc 1.0 in switch mode, Cipher/Digest none, over UDP (a userspace C L2 overlay; --peers)
 *   openvpn  OpenVPN 2.6 TAP bridged, no crypto (another userspace C L2 overlay; --peers)
 *   floor    bench/floor.c: a TAP in each container and a 60-line C forwarder per host, one frame per syscall,
 *            sleeping in poll() between packets, no checks or tables: the least any user-space forwarder that
 *            sleeps between packets pays here (a reference for vxtap's added latency, not an overlay)
 *   floor-busy  the same forwarder with --spin: it never sleeps, polling with a zero timeout and yielding the CPU
 *            between polls (the loop of vxtap's --busy-poll): the reference for the vxtap-busy row
 *   vxtap    one vxtap agent per host on a shared embedded store
 *   vxtap-busy  the same with `--busy-poll 20000` (--busy-window US to change it): each agent stays awake
 *            (polling, yielding the CPU) for 20 ms after its last packet instead of sleeping, longer than the 5 ms
 *            between pings (opt-in: it keeps a CPU busy)
 *
 * Each measured: TCP Gbit/s with 1 and 4 streams (iperf3); 60-byte frames (trafgen from netsniff-ng, one
 * generator process, sending from the client container's eth0) delivered per second, counted at the receiving
 * container's interface, at full rate and again at half the rate that path delivered (loss below saturation must
 * be 0); ping avg/p99 (iputils ping, which busy-waits between echoes at 5 ms, and bench/pinger.c, which sleeps
 * between them, also giving its p50 and the share of its echoes that took over 1 ms, the stalls of waking a
 * sleeping process on a VM: the same schedule, with and without a CPU kept busy by the prober; both after an unmeasured
 * warm-up of echoes 0.5 ms apart, so a JIT's re-optimization for ICMP is not in the figure); and for userspace
 * paths the CPU seconds their processes used per Gbit moved. Each row is
 * repeated `--reps` times (default 3), in rounds (every path once per round, so a slow spell of the machine hits
 * all paths alike), and reported as median (min-max), with its ratio to the kernel row of the same run. Then, unless --soak 0, one vxtap run under full TCP load for --soak seconds (default 60; 0 with
 * --quick) samples both agents' resident memory every second: it must not grow.
 *
 *   node dist/bench/forwarding.js [--quick] [--reps N] [--time S] [--soak S]
 *                              [--paths direct,kernel,tinc,openvpn,floor,floor-busy,vxtap,vxtap-busy] [--busy-window US]
 *   (all eight by default; --quick: 1 rep x 2 s of direct, kernel, vxtap, unless --peers)
 *
 * The table's header names the machine and what its rows depend on: the cost of a null syscall, and of a
 * wake-up (a task woken on the waker's CPU, and on an idle other CPU: bench/floor.c --wake-us). A forwarder that
 * sleeps between packets pays a wake-up per hop, about three per echo here, so on a VM where waking an idle vCPU
 * costs tens of microseconds that alone sets a floor under every sleeping row's latency.
 * Writes bench/results/forwarding.{md,json,svg} (or --out DIR). Needs root, iperf3, trafgen (and tinc/openvpn,
 * and a C compiler for the floor path).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const CLI = join(ROOT, 'dist/src/cli/main.js');

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    reps: { type: 'string' },
    time: { type: 'string' },
    soak: { type: 'string' },
    paths: { type: 'string' },
    'busy-window': { type: 'string' },
    peers: { type: 'boolean' },
    out: { type: 'string' },
  },
});
const QUICK = !!values.quick;
const RESULTS = values.out ?? join(ROOT, 'bench/results');
const REPS = Number(values.reps ?? (QUICK ? 1 : 3));
const T = Number(values.time ?? (QUICK ? 2 : 5));
const SOAK = Number(values.soak ?? (QUICK ? 0 : 60));
const BUSY_US = Number(values['busy-window'] ?? 20000);
if (!Number.isInteger(BUSY_US) || BUSY_US < 1 || BUSY_US > 10_000_000) {
  console.error(
    `--busy-window ${values['busy-window']}: the vxtap-busy row's --busy-poll window, 1 to 10000000 microseconds`,
  );
  process.exit(2);
}
const PATHS = (
  values.paths ??
  (QUICK && !values.peers ? 'direct,kernel,vxtap' : 'direct,kernel,tinc,openvpn,floor,floor-busy,vxtap,vxtap-busy')
).split(',');

// ---------------------------------------------------------------- helpers

function sh(argv: string[], timeoutMs = 60_000): { code: number; out: string; err: string } {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status ?? -1, out: r.stdout ?? '', err: r.stderr ?? '' };
}
function must(argv: string[]): string {
  const r = sh(argv);
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.err.trim()}`);
  return r.out;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime in clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

function progress(msg: string): void {
  process.stderr.write(`\r\x1b[K${msg}`);
}

// ---------------------------------------------------------------- topology

interface Topo {
  tag: string;
  dir: string;
  c1: string;
  c2: string;
  procs: ChildProcess[];
  /** PIDs whose CPU time counts as the overlay's. */
  cpuPids: number[];
}

let seq = 0;
function baseTopo(withHosts: boolean): Topo {
  const tag = `vxb${process.pid % 10000}${seq++}`;
  const t: Topo = {
    tag,
    dir: mkdtempSync(join(tmpdir(), `${tag}-`)),
    c1: `${tag}-c1`,
    c2: `${tag}-c2`,
    procs: [],
    cpuPids: [],
  };
  const nss = withHosts ? ['h1', 'h2', 'c1', 'c2'] : ['c1', 'c2'];
  for (const n of nss) {
    must(['ip', 'netns', 'add', `${tag}-${n}`]);
    must(['ip', '-n', `${tag}-${n}`, 'link', 'set', 'lo', 'up']);
    if (n.startsWith('c'))
      for (const k of ['all', 'default'])
        must(['ip', 'netns', 'exec', `${tag}-${n}`, 'sysctl', '-qw', `net.ipv6.conf.${k}.disable_ipv6=1`]);
  }
  if (withHosts) {
    must([
      'ip',
      'link',
      'add',
      `${tag}u1`,
      'netns',
      `${tag}-h1`,
      'type',
      'veth',
      'peer',
      'name',
      `${tag}u2`,
      'netns',
      `${tag}-h2`,
    ]);
    for (const i of [1, 2]) {
      must(['ip', '-n', `${tag}-h${i}`, 'addr', 'add', `198.18.0.${i}/24`, 'dev', `${tag}u${i}`]);
      must(['ip', '-n', `${tag}-h${i}`, 'link', 'set', `${tag}u${i}`, 'up']);
    }
  }
  return t;
}

function containerAddr(t: Topo, i: 1 | 2, dev: string): void {
  const c = i === 1 ? t.c1 : t.c2;
  must(['ip', '-n', c, 'link', 'set', dev, 'mtu', '1450', 'up']);
  must(['ip', '-n', c, 'addr', 'add', `198.19.1.${i}/24`, 'dev', dev]);
}

/** veth from host i's bridge br0 to container i's eth0. */
function bridgeToContainer(t: Topo, i: 1 | 2): void {
  const h = `${t.tag}-h${i}`;
  const c = i === 1 ? t.c1 : t.c2;
  must(['ip', '-n', h, 'link', 'add', 'br0', 'type', 'bridge']);
  must(['ip', '-n', h, 'link', 'add', 'k0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c]);
  must(['ip', '-n', h, 'link', 'set', 'k0', 'master', 'br0', 'mtu', '1450', 'up']);
  must(['ip', '-n', h, 'link', 'set', 'br0', 'up']);
  containerAddr(t, i, 'eth0');
}

async function waitFile(path: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${path}`);
    await sleep(50);
  }
}

/** One vxtap agent per host on a shared embedded store; `extra`: more agent flags. */
async function vxtapPath(extra: string[]): Promise<Topo> {
  const t = baseTopo(true);
  for (const i of [1, 2]) {
    const sock = join(t.dir, `h${i}.sock`);
    const p = spawn(
      'sh',
      [
        '-c',
        `exec ip netns exec ${t.tag}-h${i} node --no-memory-reducer ${CLI} agent --vtep 198.18.0.${i} --host h${i} --socket ${sock} --kv ${join(t.dir, 'store.db')} --state-dir ${join(t.dir, 'state')} --log-level warn ${extra.join(' ')} 2>>${join(t.dir, `h${i}.log`)}`,
      ],
      { stdio: 'ignore' },
    );
    t.procs.push(p);
    t.cpuPids.push(p.pid!);
    await waitFile(sock);
  }
  const v = (i: number, args: string[]) => must(['node', CLI, ...args, '--socket', join(t.dir, `h${i}.sock`)]);
  await sleep(300);
  v(1, ['network', 'create', 'bench', '--subnet', '198.19.1.0/24', '--gateway', 'none']);
  await sleep(100);
  v(1, ['endpoint', 'attach', 'bench', '--netns', t.c1, '--name', 'c1', '--ip', '198.19.1.1']);
  v(2, ['endpoint', 'attach', 'bench', '--netns', t.c2, '--name', 'c2', '--ip', '198.19.1.2']);
  return t;
}

/** Compiles bench/NAME.c once per run (into a temporary directory removed at exit); returns the binary. */
const toolBins = new Map<string, string>();
function buildTool(name: 'floor' | 'pinger'): string {
  const have = toolBins.get(name);
  if (have) return have;
  const dir = mkdtempSync(join(tmpdir(), `vxtap-${name}-`));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, name);
  const r = sh(['cc', '-O2', '-Wall', '-o', bin, join(ROOT, `bench/${name}.c`)]);
  if (r.code !== 0)
    throw new Error(
      `cannot build bench/${name}.c with cc (the C compiler the native addon needs): ${(r.err || r.out).trim().slice(-300)}`,
    );
  toolBins.set(name, bin);
  return bin;
}

/** The C floor forwarder on each host (bench/floor.c), sleeping in poll() or, with `spin`, never sleeping. */
async function floorPath(spin: boolean): Promise<Topo> {
  const bin = buildTool('floor');
  const t = baseTopo(true);
  for (const i of [1, 2] as const) {
    const log = join(t.dir, `floor${i}.log`);
    const p = spawn(
      'sh',
      [
        '-c',
        `exec ip netns exec ${t.tag}-h${i} ${bin}${spin ? ' --spin' : ''} tap0 198.18.0.${i} 198.18.0.${3 - i} 2>>${log}`,
      ],
      { stdio: 'ignore' },
    );
    t.procs.push(p);
    t.cpuPids.push(p.pid!);
    const end = Date.now() + 5000;
    while (!readFileSync(log, { encoding: 'utf8', flag: 'a+' }).includes('ready')) {
      if (p.exitCode !== null || Date.now() > end)
        throw new Error(`floor forwarder on h${i} did not start: ${readFileSync(log, 'utf8').trim()}`);
      await sleep(20);
    }
    // the TAP moves into the container, as vxtap's do; the forwarder keeps its fd
    must(['ip', '-n', `${t.tag}-h${i}`, 'link', 'set', 'tap0', 'netns', i === 1 ? t.c1 : t.c2, 'name', 'eth0']);
    containerAddr(t, i, 'eth0');
  }
  return t;
}

const builders: Record<string, () => Promise<Topo>> = {
  async direct() {
    const t = baseTopo(false);
    must(['ip', 'link', 'add', 'eth0', 'netns', t.c1, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', t.c2]);
    containerAddr(t, 1, 'eth0');
    containerAddr(t, 2, 'eth0');
    return t;
  },
  async kernel() {
    const t = baseTopo(true);
    for (const i of [1, 2] as const) {
      const h = `${t.tag}-h${i}`;
      must([
        'ip',
        '-n',
        h,
        'link',
        'add',
        'vxlan0',
        'type',
        'vxlan',
        'id',
        '42',
        'dstport',
        '4789',
        'local',
        `198.18.0.${i}`,
        'dev',
        `${t.tag}u${i}`,
      ]);
      must(['bridge', '-n', h, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vxlan0', 'dst', `198.18.0.${3 - i}`]);
      bridgeToContainer(t, i);
      must(['ip', '-n', h, 'link', 'set', 'vxlan0', 'master', 'br0', 'up']);
    }
    return t;
  },
  vxtap: () => vxtapPath([]),
  'vxtap-busy': () => vxtapPath(['--busy-poll', String(BUSY_US)]),
  floor: () => floorPath(false),
  'floor-busy': () => floorPath(true),
  async tinc() {
    const t = baseTopo(true);
    for (const i of [1, 2] as const) {
      const d = join(t.dir, `tinc${i}`);
      mkdirSync(join(d, 'hosts'), { recursive: true });
      writeFileSync(
        join(d, 'tinc.conf'),
        `Name = h${i}\nMode = switch\nInterface = tap0\nDeviceType = tap\nAddressFamily = ipv4\nBindToAddress = 198.18.0.${i}\n${i === 2 ? 'ConnectTo = h1\n' : ''}`,
      );
      writeFileSync(join(d, 'tinc-up'), '#!/bin/sh\nip link set $INTERFACE up\n', { mode: 0o755 });
    }
    for (const i of [1, 2] as const) {
      // keys, then each host's file with its address and no encryption
      must([
        'sh',
        '-c',
        `printf '\\n\\n' | ip netns exec ${t.tag}-h${i} tincd -c ${join(t.dir, `tinc${i}`)} -K4096 >/dev/null 2>&1`,
      ]);
    }
    for (const i of [1, 2] as const) {
      const pub = readFileSync(join(t.dir, `tinc${i}`, 'hosts', `h${i}`), 'utf8');
      const body = `Address = 198.18.0.${i}\nCipher = none\nDigest = none\nCompression = 0\n${pub}`;
      for (const j of [1, 2]) writeFileSync(join(t.dir, `tinc${j}`, 'hosts', `h${i}`), body);
    }
    for (const i of [1, 2] as const) {
      const p = spawn(
        'ip',
        [
          'netns',
          'exec',
          `${t.tag}-h${i}`,
          'tincd',
          '-D',
          '-c',
          join(t.dir, `tinc${i}`),
          '--pidfile',
          join(t.dir, `tinc${i}.pid`),
        ],
        { stdio: 'ignore' },
      );
      t.procs.push(p);
      t.cpuPids.push(p.pid!);
    }
    await sleep(1500);
    for (const i of [1, 2] as const) {
      bridgeToContainer(t, i);
      must(['ip', '-n', `${t.tag}-h${i}`, 'link', 'set', 'tap0', 'master', 'br0', 'mtu', '1450', 'up']);
    }
    return t;
  },
  async openvpn() {
    const t = baseTopo(true);
    for (const i of [1, 2] as const) {
      const h = `${t.tag}-h${i}`;
      must(['ip', '-n', h, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']);
      const p = spawn(
        'ip',
        [
          'netns',
          'exec',
          h,
          'openvpn',
          '--dev',
          'tap0',
          '--dev-type',
          'tap',
          '--proto',
          'udp',
          '--local',
          `198.18.0.${i}`,
          '--remote',
          `198.18.0.${3 - i}`,
          '--port',
          '1194',
          '--cipher',
          'none',
          '--auth',
          'none',
          '--data-ciphers',
          'none',
          '--tun-mtu',
          '1500',
          '--mssfix',
          '0',
          '--sndbuf',
          '4194304',
          '--rcvbuf',
          '4194304',
          '--verb',
          '0',
        ],
        { stdio: 'ignore' },
      );
      t.procs.push(p);
      t.cpuPids.push(p.pid!);
    }
    await sleep(1500);
    for (const i of [1, 2] as const) {
      bridgeToContainer(t, i);
      must(['ip', '-n', `${t.tag}-h${i}`, 'link', 'set', 'tap0', 'master', 'br0', 'up']);
    }
    return t;
  },
};

async function teardown(t: Topo): Promise<void> {
  for (const p of t.procs)
    if (p.exitCode === null && p.pid)
      try {
        process.kill(p.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
  await Promise.all(
    t.procs.map((p) =>
      p.exitCode !== null
        ? Promise.resolve(null)
        : new Promise((r) => {
            const k = setTimeout(() => {
              try {
                process.kill(p.pid!, 'SIGKILL');
              } catch {
                /* gone */
              }
            }, 3000);
            p.once('exit', () => {
              clearTimeout(k);
              r(null);
            });
          }),
    ),
  );
  for (const n of ['c1', 'c2', 'h1', 'h2']) sh(['ip', 'netns', 'del', `${t.tag}-${n}`]);
  rmSync(t.dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------- measurements

interface Sample {
  tcp1: number; // Gbit/s
  tcp4: number;
  retrans1: number;
  pps60: number; // delivered 60-byte frames per second, generator at full rate
  loss60: number; // % of those frames lost at full rate
  lossHalf: number; // % lost at half the delivered rate (below saturation)
  pingAvg: number; // ms
  pingP99: number;
  sleepAvg: number; // ms, bench/pinger.c: the same schedule from a pinger that sleeps between echoes
  sleepP50: number;
  sleepP99: number;
  sleepSlow: number; // % of the sleeping pinger's replies that took over 1 ms (the kernel paths: none)
  cpuPerGbit: number; // CPU seconds per Gbit moved (userspace paths), NaN otherwise
  pingCores: number; // CPU the path's processes used during the ping phase, in cores (CPU s / s), NaN for kernel paths
}

async function warm(t: Topo): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (sh(['ip', 'netns', 'exec', t.c2, 'ping', '-c', '1', '-W', '1', '198.19.1.1']).code === 0) return;
    await sleep(200);
  }
  throw new Error('path never came up (no ping reply in 20 s)');
}

async function iperf(t: Topo, args: string[]): Promise<Record<string, any>> {
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
  const j = JSON.parse(r.out || '{}');
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  return j;
}

function linkInfo(ns: string, dev: string): { mac: string; rx: number; tx: number } {
  const l = JSON.parse(must(['ip', '-n', ns, '-j', '-s', 'link', 'show', 'dev', dev]))[0];
  return { mac: l.address, rx: l.stats64.rx.packets, tx: l.stats64.tx.packets };
}

const hexBytes = (xs: number[]) => xs.map((b) => `0x${b.toString(16).padStart(2, '0')}`).join(', ');

/**
 * 60-byte frames (Ethernet 14 + IPv4 20 + UDP 8 + 18 bytes of payload) from c2 (198.19.1.2) to c1 (198.19.1.1,
 * UDP port 9: discard) for T seconds with trafgen, at full rate or `rate` pps. Counts what c2's eth0 sent and what
 * c1's eth0 received. "Sent" is the sender interface's tx_packets: frames a full queue refused are pushed back to
 * trafgen (which retries them; the interface counts each refusal as tx_dropped), not lost. --no-sock-mem: trafgen leaves the host's socket memory settings alone.
 */
async function flood(t: Topo, rate?: number): Promise<{ sent: number; got: number }> {
  const src = linkInfo(t.c2, 'eth0');
  const dst = linkInfo(t.c1, 'eth0');
  const mac = (m: string) => m.split(':').map((x) => parseInt(x, 16));
  const conf = join(t.dir, 'udp60.cfg');
  writeFileSync(
    conf,
    `{ ${hexBytes([...mac(dst.mac), ...mac(src.mac), 0x08, 0x00])},
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
  if (r.code !== 0 && r.code !== 124 && !/packets outgoing/.test(r.out + r.err))
    throw new Error(`trafgen: ${(r.err || r.out).trim().slice(-300)}`);
  await sleep(500); // frames in flight
  const src1 = linkInfo(t.c2, 'eth0');
  const dst1 = linkInfo(t.c1, 'eth0');
  return { sent: src1.tx - src.tx, got: dst1.rx - dst.rx };
}

async function measure(t: Topo): Promise<Sample> {
  const cpu0 = t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const j1 = await iperf(t, []);
  const cpu1 = t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const bytes1 = j1.end.sum_received.bytes as number;
  const j4 = await iperf(t, ['-P', '4']);
  const full = await flood(t);
  const pps60 = full.got / T;
  await sleep(1000); // let the full-rate run's queues drain before the run below saturation
  const half = await flood(t, pps60 / 2);
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
  const cpuP0 = t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const tP0 = Date.now();
  const pr = sh(
    [
      'ip',
      'netns',
      'exec',
      t.c2,
      'ping',
      '-n',
      '-c',
      String(Math.round(T * 200)),
      '-i',
      '0.005',
      '-W',
      '1',
      '198.19.1.1',
    ],
    (T + 30) * 1000,
  );
  const pingCores = t.cpuPids.length
    ? (t.cpuPids.reduce((s, p) => s + cpuSeconds(p), 0) - cpuP0) / ((Date.now() - tP0) / 1000)
    : NaN;
  const rtts = [...pr.out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  // the same schedule again from a pinger that sleeps between echoes (iputils ping at -i 0.005 spins a CPU)
  const sp = sh(
    ['ip', 'netns', 'exec', t.c2, buildTool('pinger'), '198.19.1.1', String(Math.round(T * 200)), '5000'],
    (T + 30) * 1000,
  );
  const [, spGot, spAvg, spP50, spP99, , spSlow] = sp.out.trim().split(/\s+/).map(Number);
  const spOk = sp.code === 0 && spGot > 0;
  return {
    tcp1: j1.end.sum_received.bits_per_second / 1e9,
    tcp4: j4.end.sum_received.bits_per_second / 1e9,
    retrans1: j1.end.sum_sent.retransmits ?? 0,
    pps60,
    loss60: full.sent ? (100 * Math.max(0, full.sent - full.got)) / full.sent : NaN,
    lossHalf: half.sent ? (100 * Math.max(0, half.sent - half.got)) / half.sent : NaN,
    pingAvg: rtts.reduce((s, x) => s + x, 0) / Math.max(1, rtts.length),
    pingP99: rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * 0.99))] ?? NaN,
    sleepAvg: spOk ? spAvg / 1000 : NaN,
    sleepP50: spOk ? spP50 / 1000 : NaN,
    sleepP99: spOk ? spP99 / 1000 : NaN,
    sleepSlow: spOk ? (100 * spSlow) / spGot : NaN,
    cpuPerGbit: t.cpuPids.length ? (cpu1 - cpu0) / ((bytes1 * 8) / 1e9) : NaN,
    pingCores,
  };
}

// ---------------------------------------------------------------- run

{
  const bad = PATHS.filter((p) => !builders[p]);
  const problem = bad.length
    ? `unknown path(s) ${bad.join(', ')}; known: ${Object.keys(builders).join(', ')}`
    : !(REPS >= 1 && Number.isInteger(REPS)) || !(T >= 1)
      ? '--reps must be a whole number >= 1 and --time a number of seconds >= 1'
      : process.getuid?.() !== 0
        ? 'needs root (it builds network namespaces)'
        : null;
  if (problem) {
    process.stderr.write(`bench: ${problem}\n`);
    process.exit(2);
  }
}

const KEYS: (keyof Sample)[] = [
  'tcp1',
  'tcp4',
  'pps60',
  'loss60',
  'lossHalf',
  'pingAvg',
  'pingP99',
  'sleepAvg',
  'sleepP50',
  'sleepP99',
  'sleepSlow',
  'cpuPerGbit',
  'pingCores',
  'retrans1',
];
const results: Record<string, Sample[]> = {};
// Rounds: each rep measures every path once, in order, so a slow spell of the (shared, virtual) machine hits all
// paths of that round alike instead of all reps of one path; the ratios compare paths measured side by side.
for (const path of PATHS) results[path] = [];
for (let r = 0; r < REPS; r++) {
  for (const path of PATHS) {
    progress(`round ${r + 1}/${REPS}: ${path}: building`);
    const t = await builders[path]();
    try {
      progress(`round ${r + 1}/${REPS}: ${path}: warming up`);
      await warm(t);
      progress(`round ${r + 1}/${REPS}: ${path}: measuring (~${5 * T + 8} s)`);
      results[path].push(await measure(t));
    } catch (e) {
      process.stderr.write(`\n${path}: ${(e as Error).message}\n`);
    } finally {
      await teardown(t);
    }
  }
}
progress('');

/** Resident memory of each vxtap agent, sampled every second under full TCP load for SOAK seconds. */
async function soak(): Promise<{
  seconds: number;
  agents: { start: number; end: number; max: number }[];
  gbit: number;
} | null> {
  if (!(SOAK > 0) || !PATHS.includes('vxtap')) return null;
  const t = await builders.vxtap();
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
const mem = await soak();

/**
 * What the rows depend on: the CPU, what a syscall costs (it differs several-fold between VM kinds), and what a
 * wake-up costs: a task woken on the waker's CPU (a hand-off) and on an idle other CPU (bench/floor.c --wake-us).
 */
interface Machine {
  cpu: string;
  cpus: number;
  kernel: string;
  syscallNs: number | null;
  wakeSameUs: number | null;
  wakeIdleUs: number | null;
}
function machineInfo(): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? 'unknown CPU';
  const cpus = (cpuinfo.match(/^processor\s*:/gm) ?? []).length;
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  let syscallNs: number | null = null;
  let wakeSameUs: number | null = null;
  let wakeIdleUs: number | null = null;
  try {
    const r = sh([buildTool('floor'), '--syscall-ns']);
    if (r.code === 0 && /^\d+$/.test(r.out.trim())) syscallNs = Number(r.out.trim());
    const w = /^([\d.]+) ([\d.]+|-)$/.exec(sh([buildTool('floor'), '--wake-us']).out.trim());
    if (w) {
      wakeSameUs = Number(w[1]);
      wakeIdleUs = w[2] === '-' ? null : Number(w[2]);
    }
  } catch {
    /* no C compiler: reported as ? */
  }
  return { cpu, cpus, kernel, syscallNs, wakeSameUs, wakeIdleUs };
}
const machine = machineInfo();

const stat = (xs: number[]) => ({ med: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
const summary: Record<string, Record<string, { med: number; min: number; max: number }>> = {};
for (const [p, ss] of Object.entries(results)) {
  if (!ss.length) continue;
  summary[p] = Object.fromEntries(KEYS.map((k) => [k, stat(ss.map((s) => s[k]))]));
}
const k = summary.kernel;
const fmt = (v: { med: number; min: number; max: number }, d: number) =>
  Number.isFinite(v.med) ? `${v.med.toFixed(d)}${REPS > 1 ? ` (${v.min.toFixed(d)}-${v.max.toFixed(d)})` : ''}` : '-';
const ratio = (p: string, key: keyof Sample) =>
  k && summary[p] && Number.isFinite(summary[p][key].med) ? `${(summary[p][key].med / k[key].med).toFixed(2)}x` : '-';
const md = [
  `Forwarding benchmark, ${new Date().toISOString()}, ${REPS} rep(s) x ${T} s, two hosts on a veth underlay (MTU 1500), container MTU 1450.`,
  `Machine: ${machine.cpu}, ${machine.cpus} CPUs, kernel ${machine.kernel}, a null syscall ${machine.syscallNs ?? '?'} ns (per-frame syscalls cost that much each: on VMs it varies several-fold).`,
  `Wake-ups: ${machine.wakeSameUs ?? '?'} us for a task woken on the waker's CPU, ${machine.wakeIdleUs ?? '?'} us on an idle other CPU (median; a forwarder that sleeps pays one per hop, about three per echo).`,
  'Median (min-max). Ratios are to the kernel VXLAN row of this run.',
  '',
  '| path | TCP 1 stream Gbit/s | vs kernel | TCP 4 streams Gbit/s | vs kernel | 60 B frames delivered/s | vs kernel | loss at full / half rate % | ping avg ms | ping p99 ms | added vs kernel (avg) | sleeping pinger avg / p50 / p99 ms | added (sleeping) avg / p50 | sleeping echoes over 1 ms % | CPU s per Gbit | CPU while pinging (cores) |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...Object.keys(summary).map((p) => {
    const s = summary[p];
    const added = k ? `${((s.pingAvg.med - k.pingAvg.med) * 1000).toFixed(0)} us` : '-';
    const us = (key: 'sleepAvg' | 'sleepP50') =>
      k && Number.isFinite(s[key].med) && Number.isFinite(k[key].med)
        ? `${((s[key].med - k[key].med) * 1000).toFixed(0)}`
        : '-';
    const addedSleep = `${us('sleepAvg')} / ${us('sleepP50')} us`;
    return `| ${p} | ${fmt(s.tcp1, 2)} | ${ratio(p, 'tcp1')} | ${fmt(s.tcp4, 2)} | ${ratio(p, 'tcp4')} | ${fmt(s.pps60, 0)} | ${ratio(p, 'pps60')} | ${fmt(s.loss60, 1)} / ${fmt(s.lossHalf, 2)} | ${fmt(s.pingAvg, 3)} | ${fmt(s.pingP99, 3)} | ${added} | ${fmt(s.sleepAvg, 3)} / ${fmt(s.sleepP50, 3)} / ${fmt(s.sleepP99, 3)} | ${addedSleep} | ${fmt(s.sleepSlow, 1)} | ${fmt(s.cpuPerGbit, 2)} | ${fmt(s.pingCores, 2)} |`;
  }),
  '',
  '60 B frames: trafgen (one process) from the client container at full rate, then at half the rate the path',
  "delivered; counted at the receiving container's interface. The generator shares the 2 cores with the path.",
  'Ping: one echo every 5 ms; "CPU while pinging" is what the path\'s processes used meanwhile (1.00 = one core).',
  'iputils ping busy-waits between echoes at that interval (about one CPU); the sleeping pinger (bench/pinger.c)',
  'sends the same schedule and sleeps in between, as a request/response application would. Both follow an',
  `unmeasured warm-up of ${Math.round(T * 400)} echoes 0.5 ms apart on every path (steady state: a JIT re-optimizes for ICMP there).`,
  'Sleeping echoes over 1 ms: replies that waited for a sleeping process to run again (on a VM the vCPU it was put',
  'on can stay descheduled for milliseconds). A few of them move the average far more than the p50: the p50 is the',
  'typical exchange, the average includes the stalls.',
  ...(summary['vxtap-busy'] ? [`vxtap-busy: agents run with --busy-poll ${BUSY_US} (microseconds).`] : []),
  ...(summary.floor || summary['floor-busy']
    ? [
        'floor / floor-busy: a minimal C forwarder (bench/floor.c) that sleeps in poll() / never sleeps (polls, yields): the',
        'added latency any user-space forwarder of each kind pays on this machine, the yardsticks for vxtap / vxtap-busy.',
      ]
    : []),
  ...(mem
    ? [
        '',
        `Memory under load: ${mem.seconds} s of TCP through vxtap (${mem.gbit.toFixed(2)} Gbit/s); agent resident memory at 5 s -> end (max): ${mem.agents.map((a, i) => `h${i + 1} ${a.start.toFixed(1)} -> ${a.end.toFixed(1)} MB (${a.max.toFixed(1)})`).join(', ')}.`,
      ]
    : []),
].join('\n');
console.log(md);
mkdirSync(RESULTS, { recursive: true });
writeFileSync(join(RESULTS, 'forwarding.md'), md + '\n');
writeFileSync(
  join(RESULTS, 'forwarding.json'),
  JSON.stringify(
    {
      date: new Date().toISOString(),
      reps: REPS,
      seconds: T,
      busyWindowUs: BUSY_US,
      machine,
      results,
      summary,
      memory: mem,
    },
    null,
    2,
  ),
);
writeFileSync(join(RESULTS, 'forwarding.svg'), chart(summary));
process.exit(0);

/** A bar chart of TCP 1-stream Gbit/s per path (median, with min-max whiskers). */
function chart(s: typeof summary): string {
  const paths = Object.keys(s);
  const max = Math.max(...paths.map((p) => s[p].tcp1.max), 0.1);
  const W = 640,
    bar = 36,
    gap = 18,
    left = 90,
    top = 40;
  const H = top + paths.length * (bar + gap) + 30;
  const x = (v: number) => left + (v / max) * (W - left - 80);
  const rows = paths.map((p, i) => {
    const y = top + i * (bar + gap);
    const v = s[p].tcp1;
    return (
      `<text x="${left - 8}" y="${y + bar / 2 + 5}" text-anchor="end" font-size="14">${p}</text>` +
      `<rect x="${left}" y="${y}" width="${x(v.med) - left}" height="${bar}" fill="${p.startsWith('vxtap') ? '#2b7bb9' : p === 'kernel' ? '#888' : '#bbb'}"/>` +
      `<line x1="${x(v.min)}" x2="${x(v.max)}" y1="${y + bar / 2}" y2="${y + bar / 2}" stroke="#000"/>` +
      `<text x="${x(v.max) + 6}" y="${y + bar / 2 + 5}" font-size="13">${v.med.toFixed(2)} Gbit/s</text>`
    );
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">` +
    `<text x="${left}" y="24" font-size="15">TCP, 1 stream (iperf3), median of ${REPS}</text>${rows.join('')}</svg>\n`
  );
}
