/**
 * Local state files (the agent's endpoints, the Docker plugin's networks): JSON, root-only, replaced atomically.
 * A reader sees the old file or the new one, never a mix: the new content goes to `<path>.tmp`, is flushed to
 * disk, and is renamed over the old file; the directory is then flushed so the rename itself survives a crash.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export function writeStateFile(path: string, value: unknown): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify(value, null, 1));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}
