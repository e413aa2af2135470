// Load test: run `bench` against one of the configured URLs with live progress (polled every
// 500 ms while it runs), its report, and the history of runs.

import { get, post } from '../api.js';
import { announce } from '../announce.js';
import { el, field, setOptions } from '../dom.js';
import { describe } from '../errors.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';
import { poll } from '../poll.js';
import { table } from '../table.js';

const PROGRESS_MS = 500;

export function render(root) {
  const url = el('select', { id: 'loadtest-url', name: 'url', required: true });
  const concurrency = el('input', {
    id: 'loadtest-concurrency',
    name: 'concurrency',
    type: 'text',
    value: '5,20',
    required: true,
    inputmode: 'numeric',
    pattern: '\\s*\\d+\\s*(,\\s*\\d+\\s*)*',
    autocomplete: 'off',
  });
  const duration = el('input', { id: 'loadtest-duration', name: 'duration', type: 'text', value: '5s', required: true, autocomplete: 'off' });
  const start = el('button', { type: 'submit', id: 'loadtest-start', class: 'btn btn-primary' }, 'Start');
  const progress = el('progress', { id: 'loadtest-progress', max: 1, value: 0, 'aria-labelledby': 'loadtest-progress-label' });
  const progressText = el('span', { id: 'loadtest-progress-text' }, 'Not running.');
  const status = el('output', { id: 'loadtest-status', 'aria-live': 'polite' });
  const report = el('div', { id: 'loadtest-report', 'data-testid': 'loadtest-report' });
  const form = el(
    'form',
    { id: 'loadtest-form', class: 'inline-form' },
    field('URL', url),
    field('Concurrent users per level', concurrency, 'comma-separated, e.g. 5,20'),
    field('Duration per level', duration, 'e.g. 5s, 1m'),
    start,
  );
  const run = panel('Run a load test', { wide: true });
  const history = panel('History', { wide: true });
  root.append(run.root, history.root);

  const showHistory = () => history.run(async () => historyTable((await get('/api/v1/load-tests')) ?? []));
  showHistory();

  run.run(async () => {
    const targets = await get('/api/v1/load-tests/targets');
    setOptions(url, targets.urls ?? []);
    start.disabled = !targets.urls?.length;
    // The configured defaults, when the server gives them.
    if (Array.isArray(targets.concurrency) && targets.concurrency.length) concurrency.value = targets.concurrency.join(',');
    if (targets.duration) duration.value = targets.duration;
    const body = [
      targets.urls?.length ? null : el('p', {}, 'No URL may be tested: list them in [load_test] urls in the config.'),
      form,
      el('div', { class: 'progress-row' }, el('span', { id: 'loadtest-progress-label' }, 'Progress'), progress, progressText),
      status,
      el('h3', {}, 'Report'),
      report,
    ];
    watch();
    return body;
  });

  let watching = null;
  /** The levels of the run this page started, to name the level running (the server gives its index). */
  let levelsStarted = null;
  /** Polls the current run until it is over, then shows its report. */
  function watch() {
    watching?.stop();
    watching = poll(async (signal) => {
      const current = await get('/api/v1/load-tests/current', { signal }).catch((err) => {
        status.classList.add('error');
        status.textContent = describe(err);
        return null;
      });
      if (!current) return;
      start.disabled = current.running || url.options.length === 0;
      progress.value = current.progress ?? 0;
      if (current.running) {
        status.classList.remove('error');
        const users = current.level == null ? null : levelsStarted?.[current.level];
        const level = current.level == null ? '' : users ? `, ${users} concurrent users` : `, level ${current.level + 1}`;
        const done = current.completed == null ? '' : `, ${fmt.integer(current.completed)} requests`;
        progressText.textContent = `${fmt.percent(current.progress ?? 0, 0)}${level}${done} (${current.url})`;
        return;
      }
      watching.stop();
      progressText.textContent = current.report ? 'Done.' : current.error ? 'Failed.' : 'Not running.';
      if (current.error) {
        status.classList.add('error');
        status.textContent = `The last run failed: ${current.error}`;
      }
      if (current.report) {
        report.replaceChildren(...reports(current.report).map((r) => reportTable(r)));
        showHistory();
      }
    }, PROGRESS_MS);
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.classList.remove('error');
    const levels = concurrency.value.split(',').map((s) => Number(s.trim()));
    if (levels.some((n) => !Number.isInteger(n) || n < 1)) {
      status.classList.add('error');
      status.textContent = 'Concurrent users: positive whole numbers separated by commas, e.g. 5,20';
      concurrency.focus();
      return;
    }
    start.disabled = true;
    levelsStarted = levels;
    try {
      await post('/api/v1/load-tests', { url: url.value, concurrency: levels, duration: duration.value.trim() });
      status.textContent = `Started against ${url.value}.`;
      report.replaceChildren();
      announce(status.textContent);
    } catch (err) {
      status.classList.add('error');
      status.textContent = describe(err);
      // 409: another run is on; follow it instead.
      if (err.status !== 409) {
        start.disabled = false;
        return;
      }
    }
    progress.value = 0;
    watch();
  });
}

/** A run of the history holds `reports` (one per URL); a manual run's report is one of them. */
function reports(run) {
  return Array.isArray(run.reports) ? run.reports : [run];
}

const LEVEL_COLUMNS = [
  { label: 'Concurrent users', value: (l) => fmt.integer(l.concurrency), numeric: true },
  { label: 'Requests/s', value: (l) => fmt.number(l.requests_per_second), numeric: true },
  { label: 'Average', value: (l) => fmt.ms(l.latency_avg_ms), numeric: true },
  { label: 'p99', value: (l) => fmt.ms(l.latency_p99_ms), numeric: true },
  { label: 'Requests', value: (l) => fmt.integer(l.requests), numeric: true },
  { label: 'Failed', value: (l) => fmt.integer(l.failures ?? l.failed), numeric: true },
  { label: 'Statuses', value: (l) => statuses(l) },
];

function statuses(level) {
  const parts = [
    ...Object.entries(level.statuses ?? {}).map(([status, n]) => `${n} × ${status}`),
    ...Object.entries(level.errors ?? {}).map(([why, n]) => `${n} × ${why}`),
  ];
  return parts.join(', ') || fmt.DASH;
}

function reportTable(report) {
  const about = `${report.url}, ${fmt.number(report.seconds_per_level)} s per level, started ${fmt.dateTime(report.started_at)}`;
  return el(
    'div',
    {},
    el('p', { class: 'hint' }, about),
    table(LEVEL_COLUMNS, report.levels ?? [], {
      testid: 'loadtest-levels',
      caption: about,
      rowAttrs: (l) => ({ 'data-concurrency': l.concurrency }),
    }),
  );
}

function historyTable(runs) {
  const rows = runs.flatMap((run) =>
    reports(run).flatMap((report) => (report.levels ?? []).map((level) => ({ run, report, level }))),
  );
  const errors = runs.flatMap((run) => (run.errors ?? []).map((e) => `${fmt.dateTime(run.finished_at)}: ${e}`));
  return [
    table(
      [
        { label: 'Finished', value: (r) => fmt.dateTime(r.run.finished_at ?? r.report.started_at) },
        { label: 'URL', value: (r) => r.report.url },
        ...LEVEL_COLUMNS.map((c) => ({ ...c, value: (r) => c.value(r.level) })),
      ],
      rows,
      { testid: 'loadtest-history', caption: 'Load test runs, newest first', empty: 'No load test has run yet.' },
    ),
    errors.length ? el('ul', { class: 'error-list' }, errors.map((e) => el('li', {}, e))) : null,
  ];
}
