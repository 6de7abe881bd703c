// pinlife console: the live tail (server-sent events) and the statistics' charts.
// Data is put into the page as text (textContent), never as HTML.
"use strict";

(function live() {
  const form = document.getElementById("live");
  if (!form) return;
  const after = document.getElementById("live-after");
  const start = document.getElementById("live-start");
  const pause = document.getElementById("live-pause");
  const status = document.getElementById("live-status");
  const body = document.querySelector("#live-events tbody");
  const MAX_ROWS = 500;
  const columns = ["position", "time", "type_label", "card", "pin_label", "channel_label", "terminal", "office", "outcome_label", "details"];
  const titles = { type_label: "type", pin_label: "pin_type", channel_label: "channel" };
  let source = null;
  let last = null; // the last position shown

  function say(text) { status.textContent = text; }

  function add(rows) {
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.className = "fresh outcome-" + r.outcome;
      tr.dataset.position = r.position;
      for (const key of columns) {
        const td = document.createElement("td");
        if (key === "outcome_label") {
          const span = document.createElement("span");
          span.className = "outcome";
          span.textContent = r[key];
          td.appendChild(span);
        } else {
          td.textContent = r[key];
        }
        if (titles[key]) td.title = r[titles[key]];
        if (key === "position") td.className = "num";
        if (key === "time") td.className = "time";
        if (key === "details") td.className = "details";
        tr.appendChild(td);
      }
      body.insertBefore(tr, body.firstChild);
      last = r.position;
    }
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    after.value = last;
  }

  function stop(text) {
    if (source) source.close();
    source = null;
    start.disabled = false;
    pause.disabled = true;
    start.textContent = last === null ? "Start" : "Resume";
    say(text);
  }

  function go() {
    const from = (after.value || "0").trim();
    if (!/^[0-9]+$/.test(from)) { say("after: a position (0 or more)"); return; }
    if (source) source.close();
    source = new EventSource("/live/stream?after=" + encodeURIComponent(from));
    start.disabled = true;
    pause.disabled = false;
    say("connecting…");
    source.onopen = () => say("watching after #" + (last === null ? from : last));
    source.addEventListener("events", (e) => { add(JSON.parse(e.data)); say("watching: last #" + last); });
    source.addEventListener("problem", (e) => stop("stopped: " + JSON.parse(e.data).message));
    // The browser reconnects by itself, resuming after the last id it got.
    source.onerror = () => { if (source && source.readyState === EventSource.CONNECTING) say("reconnecting after #" + (last === null ? from : last) + "…"); };
  }

  start.addEventListener("click", go);
  pause.addEventListener("click", () => stop("paused after #" + (last === null ? after.value : last)));
  form.addEventListener("submit", (e) => { e.preventDefault(); go(); });
  go(); // following from the start
})();

(function charts() {
  const data = document.getElementById("stats-data");
  if (!data || typeof Chart === "undefined") return;
  const charts = JSON.parse(data.textContent);
  const colors = {
    events: "#7f8c9f", checks: "#1f5fbf", failures: "#d98a00", locks: "#8a1538", refusals: "#6a3fa0",
    distinct_cards: "#b3261e", failures_: "#d98a00",
  };
  const kinds = { time: "line", time_channel: "bar", channel: "bar", enumeration: "bar", locks: "bar" };
  const horizontal = { channel: true, enumeration: true };
  const stacked = { time_channel: true };
  const palette = ["#1f5fbf", "#d98a00", "#2e7d32", "#8a1538", "#6a3fa0", "#00838f", "#7f8c9f", "#b3261e"];
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    const name = canvas.dataset.chart;
    const chart = charts[name];
    if (!chart) continue;
    const datasets = Object.entries(chart.series).map(([label, values], i) => ({
      label, data: values,
      borderColor: (stacked[name] ? palette[i % palette.length] : colors[label]) || "#444",
      backgroundColor: ((stacked[name] ? palette[i % palette.length] : colors[label]) || "#444") + (kinds[name] === "line" ? "33" : "cc"),
      borderWidth: kinds[name] === "line" ? 2 : 0, pointRadius: kinds[name] === "line" ? 2 : 0, tension: 0.2,
    }));
    new Chart(canvas, {
      type: kinds[name],
      data: { labels: chart.labels, datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        indexAxis: horizontal[name] ? "y" : "x",
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: {
          x: { beginAtZero: true, stacked: !!stacked[name], ticks: { precision: 0 } },
          y: { beginAtZero: true, stacked: !!stacked[name], ticks: { precision: 0 } },
        },
      },
    });
    canvas.dataset.points = String(datasets.reduce((n, d) => n + d.data.filter((v) => v > 0).length, 0));
    canvas.dataset.drawn = "true";
  }
})();
