/* MineWatch page helpers: shortcuts, server-computed styles, view toggle, copy, errors. */
(function () {
  "use strict";

  /* Shortcuts fire only when the reviewer is not typing and holds no modifier key. */
  window.mwFree = function (target, ctrl, alt, meta) {
    if (ctrl || alt || meta) return false;
    if (!target || !target.closest) return true;
    return !target.closest("input, textarea, select, [contenteditable], [contenteditable=true]");
  };


  /* Sizes and colours computed by the server travel as data attributes (the CSP allows no inline style). */
  function applyStyles(root) {
    if (!root || !root.querySelectorAll) return;
    var all = Array.prototype.slice.call(root.querySelectorAll("[data-width], [data-left], [data-background]"));
    if (root.matches && root.matches("[data-width], [data-left], [data-background]")) all.push(root);
    all.forEach(function (el) {
      if (el.dataset.width) el.style.width = el.dataset.width + "%";
      if (el.dataset.left) el.style.left = el.dataset.left + "%";
      if (el.dataset.background) el.style.background = el.dataset.background;
    });
  }
  document.addEventListener("htmx:load", function (event) { applyStyles(event.detail && event.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { applyStyles(document.body); });

  /* Keyboard shortcuts: the key clicks the card's button whose data-key lists it. */
  document.addEventListener("keyup", function (event) {
    if (!window.mwFree(event.target, event.ctrlKey, event.altKey, event.metaKey)) return;
    var buttons = document.querySelectorAll("#card [data-key]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].dataset.key.split(" ").indexOf(event.key) >= 0) { buttons[i].click(); return; }
    }
  });

  function toggleView() {
    var figure = document.querySelector("#card .thumb");
    var button = document.querySelector("#card [data-toggle-view]");
    if (!figure) return;
    var next = figure.dataset.view === "false" ? "rgb" : "false";
    figure.dataset.view = next;
    if (button) {
      button.setAttribute("aria-pressed", next === "false" ? "true" : "false");
      button.firstChild.nodeValue = next === "false" ? "Natural colour " : "False colour ";
    }
  }

  function copy(button) {
    var text = button.dataset.copy;
    var done = function () {
      button.textContent = "copied";
      setTimeout(function () { button.textContent = "copy"; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(button, done); });
    } else {
      fallbackCopy(button, done);
    }
  }

  function fallbackCopy(button, done) {
    var span = button.parentNode.querySelector("[data-latlon]");
    if (!span) return;
    var range = document.createRange();
    range.selectNodeContents(span);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { if (document.execCommand("copy")) done(); } catch (e) { /* the text stays selected */ }
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-toggle-view]");
    if (toggle) { toggleView(); return; }
    var copyButton = event.target.closest("[data-copy]");
    if (copyButton) copy(copyButton);
  });

  document.addEventListener("keyup", function (event) {
    if (event.key === "f" && window.mwFree(event.target, event.ctrlKey, event.altKey, event.metaKey)) {
      var toggle = document.querySelector("#card [data-toggle-view]");
      if (toggle) toggle.click();
    }
  });

  /* Server errors (5xx) and lost connections are not swapped: say so in the error area. */
  function showError(text) {
    var area = document.getElementById("card-error") || document.getElementById("page-error");
    if (area) area.innerHTML = '<p class="error"></p>', area.firstChild.textContent = text;
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    if (status >= 500) showError("The server failed (" + status + "); your last key press was not recorded. Try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    showError("No connection to the MineWatch server; your last key press was not recorded.");
  });
})();
