// The scaler dashboard: plain JavaScript, no libraries, nothing loaded from elsewhere.
// Data: /api/config, /api/history, then /api/events (Server-Sent Events, one status per message).
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var state = {
    token: null, config: null, status: null, connected: false, problem: "connecting",
    points: [], historySeconds: 600, sortKey: "name", sortDescending: false,
    source: null, renders: 0, lastRenderMs: 0, pending: false
  };
  window.scalerDashboard = state; // for tests and for curious users

  function $(id) { return document.getElementById(id); }
  function setText(id, text) { var el = $(id); if (el && el.textContent !== String(text)) { el.textContent = text; } }
  function escapeHtml(value) {
    return String(value).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c];
    });
  }
  function bytes(value) {
    if (value === null || value === undefined) { return "-"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0, v = Number(value);
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "-"; }
    var s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    var m = Math.floor((s % 3600) / 60), r = s % 60;
    var text = (h < 10 ? "0" : "") + h + ":" + (m < 10 ? "0" : "") + m + ":" + (r < 10 ? "0" : "") + r;
    return d ? d + "d " + text : text;
  }
  function num(value, digits) { return Number(value || 0).toFixed(digits || 0); }
  function withToken(url) {
    return state.token ? url + (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(state.token) : url;
  }

  function getJson(url) {
    var headers = state.token ? { "Authorization": "Bearer " + state.token } : {};
    return fetch(url, { headers: headers, cache: "no-store" }).then(function (response) {
      if (response.status === 401) { var e = new Error("unauthorized"); e.unauthorized = true; throw e; }
      if (!response.ok) { throw new Error(url + ": HTTP " + response.status); }
      return response.json();
    });
  }

  // --- start-up and authentication ---
  function start() {
    getJson("/api/config").then(function (config) {
      state.config = config;
      state.historySeconds = config.history_seconds || 600;
      setText("monitor-address", config.monitor_address || "");
      setText("chart-window", "(last " + Math.round(state.historySeconds / 60) + " min)");
      try { state.token = window.sessionStorage.getItem("scalerToken"); } catch (e) { state.token = null; }
      if (config.auth_required && !state.token) { askToken(""); } else { open(); }
    }).catch(function (error) { showProblem("cannot reach the dashboard server: " + error.message); });
  }

  function askToken(message) {
    $("main").hidden = true;
    $("auth").hidden = false;
    setText("auth-error", message);
    $("token-input").focus();
  }

  $("auth-form").addEventListener("submit", function (event) {
    event.preventDefault();
    state.token = $("token-input").value;
    try { window.sessionStorage.setItem("scalerToken", state.token); } catch (e) { /* private mode */ }
    open();
  });

  function open() {
    getJson("/api/history").then(function (history) {
      $("auth").hidden = true;
      $("main").hidden = false;
      state.points = history.points || [];
      return getJson("/api/status");
    }).then(function (document) {
      accept(document, false);
      connectStream();
    }).catch(function (error) {
      if (error.unauthorized) {
        try { window.sessionStorage.removeItem("scalerToken"); } catch (e) { /* private mode */ }
        state.token = null;
        askToken(state.config && state.config.auth_required ? "That token was not accepted." : "");
      } else {
        showProblem(error.message);
      }
    });
  }

  function connectStream() {
    if (state.source) { state.source.close(); }
    var source = new EventSource(withToken("/api/events"));
    state.source = source;
    source.addEventListener("status", function (event) {
      var document;
      try { document = JSON.parse(event.data); } catch (e) { return; }
      accept(document, true);
    });
    source.onerror = function () {
      state.connected = false;
      state.problem = "dashboard server unreachable, retrying";
      renderConnection();
    };
  }

  function showProblem(text) {
    state.connected = false;
    state.problem = text;
    renderConnection();
  }

  // --- data ---
  function accept(document, fromStream) {
    state.connected = !!document.connected;
    state.problem = document.problem || "";
    var status = document.status;
    if (status && (!state.status || status.sequence !== state.status.sequence)) {
      state.status = status;
      if (fromStream) { addPoint(status); }
    }
    scheduleRender();
  }

  function addPoint(status) {
    var tasks = status.tasks || {}, rates = status.rates || {}, cpu = {};
    (status.workers || []).forEach(function (w) { cpu[w.name] = Math.min(100, Math.round(w.processor_cpu || 0)); });
    state.points.push({ t: status.time, finished: rates.finished || 0, submitted: rates.submitted || 0,
                        failed: rates.failed || 0, queued: (tasks.queued || 0) + (tasks.waiting || 0),
                        on_workers: tasks.assigned || 0, cpu: cpu });
    var oldest = status.time - state.historySeconds;
    while (state.points.length && state.points[0].t < oldest) { state.points.shift(); }
  }

  function scheduleRender() {
    if (state.pending) { return; }
    state.pending = true;
    window.requestAnimationFrame(function () {
      state.pending = false;
      var started = window.performance.now();
      render();
      state.lastRenderMs = window.performance.now() - started;
      state.renders += 1;
    });
  }

  // --- rendering ---
  function renderConnection() {
    var badge = $("conn");
    badge.textContent = state.connected ? "connected" : "disconnected: " + (state.problem || "?");
    badge.className = "badge " + (state.connected ? "good" : "bad");
  }

  function render() {
    renderConnection();
    var s = state.status;
    if (!s) { return; }
    setText("last-update", "updated " + new Date(s.time * 1000).toLocaleTimeString());
    var tasks = s.tasks || {}, totals = s.totals || {}, rates = s.rates || {}, sched = s.scheduler || {};
    var workers = s.workers || [];
    setText("worker-count", workers.length);
    setText("manager-count", (s.managers || []).length);
    setText("client-count", (s.clients || []).length);
    setText("task-total", tasks.total || 0);
    setText("state-running", tasks.running || 0);
    setText("rate-finished", num(rates.finished, 1));
    setText("rate-submitted", num(rates.submitted, 1));
    setText("rate-failed", num(rates.failed, 1));
    setText("sched-cpu", num(sched.cpu, 1));
    setText("sched-rss", bytes(sched.rss));
    setText("sched-uptime", duration(sched.uptime));
    ["waiting", "queued", "assigned", "moving", "cancelling"].forEach(function (name) {
      setText("state-" + name, tasks[name] || 0);
    });
    ["submitted", "finished", "failed", "cancelled"].forEach(function (name) {
      setText("total-" + name, totals[name] || 0);
    });
    renderStateBar(tasks);
    renderStorage(s.object_storage || {});
    renderChart();
    renderHeat(workers);
    renderWorkers(workers);
    renderScaling(s);
    renderClients(s.clients || []);
  }

  function renderStateBar(tasks) {
    var names = ["waiting", "queued", "assigned", "moving", "cancelling"];
    var total = names.reduce(function (sum, n) { return sum + (tasks[n] || 0); }, 0);
    var html = "";
    if (total > 0) {
      names.forEach(function (n) {
        var share = 100 * (tasks[n] || 0) / total;
        if (share > 0) { html += "<div class=\"" + n + "\" style=\"width:" + share.toFixed(2) + "%\"></div>"; }
      });
    }
    var bar = $("state-bar");
    if (bar.getAttribute("data-html") !== html) {
      bar.setAttribute("data-html", html);
      // widths are set through the DOM (the CSP forbids inline style attributes in markup)
      bar.textContent = "";
      names.forEach(function (n) {
        var share = total > 0 ? 100 * (tasks[n] || 0) / total : 0;
        if (share > 0) {
          var div = document.createElement("div");
          div.className = n;
          div.style.width = share.toFixed(2) + "%";
          bar.appendChild(div);
        }
      });
    }
  }

  function renderStorage(storage) {
    if (!storage.in_process) {
      setText("storage-objects", "separate");
      setText("storage-bytes", storage.address || "");
      setText("storage-limit", "");
      $("storage-meter").style.width = "0";
      return;
    }
    setText("storage-objects", storage.objects || 0);
    setText("storage-bytes", bytes(storage.bytes));
    setText("storage-limit", storage.limit ? " of " + bytes(storage.limit) : " (no limit)");
    var share = storage.limit ? Math.min(100, 100 * storage.bytes / storage.limit) : 0;
    $("storage-meter").style.width = share.toFixed(1) + "%";
  }

  function polyline(points, cls) {
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", points.join(" "));
    return line;
  }

  function renderChart() {
    var svg = $("chart-throughput");
    var width = 640, height = 200, pts = state.points;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    for (var i = 1; i < 4; i += 1) {
      var grid = document.createElementNS(SVG, "line");
      grid.setAttribute("class", "grid-line");
      grid.setAttribute("x1", "0"); grid.setAttribute("x2", String(width));
      grid.setAttribute("y1", String(height * i / 4)); grid.setAttribute("y2", String(height * i / 4));
      svg.appendChild(grid);
    }
    if (!pts.length) { return; }
    var now = pts[pts.length - 1].t, span = state.historySeconds;
    var maxRate = 1, maxQueue = 1;
    pts.forEach(function (p) { maxRate = Math.max(maxRate, p.finished); maxQueue = Math.max(maxQueue, p.queued); });
    var rate = [], queue = [];
    pts.forEach(function (p) {
      var x = (width * (1 - (now - p.t) / span)).toFixed(1);
      rate.push(x + "," + (height - 4 - (height - 8) * p.finished / maxRate).toFixed(1));
      queue.push(x + "," + (height - 4 - (height - 8) * p.queued / maxQueue).toFixed(1));
    });
    svg.appendChild(polyline(queue, "queued"));
    svg.appendChild(polyline(rate, "finished"));
    setText("chart-max-rate", num(maxRate, 1));
    setText("chart-max-queue", maxQueue);
  }

  function heatColor(cpu) {
    var v = Math.max(0, Math.min(100, cpu)) / 100;
    var hue = 220 - 220 * v;
    return "hsl(" + hue.toFixed(0) + ",70%," + (92 - 42 * v).toFixed(0) + "%)";
  }

  function renderHeat(workers) {
    var canvas = $("heat");
    var names = workers.map(function (w) { return w.name; }).sort();
    var rowHeight = names.length > 100 ? 2 : names.length > 40 ? 4 : 8;
    var cssWidth = Math.max(200, canvas.clientWidth || 600);
    var height = Math.max(rowHeight, names.length * rowHeight);
    if (canvas.width !== cssWidth) { canvas.width = cssWidth; }
    if (canvas.height !== height) { canvas.height = height; }
    var ctx = canvas.getContext("2d");
    ctx.fillStyle = "#eef0f4";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    var pts = state.points;
    if (!pts.length) { return; }
    var now = pts[pts.length - 1].t, span = state.historySeconds;
    var columnWidth = Math.max(1, Math.ceil(canvas.width / Math.max(1, span / ((state.config && state.config.status_interval) || 1))));
    var index = {};
    names.forEach(function (name, i) { index[name] = i; });
    pts.forEach(function (p) {
      var x = Math.floor(canvas.width * (1 - (now - p.t) / span));
      var cpu = p.cpu || {};
      Object.keys(cpu).forEach(function (name) {
        var row = index[name];
        if (row === undefined) { return; }
        ctx.fillStyle = heatColor(cpu[name]);
        ctx.fillRect(x - columnWidth, row * rowHeight, columnWidth, rowHeight);
      });
    });
  }

  function sortWorkers(workers) {
    var key = state.sortKey, sign = state.sortDescending ? -1 : 1;
    return workers.slice().sort(function (a, b) {
      var x = a[key], y = b[key];
      if (x === y) { return a.name < b.name ? -1 : a.name > b.name ? 1 : 0; }
      if (x === null || x === undefined) { return 1; }
      if (y === null || y === undefined) { return -1; }
      return (x < y ? -1 : 1) * sign;
    });
  }

  function renderWorkers(workers) {
    var rows = sortWorkers(workers).map(function (w) {
      var cpu = Math.min(100, w.processor_cpu || 0);
      return "<tr" + (w.draining ? " class=\"draining\"" : "") + " data-worker=\"" + escapeHtml(w.name) + "\">" +
        "<td>" + escapeHtml(w.name) + "</td><td>" + escapeHtml(w.host) + "</td>" +
        "<td class=\"num\">" + w.pid + "</td>" +
        "<td class=\"num\"><span class=\"bar\" data-w=\"" + Math.round(cpu / 4) + "\"></span>" + num(w.processor_cpu, 1) + "</td>" +
        "<td class=\"num\">" + bytes(w.processor_rss) + "</td>" +
        "<td class=\"num\">" + num(w.agent_cpu, 1) + "</td><td class=\"num\">" + bytes(w.agent_rss) + "</td>" +
        "<td class=\"num\">" + w.queued + "</td><td class=\"num\">" + w.running + "</td>" +
        "<td class=\"num\">" + w.done + "</td><td class=\"num\">" + w.suspended + "</td>" +
        "<td class=\"num\">" + (w.heartbeat_age === null ? "-" : num(w.heartbeat_age, 1) + " s") + "</td>" +
        "<td>" + escapeHtml(w.manager || "-") + "</td></tr>";
    }).join("");
    var body = $("workers-body");
    if (body.getAttribute("data-rows") !== rows) {
      body.setAttribute("data-rows", rows);
      body.innerHTML = rows;
      var bars = body.querySelectorAll(".bar");
      for (var i = 0; i < bars.length; i += 1) { bars[i].style.width = bars[i].getAttribute("data-w") + "px"; }
    }
  }

  function renderScaling(s) {
    var scaling = s.scaling || {};
    setText("policy", "allocate=" + (scaling.allocate || "?") + ", scaling=" + (scaling.scaling || "?"));
    $("managers-body").innerHTML = (s.managers || []).map(function (m) {
      return "<tr><td>" + escapeHtml(m.id) + "</td><td>" + escapeHtml(m.mode) + "</td><td class=\"num\">" + m.groups +
        "</td><td class=\"num\">" + (m.capacity < 0 ? "unlimited" : m.capacity === 0 ? "fixed" : m.capacity) +
        "</td><td class=\"num\">" + m.pending_starts + "</td></tr>";
    }).join("");
    var events = (scaling.events || []).slice().reverse();
    $("scaling-events").innerHTML = events.length ? events.map(function (e) {
      var refused = /refused|failed|no_worker/.test(e.action);
      return "<li" + (refused ? " class=\"refused\"" : "") + ">" + escapeHtml(new Date(e.time * 1000).toLocaleTimeString()) +
        " <b>" + escapeHtml(e.action) + "</b> " + escapeHtml(e.manager || "") + " " + escapeHtml(e.detail || "") + "</li>";
    }).join("") : "<li class=\"dim\">no scaling action yet</li>";
    var waiting = s.waiting_for_capabilities || [];
    $("waiting-caps").innerHTML = waiting.length ? "<p class=\"error\">waiting for capabilities no worker has: " +
      waiting.map(function (w) { return escapeHtml(w.capabilities) + " (" + w.tasks + ")"; }).join(", ") + "</p>" : "";
  }

  function renderClients(clients) {
    $("clients-body").innerHTML = clients.map(function (c) {
      return "<tr><td>" + escapeHtml(c.id.slice(0, 12)) + "</td><td class=\"num\">" + c.tasks + "</td><td class=\"num\">" +
        (c.heartbeat_age === null ? "-" : num(c.heartbeat_age, 1) + " s") + "</td></tr>";
    }).join("");
  }

  Array.prototype.forEach.call(document.querySelectorAll("#workers th"), function (th) {
    th.addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      if (state.sortKey === key) { state.sortDescending = !state.sortDescending; }
      else { state.sortKey = key; state.sortDescending = key !== "name" && key !== "host" && key !== "manager"; }
      scheduleRender();
    });
  });
  window.addEventListener("resize", scheduleRender);

  start();
}());
