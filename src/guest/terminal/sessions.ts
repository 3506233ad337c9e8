// Shell sessions: one PTY-backed login shell each, surviving WebSocket disconnects.
//
// Attachment policy: a session has at most ONE attached socket. A new connection to a
// session that is already attached takes it over; the older socket is closed with
// 4000 "session taken over". (One writer keeps PTY size and back-pressure unambiguous.)
import { randomBytes } from 'node:crypto';
import type { IPty } from 'node-pty';
import { WebSocket } from 'ws';
import type { Logger } from '../shared/log.ts';
import { describeError } from '../shared/log.ts';
import { Scrollback } from './scrollback.ts';
import type { ClientFrame, ServerFrame } from './protocol.ts';

export type SpawnPty = (typeof import('node-pty'))['spawn'];

export const CLOSE_TAKEN_OVER = 4000;
/** Pause the PTY when this much output is queued on the socket, resume below LOW_WATER. */
export const HIGH_WATER_BYTES = 1024 * 1024;
export const LOW_WATER_BYTES = 128 * 1024;
const DRAIN_POLL_MS = 20;
/** After SIGHUP, a shell that is still alive this long later gets SIGKILL. */
const KILL_GRACE_MS = 5000;

export interface SessionManagerOptions {
  readonly spawn: SpawnPty;
  readonly shell: string;
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly detachedTtlS: number;
  readonly scrollbackBytes: number;
  readonly maxSessions: number;
  readonly logger: Logger;
}

export interface SessionInfo {
  readonly id: string;
  readonly created_at: string;
  readonly attached: boolean;
  readonly pid: number;
  readonly cols: number;
  readonly rows: number;
}

export function send(ws: WebSocket, frame: ServerFrame): void {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}

export class Session {
  readonly createdAt = new Date();
  private socket: WebSocket | null = null;
  private readonly scrollback: Scrollback;
  private ttlTimer: NodeJS.Timeout | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private drainTimer: NodeJS.Timeout | null = null;
  private paused = false;
  private exited = false;
  private cols: number;
  private rows: number;

  constructor(
    readonly id: string,
    private readonly pty: IPty,
    private readonly manager: SessionManager,
    private readonly opts: SessionManagerOptions,
  ) {
    this.cols = pty.cols;
    this.rows = pty.rows;
    this.scrollback = new Scrollback(opts.scrollbackBytes);
    pty.onData((data) => this.onOutput(data));
    pty.onExit(({ exitCode, signal }) => this.onExit(signal ? 128 + signal : exitCode));
  }

  get pid(): number {
    return this.pty.pid;
  }

  get attached(): boolean {
    return this.socket !== null;
  }

  /** Whether `ws` is the currently attached socket (frames from a taken-over socket are ignored). */
  isAttachedTo(ws: WebSocket): boolean {
    return this.socket === ws;
  }

  info(): SessionInfo {
    return {
      id: this.id,
      created_at: this.createdAt.toISOString(),
      attached: this.attached,
      pid: this.pid,
      cols: this.cols,
      rows: this.rows,
    };
  }

  /**
   * Attaches a socket: announces the session, replays the scrollback, then streams live output.
   * Runs synchronously, so no PTY output can slip between the replay and the live stream.
   */
  attach(ws: WebSocket, size?: { cols: number; rows: number }): void {
    const previous = this.socket;
    if (previous !== null) {
      this.socket = null;
      previous.close(CLOSE_TAKEN_OVER, 'session taken over');
      this.opts.logger.info('session_taken_over', { session: this.id });
    }
    this.clearTtl();
    if (size) this.resize(size.cols, size.rows);
    const replay = this.scrollback.snapshot();
    send(ws, { type: 'session', id: this.id, replayed_bytes: Buffer.byteLength(replay) });
    if (replay !== '') send(ws, { type: 'output', data: replay });
    this.socket = ws;
    this.checkBackPressure();
    this.opts.logger.info('session_attached', { session: this.id, replayed_bytes: Buffer.byteLength(replay) });
  }

  /** Called when `ws` closes; a no-op when `ws` is no longer the attached socket (taken over). */
  detach(ws: WebSocket): void {
    if (this.socket !== ws) return;
    this.socket = null;
    // Nobody reads the socket any more: keep the shell running into the scrollback.
    this.setPaused(false);
    if (this.exited) return;
    this.opts.logger.info('session_detached', { session: this.id, ttl_s: this.opts.detachedTtlS });
    this.ttlTimer = setTimeout(() => {
      this.ttlTimer = null;
      this.opts.logger.info('session_expired', { session: this.id });
      this.kill();
    }, this.opts.detachedTtlS * 1000);
  }

  handle(frame: ClientFrame): void {
    if (this.exited) return;
    try {
      if (frame.type === 'input') this.pty.write(frame.data);
      else this.resize(frame.cols, frame.rows);
    } catch (err) {
      this.opts.logger.warn('pty_write_failed', { session: this.id, ...describeError(err) });
    }
  }

  /** SIGHUP (like a closed terminal), then SIGKILL if the shell ignores it. */
  kill(): void {
    if (this.exited) return;
    this.setPaused(false);
    try {
      this.pty.kill('SIGHUP');
    } catch {
      // already gone
    }
    this.killTimer ??= setTimeout(() => {
      if (this.exited) return;
      try {
        this.pty.kill('SIGKILL');
      } catch {
        // already gone
      }
    }, KILL_GRACE_MS);
    this.killTimer.unref();
  }

  private resize(cols: number, rows: number): void {
    if (this.exited || (cols === this.cols && rows === this.rows)) return;
    try {
      this.pty.resize(cols, rows);
      this.cols = cols;
      this.rows = rows;
    } catch (err) {
      this.opts.logger.warn('pty_resize_failed', { session: this.id, ...describeError(err) });
    }
  }

  private onOutput(data: string): void {
    this.scrollback.append(data);
    const ws = this.socket;
    if (ws === null) return;
    send(ws, { type: 'output', data });
    this.checkBackPressure();
  }

  private checkBackPressure(): void {
    const ws = this.socket;
    if (ws === null || this.paused || ws.bufferedAmount <= HIGH_WATER_BYTES) return;
    this.setPaused(true);
  }

  private setPaused(paused: boolean): void {
    if (paused === this.paused) return;
    this.paused = paused;
    if (paused) {
      this.pty.pause();
      this.drainTimer = setInterval(() => {
        const ws = this.socket;
        if (ws === null || ws.readyState !== WebSocket.OPEN || ws.bufferedAmount < LOW_WATER_BYTES) this.setPaused(false);
      }, DRAIN_POLL_MS);
    } else {
      if (this.drainTimer !== null) clearInterval(this.drainTimer);
      this.drainTimer = null;
      if (!this.exited) this.pty.resume();
    }
  }

  private onExit(code: number): void {
    if (this.exited) return;
    this.setPaused(false);
    this.exited = true;
    this.clearTtl();
    if (this.killTimer !== null) clearTimeout(this.killTimer);
    this.manager.remove(this);
    this.opts.logger.info('session_exited', { session: this.id, code, attached: this.socket !== null });
    const ws = this.socket;
    this.socket = null;
    if (ws !== null) {
      send(ws, { type: 'exit', code });
      ws.close(1000, 'shell exited');
    }
  }

  private clearTtl(): void {
    if (this.ttlTimer !== null) clearTimeout(this.ttlTimer);
    this.ttlTimer = null;
  }
}

export class SessionLimitError extends Error {}

export class SessionManager {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly opts: SessionManagerOptions) {}

  get size(): number {
    return this.sessions.size;
  }

  get(id: string): Session | undefined {
    return this.sessions.get(id);
  }

  list(): SessionInfo[] {
    return [...this.sessions.values()].map((s) => s.info());
  }

  newId(): string {
    let id: string;
    do id = randomBytes(12).toString('base64url');
    while (this.sessions.has(id));
    return id;
  }

  create(id: string, cols: number, rows: number): Session {
    if (this.sessions.size >= this.opts.maxSessions) {
      throw new SessionLimitError(`too many terminal sessions (limit ${this.opts.maxSessions})`);
    }
    const pty = this.opts.spawn(this.opts.shell, ['-l'], {
      name: 'xterm-256color',
      cols,
      rows,
      cwd: this.opts.cwd,
      env: { ...this.opts.env, TERM: 'xterm-256color' },
      encoding: 'utf8',
    });
    const session = new Session(id, pty, this, this.opts);
    this.sessions.set(id, session);
    this.opts.logger.info('session_created', { session: id, pid: pty.pid, cols, rows });
    return session;
  }

  remove(session: Session): void {
    if (this.sessions.get(session.id) === session) this.sessions.delete(session.id);
  }

  killAll(): void {
    for (const session of this.sessions.values()) session.kill();
  }
}
