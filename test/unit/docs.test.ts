import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES } from '../../src/agent/errors.js';
import { DROP_REASONS } from '../../src/dataplane/counters.js';

const root = new URL('../../../', import.meta.url);

test('every agent error code is documented in docs/errors.md', () => {
  const doc = readFileSync(new URL('docs/errors.md', root), 'utf8');
  for (const code of Object.keys(ERROR_CODES)) assert.match(doc, new RegExp(`\\b${code}\\b`), `${code} missing from docs/errors.md`);
});

test('every drop reason is documented in docs/counters.md', () => {
  const doc = readFileSync(new URL('docs/counters.md', root), 'utf8');
  for (const r of DROP_REASONS) assert.match(doc, new RegExp(`\\b${r}\\b`), `${r} missing from docs/counters.md`);
});
