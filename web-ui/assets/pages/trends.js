// Trends: any recorded metric (business metrics first) over a chosen range, one series per
// label set. Refreshed every 30 s (ranges go up to 30 days; the points are minutes apart).

import { get } from '../api.js';
import { lineChart } from '../charts.js';
import { el, field } from '../dom.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';
import { onLeave, poll } from '../poll.js';
import { align, labelText } from '../series.js';

const REFRESH_MS = 30_000;
/** Series drawn at most: beyond that the legend is unreadable. */
const MAX_SERIES = 20;
/** Range → step: roughly 200 to 350 points whatever the range. */
const RANGES = [
  ['15m', 'last 15 minutes', '5s'],
  ['1h', 'last hour', '15s'],
  ['6h', 'last 6 hours', '1m'],
  ['24h', 'last 24 hours', '5m'],
  ['7d', 'last 7 days', '30m'],
  ['30d', 'last 30 days', '2h'],
];
const BUSINESS = 'gatehouse_business_';

export function render(root) {
  const metric = el('select', { id: 'trends-metric', name: 'metric' });
  const range = el('select', { id: 'trends-range', name: 'range' }, RANGES.map(([v, label]) => el('option', { value: v }, label)));
  range.value = '1h';
  const rate = el('input', { id: 'trends-rate', name: 'rate', type: 'checkbox' });
  const form = el(
    'form',
    { id: 'trends-form', class: 'inline-form' },
    field('Metric', metric),
    field('Range', range),
    el('div', { class: 'field field-check' }, rate, el('label', { for: 'trends-rate' }, 'Per-second rate (counters)')),
    el('button', { type: 'submit', id: 'trends-show', class: 'btn' }, 'Show'),
  );
  const choose = panel('Metric', { wide: true });
  const chartPanel = panel('Chart', { wide: true });
  root.append(choose.root, chartPanel.root);

  let chart = null;
  let refresher = null;
  const container = el('div', { class: 'chart chart-tall', 'data-testid': 'chart-trend', 'data-points': 0 });
  const note = el('p', { class: 'hint' });

  function show() {
    refresher?.stop();
    if (!metric.value) return;
    const [since, , step] = RANGES.find(([v]) => v === range.value);
    const query = new URLSearchParams({ since, step, rate: String(rate.checked) });
    const path = `/api/v1/trends/${encodeURIComponent(metric.value)}?${query}`;
    refresher = poll(
      (signal) =>
        chartPanel.run(async () => {
          const answer = await get(path, { signal });
          const series = (answer.series ?? []).slice(0, MAX_SERIES);
          const { labels, data } = align(series.map((s) => ({ label: labelText(s.labels, answer.metric), points: s.points ?? [] })));
          note.textContent = [
            `${answer.series?.length ?? 0} series, a point every ${fmt.duration(answer.step_seconds)}.`,
            (answer.series?.length ?? 0) > MAX_SERIES ? `Showing the first ${MAX_SERIES}.` : '',
          ].join(' ');
          if (!chart) {
            chartPanel.show(note, container);
            chart = lineChart(container, { labels, format: (v) => fmt.number(v, 3), height: 320 });
            onLeave(() => chart.destroy());
          }
          chart.update(data, labels);
        }),
      REFRESH_MS,
    );
  }

  metric.addEventListener('change', () => {
    rate.checked = metric.value.endsWith('_total');
    show();
  });
  range.addEventListener('change', show);
  rate.addEventListener('change', show);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    show();
  });

  choose.run(async () => {
    const names = metricNames(await get('/api/v1/trends'));
    const business = names.filter((n) => n.name.startsWith(BUSINESS));
    const others = names.filter((n) => !n.name.startsWith(BUSINESS));
    const option = (m) => el('option', { value: m.name }, `${m.name} (${m.series} series)`);
    metric.replaceChildren(
      business.length ? el('optgroup', { label: 'Business metrics' }, business.map(option)) : null,
      el('optgroup', { label: 'Gatehouse metrics' }, others.map(option)),
    );
    if (!names.length) {
      chartPanel.show(el('p', {}, 'No metric has been recorded yet.'));
      return form;
    }
    rate.checked = metric.value.endsWith('_total');
    show();
    return form;
  });
}

/** `{metrics: {name: series}}` (or a list of `{name, series}`), sorted by name. */
function metricNames(answer) {
  const metrics = answer?.metrics ?? {};
  const list = Array.isArray(metrics) ? metrics : Object.entries(metrics).map(([name, series]) => ({ name, series }));
  return list.sort((a, b) => a.name.localeCompare(b.name));
}
