/* MineWatch review page helpers: shortcut guard, time per card, view toggle, copy, errors. */
(function () {
  "use strict";
  var shownAt = performance.now();

  /* Shortcuts fire only when the reviewer is not typing and holds no modifier key. */
  window.mwFree = function (target, ctrl, alt, meta) {
    if (ctrl || alt || meta) return false;
    if (!target || !target.closest) return true;
    return !target.closest("input, textarea, select, [contenteditable], [contenteditable=true]");
  };


  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail && event.detail.elt;
    if (elt && (elt.id === "card" || (elt.querySelector && elt.querySelector("#card")))) {
      shownAt = performance.now();
    }
  });

  /* The server clamps it; the client sends the time since the card was shown. */
  function elapsed() { return String(Math.round(performance.now() - shownAt)); }

  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.closest && elt.closest("#card-form")) {
      event.detail.parameters["ms"] = elapsed();
    }
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.id === "card-form" && form.elements.ms) form.elements.ms.value = elapsed();
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
