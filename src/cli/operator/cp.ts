// `clarateach cp SRC DST`: a file to or from a seat, streamed both ways, with progress. A seat's
// path is written `WS/SEAT:PATH` (e.g. `lab/3:/notes.txt`); the other side is a local path.
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { AgentClient } from '../../agent-client/client.ts';
import { formatBytes, progressLine, UsageError } from './output.ts';

export interface SeatPath {
  readonly workshop: string;
  readonly seat: number;
  readonly path: string;
}

const SEAT_PATH = /^([a-z0-9][a-z0-9-]{0,62})\/(\d{1,6}):(.*)$/;

export function parseSeatPath(text: string): SeatPath | undefined {
  const match = SEAT_PATH.exec(text);
  if (!match) return undefined;
  return { workshop: match[1] ?? '', seat: Number(match[2]), path: match[3] ?? '' };
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

export async function copy(client: AgentClient, source: string, target: string, showProgress: boolean): Promise<string> {
  const from = parseSeatPath(source);
  const to = parseSeatPath(target);
  if (from && to) throw new UsageError('copy between two seats is not supported: copy to a local file first');
  if (!from && !to) throw new UsageError('one side must be a seat path, WS/SEAT:PATH (e.g. lab/3:/notes.txt)');
  if (to) {
    const remote = to.path === '' || to.path.endsWith('/') ? `${to.path}${basename(source)}` : to.path;
    const progress = progressLine(`${basename(source)} → ${to.workshop}/${to.seat}:${remote}`, showProgress);
    await client.upload(to.workshop, to.seat, remote, source, (done, total) => progress.update(done, total));
    progress.done();
    return `${source} → ${to.workshop}/${to.seat}:${remote} (${formatBytes((await stat(source)).size)})`;
  }
  if (!from) throw new UsageError('unreachable');
  const name = basename(from.path) || 'download';
  const local = (await isDirectory(target)) ? join(target, name) : target;
  const progress = progressLine(`${from.workshop}/${from.seat}:${from.path} → ${local}`, showProgress);
  const bytes = await client.download(from.workshop, from.seat, from.path, local, (done, total) => progress.update(done, total));
  progress.done();
  return `${from.workshop}/${from.seat}:${from.path} → ${local} (${formatBytes(bytes)})`;
}
