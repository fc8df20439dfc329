// The hub's page: the task catalog (#/), a task's card and try-it form (#/task/NAME), a mixed batch (#/mixed).
// Plain JavaScript, no dependencies: it talks only to the server that served it. Text from requests and answers
// is put into the page with textContent, never as HTML; the model card's HTML is rendered by the server with raw
// HTML disabled.
"use strict";

const main = document.getElementById("main");
const keyInput = document.getElementById("api-key");
keyInput.value = sessionStorage.getItem("hub-api-key") || "";
keyInput.addEventListener("change", () => { sessionStorage.setItem("hub-api-key", keyInput.value); route(); });
document.getElementById("key-form").addEventListener("submit", (event) => event.preventDefault());

// ---- small helpers ------------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (keyInput.value) headers.Authorization = `Bearer ${keyInput.value}`;
  const response = await fetch(path, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
  let payload;
  try { payload = await response.json(); } catch { payload = { error: { message: `the server answered ${response.status} without JSON` } }; }
  if (!response.ok) {
    const message = (payload.error && payload.error.message) || `HTTP ${response.status}`;
    throw Object.assign(new Error(message), { status: response.status, payload });
  }
  return payload;
}

function errorBox(message) { return el("p", { class: "error", role: "alert", text: message }); }

function formatBytes(bytes) {
  if (bytes === undefined || bytes === null) return "-";
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes} B`;
}

function scoreBar(label, score) {
  const width = Math.max(0, Math.min(1, score)) * 100;
  return el("div", { class: "score" },
    el("span", { text: label }),
    el("div", { class: "track", role: "img", "aria-label": `${label}: ${(score * 100).toFixed(1)}%` },
      el("div", { class: "fill", style: `width:${width}%` })),
    el("span", { class: "muted", text: score.toFixed(3) }));
}

// ---- the catalog --------------------------------------------------------------------------------------------

let catalog = null;

async function showCatalog() {
  catalog = catalog || await api("/v1/tasks");
  const tasks = catalog.tasks;
  const languages = [...new Set(tasks.map((t) => t.language))].sort();
  const kinds = [...new Set(tasks.map((t) => t.kind))].sort();
  const search = el("input", { id: "search", type: "search", placeholder: "task name or description" });
  const language = el("select", { id: "language-filter" }, el("option", { value: "", text: "all" }),
    languages.map((l) => el("option", { value: l, text: l })));
  const kind = el("select", { id: "kind-filter" }, el("option", { value: "", text: "all" }),
    kinds.map((k) => el("option", { value: k, text: k })));
  const listing = el("div", { id: "catalog" });
  const draw = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = tasks.filter((t) => (!language.value || t.language === language.value) && (!kind.value || t.kind === kind.value)
      && (!needle || t.task.toLowerCase().includes(needle) || (t.description || "").toLowerCase().includes(needle)));
    listing.replaceChildren(...backboneGroups(shown));
    if (!shown.length) listing.append(el("p", { class: "muted", text: "No task matches." }));
  };
  for (const control of [search, language, kind]) control.addEventListener("input", draw);
  main.replaceChildren(
    el("h1", { text: "Tasks" }),
    el("p", { class: "muted", text: `${tasks.length} tasks on ${Object.keys(catalog.backbones || {}).length || languages.length} `
      + "frozen backbones: each task is a small adapter and head beside its backbone, loaded on first use." }),
    el("div", { class: "filters" },
      el("label", {}, "Search", search), el("label", {}, "Language", language), el("label", {}, "Kind", kind)),
    listing);
  draw();
}

function backboneGroups(tasks) {
  const groups = new Map();
  for (const task of tasks) {
    if (!groups.has(task.backbone)) groups.set(task.backbone, []);
    groups.get(task.backbone).push(task);
  }
  return [...groups].map(([backbone, members]) => {
    const info = (catalog.backbones || {})[backbone] || {};
    const largest = Math.max(...members.map((t) => t.bytes || 0), 1);
    const taskBytes = members.reduce((sum, t) => sum + (t.bytes || 0), 0);
    return el("section", { class: "backbone", "aria-label": `backbone ${backbone}` },
      el("h2", { text: `${backbone} (${members[0].language})` }),
      el("p", { class: "muted", text: info.bytes
        ? `backbone ${formatBytes(info.bytes)} on disk, loaded once; these ${members.length} tasks add ${formatBytes(taskBytes)} `
          + `(${(100 * taskBytes / info.bytes).toFixed(2)}% of it)`
        : `${members.length} tasks` }),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["task", "kind", "adapter", "bytes (share of backbone)", "dev metric", "state"]
          .map((h, i) => el("th", { class: i === 2 ? "hide-narrow" : undefined, text: h })))),
        el("tbody", {}, members.map((t) => taskRow(t, info, largest))))));
  });
}

function taskRow(task, backbone, largest) {
  const metric = task.dev_metrics && Object.entries(task.dev_metrics)[0];
  const share = task.bytes && backbone.bytes ? ` (${(100 * task.bytes / backbone.bytes).toFixed(2)}%)` : "";
  const state = task.unavailable ? el("span", { class: "tag off", title: task.unavailable, text: "unavailable" })
    : !task.trained ? el("span", { class: "tag", text: "not trained" })
      : el("span", { class: task.loaded ? "tag on" : "tag", text: task.loaded ? "loaded" : "on disk" });
  return el("tr", { "data-task": task.task },
    el("td", {}, el("a", { href: `#/task/${encodeURIComponent(task.task)}`, text: task.task }),
      el("div", { class: "muted hide-narrow", text: task.description || "" })),
    el("td", { text: task.kind }),
    el("td", { class: "hide-narrow", text: task.method || "-" }),
    el("td", {}, el("div", { class: "bytes" },
      el("div", { class: "bar", style: `width:${Math.round(60 * (task.bytes || 0) / largest)}px` }),
      el("span", { text: formatBytes(task.bytes) + share }))),
    el("td", { text: metric ? `${metric[0]} ${Number(metric[1]).toFixed(3)}` : "-" }),
    el("td", {}, state, task.unavailable ? el("div", { class: "muted", text: task.unavailable }) : ""));
}

// ---- a task's page ------------------------------------------------------------------------------------------

async function showTask(name) {
  let detail;
  try {
    detail = await api(`/v1/tasks/${encodeURIComponent(name)}`);
  } catch (error) {
    main.replaceChildren(el("h1", { text: name }), errorBox(error.message), el("p", {}, el("a", { href: "#/", text: "All tasks" })));
    return;
  }
  const entry = detail.entry;
  const result = el("div", { id: "result", "aria-live": "polite" });
  const card = el("div", { class: "card-body" });
  card.innerHTML = detail.card_html || "<p class=\"muted\">No model card: this task has not been trained.</p>";
  main.replaceChildren(
    el("p", {}, el("a", { href: "#/", text: "← All tasks" })),
    el("h1", { text: entry.name }),
    el("p", { class: "muted", text: `${entry.kind} · ${detail.language} · backbone ${entry.backbone}`
      + (detail.unavailable ? ` · unavailable: ${detail.unavailable}` : "") }),
    el("div", { class: "grid" },
      el("section", { class: "panel", "aria-label": "try it" }, el("h2", { text: "Try it" }), tryForm(entry, result), result),
      el("section", { class: "panel", "aria-label": "model card" }, el("h2", { text: "Model card" }), card,
        el("details", { class: "raw" }, el("summary", { text: "Registry entry" }),
          el("pre", { text: JSON.stringify(entry, null, 2) })))));
}

function exampleOf(entry) {
  return entry.example === undefined || entry.example === null ? null : entry.example;
}

function tryForm(entry, result) {
  const fields = [];
  const field = (id, label, value, rows = 4) => {
    const input = el("textarea", { id, rows, name: id });
    input.value = value || "";
    fields.push(input);
    return el("div", { class: "field" }, el("label", { for: id, text: label }), input);
  };
  const example = exampleOf(entry);
  const form = el("form", { id: "try-form" });
  let read;
  if (entry.kind === "qa") {
    form.append(field("question", "Question", example && example.question),
      field("context", "Context", example && example.context, 7));
    read = () => ({ question: fields[0].value, context: fields[1].value });
  } else if (entry.inputs.length === 2) {
    const pair = Array.isArray(example) ? example : [];
    form.append(field("first", entry.inputs[0], pair[0]), field("second", entry.inputs[1], pair[1]));
    read = () => [fields[0].value, fields[1].value];
  } else if (entry.kind === "relation") {
    const marked = typeof example === "string" ? example : example && example.text ? markSpans(example) : "";
    form.append(field("text", "Text: select a phrase, then mark it as head or tail", marked),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary", id: "mark-head", onclick: () => wrapSelection(fields[0], "e1") , text: "Mark head" }),
        el("button", { type: "button", class: "secondary", id: "mark-tail", onclick: () => wrapSelection(fields[0], "e2"), text: "Mark tail" })));
    read = () => fields[0].value;
  } else {
    const hint = entry.kind === "fill_mask" ? "Text with [MASK]" : ["tagging", "span_ner", "entity_relation"].includes(entry.kind)
      ? "Text (or tokens, one per line, with the box below ticked)" : "Text";
    form.append(field("text", hint, typeof example === "string" ? example : Array.isArray(example) ? example.join("\n") : ""));
    if (["tagging", "span_ner", "entity_relation"].includes(entry.kind)) {
      const tokens = el("input", { type: "checkbox", id: "as-tokens" });
      form.append(el("div", { class: "field" }, tokens, el("label", { for: "as-tokens", style: "display:inline", text: " pre-split tokens, one per line" })));
      read = () => tokens.checked ? fields[0].value.split("\n").filter((t) => t.trim()) : fields[0].value;
    } else {
      read = () => fields[0].value;
    }
  }
  form.append(el("div", { class: "actions" }, el("button", { type: "submit", id: "run", text: "Run" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = read();
    const empty = Array.isArray(value) ? value.every((v) => !String(v).trim()) || !value.length
      : typeof value === "string" ? !value.trim() : Object.values(value).some((v) => !String(v).trim());
    if (empty) { result.replaceChildren(errorBox("Give the task some text first: the input is empty.")); return; }
    result.replaceChildren(el("p", { class: "muted", text: "Running…" }));
    const started = performance.now();
    try {
      const answer = (await api("/v1/run", { task: entry.name, input: value })).result;
      result.replaceChildren(el("p", { class: "muted", text: `answered in ${Math.round(performance.now() - started)} ms` }),
        drawResult(entry, value, answer));
    } catch (error) {
      result.replaceChildren(errorBox(error.message));
    }
  });
  return form;
}

function markSpans(example) {
  const spans = [[example.head, "e1"], [example.tail, "e2"]].sort((a, b) => b[0][0] - a[0][0]);
  let text = example.text;
  for (const [[start, end], tag] of spans) text = `${text.slice(0, start)}<${tag}>${text.slice(start, end)}</${tag}>${text.slice(end)}`;
  return text;
}

function wrapSelection(area, tag) {
  const text = area.value.replace(new RegExp(`</?${tag}>`, "g"), "");
  const shift = area.value.slice(0, area.selectionStart).replace(new RegExp(`</?${tag}>`, "g"), "").length;
  const length = area.value.slice(area.selectionStart, area.selectionEnd).replace(new RegExp(`</?${tag}>`, "g"), "").length;
  if (!length) return;
  area.value = `${text.slice(0, shift)}<${tag}>${text.slice(shift, shift + length)}</${tag}>${text.slice(shift + length)}`;
  area.focus();
}

// ---- drawing an answer --------------------------------------------------------------------------------------

function drawResult(entry, value, answer) {
  const body = el("div", { class: "drawn" });
  if ("label" in answer && !("entities" in answer)) {
    body.append(el("p", {}, "Label: ", el("strong", { class: "label-value", text: answer.label })), scoreBar(answer.label, answer.score));
  } else if ("value" in answer) {
    const position = Math.max(0, Math.min(1, answer.value / 5)) * 100;
    body.append(el("p", {}, "Value: ", el("strong", { class: "regression-value", text: answer.value.toFixed(3) }), el("span", { class: "muted", text: " on 0–5" })),
      el("div", { class: "value-scale", role: "img", "aria-label": `value ${answer.value.toFixed(2)} of 5` }, el("div", { class: "pin", style: `left:${position}%` })));
  } else if ("answer" in answer) {
    const context = Array.isArray(value) ? value[1] : value.context;
    body.append(answer.answer === null ? el("p", { class: "muted", text: "No answer in the context." })
      : el("div", { class: "text-view" }, context.slice(0, answer.start), el("mark", { class: "answer", text: answer.answer }), context.slice(answer.end)),
    answer.answer === null ? "" : scoreBar("answer", answer.score));
  } else if ("masks" in answer) {
    body.append(el("p", {}, "Filled: ", el("strong", { text: answer.sequence })),
      ...answer.masks.map((mask, i) => el("div", {}, el("p", { class: "muted", text: `mask ${i + 1}` }),
        mask.candidates.map((c) => scoreBar(c.token, c.score)))));
  } else if ("words" in answer) {
    body.append(el("div", { class: "words" }, answer.words.map((w) => el("span", { class: "word" }, w.text, w.tag ? el("small", { text: w.tag }) : ""))));
  } else if ("entities" in answer) {
    body.append(entityView(value, answer));
    if (answer.relations) {
      body.append(el("h3", { text: "Relations" }), ...(answer.relations.length ? answer.relations.map((r) => el("p", { class: "relation" },
        el("strong", { text: answer.entities[r.head].text }), " → ", el("strong", { text: answer.entities[r.tail].text }),
        " ", el("span", { class: "tag", text: r.label }), el("span", { class: "muted", text: ` ${r.score.toFixed(2)}` })))
        : [el("p", { class: "muted", text: "No relation found." })]));
    }
  }
  if (entry.kind === "relation") {
    body.prepend(el("p", { class: "relation" }, "head ", el("span", { class: "tag", text: "e1" }), " → tail ", el("span", { class: "tag", text: "e2" }), ": "));
  }
  body.append(el("details", { class: "raw" }, el("summary", { text: "Raw JSON" }), el("pre", { text: JSON.stringify(answer, null, 2) })));
  return body;
}

function entityView(value, answer) {
  const text = typeof value === "string" ? value : null;
  if (text === null) {  // pre-split tokens: entity offsets are token indices
    const tokens = answer.tokens;
    const view = el("div", { class: "text-view" });
    let cursor = 0;
    for (const entity of answer.entities) {
      view.append(tokens.slice(cursor, entity.start).join(" "), " ", entityMark(entity.text, entity.label), " ");
      cursor = entity.end;
    }
    view.append(tokens.slice(cursor).join(" "));
    return view;
  }
  const view = el("div", { class: "text-view" });
  let cursor = 0;
  const sorted = [...answer.entities].sort((a, b) => a.start - b.start || b.end - a.end);
  for (const entity of sorted) {
    if (entity.start < cursor) continue;  // nested: the outer span is drawn
    view.append(text.slice(cursor, entity.start), entityMark(text.slice(entity.start, entity.end), entity.label));
    cursor = entity.end;
  }
  view.append(text.slice(cursor));
  if (!answer.entities.length) view.append(el("div", { class: "muted", text: "No entity found." }));
  return view;
}

function entityMark(text, label) {
  return el("mark", { class: "ent", "data-label": label }, el("span", { class: "ent-text", text }), el("span", { class: "label", text: label }));
}

// ---- a mixed batch ------------------------------------------------------------------------------------------

async function showMixed() {
  catalog = catalog || await api("/v1/tasks");
  const detailed = await Promise.all(catalog.tasks.filter((t) => t.trained && !t.unavailable)
    .map((t) => api(`/v1/tasks/${encodeURIComponent(t.task)}`).catch(() => null)));
  const items = detailed.filter((d) => d && exampleOf(d.entry) !== null)
    .map((d) => ({ task: d.entry.name, entry: d.entry, input: exampleOf(d.entry) }));
  const output = el("div", { id: "mixed-result", "aria-live": "polite" });
  const run = el("button", { id: "run-mixed", text: `Answer ${items.length} tasks in one request` });
  run.addEventListener("click", async () => {
    output.replaceChildren(el("p", { class: "muted", text: "Running…" }));
    const before = await batchCounters();
    const started = performance.now();
    try {
      const answers = (await api("/v1/run", { items: items.map((i) => ({ task: i.task, input: i.input })) })).results;
      const took = Math.round(performance.now() - started);
      const after = await batchCounters();
      const rounds = after && before ? after.rounds - before.rounds : null;
      output.replaceChildren(
        el("p", { class: "batch-summary", text: `${items.length} items answered in ${took} ms`
          + (rounds ? `, in ${rounds} batch round${rounds > 1 ? "s" : ""} of the server (${((after.items - before.items) / rounds).toFixed(1)} items each)` : "") }),
        ...items.map((item, i) => el("div", { class: "batch-row" }, el("a", { href: `#/task/${encodeURIComponent(item.task)}`, text: item.task }),
          drawResult(item.entry, item.entry.kind === "relation" && typeof item.input === "object" ? item.input : item.input, answers[i]))));
    } catch (error) {
      output.replaceChildren(errorBox(error.message));
    }
  });
  main.replaceChildren(el("h1", { text: "Mixed batch" }),
    el("p", { class: "muted", text: "Every trained task's registry example in one POST /v1/run: requests of every task share the "
      + "backbone passes of their language." }), run, output);
}

async function batchCounters() {
  try {
    const headers = keyInput.value ? { Authorization: `Bearer ${keyInput.value}` } : {};
    const text = await (await fetch("/metrics", { headers })).text();
    const read = (name) => Number((text.match(new RegExp(`^${name} ([0-9.e+]+)$`, "m")) || [])[1]);
    return { rounds: read("hub_batch_items_count"), items: read("hub_batch_items_sum") };
  } catch { return null; }
}

// ---- routing ------------------------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "#/";
  try {
    if (hash.startsWith("#/task/")) await showTask(decodeURIComponent(hash.slice(7)));
    else if (hash === "#/mixed") await showMixed();
    else await showCatalog();
  } catch (error) {
    main.replaceChildren(errorBox(error.status === 401 ? `${error.message} Enter the key above.` : error.message));
  }
  main.focus();
}

window.addEventListener("hashchange", route);
route();
