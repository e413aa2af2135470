// Time-series charts: a thin wrapper over uPlot. A chart is made once and then fed new data in
// place (`update`), resizes with the window and repaints when the theme changes. After every
// update its container carries `data-points` = the non-null points of its first series (the
// browser tests read it).

import uPlot from './vendor/uplot/uPlot.esm.js';

/** Series colours: mid-tones with at least 3:1 contrast on both themes' panel backgrounds. */
const PALETTE = ['#2f7ed8', '#d9480f', '#2b8a3e', '#ae3ec9', '#0c8599', '#c92a6d', '#8a6d00', '#5c6ac4'];

const HEIGHT = 220;

/**
 * `lineChart(container, {labels: ['p50', 'p99'], format: ms, max?})` → `{update(data, labels?),
 * destroy()}`. The y axis starts at 0 and ends at `max` when given (100 for percentages), else
 * at a round number above the data. `data` is uPlot's aligned form: `[times (unix s), values of series 1, ...]`, with
 * null for gaps. Passing `labels` that differ from the current ones rebuilds the series (trend
 * charts whose label sets change).
 */
export function lineChart(container, { labels, format = String, height = HEIGHT, max }) {
  let current = [...labels];
  const build = () => make(container, current, format, height, max);
  let plot = build();
  setPoints(container, null);

  const resize = () => plot.setSize({ width: widthOf(container), height });
  const repaint = () => plot.redraw(false, true);
  window.addEventListener('resize', resize);
  window.addEventListener('themechange', repaint);

  return {
    update(data, newLabels) {
      if (newLabels && !sameLabels(newLabels, current)) {
        current = [...newLabels];
        plot.destroy();
        plot = build();
      }
      plot.setData(data);
      setPoints(container, data[1]);
    },
    destroy() {
      window.removeEventListener('resize', resize);
      window.removeEventListener('themechange', repaint);
      plot.destroy();
    },
  };
}

function make(container, labels, format, height, max) {
  const value = (_, v) => (v == null ? '—' : format(v));
  const axis = {
    // Functions, so that a redraw after a theme change picks up the new colours.
    stroke: () => colours(container).text,
    grid: { stroke: () => colours(container).grid, width: 1 },
    ticks: { stroke: () => colours(container).grid, width: 1 },
  };
  const options = {
    width: widthOf(container),
    height,
    scales: { x: { time: true }, y: { range: (_, __, dataMax) => [0, max ?? roundUp(dataMax)] } },
    series: [
      { label: 'time', value: (_, t) => (t == null ? '—' : new Date(t * 1000).toLocaleTimeString()) },
      ...labels.map((label, i) => ({
        label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        value,
        spanGaps: false,
        points: { show: false },
      })),
    ],
    axes: [axis, { ...axis, size: 70, values: (_, splits) => splits.map((v) => format(v)) }],
    legend: { show: true },
  };
  const empty = [[], ...labels.map(() => [])];
  return new uPlot(options, empty, container);
}

/** A round number (1, 2 or 5 times a power of ten) at least 10% above `value`; 1 for no data. */
function roundUp(value) {
  if (!(value > 0)) return 1;
  const target = value * 1.1;
  const power = 10 ** Math.floor(Math.log10(target));
  return [1, 2, 5, 10].map((m) => m * power).find((n) => n >= target);
}

function widthOf(container) {
  return Math.max(200, Math.floor(container.clientWidth || 300));
}

/** The chart's colours, resolved from CSS: `color` for text, `border-bottom-color` for the grid
 * (custom properties built with `light-dark()` are not resolved by `getPropertyValue`). */
function colours(container) {
  const style = getComputedStyle(container);
  return { text: style.color, grid: style.borderBottomColor };
}

function setPoints(container, values) {
  container.dataset.points = String((values ?? []).filter((v) => v != null).length);
}

function sameLabels(a, b) {
  return a.length === b.length && a.every((label, i) => label === b[i]);
}
