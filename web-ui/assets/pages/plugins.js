// Plugins: the loaded policies with their version (sha256), call rate, time and traps; upload
// of a new .wasm (the server validates it before swapping); rollback to the previous version.

import { get, post, request } from '../api.js';
import { announce } from '../announce.js';
import { confirmAction } from '../dialog.js';
import { el, field, setOptions } from '../dom.js';
import { describe } from '../errors.js';
import * as fmt from '../format.js';
import { panel } from '../panel.js';
import { LIVE_MS, poll } from '../poll.js';
import { table } from '../table.js';

export function render(root) {
  const upload = uploadForm();
  const loaded = panel('Loaded plugins', { wide: true });
  const rollbackResult = el('output', { id: 'plugin-rollback-result', 'aria-live': 'polite' });
  loaded.root.append(rollbackResult);
  // The form appears once the list is in: before that there is no plugin to choose.
  const uploading = panel('Upload a new version', { wide: true });
  root.append(loaded.root, uploading.root);

  const rates = callRates();
  const list = poll(
    (signal) =>
      get('/api/v1/plugins', { signal }).then(
        (plugins) => {
          loaded.show(pluginTable(plugins ?? [], rates(plugins ?? []), rollback));
          upload.setPlugins(plugins ?? []);
          if (!uploading.content.contains(upload.form)) uploading.show(upload.body);
        },
        (err) => {
          loaded.fail(err);
          if (!uploading.content.contains(upload.form)) uploading.fail(err);
        },
      ),
    LIVE_MS,
  );
  upload.done = () => list.now();

  async function rollback(plugin) {
    const sure = await confirmAction({
      title: `Roll back ${plugin.name}?`,
      message: `${plugin.name} goes back to version ${short(plugin.rollback_to)} until the next reload.`,
      ok: 'Roll back',
    });
    if (!sure) return;
    rollbackResult.classList.remove('error');
    try {
      const answer = await post(`/api/v1/plugins/${encodeURIComponent(plugin.name)}/rollback`);
      rollbackResult.textContent = `${answer.name} rolled back: now sha256 ${answer.sha256}`;
      announce(rollbackResult.textContent);
      list.now();
    } catch (err) {
      rollbackResult.classList.add('error');
      rollbackResult.textContent = describe(err);
    }
  }
}

/** Calls per second of each plugin since the previous listing (none on the first). */
function callRates() {
  let previous = null;
  return (plugins) => {
    const now = performance.now();
    const rates = new Map(
      plugins.map((p) => {
        const before = previous?.calls.get(p.name);
        const rate = before == null || p.calls < before ? null : ((p.calls - before) * 1000) / (now - previous.at);
        return [p.name, rate];
      }),
    );
    previous = { at: now, calls: new Map(plugins.map((p) => [p.name, p.calls])) };
    return rates;
  };
}

const short = (sha) => (sha ? `${sha.slice(0, 12)}…` : fmt.DASH);

function pluginTable(plugins, rates, rollback) {
  const rollbackButton = (p) =>
    p.rollback_to
      ? el(
          'button',
          {
            type: 'button',
            class: 'btn',
            'data-testid': 'rollback',
            'data-focus-key': `rollback-${p.name}`,
            'aria-label': `Roll back ${p.name} to ${short(p.rollback_to)}`,
            onclick: () => rollback(p),
          },
          `Roll back to ${short(p.rollback_to)}`,
        )
      : fmt.DASH;
  return table(
    [
      { label: 'Plugin', value: (p) => el('strong', {}, p.name), field: 'name' },
      { label: 'Kind', value: (p) => p.kind, field: 'kind' },
      { label: 'Source', value: (p) => (p.source ? el('code', {}, p.source) : fmt.DASH), field: 'source' },
      { label: 'Version (sha256)', value: (p) => el('code', { class: 'hash' }, p.sha256), field: 'sha256' },
      { label: 'Calls', value: (p) => fmt.integer(p.calls), numeric: true, field: 'calls' },
      { label: 'Call rate', value: (p) => fmt.rate(rates.get(p.name)), numeric: true },
      { label: 'Mean call', value: (p) => fmt.us(p.mean_call_us), numeric: true },
      { label: 'p99 call', value: (p) => fmt.us(p.p99_call_us), numeric: true, field: 'p99' },
      { label: 'Traps', value: (p) => fmt.integer(p.traps), numeric: true, field: 'traps' },
      { label: 'Timeouts', value: (p) => fmt.integer(p.timeouts), numeric: true, field: 'timeouts' },
      { label: 'Rollback', value: rollbackButton },
    ],
    plugins,
    { testid: 'plugins', caption: 'Loaded plugins', rowAttrs: (p) => ({ 'data-plugin': p.name }), empty: 'No plugin is loaded.' },
  );
}

/** The upload form (`body`, shown in a panel). `setPlugins` fills the choice with the uploadable
 * plugins. */
function uploadForm() {
  const name = el('select', { id: 'plugin-upload-name', name: 'name', required: true });
  const file = el('input', { id: 'plugin-upload-file', name: 'file', type: 'file', accept: '.wasm,application/wasm', required: true });
  const submit = el('button', { type: 'submit', id: 'plugin-upload-submit', class: 'btn btn-primary' }, 'Upload and activate');
  const result = el('output', { id: 'plugin-upload-result', 'aria-live': 'polite' });
  const form = el(
    'form',
    { id: 'plugin-upload-form', class: 'inline-form' },
    field('Plugin', name),
    field('WebAssembly module (.wasm)', file),
    submit,
  );
  const self = {
    form,
    body: [el('p', { class: 'hint' }, 'The module is validated and compiled first; the running version is kept if it fails.'), form, result],
    done: () => {},
    setPlugins(plugins) {
      // Builtin plugins have no file to replace; the server says which ones take uploads.
      const names = plugins.filter((p) => p.uploadable !== false).map((p) => p.name);
      const before = [...name.options].map((o) => o.value).join('\n');
      if (before !== names.join('\n')) setOptions(name, names);
      submit.disabled = names.length === 0;
    },
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = file.files?.[0];
    result.classList.remove('error');
    if (!name.value || !chosen) {
      result.classList.add('error');
      result.textContent = name.value ? 'Choose a .wasm file first.' : 'No plugin takes uploads.';
      return;
    }
    submit.disabled = true;
    result.textContent = `uploading ${chosen.name}…`;
    try {
      const answer = await request(`/api/v1/plugins/${encodeURIComponent(name.value)}`, {
        method: 'POST',
        body: chosen,
        contentType: 'application/wasm',
      });
      result.textContent = `${answer.name} is active: sha256 ${answer.sha256}`;
      result.dataset.sha256 = answer.sha256;
      file.value = '';
      self.done();
    } catch (err) {
      result.classList.add('error');
      delete result.dataset.sha256;
      result.textContent = describe(err);
    } finally {
      submit.disabled = name.options.length === 0;
    }
  });
  return self;
}
