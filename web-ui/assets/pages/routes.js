// Routes: per-route traffic and the policies bound to each route, refreshed every 5 s.

import { get } from '../api.js';
import { el } from '../dom.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';
import { LIVE_MS, poll } from '../poll.js';
import { table } from '../table.js';

const policy = (name) => (name ? el('code', {}, name) : fmt.DASH);

const COLUMNS = [
  { label: 'Route', value: (r) => el('strong', {}, r.name) },
  { label: 'Hosts', value: (r) => (r.hosts?.length ? r.hosts.join(', ') : '*') },
  { label: 'Path', value: (r) => el('code', {}, r.path ?? '/') },
  { label: 'Upstream', value: (r) => r.upstream },
  { label: 'Rate limit', value: (r) => policy(r.rate_limit) },
  { label: 'Cache', value: (r) => policy(r.cache) },
  { label: 'Requests', value: (r) => fmt.rate(r.requests_per_second), numeric: true },
  { label: 'p50', value: (r) => fmt.ms(r.latency_p50_ms), numeric: true },
  { label: 'p99', value: (r) => fmt.ms(r.latency_p99_ms), numeric: true },
  { label: 'Errors', value: (r) => fmt.percent(r.error_ratio), numeric: true },
  { label: 'Cache hits', value: (r) => fmt.percent(r.cache_hit_ratio), numeric: true },
  { label: 'Rate-limited', value: (r) => fmt.integer(r.rate_limited), numeric: true },
];

export function render(root) {
  const routes = panel('Routes', { wide: true });
  root.append(routes.root);
  poll(
    (signal) =>
      routes.run(async () =>
        table(COLUMNS, (await get('/api/v1/routes', { signal })) ?? [], {
          testid: 'routes',
          caption: 'Routes over the monitoring window',
          rowAttrs: (r) => ({ 'data-route': r.name }),
          empty: 'No route is configured.',
        }),
      ),
    LIVE_MS,
  );
}
