// Database pool: pools, databases (with pause / resume), connections over time, the slow-query
// table from the pooler's query shapes, and the clients and servers connected now.

import { get, post } from '../api.js';
import { announce } from '../announce.js';
import { badge } from '../badge.js';
import { lineChart } from '../charts.js';
import { confirmAction } from '../dialog.js';
import { el } from '../dom.js';
import { describe } from '../errors.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';
import { LIVE_MS, onLeave, poll } from '../poll.js';
import { align, groupSeries } from '../series.js';
import { table } from '../table.js';

/** Rows shown at most in the long tables (clients, servers, queries). */
const SHOWN = 100;

/** The chart's series: a gauge of the pooler, summed over pools and states. */
const CONNECTION_SERIES = [
  ['clients', 'gatehouse_pool_client_connections'],
  ['servers', 'gatehouse_pool_server_connections'],
  ['waiting', 'gatehouse_pool_clients_waiting'],
];

export function render(root) {
  const result = el('output', { id: 'pool-result', 'aria-live': 'polite' });
  const control = { busy: false };
  const pauseAll = el('button', { type: 'button', id: 'pool-pause-all', class: 'btn btn-danger' }, 'Pause all');
  const resumeAll = el('button', { type: 'button', id: 'pool-resume-all', class: 'btn' }, 'Resume all');
  const pools = panel('Pools', { wide: true, actions: [pauseAll, resumeAll] });
  pools.root.append(result);
  const databases = panel('Databases', { wide: true });
  const over = panel('Connections (last hour)', { wide: true });
  const queries = panel('Slowest query shapes (by total time)', { wide: true });
  const clients = panel('Clients', { wide: true });
  const servers = panel('Servers', { wide: true });
  root.append(pools.root, databases.root, over.root, queries.root, clients.root, servers.root);

  const report = poll(
    (signal) =>
      get('/api/v1/pool', { signal }).then(
        (pool) => {
          if (!pool.enabled) {
            const off = el('p', {}, 'The PostgreSQL pooler is off ([pool] in the config).');
            for (const p of [pools, databases, queries, clients, servers]) p.show(off.cloneNode(true));
            pauseAll.hidden = resumeAll.hidden = true;
            return;
          }
          pauseAll.hidden = resumeAll.hidden = false;
          pools.show(poolTable(pool));
          databases.show(databaseTable(pool, act));
          queries.show(queryTable(pool.queries ?? []));
          clients.show(limited(pool.clients ?? [], clientTable));
          servers.show(limited(pool.servers ?? [], serverTable));
        },
        (err) => [pools, databases, queries, clients, servers].forEach((p) => p.fail(err)),
      ),
    LIVE_MS,
  );

  async function act(action, database) {
    if (control.busy) return;
    const scope = database ? `database ${database}` : 'every database';
    if (action === 'pause') {
      const sure = await confirmAction({
        title: 'Pause the pool?',
        message: `New queries to ${scope} wait until it is resumed.`,
        ok: 'Pause',
      });
      if (!sure) return;
    }
    control.busy = true;
    result.classList.remove('error');
    try {
      const answer = await post(`/api/v1/pool/${action}`, database ? { database } : {});
      result.textContent = `${scope}: ${answer.paused ? 'paused' : 'running'}`;
      announce(result.textContent);
      report.now();
    } catch (err) {
      result.classList.add('error');
      result.textContent = describe(err);
    } finally {
      control.busy = false;
    }
  }
  pauseAll.addEventListener('click', () => act('pause'));
  resumeAll.addEventListener('click', () => act('resume'));

  let chart = null;
  poll(
    (signal) =>
      over.run(async () => {
        const answers = await Promise.all(
          CONNECTION_SERIES.map(([, metric]) => get(`/api/v1/trends/${metric}?since=1h`, { signal })),
        );
        const groups = answers.map((answer, i) => ({
          label: CONNECTION_SERIES[i][0],
          points: groupSeries(answer, () => 'all')[0]?.points ?? [],
        }));
        const { labels, data } = align(groups);
        if (!chart) {
          const container = el('div', { class: 'chart', 'data-testid': 'chart-pool-connections', 'data-points': 0 });
          over.show(container);
          chart = lineChart(container, { labels, format: (v) => fmt.number(v, 1) });
          onLeave(() => chart.destroy());
        }
        chart.update(data);
      }),
    LIVE_MS,
  );
}

function poolTable(pool) {
  return table(
    [
      { label: 'Database', value: (p) => p.database },
      { label: 'User', value: (p) => p.user },
      { label: 'Mode', value: (p) => p.pool_mode },
      { label: 'Clients active', value: (p) => fmt.integer(p.cl_active), numeric: true },
      { label: 'waiting', value: (p) => fmt.integer(p.cl_waiting), numeric: true },
      { label: 'idle', value: (p) => fmt.integer(p.cl_idle), numeric: true },
      { label: 'Servers active', value: (p) => fmt.integer(p.sv_active), numeric: true },
      { label: 'idle', value: (p) => fmt.integer(p.sv_idle), numeric: true },
      { label: 'max', value: (p) => fmt.integer(p.sv_max), numeric: true },
      { label: 'Longest wait', value: (p) => fmt.ms((p.maxwait ?? 0) * 1000 + (p.maxwait_us ?? 0) / 1000), numeric: true },
      { label: 'State', value: (p) => badge(p.paused ? 'paused' : 'running') },
    ],
    pool.pools ?? [],
    {
      testid: 'pool-pools',
      caption: 'Pools',
      rowAttrs: (p) => ({ 'data-pool': `${p.database}/${p.user}` }),
      empty: 'No pool is open yet.',
    },
  );
}

function databaseTable(pool, act) {
  const health = pool.database_health ?? {};
  const toggle = (d) => {
    const action = d.paused ? 'resume' : 'pause';
    return el(
      'button',
      {
        type: 'button',
        class: d.paused ? 'btn' : 'btn btn-danger',
        'data-action': action,
        'data-database': d.name,
        'data-focus-key': `pool-${d.name}`,
        'aria-label': `${d.paused ? 'Resume' : 'Pause'} database ${d.name}`,
        onclick: () => act(action, d.name),
      },
      d.paused ? 'Resume' : 'Pause',
    );
  };
  return table(
    [
      { label: 'Database', value: (d) => el('strong', {}, d.name) },
      { label: 'Server', value: (d) => `${d.host}:${d.port}/${d.database}` },
      { label: 'Mode', value: (d) => d.pool_mode },
      { label: 'Pool size', value: (d) => fmt.integer(d.pool_size), numeric: true },
      { label: 'Connections', value: (d) => fmt.integer(d.current_connections), numeric: true },
      { label: 'Health', value: (d) => badge(health[d.name]?.status ?? 'unchecked') },
      { label: 'Probe', value: (d) => probeText(health[d.name]) },
      { label: 'State', value: (d) => badge(d.paused ? 'paused' : 'running') },
      { label: 'Action', value: toggle },
    ],
    pool.databases ?? [],
    { testid: 'pool-databases', caption: 'Databases', rowAttrs: (d) => ({ 'data-database': d.name }) },
  );
}

function probeText(probe) {
  if (!probe) return fmt.DASH;
  if (probe.error) return probe.error;
  return `select 1: ${fmt.ms(probe.latency_ms)}`;
}

function queryTable(shapes) {
  return limited(shapes, (rows) =>
    table(
      [
        { label: 'Query', value: (q) => el('code', { class: 'query' }, q.query) },
        { label: 'Database', value: (q) => q.database },
        { label: 'User', value: (q) => q.user },
        { label: 'Calls', value: (q) => fmt.integer(q.calls), numeric: true },
        { label: 'Total', value: (q) => fmt.ms(q.total_ms), numeric: true },
        { label: 'Mean', value: (q) => fmt.ms(q.mean_ms), numeric: true },
        { label: 'p99', value: (q) => fmt.ms(q.p99_ms), numeric: true },
        { label: 'Rows', value: (q) => fmt.integer(q.rows), numeric: true },
        { label: 'Errors', value: (q) => fmt.integer(q.errors), numeric: true },
      ],
      rows,
      { testid: 'pool-queries', caption: 'Query shapes', empty: 'No query has run yet.' },
    ),
  );
}

function clientTable(rows) {
  return table(
    [
      { label: 'Address', value: (c) => `${c.addr}:${c.port}` },
      { label: 'User', value: (c) => c.user },
      { label: 'Database', value: (c) => c.database },
      { label: 'State', value: (c) => c.state },
      { label: 'Application', value: (c) => c.application_name || fmt.DASH },
      { label: 'Connected', value: (c) => fmt.dateTime(c.connect_time) },
      { label: 'Waiting', value: (c) => (c.wait_us ? fmt.ms(c.wait_us / 1000) : fmt.DASH), numeric: true },
      { label: 'Server', value: (c) => c.link ?? fmt.DASH, numeric: true },
    ],
    rows,
    { testid: 'pool-clients', caption: 'Clients', empty: 'No client is connected.' },
  );
}

function serverTable(rows) {
  return table(
    [
      { label: 'Id', value: (s) => s.id, numeric: true },
      { label: 'Server', value: (s) => `${s.addr}:${s.port}` },
      { label: 'User', value: (s) => s.user },
      { label: 'Database', value: (s) => s.database },
      { label: 'State', value: (s) => s.state },
      { label: 'Backend pid', value: (s) => s.remote_pid, numeric: true },
      { label: 'Connected', value: (s) => fmt.dateTime(s.connect_time) },
      { label: 'Client', value: (s) => s.link ?? fmt.DASH, numeric: true },
    ],
    rows,
    { testid: 'pool-servers', caption: 'Servers', empty: 'No server connection is open.' },
  );
}

/** The first SHOWN rows as `render(rows)` makes them, and how many were left out. */
function limited(rows, render) {
  const note = rows.length > SHOWN ? el('p', { class: 'hint' }, `Showing ${SHOWN} of ${rows.length}.`) : null;
  return [render(rows.slice(0, SHOWN)), note];
}
