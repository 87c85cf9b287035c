// chatapp's browser glue: what the server cannot do for the page. Plain JS, no build step.
(function () {
  "use strict";

  // ---- Toasts: the server sends HX-Trigger {"toast": {...}}; messages are text, never HTML. One at a time: a new
  // one replaces the one showing. On the chat page the toast area is a line of its own under the composer (see
  // app.css), so the transcript keeps its newest message in view while the line comes and goes. ----
  function keepingTheNewestInView(change) {
    var container = document.getElementById("messages-container");
    var stick = container && container.scrollHeight - container.scrollTop - container.clientHeight < 80;
    change();
    if (stick) container.scrollTop = container.scrollHeight;
  }
  function showToast(message, level, options) {
    var area = document.getElementById("toasts");
    if (!area || !message) return;
    keepingTheNewestInView(function () { area.replaceChildren(); });
    var toast = document.createElement("div");
    toast.className = "toast toast-" + (level || "info");
    toast.setAttribute("data-testid", "toast");
    toast.setAttribute("data-level", level || "info");
    var text = document.createElement("span");
    text.textContent = message;
    toast.appendChild(text);
    if (options && options.undo) {
      var undo = document.createElement("button");
      undo.type = "button";
      undo.className = "toast-action";
      undo.setAttribute("data-testid", "toast-undo");
      undo.textContent = "Undo";
      undo.addEventListener("click", function () { undoDelete(String(options.undo), dismiss); });
      toast.appendChild(undo);
    }
    if (options && options.link) {
      // Same-site paths only (the server sends /login?next=...): never a link to somewhere else.
      var link = document.createElement("a");
      link.href = String(options.link).charAt(0) === "/" && String(options.link).charAt(1) !== "/" ? options.link : "/login";
      link.className = "toast-link";
      link.textContent = options.linkText || "Log in";
      toast.appendChild(link);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    function dismiss() { keepingTheNewestInView(function () { toast.remove(); }); }
    close.addEventListener("click", dismiss);
    toast.appendChild(close);
    keepingTheNewestInView(function () { area.appendChild(toast); });
    var ttl = (options && options.ttl) || (level === "error" ? 8000 : 4000);
    setTimeout(dismiss, ttl);
  }
  window.showToast = showToast;

  // ---- Delete: an in-app dialog asks first (never the browser's confirm()); then a toast can undo it while the
  // server keeps the conversation restorable (CHATAPP_DELETE_UNDO_SECONDS). ----
  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || ""; }
    catch (e) { return ""; }
  }
  function undoDelete(url, dismiss) {
    // Same-site restore paths only.
    if (!/^\/history\/[0-9a-f-]+\/restore$/.test(url)) return;
    fetch(url, {
      method: "POST",
      headers: { "Accept": "application/json", "x-csrftoken": csrfToken() },
      credentials: "same-origin",
    }).then(function (response) {
      dismiss();
      if (response.ok) {
        refreshHistory();
        showToast("Restored.", "success");
        announce("Restored.");
        return;
      }
      response.json().then(function (body) { showToast((body && body.detail) || "Could not undo.", "error"); },
        function () { showToast("Could not undo (" + response.status + ").", "error"); });
    }, function () { showToast("Cannot reach the server. Check your connection and try again.", "error"); });
  }
  // The history list as it is now (same view, search and filters), after an undo brought a row back.
  function refreshHistory() {
    var results = document.getElementById("history-results");
    if (!results || !window.htmx) return;
    htmx.ajax("GET", window.location.pathname + window.location.search,
      { target: "#history-results", select: "#history-results", swap: "outerHTML" });
  }
  // After a delete from a conversation's page the list says so in a notice (with an Undo form for pages without
  // JS): here it becomes the toast, and the URL forgets it so a reload does not offer it again.
  function undoNotice() {
    var notice = document.querySelector("[data-undo-notice]");
    if (!notice) return;
    var seconds = parseFloat(notice.getAttribute("data-undo-seconds")) || 10;
    notice.hidden = true;
    showToast(notice.getAttribute("data-message"), "success",
      { undo: notice.getAttribute("data-undo-url"), ttl: seconds * 1000 });
    var url = new URL(window.location.href);
    url.searchParams.delete("deleted");
    history.replaceState(history.state, "", url.pathname + url.search);
  }
  document.addEventListener("DOMContentLoaded", undoNotice);

  var pendingDelete = null;  // { proceed, opener } while the dialog is open
  function openDeleteDialog(marked, proceed) {
    var dialog = document.getElementById("delete-dialog");
    if (!dialog || !dialog.showModal) { proceed(); return; }  // no dialog here: the delete can be undone anyway
    var title = dialog.querySelector("[data-delete-title]");
    if (title) title.textContent = "“" + (marked.getAttribute("data-confirm-delete") || "this conversation") + "”";
    pendingDelete = { proceed: proceed, opener: document.activeElement };
    dialog.showModal();
    var cancel = dialog.querySelector("[data-dialog-cancel]");
    if (cancel) cancel.focus();
  }
  function closeDeleteDialog(confirmed) {
    var dialog = document.getElementById("delete-dialog");
    var pending = pendingDelete;
    pendingDelete = null;
    if (dialog && dialog.open) dialog.close();
    if (!pending) return;
    if (confirmed) pending.proceed();
    else if (pending.opener && pending.opener.focus && document.contains(pending.opener)) pending.opener.focus();
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest("#delete-dialog [data-dialog-confirm]")) closeDeleteDialog(true);
    else if (event.target.closest("#delete-dialog [data-dialog-cancel]")) closeDeleteDialog(false);
  });
  // Escape (the dialog's cancel event) and a click on the backdrop close it like Cancel.
  document.addEventListener("cancel", function (event) {
    if (event.target && event.target.id === "delete-dialog") { event.preventDefault(); closeDeleteDialog(false); }
  }, true);
  document.addEventListener("click", function (event) {
    if (event.target && event.target.id === "delete-dialog") closeDeleteDialog(false);  // the backdrop
  });
  // Tab and Shift+Tab go round the dialog's buttons, never out to the page behind it or the browser's bar.
  document.addEventListener("keydown", function (event) {
    var dialog = document.getElementById("delete-dialog");
    if (event.key !== "Tab" || !dialog || !dialog.open) return;
    var buttons = Array.prototype.slice.call(dialog.querySelectorAll("button"));
    var at = buttons.indexOf(document.activeElement);
    var next = (at + (event.shiftKey ? -1 : 1) + buttons.length) % buttons.length;
    event.preventDefault();
    buttons[at === -1 ? 0 : next].focus();
  });
  // htmx asks before every request: a delete waits for the dialog. The mark is on the form (a conversation's
  // page) or on the button that submitted it (a history row's, which posts the list's one form).
  document.addEventListener("htmx:confirm", function (event) {
    var submitted = event.detail.triggeringEvent && event.detail.triggeringEvent.submitter;
    var marked = [submitted, event.detail.elt].filter(function (element) {
      return element && element.hasAttribute && element.hasAttribute("data-confirm-delete");
    })[0];
    if (!marked) return;
    event.preventDefault();
    openDeleteDialog(marked, function () { event.detail.issueRequest(true); });
  });

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
    // Secure over https, like the server's own cookies (behind a TLS proxy every cookie is Secure).
    var secure = location.protocol === "https:" ? "; secure" : "";
    if (zone) document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax" + secure;
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

  // ---- Message actions: Copy puts the message's text on the clipboard; Retry is an htmx post (chat.html). Both
  // say what they did in the page's status line for screen readers. Times show in the browser's own zone. ----
  function announce(text) {
    var announcer = document.getElementById("announcer");
    if (!announcer) return;
    announcer.textContent = "";
    setTimeout(function () { announcer.textContent = text; }, 50);  // a change, even for the same words
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy-message]");
    if (!button) return;
    var bubble = button.closest(".message").querySelector(".bubble");
    var text = bubble ? bubble.innerText.trim() : "";
    var done = function () {
      button.textContent = "Copied";
      announce("Copied to the clipboard.");
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    var failed = function () { announce("Could not copy: the browser did not allow it."); };
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, failed);
    else failed();
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt && event.detail.elt.matches && event.detail.elt.matches(".retry-button")) {
      announce("Retrying: the agent answers again. The earlier reply is kept, marked replaced.");
    }
  });
  function localTimes(root) {
    var scope = root && root.querySelectorAll ? root : document;
    var times = scope.querySelectorAll ? scope.querySelectorAll("time.message-time") : [];
    if (root && root.matches && root.matches("time.message-time")) times = [root];
    Array.prototype.forEach.call(times, function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      el.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      el.title = at.toLocaleString();
    });
  }
  // SSE swaps bypass htmx.onLoad when they replace a bubble by hand (see below): format those too.
  document.addEventListener("htmx:sseMessage", function (event) {
    if (event.target && event.target.id === "messages-container") localTimes(event.target);
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

  // A stream whose host went silent (cut off behind the proxy, which keeps this connection open) never errors by
  // itself: the server pings every data-sse-ping seconds, and a stream silent for 2.5 pings is closed here and
  // handed to htmx-ext-sse's error path, which reconnects it (through the proxy, to a host that answers) with
  // the cursor, so it replays what it missed.
  var SILENT_PINGS = 2.5;
  function watchStream(source) {
    var panel = document.querySelector("[data-sse-ping]");
    var ping = panel ? parseFloat(panel.getAttribute("data-sse-ping")) : 0;
    if (!(ping > 0)) return;
    var seen = Date.now();
    var alive = function () { seen = Date.now(); };
    ["open", "ping", "message", "status", "control"].forEach(function (name) { source.addEventListener(name, alive); });
    var timer = setInterval(function () {
      if (source.readyState === EventSource.CLOSED) { clearInterval(timer); return; }
      if (Date.now() - seen < SILENT_PINGS * ping * 1000) return;
      clearInterval(timer);
      source.close();
      if (source.onerror) source.onerror(new Event("error"));
    }, 500);
  }

  // Scripts are deferred in order, so htmx and its SSE extension are defined by now.
  if (window.htmx) {
    htmx.createEventSource = function (url) {
      var source = new EventSource(withCursor(url));
      watchStream(source);
      return source;
    };
  }

  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 80; }

  // A saved conversation this tab is opening to continue (a sidebar item): the active one ends meanwhile, and its
  // "ended" event must not send this tab elsewhere; the response brings the panel.
  var reopening = false;
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt && event.detail.elt.hasAttribute && event.detail.elt.hasAttribute("data-reopen")) reopening = true;
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.elt && event.detail.elt.hasAttribute && event.detail.elt.hasAttribute("data-reopen")) reopening = false;
  });

  // Swaps are idempotent by element id: an interim is replaced by its next interim and by its final,
  // and a final seen twice (replay after reconnect) replaces itself instead of appearing twice.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var target = event.target;
    // "This conversation ended" while this tab's own New Chat is on its way: that response brings the panel.
    var busy = document.getElementById("new-chat-button");
    if (target && target.classList.contains("sse-sink") && ((busy && busy.disabled) || reopening) &&
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
      localTimes(incoming);
      if (window.htmx) htmx.process(incoming);  // its Retry button
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

  // While the server (or its database) cannot be reached, the status line must not keep saying "Agent is
  // ready": it says the agent is unreachable, and goes back to what it said once the server answers again
  // (the stream then sends the agent's current state if it has changed meanwhile).
  var statusBeforeOutage = null;
  function setAgentReachable(reachable) {
    var status = document.getElementById("agent-status");
    if (!status) return;
    var unreachable = status.querySelector('[data-state="unreachable"]');
    if (!reachable && !unreachable) {
      statusBeforeOutage = status.innerHTML;
      status.innerHTML = '<span class="status-dot status-unavailable" aria-hidden="true"></span>' +
        '<span data-testid="agent-status" data-state="unreachable">Agent unreachable: reconnecting…</span>';
    } else if (reachable && unreachable && statusBeforeOutage !== null) {
      status.innerHTML = statusBeforeOutage;
      statusBeforeOutage = null;
    }
  }
  document.addEventListener("htmx:sseError", function () { setConnectionState(true); setAgentReachable(false); });
  document.addEventListener("htmx:sseOpen", function () { setConnectionState(false); setAgentReachable(true); });
  document.addEventListener("htmx:sendError", function () { setAgentReachable(false); });
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status === 503) setAgentReachable(false);
    else if (event.detail.successful) setAgentReachable(true);
  });
  // A status pushed by the server is the truth again.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    if (event.target && event.target.id === "agent-status") statusBeforeOutage = null;
  });

  // ---- The draft: kept per tab (sessionStorage) so no swap, reload or re-login erases what is being typed. ----
  var DRAFT_KEY = "chatapp:draft";
  function saveDraft(value) {
    try {
      if (value) sessionStorage.setItem(DRAFT_KEY, value); else sessionStorage.removeItem(DRAFT_KEY);
    } catch (e) { /* storage off: the draft lives only in the text box */ }
  }
  function storedDraft() {
    try { return sessionStorage.getItem(DRAFT_KEY) || ""; } catch (e) { return ""; }
  }
  function restoreDraft() {
    var input = document.getElementById("message-input");
    var draft = storedDraft();
    if (!input || !draft || input.value) return false;
    input.value = draft;
    autogrow(input);
    return true;
  }

  // ---- The composer grows with its text up to its CSS max-height, then scrolls. ----
  function autogrow(input) {
    if (!input || input.id !== "message-input") return;
    input.style.height = "auto";
    var style = getComputedStyle(input);
    var limit = parseFloat(style.maxHeight) || 160;
    var borders = parseFloat(style.borderTopWidth) + parseFloat(style.borderBottomWidth);
    var wanted = input.scrollHeight + borders;
    input.style.height = Math.min(wanted, limit) + "px";
    input.style.overflowY = wanted > limit ? "auto" : "hidden";
  }
  // ---- The transcript opens at the newest message. ----
  function scrollToNewest() {
    var container = messages();
    if (container) container.scrollTop = container.scrollHeight;
  }

  // ---- The header names the conversation once its first message does (as the saved title will). ----
  function makeTitle(text) {
    var line = text.split(/\s+/).join(" ").trim();
    if (line.length <= 60) return line;
    var cut = line.slice(0, 59);
    if (cut.slice(30).indexOf(" ") !== -1) cut = cut.slice(0, cut.lastIndexOf(" "));
    return cut.replace(/[ ,.;:!?-]+$/, "") + "\u2026";
  }
  function nameConversation() {
    var heading = document.getElementById("conversation-title");
    var first = document.querySelector('#messages-container .message[data-role="user"][data-final="true"] .bubble');
    if (!heading || !first || heading.getAttribute("data-untitled") !== "true") return;
    heading.textContent = makeTitle(first.textContent);
    heading.removeAttribute("data-untitled");
  }
  document.addEventListener("htmx:sseMessage", nameConversation);

  // A refresh asked for by the stream means another tab saved this conversation (this tab's own New Chat
  // drops that event): say so once the new panel is in.
  var savedElsewhere = false;
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt && event.detail.elt.id === "panel-refresh") savedElsewhere = true;
  });

  // New Chat: the text box has the keyboard before the request leaves, so nothing typed right after the click (or
  // the shortcut) is lost; what is typed while the server saves moves into the new panel's text box at the swap.
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!event.detail.elt || event.detail.elt.id !== "new-chat-form") return;
    var input = document.getElementById("message-input");
    if (input && document.activeElement !== input) {
      input.focus();
      input.setSelectionRange(input.value.length, input.value.length);
    }
  });
  var typedBeforeSwap = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var input = document.getElementById("message-input");
    var target = event.detail.target;
    typedBeforeSwap = target && target.id === "chat-panel" && input ? input.value : null;
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var input = document.getElementById("message-input");
    var typed = typedBeforeSwap;
    typedBeforeSwap = null;
    if (!input || typed === null || event.detail.target.id !== "chat-panel") return;
    if (typed && !input.value) {
      input.value = typed;
      saveDraft(typed);
      autogrow(input);
    }
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  });

  // A fresh panel (New Chat, or another tab moved on) is ready to type into at once, with the draft.
  document.addEventListener("htmx:afterSettle", function (event) {
    var panel = event.detail.elt;
    if (panel && panel.id === "chat-panel") {
      var input = document.getElementById("message-input");
      var kept = restoreDraft() || Boolean(input && input.value);  // or carried over at the swap
      if (input && document.activeElement !== input) input.focus();
      scrollToNewest();
      if (savedElsewhere) {
        savedElsewhere = false;
        showToast("This conversation was saved in another tab." + (kept ? " Your draft was kept." : ""), "info",
          { ttl: 8000 });
      }
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    restoreDraft();
    autogrow(document.getElementById("message-input"));
    scrollToNewest();
    fillSearchForm();
  });

  // ---- History search: after Back, the fields show the filter the URL (and so the results) carry. ----
  function fillSearchForm() {
    var form = document.querySelector("form.search-form");
    if (!form) return;
    var params = new URLSearchParams(window.location.search);
    form.querySelectorAll("input[name]:not([type=hidden])").forEach(function (field) {
      field.value = params.get(field.name) || "";
    });
  }
  document.addEventListener("htmx:historyRestore", fillSearchForm);
  // The filter error arrives out of band; the filter fields say whether it applies to them.
  document.addEventListener("htmx:afterSettle", function () {
    var error = document.getElementById("range-error");
    if (!error) return;
    document.querySelectorAll(".search-form .filter-input").forEach(function (field) {
      if (error.hidden) field.removeAttribute("aria-invalid"); else field.setAttribute("aria-invalid", "true");
    });
  });
  window.addEventListener("pageshow", function (event) { if (event.persisted) fillSearchForm(); });

  // ---- Keyboard help: "?" (outside text fields) or the ? button opens it; Esc closes it (a <dialog>). ----
  function openHelp() {
    var dialog = document.getElementById("help-dialog");
    if (dialog && !dialog.open) dialog.showModal();
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-help-open]")) openHelp();
  });
  // The page's shortcuts: "?" (outside text fields) for the help, Ctrl/Cmd+Shift+O for New Chat.
  document.addEventListener("keydown", function (event) {
    var t = event.target;
    var typing = t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
    if (event.key === "?" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      openHelp();
    }
    if ((event.ctrlKey || event.metaKey) && event.shiftKey && (event.key === "O" || event.key === "o")) {
      var button = document.getElementById("new-chat-button");
      if (button && !button.disabled) {
        event.preventDefault();
        button.click();
      }
    }
  });

  // ---- Composer: Enter sends, Shift+Enter is a new line, Esc stops the reply; the draft is kept as it is typed;
  // each message gets an id so a retry is idempotent. Set up on every composer htmx loads (page, New Chat). ----
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return String(Date.now()) + "-" + Math.random().toString(16).slice(2);
  }

  function setupComposer(root) {
    var form = root && root.id === "message-form" ? root : root && root.querySelector && root.querySelector("#message-form");
    var input = form && form.querySelector("#message-input");
    if (!input || form.__chatappComposer) return;
    form.__chatappComposer = true;

    input.addEventListener("input", function () {
      saveDraft(input.value);
      autogrow(input);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !event.isComposing) {
        var stop = document.getElementById("stop-button");
        if (stop) {
          event.preventDefault();
          stop.click();
        }
      }
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (input.value.trim()) form.requestSubmit();
      }
    });
    form.addEventListener("htmx:configRequest", function (event) {
      if (event.detail.elt !== form) return;
      var idInput = form.querySelector("[name=item_id]");
      if (!idInput.value) idInput.value = newId();
      event.detail.parameters.item_id = idInput.value;
    });
    form.addEventListener("htmx:afterRequest", function (event) {
      if (event.detail.elt !== form || !event.detail.successful) return;
      form.reset();
      form.querySelector("[name=item_id]").value = "";
      saveDraft("");
      autogrow(input);
      input.focus();
    });
  }

  // ---- Dictation. Where the app has speech-to-text (data-dictation="server") the button records with
  // MediaRecorder and posts the recording, which the app transcribes and stores as the user's message: that works
  // in any browser that records. Otherwise the browser's Web Speech API, whose interims and final go to the server
  // like any transcript. With neither the button says dictation is unavailable. ----
  var Recognition = window.SpeechRecognition || window.webkitSpeechRecognition;
  var DICTATION_UNAVAILABLE = "Dictation is unavailable in this browser. You can still type.";

  function dictationUrl(suffix) {
    var panel = document.getElementById("chat-panel");
    return panel && "/conversations/" + panel.getAttribute("data-conversation-id") + "/dictation" + suffix;
  }

  function canRecord() {
    return !!(window.MediaRecorder && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  }

  // What to say when the microphone could not be opened: a denied permission only when it was denied.
  function microphoneProblem(error) {
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "SecurityError") return "Microphone access was denied. You can still type.";
    if (name === "NotFoundError" || name === "OverconstrainedError") return "No microphone was found. You can still type.";
    if (name === "NotReadableError") return "The microphone is in use by another program. You can still type.";
    return "The microphone could not be opened. You can still type.";
  }

  function setActive(button, active, label) {
    button.setAttribute("aria-pressed", active ? "true" : "false");
    button.classList.toggle("is-active", active);
    button.setAttribute("aria-label", label);
    button.title = label;
  }

  function setupDictation(root) {
    var button = (root || document).querySelector ? (root || document).querySelector("#dictate-button") : null;
    if (!button || button.__chatapp) return;
    button.__chatapp = true;
    button.hidden = false;
    if (button.getAttribute("data-dictation") === "server" && canRecord()) {
      recordedDictation(button);
    } else if (Recognition) {
      browserDictation(button);
    } else {
      button.setAttribute("aria-disabled", "true");
      button.setAttribute("data-state", "unavailable");
      button.setAttribute("aria-label", "Dictation unavailable");
      button.title = DICTATION_UNAVAILABLE;
      button.addEventListener("click", function () { showToast(DICTATION_UNAVAILABLE, "info"); });
    }
  }

  function recordedDictation(button) {
    var maxMs = (parseFloat(button.getAttribute("data-max-seconds")) || 60) * 1000;
    var recorder = null;
    var stopTimer = null;
    button.setAttribute("data-state", "ready");

    function send(blob) {
      var url = dictationUrl("/audio?item_id=" + encodeURIComponent(newId()));
      if (!url) return;
      button.setAttribute("data-state", "transcribing");
      button.setAttribute("aria-busy", "true");
      fetch(url, {
        method: "POST",
        headers: { "Content-Type": blob.type || "audio/webm", "Accept": "application/json", "x-csrftoken": csrfToken() },
        body: blob,
        credentials: "same-origin",
      }).then(function (response) {
        if (response.ok) return;  // the message arrives on the live stream like any other
        return response.json().then(function (body) {
          showToast((body && body.detail) || "Dictation was not accepted (" + response.status + ").", "error");
        }, function () { showToast("Dictation was not accepted (" + response.status + ").", "error"); });
      }, function () {
        showToast("Dictation could not reach the server.", "error");
      }).then(function () {
        button.removeAttribute("aria-busy");
        button.setAttribute("data-state", "ready");
      });
    }

    function start() {
      button.setAttribute("data-state", "starting");
      // The recognizer gets the voice as it is: the browser's noise suppression and gain control are made for
      // calls, and clip or cut words of a recording (echo cancellation stays, for the agent speaking meanwhile).
      var audio = { echoCancellation: true, noiseSuppression: false, autoGainControl: false };
      navigator.mediaDevices.getUserMedia({ audio: audio }).then(function (stream) {
        var type = MediaRecorder.isTypeSupported && MediaRecorder.isTypeSupported("audio/webm;codecs=opus") ? "audio/webm;codecs=opus" : "";
        var chunks = [];
        recorder = type ? new MediaRecorder(stream, { mimeType: type }) : new MediaRecorder(stream);
        recorder.ondataavailable = function (event) { if (event.data && event.data.size) chunks.push(event.data); };
        recorder.onstop = function () {
          clearTimeout(stopTimer);
          stream.getTracks().forEach(function (track) { track.stop(); });
          var mime = (recorder.mimeType || type || "audio/webm").split(";")[0];
          recorder = null;
          setActive(button, false, "Dictate");
          if (chunks.length) send(new Blob(chunks, { type: mime }));
          else button.setAttribute("data-state", "ready");
        };
        recorder.start();
        stopTimer = setTimeout(function () { if (recorder) recorder.stop(); }, maxMs);
        setActive(button, true, "Stop dictating and send");
        button.setAttribute("data-state", "recording");
      }, function (error) {
        button.setAttribute("data-state", "ready");
        showToast(microphoneProblem(error), "error");
      });
    }

    button.addEventListener("click", function () {
      if (button.getAttribute("aria-busy") === "true") return;  // still transcribing the last one
      if (recorder) recorder.stop();
      else if (button.getAttribute("data-state") === "ready") start();
    });
  }

  function browserDictation(button) {
    var recognition = null;
    var itemId = null;
    var lastSent = 0;

    function post(text, final) {
      var url = dictationUrl("");
      if (!url || !text) return;
      fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "x-csrftoken": csrfToken() },
        body: JSON.stringify({ item_id: itemId, text: text, final: final }),
        credentials: "same-origin",
      }).then(function (response) {
        if (response.ok) return;
        // Refused (too many posts, logged out, the conversation was saved...): say why, once in a while.
        response.json().then(function (body) { dictationRefused(body && body.detail, response.status); },
          function () { dictationRefused("", response.status); });
      }, function () { showToast("Dictation could not reach the server.", "error"); });
    }

    var lastRefusal = 0;
    function dictationRefused(detail, status) {
      if (Date.now() - lastRefusal < 5000) return;  // interims come several a second: one toast is enough
      lastRefusal = Date.now();
      showToast(detail || "Dictation was not accepted (" + status + ").", "error");
    }

    // "not-allowed" is also what Chromium says when its speech service refuses (no Google service): blame the
    // permission only when the page really lacks it.
    function recognitionProblem(error) {
      if (error === "service-not-allowed" || error === "network" || error === "language-not-supported") {
        return Promise.resolve(DICTATION_UNAVAILABLE);
      }
      if (error === "audio-capture") return Promise.resolve("No microphone was found. You can still type.");
      if (error !== "not-allowed") return Promise.resolve("Dictation stopped: " + error);
      if (!navigator.permissions || !navigator.permissions.query) return Promise.resolve(DICTATION_UNAVAILABLE);
      return navigator.permissions.query({ name: "microphone" }).then(function (status) {
        return status.state === "denied" ? "Microphone access was denied. You can still type." : DICTATION_UNAVAILABLE;
      }, function () { return DICTATION_UNAVAILABLE; });
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
        recognitionProblem(event.error).then(function (message) { showToast(message, "error"); });
      };
      recognition.onend = function () {
        recognition = null;
        setActive(button, false, "Dictate");
      };
      recognition.start();
      setActive(button, true, "Stop dictating");
    });
  }

  // A list row's Pin/Archive button re-renders the list: keep the keyboard where it was (the same
  // conversation's button, wherever its row moved), or on the list when the row left this view.
  var rowFocus = null;
  document.addEventListener("htmx:beforeRequest", function (event) {
    // A row's button posts the list's one form (#row-actions) to its own formaction.
    var submitted = event.detail.requestConfig && event.detail.requestConfig.triggeringEvent &&
      event.detail.requestConfig.triggeringEvent.submitter;
    var button = submitted && submitted.closest && submitted.closest(".row-actions button");
    var item = button && button.closest("[data-conversation-id]");
    rowFocus = item ? { id: item.getAttribute("data-conversation-id"), action: button.getAttribute("formaction") } : null;
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (!event.detail.successful) rowFocus = null;
  });
  document.addEventListener("htmx:afterSettle", function () {
    var wanted = rowFocus;
    var results = document.getElementById("history-results");
    if (!wanted || !results) return;
    rowFocus = null;
    var item = results.querySelector('[data-conversation-id="' + wanted.id + '"]');
    var target = (item && item.querySelector('button[formaction="' + wanted.action + '"]')) ||
      results.querySelector("#history-items a");
    if (!target) {
      results.setAttribute("tabindex", "-1");
      target = results;
    }
    target.focus();
  });

  // Each component's behaviour is set up on what htmx loads: the page, then every swapped-in part (contact-app's
  // htmx.onLoad). Without htmx the page still gets it once (set-up is idempotent per element).
  function setup(content) {
    setupComposer(content);
    setupDictation(document);
    localTimes(content);
  }
  if (window.htmx) htmx.onLoad(setup);
  document.addEventListener("DOMContentLoaded", function () { setup(document.body); });
})();
