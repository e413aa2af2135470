// How a failure reads, everywhere: the server's error text and the HTTP status.

import { el } from './dom.js';

/** One line: `HTTP 422: unknown key "x"`, or the message alone when no status applies. */
export function describe(err) {
  if (err?.name === 'ApiError') {
    return err.status ? `HTTP ${err.status}: ${err.message}` : err.message;
  }
  return err?.message ?? String(err);
}

/** The error box shown in a panel. Line breaks in the server's text are kept. */
export function errorBox(err) {
  return el(
    'div',
    { class: 'error-box', 'data-testid': 'error' },
    el('strong', {}, err?.status ? `Error (HTTP ${err.status})` : 'Error'),
    el('span', { class: 'error-text' }, err?.name === 'ApiError' ? err.message : describe(err)),
  );
}
