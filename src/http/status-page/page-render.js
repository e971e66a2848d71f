// rbee-hive status page, part of one script (see assets.ts: the parts are joined in order).

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
  const est = m.memory_estimate_bytes;
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
