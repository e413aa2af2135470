// The service status list of `/healthz`: one row per check with its status badge, a one-line
// summary of its detail and its error.

import { get } from './api.js';
import { badge } from './badge.js';
import { el } from './dom.js';
import * as fmt from './format.js';

const NAMES = {
  listeners: 'Listeners',
  store: 'State store',
  upstreams: 'Upstreams',
  tls: 'TLS certificates',
  redis: 'Redis',
  databases: 'PostgreSQL',
  traces: 'OTLP exporter',
};

/** What each check's `detail` says, in one line. Unknown checks get the generic summary. */
const SUMMARIES = {
  listeners: (d) =>
    Object.entries(d)
      .map(([kind, addrs]) => [kind, [addrs].flat()])
      .filter(([, addrs]) => addrs.length)
      .map(([kind, addrs]) => `${kind} ${addrs.join(', ')}`)
      .join('; '),
  store: (d) => `${d.engine ?? 'store'} in ${d.dir ?? '?'}, ${fmt.bytes(d.size_on_disk)} on disk`,
  upstreams: (d) =>
    Object.entries(d)
      .map(([group, g]) => `${group}: ${g.available ?? '?'} of ${g.servers?.length ?? '?'} servers up`)
      .join('; ') || 'no upstream group',
  tls: (d) =>
    [
      `${d.certificates} certificate(s)`,
      ...(d.sites ?? []).map(
        (s) => `${s.hosts.join(', ')}: ${s.certificate}${s.not_after ? ` until ${s.not_after}` : ''}`,
      ),
    ].join('; '),
  redis: (d) => (d.connected ? 'connected' : 'unreachable'),
  databases: (d) =>
    Object.entries(d)
      .map(([db, p]) => `${db}: ${p.status}${p.status === 'ok' ? ` (${fmt.ms(p.latency_ms)})` : ''}`)
      .join('; '),
};

function generic(detail) {
  if (detail == null || typeof detail !== 'object') return detail == null ? '' : String(detail);
  return Object.entries(detail)
    .filter(([, v]) => v == null || typeof v !== 'object')
    .map(([k, v]) => `${k}: ${v}`)
    .join('; ');
}

/** `<ul data-testid="status">` for a `/healthz` document. Checks that are off (null) are left out. */
export function statusList(health) {
  const rows = Object.entries(health.checks ?? {})
    .filter(([, check]) => check != null)
    .map(([name, check]) => {
      const summary = check.detail == null ? '' : (SUMMARIES[name] ?? generic)(check.detail);
      return el(
        'li',
        { 'data-check': name },
        el('span', { class: 'check-name' }, NAMES[name] ?? name),
        badge(check.status),
        el('span', { class: 'check-detail' }, summary),
        check.error ? el('span', { class: 'check-error' }, check.error) : null,
      );
    });
  return [
    el(
      'p',
      { class: 'overall' },
      'Gatehouse ',
      badge(health.status),
      ` · version ${health.version ?? '?'} · up ${fmt.duration(health.uptime_seconds)}`,
    ),
    el('ul', { class: 'checks', 'data-testid': 'status' }, rows),
  ];
}

/** `GET /healthz`: its report, also when it answers 503 because something is down. */
export async function fetchHealth(signal) {
  try {
    return await get('/healthz', { signal, auth: false });
  } catch (err) {
    if (err.status === 503 && err.data?.checks) return err.data;
    throw err;
  }
}
