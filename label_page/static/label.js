// efm label: a Leaflet map (Web Mercator) of the store over the user's imagery; points and
// polygons per class; after each change the server fits the k-NN (the preview and uncertainty
// layers are redrawn) and cross-validates the points by blocks (shown without waiting for it).
// A point is a store pixel (row, col): the server says which pixel is under a click (/api/locate).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const { TOKEN, apiLayer, panel } = window.efmLayers;
  const S = {
    info: null, classes: [], points: [], polygons: [], current: 0, nextId: 1, nextPoly: 1,
    rev: 0, k: null, busy: 0, dirty: false, clickT0: null, timings: [], pans: [], cv: null,
    suggestions: [], updateSeq: 0, lastUpdate: null,
  };
  const L_ = {};  // the layers
  async function api(path, body) {
    const headers = { "X-EFM-Token": TOKEN };
    const init = { headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) { init.method = "POST"; headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const res = await fetch(path, init);
    if (!res.ok) { let e = res.statusText; try { e = (await res.json()).error; } catch (_) {} const err = new Error(e); err.status = res.status; throw err; }
    return res.json();
  }
  const colourOf = (label) => { const c = S.classes.find((k) => k.name === label); return c ? c.color : "#fff"; };
  const ll = (lonlat) => L.latLng(lonlat[1], lonlat[0]);
  const sent = () => ({
    points: S.points.map((p) => ({ id: p.id, label: p.label, row: p.row, col: p.col })),
    polygons: S.polygons.map((g) => ({ id: g.efm.id, label: g.efm.label, ring: ring(g) })),
  });
  function ring(layer) { return layer.getLatLngs()[0].map((p) => [p.lng, p.lat]); }

  const map = L.map("map", { zoomSnap: 0.25, minZoom: 0, maxZoom: 22, doubleClickZoom: false });
  L.control.scale({ imperial: false }).addTo(map);
  map.pm.addControls({ position: "topleft", drawMarker: false, drawCircleMarker: false, drawPolyline: false,
    drawRectangle: false, drawCircle: false, drawText: false, cutPolygon: false, rotateMode: false, dragMode: false,
    drawPolygon: true, editMode: true, removalMode: true });
  const pointLayer = L.layerGroup().addTo(map), suggestLayer = L.layerGroup().addTo(map);
  map.on("mousemove", (ev) => { $("coords").textContent = `${ev.latlng.lat.toFixed(6)}, ${ev.latlng.lng.toFixed(6)}`; });

  // ------------------------------------------------------------ layers
  const bandsQuery = () => $("mode").value === "bands" ? "?bands=" + ["band-r", "band-g", "band-b"].map((id) => $(id).value).join(",") : "";
  function tileUrl(layer, c, query) { return `/api/tile/${layer}/${c.z}/${c.x}/${c.y}.png${query || ""}`; }
  function buildLayers(info) {
    const entries = [];
    const onError = (err) => { $("status").textContent = "tile: " + err.message; };
    if (info.basemap) {
      L_.basemap = L.tileLayer(info.basemap, { maxZoom: 22, maxNativeZoom: 19, zIndex: 1, attribution: "basemap: " + new URL(info.basemap.replace(/\{s\}/g, "a")).host });
      entries.push({ key: "basemap", name: "basemap (--basemap)", layer: L_.basemap, on: true, opacity: 1 });
    }
    if (info.image) {
      L_.image = apiLayer((c) => tileUrl("image", c), { zIndex: 2, onError });
      entries.push({ key: "image", name: "image (--image)", layer: L_.image, on: true, opacity: 1 });
    }
    const imagery = info.basemap || info.image;
    L_.store = apiLayer((c) => tileUrl("store", c, bandsQuery()), { zIndex: 3, onError });
    entries.push({ key: "store", name: "embeddings (false colour)", layer: L_.store, on: !imagery, opacity: 1 });
    L_.preview = apiLayer((c) => S.k ? tileUrl("preview", c, `?v=${S.rev}`) : null, { zIndex: 4, onError });
    entries.push({ key: "preview", name: "k-NN preview (P)", layer: L_.preview, on: true, opacity: 0.55, changed: legend });
    L_.uncertainty = apiLayer((c) => S.k ? tileUrl("uncertainty", c, `?v=${S.rev}`) : null, { zIndex: 5, onError });
    entries.push({ key: "uncertainty", name: "uncertainty", layer: L_.uncertainty, on: false, opacity: 0.7 });
    panel($("layers"), map, entries);
    L_.preview.on("load", previewPainted);
    L_.store.on("load", () => { if (S.panT0 !== null && S.panT0 !== undefined) { const t0 = S.panT0; S.panT0 = null; requestAnimationFrame(() => S.pans.push(performance.now() - t0)); } });
  }
  map.on("movestart", () => { S.panT0 = performance.now(); });

  function previewPainted() {
    if (S.clickT0 === null) return;
    const t0 = S.clickT0, server = S.lastUpdate; S.clickT0 = null;
    requestAnimationFrame(() => {  // after the frame showing the preview's tiles
      const ms = performance.now() - t0;
      S.timings.push({ ms });
      $("latency").textContent = `change to painted preview: ${ms.toFixed(0)} ms` + (server ? ` (fit on the server: ${server.ms} ms)` : "");
    });
  }
  function legend() {
    const box = $("legend"), showing = S.k && map.hasLayer(L_.preview);
    box.style.display = showing ? "block" : "none";
    if (!showing) return;
    box.textContent = "";
    const title = document.createElement("div"); title.className = "title"; title.textContent = `k-NN preview (k=${S.k})`; box.append(title);
    for (const c of S.classes) {
      const item = document.createElement("div"); item.className = "item";
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = c.color;
      const name = document.createElement("span"); name.textContent = c.name;
      item.append(sw, name); box.append(item);
    }
  }

  // ------------------------------------------------------------ the state, sent after each change
  function drawPoints() {
    pointLayer.clearLayers();
    for (const p of S.points) {
      if (!p.lonlat) continue;
      L.circleMarker(ll(p.lonlat), { radius: 5, color: "#fff", weight: 2, fillColor: colourOf(p.label), fillOpacity: 1, interactive: false, pmIgnore: true }).addTo(pointLayer);
    }
    for (const g of S.polygons) g.setStyle({ color: colourOf(g.efm.label), weight: 2, fillOpacity: 0.15 });
  }
  async function changed() {
    S.dirty = true; renderClasses(); drawPoints();
    const seq = ++S.updateSeq, t = performance.now();
    S.busy++;
    try {
      const r = await api("/api/update", sent());
      if (seq !== S.updateSeq) return;
      S.rev = r.rev; S.k = r.k; S.lastUpdate = { ms: (performance.now() - t).toFixed(0) };
      const byId = Object.fromEntries(r.polygons.map((g) => [g.id, g]));
      for (const g of S.polygons) g.efm.sampled = byId[g.efm.id];
      renderPolygons();
      $("status").textContent = r.k ? `k-NN (k=${r.k}) on ${r.training} labelled pixels` + (r.skipped ? `; ${r.skipped} on no data left out` : "") : r.reason;
      legend();
      if (!r.k) S.clickT0 = null;
      L_.preview.redraw();
      if (map.hasLayer(L_.uncertainty)) L_.uncertainty.redraw();
      crossValidate(r.rev);
    } catch (err) {
      if (seq === S.updateSeq) { $("status").textContent = "not updated: " + err.message; S.clickT0 = null; }
    } finally { S.busy--; }
  }
  async function crossValidate(rev) {  // not awaited by the change: the map stays live meanwhile
    S.busy++;
    try {
      const r = await api("/api/cv", {});
      if (r.rev !== S.rev) return;  // a later change is on its way
      S.cv = r;
      $("cv").textContent = r.accuracy === null ? `spatial CV: ${r.reason}` :
        `spatial CV accuracy ${(100 * r.accuracy).toFixed(1)} % (${r.folds} folds, blocks of ${r.block_px} px, ${r.tested} points, ${r.ms} ms)`;
    } catch (err) { $("cv").textContent = "spatial CV failed: " + err.message; } finally { S.busy--; }
  }

  // ------------------------------------------------------------ classes, points, polygons
  function renderClasses() {
    const box = $("classes"); box.textContent = "";
    S.classes.forEach((c, i) => {
      const row = document.createElement("div");
      row.className = "class-row" + (i === S.current ? " current" : ""); row.dataset.label = c.name;
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = c.color; sw.dataset.color = c.color;
      const name = document.createElement("span"); name.textContent = (i < 9 ? `${i + 1} ` : "") + c.name;
      const count = document.createElement("span"); count.className = "count";
      count.textContent = S.points.filter((p) => p.label === c.name).length + S.polygons.filter((g) => g.efm.label === c.name).length;
      row.append(sw, name, count);
      row.addEventListener("click", () => { S.current = i; renderClasses(); });
      box.append(row);
    });
    const outside = S.points.filter((p) => p.row === null).length;
    $("counts").textContent = `${S.points.length} point(s), ${S.polygons.length} polygon(s)` + (outside ? `, ${outside} outside the store (kept)` : "") + (S.dirty ? ", not saved" : "");
  }
  function renderPolygons() {
    $("polygons").textContent = S.polygons.map((g) => {
      const s = g.efm.sampled;
      return s ? `${g.efm.id} ${g.efm.label}: ${s.sampled} of ${s.pixels} px` + (s.fixed ? " (crossed itself: fixed with make_valid)" : "") : `${g.efm.id}: …`;
    }).join("; ");
  }
  function addPoint(row, col, lonlat, label) {
    if (S.points.length >= S.info.max_points) { $("status").textContent = `${S.info.max_points} points at most: save, then remove some`; return false; }
    S.points.push({ id: "c" + S.nextId++, label, row, col, lonlat });
    return true;
  }
  map.on("click", async (ev) => {
    if (map.pm.globalDrawModeEnabled() || map.pm.globalEditModeEnabled() || map.pm.globalRemovalModeEnabled()) return;
    if (!S.classes.length) { $("status").textContent = "add a class first"; return; }
    S.clickT0 = performance.now();
    const at = map.latLngToContainerPoint(ev.latlng);
    let near = null, best = 7;
    for (const p of S.points) {
      if (!p.lonlat) continue;
      const d = at.distanceTo(map.latLngToContainerPoint(ll(p.lonlat)));
      if (d <= best) { best = d; near = p; }
    }
    if (near) { S.points = S.points.filter((p) => p !== near); changed(); return; }
    const label = S.classes[S.current].name;
    S.busy++;
    try {
      const r = await api("/api/locate", { lonlat: [ev.latlng.lng, ev.latlng.lat] });
      if (r.row === null) { S.clickT0 = null; $("status").textContent = r.reason; return; }
      if (addPoint(r.row, r.col, r.lonlat, label)) changed(); else S.clickT0 = null;
    } catch (err) { S.clickT0 = null; $("status").textContent = err.message; } finally { S.busy--; }
  });
  function adopt(layer, id, label) {  // a polygon on the map becomes one of the state's
    layer.efm = { id: id || "p" + S.nextPoly++, label: label || S.classes[S.current].name };
    layer.on("pm:edit", () => { S.clickT0 = performance.now(); changed(); });
    S.polygons.push(layer);
  }
  map.on("pm:create", (ev) => {
    if (!S.classes.length) { map.removeLayer(ev.layer); $("status").textContent = "add a class first"; return; }
    S.clickT0 = performance.now(); adopt(ev.layer); changed();
  });
  map.on("pm:remove", (ev) => {
    if (!ev.layer.efm) return;
    S.clickT0 = performance.now(); S.polygons = S.polygons.filter((g) => g !== ev.layer); changed();
  });

  // ------------------------------------------------------------ suggestions
  $("suggest").addEventListener("click", async () => {
    const b = map.getBounds(), n = Math.max(1, Math.min(100, parseInt($("suggest-n").value, 10) || 10));
    S.busy++;
    try {
      const r = await api("/api/suggest", { bounds: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()], n });
      S.suggestions = r.points; drawSuggestions();
      $("suggested").textContent = r.reason || `${r.points.length} suggested (most uncertain, ≥ ${r.spacing} px apart): click one to give it the current class`;
    } catch (err) { $("suggested").textContent = err.message; } finally { S.busy--; }
  });
  function drawSuggestions() {
    suggestLayer.clearLayers();
    S.suggestions.forEach((s) => {
      const m = L.circleMarker(ll(s.lonlat), { radius: 8, color: "#ffd400", weight: 3, fill: true, fillOpacity: 0.01, bubblingMouseEvents: false, pmIgnore: true });
      m.on("click", () => {  // accepted: a point of the current class, like a click
        if (!S.classes.length) return;
        S.clickT0 = performance.now();
        S.suggestions = S.suggestions.filter((x) => x !== s); drawSuggestions();
        if (addPoint(s.row, s.col, s.lonlat, S.classes[S.current].name)) changed();
      });
      m.addTo(suggestLayer);
    });
  }

  // ------------------------------------------------------------ other input
  window.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT") return;
    const n = parseInt(ev.key, 10);
    if (n >= 1 && n <= S.classes.length) { S.current = n - 1; renderClasses(); }
    if (ev.key === "p" || ev.key === "P") { const box = $("layer-preview"); box.checked = !box.checked; box.dispatchEvent(new Event("change")); }
  });
  window.addEventListener("beforeunload", (ev) => { if (S.dirty) { ev.preventDefault(); ev.returnValue = ""; } });
  $("mode").addEventListener("change", () => { $("band-pick").classList.toggle("on", $("mode").value === "bands"); L_.store.redraw(); });
  for (const id of ["band-r", "band-g", "band-b"]) $(id).addEventListener("change", () => L_.store.redraw());
  $("add-class").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const info = await api("/api/classes", { name: $("new-class").value });
      S.classes = info.classes; S.current = S.classes.length - 1; $("new-class").value = ""; renderClasses();
    } catch (err) { $("status").textContent = err.message; }
  });
  $("save").addEventListener("click", async () => {
    try {
      const r = await api("/api/save", sent());
      S.dirty = false; renderClasses();
      $("saved").textContent = `saved ${r.count} point(s) (${r.polygons} polygon(s)) to ${r.path} at ${new Date().toLocaleTimeString()}`;
    } catch (err) { $("saved").textContent = "not saved: " + err.message; }
  });

  // ------------------------------------------------------------ start
  async function start() {
    const info = await api("/api/info");
    S.info = info; S.classes = info.classes;
    S.points = info.points.map((p, i) => ({ ...p, lonlat: info.lonlats[i] }));
    $("store").textContent = `${info.store} · ${info.year} · ${info.width}x${info.height} px · ${info.crs} → ${info.output}`;
    for (const id of ["band-r", "band-g", "band-b"]) {
      for (const b of info.bands) { const o = document.createElement("option"); o.textContent = b; $(id).append(o); }
    }
    const rgb = info.rgb || ["A01", "A16", "A09"].filter((b) => info.bands.includes(b));
    ["band-r", "band-g", "band-b"].forEach((id, i) => { $(id).value = rgb[i] || info.bands[i]; });
    if (info.rgb) { $("mode").value = "bands"; $("band-pick").classList.add("on"); }
    map.pm.setGlobalOptions({ allowSelfIntersection: true, snappable: false });
    buildLayers(info);
    const [w, s, e, n] = info.lonlat_bounds;
    map.fitBounds([[s, w], [n, e]]);
    for (const g of info.polygons) {
      const layer = L.polygon(g.ring.map((c) => [c[1], c[0]])).addTo(map); adopt(layer, g.id, g.label);
      S.nextPoly = Math.max(S.nextPoly, (parseInt(g.id.slice(1), 10) || 0) + 1);
    }
    renderClasses(); drawPoints();
    if (S.points.length || S.polygons.length) { await changed(); S.dirty = false; renderClasses(); }
  }
  // For the browser test and the curious: the state, and places on the map.
  window.efmLabel = {
    state: S, map,
    lonlatToContainer: (lon, lat) => { const p = map.latLngToContainerPoint([lat, lon]); return [p.x, p.y]; },
    idle: () => S.busy === 0 && !map._animatingZoom && Object.values(L_).every((l) => !map.hasLayer(l) || !l.isLoading()),
  };
  start().catch((err) => { const m = $("message"); m.textContent = "cannot start: " + err.message; m.style.display = "block"; });
})();
