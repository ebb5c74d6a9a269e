/* zapgate console: signs in with a client's API key and drives the /whatsapp API with fetch() and Socket.IO.
   No build step, no dependency but the bundled socket.io client. Text from the API reaches the page only through
   textContent and attributes, never as HTML. The key lives in this tab's sessionStorage and in request headers,
   never in a URL. */
(() => {
  "use strict";

  const KEY_STORE = "zapgate.apiKey";
  const MESSAGES_SHOWN = 50;
  const LIST_REFRESH = 15000; // ms: sessions created elsewhere announce nothing to this tab
  const MAX_TEXT = 4096; // characters of a message, as the API counts them

  // status -> [words, tone]
  const SESSION_STATUS = {
    created: ["Created", "info"],
    unplaced: ["Waiting for a worker", "wait"],
    connecting: ["Connecting…", "info"],
    qr: ["Awaiting QR scan", "wait"],
    pairing: ["Awaiting pairing code", "wait"],
    connected: ["Connected", "ok"],
    disconnected: ["Disconnected", "wait"],
    reconnecting: ["Reconnecting…", "wait"],
    stopped: ["Stopped", "idle"],
    logged_out: ["Logged out", "idle"],
    failed: ["Failed", "bad"],
    qr_timeout: ["QR code expired", "bad"],
  };
  const MESSAGE_STATUS = {
    pending: "Pending",
    sent: "Sent",
    delivered: "Delivered",
    read: "Read",
    played: "Played",
    failed: "Failed",
  };
  const RANK = { pending: 0, failed: 1, sent: 1, delivered: 2, read: 3, played: 4 }; // statuses only move up
  // problems that name no field, and the form field they are about
  const CODE_FIELDS = {
    invalid_phone_number: ["to", "phoneNumber", "from"],
    duplicate_record: ["sessionId"],
    invalid_session_id: ["sessionId"],
  };
  const CONFIRMATIONS = {
    restart: ["Restart session?", "Restart “%s”? A linked session reconnects from its keys; another shows a new QR code.", "Restart"],
    logout: ["Log out session?", "Unlink “%s” from its phone and delete its keys? Linking it again needs a new scan.", "Log out"],
    delete: ["Delete session?", "Delete “%s” with its contacts and messages? This cannot be undone.", "Delete"],
  };

  const state = {
    key: null,
    sessions: new Map(), // sessionId -> the API's session
    selected: null, // sessionId shown in the detail panel
    qrs: new Map(), // sessionId -> {dataUrl, expiresAt (ms), refetched}
    messages: [], // the selected session's, oldest first
    socket: null,
    skew: 0, // ms: the server's clock minus ours
    signOuts: 0, // answers to requests made before the last sign-out are dropped
    timers: [],
  };

  // -- small helpers ------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** An element with properties (`text` is its textContent, `on…` listeners, others attributes) and children. */
  function h(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    node.append(...children.filter((child) => child !== null && child !== undefined)); // strings become text
    return node;
  }

  const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const TODAY = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
  const EARLIER = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "short" });

  /** A <time>: in full, or compact (the time alone for today) with the full date and time as its tooltip. */
  function timeElement(iso, compact = false) {
    const at = iso ? new Date(iso) : null;
    if (!at || Number.isNaN(at.getTime())) return document.createTextNode("—");
    const today = at.toDateString() === new Date().toDateString();
    const format = compact ? (today ? TODAY : EARLIER) : FULL;
    return h("time", { datetime: iso, title: FULL.format(at), text: format.format(at) });
  }

  const phone = (value) => (value && /^\d+$/.test(value) ? `+${value}` : value || "");
  const now = () => Date.now() + state.skew;
  const sessionPath = (id) => `/whatsapp/sessions/${encodeURIComponent(id)}`;
  const textLength = (value) => [...value].length; // code points, as the API counts

  function suggestPhone() {
    const digits = Array.from(crypto.getRandomValues(new Uint8Array(8)), (byte) => byte % 10).join("");
    return `55119${digits}`; // a São Paulo mobile number: valid, and almost surely unused on the sandbox
  }

  // -- the API ------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || `the server answered ${status}`);
      this.status = status;
      this.code = (problem && problem.code) || `http_${status}`;
      this.errors = problem && Array.isArray(problem.errors) ? problem.errors : [];
    }
  }

  function noteServerClock(response) {
    const date = Date.parse(response.headers.get("date") || "");
    if (Number.isNaN(date)) return;
    const skew = date - Date.now();
    state.skew = Math.abs(skew) > 2000 ? skew : 0; // Date has whole seconds: only a real difference counts
  }

  /** Call the API with the key; return the JSON answer or throw ApiError (problem+json). */
  async function api(method, path, body, key = state.key) {
    const headers = { "X-API-Key": key, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const signOuts = state.signOuts;
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, { detail: "The server cannot be reached: is zapgate running?", code: "unreachable" });
    }
    if (signOuts !== state.signOuts) throw new ApiError(0, { detail: "Signed out meanwhile.", code: "signed_out" });
    noteServerClock(response);
    const type = response.headers.get("content-type") || "";
    const data = response.status !== 204 && type.includes("json") ? await response.json().catch(() => null) : null;
    if (response.ok) return data;
    if (response.status === 401 && state.key && key === state.key) {
      signOut("Your API key is no longer accepted: sign in again.");
    }
    throw new ApiError(response.status, data);
  }

  // -- forms --------------------------------------------------------------------------------------------

  function clearErrors(form) {
    for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
    for (const slot of form.querySelectorAll(".field-error, .form-error, .form-done")) slot.textContent = "";
  }

  /** Show `message` under the form field named `name`; false when the form has no such field. */
  function fieldError(form, name, message) {
    const input = form.elements.namedItem(name);
    const slot = input && input.id ? $(`${input.id}-error`) : null;
    if (!slot) return false;
    input.setAttribute("aria-invalid", "true");
    slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
    return true;
  }

  function formError(form, message) {
    const slot = form.querySelector(".form-error");
    slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
  }

  function formDone(form, message) {
    const slot = form.querySelector(".form-done");
    if (slot) slot.textContent = message;
  }

  /** Put an API error next to the fields it names, the rest at the form's foot. */
  function showError(form, error) {
    if (error.errors.length) {
      for (const { field, message } of error.errors) {
        if (!fieldError(form, field, message)) formError(form, `${field}: ${message}`);
      }
    } else {
      const field = (CODE_FIELDS[error.code] || []).find((name) => form.elements.namedItem(name));
      if (!field || !fieldError(form, field, error.message)) formError(form, error.message);
    }
    const invalid = form.querySelector("[aria-invalid='true']");
    if (invalid) invalid.focus();
  }

  /** Mark the empty required fields; true when there are none. */
  function filledIn(form) {
    let complete = true;
    for (const input of form.querySelectorAll("[required]")) {
      if (!input.value.trim()) {
        fieldError(form, input.name, "Required.");
        complete = false;
      }
    }
    if (!complete) form.querySelector("[aria-invalid='true']").focus();
    return complete;
  }

  /** Handle `form`'s submissions with `handler(form)`: errors shown, the button disabled meanwhile. */
  function onSubmit(form, handler) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      clearErrors(form);
      if (!filledIn(form)) return;
      button.disabled = true;
      try {
        await handler(form);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        showError(form, error);
      } finally {
        button.disabled = false;
      }
    });
  }

  const value = (form, name) => form.elements.namedItem(name).value.trim();

  // -- signing in and out -------------------------------------------------------------------------------

  async function signIn(key, remembered = false) {
    const form = $("sign-in-form");
    clearErrors(form);
    if (!/^[\x21-\x7e]+$/.test(key)) {
      fieldError(form, "apiKey", "An API key has only letters, digits and punctuation: check what was pasted.");
      $("api-key").focus();
      return;
    }
    let listed;
    try {
      listed = await api("GET", "/whatsapp/sessions", undefined, key);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      let message = error.message;
      if (error.status === 401) {
        sessionStorage.removeItem(KEY_STORE);
        message = remembered
          ? "The saved API key is no longer accepted: enter a valid one."
          : "This API key was not accepted (401): check it and try again.";
      }
      fieldError(form, "apiKey", message);
      $("api-key").focus();
      return;
    }
    state.key = key;
    sessionStorage.setItem(KEY_STORE, key);
    form.reset();
    $("sign-in").hidden = true;
    $("console").hidden = false;
    $("account").hidden = false;
    setSessions(listed.sessions);
    connectSocket();
    state.timers.push(setInterval(tickCountdown, 1000));
    state.timers.push(
      setInterval(() => {
        if (document.visibilityState === "visible") refreshSessions();
      }, LIST_REFRESH),
    );
    const wanted = new URLSearchParams(location.hash.slice(1)).get("session");
    select(wanted && state.sessions.has(wanted) ? wanted : null);
    $("main").focus();
  }

  function signOut(reason) {
    state.key = null;
    state.signOuts += 1;
    sessionStorage.removeItem(KEY_STORE);
    if (state.socket) {
      const socket = state.socket;
      state.socket = null;
      socket.disconnect();
    }
    state.timers.forEach(clearInterval);
    state.timers = [];
    state.sessions.clear();
    state.qrs.clear();
    select(null);
    renderSessions();
    setLive("offline");
    $("console").hidden = true;
    $("account").hidden = true;
    $("sign-in").hidden = false;
    const form = $("sign-in-form");
    clearErrors(form);
    if (reason) fieldError(form, "apiKey", reason);
    $("api-key").focus();
  }

  // -- sessions -----------------------------------------------------------------------------------------

  /** Take a session from the API; an older copy than the one held is ignored unless `force`. */
  function upsertSession(session, force = false) {
    const known = state.sessions.get(session.sessionId);
    if (known && !force && Date.parse(session.updatedAt) < Date.parse(known.updatedAt)) return;
    state.sessions.set(session.sessionId, session);
    if (!known) joinSession(session.sessionId);
    if (session.status !== "qr") state.qrs.delete(session.sessionId);
    renderSessions();
    if (state.selected === session.sessionId) renderDetail();
  }

  function patchSession(id, changes) {
    const known = state.sessions.get(id);
    if (known) upsertSession({ ...known, ...changes }, true);
  }

  function forgetSession(id) {
    if (!state.sessions.delete(id)) return;
    state.qrs.delete(id);
    if (state.socket && state.socket.connected) state.socket.emit("leave-session", { sessionId: id }, () => {});
    if (state.selected === id) select(null);
    renderSessions();
  }

  function setSessions(list) {
    const listed = new Set(list.map((session) => session.sessionId));
    for (const id of [...state.sessions.keys()]) if (!listed.has(id)) forgetSession(id);
    for (const session of list) upsertSession(session);
    renderSessions();
  }

  async function refreshSessions() {
    try {
      setSessions((await api("GET", "/whatsapp/sessions")).sessions);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
  }

  async function refreshSession(id) {
    try {
      upsertSession(await api("GET", sessionPath(id)));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 404) forgetSession(id);
    }
  }

  function badge(status, element) {
    const [words, tone] = SESSION_STATUS[status] || [status, "idle"];
    element.classList.add("badge");
    element.dataset.status = status;
    element.dataset.tone = tone;
    element.textContent = words;
    return element;
  }

  function renderSessions() {
    const focused = document.activeElement && document.activeElement.closest("#session-rows tr");
    const refocus = focused ? focused.dataset.session : null;
    const sessions = [...state.sessions.values()].sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt));
    const rows = sessions.map((session) =>
      h(
        "tr",
        { "data-session": session.sessionId, "aria-current": session.sessionId === state.selected ? "true" : null },
        h("th", { scope: "row" }, h("button", { type: "button", className: "link", text: session.sessionId })),
        h("td", {}, badge(session.status, h("span"))),
        h("td", { text: session.engine }),
        h("td", { text: phone(session.phoneNumber) || "—" }),
        h("td", {}, timeElement(session.createdAt, true)),
        h("td", {}, timeElement(session.updatedAt, true)),
      ),
    );
    $("session-rows").replaceChildren(...rows);
    $("no-sessions").hidden = rows.length > 0;
    if (refocus) {
      const row = rows.find((tr) => tr.dataset.session === refocus);
      if (row) row.querySelector("button").focus();
    }
  }

  function select(id, focus = false) {
    const changed = id !== state.selected;
    state.selected = id;
    const hash = id ? `#session=${encodeURIComponent(id)}` : "";
    if (location.hash !== hash) history.replaceState(null, "", `${location.pathname}${hash}`);
    if (changed) {
      state.messages = [];
      renderMessages();
      for (const form of $("detail").querySelectorAll("form")) {
        form.reset();
        clearErrors(form);
      }
      $("action-result").textContent = "";
      $("scan-phone").value = suggestPhone();
      updateCounter();
      if (id) loadMessages(id);
    }
    renderSessions();
    renderDetail();
    if (focus && id) $("detail-title").focus();
  }

  const selectedSession = () => (state.selected ? state.sessions.get(state.selected) : undefined);

  function renderDetail() {
    const session = selectedSession();
    $("detail").hidden = !session;
    $("welcome").hidden = Boolean(session);
    if (!session) return;
    $("detail-id").textContent = session.sessionId;
    badge(session.status, $("detail-status"));
    $("detail-engine").textContent = session.sandbox ? "sandbox (simulated network)" : session.engine;
    $("detail-phone").textContent = phone(session.phoneNumber) || "not linked yet";
    $("detail-created").replaceChildren(timeElement(session.createdAt));
    $("detail-updated").replaceChildren(timeElement(session.updatedAt));
    const problem = session.status === "connected" ? null : session.lastError;
    $("detail-error").hidden = !problem;
    $("detail-error").textContent = problem || "";
    $("detail").querySelector("[data-action=logout]").disabled = session.status === "logged_out";

    $("qr-panel").hidden = session.status !== "qr";
    if (session.status === "qr") renderQr(session);
    $("code-panel").hidden = session.status !== "pairing";
    $("pairing-code").textContent = session.pairingCode || "…";
    $("sandbox-scan").hidden = !session.sandbox;
    $("sandbox-code").hidden = !session.sandbox || !session.pairingCode;
    $("sandbox-inbound").hidden = !session.sandbox;
  }

  // -- QR codes -----------------------------------------------------------------------------------------

  const qrLoads = new Set();

  function setQr(id, dataUrl, expiresAt) {
    if (typeof dataUrl !== "string" || !dataUrl.startsWith("data:image/png;base64,")) return;
    const expires = expiresAt ? Date.parse(expiresAt) : null;
    const known = state.qrs.get(id);
    if (known && known.expiresAt !== null && expires !== null && expires < known.expiresAt) return; // older
    state.qrs.set(id, { dataUrl, expiresAt: expires, refetched: false });
    if (id === state.selected) renderDetail(); // shown while the session's status is qr
  }

  async function loadQr(id) {
    if (qrLoads.has(id)) return;
    qrLoads.add(id);
    try {
      const qr = await api("GET", `${sessionPath(id)}/qr`);
      setQr(id, qr.qrDataUrl, qr.expiresAt);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error; // 404: it shows none now; its events will tell what next
    } finally {
      qrLoads.delete(id);
    }
  }

  function renderQr(session) {
    const qr = state.qrs.get(session.sessionId);
    const image = $("qr-image");
    image.hidden = !qr;
    if (qr) {
      if (image.getAttribute("src") !== qr.dataUrl) image.src = qr.dataUrl;
      image.alt = `QR code that links session ${session.sessionId}`;
    } else {
      image.removeAttribute("src");
      if (session.qrCode) loadQr(session.sessionId); // else its qr-code event is on its way
    }
    tickCountdown();
  }

  function tickCountdown() {
    const session = selectedSession();
    if (!session || session.status !== "qr") return;
    const out = $("qr-countdown");
    const qr = state.qrs.get(session.sessionId);
    if (!qr || qr.expiresAt === null) {
      out.textContent = qr ? "" : "Waiting for a QR code…";
      out.dataset.expired = "false";
      return;
    }
    const left = Math.ceil((qr.expiresAt - now()) / 1000);
    if (left > 0) {
      out.textContent = `Expires in ${left} s`;
      out.dataset.expired = "false";
      return;
    }
    out.textContent = "Expired: a new code is on its way…";
    out.dataset.expired = "true";
    if (!qr.refetched && left <= -2) {
      qr.refetched = true; // the next code's event may have been missed while offline: ask once
      loadQr(session.sessionId);
    }
  }

  // -- messages -----------------------------------------------------------------------------------------

  let loads = 0;
  let reloadTimer = null;

  function reloadMessagesSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => loadMessages(state.selected), 150);
  }

  async function loadMessages(id) {
    if (!id) return;
    const load = ++loads;
    const query = new URLSearchParams({ sessionId: id, limit: String(MESSAGES_SHOWN) });
    let page;
    try {
      page = await api("GET", `/whatsapp/messages?${query}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (load === loads && id === state.selected) formError($("send-form"), `Messages could not be loaded: ${error.message}`);
      return;
    }
    if (load !== loads || id !== state.selected) return; // a newer load or another session
    const held = new Map(state.messages.map((message) => [message.messageId, message]));
    state.messages = page.messages.reverse().map((message) => {
      const seen = held.get(message.messageId);
      // an event may have moved it on after this page was read
      return seen && RANK[seen.status] > RANK[message.status] ? { ...message, status: seen.status } : message;
    });
    renderMessages();
  }

  function onMessageStatus(event) {
    if (event.sessionId !== state.selected) return;
    const message = state.messages.find(
      (held) => held.messageId === event.messageId || held.messageId === event.requestedMessageId,
    );
    if (!message) {
      reloadMessagesSoon();
      return;
    }
    message.messageId = event.messageId;
    if (RANK[event.status] >= RANK[message.status]) {
      message.status = event.status;
      if (event.error) message.error = event.error;
    }
    renderMessages();
  }

  const SVG = "http://www.w3.org/2000/svg";
  const TICK_PATHS = {
    pending: "M7 1.5a5.5 5.5 0 1 1 0 11a5.5 5.5 0 1 1 0-11Z M7 4v3.3l2.4 1.4",
    sent: "M2 7.5l3 3L11.5 3.5",
    delivered: "M1 7.5l3 3L10.5 3.5 M7 9.5l1 1L14.5 3.5",
    failed: "M7 1.5a5.5 5.5 0 1 1 0 11a5.5 5.5 0 1 1 0-11Z M7 4v4 M7 10v0.3",
  };

  function tickIcon(status) {
    const path = TICK_PATHS[status] || TICK_PATHS.delivered; // read and played: the double tick, in blue
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 16 14");
    svg.setAttribute("aria-hidden", "true");
    const line = document.createElementNS(SVG, "path");
    line.setAttribute("d", path);
    for (const [name, attribute] of [["fill", "none"], ["stroke", "currentColor"], ["stroke-width", "1.6"],
      ["stroke-linecap", "round"], ["stroke-linejoin", "round"]]) line.setAttribute(name, attribute);
    svg.append(line);
    return svg;
  }

  function messageItem() {
    return h(
      "li",
      { className: "message" },
      h("div", { className: "message-meta" }, h("span", { className: "message-peer" }), h("span", { className: "message-time" })),
      h("p", { className: "message-text" }),
      h("div", { className: "message-foot" }, h("span", { className: "message-error" }), h("span", { className: "ticks" })),
    );
  }

  function fillMessage(item, message) {
    item.dataset.messageId = message.messageId;
    item.dataset.direction = message.direction;
    item.dataset.status = message.status;
    const contact = message.contact;
    const number = contact ? phone(contact.phoneNumber) : message.chatJid || "";
    const peer = contact && contact.name ? `${contact.name} (${number})` : number;
    item.querySelector(".message-peer").textContent = `${message.direction === "outbound" ? "To" : "From"} ${peer}`;
    item.querySelector(".message-time").replaceChildren(timeElement(message.timestamp, true));
    item.querySelector(".message-text").textContent = message.content || `[${message.type}]`;
    item.querySelector(".message-error").textContent = message.status === "failed" ? message.error || "" : "";
    const ticks = item.querySelector(".ticks");
    if (ticks.dataset.status !== message.status) {
      const word = MESSAGE_STATUS[message.status] || message.status;
      ticks.dataset.status = message.status;
      ticks.title = word;
      ticks.replaceChildren(tickIcon(message.status), h("span", { className: "tick-word", text: word }));
    }
  }

  /** Bring the list in line with state.messages, keeping the items that stay (screen readers hear only news). */
  function renderMessages() {
    const list = $("message-list");
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
    const items = new Map([...list.children].map((item) => [item.dataset.messageId, item]));
    let previous = null;
    for (const message of state.messages) {
      let item = items.get(message.messageId);
      if (item) items.delete(message.messageId);
      else item = messageItem();
      fillMessage(item, message);
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (item !== expected) list.insertBefore(item, expected);
      previous = item;
    }
    for (const stale of items.values()) stale.remove();
    $("no-messages").hidden = state.messages.length > 0;
    if (atEnd) list.scrollTop = list.scrollHeight;
  }

  function updateCounter() {
    const length = textLength($("send-message").value);
    const counter = $("send-message-count");
    counter.textContent = `${length} / ${MAX_TEXT} characters`;
    counter.classList.toggle("over", length > MAX_TEXT);
  }

  // -- live updates (Socket.IO) -------------------------------------------------------------------------

  function setLive(mode) {
    const live = $("live");
    live.dataset.state = mode;
    live.textContent = { live: "live", reconnecting: "reconnecting…", offline: "offline" }[mode];
  }

  function joinSession(id) {
    const socket = state.socket;
    if (!socket || !socket.connected) return; // every known session is joined on (re)connect
    socket.emit("join-session", { sessionId: id }, (ack) => {
      if (socket !== state.socket || !ack) return;
      if (ack.ok && ack.session) upsertSession(ack.session);
      else if (ack.error && ack.error.status === 404) forgetSession(id);
    });
  }

  function onStatusChange(event) {
    const known = state.sessions.get(event.sessionId);
    if (!known) {
      refreshSessions();
      return;
    }
    if (!(Date.parse(event.createdAt) < Date.parse(known.updatedAt))) { // else what is shown is newer
      const changes = { status: event.status, updatedAt: event.createdAt };
      if (event.phoneNumber) changes.phoneNumber = event.phoneNumber;
      if (event.reason) changes.lastError = event.reason;
      patchSession(event.sessionId, changes);
    }
    refreshSession(event.sessionId); // the rest of the row (pairing code, last error, linked number)
  }

  function connectSocket() {
    if (typeof io !== "function") {
      setLive("offline"); // the bundle failed to load: REST still works, nothing updates by itself
      return;
    }
    // WebSocket first: it works on any of several API processes (which refuse long-polling); polling is
    // the fallback for a single process behind a proxy that does not pass WebSockets
    const socket = io("/whatsapp", {
      auth: { apiKey: state.key },
      reconnectionDelayMax: 10000,
      transports: ["websocket", "polling"],
      tryAllTransports: true,
    });
    state.socket = socket;
    const mine = (handler) => (...args) => {
      if (socket === state.socket) handler(...args);
    };
    socket.on("connect", mine(() => {
      setLive("live");
      for (const id of state.sessions.keys()) joinSession(id);
      refreshSessions(); // what changed while this socket was not listening
      if (state.selected) reloadMessagesSoon();
    }));
    socket.on("disconnect", mine(() => setLive("reconnecting")));
    socket.on("connect_error", mine((error) => {
      if (error && error.data && error.data.code === "unauthorized") {
        signOut("Your API key is no longer accepted: sign in again.");
      } else {
        setLive("reconnecting");
      }
    }));
    socket.on("status-change", mine(onStatusChange));
    socket.on("qr-code", mine((event) => setQr(event.sessionId, event.qrDataUrl, event.expiresAt)));
    socket.on("pairing-code", mine((event) => patchSession(event.sessionId, { status: "pairing", pairingCode: event.code })));
    socket.on("message-received", mine((event) => {
      if (event.sessionId === state.selected) reloadMessagesSoon();
    }));
    socket.on("message-status", mine(onMessageStatus));
    socket.on("error", mine((event) => {
      // a session's error from the event log (refused commands are answered by their acks instead)
      if (event && event.eventId && event.sessionId) patchSession(event.sessionId, { lastError: event.message });
    }));
  }

  // -- actions ------------------------------------------------------------------------------------------

  function confirmAction(title, text, ok) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = ok;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }

  async function act(action, button) {
    const session = selectedSession();
    if (!session) return;
    const id = session.sessionId;
    const [title, text, ok] = CONFIRMATIONS[action];
    if (!(await confirmAction(title, text.replace("%s", id), ok))) return;
    const result = $("action-result");
    result.textContent = "";
    button.disabled = true;
    try {
      if (action === "delete") {
        await api("DELETE", sessionPath(id));
        forgetSession(id);
        $("sessions-notice").textContent = `Session ${id} deleted.`;
      } else {
        upsertSession(await api("POST", `${sessionPath(id)}/${action}`), true);
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      result.textContent = error.message;
    } finally {
      button.disabled = false;
    }
  }

  function wire() {
    onSubmit($("sign-in-form"), (form) => signIn(value(form, "apiKey")));
    $("sign-out").addEventListener("click", () => signOut());

    $("session-rows").addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (button) select(button.closest("tr").dataset.session, true);
    });

    onSubmit($("create-form"), async (form) => {
      const body = { sessionId: value(form, "sessionId") };
      if (value(form, "engine")) body.engine = value(form, "engine");
      if (value(form, "phoneNumber")) body.phoneNumber = value(form, "phoneNumber");
      const session = await api("POST", "/whatsapp/session", body);
      upsertSession(session, true);
      form.elements.namedItem("sessionId").value = "";
      form.elements.namedItem("phoneNumber").value = "";
      $("sessions-notice").textContent = `Session ${session.sessionId} created.`;
      select(session.sessionId, true);
    });

    for (const button of $("detail").querySelectorAll("[data-action]")) {
      button.addEventListener("click", () => act(button.dataset.action, button));
    }

    onSubmit($("pair-code-form"), async (form) => {
      const body = { phoneNumber: value(form, "phoneNumber") };
      upsertSession(await api("POST", `${sessionPath(state.selected)}/pairing-code`, body), true);
    });

    onSubmit($("scan-form"), async (form) => {
      await api("POST", `/whatsapp/sandbox/sessions/${encodeURIComponent(state.selected)}/scan`, {
        phoneNumber: value(form, "phoneNumber"),
      });
      formDone(form, "Scanned: the session is linking…");
    });

    onSubmit($("enter-code-form"), async (form) => {
      const code = $("pairing-code").textContent;
      await api("POST", `/whatsapp/sandbox/sessions/${encodeURIComponent(state.selected)}/enter-code`, { code });
      formDone(form, "Typed: the session is linking…");
    });

    onSubmit($("inbound-form"), async (form) => {
      const body = { sessionId: state.selected, from: value(form, "from"), message: value(form, "message") };
      await api("POST", "/whatsapp/sandbox/inbound", body);
      form.elements.namedItem("message").value = "";
      formDone(form, "Injected: it arrives as an inbound message.");
      reloadMessagesSoon();
    });

    onSubmit($("send-form"), async (form) => {
      const to = value(form, "to");
      const text = form.elements.namedItem("message").value; // sent as typed: spaces are part of a text
      const accepted = await api("POST", "/whatsapp/send", { sessionId: state.selected, to, message: text });
      if (accepted.sessionId === state.selected && !state.messages.some((m) => m.messageId === accepted.messageId)) {
        state.messages.push({
          messageId: accepted.messageId,
          direction: "outbound",
          status: accepted.status,
          type: "text",
          content: text,
          timestamp: accepted.timestamp,
          contact: { phoneNumber: to.includes("@") ? to : to.replace(/\D/g, "") },
        });
        renderMessages();
      }
      form.elements.namedItem("message").value = "";
      updateCounter();
      formDone(form, `Queued as ${accepted.messageId}.`);
      reloadMessagesSoon();
    });
    $("send-message").addEventListener("input", updateCounter);
  }

  wire();
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) signIn(saved, true);
  else $("api-key").focus();
})();
