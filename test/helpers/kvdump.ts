/** Prints the keys and values under a prefix as JSON: `node kvdump.js KV PREFIX` (run inside a test namespace). */
import { openKv } from '../../src/kv/open.js';

const [where, prefix] = process.argv.slice(2);
const kv = await openKv(where);
try {
  const { entries } = await kv.list(prefix);
  console.log(JSON.stringify(entries.map((e) => ({ key: e.key.slice(prefix.length), value: e.value }))));
} finally {
  await kv.close();
}
