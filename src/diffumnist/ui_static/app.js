// DiffuMNIST demo page: plain JavaScript with no libraries, talking only to the server that
// sent it. The server validates every setting; this page only refuses empty or non-numeric
// fields (so no request carries a blank) and shows what the server answers.
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let info = null;

/** POST JSON; resolve with the reply, or throw an Error with the server's message and status. */
async function postJSON(url, body) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`the server cannot be reached (${err.message})`);
  }
  const reply = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(reply.error || `the server answered ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return reply;
}

/** "a whole number from 0 to 9" and the like, from a number input's attributes. */
function rangeOf(input) {
  const kind = input.step === "1" ? "a whole number" : "a number";
  if (input.min !== "" && input.max !== "") return `${kind} from ${input.min} to ${input.max}`;
  return input.min !== "" ? `${kind} of at least ${input.min}` : kind;
}

/** A number input's value; an empty one is null when `optional`, else a clear Error. */
function readNumber(input, label, optional = false) {
  const text = input.value.trim();
  if (input.validity.badInput) throw new Error(`${label} is not a number: enter ${rangeOf(input)}.`);
  if (text === "" && optional) return null;
  if (text === "") throw new Error(`${label} is empty: enter ${rangeOf(input)}.`);
  return Number(text);
}

function showError(box, message) {
  box.textContent = message || "";
  box.hidden = !message;
}

/** Show a small grid image enlarged `zoom` times with crisp pixels (CSS caps the width). */
function showImage(img, src, zoom) {
  img.onload = () => {
    img.style.width = `${img.naturalWidth * zoom}px`;
  };
  img.src = src;
}

function setupTabs() {
  const tabs = document.querySelectorAll('[role="tab"]');
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      for (const other of tabs) {
        other.setAttribute("aria-selected", String(other === tab));
        $(other.dataset.panel).hidden = other !== tab;
      }
      if (tab.id === "tab-denoise") requestDenoise();
    });
  }
}

// ------------------------------------------------------------------ generate

let running = null; // the job being sampled: {id, source, timeline}
let shownTimeline = []; // frames {step, t, x_t, x0} of the result on screen
let shownResult = null; // {done, stem} of the result on screen
let clickedAt = 0;

const SAMPLING_INPUTS = [
  "sampler", "steps", "eta", "spacing", "start", "clip-x0", "guide", "guidance", "gi-low",
  "gi-high", "reject-below",
];
let activePreset = null; // the preset whose settings the form holds, or null once edited

function setupGenerateForm() {
  for (let digit = 0; digit <= 9; digit++) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = `digit-${digit}`;
    button.textContent = digit;
    button.setAttribute("aria-pressed", String(digit === 5));
    button.addEventListener("click", () => {
      button.setAttribute("aria-pressed", String(button.getAttribute("aria-pressed") !== "true"));
    });
    $("digits").append(button);
  }
  $("digits-all").addEventListener("click", () => pressDigits(true));
  $("digits-none").addEventListener("click", () => pressDigits(false));
  $("count").value = 1;
  $("count").max = info.max_digits;
  $("count-help").textContent = `Range: ${rangeOf($("count"))}.`;
  for (const sampler of info.samplers) $("sampler").add(new Option(sampler, sampler));
  for (const spacing of info.spacings) $("spacing").add(new Option(spacing, spacing));
  for (const start of info.starts) $("start").add(new Option(start, start));
  $("guide").add(new Option("none", ""));
  $("guide").add(new Option("weak twin", "weak"));
  $("guide").addEventListener("change", enableGuidance);
  $("steps").max = info.num_timesteps;
  $("gi-low").max = info.num_timesteps - 1;
  $("gi-high").max = info.num_timesteps;
  $("seed").max = info.seed_max;
  $("seed").value = 0;
  $("seed").addEventListener("input", () => {
    $("seed-random").checked = false; // a seed typed in is the one to use
  });
  for (const scale of info.download_scales) {
    $("download-scale").add(new Option(`${scale}x`, scale, false, scale === "4"));
  }
  setupPresets();
  onModelChange(); // the browser may have restored the time model's radio on reload
  $("sampler").addEventListener("change", () => {
    onSamplerChange(info.default_steps[$("sampler").value]);
  });
  for (const id of SAMPLING_INPUTS) $(id).addEventListener("input", () => markPreset(null));
  for (const radio of document.querySelectorAll('input[name="model"]')) {
    radio.addEventListener("change", onModelChange);
  }
  $("generate").addEventListener("click", generate);
  $("panel-generate").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("input")) generate();
  });
  $("stop").addEventListener("click", stop);
  $("scrubber").addEventListener("input", () => showFrame(shownTimeline[$("scrubber").value]));
  $("download-scale").addEventListener("change", updateDownloads);
}

function pressDigits(pressed) {
  for (const button of $("digits").children) button.setAttribute("aria-pressed", String(pressed));
}

const currentModel = () => document.querySelector('input[name="model"]:checked').value;
/** The chosen model's kind (class or time), which sets its presets, form and guidance. */
const currentKind = () => info.models[currentModel()];
const modelPresets = () => info.presets[currentKind()];

/** Preset buttons from the server's SamplingConfig presets, which differ per model (the
 *  time model has no classes to guide); the page starts from its own. */
function setupPresets() {
  const all = Object.keys(modelPresets());
  for (const name of [info.preset, ...all.filter((n) => n !== info.preset)]) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = `preset-${name}`;
    button.textContent = name;
    button.addEventListener("click", () => applyPreset(name));
    $("presets").append(button);
  }
  applyPreset(info.preset);
}

function applyPreset(name) {
  const preset = modelPresets()[name];
  $("sampler").value = preset.sampler;
  onSamplerChange(preset.steps ?? info.default_steps[preset.sampler]);
  $("eta").value = preset.eta;
  $("spacing").value = preset.spacing;
  $("start").value = preset.start;
  $("clip-x0").checked = preset.clip_x0;
  $("reject-below").value = preset.reject_below ?? "";
  $("guide").value = preset.guide ?? "";
  enableGuidance();
  $("guidance").value = preset.guidance_scale;
  const [low, high] = preset.guidance_interval ?? ["", ""];
  [$("gi-low").value, $("gi-high").value] = [low, high];
  markPreset(name);
}

function markPreset(name) {
  activePreset = name;
  const guided = currentKind() === "class";
  for (const button of $("presets").children) {
    const preset = button.id.slice("preset-".length);
    button.setAttribute("aria-pressed", String(preset === name));
    button.title = describeSampling(modelPresets()[preset], guided);
  }
  $("preset-help").textContent = name
    ? `${name}: ${describeSampling(modelPresets()[name], guided)}`
    : "custom settings (a preset button restores its settings)";
}

/** The settings in words; γ is shown when `guided` (the class model) or a guide is set. */
function describeSampling(s, guided = true) {
  const steps = s.steps ?? info.default_steps[s.sampler];
  const interval = s.guidance_interval ? ` for ${s.guidance_interval[0]} < t ≤ ${s.guidance_interval[1]}` : "";
  const parts = [`${s.sampler}, ${steps} steps`];
  if (s.eta) parts.push(`η = ${s.eta}`);
  if (s.spacing !== "trailing") parts.push(`${s.spacing} spacing`);
  const guide = s.guide ? ` away from the ${s.guide} twin` : "";
  if (guided || s.guide) parts.push(`γ = ${s.guidance_scale}${interval}${guide}`);
  if (s.start === "mean") parts.push("from the mean digit");
  if (s.clip_x0) parts.push("x̂0 clipped");
  if (s.reject_below) parts.push(`redrawn below p = ${s.reject_below}`);
  return parts.join(", ");
}

/** A sampler with a fixed number of steps (ddpm: all T) shows it in a field that cannot be
 *  edited; η is enabled only for the samplers that take it. */
function onSamplerChange(steps) {
  const sampler = $("sampler").value;
  const fixed = info.fixed_steps.includes(sampler);
  $("steps").disabled = fixed;
  $("steps").value = fixed ? info.num_timesteps : steps;
  $("eta").disabled = !info.eta_samplers.includes(sampler);
  if ($("eta").disabled) $("eta").value = 0;
  $("spacing").disabled = !info.spacing_samplers.includes(sampler);
  if ($("spacing").disabled) $("spacing").value = "trailing";
  writeHelp();
}

/** Each control's help line: SamplingConfig's help text, then its range on this page. */
function writeHelp() {
  const T = info.num_timesteps;
  const ranges = {
    sampler: info.samplers.join(", "),
    steps: $("steps").disabled ? `always ${T} for ${$("sampler").value}` : `1–${T}`,
    eta: $("eta").disabled ? `${info.eta_samplers.join(" and ")} only` : "0–1",
    spacing: $("spacing").disabled
      ? `trailing only for ${$("sampler").value}`
      : info.spacings.join(", "),
    start: info.starts.join(", "),
    clip_x0: "on or off",
    guide: `none or weak; weak for ${info.weak_guides.join(" and ")}`,
    guidance_scale: "0 or more; the recipe uses 5",
    guidance_interval: `0–${T}; both empty: every step`,
    reject_below: "above 0 and below 1; empty: keep every draw. The live view shows the first draw",
    seed: `0–${info.seed_max}`,
  };
  for (const [name, range] of Object.entries(ranges)) {
    $(`help-${name}`).textContent = `${info.help[name]}. Range: ${range}.`;
  }
}

/** Switching model keeps the chosen preset, with the new model's settings for it. */
function onModelChange() {
  const timeModel = currentKind() === "time";
  $("digits-field").hidden = timeModel;
  $("count-field").hidden = !timeModel;
  if (activePreset) applyPreset(activePreset);
  else markPreset(null);
  enableGuidance();
}

/** γ and its interval act when there is something to guide away from: the class model's
 *  unconditional branch, or a weak twin (the only guidance the time model has). */
function enableGuidance() {
  const kind = currentKind();
  $("guide").disabled = !info.weak_guides.includes(kind);
  if ($("guide").disabled) $("guide").value = "";
  const guided = kind === "class" || Boolean($("guide").value);
  for (const id of ["guidance", "gi-low", "gi-high"]) $(id).disabled = !guided;
}

/** The request for the form as it stands; throws an Error naming a blank or bad field.
 *  With "new seed each time" a fresh seed goes into the seed field first. */
function readGenerateForm() {
  const model = currentModel();
  const body = {
    model,
    sampler: $("sampler").value,
    steps: $("steps").disabled ? null : readNumber($("steps"), "Steps"),
    eta: $("eta").disabled ? 0 : readNumber($("eta"), "η"),
    spacing: $("spacing").value,
    start: $("start").value,
    clip_x0: $("clip-x0").checked,
    guide: $("guide").value || null,
    reject_below: readNumber($("reject-below"), "Redraw below", true),
  };
  if (currentKind() === "time") {
    body.count = readNumber($("count"), "How many images");
  } else {
    const pressed = $("digits").querySelectorAll('button[aria-pressed="true"]');
    body.digits = Array.from(pressed, (button) => Number(button.textContent));
  }
  if (!$("guidance").disabled) {
    body.guidance_scale = readNumber($("guidance"), "Guidance γ");
    const low = readNumber($("gi-low"), "The guidance interval's lower end", true);
    const high = readNumber($("gi-high"), "The guidance interval's upper end", true);
    if ((low === null) !== (high === null)) {
      throw new Error("Fill both ends of the guidance interval, or neither (every step).");
    }
    body.guidance_interval = low === null ? null : [low, high];
  }
  if ($("seed-random").checked) {
    $("seed").value = crypto.getRandomValues(new Uint32Array(1))[0] % (info.seed_max + 1);
  }
  return { ...body, seed: readNumber($("seed"), "Seed") };
}

async function generate() {
  if (running) return;
  let body;
  try {
    body = readGenerateForm();
  } catch (err) {
    showError($("gen-error"), err.message);
    return;
  }
  showError($("gen-error"), "");
  running = { id: null, source: null, timeline: [], numSteps: body.steps ?? info.num_timesteps };
  setRunning(true);
  setStatus("sending…");
  clickedAt = performance.now();
  try {
    running.id = (await postJSON("/api/generate", body)).job;
    $("stop").hidden = false;
    follow(running);
  } catch (err) {
    finish("failed", err.message);
  }
}

/** Stop the running job; it answers with a `cancelled` event between two steps. */
async function stop() {
  if (!running?.id) return;
  $("stop").disabled = true;
  setStatus("stopping…");
  try {
    await postJSON(`/api/jobs/${running.id}/cancel`);
  } catch (err) {
    showError($("gen-error"), err.message);
  }
}

/** Read the job's server-sent events: queued, started, frame..., then its end. */
function follow(run) {
  const source = new EventSource(`/api/jobs/${run.id}/events`);
  run.source = source;
  const on = (name, handler) =>
    source.addEventListener(name, (event) => {
      if (running === run) handler(JSON.parse(event.data));
    });
  on("queued", (e) =>
    setStatus(e.ahead ? `waiting in line: ${e.ahead} ahead of you…` : "starting…"));
  on("started", () => setStatus("sampling…"));
  on("frame", (frame) => {
    run.timeline.push(frame);
    showTimeline(run.timeline);
    setStatus(`step ${frame.step} of ${run.numSteps}, t = ${frame.t}`);
  });
  on("done", (done) => finish("done", done));
  on("failed", (e) => finish("failed", e.message));
  on("cancelled", () => finish("cancelled"));
  source.onerror = () => {
    if (running === run) finish("failed", "lost the connection to the server");
  };
}

/** End the run: a result replaces the one on screen; otherwise that one stays, with its frames. */
function finish(outcome, detail) {
  const run = running;
  running = null;
  run?.source?.close();
  if (outcome === "done") {
    shownTimeline = run.timeline;
    showResult(detail);
  } else {
    showError($("gen-error"), outcome === "failed" ? detail : "");
    setStatus(outcome === "cancelled" ? "stopped; the last result stays on screen" : "");
  }
  showTimeline(shownTimeline);
  setRunning(false);
}

function setRunning(on) {
  $("generate").disabled = on;
  $("stop").hidden = true;
  $("stop").disabled = false;
  $("scrubber").disabled = on || shownTimeline.length < 2;
}

/** Show `timeline` at its last frame, the slider at that frame (nothing when it is empty). */
function showTimeline(timeline) {
  $("live").hidden = timeline.length === 0;
  $("empty-hint").hidden = timeline.length > 0 || !$("result").hidden;
  if (timeline.length === 0) return;
  const scrubber = $("scrubber");
  scrubber.max = timeline.length - 1;
  scrubber.value = timeline.length - 1;
  showFrame(timeline[timeline.length - 1]);
}

function showFrame(frame) {
  showImage($("view-xt"), frame.x_t, 8);
  showImage($("view-x0"), frame.x0, 8);
  $("scrub-t").textContent = `t = ${frame.t}`;
  $("scrub-step").textContent = `step ${frame.step}`;
}

function setStatus(text) {
  $("gen-status").textContent = text;
}

function showResult(done) {
  const final = $("final");
  final.onload = () => {
    const seconds = (performance.now() - clickedAt) / 1000;
    final.style.width = `${final.naturalWidth * 10}px`;
    final.dataset.seconds = seconds.toFixed(2);
    final.dataset.version = Number(final.dataset.version || 0) + 1;
    setStatus(`done in ${seconds.toFixed(1)} s (sampling ${done.seconds.toFixed(1)} s)`);
  };
  final.src = done.final;
  $("result-caption").textContent = describeResult(done.settings);
  shownResult = { done, stem: fileStem(done.settings) };
  updateDownloads();
  $("result").hidden = false;
  $("empty-hint").hidden = true;
}

function describeResult(s) {
  const classes = info.models[s.model] === "class";
  const what = classes
    ? `digit${s.digits.length > 1 ? "s" : ""} ${s.digits.join(" ")}`
    : `${s.count} image${s.count > 1 ? "s" : ""} from the ${s.model} model`;
  return `${what}, ${describeSampling(s, classes)}, seed ${s.seed}`;
}

/** The settings as a file name: class_d5_g5_gi30-180_dpmpp20_seed42 and the like. */
function fileStem(s) {
  const classes = info.models[s.model] === "class";
  let what = classes ? `${s.model}_d${s.digits.join("")}` : `${s.model}_n${s.count}`;
  if (classes || s.guide) {
    what += `_g${s.guidance_scale}${s.guide ? `_${s.guide}` : ""}`;
    if (s.guidance_interval) what += `_gi${s.guidance_interval.join("-")}`;
  }
  const start = `${s.start === "mean" ? "_mean" : ""}${s.clip_x0 ? "_clip" : ""}${
    s.reject_below ? `_redraw${s.reject_below}` : ""}`;
  const noise = `${s.eta ? `_eta${s.eta}` : ""}${s.spacing === "trailing" ? "" : `_${s.spacing}`}`;
  return `${what}_${s.sampler}${s.steps}${noise}${start}_seed${s.seed}`;
}

function updateDownloads() {
  if (!shownResult) return;
  const scale = $("download-scale").value;
  const { done, stem } = shownResult;
  Object.assign($("download-png"), { href: `${done.grid}?scale=${scale}`, download: `${stem}_${scale}x.png` });
  Object.assign($("download-gif"), { href: `${done.gif}?scale=${scale}`, download: `${stem}_${scale}x.gif` });
}

// ------------------------------------------------------------------ denoiser

let denoiseBusy = false;
let denoiseAgain = false;
let noiseSeed = 0;
let padHasInk = false;
const DENOISE_RETRIES = 60; // a full queue is retried once a second, this many times

function setupDenoiser() {
  $("trained-sigma").textContent = info.trained_sigma;
  $("sigma").max = info.max_sigma;
  $("sigma").value = info.trained_sigma;
  $("sigma-help").textContent = `Range: 0 to ${info.max_sigma}; New noise draws another ε.`;
  $("test-index").max = Math.max(info.test_digits - 1, 0);
  $("test-help").textContent = `Range: ${rangeOf($("test-index"))}.`;
  if (info.test_digits === 0) {
    const note = $("test-note");
    note.textContent = info.test_note;
    note.hidden = false;
    document.querySelector('input[name="source"][value="test"]').disabled = true;
    document.querySelector('input[name="source"][value="canvas"]').checked = true;
  }
  onSourceChange();
  for (const radio of document.querySelectorAll('input[name="source"]')) {
    radio.addEventListener("change", () => {
      onSourceChange();
      requestDenoise();
    });
  }
  showSigma();
  $("sigma").addEventListener("input", () => {
    showSigma();
    requestDenoise();
  });
  $("test-index").addEventListener("change", requestDenoise);
  $("test-random").addEventListener("click", () => {
    $("test-index").value = Math.floor(Math.random() * info.test_digits);
    requestDenoise();
  });
  $("new-noise").addEventListener("click", () => {
    noiseSeed += 1;
    requestDenoise();
  });
  setupPad();
}

function drawing() {
  return document.querySelector('input[name="source"]:checked').value === "canvas";
}

function onSourceChange() {
  $("test-source").hidden = drawing();
  $("canvas-source").hidden = !drawing();
}

function showSigma() {
  $("sigma-out").textContent = Number($("sigma").value).toFixed(2);
}

/** The request for the denoiser, or null for an empty drawing pad; throws on a bad index. */
function readDenoiseForm() {
  const common = { sigma: Number($("sigma").value), seed: noiseSeed };
  if (!drawing()) return { ...common, source: "test", index: readNumber($("test-index"), "Index") };
  return padHasInk ? { ...common, source: "canvas", pixels: padPixels() } : null;
}

/** One request at a time: a slider dragged meanwhile sends its latest value afterwards. */
async function requestDenoise() {
  if (denoiseBusy) {
    denoiseAgain = true;
    return;
  }
  denoiseBusy = true;
  $("dn-status").textContent = "";
  try {
    const body = readDenoiseForm();
    if (body === null) {
      clearDenoised();
      $("dn-status").textContent = "Draw a digit in the box.";
    } else {
      showDenoised(await postDenoise(body));
    }
    showError($("dn-error"), "");
  } catch (err) {
    clearDenoised();
    showError($("dn-error"), err.message);
  } finally {
    denoiseBusy = false;
    if (denoiseAgain) {
      denoiseAgain = false;
      requestDenoise();
    }
  }
}

/** POST a denoiser request; while the queue is full, say so and try again each second. */
async function postDenoise(body) {
  for (let attempt = 1; ; attempt++) {
    try {
      const reply = await postJSON("/api/denoise", body);
      $("dn-status").textContent = "";
      return reply;
    } catch (err) {
      if (err.status !== 503 || attempt >= DENOISE_RETRIES) throw err;
      $("dn-status").textContent = "The server is busy; trying again in a moment…";
      await sleep(1000);
    }
  }
}

function clearDenoised() {
  for (const name of ["clean", "noisy", "denoised"]) $(`dn-${name}`).removeAttribute("src");
  $("test-label").textContent = "";
}

async function showDenoised(reply) {
  const images = ["clean", "noisy", "denoised"].map((name) => $(`dn-${name}`));
  for (const img of images) {
    img.src = reply[img.id.slice(3)];
    img.style.width = "196px";
  }
  $("test-label").textContent = reply.label === null ? "" : `labelled ${reply.label}`;
  await Promise.all(images.map((img) => img.decode()));
  const denoised = $("dn-denoised");
  denoised.dataset.version = Number(denoised.dataset.version || 0) + 1;
}

function setupPad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const point = (event) => {
    const box = pad.getBoundingClientRect();
    return [((event.clientX - box.left) * pad.width) / box.width,
      ((event.clientY - box.top) * pad.height) / box.height];
  };
  let down = false;
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    padHasInk = false;
  };
  clear();
  Object.assign(ctx, { strokeStyle: "#fff", lineWidth: 22, lineCap: "round", lineJoin: "round" });
  pad.addEventListener("pointerdown", (event) => {
    down = true;
    pad.setPointerCapture(event.pointerId);
    ctx.beginPath();
    ctx.moveTo(...point(event));
    ctx.lineTo(...point(event)); // a tap leaves a dot
    ctx.stroke();
    padHasInk = true;
  });
  pad.addEventListener("pointermove", (event) => {
    if (!down) return;
    ctx.lineTo(...point(event));
    ctx.stroke();
  });
  pad.addEventListener("pointerup", () => {
    down = false;
    requestDenoise();
  });
  $("pad-clear").addEventListener("click", () => {
    clear();
    requestDenoise();
  });
}

/** The drawing as MNIST frames its digits: ink cropped, fitted into 20x20, centred in 28x28. */
function padPixels() {
  const pad = $("pad");
  const ink = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
  let [left, top, right, bottom] = [pad.width, pad.height, -1, -1];
  for (let i = 0; i < ink.length; i += 4) {
    if (ink[i] === 0) continue;
    const x = (i / 4) % pad.width;
    const y = Math.floor(i / 4 / pad.width);
    [left, top] = [Math.min(left, x), Math.min(top, y)];
    [right, bottom] = [Math.max(right, x), Math.max(bottom, y)];
  }
  const [width, height] = [right - left + 1, bottom - top + 1];
  const scale = 20 / Math.max(width, height);
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const sctx = small.getContext("2d");
  sctx.fillStyle = "#000";
  sctx.fillRect(0, 0, 28, 28);
  sctx.imageSmoothingQuality = "high";
  const [w, h] = [width * scale, height * scale];
  sctx.drawImage(pad, left, top, width, height, 14 - w / 2, 14 - h / 2, w, h);
  const rgba = sctx.getImageData(0, 0, 28, 28).data;
  return Array.from({ length: 28 * 28 }, (_, i) => rgba[i * 4]);
}

// ------------------------------------------------------------------ start

async function start() {
  setupTabs();
  try {
    const response = await fetch("/api/info");
    info = await response.json();
  } catch (err) {
    showError($("gen-error"), `the server cannot be reached (${err.message})`);
    return;
  }
  setupGenerateForm();
  setupDenoiser();
  document.body.dataset.ready = "1";
}

start();
