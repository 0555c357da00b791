#!/usr/bin/env node
// Runs the compiled test files with node's test runner, one file at a time (netns tests own the machine's
// network resources while they run). `--unit` runs only the unit tests (no root needed).
import { readdirSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const unitOnly = process.argv.includes('--unit');
const dirs = ['dist/test/unit', ...(unitOnly ? [] : ['dist/test/kv', 'dist/test/netns', 'dist/test/docker'])];
const files = dirs
  .filter((d) => existsSync(d))
  .flatMap((d) =>
    readdirSync(d)
      .filter((f) => f.endsWith('.test.js'))
      .sort()
      .map((f) => join(d, f)),
  )
  // only tests that still have a source: tsc does not delete the output of a test file renamed or removed
  .filter((f) => existsSync(f.replace(/^dist\//, '').replace(/\.js$/, '.ts')));
if (!unitOnly && process.getuid && process.getuid() !== 0) {
  console.error('run-tests: the netns tests need root; run as root or use --unit');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
