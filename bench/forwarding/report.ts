/**
 * The benchmark's report: the machine it ran on, the median (min-max) of each measurement per path with its ratio to
 * the kernel VXLAN row of the same run, written as bench/results/forwarding.{md,json,svg}.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../../test/helpers/topo.js';
import { KEYS, type Sample } from './measure.js';
import { buildTool } from './topology.js';

export interface RunInfo {
  reps: number;
  /** per path, why each round that produced no sample failed (the table's medians are over the others) */
  failures: Record<string, string[]>;
  seconds: number;
  busyWindowUs: number;
  out: string;
}

export type Memory = { seconds: number; agents: { start: number; end: number; max: number }[]; gbit: number } | null;

type Stat = { med: number; min: number; max: number };
type Summary = Record<string, Record<string, Stat>>;

/** The median of the finite values (the mean of the middle two for an even count); NaN when there are none. */
export function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/**
 * What the rows depend on: the CPU, what a syscall costs (it differs several-fold between VM kinds), and what a
 * wake-up costs: a task woken on the waker's CPU (a hand-off) and on an idle other CPU (bench/floor.c --wake-us).
 */
export interface Machine {
  cpu: string;
  cpus: number;
  kernel: string;
  syscallNs: number | null;
  wakeSameUs: number | null;
  wakeIdleUs: number | null;
}
export function machineInfo(): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? 'unknown CPU';
  const cpus = (cpuinfo.match(/^processor\s*:/gm) ?? []).length;
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  let syscallNs: number | null = null;
  let wakeSameUs: number | null = null;
  let wakeIdleUs: number | null = null;
  try {
    const r = sh([buildTool('floor'), '--syscall-ns']);
    if (r.code === 0 && /^\d+$/.test(r.stdout.trim())) syscallNs = Number(r.stdout.trim());
    const w = /^([\d.]+) ([\d.]+|-)$/.exec(sh([buildTool('floor'), '--wake-us']).stdout.trim());
    if (w) {
      wakeSameUs = Number(w[1]);
      wakeIdleUs = w[2] === '-' ? null : Number(w[2]);
    }
  } catch {
    /* no C compiler: reported as ? */
  }
  return { cpu, cpus, kernel, syscallNs, wakeSameUs, wakeIdleUs };
}

/**
 * The encrypted rows against plaintext vxtap of the same run and the best encrypted peer (issue 27's targets:
 * TCP 1 stream >= 0.5x plaintext and >= 2x the best peer; 60 B frames >= 0.5x plaintext).
 */
function encryptedLines(summary: Summary): string[] {
  const enc = summary['vxtap-enc'];
  if (!enc) return [];
  const plain = summary.vxtap;
  const peers = ['wireguard', 'tinc-enc', 'openvpn-enc'].filter(
    (p) => summary[p] && Number.isFinite(summary[p].tcp1.med),
  );
  const best = peers.sort((a, b) => summary[b].tcp1.med - summary[a].tcp1.med)[0];
  const x = (a: number, b: number) =>
    Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : '-';
  return [
    '',
    'Encrypted: vxtap-enc is an --encrypted network (AES-256-GCM per datagram, MTU 1422); wireguard is wireguard-go',
    '(ChaCha20-Poly1305, routed, MTU 1420), tinc-enc tinc 1.0 with AES-256-CBC + HMAC-SHA256, openvpn-enc OpenVPN 2.6',
    'with an AES-256-GCM data channel (TLS keys).',
    `vxtap-enc against plaintext vxtap of this run: TCP 1 stream ${x(enc.tcp1.med, plain?.tcp1.med ?? NaN)}, 4 streams ${x(enc.tcp4.med, plain?.tcp4.med ?? NaN)}, 60 B frames ${x(enc.pps60.med, plain?.pps60.med ?? NaN)}, CPU s per Gbit ${enc.cpuPerGbit.med.toFixed(2)} against ${plain ? plain.cpuPerGbit.med.toFixed(2) : '-'}.`,
    ...(best
      ? [
          `Against the best encrypted peer (${best}): TCP 1 stream ${x(enc.tcp1.med, summary[best].tcp1.med)}, 4 streams ${x(enc.tcp4.med, summary[best].tcp4.med)}, 60 B frames ${x(enc.pps60.med, summary[best].pps60.med)}.`,
        ]
      : []),
  ];
}

/** Summarizes the samples, writes forwarding.md, .json and .svg into run.out, and returns the markdown. */
export function writeReport(results: Record<string, Sample[]>, machine: Machine, run: RunInfo, mem: Memory): string {
  const stat = (xs: number[]) => {
    const v = xs.filter(Number.isFinite);
    return { med: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN };
  };
  const summary: Summary = {};
  for (const [p, ss] of Object.entries(results)) {
    if (!ss.length) continue;
    summary[p] = Object.fromEntries(KEYS.map((k) => [k, stat(ss.map((s) => s[k]))]));
  }
  // a row is compared with the kernel row over the same underlay: IPv6 rows (-v6) with kernel-v6
  const baseOf = (p: string): Summary[string] | undefined =>
    p.endsWith('-v6') ? summary['kernel-v6'] : summary.kernel;
  const fmt = (v: Stat, d: number) =>
    Number.isFinite(v.med)
      ? `${v.med.toFixed(d)}${run.reps > 1 ? ` (${v.min.toFixed(d)}-${v.max.toFixed(d)})` : ''}`
      : '-';
  const ratio = (p: string, key: keyof Sample) => {
    const k = baseOf(p);
    return k && summary[p] && Number.isFinite(summary[p][key].med)
      ? `${(summary[p][key].med / k[key].med).toFixed(2)}x`
      : '-';
  };
  const md = [
    `Forwarding benchmark, ${new Date().toISOString()}, ${run.reps} rep(s) x ${run.seconds} s, two hosts on a veth underlay (MTU 1500), container MTU 1450 (1430 on the -v6 rows, whose underlay is IPv6).`,
    `Machine: ${machine.cpu}, ${machine.cpus} CPUs, kernel ${machine.kernel}, a null syscall ${machine.syscallNs ?? '?'} ns (per-frame syscalls cost that much each: on VMs it varies several-fold).`,
    `Wake-ups: ${machine.wakeSameUs ?? '?'} us for a task woken on the waker's CPU, ${machine.wakeIdleUs ?? '?'} us on an idle other CPU (median; a forwarder that sleeps pays one per hop, about three per echo).`,
    'Median (min-max) over the rounds that completed ("rounds" says how many of the run\'s did). Ratios are to the kernel VXLAN row of this run over the same underlay (kernel, or kernel-v6 for the -v6 rows).',
    '',
    '| path | rounds | TCP 1 stream Gbit/s | vs kernel | TCP 4 streams Gbit/s | vs kernel | 60 B frames delivered/s | vs kernel | loss at full / half rate % | refused by the sending interface at full / half rate % | ping avg ms | ping p99 ms | echoes lost ping / sleeping % | added vs kernel (avg) | sleeping pinger avg / p50 / p99 ms | added (sleeping) avg / p50 | sleeping echoes over 1 ms % | CPU s per Gbit | CPU while pinging (cores) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...Object.keys(results).map((p) => {
      const s = summary[p];
      const rounds = `${results[p].length}/${run.reps}`;
      if (!s) return `| ${p} | ${rounds} |${' - |'.repeat(17)}`;
      const k = baseOf(p);
      const added = k ? `${((s.pingAvg.med - k.pingAvg.med) * 1000).toFixed(0)} us` : '-';
      const us = (key: 'sleepAvg' | 'sleepP50') =>
        k && Number.isFinite(s[key].med) && Number.isFinite(k[key].med)
          ? `${((s[key].med - k[key].med) * 1000).toFixed(0)}`
          : '-';
      const addedSleep = `${us('sleepAvg')} / ${us('sleepP50')} us`;
      return `| ${p} | ${rounds} | ${fmt(s.tcp1, 2)} | ${ratio(p, 'tcp1')} | ${fmt(s.tcp4, 2)} | ${ratio(p, 'tcp4')} | ${fmt(s.pps60, 0)} | ${ratio(p, 'pps60')} | ${fmt(s.loss60, 1)} / ${fmt(s.lossHalf, 2)} | ${fmt(s.senderRefused60, 1)} / ${fmt(s.senderRefusedHalf, 1)} | ${fmt(s.pingAvg, 3)} | ${fmt(s.pingP99, 3)} | ${fmt(s.pingLoss, 1)} / ${fmt(s.sleepLoss, 1)} | ${added} | ${fmt(s.sleepAvg, 3)} / ${fmt(s.sleepP50, 3)} / ${fmt(s.sleepP99, 3)} | ${addedSleep} | ${fmt(s.sleepSlow, 1)} | ${fmt(s.cpuPerGbit, 2)} | ${fmt(s.pingCores, 2)} |`;
    }),
    '',
    '60 B frames: trafgen (one process) from the client container at full rate, then at half the rate the path',
    "delivered. Loss is 1 - (frames the receiving container's interface got) / (frames trafgen reports sent), the same",
    "count on every path. Refused: frames the sending container's interface turned away (its tx_dropped), as % of",
    'what trafgen offered; trafgen does not count them as sent. A TAP refuses when its reader (the forwarder) falls',
    'behind, pushing back on the sender as a full socket buffer does; a veth never refuses, and the path behind it',
    'drops instead (loss).',
    `The generator shares the machine's ${machine.cpus} CPUs with the path.`,
    'Ping: one echo every 5 ms; "CPU while pinging" is what the path\'s processes used meanwhile (1.00 = one core).',
    'iputils ping busy-waits between echoes at that interval (about one CPU); the sleeping pinger (bench/pinger.c)',
    'sends the same schedule and sleeps in between, as a request/response application would. Both follow an',
    `unmeasured warm-up of ${Math.round(run.seconds * 400)} echoes 0.5 ms apart on every path (steady state: a JIT re-optimizes for ICMP there).`,
    'Sleeping echoes over 1 ms: replies that waited for a sleeping process to run again (on a VM the vCPU it was put',
    'on can stay descheduled for milliseconds). A few of them move the average far more than the p50: the p50 is the',
    'typical exchange, the average includes the stalls.',
    ...(summary['vxtap-busy'] ? [`vxtap-busy: agents run with --busy-poll ${run.busyWindowUs} (microseconds).`] : []),
    ...encryptedLines(summary),
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
    ...Object.entries(run.failures)
      .filter(([, f]) => f.length)
      .flatMap(([p, f], i) => [
        ...(i === 0 ? ['', 'Rounds that failed (not in the medians):'] : []),
        ...f.map((m) => `- ${p}: ${m}`),
      ]),
  ].join('\n');
  mkdirSync(run.out, { recursive: true });
  writeFileSync(join(run.out, 'forwarding.md'), md + '\n');
  writeFileSync(
    join(run.out, 'forwarding.json'),
    JSON.stringify(
      {
        date: new Date().toISOString(),
        reps: run.reps,
        failures: run.failures,
        seconds: run.seconds,
        busyWindowUs: run.busyWindowUs,
        machine,
        results,
        summary,
        memory: mem,
      },
      null,
      2,
    ),
  );
  writeFileSync(join(run.out, 'forwarding.svg'), chart(summary, run.reps));
  return md;
}

/** A bar chart of TCP 1-stream Gbit/s per path (median, with min-max whiskers). */
function chart(s: Summary, reps: number): string {
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
      `<rect x="${left}" y="${y}" width="${x(v.med) - left}" height="${bar}" fill="${p.startsWith('vxtap') ? '#2b7bb9' : p.startsWith('kernel') ? '#888' : '#bbb'}"/>` +
      `<line x1="${x(v.min)}" x2="${x(v.max)}" y1="${y + bar / 2}" y2="${y + bar / 2}" stroke="#000"/>` +
      `<text x="${x(v.max) + 6}" y="${y + bar / 2 + 5}" font-size="13">${v.med.toFixed(2)} Gbit/s</text>`
    );
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">` +
    `<text x="${left}" y="24" font-size="15">TCP, 1 stream (iperf3), median of ${reps}</text>${rows.join('')}</svg>\n`
  );
}
