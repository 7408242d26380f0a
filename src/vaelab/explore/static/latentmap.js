// The live latent map, shared by the explorer and the report: the test set's codes (pan, zoom), the image
// decoded under the pointer, and two clicks for an interpolation, all decoded in the page (nn.js).
"use strict";

(function (vaelab) {
  const UNLABELLED = "#3b6ea5";  // the points' colour where the data have no classes

  // --- images ----------------------------------------------------------------------------------------

  // Paints an image (height, width, channels) of values in [0, 1] (or bytes, with scale 1/255) on a
  // canvas at its own size, as in the report's figures: one channel as dark ink on white, three (or
  // more: the first three) as the colour they are; two channels, which no picture has, as grey from the first.
  function paintImage(canvas, values, [h, w, c], scale = 1) {
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    const grey = c < 3;
    for (let i = 0; i < h * w; i++) {
      for (let k = 0; k < 3; k++) {
        const v = Math.round(255 * Math.min(1, Math.max(0, values[i * c + (grey ? 0 : k)] * scale)));
        image.data[4 * i + k] = grey ? 255 - v : v;
      }
      image.data[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  function imageCanvas(values, shape, title, scale = 1) {
    const canvas = document.createElement("canvas");
    canvas.className = "digit";
    if (title) canvas.title = title;
    paintImage(canvas, values, shape, scale);
    return canvas;
  }

  const base64Bytes = (text) => Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  const fmt = (values) => "(" + Array.from(values, (v) => v.toFixed(3)).join(", ") + ")";

  // The legend: one swatch and name per class.
  function fillLegend(list, names, colors) {
    list.replaceChildren(...names.map((name, k) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colors[k];  // CSSOM, which the pages' policy allows (no inline style attribute)
      item.append(swatch, name);
      return item;
    }));
  }

  // --- the map ---------------------------------------------------------------------------------------

  // elements: {map: canvas, decoded: canvas, decodedInfo, strip, stripInfo}; options: {steps(): number,
  // onHover(z), label(): the class a conditional generator decodes as}. show(data, models) puts a run on
  // it: data as vaelab's pagedata.latent_map, models the loaded networks ({generator, encoder?} from
  // vaelab.nn.load).
  class LatentMap {
    constructor(elements, options = {}) {
      this.el = elements;
      this.options = options;
      this.canvas = elements.map;
      this.ctx = this.canvas.getContext("2d");
      this.data = null;
      this.view = { cx: 0, cy: 0, scale: 1 };
      this.z = null;      // the point shown as the decoded image
      this.picks = [];    // interpolation ends: {z, coords}
      this.path = null;   // the interpolation's points, in map coordinates
      this.drawn = null;  // map coordinates of a drawn image's code
      this.hover = null;  // map coordinates under the pointer
      this.scatter = null;
      this.pendingHover = null;
      this.firstDecode = true;
      this.listen();
    }

    show(data, models) {
      this.data = data;
      this.models = models;
      this.z = null;
      this.picks = [];
      this.path = null;
      this.drawn = null;
      this.el.strip.replaceChildren();
      this.el.stripInfo.textContent = "";
      this.fitView();
      this.draw();
    }

    get imageShape() { return this.data.image_shape; }

    // --- the plane and the latent space: z = plane_mean + plane_axes · p --------------------------

    planeToLatent(p) {
      const { plane_mean: mean, plane_axes: axes } = this.data;
      return mean.map((m, j) => m + axes[j][0] * p[0] + axes[j][1] * p[1]);
    }

    latentToPlane(z) {
      const { plane_mean: mean, plane_axes: axes } = this.data;
      const p = [0, 0];
      z.forEach((v, j) => { p[0] += (v - mean[j]) * axes[j][0]; p[1] += (v - mean[j]) * axes[j][1]; });
      return p;
    }

    toScreen([x, y]) {
      const { cx, cy, scale } = this.view;
      return [this.canvas.width / 2 + (x - cx) * scale, this.canvas.height / 2 - (y - cy) * scale];
    }

    toPlane(px, py) {
      const { cx, cy, scale } = this.view;
      return [cx + (px - this.canvas.width / 2) / scale, cy - (py - this.canvas.height / 2) / scale];
    }

    fitView() {
      let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
      for (const [x, y] of this.data.coords) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
      const { width, height } = this.canvas;
      const scale = 0.92 * Math.min(width / (x1 - x0 || 1), height / (y1 - y0 || 1));
      this.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, scale };
      this.scatter = null;
    }

    // --- drawing ---------------------------------------------------------------------------------

    drawScatter() {
      const layer = document.createElement("canvas");
      layer.width = this.canvas.width;
      layer.height = this.canvas.height;
      const g = layer.getContext("2d");
      const { coords, labels, colors, axis_labels: axes } = this.data;
      g.globalAlpha = 0.55;
      g.fillStyle = UNLABELLED;
      coords.forEach((c, i) => {
        const [x, y] = this.toScreen(c);
        if (labels.length) g.fillStyle = colors[labels[i]];
        g.fillRect(x - 1, y - 1, 2.4, 2.4);
      });
      g.globalAlpha = 1;
      g.fillStyle = "#444";
      g.font = "12px system-ui, sans-serif";
      g.fillText(axes[0] + " →", layer.width - 70, layer.height - 8);
      g.fillText("↑ " + axes[1], 6, 14);
      this.scatter = layer;
    }

    marker([x, y], fill, radius, stroke = "#000") {
      const ctx = this.ctx;
      ctx.beginPath();
      ctx.arc(x, y, radius, 0, 2 * Math.PI);
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = stroke;
      ctx.stroke();
    }

    draw() {
      if (!this.data) return;
      if (!this.scatter) this.drawScatter();
      const ctx = this.ctx;
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      ctx.drawImage(this.scatter, 0, 0);
      for (const row of this.data.table) {
        const p = this.toScreen(row.coords);
        this.marker(p, this.data.colors[row.label], 7);
        ctx.fillStyle = "#fff";
        ctx.font = "bold 9px system-ui, sans-serif";
        ctx.textAlign = "center";
        ctx.fillText(String(row.label), p[0], p[1] + 3);  // the class's number, as the figures ring it (plots.py)
        ctx.textAlign = "start";
      }
      if (this.path) {
        ctx.beginPath();
        this.path.forEach((c, i) => { const [x, y] = this.toScreen(c); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 1.5;
        ctx.stroke();
        this.path.forEach((c) => this.marker(this.toScreen(c), "#000", 2.5));
      }
      this.picks.forEach((pick) => this.marker(this.toScreen(pick.coords), "#fff", 5));
      if (this.drawn) this.marker(this.toScreen(this.drawn), "#ffd400", 8);
      if (this.hover) {
        const [x, y] = this.toScreen(this.hover);
        ctx.strokeStyle = "rgba(0,0,0,.8)";
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(x - 10, y); ctx.lineTo(x + 10, y); ctx.moveTo(x, y - 10); ctx.lineTo(x, y + 10);
        ctx.stroke();
      }
    }

    // --- decoding, in the page ---------------------------------------------------------------------

    decode(z) {
      const label = this.models.generator.classes && this.options.label ? this.options.label() : null;
      return this.models.generator.predict(z, label)[0];
    }

    // Decodes again what is shown (the point, the interpolation), as after a change of the class.
    redecode() {
      if (this.z) this.showPoint(this.z);
      if (this.picks.length === 2) this.decodeStrip();
    }

    // Decodes z and shows it as the decoded image; the first one marks the time for the benchmark.
    showPoint(z) {
      const image = this.decode(z);
      this.z = z;
      paintImage(this.el.decoded, image, this.imageShape);
      this.el.decodedInfo.textContent = "z = " + fmt(z);
      this.el.decoded.dataset.z = JSON.stringify(z);
      if (this.firstDecode) {
        this.firstDecode = false;
        performance.mark("vaelab-first-decode");
      }
      return image;
    }

    // The point under the pointer, at screen position (px, py) of the canvas.
    hoverAt(px, py) {
      this.hover = this.toPlane(px, py);
      this.draw();
      const z = this.planeToLatent(this.hover);
      if (this.options.onHover) this.options.onHover(z);
      this.showPoint(z);
    }

    // Interpolation ends: the first pick waits for the second, the second decodes the segment.
    pick(z, coords) {
      if (this.picks.length >= 2) this.picks = [];
      this.picks.push({ z, coords });
      this.path = null;
      if (this.picks.length < 2) {
        this.el.stripInfo.textContent = "first point chosen: " + fmt(z) + "; choose the second";
        this.draw();
        return;
      }
      this.decodeStrip();
    }

    // The interpolation between the two picks, decoded into the strip.
    decodeStrip() {
      const steps = this.options.steps ? this.options.steps() : 10;
      const [start, end] = [this.picks[0].z, this.picks[1].z];
      const points = [];
      for (let k = 0; k < steps; k++) {
        const t = k / (steps - 1);
        points.push(start.map((s, j) => (1 - t) * s + t * end[j]));
      }
      this.el.strip.replaceChildren(...points.map((p, k) => imageCanvas(this.decode(p), this.imageShape, `${k}: ${fmt(p)}`)));
      this.path = points.map((p) => this.latentToPlane(p));
      this.el.stripInfo.textContent = `${steps} points from ${fmt(start)} to ${fmt(end)}`;
      this.draw();
    }

    setDrawn(coords) {
      this.drawn = coords;
      this.draw();
    }

    // --- the pointer: hover decodes (once per frame), drag pans, wheel zooms, click picks ----------------

    listen() {
      const canvas = this.canvas;
      let drag = null;
      canvas.addEventListener("pointerdown", (e) => {
        drag = { x: e.offsetX, y: e.offsetY, moved: false };
        canvas.setPointerCapture(e.pointerId);
      });
      canvas.addEventListener("pointermove", (e) => {
        if (!this.data) return;
        if (drag && (drag.moved || Math.abs(e.offsetX - drag.x) + Math.abs(e.offsetY - drag.y) > 3)) {
          this.view.cx -= (e.offsetX - drag.x) / this.view.scale;
          this.view.cy += (e.offsetY - drag.y) / this.view.scale;
          drag = { x: e.offsetX, y: e.offsetY, moved: true };
          this.scatter = null;
          this.hover = this.toPlane(e.offsetX, e.offsetY);
          this.draw();
          return;
        }
        if (this.pendingHover === null) requestAnimationFrame(() => this.flushHover());
        this.pendingHover = [e.offsetX, e.offsetY];
      });
      canvas.addEventListener("pointerup", (e) => {
        const clicked = drag && !drag.moved;
        drag = null;
        if (clicked && this.data) {
          const coords = this.toPlane(e.offsetX, e.offsetY);
          this.pick(this.planeToLatent(coords), coords);
        }
      });
      canvas.addEventListener("pointerleave", () => { this.hover = null; this.pendingHover = null; this.draw(); });
      canvas.addEventListener("wheel", (e) => {
        if (!this.data) return;
        e.preventDefault();
        const before = this.toPlane(e.offsetX, e.offsetY);
        this.view.scale *= Math.exp(-e.deltaY * 0.0015);
        const after = this.toPlane(e.offsetX, e.offsetY);
        this.view.cx += before[0] - after[0];
        this.view.cy += before[1] - after[1];
        this.scatter = null;
        this.draw();
      }, { passive: false });
      canvas.addEventListener("dblclick", () => { if (this.data) { this.fitView(); this.draw(); } });
    }

    flushHover() {
      if (this.pendingHover === null || !this.data) return;
      const [px, py] = this.pendingHover;
      this.pendingHover = null;
      this.hoverAt(px, py);
    }
  }

  Object.assign(vaelab, { LatentMap, paintImage, imageCanvas, base64Bytes, fmt, fillLegend });
})(window.vaelab = window.vaelab || {});
