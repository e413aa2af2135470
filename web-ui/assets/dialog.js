// Confirmation before anything destructive, in a modal `<dialog>` (focus stays inside it and
// Escape cancels it, both for free).

import { el } from './dom.js';

let dialog = null;

function build() {
  const message = el('p', { id: 'confirm-message' });
  const form = el(
    'form',
    { method: 'dialog' },
    el('h2', { id: 'confirm-title' }, 'Are you sure?'),
    message,
    el(
      'div',
      { class: 'dialog-buttons' },
      el('button', { type: 'submit', value: 'cancel', id: 'confirm-cancel', class: 'btn', autofocus: true }, 'Cancel'),
      el('button', { type: 'submit', value: 'ok', id: 'confirm-ok', class: 'btn btn-danger' }, 'Confirm'),
    ),
  );
  const node = el('dialog', { id: 'confirm-dialog', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-message' }, form);
  document.body.append(node);
  return node;
}

/** Asks; resolves to true when the user pressed the confirm button (labelled `ok`). */
export function confirmAction({ title = 'Are you sure?', message, ok = 'Confirm' }) {
  dialog ??= build();
  // One question at a time: a second one while the first is open is a no.
  if (dialog.open) return Promise.resolve(false);
  dialog.querySelector('#confirm-title').textContent = title;
  dialog.querySelector('#confirm-message').textContent = message;
  dialog.querySelector('#confirm-ok').textContent = ok;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}
