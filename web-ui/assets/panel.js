// A panel: a titled section that says "loading…" until its first data, then shows content or an
// error box, never nothing. When a refresh fails the last content stays, under the error.

import { isAbort } from './api.js';
import { announce } from './announce.js';
import { el } from './dom.js';
import { describe, errorBox } from './errors.js';

export function loading() {
  return el('p', { class: 'loading' }, 'loading…');
}

/**
 * `panel('Routes', {actions: [button]})` → `{root, content, show(...nodes), fail(err),
 * run(async fn)}`. `run` shows what `fn` returns (nothing, when `fn` updates content itself,
 * as a chart does) or the error it throws.
 */
export function panel(title, { actions = [], wide = false, testid } = {}) {
  const notice = el('div', { class: 'panel-notice' });
  const content = el('div', { class: 'panel-content' }, loading());
  const root = el(
    'section',
    { class: wide ? 'panel panel-wide' : 'panel', 'aria-label': title, 'data-testid': testid },
    el('div', { class: 'panel-head' }, el('h2', {}, title), actions.length ? el('div', { class: 'panel-actions' }, actions) : null),
    notice,
    content,
  );
  let failing = false;
  const self = {
    root,
    content,
    show(...nodes) {
      self.ok();
      swap(content, nodes.flat(Infinity).filter((n) => n != null && n !== false));
    },
    ok() {
      notice.replaceChildren();
      failing = false;
    },
    fail(err) {
      if (isAbort(err)) return;
      notice.replaceChildren(errorBox(err));
      content.querySelector(':scope > .loading')?.remove();
      // Once per failure spell, not on every poll.
      if (!failing) announce(`${title}: ${describe(err)}`);
      failing = true;
    },
    async run(fn) {
      try {
        const nodes = await fn();
        if (nodes === undefined) self.ok();
        else self.show(nodes);
      } catch (err) {
        self.fail(err);
      }
    },
  };
  return self;
}

/**
 * Replaces the children of `container`, keeping keyboard focus (on the element with the same id
 * or `data-focus-key`) and the horizontal scroll of tables, so that a poll does not throw the
 * user out of a table they are working in.
 */
export function swap(container, nodes) {
  const active = document.activeElement;
  const key = container.contains(active) ? focusSelector(active) : null;
  const scrolls = [...container.querySelectorAll('.table-wrap')].map((wrap) => wrap.scrollLeft);
  container.replaceChildren(...nodes);
  container.querySelectorAll('.table-wrap').forEach((wrap, i) => {
    if (scrolls[i]) wrap.scrollLeft = scrolls[i];
  });
  if (key) container.querySelector(key)?.focus();
}

function focusSelector(node) {
  if (node.id) return `#${CSS.escape(node.id)}`;
  if (node.dataset?.focusKey) return `[data-focus-key="${CSS.escape(node.dataset.focusKey)}"]`;
  return null;
}
