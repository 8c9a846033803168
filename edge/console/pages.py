"""Server-rendered HTML for the console's pages: plain functions from snapshots to text.

Every value that came from the plant, the config or a user is escaped (``html.escape``); the pages hold
no inline script or style (the Content-Security-Policy allows only ``/static/``), and every form that
changes something carries the session's CSRF token.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

import numpy as np

from edge.console.tap import NEVER, SignalIndex, Sparklines

__all__ = ["alarms_page", "config_page", "layout", "login_page", "overview_fragment", "signal_rows"]

_QUALITY = {0: "good", 1: "uncertain", 2: "bad", NEVER: "none"}
_NAV = (("/", "Overview"), ("/signals", "Signals"), ("/alarms", "Alarms"), ("/config", "Configuration"))


def e(x: Any) -> str:
    return escape(str(x), quote=True)


def layout(title: str, body: str, *, user: str | None, role: str | None, csrf: str, active: str,
           gateway: str, page: str) -> str:
    nav = "".join(f'<a href="{h}"{" class=active" if h == active else ""}>{e(t)}</a>' for h, t in _NAV)
    who = ""
    if user is not None:
        who = (f'<span class="who">{e(user)} ({e(role)})</span><form method="post" action="/logout" class="inline">'
               f'<input type="hidden" name="csrf" value="{e(csrf)}"><button>Log out</button></form>')
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · {e(gateway)}</title>"
        '<link rel="stylesheet" href="/static/style.css"><script src="/static/app.js" defer></script></head>'
        f'<body data-page="{e(page)}" data-csrf="{e(csrf)}"><header><b>plantwire</b> <span class="gw">{e(gateway)}'
        f"</span><nav>{nav}</nav>{who}</header><main id=main>{body}</main></body></html>"
    )


def login_page(error: str = "") -> str:
    err = f'<p class="error" id="login-error">{e(error)}</p>' if error else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>plantwire console: log in</title>"
        '<link rel="stylesheet" href="/static/style.css"></head><body><main class="login"><h1>plantwire console</h1>'
        f'{err}<form method="post" action="/login"><label>User <input name="user" id="user" autocomplete="username">'
        '</label><label>Password <input name="password" id="password" type="password" autocomplete="current-password">'
        '</label><button id="login">Log in</button></form></main></body></html>'
    )


def _age(s: float | None) -> str:
    if s is None or s < 0:
        return "never"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _n(x: float | None) -> str:
    return "–" if x is None else f"{int(x):,}"


def overview_fragment(ov: dict[str, Any], rates: dict[str, float]) -> str:
    cond = ov.get("condition") or "unknown"
    deg = "".join(f"<li>{e(r)}</li>" for r in ov.get("degraded", []))
    rows = []
    for name in sorted(ov["sources"]):
        s = ov["sources"][name]
        up = s.get("connected", 0.0) >= 1.0
        why = ov.get("sources_degraded", {}).get(name, [])
        state = "connected" if up else "down"
        if up and why:
            state = "degraded"
        rate = rates.get(name)
        rows.append(
            f'<tr data-source="{e(name)}"><td>{e(name)}</td><td class="state {state}">{state}'
            f'{(": " + e(", ".join(why))) if why else ""}</td>'
            f'<td class="num rate">{"–" if rate is None else f"{rate:,.1f}"}</td>'
            f'<td class="num good">{_n(s.get("good"))}</td><td class="num bad">{_n(s.get("bad"))}</td>'
            f'<td class="num errors">{_n(s.get("errors"))}</td><td class="num">{_n(s.get("signals_bad"))}</td>'
            f'<td class="num">{_age(s.get("last_good_poll_age_s", s.get("last_sample_age_s")))}</td></tr>')
    models = ov.get("models")
    if models is None:
        models_html = '<p class="hook" id="models">Model store not on this gateway (edge/modelstore hook).</p>'
    elif not models:
        models_html = '<p id="models">No models loaded.</p>'
    else:
        models_html = ('<table id="models"><tr><th>model</th><th>active</th><th>shadow</th><th>previous</th></tr>'
                       + "".join(f"<tr><td>{e(k)}</td><td>{e(v.get('active'))}</td><td>{e(v.get('shadow'))}</td>"
                                 f"<td>{e(v.get('previous'))}</td></tr>" for k, v in sorted(models.items()))
                       + "</table>")
    agents = ov.get("agents")
    if agents is None:
        agents_html = '<p class="hook" id="agents">Agents not on this gateway (edge/agents hook).</p>'
    elif not agents:
        agents_html = '<p id="agents">No agents configured.</p>'
    else:
        agents_html = ('<table id="agents"><tr><th>agent</th><th>state</th><th>detail</th></tr>'
                       + "".join(f"<tr><td>{e(a.get('name'))}</td><td>{e(a.get('state'))}</td>"
                                 f"<td>{e(a.get('detail', ''))}</td></tr>" for a in agents) + "</table>")
    pipe = [
        ("Samples read", _n(ov.get("samples_read")), "samples-read"),
        ("Acknowledged by the broker", _n(ov.get("samples_acked")), "samples-acked"),
        ("Write-ahead log", f"{_n(ov.get('wal_records'))} records, {_n(ov.get('wal_bytes'))} bytes", "wal"),
        ("Oldest unacknowledged", _age(ov.get("oldest_unacked_age_s")), "wal-age"),
        ("Cloud's last acknowledgement", _age(ov.get("last_cloud_ack_age_s")) + " ago"
         if (ov.get("last_cloud_ack_age_s") or -1) >= 0 else "never", "cloud-ack"),
        ("Dropped samples", _n(ov.get("dropped_samples")), "dropped"),
        ("Dropped alarm events", _n(ov.get("events_dropped")), "events-dropped"),
        ("MQTT", "connected" if ov.get("mqtt_connected") else "disconnected", "mqtt"),
        ("Open alarms", f'<a href="/alarms">{_n(ov.get("open_alarms"))}</a>', "open-alarms"),
    ]
    pipe_html = "".join(f'<tr><th>{e(k)}</th><td id="{i}">{v}</td></tr>' for k, v, i in pipe)
    return (
        f'<h1>Overview <span class="cond {e(cond)}" id="condition">{e(cond)}</span></h1>'
        f'{"<ul class=degraded>" + deg + "</ul>" if deg else ""}'
        f'<p>{ov["signals"]:,} signals on {len(ov["sources"])} sources, site {e(ov.get("site"))}.</p>'
        '<section><h2>Sources</h2><table id="sources"><tr><th>source</th><th>state</th><th>samples/s</th>'
        "<th>good</th><th>bad</th><th>errors</th><th>signals bad</th><th>last good poll</th></tr>"
        + "".join(rows) + "</table></section>"
        f'<section><h2>Forwarding</h2><table id="pipeline">{pipe_html}</table></section>'
        f"<section><h2>Models</h2>{models_html}</section><section><h2>Agents</h2>{agents_html}</section>"
        f'<p class="stamp">as of {time.strftime("%H:%M:%S")}</p>'
    )


def _spark_svg(values: np.ndarray) -> str:
    """An inline SVG polyline; ``data-spark`` carries the points so the page's script can extend it."""
    v = values[np.isfinite(values)]
    data = ",".join("" if not np.isfinite(x) else f"{x:.6g}" for x in values.tolist())
    if v.size < 2:
        return f'<svg class="spark" viewBox="0 0 120 24" data-spark="{data}"><polyline points=""/></svg>'
    lo, hi = float(v.min()), float(v.max())
    span = (hi - lo) or 1.0
    n = values.shape[0]
    pts = " ".join(f"{120 * i / max(n - 1, 1):.1f},{22 - 20 * (float(x) - lo) / span:.1f}"
                   for i, x in enumerate(values.tolist()) if np.isfinite(x))
    return f'<svg class="spark" viewBox="0 0 120 24" data-spark="{data}"><polyline points="{pts}"/></svg>'


def _value(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.6g}"


def signal_rows(index: SignalIndex, rows: np.ndarray, value: np.ndarray, quality: np.ndarray,
                score: np.ndarray, spark: Sparklines, total: int, query: str,
                elapsed_ms: float) -> str:
    body = []
    for k, r in enumerate(rows.tolist()):
        q = _QUALITY.get(int(quality[k]), "?")
        sc = float(score[k])
        body.append(
            f'<tr data-row="{r}"><td class="sid">{e(index.ids[r])}</td><td>{e(index.machine_of[r])}</td>'
            f"<td>{e(index.device_of[r])}</td><td class=\"num value\">{_value(float(value[k]))}</td>"
            f"<td>{e(index.units[r])}</td><td class=\"quality q-{q}\">{q}</td>"
            f'<td class="num score{" hot" if sc >= 0.9 else ""}">{"–" if not np.isfinite(sc) else f"{sc:.3f}"}</td>'
            f"<td>{_spark_svg(spark.values[k]) if spark.values.shape[1] else _spark_svg(np.zeros(0))}</td></tr>")
    shown = len(body)
    return (
        f'<p id="result-count" data-total="{total}">{total:,} of {len(index):,} signals match'
        f'{(" " + chr(8220) + e(query) + chr(8221)) if query else ""}; showing {shown} '
        f'<span class="muted">({elapsed_ms:.1f} ms)</span></p>'
        '<table id="signals"><tr><th>signal</th><th>machine</th><th>device</th><th>value</th><th>unit</th>'
        "<th>quality</th><th>anomaly</th><th>last minutes</th></tr>" + "".join(body) + "</table>"
    )


def signals_page(query: str, table_html: str) -> str:
    return (
        '<h1>Signals</h1><form method="get" action="/signals" id="search-form" role="search">'
        f'<input name="q" id="q" value="{e(query)}" placeholder="name, machine, device; quality:bad, machine:press01"'
        ' autocomplete="off" autofocus> <button>Search</button></form>'
        f'<div id="results">{table_html}</div>'
    )


def _ts(ns: int | None) -> str:
    return "–" if not ns else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def alarms_page(open_alarms: list[dict[str, Any]], closed: list[dict[str, Any]], *, can_act: bool, csrf: str,
                source_note: str, message: str = "") -> str:
    now = time.time_ns()

    def row(a: dict[str, Any], with_actions: bool) -> str:
        shelved = a.get("shelved_until_ns")
        state = [("active" if a.get("active") else "cleared"), ("acknowledged" if a.get("acked") else "unacknowledged")]
        if shelved and shelved > now:
            state.append(f"shelved until {time.strftime('%H:%M:%S', time.localtime(shelved / 1e9))}")
        sigs = ", ".join(f'<a href="/signals?q={e(s)}">{e(s)}</a>' for s in (a.get("signals") or []))
        acts = ""
        if with_actions and can_act:
            aid = e(a.get("id"))
            hidden = f'<input type=hidden name=csrf value="{e(csrf)}"><input type=hidden name=target value="{aid}">'
            if not a.get("acked"):
                acts += (f'<form method=post action="/alarms/action" class=inline>{hidden}'
                         '<input type=hidden name=action value=ack><button class="ack">Acknowledge</button></form>')
            if shelved and shelved > now:
                acts += (f'<form method=post action="/alarms/action" class=inline>{hidden}'
                         '<input type=hidden name=action value=unshelve><button>Unshelve</button></form>')
            else:
                acts += (f'<form method=post action="/alarms/action" class=inline>{hidden}'
                         '<input type=hidden name=action value=shelve><select name=shelve_s><option value=900>15 min'
                         '</option><option value=3600>1 h</option><option value=28800>8 h</option></select>'
                         '<input name=reason placeholder="reason" size=12>'
                         '<button class="shelve">Shelve</button></form>')
        return (f'<tr data-alarm="{e(a.get("id"))}" class="prio-{e(a.get("priority"))}"><td>{_ts(a.get("start_ns"))}'
                f'</td><td>{e(a.get("priority"))}</td><td>{e(a.get("machine"))}</td>'
                f'<td>{e(", ".join(str(k) for k in a.get("kinds") or []))}</td><td>{sigs}</td>'
                f'<td class=num>{e(a.get("peak"))}</td><td class="alarm-state">{e("; ".join(state))}</td>'
                f"<td>{acts}</td></tr>")

    head = ("<tr><th>since</th><th>priority</th><th>machine</th><th>kind</th><th>contributing signals</th>"
            "<th>peak</th><th>state</th><th></th></tr>")
    msg = f'<p class="message" id="action-result">{e(message)}</p>' if message else ""
    return (
        f'<h1>Alarms</h1>{msg}<p class="muted">{e(source_note)}</p>'
        f'<h2>Open ({len(open_alarms)})</h2><table id="open-alarms">{head}'
        + "".join(row(a, True) for a in open_alarms) + "</table>"
        + f'<h2>Recently cleared</h2><table id="closed-alarms">{head}'
        + "".join(row(a, False) for a in closed) + "</table>"
    )


def config_page(running: dict[str, Any], csrf: str, result: str = "", ok: bool | None = None) -> str:
    res = ""
    if result:
        cls = "ok" if ok else "error"
        res = (f'<h2>Check result: {"valid" if ok else "invalid"}</h2><pre id="check-result" class="{cls}">'
               f"{e(result)}</pre><p class=muted>Nothing was applied.</p>")
    return (
        "<h1>Configuration</h1>"
        '<h2>Validate a config without applying it</h2><form method="post" action="/config/check" '
        'enctype="multipart/form-data" id="check-form">'
        f'<input type=hidden name=csrf value="{e(csrf)}"><input type=file name=file id=file accept=".yaml,.yml,.json">'
        ' <select name=kind id=kind><option value="">kind from the file</option><option>edge</option>'
        "<option>plant</option><option>ingestor</option></select> <button id=check>Check</button></form>"
        f"{res}<h2>Running configuration</h2><p class=muted>Secrets are never in the config; anything that looks"
        f' like one is shown as •••.</p><pre id="running-config">{e(json.dumps(running, indent=2))}</pre>'
    )
