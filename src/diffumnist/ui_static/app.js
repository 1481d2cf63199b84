// DiffuMNIST demo page: plain JavaScript with no libraries, talking only to the server that
// sent it. The server validates every input; this page only shows what it answers.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;

/** POST JSON; resolve with the reply, or throw an Error carrying the server's message. */
async function postJSON(url, body) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`the server cannot be reached (${err.message})`);
  }
  const reply = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(reply.error || `the server answered ${response.status}`);
  return reply;
}

/** A number input's value: null when empty, the typed text when it is not a number. */
function readNumber(input) {
  if (input.validity.badInput) return "not a number";
  const text = input.value.trim();
  return text === "" ? null : Number(text);
}

function showError(box, message) {
  box.textContent = message || "";
  box.hidden = !message;
}

/** Show a small grid image enlarged with crisp pixels, as wide as the page allows. */
function showImage(img, src, maxWidth = 440) {
  img.onload = () => {
    img.style.width = `${Math.min(img.naturalWidth * 8, maxWidth)}px`;
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

const timeline = []; // one entry per step {t, x_t, x0}, then the final image at t = 0
let clickedAt = 0;

function setupGenerateForm() {
  const d = info.defaults;
  for (let digit = 0; digit <= 9; digit++) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = `digit-${digit}`;
    button.textContent = digit;
    button.setAttribute("aria-pressed", String(d.digits.includes(digit)));
    button.addEventListener("click", () => {
      button.setAttribute("aria-pressed", String(button.getAttribute("aria-pressed") !== "true"));
    });
    $("digits").append(button);
  }
  $("digits-all").addEventListener("click", () => pressDigits(true));
  $("digits-none").addEventListener("click", () => pressDigits(false));
  for (const sampler of info.samplers) $("sampler").add(new Option(sampler, sampler));
  $("sampler").value = d.sampler;
  $("sampler").addEventListener("change", onSamplerChange);
  $("count").value = d.count;
  $("count").max = info.max_digits;
  $("guidance").value = d.guidance_scale;
  $("seed").value = d.seed;
  $("steps").max = info.num_timesteps;
  onSamplerChange();
  for (const radio of document.querySelectorAll('input[name="model"]')) {
    radio.addEventListener("change", onModelChange);
  }
  $("generate").addEventListener("click", generate);
  $("scrubber").addEventListener("input", () => showStep(timeline[$("scrubber").value]));
}

function pressDigits(pressed) {
  for (const button of $("digits").children) button.setAttribute("aria-pressed", String(pressed));
}

function onSamplerChange() {
  const sampler = $("sampler").value;
  $("steps").value = info.default_steps[sampler];
  $("eta").disabled = sampler !== "ddim";
  if (sampler !== "ddim") $("eta").value = 0;
}

function onModelChange() {
  const timeModel = document.querySelector('input[name="model"]:checked').value === "time";
  $("digits-field").hidden = timeModel;
  $("count-field").hidden = !timeModel;
  $("guidance").disabled = timeModel;
}

function readGenerateForm() {
  const model = document.querySelector('input[name="model"]:checked').value;
  const common = {
    model,
    seed: readNumber($("seed")),
    sampler: $("sampler").value,
    steps: readNumber($("steps")),
    eta: readNumber($("eta")) ?? 0,
  };
  if (model === "time") return { ...common, count: readNumber($("count")) };
  const pressed = $("digits").querySelectorAll('button[aria-pressed="true"]');
  const digits = Array.from(pressed, (button) => Number(button.textContent));
  return { ...common, digits, guidance_scale: readNumber($("guidance")) };
}

async function generate() {
  showError($("gen-error"), "");
  timeline.length = 0;
  $("scrubber").disabled = true;
  $("scrubber").value = 0;
  $("result").hidden = true;
  delete $("final").dataset.ready;
  $("generate").disabled = true;
  clickedAt = performance.now();
  try {
    const { job } = await postJSON("/api/generate", readGenerateForm());
    follow(job);
  } catch (err) {
    generationFailed(err.message);
  }
}

/** Read the job's server-sent events: queued, started, frame..., then done or failed. */
function follow(job) {
  const source = new EventSource(`/api/jobs/${job}/events`);
  const on = (name, handler) =>
    source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
  on("queued", (e) => setStatus(`waiting in line (${e.waiting} waiting)…`));
  on("started", () => setStatus("sampling…"));
  on("frame", (frame) => {
    timeline.push(frame);
    $("scrubber").max = frame.num_steps; // every step, then the final image at t = 0
    $("scrubber").value = timeline.length - 1;
    showStep(frame);
    setStatus(`step ${frame.step} of ${frame.num_steps}, t = ${frame.t}`);
  });
  on("done", (done) => {
    source.close();
    generationDone(done);
  });
  on("failed", (e) => {
    source.close();
    generationFailed(e.message);
  });
  source.onerror = () => {
    source.close();
    generationFailed("lost the connection to the server");
  };
}

function showStep(frame) {
  showImage($("view-xt"), frame.x_t);
  showImage($("view-x0"), frame.x0);
  $("scrub-t").textContent = `t = ${frame.t}`;
}

function setStatus(text) {
  $("gen-status").textContent = text;
}

function generationDone(done) {
  timeline.push({ t: 0, x_t: done.final, x0: done.final });
  const scrubber = $("scrubber");
  scrubber.value = timeline.length - 1;
  scrubber.disabled = false;
  showStep(timeline[timeline.length - 1]);
  const final = $("final");
  final.onload = () => {
    const seconds = (performance.now() - clickedAt) / 1000;
    final.style.width = `${Math.min(final.naturalWidth * 8, 900)}px`;
    final.dataset.seconds = seconds.toFixed(2);
    final.dataset.ready = "1";
    setStatus(`done in ${seconds.toFixed(1)} s from Generate (sampling ${done.seconds.toFixed(1)} s)`);
  };
  final.src = done.grid;
  $("download-png").href = done.grid;
  $("download-gif").href = done.gif;
  $("result").hidden = false;
  $("generate").disabled = false;
}

function generationFailed(message) {
  showError($("gen-error"), message);
  setStatus("");
  $("generate").disabled = false;
}

// ------------------------------------------------------------------ denoiser

let denoiseBusy = false;
let denoiseAgain = false;
let noiseSeed = 0;
let padHasInk = false;

function setupDenoiser() {
  $("trained-sigma").textContent = info.trained_sigma;
  $("sigma").max = info.max_sigma;
  $("sigma").value = info.trained_sigma;
  $("test-index").max = Math.max(info.test_digits - 1, 0);
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

function readDenoiseForm() {
  const common = { sigma: Number($("sigma").value), seed: noiseSeed };
  if (!drawing()) return { ...common, source: "test", index: readNumber($("test-index")) };
  return padHasInk ? { ...common, source: "canvas", pixels: padPixels() } : null;
}

/** One request at a time: a slider dragged meanwhile sends its latest value afterwards. */
async function requestDenoise() {
  if (denoiseBusy) {
    denoiseAgain = true;
    return;
  }
  const body = readDenoiseForm();
  if (body === null) return; // an empty drawing pad: nothing to denoise yet
  denoiseBusy = true;
  try {
    showDenoised(await postJSON("/api/denoise", body));
    showError($("dn-error"), "");
  } catch (err) {
    showError($("dn-error"), err.message);
  } finally {
    denoiseBusy = false;
    if (denoiseAgain) {
      denoiseAgain = false;
      requestDenoise();
    }
  }
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
  $("pad-clear").addEventListener("click", clear);
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
