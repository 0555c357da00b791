/**
 * The side-by-side forwarding benchmark: every path gets the same two-host topology, built fresh, and is measured
 * the same way, in rounds (each path once per round, so a slow spell of the machine hits all paths alike);
 * reported as median (min-max) with each row's ratio to the kernel VXLAN row of the same run.
 *
 *   direct      a veth straight between the two containers: no overlay (the ceiling)
 *   kernel      Linux VXLAN: container veth -> bridge -> vxlan0 on each host (the reference)
 *   tinc        tinc 1.0 in switch mode, no cipher (a userspace C L2 overlay)
 *   openvpn     OpenVPN 2.6 TAP bridged, no crypto (another userspace C L2 overlay)
 *   floor       bench/floor.c: a minimal C forwarder sleeping in poll(), one frame per syscall (a yardstick for
 *               what any sleeping userspace forwarder pays here, not an overlay); floor-busy: the same, spinning
 *   vxtap       one vxtap agent per host on a shared embedded store; vxtap-busy: with --busy-poll
 *   vxtap-enc   the same with an --encrypted network; beside it the encrypted peers a user would pick instead:
 *               wireguard (wireguard-go, routed), tinc-enc (AES-256-CBC + HMAC-SHA256), openvpn-enc (AES-256-GCM)
 *
 *   node dist/bench/forwarding.js [--quick] [--reps N] [--time S] [--soak S] [--paths a,b,...] [--busy-window US]
 *                                 [--peers] [--out DIR]
 *
 * forwarding/topology.ts builds the paths, forwarding/measure.ts says what is measured and how, forwarding/report.ts
 * writes bench/results/forwarding.{md,json,svg}. Needs root, iperf3, trafgen (netsniff-ng), tinc and openvpn for
 * their rows, and a C compiler for the floor and the sleeping pinger.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { measure, progress, type Sample, soak, warm } from './forwarding/measure.js';
import { machineInfo, writeReport } from './forwarding/report.js';
import { pathBuilders, ROOT, teardown } from './forwarding/topology.js';

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
  (QUICK && !values.peers
    ? 'direct,kernel,vxtap'
    : 'direct,kernel,tinc,openvpn,floor,floor-busy,vxtap,vxtap-busy,kernel-v6,vxtap-v6,vxtap-enc,wireguard,tinc-enc,openvpn-enc')
).split(',');

const builders = pathBuilders(BUSY_US);

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

const results: Record<string, Sample[]> = {};
const failures: Record<string, string[]> = {};
// Rounds: each rep measures every path once, in order, so a slow spell of the (shared, virtual) machine hits all
// paths of that round alike instead of all reps of one path; the ratios compare paths measured side by side.
for (const path of PATHS) [results[path], failures[path]] = [[], []];
for (let r = 0; r < REPS; r++) {
  for (const path of PATHS) {
    progress(`round ${r + 1}/${REPS}: ${path}: building`);
    const t = await builders[path]();
    try {
      progress(`round ${r + 1}/${REPS}: ${path}: warming up`);
      await warm(t);
      progress(`round ${r + 1}/${REPS}: ${path}: measuring (~${5 * T + 8} s)`);
      results[path].push(await measure(t, T));
    } catch (e) {
      process.stderr.write(`\n${path}: ${(e as Error).message}\n`);
      failures[path].push(`round ${r + 1}: ${(e as Error).message.split('\n')[0].slice(0, 300)}`);
    } finally {
      await teardown(t);
    }
  }
}
progress('');
const mem = SOAK > 0 && PATHS.includes('vxtap') ? await soak(builders.vxtap, SOAK) : null;
const machine = machineInfo();
console.log(
  writeReport(results, machine, { reps: REPS, failures, seconds: T, busyWindowUs: BUSY_US, out: RESULTS }, mem),
);
process.exit(0);
