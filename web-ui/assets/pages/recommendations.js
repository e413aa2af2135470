// Recommendations: the advisor's latest list, most severe first, each with its suggested config
// change; "Refresh" judges the traffic of the window now.

import { get, post } from '../api.js';
import { badge, severityRank } from '../badge.js';
import { el } from '../dom.js';
import { errorBox } from '../errors.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';

export function render(root) {
  const refresh = el('button', { type: 'button', id: 'recommendations-refresh', class: 'btn' }, 'Refresh');
  const list = panel('Recommendations', { wide: true, actions: [refresh] });
  root.append(list.root);

  const load = (fetch) => list.run(async () => advice(await fetch()));
  load(() => get('/api/v1/recommendations'));
  refresh.addEventListener('click', async () => {
    refresh.disabled = true;
    await load(() => post('/api/v1/recommendations/refresh'));
    refresh.disabled = false;
  });
}

function advice(answer) {
  // The advisor answers `{generated_at, window_seconds, recommendations, failures, snapshot}`.
  const items = [...((Array.isArray(answer) ? answer : answer.recommendations) ?? [])].sort((a, b) => severityRank(a.severity) - severityRank(b.severity));
  const about = el(
    'p',
    { class: 'hint' },
    `Judged at ${fmt.dateTime(answer.generated_at)} over the last ${fmt.duration(answer.window_seconds)} of traffic.`,
  );
  const failures = (answer.failures ?? []).map((f) => errorBox(new Error(`plugin ${f.plugin}: ${f.error}`)));
  const list = items.length
    ? el('ol', { class: 'advice', 'data-testid': 'recommendations' }, items.map(item))
    : el('p', { 'data-testid': 'recommendations' }, 'Nothing to recommend: the traffic looks fine.');
  return [about, ...failures, list];
}

function item(r) {
  return el(
    'li',
    { class: 'advice-item', 'data-recommendation': r.id, 'data-severity': r.severity },
    el('h3', {}, badge(r.severity), ' ', r.title),
    el('p', { class: 'advice-detail' }, r.detail),
    r.suggested_change
      ? el('div', {}, el('p', { class: 'hint' }, 'Suggested config change:'), el('pre', { class: 'code' }, r.suggested_change))
      : null,
    el('p', { class: 'hint' }, `${r.id} · from ${r.plugin}`),
  );
}
