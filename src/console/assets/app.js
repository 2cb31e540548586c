// The meshrelease console: plain JavaScript over the service's own REST API
// (same origin, so no CORS), the token kept in sessionStorage only.

import { age, el } from "./dom.js";
import { matchEditor } from "./match.js";
import { stepOf, strategyPanel } from "./strategy.js";

const PHASES = ["Pending", "Deploying", "Running", "Ending", "Ended"];
const TOKEN_KEY = "meshrelease.token";
const MESH_KEY = "meshrelease.mesh";

const main = document.getElementById("main");
const message = document.getElementById("message");
const connection = document.getElementById("connection");
const outage = document.getElementById("outage");
const signOut = document.getElementById("sign-out");

/** Releases of the mesh by "namespace/name", kept current by the watch. */
const releases = new Map();
let watching = null;
// Match rules typed and not yet applied, kept while the page re-renders.
let typedRules = null;
// Why the service will not show this mesh's releases (404, 403): said in
// place of the list, and not asked again until the user signs in anew.
let refusedWatch = null;

// ---- small helpers -------------------------------------------------------

function show(text, kind = "error") {
  message.textContent = text;
  message.className = kind === "info" ? "info" : "";
  message.hidden = !text;
  delete message.dataset.outage;
}

// A request that never reached the service (the browser's fetch failed)
// is said as such, and cleared once the service is back.
function showFailure(e) {
  if (e instanceof ApiError) { if (e.status !== 401) show(e.message); return; }
  show("The service did not answer, so nothing was changed. Try again once it is back.");
  message.dataset.outage = "true";
}

/** JSON as YAML, for Kubernetes objects (block style, strings quoted when needed). */
function yaml(value, indent = "") {
  const scalar = (v) => {
    if (v === null) return "null";
    if (typeof v === "string") {
      return /^[A-Za-z0-9_./-][A-Za-z0-9_./: -]*$/.test(v) && !/^(true|false|null|yes|no|[-+0-9.]+)$/i.test(v) && !v.endsWith(" ") && !v.includes(": ")
        ? v : JSON.stringify(v);
    }
    return String(v);
  };
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return value.map((item) => {
      const inner = yaml(item, indent + "  ");
      return `${indent}- ${typeof item === "object" && item !== null && Object.keys(item).length ? inner.trimStart() : inner}`;
    }).join("\n");
  }
  if (typeof value === "object" && value !== null) {
    const keys = Object.keys(value);
    if (keys.length === 0) return "{}";
    return keys.map((key) => {
      const v = value[key];
      const name = scalar(key);
      if (typeof v === "object" && v !== null && Object.keys(v).length) {
        return `${indent}${name}:\n${yaml(v, indent + "  ")}`;
      }
      return `${indent}${name}: ${yaml(v, "")}`;
    }).join("\n");
  }
  return scalar(value);
}

// ---- the API --------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function mesh() { return sessionStorage.getItem(MESH_KEY) || ""; }

class ApiError extends Error {
  constructor(status, body) {
    super(body?.errorMsg || `the service answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { "X-Auth-Token": token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (response.status === 401) { signedOut("Your token was not accepted: sign in again."); throw new ApiError(401, json); }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

const base = () => `/v2/meshes/${encodeURIComponent(mesh())}`;
const releasePath = (r) => `${base()}/namespaces/${encodeURIComponent(r.metadata.namespace)}/releases/${encodeURIComponent(r.metadata.name)}`;

// ---- the watch: live updates, reconnecting with resume --------------------

function startWatch() {
  stopWatch();
  const state = { stopped: false, controller: null, resume: "", delay: 500 };
  watching = state;
  refusedWatch = null;
  releases.clear();
  (async () => {
    while (!state.stopped) {
      state.controller = new AbortController();
      try {
        const query = state.resume ? `?resourceVersion=${encodeURIComponent(state.resume)}` : "";
        const response = await fetch(`${base()}/releases:watch${query}`, {
          headers: { "X-Auth-Token": token() }, signal: state.controller.signal,
        });
        if (response.status === 401) { signedOut("Your token was not accepted: sign in again."); return; }
        if (response.status === 410) { state.resume = ""; releases.clear(); continue; }
        if ([400, 403, 404].includes(response.status)) {
          // Asking again cannot help: say the service's own words, once.
          let said = "";
          try { said = (await response.json())?.errorMsg || ""; } catch { said = ""; }
          refusedWatch = `The service will not show the releases of mesh \u201c${mesh()}\u201d: ${said || `it answered ${response.status}`}. Sign out to use another mesh or token.`;
          state.stopped = true;
          setConnection("");
          scheduleRender();
          return;
        }
        if (!response.ok) throw new Error(`watch answered ${response.status}`);
        setConnection("live");
        reachable(state);
        state.delay = 500;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let pending = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          pending += decoder.decode(value, { stream: true });
          let end;
          while ((end = pending.indexOf("\n")) >= 0) {
            const line = pending.slice(0, end);
            pending = pending.slice(end + 1);
            if (line.trim()) apply(JSON.parse(line), state);
          }
        }
      } catch (e) {
        if (state.stopped) return;
      }
      if (state.stopped) return;
      setConnection("reconnecting");
      unreachable(state);
      await new Promise((resolve) => setTimeout(resolve, state.delay));
      state.delay = Math.min(state.delay * 2, 10000);
    }
  })();
}

function stopWatch() {
  if (watching) { watching.stopped = true; watching.controller?.abort(); watching = null; }
}

// The service went away: say so where it cannot scroll out of view, and
// since when, until the watch is back.
function unreachable(state) {
  state.lostAt ??= new Date();
  const since = state.lostAt.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  outage.textContent = `The service is not reachable since ${since}. Trying again; what you see may be out of date.`;
  outage.hidden = false;
}

function reachable(state) {
  if (!state.lostAt) return;
  state.lostAt = null;
  outage.hidden = true;
  outage.textContent = "";
  // An error from while the service was away no longer holds.
  if (!message.hidden && message.dataset.outage === "true") { message.hidden = true; message.textContent = ""; }
}

function setConnection(kind) {
  connection.textContent = kind === "live" ? "● live" : kind === "reconnecting" ? "reconnecting…" : "";
  connection.className = kind;
}

function apply(line, state) {
  // The service stopping ends the stream with an error line: the outage
  // line says that in a person's words, and the watch resumes by itself.
  if (line.error) {
    if (line.error.errorCode !== "ASM.01040002") show(`Live updates stopped: ${line.error.errorMsg || "the service ended them"}. Reload the page to start again.`);
    return;
  }
  const event = line.result;
  if (!event) return;
  state.resume = event.resourceVersion;
  const r = event.release;
  const key = `${r.metadata.namespace}/${r.metadata.name}`;
  if (event.type === "DELETED") releases.delete(key); else releases.set(key, r);
  scheduleRender();
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; refresh(); });
}

// ---- what a release shows -------------------------------------------------

function weightOf(policy) { return policy && typeof policy.weight === "number" ? policy.weight : policy?.match ? null : 0; }

function trafficView(policy) {
  if (policy?.match) return el("span", {}, describeMatch(policy.match));
  const weight = weightOf(policy) ?? 0;
  return el("div", {},
    el("div", { class: "bar", role: "img", "aria-label": `${100 - weight}% original, ${weight}% gray` },
      el("span", { class: "original", style: `width:${100 - weight}%` }),
      el("span", { class: "gray", style: `width:${weight}%` })),
    el("span", { class: "bar-legend" }, `${100 - weight}% original · ${weight}% gray`));
}

function describeMatch(rules) {
  return rules.map((rule) => {
    const parts = [];
    for (const h of rule.headers || []) parts.push(`header ${h.name} ${h.exact !== undefined ? `= "${h.exact}"` : `~ /${h.regex}/`}`);
    for (const q of rule.queryParams || []) parts.push(`query ${q.name} ${q.exact !== undefined ? `= "${q.exact}"` : `~ /${q.regex}/`}`);
    if (rule.cookie) parts.push(`cookie ~ /${rule.cookie.regex}/`);
    if (rule.os?.length) parts.push(`OS ${rule.os.join(" or ")}`);
    if (rule.browsers?.length) parts.push(`browser ${rule.browsers.join(" or ")}`);
    return parts.join(" and ");
  }).join("; or ") + " → gray";
}

/** What the contract allows now, or why not. */
function allowed(r) {
  const phase = r.status?.phase;
  const weight = weightOf(r.spec?.trafficPolicy);
  const running = phase === "Running";
  const s = r.status?.strategy;
  // While its strategy runs, the traffic policy is the strategy's.
  const completed = (r.status?.conditions || []).some((c) => c.type === "Progressing" && c.reason === "Completed");
  const stepping = r.spec?.strategy && running && !s?.paused && !completed;
  return {
    traffic: !running ? `traffic moves only while Running (now ${phase})`
      : stepping ? "the strategy moves the traffic while it runs: pause, promote or abort it first" : null,
    end: !running ? `a release ends from Running (now ${phase})` : weight !== 100 ? "take over first: the gray version must hold 100% of the traffic" : null,
    cancel: ["Ended", "Canceled", "Ending", "Canceling"].includes(phase) ? `a release that is ${phase} cannot be canceled`
      : running && weight !== 0 ? "a Running release is canceled once the original holds all traffic: press \u201cAll to original\u201d first" : null,
    remove: ["Ended", "Canceled"].includes(phase) ? null : `only an Ended or Canceled release can be removed (now ${phase})`,
  };
}

function phaseBadge(phase) { return el("span", { class: `phase ${phase}` }, phase); }

// ---- views ------------------------------------------------------------------

const filters = { phase: "", text: "" };

function listView() {
  const rows = [...releases.values()]
    .filter((r) => !filters.phase || r.status?.phase === filters.phase)
    .filter((r) => !filters.text || `${r.metadata.name} ${r.spec.serviceName} ${r.metadata.namespace}`.toLowerCase().includes(filters.text.toLowerCase()))
    .sort((a, b) => (b.status?.startTime || "").localeCompare(a.status?.startTime || ""));
  const phaseSelect = el("select", { id: "filter-phase", onchange: (e) => { filters.phase = e.target.value; refresh(); } },
    el("option", { value: "" }, "any"),
    ...["Pending", "Deploying", "Running", "Ending", "Ended", "Canceling", "Canceled", "Failed"].map((p) => el("option", { value: p, selected: filters.phase === p }, p)));
  const text = el("input", { id: "filter-text", type: "search", value: filters.text, placeholder: "name, service, namespace",
    oninput: (e) => { filters.text = e.target.value; refreshTable(); } });
  const table = el("table", { id: "releases" },
    el("thead", {}, el("tr", {}, ...["Release", "Namespace", "Service", "Versions", "Phase", "Traffic", "Age"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows.map((r) => el("tr", { "data-release": r.metadata.name },
      el("td", {}, el("a", { href: `#/r/${encodeURIComponent(r.metadata.namespace)}/${encodeURIComponent(r.metadata.name)}` }, r.metadata.name)),
      el("td", {}, r.metadata.namespace),
      el("td", {}, r.spec.serviceName),
      el("td", {}, `${r.spec.deploymentName} → ${r.spec.version}`),
      el("td", {}, phaseBadge(r.status?.phase), r.spec.strategy ? el("span", { class: "muted" }, ` ${stepOf(r)}`) : null),
      el("td", {}, trafficView(r.status?.traffic ?? r.spec.trafficPolicy)),
      el("td", { title: r.status?.startTime }, age(r.status?.startTime)),
    )) : el("tr", {}, refusedWatch
      ? el("td", { colspan: 7, class: "field-error", id: "refused" }, refusedWatch)
      : el("td", { colspan: 7, class: "muted" }, watching ? "No releases match." : "Loading…"))));
  return el("section", { "aria-labelledby": "list-title" },
    el("h1", { id: "list-title" }, `Releases of ${mesh()}`),
    el("div", { class: "filters" },
      el("label", { for: "filter-phase" }, "Phase", phaseSelect),
      el("label", { for: "filter-text" }, "Filter", text)),
    table);
}

function refreshTable() {
  const old = document.getElementById("releases");
  if (!old) return;
  const fresh = listView().querySelector("#releases");
  old.replaceWith(fresh);
}

function detailView(namespace, name) {
  const r = releases.get(`${namespace}/${name}`);
  if (!r) return el("section", {}, el("h1", {}, name), el("p", { class: "muted" }, watching ? "No such release in this mesh (yet)." : "Loading…"));
  const phase = r.status?.phase;
  const reached = PHASES.indexOf(phase);
  const timeline = el("ol", { class: "timeline", "aria-label": "Phases" },
    ...(["Canceling", "Canceled", "Failed"].includes(phase) ? [...PHASES.slice(0, 3), phase] : PHASES).map((p, i, all) =>
      el("li", { class: p === phase ? "current" : (reached >= 0 ? i < reached : i < all.indexOf(phase)) ? "done" : "", "aria-current": p === phase ? "step" : null }, p)));
  const why = allowed(r);
  const spec = r.spec.trafficPolicy;
  const weight = weightOf(spec) ?? 0;
  const slider = el("input", { id: "weight", type: "range", min: 0, max: 100, step: r.spec.type === "blue-green" ? 100 : 5, value: weight, disabled: !!why.traffic,
    oninput: (e) => { document.getElementById("weight-value").textContent = `${e.target.value}%`; } });
  const button = (label, attrs, reason, run) => el("button", { type: "button", ...attrs, disabled: !!reason, title: reason || null,
    "aria-describedby": reason ? null : null, onclick: run }, label);
  const actions = el("div", { class: "actions" },
    el("label", { for: "weight" }, "Gray weight", el("span", {}, slider, " ", el("output", { id: "weight-value" }, `${weight}%`))),
    button("Apply weight", { class: "primary", id: "apply-weight" }, why.traffic, () => patchWeight(r, Number(slider.value))),
    button("Take over (gray 100%)", { id: "take-over" }, why.traffic, () => patchWeight(r, 100)),
    button("All to original", { id: "roll-back" }, why.traffic, () => patchWeight(r, 0)),
    button("End", { id: "end" }, why.end, () => remove(r, "end", `End ${r.metadata.name}? The original Deployment will be deleted.`)),
    button("Cancel", { id: "cancel", class: "danger" }, why.cancel, () => remove(r, "cancel", `Cancel ${r.metadata.name}? The gray Deployments will be deleted and the routing restored.`)),
    button("Remove", { id: "remove", class: "danger" }, why.remove, () => remove(r, "", `Remove the record of ${r.metadata.name}?`)));
  const match = matchEditor({
    text: typedRules ?? (spec?.match ? JSON.stringify(spec.match, null, 2) : ""),
    touched: typedRules !== null,
    disabled: why.traffic,
    apply: (text) => patchMatch(r, text),
  });
  const conditions = r.status?.conditions || [];
  // Each Deployment with the cluster it runs in (the gray ones may run
  // elsewhere than the original).
  const grayClusters = (r.spec.grayDeployments || []).map((g) => g.clusterID);
  const replicas = [
    ["original", r.spec.clusterID, r.status?.deployment],
    ...(r.status?.grayDeployments || []).map((d, i) => ["gray", grayClusters[i] ?? "", d]),
  ].filter(([, , d]) => d);
  return el("section", { "aria-labelledby": "release-title" },
    el("h1", { id: "release-title" }, `${r.metadata.name} `, phaseBadge(phase)),
    timeline,
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", {}, "Traffic"),
        el("p", {}, "Applied: "), trafficView(r.status?.traffic),
        el("p", {}, "Asked for: "), trafficView(spec)),
      el("div", { class: "panel" }, el("h2", {}, "Replicas (ready / desired)"),
        el("table", { id: "replicas" },
          el("thead", {}, el("tr", {}, ...["", "Cluster", "Deployment", "Ready"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, replicas.map(([kind, cluster, d]) => el("tr", {},
            el("td", {}, kind), el("td", {}, cluster), el("td", {}, d.metadata?.name || ""),
            el("td", {}, replicasText(d))))))),
      el("div", { class: "panel" }, el("h2", {}, "Release"),
        el("p", {}, `${r.spec.serviceName} in ${r.metadata.namespace}: ${r.spec.deploymentName} → ${r.spec.version} (${r.spec.type})`),
        el("p", { id: "where" }, `Original in ${r.spec.clusterID}; gray in ${[...new Set(grayClusters)].join(", ") || "none"}`))),
    r.spec.strategy ? strategyPanel(r, { api, act, path: releasePath(r), changed: scheduleRender }) : null,
    el("h2", {}, "Actions"), actions, match,
    el("h2", {}, "Conditions"),
    conditions.length ? el("table", { id: "conditions" },
      el("thead", {}, el("tr", {}, ...["Type", "Status", "Reason", "Message", "Since"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, conditions.map((c) => el("tr", {}, el("td", {}, c.type), el("td", {}, c.status), el("td", {}, c.reason), el("td", {}, c.message), el("td", { title: c.lastTransitionTime }, age(c.lastTransitionTime)))))) : el("p", { class: "muted" }, "None yet."),
    el("h2", {}, "Kubernetes objects"),
    el("pre", { id: "objects" }, [r.status?.deployment, ...(r.status?.grayDeployments || [])].filter(Boolean).map((o) => yaml(o)).join("\n---\n")));
}

// What the service says of a Deployment: deleted by the release (it is no
// longer in its cluster), or its ready and desired replicas.
function replicasText(d) {
  if (d.metadata?.deletionTimestamp) return `deleted ${age(d.metadata.deletionTimestamp)} ago`;
  return `${d.status?.readyReplicas ?? 0} / ${d.spec?.replicas ?? 1}`;
}

async function patchWeight(r, weight) {
  if (!confirm(`Send ${weight}% of ${r.spec.serviceName}'s traffic to ${r.spec.version}?`)) return;
  await act(() => api("PATCH", releasePath(r), { spec: { trafficPolicy: { weight } } }), `Weight ${weight}% asked for.`);
}

async function patchMatch(r, text) {
  let rules;
  if (!text.trim()) { show("Write the match rules first (the box shows an example)."); return; }
  try { rules = JSON.parse(text); } catch (e) { show(`The match rules are not JSON: ${e.message}`); return; }
  if (!confirm(`Route the requests these ${Array.isArray(rules) ? rules.length : ""} rule(s) match to ${r.spec.version}?`)) return;
  let sent = false;
  await act(async () => { await api("PATCH", releasePath(r), { spec: { trafficPolicy: { match: rules } } }); sent = true; }, "Match rules asked for.");
  if (sent) {
    // Applied: what shows from now on is what is in force.
    typedRules = null;
    const box = document.getElementById("match-rules");
    if (box) delete box.dataset.touched;
  }
}

async function remove(r, action, question) {
  if (!confirm(question)) return;
  await act(() => api("DELETE", `${releasePath(r)}${action ? `?action=${action}` : ""}`), action ? `${action === "end" ? "End" : "Cancel"} asked for.` : "Removed.");
  if (!action) location.hash = "#/";
}

async function act(call, done) {
  show("");
  try { await call(); show(done, "info"); } catch (e) { showFailure(e); }
}

const TEMPLATE = {
  apiVersion: "apps/v1", kind: "Deployment",
  spec: { replicas: 1, selector: { matchLabels: { app: "reviews" } },
    template: { metadata: { labels: { app: "reviews" } }, spec: { containers: [{ name: "reviews", image: "reviews:2" }] } } },
};

const STRATEGY_EXAMPLE = JSON.stringify({
  steps: [{ setWeight: 20 }, { pause: { duration: "5m" } }, { analysis: { count: 3 } }, { setWeight: 100 }],
  analysis: { interval: "1m", metrics: [{ name: "success-rate", builtin: "successRate", min: 99 }] },
}, null, 2);

const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function createView() {
  const field = (id, label, attrs = {}) => el("label", { for: id }, label, el("input", { id, name: id, ...attrs }), el("span", { class: "field-error", id: `${id}-error`, "aria-live": "polite" }));
  const form = el("form", { id: "create", novalidate: true, onsubmit: (e) => { e.preventDefault(); submit(false); } },
    el("div", { class: "form" },
      field("name", "Release name", { required: true, pattern: NAME.source, oninput: check }),
      field("namespace", "Namespace", { value: "default", required: true, oninput: check }),
      field("serviceName", "Service", { value: "reviews", required: true }),
      field("clusterID", "Cluster of the original", { value: "cluster-a", required: true }),
      field("grayClusterID", "Cluster of the gray Deployment", { placeholder: "the original's" }),
      field("deploymentName", "Original Deployment", { value: "reviews-v1", required: true }),
      field("version", "Gray version", { value: "v2", required: true, oninput: check }),
      el("label", { for: "type" }, "Type", el("select", { id: "type" }, el("option", { value: "canary" }, "canary"), el("option", { value: "blue-green" }, "blue-green")))),
    el("label", { for: "template" }, "Gray Deployment template (JSON)", el("textarea", { id: "template", spellcheck: "false", oninput: checkTemplate }, JSON.stringify(TEMPLATE, null, 2)), el("span", { class: "field-error", id: "template-error", "aria-live": "polite" })),
    el("label", { for: "strategy" }, "Strategy (JSON, optional: steps the service carries out by itself, and the checks that judge them)",
      el("textarea", { id: "strategy", spellcheck: "false", placeholder: STRATEGY_EXAMPLE }),
      el("span", { class: "field-error", id: "strategy-error", "aria-live": "polite" })),
    el("div", { class: "actions" },
      el("button", { type: "button", id: "preview", onclick: () => submit(true) }, "Preview (dry run)"),
      el("button", { type: "submit", class: "primary", id: "submit" }, "Create")),
    el("h2", {}, "Preview"), el("pre", { id: "preview-output" }, "Nothing yet."));
  return el("section", { "aria-labelledby": "create-title" }, el("h1", { id: "create-title" }, "New release"), form);
}

function check() {
  for (const id of ["name", "namespace", "version"]) {
    const input = document.getElementById(id);
    if (!input) continue;
    const bad = input.value && !NAME.test(input.value) ? "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63" : "";
    document.getElementById(`${id}-error`).textContent = bad;
    input.setAttribute("aria-invalid", bad ? "true" : "false");
  }
}

/** The template's shape as the contract checks it, as you type. */
function checkTemplate() {
  const area = document.getElementById("template");
  let problem = "";
  try {
    const t = JSON.parse(area.value);
    const containers = t?.spec?.template?.spec?.containers;
    if (typeof t !== "object" || t === null || Array.isArray(t)) problem = "must be a JSON object (a Deployment)";
    else if (t.kind !== undefined && t.kind !== "Deployment") problem = "kind must be Deployment";
    else if (t.apiVersion !== undefined && t.apiVersion !== "apps/v1") problem = "apiVersion must be apps/v1";
    else if (!t.spec?.selector?.matchLabels || !Object.keys(t.spec.selector.matchLabels).length) problem = "spec.selector.matchLabels is required";
    else if (!Array.isArray(containers) || !containers.length) problem = "spec.template.spec.containers needs at least one container";
    else if (containers.some((c) => !c?.name || !c?.image)) problem = "every container needs a name and an image";
    else if (typeof t.spec.replicas === "number" && t.spec.replicas < 0) problem = "spec.replicas must not be negative";
  } catch (e) {
    problem = `not JSON: ${e.message}`;
  }
  document.getElementById("template-error").textContent = problem;
  area.setAttribute("aria-invalid", problem ? "true" : "false");
}

async function submit(dryRun) {
  show("");
  for (const node of document.querySelectorAll(".field-error")) node.textContent = "";
  const value = (id) => document.getElementById(id).value.trim();
  let template;
  try { template = JSON.parse(value("template")); } catch (e) { document.getElementById("template-error").textContent = `not JSON: ${e.message}`; return; }
  let strategy;
  if (value("strategy")) {
    try { strategy = JSON.parse(value("strategy")); } catch (e) { document.getElementById("strategy-error").textContent = `not JSON: ${e.message}`; return; }
  }
  const namespace = value("namespace");
  const body = {
    metadata: { name: value("name"), namespace },
    spec: { serviceName: value("serviceName"), clusterID: value("clusterID"), deploymentName: value("deploymentName"),
      version: value("version"), type: value("type"), grayDeployments: [{ clusterID: value("grayClusterID") || value("clusterID"), template }], strategy },
  };
  try {
    const answer = await api("POST", `${base()}/namespaces/${encodeURIComponent(namespace)}/releases${dryRun ? "?dryRun=true" : ""}`, body);
    if (dryRun) {
      // What the first round would write, each object with its cluster's
      // own dry-run answer, as mrctl apply --dry-run shows it.
      const plan = answer.status?.plan || [];
      const refused = plan.filter((p) => p.dryRun?.startsWith("refused"));
      document.getElementById("preview-output").textContent = [
        `# ${answer.status?.planMessage || "the objects the first round would write"}`,
        ...plan.map((p) => `# ${p.action} in ${p.clusterID}: ${p.dryRun || "not tried in the cluster"}\n${yaml(p.object)}`),
      ].join("\n---\n");
      if (refused.length) show(`The dry run found ${refused.length} change(s) a cluster would refuse (see the preview); nothing was stored.`);
      else show("The dry run passed: nothing was stored.", "info");
    } else {
      location.hash = `#/r/${encodeURIComponent(namespace)}/${encodeURIComponent(answer.metadata.name)}`;
      show(`Created ${answer.metadata.name}.`, "info");
    }
  } catch (e) {
    showFailure(e);
    for (const detail of e.body?.details || []) {
      const id = { "metadata.name": "name", "metadata.namespace": "namespace", "spec.serviceName": "serviceName", "spec.clusterID": "clusterID",
        "spec.deploymentName": "deploymentName", "spec.version": "version", "spec.grayDeployments[0].clusterID": "grayClusterID" }[detail.field] || (detail.field.startsWith("spec.grayDeployments") ? "template" : detail.field.startsWith("spec.strategy") ? "strategy" : null);
      const slot = id && document.getElementById(`${id}-error`);
      if (slot) slot.textContent = `${slot.textContent ? `${slot.textContent}; ` : ""}${detail.field}: ${detail.description}`;
    }
  }
}

function signInView(reason) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true });
  const meshInput = el("input", { id: "mesh", value: mesh(), required: true, placeholder: "the mesh's id, as in the service's configuration" });
  return el("section", { "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    reason ? el("p", { class: "field-error" }, reason) : null,
    el("form", { class: "signin", onsubmit: (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value);
      sessionStorage.setItem(MESH_KEY, meshInput.value.trim());
      signOut.hidden = false;
      startWatch();
      route();
    } },
      el("label", { for: "token" }, "Token (X-Auth-Token; kept in this tab only)", input),
      el("label", { for: "mesh" }, "Mesh", meshInput),
      el("button", { type: "submit", class: "primary" }, "Sign in")));
}

function signedOut(reason) {
  stopWatch();
  sessionStorage.removeItem(TOKEN_KEY);
  setConnection("");
  signOut.hidden = true;
  releases.clear();
  main.replaceChildren(signInView(reason));
}

// ---- routing ------------------------------------------------------------------

function currentView() {
  const hash = location.hash || "#/";
  const detail = hash.match(/^#\/r\/([^/]+)\/([^/]+)$/);
  if (detail) return detailView(decodeURIComponent(detail[1]), decodeURIComponent(detail[2]));
  if (hash === "#/new") return createView();
  return listView();
}

/** Re-renders on data changes, leaving forms being typed in alone. */
function refresh() {
  if (!token()) return;
  if (location.hash === "#/new") return;
  const focused = document.activeElement?.id;
  const slider = document.getElementById("weight");
  if (slider && document.activeElement === slider) return;
  const rules = document.getElementById("match-rules");
  typedRules = rules && rules.dataset.touched ? rules.value : null;
  main.replaceChildren(currentView());
  if (focused) document.getElementById(focused)?.focus();
}

function route() {
  if (!token()) { main.replaceChildren(signInView()); return; }
  show("");
  typedRules = null;
  main.replaceChildren(currentView());
  // Focus for keyboards and screen readers, without scrolling the page's
  // own header (the live indicator, Sign out) out of view.
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

document.addEventListener("input", (e) => { if (e.target.id === "match-rules") e.target.dataset.touched = "1"; });
signOut.addEventListener("click", () => signedOut("Signed out."));
window.addEventListener("hashchange", route);
setInterval(() => { if (!document.getElementById("create")) refreshTable(); }, 30000);
if (token()) { signOut.hidden = false; startWatch(); }
route();
