// pg_sync console: turns each textarea.code-editor into a CodeMirror editor (Python,
// line numbers) and marks the lines the code check reported. Without JavaScript the
// plain textarea still works.
(function () {
  "use strict";
  var LIMIT = 1048576;
  function setUp(area) {
    if (typeof CodeMirror === "undefined") return;
    var cm = CodeMirror.fromTextArea(area, {
      mode: "python", lineNumbers: true, indentUnit: 4, viewportMargin: 50,
      readOnly: area.readOnly ? "nocursor" : false,
      extraKeys: { Tab: function (c) { c.replaceSelection("    "); } }
    });
    area.cm = cm;
    var lines = (area.getAttribute("data-error-lines") || "").split(",");
    lines.forEach(function (l) {
      var n = parseInt(l, 10);
      if (n > 0 && n <= cm.lineCount()) {
        cm.addLineClass(n - 1, "background", "cm-error-line");
        cm.addLineClass(n - 1, "gutter", "cm-error-gutter");
      }
    });
    if (lines[0]) {
      var first = parseInt(lines[0], 10);
      if (first > 0) cm.scrollIntoView({ line: first - 1, ch: 0 }, 80);
    }
  }
  document.querySelectorAll("textarea.code-editor").forEach(setUp);
  // Refuse an oversized paste before sending it (the server refuses it too).
  document.querySelectorAll("form.code-form").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      var big = null;
      form.querySelectorAll("textarea.code-editor").forEach(function (a) {
        var text = a.cm ? a.cm.getValue() : a.value;
        if (text.length > LIMIT) big = a;
      });
      if (big) {
        ev.preventDefault();
        var msg = form.querySelector(".too-large");
        if (msg) {
          msg.textContent = "The code is too large: more than 1 MiB. Nothing was sent or saved.";
          msg.hidden = false;
        }
      }
    });
  });
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (el && navigator.clipboard) navigator.clipboard.writeText(el.value || el.textContent);
    });
  });
})();
