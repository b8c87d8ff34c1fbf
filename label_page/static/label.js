// efm label: a canvas map of the store (pan: drag, zoom: wheel), points per class, a live k-NN preview.
// Coordinates: the view keeps `left`, `top` (store pixel at the canvas' top-left corner) and `scale`
// (CSS pixels per store pixel); store pixel (row, col) covers [col, col+1) x [row, row+1).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("map"), ctx = canvas.getContext("2d");
  const S = {
    info: null, classes: [], points: [], current: 0, nextId: 1,
    view: { left: 0, top: 0, scale: 1 },
    image: null,    // {bitmap, win}: the last window drawn
    preview: null,  // {win, width, height, classes: Uint8Array, canvas, nPoints}
    imageSeq: 0, previewSeq: 0, busy: 0, dirty: false, message: "",
    clickT0: null, timings: [],
  };
  const NO_CLASS = 255;

  // The run's secret, put into the page by the server: every API call carries it (docs/label.md, "Security").
  const TOKEN = document.querySelector('meta[name="efm-token"]').content;
  async function api(path, body) {
    const headers = { "X-EFM-Token": TOKEN };
    const init = { headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) { init.method = "POST"; headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const res = await fetch(path, init);
    if (!res.ok) { let e = res.statusText; try { e = (await res.json()).error; } catch (_) {} const err = new Error(e); err.status = res.status; throw err; }
    return res;
  }

  // ------------------------------------------------------------ view
  function size() { const r = canvas.getBoundingClientRect(); return { w: r.width, h: r.height }; }
  function resize() {
    const dpr = window.devicePixelRatio || 1, { w, h } = size();
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    draw();
  }
  function fitView() {
    const { w, h } = size(), i = S.info;
    // the whole store when the server reads it at once; else a block of chunks it can read at the centre
    const cap = Math.max(1, Math.floor(i.max_decoded_bytes / i.chunk_bytes));
    let scale;
    if (Math.ceil(i.height / i.chunk_rows) * Math.ceil(i.width / i.chunk_cols) <= cap) {
      scale = 0.96 * Math.min(w / i.width, h / i.height);
    } else {  // a view of `across` chunks a side touches at most (across + 1)^2 of them
      const across = Math.max(1, Math.floor(Math.sqrt(cap)) - 1);
      scale = Math.max(w / (across * i.chunk_cols), h / (across * i.chunk_rows));
    }
    S.view = { scale, left: i.width / 2 - w / 2 / scale, top: i.height / 2 - h / 2 / scale };
  }
  function toStore(x, y) { const v = S.view; return { col: v.left + x / v.scale, row: v.top + y / v.scale }; }
  function toScreen(row, col) { const v = S.view; return { x: (col - v.left) * v.scale, y: (row - v.top) * v.scale }; }
  function visibleWindow() {
    const { w, h } = size(), v = S.view;
    const row0 = Math.floor(v.top), col0 = Math.floor(v.left);
    return { row0, col0, rows: Math.ceil(v.top + h / v.scale) - row0, cols: Math.ceil(v.left + w / v.scale) - col0,
             step: Math.max(1, Math.floor(1 / v.scale)) };
  }

  // ------------------------------------------------------------ drawing
  function placeWindow(win, pxW, pxH) {  // screen rectangle of a strided window's bitmap
    const a = toScreen(win.row0, win.col0), s = S.view.scale * win.step;
    return [a.x, a.y, pxW * s, pxH * s];
  }
  function draw() {
    const { w, h } = size();
    ctx.clearRect(0, 0, w, h);
    if (!S.info) return;
    ctx.imageSmoothingEnabled = false;
    const o = toScreen(0, 0), e = toScreen(S.info.height, S.info.width);
    ctx.fillStyle = "#555"; ctx.fillRect(o.x, o.y, e.x - o.x, e.y - o.y);
    if (S.image) ctx.drawImage(S.image.bitmap, ...placeWindow(S.image.win, S.image.bitmap.width, S.image.bitmap.height));
    const showing = S.preview && S.preview.canvas && hasTwoClasses() && $("show-preview").checked;
    renderLegend(showing);
    if (showing) {
      ctx.globalAlpha = $("opacity").value / 100;
      ctx.drawImage(S.preview.canvas, ...placeWindow(S.preview.win, S.preview.width, S.preview.height));
      ctx.globalAlpha = 1;
    }
    ctx.strokeStyle = "#000"; ctx.strokeRect(o.x, o.y, e.x - o.x, e.y - o.y);
    for (const p of S.points) {
      if (p.row === null) continue;
      const c = toScreen(p.row + 0.5, p.col + 0.5);
      ctx.beginPath(); ctx.arc(c.x, c.y, 5, 0, 2 * Math.PI);
      ctx.fillStyle = colourOf(p.label); ctx.fill();
      ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
      ctx.lineWidth = 1; ctx.strokeStyle = "#000"; ctx.beginPath(); ctx.arc(c.x, c.y, 6.5, 0, 2 * Math.PI); ctx.stroke();
    }
    const m = $("message"); m.textContent = S.message; m.style.display = S.message ? "block" : "none";
  }
  function renderLegend(showing) {  // on the map: which colour is which class in the preview
    const box = $("legend");
    box.style.display = showing ? "block" : "none";
    if (!showing) return;
    const key = JSON.stringify([S.classes, S.preview.k]);
    if (box.dataset.key === key) return;
    box.dataset.key = key; box.textContent = "";
    const title = document.createElement("div"); title.className = "title"; title.textContent = `k-NN preview (k=${S.preview.k})`;
    box.append(title);
    for (const c of S.classes) {
      const item = document.createElement("div"); item.className = "item";
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = c.color;
      const name = document.createElement("span"); name.textContent = c.name;
      item.append(sw, name); box.append(item);
    }
  }
  function colourOf(label) { const c = S.classes.find((k) => k.name === label); return c ? c.color : "#fff"; }
  function rgbOf(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }

  // ------------------------------------------------------------ loading the view and the preview
  let loadTimer = null;
  function scheduleLoad() { clearTimeout(loadTimer); S.loadPending = true; loadTimer = setTimeout(loadView, 120); draw(); }
  async function loadView() {
    const seq = ++S.imageSeq, win = visibleWindow();
    S.loadPending = false;
    const q = new URLSearchParams({ row0: win.row0, col0: win.col0, rows: win.rows, cols: win.cols, step: win.step });
    if ($("mode").value === "bands") q.set("bands", ["band-r", "band-g", "band-b"].map((id) => $(id).value).join(","));
    S.busy++;
    try {
      const res = await api("/api/image?" + q);
      const got = JSON.parse(res.headers.get("X-EFM-Window"));
      const bitmap = await createImageBitmap(await res.blob());
      if (seq !== S.imageSeq) return;
      S.image = { bitmap, win: got }; S.message = "";
      draw();
      await refreshPreview();
    } catch (err) {
      if (seq === S.imageSeq) { S.message = err.message; draw(); }
    } finally { S.busy--; }
  }
  function hasTwoClasses() { return new Set(S.points.filter((p) => p.row !== null).map((p) => p.label)).size >= 2; }
  async function refreshPreview() {
    const seq = ++S.previewSeq;
    if (!S.image) return;
    const sent = S.points.map((p) => ({ id: p.id, label: p.label, row: p.row, col: p.col }));
    S.busy++;
    try {
      const r = await (await api("/api/preview", { window: S.image.win, points: sent })).json();
      if (seq !== S.previewSeq) return;
      if (r.classes === null) {
        S.preview = null; S.clickT0 = null;  // no preview to time $("status").textContent = r.reason + (r.skipped ? ` (${r.skipped} point(s) on no data left out)` : "");
        draw(); return;
      }
      const text = atob(r.classes), bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
      const off = document.createElement("canvas"); off.width = r.width; off.height = r.height;
      const octx = off.getContext("2d"), img = octx.createImageData(r.width, r.height);
      // one 32-bit write per pixel: RGBA bytes packed in the platform's order (little-endian: ABGR)
      const px = new Uint32Array(img.data.buffer), lut = new Uint32Array(256);
      const little = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
      S.classes.forEach((c, k) => {
        const [red, green, blue] = rgbOf(c.color);
        lut[k] = little ? ((255 << 24) | (blue << 16) | (green << 8) | red) >>> 0 : ((red << 24) | (green << 16) | (blue << 8) | 255) >>> 0;
      });  // lut[255] (no data) stays 0: transparent
      for (let i = 0; i < bytes.length; i++) px[i] = lut[bytes[i]];
      octx.putImageData(img, 0, 0);
      S.preview = { win: r.window, width: r.width, height: r.height, classes: bytes, canvas: off, nPoints: sent.length, k: r.k };
      draw();
      $("status").textContent = `k-NN (k=${r.k}) of ${r.width}x${r.height} px (every ${r.window.step} px)` +
        (r.skipped ? `; ${r.skipped} point(s) on no data left out` : "");
      if (S.clickT0 !== null) {
        const t0 = S.clickT0; S.clickT0 = null;
        requestAnimationFrame(() => {  // after the frame showing the preview is painted
          const ms = performance.now() - t0;
          S.timings.push({ ms, server_ms: r.server_ms, pixels: r.width * r.height });
          $("latency").textContent = `click to preview: ${ms.toFixed(0)} ms (k-NN on the server: ${r.server_ms} ms)`;
          console.log(`efm label: click to preview ${ms.toFixed(1)} ms, server ${r.server_ms} ms, ${r.width * r.height} px`);
        });
      }
    } catch (err) {
      if (seq === S.previewSeq) $("status").textContent = "preview failed: " + err.message;
    } finally { S.busy--; }
  }

  // ------------------------------------------------------------ classes and points
  function renderClasses() {
    const box = $("classes"); box.textContent = "";
    S.classes.forEach((c, i) => {
      const row = document.createElement("div");
      row.className = "class-row" + (i === S.current ? " current" : ""); row.dataset.label = c.name;
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = c.color; sw.dataset.color = c.color;
      const name = document.createElement("span"); name.textContent = (i < 9 ? `${i + 1} ` : "") + c.name;
      const count = document.createElement("span"); count.className = "count";
      count.textContent = S.points.filter((p) => p.label === c.name).length;
      row.append(sw, name, count);
      row.addEventListener("click", () => { S.current = i; renderClasses(); });
      box.append(row);
    });
    const outside = S.points.filter((p) => p.row === null).length;
    $("counts").textContent = `${S.points.length} point(s)` + (outside ? `, ${outside} outside the store (kept)` : "") + (S.dirty ? ", not saved" : "");
  }
  function changed() { S.dirty = true; renderClasses(); draw(); refreshPreview(); }
  function clickAt(x, y) {
    if (!S.classes.length) { $("status").textContent = "add a class first"; return; }
    S.clickT0 = performance.now();
    let near = null, best = 7;
    for (const p of S.points) {
      if (p.row === null) continue;
      const c = toScreen(p.row + 0.5, p.col + 0.5), d = Math.hypot(c.x - x, c.y - y);
      if (d <= best) { best = d; near = p; }
    }
    if (near) { S.points = S.points.filter((p) => p !== near); changed(); return; }
    const s = toStore(x, y), row = Math.floor(s.row), col = Math.floor(s.col);
    if (row < 0 || col < 0 || row >= S.info.height || col >= S.info.width) { S.clickT0 = null; return; }
    if (S.points.length >= S.info.max_points) { S.clickT0 = null; $("status").textContent = `${S.info.max_points} points at most: save, then remove some`; return; }
    S.points.push({ id: "c" + S.nextId++, label: S.classes[S.current].name, row, col });
    changed();
  }

  // ------------------------------------------------------------ input
  let drag = null;
  canvas.addEventListener("mousedown", (ev) => { drag = { x: ev.offsetX, y: ev.offsetY, moved: false }; });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    if (!drag.moved && Math.hypot(x - drag.x, y - drag.y) < 4) return;
    S.view.left -= (x - drag.x) / S.view.scale; S.view.top -= (y - drag.y) / S.view.scale;
    drag.x = x; drag.y = y; drag.moved = true; draw();
  });
  window.addEventListener("mouseup", (ev) => {
    if (!drag) return;
    const d = drag; drag = null;
    if (d.moved) scheduleLoad(); else if (ev.target === canvas) clickAt(ev.offsetX, ev.offsetY);
  });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const s = toStore(ev.offsetX, ev.offsetY), v = S.view;
    v.scale = Math.min(64, Math.max(1e-3, v.scale * Math.exp(-ev.deltaY * 0.0015)));
    v.left = s.col - ev.offsetX / v.scale; v.top = s.row - ev.offsetY / v.scale;
    scheduleLoad();
  }, { passive: false });
  window.addEventListener("keydown", (ev) => {
    const n = parseInt(ev.key, 10);
    if (ev.target.tagName === "INPUT") return;
    if (n >= 1 && n <= S.classes.length) { S.current = n - 1; renderClasses(); }
    if (ev.key === "p" || ev.key === "P") { $("show-preview").checked = !$("show-preview").checked; draw(); }
  });
  window.addEventListener("resize", () => { resize(); scheduleLoad(); });
  window.addEventListener("beforeunload", (ev) => { if (S.dirty) { ev.preventDefault(); ev.returnValue = ""; } });
  $("opacity").addEventListener("input", draw);
  $("show-preview").addEventListener("change", draw);
  $("mode").addEventListener("change", () => { $("band-pick").classList.toggle("on", $("mode").value === "bands"); scheduleLoad(); });
  for (const id of ["band-r", "band-g", "band-b"]) $(id).addEventListener("change", scheduleLoad);
  $("add-class").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const info = await (await api("/api/classes", { name: $("new-class").value })).json();
      S.classes = info.classes; S.current = S.classes.length - 1; $("new-class").value = ""; renderClasses();
    } catch (err) { $("status").textContent = err.message; }
  });
  $("save").addEventListener("click", async () => {
    try {
      const r = await (await api("/api/save", { points: S.points.map((p) => ({ id: p.id, label: p.label, row: p.row, col: p.col })) })).json();
      S.dirty = false; renderClasses();
      $("saved").textContent = `saved ${r.count} point(s) to ${r.path} at ${new Date().toLocaleTimeString()}`;
    } catch (err) { $("saved").textContent = "not saved: " + err.message; }
  });

  // ------------------------------------------------------------ start
  async function start() {
    const info = await (await api("/api/info")).json();
    S.info = info; S.classes = info.classes; S.points = info.points;
    $("store").textContent = `${info.store} · ${info.year} · ${info.width}x${info.height} px · ${info.crs} → ${info.output}`;
    for (const id of ["band-r", "band-g", "band-b"]) {
      for (const b of info.bands) { const o = document.createElement("option"); o.textContent = b; $(id).append(o); }
    }
    const rgb = info.rgb || ["A01", "A16", "A09"].filter((b) => info.bands.includes(b));
    ["band-r", "band-g", "band-b"].forEach((id, i) => { $(id).value = rgb[i] || info.bands[i]; });
    if (info.rgb) { $("mode").value = "bands"; $("band-pick").classList.add("on"); }
    resize(); fitView(); renderClasses(); draw(); loadView();
  }
  // For the browser test and the curious: state, and store pixel -> canvas point.
  window.efmLabel = {
    state: S,
    pixelToCanvas: (row, col) => toScreen(row + 0.5, col + 0.5),
    setView: (scale, row, col) => {  // centre store pixel (row, col) at `scale` CSS px per store px
      const { w, h } = size();
      S.view = { scale, left: col - w / 2 / scale, top: row - h / 2 / scale }; scheduleLoad();
    },
    idle: () => S.busy === 0 && !S.loadPending,
    previewPixels: () => S.preview ? Array.from(S.preview.canvas.getContext("2d").getImageData(0, 0, S.preview.width, S.preview.height).data) : null,
  };
  start().catch((err) => { S.message = "cannot start: " + err.message; draw(); });
})();
