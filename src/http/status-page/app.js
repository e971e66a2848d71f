// rbee-hive status page: plain JavaScript, no dependencies, served by the hive itself (works offline).
// Live data comes from GET /v1/events and the download progress streams, read with fetch() so
// the token travels as a Bearer header (EventSource cannot send one); lists are re-read on
// relevant events (throttled) and otherwise every 5 s at most. No innerHTML anywhere: model refs
// and log lines are untrusted text.
"use strict";

const TOKEN_KEY = "rbee-hive.token";
const REFRESH_MS = 5000; // nothing polls faster than this
const EVENT_REFRESH_GAP_MS = 1000; // event-driven list reads are at least this far apart
const MAX_PROGRESS_STREAMS = 3; // browsers allow ~6 connections per host; keep room for requests
const MAX_EVENT_LINES = 100;
const LOG_TAIL = 200;
const RUNNING_DOWNLOAD = new Set(["planning", "downloading"]);

const $ = (id) => document.getElementById(id);
const authMode = document.querySelector('meta[name="rbee-auth"]')?.content === "none" ? "none" : "token";

const state = {
  token: null,
  hive: null,
  hiveSeenAt: 0, // performance.now() when hive.uptime_s was read
  workers: new Map(),
  downloads: new Map(),
  models: [],
  devices: null,
  devicesError: null,
  backends: null,
  connected: false,
};

// ---------- small helpers ----------

function el(tag, props = {}, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "dataset") Object.assign(n.dataset, v);
    else if (k === "text") n.textContent = v;
    else if (k === "className" || k === "type" || k === "hidden" || k === "disabled" || k === "value") n[k] = v;
    else n.setAttribute(k, v);
  }
  n.append(...kids);
  return n;
}

function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

const dash = (v) => (v === undefined || v === null || v === "" ? "—" : String(v));

function fmtBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const shortId = (id) => (typeof id === "string" && id.length > 16 ? `${id.slice(0, 15)}…` : dash(id));

function notice(text, bad = false) {
  const n = $("notice");
  n.classList.toggle("bad", bad);
  setText(n, text);
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(extra = {}, token = state.token) {
  return token ? { ...extra, authorization: `Bearer ${token}` } : extra;
}

async function apiError(res) {
  let code = res.statusText || "ERROR";
  let message = "";
  try {
    const body = await res.json();
    code = body?.error?.code ?? code;
    message = body?.error?.message ?? "";
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message);
}

async function api(path, { json, method = json === undefined ? "GET" : "POST", token } = {}) {
  const headers = authHeaders(json === undefined ? {} : { "content-type": "application/json" }, token ?? state.token);
  const res = await fetch(path, { method, headers, cache: "no-store", body: json === undefined ? undefined : JSON.stringify(json) });
  if (!res.ok) throw await apiError(res);
  return res.status === 204 ? null : res.json();
}

// Every caller funnels failures here: a 401 means the token is no longer good.
function failed(what, e) {
  if (e instanceof ApiError && e.status === 401) return unauthorized(e);
  notice(`${what} failed: ${e instanceof Error ? e.message : String(e)}`, true);
}

// ---------- server-sent events over fetch ----------

/** Parse an SSE body; calls onMessage({id, event, data}) per message. Resolves when the body ends. */
async function readSse(res, onMessage) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let msg = { id: undefined, event: undefined, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (msg.data.length) onMessage({ id: msg.id, event: msg.event, data: msg.data.join("\n") });
        msg = { id: undefined, event: undefined, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // comment: connected, keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "data") msg.data.push(val);
      else if (field === "id") msg.id = val;
      else if (field === "event") msg.event = val;
    }
  }
}

/**
 * Follow an SSE route: reconnect with backoff (1 s doubling to 30 s, ±20 %) and Last-Event-ID.
 * onMessage returns "done" to end the stream for good.
 */
function follow(path, { onMessage, onState = () => {}, beforeReconnect, stopOn404 = false }) {
  let stopped = false;
  let finished = false;
  let ctrl = null;
  let lastId = null;
  let attempt = 0;
  const run = async () => {
    while (!stopped && !finished) {
      if (attempt > 0 && beforeReconnect) {
        try {
          // A restarted hive numbers its events anew: replay all it has.
          if ((await beforeReconnect()) === "reset") lastId = "0";
        } catch (e) {
          if (e instanceof ApiError && e.status === 401) return unauthorized(e);
        }
      }
      if (stopped) return;
      ctrl = new AbortController();
      try {
        const headers = authHeaders({ accept: "text/event-stream" });
        if (lastId !== null) headers["last-event-id"] = lastId;
        onState(attempt ? "reconnecting" : "connecting");
        const res = await fetch(path, { headers, signal: ctrl.signal, cache: "no-store" });
        if (!res.ok) throw await apiError(res);
        attempt = 0;
        onState("live");
        await readSse(res, (m) => {
          if (m.id !== undefined) lastId = m.id;
          if (onMessage(m) === "done") {
            finished = true;
            ctrl.abort();
          }
        });
      } catch (e) {
        if (stopped || finished) return;
        if (e instanceof ApiError && e.status === 401) return unauthorized(e);
        if (e instanceof ApiError && e.status === 404 && stopOn404) {
          onState("gone");
          return;
        }
      }
      if (stopped || finished) return;
      attempt++;
      const delay = Math.min(30_000, 1000 * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
      onState("waiting", delay);
      await sleep(delay);
    }
  };
  run().catch((e) => notice(`stream ${path} failed: ${e?.message ?? e}`, true));
  return {
    stop() {
      stopped = true;
      ctrl?.abort();
    },
  };
}

// ---------- list loading, throttled ----------

const loaders = {
  hive: loadHive,
  workers: loadWorkers,
  downloads: loadDownloads,
  models: loadModels,
  devices: loadDevices,
};
const ALL = Object.keys(loaders);
const pending = new Set();
let refreshTimer = null;
let lastRefresh = 0;

/** Re-read these lists soon: coalesced, and never more often than EVENT_REFRESH_GAP_MS. */
function scheduleRefresh(...names) {
  for (const n of names) pending.add(n);
  if (refreshTimer || !state.connected) return;
  const wait = Math.max(100, lastRefresh + EVENT_REFRESH_GAP_MS - performance.now());
  refreshTimer = setTimeout(runRefresh, wait);
}

async function runRefresh() {
  refreshTimer = null;
  lastRefresh = performance.now();
  const names = [...pending];
  pending.clear();
  await Promise.all(names.map((n) => loaders[n]().catch((e) => failed(`reading ${n}`, e))));
}

async function loadHive() {
  const h = await api("/v1/hive");
  state.hive = h;
  state.hiveSeenAt = performance.now();
  renderHive();
  return h;
}

/** Reads of one list may overlap (an action's own read, an event's): apply none older than the last applied. */
const answered = {};
function newest(name) {
  const seq = (answered[name + "#"] = (answered[name + "#"] ?? 0) + 1);
  return () => (seq > (answered[name] ?? 0) ? ((answered[name] = seq), true) : false);
}

async function loadWorkers() {
  const fresh = newest("workers");
  const { workers } = await api("/v1/workers/list");
  if (!fresh()) return;
  state.workers = new Map(workers.map((w) => [w.id, w]));
  renderWorkers();
}

async function loadDownloads() {
  const fresh = newest("downloads");
  const { downloads } = await api("/v1/models/downloads");
  if (!fresh()) return;
  const next = new Map();
  for (const d of downloads) {
    const live = state.downloads.get(d.id);
    // A progress stream may be ahead of the list: keep the larger byte count while running.
    if (live && RUNNING_DOWNLOAD.has(d.state) && live.bytes_downloaded > d.bytes_downloaded) next.set(d.id, { ...d, bytes_downloaded: live.bytes_downloaded });
    else next.set(d.id, d);
  }
  state.downloads = next;
  renderDownloads();
  followDownloads();
}

async function loadModels() {
  const { models } = await api("/v1/models");
  state.models = models;
  renderModels();
}

async function loadDevices() {
  try {
    state.devices = await api("/v1/devices");
    state.devicesError = null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) throw e;
    state.devices = null;
    state.devicesError = e instanceof ApiError && e.status === 404 ? "This hive does not serve /v1/devices." : `Devices unavailable: ${e.message}`;
  }
  renderDevices();
}

// ---------- rendering ----------

function renderHive() {
  const h = state.hive;
  setText($("hive-id"), h ? dash(h.hive_id) : "");
  setText($("hive-version"), h ? `${dash(h.version)}${h.commit && h.commit !== "dev" ? ` (${h.commit})` : ""}` : "—");
  document.title = h?.hive_id ? `rbee-hive ${h.hive_id}` : "rbee-hive";
  renderUptime();
}

function renderUptime() {
  const h = state.hive;
  const up = h && typeof h.uptime_s === "number" ? h.uptime_s + (performance.now() - state.hiveSeenAt) / 1000 : null;
  setText($("hive-uptime"), up === null ? "—" : fmtDuration(up));
}

/** Keep one row per key, in order; rows (and their focused buttons) survive updates. */
function syncRows(tbody, items, keyOf, build, update) {
  const existing = new Map();
  for (const tr of [...tbody.rows]) existing.set(tr.dataset.key, tr);
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    let tr = existing.get(key);
    if (tr) existing.delete(key);
    else {
      tr = build(item);
      tr.dataset.key = key;
    }
    update(tr, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (tr !== want) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const tr of existing.values()) tr.remove();
}

const rowCells = new WeakMap(); // tr → { column: td }

function cells(tr, columns) {
  const byCol = {};
  for (const [col, label] of columns) tr.append((byCol[col] = el("td", { className: col, dataset: { col, label } })));
  rowCells.set(tr, byCol);
}
const cell = (tr, col) => rowCells.get(tr)[col];

function badge(td, value) {
  let b = td.firstElementChild;
  if (!b) td.append((b = el("span")));
  const text = dash(value);
  const cls = `badge s-${text}`;
  if (b.className !== cls) b.className = cls;
  setText(b, text);
}

const WORKER_COLS = [
  ["id", "Worker"], ["state", "State"], ["phase", "Phase"], ["model", "Model"], ["device", "Device"],
  ["port", "Port"], ["slots", "Slots"], ["restarts", "Restarts"], ["exit", "Last exit"], ["actions", "Actions"],
];

function buildWorkerRow(w) {
  const tr = el("tr", { dataset: { id: w.id } });
  cells(tr, WORKER_COLS);
  const id = w.id;
  const logs = el("button", { type: "button", className: "quiet", text: "Logs", "aria-label": `Show the log of ${id}`, dataset: { action: "logs" } });
  const retry = el("button", { type: "button", text: "Retry", "aria-label": `Retry ${id}`, dataset: { action: "retry" }, hidden: true });
  const stop = el("button", { type: "button", className: "danger", text: "Stop", "aria-label": `Stop ${id}`, dataset: { action: "stop" } });
  logs.addEventListener("click", () => openLogs(id));
  retry.addEventListener("click", () => retryWorker(id));
  stop.addEventListener("click", () => stopWorker(id));
  cell(tr, "actions").append(logs, retry, stop);
  return tr;
}

function exitText(x) {
  if (!x) return "—";
  const how = x.signal ? ` (${x.signal})` : x.code !== null && x.code !== undefined ? ` (code ${x.code})` : "";
  return `${dash(x.reason)}${how}${x.message ? `: ${x.message}` : ""}`;
}

function phaseText(w) {
  const p = w.load_progress;
  const pct = p && typeof p.fraction === "number" && w.state === "loading" ? ` ${Math.floor(p.fraction * 100)} %` : "";
  return `${dash(w.phase)}${pct}`;
}

function updateWorkerRow(tr, w) {
  const idCell = cell(tr, "id");
  setText(idCell, shortId(w.id));
  idCell.title = w.id;
  badge(cell(tr, "state"), w.state);
  setText(cell(tr, "phase"), phaseText(w));
  setText(cell(tr, "model"), dash(w.model_ref));
  setText(cell(tr, "device"), w.backend === undefined && w.device === undefined ? "—" : `${dash(w.backend)}:${dash(w.device)}`);
  setText(cell(tr, "port"), dash(w.port));
  const inFlight = typeof w.in_flight === "number" && w.in_flight > 0 ? ` · ${w.in_flight} in flight` : "";
  setText(cell(tr, "slots"), typeof w.slots_total === "number" ? `${dash(w.slots_available)}/${w.slots_total}${inFlight}` : "—");
  setText(cell(tr, "restarts"), dash(w.restart_count));
  const exitCell = cell(tr, "exit");
  setText(exitCell, w.phase === "crash_loop" && w.crash_loop_reason ? `crash loop: ${w.crash_loop_reason}` : exitText(w.last_exit));
  exitCell.title = (w.last_exit?.stderr_tail ?? []).slice(-5).join("\n");
  tr.querySelector('[data-action="retry"]').hidden = w.phase !== "crash_loop";
  tr.querySelector('[data-action="stop"]').hidden = w.phase === "stopping" || w.phase === "exited";
}

function renderWorkers() {
  const list = [...state.workers.values()];
  syncRows($("workers").tBodies[0], list, (w) => w.id, buildWorkerRow, updateWorkerRow);
  $("workers-empty").hidden = list.length > 0;
  setText($("workers-count"), list.length ? `(${list.length})` : "");
}

const DOWNLOAD_COLS = [["model", "Model"], ["state", "State"], ["progress", "Progress"], ["speed", "Speed"], ["eta", "ETA"], ["actions", "Actions"]];

function buildDownloadRow(d) {
  const tr = el("tr", { dataset: { id: d.id } });
  cells(tr, DOWNLOAD_COLS);
  const bar = el("progress", { max: "1", value: "0", "aria-label": `Download of ${d.model_ref}` });
  cell(tr, "progress").append(el("div", {}, bar, el("span", { className: "pct" })));
  const cancel = el("button", { type: "button", className: "danger", text: "Cancel", "aria-label": `Cancel the download of ${d.model_ref}`, dataset: { action: "cancel" } });
  cancel.addEventListener("click", () => cancelDownload(d.id));
  cell(tr, "actions").append(cancel);
  return tr;
}

function updateDownloadRow(tr, d) {
  setText(cell(tr, "model"), `${dash(d.model_ref)}${d.revision && d.revision !== "main" ? ` @ ${d.revision}` : ""}`);
  badge(cell(tr, "state"), d.state);
  const total = typeof d.bytes_total === "number" ? d.bytes_total : 0;
  const done = d.state === "complete" ? total : Math.min(d.bytes_downloaded ?? 0, total);
  const bar = tr.querySelector("progress");
  if (total > 0) {
    bar.max = total;
    bar.value = done;
  } else {
    bar.max = 1;
    bar.value = d.state === "complete" ? 1 : 0;
  }
  const pct = total > 0 ? Math.floor((done / total) * 100) : d.state === "complete" ? 100 : null;
  const files = typeof d.files_total === "number" && d.files_total > 1 ? ` · file ${Math.min((d.files_done ?? 0) + 1, d.files_total)}/${d.files_total}` : "";
  const failure = d.state === "error" && d.error ? ` · ${d.error.code}: ${d.error.message}` : "";
  setText(tr.querySelector(".pct"), `${pct === null ? "—" : `${pct} % · ${fmtBytes(done)} of ${fmtBytes(total)}${files}`}${failure}`);
  const running = RUNNING_DOWNLOAD.has(d.state);
  const speed = running && typeof d.speed_mbps === "number" ? d.speed_mbps : null;
  setText(cell(tr, "speed"), speed === null ? "—" : `${speed.toFixed(1)} MB/s`);
  const eta = speed && speed > 0 && total > done ? (total - done) / (speed * 1e6) : null;
  setText(cell(tr, "eta"), eta === null ? "—" : fmtDuration(eta));
  const err = d.error ? `${d.error.code}: ${d.error.message}` : "";
  cell(tr, "state").title = err;
  tr.querySelector('[data-action="cancel"]').hidden = !running;
}

function renderDownloads() {
  const list = [...state.downloads.values()].sort((a, b) => (b.started_at ?? 0) - (a.started_at ?? 0));
  syncRows($("downloads").tBodies[0], list, (d) => d.id, buildDownloadRow, updateDownloadRow);
  $("downloads-empty").hidden = list.length > 0;
}

const MODEL_COLS = [["model", "Model"], ["format", "Format"], ["size", "Size"], ["memory", "Est. memory"], ["actions", "Actions"]];
const modelKey = (m) => `${m.model_ref}@${m.revision ?? ""}`;

function buildModelRow(m) {
  const tr = el("tr", { dataset: { ref: m.model_ref } });
  cells(tr, MODEL_COLS);
  const spawn = el("button", { type: "button", text: "Spawn", "aria-label": `Spawn a worker for ${m.model_ref}`, dataset: { action: "spawn" } });
  const key = modelKey(m);
  spawn.addEventListener("click", () => spawnModel(key));
  cell(tr, "actions").append(spawn);
  return tr;
}

function updateModelRow(tr, m) {
  setText(cell(tr, "model"), `${dash(m.model_ref)}${m.revision && m.revision !== "main" ? ` @ ${m.revision}` : ""}`);
  setText(cell(tr, "format"), [m.format, m.quantization].filter(Boolean).join(" ") || "—");
  setText(cell(tr, "size"), fmtBytes(m.size_bytes));
  const est = m.memory_estimate_bytes ?? m.estimate?.needed_bytes;
  setText(cell(tr, "memory"), typeof est === "number" ? fmtBytes(est) : "—");
}

function renderModels() {
  syncRows($("models").tBodies[0], state.models, modelKey, buildModelRow, updateModelRow);
  $("models-empty").hidden = state.models.length > 0;
}

function memoryCard(title, sub, used, total, extra = [], problem = null) {
  const card = el("article", { className: "card" }, el("h3", { text: title }), el("p", { className: "muted", text: sub }));
  const ok = typeof used === "number" && typeof total === "number" && total > 0;
  const meter = el("meter", { min: "0", max: String(ok ? total : 1), value: String(ok ? Math.max(0, used) : 0), low: String(ok ? total * 0.7 : 1), high: String(ok ? total * 0.9 : 1), optimum: "0", "aria-label": `${title} memory used` });
  card.append(meter, el("p", { text: ok ? `${fmtBytes(used)} used of ${fmtBytes(total)}` : "memory —" }));
  for (const line of extra) if (line) card.append(el("p", { className: "muted", text: line }));
  if (problem) card.append(el("p", { className: "bad", text: problem }));
  return card;
}

function renderDevices() {
  const box = $("devices");
  const d = state.devices;
  if (!d) {
    box.replaceChildren(el("p", { className: "muted", text: state.devicesError ?? "—" }));
    return;
  }
  const cards = [];
  const cpu = d.cpu ?? {};
  const ramUsed = typeof cpu.ram_total_bytes === "number" && typeof cpu.ram_available_bytes === "number" ? cpu.ram_total_bytes - cpu.ram_available_bytes : null;
  cards.push(memoryCard("CPU · RAM", `${dash(cpu.cores)} cores · ${dash(cpu.model)}`, ramUsed, cpu.ram_total_bytes, [cpu.workers?.length ? `workers: ${cpu.workers.length}` : ""]));
  for (const g of d.gpus ?? []) {
    const total = g.memory_total_bytes;
    const used = typeof g.memory_used_bytes === "number" ? g.memory_used_bytes : typeof total === "number" && typeof g.memory_free_bytes === "number" ? total - g.memory_free_bytes : null;
    const stats = [
      typeof g.utilization_percent === "number" ? `${g.utilization_percent} % busy` : "",
      typeof g.temperature_c === "number" ? `${g.temperature_c} °C` : "",
      typeof g.power_w === "number" ? `${g.power_w} W` : "",
    ].filter(Boolean).join(" · ");
    const problem = g.health && g.health !== "ok" ? `${g.health}${g.health_reason ? `: ${g.health_reason}` : ""}` : null;
    cards.push(memoryCard(`${dash(g.id)} · ${dash(g.name)}`, `${dash(g.backend)} device ${dash(g.index)}`, used, total, [stats, g.workers?.length ? `workers: ${g.workers.length}` : ""], problem));
  }
  box.replaceChildren(...cards);
}

const EVENT_DETAIL = ["model_ref", "reason", "code", "signal", "message", "load_ms", "attempt", "delay_ms", "error", "failures", "kind", "bytes"];

function addEventLine(type, data) {
  const list = $("events");
  const who = data.worker_id ?? data.download_id ?? "";
  const detail = EVENT_DETAIL.filter((k) => data[k] !== undefined && data[k] !== null && !(k === "model_ref" && data.worker_id)).map((k) => `${k}=${data[k]}`).join(" ");
  const when = typeof data.time === "number" ? data.time : Date.now();
  list.prepend(el("li", {}, el("time", { text: clock(when) }), " ", `${type} ${who} ${detail}`.trim()));
  while (list.children.length > MAX_EVENT_LINES) list.lastElementChild.remove();
}

// ---------- live streams ----------

let eventsStream = null;
const progressStreams = new Map();
let tick = null;
let uptimeTick = null;

function setConn(kind, delay) {
  const text = {
    connecting: "connecting…",
    reconnecting: "reconnecting…",
    live: "live",
    waiting: `reconnecting in ${Math.round((delay ?? 0) / 1000)} s`,
    gone: "ended",
  }[kind] ?? kind;
  setText($("conn"), text);
}

function onHiveEvent(m) {
  let data;
  try {
    data = JSON.parse(m.data);
  } catch {
    return;
  }
  const type = m.event || data.type || "message";
  if (type === "loading_progress") {
    // Frequent: patch the row in place instead of re-reading the list.
    const w = state.workers.get(data.worker_id);
    if (w) {
      w.load_progress = data;
      renderWorkers();
    }
    return;
  }
  addEventLine(type, data);
  if (type === "replay_gap") return scheduleRefresh(...ALL);
  if (data.worker_id) {
    scheduleRefresh("workers");
    if (["spawned", "exited", "stopped", "ready"].includes(type)) scheduleRefresh("devices");
    if (logsView.id === data.worker_id) scheduleLogs();
  }
  if (type.startsWith("download_")) scheduleRefresh("downloads");
  if (type === "download_complete") scheduleRefresh("models");
}

/** Before re-opening the events stream: a hive that restarted numbers its events anew. */
async function hiveRestarted() {
  const before = state.hive?.started_at;
  const h = await loadHive();
  scheduleRefresh(...ALL.filter((n) => n !== "hive"));
  return before !== undefined && h.started_at !== before ? "reset" : "keep";
}

function followDownloads() {
  for (const [id, s] of progressStreams) {
    const d = state.downloads.get(id);
    if (!d || !RUNNING_DOWNLOAD.has(d.state)) {
      s.stop();
      progressStreams.delete(id);
    }
  }
  for (const d of state.downloads.values()) {
    if (progressStreams.size >= MAX_PROGRESS_STREAMS) break;
    if (!RUNNING_DOWNLOAD.has(d.state) || progressStreams.has(d.id)) continue;
    const id = d.id;
    progressStreams.set(
      id,
      follow(`/v1/models/download/progress?id=${encodeURIComponent(id)}`, {
        stopOn404: true,
        onState: (kind) => kind === "gone" && (progressStreams.delete(id), scheduleRefresh("downloads")),
        onMessage: (msg) => onProgress(id, msg),
      }),
    );
  }
}

function onProgress(id, msg) {
  if (msg.data === "[DONE]") {
    progressStreams.delete(id);
    scheduleRefresh("downloads", "models");
    return "done";
  }
  let p;
  try {
    p = JSON.parse(msg.data);
  } catch {
    return;
  }
  const d = state.downloads.get(id);
  if (!d) return;
  if (p.stage === "downloading") {
    Object.assign(d, {
      state: p.phase === "planning" ? "planning" : "downloading",
      bytes_downloaded: p.bytes_downloaded,
      bytes_total: p.bytes_total,
      speed_mbps: p.speed_mbps,
      files_done: p.files_done ?? d.files_done,
      files_total: p.files_total ?? d.files_total,
    });
  } else if (p.stage === "complete") {
    Object.assign(d, { state: "complete", bytes_downloaded: d.bytes_total, local_path: p.local_path });
  } else if (p.stage === "error") {
    Object.assign(d, { state: p.code === "DOWNLOAD_CANCELLED" ? "cancelled" : "error", error: { code: p.code, message: p.message } });
  }
  renderDownloads();
}

// ---------- actions (each confirms first) ----------

const confirmDialog = {
  resolve: null,
  open({ title, text, ok, danger = false, fields = false }) {
    const dlg = $("confirm");
    setText($("confirm-title"), title);
    setText($("confirm-text"), text);
    setText($("confirm-ok"), ok);
    $("confirm-ok").className = danger ? "danger" : "";
    $("confirm-fields").hidden = !fields;
    return new Promise((resolve) => {
      this.resolve = resolve;
      dlg.showModal();
      (fields ? $("spawn-backend") : $("confirm-cancel")).focus();
    });
  },
  finish(ok) {
    const r = this.resolve;
    this.resolve = null;
    if ($("confirm").open) $("confirm").close();
    r?.(ok);
  },
};

async function act(button, pendingText, work, doneText) {
  if (button) button.disabled = true;
  notice(pendingText);
  try {
    await work();
    notice(doneText);
  } catch (e) {
    failed(pendingText.replace(/…$/, ""), e);
  } finally {
    if (button?.isConnected) button.disabled = false;
  }
}

const rowButton = (table, id, action) => $(table).querySelector(`tr[data-key="${CSS.escape(id)}"] [data-action="${action}"]`);

async function stopWorker(id) {
  const w = state.workers.get(id);
  const ok = await confirmDialog.open({ title: "Stop worker?", text: `Stop ${id}${w ? ` (${w.model_ref})` : ""}? It gets SIGTERM, then SIGKILL after the grace time, and is not restarted.`, ok: "Stop worker", danger: true });
  if (!ok) return;
  await act(rowButton("workers", id, "stop"), `Stopping ${id}…`, () => api(`/v1/workers/${encodeURIComponent(id)}`, { method: "DELETE" }), `Stopped ${id}.`);
  scheduleRefresh("workers", "devices");
}

async function retryWorker(id) {
  const w = state.workers.get(id);
  const ok = await confirmDialog.open({ title: "Retry worker?", text: `Restart ${id} now${w?.crash_loop_reason ? ` (crash loop: ${w.crash_loop_reason})` : ""}? Its restart counters are cleared.`, ok: "Retry now" });
  if (!ok) return;
  await act(rowButton("workers", id, "retry"), `Restarting ${id}…`, () => api(`/v1/workers/${encodeURIComponent(id)}/restart`, { method: "POST" }), `Restart of ${id} requested.`);
  scheduleRefresh("workers");
}

async function cancelDownload(id) {
  const d = state.downloads.get(id);
  const ok = await confirmDialog.open({ title: "Cancel download?", text: `Cancel the download of ${d?.model_ref ?? id}? Partial files stay on disk for a later resume.`, ok: "Cancel download", danger: true });
  if (!ok) return;
  await act(rowButton("downloads", id, "cancel"), `Cancelling the download of ${d?.model_ref ?? id}…`, () => api(`/v1/models/download/${encodeURIComponent(id)}`, { method: "DELETE" }), "Download cancelled.");
  scheduleRefresh("downloads");
}

async function backendChoices() {
  if (!state.backends) {
    try {
      const list = await api("/v1/backends");
      state.backends = list.filter((b) => b.available).map((b) => b.name);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
      state.backends = ["cpu", "cuda", "metal"]; // this hive does not say: offer the profile's usual ones
    }
  }
  return state.backends.length ? state.backends : ["cpu"];
}

async function spawnModel(key) {
  const m = state.models.find((x) => modelKey(x) === key);
  if (!m) return;
  let choices;
  try {
    choices = await backendChoices();
  } catch (e) {
    return failed("reading backends", e);
  }
  const select = $("spawn-backend");
  select.replaceChildren(...choices.map((b) => el("option", { value: b, text: b })));
  $("spawn-device").value = "0";
  const ok = await confirmDialog.open({ title: "Spawn a worker?", text: `Start a worker for ${m.model_ref} on this host.`, ok: "Spawn", fields: true });
  if (!ok) return;
  const body = { model_ref: m.model_ref, backend: select.value, device: Number($("spawn-device").value) };
  if (m.revision && m.revision !== "main") body.revision = m.revision;
  let answer;
  await act(rowButton("models", key, "spawn"), `Spawning ${m.model_ref}…`, async () => (answer = await api("/v1/workers/spawn", { json: body })), `Spawning ${m.model_ref}.`);
  if (answer?.worker_id) notice(`Spawned ${answer.worker_id} (${answer.state}).`);
  scheduleRefresh("workers", "devices");
  // Show the new worker at once rather than after the throttle.
  loadWorkers().catch((e) => failed("reading workers", e));
}

// ---------- logs ----------

const logsView = { id: null, timer: null, again: null };

async function openLogs(id) {
  logsView.id = id;
  setText($("logs-title"), `Log of ${id}`);
  setText($("logs-text"), "");
  setText($("logs-note"), "");
  $("logs").showModal();
  $("logs-close").focus();
  await readLogs();
  clearInterval(logsView.timer);
  logsView.timer = setInterval(() => document.hidden || readLogs(), REFRESH_MS);
}

function scheduleLogs() {
  if (logsView.again || !logsView.id) return;
  logsView.again = setTimeout(() => {
    logsView.again = null;
    readLogs();
  }, EVENT_REFRESH_GAP_MS);
}

async function readLogs() {
  const id = logsView.id;
  if (!id) return;
  const pre = $("logs-text");
  try {
    const { lines } = await api(`/v1/workers/${encodeURIComponent(id)}/logs?tail=${LOG_TAIL}`);
    if (logsView.id !== id) return;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    setText(pre, lines.length ? lines.join("\n") : "(no output yet)");
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    setText($("logs-note"), `last ${LOG_TAIL} lines, updated ${clock(Date.now())}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return unauthorized(e);
    setText($("logs-note"), e instanceof ApiError && e.status === 404 ? "This worker is gone; its full log stays in <data_dir>/logs/ on the host." : `Could not read the log: ${e.message}`);
  }
}

function closeLogs() {
  clearInterval(logsView.timer);
  clearTimeout(logsView.again);
  logsView.id = logsView.timer = logsView.again = null;
}

// ---------- session ----------

function showLogin(message = "") {
  $("dash").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  setText($("login-error"), message);
  setText($("conn"), "not connected");
  $("token").value = "";
  $("token").focus();
}

function stopAll() {
  state.connected = false;
  eventsStream?.stop();
  eventsStream = null;
  for (const s of progressStreams.values()) s.stop();
  progressStreams.clear();
  clearInterval(tick);
  clearInterval(uptimeTick);
  clearTimeout(refreshTimer);
  refreshTimer = null;
  pending.clear();
  if ($("logs").open) $("logs").close();
  if ($("confirm").open) confirmDialog.finish(false);
}

function unauthorized(e) {
  if (!state.connected) return; // already signed out: one message is enough
  stopAll();
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  showLogin(`The hive refused the token (${e.status} ${e.code}). Enter it again.`);
}

/**
 * Open the dashboard with the current token (or none): the events stream and the lists, shown
 * once hive and workers are in; a 401 from any of them sends the operator back to the token form.
 */
async function connect() {
  state.connected = true;
  $("login").hidden = true;
  eventsStream = follow("/v1/events", { onMessage: onHiveEvent, onState: setConn, beforeReconnect: hiveRestarted });
  const load = (n) => loaders[n]().catch((e) => failed(`reading ${n}`, e));
  // Hive and workers first: enough to show. The rest (device detection runs tools on the host)
  // comes right after, so it does not compete with the first paint.
  await Promise.all([load("hive"), load("workers")]);
  if (!state.connected) return;
  $("dash").hidden = false;
  $("sign-out").hidden = authMode === "none";
  if (!performance.getEntriesByName("rbee:workers-rendered").length) {
    // What the page-speed test reads: the workers are in the DOM, then the task right after the frame that painted them.
    performance.mark("rbee:workers-rendered");
    requestAnimationFrame(() => setTimeout(() => performance.mark("rbee:workers-painted"), 0));
  }
  await Promise.all(["downloads", "models", "devices"].map(load));
  if (!state.connected) return;
  let ticks = 0;
  tick = setInterval(() => {
    if (document.hidden) return;
    ticks++;
    // Models change only through downloads and deletes (evented); read them now and then anyway.
    scheduleRefresh("workers", "downloads", "devices", ...(ticks % 6 === 0 ? ["models"] : []));
  }, REFRESH_MS);
  uptimeTick = setInterval(renderUptime, 1000);
}

/** A token typed in: try it on GET /v1/hive alone (one refused request if wrong), then keep it for this tab. */
async function signIn(token) {
  try {
    await api("/v1/hive", { token });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return showLogin(`Wrong token: the hive answered ${e.status} ${e.code}.`);
    return showLogin(`Cannot reach the hive: ${e.message}`);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.token = token;
  await connect();
}

function wireStaticControls() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (!token) return showLogin("Enter the token first.");
    setText($("login-error"), "");
    signIn(token);
  });
  $("sign-out").addEventListener("click", () => {
    stopAll();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    showLogin("");
  });
  $("confirm-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!$("confirm-fields").hidden && !$("spawn-device").checkValidity()) return $("spawn-device").reportValidity();
    confirmDialog.finish(true);
  });
  $("confirm-cancel").addEventListener("click", () => confirmDialog.finish(false));
  $("confirm").addEventListener("close", () => confirmDialog.finish(false)); // Esc
  $("logs-close").addEventListener("click", () => $("logs").close());
  $("logs").addEventListener("close", closeLogs);
}

wireStaticControls();
state.token = authMode === "none" ? null : sessionStorage.getItem(TOKEN_KEY);
if (authMode === "none" || state.token) connect();
else showLogin("");
