// Presence over time, on the live page: a chart of users online and away (the last 24 hours
// or 7 days, plain SVG), and a panel for one user (a row clicked, or Enter or Space on it):
// their live sessions, today's time online and away, and a bar per day for the last 7 days.
// The chart is read from the timeline endpoint when shown and every few minutes after, never
// on pushes; its last point is the step so far (`partial`, with the live count), drawn hollow.
// The panel is read when opened, and again when a push says that user changed.
// Everything a user typed (names, user agents) is set with textContent.
"use strict";

(() => {
  if (!OffChat.signedIn()) return; // presence.js sends the page to the sign-in page
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const MINUTE = 60_000;
  const HOUR = 60 * MINUTE;
  const DAY = 24 * HOUR;
  const CHART_REFRESH_MS = 5 * MINUTE;
  // Each period's step: 288 points over a day, 168 over a week.
  const RANGES = {
    "24h": { span: DAY, step: "5m", stepMs: 5 * MINUTE, label: "the last 24 hours" },
    "7d": { span: 7 * DAY, step: "1h", stepMs: HOUR, label: "the last 7 days" },
  };
  const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

  // ISO 8601 in UTC, to the second.
  const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const dayLabel = (ms) => new Date(ms).toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
  const when = (ms) =>
    new Date(ms).toLocaleString([], { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

  function svg(tag, attributes = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // 1 h 5 min, 45 min, 30 s: whole minutes, rounded down (the panel's test formats alike).
  function duration(seconds) {
    if (seconds < 60) return `${Math.floor(seconds)} s`;
    const hours = Math.floor(seconds / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    return hours ? `${hours} h ${minutes} min` : `${minutes} min`;
  }

  // --- The chart ------------------------------------------------------------------------------
  const chart = { range: "24h", sequence: 0, loadedAt: 0 };
  const W = 960;
  const H = 240;
  const M = { top: 14, right: 18, bottom: 30, left: 44 };
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;

  function timelineUrl(range) {
    const { span, step, stepMs } = RANGES[range];
    const to = Math.ceil(Date.now() / stepMs) * stepMs; // whole steps: the points stay put between loads
    const params = new URLSearchParams({ from: iso(to - span), to: iso(to), step });
    return `/api/users/admin/presence/timeline/?${params}`;
  }

  async function loadChart() {
    const range = chart.range;
    const sequence = ++chart.sequence;
    try {
      const response = await OffChat.get(timelineUrl(range));
      if (!response.ok) throw new Error(`the timeline answered HTTP ${response.status}`);
      const timeline = await response.json();
      if (sequence !== chart.sequence) return; // the period changed meanwhile
      drawChart(timeline, range);
      chart.loadedAt = Date.now();
      $("chart-error").hidden = true;
      $("chart-updated").textContent = `Updated ${clock(chart.loadedAt)}`;
    } catch (failure) {
      if (sequence !== chart.sequence) return;
      $("chart-error").textContent = `Could not load the chart: ${failure.message}.`;
      $("chart-error").hidden = false;
    }
  }

  // The y axis' top: four whole-number steps of 1, 2, 3, 5, 10, 20, 25, 30, 50...
  function niceMax(value) {
    for (let magnitude = 1; ; magnitude *= 10) {
      const factors = magnitude === 1 ? [1, 2, 3, 5] : [1, 2, 2.5, 3, 5];
      const factor = factors.find((candidate) => candidate * magnitude * 4 >= value);
      if (factor) return factor * magnitude * 4;
    }
  }

  // Local boundaries between from and to: every 3 hours over a day, every midnight over a week.
  function xTicks(from, to, range) {
    const ticks = [];
    const at = new Date(from);
    at.setMinutes(0, 0, 0);
    if (range === "7d") at.setHours(0);
    while (at.getTime() <= to) {
      const keep = range === "7d" ? at.getHours() === 0 : at.getHours() % 3 === 0;
      if (keep && at.getTime() >= from) ticks.push(at.getTime());
      if (range === "7d") at.setDate(at.getDate() + 1);
      else at.setHours(at.getHours() + 1);
    }
    return ticks;
  }

  function drawChart(timeline, range) {
    const from = Date.parse(timeline.from);
    const to = Date.parse(timeline.to);
    const stepMs = timeline.step_seconds * 1000;
    const points = timeline.points.map((point) => ({ ...point, ms: Date.parse(point.at) }));
    const top = niceMax(Math.max(0, ...points.map((point) => Math.max(point.online, point.away))));
    const x = (ms) => M.left + ((ms - from) / (to - from)) * plotW;
    const y = (count) => M.top + plotH - (count / top) * plotH;
    const middle = (point) => x(point.ms + stepMs / 2); // a point stands for its whole step

    const title = `Users online and away over ${RANGES[range].label}`;
    const latest = points.at(-1);
    const peak = points.reduce((best, point) => (!best || point.online > best.online ? point : best), null);
    const description = latest
      ? `${latest.partial ? "Now, this step so far" : "Latest"}, at ${when(latest.ms)}: ` +
        `${latest.online} online, ${latest.away} away, ${latest.offline} offline. ` +
        `Most online: ${peak.online}, at ${when(peak.ms)}. ${points.length} points, one per ${duration(timeline.step_seconds)}.`
      : "No counts were recorded in this period.";

    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-labelledby": "chart-title chart-desc",
      "data-range": range,
      "data-from": timeline.from,
      "data-to": timeline.to,
      "data-step-seconds": timeline.step_seconds,
      "data-points": points.length,
    });
    root.append(svg("title", { id: "chart-title" }, title), svg("desc", { id: "chart-desc" }, description));

    const axes = svg("g", { class: "axes", "aria-hidden": "true" });
    for (let index = 0; index <= 4; index += 1) {
      const count = (top / 4) * index;
      axes.append(
        svg("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(count), y2: y(count) }),
        svg("text", { class: "y-label", x: M.left - 8, y: y(count) + 4, "text-anchor": "end" }, String(count)),
      );
    }
    for (const tick of xTicks(from, to, range)) {
      const label = range === "7d" ? dayLabel(tick) : clock(tick);
      const half = label.length * 3.4; // about half the label's width at 12px
      const [at, anchor] = x(tick) + half > W ? [W - 1, "end"] : [x(tick), "middle"]; // kept inside
      axes.append(
        svg("line", { class: "tick", x1: x(tick), x2: x(tick), y1: M.top + plotH, y2: M.top + plotH + 5 }),
        svg("text", { class: "x-label", x: at, y: H - 8, "text-anchor": anchor }, label),
      );
    }
    axes.append(svg("line", { class: "axis", x1: M.left, x2: W - M.right, y1: M.top + plotH, y2: M.top + plotH }));
    root.append(axes);

    if (!points.length) {
      root.append(
        svg("text", { class: "empty", x: M.left + plotW / 2, y: M.top + plotH / 2, "text-anchor": "middle" }, description),
      );
    }

    // One line per status, broken where steps have no sample (no sweep ran then).
    for (const status of ["away", "online"]) {
      let line = "";
      let area = "";
      let run = [];
      const flush = () => {
        if (!run.length) return;
        line += run.map((point, index) => `${index ? "L" : "M"}${middle(point).toFixed(1)},${y(point[status]).toFixed(1)}`).join("");
        const base = y(0).toFixed(1);
        area += `M${middle(run[0]).toFixed(1)},${base}` + run.map((point) => `L${middle(point).toFixed(1)},${y(point[status]).toFixed(1)}`).join("") + `L${middle(run.at(-1)).toFixed(1)},${base}Z`;
        run = [];
      };
      for (const point of points) {
        if (run.length && point.ms - run.at(-1).ms > stepMs * 1.5) flush();
        run.push(point);
      }
      flush();
      root.append(svg("path", { class: `area ${status}`, d: area, "aria-hidden": "true" }));
      root.append(svg("path", { class: `line ${status}`, d: line, "aria-hidden": "true" }));
      if (latest) {
        const live = latest.partial ? " partial" : "";
        root.append(svg("circle", { class: `latest ${status}${live}`, cx: middle(latest), cy: y(latest[status]), r: 4 }));
      }
    }

    // One hover band per point, with its figures (data-*, and a tooltip).
    const bands = svg("g", { class: "points" });
    const width = Math.max(1, (stepMs / (to - from)) * plotW);
    for (const point of points) {
      const band = svg("g", {
        class: point.partial ? "point partial" : "point",
        "data-at": point.at,
        "data-online": point.online,
        "data-away": point.away,
        "data-offline": point.offline,
        "data-partial": point.partial,
      });
      band.append(
        svg("title", {}, `${when(point.ms)}: ${point.online} online, ${point.away} away${point.partial ? " (so far)" : ""}`),
        svg("rect", { x: x(point.ms), y: M.top, width, height: plotH }),
      );
      bands.append(band);
    }
    root.append(bands);
    $("chart").replaceChildren(root);
  }

  document.querySelectorAll(".range button").forEach((button) => {
    button.addEventListener("click", () => {
      chart.range = button.dataset.range;
      document.querySelectorAll(".range button").forEach((other) => {
        other.setAttribute("aria-pressed", String(other === button));
      });
      loadChart();
    });
  });
  // Every few minutes, while the tab is shown; at once when it is shown again after that.
  window.setInterval(() => document.hidden || loadChart(), CHART_REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && Date.now() - chart.loadedAt > CHART_REFRESH_MS) loadChart();
  });
  loadChart();

  // --- The per-user panel ---------------------------------------------------------------------
  const dialog = $("user-panel");
  const panel = { userId: null, row: null, sequence: 0, again: null };

  // "Firefox on Linux": enough to tell devices apart; the whole user agent is in its title.
  function device(userAgent) {
    if (!userAgent) return "Unknown device";
    const browser = [
      [/Edg\//, "Edge"], [/OPR\/|Opera/, "Opera"], [/Firefox\//, "Firefox"], [/Chrom(e|ium)\//, "Chrome"],
      [/Safari\//, "Safari"], [/curl\//, "curl"], [/python-requests|aiohttp|httpx/i, "Python client"],
    ].find(([pattern]) => pattern.test(userAgent))?.[1];
    const system = [
      [/Android/, "Android"], [/iPhone|iPad|iOS/, "iOS"], [/Windows/, "Windows"], [/Mac OS X|Macintosh/, "macOS"],
      [/CrOS/, "ChromeOS"], [/Linux/, "Linux"],
    ].find(([pattern]) => pattern.test(userAgent))?.[1];
    if (browser && system) return `${browser} on ${system}`;
    return browser || system || userAgent.slice(0, 40);
  }

  function ago(ms) {
    const seconds = Math.max(0, (Date.now() - ms) / 1000);
    if (seconds < 45) return "just now";
    if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  function showSubtitle(status) {
    $("panel-sub").textContent = [panel.fullName, status].filter(Boolean).join(" · ");
  }

  const localDate = (date) =>
    `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, "0")}-${String(date.getDate()).padStart(2, "0")}`;

  function openPanel(row) {
    panel.userId = Number(row.dataset.userId);
    panel.row = row;
    dialog.dataset.userId = panel.userId;
    dialog.dataset.state = "loading";
    dialog.dataset.loads = 0;
    $("panel-name").textContent = row.dataset.username;
    panel.fullName = row.querySelector(".name small")?.textContent ?? "";
    showSubtitle(row.dataset.status);
    $("panel-tz").textContent = `(${timeZone})`;
    for (const id of ["panel-today-online", "panel-today-away", "panel-today-first", "panel-today-last"]) $(id).textContent = "…";
    $("panel-week").replaceChildren();
    $("panel-sessions").replaceChildren();
    $("panel-session-count").textContent = "";
    $("panel-error").hidden = true;
    if (!dialog.open) dialog.showModal(); // Escape closes it (the dialog's cancel)
    $("panel-close").focus();
    loadPanel();
  }

  async function loadPanel() {
    const userId = panel.userId;
    const sequence = ++panel.sequence;
    const now = new Date();
    const weekStart = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 6); // local midnight
    const params = new URLSearchParams({ from: iso(weekStart.getTime()), to: iso(now.getTime()), tz: timeZone });
    try {
      const [sessions, history] = await Promise.all(
        [`/api/users/admin/users/${userId}/sessions/?page_size=200`, `/api/users/admin/users/${userId}/history/?${params}`].map(
          async (url) => {
            const response = await OffChat.get(url);
            if (!response.ok) throw new Error(`${url.split("?")[0]} answered HTTP ${response.status}`);
            return response.json();
          },
        ),
      );
      if (sequence !== panel.sequence || userId !== panel.userId || !dialog.open) return;
      showToday(history, localDate(now));
      showWeek(history, now.getTime());
      showSessions(sessions.results.filter((session) => session.is_live));
      dialog.dataset.state = "loaded";
      dialog.dataset.loads = Number(dialog.dataset.loads || 0) + 1; // how many reads it showed
    } catch (failure) {
      if (sequence !== panel.sequence) return;
      $("panel-error").textContent = `Could not load this user's presence: ${failure.message}.`;
      $("panel-error").hidden = false;
      dialog.dataset.state = "failed";
    }
  }

  function showToday(history, today) {
    const day = history.days.find((candidate) => candidate.date === today) ?? history.days.at(-1);
    const online = $("panel-today-online");
    const away = $("panel-today-away");
    online.textContent = duration(day?.online_seconds ?? 0);
    online.dataset.seconds = day?.online_seconds ?? 0;
    away.textContent = duration(day?.away_seconds ?? 0);
    away.dataset.seconds = day?.away_seconds ?? 0;
    online.closest("dl").dataset.date = day?.date ?? today;
    $("panel-today-first").textContent = day?.first_seen ? clock(Date.parse(day.first_seen)) : "—";
    $("panel-today-last").textContent = day?.last_seen ? clock(Date.parse(day.last_seen)) : "—";
  }

  // One bar per local day, midnight to midnight: a segment per interval (or piece of one).
  function showWeek(history, now) {
    const intervals = history.intervals.map((interval) => ({
      status: interval.status,
      start: Date.parse(interval.started_at),
      end: interval.ended_at ? Date.parse(interval.ended_at) : now,
    }));
    const items = history.days.map((day) => {
      const [year, month, date] = day.date.split("-").map(Number);
      const dayStart = new Date(year, month - 1, date).getTime();
      const dayEnd = new Date(year, month - 1, date + 1).getTime(); // 23 or 25 hours across a DST change
      const length = dayEnd - dayStart;
      const item = element("li", "day");
      item.dataset.date = day.date;
      item.dataset.onlineSeconds = day.online_seconds;
      item.dataset.awaySeconds = day.away_seconds;
      item.setAttribute(
        "aria-label",
        `${dayLabel(dayStart)}: online ${duration(day.online_seconds)}, away ${duration(day.away_seconds)}`,
      );
      const bar = element("div", "bar");
      bar.setAttribute("aria-hidden", "true");
      if (now < dayEnd) {
        const future = element("span", "future");
        future.style.left = `${(Math.max(0, now - dayStart) / length) * 100}%`;
        bar.append(future);
      }
      for (const interval of intervals) {
        const start = Math.max(interval.start, dayStart);
        const end = Math.min(interval.end, dayEnd);
        if (end <= start) continue;
        const segment = element("span", `segment ${interval.status}`);
        segment.style.left = `${((start - dayStart) / length) * 100}%`;
        segment.style.width = `${Math.max(0.2, ((end - start) / length) * 100)}%`;
        segment.title = `${clock(start)}–${clock(end)} ${interval.status}`;
        bar.append(segment);
      }
      const total = element("span", "total", duration(day.online_seconds));
      if (day.away_seconds) total.append(element("small", "", ` + ${duration(day.away_seconds)} away`));
      item.append(element("span", "label", dayLabel(dayStart)), bar, total);
      return item;
    });
    const scale = element("li", "scale");
    scale.setAttribute("aria-hidden", "true");
    const hours = element("div", "hours");
    for (const hour of ["0", "6", "12", "18", "24"]) hours.append(element("span", "", hour));
    scale.append(element("span", "label"), hours, element("span", "total"));
    $("panel-week").replaceChildren(...items, scale);
  }

  function showSessions(sessions) {
    $("panel-session-count").textContent = `(${sessions.length})`;
    if (!sessions.length) {
      $("panel-sessions").replaceChildren(element("li", "muted", "No live sessions."));
      return;
    }
    $("panel-sessions").replaceChildren(
      ...sessions.map((session) => {
        const item = element("li", "session");
        item.dataset.sessionId = session.id;
        const name = element("strong", "device", device(session.user_agent));
        name.title = session.user_agent;
        const since = Date.parse(session.created_at);
        item.append(
          element("span", `dot ${session.reported_status}`),
          name,
          element("span", "address", session.ip_address || "address unknown"),
          element("span", "since muted", `since ${when(since)} (${ago(since)})`),
          element("span", "agent muted", session.user_agent || ""),
        );
        return item;
      }),
    );
  }

  function closePanel() {
    if (dialog.open) dialog.close();
  }

  dialog.addEventListener("close", () => {
    const userId = panel.userId;
    panel.userId = null;
    panel.sequence += 1; // answers still on their way are dropped
    delete dialog.dataset.userId;
    dialog.dataset.state = "closed";
    // Back to the row it was opened from (or the same user's row, if it was replaced since).
    const row = document.querySelector(`#users tr[data-user-id="${userId}"]`) ?? panel.row;
    row?.focus();
  });
  $("panel-close").addEventListener("click", closePanel);
  dialog.addEventListener("click", (event) => {
    if (event.target !== dialog) return;
    const box = dialog.getBoundingClientRect(); // the dialog's own padding is the dialog too
    const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) closePanel(); // the backdrop
  });

  $("users").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-user-id]");
    if (row) openPanel(row);
  });
  $("users").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    const row = event.target.closest?.("tr[data-user-id]");
    if (!row || event.target !== row) return;
    event.preventDefault();
    openPanel(row);
  });

  // A pushed change for the user shown: read their panel again (once for a burst).
  document.addEventListener("offchat:presence", (event) => {
    const user = dialog.open && event.detail.users.find((changed) => changed.id === panel.userId);
    if (!user) return;
    showSubtitle(user.online_status);
    window.clearTimeout(panel.again);
    panel.again = window.setTimeout(loadPanel, 1000);
  });
})();
