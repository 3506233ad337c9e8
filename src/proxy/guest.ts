// Where a seat's guest services live, and whether they answer.
import { Agent, request } from 'undici';
import { GUEST_PORTS } from '../guest/contract.ts';
import type { GuestHealth } from '../vms/ports.ts';

export const TERMINAL_PORT = GUEST_PORTS.terminal;
export const FILES_PORT = GUEST_PORTS.files;

/**
 * How long a probe waits. Connecting is short: a guest whose services do not listen yet refuses at
 * once, and one still booting answers nothing. Answering is longer: a guest that accepted the
 * connection is up, only slow (ten seats emulated on two cores take seconds per request), and a
 * probe given up after a second would be asked again and again, each time from the start.
 */
export interface ProbeTimeouts {
  readonly connectMs: number;
  readonly answerMs: number;
}

export const PROBE_TIMEOUTS: ProbeTimeouts = { connectMs: 1000, answerMs: 5000 };

// Probes get their own connection settings: a guest that is not up must cost about a second,
// not undici's default 10 s connect timeout (an abort signal does not cut a pending connect).
const probeAgents = new Map<number, Agent>();
function probeAgent(connectMs: number): Agent {
  let agent = probeAgents.get(connectMs);
  if (!agent) {
    agent = new Agent({ connect: { timeout: connectMs }, keepAliveTimeout: 1000, connections: 4 });
    probeAgents.set(connectMs, agent);
  }
  return agent;
}

/** True when `GET http://ip:port/health` answers 2xx in time. */
export async function serviceAnswers(ip: string, port: number, timeouts: ProbeTimeouts = PROBE_TIMEOUTS): Promise<boolean> {
  try {
    const response = await request(`http://${ip}:${port}/health`, {
      dispatcher: probeAgent(timeouts.connectMs),
      signal: AbortSignal.timeout(timeouts.connectMs + timeouts.answerMs),
      headersTimeout: timeouts.answerMs,
      bodyTimeout: timeouts.answerMs,
    });
    await response.body.dump();
    return response.statusCode >= 200 && response.statusCode < 300;
  } catch {
    return false;
  }
}

export type { GuestHealth } from '../vms/ports.ts';

export async function probeGuest(ip: string, timeouts: ProbeTimeouts = PROBE_TIMEOUTS): Promise<GuestHealth> {
  const [terminal, files] = await Promise.all([serviceAnswers(ip, TERMINAL_PORT, timeouts), serviceAnswers(ip, FILES_PORT, timeouts)]);
  return { terminal, files };
}
