/* Small SVG charts for the monitoring dashboard: no dependencies, no network.
 *
 * Every function draws into a container element and sets on it
 *   data-points="N"  the number of data points drawn (0 when there was nothing to draw)
 *   data-series="K"  the number of series
 * so a headless browser check can tell a drawn chart from an empty one.
 */
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf"];

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function finite(v) { return typeof v === "number" && isFinite(v); }

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
    const raw = (hi - lo) / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
    const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step / 2; v += step) ticks.push(+v.toPrecision(12));
    return { lo: start, hi: end, ticks };
  }

  function fmtNumber(v) {
    if (!finite(v)) return "n/a";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
    if (a >= 1) return v.toFixed(2);
    if (a === 0) return "0";
    return v.toPrecision(3);
  }

  function fmtTime(ms, spanMs) {
    const d = new Date(ms);
    const p = n => String(n).padStart(2, "0");
    const day = `${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}`;
    if (spanMs <= 12 * 3600000) return `${day} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
    return spanMs <= 2 * 86400000 ? `${day} ${p(d.getUTCHours())}h` : day;
  }

  function fmtTimeFull(ms) {
    return new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  function prepare(container, height) {
    container.innerHTML = "";
    container.classList.add("chart");
    const width = Math.max(container.clientWidth || 0, 320);
    const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    container.appendChild(svg);
    return { svg, width, height };
  }

  function legend(container, series) {
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      const sw = document.createElement("i");
      sw.style.background = s.color || PALETTE[i % PALETTE.length];
      item.appendChild(sw);
      item.appendChild(document.createTextNode(s.name));
      box.appendChild(item);
    });
    container.insertBefore(box, container.firstChild);
  }

  function empty(container, message) {
    container.innerHTML = "";
    container.classList.add("chart");
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = message || "no data yet";
    container.appendChild(p);
    container.setAttribute("data-points", "0");
    container.setAttribute("data-series", "0");
  }

  function axes(g, x, y, opts) {
    const { left, right, top, bottom } = opts.box;
    el("line", { x1: left, x2: right, y1: bottom, y2: bottom, class: "axis" }, g);
    el("line", { x1: left, x2: left, y1: top, y2: bottom, class: "axis" }, g);
    for (const t of opts.yTicks) {
      const yy = y(t);
      el("line", { x1: left, x2: right, y1: yy, y2: yy, class: "grid" }, g);
      const label = el("text", { x: left - 6, y: yy + 4, "text-anchor": "end", class: "tick" }, g);
      label.textContent = (opts.yFormat || fmtNumber)(t);
    }
    for (const t of opts.xTicks) {
      const xx = x(t.v);
      el("line", { x1: xx, x2: xx, y1: bottom, y2: bottom + 4, class: "axis" }, g);
      const label = el("text", { x: xx, y: bottom + 16, "text-anchor": "middle", class: "tick" }, g);
      label.textContent = t.label;
    }
    if (opts.yLabel) {
      const label = el("text", { x: left + 4, y: top - 4, class: "axis-label" }, g);
      label.textContent = opts.yLabel;
    }
  }

  /* line(container, {series: [{name, points: [{x, y, tip?}]}], xType: "time"|"linear",
   *                  yLabel, yFormat, refLines: [{y, label}], band: [lo, hi], height, xDomain, yDomain,
   *                  diagonal, connect (default true)}) */
  function line(container, spec) {
    const series = (spec.series || []).map((s, i) => ({
      ...s, color: s.color || PALETTE[i % PALETTE.length],
      points: (s.points || []).filter(p => finite(p.x) && finite(p.y)),
    })).filter(s => s.points.length);
    const n = series.reduce((a, s) => a + s.points.length, 0);
    if (!n) { empty(container, spec.emptyText); return 0; }
    const height = spec.height || 240;
    const { svg, width } = prepare(container, height);
    const box = { left: 58, right: width - 14, top: 18, bottom: height - 26 };
    const xs = series.flatMap(s => s.points.map(p => p.x));
    let ys = series.flatMap(s => s.points.map(p => p.y));
    for (const r of spec.refLines || []) ys.push(r.y);
    if (spec.band) ys.push(...spec.band);
    let [xlo, xhi] = spec.xDomain || [Math.min(...xs), Math.max(...xs)];
    if (xhi === xlo) { xlo -= spec.xType === "time" ? 3600000 : 0.5; xhi += spec.xType === "time" ? 3600000 : 0.5; }
    const yt = niceTicks(...(spec.yDomain || [Math.min(...ys), Math.max(...ys)]), 5);
    const x = v => box.left + (v - xlo) / (xhi - xlo) * (box.right - box.left);
    const y = v => box.bottom - (v - yt.lo) / (yt.hi - yt.lo) * (box.bottom - box.top);
    let xTicks;
    if (spec.xType === "time") {
      const span = xhi - xlo, count = Math.min(6, Math.max(2, Math.floor((box.right - box.left) / 110)));
      xTicks = Array.from({ length: count }, (_, i) => xlo + i * span / (count - 1))
        .map(v => ({ v, label: fmtTime(v, span) }));
    } else {
      xTicks = niceTicks(xlo, xhi, 5).ticks.filter(v => v >= xlo && v <= xhi)
        .map(v => ({ v, label: (spec.xFormat || fmtNumber)(v) }));
    }
    const g = el("g", {}, svg);
    if (spec.band) {
      const [lo, hi] = spec.band;
      el("rect", { x: box.left, width: box.right - box.left, y: y(Math.min(hi, yt.hi)),
                   height: Math.max(0, y(Math.max(lo, yt.lo)) - y(Math.min(hi, yt.hi))), class: "band" }, g);
    }
    axes(g, x, y, { box, yTicks: yt.ticks, xTicks, yFormat: spec.yFormat, yLabel: spec.yLabel });
    for (const r of spec.refLines || []) {
      el("line", { x1: box.left, x2: box.right, y1: y(r.y), y2: y(r.y), class: "ref" }, g);
      if (r.label) {
        const t = el("text", { x: box.right - 4, y: y(r.y) - 4, "text-anchor": "end", class: "ref-label" }, g);
        t.textContent = r.label;
      }
    }
    if (spec.diagonal) {
      const lo = Math.max(xlo, yt.lo), hi = Math.min(xhi, yt.hi);
      el("line", { x1: x(lo), y1: y(lo), x2: x(hi), y2: y(hi), class: "ref" }, g);
    }
    for (const s of series) {
      const pts = [...s.points].sort((a, b) => a.x - b.x);
      if (spec.connect !== false && pts.length > 1) {
        const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join("");
        el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, class: "series" }, g);
      }
      for (const p of pts) {
        const c = el("circle", { cx: x(p.x).toFixed(1), cy: y(p.y).toFixed(1), r: p.r || 3, fill: s.color,
                                 class: p.hollow ? "point hollow" : "point" }, g);
        if (p.hollow) { c.setAttribute("fill", "white"); c.setAttribute("stroke", s.color); }
        const title = el("title", {}, c);
        title.textContent = p.tip || `${s.name}: ${spec.xType === "time" ? fmtTimeFull(p.x) : fmtNumber(p.x)} -> ` +
          `${(spec.yFormat || fmtNumber)(p.y)}`;
      }
    }
    if (series.length > 1 || spec.legend) legend(container, series);
    container.setAttribute("data-points", String(n));
    container.setAttribute("data-series", String(series.length));
    return n;
  }

  /* bars(container, {groups: [label...], series: [{name, values: [...]}], yFormat, yLabel, height, threshold}) */
  function bars(container, spec) {
    const groups = spec.groups || [];
    const series = (spec.series || []).map((s, i) => ({ ...s, color: s.color || PALETTE[i % PALETTE.length] }));
    const n = series.reduce((a, s) => a + s.values.filter(finite).length, 0);
    if (!groups.length || !n) { empty(container, spec.emptyText); return 0; }
    const height = spec.height || 240;
    const { svg, width } = prepare(container, height);
    const box = { left: 58, right: width - 14, top: 18, bottom: height - 64 };
    const vals = series.flatMap(s => s.values.filter(finite));
    if (finite(spec.threshold)) vals.push(spec.threshold);
    const yt = niceTicks(Math.min(0, ...vals), Math.max(...vals), 5);
    const y = v => box.bottom - (v - yt.lo) / (yt.hi - yt.lo) * (box.bottom - box.top);
    const gw = (box.right - box.left) / groups.length;
    const bw = Math.max(1, gw * 0.8 / series.length);
    const g = el("g", {}, svg);
    axes(g, v => v, y, { box, yTicks: yt.ticks, xTicks: [], yFormat: spec.yFormat, yLabel: spec.yLabel });
    groups.forEach((label, gi) => {
      series.forEach((s, si) => {
        const v = s.values[gi];
        if (!finite(v)) return;
        const x0 = box.left + gi * gw + gw * 0.1 + si * bw;
        const top = y(Math.max(v, 0)), base = y(Math.min(v, 0));
        const hot = finite(spec.threshold) && v > spec.threshold;
        const r = el("rect", { x: x0.toFixed(1), y: top.toFixed(1), width: bw.toFixed(1),
                               height: Math.max(0.5, base - top).toFixed(1), fill: hot ? "#d62728" : s.color,
                               class: "bar" }, g);
        el("title", {}, r).textContent = `${label} ${s.name}: ${(spec.yFormat || fmtNumber)(v)}`;
      });
      const t = el("text", { x: 0, y: 0, "text-anchor": "end", class: "tick",
                             transform: `translate(${(box.left + gi * gw + gw / 2).toFixed(1)},${box.bottom + 10}) rotate(-35)` }, g);
      t.textContent = String(label).length > 18 ? String(label).slice(0, 17) + "…" : label;
    });
    if (finite(spec.threshold)) {
      el("line", { x1: box.left, x2: box.right, y1: y(spec.threshold), y2: y(spec.threshold), class: "ref" }, g);
    }
    if (series.length > 1) legend(container, series);
    container.setAttribute("data-points", String(n));
    container.setAttribute("data-series", String(series.length));
    return n;
  }

  /* reliability(container, {bins: [{mean_predicted, observed_rate, count}]}) */
  function reliability(container, spec) {
    const bins = (spec.bins || []).filter(b => finite(b.mean_predicted) && finite(b.observed_rate));
    if (!bins.length) { empty(container, spec.emptyText || "no labelled predictions"); return 0; }
    const maxCount = Math.max(...bins.map(b => b.count || 1));
    const hi = Math.max(...bins.map(b => Math.max(b.mean_predicted, b.observed_rate))) * 1.05 || 1;
    return line(container, {
      series: [{ name: "observed click rate per bin of predicted CTR", points: bins.map(b => ({
        x: b.mean_predicted, y: b.observed_rate, r: 2.5 + 4 * Math.sqrt((b.count || 1) / maxCount),
        tip: `predicted ${b.mean_predicted.toPrecision(3)}, observed ${b.observed_rate.toPrecision(3)}, ` +
             `${b.count} impressions`,
      })) }],
      xDomain: [0, hi], yDomain: [0, hi], diagonal: true, legend: true, height: spec.height || 280,
      yLabel: "observed CTR", xFormat: v => v.toPrecision(2), yFormat: v => v.toPrecision(2),
    });
  }

  return { line, bars, reliability, fmtNumber, fmtTimeFull, PALETTE };
})();
