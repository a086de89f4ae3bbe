"""Renders results.json as REPORT.md: the seven rows with their goals, then the details."""

import time
from pathlib import Path

ANALYSIS = Path(__file__).with_name("analysis.md")


def _met(ok):
    return "yes" if ok else "**no**"


def _ms(value):
    return f"{value:.1f} ms"


def render(r, goals):
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
            "2. Ordinary read (`GET /me/`), presence middleware on vs off",
            f">= {goals['middleware_on_vs_off']}",
            f"{med(on, 'rps'):.0f} req/s, p99 {_ms(med(on, 'p99_ms'))}",
            f"{med(off, 'rps'):.0f} req/s, p99 {_ms(med(off, 'p99_ms'))}",
            f"{t['middleware_on_vs_off']:.2f}",
            _met(t["middleware_on_vs_off"] >= goals["middleware_on_vs_off"]),
        ),
        (
            "3. Write transactions per user-minute (heartbeat every 30 s + 1 request/s)",
            f"<= {goals['writes_per_user_minute']}",
            f"{writes['ours']['requests_that_wrote']} ({writes['ours']['statements']} statements, {ours_rows} rows)",
            f"naive: {writes['naive_write_per_request']['requests_that_wrote']} "
            f"({writes['naive_write_per_request']['rows']} rows); django-online-users: "
            f"{writes['django_online_users']['requests_that_wrote']} ({writes['django_online_users']['rows']} rows)",
            f"{writes['ours']['rows'] / max(writes['naive_write_per_request']['rows'], 1):.3f} of naive's rows",
            _met(writes["ours"]["requests_that_wrote"] <= goals["writes_per_user_minute"]),
        ),
        (
            f"4. Sweep, {large['users']:,} users vs {small['users']:,} ({r['scale']['online']:,} online, "
            f"{r['scale']['stale']:,} stale)",
            f"<= {goals['sweep_ms_at_largest']} ms, ratio <= {goals['sweep_ratio']}",
            _ms(large["median_ms"]),
            _ms(small["median_ms"]),
            f"{sweep_ratio:.2f}",
            _met(large["median_ms"] <= goals["sweep_ms_at_largest"] and sweep_ratio <= goals["sweep_ratio"]),
        ),
        (
            f"5. Admin list, `?online_status=online`, 50 rows, {large['users']:,} users (gunicorn, wrk)",
            f"p50 <= {goals['admin_list_p50_ms']} ms",
            f"p50 {_ms(admin['wrk']['p50_ms'])}, p99 {_ms(admin['wrk']['p99_ms'])}, "
            f"{admin['queries']['online, 50 rows']['queries']} queries",
            f"10 rows: {admin['queries']['online, 10 rows']['queries']} queries; 200 rows: "
            f"{admin['queries']['online, 200 rows']['queries']} queries",
            "constant"
            if len({q["queries"] for label, q in admin["queries"].items() if label.startswith("online")}) == 1
            else "varies",
            _met(admin["wrk"]["p50_ms"] <= goals["admin_list_p50_ms"]),
        ),
        (
            f"6. Bytes per admin poll, {payload['users']:,} users, 1% churn: change feed vs full list",
            f"<= {goals['feed_vs_full']:.0%}",
            f"{payload['feed_bytes']:,} B ({payload['feed_results']} users)",
            f"{payload['full_list_bytes']:,} B",
            f"{payload['ratio']:.2%}",
            _met(payload["ratio"] <= goals["feed_vs_full"]),
        ),
        (
            f"7. Capacity: clients held {r['scale']['capacity_sustain_seconds']} s with p99 < 100 ms, 0 errors",
            f">= {goals['capacity_clients']:,}",
            f"{sustained['clients']:,} clients held: {sustained['rps']:.0f} req/s, p50 {_ms(sustained['p50_ms'])}, "
            f"p99 {_ms(sustained['p99_ms'])}, {sustained['errors']} errors"
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
                f"p50 {_ms(history['timeline_p50_ms'])} ({history['timeline_points']:,} points; "
                f"{history['intervals']:,} intervals); one user's week: p50 {_ms(history['user_week_p50_ms'])}",
                f"no intervals yet: p50 {_ms(history['baseline_p50_ms'])}",
                f"{history['ratio']:.2f}",
                _met(history["timeline_p50_ms"] < goals["timeline_7d_p50_ms"]),
            )
        )
    lines = [
        "# OffChat presence benchmark",
        "",
        f"Generated by `bench/run{' --quick' if r['mode'] == 'quick' else ''}` on "
        f"{r.get('finished_at') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({r['mode']} scale). "
        "Every figure is next to its baseline from the same run.",
        "",
        "| row | goal | ours | baseline | ratio | met |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
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
        *(
            f"- {sweep['users']:,} users: seeded in {sweep['seed_seconds']:.1f} s (COPY); sweep median "
            f"{_ms(sweep['median_ms'])}, trials {', '.join(f'{ms:.0f}' for ms in sweep['trials_ms'])} ms; "
            f"sequential scan on users: {any(plan['seq_scan_on_users'] for plan in sweep['plans'])}"
            for sweep in sweeps
        ),
        "",
        f"Query plans at {large['users']:,} users (`EXPLAIN (ANALYZE, BUFFERS)`):",
        "",
        *(f"```\n{plan['sql']}\n{plan['plan']}\n```" for plan in large["plans"]),
        "",
        "### Admin list, queries per request (in process)",
        "",
        *(f"- {label}: {q['queries']} queries, {_ms(q['in_process_ms'])}" for label, q in admin["queries"].items()),
        f"- deepest page ({admin['deepest_page']:,}, offset paging): {_ms(admin['deepest_page_ms'])}; "
        f"the same depth with `?paging=keyset`: {_ms(admin['keyset_deepest_page_ms'])}"
        if "keyset_deepest_page_ms" in admin
        else f"- deepest page ({admin['deepest_page']:,}, offset paging): {_ms(admin['deepest_page_ms'])}",
        "",
        "### Writes per user-minute",
        "",
        *(f"- {name}: {json_line}" for name, json_line in writes.items()),
        "",
        "### Capacity probes",
        "",
        *(f"- {probe}" for probe in capacity["probes"]),
        *(f"- sustained: {attempt}" for attempt in capacity.get("sustained_attempts", [])),
        "",
    ]
    if ANALYSIS.exists() and r["mode"] == "full":
        lines += [ANALYSIS.read_text()]
    return "\n".join(lines)


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
