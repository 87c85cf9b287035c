// chatapp's small browser glue: toasts from HX-Trigger, and nothing the server can do instead.
(function () {
  "use strict";

  function showToast(message, level, options) {
    var area = document.getElementById("toasts");
    if (!area || !message) return;
    var toast = document.createElement("div");
    toast.className = "toast toast-" + (level || "info");
    toast.setAttribute("data-testid", "toast");
    var text = document.createElement("span");
    text.textContent = message; // never innerHTML: messages may quote user text
    toast.appendChild(text);
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", function () { toast.remove(); });
    toast.appendChild(close);
    area.appendChild(toast);
    var ttl = (options && options.ttl) || (level === "error" ? 8000 : 4000);
    setTimeout(function () { toast.remove(); }, ttl);
  }
  window.showToast = showToast;

  document.addEventListener("toast", function (event) {
    var detail = event.detail || {};
    showToast(detail.message, detail.level, detail);
  });
})();
