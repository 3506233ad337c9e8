// `npm run bench`: every figure as a ratio against a baseline measured in the same run, printed as
// one table and written to bench/RESULTS.md (date, machine, hypervisor), so a regression shows in
// its diff. Real QEMU guests, so it runs as root inside a network namespace of its own (made by
// scripts/in-netns.sh, removed after). `npm run bench -- disk seats` runs only those sections.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { BenchAgent } from './agent.ts';
import { diskBench } from './disk.ts';
import { proxyBench } from './proxy.ts';
import { scaleBench } from './scale.ts';
import { serverBench } from './server.ts';
import { measureSeats, reportSeats } from './seats.ts';
import { Results } from './stats.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const SECTIONS = ['disk', 'seats', 'proxy', 'server', 'scale'] as const;
const asked = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = asked.filter((a) => !(SECTIONS as readonly string[]).includes(a));
if (unknown.length > 0) {
  process.stderr.write(`bench: unknown section ${unknown.join(', ')}; sections: ${SECTIONS.join(', ')}\n`);
  process.exit(2);
}
const wanted = new Set(asked.length > 0 ? asked : SECTIONS);

if (process.getuid?.() !== 0) {
  process.stderr.write('bench: run as root (it boots QEMU guests and makes a network namespace)\n');
  process.exit(1);
}
if (!process.env['CLARATEACH_TEST_NETNS']) {
  const self = spawnSync(
    join(ROOT, 'scripts/in-netns.sh'),
    [process.execPath, '--import', 'tsx', join(ROOT, 'bench/run.ts'), ...process.argv.slice(2)],
    {
      stdio: 'inherit',
      cwd: ROOT,
    },
  );
  process.exit(self.status ?? 1);
}

const imagesDir = process.env['CLARATEACH_TEST_IMAGES'] || join(ROOT, '.cache/images');
process.env['CLARATEACH_TEST_IMAGES'] = imagesDir;
if (
  !existsSync(join(imagesDir, 'rootfs.ext4')) &&
  (wanted.has('seats') || wanted.has('proxy') || wanted.has('server') || wanted.has('scale'))
) {
  process.stdout.write(`bench: building the guest image into ${imagesDir}\n`);
  if (
    spawnSync(process.execPath, [join(ROOT, 'bin/clarateach.js'), 'image', 'build', '--images-dir', imagesDir], { stdio: 'inherit' })
      .status !== 0
  )
    process.exit(1);
}

const results = new Results();
const started = new Date();
const dir = mkdtempSync(join(tmpdir(), 'ct-bench-'));
let hypervisor = 'none (disk only)';
try {
  if (wanted.has('disk')) await diskBench(dir, results);
  let oneSeatRunningMs = NaN;
  const describe = async (agent: BenchAgent): Promise<void> => {
    const info = (await (await agent.process.api('/info')).json()) as { hypervisor?: string; acceleration?: string };
    hypervisor = `${info.hypervisor ?? '?'}, acceleration ${info.acceleration ?? '?'}`;
    process.stdout.write(`\nhypervisor: ${hypervisor}\n`);
  };
  if (wanted.has('seats')) {
    // Cold and snapshot start side by side, one agent after the other (one agent per network
    // namespace: its firewall table is the namespace's), on the same image.
    const coldAgent = await BenchAgent.start(19190);
    const cold = await describe(coldAgent)
      .then(() => measureSeats(coldAgent, 'cold'))
      .finally(() => coldAgent.stop());
    const snapAgent = await BenchAgent.start(19191, { SNAPSHOT_START: 'on' });
    const snap = await snapAgent
      .waitSnapshot()
      .then(() => measureSeats(snapAgent, 'snapshot'))
      .finally(() => snapAgent.stop());
    reportSeats(results, cold, snap);
    oneSeatRunningMs = cold.runningMs;
  }
  if (wanted.has('proxy') || wanted.has('server') || wanted.has('scale')) {
    const agent = await BenchAgent.start(19190);
    try {
      if (!wanted.has('seats')) await describe(agent);
      if (wanted.has('proxy')) await proxyBench(agent, results);
      if (wanted.has('server')) await serverBench(agent, results);
      if (wanted.has('scale')) {
        if (Number.isNaN(oneSeatRunningMs)) {
          await agent.create('bench-base', 1);
          oneSeatRunningMs = (await agent.get('bench-base', 1)).timeline.running_ms ?? NaN;
          await agent.delete('bench-base', 1);
        }
        await scaleBench(agent, results, oneSeatRunningMs);
      }
    } finally {
      await agent.stop();
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}`;
const table = results.table();
process.stdout.write(`\n${table}\n`);
const sections = [...wanted].join(', ');
writeFileSync(
  join(ROOT, 'bench/RESULTS.md'),
  `# Benchmark results

\`npm run bench\` (sections: ${sections}), ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, on ${machine};
hypervisor ${hypervisor}. Each ratio is ours against the baseline measured in the same run.

${table}
`,
);
process.stdout.write('\nwritten to bench/RESULTS.md\n');
