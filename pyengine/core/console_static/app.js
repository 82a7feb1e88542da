// The pyengine console's page script. No framework, no inline script (the CSP forbids it).
// Everything that comes from the core or a function is put in the page as text (textContent,
// text nodes), never as HTML.
"use strict";

const state = { csrf: "", mqtt: false, tab: "overview", streams: {} };
const REFRESH_MS = 3000;
const LOG_LINES_MAX = 1000;

// -- helpers -----------------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fill(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children);
  return node;
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.method === "POST") {
    opts.headers["X-CSRF-Token"] = state.csrf;
    opts.headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) { window.location = "/console/login"; throw new Error("logged out"); }
  const body = await resp.json();
  if (!resp.ok && !body.answer) throw new Error((body.error && body.error.message) || resp.status);
  return body;
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

function when(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }
function ms(v) { return v === null || v === undefined ? "-" : v.toFixed(2); }
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${Math.floor(s % 60)} s`;
}
function card(title, ...rows) {
  return el("div", { class: "card" }, el("h2", {}, title),
    el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
}

// -- tabs ----------------------------------------------------------------------------------------

const loaders = {
  overview: loadOverview, deployments: loadDeployments, resources: loadResources,
  functions: loadFunctions, logs: loadFunctionNames, invoke: loadFunctionNames,
  mqtt: async () => {},
};

function show(tab) {
  if (!loaders[tab]) tab = "overview";
  state.tab = tab;
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== tab;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === tab);
  }
  refresh();
}

async function refresh() {
  try { await loaders[state.tab](); } catch (e) { console.warn(e); }
}

// -- overview ----------------------------------------------------------------------------------

async function loadOverview() {
  const o = await api("/console/api/overview");
  const d = o.deployment;
  fill("overview-body",
    card("Core",
      ["version", o.version], ["uptime", duration(o.uptime_s)],
      ["health", o.ready ? "ready" : "starting"],
      ["kernels", `${o.kernels} (available: ${o.kernels_available.join(", ")})`],
      ["threads", o.threads]),
    card("Machine",
      ["CPU", `${o.cpu.model} (${o.cpu.arch}, ${o.cpu.cores} cores)`],
      ["GPU", o.gpus.length ? o.gpus.map((g) => g.name || JSON.stringify(g)).join(", ") : "none"]),
    card("Confinement",
      ["Landlock ABI", o.landlock_abi || "not available"],
      ["in force", o.confinement.join("; ")]),
    card("Deployment",
      ...(d ? [["id", d.id], ["group", d.group], ["status", d.status || "-"],
               ["finished", when(d.finished)]] : [["", "nothing deployed"]])),
    card("Functions", ...o.functions.map((f) => [f.name, f.status])));
}

// -- deployments -------------------------------------------------------------------------------

async function loadDeployments() {
  const { deployments } = await api("/console/api/deployments");
  const blocks = deployments.map((d) => el("details", { open: d === deployments[0] },
    el("summary", {}, `#${d.id} ${d.kind} of ${d.group || "-"}: ${d.status} (${when(d.started)})`),
    d.message ? el("p", {}, d.message) : null,
    table(["kind", "item", "outcome", "version", "bytes", "message"],
      d.items.map((i) => [i.kind, i.key, i.outcome, i.version || "-", bytes(i.bytes),
        i.message || ""]))));
  fill("deployments-body", ...(blocks.length ? blocks : [el("p", {}, "no deployments")]));
}

async function rollback() {
  if (!window.confirm("Roll back to the previous deployment? The functions restart on it.")) return;
  const out = document.getElementById("rollback-result");
  out.textContent = "rolling back...";
  try {
    const d = await api("/console/api/rollback", { method: "POST", body: "{}" });
    out.textContent = `deployment ${d.id}: ${d.status}${d.message ? ": " + d.message : ""}`;
  } catch (e) {
    out.textContent = `rollback refused: ${e.message}`;
  }
  loadDeployments();
}

// -- resources ---------------------------------------------------------------------------------

function signature(s) {
  if (!s) return "-";
  if (s.error || s.note) return s.error || s.note;
  const io = (list) => list.map((t) => `${t.name} ${t.dtype}[${t.shape.join(", ")}]`).join("; ");
  return `in: ${io(s.inputs)} / out: ${io(s.outputs)}`;
}

async function loadResources() {
  const { resources } = await api("/console/api/resources");
  fill("resources-body", table(
    ["kind", "id", "version", "source", "digest", "size", "destination", "used by", "inputs / outputs"],
    resources.map((r) => [r.kind, r.key, r.version || "-", r.source || "-", r.digest || "-", bytes(r.bytes),
      r.destination || "-",
      (r.used_by || []).map((u) => `${u.function} (${u.permission})`).join(", ") || "-",
      signature(r.signature)])));
}

// -- functions and charts ----------------------------------------------------------------------

async function loadFunctions() {
  const [{ functions }, series] = await Promise.all([api("/console/api/functions"),
    api("/console/api/series")]);
  fill("functions-body", table(
    ["function", "status", "mode", "workers", "invocations", "errors", "p50 ms", "p99 ms",
      "batch sizes", "last error"],
    functions.map((f) => [f.name, f.status, f.pinned ? "pinned" : "on demand",
      `${f.workers} of ${f.max_workers}`, f.invocations, f.errors, ms(f.p50_ms), ms(f.p99_ms),
      f.batching ? JSON.stringify(f.batching.batch_sizes || f.batching) : "-",
      f.last_error || ""])));
  chart("chart-latency", series, ["p50_ms", "p99_ms"]);
  chart("chart-rate", series, ["per_min"]);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function chart(id, series, keys) {
  const W = 600, H = 160, P = 30;
  const lines = [];
  for (const [fn, points] of Object.entries(series.functions)) {
    for (const key of keys) lines.push({ label: `${fn} ${key}`, points: points.filter((p) => p[key] !== null).map((p) => [p.t, p[key]]) });
  }
  const all = lines.flatMap((l) => l.points);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  if (!all.length) {
    const t = svg("text", { x: P, y: H / 2 });
    t.textContent = "no invocations yet";
    root.append(t);
    fill(id, root);
    return;
  }
  const now = Date.now() / 1000, t0 = now - 3600;
  const ymax = Math.max(...all.map((p) => p[1]), 1e-3) * 1.1;
  const x = (t) => P + (W - 2 * P) * (t - t0) / 3600;
  const y = (v) => H - P - (H - 2 * P) * v / ymax;
  root.append(svg("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }));
  root.append(svg("line", { x1: P, y1: P, x2: P, y2: H - P, class: "axis" }));
  const top = svg("text", { x: 2, y: P - 6, class: "tick" });
  top.textContent = ymax.toFixed(ymax < 10 ? 2 : 0);
  root.append(top);
  const left = svg("text", { x: P, y: H - 8, class: "tick" });
  left.textContent = "-60 min";
  const right = svg("text", { x: W - P - 24, y: H - 8, class: "tick" });
  right.textContent = "now";
  root.append(left, right);
  const legend = el("ul", { class: "legend" });
  lines.forEach((l, i) => {
    const cls = `series s${i % 6}`;
    root.append(svg("polyline", { class: cls,
      points: l.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
    for (const [t, v] of l.points) {  // a lone sample shows too
      root.append(svg("circle", { class: `dot s${i % 6}`, cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2 }));
    }
    legend.append(el("li", { class: `s${i % 6}` }, l.label));
  });
  fill(id, root, legend);
}

// -- logs ----------------------------------------------------------------------------------------

async function loadFunctionNames() {
  const { functions } = await api("/console/api/functions");
  for (const id of ["logs-function", "invoke-function"]) {
    const select = document.getElementById(id);
    const had = select.value;
    const names = functions.map((f) => f.name);
    if ([...select.options].map((o) => o.value).join() !== names.join()) {
      select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (names.includes(had)) select.value = had;
    }
  }
}

function follow(name, url, onEvent, stateId) {
  if (state.streams[name]) state.streams[name].close();
  const source = new EventSource(url);
  state.streams[name] = source;
  const label = document.getElementById(stateId);
  source.onopen = () => { label.textContent = "live"; };
  source.onerror = () => { label.textContent = "reconnecting..."; };
  source.onmessage = (m) => onEvent(JSON.parse(m.data));
}

function appendLine(id, text) {
  const pre = document.getElementById(id);
  pre.append(document.createTextNode(text + "\n"));
  while (pre.childNodes.length > LOG_LINES_MAX) pre.firstChild.remove();
  pre.scrollTop = pre.scrollHeight;
}

function followLogs(ev) {
  ev.preventDefault();
  const fn = document.getElementById("logs-function").value;
  const filter = document.getElementById("logs-filter").value;
  if (!fn) return;
  fill("logs-body");
  follow("logs", `/console/api/logs/${encodeURIComponent(fn)}?filter=${encodeURIComponent(filter)}`,
    (e) => appendLine("logs-body", e.line), "logs-state");
}

// -- invoke --------------------------------------------------------------------------------------

function fileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function invoke(ev) {
  ev.preventDefault();
  const fn = document.getElementById("invoke-function").value;
  const out = document.getElementById("invoke-result");
  const took = document.getElementById("invoke-time");
  let payload;
  try {
    payload = JSON.parse(document.getElementById("invoke-payload").value || "null");
  } catch (e) {
    took.textContent = `the payload is not JSON: ${e.message}`;
    return;
  }
  const file = document.getElementById("invoke-file").files[0];
  if (file) {
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) payload = {};
    payload[document.getElementById("invoke-field").value || "image"] = await fileAsBase64(file);
  }
  took.textContent = "invoking...";
  try {
    const r = await api(`/console/api/invoke/${encodeURIComponent(fn)}`,
      { method: "POST", body: JSON.stringify(payload) });
    took.textContent = `HTTP ${r.status} in ${r.ms.toFixed(1)} ms`;
    out.textContent = JSON.stringify(r.answer, null, 2);
    out.classList.toggle("failed", r.status !== 200);
  } catch (e) {
    took.textContent = `refused: ${e.message}`;
  }
}

// -- MQTT ----------------------------------------------------------------------------------------

function watchMqtt(ev) {
  ev.preventDefault();
  const filter = document.getElementById("mqtt-filter").value || "#";
  fill("mqtt-body");
  follow("mqtt", `/console/api/mqtt/watch?topic=${encodeURIComponent(filter)}`, (e) => {
    if (e.watching !== undefined) return;
    appendLine("mqtt-body", `${new Date(e.t * 1000).toLocaleTimeString()} ${e.topic} ${e.payload}`);
  }, "mqtt-state");
}

async function publishMqtt(ev) {
  ev.preventDefault();
  const out = document.getElementById("mqtt-result");
  try {
    const r = await api("/console/api/mqtt/publish", { method: "POST", body: JSON.stringify({
      topic: document.getElementById("mqtt-topic").value,
      payload: document.getElementById("mqtt-payload").value }) });
    out.textContent = r.published ? "published" : `not published: ${r.reason}`;
  } catch (e) {
    out.textContent = `refused: ${e.message}`;
  }
}

// -- start ---------------------------------------------------------------------------------------

async function start() {
  const s = await api("/console/api/session");
  state.csrf = s.csrf;
  state.mqtt = s.mqtt;
  document.getElementById("mqtt-none").hidden = s.mqtt;
  for (const id of ["mqtt-watch", "mqtt-publish"]) document.getElementById(id).hidden = !s.mqtt;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => { window.location.hash = b.dataset.tab; });
  }
  window.addEventListener("hashchange", () => show(window.location.hash.slice(1)));
  document.getElementById("rollback").addEventListener("click", rollback);
  document.getElementById("logs-form").addEventListener("submit", followLogs);
  document.getElementById("invoke-form").addEventListener("submit", invoke);
  document.getElementById("mqtt-watch").addEventListener("submit", watchMqtt);
  document.getElementById("mqtt-publish").addEventListener("submit", publishMqtt);
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/console/logout", { method: "POST", body: "{}" });
    window.location = "/console/login";
  });
  show(window.location.hash.slice(1) || "overview");
  // Numbers update without reloading; the logs and MQTT tabs stream instead.
  setInterval(() => {
    if (!["logs", "invoke", "mqtt"].includes(state.tab)) refresh();
  }, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
