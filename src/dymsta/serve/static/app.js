// dymsta serve: pick or drop a video, upload it to /v1/predict, show what comes back.
// Plain JavaScript, no dependencies. Server text is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { maxBytes: null, tokenRequired: false };

function token() {
  return $("token").value.trim();
}

function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

function setState(name) {
  document.body.dataset.state = name; // idle | uploading | working | done | error (tests wait on it)
  document.body.classList.toggle("busy", name === "uploading" || name === "working");
}

function formatBytes(n) {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(n >= 10 * 2 ** 20 ? 0 : 1)} MB` : `${Math.ceil(n / 1024)} kB`;
}

function showError(message) {
  const box = $("error");
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = "Refused:";
  box.append(strong, document.createTextNode(message));
  box.hidden = false;
  $("progress").hidden = true;
  setState("error");
}

function showProgress(label, fraction) {
  const box = $("progress");
  box.hidden = false;
  if (fraction !== 1) box.classList.remove("finished");
  $("progress-label").textContent = label;
  box.classList.toggle("working", fraction === null);
  $("progress-value").textContent = fraction === null ? "" : `${Math.round(fraction * 100)}%`;
  $("progress-bar").style.width = fraction === null ? "" : `${fraction * 100}%`;
}

// ------------------------------------------------------------------------------------------- the model

async function loadHealth() {
  const res = await fetch("/healthz");
  const health = await res.json();
  state.maxBytes = health.max_upload_bytes;
  state.tokenRequired = health.token_required;
  $("token-box").hidden = !health.token_required;
  $("drop-hint").textContent = `MP4, AVI, MKV, MOV, WebM · up to ${formatBytes(health.max_upload_bytes)}`;
}

async function loadModel() {
  const res = await fetch("/v1/model", { headers: authHeaders() });
  if (res.status === 401) {
    $("model-line").textContent = "enter the access token to use this model";
    return;
  }
  const m = await res.json();
  const parts = [m.name];
  if (m.arch) parts.push(m.backbone ? `${m.arch} on ${m.backbone}` : m.arch);
  parts.push(`${m.num_classes} classes`, `${m.num_frames} frames`);
  if (m.calibration_temperature !== 1) parts.push(`calibrated (T = ${m.calibration_temperature.toPrecision(3)})`);
  if (m.test_metrics && typeof m.test_metrics.accuracy === "number") {
    parts.push(`test top-1 ${(m.test_metrics.accuracy * 100).toFixed(1)}%`);
  }
  $("model-line").textContent = parts.join(" · ");
  $("opt-attention").disabled = !m.attention_maps;
  if (!m.attention_maps) $("opt-attention").checked = false;
}

// ---------------------------------------------------------------------------------------- prediction

function predictUrl() {
  const q = new URLSearchParams({
    top_k: "5",
    explain: String($("opt-attention").checked),
    timeline: String($("opt-timeline").checked),
    window: $("opt-window").value || "2",
    stride: $("opt-stride").value || "1",
  });
  return `/v1/predict?${q}`;
}

function upload(file) {
  $("error").hidden = true;
  if (state.maxBytes !== null && file.size > state.maxBytes) {
    showError(`${file.name} is ${formatBytes(file.size)}; this server takes up to ${formatBytes(state.maxBytes)}.`);
    return;
  }
  const started = performance.now();
  const xhr = new XMLHttpRequest();
  xhr.open("POST", predictUrl());
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) showProgress(`Uploading ${file.name}`, e.loaded / e.total);
  };
  xhr.upload.onload = () => {
    setState("working");
    showProgress("Running the model…", null);
  };
  xhr.onload = () => {
    const body = xhr.response || {};
    if (xhr.status === 200) {
      render(body, file, (performance.now() - started) / 1000);
    } else {
      if (xhr.status === 401) $("token-box").hidden = false;
      showError(body.error || `the server answered ${xhr.status}`);
    }
  };
  xhr.onerror = () => {
    showError(
      "the connection failed before an answer came (the server may have closed it on an upload over its size limit).",
    );
  };
  const form = new FormData();
  form.append("file", file, file.name);
  setState("uploading");
  showProgress(`Uploading ${file.name}`, 0);
  xhr.send(form);
}

function render(r, file, seconds) {
  $("progress").classList.add("finished");
  showProgress(`Done: ${r.video || file.name}`, 1);
  $("result").hidden = false;
  $("top1").textContent = r.label;
  $("result-file").textContent = r.video || file.name;
  $("result-stats").textContent =
    `${r.frames_decoded} of ${r.frames_expected} frames decoded · answered in ${seconds.toFixed(1)} s`;

  const bars = $("bars");
  bars.replaceChildren();
  for (const p of r.predictions) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    label.title = p.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(p.score * 100).toFixed(2)}%`;
    track.append(fill);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${(p.score * 100).toFixed(p.score >= 0.995 || p.score < 0.0005 ? 0 : 1)}%`;
    li.append(label, track, score);
    bars.append(li);
  }

  const warnings = $("warnings");
  warnings.replaceChildren(
    ...(r.warnings || []).map((w) => {
      const li = document.createElement("li");
      li.textContent = w;
      return li;
    }),
  );
  warnings.hidden = !(r.warnings && r.warnings.length);

  const attention = r.attention && r.attention.image_png;
  $("attention").hidden = !attention;
  if (attention) $("attention-img").src = `data:image/png;base64,${attention}`;

  const t = r.timeline;
  const long = t && t.windows.length > 1 && t.plot_png;
  $("timeline").hidden = !long;
  if (long) {
    $("timeline-img").src = `data:image/png;base64,${t.plot_png}`;
    $("timeline-caption").textContent =
      `${t.duration_s.toFixed(1)} s of video in ${t.windows.length} windows of ${t.window_s} s every ` +
      `${t.stride_s} s; windows with the same label in a row are merged into segments.`;
    const body = $("segments").tBodies[0];
    body.replaceChildren(
      ...t.segments.map((s) => {
        const tr = document.createElement("tr");
        for (const text of [`${s.segment[0].toFixed(1)} s`, `${s.segment[1].toFixed(1)} s`, s.label,
          `${(s.score * 100).toFixed(1)}%`]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        return tr;
      }),
    );
  }
  setState("done");
}

// ----------------------------------------------------------------------------------------- live camera

const live = { ws: null, recorder: null, media: null, windows: 0 };

function setLive(name) {
  document.body.dataset.live = name; // off | starting | running | ended (tests wait on it)
}

async function startCamera() {
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    showError(` the camera is not available (${e.name || e})`);
    return;
  }
  const params = new URLSearchParams({ window: $("opt-window").value || "2", stride: $("opt-stride").value || "1" });
  if (token()) params.set("token", token());
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream/camera?${params}`);
  Object.assign(live, { ws, media, windows: 0 });
  $("camera-video").srcObject = media;
  $("live-body").hidden = false;
  $("camera-start").hidden = true;
  $("camera-stop").hidden = false;
  $("live-timeline").replaceChildren();
  $("live-label").textContent = "waiting for the first window…";
  $("live-label").dataset.windows = "0";
  $("live-stats").textContent = "";
  setLive("starting");
  ws.onopen = () => {
    const type = ["video/webm;codecs=vp8", "video/webm"].find((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(media, type ? { mimeType: type } : undefined);
    recorder.ondataavailable = (ev) => {
      if (ev.data.size && ws.readyState === WebSocket.OPEN) ws.send(ev.data); // Blobs are sent in order
    };
    recorder.start(250); // a piece of the WebM every 250 ms
    live.recorder = recorder;
  };
  ws.onmessage = (ev) => showLive(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    if (ev.reason) showError(` ${ev.reason}`);
    releaseCamera();
    setLive("ended");
  };
}

function showLive(item) {
  if (item.error) {
    showError(` ${item.error}`);
    return;
  }
  if (item.summary) {
    const s = item.summary;
    const p50 = s.latency_p50_s === null ? "–" : `${s.latency_p50_s.toFixed(2)} s`;
    $("live-stats").textContent = `${s.windows} windows · ${s.windows_dropped} dropped · latency p50 ${p50}`;
    return;
  }
  live.windows += 1;
  const top = item.predictions[0];
  $("live-label").textContent = item.label;
  $("live-label").dataset.windows = String(live.windows);
  $("live-stats").textContent = `${item.start.toFixed(1)}–${item.end.toFixed(1)} s · ${(top.score * 100).toFixed(0)}%`
    + ` · answered ${item.latency_s.toFixed(2)} s after its last frame`;
  const li = document.createElement("li");
  li.textContent = `${item.start.toFixed(1)}–${item.end.toFixed(1)} s  ${item.label}`;
  const list = $("live-timeline");
  list.prepend(li);
  while (list.children.length > 30) list.lastChild.remove();
  setLive("running");
}

function releaseCamera() {
  if (live.recorder && live.recorder.state !== "inactive") live.recorder.stop();
  if (live.media) live.media.getTracks().forEach((t) => t.stop());
  live.recorder = null;
  live.media = null;
  $("camera-start").hidden = false;
  $("camera-stop").hidden = true;
}

function stopCamera() {
  releaseCamera();
  if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send("end"); // the server sends the summary
}

// -------------------------------------------------------------------------------------------- wiring

function wire() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => {
    if (input.files.length) upload(input.files[0]);
    input.value = ""; // the same file may be chosen again
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, () => drop.classList.add("over"));
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  $("camera-start").addEventListener("click", () => startCamera());
  $("camera-stop").addEventListener("click", () => stopCamera());
  if (!navigator.mediaDevices || !window.MediaRecorder) $("camera-start").disabled = true;
  const saved = sessionStorage.getItem("dymsta-token");
  if (saved) $("token").value = saved;
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("dymsta-token", token());
    loadModel().catch(() => {});
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  setState("idle");
  setLive("off");
  wire();
  try {
    await loadHealth();
    await loadModel();
  } catch (e) {
    $("model-line").textContent = "the server does not answer";
  }
});
