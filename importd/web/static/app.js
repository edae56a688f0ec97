// importd web: live updates by server-sent events, and "select all" on the job list.
// Plain JavaScript, no build step. What it draws itself is set with textContent, never
// HTML; the rest is the server's own escaped rendering of the page's parts.
"use strict";

(function () {
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function num(n) { return n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"); }

  function age(s) {
    if (s === null || s === undefined) return "-";
    s = Math.max(s, 0);
    if (s < 120) return Math.round(s) + "s";
    if (s < 7200) return Math.round(s / 60) + "m";
    if (s < 172800) return (s / 3600).toFixed(1) + "h";
    return (s / 86400).toFixed(1) + "d";
  }

  function size(b) {
    if (!b) return "-";
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return i === 0 ? b + " B" : b.toFixed(1) + " " + units[i];
  }

  function progress(done, total) {
    var bar = document.createElement("progress");
    if (total) { bar.max = total; bar.value = done; }
    return bar;
  }

  function link(href, text) { var a = el("a", text); a.href = href; return a; }

  function updateRunning(data) {
    var body = document.getElementById("running-rows");
    if (!body) return;
    var rows = document.createDocumentFragment();
    data.running.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.dataset.job = r.id;
      var first = el("td"); first.appendChild(link("/jobs/" + r.id, r.id)); tr.appendChild(first);
      tr.appendChild(el("td", r.kind));
      tr.appendChild(el("td", r.queue));
      tr.appendChild(el("td", r.tenant_id || "-"));
      var bar = el("td"); bar.appendChild(progress(r.rows_done, r.rows_total)); tr.appendChild(bar);
      tr.appendChild(el("td", num(r.rows_done) + (r.rows_total ? " / " + num(r.rows_total) : ""), "n"));
      tr.appendChild(el("td", size(r.bytes_read), "n"));
      tr.appendChild(el("td", age(r.elapsed_s), "n"));
      tr.appendChild(el("td", r.attempts + " / " + r.max_attempts, "n"));
      tr.appendChild(el("td", r.locked_by));
      tr.appendChild(el("td", age(r.lease_left_s), "n"));
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    var count = document.getElementById("running-count");
    if (count) count.textContent = data.running.length;
    var empty = document.getElementById("running-empty");
    if (empty) empty.hidden = data.running.length > 0;
  }

  function updateOverview(data) {
    var wait = document.getElementById("oldest-wait");
    if (wait) wait.textContent = age(data.oldest_runnable_s);
    var table = document.getElementById("queues");
    if (!table) return;
    var seen = {};
    data.counts.forEach(function (c) { seen[c.queue + "\u0000" + c.status] = c.n; });
    table.querySelectorAll("tr[data-queue]").forEach(function (tr) {
      tr.querySelectorAll("[data-count]").forEach(function (cell) {
        var n = seen[tr.dataset.queue + "\u0000" + cell.dataset.count] || 0;
        cell.textContent = num(n);
      });
    });
  }

  // The changing parts of a page (elements with data-part and an id) are drawn again by
  // the server: the same page asked for with the x-importd-part header answers its main
  // block, the same templates and escaping. It is parsed inert (DOMParser runs no script,
  // and the CSP forbids inline ones) and each part is swapped in place: no reload. At most
  // one request every `gap` ms, however often the stream signals.
  function refresher(gap) {
    var busy = false, again = false, timer = null, last = 0;
    function swap(html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var checked = {};
      document.querySelectorAll("input.row-select:checked").forEach(function (box) { checked[box.value] = true; });
      document.querySelectorAll("[data-part]").forEach(function (old) {
        var fresh = old.id && doc.getElementById(old.id);
        if (fresh) old.replaceWith(document.adoptNode(fresh));
      });
      document.querySelectorAll("input.row-select").forEach(function (box) { if (checked[box.value]) box.checked = true; });
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
    }
    function run(first) {
      timer = null;
      busy = true;
      // The first redraw (the stream's first picture) does not hold back the next one.
      if (first !== true) last = Date.now();
      fetch(window.location.pathname + window.location.search, {
        headers: { "x-importd-part": "1" }, credentials: "same-origin", cache: "no-store", redirect: "error"
      }).then(function (answer) { return answer.ok ? answer.text() : null; })
        .then(function (html) { if (html !== null) swap(html); })
        .catch(function () { /* the page keeps its last picture; the next signal tries again */ })
        .then(function () { busy = false; if (again) { again = false; ask(); } });
    }
    function ask(first) {
      if (busy) { again = true; return; }
      if (first === true && timer === null && last === 0) { run(true); return; }
      if (timer === null) timer = setTimeout(run, Math.max(0, last + gap - Date.now()));
    }
    return ask;
  }

  // What a page shows that the stream can tell changed: a part is fetched again only when
  // this changes (not for the seconds ticking on a running job).
  function signature(view, data) {
    if (view === "job") {
      var j = data.job || {};
      return JSON.stringify([j.status, j.attempts, j.last_error, j.locked_by, j.rows_failed]);
    }
    var running = data.running.map(function (r) { return [r.id, r.tenant_id]; });
    return JSON.stringify([data.last_id, data.counts, running]);
  }

  function updateJob(data) {
    var job = data.job;
    if (!job) return;
    var bar = document.getElementById("job-progress");
    if (bar && job.rows_total) { bar.max = job.rows_total; bar.value = job.rows_done; }
    var rows = document.getElementById("job-rows");
    if (rows) rows.textContent = num(job.rows_done) + (job.rows_total ? " / " + num(job.rows_total) : "") + " rows";
    var rejected = document.getElementById("job-rejected");
    if (rejected) rejected.textContent = num(job.rows_failed);
    var read = document.getElementById("job-bytes");
    if (read) read.textContent = size(job.bytes_read);
  }

  function live() {
    var view = document.body.dataset.live;
    if (!view || !window.EventSource) return;
    var url = "/events" + (view === "job" ? "?job=" + encodeURIComponent(document.body.dataset.job) : "");
    var source = new EventSource(url);
    var badge = document.getElementById("live-state");
    // The overview reads six small statements: fetched at most every 3 s, the job list and
    // a job (two statements) every 2 s. The overview also refreshes every 30 s for what
    // the stream does not carry (daemons' last seen, rate limits).
    var refresh = view === "running" ? null : refresher(view === "overview" ? 3000 : 2000);
    var seen = null;
    if (view === "overview") setInterval(function () { refresh(); }, 30000);
    source.onopen = function () { if (badge) { badge.hidden = false; badge.className = "live"; } };
    source.onerror = function () { if (badge) badge.className = "live off"; };
    source.onmessage = function (event) {
      var data = JSON.parse(event.data);
      if (view === "running") updateRunning(data);
      else if (view === "overview") updateOverview(data);
      else if (view === "job") updateJob(data);
      if (refresh) {
        var now = signature(view, data);
        // The first picture may be newer than the page (a change between the page's read
        // and the stream's): the parts are drawn once more then, and at each change.
        if (now !== seen) refresh(seen === null);
        seen = now;
      }
      document.body.dataset.updated = String(Date.now());
    };
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function selectAll() {
    var all = document.getElementById("select-all");
    if (!all) return;
    all.addEventListener("change", function () {
      document.querySelectorAll("input.row-select").forEach(function (box) { box.checked = all.checked; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { live(); selectAll(); });
})();
