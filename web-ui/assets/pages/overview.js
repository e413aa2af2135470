// Overview: six live charts (polled every 3 s, redrawn in place), service status and the
// alerts that fire now.

import { get } from '../api.js';
import { firing, firingTable } from '../alert-views.js';
import { lineChart } from '../charts.js';
import { el } from '../dom.js';
import * as fmt from '../format.js';
import { fetchHealth, statusList } from '../health.js';
import { panel } from '../panel.js';
import { OVERVIEW_MS, onLeave, poll } from '../poll.js';

const pct = (ratio) => (ratio == null ? null : ratio * 100);
const pctText = (v) => `${fmt.number(v, 1)} %`;

/** One entry per chart: its test id, title, series (label and how to read a point), unit and
 * fixed top of the y axis, if any. */
const CHARTS = [
  { id: 'requests', title: 'Requests per second', series: [['requests/s', (p) => p.requests_per_second]], format: fmt.rate },
  {
    id: 'latency',
    title: 'Latency',
    series: [['p50', (p) => p.latency_p50_ms], ['p99', (p) => p.latency_p99_ms]],
    format: fmt.ms,
  },
  { id: 'errors', title: 'Error ratio', series: [['errors', (p) => pct(p.error_ratio)]], format: pctText },
  { id: 'cache', title: 'Cache hit ratio', series: [['hits', (p) => pct(p.cache_hit_ratio)]], format: pctText, max: 100 },
  {
    id: 'compression',
    title: 'Bandwidth saved by compression',
    series: [['saved', (p) => p.compression_saved_bytes_per_second]],
    format: (v) => `${fmt.bytes(v)}/s`,
  },
  { id: 'pool', title: 'Database pool usage', series: [['in use', (p) => pct(p.pool_usage)]], format: pctText, max: 100 },
];

export function render(root) {
  const traffic = panel('Traffic', { wide: true });
  const status = panel('Service status');
  const alerts = panel('Active alerts');
  root.append(traffic.root, status.root, alerts.root);

  let charts = null;
  poll(
    (signal) =>
      traffic.run(async () => {
        const overview = await get('/api/v1/overview', { signal });
        charts ??= makeCharts(traffic);
        const points = overview.points ?? [];
        const times = points.map((p) => p.t);
        for (const { spec, chart } of charts) {
          chart.update([times, ...spec.series.map(([, read]) => points.map((p) => read(p) ?? null))]);
        }
      }),
    OVERVIEW_MS,
  );
  poll((signal) => status.run(async () => statusList(await fetchHealth(signal))), OVERVIEW_MS);
  poll(
    (signal) => alerts.run(async () => firingTable(firing(await get('/api/v1/alerts', { signal })), 'active-alerts')),
    OVERVIEW_MS,
  );
}

function makeCharts(traffic) {
  const figures = CHARTS.map((spec) => {
    const container = el('div', { class: 'chart', 'data-testid': `chart-${spec.id}`, 'data-points': 0 });
    return { spec, container, figure: el('figure', { class: 'chart-figure' }, el('figcaption', {}, spec.title), container) };
  });
  // In the document before the charts are made: they size themselves from it.
  traffic.show(el('div', { class: 'chart-grid' }, figures.map((f) => f.figure)));
  return figures.map(({ spec, container }) => {
    const chart = lineChart(container, { labels: spec.series.map(([label]) => label), format: spec.format, max: spec.max });
    onLeave(() => chart.destroy());
    return { spec, chart };
  });
}
