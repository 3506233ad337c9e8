// health, vm ls|create|get|rm|logs, token: the agent's API as commands.
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, type AgentClient, type Vm } from '../../agent-client/client.ts';
import { printJson, printTable, UsageError } from './output.ts';

export function parseSeat(text: string): number {
  if (!/^\d{1,6}$/.test(text)) throw new UsageError(`seat must be a number, got "${text}"`);
  return Number(text);
}

export function parsePositive(name: string, text: string): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1) throw new UsageError(`${name} must be a whole number above 0, got "${text}"`);
  return Number(text);
}

function printVms(vms: readonly Vm[]): void {
  printTable(
    ['workshop', 'seat', 'ip', 'status', 'ready', 'vcpus', 'memory', 'template', 'restarts', 'created'],
    vms.map((vm) => [
      vm.workshop_id,
      vm.seat_id,
      vm.ip,
      vm.status,
      vm.ready ? 'yes' : 'no',
      vm.vcpus,
      `${vm.memory_mb} MiB`,
      vm.template,
      vm.restarts,
      vm.created_at,
    ]),
  );
}

export async function health(client: AgentClient, json: boolean): Promise<void> {
  const h = await client.health();
  if (json) return printJson(h);
  process.stdout.write(`${h.worker_id}: ${h.status}, ${h.vm_count}/${h.capacity} VMs, up ${h.uptime_seconds} s\n`);
}

export async function listVms(client: AgentClient, json: boolean, workshop: string | undefined): Promise<void> {
  const vms = await client.listVms(workshop);
  if (json) return printJson({ vms });
  if (vms.length === 0) process.stdout.write('no VMs\n');
  else printVms(vms);
}

export async function showVm(client: AgentClient, json: boolean, vm: Vm): Promise<void> {
  if (json) return printJson(vm);
  printVms([vm]);
  if (vm.last_error) process.stdout.write(`last error: ${vm.last_error}\n`);
}

export async function issueToken(
  client: AgentClient,
  json: boolean,
  workshop: string,
  seat: number,
  ttl: number | undefined,
): Promise<void> {
  const issued = await client.token(workshop, seat, ttl);
  const url =
    issued.workspace_url ??
    `${client.baseUrl}/workspace/${encodeURIComponent(workshop)}/${seat}/?token=${encodeURIComponent(issued.token)}`;
  if (json) return printJson({ ...issued, workspace_url: url });
  process.stdout.write(`${url}\n`);
  process.stderr.write(`(token ${issued.token_id}, expires ${issued.expires_at})\n`);
}

/** The console; with `follow`, new output as it comes until the VM is deleted or Ctrl-C. */
export async function logs(client: AgentClient, workshop: string, seat: number, follow: boolean, signal: AbortSignal): Promise<void> {
  let printed = await client.logs(workshop, seat, follow ? 1024 * 1024 : undefined);
  process.stdout.write(printed);
  while (follow && !signal.aborted) {
    await sleep(1000, undefined, { signal }).catch(() => undefined);
    if (signal.aborted) break;
    let text: string;
    try {
      text = await client.logs(workshop, seat, 1024 * 1024);
    } catch (error) {
      if (error instanceof AgentError && error.status === 404) {
        process.stderr.write(`clarateach: ${workshop}/${seat} was deleted\n`);
        return;
      }
      throw error;
    }
    process.stdout.write(newPart(printed, text));
    printed = text;
  }
}

/** What `next` has that `previous` had not: the console is a window that may have moved on. */
export function newPart(previous: string, next: string): string {
  if (next.startsWith(previous)) return next.slice(previous.length);
  const tail = previous.slice(-4096);
  const at = tail === '' ? -1 : next.lastIndexOf(tail);
  return at >= 0 ? next.slice(at + tail.length) : next;
}
