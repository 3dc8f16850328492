// The console's helpers: building elements, calling the API with the
// credential of the tab, problem+json as text, the confirmation dialog and a
// line diff. Every text from the server is set with textContent, never as
// HTML.

export const $ = (id) => document.getElementById(id);
export const TOKEN = "reten.console.token";
export const TENANT = "reten.console.tenant";

let onUnauthorized = null;
/** What to do when the API answers 401 (an expired or revoked credential). */
export function whenUnauthorized(handler) { onUnauthorized = handler; }

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
export const clear = (node) => { node.replaceChildren(); return node; };
export const short = (sha) => (sha ? String(sha).slice(0, 12) : "–");
export const when = (ts) => (ts ? new Date(ts).toLocaleString() : "–");
export const json = (v) => JSON.stringify(v, null, 2);

export function notice(text) {
  const n = $("notice");
  if (!text) { n.hidden = true; n.textContent = ""; return; }
  n.textContent = text;
  n.hidden = false;
}

// A problem+json answer as one readable line, with each field's message.
export function problemText(body, status) {
  if (!body || typeof body !== "object") return "HTTP " + status;
  let text = body.detail || body.title || "HTTP " + status;
  if (Array.isArray(body.errors) && body.errors.length) {
    text += ": " + body.errors.map((e) => {
      const at = e.line ? `${e.field || e.path} ${e.line}:${e.column || 1}` : (e.field || e.path || "");
      return (at ? at + " " : "") + e.message;
    }).join("; ");
  }
  return text;
}

export class HttpError extends Error {
  constructor(status, body) {
    super(problemText(body, status));
    this.status = status;
    this.body = body;
  }
}

// Every call to the API: the credential as a header, JSON in and out.
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN);
  const tenant = sessionStorage.getItem(TENANT);
  if (token) {
    if (/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) headers.Authorization = "Bearer " + token;
    else headers["x-api-key"] = token;
  }
  if (tenant) headers["x-tenant-id"] = tenant;
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = text; } }
  if (res.status === 401 && onUnauthorized) onUnauthorized(data);
  if (!res.ok) throw new HttpError(res.status, data);
  return data;
}

export function confirmDialog(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-ok").removeEventListener("click", ok);
      $("confirm-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      dialog.close();
      resolve(answer);
    };
    const ok = () => done(true);
    const cancel = (e) => { if (e) e.preventDefault(); done(false); };
    $("confirm-ok").addEventListener("click", ok);
    $("confirm-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// Runs an action from a button: disables it meanwhile, reports a failure.
export async function busy(button, action) {
  button.disabled = true;
  notice("");
  try { await action(); } catch (e) { notice(e.message || String(e)); } finally { button.disabled = false; }
}

/** A line diff of a and b (arrays of lines) by longest common subsequence:
 *  [["" | "add" | "del", text with its " ", "+" or "-" prefix], ...]. */
export function lineDiff(a, b) {
  const m = a.length, k = b.length;
  const lcs = Array.from({ length: m + 1 }, () => new Uint32Array(k + 1));
  for (let i = m - 1; i >= 0; i--) for (let j = k - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const lines = [];
  let i = 0, j = 0;
  while (i < m || j < k) {
    if (i < m && j < k && a[i] === b[j]) { lines.push(["", " " + a[i]]); i++; j++; }
    else if (j < k && (i >= m || lcs[i][j + 1] >= lcs[i + 1][j])) { lines.push(["add", "+" + b[j]]); j++; }
    else { lines.push(["del", "-" + a[i]]); i++; }
  }
  return lines;
}
