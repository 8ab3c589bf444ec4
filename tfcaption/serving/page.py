"""The web page at `/`: choose or drop an image, see its caption, the beams, where each word looked, and samples.

One self-contained HTML document (inline CSS and JavaScript, no external assets, so it works offline). It
calls the server's own REST API, the same endpoints a TF Serving client uses:

- `GET /tfcaption/models` once, for the models, their signatures, serving settings and vocabulary;
- `POST /v1/models/NAME/versions/N:predict` with `serving_default` (the export's beam search: caption and
  score, and every beam where the export returns `beam_captions` / `beam_scores`) and with
  `caption_with_attention` (the same caption with `attention`, `gates`, `patch_grid`, recorded along the
  best beam; an export whose serving config says `"attention_decoding": "greedy"`, written before that, decodes
  it greedily and the page shows that caption as a row of its own, labelled greedy), and, where the export
  has it, with `sample` (the sampling signature: temperature, top-k, top-p, seed and max length per
  request, from the controls beside the caption; "Sample" draws again with the settings shown, "New seed"
  with another seed; an empty seed is filled with a random one, so every sample shown can be repeated);
- where the export has prompts baked in (its serving config's `prompts`: a BLIP run exported with
  `tfcaption-export --prompt`), a prompt selector lists them, the default first, and the caption and beams
  come from `caption_with_prompt` with the chosen one (`{"image_bytes": ..., "prompt": ...}`). The attention
  and sampling signatures decode with the default prompt only, so with another prompt chosen a note says
  so in place of the word maps (which would be another caption's); the prompt's own pieces (given, not
  generated, with no attention) are not listed as words.

It shows the caption, the captions with their scores (sum of log-probabilities), one attention map per
generated word (hover or click a word, or its thumbnail; the end, padding and start tokens are the export's
`special_ids`) drawn over the image on the export's patch grid
(prefix tokens such as a class token dropped and the rest renormalised), and, where the decoder is meshed,
each word's gate weight per encoder level. A caption with no words (the model emitted <eos> first) is a
valid result: it reads "(empty caption)", and the words section says there are none. Once a result is
drawn, `document.body.dataset.state` is `"ready"` (`"error"` after a failed request); the browser test
waits for that.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tfcaption</title>
<style>
:root { --ink: #1d2330; --muted: #5d6778; --line: #d9dee7; --accent: #2f6fde; --bg: #f6f7fa; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--bg); }
header { display: flex; align-items: center; gap: 16px; padding: 10px 20px; background: #1d2330; color: #fff; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; letter-spacing: .3px; }
header label { color: #c7cfdc; font-size: 13px; }
header select { font: inherit; padding: 3px 6px; border-radius: 4px; border: 0; }
#modelinfo { color: #c7cfdc; font-size: 13px; margin-left: auto; }
main { display: grid; grid-template-columns: minmax(280px, 520px) minmax(300px, 1fr); gap: 20px; padding: 20px;
       max-width: 1200px; margin: 0 auto; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
#drop { display: block; border: 2px dashed #9aa6ba; border-radius: 8px; padding: 18px; text-align: center;
        color: var(--muted);
        cursor: pointer; background: #fbfcfe; }
#drop.over { border-color: var(--accent); background: #eef4ff; color: var(--ink); }
#drop input { display: none; }
#promptbox { display: flex; align-items: center; gap: 8px; margin-top: 10px; font-size: 13px; color: var(--muted); }
#promptbox select { font: inherit; flex: 1; padding: 3px 6px; border: 1px solid var(--line); border-radius: 4px; }
#promptnote { color: var(--muted); font-size: 13px; }
#viewwrap { margin-top: 14px; position: relative; }
#view { width: 100%; height: auto; border-radius: 6px; background: #e9ecf2; display: block; image-rendering: auto; }
#legend { display: flex; align-items: center; gap: 8px; font-size: 12px; color: var(--muted); margin-top: 6px; }
#legend canvas { width: 160px; height: 10px; border-radius: 3px; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); margin: 0 0 8px; }
#caption { font-size: 22px; font-weight: 600; min-height: 1.4em; }
#score { color: var(--muted); font-size: 13px; }
#beams { margin: 0; padding-left: 22px; }
#beams li { margin: 2px 0; }
#beams .s { color: var(--muted); font-variant-numeric: tabular-nums; margin-left: 6px; font-size: 13px; }
#beams .k { color: var(--muted); font-size: 12px; margin-left: 6px; }
#words { display: flex; flex-wrap: wrap; gap: 6px; }
.empty { color: var(--muted); font-style: italic; font-weight: 400; }
.word { border: 1px solid var(--line); background: #f3f5f9; border-radius: 14px; padding: 2px 10px; cursor: pointer;
        font: inherit; color: inherit; }
.word.active { background: var(--accent); border-color: var(--accent); color: #fff; }
#maps { display: grid; grid-template-columns: repeat(auto-fill, minmax(86px, 1fr)); gap: 8px; margin-top: 10px; }
#maps figure { margin: 0; cursor: pointer; text-align: center; font-size: 12px; color: var(--muted); }
#maps figure.active figcaption { color: var(--accent); font-weight: 600; }
#maps canvas { width: 100%; border-radius: 4px; display: block; }
#gates table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
#gates td, #gates th { padding: 2px 6px; text-align: left; }
#gates .bar { height: 10px; background: var(--accent); border-radius: 2px; display: inline-block;
              vertical-align: middle; }
#gates tr.active td { background: #eef4ff; }
#error { color: #b3261e; white-space: pre-wrap; font-size: 13px; }
#status { color: var(--muted); font-size: 13px; }
#controls { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: end; font-size: 13px; color: var(--muted); }
#controls label { display: flex; flex-direction: column; gap: 2px; }
#controls input { font: inherit; width: 84px; padding: 2px 4px; border: 1px solid var(--line); border-radius: 4px; }
#controls button { font: inherit; padding: 3px 10px; border-radius: 4px; border: 1px solid var(--accent);
                   background: var(--accent); color: #fff; cursor: pointer; }
#controls button.plain { background: #fff; color: var(--accent); }
#sampled { font-size: 18px; font-weight: 600; min-height: 1.4em; margin-top: 8px; }
#samplescore { color: var(--muted); font-size: 13px; }
.section { margin-top: 14px; }
.hidden { display: none !important; }  /* a utility class: it must win over an id rule such as #legend's display */
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 0 20px 20px; }
code { background: #eef1f6; padding: 0 4px; border-radius: 3px; }
</style>
</head>
<body data-state="loading">
<header>
  <h1>tfcaption</h1>
  <label>model <select id="model"></select></label>
  <span id="modelinfo"></span>
</header>
<main>
  <section class="card">
    <label id="drop" for="file">
      <input id="file" type="file" accept="image/*,.bmp,.gif,.png,.jpg,.jpeg">
      <strong>Choose an image</strong> or drop one here
    </label>
    <label id="promptbox" class="hidden">prompt <select id="prompt"
      title="the prompts baked into the export (tfcaption-export --prompt), the default first"></select></label>
    <div id="viewwrap">
      <canvas id="view" width="480" height="360" aria-label="image with the attention of the selected word"></canvas>
      <div id="legend" class="hidden"><span>attention</span><span>low</span><canvas id="colorbar" width="160"
        height="10"></canvas><span>high</span><span id="legendword"></span></div>
    </div>
  </section>
  <section class="card">
    <div id="status">Choose an image to caption it.</div>
    <div id="error"></div>
    <div class="section"><h2>Caption</h2><div id="caption"></div><div id="score"></div></div>
    <div class="section"><h2>Beams</h2><ol id="beams"></ol></div>
    <div class="section hidden" id="sampling"><h2>Sampling (the <code>sample</code> signature)</h2>
      <div id="controls">
        <label>temperature <input id="temperature" type="number" min="0" step="0.1" value="1"
          title="0: greedy"></label>
        <label>top-k <input id="top_k" type="number" min="0" step="1" value="0" title="0: off"></label>
        <label>top-p <input id="top_p" type="number" min="0" max="1" step="0.05" value="0.9"
          title="1: off"></label>
        <label>seed <input id="seed" type="number" step="1" title="empty: a random one"></label>
        <label>max length <input id="max_length" type="number" min="0" step="1" value="0"
          title="tokens, end token included; 0: the export's"></label>
        <button id="sample" type="button">Sample</button>
        <button id="newseed" type="button" class="plain">New seed</button>
      </div>
      <div id="sampled"></div><div id="samplescore"></div></div>
    <div class="section" id="wordsection"><h2>Words &rarr; patches (hover or click a word)</h2>
      <div id="words"></div><div id="maps"></div></div>
    <div class="section hidden" id="promptnote"></div>
    <div class="section hidden" id="gates"><h2>Meshed gates: each encoder level's weight per word</h2>
      <table id="gatetable"></table></div>
  </section>
</main>
<footer>This page calls the server's REST API: <code id="endpoint">POST /v1/models/NAME:predict</code>
  with <code>serving_default</code> (<code>caption_with_prompt</code> where the export has prompts),
  <code>caption_with_attention</code> and <code>sample</code>.</footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const state = { models: [], model: null, image: null, result: null, selected: 0, pinned: false };
// A caption with no words (the model emitted <eos> first) is a valid result, shown as this.
const EMPTY = "(empty caption)";

function captionText(element, text) {
  element.textContent = text || EMPTY;
  element.classList.toggle("empty", !text);
}

// A perceptual colour map (dark blue -> purple -> orange -> yellow), as [r, g, b] stops.
const STOPS = [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]];
function colour(v) {
  v = Math.max(0, Math.min(1, v)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(v)), f = v - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}

function setState(name, message) {
  document.body.dataset.state = name;
  $("status").textContent = message || "";
}

function showError(message) {
  $("error").textContent = message;
  setState("error", "");
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch (e) { body = { error: text || response.statusText }; }
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${body.error || text}`);
  return body;
}

async function loadModels() {
  try {
    const body = await getJSON("/tfcaption/models");
    state.models = body.models;
  } catch (e) { showError(`Could not list the models: ${e.message}`); return; }
  const select = $("model");
  select.innerHTML = "";
  state.models.forEach((m, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `${m.name} (version ${m.version})`;
    select.appendChild(option);
  });
  select.onchange = () => chooseModel(Number(select.value));
  if (state.models.length) chooseModel(0);
  setState("idle", state.models.length ? "Choose an image to caption it." : "No model is being served.");
}

function chooseModel(index) {
  const m = state.models[index];
  state.model = m;
  const s = m.serving || {};
  const grid = s.patch_grid ? `${s.patch_grid[0]}x${s.patch_grid[1]} patches` : "no patch grid";
  const size = Array.isArray(s.image_size) ? s.image_size.join("x") : s.image_size;
  $("modelinfo").textContent = [size ? `${size} px input` : "", grid, s.beam_size ? `beam ${s.beam_size}` : "",
    Object.keys(m.signatures).join(", ")].filter(Boolean).join(" \u00b7 ");
  $("endpoint").textContent = `POST ${predictUrl(m)}`;
  $("sampling").classList.toggle("hidden", !("sample" in m.signatures));
  showPrompts(m);
  if (state.image) caption();
}

function prompts(m) {
  // The export's baked prompts, the default first, where it has a prompt signature; else null.
  const p = (m.serving || {}).prompts;
  if (!p || !Array.isArray(p.baked) || !p.baked.length || !(p.signature in m.signatures)) return null;
  return p;
}

function showPrompts(m) {
  const p = prompts(m), select = $("prompt");
  select.innerHTML = "";
  $("promptbox").classList.toggle("hidden", !p);
  if (!p) return;
  p.baked.forEach((text, i) => {
    const option = document.createElement("option");
    option.value = text;
    option.textContent = i === 0 ? `${text} (default)` : text;
    select.appendChild(option);
  });
}

function promptPieces(m) {
  // Tokens the default prompt puts before the generated ones: its ids less the start token.
  const p = prompts(m);
  return p && Array.isArray(p.ids) && p.ids.length ? Math.max(0, p.ids[0].length - 1) : 0;
}

function predictUrl(m) {
  return `/v1/models/${encodeURIComponent(m.name)}/versions/${m.version}:predict`;
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

async function useFile(file) {
  if (!file) return;
  $("error").textContent = "";
  const buffer = await file.arrayBuffer();
  const image = new Image();
  const url = URL.createObjectURL(file);
  await new Promise((resolve) => { image.onload = resolve; image.onerror = resolve; image.src = url; });
  state.image = { name: file.name, b64: toBase64(buffer), element: image.naturalWidth ? image : null };
  caption();
}

function imageInput(m) {
  const sig = m.signatures.serving_default || Object.values(m.signatures)[0];
  const names = Object.keys(sig.inputs);
  if (names.length !== 1 || sig.inputs[names[0]].dtype !== "string") return null;
  return names[0];
}

async function caption() {
  const m = state.model;
  if (!m || !state.image) return;
  const input = imageInput(m);
  if (!input) { showError(`${m.name} does not take encoded images (it reads ${Object.keys(
    (m.signatures.serving_default || {}).inputs || {}).join(", ")}); this page needs an image model.`); return; }
  setState("busy", `Captioning ${state.image.name} with ${m.name} version ${m.version}\u2026`);
  $("error").textContent = "";
  const instance = {}; instance[input] = { b64: state.image.b64 };
  const post = (signature, extra) => getJSON(predictUrl(m), {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ signature_name: signature, instances: [Object.assign({}, instance, extra)] }),
  });
  // The chosen prompt goes to the prompt signature; the attention one decodes with the default prompt only.
  const p = prompts(m), prompt = p ? $("prompt").value : null;
  const otherPrompt = p !== null && prompt !== p.baked[0];
  try {
    const withAttention = "caption_with_attention" in m.signatures && !otherPrompt;
    const first = p ? post(p.signature, { [p.input || "prompt"]: prompt }) : post("serving_default");
    const [beam, attention] = await Promise.all([
      first, withAttention ? post("caption_with_attention") : Promise.resolve(null)]);
    state.result = { beam: beam.predictions[0], attention: attention ? attention.predictions[0] : null };
    state.selected = 0; state.pinned = false;
    render();
    const note = $("promptnote");
    note.textContent = otherPrompt ? `Where each word looked is shown for the default prompt only ` +
      `(\u201c${p.baked[0]}\u201d): caption_with_attention takes no prompt. The samples use it too.` : "";
    note.classList.toggle("hidden", !otherPrompt);
    if ("sample" in m.signatures) {
      try { renderSample(await postSample(m, input)); } catch (e) { showError(e.message); return; }
    }
    setState("ready", `${state.image.name}: captioned by ${m.name} version ${m.version}` +
      (p ? ` with the prompt \u201c${prompt}\u201d.` : "."));
  } catch (e) {
    state.result = null;
    clearResult();
    drawView(null);
    showError(e.message);
  }
}

function sampleSettings() {
  // The controls as the signature's inputs: numbers as typed (the server checks them), a random seed if empty.
  if ($("seed").value.trim() === "") $("seed").value = String(Math.floor(Math.random() * 2147483647));
  const settings = {};
  for (const name of ["temperature", "top_k", "top_p", "seed", "max_length"]) {
    const text = $(name).value.trim();
    settings[name] = text === "" ? NaN : Number(text);
    if (!Number.isFinite(settings[name])) throw new Error(`${name.replace("_", "-")}: enter a number`);
  }
  return settings;
}

async function postSample(m, input) {
  const instance = sampleSettings(); instance[input] = { b64: state.image.b64 };
  const body = await getJSON(predictUrl(m), {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ signature_name: "sample", instances: [instance] }),
  });
  const p = body.predictions[0];
  p.settings = instance; delete p.settings[input];
  return p;
}

function renderSample(p) {
  const s = p.settings;
  $("sampled").textContent = p.caption;
  $("samplescore").textContent = `score ${p.score.toFixed(3)} (sum of log-probabilities) \u00b7 temperature ` +
    `${s.temperature}, top-k ${s.top_k}, top-p ${s.top_p}, seed ${s.seed}, max length ${s.max_length}`;
}

async function sampleAgain(newSeed) {
  const m = state.model;
  if (!m || !state.image || !("sample" in m.signatures)) return;
  if (newSeed) $("seed").value = "";
  setState("busy", `Sampling a caption of ${state.image.name}\u2026`);
  $("error").textContent = "";
  try {
    renderSample(await postSample(m, imageInput(m)));
    setState("ready", `${state.image.name}: sampled by ${m.name} version ${m.version}.`);
  } catch (e) {
    $("sampled").textContent = ""; $("samplescore").textContent = "";
    showError(e.message);
  }
}

function clearResult() {
  for (const id of ["caption", "score", "beams", "words", "maps", "gatetable", "sampled", "samplescore",
    "promptnote"]) {
    $(id).innerHTML = "";
  }
  $("gates").classList.add("hidden");
  $("promptnote").classList.add("hidden");
  $("legend").classList.add("hidden");
}

function words(m, prediction) {
  // One entry per generated token up to the end token: its text and its attention row. The special ids are
  // the export's (a WordPiece or BLIP vocabulary has its own); exports before them have M2's <eos>.
  const vocab = m.vocabulary || [];
  const ids = (m.serving || {}).special_ids;
  const eos = ids ? ids.eos_id : (vocab.indexOf("<eos>") >= 0 ? vocab.indexOf("<eos>") : 3);
  const skipped = ids ? [ids.pad_id, ids.bos_id] : [vocab.indexOf("<pad>"), vocab.indexOf("<bos>")];
  const given = promptPieces(m);
  const out = [];
  (prediction.tokens || []).some((token, t) => {
    if (t < given) return false;  // the default prompt's pieces: given, not generated
    if (token === eos) return true;
    if (skipped.includes(token)) return false;
    out.push({ t, text: vocab[token] !== undefined ? vocab[token] : `#${token}` });
    return false;
  });
  return out;
}

function attentionMap(m, prediction, t) {
  // The word's attention over the grid cells (prefix tokens dropped, renormalised): {rows, cols, values}.
  const s = m.serving || {};
  const grid = prediction.patch_grid || s.patch_grid;
  if (!grid || !prediction.attention) return null;
  const prefix = (s.token_grid && s.token_grid.prefix) || 0;
  const row = prediction.attention[t].slice(prefix, prefix + grid[0] * grid[1]);
  const total = row.reduce((a, b) => a + b, 0) || 1;
  return { rows: grid[0], cols: grid[1], values: row.map((v) => v / total) };
}

function render() {
  const m = state.model, r = state.result;
  clearResult();
  captionText($("caption"), r.beam.caption);
  $("score").textContent = `score ${r.beam.score.toFixed(3)} (sum of log-probabilities, ` +
    `beam ${(m.serving || {}).beam_size || "?"})`;
  const beams = $("beams");
  const add = (text, score, kind) => {
    const li = document.createElement("li");
    const t = document.createElement("span"); captionText(t, text); li.appendChild(t);
    const s = document.createElement("span"); s.className = "s"; s.textContent = score.toFixed(3);
    li.appendChild(s);
    if (kind) { const k = document.createElement("span"); k.className = "k"; k.textContent = kind; li.appendChild(k); }
    beams.appendChild(li);
  };
  // Exports before the attention followed the best beam say "greedy" (or, the oldest, nothing): their
  // attention caption is a greedy one of its own, shown as its own row.
  const greedyAttention = ((m.serving || {}).attention_decoding || "greedy") === "greedy";
  const follows = " (the attention below follows it)";
  const best = r.attention && !greedyAttention ? "best" + follows : "best";
  if (Array.isArray(r.beam.beam_captions)) {
    r.beam.beam_captions.forEach((c, i) => add(c, r.beam.beam_scores[i], i === 0 ? best : ""));
  } else {
    add(r.beam.caption, r.beam.score, `beam search, beam ${(m.serving || {}).beam_size || "?"}` +
      (r.attention && !greedyAttention ? follows : ""));
  }
  if (r.attention && greedyAttention) add(r.attention.caption, r.attention.score, "greedy" + follows);
  if (!r.attention) { $("wordsection").classList.add("hidden"); drawView(null); return; }
  $("wordsection").classList.remove("hidden");
  const list = words(m, r.attention);
  state.words = list;
  if (!list.length) {
    const note = document.createElement("span"); note.className = "empty";
    note.textContent = "no words: the model ended the caption at once";
    $("words").appendChild(note);
  }
  list.forEach((w, i) => {
    const b = document.createElement("button");
    b.className = "word"; b.textContent = w.text; b.dataset.index = String(i);
    b.onmouseenter = () => { if (!state.pinned) select(i); };
    b.onclick = () => { state.pinned = !(state.pinned && state.selected === i); select(i); };
    $("words").appendChild(b);
    const map = attentionMap(m, r.attention, w.t);
    if (map) {
      const fig = document.createElement("figure"); fig.dataset.index = String(i);
      const c = document.createElement("canvas"); c.width = 96; c.height = 96; c.className = "thumb";
      drawOn(c, map, 0.75);
      const cap = document.createElement("figcaption"); cap.textContent = w.text;
      fig.appendChild(c); fig.appendChild(cap);
      fig.onclick = () => { state.pinned = true; select(i); };
      $("maps").appendChild(fig);
    }
  });
  $("words").onmouseleave = () => { if (!state.pinned) select(state.selected); };
  renderGates(list, r.attention);
  select(0);
}

function renderGates(list, prediction) {
  const gates = prediction.gates;
  if (!gates || !list.length) return;
  const levels = gates[0].length;
  const table = $("gatetable");
  const head = document.createElement("tr");
  head.innerHTML = "<th>word</th>" + Array.from({ length: levels }, (_, l) => `<th>level ${l + 1}</th>`).join("");
  table.appendChild(head);
  list.forEach((w, i) => {
    const row = document.createElement("tr"); row.dataset.index = String(i);
    const g = gates[w.t], total = g.reduce((a, b) => a + b, 0) || 1;
    const cell = document.createElement("td"); cell.textContent = w.text; row.appendChild(cell);
    g.forEach((v) => {
      const td = document.createElement("td");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.round(60 * v / total)}px`;
      td.appendChild(bar); td.appendChild(document.createTextNode(` ${v.toFixed(2)}`));
      row.appendChild(td);
    });
    row.onmouseenter = () => { if (!state.pinned) select(i); };
    table.appendChild(row);
  });
  $("gates").classList.remove("hidden");
}

function select(i) {
  state.selected = i;
  for (const el of document.querySelectorAll("#words .word, #maps figure, #gatetable tr[data-index]")) {
    el.classList.toggle("active", Number(el.dataset.index) === i);
  }
  const w = state.words && state.words[i];
  const map = w ? attentionMap(state.model, state.result.attention, w.t) : null;
  drawView(map);
  $("view").dataset.word = w ? w.text : "";
  $("legendword").textContent = w ? `\u201c${w.text}\u201d` : "";
  $("legend").classList.toggle("hidden", !map);
}

function drawOn(canvas, map, alpha) {
  // The image (or grey) with `map` over it: one cell per patch, smoothed when scaled up.
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const image = state.image && state.image.element;
  if (image) ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  else { ctx.fillStyle = "#c9ced8"; ctx.fillRect(0, 0, canvas.width, canvas.height); }
  if (!map) return;
  const cells = document.createElement("canvas");
  cells.width = map.cols; cells.height = map.rows;
  const cctx = cells.getContext("2d");
  const data = cctx.createImageData(map.cols, map.rows);
  const peak = Math.max(...map.values) || 1;
  map.values.forEach((v, k) => {
    const [r, g, b] = colour(v / peak);
    data.data.set([r, g, b, 255], 4 * k);
  });
  cctx.putImageData(data, 0, 0);
  ctx.save();
  ctx.globalAlpha = alpha;
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(cells, 0, 0, canvas.width, canvas.height);
  ctx.restore();
}

function drawView(map) {
  const canvas = $("view");
  const image = state.image && state.image.element;
  const width = 480;
  const height = image ? Math.max(1, Math.round(width * image.naturalHeight / image.naturalWidth)) : 360;
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  drawOn(canvas, map, 0.6);
}

function drawColorbar() {
  const c = $("colorbar"), ctx = c.getContext("2d");
  for (let x = 0; x < c.width; x++) {
    const [r, g, b] = colour(x / (c.width - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fillRect(x, 0, 1, c.height);
  }
}

const drop = $("drop");
["dragenter", "dragover"].forEach((e) => drop.addEventListener(e, (ev) => {
  ev.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((e) => drop.addEventListener(e, (ev) => {
  ev.preventDefault(); drop.classList.remove("over");
}));
// A drop anywhere on the page is taken (the drop zone only shows where).
document.addEventListener("dragover", (ev) => ev.preventDefault());
document.addEventListener("drop", (ev) => {
  ev.preventDefault(); drop.classList.remove("over"); useFile(ev.dataTransfer.files[0]);
});
$("file").addEventListener("change", (ev) => useFile(ev.target.files[0]));
$("prompt").addEventListener("change", () => caption());
$("sample").addEventListener("click", () => sampleAgain(false));
$("newseed").addEventListener("click", () => sampleAgain(true));
drawColorbar();
drawView(null);
loadModels();
</script>
</body>
</html>
"""
