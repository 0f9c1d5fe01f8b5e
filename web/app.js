/* The trainer's dashboard: polls the admin API every 2 s (/v1/status, /v1/versions, /v1/replicas,
 * /v1/timeseries incrementally with since_ms), draws the charts with uPlot, lists versions, the
 * ranks of a job of several (each one's ingest, lag and buffer) and replicas, and rolls back with
 * the admin token (kept in memory, or in session storage when the user asks). Only same-origin
 * requests; data reaches the DOM through textContent, never as HTML. Each chart's figure carries
 * data-points (non-null points of its first series) and data-counts (per series) so that tests
 * and people can see that it has data. */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var MAX_POINTS = 3600; /* the trainer keeps one hour at one point a second */
  var TOKEN_KEY = "eddy.admin-token";

  var $ = function (id) { return document.getElementById(id); };

  /* ---- formatting ---- */

  function fmt(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "\u2014";
    if (typeof v !== "number") return String(v);
    if (digits === undefined) return Math.abs(v) >= 1e4 ? Math.round(v).toLocaleString("en") : String(+v.toPrecision(4));
    return v.toFixed(digits);
  }

  function fmtInt(v) {
    return v === null || v === undefined ? "\u2014" : Math.round(v).toLocaleString("en");
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "\u2014";
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return Math.round(seconds / 86400) + " d";
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function show(id, text) {
    var e = $(id);
    e.textContent = text;
    e.hidden = false;
  }

  function hide(id) {
    var e = $(id);
    e.hidden = true;
    e.textContent = "";
  }

  /* ---- charts ---- */

  var COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700"];

  function lastValue(arr) {
    for (var i = (arr ? arr.length : 0) - 1; i >= 0; i--) if (arr[i] !== null && arr[i] !== undefined) return arr[i];
    return null;
  }

  /* Legend values: at the cursor, or the latest value while the cursor is elsewhere. */
  function valueFmt(digits) {
    return function (u, v, sidx, idx) { return fmt(idx === null || idx === undefined ? lastValue(u.data[sidx]) : v, digits); };
  }

  /* Axis labels for counts and versions: integers only. */
  function integerTicks(prefix) {
    return function (u, splits) {
      return splits.map(function (v) { return Number.isInteger(v) ? prefix + v : ""; });
    };
  }

  /* id, series (keys of the timeseries "series" object) with their labels, axes and scales. */
  var CHARTS = [
    {id: "chart-quality", series: [
      {key: "logloss", label: "log loss", scale: "y", digits: 4},
      {key: "accuracy", label: "accuracy", scale: "acc", digits: 4},
      {key: "mse", label: "mse", scale: "y", digits: 4}],
     scales: {acc: {auto: false, range: [0, 1]}}, right: "acc"},
    {id: "chart-ingest", series: [{key: "ingest_rate", label: "events/s", scale: "y", digits: 1}]},
    {id: "chart-lag", series: [{key: "consumer_lag", label: "lag (events)", scale: "y", digits: 0}]},
    {id: "chart-buffer", series: [
      {key: "buffer_fill", label: "fill", scale: "fill", digits: 4},
      {key: "buffer_events", label: "events", scale: "ev", digits: 0}],
     scales: {fill: {auto: false, range: [0, 1]}}, left: "fill", right: "ev"},
    {id: "chart-scale", series: [
      {key: "loss_scale", label: "loss scale", scale: "y", digits: 0},
      {key: "skipped_steps", label: "skipped steps (total)", scale: "sk", digits: 0, stepped: true}],
     right: "sk", rightTicks: ""},
    {id: "chart-freshness", series: [
      {key: "freshness", label: "freshness (s)", scale: "y", digits: 2},
      {key: "version", label: "CURRENT", scale: "ver", digits: 0, stepped: true}],
     right: "ver", rightTicks: "v"}
  ];

  var data = {t: [], series: {}}; /* the points received so far, oldest first */
  var markers = [];               /* {t, kind, version, text}, oldest first */
  var MARKER_COLORS = {drift: "#d92d20", promote: "#079455", reject: "#dc6803", rollback: "#1570ef"};

  /* Draws the markers as vertical lines over a chart (uPlot "draw" hook). */
  function drawMarkers(u) {
    var ctx = u.ctx;
    ctx.save();
    ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
    markers.forEach(function (m) {
      var x = u.valToPos(m.t / 1000, "x", true);
      if (!(x >= u.bbox.left && x <= u.bbox.left + u.bbox.width)) return;
      ctx.strokeStyle = MARKER_COLORS[m.kind] || "#667085";
      ctx.setLineDash(m.kind === "drift" ? [] : [4, 3]);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
    });
    ctx.restore();
  }
  var lastT = -1;                 /* since_ms of the next /v1/timeseries request */
  var plots = [];

  function chartWidth(fig) {
    return Math.max(300, fig.clientWidth - 22);
  }

  function makeChart(spec) {
    var fig = $(spec.id);
    var series = [{label: "time", value: function (u, v, sidx, idx) {
      var t = idx === null || idx === undefined ? lastValue(u.data[0]) : v;
      return t === null ? "\u2014" : new Date(t * 1000).toLocaleTimeString("en-GB");
    }}];
    spec.series.forEach(function (s, i) {
      var opt = {label: s.label, scale: s.scale, stroke: COLORS[i % COLORS.length], width: 1.5,
                 value: valueFmt(s.digits), spanGaps: false};
      if (s.stepped && uPlot.paths && uPlot.paths.stepped) opt.paths = uPlot.paths.stepped({align: 1});
      series.push(opt);
    });
    var left = spec.left || "y";
    var axes = [{}, {scale: left}];
    if (spec.right) {
      var axis = {scale: spec.right, side: 1, grid: {show: false}};
      if (spec.rightTicks !== undefined) axis.values = integerTicks(spec.rightTicks);
      axes.push(axis);
    }
    var scales = {x: {time: true}};
    Object.keys(spec.scales || {}).forEach(function (k) { scales[k] = spec.scales[k]; });
    var opts = {width: chartWidth(fig), height: 200, series: series, axes: axes, scales: scales,
                legend: {live: true}, cursor: {drag: {x: true, y: false}}, hooks: {draw: [drawMarkers]}};
    var plot = new uPlot(opts, chartData(spec), fig.querySelector(".plot"));
    return {spec: spec, fig: fig, plot: plot, autoHidden: {}};
  }

  function chartData(spec) {
    var xs = data.t.map(function (ms) { return ms / 1000; });
    var out = [xs];
    spec.series.forEach(function (s) {
      out.push(data.series[s.key] || xs.map(function () { return null; }));
    });
    return out;
  }

  function nonNull(arr) {
    var n = 0;
    for (var i = 0; i < (arr ? arr.length : 0); i++) if (arr[i] !== null && arr[i] !== undefined) n++;
    return n;
  }

  function redrawCharts() {
    plots.forEach(function (c) {
      c.plot.setData(chartData(c.spec));
      var counts = {};
      c.spec.series.forEach(function (s, i) {
        counts[s.key] = nonNull(data.series[s.key]);
        /* A series without any value (mse for a classifier) is switched off until it has one;
         * what the user switches in the legend is left alone. */
        var empty = counts[s.key] === 0 && i > 0;
        if (empty && !c.autoHidden[s.key]) {
          c.autoHidden[s.key] = true;
          c.plot.setSeries(i + 1, {show: false});
        } else if (!empty && c.autoHidden[s.key]) {
          c.autoHidden[s.key] = false;
          c.plot.setSeries(i + 1, {show: true});
        }
      });
      /* Without the cursor on the chart the legend shows the latest values. */
      if (!(c.plot.cursor.left >= 0)) c.plot.setLegend({idx: null});
      c.fig.setAttribute("data-points", String(counts[c.spec.series[0].key]));
      c.fig.setAttribute("data-markers", String(markers.length));
      c.fig.setAttribute("data-counts", JSON.stringify(counts));
    });
  }

  var markersKey = "";

  function appendMarkers(ts) {
    var last = markers.length ? markers[markers.length - 1].t : -1;
    ((ts && ts.markers) || []).forEach(function (m) { if (m.t > last) markers.push(m); });
    if (markers.length > 256) markers.splice(0, markers.length - 256);
    var key = markers.length ? markers.length + ":" + markers[markers.length - 1].t : "";
    if (key === markersKey) return;
    markersKey = key;
    var ul = $("markers");
    ul.textContent = "";
    markers.slice(-20).reverse().forEach(function (m) {
      var li = el("li", "", "marker " + m.kind);
      li.setAttribute("data-kind", m.kind);
      li.appendChild(el("span", new Date(m.t).toLocaleTimeString("en-GB"), "muted"));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", m.kind + (m.version ? " v" + m.version : ""), "tag " + m.kind));
      li.appendChild(document.createTextNode(" " + m.text));
      ul.appendChild(li);
    });
  }

  function appendPoints(ts) {
    appendMarkers(ts);
    if (!ts || !ts.t || !ts.t.length) return false;
    /* A restarted trainer starts a new ring: its first point is later than ours, so appending
     * stays in time order; anything not newer is ignored. */
    var start = 0;
    while (start < ts.t.length && ts.t[start] <= lastT) start++;
    if (start === ts.t.length) return false;
    var n = ts.t.length - start;
    var keys = Object.keys(ts.series || {});
    keys.forEach(function (k) {
      if (!data.series[k]) data.series[k] = data.t.map(function () { return null; });
    });
    Object.keys(data.series).forEach(function (k) {
      var src = ts.series[k];
      for (var i = start; i < ts.t.length; i++) data.series[k].push(src ? src[i] : null);
    });
    for (var i = start; i < ts.t.length; i++) data.t.push(ts.t[i]);
    lastT = data.t[data.t.length - 1];
    var extra = data.t.length - MAX_POINTS;
    if (extra > 0) {
      data.t.splice(0, extra);
      Object.keys(data.series).forEach(function (k) { data.series[k].splice(0, extra); });
    }
    return n > 0;
  }

  /* ---- status header ---- */

  function renderStatus(s) {
    $("model").textContent = s.model || "";
    var st = $("state");
    st.textContent = s.state || "\u2014";
    st.className = "state-" + (s.state || "unknown");
    if (s.state === "degraded" && s.degraded_reason) st.title = s.degraded_reason;
    $("current").textContent = s.current_version ? "v" + s.current_version : "none yet";
    $("step").textContent = fmtInt(s.step);
    $("examples").textContent = fmtInt(s.examples);
    var b = s.buffer || {};
    $("buffer").textContent = fmtInt(b.events) + " events, " + fmtInt(b.untrained) + " untrained";
    $("backend").textContent = (s.backend || "") + " " + (s.precision || "");
    $("uptime").textContent = fmtAge(s.uptime_seconds);
    document.title = "eddy " + (s.model || "") + " \u2014 v" + (s.current_version || "?");
    var h = s.holdout || {};
    $("holdout").textContent = fmtInt(h.events) + " events" +
      (h.oldest_age_seconds === null || h.oldest_age_seconds === undefined ? "" : ", oldest " + fmtAge(h.oldest_age_seconds));
    var d = s.drift || {};
    var dd = $("drift");
    dd.textContent = fmtInt(d.detected) + " detected" + (d.last_seq !== null && d.last_seq !== undefined ? ", last at seq " + d.last_seq : "") +
      (d.rising ? " (loss rising)" : "");
    dd.className = d.rising ? "state-paused" : "";
    var g = s.gate || {};
    var gd = $("gate");
    gd.textContent = g.rejected_in_a_row ? g.rejected_in_a_row + " rejected in a row" : "ok";
    gd.className = g.ahead_of_current ? "state-degraded" : "";
    gd.title = g.note || "";
    renderClasses((s.prequential || {}).per_class || []);
  }

  function renderClasses(list) {
    var body = $("classes").tBodies[0];
    body.textContent = "";
    list.forEach(function (c) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-class", String(c["class"]));
      tr.appendChild(el("td", String(c["class"])));
      tr.appendChild(el("td", fmt(c.accuracy, 4)));
      tr.appendChild(el("td", fmtInt(c.n)));
      body.appendChild(tr);
    });
  }

  /* A version's gate verdict in a few words: the failed criteria, or the comparison with CURRENT. */
  function gateSummary(e) {
    var crit = (e.gate && e.gate.criteria) || [];
    var failed = crit.filter(function (c) { return c.result === "failed"; }).map(function (c) { return c.name; });
    if (failed.length) return "failed " + failed.join(", ");
    var vc = crit.filter(function (c) { return c.name === "vs_current" && c.result === "passed"; })[0];
    if (vc && vc.reference) return "vs CURRENT " + (vc.candidate >= vc.reference ? "+" : "") +
      fmt(100 * (vc.candidate - vc.reference) / vc.reference, 1) + "%";
    return crit.length ? "passed" : "\u2014";
  }

  /* ---- versions ---- */

  var versionsKey = "";

  function metric(m, kind, name) {
    return m && m[kind] ? m[kind][name] : null;
  }

  function renderVersions(v) {
    var list = (v && v.versions) || [];
    /* Rebuild only when something other than the ages changed, so a click is never lost to a
     * row being replaced under the pointer. */
    var key = JSON.stringify(list.map(function (e) {
      return [e.version, e.status, e.current, e.parent, e.metrics, e.gate];
    }));
    var body = $("versions").tBodies[0];
    if (key !== versionsKey) {
      versionsKey = key;
      body.textContent = "";
      list.forEach(function (e) {
        var tr = document.createElement("tr");
        tr.setAttribute("data-version", String(e.version));
        if (e.current) tr.className = "current";
        else if (e.status === "rejected") tr.className = "rejected";
        var vcell = el("td", "v" + e.version + " ");
        if (e.current) vcell.appendChild(el("span", "current", "tag current"));
        tr.appendChild(vcell);
        var status = el("td", e.status === null ? "unreadable" : e.status);
        if (e.reason) status.title = e.reason;
        if (e.error) status.title = e.error;
        tr.appendChild(status);
        tr.appendChild(el("td", fmt(metric(e.metrics, "holdout", "logloss"), 4)));
        tr.appendChild(el("td", fmt(metric(e.metrics, "holdout", "accuracy"), 4)));
        tr.appendChild(el("td", fmt(metric(e.metrics, "prequential", "logloss"), 4)));
        tr.appendChild(el("td", fmt(metric(e.metrics, "prequential", "accuracy"), 4)));
        var gcell = el("td", gateSummary(e), "gate");
        if (e.reason) gcell.title = e.reason;
        tr.appendChild(gcell);
        tr.appendChild(el("td", e.parent ? "v" + e.parent : "\u2014"));
        var age = el("td", "", "age");
        age.setAttribute("data-created", String(e.created_at_ms || ""));
        if (e.created_at) age.title = e.created_at;
        tr.appendChild(age);
        var action = el("td");
        if (e.status === "promoted" && !e.current) {
          var btn = el("button", "Rollback");
          btn.type = "button";
          btn.setAttribute("data-rollback", String(e.version));
          btn.addEventListener("click", function () { openRollback(e.version); });
          action.appendChild(btn);
        }
        tr.appendChild(action);
        body.appendChild(tr);
      });
    }
    var now = Date.now();
    Array.prototype.forEach.call(body.querySelectorAll("td.age"), function (td) {
      var c = Number(td.getAttribute("data-created"));
      td.textContent = c ? fmtAge((now - c) / 1000) : "\u2014";
    });
  }

  /* ---- ranks (a job of several data-parallel ranks: rank 0 serves this page) ---- */

  function renderRanks(s) {
    var list = (s && s.ranks) || [];
    $("ranks-section").hidden = list.length === 0;
    var body = $("ranks").tBodies[0];
    body.textContent = "";
    list.forEach(function (e) {
      var ing = e.ingest || {}, b = e.buffer || {};
      var tr = document.createElement("tr");
      tr.setAttribute("data-rank", String(e.rank));
      tr.appendChild(el("td", String(e.rank)));
      tr.appendChild(el("td", ing.enabled === false ? "no ingest" : fmtInt(ing.assigned)));
      tr.appendChild(el("td", fmtInt(ing.ok)));
      tr.appendChild(el("td", fmtInt(ing.invalid)));
      tr.appendChild(el("td", ing.lag === null || ing.lag === undefined ? "\u2014" : fmtInt(ing.lag)));
      tr.appendChild(el("td", fmtInt(b.events) + " events"));
      tr.appendChild(el("td", fmtInt(b.untrained)));
      tr.appendChild(el("td", fmtInt(e.examples)));
      body.appendChild(tr);
    });
  }

  /* ---- replicas ---- */

  function renderReplicas(r) {
    var list = (r && r.replicas) || [];
    var body = $("replicas").tBodies[0];
    body.textContent = "";
    $("replicas-empty").hidden = list.length > 0;
    list.forEach(function (e) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-replica", e.id);
      tr.setAttribute("data-version", e.version === null ? "" : String(e.version));
      tr.setAttribute("data-stale", e.stale ? "true" : "false");
      if (e.stale) tr.className = "stale";
      tr.appendChild(el("td", e.id));
      tr.appendChild(el("td", e.url));
      tr.appendChild(el("td", e.version === null ? "none" : "v" + e.version));
      var st = el("td");
      st.appendChild(el("span", e.state, "tag " + e.state));
      if (e.stale) {
        st.appendChild(document.createTextNode(" "));
        st.appendChild(el("span", "stale", "tag stale"));
      }
      tr.appendChild(st);
      /* The precision requests without a choice run at, and why (auto, serve.precision, load). */
      tr.setAttribute("data-precision", e.precision || "");
      var pr = el("td", e.precision || "\u2014");
      if (e.precision_why) {
        pr.title = e.precision_why; /* the whole sentence on hover */
        var why = /^load/.test(e.precision_why) ? "load" : /^auto/.test(e.precision_why) ? "auto" : "config";
        pr.appendChild(document.createTextNode(" "));
        pr.appendChild(el("span", why, "tag precision-" + why));
      }
      tr.appendChild(pr);
      tr.appendChild(el("td", fmtInt(e.predictions)));
      tr.appendChild(el("td", e.freshness_seconds === null ? "\u2014" : fmt(e.freshness_seconds, 2) + " s"));
      tr.appendChild(el("td", fmtAge(e.age_seconds) + " ago"));
      body.appendChild(tr);
    });
  }

  /* ---- rollback ---- */

  var memToken = "";
  var rollbackTarget = 0;

  function storedToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function rememberToken(token, persist) {
    memToken = token;
    try {
      if (persist && token) window.sessionStorage.setItem(TOKEN_KEY, token);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: memory only */ }
  }

  function openRollback(version) {
    rollbackTarget = version;
    $("rollback-version").textContent = "v" + version;
    var saved = storedToken();
    $("rollback-token").value = memToken || saved;
    $("rollback-remember").checked = saved !== "";
    $("rollback-dialog").showModal();
    $("rollback-token").focus();
  }

  function errorMessage(status, text) {
    try {
      var j = JSON.parse(text);
      if (j && typeof j.error === "string") return j.error;
    } catch (e) { /* not JSON */ }
    return text ? text.slice(0, 300) : "no message";
  }

  function doRollback(version, token, persist) {
    hide("error");
    hide("notice");
    var status = 0;
    fetch("/v1/rollback", {
      method: "POST",
      cache: "no-store",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token},
      body: JSON.stringify({version: version})
    }).then(function (resp) {
      status = resp.status;
      return resp.text();
    }).then(function (text) {
      if (status === 200) {
        rememberToken(token, persist);
        show("notice", "Rolled back: CURRENT is v" + version + "; replicas follow the announcement.");
      } else {
        if (status === 401 || status === 403) rememberToken("", false);
        show("error", "Rollback to v" + version + " failed (HTTP " + status + "): " + errorMessage(status, text));
      }
      poll();
    }).catch(function (err) {
      show("error", "Rollback to v" + version + " failed: the trainer could not be reached (" + err + ")");
    });
  }

  $("rollback-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var token = $("rollback-token").value.trim();
    var persist = $("rollback-remember").checked;
    $("rollback-dialog").close();
    if (token) doRollback(rollbackTarget, token, persist);
  });
  $("rollback-cancel").addEventListener("click", function () { $("rollback-dialog").close(); });

  /* ---- polling ---- */

  var timer = null;
  var inFlight = false;
  var downSince = null;

  function getJSON(path) {
    return fetch(path, {cache: "no-store"}).then(function (resp) {
      if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
      return resp.json();
    });
  }

  function poll() {
    if (timer) clearTimeout(timer);
    timer = null;
    if (inFlight) {
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    inFlight = true;
    Promise.all([
      getJSON("/v1/status"),
      getJSON("/v1/versions?limit=50"),
      getJSON("/v1/replicas"),
      getJSON("/v1/timeseries" + (lastT >= 0 ? "?since_ms=" + lastT : ""))
    ]).then(function (r) {
      renderStatus(r[0]);
      renderRanks(r[0]);
      renderVersions(r[1]);
      renderReplicas(r[2]);
      appendPoints(r[3]);
      redrawCharts();
      downSince = null;
      var conn = $("conn");
      conn.className = "conn";
      conn.textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    }).catch(function (err) {
      if (downSince === null) downSince = new Date();
      var conn = $("conn");
      conn.className = "conn down";
      conn.textContent = "trainer unreachable since " + downSince.toLocaleTimeString("en-GB") +
                         " (" + err.message + "); retrying every " + POLL_MS / 1000 + " s";
    }).then(function () {
      inFlight = false;
      document.body.setAttribute("data-polls", String(Number(document.body.getAttribute("data-polls") || 0) + 1));
      timer = setTimeout(poll, POLL_MS);
    });
  }

  function init() {
    plots = CHARTS.map(makeChart);
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () {
        plots.forEach(function (c) { c.plot.setSize({width: chartWidth(c.fig), height: 200}); });
      }, 150);
    });
    poll();
  }

  init();
})();
