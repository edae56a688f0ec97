// importd web: live updates by server-sent events, and "select all" on the job list.
// Plain JavaScript, no build step. Everything shown is set with textContent: never HTML.
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

  function updateJob(data) {
    var job = data.job;
    if (!job) return;
    var body = document.body;
    if (job.status !== body.dataset.status || String(job.attempts) !== body.dataset.attempts) {
      // A new state brings a result, an error or other actions: draw the page again.
      window.location.reload();
      return;
    }
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
    source.onopen = function () { if (badge) { badge.hidden = false; badge.className = "live"; } };
    source.onerror = function () { if (badge) badge.className = "live off"; };
    source.onmessage = function (event) {
      var data = JSON.parse(event.data);
      if (view === "running") updateRunning(data);
      else if (view === "overview") updateOverview(data);
      else if (view === "job") updateJob(data);
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
