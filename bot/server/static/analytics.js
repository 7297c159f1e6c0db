/* Salesbot Live: the analytics view. Plain JavaScript and SVG, no build step, no library.
 *
 * A bot's funnel drawn on its flow graph (GET /api/bots/{id}/graph): each step shows how many
 * runs entered it and how many dropped off there (ended or abandoned), each edge how many runs
 * took it (GET /api/analytics/bots/{id}?version=&from=&to=). Below, the bot's split tests
 * (GET /api/bots/{id}/splits): per path entries, goals and goal rate, the winner, and the
 * confidence of a two-proportion z-test of the best path against each other path; a server
 * without that route (or a bot without splits) shows "No splits". CSV: the same funnel per day.
 *
 * Same safety rule as dashboard.js: text only through textContent, never innerHTML.
 */
(function () {
  "use strict";

  var A = { bot: null, version: null, gen: 0 };

  var L = window.SalesbotLive;  // dom.js
  var $ = L.byId, el = L.el, svg = L.svg, headers = L.authHeaders, enc = L.enc;

  function api(path) {
    return L.api("GET", path).catch(function () { return { status: 0, body: null }; });
  }

  function notice(text) {
    var n = $("an-notice");
    n.hidden = !text;
    n.textContent = text || "";
  }

  function day(offset) {
    var d = new Date(Date.now() + offset * 86400000);
    return d.toISOString().slice(0, 10);
  }

  function duration(s) {
    if (s === null || s === undefined) return "—";
    if (s < 1) return "< 1 s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 129600) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function pct(n, d) { return d ? Math.round(1000 * n / d) / 10 + " %" : "—"; }

  // ------------------------------------------------------------------ statistics
  /* The standard normal CDF (Abramowitz and Stegun 7.1.26: error below 1.5e-7). */
  function phi(z) {
    var x = Math.abs(z) / Math.SQRT2;
    var t = 1 / (1 + 0.3275911 * x);
    var y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
    return z >= 0 ? 0.5 * (1 + y) : 0.5 * (1 - y);
  }

  /* Two-proportion z-test of goals/entries of path a against path b: z and the two-sided
   * confidence that their goal rates differ (1 - p-value); null when either has no entries. */
  function zTest(a, b) {
    if (!a.entries || !b.entries) return null;
    var p1 = a.goals / a.entries, p2 = b.goals / b.entries;
    var p = (a.goals + b.goals) / (a.entries + b.entries);
    var se = Math.sqrt(p * (1 - p) * (1 / a.entries + 1 / b.entries));
    if (!se) return { z: 0, confidence: 0 };
    var z = (p1 - p2) / se;
    return { z: z, confidence: 2 * phi(Math.abs(z)) - 1 };
  }

  // ------------------------------------------------------------------ loading
  function show(on) {
    $("analytics").hidden = !on;
    $("view-analytics").classList.toggle("on", on);
    if (!on) return;
    document.querySelector(".main").hidden = true;
    $("pipeline").hidden = true;
    $("view-conversations").classList.remove("on");
    $("view-pipeline").classList.remove("on");
    if (!$("an-from").value) $("an-from").value = day(-29);
    if (!$("an-to").value) $("an-to").value = day(0);
    loadBots();
  }

  function loadBots() {
    api("/api/bots").then(function (res) {
      var sel = $("an-bot");
      sel.textContent = "";
      var bots = res.status === 200 && res.body && res.body.bots ? res.body.bots : [];
      bots.forEach(function (b) {
        var o = el("option", null, b.id + (b.name ? " · " + b.name : ""));
        o.value = b.id;
        sel.appendChild(o);
      });
      if (!bots.length) { notice(res.status === 200 ? "No bots yet." : "Could not list the bots (" + res.status + ")"); return; }
      var ids = bots.map(function (b) { return b.id; });
      if (!A.bot || ids.indexOf(A.bot) < 0) A.bot = ids[0];
      sel.value = A.bot;
      load();
    });
  }

  function query() {
    var q = "?from=" + enc($("an-from").value) + "&to=" + enc($("an-to").value);
    return A.version ? q + "&version=" + A.version : q;
  }

  function load() {
    if (!A.bot) return;
    var gen = ++A.gen;
    notice("");
    if ($("an-from").value && $("an-to").value && $("an-from").value > $("an-to").value) {
      notice("The range starts after it ends.");
      return;
    }
    var bot = enc(A.bot);
    var v = A.version ? "?version=" + A.version : "";
    Promise.all([api("/api/bots/" + bot + "/graph" + v), api("/api/analytics/bots/" + bot + query()),
                 api("/api/bots/" + bot + "/splits"), api("/api/bots/" + bot + "/versions")]).then(function (r) {
      if (gen !== A.gen) return;  // a newer choice was made meanwhile
      versions(r[3]);
      if (r[1].status !== 200) {
        notice(r[1].body && r[1].body.error ? r[1].body.error.message : "Could not load the analytics (" + r[1].status + ")");
        $("an-graph").textContent = "";
        $("an-steps").textContent = "";
      } else {
        draw(r[0].status === 200 ? r[0].body : null, r[1].body);
        table(r[1].body);
      }
      splits(r[2]);
    });
  }

  function versions(res) {
    var sel = $("an-version");
    sel.textContent = "";
    var list = res.status === 200 && res.body && res.body.versions ? res.body.versions : [];
    list.slice().reverse().forEach(function (v) {
      var o = el("option", null, "v" + v.version + (v.active ? " (active)" : ""));
      o.value = String(v.version);
      sel.appendChild(o);
      if (!A.version && v.active) A.version = v.version;
    });
    if (A.version) sel.value = String(A.version);
  }

  // ------------------------------------------------------------------ the funnel on the graph
  function draw(g, data) {
    var box = $("an-graph");
    box.textContent = "";
    var by = {};
    data.steps.forEach(function (s) { by[s.step] = s; });
    $("an-title").textContent = data.bot + " v" + data.version + " · " + data.from + " → " + data.to;
    if (!g) { box.appendChild(el("p", "muted", "No graph for this version.")); return; }
    var root = svg("svg", { viewBox: "0 0 " + g.width + " " + (g.height + 10), width: g.width, height: g.height + 10,
                            role: "img", "aria-label": "Funnel of " + data.bot, id: "an-svg" });
    var defs = svg("defs", {});
    var marker = svg("marker", { id: "an-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.appendChild(svg("path", { d: "M0,0 L10,5 L0,10 z", "class": "arrowhead" }));
    defs.appendChild(marker);
    root.appendChild(defs);
    var most = 1;
    data.steps.forEach(function (s) { Object.keys(s.left).forEach(function (t) { most = Math.max(most, s.left[t]); }); });
    g.edges.forEach(function (e) {
      var n = by[e.source] && by[e.source].left[e.target] ? by[e.source].left[e.target] : 0;
      var width = n ? 1.2 + 5 * n / most : 1;
      var p = svg("path", { d: e.path, "class": "edge" + (e.back ? " back" : "") + (n ? "" : " unused"),
                            "stroke-width": width.toFixed(1), "marker-end": "url(#an-arrow)",
                            "data-source": e.source, "data-target": e.target });
      root.appendChild(p);
      var t = svg("text", { x: e.lx, y: e.ly + 4, "class": "edge-count", "text-anchor": "middle",
                            "data-source": e.source, "data-target": e.target });
      t.textContent = String(n);
      root.appendChild(t);
    });
    g.nodes.forEach(function (n) {
      var s = by[n.id] || { entered: 0, drop_off: 0, ended: 0, abandoned: 0, waiting: 0, median_seconds: null };
      var grp = svg("g", { "class": "an-node type-" + n.type + (n.start ? " start" : ""), "data-step": n.id,
                           transform: "translate(" + n.x + "," + n.y + ")" });
      grp.appendChild(svg("rect", { width: n.w, height: n.h, rx: 8, ry: 8 }));
      var title = svg("text", { x: 10, y: 18, "class": "node-id" });
      title.textContent = n.label;
      grp.appendChild(title);
      var count = svg("text", { x: n.w - 8, y: 18, "class": "an-entered", "text-anchor": "end" });
      count.textContent = String(s.entered);
      grp.appendChild(count);
      var drop = svg("text", { x: 10, y: 40, "class": "an-drop" + (s.drop_off ? " some" : "") });
      drop.textContent = s.drop_off ? "−" + s.drop_off + " (" + pct(s.drop_off, s.entered) + ")" : "no drop-off";
      grp.appendChild(drop);
      var med = svg("text", { x: n.w - 8, y: 40, "class": "an-median", "text-anchor": "end" });
      med.textContent = duration(s.median_seconds);
      grp.appendChild(med);
      var bar = svg("rect", { x: 0, y: n.h - 4, height: 4, width: s.entered ? n.w * (s.entered - s.drop_off) / s.entered : 0,
                              "class": "an-bar" });
      grp.appendChild(bar);
      var tip = svg("title", {});
      tip.textContent = n.id + ": entered " + s.entered + ", ended " + s.ended + ", abandoned " + s.abandoned +
        ", still waiting " + s.waiting + ", median time " + duration(s.median_seconds);
      grp.appendChild(tip);
      root.appendChild(grp);
    });
    box.appendChild(root);
  }

  function table(data) {
    var tb = $("an-steps");
    tb.textContent = "";
    data.steps.forEach(function (s) {
      var tr = el("tr");
      tr.setAttribute("data-step", s.step);
      [s.step, s.entered, s.left_total, s.ended, s.abandoned, s.waiting, pct(s.drop_off, s.entered),
       duration(s.median_seconds)].forEach(function (v) { tr.appendChild(el("td", null, v)); });
      tb.appendChild(tr);
    });
  }

  // ------------------------------------------------------------------ splits
  /* The splits route's answer (docs/flows.md, "Split tests over the API") as a list of
   * {step, goal, winner, winner_by, paths: [{id, entries, goals}]}. */
  function splitList(body) {
    var list = Array.isArray(body) ? body : body && Array.isArray(body.splits) ? body.splits : [];
    return list.map(function (s) {
      var paths = Array.isArray(s.paths) ? s.paths : Object.keys(s.paths || {}).map(function (k) {
        var p = s.paths[k] || {};
        return { id: k, entries: p.entries, goals: p.goals, weight: p.weight };
      });
      // ``winner``: {path, by, at} (docs/flows.md, "Split tests over the API"), or null
      var w = s.winner && typeof s.winner === "object" ? s.winner : null;
      return { step: s.step || s.id || "?", goal: s.goal, winner: w ? String(w.path) : s.winner || null,
               winner_by: w ? w.by || null : s.winner_by || null,
               paths: paths.map(function (p) {
                 return { id: String(p.id), entries: Number(p.entries) || 0, goals: Number(p.goals) || 0, weight: p.weight };
               }) };
    });
  }

  function splits(res) {
    var box = $("an-splits");
    box.textContent = "";
    var list = res.status === 200 ? splitList(res.body) : [];
    if (!list.length) { box.appendChild(el("p", "muted an-nosplits", "No splits")); return; }
    list.forEach(function (s) {
      var card = el("div", "an-split");
      card.setAttribute("data-step", s.step);
      var head = el("h4", null, "Split " + s.step + (s.goal ? " · goal " + s.goal : ""));
      card.appendChild(head);
      var best = s.paths.slice().sort(function (a, b) {
        return (b.entries ? b.goals / b.entries : -1) - (a.entries ? a.goals / a.entries : -1);
      })[0];
      var tbl = el("table", "an-split-table");
      var hr = el("tr");
      ["Path", "Entries", "Goals", "Goal rate", "vs best: z", "Confidence"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
      tbl.appendChild(hr);
      s.paths.forEach(function (p) {
        var tr = el("tr", p.id === s.winner ? "winner" : "");
        tr.setAttribute("data-path", p.id);
        var test = best && p !== best ? zTest(best, p) : null;
        [p.id + (p.id === s.winner ? " ★" : ""), p.entries, p.goals, pct(p.goals, p.entries),
         test ? test.z.toFixed(2) : "—", test ? (100 * test.confidence).toFixed(1) + " %" : "—"].forEach(function (v, i) {
          var td = el("td", null, v);
          if (i === 5) td.className = "an-confidence";
          tr.appendChild(td);
        });
        tbl.appendChild(tr);
      });
      card.appendChild(tbl);
      card.appendChild(el("p", "an-winner", s.winner ? "Winner: " + s.winner + (s.winner_by ? " (" + s.winner_by + ")" : "")
        : "No winner yet"));
      box.appendChild(card);
    });
  }

  // ------------------------------------------------------------------ CSV
  function csv() {
    if (!A.bot) return;
    fetch("/api/analytics/bots/" + enc(A.bot) + query() + "&format=csv", { headers: headers(), credentials: "same-origin" })
      .then(function (r) {
        if (r.status !== 200) { notice("CSV export failed (" + r.status + ")"); return null; }
        return r.blob();
      }).then(function (blob) {
        if (!blob) return;
        var a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = A.bot + "-analytics.csv";
        document.body.appendChild(a);
        a.click();
        setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 0);
      });
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", function () {
    $("view-analytics").addEventListener("click", function () { show(true); });
    $("view-conversations").addEventListener("click", function () { show(false); });
    $("view-pipeline").addEventListener("click", function () { show(false); });
    $("an-bot").addEventListener("change", function () { A.bot = this.value; A.version = null; load(); });
    $("an-version").addEventListener("change", function () { A.version = Number(this.value) || null; load(); });
    $("an-from").addEventListener("change", load);
    $("an-to").addEventListener("change", load);
    $("an-reload").addEventListener("click", load);
    $("an-csv").addEventListener("click", csv);
  });

  window.salesbotAnalytics = { zTest: zTest, load: load };
})();
