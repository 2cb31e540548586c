// The match-rule editor: a form for a rule (headers, query parameters and a
// cookie, each exact or by regex; operating systems and browsers), as the
// cloud console offers, with the JSON of every rule as the advanced view.
// The form writes the JSON; what is sent is the JSON.

import { el } from "./dom.js";

export const OPERATING_SYSTEMS = ["Android", "iOS", "Windows", "macOS", "Linux"];
export const BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "Opera", "IE"];

/** The conditions of one rule, as rows of the form. */
function rowsOf(rule) {
  const rows = [];
  for (const h of rule.headers || []) rows.push({ kind: "header", name: h.name, op: h.regex !== undefined ? "regex" : "exact", value: h.regex ?? h.exact ?? "" });
  for (const q of rule.queryParams || []) rows.push({ kind: "query", name: q.name, op: q.regex !== undefined ? "regex" : "exact", value: q.regex ?? q.exact ?? "" });
  if (rule.cookie) rows.push({ kind: "cookie", name: "", op: "regex", value: rule.cookie.regex ?? "" });
  return rows;
}

/** One rule from the form's rows and pickers (empty parts left out). */
function ruleOf(rows, os, browsers) {
  const rule = {};
  const pair = (r) => ({ name: r.name, [r.op]: r.value });
  const headers = rows.filter((r) => r.kind === "header" && r.name).map(pair);
  const query = rows.filter((r) => r.kind === "query" && r.name).map(pair);
  const cookie = rows.find((r) => r.kind === "cookie" && r.value);
  if (headers.length) rule.headers = headers;
  if (query.length) rule.queryParams = query;
  if (cookie) rule.cookie = { regex: cookie.value };
  if (os.length) rule.os = os;
  if (browsers.length) rule.browsers = browsers;
  return rule;
}

/**
 * The editor. `text` is the JSON shown (the rules in force, or what the user
 * typed and has not applied); `touched` says it was typed; `disabled` (a
 * reason) when traffic cannot change now; `apply(text)` sends it.
 */
export function matchEditor({ text, touched, disabled, apply }) {
  let rules;
  try { rules = text.trim() ? JSON.parse(text) : []; } catch { rules = null; }
  // The form holds one rule; several (or JSON that does not read) are
  // edited as JSON.
  const formable = Array.isArray(rules) && rules.length <= 1;
  const rule = formable && rules.length ? rules[0] : {};
  const rows = formable ? rowsOf(rule) : [];
  if (!rows.length) rows.push({ kind: "header", name: "", op: "exact", value: "" });
  const chosen = { os: [...(rule.os || [])], browsers: [...(rule.browsers || [])] };

  const json = el("textarea", { id: "match-rules", rows: 6, disabled: !!disabled, spellcheck: "false",
    // An example is only a placeholder: it must never read as a rule in force.
    placeholder: `for example: ${JSON.stringify([{ headers: [{ name: "x-canary", exact: "true" }] }])}` }, text);
  if (touched) json.dataset.touched = "1";
  const write = () => {
    const one = ruleOf(rows, chosen.os, chosen.browsers);
    json.value = Object.keys(one).length ? JSON.stringify([one], null, 2) : "";
    json.dataset.touched = "1";
  };

  const table = el("tbody");
  const drawRows = () => table.replaceChildren(...rows.map((row, i) => {
    const kind = el("select", { id: `rule-kind-${i}`, "aria-label": `condition ${i + 1}: what`, disabled: !!disabled || !formable,
      onchange: (e) => { row.kind = e.target.value; if (row.kind === "cookie") { row.op = "regex"; row.name = ""; } write(); drawRows(); } },
      ...["header", "query", "cookie"].map((k) => el("option", { value: k, selected: row.kind === k }, k === "query" ? "query parameter" : k)));
    const name = el("input", { id: `rule-name-${i}`, "aria-label": `condition ${i + 1}: name`, value: row.name, placeholder: row.kind === "cookie" ? "(the Cookie header)" : "name",
      disabled: !!disabled || !formable || row.kind === "cookie", oninput: (e) => { row.name = e.target.value.trim(); write(); } });
    const op = el("select", { id: `rule-op-${i}`, "aria-label": `condition ${i + 1}: how`, disabled: !!disabled || !formable || row.kind === "cookie",
      onchange: (e) => { row.op = e.target.value; write(); } },
      el("option", { value: "exact", selected: row.op === "exact" }, "equals"),
      el("option", { value: "regex", selected: row.op === "regex" }, "matches (RE2)"));
    const value = el("input", { id: `rule-value-${i}`, "aria-label": `condition ${i + 1}: value`, value: row.value, placeholder: row.op === "regex" ? "regex" : "value",
      disabled: !!disabled || !formable, oninput: (e) => { row.value = e.target.value; write(); } });
    const drop = el("button", { type: "button", "aria-label": `remove condition ${i + 1}`, disabled: !!disabled || !formable || rows.length === 1,
      onclick: () => { rows.splice(i, 1); write(); drawRows(); } }, "×");
    return el("tr", {}, el("td", {}, kind), el("td", {}, name), el("td", {}, op), el("td", {}, value), el("td", {}, drop));
  }));
  drawRows();

  const picker = (legend, names, list, prefix) => el("fieldset", { class: "picker" }, el("legend", {}, legend),
    ...names.map((n) => el("label", { for: `${prefix}-${n}` },
      el("input", { type: "checkbox", id: `${prefix}-${n}`, checked: list.includes(n), disabled: !!disabled || !formable,
        onchange: (e) => { const at = list.indexOf(n); if (e.target.checked && at < 0) list.push(n); if (!e.target.checked && at >= 0) list.splice(at, 1); write(); } }),
      ` ${n}`)));

  return el("div", { class: "match-editor", id: "match-editor" },
    el("h3", {}, "Match rules: the requests they match go to the gray version"),
    formable ? null : el("p", { class: "muted" }, "Several rules (or JSON that does not read): edit them as JSON below."),
    el("table", { class: "conditions-form" }, el("thead", {}, el("tr", {}, ...["", "Name", "", "Value", ""].map((h) => el("th", { scope: "col" }, h)))), table),
    el("button", { type: "button", id: "add-condition", disabled: !!disabled || !formable, onclick: () => { rows.push({ kind: "header", name: "", op: "exact", value: "" }); drawRows(); } }, "Add condition"),
    el("div", { class: "pickers" }, picker("Operating systems (any of)", OPERATING_SYSTEMS, chosen.os, "os"), picker("Browsers (any of)", BROWSERS, chosen.browsers, "browser")),
    el("details", { open: !formable },
      el("summary", {}, "Advanced: the rules as JSON"),
      el("label", { for: "match-rules" }, "Match rules (JSON: a list of rules; all conditions of a rule must hold, any rule may match)", json)),
    el("div", { class: "actions" },
      el("button", { type: "button", id: "apply-rules", disabled: !!disabled, title: disabled || null, onclick: () => apply(json.value) }, "Apply rules")));
}
