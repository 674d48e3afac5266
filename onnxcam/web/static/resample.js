/* Pillow's BILINEAR resize, ported line by line from Pillow's src/libImaging/Resample.c and _imaging.c
 * (Pillow 13.0.0).
 *
 * Why a port: the browser page must feed the model the same numbers as onnxcam's Python preprocessing, which resizes
 * with Pillow. A canvas drawImage resize differs from Pillow by several grey levels, which moves the heatmap by more
 * than the 1e-4 the tests allow. So the coefficients are computed as Pillow computes them (in double, from a box whose
 * corners are C floats), 8-bit images are filtered with Pillow's fixed-point arithmetic (22 fraction bits, rounding
 * by adding half before the shift, the horizontal pass first and rounded to 8 bits before the vertical one), and
 * float images (mode "F", used for the heatmap) with its double accumulation stored as float32.
 *
 * Images are plain objects {width, height, channels, data}: data is a Uint8Array (8-bit, channels interleaved) or a
 * Float32Array (channels 1).
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.OnnxcamResample = api;
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const PRECISION_BITS = 32 - 8 - 2;
  const f32 = Math.fround;

  function bilinearFilter(x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
  }

  /* precompute_coeffs: for each output pixel, the first input pixel, the count, and the normalised weights. */
  function precomputeCoeffs(inSize, in0, in1, outSize) {
    in0 = f32(in0);
    in1 = f32(in1);
    const scale = f32(in1 - in0) / outSize; // (double)(in1 - in0): a float subtraction, then widened
    const filterscale = scale < 1.0 ? 1.0 : scale;
    const support = 1.0 * filterscale; // BILINEAR's support is 1
    const ksize = Math.ceil(support) * 2 + 1;
    const kk = new Float64Array(outSize * ksize);
    const bounds = new Int32Array(outSize * 2);
    const invFilterscale = 1.0 / filterscale;
    for (let xx = 0; xx < outSize; xx++) {
      const center = in0 + (xx + 0.5) * scale;
      let ww = 0.0;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      const base = xx * ksize;
      for (let x = 0; x < xmax; x++) {
        const w = bilinearFilter((x + xmin - center + 0.5) * invFilterscale);
        kk[base + x] = w;
        ww += w;
      }
      if (ww !== 0.0) for (let x = 0; x < xmax; x++) kk[base + x] /= ww;
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return { ksize, bounds, kk };
  }

  /* normalize_coeffs_8bpc: the weights as fixed-point ints, rounded half away from zero. */
  function fixedCoeffs(kk) {
    const out = new Int32Array(kk.length);
    const one = 1 << PRECISION_BITS;
    for (let i = 0; i < kk.length; i++) {
      out[i] = kk[i] < 0 ? Math.trunc(-0.5 + kk[i] * one) : Math.trunc(0.5 + kk[i] * one);
    }
    return out;
  }

  function clip8(ss) {
    const v = ss >> PRECISION_BITS; // an arithmetic shift, as C's on a signed int
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  function horizontal(im, outW, rowFirst, rows, c) {
    const isFloat = im.data instanceof Float32Array;
    const ch = im.channels;
    const out = { width: outW, height: rows, channels: ch, data: isFloat ? new Float32Array(outW * rows * ch) : new Uint8Array(outW * rows * ch) };
    const { ksize, bounds } = c;
    const k = isFloat ? c.kk : fixedCoeffs(c.kk);
    const src = im.data, dst = out.data, inRow = im.width * ch, outRow = outW * ch;
    for (let yy = 0; yy < rows; yy++) {
      const lineIn = (yy + rowFirst) * inRow, lineOut = yy * outRow;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], kb = xx * ksize;
        for (let b = 0; b < ch; b++) {
          let ss = isFloat ? 0.0 : 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += src[lineIn + (x + xmin) * ch + b] * k[kb + x];
          dst[lineOut + xx * ch + b] = isFloat ? ss : clip8(ss);
        }
      }
    }
    return out;
  }

  function vertical(im, outH, c) {
    const isFloat = im.data instanceof Float32Array;
    const ch = im.channels, w = im.width;
    const out = { width: w, height: outH, channels: ch, data: isFloat ? new Float32Array(w * outH * ch) : new Uint8Array(w * outH * ch) };
    const { ksize, bounds } = c;
    const k = isFloat ? c.kk : fixedCoeffs(c.kk);
    const src = im.data, dst = out.data, row = w * ch;
    for (let yy = 0; yy < outH; yy++) {
      const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1], kb = yy * ksize;
      for (let i = 0; i < row; i++) {
        let ss = isFloat ? 0.0 : 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += src[(y + ymin) * row + i] * k[kb + y];
        dst[yy * row + i] = isFloat ? ss : clip8(ss);
      }
    }
    return out;
  }

  /* Image.resize((outW, outH), BILINEAR, box) with box = [x0, y0, x1, y1] (default: the whole image): _imaging.c's
   * _resize and Resample.c's ImagingResampleInner. verticalFirst: Pillow 13's rule (when the height shrinks by more
   * than twice as many pixels as the width, the vertical pass runs first); false for older Pillows (always
   * horizontal first). The exporter records which one the Python side uses. */
  function resize(im, outW, outH, box, verticalFirstRule) {
    box = (box || [0, 0, im.width, im.height]).map(f32);
    const copy = () => ({ width: im.width, height: im.height, channels: im.channels, data: im.data.slice() });
    if (outW === im.width && outH === im.height && box[0] === 0 && box[1] === 0 && box[2] === im.width && box[3] === im.height) {
      return copy(); // Image.resize's own shortcut
    }
    if (Number.isInteger(box[0]) && f32(box[2] - box[0]) === outW && Number.isInteger(box[1]) && f32(box[3] - box[1]) === outH) {
      return crop(im, box[0], box[1], outW, outH); // _resize: an integer box of the output's size is a crop
    }
    const needH = outW !== im.width || box[0] !== 0 || box[2] !== outW;
    const needV = outH !== im.height || box[1] !== 0 || box[3] !== outH;
    const rule = verticalFirstRule === undefined ? true : verticalFirstRule;
    const shrinkV = im.height - outH, shrinkW = im.width - outW;
    const horizontalFirst = !(rule && shrinkV > 0 && shrinkV > shrinkW * 2);
    let cur = im;
    if (horizontalFirst) {
      let cv = null, first = 0, last = im.height;
      if (needH || needV) {
        cv = precomputeCoeffs(im.height, box[1], box[3], outH);
        first = cv.bounds[0];
        last = cv.bounds[outH * 2 - 2] + cv.bounds[outH * 2 - 1];
      }
      if (needH) {
        for (let i = 0; i < outH; i++) cv.bounds[i * 2] -= first;
        cur = horizontal(cur, outW, first, last - first, precomputeCoeffs(im.width, box[0], box[2], outW));
      }
      if (needV) cur = vertical(cur, outH, cv);
    } else {
      if (needV) cur = vertical(cur, outH, precomputeCoeffs(im.height, box[1], box[3], outH));
      if (needH) cur = horizontal(cur, outW, 0, outH, precomputeCoeffs(im.width, box[0], box[2], outW));
    }
    return cur === im ? copy() : cur;
  }

  function crop(im, left, top, w, h) {
    const ch = im.channels, data = new im.data.constructor(w * h * ch);
    for (let y = 0; y < h; y++) {
      const from = ((y + top) * im.width + left) * ch;
      data.set(im.data.subarray(from, from + w * ch), y * w * ch);
    }
    return { width: w, height: h, channels: ch, data };
  }

  return { resize, precomputeCoeffs, PRECISION_BITS };
});
