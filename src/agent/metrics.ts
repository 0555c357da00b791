/**
 * Prometheus metrics (`vxtap agent --metrics [HOST]:PORT`, GET /metrics), with prom-client. Every value is read
 * from the agent's counters at scrape time (collect callbacks): the data plane never calls into this module.
 */
import { createServer, type Server } from 'node:http';
import client from 'prom-client';
import { formatVtep } from '../common/vtep.js';
import type { Agent } from './agent.js';
import { DROP_REASONS } from '../dataplane/counters.js';
import { invalid } from '../common/errors.js';

type Sample = [labels: Record<string, string>, value: number];

export function metricsRegistry(agent: Agent): client.Registry {
  const reg = new client.Registry();
  reg.setDefaultLabels({ host: agent.host });
  client.collectDefaultMetrics({ register: reg, prefix: 'vxtap_' }); // vxtap_process_*, vxtap_nodejs_*
  // One factory for both kinds: every value is read from the agent at scrape time
  const metric =
    (Kind: typeof client.Counter | typeof client.Gauge, apply: 'inc' | 'set') =>
    (name: string, help: string, labelNames: string[], read: () => Sample[]) =>
      new (Kind as typeof client.Gauge)({
        name,
        help,
        labelNames,
        registers: [reg],
        collect() {
          this.reset();
          for (const [l, v] of read()) this[apply as 'set'](l, v);
        },
      });
  const counter = metric(client.Counter, 'inc');
  const gauge = metric(client.Gauge, 'set');
  const c = () => agent.dp.counters;
  const nets = () => [...agent.networks.values()];
  counter(
    'vxtap_frames_total',
    'Frames per network and direction (tx: from local endpoints, rx: from the wire to them)',
    ['network', 'vni', 'direction'],
    () =>
      nets().flatMap((n) => {
        const s = agent.dp.vniStats(n.vni);
        return [
          [{ network: n.name, vni: String(n.vni), direction: 'tx' }, s.tx_packets],
          [{ network: n.name, vni: String(n.vni), direction: 'rx' }, s.rx_packets],
        ] as Sample[];
      }),
  );
  counter('vxtap_bytes_total', 'Frame bytes per network and direction', ['network', 'vni', 'direction'], () =>
    nets().flatMap((n) => {
      const s = agent.dp.vniStats(n.vni);
      return [
        [{ network: n.name, vni: String(n.vni), direction: 'tx' }, s.tx_bytes],
        [{ network: n.name, vni: String(n.vni), direction: 'rx' }, s.rx_bytes],
      ] as Sample[];
    }),
  );
  counter('vxtap_peer_packets_total', 'VXLAN packets per remote VTEP and direction', ['vtep', 'direction'], () =>
    agent.fdb.peers().flatMap(
      (p) =>
        [
          [{ vtep: formatVtep(p.vtep), direction: 'tx' }, p.tx_packets],
          [{ vtep: formatVtep(p.vtep), direction: 'rx' }, p.rx_packets],
        ] as Sample[],
    ),
  );
  counter('vxtap_peer_bytes_total', 'Inner frame bytes per remote VTEP and direction', ['vtep', 'direction'], () =>
    agent.fdb.peers().flatMap(
      (p) =>
        [
          [{ vtep: formatVtep(p.vtep), direction: 'tx' }, p.tx_bytes],
          [{ vtep: formatVtep(p.vtep), direction: 'rx' }, p.rx_bytes],
        ] as Sample[],
    ),
  );
  counter('vxtap_drops_total', 'Packets dropped, by reason (docs/counters.md)', ['reason'], () =>
    DROP_REASONS.map((r) => [{ reason: r }, c()[r]] as Sample),
  );
  counter(
    'vxtap_batches_total',
    'Batches processed per direction (packets per batch = vxtap_batch_packets_total / this)',
    ['direction'],
    () => [
      [{ direction: 'tx' }, c().tx_batches],
      [{ direction: 'rx' }, c().rx_batches],
    ],
  );
  counter('vxtap_batch_packets_total', 'Packets read in batches per direction', ['direction'], () => [
    [{ direction: 'tx' }, c().tx_packets],
    [{ direction: 'rx' }, c().rx_datagrams],
  ]);
  counter('vxtap_datagrams_sent_total', 'VXLAN datagrams the kernel accepted', [], () => [[{}, c().tx_udp_datagrams]]);
  counter('vxtap_arp_suppressed_total', 'ARP requests answered locally', [], () => [[{}, c().arp_suppressed]]);
  counter('vxtap_nd_suppressed_total', 'IPv6 neighbour solicitations answered locally', [], () => [
    [{}, c().nd_suppressed],
  ]);
  counter('vxtap_icmp_frag_needed_total', 'ICMP fragmentation-needed messages sent to endpoints', [], () => [
    [{}, c().icmp_frag_needed],
  ]);
  counter('vxtap_icmp6_packet_too_big_total', 'ICMPv6 packet-too-big messages sent to endpoints', [], () => [
    [{}, c().icmp6_packet_too_big],
  ]);
  counter('vxtap_learned_total', 'Remote MACs learned from traffic', [], () => [[{}, c().learned]]);
  counter(
    'vxtap_sealed_total',
    'Datagrams of encrypted networks sealed (tx) and opened after their tag verified (rx); failures are drops',
    ['direction'],
    () => [
      [{ direction: 'tx' }, c().tx_sealed],
      [{ direction: 'rx' }, c().rx_opened],
    ],
  );
  gauge('vxtap_fdb_entries', 'FDB entries by kind (flood = flood-list rows)', ['kind'], () =>
    Object.entries(agent.fdb.size()).map(([k, v]) => [{ kind: k }, v] as Sample),
  );
  gauge('vxtap_endpoints', 'Local endpoints', [], () => [[{}, agent.endpoints.size]]);
  const kv = () => agent.reconciler.status;
  gauge('vxtap_kv_connected', '1 while the KV watch is connected', [], () => [[{}, kv().connected ? 1 : 0]]);
  gauge('vxtap_kv_registered', '1 while this host is registered under a live lease', [], () => [
    [{}, agent.isRegistered() ? 1 : 0],
  ]);
  gauge('vxtap_kv_revision', 'KV revision the tables reflect', [], () => [[{}, kv().revision]]);
  gauge('vxtap_kv_seconds_since_full_sync', 'Seconds since the last full re-list', [], () => [
    [{}, kv().lastFullSync ? (Date.now() - kv().lastFullSync) / 1000 : -1],
  ]);
  gauge(
    'vxtap_kv_seconds_since_verified',
    'Seconds since the state was last confirmed current (a full re-list, or a periodic check that found the watch at the store revision)',
    [],
    () => [[{}, kv().lastVerified ? (Date.now() - kv().lastVerified) / 1000 : -1]],
  );
  gauge(
    'vxtap_kv_watch_lag_seconds',
    'Seconds since the watch last delivered events or confirmed its position (0 when idle and connected)',
    [],
    () => [[{}, agent.watchLagSeconds()]],
  );
  counter('vxtap_kv_watch_errors_total', 'KV watch errors', [], () => [[{}, kv().watchErrors]]);
  counter('vxtap_kv_reconnects_total', 'KV watch reconnects', [], () => [[{}, kv().reconnects]]);
  counter('vxtap_kv_full_syncs_total', 'Lists of a followed key range (first lists and re-lists)', [], () => [
    [{}, kv().fullSyncs],
  ]);
  gauge(
    'vxtap_kv_watches',
    'Key ranges followed (list + watch): networks, hosts, and the endpoints of each network used here',
    [],
    () => [[{}, kv().watches]],
  );
  const bp = () => agent.busyPollStatus();
  counter('vxtap_busy_poll_hits_total', 'Busy polls (--busy-poll) that found a packet waiting', [], () =>
    bp() ? [[{}, bp()!.hits]] : [],
  );
  counter(
    'vxtap_busy_poll_seconds_total',
    'Seconds spent busy polling (--busy-poll): CPU kept busy for latency',
    [],
    () => (bp() ? [[{}, bp()!.spin_seconds]] : []),
  );
  counter(
    'vxtap_io_uring_enters_total',
    'io_uring_enter calls that carried TAP batches (0: io_uring off, see vxtap stats)',
    [],
    () => [[{}, agent.ioUringStatus().enters]],
  );
  counter('vxtap_io_uring_requests_total', 'TAP reads and writes carried by io_uring', [], () => [
    [{}, agent.ioUringStatus().ops],
  ]);
  counter(
    'vxtap_tap_single_reads_total',
    'TAP reads that took the single-frame path (plain read calls: the last read of that TAP found at most one frame)',
    [],
    () => [[{}, agent.ioUringStatus().single_reads]],
  );
  counter(
    'vxtap_udp_coalesced_sends_total',
    'UDP GSO sends that carried two or more queued VXLAN datagrams',
    [],
    () => [[{}, agent.coalesceStatus().sends]],
  );
  counter('vxtap_udp_coalesced_datagrams_total', 'VXLAN datagrams sent inside such coalesced sends', [], () => [
    [{}, agent.coalesceStatus().datagrams],
  ]);
  gauge('vxtap_kv_invalid_records', 'Records in the store that failed validation (ignored)', [], () => [
    [{}, kv().invalidRecords],
  ]);
  return reg;
}

/** Parses "[HOST]:PORT" (default host 127.0.0.1). */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):)?(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535)
    throw invalid(`--metrics ${JSON.stringify(s)}: expected [HOST]:PORT, e.g. 127.0.0.1:9410`);
  return { host: (m[1] || '127.0.0.1').replace(/^\[|\]$/g, ''), port };
}

export async function serveMetrics(agent: Agent, listen: string): Promise<Server> {
  const { host, port } = parseListen(listen);
  const reg = metricsRegistry(agent);
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('try GET /metrics\n');
      return;
    }
    reg.metrics().then(
      (text) => res.writeHead(200, { 'content-type': reg.contentType }).end(text),
      (e) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
