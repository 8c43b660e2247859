// Building pages: elements, labelled fields, forms that show the API's
// problems beside the fields they name, and the status line.

let fieldIds = 0;

/** An element: `h("p", { class: "hint" }, "text", child…)`. */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces the page's content, titles it and moves focus to it. */
export function page(title, ...children) {
  const main = document.getElementById("main");
  document.title = `${title} · Fleet account`;
  main.replaceChildren(h("h1", {}, title), ...children);
  main.focus();
}

/** Says something to everyone, screen readers included. */
export function announce(text) {
  const status = document.getElementById("status");
  status.textContent = text;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => { status.textContent = ""; }, 6000);
}

/**
 * A labelled input named like its API field, with a hint and a place for
 * its error. `options.type` "select" takes `options.choices`.
 */
export function field(name, label, options = {}) {
  const id = `f${++fieldIds}-${name}`;
  const error = h("p", { class: "error", id: `${id}-error` });
  const hint = options.hint ? h("p", { class: "hint", id: `${id}-hint` }, options.hint) : null;
  const described = [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" ");
  let control;
  if (options.type === "select") {
    control = h("select", { id, name, "aria-describedby": described },
      options.choices.map((choice) => h("option", { value: choice, selected: choice === options.value }, choice)));
  } else {
    control = h("input", {
      id, name, type: options.type || "text", value: options.value ?? "", autocomplete: options.autocomplete || "off",
      required: options.required, minlength: options.minlength, maxlength: options.maxlength, inputmode: options.inputmode,
      pattern: options.pattern, accept: options.accept, "aria-describedby": described,
    });
  }
  if (options.type === "checkbox") {
    control.checked = Boolean(options.checked);
    control.disabled = Boolean(options.disabled);
    return h("div", { class: "field" }, h("label", { class: "check", for: id }, control, label), hint, error);
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint, error);
}

/** The message of a failed call, for a person. */
export function describe(err) {
  if (err.status === 429) {
    const wait = err.retryAfter ?? 1;
    return `Too many requests. Try again in ${wait} second${wait === 1 ? "" : "s"}.`;
  }
  return err.message || "Something went wrong.";
}

/**
 * A form whose submit runs `action(values, form)`; the API's field errors
 * appear beside their fields and anything else in the form's alert.
 */
export function form(children, submitLabel, action, attributes = {}) {
  const alert = h("p", { class: "alert", role: "alert" });
  const button = h("button", { type: "submit" }, submitLabel);
  const node = h("form", { novalidate: true, ...attributes }, alert, children, button);
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(node);
    button.disabled = true;
    try {
      await action(values(node), node);
    } catch (err) {
      showError(node, err);
    } finally {
      button.disabled = false;
    }
  });
  return node;
}

function values(node) {
  const out = {};
  for (const control of node.elements) {
    if (!control.name) continue;
    if (control.type === "checkbox") out[control.name] = control.checked;
    else if (control.type === "file") out[control.name] = control.files[0] || null;
    else out[control.name] = control.value;
  }
  return out;
}

function clearErrors(node) {
  node.querySelector(".alert").textContent = "";
  for (const error of node.querySelectorAll(".error")) error.textContent = "";
  for (const control of node.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}

/** Shows a failed call's errors in `node` (a form). */
export function showError(node, err) {
  const alert = node.querySelector(".alert");
  let placed = 0;
  for (const { field: name, message } of err.errors || []) {
    const control = node.elements && node.elements.namedItem(name);
    if (!control || !control.id) continue;
    control.setAttribute("aria-invalid", "true");
    document.getElementById(`${control.id}-error`).textContent = `${label(control)} ${message}.`;
    if (placed++ === 0) control.focus();
  }
  if (placed === 0 || placed < (err.errors || []).length) alert.textContent = describe(err);
  if (typeof err.status !== "number") throw err;
}

function label(control) {
  const text = control.labels && control.labels[0] ? control.labels[0].textContent.trim() : control.name;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A date and time for people, in their own zone. */
export function when(value) {
  if (!value) return "never";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** A table with a caption, headings and rows of cells. */
export function table(caption, headings, rows) {
  return h("table", {},
    h("caption", { class: "hint" }, caption),
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows));
}

/** A figure list: label → value. */
export function figures(pairs) {
  return h("dl", { class: "figures" }, pairs.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, value))));
}

/** A section with a heading. */
export function section(title, ...children) {
  return h("section", {}, h("h2", {}, title), ...children);
}

/** A button that runs `action`, shows failures in the status line, and is disabled meanwhile. */
export function button(text, action, attributes = {}) {
  const node = h("button", { type: "button", ...attributes }, text);
  node.addEventListener("click", async () => {
    node.disabled = true;
    try {
      await action();
    } catch (err) {
      announce(describe(err));
      if (typeof err.status !== "number") throw err;
    } finally {
      node.disabled = false;
    }
  });
  return node;
}
