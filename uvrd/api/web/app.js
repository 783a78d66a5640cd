// The uvrd web page: sign in with an API key's token, drop songs, follow each of the key's tasks to its
// stems (player, waveform, download), cancel; and, for an operator key, a view of workers, queues,
// every key's tasks and dead letters. Plain JavaScript, no build step, nothing fetched from elsewhere.
// Every /v1 call carries the token.
"use strict";

(() => {
  const TOKEN_KEY = "uvrd.token";
  // A task in one of these states has ended: no more polling, no cancel.
  const FINAL = new Set(["succeeded", "failed", "cancelled", "delivered", "delivery_failed"]);
  const POLL_MS = 1000; // while a task of the list has not ended
  const IDLE_MS = 5000; // otherwise: what the same key does in another browser shows up too
  const LIST_LIMIT = 50; // the newest of the key's tasks the list shows
  const OPERATOR_MS = 3000;
  const WAVE_BUCKETS = 2048; // min/max pairs kept per stem, drawn to the canvas' width
  const WAVE_MAX_BYTES = 256 * 1024 * 1024; // beyond this a stem is not decoded for its waveform
  // What the page asked to replay, by letter ("partition/offset"): the list is redrawn every few seconds.
  const replayed = new Map();

  const $ = (selector, root = document) => root.querySelector(selector);
  const tasks = []; // {uuid, name, el, final, stemsShown, listed}, newest first
  let me = null; // the key signed in with: {name, scope}, from GET /v1/whoami
  let listedFor = null; // whose tasks the list shows
  let pollTimer = null;
  let operatorTimer = null;
  let picked = [];

  class Unauthorized extends Error {}

  // ---- the token and the calls ------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${token()}` };
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status === 401) {
      signOut("The API refused the token (HTTP 401). Sign in again with a valid token.");
      throw new Unauthorized();
    }
    return response;
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      return body.error || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  function show(element, text) {
    element.textContent = text || "";
    element.hidden = !text;
  }

  // ---- signing in and out -----------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const candidate = $("#token").value.trim();
    show($("#login-error"), "");
    let response;
    try {
      response = await fetch("v1/whoami", { headers: { Authorization: `Bearer ${candidate}` }, cache: "no-store" });
    } catch (err) {
      show($("#login-error"), `The API could not be asked: ${err.message}`);
      return;
    }
    if (response.status === 401) {
      show($("#login-error"), "This token was refused (HTTP 401): it is no live key of this API.");
      return;
    }
    if (!response.ok) {
      show($("#login-error"), `The API answered HTTP ${response.status}: ${await errorOf(response)}`);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("#token").value = "";
    me = await response.json();
    enter();
  }

  const isOperator = () => Boolean(me && me.scope === "operator");

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    clearTimeout(pollTimer);
    clearTimeout(operatorTimer);
    pollTimer = operatorTimer = null;
    for (const id of ["tabs", "who", "sign-out", "separate", "operator"]) $(`#${id}`).hidden = true;
    $("#login").hidden = false;
    show($("#login-error"), message || "");
    $("#token").focus();
  }

  function enter() {
    if (listedFor !== me.name) clearTasks(); // another key: not one of the last key's tasks stays shown
    listedFor = me.name;
    $("#login").hidden = true;
    $("#tabs").hidden = false;
    // The operator's view only for an operator key (the API refuses its calls to any other, 403).
    $("#tab-operator").hidden = !isOperator();
    $("#who").textContent = `${me.name} (${me.scope})`;
    $("#who").hidden = false;
    $("#sign-out").hidden = false;
    selectTab(location.hash === "#operator" ? "operator" : "separate");
    loadModels();
    poll();
  }

  async function start() {
    loadFormats();
    if (!token()) {
      signOut("");
      return;
    }
    let response;
    try {
      response = await api("v1/whoami");
    } catch (err) {
      if (!(err instanceof Unauthorized)) signOut(`The API could not be asked: ${err.message}`);
      return;
    }
    if (!response.ok) {
      signOut(`The API answered HTTP ${response.status}: ${await errorOf(response)}`);
      return;
    }
    me = await response.json();
    enter();
  }

  async function loadModels() {
    try {
      const response = await api("v1/models");
      if (response.ok) showModels(await response.json());
    } catch {
      // Only the default then; a refused token has signed the page out already.
    }
  }

  // ---- tabs ---------------------------------------------------------------------------------

  function selectTab(name) {
    if (name === "operator" && !isOperator()) name = "separate";
    for (const tab of ["separate", "operator"]) {
      $(`#tab-${tab}`).setAttribute("aria-selected", String(tab === name));
      $(`#${tab}`).hidden = tab !== name;
    }
    history.replaceState(null, "", name === "operator" ? "#operator" : location.pathname);
    clearTimeout(operatorTimer);
    operatorTimer = null;
    if (name === "operator") refreshOperator();
  }

  // ---- what a task may ask for -----------------------------------------------------------------

  function showModels(body) {
    const select = $("#model");
    select.replaceChildren();
    const models = body.models || [];
    const fallback = models.find((m) => m.default);
    select.append(new Option(fallback ? `Default (${fallback.model})` : "Default", ""));
    if (models.length) {
      const group = document.createElement("optgroup");
      group.label = "Models";
      for (const m of models) {
        const about = [m.architecture, (m.stems || []).join(" + ")].filter(Boolean).join(", ");
        group.append(new Option(about ? `${m.model} (${about})` : m.model, `model:${m.model}`));
      }
      select.append(group);
    }
    const presets = (body.ensemble_presets || []).filter((p) => p.served);
    if (presets.length) {
      const group = document.createElement("optgroup");
      group.label = "Ensemble presets";
      for (const p of presets) {
        const option = new Option(`${p.name || p.preset} (ensemble)`, `ensemble:${p.preset}`);
        option.title = p.description || "";
        group.append(option);
      }
      select.append(group);
    }
  }

  async function loadFormats() {
    // The formats the API takes, from its OpenAPI document (which needs no token).
    try {
      const response = await fetch("openapi.json", { cache: "no-store" });
      const schema = (await response.json()).components.schemas.UploadSubmission.properties.output_format;
      const select = $("#format");
      select.replaceChildren(new Option(schema.description ? `Default (${schema.description.replace(/^Default: /, "")})`
        : "Default", ""));
      for (const format of schema.enum || []) select.append(new Option(format, format));
    } catch {
      // Only the default then.
    }
  }

  function taskFields() {
    const fields = {};
    const [kind, ...rest] = $("#model").value.split(":");
    if (kind === "model") fields.model = rest.join(":");
    if (kind === "ensemble") fields.ensemble = rest.join(":");
    if ($("#format").value) fields.output_format = $("#format").value;
    return fields;
  }

  // ---- picking and submitting songs --------------------------------------------------------

  function pick(files) {
    picked = picked.concat([...files]);
    const list = $("#picked");
    list.replaceChildren(...picked.map((f) => {
      const item = document.createElement("li");
      item.textContent = `${f.name} (${(f.size / 1048576).toFixed(1)} MB)`;
      return item;
    }));
    const button = $("#separate-button");
    button.disabled = picked.length === 0;
    button.textContent = picked.length > 1 ? `Separate ${picked.length} songs` : "Separate";
  }

  async function submitPicked(event) {
    event.preventDefault();
    const files = picked;
    const fields = taskFields();
    picked = [];
    pick([]);
    $("#files").value = "";
    const entries = files.map((file) => addTask({ name: file.name }));
    // One upload at a time: each song is its own task, and they queue in the order dropped.
    for (let i = 0; i < files.length; i++) {
      if (token()) await upload(entries[i], files[i], fields);
      else refuse(entries[i], "Not submitted: signed out before its upload.");
    }
  }

  function upload(entry, file, fields) {
    return new Promise((resolve) => {
      const form = new FormData();
      form.append("audio", file, file.name);
      for (const [name, value] of Object.entries(fields)) form.append(name, value);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "v1/tasks");
      xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
      xhr.responseType = "json";
      setLabel(entry, "uploading", "uploading");
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) {
          $("progress", entry.el).value = e.loaded / e.total;
          $(".step", entry.el).textContent = `uploading ${Math.floor((100 * e.loaded) / e.total)}%`;
        }
      };
      xhr.onload = () => {
        const body = xhr.response || {};
        if (xhr.status === 202 && body.task_uuid) {
          entry.uuid = body.task_uuid;
          $(".uuid", entry.el).textContent = entry.uuid;
          render(entry, { state: "queued", progress: 0 });
          poll();
        } else if (xhr.status === 401) {
          refuse(entry, "Not submitted: the API refused the token (HTTP 401).");
          signOut("The API refused the token (HTTP 401). Sign in again with a valid token.");
        } else {
          refuse(entry, `Not submitted (HTTP ${xhr.status}): ${body.error || xhr.statusText}`);
        }
        resolve();
      };
      xhr.onerror = () => {
        refuse(entry, "Not submitted: the upload did not reach the API.");
        resolve();
      };
      xhr.send(form);
    });
  }

  // ---- the task list ---------------------------------------------------------------------------

  function makeEntry({ uuid = null, name }) {
    const el = $("#task-template").content.firstElementChild.cloneNode(true);
    const entry = { uuid, name, el, final: false, stemsShown: false, listed: false };
    $(".name", el).textContent = name;
    $(".uuid", el).textContent = uuid || "";
    setLabel(entry, "waiting", "waiting to upload");
    $(".cancel", el).addEventListener("click", () => cancel(entry));
    return entry;
  }

  // A song this tab is about to upload: on top, until the API's list has it.
  function addTask({ name }) {
    const entry = makeEntry({ name });
    tasks.unshift(entry);
    $("#task-list").prepend(entry.el);
    $("#no-tasks").hidden = true;
    return entry;
  }

  function clearTasks() {
    tasks.length = 0;
    $("#task-list").replaceChildren();
    $("#no-tasks").hidden = false;
  }

  // The key's tasks as GET /v1/tasks lists them (newest first), below what this tab is still uploading
  // or has just queued: the same list in every browser signed in with the key.
  function showList(listed) {
    const ordered = listed.map((status) => {
      let entry = tasks.find((t) => t.uuid === status.task_uuid);
      if (!entry) entry = makeEntry({ uuid: status.task_uuid, name: status.filename || status.task_uuid });
      entry.listed = true;
      entry.el.dataset.listed = "true";
      render(entry, status);
      return entry;
    });
    const shown = new Set(ordered);
    const waiting = tasks.filter((t) => !shown.has(t) && !t.listed);
    tasks.splice(0, tasks.length, ...waiting, ...ordered);
    const list = $("#task-list");
    // Moved only when the order changed: a moved player would stop for a moment.
    if (tasks.some((t, i) => list.children[i] !== t.el) || list.children.length !== tasks.length) {
      list.replaceChildren(...tasks.map((t) => t.el));
    }
    $("#no-tasks").hidden = tasks.length > 0;
  }

  function setLabel(entry, state, text) {
    entry.el.dataset.state = state;
    $(".state", entry.el).textContent = text;
  }

  function refuse(entry, message) {
    entry.final = true;
    setLabel(entry, "refused", "not submitted");
    show($(".message", entry.el), message);
    $(".message", entry.el).classList.add("error");
    $(".step", entry.el).textContent = "";
    $("progress", entry.el).value = 0;
  }

  function render(entry, status) {
    const ended = FINAL.has(status.state);
    const outcome = status.outcome || (ended ? status.state : null);
    const label = outcome || status.state || "unknown";
    let text = label;
    if (!ended && status.cancel_requested_at) text = "cancelling";
    else if (status.state === "processing" && typeof status.progress === "number") {
      text = `processing ${Math.floor(status.progress * 100)}%`;
    }
    setLabel(entry, label, text);
    const bar = $("progress", entry.el);
    bar.value = typeof status.progress === "number" ? status.progress : outcome === "succeeded" ? 1 : 0;
    $(".step", entry.el).textContent = ended ? summary(status) : status.step || "";
    const message = $(".message", entry.el);
    show(message, status.error_message || "");
    message.classList.toggle("error", outcome === "failed");
    $(".cancel", entry.el).hidden = ended;
    entry.final = ended;
    if (ended && status.stems && !entry.stemsShown) {
      entry.stemsShown = true;
      showStems(entry, status.stems);
    }
  }

  // An ended task: what it ran with, and how long the separation took.
  function summary(status) {
    const parts = status.model ? [`with ${status.model}`] : [];
    const took = (Date.parse(status.finished_at) - Date.parse(status.started_at)) / 1000;
    if (Number.isFinite(took) && took >= 0) parts.push(`in ${took < 10 ? took.toFixed(1) : Math.round(took)} s`);
    return parts.join(" ");
  }

  async function poll() {
    clearTimeout(pollTimer);
    pollTimer = null;
    if (!token() || !me) return;
    const query = `limit=${LIST_LIMIT}&key=${encodeURIComponent(me.name)}`;
    try {
      const response = await api(`v1/tasks?${query}`);
      if (response.ok) {
        showList((await response.json()).tasks || []);
        show($("#tasks-error"), "");
      } else {
        show($("#tasks-error"), `The task list is unavailable (HTTP ${response.status}); retrying.`);
      }
    } catch (err) {
      if (err instanceof Unauthorized) return;
      show($("#tasks-error"), "The API did not answer; retrying.");
    }
    const busy = tasks.some((t) => !t.final);
    if (token() && !pollTimer) pollTimer = setTimeout(poll, busy ? POLL_MS : IDLE_MS);
  }

  async function cancel(entry) {
    const button = $(".cancel", entry.el);
    button.disabled = true;
    try {
      const response = await api(`v1/tasks/${encodeURIComponent(entry.uuid)}`, { method: "DELETE" });
      if (response.status === 202) setLabel(entry, entry.el.dataset.state, "cancelling");
      else if (response.status !== 409) show($(".message", entry.el), `Not cancelled: ${await errorOf(response)}`);
    } catch (err) {
      if (!(err instanceof Unauthorized)) show($(".message", entry.el), "Not cancelled: the API did not answer.");
    } finally {
      button.disabled = false;
    }
    await poll();
  }

  // ---- stems: player, waveform, download -------------------------------------------------------

  // A stem's signed link names the API's public_url; this page reaches the API at its own origin,
  // so a link to the API is taken relative to the page (the signature covers the task, stem and expiry,
  // not the host). A link elsewhere (a bucket's) is used as it is.
  function localLink(link) {
    const url = new URL(link, location.href);
    const tail = url.pathname.match(/v1\/tasks\/[^/]+\/stems\/[^/]+$/);
    return url.origin !== location.origin && tail ? new URL(tail[0] + url.search, location.href).href : url.href;
  }

  function showStems(entry, stems) {
    const list = $(".stems", entry.el);
    for (const [name, link] of Object.entries(stems)) {
      const el = $("#stem-template").content.firstElementChild.cloneNode(true);
      el.dataset.stem = name;
      $(".stem-name", el).textContent = name;
      $(".download", el).setAttribute("aria-label", `Download ${name} of ${entry.name}`);
      list.append(el);
      showStem(el, localLink(link));
    }
  }

  async function showStem(el, href) {
    const audio = $("audio", el);
    const download = $(".download", el);
    const canvas = $("canvas", el);
    let bytes;
    try {
      if (new URL(href).origin === location.origin && !new URL(href).searchParams.has("sig")) {
        // An unsigned link (api.link_secret unset) opens only with the token: fetched with it, played
        // and saved from memory.
        const response = await api(href, { cache: "no-store" });
        if (!response.ok) throw new Error(await errorOf(response));
        const blob = await response.blob();
        audio.src = download.href = URL.createObjectURL(blob);
        download.download = filenameOf(response);
        if (blob.size > WAVE_MAX_BYTES) throw new Error("too long to draw");
        bytes = blob.arrayBuffer();
      } else {
        audio.src = download.href = href;
        bytes = fetchForWaveform(href);
      }
      await drawWaveform(canvas, audio, bytes);
    } catch (err) {
      if (err instanceof Unauthorized) return;
      canvas.dataset.wave = "unavailable";
      canvas.title = `No waveform: ${err.message}`;
    }
  }

  function filenameOf(response) {
    const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(response.headers.get("Content-Disposition") || "");
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function fetchForWaveform(href) {
    const response = await fetch(href, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    if (Number(response.headers.get("Content-Length")) > WAVE_MAX_BYTES) throw new Error("too long to draw");
    return response.arrayBuffer();
  }

  async function drawWaveform(canvas, audio, bytes) {
    const decoded = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(await bytes);
    const peaks = peaksOf(decoded);
    const draw = () => paint(canvas, peaks, audio.duration ? audio.currentTime / audio.duration : 0);
    draw();
    canvas.dataset.wave = "drawn";
    audio.addEventListener("timeupdate", draw);
    new ResizeObserver(draw).observe(canvas);
    canvas.addEventListener("click", (e) => {
      if (audio.duration) audio.currentTime = (e.offsetX / canvas.clientWidth) * audio.duration;
    });
  }

  // The lowest and highest sample of every channel in each of WAVE_BUCKETS stretches.
  function peaksOf(buffer) {
    const buckets = Math.max(1, Math.min(WAVE_BUCKETS, buffer.length));
    const low = new Float32Array(buckets).fill(1);
    const high = new Float32Array(buckets).fill(-1);
    for (let c = 0; c < buffer.numberOfChannels; c++) {
      const samples = buffer.getChannelData(c);
      for (let b = 0; b < buckets; b++) {
        const end = Math.floor(((b + 1) * samples.length) / buckets);
        for (let i = Math.floor((b * samples.length) / buckets); i < end; i++) {
          const v = samples[i];
          if (v < low[b]) low[b] = v;
          if (v > high[b]) high[b] = v;
        }
      }
    }
    return { low, high };
  }

  function paint(canvas, { low, high }, played) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const g = canvas.getContext("2d");
    const style = getComputedStyle(canvas);
    g.clearRect(0, 0, width, height);
    const middle = height / 2;
    for (let x = 0; x < width; x++) {
      // The pixel column's stretch of buckets: its min and max.
      const from = Math.floor((x * low.length) / width);
      const to = Math.max(from + 1, Math.floor(((x + 1) * low.length) / width));
      let lo = 1;
      let hi = -1;
      for (let b = from; b < to; b++) {
        if (low[b] < lo) lo = low[b];
        if (high[b] > hi) hi = high[b];
      }
      if (hi < lo) continue;
      g.fillStyle = x / width < played ? style.getPropertyValue("--played").trim() : style.color;
      const top = middle - Math.min(1, hi) * middle;
      const bottom = middle - Math.max(-1, lo) * middle;
      g.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  }

  // ---- the operator's view -------------------------------------------------------------------

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function fill(table, rows, empty) {
    const body = $("tbody", table);
    const headings = [...$("thead tr", table).cells].map((th) => th.textContent);
    body.replaceChildren();
    if (!rows.length) {
      const td = cell(body.insertRow(), empty, "hint");
      td.colSpan = headings.length;
    }
    for (const fillRow of rows) {
      const row = body.insertRow();
      fillRow(row);
      // A phone shows each row as a card, each value under its column's name.
      [...row.cells].forEach((td, i) => (td.dataset.label = headings[i] || ""));
    }
  }

  async function load(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(`${path}: ${await errorOf(response)}`);
    return response.json();
  }

  async function refreshOperator() {
    clearTimeout(operatorTimer);
    operatorTimer = null;
    const problems = [];
    const settled = await Promise.allSettled([load("v1/workers"), load("v1/queues"), load("v1/tasks?limit=20"),
      load("v1/dead-letters?limit=20")]);
    if (settled.some((s) => s.status === "rejected" && s.reason instanceof Unauthorized)) return;
    const [workers, queues, everyTask, letters] = settled.map((s) => {
      if (s.status === "fulfilled") return s.value;
      problems.push(s.reason.message);
      return null;
    });
    if (workers) showWorkers(workers.workers || []);
    if (queues) showQueues(queues);
    if (everyTask) showEveryTask(everyTask.tasks || []);
    if (letters) showDeadLetters(letters);
    show($("#operator-error"), problems.join(" · "));
    $("#operator-updated").textContent = `Last update ${new Date().toLocaleTimeString()}.`;
    if (!$("#operator").hidden && token() && !operatorTimer) operatorTimer = setTimeout(refreshOperator, OPERATOR_MS);
  }

  function showWorkers(workers) {
    fill($("#workers"), workers.map((w) => (row) => {
      row.dataset.worker = w.worker || "";
      const name = cell(row, w.worker || "?", "wrap");
      if (w.host) name.title = `${w.host}, pid ${w.pid}, uvrd ${w.version || "?"}`;
      const state = w.alive ? w.state || "?" : `lost ${Math.round(w.seconds_since || 0)} s ago`;
      cell(row, state, w.alive ? `state-${w.state}` : "state-lost");
      cell(row, [w.device, w.execution_provider].filter(Boolean).join(" / "));
      cell(row, (w.models || []).map((m) => m.model + (m.warm ? "" : " (cold)")).join(", "), "wrap");
      const task = w.task || {};
      const progress = typeof task.progress === "number" ? ` ${Math.floor(task.progress * 100)}%` : "";
      cell(row, task.task_uuid ? `${task.task_uuid}${progress} ${task.step || ""}`.trim() : "—", "wrap");
    }), "No worker has reported.");
  }

  function showQueues(queues) {
    const queue = (name, topic, waiting) => (row) => {
      const td = cell(row, name, "queue");
      if (topic) {
        const small = document.createElement("span");
        small.className = "topic";
        small.textContent = topic;
        td.append(small);
      }
      cell(row, waiting, "number");
    };
    const rows = (queues.tasks || []).map((q) => queue(`priority ${q.priority}`, q.topic, q.backlog));
    if (queues.results) rows.push(queue("results, for their webhook", queues.results.topic, queues.results.backlog));
    rows.push(queue("dead letters", "", queues.dead_letters ?? 0));
    fill($("#queues"), rows, "No queues.");
  }

  // The newest tasks of every key: who submitted what, and where it stands.
  function showEveryTask(list) {
    fill($("#all-tasks"), list.map((t) => (row) => {
      row.dataset.task = t.task_uuid;
      cell(row, t.submitted_at ? new Date(t.submitted_at).toLocaleString() : "?");
      cell(row, t.filename ? `${t.filename} · ${t.task_uuid}` : t.task_uuid, "wrap");
      cell(row, t.key || "(no key)", "key");
      cell(row, t.outcome || t.state || "?", `state-${t.state}`);
    }), "No tasks.");
  }

  function showDeadLetters(body) {
    $("#dead-count").textContent = `(${body.count ?? 0})`;
    fill($("#dead-letters"), (body.dead_letters || []).map((d) => (row) => {
      cell(row, d.timestamp_ms ? new Date(d.timestamp_ms).toLocaleString() : "?");
      cell(row, d.task_uuid || "?", "wrap");
      cell(row, d.stage || "?");
      cell(row, d.error || "no error recorded", "wrap");
      const letter = `${d.partition}/${d.offset}`;
      const replay = document.createElement("button");
      replay.type = "button";
      replay.className = "quiet replay";
      replay.title = "Send it again, once: a failed task back to its queue, an undelivered result to its webhook";
      const done = replayed.get(letter);
      replay.textContent = done || "Replay";
      replay.disabled = Boolean(done);
      replay.addEventListener("click", () => replayLetter(letter, replay));
      row.insertCell().append(replay);
    }), "No dead letters.");
  }

  async function replayLetter(letter, button) {
    button.disabled = true;
    button.textContent = "Replaying…";
    try {
      const response = await api(`/v1/dead-letters/${letter}/replay`, { method: "POST" });
      if (response.status === 202) {
        const body = await response.json();
        replayed.set(letter, `Replayed (${body.replay})`);
      } else if (response.status === 409) {
        replayed.set(letter, "Replayed already");
      } else {
        show($("#operator-error"), `Replay of ${letter}: ${await errorOf(response)}`);
        button.disabled = false;
        button.textContent = "Replay";
        return;
      }
      button.textContent = replayed.get(letter);
    } catch (e) {
      if (!(e instanceof Unauthorized)) {
        show($("#operator-error"), `Replay of ${letter}: ${e.message}`);
        button.disabled = false;
        button.textContent = "Replay";
      }
    }
  }

  // ---- wiring ------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", signIn);
    $("#sign-out").addEventListener("click", () => signOut(""));
    $("#tab-separate").addEventListener("click", () => selectTab("separate"));
    $("#tab-operator").addEventListener("click", () => selectTab("operator"));
    $("#submit-form").addEventListener("submit", submitPicked);
    $("#files").addEventListener("change", (e) => pick(e.target.files));
    const drop = $("#drop");
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (e) => {
        e.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) pick(e.dataTransfer.files);
    });
    start();
  });
})();
