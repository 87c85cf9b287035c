// Voice over LiveKit: join the conversation's room, publish the microphone, play the agent, show its state.
// Loaded only when the server runs with LiveKit (see templates/chat.html). The server never depends on it:
// every utterance reaches the app through the agent worker's ingest path, and typed text is always posted to the
// app's own /messages route too (with the item id the worker reports it under), so typing always works.
(function () {
  "use strict";

  var LK = window.LivekitClient;
  var CONNECT_TIMEOUT_MS = 15000;
  var TOKEN_MARGIN_MS = 30000;
  // When a room's connection drops, livekit-client resumes it by itself for a few seconds (a network blip);
  // then this page rejoins with a fresh token from the app, which opens the room again when the server lost it
  // (a restart), waiting longer after each failure, and says why voice is off when it gives up.
  var CLIENT_RETRY_DELAYS_MS = [0, 300, 1200, 2700];
  // In a room with no agent for this long, the page asks the app again (the same call as for a fresh token):
  // the app dispatches a new agent when LiveKit could not give the last one to a worker (none registered yet).
  var AGENT_WAIT_MS = 12000;
  var REJOIN_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000];
  var ITEM_ID_ATTRIBUTE = "chatapp.item_id"; // read by the worker (chatapp/livekit/forwarder.py)
  var LABELS = {
    connecting: "Connecting voice…",
    waiting: "Voice connected. Waiting for the agent to join…",
    ready: "Voice ready. Press the microphone to talk, or type.",
    initializing: "The agent is joining…",
    listening: "Agent is listening",
    thinking: "Agent is thinking…",
    speaking: "Agent is speaking…",
    unavailable: "Voice unavailable: could not connect to LiveKit. You can still type.",
    denied: "Microphone permission was denied. You can still type.",
    disconnected: "Voice disconnected. Press the microphone to reconnect. You can still type.",
    reconnecting: "Voice reconnecting… You can still type.",
    blocked: "Press the microphone to hear the agent.",
  };

  var current = null; // { id, room, micOn } for the conversation on the page
  var micWanted = false; // the person asked for the microphone; kept across New Chat
  var usedTokens = {}; // page tokens already joined with: a later join asks the app for a fresh one

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return String(Date.now()) + "-" + Math.random().toString(16).slice(2);
  }

  function panel() { return document.getElementById("chat-panel"); }

  function setStatus(state, text) {
    var status = document.getElementById("voice-status");
    if (status) {
      status.setAttribute("data-state", state);
      status.textContent = text || LABELS[state] || state;
    }
    var button = document.getElementById("voice-button");
    if (button) {
      var on = !!(current && current.micOn);
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.classList.toggle("is-active", on);
      button.title = on ? "Mute the microphone" : "Talk to the agent";
    }
  }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || ""; }
    catch (e) { return ""; }
  }

  function tokenUsable(token) {
    try {
      var payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).exp * 1000 - Date.now() > TOKEN_MARGIN_MS;
    } catch (e) { return false; }
  }

  // The token in the page is short-lived; a page open for long gets a fresh one from the app.
  function freshToken(conversationId) {
    return fetch("/livekit/token", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "x-csrftoken": csrfToken() },
      body: JSON.stringify({ conversation_id: conversationId }),
    }).then(function (response) {
      if (response.ok) return response.json();
      return response.json().catch(function () { return {}; }).then(function (body) {
        var error = new Error("token request failed: " + response.status);
        error.status = response.status;
        error.detail = body && body.detail;
        throw error;
      });
    });
  }

  function withTimeout(promise, ms) {
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(function () { reject(new Error("timed out")); }, ms);
      promise.then(function (value) { clearTimeout(timer); resolve(value); },
        function (error) { clearTimeout(timer); reject(error); });
    });
  }

  function agentOf(room) {
    var found = null;
    room.remoteParticipants.forEach(function (p) {
      if (p.isAgent || (LK.ParticipantKind && p.kind === LK.ParticipantKind.AGENT)) found = p;
    });
    return found;
  }

  function showAgentState(session) {
    if (current !== session || !session.room) return;
    var agent = agentOf(session.room);
    if (!agent) { setStatus("waiting"); askAgainLater(session); return; }
    var state = (agent.attributes || {})["lk.agent.state"];
    if (!session.room.canPlaybackAudio) { setStatus("blocked"); return; }
    if (state && LABELS[state]) { setStatus(state); return; }
    setStatus("ready");
  }

  function askAgainLater(session) {
    if (session.asking) return;
    session.asking = setTimeout(function () {
      session.asking = null;
      if (current !== session || !session.room || agentOf(session.room)) return;
      freshToken(session.conversationId).catch(function () {}).then(function () { showAgentState(session); });
    }, AGENT_WAIT_MS);
  }

  function audioSink() {
    var sink = document.getElementById("voice-audio");
    if (!sink) {
      sink = document.createElement("div");
      sink.id = "voice-audio";
      sink.hidden = true;
      document.body.appendChild(sink);
    }
    return sink;
  }

  // The agent's voice elements of a room we leave go with it (livekit-client does not unsubscribe on
  // disconnect): else the old room's element stays beside the new room's after New Chat.
  function dropAudio(session) {
    (session.audio || []).forEach(function (el) { el.remove(); });
    session.audio = [];
  }

  function wire(room, session) {
    var E = LK.RoomEvent;
    room.on(E.TrackSubscribed, function (track) {
      if (track.kind !== "audio") return;
      var el = track.attach();
      session.audio = (session.audio || []).concat([el]);
      audioSink().appendChild(el);
    });
    room.on(E.TrackUnsubscribed, function (track) {
      track.detach().forEach(function (el) { el.remove(); });
    });
    [E.ParticipantConnected, E.ParticipantDisconnected, E.ParticipantAttributesChanged,
      E.AudioPlaybackStatusChanged].forEach(function (name) {
      room.on(name, function () { showAgentState(session); });
    });
    [E.Reconnecting, E.SignalReconnecting].forEach(function (name) {
      room.on(name, function () {
        if (current === session && session.room === room) setStatus("reconnecting");
      });
    });
    room.on(E.Reconnected, function () { showAgentState(session); });
    room.on(E.Disconnected, function () {
      dropAudio(session);
      if (current !== session || session.room !== room) return; // we left it, or it never joined
      session.room = null;
      session.micOn = false;
      rejoin(session, 0);
    });
  }

  function enableMic(session) {
    var room = session.room;
    if (!room) return Promise.resolve();
    return room.startAudio().catch(function () {}).then(function () {
      return room.localParticipant.setMicrophoneEnabled(true);
    }).then(function () {
      session.micOn = true;
      showAgentState(session);
    }, function (error) {
      micWanted = false;
      session.micOn = false;
      var denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
      setStatus(denied ? "denied" : "unavailable",
        denied ? LABELS.denied : "The microphone could not be started. You can still type.");
    });
  }

  function leave(session) {
    if (!session || !session.room) return Promise.resolve();
    var room = session.room;
    session.room = null;
    session.micOn = false;
    dropAudio(session);
    return room.disconnect().catch(function () {});
  }

  function disconnect() {
    var session = current;
    current = null;
    return leave(session);
  }

  // The connection dropped for good (livekit-client gave up resuming it): join again with a fresh token while
  // the conversation is on the page, saying so; after the last attempt say why voice is off.
  function rejoin(session, attempt) {
    setStatus("reconnecting");
    setTimeout(function () {
      var target = panel();
      if (current !== session || !target || roomKey(target) !== session.id) return;
      connect(target, attempt + 1);
    }, REJOIN_DELAYS_MS[Math.min(attempt, REJOIN_DELAYS_MS.length - 1)]);
  }

  function whyNot(error) {
    if (!LK) return "Voice unavailable: the LiveKit client did not load. You can still type.";
    if (error && error.status === 503 && error.detail) { // the app's reason: unreachable, or refused its keys
      return error.detail.split(" Your messages")[0] + " You can still type.";
    }
    return LABELS.unavailable;
  }

  // Join the room of the conversation in the panel; New Chat swaps the panel and we follow it here.
  // `current` changes synchronously, so a second call while joining (several swaps settle) is a no-op.
  // A session is one period's room: a reopened conversation (same id, next period) gets a room of its own.
  function roomKey(target) {
    return target.getAttribute("data-conversation-id") + "/" + (target.getAttribute("data-period") || "0");
  }

  // `attempt` counts rejoins after a lost connection (0 for a first join).
  function connect(target, attempt) {
    attempt = attempt || 0;
    var id = target.getAttribute("data-conversation-id");
    var key = roomKey(target);
    if (current && current.id === key && (current.room || current.joining)) return Promise.resolve();
    var previous = current;
    var session = current = { id: key, conversationId: id, room: null, micOn: false, joining: true };
    setStatus(attempt ? "reconnecting" : "connecting");
    return leave(previous).then(function () {
      if (current !== session) return;
      if (!LK) throw new Error("the LiveKit client did not load");
      var url = target.getAttribute("data-livekit-url");
      var token = target.getAttribute("data-livekit-token");
      if (token && !usedTokens[token] && tokenUsable(token)) {
        usedTokens[token] = true;
        return { url: url, token: token };
      }
      return freshToken(id); // the app checks the room is still there (else opens it again) first
    }).then(function (credentials) {
      if (!credentials || current !== session) return;
      var room = new LK.Room({
        adaptiveStream: false,
        dynacast: false,
        reconnectPolicy: {
          nextRetryDelayInMs: function (context) {
            var delay = CLIENT_RETRY_DELAYS_MS[context.retryCount];
            return delay === undefined ? null : delay;
          },
        },
      });
      wire(room, session);
      return withTimeout(room.connect(credentials.url, credentials.token, { autoSubscribe: true }),
        CONNECT_TIMEOUT_MS).then(function () {
        session.joining = false;
        if (current !== session) { room.disconnect(); return; } // New Chat moved on meanwhile
        session.room = room;
        showAgentState(session);
        if (micWanted) return enableMic(session);
      }, function (error) {
        room.disconnect().catch(function () {});
        throw error;
      });
    }).catch(function (error) {
      session.joining = false;
      if (current !== session) return;
      if (window.console) console.warn("voice: could not join the room:", error && error.message);
      var settled = error && (error.status === 404 || error.status === 409); // the conversation ended
      if (attempt && LK && !settled && attempt < REJOIN_DELAYS_MS.length) { rejoin(session, attempt); return; }
      setStatus("unavailable", whyNot(error));
    });
  }

  function sync() {
    var target = panel();
    if (!target) { disconnect(); return; }
    var id = roomKey(target);
    if (target.getAttribute("data-mode") !== "voice") {
      if (current) disconnect();
      return; // the server rendered why voice is unavailable
    }
    if (!current || current.id !== id) connect(target);
    else showAgentState(current);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("#voice-button");
    if (!button) return;
    var target = panel();
    if (!target || target.getAttribute("data-mode") !== "voice") return;
    if (!current || !current.room) {
      micWanted = true;
      if (current && current.joining) return; // the microphone comes on once joined
      current = null; // a fresh attempt for the same conversation
      connect(target);
      return;
    }
    if (current.micOn) {
      micWanted = false;
      var session = current;
      session.room.localParticipant.setMicrophoneEnabled(false).then(function () {
        session.micOn = false;
        showAgentState(session);
      });
      return;
    }
    micWanted = true;
    enableMic(current);
  });

  // Typed text goes to the agent over the room's chat stream when the agent is there to hear it, and is also
  // posted to the app as usual (so it is stored even if the worker dies). Both carry the same item id: the
  // worker's forwarder reports the message under it, so the app stores it once.
  document.addEventListener("htmx:confirm", function (event) {
    var form = event.detail.elt;
    if (!form || form.id !== "message-form") return;
    var session = current;
    if (!session || !session.room || session.room.state !== "connected" || !agentOf(session.room)) return;
    var input = form.querySelector("[name=text]");
    var idInput = form.querySelector("[name=item_id]");
    var text = input ? input.value.trim() : "";
    if (!text || !idInput) return;
    if (!idInput.value) idInput.value = newId(); // app.js keeps a set id for the post
    event.preventDefault();
    var attributes = {};
    attributes[ITEM_ID_ATTRIBUTE] = "typed-" + idInput.value;
    var post = function () { event.detail.issueRequest(true); };
    withTimeout(session.room.localParticipant.sendText(text, { topic: "lk.chat", attributes: attributes }), 3000)
      .then(post, post); // the app stores it either way
  });

  // After a successful Retry the panel is re-rendered with the room's token.
  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.getAttribute && elt.getAttribute("data-testid") === "agent-retry" && event.detail.successful &&
      window.htmx) {
      htmx.ajax("GET", "/", { target: "#chat-panel", swap: "outerHTML" });
    }
  });

  document.addEventListener("htmx:afterSettle", sync);
  document.addEventListener("DOMContentLoaded", sync);
  if (document.readyState !== "loading") sync();
  window.chatappVoice = { state: function () { return current; } };
})();
