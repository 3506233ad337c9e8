// A CommandSession over a real interpreter (`sh` reading its standard input, as `ip -batch -` and
// `nft -i` do): one process answers many groups, each group gets its own output or its failure,
// and an interpreter that died, hung or cannot run is replaced without losing a group.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { CommandSession, type SessionDialect } from './command-session.ts';
import { CommandError } from './exec.ts';

const shell: SessionDialect = {
  file: 'sh',
  args: ['-s'],
  marker: 'echo @@end',
  isMarkerLine: (line) => line === '@@end',
  isFailureLine: (line) => line.startsWith('FAILED'),
  oneOffArgs: ['-s'],
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await sleep(10);
  assert.ok(condition(), 'condition not met within 2 s');
}

test('one interpreter answers every group, each with its own output, also when asked all at once', async () => {
  const session = new CommandSession(shell);
  const first = await session.run(['echo $$']);
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => session.run([`echo pid $$`, `echo group ${i}`])));
  answers.forEach((output, i) => assert.equal(output, `pid ${first}\ngroup ${i}`));
  assert.equal(await session.run(['true']), '', 'a group with no output');
  session.close();
});

test('a failing line rejects its group with the output; the group ran to its end and the next one is fine', async () => {
  const session = new CommandSession(shell);
  const failed = await session.run(['echo before', 'echo FAILED: no such thing', 'echo after']).catch((e: unknown) => e);
  assert.ok(failed instanceof CommandError);
  assert.match(failed.message, /echo before; echo FAILED: no such thing; echo after/);
  assert.equal(failed.stderr, 'before\nFAILED: no such thing\nafter');
  assert.equal(await session.run(['echo next']), 'next');
  session.close();
});

test('an interpreter that dies is replaced; a group it was running is run again as a process of its own', async () => {
  const session = new CommandSession(shell);
  const pid = Number(await session.run(['echo $$']));
  process.kill(pid, 'SIGKILL');
  await until(() => !alive(pid));
  const next = Number(await session.run(['echo $$']));
  assert.notEqual(next, pid, 'a new interpreter');
  // Killed in the middle of a group: the group's answer still comes (from a one-off `sh -s`).
  const during = session.run(['sleep 0.3', 'echo done']);
  await sleep(100);
  process.kill(next, 'SIGKILL');
  assert.equal(await during, 'done');
  const third = Number(await session.run(['echo $$']));
  assert.ok(third !== pid && third !== next);
  session.close();
});

test('a hung interpreter is killed after the timeout and the next group gets a new one', async () => {
  const session = new CommandSession(shell, 300);
  const pid = Number(await session.run(['echo $$']));
  await assert.rejects(session.run(['sleep 2']), (error: unknown) => error instanceof CommandError);
  await until(() => !alive(pid));
  assert.notEqual(Number(await session.run(['echo $$'])), pid);
  session.close();
});

test('an interpreter that cannot run here is given up: every group runs as a process of its own', async () => {
  const session = new CommandSession({ ...shell, args: ['-c', 'echo "no interactive mode"; exit 3'] });
  const pids = [await session.run(['echo $$']), await session.run(['echo $$']), await session.run(['echo $$'])];
  assert.equal(new Set(pids).size, 3, 'one process per group');
  await assert.rejects(session.run(['echo FAILED', 'exit 1']), CommandError);
  session.close();
});
