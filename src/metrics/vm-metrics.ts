// The lifecycle's metrics: VMs by status and memory committed (read from the records at scrape
// time, so they can never drift), and creates, deletes, readiness and recoveries as they happen.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { LifecycleObserver } from '../vms/lifecycle-ports.ts';
import { DEFAULT_TEMPLATE, type VmRecord, type VmStatus } from '../vms/model.ts';

const STATUSES: readonly VmStatus[] = ['creating', 'running', 'stopped', 'failed', 'deleting'];
const OPERATION_BUCKETS_S = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const READY_BUCKETS_S = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300];

export type VmSource = () => readonly VmRecord[];

export function vmGauges(registry: Registry, vms: VmSource): void {
  new Gauge({
    name: 'clarateach_vms',
    help: 'VMs on this worker, by status and template',
    labelNames: ['status', 'template'],
    registers: [registry],
    collect() {
      this.reset();
      // Every status of every template in use (and of the default one) is shown, zeros included.
      const records = vms();
      const templates = new Set([DEFAULT_TEMPLATE, ...records.map((vm) => vm.template)]);
      for (const template of templates) for (const status of STATUSES) this.set({ status, template }, 0);
      for (const vm of records) this.inc({ status: vm.status, template: vm.template });
    },
  });
  new Gauge({
    name: 'clarateach_host_memory_committed_bytes',
    help: 'Memory given to VMs (sum of their memory_mb), in bytes',
    registers: [registry],
    collect() {
      this.set(vms().reduce((sum, vm) => sum + vm.memoryMb, 0) * 1024 * 1024);
    },
  });
}

export function lifecycleMetrics(registry: Registry): LifecycleObserver {
  const registers = [registry];
  const creates = new Counter({ name: 'clarateach_vm_creates_total', help: 'VM creates, by outcome', labelNames: ['outcome'], registers });
  const createSeconds = new Histogram({
    name: 'clarateach_vm_create_duration_seconds',
    help: 'Time from create request to VMM running (or failure), by outcome',
    labelNames: ['outcome'],
    buckets: OPERATION_BUCKETS_S,
    registers,
  });
  const deletes = new Counter({ name: 'clarateach_vm_deletes_total', help: 'VM deletes, by outcome', labelNames: ['outcome'], registers });
  const deleteSeconds = new Histogram({
    name: 'clarateach_vm_delete_duration_seconds',
    help: 'Time a delete took, by outcome',
    labelNames: ['outcome'],
    buckets: OPERATION_BUCKETS_S,
    registers,
  });
  const readySeconds = new Histogram({
    name: 'clarateach_vm_create_to_ready_seconds',
    help: "Time from a new VM's create to its guest services answering",
    buckets: READY_BUCKETS_S,
    registers,
  });
  const recoveries = new Counter({
    name: 'clarateach_vm_recoveries_total',
    help: 'VMs found without the agent watching: live VMM adopted, booted again (restarted), or failed to boot again',
    labelNames: ['outcome'],
    registers,
  });
  return {
    createFinished(outcome, ms) {
      creates.inc({ outcome });
      createSeconds.observe({ outcome }, ms / 1000);
    },
    deleteFinished(outcome, ms) {
      deletes.inc({ outcome });
      deleteSeconds.observe({ outcome }, ms / 1000);
    },
    becameReady: (ms) => readySeconds.observe(ms / 1000),
    recovered: (outcome) => recoveries.inc({ outcome }),
  };
}
