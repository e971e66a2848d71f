// rbee-hive status page, part of one script (see assets.ts: the parts are joined in order).

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
