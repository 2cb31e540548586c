// A release that runs itself, on its page: where its steps are (and how
// long the current one still waits), the actions a person may take, the
// latest result of each check, and each metric's values over the rounds
// as a small chart with its threshold, from the service's own record
// (ListReleaseChecks).

import { age, el, svg } from "./dom.js";

/** The kept rounds of each release's checks, by "namespace/name". */
const history = new Map();
/** How often, and how far apart, a round the status names is asked for. */
const HISTORY_TRIES = 5, HISTORY_RETRY_MS = 500;

/** The step as people read it. */
export function stepText(step) {
  if (typeof step.setWeight === "number") return `setWeight ${step.setWeight}`;
  if (step.pause) return step.pause.duration ? `pause ${step.pause.duration}` : "pause until a resume";
  if (step.analysis) return `analysis: ${step.analysis.count} passing round(s)`;
  return "?";
}

/** "step 2/4", or "" for a release without a strategy. */
export function stepOf(r) {
  const steps = r.spec?.strategy?.steps;
  if (!steps?.length) return "";
  const current = r.status?.strategy?.currentStep ?? 0;
  return current >= steps.length ? "all steps done" : `step ${current + 1}/${steps.length}`;
}

function seconds(duration) {
  let total = 0;
  for (const [, n, unit] of duration.matchAll(/(\d+)(h|m|s)/g)) total += Number(n) * { h: 3600, m: 60, s: 1 }[unit];
  return total;
}

function number(v) {
  if (v === undefined || v === null) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
  return Math.abs(v) >= 100 ? v.toFixed(1).replace(/\.0$/, "") : String(Math.round(v * 100) / 100);
}

function bounds(check) {
  if (check.min === undefined && check.max === undefined) return "–";
  return `${check.min !== undefined ? number(check.min) : ""}..${check.max !== undefined ? number(check.max) : ""}`;
}

/** Why each action cannot be taken now (null: it can). */
function allowedActions(r) {
  const phase = r.status?.phase;
  const s = r.status?.strategy || {};
  const running = phase === "Running";
  const notRunning = `the strategy runs while the release is Running (now ${phase})`;
  return {
    pause: !running ? notRunning : s.paused ? "already paused" : null,
    resume: !running ? notRunning : !s.paused ? "not paused" : null,
    promote: !running ? notRunning : null,
    full: !running ? notRunning : null,
    abort: !running ? notRunning : null,
    retry: phase !== "Failed" ? "only a release that failed (by its checks or an abort) is retried" : null,
  };
}

/** What the current step waits for, in words. */
function waiting(r, steps, current) {
  const s = r.status?.strategy || {};
  const step = steps[current];
  if (s.pauseReason) return s.pauseReason;
  if (!step) return "";
  if (typeof step.setWeight === "number") {
    return r.status?.traffic?.weight === step.setWeight ? "" : "waiting for the clusters to hold it";
  }
  if (step.pause?.duration && s.stepStartTime) return null; // a countdown
  if (step.analysis) return "waiting for passing rounds";
  return "";
}

/**
 * The strategy panel of release `r`. `io` holds what it needs of the page:
 * `api(method, path, body)`, `act(call, done)`, the release's `path`, and
 * `changed()` to draw the page again once the checks' history arrives.
 */
export function strategyPanel(r, io) {
  const strategy = r.spec.strategy;
  const steps = strategy.steps || [];
  const s = r.status?.strategy || {};
  const current = s.currentStep ?? 0;
  const stepList = el("ol", { id: "steps", class: "steps", "aria-label": "Steps" },
    steps.map((step, i) => {
      const state = i < current ? "done" : i === current && r.status?.phase === "Running" ? "current" : "";
      let note = null;
      if (state === "current") {
        const words = waiting(r, steps, current);
        if (words === null) {
          const until = Date.parse(s.stepStartTime) + seconds(step.pause.duration) * 1000;
          note = el("span", { class: "step-note", "data-until": String(until) }, left(until));
        } else if (words) {
          note = el("span", { class: "step-note" }, words);
        }
      }
      return el("li", { class: state, "aria-current": state === "current" ? "step" : null },
        el("span", { class: "step-mark" }, state === "done" ? "✓" : `${i + 1}`), " ", stepText(step), note ? " · " : null, note);
    }));
  const why = allowedActions(r);
  const name = r.metadata.name;
  const button = (label, id, reason, body, question, done, attrs = {}) => el("button", {
    type: "button", id, disabled: !!reason, title: reason || null, ...attrs,
    onclick: () => { if (!question || confirm(question)) io.act(() => io.api("POST", `${io.path}:${id.replace("-full", "")}`, body), done); },
  }, label);
  const actions = el("div", { class: "actions", id: "strategy-actions" },
    button("Pause", "pause", why.pause, {}, null, "Pause asked for."),
    button("Resume", "resume", why.resume, {}, null, "Resume asked for."),
    button("Promote", "promote", why.promote, {}, `Pass the current step of ${name} now?`, "Promote asked for."),
    button("Promote in full", "promote-full", why.full, { full: true }, `Skip every remaining step and check of ${name}, to 100% and ${strategy.onSuccess || "end"}?`, "Full promotion asked for."),
    button("Abort", "abort", why.abort, {}, `Roll ${name} back now? All traffic goes to the original.`, "Abort asked for.", { class: "danger" }),
    button("Retry", "retry", why.retry, {}, `Start ${name}'s steps again from the first?`, "Retry asked for."));
  const latest = s.checks || [];
  ensureHistory(r, io);
  const kept = history.get(key(r))?.items || [];
  const metrics = (strategy.analysis?.metrics || []).map((m) => m.name);
  const analysis = strategy.analysis || {};
  return el("div", { class: "panel wide", id: "strategy" },
    el("h2", {}, "Strategy ", el("span", { class: "muted" }, stepOf(r))),
    stepList,
    el("p", { class: "muted" },
      `Checks every ${analysis.interval || "60s"}; ${analysis.failureLimit || 1} failed round(s) in a row ${strategy.onFailure === "pause" ? "pause it" : "roll it back"}; ` +
      `nothing but NoData or Error for ${analysis.maxHold || "10m"} does too.` +
      (s.consecutiveFailures ? ` Failed rounds in a row now: ${s.consecutiveFailures}.` : "")),
    outcome(r),
    actions,
    latest.length ? el("table", { id: "checks" },
      el("thead", {}, el("tr", {}, ...["Check", "Type", "Verdict", "Value", "Bounds", "Requests", "Round", "Message"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, latest.map((c) => el("tr", { "data-check": c.name },
        el("td", {}, c.name), el("td", {}, c.type), el("td", {}, el("span", { class: `verdict ${c.verdict}` }, c.verdict)),
        el("td", {}, number(c.value)), el("td", {}, bounds(c)), el("td", {}, c.requests ?? "–"),
        el("td", { title: c.time }, `${c.round ?? ""} (${age(c.time)} ago)`), el("td", {}, c.message))))) : el("p", { class: "muted" }, "No round of checks yet."),
    metrics.length ? el("div", { class: "charts" }, metrics.map((m) => {
      const results = kept.filter((c) => c.name === m);
      const last = results[results.length - 1] || latest.find((c) => c.name === m);
      return el("figure", { class: "chart", "data-metric": m },
        chart(m, results, last),
        el("figcaption", {}, el("strong", {}, m), " ", last ? el("span", { class: `verdict ${last.verdict}` }, last.verdict) : null,
          last?.query ? el("details", {}, el("summary", {}, "query"), el("code", {}, last.query)) : null));
    })) : null);
}

/** How the strategy ended, when it did: in the service's own words. */
function outcome(r) {
  const phase = r.status?.phase;
  const said = (type) => (r.status?.conditions || []).find((c) => c.type === type);
  if (phase === "Failed" && said("Failed")) {
    return el("p", { id: "strategy-outcome", class: "field-error" }, `Rolled back (${said("Failed").reason}): ${said("Failed").message}`);
  }
  const progressing = said("Progressing");
  if (progressing?.reason === "Completed") return el("p", { id: "strategy-outcome" }, progressing.message);
  return null;
}

function key(r) { return `${r.metadata.namespace}/${r.metadata.name}`; }

/**
 * Fetches the kept rounds once a newer round shows in the status. The
 * service stores a round's decision a moment before the round's results,
 * so an answer can lack the round the status names: it is asked again a
 * little later, a few times at most (a round may never be kept).
 */
function ensureHistory(r, io) {
  const newest = Math.max(0, ...(r.status?.strategy?.checks || []).map((c) => c.round || 0));
  const known = history.get(key(r));
  if (known && (known.round >= newest || known.loading)) return;
  const tries = known?.wanted === newest ? known.tries + 1 : 1;
  const entry = { round: known?.round ?? -1, items: known?.items || [], loading: true, wanted: newest, tries };
  history.set(key(r), entry);
  io.api("GET", `${io.path}/checks`).then((list) => {
    entry.items = list?.items || [];
    entry.round = Math.max(entry.round, ...entry.items.map((c) => c.round || 0));
  }).catch(() => {}).finally(() => {
    if (entry.round >= newest || tries >= HISTORY_TRIES) {
      entry.round = Math.max(entry.round, newest);
      entry.loading = false;
      io.changed();
    } else {
      setTimeout(() => { entry.loading = false; io.changed(); }, HISTORY_RETRY_MS);
    }
  });
}

function left(until) {
  const s = Math.max(0, Math.round((until - Date.now()) / 1000));
  return s > 0 ? `ends in ${s >= 90 ? `${Math.round(s / 60)}m` : `${s}s`}` : "ending";
}

// Countdowns tick without drawing the page again.
setInterval(() => {
  for (const node of document.querySelectorAll("[data-until]")) node.textContent = left(Number(node.dataset.until));
}, 1000);

/**
 * A metric's values over its rounds: a line through the judged values,
 * a dot per value (green a pass, red a failure), a gray tick for a round
 * without a value (NoData or Error), and dashed lines at min and max.
 */
function chart(name, results, last) {
  const W = 360, H = 120, left = 48, right = 10, top = 10, bottom = 22;
  const min = last?.min, max = last?.max;
  const valued = results.filter((c) => typeof c.value === "number" && Number.isFinite(c.value));
  const label = valued.length
    ? `${name} over ${results.length} round(s): latest ${number(valued[valued.length - 1].value)}${min !== undefined ? `, min ${number(min)}` : ""}${max !== undefined ? `, max ${number(max)}` : ""}`
    : `${name}: no value yet`;
  const figure = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": label, class: "chart-svg" });
  if (!results.length) {
    figure.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-label" }, "no round yet"));
    return figure;
  }
  const rounds = results.map((c) => c.round);
  const r0 = Math.min(...rounds), r1 = Math.max(...rounds);
  const x = (round) => r1 === r0 ? left + (W - left - right) / 2 : left + ((round - r0) / (r1 - r0)) * (W - left - right);
  const ys = [...valued.map((c) => c.value), ...[min, max].filter((b) => b !== undefined)];
  let lo = ys.length ? Math.min(...ys) : 0, hi = ys.length ? Math.max(...ys) : 1;
  if (lo === hi) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.1;
  // Latencies, rates and percentages do not go below zero: nor does the axis.
  lo = lo >= 0 ? Math.max(0, lo - pad) : lo - pad;
  hi += pad;
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
  figure.append(
    svg("line", { x1: left, y1: top, x2: left, y2: H - bottom, class: "axis" }),
    svg("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "axis" }),
    svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", class: "chart-label" }, number(hi)),
    svg("text", { x: left - 4, y: H - bottom, "text-anchor": "end", class: "chart-label" }, number(lo)),
    svg("text", { x: left, y: H - 6, class: "chart-label" }, `round ${r0}`),
    svg("text", { x: W - right, y: H - 6, "text-anchor": "end", class: "chart-label" }, `round ${r1}`));
  for (const [bound, word] of [[min, "min"], [max, "max"]]) {
    if (bound === undefined) continue;
    figure.append(
      svg("line", { x1: left, y1: y(bound), x2: W - right, y2: y(bound), class: "threshold", "data-bound": word }),
      svg("text", { x: W - right - 2, y: y(bound) - 3, "text-anchor": "end", class: "chart-label threshold-label" }, `${word} ${number(bound)}`));
  }
  if (valued.length > 1) {
    figure.append(svg("polyline", { points: valued.map((c) => `${x(c.round)},${y(c.value)}`).join(" "), class: "series" }));
  }
  for (const c of results) {
    const title = svg("title", {}, `round ${c.round}: ${c.verdict}${typeof c.value === "number" ? ` ${number(c.value)}` : ""} — ${c.message}`);
    if (typeof c.value === "number" && Number.isFinite(c.value)) {
      figure.append(svg("circle", { cx: x(c.round), cy: y(c.value), r: 3.5, class: `dot ${c.verdict}`, "data-round": c.round }, title));
    } else {
      figure.append(svg("rect", { x: x(c.round) - 1.5, y: H - bottom - 8, width: 3, height: 8, class: `gap ${c.verdict}`, "data-round": c.round }, title));
    }
  }
  return figure;
}
