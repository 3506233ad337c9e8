// One long-lived command interpreter (`ip -batch -`, `nft -i`) fed groups of command lines on its
// standard input. Starting a process costs milliseconds here (more from a large parent), and the
// network steps of a create run on the learner's clock: a session pays that once.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { CommandError, run } from './exec.ts';

/** How one interpreter is started, how the end of a group is seen, and what a failure looks like. */
export interface SessionDialect {
  readonly file: string;
  readonly args: readonly string[];
  /** A cheap command that always succeeds, written after each group: its output ends the group. */
  readonly marker: string;
  readonly isMarkerLine: (line: string) => boolean;
  /** Whether a line of a group's output says one of its commands failed. */
  readonly isFailureLine: (line: string) => boolean;
  /** Arguments that run one group as a process of its own (commands on its input, exit code 0 or
   * not), used when the interpreter died or hung during the group, or cannot run here at all. */
  readonly oneOffArgs: readonly string[];
}

/** The interpreter died or hung before the group was done. */
class InterpreterGone extends Error {}

interface Pending {
  readonly lines: string[];
  readonly resolve: (output: string) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
  readonly commands: string;
}

type Interpreter = ChildProcessByStdio<Writable, Readable, null>;

/**
 * Runs groups of commands one at a time through one interpreter, started on first use and again
 * after it died or hung. A group resolves with its output, or rejects with a CommandError holding
 * that output when a line of it says a command failed (the later commands of the group still ran).
 */
export class CommandSession {
  private child: Interpreter | undefined;
  private partial = '';
  private current: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** Set when the interpreter ended before it ever answered (not built with it, say): one-offs only. */
  private unusable = false;
  private answered = false;

  constructor(
    private readonly dialect: SessionDialect,
    private readonly timeoutMs = 15_000,
  ) {}

  run(commands: readonly string[]): Promise<string> {
    const oneOff = async (): Promise<string> => {
      const { file, oneOffArgs } = this.dialect;
      const { stdout } = await run(file, oneOffArgs, { input: `${commands.join('\n')}\n`, timeoutMs: this.timeoutMs });
      return stdout.replace(/\n$/, ''); // as a session's answer: its lines, without the last newline
    };
    const next = this.queue.then(() =>
      this.unusable
        ? oneOff()
        : this.send(commands).catch(async (error: unknown) => {
            if (!(error instanceof InterpreterGone)) throw error;
            if (!this.answered) this.unusable = true;
            return oneOff();
          }),
    );
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Starts the interpreter now, so that the first group does not wait for it. */
  warm(): void {
    if (!this.child && !this.unusable) this.start();
  }

  /** Ends the interpreter (it also ends by itself when this process exits: its input closes). */
  close(): void {
    this.child?.stdin.end();
    this.child = undefined;
  }

  private send(commands: readonly string[]): Promise<string> {
    const child = this.child ?? this.start();
    const text = commands.join('\n');
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        // A hung interpreter is replaced: the next group starts a new one.
        this.child = undefined;
        child.kill('SIGKILL');
        this.fail(new InterpreterGone(`no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.current = { lines: [], resolve, reject, timer, commands: text };
      child.stdin.write(`${text}\n${this.dialect.marker}\n`);
    });
  }

  private start(): Interpreter {
    // Both streams through one pipe, so an error line arrives in order with the rest.
    const child = spawn('sh', ['-c', 'exec "$0" "$@" 2>&1', this.dialect.file, ...this.dialect.args], {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    this.child = child;
    this.partial = '';
    child.stdout.setEncoding('utf8');
    // A replaced (hung, killed) interpreter's last words belong to no group of the new one.
    child.stdout.on('data', (chunk: string) => this.child === child && this.receive(chunk));
    child.stdin.on('error', () => undefined); // a dead interpreter is reported by 'exit'
    child.on('error', (error) => this.gone(child, error.message));
    child.on('exit', (code, signal) => this.gone(child, `exited (${signal ?? `code ${code}`})`));
    // Idle, the session must not keep the agent alive; a group in flight holds its timer.
    child.unref();
    for (const stream of [child.stdin, child.stdout]) (stream as Socket).unref();
    return child;
  }

  private receive(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      const group = this.current;
      if (!group) continue;
      if (!this.dialect.isMarkerLine(line)) {
        group.lines.push(line);
        continue;
      }
      this.current = undefined;
      this.answered = true;
      clearTimeout(group.timer);
      const output = group.lines.join('\n');
      if (group.lines.some((l) => this.dialect.isFailureLine(l))) {
        group.reject(new CommandError(`${this.dialect.file}: ${group.commands.replaceAll('\n', '; ')}`, null, output));
      } else {
        group.resolve(output);
      }
    }
  }

  private gone(child: Interpreter, why: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.fail(new InterpreterGone(why));
  }

  private fail(error: Error): void {
    const group = this.current;
    this.current = undefined;
    if (!group) return;
    clearTimeout(group.timer);
    group.reject(error);
  }
}
