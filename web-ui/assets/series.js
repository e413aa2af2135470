// Trend answers (`GET /api/v1/trends/{metric}`: `{series: [{labels, points: [[t, v], ...]}]}`)
// reshaped for charts: grouped by some labels and aligned on one time axis.

/** `{series}` grouped by `keyOf(labels)`, values at the same time summed; sorted by key. */
export function groupSeries(answer, keyOf) {
  const groups = new Map();
  for (const series of answer?.series ?? []) {
    const key = keyOf(series.labels ?? {});
    const points = groups.get(key) ?? new Map();
    for (const [t, v] of series.points ?? []) {
      if (v == null) continue;
      points.set(t, (points.get(t) ?? 0) + v);
    }
    groups.set(key, points);
  }
  return [...groups.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([label, points]) => ({ label, points: [...points.entries()] }));
}

/** Labels as one short line: `route=api, result=hit` (or `fallback` when there are none). */
export function labelText(labels, fallback = 'value') {
  const parts = Object.entries(labels ?? {}).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(', ') : fallback;
}

/** `[{label, points}]` → `{labels, data}` with `data` in uPlot's aligned form (null for gaps). */
export function align(groups) {
  const times = [...new Set(groups.flatMap((g) => g.points.map(([t]) => t)))].sort((a, b) => a - b);
  const data = [times];
  for (const group of groups) {
    const byTime = new Map(group.points);
    data.push(times.map((t) => (byTime.has(t) ? byTime.get(t) : null)));
  }
  return { labels: groups.map((g) => g.label), data };
}
