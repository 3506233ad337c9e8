// Where a seat's guest services live, and whether they answer.
import { Agent, request } from 'undici';
import { GUEST_PORTS } from '../guest/contract.ts';
import type { GuestHealth } from '../vms/ports.ts';

export const TERMINAL_PORT = GUEST_PORTS.terminal;
export const FILES_PORT = GUEST_PORTS.files;

// Probes get their own connection settings: a guest that is not up must cost about a second,
// not undici's default 10 s connect timeout (an abort signal does not cut a pending connect).
const probeAgents = new Map<number, Agent>();
function probeAgent(timeoutMs: number): Agent {
  let agent = probeAgents.get(timeoutMs);
  if (!agent) {
    agent = new Agent({ connect: { timeout: timeoutMs }, keepAliveTimeout: 1000, connections: 4 });
    probeAgents.set(timeoutMs, agent);
  }
  return agent;
}

/** True when `GET http://ip:port/health` answers 2xx within `timeoutMs`. */
export async function serviceAnswers(ip: string, port: number, timeoutMs: number): Promise<boolean> {
  try {
    const response = await request(`http://${ip}:${port}/health`, {
      dispatcher: probeAgent(timeoutMs),
      signal: AbortSignal.timeout(timeoutMs),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    await response.body.dump();
    return response.statusCode >= 200 && response.statusCode < 300;
  } catch {
    return false;
  }
}

export type { GuestHealth } from '../vms/ports.ts';

export async function probeGuest(ip: string, timeoutMs = 1000): Promise<GuestHealth> {
  const [terminal, files] = await Promise.all([serviceAnswers(ip, TERMINAL_PORT, timeoutMs), serviceAnswers(ip, FILES_PORT, timeoutMs)]);
  return { terminal, files };
}
