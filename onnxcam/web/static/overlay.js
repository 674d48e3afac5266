/* The heatmap's colours and its blend over the photo, shared by both pages: the server's page (onnxcam serve, which
 * inlines this file) and the client-side page (onnxcam export --web, serve --client-side). The rules are the
 * server's (onnxcam/render/colormaps.py and overlay.py): a value v in [0, 1] picks LUT entry min(floor(v * 256), 255)
 * of a 256-entry table sent as hex, and each pixel is round((1 - alpha) * photo + alpha * colour).
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.OnnxcamOverlay = api;
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  /* A colormap's 768 hex bytes (onnxcam.render.colormap_lut(name).tobytes().hex()) -> Uint8Array(768). */
  function parseLut(hex) {
    const lut = new Uint8Array(hex.length / 2);
    for (let i = 0; i < lut.length; i++) lut[i] = parseInt(hex.substr(2 * i, 2), 16);
    return lut;
  }

  /* A map on the photo's pixels, already in [0, 1] -> its LUT indices (colormaps.cam_to_index). */
  function heatIndex(mapped) {
    const out = new Uint8Array(mapped.length);
    for (let i = 0; i < mapped.length; i++) out[i] = Math.min(255, Math.floor(mapped[i] * 256));
    return out;
  }

  /* Draw photo (ImageData) blended with the coloured heat indices onto canvas. */
  function compose(canvas, photo, heat, lut, alpha) {
    canvas.width = photo.width; canvas.height = photo.height;
    const ctx = canvas.getContext("2d");
    const out = ctx.createImageData(photo.width, photo.height);
    const p = photo.data, o = out.data;
    for (let i = 0; i < heat.length; i++) {
      const q = 3 * heat[i];
      for (let k = 0; k < 3; k++) o[4 * i + k] = Math.round((1 - alpha) * p[4 * i + k] + alpha * lut[q + k]);
      o[4 * i + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }

  /* The drop zone of both pages: a click or Enter/Space opens the file input, a dropped file goes to setFile. */
  function wireDrop(drop, input, setFile) {
    drop.addEventListener("click", () => input.click());
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setFile(e.dataTransfer.files[0]); });
    input.addEventListener("change", (e) => { setFile(e.target.files[0]); e.target.value = ""; });
  }

  return { parseLut, heatIndex, compose, wireDrop };
});
