// Cache: size by tier, counters, hit/miss over time, top keys, and purge with confirmation.

import { get, post } from '../api.js';
import { lineChart } from '../charts.js';
import { confirmAction } from '../dialog.js';
import { el, field } from '../dom.js';
import { describe } from '../errors.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';
import { LIVE_MS, onLeave, poll } from '../poll.js';
import { align, groupSeries } from '../series.js';
import { table } from '../table.js';

const PURGE_KINDS = [
  ['key', 'Key'],
  ['prefix', 'Key prefix'],
  ['tag', 'Tag'],
  ['host', 'Host'],
];

export function render(root) {
  const purge = purgeForm();
  const sizes = panel('Size by tier');
  const counters = panel('Counters');
  const results = panel('Hits and misses (last hour, per second)', { wide: true });
  const keys = panel('Top keys by hits', { wide: true });
  root.append(purge.root, sizes.root, counters.root, results.root, keys.root);

  const report = poll(
    (signal) =>
      get('/api/v1/cache', { signal }).then(
        (cache) => {
          sizes.show(tierTable(cache));
          counters.show(counterTable(cache));
        },
        (err) => {
          sizes.fail(err);
          counters.fail(err);
        },
      ),
    LIVE_MS,
  );
  const top = poll((signal) => keys.run(async () => keyTable(await get('/api/v1/cache/keys?limit=50', { signal }))), LIVE_MS);

  let chart = null;
  poll(
    (signal) =>
      results.run(async () => {
        const answer = await get('/api/v1/trends/gatehouse_cache_requests_total?since=1h&rate=true', { signal });
        const { labels, data } = align(groupSeries(answer, (l) => l.result ?? 'all'));
        if (!chart) {
          const container = el('div', { class: 'chart', 'data-testid': 'chart-cache-results', 'data-points': 0 });
          results.show(container);
          chart = lineChart(container, { labels, format: fmt.rate });
          onLeave(() => chart.destroy());
        }
        chart.update(data, labels);
      }),
    LIVE_MS,
  );

  purge.done = () => {
    report.now();
    top.now();
  };
}

function tierTable(cache) {
  const tiers = [['memory', cache.memory], ['disk', cache.disk]].filter(([, tier]) => tier);
  const rows = tiers.map(([name, tier]) => ({ name, ...tier }));
  const sized = table(
    [
      { label: 'Tier', value: (t) => t.name },
      { label: 'Entries', value: (t) => fmt.integer(t.entries), numeric: true },
      { label: 'Size', value: (t) => fmt.bytes(t.bytes), numeric: true },
      { label: 'Bound', value: (t) => fmt.bytes(t.bound), numeric: true },
      { label: 'Used', value: (t) => fmt.percent(t.bound ? t.bytes / t.bound : null), numeric: true },
    ],
    rows,
    { testid: 'cache-tiers', caption: 'Cache tiers', rowAttrs: (t) => ({ 'data-tier': t.name }) },
  );
  const shared =
    cache.shared_connected == null
      ? null
      : el('p', {}, `Shared tier (Redis): ${cache.shared_connected ? 'connected' : 'unreachable'}`);
  return [sized, shared];
}

function counterTable(cache) {
  const looked = cache.hits + cache.stale + cache.revalidated + cache.misses;
  const rows = [
    ['Fresh hits', fmt.integer(cache.hits)],
    ['Stale hits', fmt.integer(cache.stale)],
    ['Revalidated', fmt.integer(cache.revalidated)],
    ['Misses', fmt.integer(cache.misses)],
    ['Bypasses', fmt.integer(cache.bypasses)],
    ['Hit ratio', fmt.percent(looked ? (cache.hits + cache.stale + cache.revalidated) / looked : null)],
    ['Corrupt entries dropped', fmt.integer(cache.corrupt_dropped)],
    ['Bytes served from cache', fmt.bytes(cache.bytes_served)],
    ['Upstream bytes saved', fmt.bytes(cache.upstream_bytes_saved)],
  ];
  return table(
    [
      { label: 'Counter', value: ([name]) => name },
      { label: 'Since start', value: ([, value]) => value, numeric: true },
    ],
    rows,
    { testid: 'cache-counters', caption: 'Cache counters since start' },
  );
}

function keyTable(keys) {
  return table(
    [
      { label: 'Key', value: (k) => el('code', {}, k.key), field: 'key' },
      { label: 'Host', value: (k) => k.host ?? fmt.DASH },
      { label: 'Tags', value: (k) => (k.tags?.length ? k.tags.join(', ') : fmt.DASH) },
      { label: 'Hits', value: (k) => fmt.integer(k.hits), numeric: true },
      { label: 'Size', value: (k) => fmt.bytes(k.bytes), numeric: true },
      { label: 'Age', value: (k) => fmt.duration(k.age_seconds), numeric: true },
    ],
    keys ?? [],
    { testid: 'cache-keys', caption: 'Top cache keys by hits', empty: 'The cache is empty.' },
  );
}

/** The purge form; `done` is called after a purge so the tables refresh. */
function purgeForm() {
  const kind = el('select', { id: 'purge-kind', name: 'kind' }, PURGE_KINDS.map(([v, l]) => el('option', { value: v }, l)));
  const value = el('input', { id: 'purge-value', name: 'value', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false' });
  const submit = el('button', { type: 'submit', id: 'purge-submit', class: 'btn btn-danger' }, 'Purge');
  const result = el('output', { id: 'purge-result', for: 'purge-kind purge-value', 'aria-live': 'polite' });
  const form = el(
    'form',
    { id: 'purge-form', class: 'inline-form' },
    field('Purge by', kind),
    field('Value', value, 'A key is e.g. GET shop.test/products?page=2'),
    submit,
  );
  const self = { root: null, done: () => {} };
  self.root = el('section', { class: 'panel panel-wide', 'aria-label': 'Purge' }, el('div', { class: 'panel-head' }, el('h2', {}, 'Purge')), form, result);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const what = value.value.trim();
    if (!what) return;
    const label = PURGE_KINDS.find(([v]) => v === kind.value)[1].toLowerCase();
    const sure = await confirmAction({
      title: 'Purge the cache?',
      message: `Every entry with ${label} “${what}” is dropped from all tiers.`,
      ok: 'Purge',
    });
    if (!sure) return;
    submit.disabled = true;
    result.classList.remove('error');
    result.textContent = 'purging…';
    try {
      const answer = await post('/api/v1/cache/purge', { [kind.value]: what });
      const shared = answer.shared == null ? '' : `; shared tier: ${answer.shared}`;
      result.textContent = `Purged ${fmt.integer(answer.purged)} entr${answer.purged === 1 ? 'y' : 'ies'}${shared}.`;
      self.done();
    } catch (err) {
      result.classList.add('error');
      result.textContent = describe(err);
    } finally {
      submit.disabled = false;
    }
  });
  return self;
}
