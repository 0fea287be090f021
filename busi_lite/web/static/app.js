// busi-lite local page: upload, show each record of POST /api/predict, draw lesion boxes, CSV.
// No external assets. Timings of upload-to-verdict are kept in window.busiTimings (ms).
"use strict";

const state = { info: null, entries: [], nextId: 1, done: 0, coords: [], site: null, warned: false };
window.busiTimings = [];

// ------------------------------------------------------------------ helpers
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
const SCORE_NAME = "unusual-input score";   // the one name of ood_score on every face
const pct = (p) => (100 * p).toFixed(1) + " %";
const fmt = (x, d = 3) => (x === null || x === undefined ? "" : Number(x).toFixed(d));
function setStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("error", !!isError);
}

// Colour scale for lesion probability 0..1 (dark blue -> cyan -> yellow -> red), alpha grows with p.
const STOPS = [[0, [40, 30, 120]], [0.35, [40, 170, 230]], [0.6, [250, 220, 60]], [1, [210, 30, 20]]];
function colour(p) {
  p = Math.min(1, Math.max(0, p));
  for (let i = 1; i < STOPS.length; i++) {
    const [p1, c1] = STOPS[i], [p0, c0] = STOPS[i - 1];
    if (p <= p1) {
      const t = (p - p0) / (p1 - p0);
      return c0.map((v, j) => Math.round(v + t * (c1[j] - v)));
    }
  }
  return STOPS[STOPS.length - 1][1];
}
const alphaOf = (p) => Math.round(255 * Math.min(0.65, 0.8 * p));   // low p: nearly transparent

// ------------------------------------------------------------------ model info
async function loadInfo() {
  const r = await fetch("/api/info");
  const info = await r.json();
  state.info = info;
  const m = info.model, b = info.backbone, pv = info.provenance;
  const t = info.malignant_threshold;
  const digest = pv && pv.digest ? ` digest ${pv.digest.slice(0, 12)}` : "";
  document.getElementById("model-info").replaceChildren(
    el("div", { id: "model-name", text: `model ${m.name || "?"} (${m.head || "?"} head${m.has_lesion_map ? ", lesion map" : ""}${m.supports_box ? ", lesion-box mode" : ""};${digest})` }),
    el("div", { id: "model-threshold", text: t === null ? "no malignant screening threshold"
      : `screening threshold p(malignant) >= ${fmt(t)}, ${pv ? pv.threshold_source : "origin unknown"}` }),
    el("div", { id: "model-sources", text: m.trained_on && m.trained_on.length ? `trained on ${m.trained_on.join(" · ")}`
      : info.site && info.site.trained_on.length ? `trained on ${info.site.trained_on.join(" · ")}`
      : "training sources not named on the model card" }),
    el("div", { id: "model-site", "data-validated": info.site && info.site.validated ? "1" : "0",
                text: info.site ? info.site.text : "site not given" }),
    el("div", { text: `backbone ${b.file} (${b.sha256.slice(0, 12)}) · busi-lite ${info.version}` }));
}

// ------------------------------------------------------------------ upload
function isTooBig(file) {
  return state.info && file.size > state.info.limits.max_file_mb * 1024 * 1024;
}

// Split files into requests below the request size limit (and 16 files each).
function chunks(files) {
  const limit = state.info ? 0.95 * state.info.limits.max_request_mb * 1024 * 1024 : 50e6;
  const out = [];
  let cur = [], size = 0;
  for (const f of files) {
    if (cur.length && (size + f.size > limit || cur.length >= 16)) { out.push(cur); cur = []; size = 0; }
    cur.push(f); size += f.size;
  }
  if (cur.length) out.push(cur);
  return out;
}

async function postFiles(files, box, showAnyway) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  form.append("preview", "1");
  if (showAnyway) form.append("show_anyway", "1");
  if (box) form.append("box", box.map((v) => Math.round(v)).join(","));
  const r = await fetch("/api/predict", { method: "POST", body: form });
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `server answered ${r.status} without JSON` }; }
  return { ok: r.ok, status: r.status, body };
}

async function handleFiles(fileList) {
  try {
    await predictFiles(fileList);
  } catch (e) {
    setStatus(`cannot reach the busi-lite server (${e.message}) -> is it still running?`, true);
  } finally {
    document.body.dataset.done = String(++state.done);   // uploads finished (tests wait on it)
  }
}

async function predictFiles(fileList) {
  const t0 = performance.now();
  const files = Array.from(fileList);
  if (!files.length) return;
  if (!state.info) await loadInfo();
  setStatus(`predicting ${files.length} file(s)...`);
  let first = true, nRec = 0, nErr = 0;
  const group = el("div", { class: "batch-group" });          // newest upload on top, files in order
  document.getElementById("results").prepend(group);
  state.target = group;
  const good = [];
  for (const f of files) {
    if (isTooBig(f)) {
      addEntry(f, null, `${f.name}: ${(f.size / 1048576).toFixed(1)} MB is over the ` +
               `${state.info.limits.max_file_mb} MB limit per file -> downscale or crop the file, or restart ` +
               "the server with a higher limit: busi-lite serve --max-file-mb N");
      nErr++;
    } else good.push(f);
  }
  for (const part of chunks(good)) {
    const res = await postFiles(part);
    if (res.ok) {
      // records come in upload order, one or more (DICOM frames) per file, all with that file's name
      let k = 0;
      for (const f of part) {
        const recs = [];
        while (k < res.body.length && (recs.length === 0 || res.body[k].path === recs[0].path)) recs.push(res.body[k++]);
        addEntry(f, recs.length ? recs : null, recs.length ? null : `${f.name}: no result returned`);
        nRec += recs.filter((r) => r.ok).length;
        nErr += recs.filter((r) => !r.ok).length;
      }
    } else {
      const byName = {};
      for (const r of res.body.results || []) (byName[r.path] = byName[r.path] || []).push(r);
      for (const f of part) {
        const recs = byName[f.name];
        if (recs) addEntry(f, recs, null); else addEntry(f, null, res.body.error || `error ${res.status}`);
        nErr++;
      }
    }
    if (first) {
      await new Promise((ok) => requestAnimationFrame(() => setTimeout(ok, 0)));   // after the verdict is painted
      const ms = performance.now() - t0;
      window.busiTimings.push({ files: part.length, ms });
      first = false;
    }
  }
  await siteCheck();
  const total = performance.now() - t0;
  setStatus(`${nRec} result(s)` + (nErr ? `, ${nErr} file(s) could not be used` : "") +
            ` in ${(total / 1000).toFixed(2)} s`, nErr > 0 && nRec === 0);
  renderTable();
}

// ------------------------------------------------------------------ entries and cards
function addEntry(file, records, error) {
  const entry = { id: state.nextId++, file, records: records || [], error, frame: 0, box: null, showMap: true };
  for (const r of entry.records) if (r.ok && r.shift_coords) state.coords.push(r.shift_coords);
  state.entries.push(entry);
  const card = el("article", { class: "card", id: `card-${entry.id}`, "data-file": file.name });
  (state.target || document.getElementById("results")).append(card);
  renderCard(entry);
}

function current(entry) { return entry.records[entry.frame] || null; }

function renderCard(entry) {
  const card = document.getElementById(`card-${entry.id}`);
  card.replaceChildren();
  const rec = current(entry);
  if (!rec || !rec.ok) {
    card.classList.add("failed");
    const msg = entry.error || (rec && rec.error) || "unknown error";
    card.append(el("h3", { text: entry.file.name }), el("p", { class: "error-text", text: msg }));
    return;
  }
  card.classList.remove("failed");
  card.append(viewer(entry, rec), details(entry, rec));
}

function viewer(entry, rec) {
  const wrap = el("div", { class: "viewer" });
  if (entry.records.length > 1) {
    const label = el("span", { text: `frame index ${rec.frame ?? entry.frame} (${entry.records.length} frames)` });
    const slider = el("input", { type: "range", min: "0", max: String(entry.records.length - 1),
                                 value: String(entry.frame), "aria-label": "frame" });
    slider.addEventListener("input", () => { entry.frame = Number(slider.value); renderCard(entry); });
    wrap.append(el("div", { class: "frame-picker" }, label, slider));
  }
  if (supportsBox() && !entry.box) {
    wrap.append(el("div", { class: "box-cta", "data-box-cta": "1" },
      el("b", { text: "Draw a box around the lesion" }), ": drag on the image. The lesion-box answer is the one to " +
      "trust at a hospital the model was not trained on."));
  }
  const canvas = el("canvas", { class: "image", "aria-label": `image ${entry.file.name} with lesion map` });
  wrap.append(canvas);
  const img = new Image();
  img.onload = () => { entry.img = img; drawImage(entry, canvas); };
  img.src = rec.preview;
  attachBoxDrawing(entry, canvas);

  const tools = el("div", { class: "viewer-tools" });
  if (rec.lesion) {
    const cb = el("input", { type: "checkbox", id: `map-${entry.id}` });
    cb.checked = entry.showMap;
    cb.addEventListener("change", () => { entry.showMap = cb.checked; drawImage(entry, canvas); });
    tools.append(el("label", { for: `map-${entry.id}` }, cb, " lesion map"), legend());
  } else if (rec.withheld) {
    tools.append(el("span", { text: "lesion map withheld (unusual input)" }));
  } else {
    tools.append(el("span", { text: "this model has no lesion map" }));
  }
  tools.append(el("span", { text: "dashed: the square the network sees; drag to draw a lesion box" }));
  if (entry.box) {
    const rm = el("button", { type: "button", class: "button quiet remove-box", text: "remove the lesion box" });
    rm.addEventListener("click", () => predictWithBox(entry, null));
    tools.append(rm);
  }
  if (rec.proposed_box && supportsBox() && !entry.box) {
    const use = el("button", { type: "button", class: "button quiet use-proposed", text: "use the proposed box (dotted)" });
    use.addEventListener("click", () => predictWithBox(entry, rec.proposed_box));
    tools.append(use);
  }
  wrap.append(tools);
  return wrap;
}

function legend() {
  const c = el("canvas", { width: "120", height: "10", "aria-hidden": "true" });
  const g = c.getContext("2d");
  for (let x = 0; x < 120; x++) {
    const [r, gg, b] = colour(x / 119);
    g.fillStyle = `rgb(${r},${gg},${b})`;
    g.fillRect(x, 0, 1, 10);
  }
  return el("span", { class: "legend" }, "lesion p: 0", c, "1");
}

function drawImage(entry, canvas) {
  const rec = current(entry), img = entry.img;
  if (!img || !rec) return;
  const [w, h] = rec.size;
  const maxSide = 440;
  const s = Math.min(maxSide / w, maxSide / h);
  canvas.width = Math.round(w * s);
  canvas.height = Math.round(h * s);
  entry.scale = s;
  const g = canvas.getContext("2d");
  g.drawImage(img, 0, 0, canvas.width, canvas.height);
  const [l, t, r, b] = rec.crop_box;
  if (rec.lesion && entry.showMap) {
    const n = rec.lesion.length;
    const grid = document.createElement("canvas");
    grid.width = n; grid.height = n;
    const gg = grid.getContext("2d"), px = gg.createImageData(n, n);
    rec.lesion.forEach((row, i) => row.forEach((p, j) => {
      const [cr, cg, cb] = colour(p), k = 4 * (i * n + j);
      px.data.set([cr, cg, cb, alphaOf(p)], k);
    }));
    gg.putImageData(px, 0, 0);
    g.imageSmoothingEnabled = true;
    g.imageSmoothingQuality = "high";
    g.drawImage(grid, l * s, t * s, (r - l) * s, (b - t) * s);
  }
  g.save();
  g.setLineDash([6, 4]);
  g.strokeStyle = "rgba(255,255,255,0.7)";
  g.lineWidth = 1;
  g.strokeRect(l * s + 0.5, t * s + 0.5, (r - l) * s - 1, (b - t) * s - 1);
  g.restore();
  const box = entry.dragBox || entry.box;
  if (box) {
    g.strokeStyle = "#00e5ff";
    g.lineWidth = 2;
    g.strokeRect(box[0] * s, box[1] * s, (box[2] - box[0]) * s, (box[3] - box[1]) * s);
  } else if (rec.proposed_box && supportsBox()) {   // the lesion map's coarse box: a start the user corrects
    const pb = rec.proposed_box;
    g.save();
    g.setLineDash([2, 3]);
    g.strokeStyle = "#ffd400";
    g.lineWidth = 2;
    g.strokeRect(pb[0] * s, pb[1] * s, (pb[2] - pb[0]) * s, (pb[3] - pb[1]) * s);
    g.restore();
  }
}

function supportsBox() {
  return Boolean(state.info && state.info.model && state.info.model.supports_box);
}

async function predictWithBox(entry, box) {
  entry.box = box;
  setStatus(box ? `predicting ${entry.file.name} with the lesion box...` : `predicting ${entry.file.name} again...`);
  const res = await postFiles([entry.file], box, entry.showAnyway);
  if (res.ok) {
    entry.records = res.body;
    entry.frame = Math.min(entry.frame, entry.records.length - 1);
    setStatus(box ? `${entry.file.name}: predicted again with lesion box ${box.map(Math.round).join(",")}`
                  : `${entry.file.name}: predicted again` + (entry.showAnyway ? " (verdicts shown anyway)" : ""));
  } else {
    setStatus(res.body.error || `error ${res.status}`, true);
  }
  renderCard(entry);
  renderTable();
}

function attachBoxDrawing(entry, canvas) {
  let start = null;
  const toImage = (ev) => {
    const rect = canvas.getBoundingClientRect();
    const [w, h] = current(entry).size;
    const x = ((ev.clientX - rect.left) / rect.width) * w;
    const y = ((ev.clientY - rect.top) / rect.height) * h;
    return [Math.min(w, Math.max(0, x)), Math.min(h, Math.max(0, y))];
  };
  canvas.addEventListener("mousedown", (ev) => { start = toImage(ev); ev.preventDefault(); });
  canvas.addEventListener("mousemove", (ev) => {
    if (!start) return;
    const p = toImage(ev);
    entry.dragBox = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
    drawImage(entry, canvas);
  });
  const finish = async (ev) => {
    if (!start) return;
    const p = toImage(ev);
    const box = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
    start = null;
    entry.dragBox = null;
    if ((box[2] - box[0]) * entry.scale < 5 || (box[3] - box[1]) * entry.scale < 5) { drawImage(entry, canvas); return; }
    entry.box = box;
    drawImage(entry, canvas);
    await predictWithBox(entry, box);
  };
  canvas.addEventListener("mouseup", finish);
  canvas.addEventListener("mouseleave", (ev) => { if (start) finish(ev); });
}

function details(entry, rec) {
  const box = el("div", { class: "details" });
  const title = rec.frame !== undefined && entry.records.length > 1 ? `${rec.path} (frame ${rec.frame})` : rec.path;
  box.append(el("h3", { text: title }));
  if (rec.withheld) {
    box.append(withheldBox(entry, rec));
    if (supportsBox() && !rec.box_proba) box.append(boxFirst(recommendedReason(rec)));
  } else {
    const classes = Object.keys(rec.proba);
    const top = rec.label;
    const answer = el("div", { class: "answer", "data-answer": rec.malignant_alert ? "refer" : "no-referral" });
    answer.append(el("div", { class: "verdict" }, "Most probable: ",
      el("span", { class: `lab-${top}`, text: top }), " ", el("small", { text: `(${pct(rec.proba[top])})` })));
    answer.append(alertBox(rec));
    const why = recommendedReason(rec);
    if (recommended(rec) === "box") {
      // box first: the box answer is the headline; without a box, ask for one before any whole-image verdict
      if (rec.box_proba) {
        box.append(boxModeBox(rec), el("p", { class: "trust", "data-trust": "box", text: `Answer to trust: the lesion box (${why}).` }));
      } else {
        box.append(boxFirst(why));
      }
      const sub = el("details", { class: "whole-secondary" }, el("summary", { text: "whole-image verdict (not the answer to trust here)" }));
      answer.classList.add("secondary");
      sub.append(answer);
      box.append(sub);
    } else {
      box.append(answer);
      if (why) box.append(el("p", { class: "trust", "data-trust": "whole_image", text: `Answer to trust: the whole-image verdict (${why}).` }));
    }
    if (entry.showAnyway && (rec.flags || []).some((f) => f.name === "unusual_input")) {
      const cb = el("input", { type: "checkbox", "data-show-anyway": "1" });
      cb.checked = true;
      cb.addEventListener("change", async () => { entry.showAnyway = cb.checked; await predictWithBox(entry, entry.box); });
      box.append(el("p", { class: "anyway" }, el("b", { text: "Shown anyway for research use" }),
        ": this image is unlike the training images (unusual input). ", el("label", { class: "show-anyway" }, cb, " show anyway")));
    }
    box.append(el("div", { class: "section-title", text: "Probabilities" }));
    const bars = el("div", { class: "bars" });
    for (const c of classes) {
      const fill = el("span", { class: `c-${c}` });
      fill.style.width = (100 * rec.proba[c]).toFixed(1) + "%";
      bars.append(el("span", { text: c }), el("div", { class: "bar", role: "img", "aria-label": `${c} ${pct(rec.proba[c])}` }, fill),
                  el("span", { class: "pct", "data-class": c, text: pct(rec.proba[c]) }));
    }
    box.append(bars);
  }
  box.append(el("div", { class: "section-title", text: "Flags" }));
  const flags = el("ul", { class: "flags" });
  if (rec.flags.length) {
    for (const f of rec.flags) flags.append(el("li", { "data-flag": f.name }, el("b", { text: f.name }), ": " + f.reason));
  } else {
    const by = (v) => Object.keys(rec.checks || {}).filter((k) => rec.checks[k] === v);
    const parts = [["passed", by("passed")], ["not applicable", by("not_applicable")], ["disabled", by("disabled")]]
      .filter(([, names]) => names.length).map(([what, names]) => `${what}: ${names.join(", ")}`);
    flags.append(el("li", { class: "none", text: "no flag raised" + (parts.length ? ` (${parts.join("; ")})` : "") }));
  }
  box.append(flags);
  if (rec.box_proba && (rec.withheld || recommended(rec) !== "box")) box.append(boxModeBox(rec));
  if (rec.notes && rec.notes.length) box.append(el("p", { class: "notes", text: rec.notes.join("; ") }));
  const info = state.info, pv = rec.model;
  box.append(el("p", { class: "provenance", text: pv
    ? `Answered by model ${pv.name} (digest ${(pv.digest || "-").slice(0, 12)}) on backbone ${info ? info.backbone.file : "?"}; ` +
      (pv.malignant_threshold === null ? "no screening threshold." : `screening threshold ${fmt(pv.malignant_threshold)} ${pv.threshold_source}.`)
    : "model unknown" }));
  const meta = [];
  if (rec.lesion_peak !== null && rec.lesion_peak !== undefined) meta.push(`lesion peak ${fmt(rec.lesion_peak, 2)}`);
  if (rec.ood_score !== null && rec.ood_score !== undefined) meta.push(`${SCORE_NAME} ${fmt(rec.ood_score, 2)}`);
  meta.push(`${rec.size[0]}x${rec.size[1]} px`);
  if (rec.box) meta.push(`lesion box ${rec.box.join(",")}`);
  if (rec.sop_instance_uid) meta.push(`SOP Instance UID ${rec.sop_instance_uid}`);
  box.append(el("p", { class: "meta", text: meta.join(" · ") }));
  return box;
}

// ------------------------------------------------------------------ which answer to trust; the session's site check
// the rule is the server's (busi_lite.serving.advice): once the session is checked, its answer holds for
// every card except an unusual image (which keeps the box when the session looks like a training site);
// before that, each record's own answer (box first unless the site given is validated)
function sessionAnswer(rec) {
  const s = state.site;
  if (!s || !s.recommended) return null;
  const unusual = (rec.flags || []).some((f) => f.name === "unusual_input");
  return s.recommended === "box" || !unusual ? s : null;
}
function recommended(rec) {
  const s = sessionAnswer(rec);
  return s ? s.recommended : rec.recommended;
}
function recommendedReason(rec) {
  const s = sessionAnswer(rec);
  return (s ? s.recommended_reason : rec.recommended_reason) || "";
}

// Once the session holds enough images, ask the server whether they look like a training site;
// warn once, and make the lesion box the answer to trust on every card.
async function siteCheck() {
  const min = state.info && state.info.model.site_check_min;   // the model card's batch_min; null: no check
  if (!min || state.coords.length < min) return;
  let res = null;
  try {
    const r = await fetch("/api/site-check", { method: "POST", headers: { "content-type": "application/json" },
                                                body: JSON.stringify({ coords: state.coords }) });
    if (!r.ok) return;
    res = await r.json();
  } catch (e) { return; }
  const was = state.site && state.site.recommended_reason;
  state.site = res;
  if (res.shifted && !state.warned) {
    state.warned = true;
    const w = document.getElementById("site-warning");
    w.replaceChildren(el("b", { text: "Site warning: " }), res.warning);
    w.hidden = false;
  }
  if (res.recommended_reason !== was) for (const e of state.entries) renderCard(e);
}

function boxFirst(why) {
  return el("div", { class: "box-first", "data-box-first": "1" },
    el("b", { text: "Draw a box around the lesion first." }),
    ` The whole-image verdict is not validated here${why ? ` (${why})` : ""}; drag on the image to get the lesion-box answer.`);
}

// lesion-box mode: the box head's answer from [whole image, lesion crop] (models with a box head)
function boxModeBox(rec) {
  const pm = rec.box_proba.malignant, t = rec.box_malignant_threshold;
  const text = ` — box head on [whole image, lesion crop ${rec.box.join(",")}]: p(benign) ${fmt(rec.box_proba.benign)}, ` +
    `p(malignant) ${fmt(pm)} ${rec.box_malignant_alert ? ">=" : "<"} t = ${fmt(t)}`;
  return el("div", { class: `alert ${rec.box_malignant_alert ? "on" : "off"}`, "data-box-alert": rec.box_malignant_alert ? "on" : "off" },
    el("b", { text: `Lesion-box mode: alert ${rec.box_malignant_alert ? "ON" : "off"}` }), text);
}

// the sensitive screen in the server's words (record field "screen": busi_lite.serving.verdict.screen_sentence)
const screenSentence = (rec) => rec.screen || "";

function alertBox(rec) {
  const t = rec.malignant_threshold;
  if (t === null || t === undefined || rec.malignant_alert === null) {
    return el("div", { class: "alert none", text: "Sensitive screen: this model has no screening threshold" });
  }
  return rec.malignant_alert
    ? el("div", { class: "alert on", "data-alert": "on" }, el("b", { text: "Sensitive screen: REFER" }), " — " + screenSentence(rec))
    : el("div", { class: "alert off", "data-alert": "off" }, el("b", { text: "Sensitive screen: no referral" }), " — " + screenSentence(rec));
}

// unusual input: no verdict, the reason, and a research-use toggle that asks the server again
function withheldBox(entry, rec) {
  const why = el("div", { class: "withheld", "data-withheld": "1" },
    el("b", { text: "Verdict withheld" }), ` — ${rec.withheld}. No label, screen or lesion map is given for an image unlike the training images.`);
  const toggle = el("label", { class: "show-anyway" });
  const cb = el("input", { type: "checkbox", "data-show-anyway": "1" });
  cb.addEventListener("change", async () => { entry.showAnyway = cb.checked; await predictWithBox(entry, entry.box); });
  toggle.append(cb, " show the verdict anyway (research use)");
  return el("div", {}, why, toggle);
}

// ------------------------------------------------------------------ batch table and CSV
function rows() {
  const out = [];
  for (const e of state.entries) {
    if (!e.records.length) { out.push({ path: e.file.name, ok: false, error: e.error }); continue; }
    for (const r of e.records) out.push(r);
  }
  return out;
}

function classNames() {
  return state.info ? state.info.classes : ["normal", "benign", "malignant"];
}

function renderTable() {
  const all = rows();
  document.getElementById("batch").hidden = all.length === 0;
  const cls = classNames();
  const head = ["#", "file", "frame", "most probable", ...cls.map((c) => `p(${c})`), "sensitive screen", "lesion box",
                "box screen", "flags"];
  const thead = document.querySelector("#table thead"), tbody = document.querySelector("#table tbody");
  thead.replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))));
  tbody.replaceChildren();
  all.forEach((r, i) => {
    const tr = el("tr", { class: r.malignant_alert ? "alert-row" : r.withheld ? "withheld-row" : "" });
    tr.append(el("td", { class: "num", text: String(i + 1) }), el("td", { class: "file", text: r.path }),
              el("td", { class: "num", text: r.frame === null || r.frame === undefined ? "" : String(r.frame) }));
    if (!r.ok) {
      tr.append(el("td", { class: "error-text", colspan: String(cls.length + 5), text: r.error || "error" }));
    } else if (r.withheld) {
      tr.append(el("td", { class: "withheld-cell", colspan: String(cls.length + 4), text: `verdict withheld: ${r.withheld}` }),
                el("td", { text: r.flags.map((f) => f.name).join(", ") }));
    } else {
      tr.append(el("td", { text: r.label }));
      for (const c of cls) tr.append(el("td", { class: "num", text: fmt(r.proba[c]) }));
      tr.append(el("td", { class: "alert-cell", text: r.malignant_alert === null ? "n/a" : r.malignant_alert ? "REFER" : "no referral" }),
                el("td", { text: r.box ? r.box.join(",") : "" }),
                el("td", { class: "alert-cell", text: boxScreen(r) }),
                el("td", { text: r.flags.map((f) => f.name).join(", ") }));
    }
    tbody.append(tr);
  });
}

function boxScreen(r) {
  if (!r.box_proba) return r.box ? "no box mode" : "";
  return `${r.box_malignant_alert ? "REFER" : "no referral"} (p ${fmt(r.box_proba.malignant)})`;
}

function csvCell(v) {
  let s = v === null || v === undefined ? "" : String(v);
  if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;   // CSV injection (OWASP): never a formula
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function toCsv() {
  const cls = classNames();
  const head = ["file", "frame", "ok", "label", ...cls.map((c) => `p_${c}`), "malignant_alert", "malignant_threshold",
                "box", "box_p_malignant", "box_malignant_alert", "box_malignant_threshold",
                "lesion_peak", "ood_score", "flags", "flag_reasons", "notes", "withheld", "model", "model_digest",
                "threshold_source", "recommended", "recommended_reason", "error"];
  const lines = [head.join(",")];
  for (const r of rows()) {
    const p = r.proba || {}, bp = r.box_proba || {}, pv = r.model || {};
    lines.push([r.path, r.frame, r.ok, r.label, ...cls.map((c) => p[c]), r.malignant_alert, r.malignant_threshold,
                r.box ? r.box.join(" ") : "", bp.malignant, r.box_malignant_alert, r.box_malignant_threshold,
                r.lesion_peak, r.ood_score, (r.flags || []).map((f) => f.name).join(";"),
                (r.flags || []).map((f) => f.reason).join(" | "), (r.notes || []).join("; "), r.withheld,
                pv.name, pv.digest, pv.threshold_source, r.ok ? recommended(r) : "", r.ok ? recommendedReason(r) : "",
                r.error]
                 .map(csvCell).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

function downloadCsv() {
  const url = URL.createObjectURL(new Blob([toCsv()], { type: "text/csv" }));
  const a = el("a", { href: url, download: "busi-lite-results.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
window.busiCsv = toCsv;

// ------------------------------------------------------------------ wiring
function init() {
  const drop = document.getElementById("drop"), input = document.getElementById("file-input");
  input.addEventListener("change", () => { handleFiles(input.files); input.value = ""; });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); handleFiles(ev.dataTransfer.files); });
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") input.click(); });
  document.getElementById("csv").addEventListener("click", downloadCsv);
  document.getElementById("clear").addEventListener("click", () => {
    state.entries = [];
    state.coords = []; state.site = null; state.warned = false;
    document.getElementById("site-warning").hidden = true;
    document.getElementById("results").replaceChildren();
    renderTable();
    setStatus("");
  });
  loadInfo().catch(() => setStatus("cannot reach the busi-lite server", true));
}
init();
