// The Reten console: vanilla JavaScript over the JSON API, no framework and
// no build step (ES modules, served from this origin). The token (or API
// key) lives in sessionStorage only and is sent as a header; nothing is ever
// put in a URL. Every text from the server is set with textContent.

import { $, TENANT, TOKEN, HttpError, api, busy, clear, confirmDialog, el, json, lineDiff, notice, short, when, whenUnauthorized } from "./lib.js";
import { counts, drawPreview, samplesTable } from "./trace.js";

// ---------------------------------------------------------------- state
const state = {
  listing: null,        // GET /api/policies
  serving: new Map(),   // path -> content of the serving revision's text files
  servingRevision: null,
  drafts: new Map(),    // path -> edited content (differs from serving, or new)
  deleted: new Set(),
  current: null,        // the path in the editor
  errors: [],           // the checker's errors for the current path
  dryRunOf: null,       // the candidate key a dry run passed for
  commerce: null,       // the commerce picked in Try it
  users: new Map(),     // commerce user id -> name
  replayTimer: null,
  shadowTimer: null,
};

// ---------------------------------------------------------------- sign-in
function tenantFromJwt(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
    return { sub: claims.sub, tenant: (claims.tenant_ids || [])[0] };
  } catch (_) { return {}; }
}

async function signIn(event) {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  let tenant = $("signin-tenant").value.trim();
  const claims = tenantFromJwt(token);
  if (!tenant && claims.tenant) tenant = claims.tenant;
  sessionStorage.setItem(TOKEN, token);
  if (tenant) sessionStorage.setItem(TENANT, tenant); else sessionStorage.removeItem(TENANT);
  $("signin-token").value = "";
  try {
    await start();
  } catch (e) {
    sessionStorage.removeItem(TOKEN);
    showSignedOut();
    notice("Sign-in failed: " + e.message);
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(TENANT);
  stopTimers();
  showSignedOut();
}

function showSignedOut() {
  $("signin").hidden = false;
  $("session").hidden = true;
  $("app").hidden = true;
  $("signed-out").hidden = false;
}

async function start() {
  await loadPolicies();
  const token = sessionStorage.getItem(TOKEN);
  const who = tenantFromJwt(token).sub || "API key";
  $("session-who").textContent = `Signed in as ${who}, tenant ${sessionStorage.getItem(TENANT) || "of the key"}`;
  $("signin").hidden = true;
  $("session").hidden = false;
  $("signed-out").hidden = true;
  $("app").hidden = false;
  notice("");
  route();
}

// ---------------------------------------------------------------- tabs
const TABS = ["policies", "editor", "try", "tests", "replay", "shadow", "history"];
function show(name) {
  for (const t of TABS) {
    const on = t === name;
    $("tab-" + t).setAttribute("aria-selected", on ? "true" : "false");
    $("tab-" + t).tabIndex = on ? 0 : -1;
    $("panel-" + t).hidden = !on;
  }
  if (name === "history") loadHistory().catch((e) => notice(e.message));
  if (name === "shadow") watchShadow(); else stopShadow();
  if (name === "editor") renderEditor();
}
function tabKeys(event) {
  const i = TABS.indexOf(event.target.id.replace("tab-", ""));
  let j = null;
  if (event.key === "ArrowRight") j = (i + 1) % TABS.length;
  if (event.key === "ArrowLeft") j = (i + TABS.length - 1) % TABS.length;
  if (j === null) return;
  event.preventDefault();
  show(TABS[j]);
  $("tab-" + TABS[j]).focus();
}
// In-page links: #activity=<id> opens Try it on that activity.
function route() {
  const m = /^#activity=([0-9a-f-]{36})$/.exec(location.hash);
  if (m) {
    $("try-activity").value = m[1];
    show("try");
    previewActivity().catch((e) => notice(e.message));
  }
}

// ---------------------------------------------------------------- policies
async function loadPolicies() {
  const listing = await api("GET", "/api/policies");
  state.listing = listing;
  $("policies-revision").textContent = listing.revision ?? "–";
  $("policies-generation").textContent = listing.generation ?? "–";
  const errs = listing.errors || [];
  $("policies-errors").hidden = errs.length === 0;
  $("policies-errors").textContent = errs.map((e) => `${e.path}: ${e.message}`).join("\n");
  const tenantBody = clear($("policies-tenant").tBodies[0]);
  const globalBody = clear($("policies-global").tBodies[0]);
  const rows = [];
  for (const p of listing.policies || []) rows.push({ path: p.path, kind: p.kind + (p.criterionType ? ` (${p.criterionType})` : ""), engine: p.engine, version: p.version, loadedAt: p.loadedAt, lastError: p.lastError, origin: p.origin });
  for (const c of listing.configs || []) rows.push({ path: c.path, kind: "CONFIG", engine: "TOML", version: c.version, loadedAt: c.loadedAt, lastError: c.lastError, origin: c.path.startsWith("global/") ? "GLOBAL" : "TENANT" });
  rows.sort((a, b) => a.path.localeCompare(b.path));
  for (const r of rows) {
    const local = r.path.replace(/^tenants\/[^/]+\//, "");
    const cells = [
      el("td", { class: "mono", text: local }), el("td", { text: r.kind }), el("td", { text: r.engine }),
      el("td", { class: "mono", title: r.version, text: short(r.version) }), el("td", { text: when(r.loadedAt) }),
      el("td", { class: r.lastError ? "bad" : "", text: r.lastError ? (r.lastError.message || json(r.lastError)) : "none" }),
    ];
    if (r.origin === "GLOBAL") {
      globalBody.append(el("tr", {}, cells));
    } else {
      const editable = /\.(rhai|toml|json)$/.test(local);
      cells.push(el("td", {}, editable ? el("button", { type: "button", "aria-label": "Edit " + local, onclick: () => openFile(local) }, "Edit") : ""));
      tenantBody.append(el("tr", { "data-path": local }, cells));
    }
  }
  await loadServing(listing.revision);
}

// The serving revision's files, the editor's base.
async function loadServing(revision) {
  if (revision === null || revision === undefined || revision === state.servingRevision) return;
  const detail = await api("GET", `/api/policies/revisions/${revision}`);
  state.serving = new Map();
  for (const f of detail.set || []) if (f.content !== null && f.content !== undefined) state.serving.set(f.path, f.content);
  state.servingRevision = revision;
  for (const [path, content] of [...state.drafts]) if (state.serving.get(path) === content) state.drafts.delete(path);
  fillFileSelect();
}

// ---------------------------------------------------------------- editor
function fillFileSelect() {
  const select = clear($("editor-file"));
  const paths = new Set([...state.serving.keys(), ...state.drafts.keys()]);
  for (const p of [...paths].sort()) select.append(el("option", { value: p }, p + (state.drafts.has(p) ? " (edited)" : "")));
  if (!state.current || !paths.has(state.current)) state.current = paths.has("tenant.toml") ? "tenant.toml" : [...paths][0] || null;
  if (state.current) select.value = state.current;
}

function openFile(path) {
  state.current = path;
  fillFileSelect();
  show("editor");
  $("editor-text").focus();
}

const content = (path) => (state.drafts.has(path) ? state.drafts.get(path) : state.serving.get(path) ?? "");

function renderEditor() {
  const text = $("editor-text");
  if (state.current === null) { text.value = ""; return; }
  if (text.dataset.path !== state.current) {
    text.value = content(state.current);
    text.dataset.path = state.current;
    state.errors = [];
    scheduleCheck(0);
  }
  renderGutter();
  renderDrafts();
}

function renderGutter() {
  const lines = $("editor-text").value.split("\n").length;
  const bad = new Set(state.errors.filter((e) => !e.path || e.path === state.current).map((e) => e.line));
  const gutter = clear($("editor-gutter"));
  for (let i = 1; i <= lines; i++) gutter.append(el("span", { class: bad.has(i) ? "err" : null, "data-line": i }, String(i)));
  gutter.scrollTop = $("editor-text").scrollTop;
}

function renderDrafts() {
  const n = state.drafts.size;
  $("editor-drafts").textContent = n === 0 ? "No changes." : `Edited, not applied: ${[...state.drafts.keys()].join(", ")}.`;
  const key = candidateKey();
  const apply = $("editor-apply");
  let why = "";
  if (n === 0) why = "Nothing to apply: no file differs from the serving revision.";
  else if (state.errors.length) why = `Apply is refused: ${state.errors.length} error(s) in ${state.current}. Fix them first.`;
  else if (state.dryRunOf !== key) why = "Apply is refused until a dry run of these changes passes.";
  apply.disabled = why !== "";
  $("editor-apply-why").textContent = why || "The dry run passed: Apply writes these changes as a new revision.";
  $("editor-apply-why").className = why ? "hint" : "ok";
}

function candidate() {
  return {
    files: [...state.drafts].map(([path, c]) => ({ path, content: c })),
    delete: [...state.deleted],
  };
}
const candidateKey = () => JSON.stringify(candidate());

function onEdit() {
  const path = state.current;
  const text = $("editor-text").value;
  if (state.serving.get(path) === text) state.drafts.delete(path); else state.drafts.set(path, text);
  const option = [...$("editor-file").options].find((o) => o.value === path);
  if (option) option.textContent = path + (state.drafts.has(path) ? " (edited)" : "");
  renderGutter();
  renderDrafts();
  scheduleCheck(400);
}

let checkTimer = null;
let checkSeq = 0;
function scheduleCheck(delay) {
  clearTimeout(checkTimer);
  $("editor-check").textContent = "Checking…";
  $("editor-check").className = "hint";
  checkTimer = setTimeout(() => check().catch((e) => notice(e.message)), delay);
}

// The checker alone: the tenant's set with this file, checked whole.
async function check() {
  const seq = ++checkSeq;
  const path = state.current;
  const text = $("editor-text").value;
  const res = await api("POST", "/api/policies/check", { path, content: text });
  const errors = (res.errors || []).map((e) => ({ line: e.line, column: e.column, message: e.message, path: e.path }));
  if (seq !== checkSeq || path !== state.current) return;
  // Errors of this file first; another file's (a dangling reference) too.
  state.errors = errors;
  const list = clear($("editor-errors"));
  for (const e of errors) {
    const other = e.path && e.path !== path ? e.path : "";
    const at = e.line ? `line ${e.line}, column ${e.column || 1}` : "";
    const where = [other, at].filter(Boolean).join(" ") || path;
    list.append(el("li", { "data-line": e.line || "", "data-column": e.column || "" },
      el("button", { type: "button", onclick: () => (other ? openFile(e.path) : goTo(e.line, e.column)) }, where), ": ", e.message));
  }
  $("editor-check").textContent = errors.length ? `${errors.length} error(s) in ${path}.` : `No errors in ${path}.`;
  $("editor-check").className = errors.length ? "bad" : "ok";
  renderGutter();
  renderDrafts();
}

function goTo(line, column) {
  if (!line) return;
  const text = $("editor-text");
  const lines = text.value.split("\n");
  let offset = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
  offset += Math.max(0, (column || 1) - 1);
  text.focus();
  text.setSelectionRange(offset, offset);
}

function showChange(res, dry) {
  const out = clear($("editor-result"));
  const files = res.files || [];
  out.append(el("p", { class: "ok" }, dry
    ? `Dry run passed: ${files.length} file(s) would change.`
    : `Applied as revision ${res.revision} (generation ${res.generation}).`));
  out.append(el("ul", {}, files.map((f) => el("li", { class: "mono" }, `${f.change} ${f.path}`))));
}

async function dryRun() {
  const key = candidateKey();
  try {
    const res = await api("POST", "/api/policies/changes", { ...candidate(), dry_run: true, message: $("editor-message").value || null });
    state.dryRunOf = key;
    showChange(res, true);
  } catch (e) {
    state.dryRunOf = null;
    clear($("editor-result")).append(el("p", { class: "bad" }, "Dry run refused: " + e.message));
    if (e instanceof HttpError && e.status === 422) await check();
  }
  renderDrafts();
}

async function apply() {
  if (state.dryRunOf !== candidateKey() || state.errors.length) { renderDrafts(); return; }
  const body = { ...candidate(), message: $("editor-message").value || null, base_revision: state.servingRevision };
  try {
    const res = await api("POST", "/api/policies/changes", body);
    showChange(res, false);
    state.drafts.clear();
    state.deleted.clear();
    state.dryRunOf = null;
    $("editor-message").value = "";
    await loadPolicies();
    $("editor-text").dataset.path = "";
    renderEditor();
  } catch (e) {
    clear($("editor-result")).append(el("p", { class: "bad" }, "Apply refused: " + e.message));
  }
}

function addFile() {
  const path = $("editor-new").value.trim();
  if (!/^(tenant\.toml|(criteria|attributes)\/[a-z0-9_]+\.rhai|tests\/[a-z0-9_]+\.(toml|json))$/.test(path)) {
    notice("A new file is criteria/<name>.rhai, attributes/<name>.rhai or tests/<name>.toml, with <name> in [a-z0-9_].");
    return;
  }
  if (!state.drafts.has(path) && !state.serving.has(path)) state.drafts.set(path, "");
  $("editor-new").value = "";
  openFile(path);
}

function revert() {
  if (!state.current) return;
  state.drafts.delete(state.current);
  $("editor-text").dataset.path = "";
  fillFileSelect();
  renderEditor();
}

// ---------------------------------------------------------------- try it
async function searchCommerces(event) {
  event.preventDefault();
  const q = $("try-search").value.trim();
  const res = await api("GET", "/api/commerces?per_page=20" + (q ? "&search=" + encodeURIComponent(q) : ""));
  const list = clear($("try-commerces"));
  for (const c of res.data || []) {
    list.append(el("li", {}, el("button", { type: "button", "data-id": c.id, onclick: () => pickCommerce(c) }, `${c.name} (${c.externalId})`)));
  }
  if (!(res.data || []).length) list.append(el("li", { class: "hint" }, "No commerce matches."));
}

async function pickCommerce(c) {
  state.commerce = c;
  $("try-commerce-name").textContent = `${c.name} (${c.externalId})`;
  const detail = await api("GET", `/api/commerces/${c.id}`);
  for (const u of detail.users || []) state.users.set(u.id, u.name || u.externalId);
}

async function previewCommerce() {
  if (!state.commerce) { notice("Pick a commerce first (search, then choose one)."); return; }
  const keys = $("try-keys").value.split(",").map((s) => s.trim()).filter(Boolean);
  const body = {
    type: $("try-type").value, channel: $("try-channel").value, reason: $("try-reason").value,
    commerce_id: state.commerce.id, scheduled_at: $("try-scheduled").value,
    idempotency_key: "console-preview-" + Date.now(), attribute_keys: keys,
  };
  if ($("try-candidate").checked) {
    notice("The preview of a new create runs on the serving set; the editor's changes apply to a stored decision (right).");
  }
  const res = await api("POST", "/api/activities/preview", body);
  drawPreview($("try-result"), res, `${body.type} on ${body.channel} for ${state.commerce.name}`, state.users);
}

async function previewActivity(event) {
  if (event) event.preventDefault();
  const id = $("try-activity").value.trim();
  if (!id) { notice("Enter an activity id, or pick a recent one."); return; }
  const body = $("try-candidate").checked ? candidate() : undefined;
  const res = await api("POST", `/api/activities/${id}/preview`, body);
  try {
    const a = await api("GET", `/api/activities/${id}`);
    const cid = a.commerceId || (a.commerce && a.commerce.id);
    if (cid) {
      const detail = await api("GET", `/api/commerces/${cid}`);
      for (const u of detail.users || []) state.users.set(u.id, u.name || u.externalId);
    }
  } catch (_) { /* names are a nicety; ids still show */ }
  drawPreview($("try-result"), res, `the stored decision input of activity ${id}` + (body ? ", with the editor's changes" : ""), state.users);
}

async function recentActivities() {
  const res = await api("GET", "/api/activities?per_page=10");
  const list = clear($("try-activities"));
  for (const a of res.data || []) {
    list.append(el("li", {}, el("button", { type: "button", "data-id": a.id, onclick: () => { $("try-activity").value = a.id; previewActivity().catch((e) => notice(e.message)); } },
      `${a.channel} ${a.status} ${when(a.createdAt)}`)));
  }
  if (!(res.data || []).length) list.append(el("li", { class: "hint" }, "No activity yet."));
}

// ---------------------------------------------------------------- tests
async function runTests() {
  const body = $("tests-candidate").checked && state.drafts.size ? candidate() : undefined;
  const out = clear($("tests-result"));
  const res = await api("POST", "/api/policies/tests", body);
  out.append(el("p", { class: res.failed ? "bad" : "ok", id: "tests-summary" }, `${res.passed} passed, ${res.failed} failed`));
  const table = el("table", { class: "grid" }, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Fixture"), el("th", { scope: "col" }, "Result"), el("th", { scope: "col" }, "Message"))));
  const body2 = el("tbody");
  for (const r of res.results || []) {
    const msg = el("td", {}, r.message || "");
    if (!r.ok && r.trace) msg.append(el("details", {}, el("summary", {}, "trace"), el("pre", {}, json(r.trace))));
    body2.append(el("tr", {}, el("td", { class: "mono" }, r.name), el("td", { class: r.ok ? "ok" : "bad" }, r.ok ? "pass" : "FAIL"), msg));
  }
  table.append(body2);
  out.append(el("div", { class: "scroll" }, table));
}

// ---------------------------------------------------------------- replay
async function runReplay() {
  const body = { ...candidate(), limit: Number($("replay-limit").value) || null, message: $("replay-message").value || null };
  const started = await api("POST", "/api/policies/replays", body);
  $("replay-cancel").disabled = false;
  $("replay-cancel").dataset.id = started.id;
  clear($("replay-result")).append(el("p", {}, "Replay ", el("code", { id: "replay-id" }, started.id), " started."));
  await pollReplay(started.id);
}

async function pollReplay(id) {
  clearTimeout(state.replayTimer);
  const job = await api("GET", `/api/policies/replays/${id}`);
  const bar = $("replay-progress");
  bar.max = Math.max(job.total || 0, 1);
  bar.value = job.status === "RUNNING" ? job.evaluated || 0 : bar.max;
  bar.setAttribute("aria-valuetext", `${job.evaluated} of ${job.total} evaluated`);
  const out = clear($("replay-result"));
  out.append(el("p", {}, "Replay ", el("code", { id: "replay-id" }, job.id), " — ", el("strong", { id: "replay-status" }, job.status), job.error ? el("span", { class: "bad" }, " " + job.error) : ""));
  out.append(counts("replay-counts", [["total", job.total, "total"], ["evaluated", job.evaluated, "evaluated"], ["changed", job.changed, "changed"], ["unchanged", job.unchanged, "unchanged"], ["errors", job.errors, "errors"]]));
  const ch = job.changes || {};
  const parts = [["status", ch.status, "status"], ["target", ch.target, "target"], ["lock reason", ch.lockReason, "lockReason"]];
  for (const [k, v] of Object.entries(ch.attributes || {})) parts.push([`attribute ${k}`, v, "attr-" + k]);
  out.append(el("h3", {}, "What changes"), counts("replay-changes", parts));
  if ((job.samples || []).length) {
    out.append(el("h3", {}, "Samples"), samplesTable(job.samples, "before", "after", state.users));
  }
  if (job.status === "RUNNING") {
    state.replayTimer = setTimeout(() => pollReplay(id).catch((e) => notice(e.message)), 500);
  } else {
    $("replay-cancel").disabled = true;
  }
}

async function cancelReplay() {
  const id = $("replay-cancel").dataset.id;
  if (id) await api("DELETE", `/api/policies/replays/${id}`);
}

// ---------------------------------------------------------------- shadow
async function loadShadow() {
  const out = $("shadow-result");
  let s;
  try {
    s = await api("GET", "/api/policies/shadow");
  } catch (e) {
    if (e instanceof HttpError && e.status === 404) {
      clear(out).append(el("p", { id: "shadow-none", class: "hint" }, "No shadow set is installed."));
      $("shadow-promote").disabled = true;
      $("shadow-end").disabled = true;
      return;
    }
    throw e;
  }
  $("shadow-promote").disabled = false;
  $("shadow-end").disabled = false;
  clear(out);
  out.append(el("p", {}, `Shadow since ${when(s.startedAt)} by ${s.author || "–"}${s.message ? ": " + s.message : ""}`));
  out.append(el("ul", {}, (s.files || []).map((f) => el("li", { class: "mono" }, `${f.change} ${f.path}`))));
  out.append(counts("shadow-counts", [["evaluated", s.evaluated, "evaluated"], ["agreed", s.agreed, "agreed"], ["disagreed", s.disagreed, "disagreed"], ["errors", s.errors, "errors"], ["dropped", s.dropped, "dropped"]]));
  out.append(el("p", { class: "hint" }, `Updated ${new Date().toLocaleTimeString()}; refreshes every 2 s.`));
  if ((s.samples || []).length) out.append(el("h3", {}, "Disagreements"), samplesTable(s.samples, "live", "shadow", state.users));
}
function watchShadow() {
  stopShadow();
  const tick = () => loadShadow().catch((e) => notice(e.message)).finally(() => {
    if (!$("panel-shadow").hidden) state.shadowTimer = setTimeout(tick, 2000);
  });
  tick();
}
function stopShadow() { clearTimeout(state.shadowTimer); state.shadowTimer = null; }
function stopTimers() { stopShadow(); clearTimeout(state.replayTimer); }

async function installShadow() {
  if (!state.drafts.size) { notice("Edit a file first: the shadow set is the live set with the editor's changes."); return; }
  await api("PUT", "/api/policies/shadow", { ...candidate(), message: $("shadow-message").value || null });
  watchShadow();
}
async function promoteShadow() {
  if (!(await confirmDialog("Promote the shadow set? It becomes a new serving revision and the shadow ends."))) return;
  const res = await api("POST", "/api/policies/shadow/promote", { message: $("shadow-message").value || null });
  clear($("shadow-result")).append(el("p", { class: "ok" }, `Promoted as revision ${res.revision}.`));
  await loadPolicies();
}
async function endShadow() {
  if (!(await confirmDialog("End the shadow set? Its counts are discarded."))) return;
  await api("DELETE", "/api/policies/shadow");
  await loadShadow();
}

// ---------------------------------------------------------------- history
async function loadHistory() {
  $("history").setAttribute("aria-busy", "true");
  try { await drawHistory(); } finally { $("history").setAttribute("aria-busy", "false"); }
}
async function drawHistory() {
  const res = await api("GET", "/api/policies/revisions?per_page=50");
  const tbody = clear($("history").tBodies[0]);
  const serving = state.listing ? state.listing.revision : null;
  for (const r of res.data || []) {
    const files = el("ul", { class: "cands" });
    for (const f of r.files || []) {
      files.append(el("li", {}, el("button", { type: "button", class: "linkish", "aria-label": `Diff of ${f.path} in revision ${r.revision}`, onclick: () => diff(r.revision, f.path).catch((e) => notice(e.message)) }, `${f.change} ${f.path}`)));
    }
    const action = r.revision === serving
      ? el("span", { class: "ok" }, "serving")
      : el("button", { type: "button", "data-restore": r.revision, onclick: (ev) => busy(ev.currentTarget, () => restore(r.revision)) }, `Restore ${r.revision}`);
    tbody.append(el("tr", { "data-revision": r.revision },
      el("td", {}, String(r.revision)), el("td", {}, when(r.createdAt)), el("td", {}, r.author), el("td", {}, r.source),
      el("td", {}, r.message || ""), el("td", {}, files), el("td", {}, action)));
  }
}

const revisionCache = new Map();
async function revisionFile(n, path) {
  if (n < 1) return null;
  if (!revisionCache.has(n)) revisionCache.set(n, await api("GET", `/api/policies/revisions/${n}`));
  const f = (revisionCache.get(n).set || []).find((x) => x.path === path);
  if (!f) return null;
  return f.content ?? `(binary, sha256 ${f.sha256})`;
}

// A line diff (longest common subsequence) of a file against the previous revision.
async function diff(n, path) {
  const after = await revisionFile(n, path);
  const before = await revisionFile(n - 1, path);
  const a = before === null ? [] : before.split("\n");
  const b = after === null ? [] : after.split("\n");
  const lines = lineDiff(a, b);
  const out = clear($("history-diff"));
  out.append(el("h3", {}, `${path}: revision ${n - 1} → ${n}`));
  out.append(el("pre", { class: "diff", id: "diff-view" }, lines.map(([cls, text]) => el("span", { class: cls || null }, text))));
}

async function restore(n) {
  if (!(await confirmDialog(`Restore revision ${n}? Its whole set becomes a new serving revision; files not in it are deleted.`))) return;
  const res = await api("POST", `/api/policies/revisions/${n}/restore`, { base_revision: state.servingRevision, message: `restore of revision ${n} (console)` });
  clear($("history-diff")).append(el("p", { class: "ok", id: "restore-result" }, `Restored revision ${n} as revision ${res.revision}.`));
  await loadPolicies();
  await loadHistory();
}

// ---------------------------------------------------------------- wiring
function wire() {
  $("signin").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  for (const t of TABS) {
    $("tab-" + t).addEventListener("click", () => show(t));
    $("tab-" + t).addEventListener("keydown", tabKeys);
  }
  $("policies-refresh").addEventListener("click", (e) => busy(e.currentTarget, loadPolicies));
  $("editor-file").addEventListener("change", () => { state.current = $("editor-file").value; renderEditor(); });
  $("editor-text").addEventListener("input", onEdit);
  $("editor-text").addEventListener("scroll", () => { $("editor-gutter").scrollTop = $("editor-text").scrollTop; });
  $("editor-text").addEventListener("keydown", (e) => {
    // Tab indents; Escape then Tab leaves the editor (keyboard users are never trapped).
    if (e.key === "Tab" && !e.shiftKey && !e.target.dataset.escaped) {
      e.preventDefault();
      const t = e.target, s = t.selectionStart;
      t.setRangeText("    ", s, t.selectionEnd, "end");
      onEdit();
    }
    e.target.dataset.escaped = e.key === "Escape" ? "1" : "";
  });
  $("editor-new-add").addEventListener("click", addFile);
  $("editor-revert").addEventListener("click", revert);
  $("editor-dryrun").addEventListener("click", (e) => busy(e.currentTarget, dryRun));
  $("editor-apply").addEventListener("click", (e) => busy(e.currentTarget, apply).then(renderDrafts));
  $("try-commerce-form").addEventListener("submit", (e) => searchCommerces(e).catch((x) => notice(x.message)));
  $("try-run").addEventListener("click", (e) => busy(e.currentTarget, previewCommerce));
  $("try-activity-form").addEventListener("submit", (e) => previewActivity(e).catch((x) => notice(x.message)));
  $("try-recent").addEventListener("click", (e) => busy(e.currentTarget, recentActivities));
  $("tests-run").addEventListener("click", (e) => busy(e.currentTarget, runTests));
  $("replay-run").addEventListener("click", (e) => busy(e.currentTarget, runReplay));
  $("replay-cancel").addEventListener("click", (e) => busy(e.currentTarget, cancelReplay));
  $("shadow-install").addEventListener("click", (e) => busy(e.currentTarget, installShadow));
  $("shadow-promote").addEventListener("click", (e) => busy(e.currentTarget, promoteShadow));
  $("shadow-end").addEventListener("click", (e) => busy(e.currentTarget, endShadow));
  $("history-refresh").addEventListener("click", (e) => busy(e.currentTarget, loadHistory));
  window.addEventListener("hashchange", route);
}

wire();
whenUnauthorized((problem) => {
  if ($("app").hidden) return;
  signOut();
  notice("Signed out: " + ((problem && problem.detail) || "the credential was refused"));
});
if (sessionStorage.getItem(TOKEN)) start().catch((e) => { showSignedOut(); notice(e.message); });
else showSignedOut();
