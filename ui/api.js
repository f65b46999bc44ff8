// The page's only way to the appliance: same-origin fetches of /ui/api,
// the session cookie sent by the browser, the CSRF token in a header on
// every state-changing request.

let csrf = '';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let detail = '';
    try {
      detail = (await r.json()).detail;
    } catch (_) {
      /* not a problem document */
    }
    throw new ApiError(r.status, detail);
  }
  if (r.status === 204) return null;
  const type = r.headers.get('content-type') || '';
  return type.startsWith('application/json') ? r.json() : r.text();
}

export async function session() {
  const s = await call('GET', '/ui/api/session');
  csrf = s.csrf;
  return s;
}

export async function signIn(token) {
  const s = await call('POST', '/ui/api/session', { token });
  csrf = s.csrf;
  return s;
}

export async function signOut() {
  try {
    await call('DELETE', '/ui/api/session');
  } finally {
    csrf = '';
  }
}

export const cluster = () => call('GET', '/ui/api/cluster');
export const node = (x) => call('GET', `/ui/api/nodes/${encodeURIComponent(x)}`);
export const consoleTail = (x, lines) =>
  call('GET', `/ui/api/nodes/${encodeURIComponent(x)}/console?lines=${lines}`);
export const discovery = () => call('GET', '/ui/api/discovery');
export const dhcp = () => call('GET', '/ui/api/dhcp');
export const power = (operation, xnames) => call('POST', '/ui/api/power', { operation, xnames });
