// vaelab explorer: the live latent map (latentmap.js), the class table, sliders for latent_dim > 2 and a
// drawing pad, decoding and encoding in the page (nn.js); for a cvae, a class selector that decides the
// class its networks are given; for a vqvae, a code grid (codegrid.js) in place of all of these. Its data
// come from the server's JSON API, or from data blocks embedded in the page when it was exported
// (`vaelab explore --export`).
"use strict";

(function (vaelab) {
  const $ = (id) => document.getElementById(id);

  // --- where the runs come from ------------------------------------------------------------------

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(showError.timer);
    showError.timer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  async function api(path) {
    const response = await fetch(path);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || `${response.status} ${response.statusText}`);
    return data;
  }

  const embedded = (id) => JSON.parse($(id).textContent);

  // {runs(), run(id) -> {map, models}}: the server's API, or the page's own data blocks.
  const source = $("vaelab-runs") ? {
    runs: async () => embedded("vaelab-runs"),
    run: async (id) => embedded(`vaelab-run-${id}`),
  } : {
    runs: () => api("api/runs"),
    run: async (id) => {
      const [map, models] = await Promise.all([api(`api/runs/${id}/map`), api(`api/runs/${id}/model`)]);
      return { map, models };
    },
  };

  // --- the page's state, exposed for the browser tests ------------------------------------------------

  const state = { runs: [], run: null, map: null, models: null, cache: new Map() };
  window.vaelabExplorer = state;

  const live = new vaelab.LatentMap(
    { map: $("map"), decoded: $("decoded"), decodedInfo: $("decoded-coords"), strip: $("strip"), stripInfo: $("strip-info") },
    {
      steps: () => Math.max(2, Math.min(64, parseInt($("steps").value, 10) || 10)),
      onHover: (z) => setSliders(z),
      label: () => decodeClass(),
    },
  );
  state.live = live;
  const grid = new vaelab.CodeGrid({
    image: $("grid-image"), original: $("grid-original"), grid: $("code-grid"), random: $("random-codes"),
    hint: $("codes-hint"), decoded: $("decoded"), decodedInfo: $("decoded-coords"),
  });
  state.grid = grid;

  // --- a cvae's class: what its generator decodes as, and its encoder encodes a drawing as ---------------

  // The chosen class, or null where the run's networks read none.
  const decodeClass = () => ($("class-choice").hidden ? null : Number($("decode-class").value));

  function buildClassChoice(classes, names) {
    $("class-choice").hidden = !classes;
    if (!classes) return;
    const previous = Number($("decode-class").value) || 0;
    $("decode-class").replaceChildren(...[...Array(classes).keys()].map((c) => new Option(names[c] ?? String(c), c)));
    $("decode-class").value = previous < classes ? previous : 0;
  }

  $("decode-class").addEventListener("change", () => {
    live.redecode();
    if ($("drawn-coords").textContent !== "–") encodeDrawing();
  });
  Object.defineProperty(state, "picks", { get: () => live.picks });
  Object.defineProperty(state, "path", { get: () => live.path });
  Object.defineProperty(state, "drawn", { get: () => live.drawn });

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
        live.showPoint(sliderValues());
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
  const padCtx = pad.getContext("2d", { willReadFrequently: true });  // read back after every stroke
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
    encodeDrawing();
  });
  $("clear-pad").addEventListener("click", () => {
    clearPad();
    live.setDrawn(null);
    $("drawn-coords").textContent = "–";
  });

  // The data's paper: 0 where the images' background is dark (MNIST's black, the shapes' black), 1 where it
  // is light; the ink is the other. From pagedata's "background", the median colour of the test images' borders.
  const paperOf = (background) => (background.reduce((a, b) => a + b, 0) / background.length < 0.5 ? 0 : 1);

  // The drawing as the network's input at the run's own size, MNIST-like: the ink's bounding box scaled
  // into 20/28 of the frame, then shifted so its centre of mass sits at the centre. The pad's black ink on
  // white becomes ink on the data's paper (`paperOf`), in every channel: MNIST's 1 on 0, white on black for the
  // shapes, black on white for images on a light background.
  function drawingPixels([h, w, c], paper) {
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
    [small.width, small.height] = [w, h];
    const s = small.getContext("2d");
    s.fillStyle = "#fff";
    s.fillRect(0, 0, w, h);
    const [bw, bh] = [(20 / 28) * w * (x1 - x0 + 1) / side, (20 / 28) * h * (y1 - y0 + 1) / side];
    s.drawImage(pad, x0, y0, x1 - x0 + 1, y1 - y0 + 1, (w - bw) / 2, (h - bh) / 2, bw, bh);
    const rgba = s.getImageData(0, 0, w, h).data;
    const ink = new Float64Array(h * w).map((_, i) => 1 - rgba[4 * i] / 255);
    let [mass, mx, my] = [0, 0, 0];
    ink.forEach((v, i) => { mass += v; mx += v * (i % w); my += v * Math.floor(i / w); });
    const dx = Math.round((w - 1) / 2 - mx / mass), dy = Math.round((h - 1) / 2 - my / mass);
    const value = (v) => paper + (1 - 2 * paper) * v;  // ink -> the pixel value
    const pixels = new Float64Array(h * w * c).fill(value(0));
    ink.forEach((v, i) => {
      const x = (i % w) + dx, y = Math.floor(i / w) + dy;
      if (x >= 0 && x < w && y >= 0 && y < h) pixels.fill(value(Math.min(1, Math.max(0, v))), (y * w + x) * c, (y * w + x + 1) * c);
    });
    return pixels;
  }

  function encodeDrawing() {
    if (!state.models.encoder) return;
    const pixels = drawingPixels(state.map.image_shape, paperOf(state.map.background));
    if (!pixels) return;
    state.lastDrawing = Array.from(pixels);  // what was encoded, for the browser tests
    const [zMean] = state.models.encoder.predict(pixels, decodeClass());
    const z = Array.from(zMean);
    vaelab.paintImage($("reconstruction"), live.decode(z), state.map.image_shape);
    $("drawn-coords").textContent = vaelab.fmt(z);
    live.setDrawn(live.latentToPlane(z));
  }

  // The pad where the run's encoder is in the page; a note where it is not, on how the drawing is encoded
  // where the data are not MNIST-like (colour, or a light background), or where the class chosen above is
  // the drawing's (a cvae).
  function showPad(available, [h, w, c], background, conditional) {
    const paper = paperOf(background);
    const encoded = paper === 0 ? "white ink on black, like the images' dark background" :
      "black ink on white, like the images' light background";
    const kind = c === 1 ? "grey" : "colour";
    pad.parentElement.hidden = !available;
    const note = $("pad-note");
    const notes = !available
      ? ["This exported page leaves the encoder out to stay small, so drawings cannot be encoded here; " +
         "the served explorer (vaelab explore RUN) has it."]
      : [c === 1 && paper === 0 ? "" : `${h}x${w} ${kind} images: your drawing is encoded as ${encoded}.`,
         conditional ? "Your drawing is encoded, and decoded, as the class chosen above (decode as)." : ""];
    note.textContent = notes.filter(Boolean).join(" ");
    note.hidden = !note.textContent;
  }

  // --- the table of one test image per class ----------------------------------------------------------

  function showRunInfo() {
    const { run } = state.map;
    const codes = state.map.kind === "codes"
      ? `${state.map.code_length} codes of ${state.map.codebook_size}`
      : `variance ${run.variance}, latent_dim ${run.latent_dim}`;
    const epochs = `${run.epochs} epoch${run.epochs === 1 ? "" : "s"}`;
    $("run-info").textContent = `${run.preset}${run.family_note}: ${run.arch}, ${codes}, ${epochs}` +
      (run.test_loss === null ? "" : `, test loss ${run.test_loss.toFixed(2)} nats`);
  }

  function buildTable() {
    const { table, class_names: names, label_name: labelName, image_shape: shape } = state.map;
    $("table-card").hidden = table.length === 0;  // unlabelled data: no classes to show
    if (table.length === 0) return;
    $("table-title").textContent = `One test image per ${labelName}`;
    const dims = table[0].z_mean.length;
    const sigma = table[0].sigma !== null;
    const head = [labelName, "image", "test #", ...[...Array(dims).keys()].map((j) => `z_mean[${j}]`)];
    if (sigma) head.push(...[...Array(dims).keys()].map((j) => `σ[${j}]`));
    const headRow = document.createElement("tr");
    headRow.append(...head.map((text) => Object.assign(document.createElement("th"), { textContent: text })));
    $("table").tHead.replaceChildren(headRow);
    const body = $("table").tBodies[0];
    body.replaceChildren(...table.map((row) => {
      const tr = document.createElement("tr");
      tr.title = "click to use this image as an interpolation end";
      const cells = [names[row.label], null, row.index, ...row.z_mean.map((v) => v.toFixed(4)),
                     ...(row.sigma || []).map((v) => v.toFixed(4))];
      cells.forEach((c) => {
        const td = document.createElement("td");
        if (c === null) td.append(vaelab.imageCanvas(vaelab.base64Bytes(row.image), shape, "", 1 / 255));
        else td.textContent = c;
        tr.append(td);
      });
      tr.addEventListener("click", () => {
        tr.classList.add("chosen");
        if (live.picks.length >= 2) body.querySelectorAll("tr.chosen").forEach((r) => r !== tr && r.classList.remove("chosen"));
        live.pick(row.z_mean, row.coords);
      });
      return tr;
    }));
  }

  // --- start -------------------------------------------------------------------------------------

  async function loadRun(id) {
    if (!state.cache.has(id)) {
      const { map, models } = await source.run(id);
      state.cache.set(id, {  // an exported page may leave a large encoder out (explore/export.py): no drawing pad
        map,
        models: { generator: vaelab.nn.load(models.generator), encoder: models.encoder ? vaelab.nn.load(models.encoder) : null },
      });
    }
    return state.cache.get(id);
  }
  state.loadRun = loadRun;

  // The page's parts for a map, or for a vqvae's code grid.
  function showLayout(codes) {
    $("map-panel").hidden = codes;
    $("table-card").hidden = codes;
    $("below").hidden = codes;
    $("codes-panel").hidden = !codes;
  }

  async function selectRun(id) {
    const { map, models } = await loadRun(id);
    Object.assign(state, { run: state.runs.find((r) => r.id === id), map, models });
    showRunInfo();
    buildClassChoice(models.generator.classes, map.class_names);
    showLayout(map.kind === "codes");
    $("decoded-title").textContent = `Decoded ${map.label_name === "digit" ? "digit" : "image"}`;
    if (map.kind === "codes") {
      grid.show(map, models);
      return;
    }
    live.show(map, models);
    vaelab.fillLegend($("legend"), map.class_names, map.colors);
    $("pad-title").textContent = `Draw ${map.label_name === "digit" ? "a digit" : "an image"}`;
    showPad(models.encoder !== null, map.image_shape, map.background, Boolean(models.generator.classes));
    buildTable();
    buildSliders(state.run.latent_dim);
    const z = new Array(state.run.latent_dim).fill(0);
    live.showPoint(z);
    if ($("drawn-coords").textContent !== "–") encodeDrawing();
  }

  async function start() {
    clearPad();
    state.runs = await source.runs();
    $("run").replaceChildren(...state.runs.map((r) => new Option(`${r.name} (${r.preset})`, r.id)));
    $("run").addEventListener("change", (e) => selectRun(e.target.value).catch((err) => showError(String(err.message || err))));
    await selectRun(state.runs[0].id);
    document.body.dataset.ready = "true";
  }

  start().catch((e) => showError(String(e.message || e)));
})(window.vaelab = window.vaelab || {});
