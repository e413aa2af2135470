// Numbers, durations, sizes and times as people read them. Every formatter shows a dash for
// values that are missing (null, undefined, NaN).

export const DASH = '—';

const formats = new Map();
function formatter(digits) {
  if (!formats.has(digits)) {
    formats.set(digits, new Intl.NumberFormat(undefined, { maximumFractionDigits: digits }));
  }
  return formats.get(digits);
}

const missing = (value) => value == null || Number.isNaN(value) || value === '';

/** `1234.5` → `1,234.5` (at most `digits` decimals). */
export function number(value, digits = 2) {
  return missing(value) ? DASH : formatter(digits).format(value);
}

export const integer = (value) => number(value, 0);

/** A 0..1 ratio as a percentage: `0.1234` → `12.3 %`. */
export function percent(ratio, digits = 1) {
  return missing(ratio) ? DASH : `${number(ratio * 100, digits)} %`;
}

/** Per second: `12.5` → `12.5/s`. */
export function rate(value) {
  return missing(value) ? DASH : `${number(value)}/s`;
}

/** Milliseconds, with more decimals when small. */
export function ms(value) {
  return missing(value) ? DASH : `${number(value, value < 10 ? 2 : 1)} ms`;
}

/** Microseconds. */
export function us(value) {
  return missing(value) ? DASH : `${number(value, value < 10 ? 2 : 1)} µs`;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `1536` → `1.5 KiB`. */
export function bytes(value) {
  if (missing(value)) return DASH;
  let scaled = Number(value);
  let unit = 0;
  while (Math.abs(scaled) >= 1024 && unit < BYTE_UNITS.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${number(scaled, unit === 0 ? 0 : 1)} ${BYTE_UNITS[unit]}`;
}

/** Seconds as the two largest units: `3725` → `1 h 2 min`. */
export function duration(seconds) {
  if (missing(seconds)) return DASH;
  let left = Math.max(0, Math.round(seconds));
  const parts = [];
  for (const [size, unit] of [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']]) {
    if (left >= size || (size === 1 && parts.length === 0)) {
      parts.push(`${Math.floor(left / size)} ${unit}`);
      left %= size;
    }
  }
  return parts.slice(0, 2).join(' ');
}

/** A time given as unix seconds or an RFC 3339 string, in the browser's locale. */
export function dateTime(value) {
  if (missing(value)) return DASH;
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** Yes / no for booleans. */
export function yesNo(value) {
  return missing(value) ? DASH : value ? 'yes' : 'no';
}
