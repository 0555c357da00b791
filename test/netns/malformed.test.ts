/**
 * Hostile input on the wire: a corpus of malformed and unwanted VXLAN datagrams (test/helpers/sendjunk.ts) is
 * sent to a live agent from a known VTEP address and from an unknown one. Every datagram must be dropped with
 * exactly the right reason counter, nothing reaches the container, the agent stays up, and forwarding goes on.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseMac } from '../../src/vxlan/mac.js';
import { DROP_REASONS } from '../../src/dataplane/counters.js';
import { readFileSync } from 'node:fs';
import { type Agent, isRoot, must, ping, poll, sh, Topo, waitPing, CLI } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
const SENDJUNK = join(CLI, '../../../test/helpers/sendjunk.js');
let topo: Topo;
let a1: Agent;
let c1 = '';
let c2 = '';
let c1mac = '';
let h2: { ns: string; addr: string; ifname: string };

let startedAt = 0;

before(async () => {
  if (skip) return;
  topo = new Topo();
  const h1 = topo.host('h1');
  h2 = topo.host('h2');
  startedAt = Date.now();
  a1 = await topo.agent(h1);
  const a2 = await topo.agent(h2);
  await a1.call('POST', '/v1/networks', { name: 'blue', vni: 4097, subnet: '198.19.1.0/24' });
  for (let i = 0; i < 50 && (await a2.call<unknown[]>('GET', '/v1/networks')).length < 1; i++)
    await new Promise((r) => setTimeout(r, 20));
  c1 = topo.ns('c1', { quiet: true });
  c2 = topo.ns('c2', { quiet: true });
  c1mac = (
    await a1.call<{ mac: string }>('POST', '/v1/endpoints', {
      network: 'blue',
      netns: c1,
      name: 'c1',
      ip: '198.19.1.10',
    })
  ).mac;
  await a2.call('POST', '/v1/endpoints', { network: 'blue', netns: c2, name: 'c2', ip: '198.19.1.20' });
  must(['ip', '-n', h2.ns, 'addr', 'add', '198.18.0.99/24', 'dev', h2.ifname]); // an address no agent knows
});

after(async () => {
  if (topo) await topo.cleanup();
});

type Stats = { counters: Record<string, number>; drops: Record<string, number> };

test(
  'every malformed or unwanted datagram is dropped with the right reason; forwarding goes on',
  { skip },
  async () => {
    assert.ok(await waitPing(c2, '198.19.1.10'));
    const before = await a1.call<Stats>('GET', '/v1/stats');
    const r = sh([
      'ip',
      'netns',
      'exec',
      h2.ns,
      'node',
      SENDJUNK,
      h2.addr,
      '198.18.0.1:4789',
      '4097',
      String(parseMac(c1mac)),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const sent: Record<string, number> = JSON.parse(r.stdout);
    const r2 = sh([
      'ip',
      'netns',
      'exec',
      h2.ns,
      'node',
      SENDJUNK,
      '198.18.0.99',
      '198.18.0.1:4789',
      '4097',
      String(parseMac(c1mac)),
    ]);
    assert.equal(r2.code, 0, r2.stderr);
    const sentUnknown = Object.values(JSON.parse(r2.stdout) as Record<string, number>).reduce((x, y) => x + y, 0);
    // datagrams are counted as they are read: wait until all have been
    const total = Object.values(sent).reduce((x, y) => x + y, 0) + sentUnknown;
    let after = before;
    for (let i = 0; i < 50; i++) {
      after = await a1.call<Stats>('GET', '/v1/stats');
      const seen =
        after.counters.rx_datagrams -
        before.counters.rx_datagrams +
        (after.counters.rx_truncated - before.counters.rx_truncated);
      if (seen >= total) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const delta = Object.fromEntries(
      DROP_REASONS.map((k) => [k, after.drops[k] - before.drops[k]]).filter(([, n]) => n !== 0),
    );
    // stages run in order (rcv.ts): the length check comes before the VTEP check, so short datagrams from the
    // unknown address are rx_short; everything else from it is rx_unknown_vtep
    const expected = { ...sent, rx_short: sent.rx_short * 2, rx_unknown_vtep: sentUnknown - sent.rx_short };
    assert.deepEqual(delta, expected, 'each reason counted exactly as many times as sent');
    assert.equal(after.counters.rx_frames, before.counters.rx_frames, 'nothing was delivered to the container');
    assert.equal(a1.proc.exitCode, null, 'agent alive');
    assert.equal(ping(c2, '198.19.1.10', 5).received, 5, 'forwarding keeps working');
    console.log(`# dropped ${total} datagrams: ${JSON.stringify(delta)}`);
    // the log says so, at most once per 10 s interval, never once per packet (wait for the interval's line)
    const dropLines = () =>
      readFileSync(a1.logFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('packets dropped in the last interval'));
    const logged = await poll(dropLines, (ls) => ls.length > 0, 15_000, 100);
    assert.ok(logged.ok, 'the drops were logged');
    const maxLines = Math.ceil((Date.now() - startedAt) / 10_000) + 1;
    assert.ok(
      logged.v.length <= maxLines,
      `${logged.v.length} drop log lines for ${total} drops (at most ${maxLines})`,
    );
    const reported = logged.v
      .map((l) => JSON.parse(l) as { drops: Record<string, number> })
      .reduce((n, l) => n + Object.values(l.drops).reduce((x, y) => x + y, 0), 0);
    assert.ok(reported >= total, `the log lines count ${reported} drops, ${total} were sent`);
  },
);
