/**
 * A tshark capture on an interface of a test namespace, written to a pcap for later reads: started and live (tshark
 * prints "Capturing on" before its filter is, so callers also wait until `printed()` shows a packet), stopped by
 * SIGINT, and ended at the topology's cleanup if a test fails first. Bounded: 60 s at most.
 */
import type { Topo } from './topo.js';

export interface Capture {
  /** What tshark printed so far (a line per packet). */
  printed(): string;
  /** Ends the capture and waits until the pcap is complete. */
  stop(): Promise<void>;
}

export async function startCapture(
  topo: Topo,
  ns: string,
  ifname: string,
  filter: string,
  pcap: string,
): Promise<Capture> {
  const cap = topo.spawn([
    'ip',
    'netns',
    'exec',
    ns,
    'tshark',
    '-i',
    ifname,
    '-f',
    filter,
    '-w',
    pcap,
    '-P', // also print a line per packet, flushed (-l): how the caller knows the filter is live
    '-l',
    '-n',
    '-o',
    'tcp.analyze_sequence_numbers:FALSE',
    '-o',
    'tcp.desegment_tcp_streams:FALSE',
    '-a',
    'duration:60',
  ]);
  let printed = '';
  cap.stdout!.on('data', (d: Buffer) => (printed += d.toString()));
  await new Promise<void>((res, rej) => {
    let err = '';
    cap.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (/Capturing on/.test(err)) res();
    });
    cap.once('exit', (c) => rej(new Error(`tshark exited ${c}: ${err}`)));
  });
  return {
    printed: () => printed,
    async stop() {
      cap.kill('SIGINT');
      await new Promise((res) => (cap.exitCode !== null ? res(null) : cap.once('exit', res)));
    },
  };
}
