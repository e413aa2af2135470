// Tables: one helper for every list the UI shows, wrapped so that wide tables scroll sideways
// on narrow screens instead of widening the page.

import { el } from './dom.js';

/**
 * `table(columns, rows, options)`.
 * A column: `{label, value: row => text | number | Node, numeric?, field?}`; `field` becomes the
 * cell's `data-field`, `numeric` right-aligns it.
 * Options: `testid` (on the table), `caption` (for screen readers; the panel title is visible),
 * `rowAttrs: row => {attr: value}` (on each `<tr>`),
 * `empty` (the text of the one row shown when there are none).
 */
export function table(columns, rows, { testid, caption, rowAttrs, empty = 'None.' } = {}) {
  const head = el('tr', {}, columns.map((c) => el('th', { scope: 'col', class: c.numeric ? 'num' : null }, c.label)));
  const body = rows.length
    ? rows.map((row) => el('tr', rowAttrs ? rowAttrs(row) : {}, columns.map((c) => cell(c, row))))
    : [el('tr', { class: 'empty' }, el('td', { colspan: columns.length }, empty))];
  const tableNode = el(
    'table',
    { 'data-testid': testid },
    caption ? el('caption', { class: 'visually-hidden' }, caption) : null,
    el('thead', {}, head),
    el('tbody', {}, body),
  );
  // Focusable and named, so a keyboard user can scroll it sideways.
  return el('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': caption ?? testid ?? 'table' }, tableNode);
}

function cell(column, row) {
  const value = column.value(row);
  return el('td', { class: column.numeric ? 'num' : null, 'data-field': column.field }, value ?? '');
}
