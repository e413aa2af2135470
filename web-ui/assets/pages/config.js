// Config: the effective configuration (secrets redacted by the server) as dotted keys with the
// source of each value, and reload (validate, then swap; errors name file, key and line).

import { get, post } from '../api.js';
import { announce } from '../announce.js';
import { el, field } from '../dom.js';
import { describe } from '../errors.js';
import { panel } from '../panel.js';
import { table } from '../table.js';

export function render(root) {
  const reload = el('button', { type: 'button', id: 'config-reload', class: 'btn btn-primary' }, 'Reload from file');
  const result = el('div', { id: 'config-result', 'aria-live': 'polite' });
  const filter = el('input', { id: 'config-filter', type: 'search', autocomplete: 'off', spellcheck: 'false' });
  const effective = panel('Effective configuration', { wide: true, actions: [reload] });
  effective.root.insertBefore(result, effective.content);
  root.append(effective.root);

  const load = () =>
    effective.run(async () => {
      const rows = settings(await get('/api/v1/config'));
      const keys = configTable(rows);
      applyFilter(keys, filter.value);
      return [field('Filter keys', filter), keys];
    });
  load();

  filter.addEventListener('input', () => applyFilter(effective.content, filter.value));
  reload.addEventListener('click', async () => {
    reload.disabled = true;
    result.className = '';
    result.replaceChildren(el('p', { class: 'loading' }, 'reloading…'));
    try {
      await post('/api/v1/config/reload');
      result.replaceChildren(el('p', { class: 'success' }, 'Reloaded: the new configuration is in force.'));
      announce('Configuration reloaded');
      load();
    } catch (err) {
      result.className = 'error';
      // The server's text spans lines (file, key, line, what is wrong): keep them.
      result.replaceChildren(
        el('p', {}, 'Reload refused; the running configuration is unchanged:'),
        el('pre', { class: 'code' }, describe(err)),
      );
      announce(`Reload refused: ${describe(err)}`);
    } finally {
      reload.disabled = false;
    }
  });
}

/**
 * The rows `{key, value, source}` of an answer: `{settings: {"dotted.key": {value, source}}}`,
 * or `{config, sources}` (the config as an object, sources by dotted key).
 */
function settings(answer) {
  if (answer?.settings) {
    return Object.entries(answer.settings).map(([key, s]) => ({ key, value: s?.value, source: s?.source ?? 'default' }));
  }
  return flatten(answer?.config ?? {}).map(([key, value]) => ({ key, value, source: sourceOf(key, answer?.sources ?? {}) }));
}

/** `{a: {b: 1, c: [1, 2]}}` → `[['a.b', 1], ['a.c', [1, 2]]]`; arrays of objects get indexes. */
function flatten(value, prefix = '', out = []) {
  const isObject = (v) => v != null && typeof v === 'object';
  if (Array.isArray(value) && value.some(isObject)) {
    value.forEach((item, i) => flatten(item, `${prefix}[${i}]`, out));
  } else if (isObject(value) && !Array.isArray(value) && Object.keys(value).length) {
    for (const [key, child] of Object.entries(value)) flatten(child, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out.push([prefix, value]);
  }
  return out;
}

/** The source of `key`, or of the nearest enclosing key that has one; `default` otherwise. */
function sourceOf(key, sources) {
  for (let k = key; k; k = k.replace(/(\.[^.[\]]*|\[\d+\])$/, '')) {
    if (sources[k]) return sources[k];
    if (!/[.[]/.test(k)) break;
  }
  return 'default';
}

function show(value) {
  if (value === null || value === undefined) return '(none)';
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

function configTable(rows) {
  return table(
    [
      { label: 'Key', value: (r) => el('code', {}, r.key), field: 'key' },
      { label: 'Value', value: (r) => el('code', { class: 'value' }, show(r.value)), field: 'value' },
      { label: 'Source', value: (r) => r.source, field: 'source' },
    ],
    rows,
    { testid: 'config', caption: 'Effective configuration', rowAttrs: (r) => ({ 'data-key': r.key }) },
  );
}

function applyFilter(scope, text) {
  const wanted = text.trim().toLowerCase();
  for (const row of scope.querySelectorAll('tr[data-key]')) {
    row.hidden = Boolean(wanted) && !row.dataset.key.toLowerCase().includes(wanted);
  }
}
