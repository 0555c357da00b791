/**
 * Sends datagrams given in hex from a bound address, from inside a test namespace:
 *   node dist/test/helpers/sendraw.js FROM_ADDR TO_ADDR PORT HEX [HEX...]
 * Each HEX is one datagram, sent once, in order. Bounded by its arguments.
 */
import { DgramAsPromised } from 'dgram-as-promised';

async function main(): Promise<void> {
  const [from, to, port, ...hex] = process.argv.slice(2);
  const sock = DgramAsPromised.createSocket(from.includes(':') ? 'udp6' : 'udp4');
  await sock.bind(0, from);
  for (const h of hex) await sock.send(Buffer.from(h, 'hex'), Number(port), to);
  await sock.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
