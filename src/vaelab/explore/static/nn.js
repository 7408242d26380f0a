// vaelab's networks in the page: runs a model described by vaelab/webmodel.py (layers, weights in base64).
// No dependencies, no network; activations are computed in float64 from float32 (or float16, or int8) weights.
"use strict";

(function (vaelab) {
  // --- weights ----------------------------------------------------------------------------------

  function base64Bytes(text) {
    const raw = atob(text);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  // IEEE 754 half precision -> a JavaScript number (exact).
  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  // The weight arrays of a description, each a Float32Array (the data is little-endian, as every browser is).
  // As int8, each array's numbers times its scale (webmodel.page_weights computes the same).
  function decodeWeights({ dtype, shapes, data, scales }) {
    const bytes = base64Bytes(data);
    const sizes = shapes.map((shape) => shape.reduce((a, b) => a * b, 1));
    const total = sizes.reduce((a, b) => a + b, 0);
    const width = { float32: 4, float16: 2, int8: 1 }[dtype];
    let all;
    if (dtype === "float32") {
      all = new Float32Array(bytes.buffer, 0, total);
    } else if (dtype === "float16") {
      const half = new Uint16Array(bytes.buffer, 0, total);
      all = new Float32Array(total);
      for (let i = 0; i < total; i++) all[i] = halfToFloat(half[i]);
    } else if (dtype === "int8") {
      const small = new Int8Array(bytes.buffer, 0, total);
      all = new Float32Array(total);
      let i = 0;
      sizes.forEach((size, k) => { for (const end = i + size; i < end; i++) all[i] = small[i] * scales[k]; });
    } else {
      throw new Error(`unknown weight dtype ${dtype}`);
    }
    if (bytes.length !== total * width) throw new Error("weight data of the wrong length");
    let offset = 0;
    return sizes.map((size) => { const w = all.subarray(offset, offset + size); offset += size; return w; });
  }

  // --- operations: each takes {data, shape} (shape without the batch axis) and returns the same ----------

  const ACTIVATIONS = {
    linear: (v) => v,
    relu: (v) => (v > 0 ? v : 0),
    sigmoid: (v) => 1 / (1 + Math.exp(-v)),
    tanh: Math.tanh,
    softplus: (v) => (v > 30 ? v : Math.log1p(Math.exp(v))),
  };

  function activate(data, name) {
    const f = ACTIVATIONS[name];
    if (!f) throw new Error(`unknown activation ${name}`);
    if (name !== "linear") for (let i = 0; i < data.length; i++) data[i] = f(data[i]);
    return data;
  }

  function dense(x, kernel, bias, units) {
    const n = x.data.length;
    const y = new Float64Array(units);
    if (bias) y.set(bias);
    for (let i = 0; i < n; i++) {
      const v = x.data[i];
      if (v === 0) continue;
      const row = i * units;
      for (let j = 0; j < units; j++) y[j] += v * kernel[row + j];
    }
    return { data: y, shape: [units] };
  }

  // Keras' "same" padding (XLA's SAME): the total padding split with the smaller part first, so an even
  // image convolved with stride 2 and a 3x3 kernel is padded by one row below and one column right only.
  function samePadding(size, stride, window) {
    const out = Math.ceil(size / stride);
    const total = Math.max((out - 1) * stride + window - size, 0);
    return { out, before: Math.floor(total / 2) };
  }

  // Output size and padding before, per axis, of a convolution: "same" as above, "valid" none.
  function convGeometry(size, stride, window, padding) {
    if (padding === "same") return samePadding(size, stride, window);
    return { out: Math.floor((size - window) / stride) + 1, before: 0 };
  }

  // y[oy, ox] = bias + sum over the window of x[oy*s + dy - top, ox*s + dx - left] · kernel[dy, dx]
  // (kernel (kh, kw, channels in, filters); padding reads as zeros).
  function conv2d(x, kernel, bias, [kh, kw, cin, cout], padding, [sh, sw] = [1, 1]) {
    const [h, w, c] = x.shape;
    if (c !== cin) throw new Error(`convolution expects ${cin} channels, got ${c}`);
    const { out: oh, before: top } = convGeometry(h, sh, kh, padding);
    const { out: ow, before: left } = convGeometry(w, sw, kw, padding);
    const y = new Float64Array(oh * ow * cout);
    const acc = new Float64Array(cout);
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        if (bias) acc.set(bias); else acc.fill(0);
        for (let dy = 0; dy < kh; dy++) {
          const iy = oy * sh + dy - top;
          if (iy < 0 || iy >= h) continue;
          for (let dx = 0; dx < kw; dx++) {
            const ix = ox * sw + dx - left;
            if (ix < 0 || ix >= w) continue;
            const inBase = (iy * w + ix) * c;
            const kBase = (dy * kw + dx) * cin * cout;
            for (let ci = 0; ci < c; ci++) {
              const v = x.data[inBase + ci];
              if (v === 0) continue;
              const k = kBase + ci * cout;
              for (let f = 0; f < cout; f++) acc[f] += v * kernel[k + f];
            }
          }
        }
        y.set(acc, (oy * ow + ox) * cout);
      }
    }
    return { data: y, shape: [oh, ow, cout] };
  }

  // Keras' transposed convolution, per axis: the output size, and `shift` in out = in*stride + d - shift.
  // "same": size*stride, Keras padding the stride-dilated input by ceil((stride+window-2)/2) (at most
  // window-1) before, so shift = window-1 minus that (0 for stride 2 and a 3x3 kernel); "valid": no
  // shift, (size-1)*stride + max(window, stride) outputs. Checked against Keras in tests/test_pages.py.
  function transposeGeometry(size, stride, window, padding) {
    if (padding !== "same") return { out: (size - 1) * stride + Math.max(window, stride), shift: 0 };
    const total = stride + window - 2;
    return { out: size * stride, shift: window - 1 - Math.min(Math.ceil(total / 2), window - 1) };
  }

  // Each input pixel adds its values times the kernel to a window of the output (kernel (kh, kw, filters,
  // channels in)); what falls outside the output is dropped.
  function conv2dTranspose(x, kernel, bias, [kh, kw, cout, cin], padding, [sh, sw]) {
    const [h, w, c] = x.shape;
    if (c !== cin) throw new Error(`transposed convolution expects ${cin} channels, got ${c}`);
    const { out: oh, shift: top } = transposeGeometry(h, sh, kh, padding);
    const { out: ow, shift: left } = transposeGeometry(w, sw, kw, padding);
    const y = new Float64Array(oh * ow * cout);
    if (bias) for (let p = 0; p < oh * ow; p++) y.set(bias, p * cout);
    for (let iy = 0; iy < h; iy++) {
      for (let ix = 0; ix < w; ix++) {
        const inBase = (iy * w + ix) * c;
        for (let dy = 0; dy < kh; dy++) {
          const oy = iy * sh + dy - top;
          if (oy < 0 || oy >= oh) continue;
          for (let dx = 0; dx < kw; dx++) {
            const ox = ix * sw + dx - left;
            if (ox < 0 || ox >= ow) continue;
            const outBase = (oy * ow + ox) * cout;
            const kBase = (dy * kw + dx) * cout * cin;
            for (let ci = 0; ci < c; ci++) {
              const v = x.data[inBase + ci];
              if (v === 0) continue;
              for (let f = 0; f < cout; f++) y[outBase + f] += v * kernel[kBase + f * cin + ci];
            }
          }
        }
      }
    }
    return { data: y, shape: [oh, ow, cout] };
  }

  // Drops rows [top, bottom] and columns [left, right] from the edges of the image.
  function crop2d(x, [[top, bottom], [left, right]]) {
    const [h, w, c] = x.shape;
    const [oh, ow] = [h - top - bottom, w - left - right];
    const y = new Float64Array(oh * ow * c);
    for (let oy = 0; oy < oh; oy++) {
      const from = ((oy + top) * w + left) * c;
      y.set(x.data.subarray(from, from + ow * c), oy * ow * c);
    }
    return { data: y, shape: [oh, ow, c] };
  }

  function maxpool2d(x, [ph, pw], [sh, sw], padding) {
    const [h, w, c] = x.shape;
    const { out: oh, before: top } = convGeometry(h, sh, ph, padding);
    const { out: ow, before: left } = convGeometry(w, sw, pw, padding);
    const y = new Float64Array(oh * ow * c).fill(-Infinity);
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        const out = (oy * ow + ox) * c;
        for (let dy = 0; dy < ph; dy++) {
          const iy = oy * sh + dy - top;
          if (iy < 0 || iy >= h) continue;
          for (let dx = 0; dx < pw; dx++) {
            const ix = ox * sw + dx - left;
            if (ix < 0 || ix >= w) continue;
            const base = (iy * w + ix) * c;
            for (let ci = 0; ci < c; ci++) if (x.data[base + ci] > y[out + ci]) y[out + ci] = x.data[base + ci];
          }
        }
      }
    }
    return { data: y, shape: [oh, ow, c] };
  }

  function upsample2d(x, [sy, sx]) {
    const [h, w, c] = x.shape;
    const [oh, ow] = [h * sy, w * sx];
    const y = new Float64Array(oh * ow * c);
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        const from = (Math.floor(oy / sy) * w + Math.floor(ox / sx)) * c;
        y.set(x.data.subarray(from, from + c), (oy * ow + ox) * c);
      }
    }
    return { data: y, shape: [oh, ow, c] };
  }

  function reshape(x, target) {
    const size = x.data.length;
    const known = target.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    const shape = target.map((d) => (d === -1 ? size / known : d));
    if (shape.reduce((a, b) => a * b, 1) !== size) throw new Error(`cannot reshape ${x.shape} to ${target}`);
    return { data: x.data, shape };  // row-major (channels last), as Keras lays it out
  }

  // A vqvae's codebook lookup: code indices (L) -> their rows of the table (K, D), (L, D).
  function embedding(x, table, [k, d]) {
    const y = new Float64Array(x.data.length * d);
    x.data.forEach((index, i) => {
      if (!Number.isInteger(index) || index < 0 || index >= k) throw new Error(`code ${index} is not one of 0..${k - 1}`);
      y.set(table.subarray(index * d, (index + 1) * d), i * d);
    });
    return { data: y, shape: [x.data.length, d] };
  }

  // logistic-black's image (likelihoods.image in Python): each pixel's channels are the logistics' locations, then
  // the logit of pi, the chance it is not black; shown as pi times each location clipped to [0, 1].
  function blackMassMean(x) {
    const c = x.shape[x.shape.length - 1];
    const pixels = x.data.length / c;
    const data = new Float64Array(pixels * (c - 1));
    for (let p = 0; p < pixels; p++) {
      const lit = 1 / (1 + Math.exp(-x.data[p * c + c - 1]));
      for (let k = 0; k < c - 1; k++) data[p * (c - 1) + k] = lit * Math.min(1, Math.max(0, x.data[p * c + k]));
    }
    return { data, shape: [...x.shape.slice(0, -1), c - 1] };
  }

  // A Dense layer's bias: its own, or for a conditional model's layer that reads the label, the row of its
  // class_bias table (bias + the label's kernel rows) for class `label`.
  function denseBias(op, weights, label) {
    if (op.class_bias === undefined) return op.bias === undefined ? null : weights.arrays[op.bias];
    const units = weights.shapes[op.class_bias][1];
    return weights.arrays[op.class_bias].subarray(label * units, (label + 1) * units);
  }

  function step(op, x, weights, label) {
    const kernel = op.kernel === undefined ? null : weights.arrays[op.kernel];
    const bias = op.bias === undefined ? null : weights.arrays[op.bias];
    switch (op.op) {
      case "identity": return x;
      case "embedding": return embedding(x, weights.arrays[op.table], weights.shapes[op.table]);
      case "zeros": return { data: new Float64Array(x.data.length), shape: x.shape };
      case "reshape": return reshape(x, op.shape);
      case "activation": return { data: activate(Float64Array.from(x.data), op.activation), shape: x.shape };
      case "dense": {
        const units = weights.shapes[op.kernel][1];
        return { data: activate(dense(x, kernel, denseBias(op, weights, label), units).data, op.activation), shape: [units] };
      }
      case "conv2d": {
        const y = conv2d(x, kernel, bias, weights.shapes[op.kernel], op.padding, op.strides);
        activate(y.data, op.activation);
        return y;
      }
      case "conv2d_transpose": {
        const y = conv2dTranspose(x, kernel, bias, weights.shapes[op.kernel], op.padding, op.strides);
        activate(y.data, op.activation);
        return y;
      }
      case "crop2d": return crop2d(x, op.cropping);
      case "maxpool2d": return maxpool2d(x, op.pool, op.strides, op.padding);
      case "upsample2d": return upsample2d(x, op.size);
      case "black_mass_mean": return blackMassMean(x);
      default: throw new Error(`unknown operation ${op.op}`);
    }
  }

  const sameShape = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

  // A runnable model: predict(input, label) takes one example (a flat array, row-major) and returns one
  // Float64Array per output; `label`, the class, only for a conditional model (`classes`: its count, else null).
  function load(spec) {
    if (spec.format !== 1) throw new Error(`unknown model format ${spec.format}`);
    if (spec.inputs.length !== 1) throw new Error("only models with one input are supported");
    const weights = { arrays: decodeWeights(spec.weights), shapes: spec.weights.shapes };
    const inputShape = spec.input_shapes[0];
    const inputSize = inputShape.reduce((a, b) => a * b, 1);
    const classes = spec.classes || null;
    function predict(input, label = null) {
      if (input.length !== inputSize) throw new Error(`${spec.name} expects ${inputSize} numbers, got ${input.length}`);
      if (classes && !(Number.isInteger(label) && label >= 0 && label < classes)) {
        throw new Error(`${spec.name} needs a class, 0 to ${classes - 1}, got ${label}`);
      }
      const tensors = new Map([[spec.inputs[0], { data: Float64Array.from(input), shape: inputShape }]]);
      for (const op of spec.ops) tensors.set(op.output, step(op, tensors.get(op.input), weights, label));
      return spec.outputs.map((name, k) => {
        const t = tensors.get(name);
        if (!sameShape(t.shape, spec.output_shapes[k])) {
          throw new Error(`${spec.name}: output ${name} has shape ${t.shape}, expected ${spec.output_shapes[k]}`);
        }
        return t.data;
      });
    }
    return { name: spec.name, inputShape, outputShapes: spec.output_shapes, classes, predict };
  }

  vaelab.nn = { load, halfToFloat };
})(window.vaelab = window.vaelab || {});
