// Keyboard shortcuts of the job page: u uphold, o overturn, e escalate, r focus the reason,
// 1-9 pick a category; Ctrl+Enter in the reason box submits the decision picked last.
(function () {
  "use strict";
  function setup() {
    var form = document.getElementById("decide-form");
    if (!form) { return; }
    var decision = document.getElementById("decision");
    var reason = document.getElementById("reason");
    var category = document.getElementById("category");
    var required = (form.dataset.requireReason || "").split(",").filter(Boolean);
    var busy = false;
    function decide(kind) {
      decision.value = kind;
      if (required.indexOf(kind) >= 0 && !reason.value.trim()) {
        reason.placeholder = "A reason is required to " + kind + " (Ctrl+Enter decides)";
        reason.focus();
        return;
      }
      if (!busy) { busy = true; form.submit(); }
    }
    form.querySelectorAll("button[data-decision]").forEach(function (b) {
      b.addEventListener("click", function (ev) { ev.preventDefault(); decide(b.dataset.decision); });
    });
    reason.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && decision.value) {
        ev.preventDefault();
        decide(decision.value);
      }
    });
    document.addEventListener("keydown", function (ev) {
      var t = ev.target;
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT")) { return; }
      var keys = { u: "uphold", o: "overturn", e: "escalate" };
      if (keys[ev.key]) { ev.preventDefault(); decide(keys[ev.key]); return; }
      if (ev.key === "r") { ev.preventDefault(); reason.focus(); return; }
      var n = parseInt(ev.key, 10);
      if (n >= 1 && n <= category.options.length) { category.selectedIndex = n - 1; }
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", setup); } else { setup(); }
})();
