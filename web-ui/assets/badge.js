// Status and severity badges: the word is always written, the colour only repeats it.

import { el } from './dom.js';

const TONES = {
  ok: 'ok',
  up: 'ok',
  resolved: 'ok',
  running: 'info',
  info: 'info',
  degraded: 'warn',
  pending: 'warn',
  warning: 'warn',
  paused: 'warn',
  unchecked: 'neutral',
  down: 'crit',
  firing: 'crit',
  critical: 'crit',
  failed: 'crit',
};

/** `<span class="badge badge-crit">firing</span>`; the tone follows the word unless given. */
export function badge(text, tone = TONES[String(text).toLowerCase()] ?? 'neutral') {
  return el('span', { class: `badge badge-${tone}` }, String(text));
}

/** Most severe first: critical, warning, info, anything else. */
export function severityRank(severity) {
  return { critical: 0, warning: 1, info: 2 }[severity] ?? 3;
}
