// Test fixture playing the agent: starts one VM with the Firecracker driver, prints the VmmProcess
// as one JSON line, then idles until it is killed (the test kills it with SIGKILL to check that
// the VMM outlives it).
//
//   node --import tsx agent-child.ts FIRECRACKER_BIN SPEC_JSON [DRIVER_OPTIONS_JSON]
import type { VmLaunchSpec } from '../../../src/vms/ports.ts';
import { createFirecrackerDriver, type FirecrackerDriverOptions } from '../../../src/hypervisors/firecracker/index.ts';

const [firecrackerBin, specJson, optionsJson] = process.argv.slice(2);
if (!firecrackerBin || !specJson) {
  process.stderr.write('usage: agent-child.ts FIRECRACKER_BIN SPEC_JSON [DRIVER_OPTIONS_JSON]\n');
  process.exit(2);
}
const spec = JSON.parse(specJson) as VmLaunchSpec;
const options = (optionsJson ? JSON.parse(optionsJson) : {}) as Omit<FirecrackerDriverOptions, 'firecrackerBin'>;
const driver = await createFirecrackerDriver({ apiSocketTimeoutMs: 20_000, ...options, firecrackerBin });
try {
  const proc = await driver.start(spec);
  process.stdout.write(`${JSON.stringify(proc)}\n`);
  setInterval(() => {}, 60_000);
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(1);
}
