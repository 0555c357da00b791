/**
 * Sends a fixed corpus of malformed and unwanted VXLAN datagrams to an agent, from inside a test namespace:
 *   node dist/test/helpers/sendjunk.js FROM_ADDR TO_ADDR:PORT VNI
 * Prints a JSON object: how many datagrams of each expected drop reason it sent. Bounded: ~100 datagrams.
 */
import { DgramAsPromised } from 'dgram-as-promised';
import { randomBytes } from 'node:crypto';
import { vxlanDatagram } from './frames.js';
import { writeMac } from '../../src/vxlan/mac.js';

export function corpus(vni: number, localMac: number): { reason: string; data: Uint8Array }[] {
  const inner = new Uint8Array(60);
  writeMac(0xffffffffffff, inner, 0);
  writeMac(0x02000000c0de, inner, 6);
  inner[12] = 0x08;
  const out: { reason: string; data: Uint8Array }[] = [];
  const add = (reason: string, n: number, f: (i: number) => Uint8Array) => {
    for (let i = 0; i < n; i++) out.push({ reason, data: f(i) });
  };
  add('rx_short', 10, (i) => randomBytes(i * 2)); // 0..18 bytes: less than 8 + 14
  add('rx_bad_flags', 10, () => vxlanDatagram(vni, inner, 0x00)); // I flag missing
  add('rx_bad_flags', 10, () => vxlanDatagram(vni, inner, 0x0c)); // GPE next-protocol bit
  add('rx_bad_flags', 10, () => vxlanDatagram(vni, inner, 0xff));
  add('rx_unknown_vni', 10, (i) => vxlanDatagram(vni + 1 + i, inner));
  add('rx_group_src_mac', 5, () => {
    const f = Uint8Array.from(inner);
    writeMac(0x01005e000001, f, 6);
    return vxlanDatagram(vni, f);
  });
  add('rx_src_mac_local', 5, () => {
    const f = Uint8Array.from(inner);
    writeMac(localMac, f, 6);
    return vxlanDatagram(vni, f);
  });
  add('rx_no_local_dst', 5, () => {
    const f = Uint8Array.from(inner);
    writeMac(0x02000000dead, f, 0);
    return vxlanDatagram(vni, f);
  });
  // random bodies behind a valid flags octet and VNI 0, which no network can have (VNIs are 1..2^24-1)
  add('rx_unknown_vni', 20, (i) => {
    const d = randomBytes(8 + 14 + i * 7);
    d[0] = 0x08;
    d[4] = 0;
    d[5] = 0;
    d[6] = 0; // VNI 0: never configured
    return d;
  });
  return out;
}

async function main(): Promise<void> {
  const [from, to, vniS, macS] = process.argv.slice(2);
  const [addr, portS] = to.split(':');
  const sock = DgramAsPromised.createSocket('udp4');
  await sock.bind(0, from);
  const counts: Record<string, number> = {};
  for (const { reason, data } of corpus(Number(vniS), Number(macS))) {
    await sock.send(data, Number(portS), addr);
    counts[reason] = (counts[reason] ?? 0) + 1;
  }
  await sock.close();
  process.stdout.write(JSON.stringify(counts) + '\n');
}

if (process.argv[1]?.endsWith('sendjunk.js')) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
