/* The triage grid's keys: arrows / h j k l move, m or space mine, s unsure, f false colour,
   Enter submits, Backspace reopens the last page, o opens the focused tile as a card.
   Every key has a button (data-grid-key) or link on the page; no inline script (CSP 'self'). */
(function () {
  "use strict";

  var MOVES = { ArrowLeft: [0, -1], h: [0, -1], ArrowRight: [0, 1], l: [0, 1],
                ArrowUp: [-1, 0], k: [-1, 0], ArrowDown: [1, 0], j: [1, 0] };
  var focus = 0;
  var sent = false;

  function form() { return document.getElementById("grid-form"); }
  function tiles() { return form() ? form().querySelectorAll(".tile") : []; }

  function setFocus(index) {
    var all = tiles();
    if (!all.length) return;
    focus = Math.max(0, Math.min(all.length - 1, index));
    for (var i = 0; i < all.length; i++) all[i].classList.toggle("focused", i === focus);
  }

  function move(rows, cols) {
    var width = parseInt(form().dataset.cols, 10) || 1;
    var column = focus % width;
    if (cols && (column + cols < 0 || column + cols >= width)) return;
    setFocus(focus + rows * width + cols);
  }

  /* A mark toggles: pressing m on a tile marked mine makes it background again. */
  function mark(label) {
    var tile = tiles()[focus];
    if (!tile) return;
    var next = tile.dataset.label === label ? "" : label;
    tile.dataset.label = next;
    tile.querySelector("[data-label-input]").value = next;
  }

  function flip() {
    var grid = form().querySelector(".triage-grid");
    var falseColour = grid.dataset.view !== "false";
    grid.dataset.view = falseColour ? "false" : "rgb";
    var button = form().querySelector('[data-grid-key="f"]');
    if (button) button.setAttribute("aria-pressed", falseColour ? "true" : "false");
  }

  function submit() {
    if (sent) return;
    sent = true;
    form().submit();
  }

  function act(key) {
    if (key === "m" || key === " ") mark("mine");
    else if (key === "s") mark("skip");
    else if (key === "f") flip();
    else if (key === "o") { var tile = tiles()[focus]; if (tile) window.location.assign(tile.dataset.open); }
    else if (key === "Enter") submit();
    else if (key === "Backspace") {
      if (form().dataset.reopened !== "true") window.location.assign(form().dataset.reopenUrl);
    } else return false;
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (!form() || !window.mwFree(event.target, event.ctrlKey, event.altKey, event.metaKey)) return;
    var delta = MOVES[event.key];
    if (delta) { event.preventDefault(); move(delta[0], delta[1]); return; }
    if (event.key === "Enter" || event.key === " " || event.key === "Backspace") event.preventDefault();
    if (event.repeat && (event.key === "Enter" || event.key === "Backspace")) return;
    act(event.key);
  });

  document.addEventListener("click", function (event) {
    if (!form()) return;
    var tile = event.target.closest(".tile");
    if (tile) { setFocus(parseInt(tile.dataset.index, 10)); return; }
    var button = event.target.closest("[data-grid-key]");
    if (button) act(button.dataset.gridKey);
  });

  document.addEventListener("submit", function (event) {
    if (event.target === form()) sent = true;
  });

  document.addEventListener("DOMContentLoaded", function () { setFocus(0); });
})();
