// The page's one `aria-live="polite"` region: status changes and errors for screen readers.

const region = () => document.getElementById('live');

/** Says `text` through the live region (again, even if it is the same text as last time). */
export function announce(text) {
  const live = region();
  if (!live) return;
  live.textContent = '';
  // A separate task, so that assistive technology sees a change even for repeated text.
  setTimeout(() => {
    live.textContent = text;
  }, 50);
}
