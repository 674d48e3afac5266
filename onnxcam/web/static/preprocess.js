/* onnxcam's preprocessing and heatmap mapping in the browser: a port of onnxcam/preprocess/geometry.py
 * (plan_geometry, apply_geometry, cam_to_image) and batch.py (normalize), so that the page feeds the explainer the
 * same array as Python and puts the heatmap on the photo's pixels the same way. Every resize goes through
 * resample.js, Pillow's own algorithm. Python's round() (half to even) and integer division are reproduced where
 * geometry.py uses them. Keep the two in step: tests/test_browser_client.py compares them on many sizes.
 */
(function (root, factory) {
  const resample = typeof module === "object" && module.exports ? require("./resample.js") : root.OnnxcamResample;
  const api = factory(resample);
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.OnnxcamPreprocess = api;
})(typeof self !== "undefined" ? self : this, function (resample) {
  "use strict";

  /* Python's round(x) and numpy's rint: half to even. */
  function pyRound(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  function coverSize(oh, ow, bh, bw) {
    if (bh * ow >= bw * oh) return [bh, Math.max(bw, Math.floor((bh * ow) / oh))];
    return [Math.max(bh, Math.floor((bw * oh) / ow)), bw];
  }

  function fitSize(oh, ow, bh, bw) {
    const r = Math.min(bh / oh, bw / ow);
    return [Math.min(bh, Math.max(pyRound(oh * r), 1)), Math.min(bw, Math.max(pyRound(ow * r), 1))];
  }

  const centred = (resized, target) => pyRound((resized - target) / 2.0);

  /* geometry.plan_geometry: how a photo of oh x ow becomes the model input th x tw. */
  function planGeometry(oh, ow, th, tw, mode, cropPct, padValue) {
    const g = { origH: oh, origW: ow, inputH: th, inputW: tw, mode, resizedH: th, resizedW: tw, cropTop: 0, cropLeft: 0, padValue };
    if (mode === "letterbox") {
      [g.resizedH, g.resizedW] = fitSize(oh, ow, th, tw);
      g.cropTop = -Math.floor((th - g.resizedH) / 2);
      g.cropLeft = -Math.floor((tw - g.resizedW) / 2);
    } else if (mode === "crop") {
      [g.resizedH, g.resizedW] = coverSize(oh, ow, Math.floor(th / cropPct), Math.floor(tw / cropPct));
      g.cropTop = centred(g.resizedH, th);
      g.cropLeft = centred(g.resizedW, tw);
    } else if (mode !== "squash") {
      throw new Error("unknown resize mode " + mode);
    }
    g.scaleY = g.resizedH / oh;
    g.scaleX = g.resizedW / ow;
    return g;
  }

  /* Geometry.content(): the model-input pixels that show the photo, [top, left, bottom, right). */
  function content(g) {
    return [Math.max(0, -g.cropTop), Math.max(0, -g.cropLeft),
      Math.min(g.inputH, g.resizedH - g.cropTop), Math.min(g.inputW, g.resizedW - g.cropLeft)];
  }

  /* geometry.apply_geometry: resize, then pad (letterbox) or crop; 8-bit images of any channel count.
   * verticalFirst: the Pillow pass-order rule, as resample.resize takes it. */
  function applyGeometry(im, g, verticalFirst) {
    let out = im;
    if (g.resizedH !== g.origH || g.resizedW !== g.origW) out = resample.resize(im, g.resizedW, g.resizedH, null, verticalFirst);
    const [top, left, bottom, right] = content(g);
    const ch = out.channels;
    if (top !== 0 || left !== 0 || bottom !== g.inputH || right !== g.inputW) {
      const canvas = new Uint8Array(g.inputW * g.inputH * ch).fill(g.padValue);
      for (let y = top; y < bottom; y++) {
        const from = ((y + g.cropTop) * out.width + (left + g.cropLeft)) * ch;
        canvas.set(out.data.subarray(from, from + (right - left) * ch), (y * g.inputW + left) * ch);
      }
      return { width: g.inputW, height: g.inputH, channels: ch, data: canvas };
    }
    if (out.width !== g.inputW || out.height !== g.inputH) {
      const data = new Uint8Array(g.inputW * g.inputH * ch);
      for (let y = 0; y < g.inputH; y++) {
        const from = ((y + g.cropTop) * out.width + g.cropLeft) * ch;
        data.set(out.data.subarray(from, from + g.inputW * ch), y * g.inputW * ch);
      }
      out = { width: g.inputW, height: g.inputH, channels: ch, data };
    }
    return out;
  }

  /* Pillow's RGB -> L (Convert.c, L24): ITU-R 601 weights in 16-bit fixed point. */
  function toGray(im) {
    const n = im.width * im.height, d = im.data, out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (d[3 * i] * 19595 + d[3 * i + 1] * 38470 + d[3 * i + 2] * 7471 + 0x8000) >> 16;
    return { width: im.width, height: im.height, channels: 1, data: out };
  }

  const TYPED = { float32: Float32Array, uint8: Uint8Array, int8: Int8Array };
  const RANGE = { uint8: [0, 255], int8: [-128, 127] };

  /* batch.normalize: (p * scale - mean[c]) / std[c] in double, then the model's layout and dtype. */
  function normalize(im, spec) {
    if (spec.channels === 1 && im.channels === 3) im = toGray(im);
    const n = im.width * im.height, C = spec.channels, d = im.data;
    const Typed = TYPED[spec.dtype];
    if (!Typed) throw new Error("the page feeds float32, uint8 or int8 inputs, not " + spec.dtype);
    const out = new Typed(n * C);
    const range = RANGE[spec.dtype];
    for (let c = 0; c < C; c++) {
      const srcC = spec.bgr && C === 3 ? 2 - c : c;
      const mean = spec.mean.length === 1 ? spec.mean[0] : spec.mean[c];
      const std = spec.std.length === 1 ? spec.std[0] : spec.std[c];
      for (let i = 0; i < n; i++) {
        let v = (d[i * im.channels + (im.channels === 1 ? 0 : srcC)] * spec.scale - mean) / std;
        if (range) v = Math.min(range[1], Math.max(range[0], pyRound(v)));
        out[spec.layout === "NCHW" ? c * n + i : i * C + c] = v;
      }
    }
    return out;
  }

  function inside(nOrig, scale, offset, nIn) {
    const lo = Math.ceil(offset / scale - 0.5 - 1e-9);
    const hi = Math.floor((offset + nIn) / scale - 0.5 + 1e-9);
    return [Math.max(lo, 0), Math.min(hi, nOrig - 1)];
  }

  /* geometry.cam_to_image: the model-input map (Float32Array, inputH x inputW) on the photo's pixels, float32. */
  function camToImage(cam, g, verticalFirst) {
    const out = new Float32Array(g.origH * g.origW);
    const sy = g.scaleY, sx = g.scaleX;
    const [y0, y1] = inside(g.origH, sy, g.cropTop, g.inputH);
    const [x0, x1] = inside(g.origW, sx, g.cropLeft, g.inputW);
    if (y1 < y0 || x1 < x0) return out;
    const [top, left, bottom, right] = content(g);
    const pad = Math.ceil(Math.max(sy, sx)) + 2;
    const h = bottom - top, w = right - left, W = w + 2 * pad, H = h + 2 * pad;
    const src = new Float32Array(W * H); // np.pad(cam[top:bottom, left:right], pad, mode="edge")
    for (let y = 0; y < H; y++) {
      const cy = top + Math.min(h - 1, Math.max(0, y - pad));
      for (let x = 0; x < W; x++) src[y * W + x] = cam[cy * g.inputW + left + Math.min(w - 1, Math.max(0, x - pad))];
    }
    const box = [
      x0 * sx - g.cropLeft - left + pad,
      y0 * sy - g.cropTop - top + pad,
      (x1 + 1) * sx - g.cropLeft - left + pad,
      (y1 + 1) * sy - g.cropTop - top + pad,
    ];
    const region = resample.resize({ width: W, height: H, channels: 1, data: src }, x1 - x0 + 1, y1 - y0 + 1, box, verticalFirst);
    for (let y = y0; y <= y1; y++) out.set(region.data.subarray((y - y0) * region.width, (y - y0 + 1) * region.width), y * g.origW + x0);
    return out;
  }

  /* results.on_photo: cam_to_image clipped to [0, 1]. */
  function onPhoto(cam, g, verticalFirst) {
    const out = camToImage(cam, g, verticalFirst);
    for (let i = 0; i < out.length; i++) out[i] = Math.min(1, Math.max(0, out[i]));
    return out;
  }

  return { pyRound, planGeometry, content, applyGeometry, normalize, toGray, camToImage, onPhoto };
});
