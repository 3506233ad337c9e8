// Where a seat's guest services live, and whether they answer.
import { Agent, request } from 'undici';

export const TERMINAL_PORT = 3001;
export const FILES_PORT = 3002;

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

export interface GuestHealth {
  readonly terminal: boolean;
  readonly files: boolean;
}

export async function probeGuest(ip: string, timeoutMs = 1000): Promise<GuestHealth> {
  const [terminal, files] = await Promise.all([serviceAnswers(ip, TERMINAL_PORT, timeoutMs), serviceAnswers(ip, FILES_PORT, timeoutMs)]);
  return { terminal, files };
}
