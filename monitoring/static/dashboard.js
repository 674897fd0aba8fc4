/* Page logic of the monitoring dashboard (business view "/", model view "/model").
 * The server inlines each page's initial data (#initial-data), so charts draw at once;
 * the controls fetch the JSON endpoints under /api. */
"use strict";

const Dash = (() => {
  const $ = id => document.getElementById(id);
  const fmt = Charts.fmtNumber;
  const pct = v => (typeof v === "number" && isFinite(v)) ? (v * 100).toFixed(2) + "%" : "n/a";
  const num = (v, d = 4) => (typeof v === "number" && isFinite(v)) ? v.toFixed(d) : "n/a";
  const int = v => (typeof v === "number" && isFinite(v)) ? v.toLocaleString("en-US") : "n/a";

  function initial() {
    const node = $("initial-data");
    return node ? JSON.parse(node.textContent) : {};
  }

  async function getJSON(url, options) {
    const r = await fetch(url, options);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  function status(text, bad) {
    const s = $("status");
    if (s) { s.textContent = text; s.className = bad ? "status bad" : "status"; }
  }

  function options(select, values, selected, labels) {
    select.innerHTML = "";
    values.forEach((v, i) => {
      const o = document.createElement("option");
      o.value = v; o.textContent = labels ? labels[i] : v;
      if (v === selected) o.selected = true;
      select.appendChild(o);
    });
  }

  function table(container, columns, rows, emptyText) {
    container.innerHTML = "";
    if (!rows.length) {
      const p = document.createElement("p"); p.className = "empty"; p.textContent = emptyText || "nothing yet";
      container.appendChild(p); container.setAttribute("data-rows", "0"); return;
    }
    const t = document.createElement("table");
    const head = t.createTHead().insertRow();
    for (const c of columns) { const th = document.createElement("th"); th.textContent = c.label; head.appendChild(th); }
    const body = t.createTBody();
    for (const r of rows) {
      const tr = body.insertRow();
      for (const c of columns) {
        const td = tr.insertCell();
        const v = c.value ? c.value(r) : r[c.key];
        if (v instanceof Node) td.appendChild(v); else td.textContent = v === null || v === undefined ? "" : v;
        if (c.cls) { const k = c.cls(r); if (k) td.className = k; }
      }
      if (columns.onclick) tr.addEventListener("click", () => columns.onclick(r));
    }
    container.appendChild(t);
    container.setAttribute("data-rows", String(rows.length));
  }

  function kpis(container, items) {
    container.innerHTML = "";
    for (const [label, value, cls] of items) {
      const d = document.createElement("div"); d.className = "kpi" + (cls ? " " + cls : "");
      const v = document.createElement("div"); v.className = "kpi-value"; v.textContent = value;
      const l = document.createElement("div"); l.className = "kpi-label"; l.textContent = label;
      d.appendChild(v); d.appendChild(l); container.appendChild(d);
    }
  }

  function header(overview) {
    const o = overview || {};
    const info = $("loaded");
    if (info) info.textContent = o.loaded_at ? `data loaded ${o.loaded_at}` : "";
    const btn = $("refresh");
    if (btn) btn.onclick = async () => {
      status("re-reading the export…");
      try { await getJSON("/api/refresh", { method: "POST" }); location.reload(); }
      catch (e) { status(String(e), true); }
    };
  }

  /* Re-draw from the endpoint whenever one of the selects ``ids`` changes; ``url`` gets
   * their URL-encoded values in order. */
  function follow(ids, url, draw) {
    const go = async () => {
      try { draw(await getJSON(url(...ids.map(id => encodeURIComponent($(id).value))))); status(""); }
      catch (e) { status(String(e), true); }
    };
    ids.forEach(id => { $(id).onchange = go; });
  }

  const series = (s, key) => ({ name: s.name, points: s.points.map(p => ({ x: p.t, y: p[key] })) });

  /* ---------------- business view ---------------- */
  function drawBusiness(b) {
    Charts.line($("chart-impressions"), { series: b.series.map(s => series(s, "impressions")), xType: "time",
                                          yLabel: "impressions (labelled)" });
    Charts.line($("chart-clicks"), { series: b.series.map(s => series(s, "clicks")), xType: "time", yLabel: "clicks" });
    Charts.line($("chart-ctr"), { series: b.series.map(s => series(s, "ctr")), xType: "time", yLabel: "CTR",
                                  yFormat: pct });
    table($("table-slices"), [
      { label: b.slice_field === "overall" ? "traffic" : b.slice_field, key: "slice_value" },
      { label: "impressions", value: r => int(r.impressions) },
      { label: "clicks", value: r => int(r.clicks) },
      { label: "CTR", value: r => pct(r.ctr) },
    ], b.table);
  }

  /* What both pages start with: the header, the headline figures of the latest day
   * (``figures(latest, overview)`` -> [label, value, class]) and the slice-field choices. */
  function start(figures) {
    const data = initial();
    const o = data.overview || {};
    header(o);
    kpis($("kpis"), figures(o.latest || {}, o));
    options($("slice-field"), ["overall", ...(o.slice_fields || [])], "overall");
    return [data, o];
  }

  function business() {
    const [data, o] = start(l => [
      ["latest day", l.date || "n/a"], ["impressions", int(l.impressions)], ["clicks", int(l.clicks)],
      ["CTR", pct(l.ctr)], ["predictions", int(l.predictions)], ["unlabelled", int(l.unlabelled)],
    ]);
    const cache = { "day|overall": data.day, "hour|overall": data.hour };
    async function update() {
      const w = $("window").value, f = $("slice-field").value, key = `${w}|${f}`;
      try {
        if (!cache[key]) cache[key] = await getJSON(`/api/business?window=${w}&slice_field=${encodeURIComponent(f)}`);
        drawBusiness(cache[key]);
        status("");
      } catch (e) { status(String(e), true); }
    }
    $("window").onchange = update;
    $("slice-field").onchange = update;
    drawBusiness(data.day);
    document.body.setAttribute("data-ready", "1");
  }

  /* ---------------- model view ---------------- */
  function drawModel(m) {
    const s = key => m.series.map(v => series(v, key));
    Charts.line($("chart-calibration"), { series: s("calibration"), xType: "time", yLabel: "calibration (predicted / observed)",
                                          refLines: [{ y: 1, label: "1.0" }], band: [0.9, 1.1] });
    Charts.line($("chart-logloss"), { series: s("log_loss"), xType: "time", yLabel: "log-loss" });
    Charts.line($("chart-ne"), { series: s("normalized_entropy"), xType: "time", yLabel: "normalized entropy",
                                 refLines: [{ y: 1, label: "base rate" }] });
    Charts.line($("chart-auc"), { series: s("auc"), xType: "time", yLabel: "AUC" });
  }

  function drawReliability(r) {
    Charts.reliability($("chart-reliability"), { bins: r.bins });
    $("reliability-caption").textContent = r.bins.length
      ? `v${r.version}, ${r.date}: AUC ${num(r.auc, 3)}, calibration ${num(r.calibration, 3)}` +
        (r.mature ? "" : " (labels not mature yet)") : "";
  }

  function drawBins(row) {
    if (!row) { Charts.bars($("chart-bins"), { groups: [], series: [] }); $("bins-caption").textContent = ""; return; }
    Charts.bars($("chart-bins"), { groups: row.bins, series: [
      { name: "training reference", values: row.reference_share, color: "#7f7f7f" },
      { name: "live", values: row.live_share, color: "#1f77b4" }], yFormat: pct, yLabel: "share" });
    $("bins-caption").textContent = `${row.field} (v${row.model_version}): PSI ${num(row.psi, 3)} vs ${row.reference}`;
  }

  function drawDrift(d) {
    const rows = d.rows || [];
    const first = rows.length ? rows[0].model_version : null;
    const mine = rows.filter(r => r.model_version === first);
    Charts.bars($("chart-psi"), { groups: mine.map(r => r.field), series: [{ name: "PSI", values: mine.map(r => r.psi) }],
                                  threshold: 0.2, yLabel: `PSI ${d.date || ""} (v${first || "-"})`,
                                  emptyText: "no feature drift computed yet" });
    const cols = [
      { label: "version", value: r => "v" + r.model_version }, { label: "field", key: "field" },
      { label: "kind", key: "kind" }, { label: "PSI", value: r => num(r.psi, 3),
        cls: r => r.psi > 0.2 ? "hot" : (r.psi > 0.1 ? "warm" : "") },
      { label: "live rows", value: r => int(r.live_rows) }, { label: "reference", key: "reference" },
    ];
    cols.onclick = drawBins;
    table($("table-drift"), cols, rows, "no feature drift computed yet");
    drawBins(rows[0]);
  }

  function drawCompare(c) {
    const a = c.a, b = c.b, sa = (c.stats || {})[a] || {}, sb = (c.stats || {})[b] || {};
    const row = (label, f) => ({ label, a: f(sa), b: f(sb) });
    table($("table-compare"), [{ label: "", key: "label" }, { label: a ? "v" + a : "-", key: "a" },
                               { label: b ? "v" + b : "-", key: "b" }], a ? [
      row("days", s => int(s.windows)), row("impressions", s => int(s.impressions)), row("CTR", s => pct(s.ctr)),
      row("calibration", s => num(s.calibration, 3)), row("log-loss", s => num(s.log_loss, 5)),
      row("normalized entropy", s => num(s.normalized_entropy, 4)), row("AUC (mean of days)", s => num(s.auc_mean, 4)),
    ] : [], "no versions monitored yet");
    $("compare-caption").textContent = a ? (c.same_days ? `over the ${c.days.length} day(s) both versions served`
      : "the versions never served on the same day: each over its own days") : "";
    const p = (c.params || [])[0];
    $("compare-params").textContent = p ? `parameter change v${p.from_version} -> v${p.to_version}: ` +
      `L2 ${num(p.l2_change, 4)} (${pct(p.relative_l2_change)} of the old weights), ` +
      `${pct(p.appeared_share)} of non-zeros new, ${pct(p.vanished_share)} vanished (${p.basis})` : "";
  }

  function model() {
    const [data, o] = start((l, ov) => [
      ["latest day", l.date || "n/a"], ["calibration", num(l.calibration, 3),
        (l.calibration < 0.9 || l.calibration > 1.1) ? "hot" : ""],
      ["log-loss", num(l.log_loss, 5)], ["normalized entropy", num(l.normalized_entropy, 4)],
      ["AUC (mean)", num(l.auc_mean, 4)], ["labels", l.date ? (l.mature ? "final" : "still open") : "n/a",
        l.date && !l.mature ? "warm" : ""], ["alerts", int(ov.alerts), ov.alerts ? "hot" : ""],
    ]);
    // time series: window x slice
    const cache = { "day|overall|all": data.model, "hour|overall|all": data.hourly };
    async function updateValues() {
      const f = $("slice-field").value;
      if (f === "overall") { options($("slice-value"), ["all"], "all"); return; }
      const b = await getJSON(`/api/business?window=day&slice_field=${encodeURIComponent(f)}`);
      const values = b.table.map(r => r.slice_value);
      options($("slice-value"), values, values[0]);
    }
    async function update() {
      const w = $("window").value, f = $("slice-field").value, v = $("slice-value").value;
      const key = `${w}|${f}|${v}`;
      try {
        if (!cache[key]) cache[key] = await getJSON(`/api/model?window=${w}&slice_field=${encodeURIComponent(f)}` +
                                                    `&slice_value=${encodeURIComponent(v)}`);
        drawModel(cache[key]); status("");
      } catch (e) { status(String(e), true); }
    }
    options($("slice-value"), ["all"], "all");
    $("window").onchange = update;
    $("slice-value").onchange = update;
    $("slice-field").onchange = async () => { try { await updateValues(); await update(); } catch (e) { status(String(e), true); } };
    drawModel(data.model);

    // reliability diagram
    const versions = o.versions || [];
    options($("rel-version"), versions, data.reliability.version, versions.map(v => "v" + v));
    options($("rel-date"), o.dates || [], data.reliability.date);
    follow(["rel-version", "rel-date"], (v, d) => `/api/reliability?version=${v}&date=${d}`, drawReliability);
    drawReliability(data.reliability);

    // drift
    options($("drift-date"), data.drift.dates || [], data.drift.date);
    follow(["drift-date"], d => `/api/drift?date=${d}`, drawDrift);
    drawDrift(data.drift);
    table($("table-params"), [
      { label: "from → to", value: r => `v${r.from_version} → v${r.to_version}` }, { label: "basis", key: "basis" },
      { label: "L2 change", value: r => num(r.l2_change, 4) }, { label: "relative", value: r => pct(r.relative_l2_change) },
      { label: "intercept Δ", value: r => num(r.intercept_change, 4) },
      { label: "appeared", value: r => pct(r.appeared_share) }, { label: "vanished", value: r => pct(r.vanished_share) },
      { label: "top moving features", value: r => (r.top_features || []).slice(0, 5)
          .map(f => `${f.name || "#" + f.index} (${f.delta > 0 ? "+" : ""}${num(f.delta, 3)})`).join("; ") },
    ], data.params.rows, "fewer than two registered versions");

    // alerts, comparison, decisions
    table($("table-alerts"), [
      { label: "when", value: r => Charts.fmtTimeFull(r.window_start) }, { label: "severity", key: "severity",
        cls: r => r.severity === "critical" ? "hot" : "warm" },
      { label: "rule", key: "rule" }, { label: "version", value: r => "v" + r.model_version },
      { label: "slice", value: r => `${r.slice_field}=${r.slice_value}` },
      { label: "value", value: r => num(r.value, 4) }, { label: "threshold", key: "threshold" },
      { label: "webhook", key: "webhook_status" },
    ], data.alerts.rows, "no alerts");
    const cv = data.compare.versions || [];
    options($("cmp-a"), cv, data.compare.a, cv.map(v => "v" + v));
    options($("cmp-b"), cv, data.compare.b, cv.map(v => "v" + v));
    follow(["cmp-a", "cmp-b"], (a, b) => `/api/compare?a=${a}&b=${b}`, drawCompare);
    drawCompare(data.compare);
    table($("table-decisions"), [
      { label: "decided", value: r => Charts.fmtTimeFull(r.decided_at) }, { label: "action", key: "action",
        cls: r => r.action === "retrain" ? "warm" : "" },
      { label: "status", key: "attempt_status" }, { label: "dry run", value: r => r.dry_run ? "yes" : "" },
      { label: "reasons", value: r => (r.reasons || []).slice(1).join("; ") },
    ], data.decisions.rows, "no scheduler decisions yet");
    document.body.setAttribute("data-ready", "1");
  }

  return { business, model };
})();
