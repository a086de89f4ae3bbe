// The dashboard's REST client. It signs in like any frontend: a JWT pair kept in
// sessionStorage (gone when the tab closes), refreshed once when the access token expires.
"use strict";

const OffChat = (() => {
  const store = window.sessionStorage;
  const LOGIN_PAGE = "/dashboard/login/";

  const tokens = () => ({ access: store.getItem("offchat.access"), refresh: store.getItem("offchat.refresh") });

  function save({ access, refresh, user }) {
    store.setItem("offchat.access", access);
    if (refresh) store.setItem("offchat.refresh", refresh);
    if (user) store.setItem("offchat.user", JSON.stringify(user));
  }

  function clear() {
    ["offchat.access", "offchat.refresh", "offchat.user"].forEach((key) => store.removeItem(key));
  }

  const currentUser = () => JSON.parse(store.getItem("offchat.user") || "null");

  async function post(path, body, headers = {}) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
  }

  // One refresh at a time: refresh tokens rotate (the old one is blacklisted), so a second
  // refresh sent with the same token, by a parallel request or the socket, would sign us out.
  let refreshing = null;
  function refreshTokens() {
    refreshing ??= (async () => {
      const { refresh } = tokens();
      if (!refresh) return false;
      const response = await post("/api/users/token/refresh/", { refresh }).catch(() => null);
      if (!response?.ok) return false;
      save(await response.json());
      return true;
    })().finally(() => {
      refreshing = null;
    });
    return refreshing;
  }

  // The session is over (the refresh token was refused): forget it and go to the sign-in page.
  function signOut() {
    clear();
    window.location.assign(LOGIN_PAGE);
  }

  // A GET with the access token; `If-None-Match` and friends go in `headers`. The browser's
  // cache is bypassed so that a 304 reaches us instead of being answered from the cache.
  async function get(path, headers = {}) {
    const send = () =>
      fetch(path, { headers: { ...headers, Authorization: `Bearer ${tokens().access}` }, cache: "no-store" });
    let response = await send();
    if (response.status === 401 && (await refreshTokens())) response = await send();
    if (response.status === 401) {
      signOut();
      throw new Error("signed out");
    }
    return response;
  }

  async function login(username, password) {
    const response = await post("/api/users/login/", { username, password });
    const body = await response.json().catch(() => ({}));
    if (response.ok) save(body);
    return { ok: response.ok, status: response.status, body };
  }

  async function logout() {
    const { access, refresh } = tokens();
    if (access && refresh) {
      await post("/api/users/logout/", { refresh }, { Authorization: `Bearer ${access}` }).catch(() => null);
    }
    clear();
  }

  return {
    get, login, logout, currentUser, signOut, LOGIN_PAGE,
    refresh: refreshTokens,
    accessToken: () => tokens().access,
    signedIn: () => Boolean(tokens().access),
  };
})();
