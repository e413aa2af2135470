// Dark and light themes. Without a choice the OS preference applies (CSS `color-scheme`); the
// toggle stores an explicit choice in localStorage and sets `data-theme` on <html>.

const KEY = 'gatehouse.theme';
const dark = window.matchMedia('(prefers-color-scheme: dark)');

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null; // storage turned off: the OS preference it is
  }
}

function current() {
  return document.documentElement.dataset.theme ?? (dark.matches ? 'dark' : 'light');
}

function apply(theme, button) {
  if (theme === 'dark' || theme === 'light') document.documentElement.dataset.theme = theme;
  const now = current();
  button.textContent = now === 'dark' ? 'Light theme' : 'Dark theme';
  button.setAttribute('aria-label', `Switch to the ${now === 'dark' ? 'light' : 'dark'} theme`);
  // Charts paint on canvas and read their colours from CSS: they redraw on this event.
  window.dispatchEvent(new Event('themechange'));
}

/** Applies the stored theme and wires `button` to toggle it. */
export function initTheme(button) {
  apply(stored(), button);
  dark.addEventListener('change', () => apply(null, button));
  button.addEventListener('click', () => {
    const next = current() === 'dark' ? 'light' : 'dark';
    try {
      localStorage.setItem(KEY, next);
    } catch {
      // not kept across reloads, still applied now
    }
    apply(next, button);
  });
}
