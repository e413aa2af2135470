// Alerts: what fires now, every rule with its state, and the history of firings and resolutions.

import { get } from '../api.js';
import { condition, firing, firingTable } from '../alert-views.js';
import { badge, severityRank } from '../badge.js';
import { el } from '../dom.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';
import { LIVE_MS, poll } from '../poll.js';
import { table } from '../table.js';

const STATE_ORDER = { firing: 0, pending: 1, ok: 2 };

export function render(root) {
  const now = panel('Firing now', { wide: true });
  const rules = panel('Rules', { wide: true });
  const history = panel('History', { wide: true });
  root.append(now.root, rules.root, history.root);
  poll(
    (signal) =>
      get('/api/v1/alerts', { signal }).then(
        (report) => {
          now.show(firingTable(firing(report), 'alerts-firing'));
          rules.show(ruleTable(report.rules ?? []));
          history.show(historyTable(report.history ?? []));
        },
        (err) => [now, rules, history].forEach((p) => p.fail(err)),
      ),
    LIVE_MS,
  );
}

function ruleTable(rules) {
  const sorted = [...rules].sort(
    (a, b) =>
      (STATE_ORDER[a.state] ?? 3) - (STATE_ORDER[b.state] ?? 3) ||
      severityRank(a.severity) - severityRank(b.severity) ||
      a.name.localeCompare(b.name),
  );
  return table(
    [
      { label: 'Rule', value: (r) => el('strong', {}, r.name) },
      { label: 'State', value: (r) => badge(r.state) },
      { label: 'Severity', value: (r) => badge(r.severity) },
      { label: 'Measure', value: (r) => r.measure },
      { label: 'Route', value: (r) => r.route },
      { label: 'Fires when', value: condition },
      { label: 'For', value: (r) => r.for ?? fmt.DASH },
      { label: 'Window', value: (r) => r.window ?? fmt.DASH },
      { label: 'Value now', value: (r) => fmt.number(r.value, 4), numeric: true },
      { label: 'Since', value: (r) => fmt.dateTime(r.since) },
    ],
    sorted,
    { testid: 'alert-rules', caption: 'Alert rules', rowAttrs: (r) => ({ 'data-alert': r.name }), empty: 'No rule is configured.' },
  );
}

function historyTable(events) {
  return table(
    [
      { label: 'When', value: (e) => fmt.dateTime(e.at) },
      { label: 'Rule', value: (e) => e.rule },
      { label: 'Event', value: (e) => badge(e.state) },
      { label: 'Severity', value: (e) => badge(e.severity) },
      { label: 'Value', value: (e) => fmt.number(e.value, 4), numeric: true },
      { label: 'What happened', value: (e) => e.summary },
    ],
    events,
    { testid: 'alert-history', caption: 'Alert history, newest first', rowAttrs: (e) => ({ 'data-alert': e.rule }), empty: 'Nothing has fired yet.' },
  );
}
