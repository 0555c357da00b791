/**
 * The forwarding benchmark's smoke run (what CI runs of it): kernel VXLAN, the C floor forwarder sleeping and
 * spinning, vxtap and vxtap with busy polling side by side on fresh topologies, 1 s per measurement. Asserts the
 * benchmark produces a table with real numbers for every row, NOT any speed: targets are ratios reported by
 * `npm run bench`, never timed assertions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, isRoot, sh } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
const BENCH = join(CLI, '../../../bench/forwarding.js');

test(
  'bench --quick: kernel, floor, floor-busy, vxtap and vxtap-busy rows with numbers, JSON and SVG written',
  { skip },
  () => {
    const out = mkdtempSync(join(tmpdir(), 'vxt-bench-'));
    let rows: string[] = [];
    try {
      const r = sh(
        ['node', BENCH, '--quick', '--time', '1', '--paths', 'kernel,floor,floor-busy,vxtap,vxtap-busy', '--out', out],
        300_000,
      );
      assert.equal(r.code, 0, r.stderr);
      rows = r.stdout.split('\n').filter((l) => /^\| (kernel|floor|floor-busy|vxtap|vxtap-busy) \|/.test(l));
      assert.equal(rows.length, 5, r.stdout);
      assert.match(
        r.stdout,
        /^Machine: .+, \d+ CPUs, kernel \S+, a null syscall \d+ ns/m,
        'the table names the machine it ran on',
      );
      assert.match(
        r.stdout,
        /^Wake-ups: [\d.]+ us for a task woken on the waker's CPU, ([\d.]+|\?) us on an idle other CPU/m,
        'and what a wake-up costs there',
      );
      const json = JSON.parse(readFileSync(join(out, 'forwarding.json'), 'utf8'));
      for (const p of ['kernel', 'floor', 'floor-busy', 'vxtap', 'vxtap-busy']) {
        const s = json.summary[p];
        assert.ok(
          s.tcp1.med > 0 &&
            s.pps60.med > 0 &&
            s.pingAvg.med > 0 &&
            s.sleepAvg.med > 0 &&
            Number.isFinite(s.lossHalf.med),
          `${p}: ${JSON.stringify(s)}`,
        );
        // the sleeping pinger's p50 and its share of replies over 1 ms (bench/pinger.c's 7th field) are parsed
        assert.ok(
          s.sleepP50.med > 0 && s.sleepP50.med <= s.sleepP99.med,
          `${p}: sleeping p50 ${s.sleepP50.med} ms, p99 ${s.sleepP99.med} ms`,
        );
        assert.ok(
          s.sleepSlow.med >= 0 && s.sleepSlow.med <= 100,
          `${p}: sleeping echoes over 1 ms ${s.sleepSlow.med} %`,
        );
      }
      for (const p of ['floor', 'floor-busy', 'vxtap', 'vxtap-busy']) {
        assert.ok(Number.isFinite(json.summary[p].cpuPerGbit.med), `${p}: CPU per Gbit measured for a userspace path`);
        assert.ok(
          Number.isFinite(json.summary[p].pingCores.med),
          `${p}: CPU while pinging measured for a userspace path`,
        );
      }
      assert.ok(!Number.isFinite(json.summary.kernel.pingCores.med), 'no process CPU for the kernel path');
      assert.match(readFileSync(join(out, 'forwarding.svg'), 'utf8'), /<svg/);
    } finally {
      rmSync(out, { recursive: true, force: true }); // also when an assertion failed
    }
    console.log(rows.join('\n'));
  },
);
