import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbeddedKv } from '../../src/kv/embedded.js';
import { openKv } from '../../src/kv/open.js';
import { conformance } from './conformance.js';

conformance('embedded', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const a = new EmbeddedKv(join(dir, 'store.db'));
  const b = new EmbeddedKv(join(dir, 'store.db')); // a second agent on the same machine
  return {
    a,
    b,
    compact: async (rev) => a.compact(rev),
    done: async () => {
      await a.close();
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

test('--kv parsing: etcd endpoints, file paths, clear errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const kv = openKv(join(dir, 'x.db'));
  assert.equal(kv.kind, 'embedded');
  void kv.close();
  rmSync(dir, { recursive: true, force: true });
  assert.throws(() => openKv('etcd://'), /give at least one host:port/);
  assert.throws(() => openKv('etcd://a:1,b'), /"b" is not host:port/);
  assert.throws(() => openKv('consul://x:8500'), /unsupported scheme/);
  const e = openKv('etcd://127.0.0.1:1,127.0.0.2:2');
  assert.equal(e.where, 'etcd://127.0.0.1:1,127.0.0.2:2');
  void e.close();
});
