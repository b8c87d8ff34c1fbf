// efm label: the map's tile layers. The store's views (false colour, k-NN preview, uncertainty)
// and --image are Web Mercator tiles of the local server, fetched with the run's token (an <img>
// cannot carry it); --basemap is an ordinary Leaflet tile layer on the URL the user gave.
"use strict";
window.efmLayers = (function () {
  const TOKEN = document.querySelector('meta[name="efm-token"]').content;
  // A GridLayer whose tiles come from `url(coords)` (null: an empty tile) through fetch; 204 = nothing there.
  const ApiLayer = L.GridLayer.extend({
    // Leaflet 1.9.4's redraw() takes the map's zoom as the tiles' zoom unrounded: at a fractional
    // zoom (14.5) it asks for tiles that do not exist. Redraw at the zoom the layer already uses.
    redraw() { if (this._map) { this._removeAllTiles(); this._update(); } return this; },
    createTile(coords, done) {
      const tile = document.createElement("canvas");
      tile.width = tile.height = 256; tile.className = "efm-pixels";
      const url = this.options.url(coords);
      if (!url) { setTimeout(() => done(null, tile), 0); return tile; }
      fetch(url, { headers: { "X-EFM-Token": TOKEN }, cache: "no-store", credentials: "omit" })
        .then(async (res) => {
          if (res.status === 200) {
            const bitmap = await createImageBitmap(await res.blob());
            tile.getContext("2d").drawImage(bitmap, 0, 0);
          } else if (res.status !== 204) {
            let e = res.statusText; try { e = (await res.json()).error; } catch (_) {}
            throw new Error(e);
          }
          done(null, tile);
        })
        .catch((err) => { if (this.options.onError) this.options.onError(err); done(err, tile); });
      return tile;
    },
  });
  function apiLayer(url, options) { return new ApiLayer({ url, tileSize: 256, maxZoom: 22, keepBuffer: 1, ...options }); }

  // The panel: one row per layer, a checkbox (shown or not) and an opacity slider.
  function panel(box, map, entries) {
    box.textContent = "";
    for (const e of entries) {
      const row = document.createElement("div"); row.className = "layer-row"; row.dataset.layer = e.key;
      const on = document.createElement("input"); on.type = "checkbox"; on.checked = e.on; on.id = "layer-" + e.key;
      const name = document.createElement("label"); name.textContent = e.name; name.htmlFor = on.id;
      const opacity = document.createElement("input"); opacity.type = "range"; opacity.min = 0; opacity.max = 100;
      opacity.value = Math.round(e.opacity * 100); opacity.id = "opacity-" + e.key; opacity.title = "opacity";
      e.layer.setOpacity(e.opacity);
      if (e.on) e.layer.addTo(map);
      on.addEventListener("change", () => { if (on.checked) e.layer.addTo(map); else map.removeLayer(e.layer); if (e.changed) e.changed(); });
      opacity.addEventListener("input", () => e.layer.setOpacity(opacity.value / 100));
      row.append(on, name, opacity); box.append(row);
    }
  }
  return { TOKEN, apiLayer, panel };
})();
