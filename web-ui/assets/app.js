// The entry module: session check, login or the app shell, the hash router (`#/overview`, ...)
// and the header (version, theme toggle, logout). Pages live in ./pages/, one module each,
// loaded when first visited; each exports `render(root)`.

import { get, post, setCsrf, whenUnauthorized } from './api.js';
import { announce } from './announce.js';
import { el } from './dom.js';
import { describe, errorBox } from './errors.js';
import { fetchHealth } from './health.js';
import { leavePage } from './poll.js';
import { initTheme } from './theme.js';
import { renderLogin } from './login.js';

/** The pages, in nav order. */
const PAGES = [
  { path: 'overview', label: 'Overview', load: () => import('./pages/overview.js') },
  { path: 'routes', label: 'Routes', load: () => import('./pages/routes.js') },
  { path: 'cache', label: 'Cache', load: () => import('./pages/cache.js') },
  { path: 'pool', label: 'Database pool', load: () => import('./pages/pool.js') },
  { path: 'alerts', label: 'Alerts', load: () => import('./pages/alerts.js') },
  { path: 'recommendations', label: 'Recommendations', load: () => import('./pages/recommendations.js') },
  { path: 'plugins', label: 'Plugins', load: () => import('./pages/plugins.js') },
  { path: 'load-test', label: 'Load test', load: () => import('./pages/loadtest.js') },
  { path: 'trends', label: 'Trends', load: () => import('./pages/trends.js') },
  { path: 'config', label: 'Config', load: () => import('./pages/config.js') },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const logoutButton = document.getElementById('logout');
const version = document.getElementById('version');

let loggedIn = false;
/** Bumped on every navigation, so that a page module arriving late does not render. */
let navigation = 0;

function buildNav() {
  nav.replaceChildren(
    el('ul', {}, PAGES.map((page) => el('li', {}, el('a', { href: `#/${page.path}` }, page.label)))),
  );
}

function showLogin() {
  loggedIn = false;
  setCsrf(null);
  leavePage();
  nav.hidden = true;
  logoutButton.hidden = true;
  document.title = 'Log in · Gatehouse admin';
  renderLogin(main, (csrf) => {
    setCsrf(csrf);
    showApp();
  });
}

function showApp() {
  loggedIn = true;
  nav.hidden = false;
  logoutButton.hidden = false;
  showVersion();
  route(false);
}

async function showVersion() {
  try {
    const health = await fetchHealth();
    version.textContent = health?.version ? `v${health.version}` : '';
  } catch {
    version.textContent = '';
  }
}

async function route(moveFocus = true) {
  if (!loggedIn) return;
  const path = location.hash.replace(/^#\/?/, '').split('?')[0];
  const page = PAGES.find((p) => p.path === path);
  if (!page) {
    // Unknown or empty: the overview, without leaving a history entry for the bad hash.
    location.replace('#/overview');
    return;
  }
  const mine = ++navigation;
  leavePage();
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === `#/${page.path}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${page.label} · Gatehouse admin`;
  const heading = el('h1', { id: 'page-title', tabindex: -1 }, page.label);
  const root = el('div', { class: 'page', 'data-page': page.path });
  main.replaceChildren(heading, root, el('p', { class: 'loading' }, 'loading…'));
  try {
    const module = await page.load();
    if (mine !== navigation || !loggedIn) return;
    main.lastElementChild.remove();
    module.render(root);
  } catch (err) {
    if (mine !== navigation) return;
    main.replaceChildren(heading, errorBox(err));
  }
  if (moveFocus) heading.focus();
}

async function logout() {
  try {
    await post('/ui/logout', undefined, { auth: false });
  } catch (err) {
    // 401: already logged out. Anything else: say so, but the page still goes.
    if (err.status !== 401) announce(`Logout: ${describe(err)}`);
  }
  showLogin();
  announce('Logged out');
}

async function start() {
  initTheme(document.getElementById('theme-toggle'));
  buildNav();
  document.getElementById('skip-link').addEventListener('click', (event) => {
    // The hash belongs to the router: move focus without touching it.
    event.preventDefault();
    main.focus();
  });
  logoutButton.addEventListener('click', logout);
  window.addEventListener('hashchange', () => route(true));
  whenUnauthorized(() => {
    if (loggedIn) {
      showLogin();
      announce('Session ended: please log in again');
    }
  });
  try {
    const session = await get('/api/v1/session', { auth: false });
    setCsrf(session.csrf);
    showApp();
  } catch (err) {
    if (err.status === 401) showLogin();
    else main.replaceChildren(el('h1', {}, 'Gatehouse admin'), errorBox(err), retryButton());
  }
}

function retryButton() {
  return el('button', { type: 'button', class: 'btn', onclick: () => location.reload() }, 'Retry');
}

start();
