// Small DOM helpers: element building (text is always text, never HTML), messages and form errors.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** h("button", {type: "button", onclick}, "Save") — attributes, properties for on*, children as text or nodes. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key === "text") element.textContent = value;
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let toastTimer = null;

export function toast(message, kind = "info") {
  const box = $("#toast");
  box.textContent = message;
  box.className = `toast ${kind}`;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, kind === "error" ? 8000 : 4000);
}

function fieldHead(field) {
  return String(field || "").split(/[.[]/)[0];
}

/** Remove the inline errors shown by showErrors. */
export function clearErrors(form, box) {
  $$(".field-error", form).forEach((node) => node.remove());
  $$("[aria-invalid]", form).forEach((node) => node.removeAttribute("aria-invalid"));
  if (box) {
    box.hidden = true;
    box.textContent = "";
  }
}

/**
 * Show the server's problems next to the controls they name (by `name` or `data-field`), and the rest in
 * the form's message box. `aliases` maps a server field to a control name when they differ.
 */
export function showErrors(form, error, box, aliases = {}) {
  clearErrors(form, box);
  const problems = error.problems && error.problems.length ? error.problems : [{ field: "", reason: error.message }];
  const leftovers = [];
  for (const problem of problems) {
    const head = aliases[problem.field] || aliases[fieldHead(problem.field)] || fieldHead(problem.field);
    const control = head && (form.querySelector(`[name="${CSS.escape(head)}"]`) || form.querySelector(`[data-field="${CSS.escape(head)}"]`));
    if (control) {
      const note = h("span", { class: "field-error", role: "alert" }, problem.reason);
      if (control.tagName === "FIELDSET") control.append(note);
      else {
        control.setAttribute("aria-invalid", "true");
        control.insertAdjacentElement("afterend", note);
        // Fixing the value takes the complaint away.
        const settle = () => {
          control.removeAttribute("aria-invalid");
          note.remove();
          if (box && box.dataset.generic === "true" && !form.querySelector(".field-error")) box.hidden = true;
        };
        control.addEventListener("input", settle, { once: true });
        control.addEventListener("change", settle, { once: true });
      }
    } else {
      leftovers.push(problem.field ? `${problem.field}: ${problem.reason}` : problem.reason);
    }
  }
  if (box) {
    const generic = !leftovers.length && error.status === 422;
    const lines = leftovers.length ? leftovers : [generic ? "Please correct the marked fields." : messageFor(error)];
    box.replaceChildren(...lines.map((line) => h("div", {}, line)));
    box.dataset.generic = String(generic);
    box.hidden = false;
  }
}

/** A sentence for an ApiError's status. */
export function messageFor(error) {
  if (error.status === 403) return "Not allowed: your role cannot change this (the server refused).";
  if (error.status === 401) return "Your session has ended; sign in again.";
  if (error.status === 429) return "Too many attempts; wait a moment and try again.";
  if (error.status === 0) return error.message;
  return error.message || `The server answered ${error.status}.`;
}

export function formatTime(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function formatClock(value) {
  const date = value ? new Date(value) : new Date();
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export function isoDay(date) {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 10);
}
