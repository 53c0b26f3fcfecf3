// modelcanary dashboard: a token form, the list of rollouts, and a live page per rollout.
// Everything comes from the control API with the token as a bearer token; nothing from elsewhere.
// The token is never put in a cookie: a browser would send it to every service on the host.
"use strict";

(() => {
  const API = "/api/v1";
  const KEY = "modelcanary.token"; // sessionStorage: this tab only, gone when it closes
  const OLD_COOKIE = "mc_token"; // where releases before this one kept a copy of the token
  const POLL_MS = 1000;
  const LIST_LIMIT = 200; // the newest rollouts the list shows (the API pages through the rest)
  const AUDIT_LIMIT = 200; // the newest audit events a rollout's page shows (the HTML report has them all)
  const RANK = { viewer: 0, operator: 1, approver: 2, admin: 3 };
  const ACTIVE = ["pending", "canary", "awaiting_approval"];
  // every button, the role it needs (as the API checks it) and the phases it fits
  const ACTIONS = [
    { name: "approve", role: "approver", fits: (r) => r.phase === "awaiting_approval" },
    { name: "promote", role: "approver", fits: (r) => r.phase === "canary" || r.phase === "awaiting_approval" },
    { name: "pause", role: "operator", fits: (r) => ACTIVE.includes(r.phase) && !r.paused },
    { name: "resume", role: "operator", fits: (r) => ACTIVE.includes(r.phase) && r.paused },
    { name: "abort", role: "operator", fits: (r) => ACTIVE.includes(r.phase), danger: true },
  ];
  const COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];

  const main = document.getElementById("main");
  let me = null; // whoami: {name, role, endpoints}
  let view = 0; // bumped on every navigation, so a stale poll stops itself

  class Unauthorized extends Error {}

  // A refusal other than 401, with its HTTP status (404: no such rollout, or not this token's).
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // -- talking to the API -----------------------------------------------------------------------

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      signOut("The API refused this token (unknown or revoked): sign in again.");
      throw new Unauthorized();
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => null);
      const detail = problem && problem.detail ? problem.detail : `${response.status} ${response.statusText}`;
      throw new ApiError(detail, response.status);
    }
    return (response.headers.get("content-type") || "").includes("json") ? response.json() : response.text();
  }

  function remember(token) {
    sessionStorage.setItem(KEY, token);
  }

  function forgetOldCookie() {
    // an earlier release copied the token into this cookie, which the browser keeps until it quits
    // and sends to every port of the host: drop it (the server no longer reads it)
    document.cookie = `${OLD_COOKIE}=; path=/; SameSite=Strict; max-age=0`;
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    me = null;
    view += 1;
    showLogin(message);
  }

  // -- pages ------------------------------------------------------------------------------------

  function showLogin(message = "") {
    document.getElementById("who").textContent = "";
    document.getElementById("logout").hidden = true;
    main.replaceChildren(document.getElementById("login-template").content.cloneNode(true));
    document.getElementById("login-error").textContent = message;
    const form = document.getElementById("login");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      remember(document.getElementById("token").value.trim());
      route();
    });
    document.getElementById("token").focus();
  }

  async function route() {
    const mine = ++view;
    if (!sessionStorage.getItem(KEY)) return showLogin();
    if (!me) {
      try {
        me = await api("/whoami");
      } catch (error) {
        if (!(error instanceof Unauthorized)) showLogin(`Cannot reach the API: ${error.message}`);
        return;
      }
    }
    const scope = me.endpoints ? `endpoints ${me.endpoints.join(", ")}` : "every endpoint";
    document.getElementById("who").textContent = `${me.name} (${me.role}, ${scope})`;
    document.getElementById("logout").hidden = false;
    const match = location.hash.match(/^#\/rollouts\/(.+)$/);
    if (!match) return listPage(mine);
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      // a hand-edited or cut link (#/rollouts/%E0): say so rather than leave the last page up
      main.innerHTML = `<p><a href="#/">← all rollouts</a></p>
        <div class="card"><p id="status" class="error" role="alert">Bad link: this is no rollout's address.</p></div>`;
      return;
    }
    rolloutPage(id, mine);
  }

  // Run ``refresh`` now and about once a second while this page is shown, until it is gone (a 404:
  // ``gone`` says so, and nothing asks again).
  async function poll(mine, refresh, gone) {
    while (mine === view) {
      try {
        await refresh();
        if (mine !== view) return; // another page is shown now: its status line is not this one's
        setStatus("");
      } catch (error) {
        if (error instanceof Unauthorized || mine !== view) return;
        if (error instanceof ApiError && error.status === 404 && gone) return gone(error);
        setStatus(`update failed, retrying: ${error.message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  function setStatus(text) {
    const status = document.getElementById("status");
    if (status) status.textContent = text;
  }

  function listPage(mine) {
    main.innerHTML = `<div class="card"><h1>Rollouts</h1><p id="status" class="error" role="status"></p>
      <table id="rollouts"><thead><tr><th>rollout</th><th>endpoint</th><th>phase</th><th>weight</th>
      <th>models</th><th>updated (UTC)</th><th>reason</th></tr></thead><tbody></tbody></table>
      <p id="more" class="muted"></p></div>`;
    poll(mine, async () => {
      const rollouts = await api(`/rollouts?limit=${LIST_LIMIT}`);
      if (mine !== view) return;
      document.getElementById("more").textContent =
        rollouts.length === LIST_LIMIT
          ? `The newest ${LIST_LIMIT} rollouts; older ones: modelcanary rollout list, or the API's pages.`
          : "";
      const rows = rollouts.map(
        (r) => `<tr class="rollout" data-id="${esc(r.id)}">
          <td><a href="#/rollouts/${encodeURIComponent(r.id)}">${esc(r.name)}</a><br>
            <span class="muted">${esc(r.id)}</span></td>
          <td>${esc(r.endpoint)}</td><td>${phaseBadge(r)}</td><td class="num">${num(r.weight)}%</td>
          <td>${esc(r.baseline.name)} ${esc(r.baseline.version)} → ${esc(r.candidate.version)}</td>
          <td>${clock(r.updated_at)}</td><td>${esc(r.reason)}</td></tr>`,
      );
      main.querySelector("#rollouts tbody").innerHTML =
        rows.join("") || `<tr><td colspan="7" class="muted">No rollouts yet.</td></tr>`;
    });
  }

  function rolloutPage(id, mine) {
    const steering = RANK[me.role] >= RANK.operator;
    // the status line is in the skeleton, so an error before the first answer shows too
    main.innerHTML = `
      <p><a href="#/">← all rollouts</a></p>
      <p id="status" class="error" role="status"></p>
      <div class="card" id="head"></div>
      ${
        steering
          ? `<div class="card"><h2>Actions</h2><div id="actions"></div>
             <p id="action-error" class="error" role="alert"></p></div>`
          : ""
      }
      <div class="grid">
        <div class="card"><h2>Candidate weight over time</h2><div id="weight-chart"></div></div>
        <div class="card"><h2>Evidence against the candidate</h2><div id="evidence-chart"></div></div>
        <div class="card"><h2>Traffic per variant</h2><table id="variants"></table></div>
        <div class="card"><h2>Quality</h2><div id="quality"></div></div>
      </div>
      <div class="card"><h2>Metrics</h2><table id="metrics"></table></div>
      <div class="card"><h2>Decision log</h2><table id="history"></table></div>
      <div class="card"><h2>Audit trail</h2><table id="audit"></table></div>`;
    let shown = null; // the buttons on screen, redrawn only when they change so a click is never lost
    const missing = () => {
      main.innerHTML = `<p><a href="#/">← all rollouts</a></p>
        <div class="card"><p id="status" class="error" role="alert"></p></div>`;
      setStatus(`No rollout ${id} (no such rollout, or not visible to this token).`);
    };
    poll(
      mine,
      async () => {
        const [report, audit] = await Promise.all([
          api(`/rollouts/${encodeURIComponent(id)}/report`),
          api(`/audit?rollout=${encodeURIComponent(id)}&order=newest&limit=${AUDIT_LIMIT}`),
        ]);
        if (mine !== view) return;
        const r = report.rollout;
        renderHead(report);
        if (steering) {
          const fitting = ACTIONS.filter((a) => RANK[me.role] >= RANK[a.role] && a.fits(r));
          const key = fitting.map((a) => a.name).join(",");
          if (key !== shown) {
            shown = key;
            renderActions(id, fitting);
          }
        }
        document.getElementById("weight-chart").innerHTML = weightChart(report);
        document.getElementById("evidence-chart").innerHTML = evidenceChart(report.judgement);
        document.getElementById("variants").innerHTML = variantsTable(report);
        document.getElementById("quality").innerHTML = qualityView(report);
        document.getElementById("metrics").innerHTML = metricsTable(report.judgement);
        document.getElementById("history").innerHTML = historyTable(report);
        document.getElementById("audit").innerHTML = auditTable(audit);
      },
      missing,
    );
  }

  function renderHead(report) {
    const r = report.rollout;
    const j = report.judgement;
    document.getElementById("head").innerHTML = `
      <h1>${esc(r.name)} <span class="muted">${esc(r.id)}</span></h1>
      <p>${phaseBadge(r)} step <b id="step">${r.step + 1}</b>, candidate at <b id="weight">${num(r.weight)}%</b>
        of traffic on endpoint <b>${esc(r.endpoint)}</b>;
        verdict now <b class="${esc(j.verdict)}" id="verdict">${esc(j.verdict)}</b>
        <button type="button" id="download-report">report (HTML)</button></p>
      <p id="reason">${esc(r.reason)}</p>
      <p class="muted">baseline <code>models:/${esc(r.baseline.name)}/${esc(r.baseline.version)}</code>,
        candidate <code>models:/${esc(r.candidate.name)}/${esc(r.candidate.version)}</code>;
        judge ${esc(j.judge)}${j.hold ? `; <b>held</b>: ${esc(j.hold)}` : ""};
        <span id="live">updated ${clock(Date.now() / 1000)} UTC</span></p>`;
    document.getElementById("download-report").addEventListener("click", () => downloadReport(r.id));
  }

  function renderActions(id, fitting) {
    const box = document.getElementById("actions");
    const reason = document.getElementById("reason-input");
    const typed = reason ? reason.value : "";
    box.innerHTML =
      fitting
        .map(
          (a) => `<button type="button" id="action-${a.name}" data-command="${a.name}"
                   class="${a.danger ? "danger" : ""}">${a.name}</button>`,
        )
        .join("") +
      (fitting.length
        ? `<input id="reason-input" placeholder="reason (optional, goes into the audit log)" maxlength="2000">`
        : `<span class="muted">Nothing to do: the rollout has ended.</span>`);
    const input = document.getElementById("reason-input");
    if (input) input.value = typed;
    for (const button of box.querySelectorAll("button")) {
      button.addEventListener("click", () => steer(id, button.dataset.command));
    }
  }

  async function steer(id, command) {
    const error = document.getElementById("action-error");
    if (command === "abort" && !window.confirm("Abort this rollout? All traffic goes back to the baseline.")) return;
    const input = document.getElementById("reason-input");
    const reason = input && input.value.trim();
    error.textContent = "";
    try {
      await api(`/rollouts/${encodeURIComponent(id)}/${command}`, {
        method: "POST",
        body: reason ? { reason } : {},
      });
      if (input) input.value = "";
    } catch (failure) {
      if (!(failure instanceof Unauthorized)) error.textContent = `${command} refused: ${failure.message}`;
    }
  }

  async function downloadReport(id) {
    try {
      const page = await api(`/rollouts/${encodeURIComponent(id)}/report.html`);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([page], { type: "text/html" }));
      link.download = `${id}.html`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (error) {
      if (!(error instanceof Unauthorized)) setStatus(`report failed: ${error.message}`);
    }
  }

  // -- tables -----------------------------------------------------------------------------------

  function variantsTable(report) {
    const head = `<tr><th>variant</th><th>requests</th><th>errors</th><th>error rate</th><th>p50 ms</th>
      <th>p90 ms</th><th>p95 ms</th><th>p99 ms</th><th>labels</th></tr>`;
    const rows = ["baseline", "candidate"].map((variant) => {
      const v = (report.variants || {})[variant] || {
        requests: report.requests[variant],
        labels: report.labels[variant],
        latency_ms: {},
      };
      const latency = ["p50", "p90", "p95", "p99"].map((q) => `<td class="num">${num(v.latency_ms[q])}</td>`);
      return `<tr class="variant" data-variant="${variant}"><th>${variant}</th>
        <td class="num">${v.requests}</td><td class="num">${v.errors ?? "-"}</td>
        <td class="num">${v.error_rate == null ? "-" : (100 * v.error_rate).toFixed(2) + "%"}</td>
        ${latency.join("")}<td class="num">${v.labels}</td></tr>`;
    });
    return head + rows.join("");
  }

  function qualityView(report) {
    const quality = report.judgement.metrics.filter((m) => m.kind === "quality");
    const labels = `labels joined so far: baseline <b>${report.labels.baseline}</b>,
      candidate <b>${report.labels.candidate}</b>`;
    if (!quality.length) return `<p>No quality metric in this rollout's spec; ${labels}.</p>`;
    const rows = quality.map(
      (m) => `<tr class="quality"><td>${esc(m.name)} (${esc(m.unit)})</td>
        <td class="num">${num(m.baseline)} <span class="muted">on ${m.baseline_samples}</span></td>
        <td class="num">${num(m.candidate)} <span class="muted">on ${m.candidate_samples}</span></td>
        <td class="num">${num(m.limit)}</td><td class="${esc(m.verdict)}">${esc(m.verdict)}</td></tr>`,
    );
    return `<table><tr><th>measure</th><th>baseline</th><th>candidate</th><th>limit</th><th>verdict</th></tr>
      ${rows.join("")}</table><p class="muted">${labels}.</p>`;
  }

  function metricsTable(judgement) {
    const head = `<tr><th>metric</th><th>verdict</th><th>baseline</th><th>candidate</th><th>limit</th>
      <th>bound</th><th>samples b/c</th><th>e-value</th><th>why</th></tr>`;
    const rows = judgement.metrics.map(
      (m) => `<tr class="metric" data-metric="${esc(m.name)}"><td>${esc(m.name)}
          <span class="muted">(${esc(m.kind)})</span></td><td class="${esc(m.verdict)}">${esc(m.verdict)}</td>
        <td class="num">${num(m.baseline)}</td><td class="num">${num(m.candidate)}</td>
        <td class="num">${num(m.limit)}</td><td class="num">${num(m.bound)}</td>
        <td class="num">${m.baseline_samples}/${m.candidate_samples}</td><td class="num">${num(m.e_value)}</td>
        <td>${esc(m.reason)}</td></tr>`,
    );
    return head + rows.join("");
  }

  function historyTable(report) {
    const start = report.rollout.created_at;
    const head = `<tr><th>at (UTC)</th><th>actor</th><th>phase</th><th>step</th><th>weight</th><th>reason</th></tr>`;
    const rows = report.history
      .slice()
      .reverse()
      .map((t) => {
        const change = t.source === t.target ? t.target : `${t.source} → ${t.target}`;
        return `<tr class="transition"><td>${clock(t.at)} <span class="muted">+${duration(t.at - start)}</span></td>
          <td class="actor">${esc(t.actor)}</td><td>${esc(change)}${t.paused ? " (paused)" : ""}</td>
          <td>${t.step + 1}</td><td class="num">${num(t.weight)}%</td><td>${esc(t.reason)}</td></tr>`;
      });
    return head + rows.join("");
  }

  function auditTable(events) {
    // newest first, as the API sends them; only the newest AUDIT_LIMIT
    const head = `<tr><th>id</th><th>at (UTC)</th><th>actor</th><th>action</th><th>detail</th><th>hash</th></tr>`;
    const more =
      events.length === AUDIT_LIMIT
        ? `<tr><td colspan="6" class="muted">The newest ${AUDIT_LIMIT} events; the report (HTML) has them all.</td></tr>`
        : "";
    const rows = events.map(
      (e) => `<tr class="audit"><td>${e.id}</td><td>${clock(e.at)}</td><td class="actor">${esc(e.actor)}</td>
        <td>${esc(e.action)}</td><td><code>${esc(JSON.stringify(e.detail))}</code></td>
        <td class="hash" title="${esc(e.hash)}">${esc(e.hash.slice(0, 16))}…</td></tr>`,
    );
    return head + rows.join("") + more;
  }

  // -- charts (inline SVG) ----------------------------------------------------------------------

  const W = 520;
  const H = 200;
  const L = 48;
  const R = 12;
  const T = 10;
  const B = 28;

  function weightChart(report) {
    const r = report.rollout;
    const start = r.created_at;
    const ended = !ACTIVE.includes(r.phase);
    const end = Math.max((ended ? r.updated_at : Date.now() / 1000) - start, 1);
    const points = [[0, 0], ...report.history.map((t) => [t.at - start, t.weight])];
    const x = (s) => L + ((W - L - R) * Math.min(s, end)) / end;
    const y = (w) => T + ((H - T - B) * (100 - w)) / 100;
    let path = `M${x(0)},${y(0)}`;
    for (const [at, weight] of points.slice(1)) path += `H${x(at).toFixed(1)}V${y(weight).toFixed(1)}`;
    path += `H${x(end).toFixed(1)}`;
    const grid = [0, 25, 50, 75, 100]
      .map((w) => `<line x1="${L}" x2="${W - R}" y1="${y(w)}" y2="${y(w)}" stroke="#eee"/>
        <text x="${L - 4}" y="${y(w) + 4}" text-anchor="end">${w}%</text>`)
      .join("");
    const frame = `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#ddd"/>`;
    return svg("candidate weight over time", frame + grid + timeAxis(end, x) +
      `<path id="weight-line" d="${path}" fill="none" stroke="${COLOURS[0]}" stroke-width="2"/>`);
  }

  function evidenceChart(judgement) {
    const threshold = judgement.threshold;
    const rows = judgement.metrics.filter((m) => m.e_value != null).map((m) => [m.name, m.e_value]);
    if (judgement.e_value != null) rows.push(["all (weighted)", judgement.e_value]);
    if (threshold == null || !rows.length) {
      return `<p class="muted">The ${esc(judgement.judge)} judge reports no e-values; see each metric's verdict.</p>`;
    }
    const low = -1;
    const high = Math.log10(Math.max(threshold, ...rows.map(([, e]) => e)) * 3);
    const left = 110;
    const x = (e) => left + ((W - left - R) * (Math.log10(Math.max(e, 0.1)) - low)) / (high - low);
    const bar = 18;
    const height = T + rows.length * (bar + 8) + B;
    const parts = rows.map(([name, e], i) => {
      const top = T + i * (bar + 8);
      const colour = e >= threshold ? "#d62728" : COLOURS[i % COLOURS.length];
      return `<g class="evidence" data-metric="${esc(name)}" data-e-value="${e}">
        <text x="${left - 6}" y="${top + bar - 5}" text-anchor="end">${esc(name)}</text>
        <rect x="${left}" y="${top}" width="${Math.max(x(e) - left, 1).toFixed(1)}" height="${bar}"
          fill="${colour}" opacity="0.8"><title>e-value ${num(e)}</title></rect>
        <text x="${Math.min(x(e) + 4, W - R - 30).toFixed(1)}" y="${top + bar - 5}">${num(e)}</text></g>`;
    });
    const bottom = height - B;
    const ticks = [];
    for (let p = low; p <= Math.floor(high); p++) {
      ticks.push(`<line x1="${x(10 ** p)}" x2="${x(10 ** p)}" y1="${T}" y2="${bottom}" stroke="#eee"/>
        <text x="${x(10 ** p)}" y="${bottom + 14}" text-anchor="middle">${10 ** p}</text>`);
    }
    const line = `<line id="threshold" x1="${x(threshold)}" x2="${x(threshold)}" y1="${T - 4}" y2="${bottom}"
        stroke="#d62728" stroke-dasharray="6 4"/>
      <text x="${x(threshold) - 4}" y="${bottom + 24}" text-anchor="end" fill="#d62728">1/alpha = ${num(threshold)}
        (rolls back)</text>`;
    return svg("each metric's e-value against 1/alpha", ticks.join("") + parts.join("") + line, height + 10);
  }

  function timeAxis(end, x) {
    return [0, 1, 2, 3, 4]
      .map((i) => {
        const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle"; // the ends stay inside the frame
        return `<text x="${x((end * i) / 4)}" y="${H - B + 16}" text-anchor="${anchor}">${duration((end * i) / 4)}</text>`;
      })
      .join("");
  }

  function svg(label, body, height = H) {
    return `<svg role="img" aria-label="${esc(label)}" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}">
      ${body}</svg>`;
  }

  // -- formatting -------------------------------------------------------------------------------

  function phaseBadge(r) {
    const label = r.phase.replace("_", " ") + (r.paused ? " (paused)" : "");
    return `<span class="phase ${esc(r.phase)}${r.paused ? " paused" : ""}" data-phase="${esc(r.phase)}">${esc(label)}</span>`;
  }

  function esc(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  }

  function num(value) {
    if (value == null) return "-";
    return Number.isInteger(value) ? String(value) : Number(value.toPrecision(4)).toString();
  }

  function clock(at) {
    return new Date(at * 1000).toISOString().slice(11, 19);
  }

  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }

  forgetOldCookie();
  document.getElementById("logout").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", route);
  route();
})();
