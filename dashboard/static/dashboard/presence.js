// The live presence page. A full page of users is loaded with its ETag (If-None-Match: an
// unchanged page costs a 304); every poll then asks the change feed (?since=cursor) what
// changed, updates rows in place, and reloads the page only when rows may have moved.
"use strict";

(() => {
  if (!OffChat.signedIn()) {
    window.location.replace(OffChat.LOGIN_PAGE);
    return;
  }
  const config = JSON.parse(document.getElementById("config").textContent);
  const PAGE_SIZE = 50;
  const $ = (id) => document.getElementById(id);
  const state = {
    page: 1, search: "", status: "", ordering: "username",
    rows: [], count: 0, hasNext: false, hasPrevious: false, etag: null, cursor: null,
  };

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
      etag: response.headers.get("ETag"), cursor: body.cursor,
    });
    render();
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
    row.dataset.username = user.username;
    row.dataset.status = user.online_status;
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

  function render() {
    $("users").replaceChildren(...state.rows.map(rowFor));
    $("empty").hidden = state.rows.length > 0;
    const first = (state.page - 1) * PAGE_SIZE + 1;
    $("page-info").textContent = state.count ? `${first}–${first + state.rows.length - 1} of ${state.count}` : "";
    $("previous").disabled = !state.hasPrevious;
    $("next").disabled = !state.hasNext;
    document.querySelectorAll(".counter").forEach((button) => {
      button.classList.toggle("selected", button.dataset.status === state.status);
    });
  }

  async function tick() {
    try {
      await Promise.all([loadCounts(), followFeed()]);
      render(); // "last seen" texts age between changes
      $("error").hidden = true;
      $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (failure) {
      $("error").textContent = `Could not update: ${failure.message}. Retrying.`;
      $("error").hidden = false;
    } finally {
      window.setTimeout(tick, config.pollSeconds * 1000);
    }
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
    await OffChat.logout();
    window.location.assign(OffChat.LOGIN_PAGE);
  });

  $("me").textContent = OffChat.currentUser()?.username ?? "";
  tick();
})();
