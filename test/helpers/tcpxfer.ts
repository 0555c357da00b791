/**
 * Byte-exact TCP transfer for netns tests (run inside a namespace with `ip netns exec`):
 *   node tcpxfer.js server ADDR PORT          accepts one connection, prints {"bytes","sha256"} when it closes
 *   node tcpxfer.js client ADDR PORT BYTES     sends BYTES of seeded pseudo-random data, prints the same
 * Bounded: the server exits after one connection or 60 s.
 */
import { createHash } from 'node:crypto';
import { connect, createServer } from 'node:net';

const [mode, addr, portS, bytesS] = process.argv.slice(2);
const port = Number(portS);

if (mode === 'server') {
  const timer = setTimeout(() => process.exit(3), 60_000);
  const srv = createServer((s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (d: Buffer) => {
      n += d.length;
      h.update(d);
    });
    s.on('end', () => {
      process.stdout.write(JSON.stringify({ bytes: n, sha256: h.digest('hex') }) + '\n');
      s.end();
      srv.close();
      clearTimeout(timer);
    });
  });
  srv.listen(port, addr, () => process.stderr.write('listening\n'));
} else if (mode === 'client') {
  const total = Number(bytesS);
  const h = createHash('sha256');
  const s = connect(port, addr);
  let sent = 0;
  let x = 0x12345678;
  const chunk = (): Buffer => {
    const b = Buffer.allocUnsafe(Math.min(65536, total - sent));
    for (let i = 0; i < b.length; i++) {
      if ((i & 3) === 0) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
      }
      b[i] = (x >>> ((i & 3) * 8)) & 0xff;
    }
    return b;
  };
  const pump = (): void => {
    while (sent < total) {
      const b = chunk();
      sent += b.length;
      h.update(b);
      if (!s.write(b)) {
        s.once('drain', pump);
        return;
      }
    }
    s.end();
  };
  s.on('connect', pump);
  s.on('close', () => process.stdout.write(JSON.stringify({ bytes: sent, sha256: h.digest('hex') }) + '\n'));
  s.on('error', (e) => {
    console.error(e.message);
    process.exit(1);
  });
} else {
  console.error('usage: tcpxfer.js server ADDR PORT | client ADDR PORT BYTES');
  process.exit(2);
}
