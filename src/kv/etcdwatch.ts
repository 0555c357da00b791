/**
 * The etcd watch thread (a worker_threads Worker started by EtcdKv at its first watch): its own etcd client, the
 * watches the main thread asks for, and their events sent back as plain arrays.
 *
 * Why a thread: under churn (thousands of endpoint changes a second) etcd sends one watch response per change, and
 * decoding them (gRPC, protobuf, the client's events, the garbage they leave) on the agent's main thread took CPU
 * from the data plane in slices long enough to delay forwarding on every network (bench/results/history.md entry
 * 24). Here that work runs beside the data plane, and the main thread gets one message per batch.
 *
 * Batching: events are passed on at once if nothing was sent in the last BATCH_MS, otherwise when BATCH_MS have
 * passed since the last send, so a burst becomes a few messages of many events and a lone change is not held
 * back. Order is kept per watch (errors and reconnections flush what is queued first).
 *
 * Priority: the thread runs at nice NICE, so when it and the data plane want the same CPU the data plane wins.
 */
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { type ClientSpec, etcdClient, type WatchReport, type WatchRequest, watchOn } from './etcd.js';
import type { KvEvent, Watch } from './kv.js';

const BATCH_MS = 2;
/** This thread's nice value (Linux: per thread; 0 is "the calling thread"): a packet that wakes the data plane
 * preempts a burst being decoded here rather than waiting for its time slice; the watch catches up after. */
const NICE = 10;

try {
  setPriority(0, NICE);
} catch {
  /* not permitted (a container without CAP_SYS_NICE may still raise it; lowering is never needed): run as is */
}

const port = parentPort!;
const client = etcdClient(workerData as ClientSpec);
const watches = new Map<number, Watch>();
const queued = new Map<number, { events: KvEvent[]; revision: number }>();
let lastSend = 0;
let timer: NodeJS.Timeout | null = null;

function flush(): void {
  if (timer) clearTimeout(timer);
  timer = null;
  lastSend = performance.now();
  for (const [id, q] of queued) port.postMessage({ id, kind: 'events', ...q } satisfies WatchReport);
  queued.clear();
}

function schedule(): void {
  if (timer) return;
  timer = setTimeout(flush, Math.max(0, BATCH_MS - (performance.now() - lastSend)));
}

port.on('message', (m: WatchRequest) => {
  if (m.op === 'close') {
    watches.get(m.id)?.close();
    watches.delete(m.id);
    queued.delete(m.id);
    return;
  }
  const id = m.id;
  watches.set(
    id,
    watchOn(client, m.prefix, m.fromRevision, {
      events(events, revision) {
        const q = queued.get(id);
        if (q) {
          for (const e of events) q.events.push(e);
          q.revision = revision;
        } else queued.set(id, { events: [...events], revision });
        schedule();
      },
      error(err) {
        if (queued.size) flush();
        port.postMessage({ id, kind: 'error', code: err.code, message: err.message } satisfies WatchReport);
      },
      reconnected() {
        if (queued.size) flush();
        port.postMessage({ id, kind: 'reconnected' } satisfies WatchReport);
      },
    }),
  );
});
