// vaelab explorer: the latent map, live decoding, interpolation and a drawing pad, on vaelab's JSON API.
"use strict";

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];  // one per digit, as in the report

const $ = (id) => document.getElementById(id);
const state = {
  runs: [], run: null, map: null,
  view: { cx: 0, cy: 0, scale: 1 },
  picks: [],          // interpolation endpoints: {z, coords}
  path: null,         // interpolation points, in map coordinates
  drawn: null,        // map coordinates of the drawn digit's code
  hover: null,        // map coordinates under the pointer
  decodeBusy: false, decodePending: null,
};
window.vaelabExplorer = state;  // for the browser tests

// --- talking to the server ---------------------------------------------------------------------

async function api(path, body) {
  const options = body === undefined ? {} :
    { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    showError(data.detail || `${response.status} ${response.statusText}`);
    throw new Error(data.detail);
  }
  return data;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

// --- digits --------------------------------------------------------------------------------------

function paintDigit(canvas, b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = 255 - bytes[i];  // ink dark on white, as in the report's figures
    image.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
}

function digitCanvas(b64, title) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  canvas.className = "digit";
  if (title) canvas.title = title;
  paintDigit(canvas, b64);
  return canvas;
}

const fmt = (values) => "(" + values.map((v) => v.toFixed(3)).join(", ") + ")";

// --- the plane and the latent space ----------------------------------------------------------

// A point of the drawn plane -> a latent point: z = plane_mean + plane_axes · p.
function planeToLatent(p) {
  const { plane_mean: mean, plane_axes: axes } = state.map;
  return mean.map((m, j) => m + axes[j][0] * p[0] + axes[j][1] * p[1]);
}

function latentToPlane(z) {
  const { plane_mean: mean, plane_axes: axes } = state.map;
  const p = [0, 0];
  z.forEach((v, j) => { p[0] += (v - mean[j]) * axes[j][0]; p[1] += (v - mean[j]) * axes[j][1]; });
  return p;
}

// --- the map -----------------------------------------------------------------------------------

const canvas = $("map");
const ctx = canvas.getContext("2d");
let scatterLayer = null;  // the 10,000 points, redrawn only when the view changes

function toScreen([x, y]) {
  const { cx, cy, scale } = state.view;
  return [canvas.width / 2 + (x - cx) * scale, canvas.height / 2 - (y - cy) * scale];
}

function toPlane(px, py) {
  const { cx, cy, scale } = state.view;
  return [cx + (px - canvas.width / 2) / scale, cy - (py - canvas.height / 2) / scale];
}

function fitView() {
  const xs = state.map.coords.map((c) => c[0]), ys = state.map.coords.map((c) => c[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const scale = 0.92 * Math.min(canvas.width / (x1 - x0 || 1), canvas.height / (y1 - y0 || 1));
  state.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, scale };
  scatterLayer = null;
}

function drawScatter() {
  scatterLayer = document.createElement("canvas");
  scatterLayer.width = canvas.width;
  scatterLayer.height = canvas.height;
  const g = scatterLayer.getContext("2d");
  g.globalAlpha = 0.55;
  state.map.coords.forEach((c, i) => {
    const [x, y] = toScreen(c);
    g.fillStyle = COLORS[state.map.labels[i]];
    g.fillRect(x - 1, y - 1, 2.4, 2.4);
  });
  g.globalAlpha = 1;
  g.fillStyle = "#444";
  g.font = "12px system-ui, sans-serif";
  g.fillText(state.map.axis_labels[0] + " →", canvas.width - 70, canvas.height - 8);
  g.fillText("↑ " + state.map.axis_labels[1], 6, 14);
}

function marker([x, y], fill, radius, stroke = "#000") {
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fillStyle = fill;
  ctx.fill();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = stroke;
  ctx.stroke();
}

function drawMap() {
  if (!state.map) return;
  if (!scatterLayer) drawScatter();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(scatterLayer, 0, 0);
  for (const row of state.map.table) {
    const p = toScreen(row.coords);
    marker(p, COLORS[row.digit], 7);
    ctx.fillStyle = "#fff";
    ctx.font = "bold 9px system-ui, sans-serif";
    ctx.fillText(String(row.digit), p[0] - 2.5, p[1] + 3);
  }
  if (state.path) {
    ctx.beginPath();
    state.path.forEach((c, i) => { const [x, y] = toScreen(c); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1.5;
    ctx.stroke();
    state.path.forEach((c) => marker(toScreen(c), "#000", 2.5));
  }
  state.picks.forEach((pick) => marker(toScreen(pick.coords), "#fff", 5));
  if (state.drawn) marker(toScreen(state.drawn), "#ffd400", 8);
  if (state.hover) {
    const [x, y] = toScreen(state.hover);
    ctx.strokeStyle = "rgba(0,0,0,.45)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x - 8, y); ctx.lineTo(x + 8, y); ctx.moveTo(x, y - 8); ctx.lineTo(x, y + 8);
    ctx.stroke();
  }
}

// --- decoding under the pointer: at most one request in flight, the latest point wins ---------

async function decodeLive(z) {
  if (state.decodeBusy) { state.decodePending = z; return; }
  state.decodeBusy = true;
  try {
    const { images } = await api(`/api/runs/${state.run.id}/decode`, { points: [z] });
    paintDigit($("decoded"), images[0]);
    $("decoded-coords").textContent = "z = " + fmt(z);
    $("decoded").dataset.z = JSON.stringify(z);
  } catch (e) { /* shown by api() */ }
  state.decodeBusy = false;
  if (state.decodePending) {
    const next = state.decodePending;
    state.decodePending = null;
    decodeLive(next);
  }
}

// --- interpolation -----------------------------------------------------------------------------

async function pick(z, coords) {
  if (state.picks.length >= 2) state.picks = [];
  state.picks.push({ z, coords });
  state.path = null;
  drawMap();
  if (state.picks.length < 2) {
    $("strip-info").textContent = "first point chosen: " + fmt(z) + "; choose the second";
    return;
  }
  const steps = Math.max(2, Math.min(64, parseInt($("steps").value, 10) || 10));
  const result = await api(`/api/runs/${state.run.id}/interpolate`,
                           { start: state.picks[0].z, end: state.picks[1].z, steps });
  const strip = $("strip");
  strip.replaceChildren(...result.images.map((b64, i) => digitCanvas(b64, `${i}: ${fmt(result.points[i])}`)));
  state.path = result.points.map(latentToPlane);
  $("strip-info").textContent = `${steps} points from ${fmt(result.points[0])} to ${fmt(result.points[steps - 1])}`;
  drawMap();
}

// --- pointer on the map: hover decodes, drag pans, wheel zooms, click picks ------------------------

let drag = null;

canvas.addEventListener("pointerdown", (e) => {
  drag = { x: e.offsetX, y: e.offsetY, moved: false };
  canvas.setPointerCapture(e.pointerId);
});

canvas.addEventListener("pointermove", (e) => {
  if (!state.map) return;
  if (drag && (Math.abs(e.offsetX - drag.x) + Math.abs(e.offsetY - drag.y) > 3 || drag.moved)) {
    state.view.cx -= (e.offsetX - drag.x) / state.view.scale;
    state.view.cy += (e.offsetY - drag.y) / state.view.scale;
    drag = { x: e.offsetX, y: e.offsetY, moved: true };
    scatterLayer = null;
  }
  state.hover = toPlane(e.offsetX, e.offsetY);
  drawMap();
  if (!drag || !drag.moved) {
    const z = planeToLatent(state.hover);
    setSliders(z);
    decodeLive(z);
  }
});

canvas.addEventListener("pointerup", (e) => {
  const clicked = drag && !drag.moved;
  drag = null;
  if (clicked && state.map) {
    const coords = toPlane(e.offsetX, e.offsetY);
    pick(planeToLatent(coords), coords).catch(() => {});
  }
});

canvas.addEventListener("pointerleave", () => { state.hover = null; drawMap(); });

canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const before = toPlane(e.offsetX, e.offsetY);
  state.view.scale *= Math.exp(-e.deltaY * 0.0015);
  const after = toPlane(e.offsetX, e.offsetY);
  state.view.cx += before[0] - after[0];
  state.view.cy += before[1] - after[1];
  scatterLayer = null;
  drawMap();
}, { passive: false });

canvas.addEventListener("dblclick", () => { fitView(); drawMap(); });

// --- sliders, for latent_dim > 2 ---------------------------------------------------------------

function buildSliders(dim) {
  const box = $("sliders");
  box.replaceChildren();
  box.hidden = dim <= 2;
  if (dim <= 2) return;
  for (let j = 0; j < dim; j++) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), { type: "range", min: -4, max: 4, step: 0.01, value: 0 });
    const value = document.createElement("span");
    value.textContent = "0.00";
    input.addEventListener("input", () => {
      value.textContent = Number(input.value).toFixed(2);
      decodeLive(sliderValues());
    });
    label.append(`z[${j}]`, input, value);
    box.append(label);
  }
}

const sliderValues = () => [...$("sliders").querySelectorAll("input")].map((s) => Number(s.value));

function setSliders(z) {
  $("sliders").querySelectorAll("label").forEach((label, j) => {
    label.querySelector("input").value = z[j];
    label.querySelector("span").textContent = z[j].toFixed(2);
  });
}

// --- the drawing pad ---------------------------------------------------------------------------

const pad = $("pad");
const padCtx = pad.getContext("2d");
let drawing = false;

function clearPad() {
  padCtx.fillStyle = "#fff";
  padCtx.fillRect(0, 0, pad.width, pad.height);
}

pad.addEventListener("pointerdown", (e) => {
  drawing = true;
  pad.setPointerCapture(e.pointerId);
  padCtx.beginPath();
  padCtx.moveTo(e.offsetX, e.offsetY);
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  padCtx.lineTo(e.offsetX, e.offsetY);
  padCtx.strokeStyle = "#000";
  padCtx.lineWidth = 15;
  padCtx.lineCap = padCtx.lineJoin = "round";
  padCtx.stroke();
});
pad.addEventListener("pointerup", () => {
  if (!drawing) return;
  drawing = false;
  encodeDrawing().catch(() => {});
});
$("clear-pad").addEventListener("click", () => {
  clearPad();
  state.drawn = null;
  $("drawn-coords").textContent = "–";
  drawMap();
});

// Turns the drawing into an MNIST-like image: the ink's bounding box scaled into 20x20, then
// shifted so its centre of mass sits at the centre of the 28x28 frame.
function drawingPixels() {
  const { data, width, height } = padCtx.getImageData(0, 0, pad.width, pad.height);
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[4 * (y * width + x)] < 128) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    }
  }
  if (x1 < 0) return null;
  const side = Math.max(x1 - x0, y1 - y0) + 1;
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const s = small.getContext("2d");
  s.fillStyle = "#fff";
  s.fillRect(0, 0, 28, 28);
  const w = 20 * (x1 - x0 + 1) / side, h = 20 * (y1 - y0 + 1) / side;
  s.drawImage(pad, x0, y0, x1 - x0 + 1, y1 - y0 + 1, (28 - w) / 2, (28 - h) / 2, w, h);
  const pixels = [...s.getImageData(0, 0, 28, 28).data].filter((_, i) => i % 4 === 0).map((v) => 1 - v / 255);
  let [mass, mx, my] = [0, 0, 0];
  pixels.forEach((v, i) => { mass += v; mx += v * (i % 28); my += v * Math.floor(i / 28); });
  const dx = Math.round(13.5 - mx / mass), dy = Math.round(13.5 - my / mass);
  const centred = new Array(784).fill(0);
  pixels.forEach((v, i) => {
    const x = (i % 28) + dx, y = Math.floor(i / 28) + dy;
    if (x >= 0 && x < 28 && y >= 0 && y < 28) centred[y * 28 + x] = Math.min(1, Math.max(0, v));
  });
  return centred;
}

async function encodeDrawing() {
  const pixels = drawingPixels();
  if (!pixels) return;
  const result = await api(`/api/runs/${state.run.id}/encode`, { pixels });
  paintDigit($("reconstruction"), result.reconstruction);
  state.drawn = result.coords;
  $("drawn-coords").textContent = fmt(result.z_mean);
  drawMap();
}

// --- the table and the legend ------------------------------------------------------------------

function buildTable() {
  const { table, run } = state.map;
  const dims = table[0].z_mean.length;
  const sigma = table[0].sigma !== null;
  const head = ["digit", "image", "test #", ...[...Array(dims).keys()].map((j) => `z_mean[${j}]`)];
  if (sigma) head.push(...[...Array(dims).keys()].map((j) => `σ[${j}]`));
  $("table").tHead.replaceChildren(Object.assign(document.createElement("tr"),
    { innerHTML: head.map((h) => `<th>${h}</th>`).join("") }));
  const body = $("table").tBodies[0];
  body.replaceChildren(...table.map((row) => {
    const tr = document.createElement("tr");
    tr.title = "click to use this image as an interpolation end";
    const cells = [row.digit, null, row.index, ...row.z_mean.map((v) => v.toFixed(4)),
                   ...(row.sigma || []).map((v) => v.toFixed(4))];
    cells.forEach((c) => {
      const td = document.createElement("td");
      if (c === null) td.append(digitCanvas(row.image)); else td.textContent = c;
      tr.append(td);
    });
    tr.addEventListener("click", () => {
      tr.classList.add("chosen");
      if (state.picks.length >= 2) body.querySelectorAll("tr.chosen").forEach((r) => r !== tr && r.classList.remove("chosen"));
      pick(row.z_mean, row.coords).catch(() => {});
    });
    return tr;
  }));
  $("run-info").textContent = `${run.preset}: ${run.arch}, variance ${run.variance}, latent_dim ${run.latent_dim}, ` +
    `${run.epochs} epochs` + (run.test_loss === null ? "" : `, test loss ${run.test_loss.toFixed(2)} nats`);
}

function buildLegend() {
  $("legend").replaceChildren(...COLORS.map((color, digit) => {
    const li = document.createElement("li");
    li.innerHTML = `<span class="swatch" style="background:${color}"></span>${digit}`;
    return li;
  }));
}

// --- start -------------------------------------------------------------------------------------

async function selectRun(id) {
  state.run = state.runs.find((r) => r.id === id);
  state.map = await api(`/api/runs/${id}/map`);
  state.picks = []; state.path = null; state.drawn = null;
  $("strip").replaceChildren();
  $("strip-info").textContent = "";
  buildTable();
  buildSliders(state.run.latent_dim);
  $("map-hint").hidden = false;
  fitView();
  drawMap();
  const z = new Array(state.run.latent_dim).fill(0);
  decodeLive(z);
  if (state.drawn === null && $("drawn-coords").textContent !== "–") encodeDrawing().catch(() => {});
}

async function start() {
  buildLegend();
  clearPad();
  state.runs = await api("/api/runs");
  $("run").replaceChildren(...state.runs.map((r) => new Option(`${r.name} (${r.preset})`, r.id)));
  $("run").addEventListener("change", (e) => selectRun(e.target.value));
  await selectRun(state.runs[0].id);
  document.body.dataset.ready = "true";
}

start().catch((e) => showError(String(e.message || e)));
