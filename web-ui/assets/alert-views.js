// Alert tables shared by the overview (active alerts) and the alerts page.

import { badge, severityRank } from './badge.js';
import { el } from './dom.js';
import * as fmt from './format.js';
import { table } from './table.js';

/** The rules of `GET /api/v1/alerts` that fire, most severe first. */
export function firing(report) {
  return (report?.rules ?? [])
    .filter((rule) => rule.state === 'firing')
    .sort((a, b) => severityRank(a.severity) - severityRank(b.severity) || a.name.localeCompare(b.name));
}

/** `above 500` / `below 1`: when the rule fires. */
export function condition(rule) {
  const parts = [];
  if (rule.above != null) parts.push(`above ${fmt.number(rule.above, 4)}`);
  if (rule.below != null) parts.push(`below ${fmt.number(rule.below, 4)}`);
  return parts.join(' or ') || fmt.DASH;
}

/** The firing rules as a table with rows `data-alert=NAME`. */
export function firingTable(rules, testid) {
  return table(
    [
      { label: 'Severity', value: (r) => badge(r.severity) },
      { label: 'Alert', value: (r) => el('strong', {}, r.name) },
      { label: 'Measure', value: (r) => r.measure },
      { label: 'Route', value: (r) => r.route },
      { label: 'Value', value: (r) => fmt.number(r.value, 4), numeric: true },
      { label: 'Fires when', value: condition },
      { label: 'Since', value: (r) => fmt.dateTime(r.since) },
    ],
    rules,
    { testid, caption: 'Firing alerts', rowAttrs: (r) => ({ 'data-alert': r.name }), empty: 'No alert is firing.' },
  );
}
