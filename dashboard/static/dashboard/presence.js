// The live presence page. A full page of users is loaded with its ETag (If-None-Match: an
// unchanged page costs a 304). Changes then arrive through the presence socket (pushed
// `presence` frames), or, while the socket is down, from polling the change feed
// (?since=cursor) every `pollSeconds`. Either way rows are updated in place, and the page is
// reloaded only when rows may have moved or left it. Both follow one cursor (`state.cursor`,
// the same format for the socket and the REST lists), so switching between them misses nothing.
"use strict";

(() => {
  if (!OffChat.signedIn()) {
    window.location.replace(OffChat.LOGIN_PAGE);
    return;
  }
  const config = { pollSeconds: 10, socketPath: "/ws/presence/", ...JSON.parse(document.getElementById("config").textContent) };
  const PAGE_SIZE = 50;
  const $ = (id) => document.getElementById(id);
  const state = {
    page: 1, search: "", status: "", ordering: "username",
    rows: [], count: 0, hasNext: false, hasPrevious: false, etag: null, cursor: null,
    pageAt: 0, // when the shown page was read (its cursor's time): pushes read before are stale
  };
  // The presence socket: `open` once its hello arrived; `refreshed` once a 4401 made us refresh
  // the access token (a second 4401 before the next hello signs out); `attempts` for the backoff;
  // `refused` once the server said another try would be refused too (see onClose).
  const live = {
    socket: null, open: false, refreshed: false, attempts: 0, retry: null, ping: null, stopped: false, refused: null,
  };
  // Error frames after which the server closes the socket and a reconnect would meet the same
  // answer: no socket at this path (4404), or this user already holds as many sockets as the
  // server allows (4429 too_many_sockets; other tabs). The page keeps polling instead.
  const REFUSALS = {
    not_found: "The server has no live connection at this address: the list is checked for changes periodically",
    too_many_sockets:
      "Too many live connections are open for this account (other tabs?): the list is checked for changes periodically",
  };
  const cursorAt = (cursor) => Number(String(cursor).split("-")[1]) || 0;

  function listUrl(extra = {}) {
    const params = new URLSearchParams({ page_size: PAGE_SIZE, ordering: state.ordering, ...extra });
    if (state.search) params.set("search", state.search);
    if (state.status) params.set("online_status", state.status);
    return `/api/users/admin/users/?${params}`;
  }

  async function loadPage() {
    const response = await OffChat.get(listUrl({ page: state.page }), state.etag ? { "If-None-Match": state.etag } : {});
    if (response.status === 304) return;
    if (response.status === 404 && state.page > 1) {
      state.page -= 1; // the page emptied out under us
      return loadPage();
    }
    if (!response.ok) throw new Error(`the user list answered HTTP ${response.status}`);
    const body = await response.json();
    Object.assign(state, {
      rows: body.results, count: body.count, hasNext: Boolean(body.next), hasPrevious: Boolean(body.previous),
      etag: response.headers.get("ETag"), cursor: body.cursor, pageAt: cursorAt(body.cursor),
    });
    render();
    // What changed between this read and now: the socket sends it from the page's cursor.
    if (live.open) send({ type: "resume", cursor: state.cursor });
  }

  // Reloads coalesce: one at a time, and one more if asked for meanwhile.
  let reloading = null;
  let reloadAgain = false;
  function reload() {
    if (reloading) {
      reloadAgain = true;
      return reloading;
    }
    reloading = loadPage()
      .catch(showFailure)
      .finally(() => {
        reloading = null;
        if (reloadAgain) {
          reloadAgain = false;
          reload();
        }
      });
    return reloading;
  }

  async function followFeed() {
    if (!state.cursor) return loadPage();
    const response = await OffChat.get(listUrl({ since: state.cursor }));
    if (response.status === 400) {
      state.etag = state.cursor = null; // too far behind (resync_required): start over
      return loadPage();
    }
    if (!response.ok) throw new Error(`the change feed answered HTTP ${response.status}`);
    const feed = await response.json();
    state.cursor = feed.cursor;
    const shown = new Map(state.rows.map((user, index) => [user.id, index]));
    let moved = feed.removed.some((id) => shown.has(id));
    for (const user of feed.results) {
      if (shown.has(user.id)) state.rows[shown.get(user.id)] = user;
      else moved = true; // new on this page, or from another page
    }
    if (feed.results.length && state.ordering !== "username") moved = true; // the order may have changed
    render();
    announce(feed.results);
    if (moved) await loadPage();
  }

  async function loadCounts() {
    const response = await OffChat.get("/api/users/admin/users/summary/");
    if (!response.ok) throw new Error(`the summary answered HTTP ${response.status}`);
    const counts = await response.json();
    for (const key of ["online", "away", "offline", "total"]) $(`count-${key}`).textContent = counts[key];
  }

  function ago(iso) {
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 45) return "just now";
    if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `on ${new Date(iso).toLocaleDateString()}`;
  }

  function describe(user) {
    if (user.online_status !== "offline") return user.online_status;
    return user.last_seen ? `offline · last seen ${ago(user.last_seen)}` : "offline · never seen";
  }

  function cell(...children) {
    const td = document.createElement("td");
    td.append(...children);
    return td;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text; // text only: names are user input
    return node;
  }

  function rowFor(user) {
    const row = document.createElement("tr");
    row.dataset.userId = user.id;
    row.dataset.username = user.username;
    row.dataset.status = user.online_status;
    // Opens the user's panel (history.js): by click, or Enter or Space once focused.
    row.tabIndex = 0;
    row.className = "user-row";
    row.setAttribute("aria-haspopup", "dialog");
    row.title = `Show ${user.username}'s sessions and history`;
    const name = element("span", "name", user.username);
    const fullName = `${user.first_name} ${user.last_name}`.trim();
    if (fullName) name.append(element("small", "", fullName));
    row.append(
      cell(name),
      cell(element("span", `dot ${user.online_status}`), element("span", "status-text", describe(user))),
      cell(element("span", "muted", user.email)),
    );
    return row;
  }

  // Rows are replaced when they change: keyboard focus stays on the same user's row.
  function keepingFocus(replace) {
    const focused = document.activeElement?.closest?.("#users tr")?.dataset.userId;
    replace();
    if (focused) $("users").querySelector(`tr[data-user-id="${Number(focused)}"]`)?.focus();
  }

  // What other scripts on the page (history.js) hear: users whose presence changed.
  function announce(users) {
    if (users.length) document.dispatchEvent(new CustomEvent("offchat:presence", { detail: { users } }));
  }

  function render() {
    keepingFocus(() => $("users").replaceChildren(...state.rows.map(rowFor)));
    $("empty").hidden = state.rows.length > 0;
    const first = (state.page - 1) * PAGE_SIZE + 1;
    $("page-info").textContent = state.count ? `${first}–${first + state.rows.length - 1} of ${state.count}` : "";
    $("previous").disabled = !state.hasPrevious;
    $("next").disabled = !state.hasNext;
    document.querySelectorAll(".counter").forEach((button) => {
      button.classList.toggle("selected", button.dataset.status === state.status);
    });
  }

  function updated() {
    $("error").hidden = true;
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  function showFailure(failure) {
    $("error").textContent = `Could not update: ${failure.message}. Retrying.`;
    $("error").hidden = false;
  }

  // --- Polling: only while the socket is down ------------------------------------------------
  let pollTimer = null;
  let polling = false;

  function schedulePoll(delayMs) {
    window.clearTimeout(pollTimer);
    pollTimer = window.setTimeout(poll, delayMs);
  }

  async function poll() {
    if (live.open || polling) return;
    polling = true;
    try {
      await Promise.all([loadCounts(), followFeed()]);
      render(); // "last seen" texts age between changes
      updated();
    } catch (failure) {
      showFailure(failure);
    } finally {
      polling = false;
      if (!live.open) schedulePoll(config.pollSeconds * 1000);
    }
  }

  function every(seconds) {
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    return `${Math.round(seconds / 3600)} h`;
  }

  function showMode() {
    const badge = $("mode");
    badge.dataset.mode = live.open ? "live" : "polling";
    badge.textContent = live.open ? "Live" : `Polling every ${every(config.pollSeconds)}`;
    badge.title = live.open
      ? "Live: changes are pushed as they happen"
      : REFUSALS[live.refused] ??
        "The live connection is down: the list is checked for changes periodically while it reconnects";
    badge.setAttribute("aria-label", badge.title);
  }

  // --- The presence socket ---------------------------------------------------------------------
  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${window.location.host}${config.socketPath}`;
  }

  function send(frame) {
    if (live.socket && live.socket.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify(frame));
  }

  function connect() {
    window.clearTimeout(live.retry);
    const token = OffChat.accessToken();
    if (live.stopped || live.refused || !token) return;
    let socket;
    try {
      // The token goes in a subprotocol, never in the URL (URLs end up in logs).
      socket = new WebSocket(socketUrl(), ["offchat.presence", `token.${token}`]);
    } catch {
      return reconnectLater();
    }
    live.socket = socket;
    socket.addEventListener("message", (event) => {
      if (live.socket !== socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (live.socket === socket) onClose(event.code);
    });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "hello":
        return onHello(frame);
      case "presence":
        return onPresence(frame);
      case "error":
        if (frame.code === "resync_required" || frame.code === "invalid_cursor") {
          state.etag = state.cursor = null; // too far behind: load the list again, then resume
          reload();
        }
        if (frame.code in REFUSALS) live.refused = frame.code; // the close follows
        return;
      default: // pong, and user_status_change (the presence frame before it said it all)
    }
  }

  function onHello(hello) {
    Object.assign(live, { open: true, refreshed: false, attempts: 0 });
    window.clearTimeout(pollTimer);
    window.clearInterval(live.ping);
    live.ping = window.setInterval(() => send({ type: "ping" }), Math.max(1, hello.ping_interval) * 1000);
    showMode();
    if (state.cursor) {
      send({ type: "resume", cursor: state.cursor }); // what the socket missed: since the last cursor seen
    } else {
      state.cursor = hello.cursor;
      reload(); // no page yet (the first load failed): load it, it resumes from its own cursor
    }
    countsSoon();
    updated();
  }

  function onClose(code) {
    const wasOpen = live.open;
    Object.assign(live, { socket: null, open: false });
    window.clearInterval(live.ping);
    showMode();
    if (live.stopped) return;
    if (code === 4401) {
      // The access token expired or the session ended: refresh once, then sign out.
      if (live.refreshed) return OffChat.signOut();
      live.refreshed = true;
      OffChat.refresh().then((refreshed) => (refreshed ? connect() : OffChat.signOut()));
      schedulePoll(0);
      return;
    }
    schedulePoll(0); // catch up from the last cursor now, then every pollSeconds
    if (code === 4404) live.refused = "not_found"; // even if its error frame was lost
    if (live.refused) return showMode(); // polling from now on, and the badge says why
    reconnectLater(wasOpen);
  }

  function reconnectLater(wasOpen = false) {
    if (wasOpen) live.attempts = 0;
    const delay = Math.min(30_000, 1000 * 2 ** live.attempts) * (0.75 + Math.random() / 2);
    live.attempts += 1;
    window.clearTimeout(live.retry);
    live.retry = window.setTimeout(connect, delay);
  }

  function samePresence(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  // Whether a user may belong to the list as filtered now (a search is approximated: when in
  // doubt, yes, and the page is reloaded for nothing).
  function mayBelong(user) {
    if (state.status && user.online_status !== state.status) return false;
    if (!state.search || /["']/.test(state.search)) return true;
    const text = [user.username, user.first_name, user.last_name, user.email].join(" ").toLowerCase();
    return state.search.toLowerCase().split(/\s+/).every((term) => text.includes(term));
  }

  // A pushed frame: every user's changes (staff hear everyone), unfiltered.
  function onPresence(frame) {
    if (cursorAt(frame.cursor) <= state.pageAt) return; // read before the page: the page is newer
    if (!state.cursor || cursorAt(frame.cursor) > cursorAt(state.cursor)) state.cursor = frame.cursor;
    const shown = new Map(state.rows.map((user, index) => [user.id, index]));
    let moved = frame.removed.some((id) => shown.has(id));
    let changed = false;
    for (const user of frame.users) {
      if (!shown.has(user.id)) {
        if (mayBelong(user)) moved = true; // new on this page, or on another page
        continue;
      }
      const index = shown.get(user.id);
      if (samePresence(state.rows[index], user)) continue;
      state.rows[index] = user;
      keepingFocus(() => $("users").querySelector(`tr[data-user-id="${Number(user.id)}"]`)?.replaceWith(rowFor(user)));
      changed = true;
      if (!mayBelong(user)) moved = true; // it left the filtered list
    }
    if (changed && state.ordering !== "username") moved = true; // the order may have changed
    if (frame.users.length || frame.removed.length) countsSoon();
    announce(frame.users);
    updated();
    if (moved) reload();
  }

  let countsTimer = null;
  function countsSoon() {
    window.clearTimeout(countsTimer);
    countsTimer = window.setTimeout(() => loadCounts().catch(showFailure), 250);
  }

  function reset(changes) {
    Object.assign(state, changes, { etag: null, cursor: null });
    loadPage().catch(() => null);
  }

  let typing;
  $("search").addEventListener("input", (event) => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => reset({ search: event.target.value.trim(), page: 1 }), 250);
  });
  $("ordering").addEventListener("change", (event) => reset({ ordering: event.target.value, page: 1 }));
  $("previous").addEventListener("click", () => reset({ page: state.page - 1 }));
  $("next").addEventListener("click", () => reset({ page: state.page + 1 }));
  document.querySelectorAll(".counter").forEach((button) => {
    button.addEventListener("click", () => reset({ status: button.dataset.status, page: 1 }));
  });
  $("logout").addEventListener("click", async () => {
    live.stopped = true;
    live.socket?.close(1000);
    await OffChat.logout();
    window.location.assign(OffChat.LOGIN_PAGE);
  });
  window.addEventListener("online", () => live.socket || connect()); // back on the network: now (unless refused)
  // "last seen" texts age between changes: re-render them while no poll does.
  window.setInterval(() => live.open && render(), 30_000);

  $("me").textContent = OffChat.currentUser()?.username ?? "";
  showMode();
  poll().then(connect); // the first page and counts, then the socket resumes from the page's cursor
})();
