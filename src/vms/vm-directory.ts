// The layout of STATE_DIR/vms: one directory per VM, named after its (unique) TAP, holding its
// writable layer, sockets, pid file and console log. The one place these paths are spelled.
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readTail, trimLog } from '../shared/files.ts';
import type { VmRecord } from './model.ts';

const CONSOLE_KEEP_BYTES = 1024 * 1024;
const CONSOLE_TRIM_AT_BYTES = 8 * 1024 * 1024;

export class VmDirectories {
  readonly root: string;

  constructor(stateDir: string) {
    this.root = join(stateDir, 'vms');
  }

  /** Named after the 10-character TAP so socket paths stay within sun_path's 108 bytes. */
  dirOf(vm: Pick<VmRecord, 'tapName'>): string {
    return join(this.root, vm.tapName);
  }

  layerPath(vm: Pick<VmRecord, 'tapName'>): string {
    return join(this.dirOf(vm), 'layer.ext4');
  }

  consolePath(vm: Pick<VmRecord, 'tapName'>): string {
    return join(this.dirOf(vm), 'console.log');
  }

  private seatFile(vm: Pick<VmRecord, 'tapName'>): string {
    return join(this.dirOf(vm), 'seat.json');
  }

  async isMade(vm: VmRecord): Promise<boolean> {
    return existsSync(this.seatFile(vm)); // on every create: no thread pool hop for one stat
  }

  async make(vm: VmRecord): Promise<void> {
    await mkdir(this.dirOf(vm), { recursive: true, mode: 0o750 });
    // For people looking around STATE_DIR: which seat this directory belongs to.
    await writeFile(this.seatFile(vm), `${JSON.stringify({ workshop_id: vm.workshopId, seat_id: vm.seatId, ip: vm.ip })}\n`);
  }

  async remove(name: string): Promise<void> {
    await rm(join(this.root, name), { recursive: true, force: true });
  }

  /** Names of every VM directory present (each a TAP name). */
  async list(): Promise<string[]> {
    try {
      return await readdir(this.root);
    } catch {
      return [];
    }
  }

  /** The last `bytes` of the guest's serial console; '' before it wrote anything. */
  consoleTail(vm: Pick<VmRecord, 'tapName'>, bytes: number): Promise<string> {
    return readTail(this.consolePath(vm), bytes);
  }

  /** Keeps console logs bounded: past 8 MiB only the last 1 MiB is kept (the VMM appends with O_APPEND). */
  trimConsole(vm: Pick<VmRecord, 'tapName'>): Promise<void> {
    return trimLog(this.consolePath(vm), CONSOLE_TRIM_AT_BYTES, CONSOLE_KEEP_BYTES);
  }
}
