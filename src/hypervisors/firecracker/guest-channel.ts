// The host end of a guest's identity channel over vsock: Firecracker forwards a connection the
// guest opens to the host (CID 2) port P to the unix socket `<uds_path>_P`, where this listens.
// Lines both ways, as on QEMU's virtio-serial port (src/vms/identity.ts has the words).
import { chown, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { LineSocket } from '../../shared/line-socket.ts';
import { Wakeup } from '../../shared/wakeup.ts';

/** Listens on a unix socket for the guest's connections, one after the other. */
export class GuestListener {
  private readonly waiting: LineSocket[] = [];
  private readonly open = new Set<Socket>();
  private readonly arrival = new Wakeup();

  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {
    server.on('connection', (socket) => {
      this.open.add(socket);
      socket.on('close', () => this.open.delete(socket));
      this.waiting.push(new LineSocket(socket));
      this.arrival.signal();
    });
  }

  /** Listens at `path` (a stale file there is replaced), connectable by `owner` alone besides root. */
  static async listen(path: string, owner?: { readonly uid: number; readonly gid: number }): Promise<GuestListener> {
    await rm(path, { force: true });
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // The jailed VMM connects as the VM's uid: connecting needs write permission on the socket.
    if (owner) await chown(path, owner.uid, owner.gid);
    return new GuestListener(server, path);
  }

  /** The next connection from the guest, waiting for it until the deadline. */
  async accept(deadline: number): Promise<LineSocket> {
    for (;;) {
      const next = this.waiting.shift();
      if (next) return next;
      if (Date.now() >= deadline) throw new Error(`the guest did not connect to ${this.path} in time`);
      await this.arrival.until(deadline);
    }
  }

  async close(): Promise<void> {
    for (const socket of this.open) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.path, { force: true });
  }
}
