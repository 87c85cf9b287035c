// chatapp's browser glue: what the server cannot do for the page. Plain JS, no build step.
(function () {
  "use strict";

  // ---- Toasts: the server sends HX-Trigger {"toast": {...}}; messages are text, never HTML. ----
  function showToast(message, level, options) {
    var area = document.getElementById("toasts");
    if (!area || !message) return;
    var toast = document.createElement("div");
    toast.className = "toast toast-" + (level || "info");
    toast.setAttribute("data-testid", "toast");
    toast.setAttribute("data-level", level || "info");
    var text = document.createElement("span");
    text.textContent = message;
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

  // A failed request with no toast of its own (network down, proxy error) still tells the person.
  document.addEventListener("htmx:sendError", function () {
    showToast("Cannot reach the server. Check your connection and try again.", "error");
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && !xhr.getResponseHeader("HX-Trigger")) {
      showToast("Something went wrong (" + xhr.status + "). Please try again.", "error");
    }
  });

  // The server groups history by the person's calendar days: tell it the browser's time zone.
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax";
  } catch (e) { /* UTC it is */ }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var field = document.querySelector(button.getAttribute("data-copy"));
    if (!field) return;
    field.select();
    var done = function () { showToast("Link copied.", "success"); };
    if (navigator.clipboard) navigator.clipboard.writeText(field.value).then(done, done);
    else { document.execCommand("copy"); done(); }
  });

  // ---- Live transcript over SSE ----
  function messages() { return document.getElementById("messages-container"); }

  // The cursor is the sequence of the newest final on the page. htmx-ext-sse recreates its EventSource
  // after an error and so loses Last-Event-ID; every (re)connect carries the cursor in the URL instead.
  function cursor() {
    var max = 0;
    var container = messages();
    if (!container) return 0;
    container.querySelectorAll("[data-seq]").forEach(function (el) {
      var seq = parseInt(el.getAttribute("data-seq"), 10);
      if (seq > max) max = seq;
    });
    return max;
  }

  function withCursor(url) {
    var parsed = new URL(url, window.location.href);
    if (parsed.pathname.indexOf("/conversations/") === 0) parsed.searchParams.set("after", String(cursor()));
    return parsed.pathname + parsed.search;
  }

  // Scripts are deferred in order, so htmx and its SSE extension are defined by now.
  if (window.htmx) {
    htmx.createEventSource = function (url) { return new EventSource(withCursor(url)); };
  }

  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 80; }

  // Swaps are idempotent by element id: an interim is replaced by its next interim and by its final,
  // and a final seen twice (replay after reconnect) replaces itself instead of appearing twice.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var target = event.target;
    // "This conversation ended" while this tab's own New Chat is on its way: that response brings the panel.
    var busy = document.getElementById("new-chat-button");
    if (target && target.classList.contains("sse-sink") && busy && busy.disabled &&
        event.detail.data.indexOf('id="panel-refresh"') !== -1) {
      event.preventDefault();
      return;
    }
    if (!target || target.id !== "messages-container") return;
    var stick = nearBottom(target);
    var template = document.createElement("template");
    template.innerHTML = event.detail.data.trim();
    var incoming = template.content.firstElementChild;
    if (!incoming || !incoming.id) return;
    var existing = document.getElementById(incoming.id);
    if (existing) {
      // A late interim must not overwrite the final it belongs to.
      if (existing.getAttribute("data-final") === "true" && incoming.getAttribute("data-final") !== "true") {
        event.preventDefault();
        return;
      }
      existing.replaceWith(incoming);
      event.preventDefault();
    }
    if (stick) requestAnimationFrame(function () { target.scrollTop = target.scrollHeight; });
  });

  document.addEventListener("htmx:sseMessage", function (event) {
    var target = event.target;
    if (target && target.id === "messages-container" && nearBottom(target)) {
      target.scrollTop = target.scrollHeight;
    }
  });

  function setConnectionState(down) {
    var badge = document.getElementById("connection-state");
    if (badge) badge.hidden = !down;
    var panel = document.getElementById("chat-panel");
    if (panel) panel.classList.toggle("is-reconnecting", down);
  }
  document.addEventListener("htmx:sseError", function () { setConnectionState(true); });
  document.addEventListener("htmx:sseOpen", function () { setConnectionState(false); });

  // A fresh panel (New Chat, or another tab moved on) is ready to type into at once.
  document.addEventListener("htmx:afterSettle", function (event) {
    var panel = event.detail.elt;
    if (panel && panel.id === "chat-panel") {
      var input = document.getElementById("message-input");
      if (input) input.focus();
    }
  });

  // ---- Composer: Enter sends, Shift+Enter is a new line; each message gets an id so a retry is idempotent. ----
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return String(Date.now()) + "-" + Math.random().toString(16).slice(2);
  }

  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (input && input.id === "message-input" && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (input.value.trim()) input.form.requestSubmit();
    }
    if ((event.ctrlKey || event.metaKey) && event.shiftKey && (event.key === "O" || event.key === "o")) {
      var button = document.getElementById("new-chat-button");
      if (button && !button.disabled) {
        event.preventDefault();
        button.click();
      }
    }
  });

  document.addEventListener("htmx:configRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.id === "message-form") {
      var idInput = form.querySelector("[name=item_id]");
      if (!idInput.value) idInput.value = newId();
      event.detail.parameters.item_id = idInput.value;
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.id === "message-form" && event.detail.successful) {
      form.reset();
      form.querySelector("[name=item_id]").value = "";
      var input = document.getElementById("message-input");
      if (input) input.focus();
    }
  });

  // ---- Dictation (Web Speech API): interims and the final go to the server like any transcript. ----
  var Recognition = window.SpeechRecognition || window.webkitSpeechRecognition;

  function setupDictation(root) {
    var button = (root || document).querySelector ? (root || document).querySelector("#dictate-button") : null;
    if (!button || button.__chatapp) return;
    button.__chatapp = true;
    if (!Recognition) return; // stays hidden where unsupported
    button.hidden = false;
    var recognition = null;
    var itemId = null;
    var lastSent = 0;

    function post(text, final) {
      var panel = document.getElementById("chat-panel");
      if (!panel || !text) return;
      var url = "/conversations/" + panel.getAttribute("data-conversation-id") + "/dictation";
      var token = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"];
      fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "x-csrftoken": token },
        body: JSON.stringify({ item_id: itemId, text: text, final: final }),
        credentials: "same-origin",
      }).catch(function () { showToast("Dictation could not reach the server.", "error"); });
    }

    button.addEventListener("click", function () {
      if (recognition) { recognition.stop(); return; }
      recognition = new Recognition();
      recognition.interimResults = true;
      recognition.continuous = true;
      recognition.lang = document.documentElement.lang || "en";
      itemId = newId();
      recognition.onresult = function (event) {
        for (var i = event.resultIndex; i < event.results.length; i++) {
          var result = event.results[i];
          var text = result[0].transcript.trim();
          if (result.isFinal) {
            post(text, true);
            itemId = newId();
          } else if (Date.now() - lastSent > 250) {
            lastSent = Date.now();
            post(text, false);
          }
        }
      };
      recognition.onerror = function (event) {
        var denied = event.error === "not-allowed" || event.error === "service-not-allowed";
        showToast(denied ? "Microphone permission was denied. You can still type." : "Dictation stopped: " + event.error, "error");
      };
      recognition.onend = function () {
        recognition = null;
        button.setAttribute("aria-pressed", "false");
        button.classList.remove("is-active");
      };
      recognition.start();
      button.setAttribute("aria-pressed", "true");
      button.classList.add("is-active");
    });
  }

  document.addEventListener("htmx:load", function (event) { setupDictation(document); });
  document.addEventListener("DOMContentLoaded", function () { setupDictation(document); });
})();
