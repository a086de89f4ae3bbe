"use strict";

(() => {
  const form = document.getElementById("login");
  const error = document.getElementById("login-error");

  function fail(message) {
    error.textContent = message;
    error.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const { username, password } = Object.fromEntries(new FormData(form));
    if (!username || !password) return fail("Enter your username and password.");
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const result = await OffChat.login(username, password);
      if (!result.ok) {
        const tooMany = result.status === 429;
        return fail(tooMany ? "Too many attempts; wait a minute and try again." : "Wrong username or password.");
      }
      if (!result.body.user.is_staff) {
        await OffChat.logout();
        return fail("This dashboard is for staff accounts.");
      }
      window.location.assign("/dashboard/");
    } catch (failure) {
      fail("The server did not answer; try again.");
    } finally {
      button.disabled = false;
    }
  });
})();
