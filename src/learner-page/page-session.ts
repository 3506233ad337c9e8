// Where the page is and who it is: the seat comes from the page's own path
// (…/workspace/{workshopID}/{seatID}/), the token from its query. Every URL the page calls is
// relative to its own, so it works under any path prefix (the workshop server's proxy).

export interface PageSession {
  readonly workshopId: string;
  readonly seatId: string;
  readonly token: string;
  /** `…/proxy/{ws}/{seat}/`, absolute, resolved from the page's URL. */
  readonly proxyBase: URL;
}

export function sessionFromLocation(location: Location): PageSession {
  const segments = location.pathname.split('/').filter((s) => s !== '');
  const seatId = decodeURIComponent(segments.at(-1) ?? '');
  const workshopId = decodeURIComponent(segments.at(-2) ?? '');
  const token = new URLSearchParams(location.search).get('token') ?? '';
  const proxyBase = new URL(`../../../proxy/${encodeURIComponent(workshopId)}/${encodeURIComponent(seatId)}/`, location.href);
  proxyBase.search = '';
  return { workshopId, seatId, token, proxyBase };
}

export function authHeaders(session: PageSession): Record<string, string> {
  return session.token === '' ? {} : { authorization: `Bearer ${session.token}` };
}

/** A proxy URL with the token in its query, for what cannot carry a header (WebSockets, links). */
export function tokenUrl(session: PageSession, relative: string, protocol?: 'ws'): URL {
  const url = new URL(relative, session.proxyBase);
  if (session.token !== '') url.searchParams.set('token', session.token);
  if (protocol === 'ws') url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}

/** What the agent says about the seat: why a terminal cannot connect. */
export type SeatHealth = 'healthy' | 'restarting' | 'gone' | 'unauthorized' | 'unreachable';

export async function seatHealth(session: PageSession): Promise<SeatHealth> {
  try {
    const response = await fetch(new URL('health', session.proxyBase), { headers: authHeaders(session), cache: 'no-store' });
    if (response.status === 401 || response.status === 403) return 'unauthorized';
    if (response.status === 404) return 'gone';
    if (!response.ok) return 'unreachable';
    const body = (await response.json()) as { status?: string };
    return body.status === 'healthy' ? 'healthy' : 'restarting';
  } catch {
    return 'unreachable';
  }
}

/** A short random id (crypto.randomUUID needs a secure context; plain http to an agent is not one). */
export function randomId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}
