"""Renders results.json as REPORT.md: the seven rows with their goals, then the details."""

import time
from pathlib import Path

ANALYSIS = Path(__file__).with_name("analysis.md")


def _met(ok):
    return "yes" if ok else "**no**"


def _ms(value):
    return f"{value:.1f} ms"


def _rows(r, goals):
    """The summary table's rows of one run, in order: 1, 1b, 2, 3, 4, 5, 6, 7, 8."""
    t = r["throughput"]
    writes = r["writes"]
    sweeps = r["sweeps"]
    small, large = sweeps[0], sweeps[-1]
    sweep_ratio = large["median_ms"] / small["median_ms"]
    admin = r["admin_list"]
    payload = r["payload"]
    capacity = r["capacity"]
    sustained = capacity["sustained"]
    hb, noop = t["heartbeat"], t["noop"]
    on, off = t["middleware_on"], t["middleware_off"]

    def med(runs, key):
        values = sorted(run[key] for run in runs)
        return values[len(values) // 2]

    ours_rows = writes["ours"]["rows"]
    rows = [
        (
            "1. Heartbeat throughput vs a no-op with the same JWT auth",
            f">= {goals['heartbeat_vs_noop']}",
            f"{med(hb, 'rps'):.0f} req/s, p50 {_ms(med(hb, 'p50_ms'))}, p99 {_ms(med(hb, 'p99_ms'))}",
            f"{med(noop, 'rps'):.0f} req/s, p50 {_ms(med(noop, 'p50_ms'))}, p99 {_ms(med(noop, 'p99_ms'))}",
            f"{t['heartbeat_vs_noop']:.2f}",
            _met(t["heartbeat_vs_noop"] >= goals["heartbeat_vs_noop"]),
        ),
        (
            "1b. The same, the heartbeat with production's throttles (Redis) on",
            f">= {goals['heartbeat_vs_noop']}",
            f"{med(t['heartbeat_throttled'], 'rps'):.0f} req/s, p50 {_ms(med(t['heartbeat_throttled'], 'p50_ms'))}, "
            f"p99 {_ms(med(t['heartbeat_throttled'], 'p99_ms'))}",
            "the no-op above, same rounds",
            f"{t['heartbeat_throttled_vs_noop']:.2f}",
            _met(t["heartbeat_throttled_vs_noop"] >= goals["heartbeat_vs_noop"]),
        ),
        (
            "2. Ordinary read (`GET /me/`), presence middleware on vs off",
            f">= {goals['middleware_on_vs_off']}",
            f"{med(on, 'rps'):.0f} req/s, p99 {_ms(med(on, 'p99_ms'))}",
            f"{med(off, 'rps'):.0f} req/s, p99 {_ms(med(off, 'p99_ms'))}",
            f"{t['middleware_on_vs_off']:.2f}",
            _met(t["middleware_on_vs_off"] >= goals["middleware_on_vs_off"]),
        ),
        (
            "3. Write transactions per user-minute (heartbeat every 30 s + 1 request/s; each written in its request)",
            f"<= {goals['writes_per_user_minute']}",
            f"{writes['ours']['requests_that_wrote']} ({writes['ours']['statements']} statements, {ours_rows} rows)",
            f"naive: {writes['naive_write_per_request']['requests_that_wrote']} "
            f"({writes['naive_write_per_request']['rows']} rows); django-online-users: "
            f"{writes['django_online_users']['requests_that_wrote']} ({writes['django_online_users']['rows']} rows)",
            f"{writes['ours']['rows'] / max(writes['naive_write_per_request']['rows'], 1):.3f} of naive's rows",
            _met(writes["ours"]["requests_that_wrote"] <= goals["writes_per_user_minute"]),
        ),
        _sweep_row(r, goals, small, large, sweep_ratio),
        _admin_list_row(goals, admin, large),
        _feed_row(goals, payload),
        (
            f"7. Capacity: clients held {r['scale']['capacity_sustain_seconds']} s with p99 < 100 ms, 0 errors",
            f">= {goals['capacity_clients']:,}",
            f"{sustained['clients']:,} clients held: {sustained['rps']:.0f} req/s, p50 {_ms(sustained['p50_ms'])}, "
            f"p99 {_ms(sustained['p99_ms'])}, {sustained['errors']} errors"
            + (
                f" (load generator {sustained['generator_cpu_share']:.0%} of the machine's CPU, the machine "
                f"{sustained['machine_cpu_share']:.0%} busy)"
                if "generator_cpu_share" in sustained
                else ""
            )
            if sustained
            else "no level held",
            "probes: "
            + ", ".join(
                f"{probe['clients']:,} → p99 {probe['p99_ms']:.0f} ms{'' if probe['passed'] else ' (fail)'}"
                for probe in capacity["probes"]
            )
            + "; sustained: "
            + ", ".join(
                f"{attempt['clients']:,} → p99 {attempt['p99_ms']:.0f} ms{'' if attempt['passed'] else ' (fail)'}"
                for attempt in capacity.get("sustained_attempts", [])
            ),
            "",
            _met(bool(sustained) and sustained["clients"] >= goals["capacity_clients"]),
        ),
    ]
    history = r.get("history")
    if history:  # reports from before row 8 existed have none
        rows.append(
            (
                f"8. Timeline, 7 days at 1-minute steps, over {history['users']:,} users' week of history",
                f"p50 < {goals['timeline_7d_p50_ms']} ms",
                f"p50 {_ms(history['timeline_p50_ms'])}, p99 {_ms(history['timeline_p99_ms'])}, "
                f"first read (empty cache) {_ms(history['timeline_cold_ms'])} ({history['timeline_points']:,} "
                f"points; {history['intervals']:,} intervals); one user's week: p50 {_ms(history['user_week_p50_ms'])}"
                + _live_point(history),
                f"no intervals yet: p50 {_ms(history['baseline_p50_ms'])}, "
                f"first read {_ms(history['baseline_cold_ms'])}",
                f"{history['ratio']:.2f}",
                _met(history["timeline_p50_ms"] < goals["timeline_7d_p50_ms"]),
            )
        )
    return rows


def _live_point(history) -> str:
    """The same week ending 30 s into the current minute: its live point counts the users.
    Results from before the live point have no such figure."""
    if "timeline_live_p50_ms" not in history:
        return ""
    return f"; ending in the current minute (the live point): p50 {_ms(history['timeline_live_p50_ms'])}"


def render(r, goals):
    return "\n".join(
        [
            *_title(r, "Every figure is next to its baseline from the same run."),
            *_table(_rows(r, goals)),
            "",
            *_details(r),
        ]
    )


def render_runs(runs, goals):
    """Several consecutive full runs: each row as in its median run (the machine is noisy),
    then every run's figure for every row, then the details of the last run."""
    tables = [_rows(r, goals) for r in runs]
    median_rows = []
    for index, headline in enumerate(HEADLINES):
        order = sorted(range(len(runs)), key=lambda run: headline(runs[run]))
        middle = order[len(order) // 2]
        median_rows.append((*tables[middle][index], f"{middle + 1}"))
    names = ", ".join(str(n + 1) for n in range(len(runs)))
    return "\n".join(
        [
            *_title(
                runs[-1],
                f"{len(runs)} consecutive full runs ({names}); each row below is the run with the median figure for "
                "that row (`run`), every figure next to its baseline from that same run. The next table shows "
                "every run.",
            ),
            "| row | goal | ours | baseline | ratio | met | run |",
            "|---|---|---|---|---|---|---|",
            *(f"| {' | '.join(row)} |" for row in median_rows),
            "",
            "## Every run",
            "",
            "| row | " + " | ".join(f"run {n + 1}" for n in range(len(runs))) + " |",
            "|---|" + "---|" * len(runs),
            *(
                f"| {tables[0][index][0]} | "
                + " | ".join(
                    f"{table[index][2]} ({'; '.join(filter(None, [table[index][4], 'met: ' + table[index][5]]))})"
                    for table in tables
                )
                + " |"
                for index in range(len(HEADLINES))
            ),
            "",
            f"## Details of run {len(runs)}",
            "",
            *_details(runs[-1]),
        ]
    )


# Per summary row, the figure that ranks the runs (the median run's row is the one shown).
HEADLINES = [
    lambda r: r["throughput"]["heartbeat_vs_noop"],
    lambda r: r["throughput"]["heartbeat_throttled_vs_noop"],
    lambda r: r["throughput"]["middleware_on_vs_off"],
    lambda r: r["writes"]["ours"]["requests_that_wrote"],
    lambda r: r["sweeps"][-1]["median_ms"],
    lambda r: r["admin_list"]["p50_ms"],
    lambda r: r["payload"]["p50_ms"],
    lambda r: (r["capacity"]["sustained"] or {}).get("clients", 0),
    lambda r: r["history"]["timeline_p50_ms"],
]


def _title(r, note):
    return [
        "# OffChat presence benchmark",
        "",
        f"Generated by `bench/run{' --quick' if r['mode'] == 'quick' else ''}` on "
        f"{r.get('finished_at') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({r['mode']} scale). {note}",
        "",
    ]


def _table(rows):
    return [
        "| row | goal | ours | baseline | ratio | met |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]


def _details(r):
    t = r["throughput"]
    writes = r["writes"]
    sweeps = r["sweeps"]
    large = sweeps[-1]
    admin = r["admin_list"]
    payload = r["payload"]
    capacity = r["capacity"]

    def med(runs, key):
        values = sorted(run[key] for run in runs)
        return values[len(values) // 2]

    lines = [
        "## Machine and settings",
        "",
        *(f"- {key}: {value}" for key, value in r["machine"].items()),
        *(f"- {key}: {value}" for key, value in r["settings"].items()),
        f"- gunicorn: {r['scale']['gunicorn_workers']} sync workers; wrk: 2 threads, 16 connections "
        f"(row 5: 1 thread, one connection fewer than workers), {r['scale']['load_seconds']} s per run, "
        f"{r['scale']['load_rounds']} alternating rounds",
        "- load generator, database, Redis and gunicorn share the machine's cores",
        "",
        "## Details",
        "",
        "### HOT updates during rows 1 and 2's heartbeat load",
        "",
        "| table | updates | HOT | HOT ratio |",
        "|---|---|---|---|",
        *(
            f"| {table} | {stats['updates']:,} | {stats['hot']:,} | {stats['hot'] / max(stats['updates'], 1):.1%} |"
            for table, stats in t["hot_updates"].items()
        ),
        f"\n{t['requests_during_hot_window']:,} requests (heartbeats and no-ops) over "
        f"{r['scale']['token_users']:,} users caused these updates.",
        "",
        "### Authentication cost",
        "",
        f"A no-op behind our authentication (JWT plus the session check, one joined query) runs at "
        f"{t['session_check_cost']:.2f} x the rate of the same no-op behind simplejwt's stock authentication "
        f"(one user query): {med(t['noop'], 'rps'):.0f} vs {med(t['stock_jwt_noop'], 'rps'):.0f} req/s.",
        "",
        *_throttle_cost(t, med),
        "### Sweep",
        "",
        *_sweep_details(sweeps, large),
        "",
        f"Query plans at {large['users']:,} users (`EXPLAIN (ANALYZE, BUFFERS)`):",
        "",
        *(f"```\n{plan['sql']}\n{plan['plan']}\n```" for plan in large["plans"]),
        "",
        "### Admin list, queries per request (in process)",
        "",
        *_admin_list_details(admin),
        "",
        *_feed_details(payload),
        "### Writes per user-minute",
        "",
        *(f"- {name}: {json_line}" for name, json_line in writes.items()),
        "",
        "### Capacity probes",
        "",
        f"gunicorn worker class: {capacity.get('worker_class', 'sync')}",
        "",
        *(f"- {probe}" for probe in capacity["probes"]),
        *(f"- sustained: {attempt}" for attempt in capacity.get("sustained_attempts", [])),
        "",
    ]
    if ANALYSIS.exists() and r["mode"] == "full":
        lines += [ANALYSIS.read_text()]
    return lines


def _sweep_row(r, goals, small, large, ratio):
    several = large.get("stale_of_several")  # results from before issue 14 have none
    statements = "statements" in large and "statements" in small
    fixed = not statements or large["statements"] == small["statements"]
    checked = all(sweep.get("check", {}).get("passed", True) for sweep in (small, large))
    return (
        f"4. Sweep, {large['users']:,} users vs {small['users']:,} ({r['scale']['online']:,} online, "
        f"{r['scale']['stale']:,} stale"
        + (f", {several:,} of them on one of their 2-3 sessions only, kept present" if several else "")
        + ")",
        f"<= {goals['sweep_ms_at_largest']} ms, ratio <= {goals['sweep_ratio']}"
        + (", a fixed number of statements" if statements else ""),
        _ms(large["median_ms"]) + (f", {large['statements']} statements" if statements else ""),
        _ms(small["median_ms"]) + (f", {small['statements']} statements" if statements else ""),
        f"{ratio:.2f}",
        _met(
            large["median_ms"] <= goals["sweep_ms_at_largest"] and ratio <= goals["sweep_ratio"] and fixed and checked
        ),
    )


def _admin_list_row(goals, admin, large):
    # Results from before issue 14 have one wrk run under "wrk" and no p99 goal.
    runs = admin["wrk"] if isinstance(admin["wrk"], list) else [admin["wrk"]]
    p50 = admin.get("p50_ms", runs[0]["p50_ms"])
    p99 = admin.get("p99_ms", runs[0]["p99_ms"])
    queries = admin["queries"]
    constant = len({q["queries"] for label, q in queries.items() if label.startswith("online")}) == 1
    online = f", {admin['online']:,} online" if "online" in admin else ""
    stale = ", statistics stale" if admin.get("statistics", {}).get("stale") else ""
    query_counts = (
        f"{queries['online, 50 rows']['queries']} queries (10 rows: {queries['online, 10 rows']['queries']}, "
        f"200 rows: {queries['online, 200 rows']['queries']}: {'constant' if constant else 'varies'})"
    )
    if "noop_p50_ms" in admin:
        baseline = f"a no-op behind the same authentication: p50 {_ms(admin['noop_p50_ms'])}, p99 "
        baseline += _ms(admin["noop_p99_ms"])
        ratio = f"{p50 / admin['noop_p50_ms']:.1f} x the no-op's p50"
    else:  # results from before issue 14
        baseline = query_counts
        ratio = "constant" if constant else "varies"
    return (
        f"5. Admin list, `?online_status=online`, 50 rows, {admin.get('users', large['users']):,} users{online}"
        f"{stale} (gunicorn, wrk)",
        f"p50 <= {goals['admin_list_p50_ms']} ms, p99 <= {goals['admin_list_p99_ms']} ms, constant queries",
        f"p50 {_ms(p50)}, p99 {_ms(p99)}, {query_counts}",
        baseline,
        ratio,
        _met(p50 <= goals["admin_list_p50_ms"] and p99 <= goals["admin_list_p99_ms"] and constant),
    )


def _feed_row(goals, payload):
    if "p50_ms" not in payload:  # results from before issue 14: bytes only, the whole directory
        return (
            f"6. Bytes per admin poll, {payload['users']:,} users, 1% churn: change feed vs full list",
            f"<= {goals['feed_vs_full']:.0%}",
            f"{payload['feed_bytes']:,} B ({payload['feed_results']} users)",
            f"{payload['full_list_bytes']:,} B",
            f"{payload['ratio']:.2%}",
            _met(payload["ratio"] <= goals["feed_vs_full"]),
        )
    return (
        f"6. Admin poll of the online list, {payload['online']:,} online of {payload['users']:,} users, "
        f"1% churn ({payload['left']:,} left, {payload['arrived']:,} came): change feed vs reloading the list",
        f"<= {goals['feed_vs_full']:.0%} of the bytes, p50 <= {goals['feed_poll_p50_ms']} ms",
        f"{payload['feed_bytes']:,} B ({payload['feed_results']:,} rows, {payload['feed_removed']:,} removed ids); "
        f"p50 {_ms(payload['p50_ms'])}, p99 {_ms(payload['p99_ms'])} (gunicorn, wrk)",
        f"{payload['full_list_bytes']:,} B ({payload['full_list_pages']:,} keyset pages of 200); a no-op behind "
        f"the same authentication: p50 {_ms(payload['noop_p50_ms'])}",
        f"{payload['ratio']:.2%}",
        _met(payload["ratio"] <= goals["feed_vs_full"] and payload["p50_ms"] <= goals["feed_poll_p50_ms"]),
    )


def _sweep_details(sweeps, large):
    lines = []
    for sweep in sweeps:
        line = (
            f"- {sweep['users']:,} users: seeded in {sweep['seed_seconds']:.1f} s (COPY); sweep median "
            f"{_ms(sweep['median_ms'])}, trials {', '.join(f'{ms:.0f}' for ms in sweep['trials_ms'])} ms; "
            f"sequential scan on users: {any(plan['seq_scan_on_users'] for plan in sweep['plans'])}"
        )
        if "statements" in sweep:
            kinds = ", ".join(f"{count} {kind}" for kind, count in sweep["statements_by_kind"].items())
            line += f"; {sweep['statements']} statements ({kinds})"
        lines.append(line)
    check = large.get("check")
    if check:
        lines.append(
            f"- After a sweep at {large['users']:,} users: the wholly silent users {check['wholly_silent_users']}; "
            f"the {large['stale_of_several']:,} silent on one session only {check['users_silent_on_one_session']} "
            "(away where their remaining sessions report away), their silent sessions ended as idle: "
            f"{check['their_silent_sessions_ended']:,} (still live: {check['their_silent_sessions_still_live']}), "
            f"their fresh sessions live: {check['their_fresh_sessions_live']:,} (ended: "
            f"{check['their_fresh_sessions_ended']}). Checked: {'passed' if check['passed'] else '**failed**'}."
        )
    return lines


def _admin_list_details(admin):
    lines = [
        *(
            f"- {label}: {q['queries']} queries, {_ms(q['in_process_ms'])}"
            + (f" ({_ms(q['sql_ms'])} in SQL)" if "sql_ms" in q else "")
            + (f", count {q['count']:,}{' (capped)' if q['count_capped'] else ''}" if "count" in q else "")
            for label, q in admin["queries"].items()
        ),
        f"- deepest page ({admin['deepest_page']:,}, offset paging): {_ms(admin['deepest_page_ms'])}; "
        f"the same depth with `?paging=keyset`: {_ms(admin['keyset_deepest_page_ms'])}"
        if "keyset_deepest_page_ms" in admin
        else f"- deepest page ({admin['deepest_page']:,}, offset paging): {_ms(admin['deepest_page_ms'])}",
    ]
    if isinstance(admin["wrk"], list):
        lines.append(_rounds(admin))
    stats = admin.get("statistics")
    if stats:
        lines += [
            f"- statistics: ANALYZE at {stats['analyzed_at']}, the newest last_seen it knows of "
            f"{stats['statistics_know_last_seen_until']}; the online users' last_seen from "
            f"{stats['online_users_last_seen_from']} on (stale: {stats['stale']}; no ANALYZE since: "
            f"{stats.get('still_stale')})",
            f"- the exact count the page no longer runs: {admin['plain_rule_exact_count']:,} online users, "
            f"{_ms(admin['plain_rule_exact_count_ms'])}",
            "",
            "Plans at this size with these statistics (`EXPLAIN (ANALYZE, BUFFERS)`): the page, its count, and the "
            "page with the rule as plain comparisons (the form before `users.selectors.accounts.shown_status`):",
            "",
            *(f"```\n-- {name}\n{plan}\n```" for name, plan in admin["plans"].items()),
        ]
    return lines


def _feed_details(payload):
    if "p50_ms" not in payload:
        return []
    return [
        "### Change feed poll",
        "",
        f"- the poll in process (DRF's test client, {len(payload['in_process_ms'])} polls): p50 "
        f"{_ms(payload['in_process_p50_ms'])}, polls {', '.join(f'{ms:.0f}' for ms in payload['in_process_ms'])} ms",
        *(f"  - {_ms(query['ms'])}: `{query['sql']}...`" for query in payload.get("in_process_queries", [])),
        _rounds(payload),
        "",
    ]


def _rounds(row):
    """The alternating gunicorn rounds of a row and of its no-op."""
    return "- gunicorn rounds (the request, then the no-op): " + "; ".join(
        f"p50 {_ms(run['p50_ms'])}, p99 {_ms(run['p99_ms'])} / p50 {_ms(noop['p50_ms'])}, p99 {_ms(noop['p99_ms'])}"
        for run, noop in zip(row["wrk"], row.get("noop", row["wrk"]), strict=True)
    )


def _throttle_cost(t, med):
    if "heartbeat_throttles_on_vs_off" not in t:  # results from before this was measured
        return []
    return [
        "### Throttle cost",
        "",
        f"The heartbeat with production's throttles (its own per-user limit, counted in Redis) "
        f"runs at {t['heartbeat_throttles_on_vs_off']:.2f} x its rate without them: "
        f"{med(t['heartbeat_throttles_on'], 'rps'):.0f} vs {med(t['heartbeat_throttles_off'], 'rps'):.0f} req/s "
        "(alternating rounds, medians). Rows 1 and 2 are measured without throttles.",
        "",
    ]
