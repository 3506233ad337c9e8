// Choosing QEMU's accelerator. /dev/kvm opening is not enough: under some nested hypervisors
// (e.g. PVM) an ordinary guest kernel hangs or QEMU aborts under KVM. So KVM is used only after a
// bounded trial boot of the real guest kernel reaches its panic (it has no root filesystem), and
// the verdict is cached per kernel file, QEMU version and host kernel. Otherwise TCG, told the
// host's TSC frequency.
import pino, { type Logger } from 'pino';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { run } from '../../shared/exec.ts';
import type { Acceleration } from './args.ts';

export interface AccelVerdict {
  readonly accel: Acceleration;
  /** Why: shown in the agent log. */
  readonly reason: string;
  /** Host TSC frequency in kHz (passed to TCG guests as tsc_early_khz). */
  readonly tscKhz?: number;
  /** Identity of the kernel, QEMU and host the verdict holds for. */
  readonly key: string;
  readonly checkedAt: string;
}

export const ACCEL_CACHE_FILE = 'qemu-acceleration.json';

export interface DetectOptions {
  readonly qemuBin: string;
  /** The guest kernel to try. */
  readonly kernelPath: string;
  /** Where the verdict is cached. */
  readonly stateDir: string;
  readonly log?: Logger;
  /** Budget for the KVM trial boot. */
  readonly trialTimeoutMs?: number;
  /** Ignore a cached verdict. */
  readonly recheck?: boolean;
}

/** Host TSC frequency from the kernel log ("tsc: Refined TSC clocksource calibration" or "tsc: Detected"), else /proc/cpuinfo. */
export async function hostTscKhz(): Promise<number | undefined> {
  try {
    const { stdout } = await run('dmesg', [], { timeoutMs: 5000 });
    const refined = /tsc: Refined TSC clocksource calibration: (\d+\.\d+) MHz/.exec(stdout);
    const detected = /tsc: Detected (\d+\.\d+) MHz/.exec(stdout);
    const mhz = refined?.[1] ?? detected?.[1];
    if (mhz !== undefined) return Math.round(Number(mhz) * 1000);
  } catch {
    // dmesg may be restricted; fall through.
  }
  try {
    const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
    const mhz = /^cpu MHz\s*:\s*(\d+(\.\d+)?)/m.exec(cpuinfo)?.[1];
    if (mhz !== undefined) return Math.round(Number(mhz) * 1000);
  } catch {
    // no /proc
  }
  return undefined;
}

export async function qemuVersion(qemuBin: string): Promise<string> {
  const { stdout } = await run(qemuBin, ['--version'], { timeoutMs: 10_000 });
  return stdout.split('\n')[0]?.trim() ?? '';
}

async function kvmOpens(): Promise<string | undefined> {
  try {
    const handle = await open('/dev/kvm', constants.O_RDWR);
    await handle.close();
    return undefined;
  } catch (error) {
    return `/dev/kvm cannot be opened (${(error as NodeJS.ErrnoException).code ?? 'error'})`;
  }
}

/**
 * Boots `kernelPath` under KVM without a root filesystem and waits for its "Kernel panic" line.
 * Resolves with undefined on success, else with the reason. Never leaves the trial VM running.
 */
export function kvmTrialBoot(qemuBin: string, kernelPath: string, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn(
      qemuBin,
      [
        '-machine',
        'microvm,acpi=on',
        '-accel',
        'kvm',
        '-cpu',
        'host',
        '-smp',
        '1',
        '-m',
        '256M',
        '-nodefaults',
        '-no-user-config',
        '-display',
        'none',
        '-no-reboot',
        '-serial',
        'stdio',
        '-kernel',
        kernelPath,
        '-append',
        'console=ttyS0 rdinit=/nonexistent root=/dev/nonexistent panic=-1',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    let errors = '';
    let settled = false;
    const finish = (reason: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      resolve(reason);
    };
    const timer = setTimeout(() => finish(`the KVM trial boot did not reach the kernel panic within ${timeoutMs} ms`), timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      output = (output + chunk).slice(-8192);
      if (output.includes('Kernel panic')) finish(undefined);
    });
    child.stderr.on('data', (chunk: string) => {
      errors = (errors + chunk).slice(-4096);
    });
    child.on('error', (error) => finish(`cannot run ${qemuBin}: ${error.message}`));
    child.on('close', (code, signal) => {
      if (output.includes('Kernel panic')) finish(undefined);
      else
        finish(
          `the KVM trial boot ended (${signal ?? `exit ${code}`}) before the kernel panic: ${errors.trim().split('\n').slice(-2).join(' ') || 'no output'}`,
        );
    });
  });
}

async function cacheKey(qemuBin: string, kernelPath: string): Promise<string> {
  const st = await stat(kernelPath);
  return createHash('sha256')
    .update(JSON.stringify({ kernel: [kernelPath, st.size, st.mtimeMs, st.ino], qemu: await qemuVersion(qemuBin), host: release() }))
    .digest('hex');
}

export async function detectAcceleration(opts: DetectOptions): Promise<AccelVerdict> {
  const log = opts.log ?? pino({ level: 'silent' });
  const tscKhz = await hostTscKhz();
  const now = new Date().toISOString();
  const tcg = (reason: string, key = ''): AccelVerdict => ({
    accel: 'tcg',
    reason,
    key,
    checkedAt: now,
    ...(tscKhz === undefined ? {} : { tscKhz }),
  });

  const kvmProblem = await kvmOpens();
  if (kvmProblem) return tcg(kvmProblem);
  let key: string;
  try {
    key = await cacheKey(opts.qemuBin, opts.kernelPath);
  } catch (error) {
    return tcg(`cannot try KVM: ${(error as Error).message}`);
  }
  const cachePath = join(opts.stateDir, ACCEL_CACHE_FILE);
  if (!opts.recheck) {
    try {
      const cached = JSON.parse(await readFile(cachePath, 'utf8')) as Partial<AccelVerdict>;
      if (cached.key === key && (cached.accel === 'kvm' || cached.accel === 'tcg') && typeof cached.reason === 'string') {
        return { ...(cached as AccelVerdict), ...(tscKhz === undefined ? {} : { tscKhz }) };
      }
    } catch {
      // no cache yet
    }
  }
  const budget = opts.trialTimeoutMs ?? 15_000;
  log.info(
    { kernel: opts.kernelPath, budgetMs: budget },
    `qemu: trying KVM with a trial boot of ${opts.kernelPath} (up to ${Math.round(budget / 1000)} s)`,
  );
  const started = Date.now();
  const problem = await kvmTrialBoot(opts.qemuBin, opts.kernelPath, budget);
  const verdict: AccelVerdict = problem
    ? tcg(`KVM unusable: ${problem}`, key)
    : { accel: 'kvm', reason: `KVM trial boot reached the kernel panic in ${Date.now() - started} ms`, key, checkedAt: now };
  try {
    await mkdir(opts.stateDir, { recursive: true });
    const temp = `${cachePath}.tmp-${process.pid}`;
    await writeFile(temp, `${JSON.stringify(verdict, null, 2)}\n`);
    await rename(temp, cachePath);
  } catch (error) {
    log.warn({ path: cachePath }, `qemu: cannot cache the acceleration verdict in ${cachePath}: ${(error as Error).message}`);
  }
  return verdict;
}
