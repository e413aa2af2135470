// The admin API over fetch. The session cookie is HttpOnly (the browser sends it, this code never
// sees it); the CSRF token it came with is kept here, in memory only, and sent on every call that
// changes something. Errors become `ApiError` with the server's `error` text and the status.

/**
 * A failed call: `status` is the HTTP status, or 0 when the server could not be reached; `data`
 * is the parsed body, if any.
 */
export class ApiError extends Error {
  constructor(status, message, data = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.data = data;
  }
}

let csrf = null;
let unauthorized = () => {};

/** Keeps the session's CSRF token (null after logout). */
export function setCsrf(token) {
  csrf = token;
}

/** `handler` runs when a call answers 401: the session is gone, the login page should show. */
export function whenUnauthorized(handler) {
  unauthorized = handler;
}

/**
 * One call. `body`: a Blob or ArrayBuffer is sent as is with `contentType`, anything else as
 * JSON. `auth: false` for the calls that establish the session (their 401 is an answer, not an
 * expired session). Resolves to the parsed JSON (null for an empty body).
 */
export async function request(path, { method = 'GET', body, contentType, signal, auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers['Content-Type'] = contentType ?? 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: payload,
      credentials: 'same-origin',
      cache: 'no-store',
      signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, `the server cannot be reached (${err.message})`);
  }
  const data = await readBody(response);
  if (response.status === 401 && auth) unauthorized();
  if (!response.ok) {
    const message = typeof data?.error === 'string' ? data.error : response.statusText || 'request failed';
    throw new ApiError(response.status, message, data);
  }
  return data;
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    // A proxy's HTML error page, say: keep its text short enough to show.
    return { error: text.slice(0, 300) };
  }
}

/** `GET path`. */
export function get(path, options = {}) {
  return request(path, options);
}

/** `POST path` with a JSON body (`{}` unless given). */
export function post(path, body = {}, options = {}) {
  return request(path, { ...options, method: 'POST', body });
}

/** Whether `err` is a fetch cancelled because the page was left. */
export function isAbort(err) {
  return err?.name === 'AbortError';
}
