// The console's drawings of decisions: a preview's trace as a decision
// path, before/after samples of a replay or a shadow set, and counts.

import { clear, el, json, short } from "./lib.js";

// A commerce user's name, from the names seen so far, else the id.
const namer = (users) => (id) => (id ? (users.get(id) || id) : "nobody");

// The trace as a decision path: config, criteria (with their candidates),
// fallbacks, the chosen user, then each attribute and any log lines.
export function drawPreview(out, res, what, users) {
  clear(out);
  const userName = namer(users);
  const preview = res.preview || res;
  const trace = preview.trace || {};
  for (const t of preview.targetUsers || []) if (t.commerceUser) users.set(t.commerceUserId, t.commerceUser.name || t.commerceUser.externalId);
  out.append(el("h3", {}, "Decision path for " + what));
  out.append(el("p", {}, "Status ", el("strong", { id: "try-status" }, preview.status || "–"), trace.generation !== undefined ? ` (registry generation ${trace.generation})` : ""));
  const path = el("ol", { class: "path", id: "try-path" });
  const target = trace.target || {};
  for (const c of target.configsConsidered || []) {
    path.append(el("li", { class: c.applies ? "matched" : "" }, el("strong", {}, `Config priority ${c.priority}`),
      ` — channels ${c.channels ? c.channels.join(", ") : "all"}; ${c.active ? "active" : "inactive"}; ${c.applies ? "applies" : "does not apply"}`));
  }
  if (target.config) {
    const c = target.config;
    path.append(el("li", { class: "chosen" }, el("strong", {}, `Config used: ${c.source} priority ${c.priority}`),
      ` — ${c.resolutionStrategy}; criteria from ${target.criteriaSource || "–"}; fallback to commerce rep ${c.fallbackToCommerceRep ? "yes" : "no"}, to owner ${c.fallbackToOwner ? "yes" : "no"}`));
  }
  for (const c of target.criteria || []) {
    const p = c.policy || {};
    const cls = c.outcome === "MATCHED" ? "matched" : (c.error ? "failed" : "");
    const item = el("li", { class: cls, "data-criterion": c.type },
      el("strong", {}, `Criterion ${c.type}`), ` (priority ${c.priority}) → `, el("strong", { class: c.error ? "bad" : "" }, c.outcome || "–"),
      el("div", { class: "meta" }, `policy ${p.name || "–"}, engine ${p.engine || "–"}, version ${short(p.version)}, ${c.durationUs ?? "–"} µs`
        + (c.cost !== undefined && c.cost !== null ? `, cost ${c.cost}` : "") + (c.fuel !== undefined && c.fuel !== null ? `, fuel ${c.fuel}` : "")
        + (c.operations !== undefined && c.operations !== null ? `, ${c.operations} operations` : "") + (c.tier ? `, tier ${c.tier}` : "")
        + (c.config && Object.keys(c.config).length ? `, config ${JSON.stringify(c.config)}` : "")));
    if (c.notRunReason) item.append(el("div", { class: "hint" }, `not run: ${c.notRunReason}`));
    if (c.error) item.append(el("div", { class: "bad" }, typeof c.error === "string" ? c.error : json(c.error)));
    const cands = el("ul", { class: "cands" });
    for (const k of c.candidates || []) {
      cands.append(el("li", { class: k.accepted ? "ok" : "warn" }, `${k.name || k.externalId || userName(k.commerceUserId)}: ${k.accepted ? "kept" : "skipped (" + (k.skipReason || "–") + ")"}`, k.note ? ` — ${k.note}` : ""));
    }
    if (c.candidatesOmitted) cands.append(el("li", { class: "hint" }, `${c.candidatesOmitted} more not shown`));
    if ((c.candidates || []).length) item.append(cands);
    logLines(item, c.logs);
    path.append(item);
  }
  for (const f of target.fallbacks || []) {
    path.append(el("li", { class: f.matched || f.commerceUserId ? "matched" : "" }, el("strong", {}, `Fallback ${f.kind || f.type || ""}`), " ", JSON.stringify(f)));
  }
  const chosen = (preview.targetUsers || [])[0];
  path.append(el("li", { class: chosen ? "chosen" : "failed", id: "try-chosen" }, el("strong", {}, "Chosen: "),
    chosen ? `${userName(chosen.commerceUserId)} by ${chosen.criterionType || chosen.lockReason || "–"} (policy ${chosen.policyName || "–"}, ${chosen.policyEngine || "–"}, ${chosen.lockReason || ""})` : "no user"));
  out.append(path);

  const values = new Map((preview.attributes || []).map((a) => [a.key, a]));
  if ((trace.attributes || []).length) {
    out.append(el("h3", {}, "Attributes"));
    const attrs = el("ol", { class: "path" });
    for (const a of trace.attributes) {
      const p = a.policy || {};
      const v = values.get(a.key);
      const item = el("li", { class: a.error ? "failed" : "matched" }, el("strong", {}, a.key), ` → ${a.outcome}`,
        el("div", { class: "meta" }, `${a.strategy}, config from ${a.configSource}${a.callerValue ? ", caller's value" : ""}; policy ${p.name || "–"}, engine ${p.engine || "–"}, version ${short(p.version)}, ${a.durationUs ?? "–"} µs`
          + (a.cost !== undefined && a.cost !== null ? `, cost ${a.cost}` : "") + (a.fuel != null ? `, fuel ${a.fuel}` : "")
          + (a.operations != null ? `, ${a.operations} operations` : "")));
      if (a.error) item.append(el("div", { class: "bad" }, typeof a.error === "string" ? a.error : json(a.error)));
      if (v && v.value !== undefined) item.append(el("details", {}, el("summary", {}, "value"), el("pre", {}, json(v.value))));
      logLines(item, a.logs);
      attrs.append(item);
    }
    out.append(attrs);
  }
  logLines(out, trace.logs || preview.logs);
}

function logLines(parent, logs) {
  if (!Array.isArray(logs) || !logs.length) return;
  parent.append(el("pre", { class: "logs", "aria-label": "log lines" }, logs.map((l) => (typeof l === "string" ? l : `${l.level || ""} ${l.message || json(l)}`)).join("\n")));
}

function decisionCells(d, userName) {
  if (!d) return [el("td", {}, "–"), el("td", {}, "–"), el("td", {}, "–")];
  return [el("td", {}, d.status || "–"), el("td", {}, userName(d.targetCommerceUserId)), el("td", {}, `${d.criterionType || "–"} ${d.lockReason ? "(" + d.lockReason + ")" : ""}`)];
}

export function samplesTable(samples, before, after, users) {
  const userName = namer(users);
  const head = el("tr", {}, el("th", { scope: "col" }, "Activity"),
    el("th", { scope: "col" }, `${before}: status`), el("th", { scope: "col" }, "user"), el("th", { scope: "col" }, "criterion"),
    el("th", { scope: "col" }, `${after}: status`), el("th", { scope: "col" }, "user"), el("th", { scope: "col" }, "criterion"),
    el("th", { scope: "col" }, "Error"));
  const tbody = el("tbody");
  for (const s of samples || []) {
    tbody.append(el("tr", { "data-activity": s.activityId },
      el("td", {}, el("a", { href: "#activity=" + s.activityId, class: "mono" }, s.activityId.slice(0, 8))),
      decisionCells(s.before, userName), decisionCells(s.after, userName), el("td", { class: "bad" }, s.error || "")));
  }
  return el("div", { class: "scroll" }, el("table", { class: "grid samples" }, el("thead", {}, head), tbody));
}

export function counts(id, pairs) {
  return el("ul", { class: "counts", id }, pairs.map(([label, value, key]) => el("li", {}, `${label} `, el("strong", { "data-count": key }, String(value ?? 0)))));
}
