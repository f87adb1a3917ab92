// The lightray dashboard page: polls /api/snapshot and redraws, without reloading.
// Every value goes into the page as text (textContent), never as HTML.
"use strict";

const MIB = 1048576;
const COLORS = {PENDING: "#9aa5b4", QUEUED: "#d4a72c", RUNNING: "#4a8fe7",
                FINISHED: "#2e9e5b", FAILED: "#c0392b", CANCELLED: "#7f56c2"};
const token = new URLSearchParams(window.location.search).get("token");
let pollMs = 1000;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function setValue(id, value, text) {
  const node = document.getElementById(id);
  node.dataset.value = value === null || value === undefined ? "" : String(value);
  node.textContent = text !== undefined ? text : String(value);
}

function mib(bytes) { return (bytes / MIB).toFixed(1); }

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  const span = el("span", unit === 0 ? value + " B" : value.toFixed(1) + " " + units[unit]);
  span.dataset.value = String(bytes);
  return span;
}

function bar(used, total, label) {
  const outer = el("div", null, "bar");
  const fraction = total > 0 && used !== null ? Math.min(used / total, 1) : 0;
  const fill = el("div", null, fraction > 0.85 ? "fill hot" : "fill");
  fill.style.width = (fraction * 100).toFixed(1) + "%";
  outer.appendChild(fill);
  outer.appendChild(el("span", label, "text"));
  return outer;
}

function fillRows(tableId, rows, makeCells) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const cell of makeCells(row, tr)) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null || cell === undefined ? "-" : String(cell);
      if (typeof cell === "number") td.className = "num";
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function drawNodes(nodes) {
  fillRows("nodes", nodes, (n, tr) => {
    tr.dataset.nodeId = n.node_id;
    tr.dataset.storeUsed = n.store_used;
    const cpu = n.cpu_total ? bar(n.cpu_used, n.cpu_total,
        (n.cpu_used === null ? "?" : n.cpu_used) + " / " + n.cpu_total) : "-";
    const memory = n.memory_fraction === null ? "?" :
        bar(n.memory_fraction, 1, (n.memory_fraction * 100).toFixed(0) + "%");
    const store = n.store_capacity ? bar(n.store_used, n.store_capacity,
        mib(n.store_used) + " / " + mib(n.store_capacity)) : "?";
    const state = el("span", n.state, "state-" + n.state);
    const role = [n.is_head ? "head" : "", n.control_role || ""].filter(Boolean).join(", ");
    return [n.node_id, n.address, state, role || "-", cpu, memory, store, mib(n.spilled_bytes)];
  });
}

function drawChart(history) {
  const svg = document.getElementById("task-chart");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const width = 640, height = 220, pad = 28;
  if (history.length === 0) return;
  const states = Object.keys(COLORS);
  const t0 = history[0][0], t1 = Math.max(history[history.length - 1][0], t0 + 1);
  let top = 1;
  for (const [, counts] of history) for (const s of states) top = Math.max(top, counts[s] || 0);
  const x = (t) => pad + (t - t0) / (t1 - t0) * (width - pad - 8);
  const y = (v) => height - pad + 4 - v / top * (height - pad - 12);
  for (const fraction of (top >= 2 ? [0, 0.5, 1] : [0, 1])) {
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", pad); line.setAttribute("x2", width - 8);
    line.setAttribute("y1", y(top * fraction)); line.setAttribute("y2", y(top * fraction));
    line.setAttribute("stroke", "#e3e7ec");
    svg.appendChild(line);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 2); label.setAttribute("y", y(top * fraction) + 4);
    label.setAttribute("font-size", "10"); label.setAttribute("fill", "#5b6676");
    label.textContent = String(Math.round(top * fraction));
    svg.appendChild(label);
  }
  const span = document.createElementNS(ns, "text");
  span.setAttribute("x", width - 8); span.setAttribute("y", height - 6);
  span.setAttribute("text-anchor", "end"); span.setAttribute("font-size", "10");
  span.setAttribute("fill", "#5b6676");
  span.textContent = "last " + Math.round(t1 - t0) + " s";
  svg.appendChild(span);
  for (const s of states) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", history.map(([t, c]) => x(t).toFixed(1) + "," + y(c[s] || 0).toFixed(1)).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLORS[s]);
    line.setAttribute("stroke-width", "2");
    line.dataset.state = s;
    svg.appendChild(line);
  }
  const legend = document.getElementById("task-legend");
  legend.replaceChildren();
  const last = history[history.length - 1][1];
  for (const s of states) {
    const item = el("span", s.toLowerCase() + " " + (last[s] || 0));
    const swatch = el("i");
    swatch.style.background = COLORS[s];
    item.prepend(swatch);
    legend.appendChild(item);
  }
}

// The errors a user opened stay open across redraws.
const openErrors = new Set();

function drawErrors(errors) {
  const box = document.getElementById("errors");
  box.replaceChildren();
  if (errors.length === 0) { box.appendChild(el("p", "none", "empty")); return; }
  for (const e of errors) {
    const details = el("details");
    const key = String(e.task_id);
    details.dataset.taskId = key;
    details.open = openErrors.has(key);
    details.addEventListener("toggle", () => {
      if (details.open) openErrors.add(key); else openErrors.delete(key);
    });
    const when = e.finished_at ? new Date(e.finished_at * 1000).toLocaleTimeString() : "";
    details.appendChild(el("summary", (e.name || "task") + " " + (e.task_id || "") +
        " on " + (e.node_id || "?") + (e.worker_pid ? " pid " + e.worker_pid : "") + " " + when));
    details.appendChild(el("pre", e.error || "(no error text)"));
    box.appendChild(details);
  }
}

function draw(payload) {
  const status = document.getElementById("status");
  pollMs = Math.max(250, Math.round((payload.interval || 1) * 1000));
  const snap = payload.snapshot;
  if (payload.error) {
    status.textContent = "cannot read the cluster: " + payload.error;
    status.className = "status bad";
  } else if (snap) {
    status.textContent = "updated " + new Date(snap.taken_at * 1000).toLocaleTimeString();
    status.className = "status";
  }
  const link = document.getElementById("timeline-link");
  link.href = "/api/timeline" + (token ? "?token=" + encodeURIComponent(token) : "");
  if (!snap) return;
  const live = snap.nodes.filter((n) => n.state !== "DEAD");
  setValue("nodes-alive", live.length);
  setValue("nodes-total", snap.nodes.length);
  const by = snap.tasks.by_state;
  setValue("tasks-total", snap.tasks.total);
  setValue("tasks-running", by.RUNNING || 0);
  setValue("tasks-failed", by.FAILED || 0);
  setValue("tasks-finished", by.FINISHED || 0);
  setValue("tasks-pending", (by.PENDING || 0) + (by.QUEUED || 0));
  setValue("store-used", snap.store_used, mib(snap.store_used));
  setValue("store-capacity", snap.store_capacity, mib(snap.store_capacity));
  setValue("spilled", snap.spilled_bytes, mib(snap.spilled_bytes));
  setValue("num-objects", snap.num_objects);
  setValue("num-actors", snap.actors.length);
  setValue("actors-alive", snap.actors.filter((a) => a.state === "ALIVE").length);
  drawNodes(snap.nodes);
  drawChart(payload.history);
  const names = Object.entries(snap.tasks.by_name).sort((a, b) => a[0].localeCompare(b[0]));
  fillRows("task-names", names, ([name, c]) => {
    const other = Object.entries(c).filter(([s]) => !["RUNNING", "FINISHED", "FAILED"].includes(s))
        .reduce((sum, [, v]) => sum + v, 0);
    return [name, c.RUNNING || 0, c.FINISHED || 0, c.FAILED || 0, other];
  });
  fillRows("actors", snap.actors, (a) => [a.class_name, a.name, el("span", a.state, "state-" + a.state),
                                         a.node_id, a.pid, a.restarts]);
  fillRows("objects", snap.objects, (o) => [o.object_id, size(o.size), o.location, o.node_id, o.ref_count]);
  drawErrors(snap.errors);
}

async function poll() {
  try {
    const response = await fetch("/api/snapshot", {cache: "no-store",
        headers: token ? {"X-Lightray-Token": token} : {}});
    const payload = await response.json();
    if (!response.ok) throw new Error(payload.error || ("HTTP " + response.status));
    draw(payload);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (error) {
    const status = document.getElementById("status");
    status.textContent = "dashboard unreachable: " + error.message;
    status.className = "status bad";
  }
  window.setTimeout(poll, pollMs);
}

poll();
