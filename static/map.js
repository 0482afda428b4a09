// MineWatch map: the year's imagery (tiles served by the app), cells of the current view coloured
// by status and score on top; click -> review card. One switch picks the year and colour mode.
(function () {
  "use strict";
  function start() {
    var el = document.getElementById("map");
    if (!el || !window.L) { return; }
    var cfg = JSON.parse(el.dataset.config);
    var map = L.map(el, { preferCanvas: true, minZoom: 3, maxZoom: 18 });
    window.minewatchMap = map;   // for the browser tests and the console
    if (cfg.basemapUrl) {
      L.tileLayer(cfg.basemapUrl, { maxZoom: 18, attribution: "basemap" }).addTo(map);
    }
    var layerSel = document.getElementById("map-layer");
    function year() { return layerSel.value.split("/")[0]; }
    function mode() { return layerSel.value.split("/")[1]; }
    var statusSel = document.getElementById("map-status");
    var countEl = document.getElementById("map-count");

    function style(feature) {
      var p = feature.properties;
      var score = p.score == null ? 0 : p.score;
      var fill = p.status === "background" ? 0.08 + 0.4 * score : 0.35 + 0.5 * score;
      // over imagery the fill is lighter and the edge stronger, so the ground shows through
      return { color: cfg.colours[p.status], weight: imagery ? 1.5 : 0.6,
               fillColor: cfg.colours[p.status], fillOpacity: imagery ? fill * 0.4 : fill };
    }
    var cells = L.geoJSON(null, {
      style: style,
      onEachFeature: function (feature, layer) {
        var p = feature.properties;
        layer.bindTooltip("cell " + p.cell_id + " · " + p.status +
                          (p.score == null ? "" : " · score " + p.score.toFixed(2)));
        layer.on("click", function () { window.location.href = p.review_url; });
      }
    }).addTo(map);
    var outline = function (colour, dash) {
      return L.geoJSON(null, { interactive: false,
        style: { color: colour, weight: 2, fill: false, dashArray: dash } }).addTo(map);
    };
    var imagery = null;
    var focusOutline = null;
    function showImagery() {
      if (imagery) { map.removeLayer(imagery); imagery = null; }
      var url = cfg.tiles[layerSel.value];
      el.dataset.imagery = url ? layerSel.value : "none";
      el.dataset.tiles = "0";
      if (!url) { return; }
      // tiles sit in Leaflet's tile pane, under the cells of the overlay pane; beyond the
      // imagery's own resolution (maxNativeZoom) Leaflet upscales the deepest served tiles
      imagery = L.tileLayer(url, { tileSize: 256, maxNativeZoom: cfg.maxNativeZoom, maxZoom: 18,
                                   attribution: "imagery " + layerSel.value });
      imagery.on("tileload", function () { el.dataset.tiles = String(Number(el.dataset.tiles) + 1); });
      imagery.addTo(map);
    }
    var territory = outline("#111827", null);
    var protectedAreas = outline("#15803d", "6 4");
    fetch(cfg.territoryUrl).then(function (r) { return r.json(); }).then(function (fc) { territory.addData(fc); });
    fetch(cfg.protectedUrl).then(function (r) { return r.json(); }).then(function (fc) { protectedAreas.addData(fc); });

    var pending = null;
    function load() {
      var b = map.getBounds();
      var params = new URLSearchParams({ year: year(), status: statusSel.value,
        bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(5); }).join(",") });
      var url = cfg.cellsUrl + "?" + params.toString();
      pending = url;
      countEl.textContent = "loading…";
      delete el.dataset.loaded;
      fetch(url).then(function (r) { return r.json(); }).then(function (fc) {
        if (pending !== url) { return; }
        cells.clearLayers();
        cells.addData(fc);
        if (focusOutline) { focusOutline.bringToFront(); }
        countEl.textContent = fc.count + " cells" + (fc.truncated ? " (zoom in to see all)" : "");
        el.dataset.loaded = String(fc.count);
      }).catch(function () { countEl.textContent = "could not load the cells"; });
      history.replaceState(null, "", "?year=" + year() + "&mode=" + mode() + "&status=" + statusSel.value);
    }
    var timer = null;
    map.on("moveend", function () { clearTimeout(timer); timer = setTimeout(load, 150); });
    layerSel.addEventListener("change", function () { showImagery(); load(); });
    showImagery();
    statusSel.addEventListener("change", load);
    if (cfg.focus) {
      focusOutline = L.geoJSON(cfg.focus.geometry, { interactive: false,
        style: { color: "#facc15", weight: 3, fill: false } }).addTo(map);
      map.setView([cfg.focus.lat, cfg.focus.lon], cfg.focus.zoom);
    } else if (cfg.bounds) {
      map.fitBounds([[cfg.bounds[1], cfg.bounds[0]], [cfg.bounds[3], cfg.bounds[2]]]);
    } else {
      map.setView([-28.5, 24.5], 5);
    }
    // the first view fires "moveend", which loads the cells
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
