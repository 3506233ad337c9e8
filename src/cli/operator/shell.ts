// `clarateach shell WS SEAT`: the seat's terminal in this terminal, through the agent's proxy.
// Raw mode, the window's size followed, Ctrl-] detaches (the shell keeps running in the seat) and
// `--session` re-attaches to it, its scrollback replayed.
import { randomBytes } from 'node:crypto';
import { StringDecoder } from 'node:string_decoder';
import { WebSocket } from 'ws';
import type { AgentClient } from '../../agent-client/client.ts';
import { AgentError } from '../../agent-client/client.ts';

const DETACH = 0x1d; // Ctrl-]
/** Without a terminal (input piped in), wait this long after the input ends for the output. */
const PIPED_LINGER_MS = 1500;

interface ShellFrame {
  readonly type: string;
  readonly data?: string;
  readonly code?: number;
  readonly message?: string;
}

/** Resolves with the exit code: the shell's own when it exits, 0 when detached. */
export async function shell(client: AgentClient, workshop: string, seat: number, sessionOption: string | undefined): Promise<number> {
  const session = sessionOption ?? `cli-${randomBytes(6).toString('hex')}`;
  const { stdin, stdout, stderr } = process;
  const size = (): { cols: number; rows: number } => ({ cols: stdout.columns || 80, rows: stdout.rows || 24 });
  const { url, headers } = client.terminal(workshop, seat, { session, cols: String(size().cols), rows: String(size().rows) });
  const socket = new WebSocket(url, { headers });
  let exitCode = 0;
  // Listening before the upgrade completes: a re-attached session's replay can arrive in the same
  // read as the 101 answer, and ws emits it right after 'open', before any awaiting code resumes.
  socket.on('message', (data) => {
    let frame: ShellFrame;
    try {
      frame = JSON.parse(String(data)) as ShellFrame;
    } catch {
      return; // not a frame of the terminal protocol: nothing to show
    }
    if (frame.type === 'output') stdout.write(frame.data ?? '');
    else if (frame.type === 'exit') exitCode = frame.code ?? 0;
    else if (frame.type === 'error') stderr.write(`\r\nclarateach: ${frame.message ?? 'terminal error'}\r\n`);
  });
  await opened(socket);

  const raw = stdin.isTTY === true;
  if (raw) {
    stdin.setRawMode(true);
    // Whatever ends this process, the user's terminal is not left in raw mode.
    process.once('exit', () => stdin.isTTY && stdin.setRawMode(false));
  }
  let detached = false;
  // A character split across two reads (a long paste) stays one character.
  const decoder = new StringDecoder('utf8');
  const send = (frame: object): void => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  };
  const onInput = (chunk: Buffer): void => {
    const at = raw ? chunk.indexOf(DETACH) : -1;
    if (at >= 0) {
      if (at > 0) send({ type: 'input', data: decoder.write(chunk.subarray(0, at)) });
      detached = true;
      socket.close(1000);
      return;
    }
    const data = decoder.write(chunk);
    if (data !== '') send({ type: 'input', data });
  };
  const onResize = (): void => send({ type: 'resize', ...size() });
  let linger: ReturnType<typeof setTimeout> | undefined;
  const onEnd = (): void => {
    if (raw) return;
    // Piped input is all sent: give the shell a moment to answer, then leave it running.
    const quiet = (): void => {
      clearTimeout(linger);
      linger = setTimeout(() => {
        detached = true;
        socket.close(1000);
      }, PIPED_LINGER_MS);
    };
    socket.on('message', quiet);
    quiet();
  };
  stdin.on('data', onInput);
  stdin.on('end', onEnd);
  stdout.on('resize', onResize);
  const closed = await new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  clearTimeout(linger);
  stdin.off('data', onInput);
  stdin.off('end', onEnd);
  stdout.off('resize', onResize);
  if (raw) stdin.setRawMode(false);
  stdin.pause();
  if (detached) {
    stderr.write(
      `\r\nclarateach: detached from session ${session}; re-attach with: clarateach shell ${workshop} ${seat} --session ${session}\n`,
    );
    return 0;
  }
  if (closed.code !== 1000) {
    stderr.write(`\r\nclarateach: the terminal connection closed (${closed.code}${closed.reason ? `: ${closed.reason}` : ''})\n`);
    return 1;
  }
  return exitCode;
}

/** Waits for the upgrade; a refusal becomes the agent's `{error, code}`. */
function opened(socket: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
    socket.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => {
        try {
          const parsed = JSON.parse(body) as { error?: string; code?: string };
          reject(new AgentError(response.statusCode ?? 0, parsed.code ?? 'http_error', parsed.error ?? `HTTP ${response.statusCode}`));
        } catch {
          reject(new AgentError(response.statusCode ?? 0, 'http_error', `the terminal upgrade was refused: HTTP ${response.statusCode}`));
        }
      });
    });
  });
}
