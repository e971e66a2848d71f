// rbee-hive status page, part of one script (see assets.ts: the parts are joined in order).

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
