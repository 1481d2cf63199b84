// DiffuMNIST demo page: plain JavaScript with no libraries, talking only to the server that
// sent it. The server's /api/info describes every sampling setting (label, type, default,
// range, help, papers, which samplers use it) and the presets of each model; the Advanced
// settings are built from that description, so a new setting needs no edit here. The form
// checks what it can (ranges, blanks) before sending; the server checks everything again,
// and a refusal marks the field at fault.
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let info = null;

/** An Error about one field of the form (`setting`: its request name), which gets marked. */
class FieldError extends Error {
  constructor(message, setting) {
    super(message);
    this.setting = setting;
  }
}

/** POST JSON; resolve with the reply, or throw a FieldError with the server's message,
 *  the field it names (if any) and the HTTP status. */
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
    const error = new FieldError(reply.error || `the server answered ${response.status}`,
      reply.setting ?? null);
    error.status = response.status;
    throw error;
  }
  return reply;
}

/** Make an element with properties: el("p", {className: "help", textContent: "…"}). */
function el(tag, props = {}) {
  return Object.assign(document.createElement(tag), props);
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

/** "a whole number from 0 to 9", "a number between 0 and 1, not either end" and the like. */
function rangeText({ type, min, max, exclusive }) {
  const kind = type === "int" ? "a whole number" : "a number";
  if (min !== null && max !== null) {
    return exclusive ? `${kind} between ${min} and ${max}, not either end`
      : `${kind} from ${min} to ${max}`;
  }
  if (min !== null) return exclusive ? `${kind} above ${min}` : `${kind} of ${min} or more`;
  if (max !== null) return exclusive ? `${kind} below ${max}` : `${kind} of at most ${max}`;
  return kind;
}

/** A number input's value, checked against `spec` (a setting's type and range); an empty
 *  one is null when `optional`. Throws a FieldError in the words on screen. */
function readNumber(input, spec, label, setting, optional = false) {
  const text = input.value.trim();
  const wanted = rangeText(spec);
  if (input.validity.badInput) {
    throw new FieldError(`${label} is not a number: enter ${wanted}.`, setting);
  }
  if (text === "" && optional) return null;
  if (text === "") throw new FieldError(`${label} is empty: enter ${wanted}.`, setting);
  const value = Number(text);
  const { min, max, exclusive } = spec;
  const below = min !== null && (exclusive ? value <= min : value < min);
  const above = max !== null && (exclusive ? value >= max : value > max);
  const fraction = spec.type === "int" && !Number.isInteger(value);
  if (!Number.isFinite(value) || below || above || fraction) {
    throw new FieldError(`${label} must be ${wanted}; got ${text}.`, setting);
  }
  return value;
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

// ------------------------------------------------------------------ the form

const KIND_WORDS = {
  class: "draws the digits you pick",
  time: "chooses its own digits",
};
const controls = {}; // setting name -> {spec, field, inputs, get(), set(value)}
let activePreset = null; // the preset whose settings the form holds, or null once edited

const currentModel = () => $("model").value;
/** The chosen model's kind (class or time), which sets its presets, form and guidance. */
const currentKind = () => info.models[currentModel()];
const modelPresets = () => info.presets[currentKind()] ?? {};

function setupGenerateForm() {
  const models = Object.entries(info.models); // the class model first: it takes digits
  models.sort(([, a], [, b]) => (b === "class") - (a === "class"));
  for (const [name, kind] of models) {
    $("model").add(new Option(`${name}: ${KIND_WORDS[kind] ?? kind}`, name));
  }
  for (let digit = 0; digit <= 9; digit++) {
    const button = el("button", { type: "button", id: `digit-${digit}`, textContent: digit });
    button.setAttribute("aria-pressed", String(digit === 5));
    button.addEventListener("click", () => {
      button.setAttribute("aria-pressed", String(button.getAttribute("aria-pressed") !== "true"));
      clearMark("digits");
    });
    $("digits").append(button);
  }
  $("digits-all").addEventListener("click", () => pressDigits(true));
  $("digits-none").addEventListener("click", () => pressDigits(false));
  $("count").value = 1;
  $("count").max = info.max_digits;
  $("count-help").textContent = `One image each: ${rangeText(COUNT_SPEC())}.`;
  $("seed").max = info.seed_max;
  $("seed").title = `${rangeText(SEED_SPEC())}; empty with "new seed each time"`;
  $("seed").addEventListener("input", () => {
    $("seed-random").checked = false; // a seed typed in is the one to use
    clearMark("seed");
  });
  for (const scale of info.download_scales) {
    $("download-scale").add(new Option(`${scale}×`, scale, false, scale === "4"));
  }
  buildSettings();
  $("model").addEventListener("change", onModelChange);
  $("generate").addEventListener("click", generate);
  $("panel-generate").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("input")) generate();
  });
  $("stop").addEventListener("click", stop);
  $("scrubber").addEventListener("input", () => showFrame(shownTimeline[$("scrubber").value]));
  $("download-scale").addEventListener("change", updateDownloads);
  activePreset = info.preset;
  onModelChange();
}

const COUNT_SPEC = () => ({ type: "int", min: 1, max: info.max_digits, exclusive: false });
const SEED_SPEC = () => ({ type: "int", min: 0, max: info.seed_max, exclusive: false });

function pressDigits(pressed) {
  for (const button of $("digits").children) button.setAttribute("aria-pressed", String(pressed));
  clearMark("digits");
}

/** The chosen model's presets as buttons, each with its one-sentence summary; switching
 *  model keeps the chosen preset where the new model has it. */
function onModelChange() {
  const kind = currentKind();
  $("digits-field").hidden = kind !== "class";
  $("count-field").hidden = kind === "class";
  const what = kind === "class"
    ? "Draws the digits you pick below."
    : "Chooses its own digits; you pick how many.";
  $("model-help").textContent = `${what} ${info.trained_how[currentModel()]}`;
  const presets = modelPresets();
  const names = Object.keys(presets);
  const order = names.includes(info.preset)
    ? [info.preset, ...names.filter((n) => n !== info.preset)]
    : names;
  $("presets").replaceChildren();
  for (const name of order) {
    const button = el("button", { type: "button", id: `preset-${name}`, textContent: name });
    button.addEventListener("click", () => applyPreset(name));
    const summary = el("span", { className: "summary", textContent: presets[name].summary });
    const row = el("div", { className: "preset" });
    row.append(button, summary);
    $("presets").append(row);
  }
  if (activePreset === null) refreshSettings();
  else applyPreset(names.includes(activePreset) ? activePreset : order[0]);
}

function applyPreset(name) {
  const values = modelPresets()[name].settings;
  for (const [setting, control] of Object.entries(controls)) {
    control.set(setting in values ? values[setting] : control.spec.default);
    clearMark(setting);
  }
  refreshSettings();
  markPreset(name);
}

function markPreset(name) {
  activePreset = name;
  for (const row of $("presets").children) {
    const button = row.querySelector("button");
    button.setAttribute("aria-pressed", String(button.id === `preset-${name}`));
  }
  $("preset-custom").hidden = name !== null;
}

// ------------------------------------------------------------------ Advanced settings

/** One field per setting the server describes (the seed has its own, beside Generate),
 *  each with its help, what it accepts, and its papers as links at the end. */
function buildSettings() {
  for (const described of info.settings) {
    if (described.name === "seed") continue;
    const spec = pageSpec(described);
    const control = makeControl(spec);
    controls[spec.name] = control;
    const { field } = control;
    field.append(el("p", { className: "help", textContent: helpText(spec) }));
    if (spec.refs?.length) {
      const refs = el("p", { className: "refs", textContent: "Read more: " });
      spec.refs.forEach((ref, i) => {
        if (i) refs.append("; ");
        const link = { href: ref.url, textContent: ref.title, target: "_blank" };
        refs.append(el("a", { ...link, rel: "noopener noreferrer" }));
      });
      field.append(refs);
    }
    for (const input of control.inputs) {
      const event = input.type === "checkbox" || input.tagName === "SELECT" ? "change" : "input";
      input.addEventListener(event, () => {
        markPreset(null);
        clearMark(spec.name);
        if (spec.name === "sampler") onSamplerChange();
        else refreshSettings();
      });
    }
    $("settings").append(field);
  }
}

/** The page never names files on the server: of the guides, it offers the weak twins only. */
function pageSpec(spec) {
  if (spec.name === "guide" && spec.type === "text") {
    return { ...spec, type: "choice", choices: ["weak"] };
  }
  return spec;
}

function helpText(spec) {
  const parts = [spec.help.trim()];
  if (["int", "float"].includes(spec.type)) {
    const empty = spec.nullable ? `, or empty for ${spec.none_label ?? "none"}` : "";
    parts.push(`Accepts ${rangeText(spec)}${empty}.`);
  } else if (spec.type === "interval") {
    const empty = spec.nullable ? `; both empty: ${spec.none_label ?? "none"}` : "";
    const bounds = spec.min !== null && spec.max !== null ? ` from ${spec.min} to ${spec.max}` : "";
    parts.push(`Accepts two whole numbers${bounds}, the first below the second${empty}.`);
  }
  if (spec.samplers) parts.push(`Used by the ${spec.samplers.join(" and ")} samplers only.`);
  return parts.join(" ").replace(/\.\./g, ".");
}

/** The control for one setting: its field, inputs, and how to read and fill it. */
function makeControl(spec) {
  const id = `set-${spec.name}`;
  const field = el("div", { className: "field", id: `field-${spec.name}` });
  const label = el("label", { htmlFor: id, textContent: spec.label });
  field.append(label);
  const fail = (message) => {
    throw new FieldError(message, spec.name);
  };
  if (spec.type === "choice") {
    const select = el("select", { id });
    const values = new Map();
    if (spec.nullable) values.set("", null);
    for (const choice of spec.choices ?? []) values.set(String(choice), choice);
    for (const [value, choice] of values) {
      select.add(new Option(choice === null ? spec.none_label ?? "none" : value, value));
    }
    field.append(select);
    return { spec, field, inputs: [select], get: () => values.get(select.value), set: (v) => {
      select.value = v === null || v === undefined ? "" : String(v);
    } };
  }
  if (spec.type === "bool") {
    const box = el("input", { type: "checkbox", id });
    field.append(box);
    return { spec, field, inputs: [box], get: () => box.checked, set: (v) => {
      box.checked = Boolean(v);
    } };
  }
  if (spec.type === "interval") {
    const intSpec = { ...spec, type: "int" };
    const ends = ["low", "high"].map((end) => numberInput(`${id}-${end}`, intSpec));
    ends[0].setAttribute("aria-label", `${spec.label}: from`);
    ends[1].setAttribute("aria-label", `${spec.label}: to`);
    label.htmlFor = ends[0].id;
    field.append(ends[0], " to ", ends[1]);
    const get = () => {
      const [low, high] = ends.map((input) =>
        readNumber(input, intSpec, spec.label, spec.name, true));
      if (low === null && high === null && spec.nullable) return null;
      if (low === null || high === null) {
        fail(`Fill both ends of ${spec.label}, or neither (${spec.none_label ?? "none"}).`);
      }
      if (low >= high) {
        fail(`${spec.label}: the first number must be below the second; got ${low} to ${high}.`);
      }
      return [low, high];
    };
    return { spec, field, inputs: ends, get, set: (v) => {
      [ends[0].value, ends[1].value] = v ?? ["", ""];
    } };
  }
  if (spec.type === "int" || spec.type === "float") {
    const input = numberInput(id, spec);
    if (spec.nullable) input.placeholder = spec.none_label ?? "none";
    fitPlaceholder(input);
    field.append(input);
    return { spec, field, inputs: [input],
      get: () => readNumber(input, spec, spec.label, spec.name, spec.nullable),
      set: (v) => {
        input.value = v ?? "";
      } };
  }
  const placeholder = spec.nullable ? spec.none_label ?? "" : "";
  const text = el("input", { type: "text", id, placeholder });
  field.append(text);
  return { spec, field, inputs: [text], get: () => {
    const value = text.value.trim();
    if (value === "" && !spec.nullable) fail(`${spec.label} is empty.`);
    return value === "" ? null : value;
  }, set: (v) => {
    text.value = v ?? "";
  } };
}

/** A number input with the setting's bounds as attributes, so the browser knows them too. */
function numberInput(id, spec) {
  const input = el("input", { type: "number", id, step: spec.type === "int" ? "1" : "any" });
  if (spec.min !== null && spec.min !== undefined) input.min = spec.min;
  if (spec.max !== null && spec.max !== undefined) input.max = spec.max;
  return input;
}

/** Widen a number input so its placeholder ("keep every draw") is not cut. */
function fitPlaceholder(input) {
  if (input.placeholder) input.style.width = `${Math.max(6, input.placeholder.length + 4)}ch`;
}

/** Choosing another sampler resets the settings that belong to one sampler (as the
 *  server's `replace` does), then enables what applies. */
function onSamplerChange() {
  for (const control of Object.values(controls)) {
    if (control.spec.samplers) control.set(control.spec.default);
  }
  refreshSettings();
}

const sampler = () => controls.sampler?.get() ?? null;

/** Whether the setting acts with the form as it stands; `why` says why not. Settings that
 *  apply to some samplers only are off for the others; γ and its interval are off when
 *  nothing is guided (a time model without its weak twin). */
function applies(spec) {
  if (spec.samplers && sampler() !== null && !spec.samplers.includes(sampler())) {
    return { on: false, send: true };
  }
  const unguided = currentKind() !== "class" && controls.guide && controls.guide.get() === null;
  if (["guidance_scale", "guidance_interval"].includes(spec.name) && unguided) {
    return { on: false, send: false };
  }
  return { on: true, send: true };
}

/** Enable what applies; the weak twin is offered only for models that have one; the
 *  steps field's placeholder shows the sampler's own number of steps. */
function refreshSettings() {
  const guide = controls.guide?.inputs[0];
  if (guide?.tagName === "SELECT") {
    const hasTwin = info.weak_guides.includes(currentKind());
    for (const option of guide.options) option.disabled = option.value !== "" && !hasTwin;
    if (guide.selectedOptions[0]?.disabled) guide.value = "";
  }
  const steps = controls.steps?.inputs[0];
  if (steps && info.default_steps?.[sampler()]) {
    steps.placeholder = `${info.default_steps[sampler()]} (the sampler's own)`;
    fitPlaceholder(steps);
  }
  for (const control of Object.values(controls)) {
    const { on } = applies(control.spec);
    for (const input of control.inputs) input.disabled = !on;
    control.field.classList.toggle("off", !on);
  }
}

// ------------------------------------------------------------------ marking a field

/** The element that holds a request field: a setting's field, or the page's own. */
function fieldFor(setting) {
  const own = {
    digits: "digits-field", count: "count-field", model: "model-field", seed: "seed-field",
  };
  return $(own[setting] ?? `field-${setting}`);
}

/** Mark the field at fault (opening Advanced when it is there) and bring it into view. */
function markInvalid(setting) {
  const field = setting ? fieldFor(setting) : null;
  if (!field) return;
  field.classList.add("invalid");
  field.dataset.invalid = "1";
  const inputs = field.querySelectorAll("input, select");
  for (const input of inputs) input.setAttribute("aria-invalid", "true");
  if (field.closest("#advanced")) $("advanced").open = true;
  field.scrollIntoView({ block: "nearest" });
  inputs[0]?.focus({ preventScroll: true });
}

function clearMark(setting) {
  const field = fieldFor(setting);
  if (!field?.dataset.invalid) return;
  field.classList.remove("invalid");
  delete field.dataset.invalid;
  for (const input of field.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
}

function clearMarks() {
  for (const field of document.querySelectorAll("[data-invalid]")) {
    field.classList.remove("invalid");
    delete field.dataset.invalid;
  }
  for (const input of document.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
}

// ------------------------------------------------------------------ generate

let running = null; // the job being sampled: {id, source, body, preset}
let shownTimeline = []; // frames {label, x_t, x0} of the result on screen
let shownResult = null; // {done, stem} of the result on screen
let clickedAt = 0;

/** The request for the form as it stands; throws a FieldError naming a blank or bad field.
 *  With "new seed each time" a fresh seed is drawn (the field shows it once it is used). */
function readGenerateForm() {
  const body = { model: currentModel() };
  for (const [name, control] of Object.entries(controls)) {
    const { on, send } = applies(control.spec);
    if (!send) continue;
    body[name] = on ? control.get() : control.spec.default;
  }
  if (currentKind() === "class") {
    const pressed = $("digits").querySelectorAll('button[aria-pressed="true"]');
    body.digits = Array.from(pressed, (button) => Number(button.textContent));
    if (body.digits.length === 0) {
      throw new FieldError(`Pick 1 to ${info.max_digits} digits.`, "digits");
    }
  } else {
    body.count = readNumber($("count"), COUNT_SPEC(), "How many images", "count");
  }
  body.seed = $("seed-random").checked
    ? crypto.getRandomValues(new Uint32Array(1))[0] % (info.seed_max + 1)
    : readNumber($("seed"), SEED_SPEC(), "Seed", "seed");
  return body;
}

async function generate() {
  if (running) return;
  clearMarks();
  let body;
  try {
    body = readGenerateForm();
  } catch (err) {
    showError($("gen-error"), err.message);
    markInvalid(err.setting);
    return;
  }
  showError($("gen-error"), "");
  running = { id: null, source: null, body, preset: activePreset, frames: 0 };
  setRunning(true);
  $("result").hidden = true; // the previous result comes back if this run does not finish
  $("live").hidden = true;
  setStatus(`sending… (seed ${body.seed})`);
  clickedAt = performance.now();
  try {
    running.id = (await postJSON("/api/generate", body)).job;
    $("stop").hidden = false;
    follow(running);
  } catch (err) {
    finish("failed", err);
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
  on("started", () => setStatus(`drawing with seed ${run.body.seed}…`));
  on("frame", (frame) => showLiveFrame(run, frame));
  on("done", (done) => finish("done", done));
  on("failed", (e) => finish("failed", new FieldError(e.message, e.setting ?? null)));
  on("cancelled", () => finish("cancelled"));
  source.onerror = () => {
    if (running === run) finish("failed", new Error("lost the connection to the server"));
  };
}

/** A step as it happens; a redraw (a digit the filter could not read, drawn again) is
 *  pasted where it belongs and said so. */
function showLiveFrame(run, frame) {
  run.frames += 1;
  $("live").hidden = false;
  $("empty-hint").hidden = true;
  const where = `step ${frame.step} of ${frame.num_steps} (t = ${frame.t})`;
  const title = frame.draw
    ? `Drawing ${slotsInWords(frame.slots, run.body)} again (try ${frame.draw + 1}): `
      + `the filter could not read ${frame.slots.length > 1 ? "them" : "it"}`
    : `Drawing with seed ${run.body.seed}…`;
  $("live-title").textContent = title;
  setStatus(frame.draw ? `redrawing: ${where}` : where);
  showImage($("view-xt"), frame.x_t, 8);
  showImage($("view-x0"), frame.x0, 8);
  $("scrub-label").textContent = where;
  $("scrubber").max = frame.num_steps;
  $("scrubber").value = frame.step - 1;
  if (run.frames === 1) $("live").scrollIntoView({ block: "nearest" });
}

/** "digit 2", "digits 2 and 9", "images 1 and 3": the batch positions `slots` in words. */
function slotsInWords(slots, body) {
  const names = body.digits ? slots.map((i) => body.digits[i]) : slots.map((i) => i + 1);
  const noun = body.digits ? "digit" : "image";
  return `${noun}${names.length > 1 ? "s" : ""} ${listInWords(names)}`;
}

function listInWords(items) {
  if (items.length < 2) return `${items[0]}`;
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

/** End the run: a result replaces the one on screen; otherwise that one comes back. */
function finish(outcome, detail) {
  const run = running;
  running = null;
  run?.source?.close();
  if (outcome === "done") {
    shownTimeline = detail.timeline;
    showResult(detail, run);
  } else {
    $("result").hidden = !shownResult;
    const error = outcome === "failed" ? detail : null;
    showError($("gen-error"), error?.message);
    markInvalid(error?.setting);
    setStatus(outcome === "cancelled"
      ? `stopped${shownResult ? "; the last result is back on screen" : ""}` : "");
  }
  $("live-title").textContent = "How it was drawn: slide along the timeline";
  showTimeline(shownTimeline);
  setRunning(false);
}

function setRunning(on) {
  $("generate").disabled = on;
  $("stop").hidden = true;
  $("stop").disabled = false;
  $("scrubber").disabled = on || shownTimeline.length < 2;
}

/** Show `timeline` at its last frame (the final image), the slider there too. */
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
  $("scrub-label").textContent = frame.label;
}

function setStatus(text) {
  $("gen-status").textContent = text;
}

function showResult(done, run) {
  const final = $("final");
  final.onload = () => {
    const seconds = (performance.now() - clickedAt) / 1000;
    final.style.width = `${final.naturalWidth * info.page_zoom}px`;
    final.dataset.seconds = seconds.toFixed(2);
    final.dataset.version = Number(final.dataset.version || 0) + 1;
    setStatus(`done in ${seconds.toFixed(1)} s`);
    $("result").scrollIntoView({ block: "nearest" });
  };
  final.src = done.final;
  const settings = done.settings;
  $("seed").value = settings.seed; // the seed this result used
  $("result-caption").textContent = describeResult(settings, run.preset, done.redrawn ?? []);
  $("result-details").textContent = exactSettings(settings);
  shownResult = { done, stem: fileStem(settings, run.preset) };
  updateDownloads();
  $("result").hidden = false;
  $("empty-hint").hidden = true;
}

/** The result in plain words: what, by which model, how, which seed, what was redrawn. */
function describeResult(s, preset, redrawn) {
  const classes = info.models[s.model] === "class";
  const what = classes
    ? `The digit${s.digits.length > 1 ? "s" : ""} ${listInWords(s.digits)}, `
      + `drawn by the ${s.model} model`
    : `${s.count} image${s.count > 1 ? "s" : ""} drawn by the ${s.model} model, `
      + "which chooses the digits";
  const how = preset ? `with the ${preset} preset` : "with custom settings";
  let text = `${what} ${how}, seed ${s.seed}.`;
  if (redrawn.length) {
    const they = redrawn.length > 1 ? "they were" : "it was";
    const which = slotsInWords(redrawn, s);
    text += ` The filter could not read ${which} at first, so ${they} drawn again.`;
  }
  return text;
}

/** Every setting the result used, by its label: "Sampler: dpmpp · Steps: 20 · …". */
function exactSettings(s) {
  const shown = (spec, v) => {
    if (v === null || v === undefined) return spec.none_label ?? "none";
    if (typeof v === "boolean") return v ? "on" : "off";
    return Array.isArray(v) ? v.join(" to ") : String(v);
  };
  return info.settings.filter((spec) => spec.name in s)
    .map((spec) => `${spec.label}: ${shown(spec, s[spec.name])}`).join(" · ");
}

/** The result as a file name: class_d5_fast_seed42, or the settings that differ from
 *  their defaults when they are custom. */
function fileStem(s, preset) {
  const classes = info.models[s.model] === "class";
  const what = classes ? `${s.model}_d${s.digits.join("")}` : `${s.model}_n${s.count}`;
  let how = preset;
  if (!how) {
    const changed = info.settings.filter((spec) => spec.name !== "seed" && spec.name in s
      && JSON.stringify(s[spec.name]) !== JSON.stringify(spec.default));
    const parts = changed.map((spec) => `${spec.name}-${[s[spec.name]].flat().join("-")}`);
    how = parts.join("_") || "defaults";
  }
  return `${what}_${how}_seed${s.seed}`.replace(/[^A-Za-z0-9._-]/g, "");
}

function updateDownloads() {
  if (!shownResult) return;
  const scale = $("download-scale").value;
  const { done, stem } = shownResult;
  Object.assign($("download-png"),
    { href: `${done.grid}?scale=${scale}`, download: `${stem}_${scale}x.png` });
  Object.assign($("download-gif"),
    { href: `${done.gif}?scale=${scale}`, download: `${stem}_${scale}x.gif` });
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
  $("sigma-help").textContent = `From 0 to ${info.max_sigma}; New noise draws another ε.`;
  $("test-index").max = Math.max(info.test_digits - 1, 0);
  const indexSpec = { type: "int", min: 0, max: Number($("test-index").max), exclusive: false };
  $("test-help").textContent = `Accepts ${rangeText(indexSpec)}.`;
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
  if (!drawing()) {
    const spec = { type: "int", min: 0, max: Number($("test-index").max), exclusive: false };
    const index = readNumber($("test-index"), spec, "Index", "index");
    return { ...common, source: "test", index };
  }
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
      clearDenoised(true); // the empty state says what to do
    } else {
      await showDenoised(await postDenoise(body));
    }
    showError($("dn-error"), "");
  } catch (err) {
    clearDenoised(false);
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

/** No images: the empty state explains what will appear (`empty`), or nothing (an error). */
function clearDenoised(empty) {
  for (const name of ["clean", "noisy", "denoised"]) $(`dn-${name}`).removeAttribute("src");
  $("test-label").textContent = "";
  $("dn-views").hidden = true;
  $("dn-empty").hidden = !empty;
}

async function showDenoised(reply) {
  const images = ["clean", "noisy", "denoised"].map((name) => $(`dn-${name}`));
  for (const img of images) {
    img.src = reply[img.id.slice(3)];
    img.style.width = "196px";
  }
  $("dn-views").hidden = false;
  $("dn-empty").hidden = true;
  $("test-label").textContent = reply.label === null ? "" : `labelled ${reply.label}`;
  try {
    await Promise.all(images.map((img) => img.decode()));
  } catch {
    return; // replaced or cleared meanwhile by a newer request
  }
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
