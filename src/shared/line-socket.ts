// A line-based conversation over a unix socket: the host end of a guest's identity channel (QEMU's
// virtio-serial port, Firecracker's vsock), lines both ways, each read bounded by a deadline.
import { createConnection, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Wakeup } from './wakeup.ts';

/** A guest line longer than this is not an answer of ours. */
const MAX_LINE = 4096;

/** The connection ended before a whole line came (a guest whose vsock was reset connects again). */
export class ChannelClosed extends Error {}

export class LineSocket {
  private buffer = '';
  private closedReason: string | undefined;
  private readonly arrival = new Wakeup();

  constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.arrival.signal();
    });
    socket.on('close', () => {
      this.closedReason ??= 'the guest channel closed';
      this.arrival.signal();
    });
    socket.on('error', (error) => {
      this.closedReason = `the guest channel failed: ${error.message}`;
    });
  }

  /** Connects to `path`, trying again while the socket does not exist yet or refuses. */
  static async connect(path: string, deadline: number): Promise<LineSocket> {
    let last = 'no attempt';
    while (Date.now() < deadline) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        return new LineSocket(socket);
      } catch (error) {
        last = (error as Error).message;
        await sleep(20);
      }
    }
    throw new Error(`cannot connect to the guest channel ${path} (${last})`);
  }

  writeLine(line: string): void {
    this.socket.write(`${line}\n`);
  }

  /** The next line, without its newline (a '\r' before it dropped); ChannelClosed when the connection ends first. */
  async readLine(deadline: number): Promise<string> {
    for (;;) {
      const end = this.buffer.indexOf('\n');
      if (end >= 0) {
        const line = this.buffer.slice(0, end).replace(/\r$/, '');
        this.buffer = this.buffer.slice(end + 1);
        return line;
      }
      if (this.buffer.length > MAX_LINE) throw new Error('the guest sent a line longer than expected');
      if (this.closedReason !== undefined) throw new ChannelClosed(this.closedReason);
      if (Date.now() >= deadline) throw new Error('no answer from the guest in time');
      await this.arrival.until(deadline);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
