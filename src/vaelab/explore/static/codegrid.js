// A vqvae's code grid, in place of the latent map: a test image's L code indices as cells the user edits
// (each 0..K-1), decoded in the page (nn.js) as they are typed; "random codes" draws L codes uniformly,
// the model's prior. Its data are vaelab's pagedata.code_grid.
"use strict";

(function (vaelab) {
  // elements: {image: select, original: canvas, grid, random: button, hint, decoded: canvas, decodedInfo}.
  class CodeGrid {
    constructor(elements) {
      this.el = elements;
      this.data = null;
      this.models = null;
      elements.image.addEventListener("change", () => this.choose(Number(elements.image.value)));
      elements.random.addEventListener("click", () => this.setCodes(this.randomCodes()));
    }

    show(data, models) {
      this.data = data;
      this.models = models;
      const { images, class_names: names, codebook_size: k, code_length: length } = data;
      this.el.image.replaceChildren(...images.map((im, i) => new Option(
        (im.label === null ? "" : `${names[im.label]}: `) + `test #${im.index}`, i)));
      this.el.grid.style.gridTemplateColumns = `repeat(${Math.ceil(Math.sqrt(length))}, auto)`;
      this.el.grid.replaceChildren(...Array.from({ length }, (_, j) => {
        const cell = Object.assign(document.createElement("input"), { type: "number", min: 0, max: k - 1, step: 1 });
        cell.title = `code ${j}`;
        cell.addEventListener("input", () => this.decode(false));  // while typing: the cell is left as typed
        cell.addEventListener("change", () => this.decode());  // Enter or leaving it: the cell shows what decoded
        return cell;
      }));
      this.el.hint.textContent = `${length} codes, each one of ${k} codebook vectors: change a cell to decode ` +
        "the changed codes; random codes are a draw from the model's prior (uniform).";
      this.choose(0);
    }

    get cells() { return [...this.el.grid.querySelectorAll("input")]; }

    // The cells' codes, each clamped to 0..K-1 (an emptied or mistyped cell reads as 0); with `tidy`, each
    // cell is rewritten to the code it reads as.
    codes(tidy = true) {
      const k = this.data.codebook_size;
      return this.cells.map((cell) => {
        const v = Math.min(k - 1, Math.max(0, Math.round(Number(cell.value)) || 0));
        if (tidy && cell.value !== String(v)) cell.value = v;
        return v;
      });
    }

    randomCodes() {
      return Array.from({ length: this.data.code_length }, () => Math.floor(Math.random() * this.data.codebook_size));
    }

    // Test image i of the data: shown, and its codes put in the grid.
    choose(i) {
      const image = this.data.images[i];
      this.el.image.value = i;
      vaelab.paintImage(this.el.original, vaelab.base64Bytes(image.image), this.data.image_shape, 1 / 255);
      this.setCodes(image.codes);
    }

    setCodes(codes) {
      this.cells.forEach((cell, j) => { cell.value = codes[j]; });
      this.decode();
    }

    decode(tidy = true) {
      const codes = this.codes(tidy);
      vaelab.paintImage(this.el.decoded, this.models.generator.predict(codes)[0], this.data.image_shape);
      this.el.decodedInfo.textContent = "codes " + codes.join(" ");
      this.el.decoded.dataset.codes = JSON.stringify(codes);
    }
  }

  vaelab.CodeGrid = CodeGrid;
})(window.vaelab = window.vaelab || {});
