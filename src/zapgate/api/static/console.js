/* zapgate console: signs in with a client's API key and drives the /whatsapp API with fetch() and Socket.IO.
   No build step, no dependency but the bundled socket.io client. Text from the API reaches the page only through
   textContent and attributes, never as HTML. The key lives in this tab's sessionStorage and in request headers,
   never in a URL. */
(() => {
  "use strict";

  const KEY_STORE = "zapgate.apiKey";
  const PAGE = 50; // items per page of every list (messages, chats, a chat's messages)
  const CATCH_UP = 10; // pages a live refresh reads at most to reach what is loaded; past that it starts over
  const LIST_REFRESH = 15000; // ms: sessions created elsewhere announce nothing to this tab
  const MAX_TEXT = 4096; // characters of a message, as the API counts them
  const MAX_CAPTION = 1024; // characters of a file's caption
  const MAX_FILE = 100 * 1024 * 1024; // bytes: the largest file WhatsApp takes (a document)

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
  const FIELD_ALIASES = [
    [/^(image|video|audio|document|sticker)(\.(id|link|voice|view_once))?$/, "file"],
    [/^(image|video|document)\.caption$|^text\.body$/, "message"],
  ];
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
    messages: [], // the selected session's loaded ones, oldest first (messageList's items, reversed)
    messageList: null, // the Listing of the selected session's messages
    chats: [], // the selected session's loaded ones, newest activity first (chatList's items)
    chatList: null, // the Listing of the selected session's chats
    chat: null, // the open chat: {id, info (the API's chat), list (its Listing), messages (oldest first), about, aboutShown}
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
    if (body instanceof FormData) {
      init.body = body; // the browser writes the multipart Content-Type with its boundary
    } else if (body !== undefined) {
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

  /** The form field an API field is about: a file message's object is its file, its caption the text box. */
  function formField(field) {
    for (const [pattern, name] of FIELD_ALIASES) if (pattern.test(field)) return name;
    return field;
  }

  /** Put an API error next to the fields it names, the rest at the form's foot. */
  function showError(form, error) {
    if (error.errors.length) {
      for (const { field, message } of error.errors) {
        if (!fieldError(form, formField(field), message)) formError(form, `${field}: ${message}`);
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
    files.clear(); // their signed links are this client's
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
      state.chats = [];
      state.messageList = id ? sessionMessages(id) : null;
      state.chatList = id ? sessionChats(id) : null;
      if (state.chat) closeChat();
      renderMessages();
      renderChats();
      $("chats-error").textContent = "";
      $("messages-error").textContent = "";
      for (const form of $("detail").querySelectorAll("form")) {
        form.reset();
        clearErrors(form);
      }
      $("action-result").textContent = "";
      $("scan-phone").value = suggestPhone();
      updateSendForm();
      if (id) loadMessages();
      if (id) loadChats();
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

  // -- lists read a page at a time ---------------------------------------------------------------------

  /** A list the API gives newest first a page at a time (`limit`, `cursor` → `nextCursor`): its newest page
      is read again on every live change, older pages are added on demand ("load more"). Each item is held
      once, in the API's order, however refreshes and older pages interleave; what was loaded stays loaded.

      `read(cursor)` answers {items, next}; `idOf(item)` names an item for good; `keyOf(item)` is its place in
      the order (a chat's last activity: a chat that moved is not where it was); `adopt(fresh, held)` is the
      copy to keep when a page brings an item again; `changed()` runs after every change. */
  class Listing {
    constructor(read, { idOf, keyOf, adopt = (fresh) => fresh, changed }) {
      Object.assign(this, { read, idOf, keyOf, adopt, changed });
      this.items = []; // newest first
      this.next = null; // the cursor of the page after the loaded ones; null: nothing older
      this.loaded = false; // a first page came
      this.loadingOlder = false;
      this.refreshes = 0;
    }

    /** Read the newest page again (and the next ones until they reach what is loaded): true once applied,
        false when a newer refresh overtook it. The API's errors are thrown (ApiError). */
    async refresh() {
      const token = ++this.refreshes;
      const fresh = [];
      const seen = new Set();
      for (let cursor = null, pages = 1; ; pages += 1) {
        const page = await this.read(cursor);
        if (token !== this.refreshes) return false;
        for (const item of page.items) {
          const id = this.idOf(item);
          if (!seen.has(id)) fresh.push(item);
          seen.add(id);
        }
        cursor = page.next;
        // where the pages read meet the loaded items: the last item of this page held where it was
        const meet = cursor && this.items.length ? this.meeting(page.items) : -1;
        if (cursor && this.items.length && meet < 0 && pages < CATCH_UP) continue; // new items fill more than a page
        const held = new Map(this.items.map((item) => [this.idOf(item), item]));
        const head = fresh.map((item) => (held.has(this.idOf(item)) ? this.adopt(item, held.get(this.idOf(item))) : item));
        // older loaded items follow, less those the pages brought (a chat with new activity moved up)
        const rest = meet >= 0 ? this.items.slice(meet + 1).filter((item) => !seen.has(this.idOf(item))) : [];
        this.items = [...head, ...rest];
        if (meet < 0) this.next = cursor; // all read, or the first page, or too many new ones: start over
        this.loaded = true;
        this.changed();
        return true;
      }
    }

    /** The index in `items` of the last item of `page` held at its place, or -1. */
    meeting(page) {
      const at = new Map(this.items.map((item, index) => [this.idOf(item), index]));
      for (let i = page.length - 1; i >= 0; i -= 1) {
        const index = at.get(this.idOf(page[i]));
        if (index !== undefined && this.keyOf(this.items[index]) === this.keyOf(page[i])) return index;
      }
      return -1;
    }

    /** Add the next older page: true once added, false when there is none or a refresh started over meanwhile. */
    async loadOlder() {
      const cursor = this.next;
      if (!cursor || this.loadingOlder) return false;
      this.loadingOlder = true;
      this.changed();
      let page;
      try {
        page = await this.read(cursor);
      } finally {
        this.loadingOlder = false;
      }
      if (cursor !== this.next) {
        this.changed();
        return false;
      }
      const ids = new Set(this.items.map(this.idOf));
      this.items.push(...page.items.filter((item) => !ids.has(this.idOf(item))));
      this.next = page.next;
      this.changed();
      return true;
    }

    /** Put `item` in place of its held copy when that copy is still where it was (else a refresh moves it). */
    replace(item) {
      const index = this.items.findIndex((held) => this.idOf(held) === this.idOf(item));
      if (index < 0 || this.keyOf(this.items[index]) !== this.keyOf(item)) return false;
      this.items[index] = this.adopt(item, this.items[index]);
      this.changed();
      return true;
    }

    /** Whether the item named `id` is held beyond the newest page (which a refresh does not read again). */
    heldOlder(id) {
      return this.items.findIndex((item) => this.idOf(item) === id) >= PAGE;
    }
  }

  /** The "load more" button of `list`: shown while older items remain, busy while they load. */
  function renderMore(button, list, words) {
    button.hidden = !list || !list.loaded || !list.next;
    button.disabled = Boolean(list && list.loadingOlder);
    button.textContent = list && list.loadingOlder ? "Loading…" : words;
  }

  // -- messages -----------------------------------------------------------------------------------------

  let reloadTimer = null;

  function reloadMessagesSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(loadMessages, 150);
  }

  /** A page's query: `params`, the page size and the cursor of the page before. */
  function pageQuery(params, cursor) {
    const query = new URLSearchParams({ ...params, limit: String(PAGE) });
    if (cursor) query.set("cursor", cursor);
    return query;
  }

  const rowOf = (message) => message.id || message.messageId; // its row: WhatsApp's id may replace ours once sent
  const messagePage = (answer) => ({ items: answer.messages, next: answer.nextCursor });

  /** A Listing of messages (shown oldest first): `read(cursor)` reads a page of the API's answer. */
  function messageListing(read, changed) {
    const list = new Listing(async (cursor) => messagePage(await read(cursor)), {
      idOf: rowOf,
      keyOf: (message) => message.timestamp,
      // an event may have moved it on after the page was read
      adopt: (fresh, held) => (RANK[held.status] > RANK[fresh.status] ? { ...fresh, status: held.status } : fresh),
      changed: () => changed(list),
    });
    list.applied = new Set(); // the reactions, votes, edits and deletes whose message was looked at
    return list;
  }

  function sessionMessages(id) {
    return messageListing(
      (cursor) => api("GET", `/whatsapp/messages?${pageQuery({ sessionId: id }, cursor)}`),
      (list) => {
        if (list !== state.messageList) return; // another session's
        state.messages = [...list.items].reverse();
        renderMessages();
      },
    );
  }

  /** Read the selected session's newest messages again (the first page, on a new selection). */
  async function loadMessages() {
    const list = state.messageList;
    if (!(await refreshed(list, () => state.messageList, "messages-error", "Messages"))) return;
    rereadTargets(list);
  }

  /** Read `list`'s newest page again; true once it changed and is still the one shown (`current()`), with the
      error line `slot` cleared; a failure is shown there. */
  async function refreshed(list, current, slot, what) {
    if (!list) return false;
    try {
      if (!(await list.refresh())) return false;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (list === current()) $(slot).textContent = `${what} could not be loaded: ${error.message}`;
      return false;
    }
    if (list !== current()) return false;
    $(slot).textContent = "";
    return true;
  }

  /** "Load more" of `list`: its next older page, scrolled into view next to what was the oldest shown; an
      error is shown in `slot`. */
  async function loadOlder(list, button, slot) {
    if (!list) return;
    const view = $(button.getAttribute("aria-controls"));
    const above = view.classList.contains("message-list"); // older messages come in above, older chats below
    const name = (item) => item.dataset.messageId || item.dataset.chat; // the chat list is drawn anew: find it again
    const oldest = above ? view.firstElementChild : view.lastElementChild;
    const edgeName = oldest ? name(oldest) : null;
    const focused = document.activeElement === button;
    let added = false;
    try {
      added = await list.loadOlder();
      slot.textContent = "";
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      slot.textContent = `Older ones could not be loaded: ${error.message}`;
      list.changed();
    }
    const edge = added && edgeName ? [...view.children].find((item) => name(item) === edgeName) : null;
    if (edge) {
      const box = view.getBoundingClientRect();
      const at = edge.getBoundingClientRect();
      view.scrollTop += above ? at.bottom - box.bottom : at.top - box.top;
    }
    if (focused && button.hidden) view.focus(); // nothing older: on to the list
  }

  /** A reaction, vote, edit or delete in the newest page acts on a message that may be held from an older
      page, which no refresh reads again: read that message anew. */
  function rereadTargets(list) {
    for (const message of list.items.slice(0, PAGE)) {
      if (!ACTING_KINDS.has(message.type) || list.applied.has(rowOf(message))) continue;
      list.applied.add(rowOf(message));
      const body = bodyOf(message);
      const target = body ? findMessage(body.message_id, list.items) : undefined;
      if (target) rereadMessage(target.messageId, target.sessionId);
    }
  }

  /** Read the message `id` anew into the lists that hold it beyond their newest page (refreshes read that). */
  async function rereadMessage(id, sessionId) {
    const lists = [state.messageList, state.chat ? state.chat.list : null].filter(Boolean);
    if (!lists.some((list) => list.items.findIndex((message) => message.messageId === id) >= PAGE)) return;
    let fresh;
    try {
      fresh = await api("GET", `/whatsapp/messages/${encodeURIComponent(id)}?${new URLSearchParams({ sessionId })}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      return;
    }
    for (const list of [state.messageList, state.chat ? state.chat.list : null]) if (list) list.replace(fresh);
  }

  function onMessageStatus(event) {
    if (event.sessionId !== state.selected) return;
    const named = (held) => held.messageId === event.messageId || held.messageId === event.requestedMessageId;
    const copies = [state.messages.find(named), state.chat ? state.chat.messages.find(named) : undefined];
    if (!copies[0]) reloadMessagesSoon();
    for (const message of copies.filter(Boolean)) {
      message.messageId = event.messageId;
      if (RANK[event.status] >= RANK[message.status]) {
        message.status = event.status;
        if (event.error) message.error = event.error;
      }
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

  const ICON_PATHS = {
    document: "M4 1.5h5.5l3 3v10H4Z M9.5 1.5v3h3 M6 8h4.5 M6 10.5h4.5",
    pin: "M8 14.5s4.5-4.6 4.5-8a4.5 4.5 0 0 0-9 0c0 3.4 4.5 8 4.5 8Z M8 4.5a1.8 1.8 0 1 1 0 3.6a1.8 1.8 0 1 1 0-3.6Z",
    person: "M8 2a2.8 2.8 0 1 1 0 5.6a2.8 2.8 0 1 1 0-5.6Z M2.5 14.5c0-3 2.5-5 5.5-5s5.5 2 5.5 5",
    poll: "M3 14.5V8 M8 14.5V2.5 M13 14.5V10.5",
    mic: "M8 1.5a2 2 0 0 1 2 2v4a2 2 0 0 1-4 0v-4a2 2 0 0 1 2-2Z M4 7.5a4 4 0 0 0 8 0 M8 11.5v3",
  };

  /** A small line drawing (no emoji font needed), decorative. */
  function icon(name) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 16 16");
    svg.setAttribute("aria-hidden", "true");
    svg.classList.add("icon");
    const line = document.createElementNS(SVG, "path");
    line.setAttribute("d", ICON_PATHS[name]);
    for (const [attribute, value] of [["fill", "none"], ["stroke", "currentColor"], ["stroke-width", "1.4"],
      ["stroke-linecap", "round"], ["stroke-linejoin", "round"]]) line.setAttribute(attribute, value);
    svg.append(line);
    return svg;
  }

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

  // -- what a message holds -----------------------------------------------------------------------------

  const MEDIA_KINDS = new Set(["image", "video", "audio", "document", "sticker"]);
  const ACTING_KINDS = new Set(["reaction", "poll_vote", "edit", "revoke"]); // shown on the message they act on
  const KIND_WORDS = { image: "Image", video: "Video", audio: "Audio", document: "Document", sticker: "Sticker" };
  const THUMB_SIDE = 240; // px: the box an image or video preview fits in
  const STICKER_SIDE = 128; // px
  const LINK_MARGIN = 30000; // ms: a signed link this close to its expiry is asked for again
  const PENDING_POLL = 3000; // ms between looks at a file that is still downloading
  const RETRY_INFO = 10000; // ms before a file whose description could not be read is asked for again

  const files = new Map(); // media id -> {status, url, expires (ms), info, error, checked (ms), loading}
  let filePoll = null;

  const bodyOf = (message) => {
    const object = message.message;
    return object && typeof object === "object" && object[message.type] ? object[message.type] : null;
  };

  const idsOf = (message) => [message.messageId, message.whatsappMessageId].filter(Boolean);

  /** The loaded message with id `id` (ours or WhatsApp's), or undefined. */
  function findMessage(id, messages = state.messages) {
    return id ? messages.find((message) => idsOf(message).includes(id)) : undefined;
  }

  /** A reaction, vote, edit or delete whose message is loaded: shown on that message instead of on its own. */
  function shownOnTarget(message, messages = state.messages) {
    if (!ACTING_KINDS.has(message.type)) return false;
    const body = bodyOf(message);
    return Boolean(body && findMessage(body.message_id, messages));
  }

  /** Bytes as WhatsApp shows them (binary: 1 MB = 1024 × 1024 bytes). */
  function sizeWords(bytes) {
    if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "";
    if (bytes < 1024) return `${bytes} B`;
    let value = bytes;
    let unit = "";
    for (const next of ["KB", "MB", "GB"]) {
      value /= 1024;
      unit = next;
      if (value < 1024) break;
    }
    return `${value.toFixed(value < 10 ? 1 : 0)} ${unit}`;
  }

  function durationWords(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "";
    const whole = Math.round(seconds);
    return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
  }

  /** `width`×`height` scaled down to fit a `side` px square; null when either is unknown. */
  function fitted(width, height, side) {
    if (!(width > 0 && height > 0)) return null;
    const scale = Math.min(1, side / Math.max(width, height));
    return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
  }

  /** A signed link as this page may load it: the console's policy allows its own origin only. */
  function sameOrigin(url) {
    let parsed;
    try {
      parsed = new URL(url, location.href);
    } catch {
      return null;
    }
    if (parsed.origin === location.origin) return parsed.pathname + parsed.search;
    // ZAPGATE_PUBLIC_URL names another address: the same route of this gateway serves the same signed link
    const tail = /\/media\/[^/?#]+\/[^/?#]+\?[^#]*$/.exec(parsed.pathname + parsed.search);
    return tail ? tail[0] : null;
  }

  /** What is known of the file `id` now; asks the API when that is missing, pending or about to expire. */
  function fileState(id) {
    if (!id) return { status: "sending" };
    const known = files.get(id);
    const age = known ? now() - known.checked : Infinity;
    const due =
      !known ||
      (known.status === "pending" && age >= PENDING_POLL) ||
      (known.status === "stored" && known.expires - now() < LINK_MARGIN) ||
      (known.status === "error" && age >= RETRY_INFO);
    if (due) loadFile(id);
    return known || { status: "loading" };
  }

  async function loadFile(id) {
    const entry = files.get(id) || { status: "loading", checked: 0 };
    if (entry.loading) return;
    entry.loading = true;
    files.set(id, entry);
    try {
      const info = await api("GET", `/whatsapp/media/${encodeURIComponent(id)}/info`);
      const url = info.status === "stored" ? sameOrigin(info.url) : null;
      Object.assign(entry, {
        status: info.status === "stored" && !url ? "failed" : info.status,
        url,
        expires: Date.parse(info.url_expires_at) || 0,
        info,
        error: info.error || (info.status === "stored" && !url ? "its link is not on this gateway" : null),
      });
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.code === "signed_out") return;
      entry.status = error.status === 404 ? "failed" : "error";
      entry.error = error.status === 404 ? "no longer kept" : error.message;
    } finally {
      entry.loading = false;
      entry.checked = now();
    }
    renderMessages();
  }

  /** While a shown file downloads, look again now and then (its message-received comes once it settles). */
  function watchPendingFiles() {
    clearTimeout(filePoll);
    const pending = [...state.messages, ...(state.chat ? state.chat.messages : [])].some((message) => {
      const body = MEDIA_KINDS.has(message.type) ? bodyOf(message) : null;
      const known = body && body.id ? files.get(body.id) : null;
      return known && (known.status === "pending" || known.status === "error");
    });
    if (pending) filePoll = setTimeout(renderMessages, PENDING_POLL);
  }

  function captionOf(body) {
    return body && typeof body.caption === "string" && body.caption ? h("p", { className: "message-text", text: body.caption }) : null;
  }

  /** A file message: a preview or player once the file is stored, else what keeps it from being shown. */
  function mediaBody(kind, body) {
    const data = body || {};
    const file = fileState(data.id);
    const info = file.info || {};
    const word = kind === "audio" && data.voice ? "Voice note" : KIND_WORDS[kind];
    const parts = [];
    if (file.status !== "stored") {
      const words = {
        sending: "sending…",
        loading: "…",
        pending: "downloading…",
        error: "cannot be read now",
        failed: "file unavailable",
      }[file.status] || file.status;
      parts.push(
        h(
          "div",
          { className: "media-slot", "data-state": file.status, title: file.error || null },
          h("span", { className: "media-kind", text: word }),
          data.filename ? h("span", { className: "media-name", text: ` ${data.filename}` }) : null,
          ": ",
          h("span", { className: "media-state", text: words }),
        ),
      );
    } else if (kind === "image" || kind === "sticker") {
      const size = fitted(data.width || info.width, data.height || info.height, kind === "sticker" ? STICKER_SIDE : THUMB_SIDE);
      const alt = data.caption ? `${word}: ${data.caption}` : word;
      parts.push(
        h(
          "a",
          { className: "media-open", href: file.url, target: "_blank", rel: "noopener noreferrer", title: `Open the full ${word.toLowerCase()}` },
          h("img", { className: kind === "sticker" ? "sticker" : "thumb", src: file.url, alt, loading: "lazy", decoding: "async", ...size }),
        ),
      );
    } else if (kind === "video") {
      const size = fitted(data.width || info.width, data.height || info.height, THUMB_SIDE);
      const length = durationWords(data.duration ?? info.duration);
      parts.push(
        h("video", { className: "player", src: file.url, controls: true, preload: "none", playsinline: true, ...size }),
        h(
          "p",
          { className: "media-facts" },
          [word, length, sizeWords(data.size ?? info.size)].filter(Boolean).join(" · "),
          " ",
          h("a", { href: file.url, target: "_blank", rel: "noopener noreferrer", text: "Open" }),
        ),
      );
    } else if (kind === "audio") {
      const length = durationWords(data.duration ?? info.duration);
      parts.push(
        h(
          "div",
          { className: "audio", "data-voice": data.voice ? "true" : "false" },
          h("span", { className: "media-facts" }, data.voice ? icon("mic") : null, [word, length].filter(Boolean).join(" · ")),
          h("audio", { src: file.url, controls: true, preload: "none" }),
        ),
      );
    } else {
      const name = data.filename || info.filename || "document";
      const facts = [data.mime_type || info.mime_type, sizeWords(data.size ?? info.size)].filter(Boolean).join(" · ");
      parts.push(
        h(
          "div",
          { className: "document" },
          icon("document"),
          h(
            "span",
            { className: "document-text" },
            h("a", { className: "document-name", href: file.url, download: name, text: name }),
            h("span", { className: "media-facts", text: facts }),
          ),
          h("a", { className: "document-download", href: file.url, download: name, text: "Download" }),
        ),
      );
    }
    if (kind !== "audio" && kind !== "sticker") parts.push(captionOf(data));
    if (data.view_once) parts.push(h("p", { className: "hint", text: "View once" }));
    return parts;
  }

  function locationBody(body) {
    const lat = Number(body.latitude);
    const lon = Number(body.longitude);
    const known = Number.isFinite(lat) && Number.isFinite(lon);
    const coordinates = known ? `${lat.toFixed(5)}, ${lon.toFixed(5)}` : "";
    const map = known
      ? `https://www.openstreetmap.org/?mlat=${lat.toFixed(6)}&mlon=${lon.toFixed(6)}#map=16/${lat.toFixed(6)}/${lon.toFixed(6)}`
      : null;
    return [
      h(
        "div",
        { className: "location" },
        icon("pin"),
        h(
          "span",
          { className: "location-text" },
          h("strong", { className: "location-name", text: body.name || (body.live ? "Live location" : "Location") }),
          body.address ? h("span", { className: "location-address", text: body.address }) : null,
          h("span", { className: "location-coordinates", text: coordinates }),
          map ? h("a", { href: map, target: "_blank", rel: "noopener noreferrer", text: "Open in OpenStreetMap" }) : null,
        ),
      ),
    ];
  }

  function contactsBody(cards) {
    const list = Array.isArray(cards) ? cards : [];
    return [
      h(
        "ul",
        { className: "contact-cards" },
        ...list.map((card) => {
          const name = (card && card.name && card.name.formatted_name) || "Contact";
          const phones = Array.isArray(card && card.phones) ? card.phones : [];
          return h(
            "li",
            { className: "contact-card" },
            h("strong", { className: "contact-name" }, icon("person"), name),
            h(
              "ul",
              { className: "contact-phones" },
              ...phones.map((entry) =>
                h("li", { text: [entry.phone || entry.wa_id || "", entry.type ? `(${entry.type.toLowerCase()})` : ""].join(" ").trim() }),
              ),
            ),
          );
        }),
      ),
    ];
  }

  function pollBody(body, votes) {
    const options = Array.isArray(body.options) ? body.options : [];
    const counts = new Map(options.map((option) => [option, 0]));
    const voters = (votes || []).filter((vote) => Array.isArray(vote.selected) && vote.selected.length);
    for (const vote of voters) {
      for (const option of vote.selected) if (counts.has(option)) counts.set(option, counts.get(option) + 1);
    }
    const most = Math.max(1, voters.length);
    const choose = body.selectable_count > 1 ? `Choose up to ${body.selectable_count}` : "Choose one";
    return [
      h("p", { className: "poll-question" }, icon("poll"), body.question || "Poll"),
      h("p", { className: "hint", text: choose }),
      h(
        "ol",
        { className: "poll-options" },
        ...options.map((option) => {
          const count = counts.get(option);
          return h(
            "li",
            { "data-votes": count },
            h("span", { className: "poll-option", text: option }),
            h("span", { className: "poll-count", text: `${count} ${count === 1 ? "vote" : "votes"}` }),
            h("meter", { min: 0, max: most, value: count, "aria-label": `${option}: ${count} of ${voters.length}` }),
          );
        }),
      ),
      h("p", { className: "hint", text: `${voters.length} ${voters.length === 1 ? "voter" : "voters"}` }),
    ];
  }

  /** A reaction, vote, edit or delete whose message is not loaded: one line saying what it did. */
  function actingBody(message, body) {
    const data = body || {};
    const line = {
      reaction: data.emoji ? `Reacted ${data.emoji} to an earlier message` : "Took back a reaction to an earlier message",
      poll_vote: Array.isArray(data.selected) && data.selected.length
        ? `Voted “${data.selected.join("”, “")}” in an earlier poll`
        : "Took back a vote in an earlier poll",
      edit: `Edited an earlier message: ${data.text || ""}`,
      revoke: "Deleted an earlier message",
    }[message.type];
    return [h("p", { className: "message-text acting", text: line || message.content })];
  }

  function messageBody(message) {
    const body = bodyOf(message);
    if (message.deletedAt && !message.content) {
      return [h("p", { className: "message-text gone", text: "This message was deleted" })];
    }
    if (MEDIA_KINDS.has(message.type)) return mediaBody(message.type, body);
    if (ACTING_KINDS.has(message.type)) return actingBody(message, body);
    if (message.type === "location" && body) return locationBody(body);
    if (message.type === "contacts" && body) return contactsBody(body);
    if (message.type === "poll" && body) return pollBody(body, message.votes);
    const text = message.type === "text" && body && typeof body.body === "string" ? body.body : message.content;
    return [h("p", { className: "message-text", "data-kind": message.type === "text" ? null : message.type, text: text || `[${message.type}]` })];
  }

  /** A one-line summary of a quoted message object (what a reply's `context.quoted` holds). */
  function quotedWords(object) {
    const body = object && object[object.type];
    if (!body) return "";
    if (object.type === "text") return body.body || "";
    if (MEDIA_KINDS.has(object.type)) {
      const word = object.type === "audio" && body.voice ? "Voice note" : KIND_WORDS[object.type];
      return body.caption ? `${word}: ${body.caption}` : word;
    }
    if (object.type === "location") return `Location${body.name ? `: ${body.name}` : ""}`;
    if (object.type === "poll") return `Poll: ${body.question || ""}`;
    if (object.type === "contacts") return "Contact card";
    return "";
  }

  function peerWords(message) {
    if (message.direction === "outbound") return "You";
    const contact = message.contact;
    const number = contact ? phone(contact.phoneNumber) : message.chatJid || "";
    return contact && contact.name ? contact.name : number;
  }

  function quoteOf(message) {
    const context = message.context;
    if (!context || !context.message_id) return null;
    const quoted = findMessage(context.message_id) || findMessage(context.whatsapp_message_id);
    if (quoted) {
      const gone = quoted.deletedAt && !quoted.content;
      return { who: peerWords(quoted), text: gone ? "This message was deleted" : quoted.content || `[${quoted.type}]`, id: quoted.messageId };
    }
    const words = quotedWords(context.quoted);
    return words ? { who: context.from_me ? "You" : "", text: words, id: null } : { who: "", text: "reply to an earlier message", id: null };
  }

  /** A reactor or voter as people read it: "You", a number, or the JID as it came. */
  function personWords(jid) {
    if (jid === "me") return "You";
    const [user, server] = String(jid || "").split("@");
    return !server || server === "s.whatsapp.net" ? phone(user) : jid;
  }

  function reactionChips(reactions) {
    const groups = new Map();
    for (const reaction of reactions || []) {
      if (!reaction.emoji) continue;
      const group = groups.get(reaction.emoji) || [];
      group.push(personWords(reaction.reactor));
      groups.set(reaction.emoji, group);
    }
    return [...groups].map(([emoji, who]) =>
      h(
        "li",
        { className: "chip", title: who.join(", "), "aria-label": `${emoji} ${who.length}: ${who.join(", ")}` },
        h("span", { className: "chip-emoji", text: emoji }),
        h("span", { className: "chip-count", text: String(who.length) }),
      ),
    );
  }

  /** Replace `slot`'s children with `make()` only when `signature` changed (a shown image is not reloaded). */
  function refill(slot, signature, make) {
    if (slot.dataset.signature === signature) return;
    slot.dataset.signature = signature;
    const children = make().filter((child) => child !== null && child !== undefined);
    slot.replaceChildren(...children);
    slot.hidden = children.length === 0;
  }

  // -- the message list ---------------------------------------------------------------------------------

  function messageItem() {
    return h(
      "li",
      { className: "message" },
      h("div", { className: "message-meta" }, h("span", { className: "message-peer" }), h("span", { className: "message-time" })),
      h("button", { type: "button", className: "message-quote", hidden: true }),
      h("div", { className: "message-body" }),
      h("ul", { className: "reactions", "aria-label": "Reactions", hidden: true }),
      h(
        "div",
        { className: "message-foot" },
        h("span", { className: "message-marks" }),
        h("span", { className: "message-error" }),
        h("span", { className: "ticks" }),
      ),
    );
  }

  function fillMessage(item, message) {
    item.dataset.messageId = message.messageId;
    item.dataset.direction = message.direction;
    item.dataset.status = message.status;
    item.dataset.type = message.type;
    item.dataset.deleted = message.deletedAt ? "true" : "false";
    const contact = message.contact;
    const number = contact ? phone(contact.phoneNumber) : message.chatJid || "";
    const peer = contact && contact.name ? `${contact.name} (${number})` : number;
    const author = message.direction === "inbound" && message.senderJid ? `${personWords(message.senderJid)} in ` : ""; // a group's
    item.querySelector(".message-peer").textContent = `${message.direction === "outbound" ? "To" : "From"} ${author}${peer}`;
    item.querySelector(".message-time").replaceChildren(timeElement(message.timestamp, true));

    const quote = quoteOf(message);
    const quoteSlot = item.querySelector(".message-quote");
    quoteSlot.hidden = !quote;
    quoteSlot.dataset.target = quote && quote.id ? quote.id : "";
    quoteSlot.disabled = !(quote && quote.id);
    refill(quoteSlot, JSON.stringify(quote), () =>
      quote ? [quote.who ? h("span", { className: "quote-who", text: quote.who }) : null, h("span", { className: "quote-text", text: quote.text })] : [],
    );

    const body = bodyOf(message);
    const file = MEDIA_KINDS.has(message.type) && body ? fileState(body.id) : null;
    const shape = [message.type, message.content, message.message, message.deletedAt, message.type === "poll" ? message.votes : null,
      file ? [file.status, file.url] : null];
    refill(item.querySelector(".message-body"), JSON.stringify(shape), () => messageBody(message));
    refill(item.querySelector(".reactions"), JSON.stringify(message.reactions || []), () => reactionChips(message.reactions));

    refill(item.querySelector(".message-marks"), JSON.stringify([message.editedAt, message.deletedAt]), () =>
      [["edited", message.editedAt, "Edited"], ["deleted", message.deletedAt, "Deleted"]]
        .filter(([, at]) => at)
        .map(([mark, at, word]) => h("span", { className: "mark", "data-mark": mark, title: `${word} ${FULL.format(new Date(at))}`, text: mark })),
    );

    item.querySelector(".message-error").textContent = message.status === "failed" ? message.error || "" : "";
    const ticks = item.querySelector(".ticks");
    if (ticks.dataset.status !== message.status) {
      const word = MESSAGE_STATUS[message.status] || message.status;
      ticks.dataset.status = message.status;
      ticks.title = word;
      ticks.replaceChildren(tickIcon(message.status), h("span", { className: "tick-word", text: word }));
    }
  }

  /** Bring the lists in line with state.messages and the open chat's, keeping the items that stay (screen
      readers hear only news). */
  function renderMessages() {
    fillList($("message-list"), $("no-messages"), state.messages);
    renderMore($("messages-more"), state.messageList, "Load older messages");
    if (state.chat) {
      fillList($("chat-messages"), $("no-chat-messages"), state.chat.messages);
      renderMore($("chat-messages-more"), state.chat.list, "Load older messages");
    }
    watchPendingFiles();
  }

  function fillList(list, empty, messages) {
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
    // read further up, the message at the top stays where it is while older ones come in above it
    const top = list.getBoundingClientRect().top;
    const anchor = atEnd ? null : [...list.children].find((item) => item.getBoundingClientRect().bottom > top);
    const anchorAt = anchor ? anchor.getBoundingClientRect().top : 0;
    const items = new Map([...list.children].map((item) => [item.dataset.messageId, item]));
    let previous = null;
    const shown = messages.filter((message) => !shownOnTarget(message, messages));
    for (const message of shown) {
      let item = items.get(message.messageId);
      if (item) items.delete(message.messageId);
      else item = messageItem();
      fillMessage(item, message);
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (item !== expected) list.insertBefore(item, expected);
      previous = item;
    }
    for (const stale of items.values()) stale.remove();
    empty.hidden = shown.length > 0;
    if (atEnd) list.scrollTop = list.scrollHeight;
    else if (anchor && anchor.isConnected) list.scrollTop += anchor.getBoundingClientRect().top - anchorAt;
  }

  function showQuoted(id) {
    const item = [...$("message-list").children].find((candidate) => candidate.dataset.messageId === id);
    if (!item) return;
    item.scrollIntoView({ block: "nearest" });
    item.classList.remove("flash");
    void item.offsetWidth; // restart the highlight
    item.classList.add("flash");
  }

  // -- chats --------------------------------------------------------------------------------------------

  const chatPath = (id) => `/whatsapp/chats/${encodeURIComponent(id)}`;
  // profile pictures this page may load: its own origin, and WhatsApp's picture server (the policy allows it)
  const PICTURE_HOSTS = new Set(["pps.whatsapp.net"]);
  let chatTimer = null;

  function reloadChatsSoon() {
    clearTimeout(chatTimer);
    chatTimer = setTimeout(() => {
      loadChats();
      if (state.chat) loadChatMessages(state.chat);
    }, 150);
  }

  function sessionChats(id) {
    const list = new Listing(
      async (cursor) => {
        const answer = await api("GET", `/whatsapp/chats?${pageQuery({ sessionId: id }, cursor)}`);
        return { items: answer.chats, next: answer.nextCursor };
      },
      {
        idOf: (chat) => chat.id,
        keyOf: (chat) => (chat.lastMessage ? chat.lastMessage.timestamp : ""), // its place: newest activity first
        changed: () => {
          if (list !== state.chatList) return; // another session's
          state.chats = list.items;
          renderChats();
        },
      },
    );
    return list;
  }

  /** Read the selected session's newest chats again (the first page, on a new selection). */
  async function loadChats() {
    if (!(await refreshed(state.chatList, () => state.chatList, "chats-error", "Chats"))) return;
    const open = state.chat && state.chats.find((chat) => chat.id === state.chat.id);
    if (open) {
      state.chat.info = open;
      renderChatHead();
      if (open.unreadCount > 0 || open.markedUnread) markRead(open.id); // it is on screen: read
    }
  }

  /** A chat-update about a chat loaded from an older page, which no refresh reads again: read it anew. */
  async function rereadChat(id) {
    const list = state.chatList;
    if (!list || !list.heldOlder(id)) return;
    let fresh;
    try {
      fresh = await api("GET", chatPath(id));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      return;
    }
    if (list.replace(fresh) && state.chat && state.chat.id === id) {
      state.chat.info = fresh;
      renderChatHead();
    }
  }

  /** A chat's name as people read it: its name, else its number, else its JID. */
  const chatName = (chat) => chat.name || (chat.isGroup ? chat.jid : phone(chat.chat.includes("@") ? chat.chat.split("@")[0] : chat.chat));

  function lastWords(chat) {
    const last = chat.lastMessage;
    if (!last) return "";
    const text = last.text || `[${last.type}]`;
    return last.direction === "outbound" ? `You: ${text}` : text;
  }

  function renderChats() {
    const focused = document.activeElement && document.activeElement.closest("#chat-list li");
    const refocus = focused ? focused.dataset.chat : null;
    const items = state.chats.map((chat) => {
      const marks = [
        chat.pinned ? ["pinned", "Pinned"] : null,
        chat.muted ? ["muted", chat.mutedUntil ? `Muted until ${FULL.format(new Date(chat.mutedUntil))}` : "Muted"] : null,
        chat.archived ? ["archived", "Archived"] : null,
        chat.isGroup ? ["group", "Group"] : null,
      ].filter(Boolean);
      const unread = chat.unreadCount > 0 ? String(chat.unreadCount) : chat.markedUnread ? "•" : "";
      return h(
        "li",
        { className: "chat", "data-chat": chat.id, "data-unread": chat.unreadCount, "aria-current": state.chat && state.chat.id === chat.id ? "true" : null },
        h(
          "button",
          { type: "button", className: "chat-open", "aria-label": `${chatName(chat)}${chat.unreadCount ? `, ${chat.unreadCount} unread` : ""}` },
          h(
            "span",
            { className: "chat-line" },
            h("span", { className: "chat-name", text: chatName(chat) }),
            h("span", { className: "chat-time" }, chat.lastMessage ? timeElement(chat.lastMessage.timestamp, true) : null),
          ),
          h(
            "span",
            { className: "chat-line" },
            h("span", { className: "chat-last", text: lastWords(chat) }),
            h(
              "span",
              { className: "chat-marks" },
              ...marks.map(([mark, word]) => h("span", { className: "mark", "data-mark": mark, title: word, text: mark })),
              h("span", { className: "unread", "data-count": chat.unreadCount, title: `${chat.unreadCount} unread`, text: unread, hidden: !unread }),
            ),
          ),
        ),
      );
    });
    $("chat-list").replaceChildren(...items);
    $("no-chats").hidden = items.length > 0;
    renderMore($("chats-more"), state.chatList, "Load more chats");
    if (refocus) {
      const item = items.find((li) => li.dataset.chat === refocus);
      if (item) item.querySelector("button").focus();
    }
  }

  async function openChat(id) {
    const info = state.chats.find((chat) => chat.id === id);
    if (!info) return;
    const changed = !state.chat || state.chat.id !== id;
    if (changed) {
      state.chat = { id, info, list: null, messages: [], about: null, aboutShown: false };
      state.chat.list = chatMessages(state.chat);
      $("chat-messages").replaceChildren();
      $("chat-about").replaceChildren();
      $("chat-about").hidden = true;
      $("chat-error").textContent = "";
    }
    $("chat-view").hidden = false;
    renderChatHead();
    renderChats();
    $("chat-title").focus();
    await loadChatMessages(state.chat);
    if (info.unreadCount > 0 || info.markedUnread) await markRead(id);
  }

  function closeChat() {
    const id = state.chat ? state.chat.id : null;
    state.chat = null;
    $("chat-view").hidden = true;
    $("chat-messages").replaceChildren();
    renderChats();
    const item = id ? $("chat-list").querySelector(`li[data-chat="${CSS.escape(id)}"] button`) : null;
    if (item) item.focus();
  }

  function renderChatHead() {
    const chat = state.chat;
    if (!chat) return;
    const subject = chat.info.isGroup && chat.about ? chat.about.subject : null;
    $("chat-title").textContent = subject || chatName(chat.info);
    const button = $("chat-details");
    button.textContent = chat.aboutShown ? "Hide details" : chat.info.isGroup ? "Group info" : "Contact details";
    button.setAttribute("aria-expanded", chat.aboutShown ? "true" : "false");
  }

  /** The Listing of an open chat's messages. */
  function chatMessages(chat) {
    return messageListing(
      (cursor) => api("GET", `${chatPath(chat.id)}/messages?${pageQuery({}, cursor)}`),
      (list) => {
        if (state.chat !== chat) return; // closed, or another chat opened
        chat.messages = [...list.items].reverse();
        renderMessages();
      },
    );
  }

  /** Read the open chat's newest messages again (the first page, when it opens). */
  async function loadChatMessages(chat) {
    try {
      if (!(await chat.list.refresh())) return;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (state.chat === chat) $("chat-error").textContent = `Messages could not be loaded: ${error.message}`;
      return;
    }
    rereadTargets(chat.list);
  }

  async function markRead(id) {
    try {
      const done = await api("POST", `${chatPath(id)}/read`);
      const at = state.chats.findIndex((chat) => chat.id === id);
      if (at >= 0) state.chats[at] = done.chat; // the chat list's own items (read moves no chat)
      if (state.chat && state.chat.id === id) state.chat.info = done.chat;
      renderChats();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (state.chat && state.chat.id === id) $("chat-error").textContent = `Not marked read: ${error.message}`;
    }
  }

  async function toggleAbout() {
    const chat = state.chat;
    if (!chat) return;
    chat.aboutShown = !chat.aboutShown;
    renderChatHead();
    $("chat-about").hidden = !chat.aboutShown;
    if (chat.aboutShown) await loadAbout(chat);
  }

  async function loadAbout(chat) {
    $("chat-error").textContent = "";
    try {
      if (chat.info.isGroup) {
        const query = new URLSearchParams({ sessionId: chat.info.sessionId });
        chat.about = await api("GET", `/whatsapp/groups/${encodeURIComponent(chat.info.jid)}?${query}`);
      } else {
        chat.about = await api("GET", `/whatsapp/contacts/${encodeURIComponent(chat.id)}`);
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (state.chat === chat) $("chat-error").textContent = `Details could not be loaded: ${error.message}`;
      return;
    }
    if (state.chat !== chat) return;
    renderAbout();
    renderChatHead();
  }

  /** A picture's link as this page may load it, or null (the policy would refuse it). */
  function loadablePicture(url) {
    let parsed;
    try {
      parsed = new URL(url, location.href);
    } catch {
      return null;
    }
    if (parsed.origin === location.origin) return parsed.pathname + parsed.search;
    return parsed.protocol === "https:" && PICTURE_HOSTS.has(parsed.hostname) ? parsed.href : null;
  }

  const fact = (label, value) => h("div", {}, h("dt", { text: label }), h("dd", { text: value || "—" }));

  function renderAbout() {
    const chat = state.chat;
    const about = chat && chat.about;
    if (!about) return;
    const slot = $("chat-about");
    if (chat.info.isGroup) {
      const people = about.participants || [];
      slot.replaceChildren(
        h("h5", { text: about.subject || "Group" }),
        h("p", { className: "group-description", text: about.description || "No description." }),
        h("dl", { className: "facts" }, fact("Group JID", about.id), fact("Owner", personWords(about.owner)),
          fact("Members", String(about.size ?? people.length)),
          fact("Settings", [about.announce ? "only admins send" : "all send", about.locked ? "only admins edit" : "all edit"].join(", "))),
        h(
          "ul",
          { className: "participants", "aria-label": "Participants" },
          ...people.map((person) =>
            h(
              "li",
              { "data-jid": person.jid },
              h("span", { className: "participant-id", text: personWords(person.jid) }),
              person.lid && person.lid !== person.jid ? h("span", { className: "hint", text: person.lid }) : null,
              person.isSuperAdmin || person.isAdmin
                ? h("span", { className: "mark", "data-mark": "admin", text: person.isSuperAdmin ? "creator, admin" : "admin" })
                : null,
            ),
          ),
        ),
      );
      return;
    }
    const picture = about.pictureUrl ? loadablePicture(about.pictureUrl) : null;
    const name = about.name || about.pushName || about.businessName || phone(about.phoneNumber);
    slot.replaceChildren(
      h(
        "div",
        { className: "contact-head" },
        picture ? h("img", { className: "avatar", src: picture, alt: `Profile picture of ${name}`, width: 64, height: 64, referrerpolicy: "no-referrer" }) : null,
        about.pictureUrl && !picture
          ? h("a", { className: "avatar-link", href: about.pictureUrl, target: "_blank", rel: "noopener noreferrer", text: "Profile picture" })
          : null,
        about.pictureUrl ? null : h("span", { className: "hint", text: "No profile picture" }),
      ),
      h(
        "dl",
        { className: "facts" },
        fact("Name", about.name),
        fact("Push name", about.pushName),
        fact("Business name", about.businessName),
        fact("Phone JID", about.jid),
        fact("LID", about.lid),
        fact("On WhatsApp", about.onWhatsApp === null || about.onWhatsApp === undefined ? "unknown" : about.onWhatsApp ? "yes" : "no"),
        fact("Blocked", about.blocked ? "yes" : "no"),
      ),
      h("div", { className: "actions" },
        h("button", { type: "button", id: "chat-block", className: about.blocked ? null : "danger", text: about.blocked ? "Unblock" : "Block" })),
    );
  }

  async function toggleBlock(button) {
    const chat = state.chat;
    if (!chat || !chat.about) return;
    const action = chat.about.blocked ? "unblock" : "block";
    $("chat-error").textContent = "";
    button.disabled = true;
    try {
      chat.about = await api("POST", `/whatsapp/contacts/${encodeURIComponent(chat.id)}/${action}`);
      if (state.chat === chat) renderAbout();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      $("chat-error").textContent = error.message;
      button.disabled = false;
    }
  }

  // -- the send box ------------------------------------------------------------------------------------

  /** The kind a chosen file is sent as, from its type as the browser tells it. */
  function fileKind(file) {
    const type = (file.type || "").toLowerCase();
    if (type.startsWith("image/") && type !== "image/svg+xml") return "image"; // a drawing is no photo
    if (type.startsWith("video/")) return "video";
    if (type.startsWith("audio/")) return "audio";
    return "document";
  }

  const chosenFile = () => $("send-file").files[0] || null;

  /** Fit the form to what is sent: a text, or a file with an optional caption (audio has none). */
  function updateSendForm() {
    const file = chosenFile();
    const kind = file ? fileKind(file) : null;
    const message = $("send-message");
    message.required = !file;
    $("send-message-field").hidden = kind === "audio";
    $("send-message-label").textContent = file ? "Caption" : "Message";
    $("send-message-optional").hidden = !file;
    $("send-voice-field").hidden = kind !== "audio";
    $("send-file-clear").hidden = !file;
    $("send-file-kind").textContent = file
      ? `Sends as ${kind === "audio" && $("send-voice").checked ? "a voice note" : `${kind === "image" ? "an" : "a"} ${kind}`}: ${file.name}, ${sizeWords(file.size)}`
      : "";
    updateCounter();
  }

  function updateCounter() {
    const limit = chosenFile() ? MAX_CAPTION : MAX_TEXT;
    const length = textLength($("send-message").value);
    const counter = $("send-message-count");
    counter.textContent = `${length} / ${limit} characters`;
    counter.classList.toggle("over", length > limit);
  }

  function clearFile() {
    $("send-file").value = "";
    $("send-voice").checked = false;
    updateSendForm();
  }

  /** Send the chosen file (multipart: the message's JSON and the file); answer what the API accepted. */
  async function sendFile(form, to, file) {
    const kind = fileKind(file);
    if (file.size > MAX_FILE) {
      throw new ApiError(422, { detail: `file: over the ${sizeWords(MAX_FILE)} of the largest file WhatsApp takes`, errors: [{ field: "file", message: `Over ${sizeWords(MAX_FILE)}, the largest file WhatsApp takes.` }] });
    }
    const part = {};
    const caption = form.elements.namedItem("message").value.trim();
    if (caption && kind !== "audio") part.caption = caption;
    if (kind === "document" && file.name) part.filename = file.name;
    if (kind === "audio" && $("send-voice").checked) part.voice = true;
    const body = new FormData();
    body.append("message", JSON.stringify({ sessionId: state.selected, to, type: kind, [kind]: part }));
    body.append("file", file, file.name);
    const accepted = await api("POST", "/whatsapp/messages/upload", body);
    return { accepted, type: kind, content: caption && kind !== "audio" ? caption : `[${kind}]`, message: { type: kind, [kind]: part } };
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
      if (state.selected) {
        reloadMessagesSoon();
        reloadChatsSoon();
      }
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
      if (event.sessionId === state.selected) {
        reloadMessagesSoon();
        reloadChatsSoon();
      }
    }));
    socket.on("message-status", mine((event) => {
      onMessageStatus(event);
      if (event.sessionId === state.selected) reloadChatsSoon();
    }));
    socket.on("chat-update", mine((event) => {
      if (event.sessionId !== state.selected) return;
      reloadChatsSoon();
      rereadChat(event.chatId);
    }));
    socket.on("contact-update", mine((event) => {
      // a new name, a block, a picture, or two contacts merged (their chats and messages became one)
      if (event.sessionId !== state.selected) return;
      reloadChatsSoon();
      if (event.changes && event.changes.merged) reloadMessagesSoon();
    }));
    for (const name of ["message-edited", "message-deleted", "media-failed"]) {
      socket.on(name, mine((event) => {
        if (event.sessionId !== state.selected) return;
        reloadMessagesSoon();
        reloadChatsSoon();
        if (event.messageId) rereadMessage(event.messageId, event.sessionId);
      }));
    }
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
      const file = chosenFile();
      let sent;
      if (file) {
        sent = await sendFile(form, to, file);
      } else {
        const text = form.elements.namedItem("message").value; // sent as typed: spaces are part of a text
        sent = { accepted: await api("POST", "/whatsapp/send", { sessionId: state.selected, to, message: text }), type: "text", content: text };
        sent.message = { type: "text", text: { body: text } };
      }
      const accepted = sent.accepted;
      const list = state.messageList;
      if (list && accepted.sessionId === state.selected && !state.messages.some((m) => m.messageId === accepted.messageId)) {
        list.items.unshift({
          messageId: accepted.messageId,
          direction: "outbound",
          status: accepted.status,
          type: sent.type,
          content: sent.content,
          message: sent.message,
          timestamp: accepted.timestamp,
          contact: { phoneNumber: to.includes("@") ? to : to.replace(/\D/g, "") },
        });
        list.changed(); // shown until the refresh below brings the stored message
      }
      form.elements.namedItem("message").value = "";
      if (file) clearFile();
      updateCounter();
      formDone(form, `Queued as ${accepted.messageId}.`);
      reloadMessagesSoon();
    });
    $("send-message").addEventListener("input", updateCounter);
    $("send-file").addEventListener("change", updateSendForm);
    $("send-voice").addEventListener("change", updateSendForm);
    $("send-file-clear").addEventListener("click", () => {
      clearFile();
      $("send-file").focus();
    });
    $("chat-list").addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (button) openChat(button.closest("li").dataset.chat);
    });
    $("chat-close").addEventListener("click", closeChat);
    $("chats-more").addEventListener("click", (event) => loadOlder(state.chatList, event.currentTarget, $("chats-error")));
    $("messages-more").addEventListener("click", (event) => loadOlder(state.messageList, event.currentTarget, $("messages-error")));
    $("chat-messages-more").addEventListener("click", (event) =>
      loadOlder(state.chat ? state.chat.list : null, event.currentTarget, $("chat-error")));
    $("chat-details").addEventListener("click", toggleAbout);
    $("chat-about").addEventListener("click", (event) => {
      const button = event.target.closest("#chat-block");
      if (button) toggleBlock(button);
    });
    $("message-list").addEventListener("click", (event) => {
      const quote = event.target.closest(".message-quote");
      if (quote && quote.dataset.target) showQuoted(quote.dataset.target);
    });
  }

  wire();
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) signIn(saved, true);
  else $("api-key").focus();
})();
