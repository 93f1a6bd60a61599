/*
 * rollwave dashboard: plain JavaScript over /api/v1, no framework, no
 * build step. Pages by location hash: #/runs, #/runs/<uuid>,
 * #/instances/<id>, #/lag. Everything from the API is rendered through
 * textContent (never innerHTML), so data cannot become markup. The token
 * lives in this tab's sessionStorage only. A page showing something in
 * progress refreshes itself every 2 seconds.
 */
"use strict";

const TOKEN_KEY = "rollwave.token";
const REFRESH_MS = 2000;
/* a lag measurement costs the server Kafka round trips: not faster */
const LAG_REFRESH_MS = 5000;
const ACTIVE = ["pending", "running", "paused"];
const SEGMENTS = ["succeeded", "failed", "skipped", "in_flight", "pending"];

let me = null;          /* whoami answer */
let timer = null;       /* the page's refresh */
let generation = 0;     /* bumps on navigation: late answers are dropped */

/* ---- DOM helpers ---- */

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = String(v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

function text(v) {
  return v === null || v === undefined || v === "" ? "-" : String(v);
}

function badge(status) {
  return el("span", { class: "badge " + status, text: status });
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return h + "h" + String(m).padStart(2, "0") + "m";
  if (m) return m + "m" + String(sec).padStart(2, "0") + "s";
  return sec + "s";
}

function table(columns, rows, attrs) {
  const head = el("tr", {}, columns.map((c) => el("th", { text: c.head })));
  const body = el("tbody", {},
    rows.map((r) => el("tr", c0(attrs, r), columns.map((c) => {
      const v = c.render ? c.render(r) : text(r[c.key]);
      return el("td", { class: c.cls }, v);
    }))));
  return el("table", { id: attrs && attrs.id }, el("thead", {}, head), body);
}

function c0(attrs, r) {
  return attrs && attrs.row ? attrs.row(r) : {};
}

/* A bar of the run's targets by state; widths from the counts. */
function progress(counts, total) {
  const bar = el("div", { class: "progress", title: SEGMENTS.map(
    (k) => k.replace("_", " ") + " " + (counts[k] || 0)).join(", ") });
  for (const k of SEGMENTS) {
    const n = counts[k] || 0;
    if (!n || !total) continue;
    const seg = el("span", { class: "seg-" + k, "data-count": n });
    seg.style.width = (100 * n / total) + "%";
    bar.append(seg);
  }
  return bar;
}

function legend() {
  return el("div", { class: "legend" }, SEGMENTS.map((k) =>
    el("span", {}, el("i", { class: "seg-" + k }), k.replace("_", " "))));
}

/* ---- API ---- */

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || ("HTTP " + status));
    this.status = status;
    this.body = body;
  }
}

async function api(path, options) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers["Authorization"] = "Bearer " + token;
  if (opts.body) opts.headers["Content-Type"] = "application/json";
  const res = await fetch("/api/v1" + path, opts);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    login("The token was refused: " + ((body && body.error && body.error.message) || ""));
    throw new ApiError(401, body);
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

function refreshLater(fn, ms) {
  clearTimeout(timer);
  timer = setTimeout(fn, ms || REFRESH_MS);
}

function failure(e) {
  if (e instanceof ApiError && e.status === 401) return;
  show(el("div", { class: "card error", id: "page-error", text: e.message }));
}

/* ---- pages ---- */

function filterValue(params, name) {
  return params.get(name) || "";
}

async function runsPage(params) {
  const gen = generation;
  const q = new URLSearchParams();
  for (const k of ["status", "store_app", "source", "cursor"])
    if (params.get(k)) q.set(k, params.get(k));
  q.set("limit", "50");
  const data = await api("/runs?" + q.toString());
  if (gen !== generation) return;

  const statusSel = el("select", { id: "filter-status" },
    ["", "pending", "running", "paused", "completed", "partial_failed",
      "failed", "cancelled"].map((s) => el("option", { value: s, text: s || "any" })));
  statusSel.value = filterValue(params, "status");
  const sourceSel = el("select", { id: "filter-source" },
    ["", "scheduled", "manual", "retry"].map((s) => el("option", { value: s, text: s || "any" })));
  sourceSel.value = filterValue(params, "source");
  const appInput = el("input", { id: "filter-store-app", type: "number", min: "1",
    placeholder: "id", value: filterValue(params, "store_app") });
  const apply = () => {
    const p = new URLSearchParams();
    if (statusSel.value) p.set("status", statusSel.value);
    if (sourceSel.value) p.set("source", sourceSel.value);
    if (appInput.value) p.set("store_app", appInput.value);
    location.hash = "#/runs" + (p.toString() ? "?" + p.toString() : "");
  };
  const filters = el("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); apply(); } },
    el("label", {}, "Status", statusSel),
    el("label", {}, "Source", sourceSel),
    el("label", {}, "Store app", appInput),
    el("button", { type: "submit", text: "Filter" }));
  statusSel.addEventListener("change", apply);
  sourceSel.addEventListener("change", apply);

  const cols = [
    { head: "Run", render: (r) => el("a", { href: "#/runs/" + r.uuid, class: "mono", text: r.uuid.slice(0, 8) }) },
    { head: "Status", render: (r) => badge(r.status) },
    { head: "Progress", render: (r) => progress(r, r.total) },
    { head: "Targets", cls: "num", render: (r) => r.succeeded + "/" + r.total +
        (r.failed ? " (" + r.failed + " failed)" : "") },
    { head: "Source", key: "source" },
    { head: "Store app", render: (r) => text(r.store_app) },
    { head: "By", render: (r) => text(r.triggered_by) },
    { head: "Created", key: "created_at" },
    { head: "Duration", cls: "num", render: (r) => duration(r.duration_s) },
  ];
  const runs = data.runs || [];
  const pager = el("div", { class: "pager" });
  if (params.get("cursor"))
    pager.append(el("button", { type: "button", text: "Newest", onclick: () => {
      params.delete("cursor"); location.hash = "#/runs?" + params.toString(); } }));
  if (data.next_cursor)
    pager.append(el("button", { type: "button", id: "older", text: "Older", onclick: () => {
      params.set("cursor", data.next_cursor); location.hash = "#/runs?" + params.toString(); } }));
  show(el("h1", { text: "Runs" }), filters,
    runs.length ? table(cols, runs, { id: "runs", row: (r) => ({ class: "run-row", "data-uuid": r.uuid, "data-status": r.status }) })
      : el("p", { class: "muted", id: "no-runs", text: "No runs." }),
    legend(), pager);
  if (runs.some((r) => ACTIVE.includes(r.status)))
    refreshLater(route);
}

/* Which control verbs a run's status allows (the server decides anyway). */
function verbsFor(status) {
  switch (status) {
    case "pending": return ["abort"];
    case "running": return ["pause", "abort"];
    case "paused": return ["resume", "abort"];
    case "completed": case "partial_failed": case "failed": return ["retry"];
    default: return [];
  }
}

async function control(uuid, verb, note) {
  note.textContent = verb + "…";
  try {
    const r = await api("/runs/" + uuid + "/" + verb, { method: "POST", body: "{}" });
    note.textContent = verb + ": " + r.status_before + " → " + r.status_after;
  } catch (e) {
    note.textContent = verb + " refused: " + e.message;
  }
  route();
}

async function runPage(uuid) {
  const gen = generation;
  const data = await api("/runs/" + encodeURIComponent(uuid));
  if (gen !== generation) return;
  const run = data.run, by = data.targets_by_state || {};
  const counts = {
    succeeded: by.succeeded || 0,
    failed: (by.failed || 0) + (by.timed_out || 0),
    skipped: (by.skipped || 0) + (by.cancelled || 0),
    in_flight: (by.claimed || 0) + (by.triggered || 0) + (by.deploying || 0),
    pending: by.pending || 0,
  };
  const note = el("span", { class: "muted", id: "action-note" });
  const actions = el("div", { class: "actions", id: "actions" });
  const waves = data.waves || [];
  const verbs = verbsFor(run.status);
  /* a wave waits for its bake or an operator: promoting releases it now */
  if (["pending", "running"].includes(run.status) &&
      waves.some((w) => w.state === "baking" || w.state === "awaiting_promotion"))
    verbs.unshift("promote");
  if (me && me.may && me.may.control)
    for (const verb of verbs)
      actions.append(el("button", { type: "button", "data-action": verb,
        class: verb === "abort" ? "danger" : "primary", text: verb,
        onclick: () => control(run.uuid, verb, note) }));
  actions.append(note);

  const info = el("dl", { class: "kv" }, [
    ["Status", badge(run.status)], ["Source", text(run.source)],
    ["Triggered by", text(run.triggered_by)],
    ["Store app", run.store_app_id ? run.store_app + " (" + run.store_app_id + ")" : "several"],
    ["Variables only", run.variables_only ? "yes" : "no"],
    ["Created", text(run.created_at)], ["Completed", text(run.completed_at)],
    ["Duration", duration(run.duration_s)], ["Last error", text(run.last_error)],
  ].map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  info.querySelector(".badge").id = "run-status";

  const stateRows = Object.entries(by).filter(([, n]) => n > 0).map(([state, n]) => ({ state, n }));
  const targetCols = [
    { head: "Instance", render: (t) => el("a", { href: "#/instances/" + t.instance_id, text: t.instance_id }) },
    { head: "Name", key: "name" },
    { head: "Project / environment", render: (t) => text(t.project) + " / " + text(t.environment) },
    { head: "State", render: (t) => badge(t.state) },
    { head: "Chunk", cls: "num", key: "chunk" },
    { head: "Attempt", cls: "num", key: "attempt" },
    { head: "Reason", render: (t) => el("span", { class: "reason", text: text(t.reason) }) },
    /* the poller keeps the build log of a target that ended failed */
    { head: "Log", render: (t) => t.state === "failed" ? el("a", { class: "log-link",
      href: "#/runs/" + encodeURIComponent(run.uuid) + "/logs/" + t.instance_id, text: "log" }) : "" },
  ];
  show(
    el("h1", {}, "Run ", el("span", { class: "mono", text: run.uuid })),
    el("div", { class: "card" }, info, actions),
    el("h2", { text: "Targets (" + data.targets_total + ")" }),
    el("div", { class: "card" }, progress(counts, data.targets_total), legend(),
      table([{ head: "State", key: "state" }, { head: "Targets", cls: "num", key: "n" }], stateRows, { id: "by-state" })),
    el("h2", { text: "Failed and timed-out targets (" + (data.failed_targets || []).length + ")" }),
    (data.failed_targets || []).length ? table(targetCols, data.failed_targets, { id: "failed-targets", row: () => ({ class: "failed-target" }) })
      : el("p", { class: "muted", text: "None." }),
    el("h2", { text: "Waves (" + waves.length + ")" }),
    waves.length ? table([
      { head: "Wave", cls: "num", key: "wave" }, { head: "State", render: (w) => badge(w.state) },
      { head: "Chunks", render: (w) => w.first_chunk + "–" + w.last_chunk },
      { head: "Targets", cls: "num", key: "target_count" },
      { head: "Succeeded", cls: "num", key: "succeeded" }, { head: "Failed", cls: "num", key: "failed" },
      { head: "Bake until", key: "bake_until" }, { head: "Started", key: "started_at" },
      { head: "Finished", key: "finished_at" },
    ], waves, { id: "waves" }) : el("p", { class: "muted", id: "no-waves", text: "No waves." }),
    el("h2", { text: "Chunks (" + (data.chunks || []).length + ")" }),
    table([
      { head: "Chunk", cls: "num", key: "chunk" }, { head: "State", render: (c) => badge(c.state) },
      { head: "Attempt", cls: "num", key: "attempt" }, { head: "Polls", cls: "num", key: "poll_attempts" },
      { head: "Targets", cls: "num", key: "target_count" }, { head: "Bulk", render: (c) => el("span", { class: "mono", text: text(c.bulk_id) }) },
      { head: "Triggered", key: "triggered_at" }, { head: "Finished", key: "finished_at" },
      { head: "Deferred until", render: (c) => c.deferred_until ? c.deferred_until + " (" + text(c.deferred_reason) + ")" : "" },
      { head: "Error", key: "last_error" },
    ], data.chunks || [], { id: "chunks" }),
    el("h2", { text: "Transitions" }),
    table([{ head: "From", key: "from_status" }, { head: "To", key: "to_status" },
      { head: "At", key: "at" }, { head: "Reason", key: "reason" }], data.transitions || [], { id: "transitions" }),
    el("h2", { text: "Skipped targets (" + (data.skipped_targets || []).length + ")" }),
    (data.skipped_targets || []).length ? table(targetCols, data.skipped_targets, { id: "skipped-targets" })
      : el("p", { class: "muted", text: "None." }));
  if (ACTIVE.includes(run.status) || counts.in_flight > 0)
    refreshLater(route);
}

function logSummary(l) {
  if (l.log_state === "stored")
    return l.bytes + " bytes stored of " + l.bytes_original + " sent" +
      (l.cut_bytes ? ", the first " + l.cut_bytes + " bytes cut" : "") + ", fetched " + l.fetched_at;
  if (l.log_state === "unavailable")
    return "unavailable (Lagoon: " + text(l.error) + "), " + l.log_attempts + " attempt(s)";
  return "no log";
}

/* One instance's build logs in a run, as stored (redacted by the poller). */
async function logPage(uuid, id) {
  const gen = generation;
  const base = "/runs/" + encodeURIComponent(uuid) + "/logs?instance=" + encodeURIComponent(id);
  /* an instance has a log per deployment of the run (retries add some):
   * follow next_cursor so none is left out, up to a bound */
  let data = await api(base);
  const logs = (data.logs || []).slice();
  let pages = 1;
  while (data.next_cursor && pages < 20) {
    data = await api(base + "&cursor=" + encodeURIComponent(data.next_cursor));
    if (gen !== generation) return;
    logs.push(...(data.logs || []));
    pages++;
  }
  if (gen !== generation) return;
  show(
    el("h1", {}, "Build log of instance ", el("a", { href: "#/instances/" + encodeURIComponent(id), text: id })),
    el("p", {}, "Run ", el("a", { class: "mono", href: "#/runs/" + encodeURIComponent(data.run.uuid), text: data.run.uuid })),
    el("div", {}, logs.length ? logs.map((l) => el("div", { class: "card target-log" },
      el("dl", { class: "kv" }, [
        ["Deployment", el("span", { class: "mono", text: text(l.deployment_name) })],
        ["Target", badge(l.state)], ["Attempt", text(l.attempt)], ["Log", logSummary(l)],
      ].map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])),
      l.log_state === "stored" ? el("pre", { class: "log-text", text: l.log }) : null))
      : el("p", { class: "muted", id: "no-log", text: "No log for this instance in this run." })),
    ...(data.next_cursor ? [el("p", { class: "muted", id: "more-logs", text: "More logs than shown: see rollwavectl run logs." })] : []));
}

async function instancePage(id, params) {
  const gen = generation;
  const skip = Math.max(0, parseInt(params.get("skip") || "0", 10) || 0);
  const take = 20;
  const [inst, hist] = await Promise.all([
    api("/instances/" + encodeURIComponent(id)),
    api("/instances/" + encodeURIComponent(id) + "/deployments?skip=" + skip + "&take=" + take),
  ]);
  if (gen !== generation) return;
  const info = el("dl", { class: "kv" }, [
    ["Name", inst.name], ["Status", inst.status], ["Store app", inst.store_app + " (" + inst.store_app_id + ")"],
    ["Lagoon target", text(inst.project) + " / " + text(inst.environment)],
    ["Last deployment", text(inst.last_deployment_name)], ["Last status", text(inst.last_deployment_status)],
    ["Last deployed", text(inst.last_deployed_at)], ["Last triggered", text(inst.last_deploy_triggered_at)],
    ["Next redeploy", inst.next_redeploy_at ? inst.next_redeploy_at : "due (or no cadence)"],
    ["Trial", inst.is_trial ? "yes" : "no"],
  ].map(([k, v]) => [el("dt", { text: k }), el("dd", { text: text(v) })]));
  const pager = el("div", { class: "pager" });
  if (skip > 0)
    pager.append(el("button", { type: "button", text: "Newer", onclick: () => {
      location.hash = "#/instances/" + id + "?skip=" + Math.max(0, skip - take); } }));
  if (skip + take < hist.total)
    pager.append(el("button", { type: "button", text: "Older", onclick: () => {
      location.hash = "#/instances/" + id + "?skip=" + (skip + take); } }));
  show(el("h1", { text: "Instance " + inst.id }), el("div", { class: "card" }, info),
    el("h2", { text: "Deployments (" + hist.total + ")" }),
    table([
      { head: "Run", render: (d) => el("a", { href: "#/runs/" + d.run, class: "mono", text: d.run.slice(0, 8) }) },
      { head: "Run status", render: (d) => badge(d.run_status) }, { head: "Source", key: "source" },
      { head: "State", render: (d) => badge(d.state) }, { head: "Attempt", cls: "num", key: "attempt" },
      { head: "Deployment", key: "deployment_name" }, { head: "Lagoon", key: "lagoon_status" },
      { head: "Created", key: "created_at" }, { head: "Finished", key: "finished_at" },
      { head: "Error / skip reason", render: (d) => text(d.error || d.skip_reason) },
    ], hist.deployments || [], { id: "history" }), pager);
  if ((hist.deployments || []).some((d) => ACTIVE.includes(d.run_status)))
    refreshLater(route);
}

async function lagPage() {
  const gen = generation;
  const data = await api("/lag?interval_s=1");
  if (gen !== generation) return;
  const cards = (data.groups || []).map((g) => el("div", { class: "card lag-group" },
    el("h2", {}, g.group + " on " + g.topic + " ", badge(g.status)),
    g.error ? el("p", { class: "error", text: g.error })
      : [el("p", { text: "Total lag " + g.lag }),
        table([{ head: "Partition", cls: "num", key: "partition" },
          { head: "Committed", cls: "num", render: (p) => text(p.committed) },
          { head: "High", cls: "num", key: "high" }, { head: "Lag", cls: "num", key: "lag" },
          { head: "Status", render: (p) => badge(p.status) }], g.partitions || [])]));
  show(el("h1", { text: "Consumer lag" }),
    el("p", { class: "muted", text: "Two samples " + data.interval_s + " s apart, as rollwavectl lag. Refreshes every " + LAG_REFRESH_MS / 1000 + " s." }),
    cards);
  refreshLater(route, LAG_REFRESH_MS);
}

/* ---- navigation ---- */

async function route() {
  clearTimeout(timer);
  generation++;
  const hash = location.hash || "#/runs";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  document.getElementById("nav-runs").classList.toggle("active", parts[0] === "runs");
  document.getElementById("nav-lag").classList.toggle("active", parts[0] === "lag");
  try {
    if (parts[0] === "runs" && parts[1] && parts[2] === "logs" && parts[3]) await logPage(parts[1], parts[3]);
    else if (parts[0] === "runs" && parts[1]) await runPage(parts[1]);
    else if (parts[0] === "instances" && parts[1]) await instancePage(parts[1], params);
    else if (parts[0] === "lag") await lagPage();
    else await runsPage(params);
  } catch (e) {
    failure(e);
  }
}

function login(message) {
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("login-error").textContent = message || "";
}

async function start() {
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    login("");
    return;
  }
  try {
    me = await api("/whoami");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) login(e.message);
    return;
  }
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  document.getElementById("logout").hidden = false;
  const who = document.getElementById("who");
  who.textContent = me.name + " (" + me.role + ")";
  who.dataset.role = me.role;
  route();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    start();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    clearTimeout(timer);
    login("");
  });
  window.addEventListener("hashchange", () => { if (me) route(); });
  start();
});
