// Gatehouse dashboard: progressive enhancement only. Every page works
// without this file; it adds copy buttons and submits selects on change.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // A button's own label and its pending restore, kept from its first
  // click: a second click within 1.5 s would otherwise take "Copied" for
  // the label and leave it for good.
  var labels = new WeakMap();
  var restores = new WeakMap();

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest("button[data-copy]");
    if (!btn) return;
    var el = document.getElementById(btn.getAttribute("data-copy"));
    if (!el) return;
    if (!labels.has(btn)) labels.set(btn, btn.textContent);
    var text = el.textContent.trim();
    var done = function () {
      btn.textContent = "Copied";
      btn.setAttribute("aria-live", "polite");
      clearTimeout(restores.get(btn));
      restores.set(btn, setTimeout(function () { btn.textContent = labels.get(btn); }, 1500));
    };
    var fallback = function () {
      select(el);
      try {
        if (document.execCommand("copy")) { done(); return; }
      } catch (e) { /* fall through: the text stays selected */ }
      btn.textContent = "Press Ctrl+C";
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  });

  function select(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  document.addEventListener("change", function (ev) {
    var el = ev.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) el.form.submit();
  });
})();
