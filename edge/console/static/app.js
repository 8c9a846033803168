// plantwire console: refreshes the overview, searches signals as you type and follows their live
// values over server-sent events (one stream per tab; the server sends latest values only).
"use strict";
(function () {
  const page = document.body.dataset.page;
  const SPARK_POINTS = 180;

  function refreshOverview() {
    if (document.hidden) return;
    fetch("/fragment/overview", {credentials: "same-origin"}).then(function (r) {
      if (r.status === 401) { location.href = "/login"; return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html) document.getElementById("main").innerHTML = html;
    }).catch(function () {});
  }

  function drawSpark(svg, values) {
    const finite = values.filter(function (v) { return v !== null && isFinite(v); });
    const line = svg.querySelector("polyline");
    if (finite.length < 2) { line.setAttribute("points", ""); return; }
    const lo = Math.min.apply(null, finite), hi = Math.max.apply(null, finite);
    const span = (hi - lo) || 1, n = values.length;
    const pts = [];
    values.forEach(function (v, i) {
      if (v !== null && isFinite(v)) pts.push((120 * i / Math.max(n - 1, 1)).toFixed(1) + "," + (22 - 20 * (v - lo) / span).toFixed(1));
    });
    line.setAttribute("points", pts.join(" "));
  }

  let stream = null;
  const sparks = new Map();
  const QUALITY = {0: "good", 1: "uncertain", 2: "bad", 255: "none"};

  function follow() {
    if (stream) { stream.close(); stream = null; }
    sparks.clear();
    const rows = [];
    document.querySelectorAll("#signals tr[data-row]").forEach(function (tr) {
      rows.push(tr.dataset.row);
      const svg = tr.querySelector("svg.spark");
      const data = (svg.dataset.spark || "").split(",").filter(function (x) { return x !== ""; }).map(Number);
      sparks.set(tr.dataset.row, {tr: tr, svg: svg, values: data});
    });
    if (!rows.length) return;
    stream = new EventSource("/api/stream?rows=" + rows.join(","));
    stream.onmessage = function (ev) {
      const m = JSON.parse(ev.data);
      m.rows.forEach(function (row, i) {
        const s = sparks.get(String(row));
        if (!s) return;
        const v = m.value[i], q = QUALITY[m.quality[i]] || "?", sc = m.score[i];
        s.tr.querySelector(".value").textContent = v === null ? "–" : Number(v.toPrecision(6)).toString();
        const qc = s.tr.querySelector(".quality");
        qc.textContent = q; qc.className = "quality q-" + q;
        const scc = s.tr.querySelector(".score");
        scc.textContent = sc === null ? "–" : sc.toFixed(3);
        scc.classList.toggle("hot", sc !== null && sc >= 0.9);
        s.values.push(v);
        if (s.values.length > SPARK_POINTS) s.values.shift();
        drawSpark(s.svg, s.values);
      });
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    };
  }

  function search(q) {
    fetch("/signals?fragment=1&q=" + encodeURIComponent(q), {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html === null) return;
      document.getElementById("results").innerHTML = html;
      history.replaceState(null, "", "/signals?q=" + encodeURIComponent(q));
      follow();
    }).catch(function () {});
  }

  let lastAlarms = null;
  function refreshAlarms() {
    // Not while the operator is filling in a shelve form (the refresh would throw the input away).
    // Nor while an action's result is shown (it stays until the operator moves on).
    const active = document.activeElement;
    if (document.hidden || document.getElementById("action-result") ||
        (active && active.closest && active.closest("#main form"))) return;
    fetch("/alarms?fragment=1", {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html && html !== lastAlarms) {
        if (lastAlarms !== null) document.getElementById("main").innerHTML = html;
        lastAlarms = html;
      }
    }).catch(function () {});
  }

  if (page === "overview") setInterval(refreshOverview, 2000);
  if (page === "alarms") setInterval(refreshAlarms, 5000);
  if (page === "signals") {
    const input = document.getElementById("q");
    let timer = null;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { search(input.value); }, 250);
    });
    document.getElementById("search-form").addEventListener("submit", function (ev) {
      ev.preventDefault(); search(input.value);
    });
    follow();
  }
})();
