import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES } from '../../src/common/errors.js';
import { DROP_REASONS } from '../../src/dataplane/counters.js';

const root = new URL('../../../', import.meta.url);

test('every agent error code is documented in docs/errors.md', () => {
  const doc = readFileSync(new URL('docs/errors.md', root), 'utf8');
  for (const code of Object.keys(ERROR_CODES))
    assert.match(doc, new RegExp(`\\b${code}\\b`), `${code} missing from docs/errors.md`);
});

test('every drop reason is documented in docs/counters.md', () => {
  const doc = readFileSync(new URL('docs/counters.md', root), 'utf8');
  for (const r of DROP_REASONS) assert.match(doc, new RegExp(`\\b${r}\\b`), `${r} missing from docs/counters.md`);
});

test('the agent is started with --no-memory-reducer everywhere (V8 reads it only from the command line)', () => {
  const first = readFileSync(new URL('src/cli/main.ts', root), 'utf8').split('\n')[0];
  assert.equal(first, '#!/usr/bin/env -S node --no-memory-reducer', "the vxtap command's #! line");
  // every place in the project that starts `main.js agent` through node
  for (const f of [
    'bench/forwarding/topology.ts',
    'scripts/demo.sh',
    'test/helpers/topo.ts',
    'test/helpers/docker.ts',
  ]) {
    const src = readFileSync(new URL(f, root), 'utf8');
    if (f === 'test/helpers/topo.ts') {
      // node's options are an argument there (a test starts one agent without the flag, to see the warning)
      assert.match(src, /\$\{\(opts\.nodeArgs \?\? \['--no-memory-reducer'\]\)\.join\(' '\)\} \$\{CLI\}/, f);
      continue;
    }
    const starts = src.match(/\bnode (--[a-z-]+ )*\S*(CLI|main\.js)\b/g) ?? [];
    assert.ok(starts.length > 0, `${f}: no agent start found`);
    for (const s of starts) assert.match(s, /--no-memory-reducer/, `${f}: ${s}`);
  }
});
