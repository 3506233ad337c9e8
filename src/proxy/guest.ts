// Where a seat's guest services live, and whether they answer.
import { request } from 'undici';

export const TERMINAL_PORT = 3001;
export const FILES_PORT = 3002;

/** True when `GET http://ip:port/health` answers 2xx within `timeoutMs`. */
export async function serviceAnswers(ip: string, port: number, timeoutMs: number): Promise<boolean> {
  try {
    const response = await request(`http://${ip}:${port}/health`, {
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
  const [terminal, files] = await Promise.all([
    serviceAnswers(ip, TERMINAL_PORT, timeoutMs),
    serviceAnswers(ip, FILES_PORT, timeoutMs),
  ]);
  return { terminal, files };
}
