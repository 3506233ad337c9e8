// One terminal tab: an xterm.js terminal on one shell session of the seat. The session has a
// name of its own (chosen here, kept by the page), so a dropped connection or a reload re-attaches
// to the same shell and the guest replays its scrollback.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import type { ClientFrame, ServerFrame } from '../guest/terminal/protocol.ts';
import { seatHealth, tokenUrl, type PageSession } from './page-session.ts';

export type ConnectionState =
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'seat restarting'
  | 'ended'
  | 'open elsewhere'
  | 'too many shells'
  | 'link expired'
  | 'seat gone';

/** The guest's close codes (src/guest/terminal): the shell attached elsewhere; no room for another shell. */
const CLOSE_TAKEN_OVER = 4000;
const CLOSE_TRY_AGAIN_LATER = 1013;

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5_000;

export interface TerminalTabOptions {
  readonly session: PageSession;
  readonly sessionId: string;
  readonly container: HTMLElement;
  readonly onState: (state: ConnectionState) => void;
}

export class TerminalTab {
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private socket: WebSocket | undefined;
  private retryMs = RETRY_MIN_MS;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private attachedBefore = false;
  private closed = false;
  state: ConnectionState = 'connecting';

  constructor(private readonly o: TerminalTabOptions) {
    this.term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14, convertEol: false, allowProposedApi: false });
    this.term.loadAddon(this.fit);
    this.term.open(o.container);
    this.term.attachCustomKeyEventHandler((event) => this.clipboardKeys(event));
    this.term.onData((data) => this.send({ type: 'input', data }));
    this.term.onResize(({ cols, rows }) => this.send({ type: 'resize', cols, rows }));
    new ResizeObserver(() => this.fitToContainer()).observe(o.container);
    this.fitToContainer();
    this.connect();
  }

  get sessionId(): string {
    return this.o.sessionId;
  }

  focus(): void {
    this.term.focus();
  }

  fitToContainer(): void {
    if (this.o.container.offsetParent === null) return; // hidden tab: fit when shown
    try {
      this.fit.fit();
    } catch {
      // not laid out yet
    }
  }

  /** Ends the tab: the connection closes; the shell stays in the guest until it exits. */
  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000);
    this.term.dispose();
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    this.o.onState(state);
  }

  private send(frame: ClientFrame): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  private connect(): void {
    const url = tokenUrl(this.o.session, 'terminal', 'ws');
    url.searchParams.set('session', this.o.sessionId);
    url.searchParams.set('cols', String(this.term.cols));
    url.searchParams.set('rows', String(this.term.rows));
    const socket = new WebSocket(url);
    this.socket = socket;
    let exited = false;
    socket.onmessage = (event: MessageEvent<string>) => {
      const frame = JSON.parse(event.data) as ServerFrame;
      if (frame.type === 'session') this.attached(frame.replayed_bytes);
      else if (frame.type === 'output') this.term.write(frame.data);
      else if (frame.type === 'exit') exited = true;
      else this.term.write(`\r\n\x1b[31m[${frame.message}]\x1b[0m\r\n`);
    };
    socket.onclose = (event: CloseEvent) => {
      if (this.closed || socket !== this.socket) return;
      // Retrying would take the shell back from the other tab, which would take it back in turn.
      if (event.code === CLOSE_TAKEN_OVER)
        return this.waitForEnter('open elsewhere', 'this shell is open in another tab or window: press Enter to take it back');
      // No room for another shell: retrying every few seconds would not make any.
      if (event.code === CLOSE_TRY_AGAIN_LATER)
        return this.waitForEnter('too many shells', 'no room for another shell: close one (exit), then press Enter here');
      if (exited) return this.waitForEnter('ended', 'the shell ended: press Enter for a new one', true);
      void this.retry();
    };
  }

  /** Stays disconnected, says why, and connects again when the learner presses a key. */
  private waitForEnter(state: ConnectionState, why: string, fresh = false): void {
    this.term.write(`\r\n\x1b[2m[${why}]\x1b[0m\r\n`);
    this.setState(state);
    const again = this.term.onData(() => {
      again.dispose();
      if (fresh) {
        this.attachedBefore = false;
        this.term.reset();
      }
      this.setState('connecting');
      this.connect();
    });
  }

  private attached(replayedBytes: number): void {
    // The guest replays the session's scrollback: start from a clean screen, not twice the history.
    if (this.attachedBefore) {
      this.term.reset();
      if (replayedBytes === 0) this.term.write('\x1b[2m[a new shell: the seat restarted]\x1b[0m\r\n');
    }
    this.attachedBefore = true;
    this.retryMs = RETRY_MIN_MS;
    this.setState('connected');
    this.send({ type: 'resize', cols: this.term.cols, rows: this.term.rows });
  }

  /** Waits and connects again; meanwhile says why it cannot (the seat restarting, the link expired). */
  private async retry(): Promise<void> {
    this.setState('reconnecting');
    const health = await seatHealth(this.o.session);
    if (this.closed) return;
    if (health === 'unauthorized') return this.setState('link expired');
    if (health === 'gone') return this.setState('seat gone');
    if (health === 'restarting') this.setState('seat restarting');
    this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
  }

  /** Ctrl-Shift-C copies the selection, Ctrl-Shift-V pastes (Ctrl-C stays the shell's interrupt). */
  private clipboardKeys(event: KeyboardEvent): boolean {
    if (event.type !== 'keydown' || !event.ctrlKey || !event.shiftKey) return true;
    const key = event.key.toLowerCase();
    if (key === 'c' && this.term.hasSelection()) {
      void navigator.clipboard?.writeText(this.term.getSelection());
      return false;
    }
    if (key === 'v' && navigator.clipboard?.readText) {
      void navigator.clipboard.readText().then((text) => this.term.paste(text));
      return false;
    }
    return true;
  }
}
