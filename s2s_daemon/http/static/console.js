// The operator console: charts from /api/console/history (polled), dead letters, outbox and commands.
// Writes send the admin token in the Authorization header only; it lives in sessionStorage (this tab), never in a
// cookie, and every fetch omits credentials.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "s2s-console.";
  const STATES = { closed: "CLOSED", half_open: "HALF-OPEN", open: "OPEN", unknown: "UNKNOWN" };
  let token = sessionStorage.getItem(KEY + "token") || "";
  let operator = sessionStorage.getItem(KEY + "operator") || "";
  let selection = { filters: {}, older_than: null }; // what the dead-letter list shows
  let shownDepth = 0;
  const charts = {};
  window.s2sConsole = { charts }; // for the browser test: each chart's uPlot instance

  // ---------------------------------------------------------------- auth and requests
  function setMode() {
    document.body.classList.toggle("can-write", Boolean(token));
    $("mode").textContent = token ? "writes enabled" + (operator ? " as " + operator : "") : "read-only";
    $("mode").classList.toggle("writes", Boolean(token));
    $("dl-body").readOnly = !token;
    $("operator").value = operator;
  }

  function forget() {
    token = "";
    sessionStorage.removeItem(KEY + "token");
    setMode();
  }

  async function api(path, options = {}) {
    const headers = {};
    if (options.write) {
      headers["Authorization"] = "Bearer " + token;
      headers["Content-Type"] = "application/json";
      if (operator) headers["X-Operator"] = operator;
    }
    const response = await fetch(path, {
      method: options.write ? "POST" : "GET",
      headers,
      body: options.write ? JSON.stringify(options.body || {}) : undefined,
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (response.status === 401 && options.write) {
      forget();
      throw new Error("the admin token was refused; writes are disabled until a valid one is entered");
    }
    if (!response.ok) throw new Error((data && (data.detail || data.error)) || "HTTP " + response.status);
    return data;
  }

  function confirmAction(text, okLabel) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-cancel").focus(); // the safe choice has the focus
    });
  }

  // ---------------------------------------------------------------- charts
  const fmtTime = (seconds) => new Date(seconds * 1000).toLocaleTimeString();
  let retention = 900;

  function chart(key, parent, title, series, extra = {}) {
    if (charts[key]) return charts[key];
    const box = document.createElement("div");
    box.className = "chart";
    box.id = "chart-" + key;
    box.setAttribute("role", "img");
    box.setAttribute("aria-label", title);
    parent.appendChild(box);
    const width = Math.max(300, box.clientWidth - 24);
    const opts = {
      title,
      width,
      height: 170,
      scales: { x: { time: true, range: (u, min, max) => [max - retention, max] }, ...(extra.scales || {}) },
      series: [{ label: "time", value: (u, v) => (v == null ? "-" : fmtTime(v)) }, ...series],
      axes: extra.axes || [{}, { size: 50 }],
      legend: { live: true },
    };
    const empty = [[], ...series.map(() => [])];
    charts[key] = new uPlot(opts, empty, box);
    return charts[key];
  }

  function draw(key, data) {
    const plot = charts[key];
    plot.setData(data);
    plot.root.parentElement.dataset.points = String(data[0].length);
  }

  const pct = (xs) => xs.map((x) => (x == null ? null : Math.round(x * 1000) / 10));
  const ms = (xs) => xs.map((x) => (x == null ? null : Math.round(x * 100000) / 100));
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#9333ea", "#d97706", "#0891b2"];
  // points shown: a lone sample between gaps (one burst of traffic) is a dot rather than nothing
  const line = (label, i, more = {}) => ({
    label,
    stroke: COLORS[i % COLORS.length],
    width: 2,
    points: { show: true, size: 4 },
    ...more,
  });

  function timeline(name, times, states) {
    const bar = $("timeline-" + name);
    const runs = [];
    states.forEach((state, i) => {
      const last = runs[runs.length - 1];
      if (last && last.state === state) last.to = times[i];
      else runs.push({ state, from: times[i], to: times[i] });
    });
    const now = times.length ? times[times.length - 1] : 0;
    const start = now - retention;
    const span = retention || 1;
    const segment = (state, from, to, label) => {
      const seg = document.createElement("div");
      seg.className = "seg " + state;
      seg.dataset.state = state;
      seg.style.flexBasis = Math.max(0.4, ((to - Math.max(from, start)) / span) * 100) + "%";
      seg.textContent = label;
      seg.title = `${label || "no data"} ${fmtTime(from)} - ${fmtTime(to)}`;
      return seg;
    };
    // before the first point: no data (keeps the bar aligned with the charts' time axis)
    const lead = times.length && times[0] > start ? [segment("nodata", start, times[0], "")] : [];
    bar.replaceChildren(
      ...lead,
      ...runs.map((run, i) =>
        segment(run.state, run.from, i + 1 < runs.length ? runs[i + 1].from : now, STATES[run.state] || run.state)
      )
    );
    const current = runs[runs.length - 1];
    const changes = runs.slice(0, -1).map((r) => `${STATES[r.state]} from ${fmtTime(r.from)}`);
    const text = current ? `now ${STATES[current.state]} since ${fmtTime(current.from)}` : "no data yet";
    $("timeline-text-" + name).textContent = [text, ...changes.reverse()].join("; ");
    $("breaker-now-" + name).textContent = current ? STATES[current.state] : "UNKNOWN";
    $("breaker-now-" + name).className = "state " + (current ? current.state : "unknown");
    $("breaker-now-" + name).dataset.state = current ? current.state : "unknown";
  }

  function downstreamBlock(name) {
    let block = $("ds-" + name);
    if (block) return block;
    block = document.createElement("div");
    block.className = "downstream";
    block.id = "ds-" + name;
    block.innerHTML = `<h3></h3><div class="timeline" role="img"></div><p class="timeline-text"></p><div class="grid"></div>`;
    const title = block.querySelector("h3");
    title.textContent = name + " ";
    const badge = document.createElement("span");
    badge.id = "breaker-now-" + name;
    title.appendChild(badge);
    block.querySelector(".timeline").id = "timeline-" + name;
    block.querySelector(".timeline").setAttribute("aria-label", "breaker state of " + name + " over time");
    block.querySelector(".timeline-text").id = "timeline-text-" + name;
    $("downstream-charts").appendChild(block);
    const grid = block.querySelector(".grid");
    chart(`${name}-rates`, grid, `${name}: calls/s and error %`, [line("calls/s", 0), line("error %", 1, { scale: "%" })], {
      scales: { "%": { range: [0, 100] } },
      axes: [{}, { size: 50 }, { side: 1, scale: "%", grid: { show: false } }],
    });
    chart(`${name}-latency`, grid, `${name}: latency p50 / p99 (ms)`, [line("p50 ms", 2), line("p99 ms", 3)]);
    return block;
  }

  function render(h) {
    retention = h.retention_seconds;
    $("retention").textContent = Math.round(retention / 60);
    const t = h.times;
    const names = Object.keys(h.downstreams);
    for (const name of names) {
      const d = h.downstreams[name];
      downstreamBlock(name);
      draw(`${name}-rates`, [t, d.calls_per_second, pct(d.error_rate)]);
      draw(`${name}-latency`, [t, ms(d.p50_seconds), ms(d.p99_seconds)]);
      timeline(name, t, d.breaker);
    }
    const grid = $("process-charts");
    chart("queues", grid, "command queue depth", names.map((n, i) => line(n, i)));
    draw("queues", [t, ...names.map((n) => h.downstreams[n].queue_depth)]);
    chart("outbox", grid, "outbox backlog and dead documents", [line("backlog", 0), line("dead", 1)]);
    draw("outbox", [t, h.outbox_backlog, h.outbox_dead]);
    chart("lag", grid, "outbox publish lag p50 / p99 (ms)", [line("p50 ms", 2), line("p99 ms", 3)]);
    draw("lag", [t, ms(h.publish_lag_p50_seconds), ms(h.publish_lag_p99_seconds)]);
    chart("dlq", grid, "dead-letter queue depth", [line("dead letters", 1)]);
    draw("dlq", [t, h.dlq_depth]);
    $("updated").textContent = t.length ? fmtTime(t[t.length - 1]) : "never";
  }

  async function pollHistory() {
    let wait = 5000;
    try {
      const h = await api("/api/console/history");
      wait = Math.max(2000, h.interval_seconds * 1000);
      render(h);
      $("charts-error").textContent = "";
    } catch (err) {
      $("charts-error").textContent = "history unavailable: " + err.message;
    } finally {
      setTimeout(pollHistory, wait);
    }
  }

  // ---------------------------------------------------------------- dead letters
  const age = (s) => {
    if (s == null) return "-";
    if (s < 60) return Math.floor(s) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor((s % 86400) / 3600)).padStart(2, "0") + "h";
  };

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "-" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function describeSelection(sel) {
    const parts = Object.entries(sel.filters).map(([k, v]) => `${k}=${v.join(",")}`);
    if (sel.older_than) parts.push("older than " + sel.older_than);
    return parts.length ? parts.join(", ") : "all dead letters";
  }

  async function listDeadLetters() {
    const form = new FormData($("dl-filters"));
    const filters = {};
    const query = new URLSearchParams();
    for (const key of ["reason", "routing_key"]) {
      const value = String(form.get(key) || "").trim();
      if (value) {
        filters[key] = [value];
        query.append(key, value);
      }
    }
    const olderThan = String(form.get("older_than") || "").trim();
    if (olderThan) query.append("older_than", olderThan);
    $("dl-error").textContent = "";
    try {
      const listing = await api("/api/console/dlq?" + query.toString());
      selection = { filters, older_than: olderThan || null };
      shownDepth = listing.messages.length;
      const rows = listing.messages.map((m) => {
        const row = document.createElement("tr");
        row.dataset.id = m.id;
        const idCell = cell(row, "");
        const open = document.createElement("button");
        open.type = "button";
        open.className = "dl-open";
        open.textContent = m.id;
        open.setAttribute("aria-label", "show dead letter " + m.id);
        open.addEventListener("click", () => showDeadLetter(m.id));
        idCell.appendChild(open);
        cell(row, m.reason).className = "dl-reason";
        cell(row, m.routing_key);
        cell(row, m.attempts, "num");
        cell(row, age(m.age_seconds), "num");
        cell(row, m.correlation_id);
        return row;
      });
      $("dl-rows").replaceChildren(...rows);
      $("dl-summary").textContent =
        `${listing.depth} dead letter${listing.depth === 1 ? "" : "s"} in ${listing.queue}; ` +
        `${rows.length} shown (${describeSelection(selection)})`;
    } catch (err) {
      $("dl-error").textContent = "dead letters unavailable: " + err.message;
    }
  }

  let detailId = null;
  async function showDeadLetter(id) {
    $("dl-error").textContent = "";
    try {
      const shown = await api("/api/console/dlq/messages/" + encodeURIComponent(id));
      const m = shown.messages[0];
      detailId = id;
      $("dl-detail-id").textContent = id;
      const facts = [
        ["reason", m.reason],
        ["detail", m.detail],
        ["routing key", m.routing_key],
        ["attempts", m.attempts],
        ["age", age(m.age_seconds)],
        ["correlation id", m.correlation_id],
        ["idempotency key", m.idempotency_key],
        ["replayed before", m.replay_count],
      ];
      $("dl-facts").replaceChildren(
        ...facts.flatMap(([k, v]) => {
          const dt = document.createElement("dt");
          dt.textContent = k;
          const dd = document.createElement("dd");
          dd.textContent = v == null ? "-" : String(v);
          return [dt, dd];
        })
      );
      $("dl-properties").textContent = JSON.stringify(m.properties, null, 2);
      $("dl-headers").textContent = JSON.stringify(m.headers, null, 2);
      $("dl-body-encoding").textContent = "(" + m.body_encoding + ")";
      $("dl-body").value = m.body_encoding === "json" ? JSON.stringify(m.body, null, 2) : String(m.body);
      $("dl-body").dataset.original = $("dl-body").value;
      $("dl-detail").hidden = false;
      $("dl-detail-title").scrollIntoView();
      $("dl-body").focus();
    } catch (err) {
      $("dl-error").textContent = "cannot show " + id + ": " + err.message;
    }
  }

  async function runJob(path, body, label) {
    const accepted = await api(path, { write: true, body });
    $("job").hidden = false;
    $("job-label").textContent = label;
    for (;;) {
      const job = await api(accepted.status_url);
      $("job-progress").max = Math.max(1, job.depth || 0);
      $("job-progress").value = job.scanned;
      $("job-text").textContent = `${job.state}: ${job.scanned} of ${job.depth == null ? "?" : job.depth} scanned`;
      if (job.state !== "running") {
        if (job.state === "failed") throw new Error(job.error);
        return job.report;
      }
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
  }

  async function replay(body, text) {
    if (!(await confirmAction(text, "Replay"))) return;
    $("dl-error").textContent = "";
    try {
      const report = await runJob("/api/console/dlq/replay", body, "replay");
      const edited = report.messages.filter((m) => m.new_key).map((m) => ` new idempotency key ${m.idempotency_key}`);
      $("job-text").textContent =
        `replayed ${report.replayed} of ${report.scanned} scanned; ${report.skipped} left in the DLQ.` +
        edited.join(";") +
        (report.error ? " Stopped: " + report.error : "");
      await listDeadLetters();
    } catch (err) {
      $("dl-error").textContent = "replay failed: " + err.message;
    }
  }

  async function purge() {
    $("dl-error").textContent = "";
    if (!selection.older_than) {
      $("dl-error").textContent = "purge needs 'Older than' in the list's filters (e.g. 7d; 0s for every age)";
      $("f-age").focus();
      return;
    }
    const body = { filters: selection.filters, older_than: selection.older_than };
    try {
      const counted = await runJob("/api/console/dlq/purge", { ...body, dry_run: true }, "counting");
      const text =
        `Delete ${counted.purged} dead letter${counted.purged === 1 ? "" : "s"} (${describeSelection(selection)})? ` +
        "They cannot be replayed afterwards.";
      if (!(await confirmAction(text, "Purge"))) {
        $("job-text").textContent = "purge cancelled";
        return;
      }
      const report = await runJob("/api/console/dlq/purge", body, "purge");
      $("job-text").textContent = `purged ${report.purged} of ${report.scanned} scanned; ${report.kept} kept`;
      await listDeadLetters();
    } catch (err) {
      $("dl-error").textContent = "purge failed: " + err.message;
    }
  }

  // ---------------------------------------------------------------- outbox and commands
  async function loadDeadOutbox() {
    try {
      const listing = await api("/api/console/outbox/dead");
      const rows = listing.documents.map((d) => {
        const row = document.createElement("tr");
        cell(row, d.key);
        cell(row, d.event_routing_key);
        cell(row, d.attempts, "num");
        cell(row, d.last_error);
        cell(row, new Date(d.created_at).toLocaleString());
        const action = cell(row, "");
        const retry = document.createElement("button");
        retry.type = "button";
        retry.className = "write";
        retry.id = "ob-retry-" + d.key;
        retry.textContent = "Retry";
        retry.setAttribute("aria-label", "retry " + d.key);
        retry.addEventListener("click", () => retryOutbox([d.key], `Move ${d.key} back to pending?`));
        action.appendChild(retry);
        return row;
      });
      $("ob-rows").replaceChildren(...rows);
      $("ob-summary").textContent = `${rows.length} dead outbox document${rows.length === 1 ? "" : "s"} shown`;
    } catch (err) {
      $("ob-summary").textContent = "outbox unavailable: " + err.message;
    }
  }

  async function retryOutbox(keys, text) {
    if (!(await confirmAction(text + " The relay publishes it again on its next round.", "Retry"))) return;
    try {
      const moved = await api("/api/console/outbox/retry", { write: true, body: keys ? { keys } : {} });
      await loadDeadOutbox();
      $("ob-summary").textContent = `moved ${moved.moved} back to pending`;
    } catch (err) {
      $("ob-summary").textContent = "retry failed: " + err.message;
    }
  }

  async function lookUp() {
    const id = $("cmd-id").value.trim();
    const out = $("cmd-result");
    if (!id) return;
    try {
      const found = await api("/api/console/commands/" + encodeURIComponent(id));
      out.replaceChildren(
        ...found.records.map((r) => {
          const box = document.createElement("div");
          box.className = "record";
          box.dataset.status = r.status;
          const facts = document.createElement("dl");
          facts.className = "facts";
          for (const [k, v] of [
            ["downstream", r.downstream],
            ["status", r.status],
            ["outbox", r.outbox_status],
            ["attempts", r.attempts],
            ["trace id", r.trace_id],
            ["correlation id", r.correlation_id],
            ["created", new Date(r.created_at).toLocaleString()],
            ["published", r.sent_at ? new Date(r.sent_at).toLocaleString() : "-"],
            ["relay error", r.last_error],
          ]) {
            const dt = document.createElement("dt");
            dt.textContent = k;
            const dd = document.createElement("dd");
            dd.textContent = v == null ? "-" : String(v);
            facts.append(dt, dd);
          }
          const reply = document.createElement("pre");
          reply.textContent = JSON.stringify(r.reply, null, 2);
          box.append(facts, reply);
          return box;
        })
      );
    } catch (err) {
      out.textContent = "not found: " + err.message;
    }
  }

  // ---------------------------------------------------------------- wiring
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    operator = $("operator").value.trim();
    sessionStorage.setItem(KEY + "operator", operator);
    const typed = $("token").value.trim();
    if (typed) {
      token = typed;
      sessionStorage.setItem(KEY + "token", token);
    }
    $("token").value = "";
    setMode();
  });
  $("token-forget").addEventListener("click", forget);
  $("dl-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    listDeadLetters();
  });
  $("dl-replay-all").addEventListener("click", () => {
    const body = { filters: selection.filters, older_than: selection.older_than };
    replay(
      body,
      `Replay every dead letter matching ${describeSelection(selection)} (${shownDepth} listed)? Each keeps its ` +
        "idempotency key and leaves the DLQ once the broker confirmed its re-publish."
    );
  });
  $("dl-purge").addEventListener("click", purge);
  $("dl-replay-one").addEventListener("click", () =>
    replay({ filters: { id: [detailId] } }, `Replay ${detailId} as is, with its idempotency key?`)
  );
  $("dl-replay-edited").addEventListener("click", () => {
    let body;
    try {
      body = JSON.parse($("dl-body").value);
    } catch (err) {
      $("dl-error").textContent = "the edited body is not JSON: " + err.message;
      $("dl-body").focus();
      return;
    }
    replay(
      { filters: { id: [detailId] }, body },
      `Replay ${detailId} with the edited body? The copy gets a NEW idempotency key derived from the original ` +
        "key and the new body (the same edit twice gives the same key)."
    );
  });
  $("ob-refresh").addEventListener("click", loadDeadOutbox);
  $("ob-retry-all").addEventListener("click", () => retryOutbox(null, "Move every dead outbox document back to pending?"));
  $("cmd-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    lookUp();
  });
  fetch("/api/status", { cache: "no-store", credentials: "omit" })
    .then((r) => r.json())
    .then((s) => ($("service").textContent = s.service_id))
    .catch(() => undefined);

  setMode();
  pollHistory();
  listDeadLetters();
  loadDeadOutbox();
})();
