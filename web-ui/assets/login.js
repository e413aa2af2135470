// The login form: the admin token in, a session cookie (set by the server) and a CSRF token out.

import { post } from './api.js';
import { announce } from './announce.js';
import { el, field } from './dom.js';
import { describe } from './errors.js';

/** Shows the form in `root`; calls `loggedIn(csrf)` once the server accepted the token. */
export function renderLogin(root, loggedIn) {
  const token = el('input', {
    id: 'login-token',
    name: 'token',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
    spellcheck: 'false',
  });
  const submit = el('button', { type: 'submit', id: 'login-submit', class: 'btn btn-primary' }, 'Log in');
  const error = el('p', { id: 'login-error', class: 'error-box', hidden: true });
  const form = el(
    'form',
    { id: 'login-form', class: 'login', 'aria-labelledby': 'login-title' },
    el('h1', { id: 'login-title' }, 'Log in'),
    el('p', { class: 'hint' }, 'The admin token: admin.token in the config, or the one `gatehouse admin-token rotate` printed.'),
    // Password managers file a password under a user name; the admin token has none.
    el('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'admin', hidden: true }),
    field('Admin token', token),
    error,
    submit,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.hidden = true;
    try {
      const session = await post('/ui/login', { token: token.value }, { auth: false });
      token.value = '';
      announce('Logged in');
      loggedIn(session.csrf);
    } catch (err) {
      error.textContent = describe(err);
      error.hidden = false;
      announce(`Login failed: ${describe(err)}`);
      token.select();
    } finally {
      submit.disabled = false;
    }
  });
  root.replaceChildren(form);
  token.focus();
}
