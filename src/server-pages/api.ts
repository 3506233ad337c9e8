// The server's JSON API as the pages call it: same origin, cookies, the session's CSRF token on
// every state-changing request, and the API's `{error, code}` turned into one error type.

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = '';

/** The instructor's session token for X-CSRF-Token (from /api/login or /api/session). */
export function useCsrf(token: string): void {
  csrfToken = token;
}

export async function api<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken !== '') headers['x-csrf-token'] = csrfToken;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch {
    throw new ApiFailure(0, 'unreachable', 'the server cannot be reached; check your connection');
  }
  const text = await response.text();
  let data: unknown;
  try {
    data = text === '' ? undefined : JSON.parse(text);
  } catch {
    data = text;
  }
  if (!response.ok) {
    const error = (typeof data === 'object' && data !== null ? data : {}) as { error?: string; code?: string };
    throw new ApiFailure(response.status, error.code ?? `http_${response.status}`, error.error ?? `the server answered ${response.status}`);
  }
  return data as T;
}

export function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

type Child = Node | string | null | undefined;

/** A small element builder: attributes (or event handlers as `on<event>`), then children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number | boolean | ((event: Event) => void)> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, '');
    else if (value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** "12 s ago", "4 min ago", "2 h ago"; "—" for never. */
export function ago(iso: string | null, now: number = Date.now()): string {
  if (iso === null) return '—';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

/** Shows a message in an alert line (or hides it with an empty one). */
export function say(target: HTMLElement, message: string): void {
  target.textContent = message;
  target.hidden = message === '';
}
