// Building DOM nodes without innerHTML: strings always become text nodes, so server data can
// never turn into markup. Styles go through classes (the CSP forbids style attributes).

/**
 * `el('button', {type: 'button', class: 'btn', onclick: fn}, 'Save')`.
 * Props: `class`, `text`, `dataset` (object), `on<event>` (listener), anything else is an
 * attribute (`true` sets it empty; `null`, `undefined` and `false` leave it out).
 * Children: nodes, strings, numbers, arrays of them; `null` and `false` are skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'style') throw new Error('no style attributes: the CSP refuses them');
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

/** Appends `children` (as `el` takes them) to `node`. */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A labelled form control: `<div class="field"><label for=id>…</label>control</div>`. */
export function field(label, control, hint) {
  const hintNode = hint ? el('span', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintNode) control.setAttribute('aria-describedby', hintNode.id);
  return el('div', { class: 'field' }, el('label', { for: control.id }, label), control, hintNode);
}

/** `<select>` options from `[value, label]` pairs (or plain values), keeping the choice if it stays. */
export function setOptions(select, options) {
  const kept = select.value;
  select.replaceChildren(
    ...options.map((option) => {
      const [value, label] = Array.isArray(option) ? option : [option, option];
      return el('option', { value }, label);
    }),
  );
  if ([...select.options].some((o) => o.value === kept)) select.value = kept;
}
