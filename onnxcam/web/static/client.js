/* The client-side page: decode the photo, preprocess it as onnxcam's Python code does (preprocess.js), run the
 * explainer .onnx with ONNX Runtime Web's WebAssembly backend, put the heatmap on the photo's pixels and blend it
 * (overlay.js). Nothing is sent anywhere: the page fetches only its own files (its CSP says so).
 *
 * For tests and tools, the last explanation is kept in window.onnxcamLast: the model input, the CAM at the input's
 * size, the map on the photo's pixels and the scores.
 */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const P = self.OnnxcamPreprocess, O = self.OnnxcamOverlay;
  const state = { config: null, session: null, luts: {}, photo: null, rgb: null, geometry: null, entry: null, scores: null, busy: false };

  function setStatus(text, isError) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", !!isError);
  }

  function option(select, value, text, selected) {
    const o = document.createElement("option");
    o.value = value; o.textContent = text; o.selected = !!selected;
    select.appendChild(o);
  }

  async function fetchOwn(name, kind) {
    const r = await fetch(name);
    if (!r.ok) throw new Error("cannot load " + name + ": HTTP " + r.status);
    return kind === "json" ? r.json() : r.arrayBuffer();
  }

  async function init() {
    if (location.protocol === "file:") {
      throw new Error("this page must be served over http (WebAssembly and the model are fetched): run " +
        "'python -m http.server -d THIS_FOLDER' and open http://127.0.0.1:8000/");
    }
    const config = await fetchOwn("onnxcam-web.json", "json");
    state.config = config;
    ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
    // Threads need a cross-origin-isolated page (COOP/COEP headers, as onnxcam serve --client-side sends).
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
    state.session = await ort.InferenceSession.create(await fetchOwn(config.model), { executionProviders: ["wasm"] });
    for (const [name, hex] of Object.entries(config.colormaps)) {
      state.luts[name] = O.parseLut(hex);
      option($("colormap"), name, name, name === config.default_colormap);
    }
    const pre = config.preprocess;
    $("meta").textContent = config.source_model + " \u00b7 " + config.method + " at " + config.layer + " \u00b7 " +
      config.num_classes + " classes \u00b7 input " + pre.size.join("\u00d7") + " \u00b7 " + pre.preset + ", " + pre.resize;
    $("meta").title = pre.describe;
    document.body.dataset.ready = "1";
  }

  /* The photo as the browser decodes it, bounded: file size first, then the declared width x height before any
   * pixel buffer of ours is made. EXIF orientation is applied; ICC profiles are not (as onnxcam's Python reader);
   * transparency is composited on white (as onnxcam's Python reader). */
  async function readPhoto(file) {
    const limits = state.config.limits;
    if (file.size > limits.max_bytes) {
      throw new Error("the file is " + file.size + " bytes; this page takes images of at most " + limits.max_bytes + " bytes");
    }
    const url = URL.createObjectURL(file);
    let w, h;
    try {
      const img = new Image();
      img.src = url;
      await new Promise((ok, bad) => { img.onload = ok; img.onerror = () => bad(new Error(
        (file.name || "the file") + " is not an image this browser decodes; use a PNG or JPEG")); });
      w = img.naturalWidth; h = img.naturalHeight;
    } finally {
      URL.revokeObjectURL(url);
    }
    if (!w || !h) throw new Error("the image has no pixels");
    if (w * h > limits.max_pixels) {
      throw new Error("the image is " + w + "x" + h + " (" + w * h + " pixels); this page takes at most " +
        limits.max_pixels + " pixels: make it smaller first");
    }
    const bmp = await createImageBitmap(file, { colorSpaceConversion: "none", imageOrientation: "from-image" });
    const canvas = document.createElement("canvas");
    canvas.width = bmp.width; canvas.height = bmp.height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(bmp, 0, 0);
    bmp.close();
    const photo = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const n = photo.width * photo.height, rgb = new Uint8Array(3 * n);
    for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) rgb[3 * i + k] = photo.data[4 * i + k];
    return { photo, rgb: { width: photo.width, height: photo.height, channels: 3, data: rgb } };
  }

  async function explain(target) {
    const c = state.config, spec = c.preprocess, [H, W] = spec.size;
    const g = state.geometry, t0 = performance.now();
    const input = P.normalize(P.applyGeometry(state.rgb, g, c.pillow_vertical_first), spec);
    const dims = spec.layout === "NCHW" ? [1, spec.channels, H, W] : [1, H, W, spec.channels];
    const feeds = {};
    feeds[c.inputs.image] = new ort.Tensor(spec.dtype, input, dims);
    feeds[c.inputs.target] = new ort.Tensor("int64", BigInt64Array.from([BigInt(target)]), [1]);
    const out = await state.session.run(feeds);
    const cam = out[c.outputs.cam].data;
    const mapped = P.onPhoto(cam, g, c.pillow_vertical_first);
    const cls = Number(out[c.outputs.target].data[0]);
    const scores = Array.from(out[c.outputs.scores].data.subarray(0, c.num_classes));
    const ms = performance.now() - t0;
    self.onnxcamLast = { input, cam, mapped, class: cls, scores, width: g.origW, height: g.origH, ms };
    return { cls, scores, mapped, heat: O.heatIndex(mapped), ms };
  }

  function label(cls) {
    const labels = state.config.labels;
    return (labels && labels[cls] !== undefined ? labels[cls] : "class " + cls) + " (" + cls + ")";
  }

  function draw() {
    const e = state.entry;
    if (!e) return;
    O.compose($("overlay"), state.photo, e.heat, state.luts[$("colormap").value], parseFloat($("alpha").value));
    $("overlay").dataset.class = String(e.cls);
    $("caption").textContent = label(e.cls) + " \u00b7 score " + e.scores[e.cls].toFixed(3) + " \u00b7 " +
      state.config.method + " at " + state.config.layer + " \u00b7 " + Math.round(e.ms) + " ms in this browser";
  }

  function renderPredictions() {
    const list = $("preds");
    list.replaceChildren();
    const scores = state.scores;
    const order = scores.map((s, i) => i).sort((a, b) => scores[b] - scores[a] || a - b).slice(0, 5);
    const lo = Math.min(...order.map((i) => scores[i])), hi = Math.max(...order.map((i) => scores[i]));
    for (const cls of order) {
      const li = document.createElement("li");
      const pick = document.createElement("button");
      pick.className = "pick" + (state.entry && cls === state.entry.cls ? " selected" : "");
      pick.dataset.class = String(cls);
      pick.innerHTML = '<div class="name"><span></span><span class="score"></span></div><div class="bar"><span></span></div>';
      pick.querySelector(".name span").textContent = label(cls);
      pick.querySelector(".score").textContent = scores[cls].toFixed(3);
      pick.querySelector(".bar span").style.width = (hi > lo ? 4 + 96 * (scores[cls] - lo) / (hi - lo) : 100).toFixed(1) + "%";
      pick.addEventListener("click", () => run(async () => { state.entry = await explain(cls); }));
      li.appendChild(pick);
      list.appendChild(li);
    }
  }

  async function run(task) {
    if (state.busy || !state.session) return;
    state.busy = true;
    setStatus("Explaining in the browser\u2026");
    try {
      await task();
      setStatus("");
    } catch (err) {
      setStatus(err.message || String(err), true);
    } finally {
      state.busy = false;
    }
    if (state.scores) renderPredictions();
    draw();
  }

  function setFile(file) {
    if (!file) return;
    run(async () => {
      const { photo, rgb } = await readPhoto(file);
      const spec = state.config.preprocess;
      state.photo = photo; state.rgb = rgb; state.entry = null; state.scores = null;
      $("overlay").removeAttribute("data-class");
      state.geometry = P.planGeometry(rgb.height, rgb.width, spec.size[0], spec.size[1], spec.resize, spec.crop_pct, spec.pad_value);
      state.entry = await explain(-1);
      state.scores = state.entry.scores;
    });
  }

  OnnxcamOverlay.wireDrop($("drop"), $("file"), setFile);
  $("colormap").addEventListener("change", draw);
  $("alpha").addEventListener("input", draw);
  init().catch((err) => { $("meta").textContent = "not loaded"; setStatus(err.message || String(err), true); });
})();
