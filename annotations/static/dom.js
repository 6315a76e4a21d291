// Building DOM safely. Caption text, phrases, flag details and priors come from an LMM or from data
// files: they are untrusted, so they only ever reach the page through textContent / value, never as
// HTML. This helper is the one way the page creates elements.

/**
 * el("span", {className: "x", text: "...", title: "...", dataset: {i: 1}}, child, ...)
 * `text` sets textContent; attributes go through setAttribute; children are nodes or strings
 * (strings become text nodes).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2).toLowerCase(), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Remove every child of `node`. */
export function clear(node) {
  node.replaceChildren();
  return node;
}
