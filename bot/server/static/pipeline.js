/* Salesbot Live: the pipeline view. Plain JavaScript, no build step, no library.
 *
 * Stages are columns (GET /api/crm/pipelines), leads are cards paged per column
 * (GET /api/crm/leads?pipeline=&stage=&limit=&offset=), dragging a card to another column moves
 * the lead (PATCH /api/crm/leads/{id}: the CRM emits lead.stage_changed and the rules fire).
 * Each column lists the rules and triggers of the pipeline's automation document
 * (GET /api/automations, /api/automations/{id}) with their counts (/api/automations/{id}/counts).
 * A card opens a side panel with the lead and its history (GET /api/leads/{id}/events).
 *
 * Same safety rule as dashboard.js: text only through textContent, never innerHTML.
 */
(function () {
  "use strict";

  var PAGE = 20;   // cards fetched per column and per "More": 10k leads in a stage stay cheap
  var P = { pipelines: [], pipeline: null, doc: null, counts: {}, columns: {}, lead: null, gen: 0 };

  var L = window.SalesbotLive;  // dom.js
  var $ = L.byId, el = L.el, api = L.api, errorText = L.errorText;

  function notice(text) {
    var n = $("pl-notice");
    n.hidden = !text;
    n.textContent = text || "";
  }

  function ago(ts) {
    if (!ts) return "";
    var s = Math.max(0, Math.floor(Date.now() / 1000 - ts));
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  function when(ts) {
    return ts ? new Date(ts * 1000).toLocaleString() : "";
  }

  var enc = L.enc;

  // ------------------------------------------------------------------ switching views
  function show(pipeline) {
    document.querySelector(".main").hidden = pipeline;
    $("pipeline").hidden = !pipeline;
    $("view-conversations").classList.toggle("on", !pipeline);
    $("view-pipeline").classList.toggle("on", pipeline);
    if (pipeline) load();
  }

  // ------------------------------------------------------------------ loading
  function load() {
    var gen = ++P.gen;
    notice(null);
    return api("GET", "/api/crm/pipelines").then(function (res) {
      if (gen !== P.gen) return;
      if (res.status !== 200) { notice(errorText(res)); $("pl-columns").textContent = ""; return; }
      P.pipelines = res.body.pipelines || [];
      var sel = $("pl-pipeline");
      var names = P.pipelines.map(function (p) { return p.name; });
      if (!P.pipeline || names.indexOf(P.pipeline) < 0) P.pipeline = names[0] || null;
      sel.textContent = "";
      names.forEach(function (n) { var o = el("option", null, n); o.value = n; sel.appendChild(o); });
      if (P.pipeline) sel.value = P.pipeline;
      return loadAutomations(gen).then(function () { if (gen === P.gen) render(); });
    });
  }

  /* The pipeline's active automation document (one per pipeline) and its counts; none is fine. */
  function loadAutomations(gen) {
    P.doc = null; P.counts = {};
    return api("GET", "/api/automations").then(function (res) {
      if (res.status !== 200 || gen !== P.gen) return;
      var ids = (res.body.automations || []).map(function (a) { return a.id; });
      return Promise.all(ids.map(function (id) { return api("GET", "/api/automations/" + enc(id)); }))
        .then(function (docs) {
          var found = docs.filter(function (r) {
            return r.status === 200 && r.body.automations && r.body.automations.pipeline === P.pipeline;
          })[0];
          if (!found || gen !== P.gen) return;
          P.doc = { id: found.body.id, version: found.body.version, automations: found.body.automations };
          return loadCounts();
        });
    });
  }

  function loadCounts() {
    if (!P.doc) return Promise.resolve();
    return api("GET", "/api/automations/" + enc(P.doc.id) + "/counts").then(function (res) {
      if (res.status === 200) P.counts = res.body.counts || {};
    });
  }

  function stagesOf(name) {
    var p = P.pipelines.filter(function (x) { return x.name === name; })[0];
    return p ? p.stages : [];
  }

  // ------------------------------------------------------------------ columns
  function render() {
    var box = $("pl-columns");
    box.textContent = "";
    P.columns = {};
    $("pl-doc").textContent = P.doc ? "Automations: " + P.doc.id + " v" + P.doc.version : "No automation document for this pipeline";
    stagesOf(P.pipeline).forEach(function (stage) {
      var col = el("section", "pl-col");
      col.dataset.stage = stage;
      var head = el("header", "pl-head");
      var title = el("div", "pl-title");
      title.appendChild(el("h3", null, stage));
      var total = el("span", "chip pl-total", "…");
      title.appendChild(total);
      head.appendChild(title);
      head.appendChild(rulesOf(stage));
      col.appendChild(head);
      var list = el("ol", "pl-cards");
      col.appendChild(list);
      var more = el("button", "ghost more pl-more", "More");
      more.type = "button";
      more.hidden = true;
      more.addEventListener("click", function () { page(stage); });
      col.appendChild(more);
      col.addEventListener("dragover", function (e) { e.preventDefault(); col.classList.add("pl-over"); });
      col.addEventListener("dragleave", function () { col.classList.remove("pl-over"); });
      col.addEventListener("drop", function (e) {
        e.preventDefault();
        col.classList.remove("pl-over");
        var id = e.dataTransfer.getData("text/plain");
        if (id) move(id, stage);
      });
      box.appendChild(col);
      P.columns[stage] = { col: col, list: list, more: more, total: total, offset: 0, count: 0 };
      page(stage);
    });
  }

  /* The rules and triggers of a stage with their counts: fired, acted, waiting (delayed or
   * waiting for an active window). */
  function rulesOf(stage) {
    var ul = el("ul", "pl-rules");
    if (!P.doc) return ul;
    var doc = P.doc.automations;
    (doc.rules || []).filter(function (r) { return r.stage === stage; }).forEach(function (r) {
      var on = Array.isArray(r.on) ? r.on.join(", ") : String(r.on || "");
      ul.appendChild(ruleRow("rule", r.id, on, r));
    });
    (doc.triggers || []).filter(function (t) { return t.stage === stage; }).forEach(function (t) {
      ul.appendChild(ruleRow("trigger", t.id, "← " + t.on, t));
    });
    return ul;
  }

  function ruleRow(kind, id, on, item) {
    var li = el("li", "pl-rule " + kind);
    li.dataset.rule = id;
    var name = el("div", "pl-rule-name");
    name.appendChild(el("strong", null, id));
    name.appendChild(el("span", "muted", " " + on));
    if (item.delay) name.appendChild(el("span", "muted", " · after " + item.delay));
    li.appendChild(name);
    var c = P.counts[id] || {};
    var n = el("div", "pl-counts");
    [["fired", c.fired || 0], ["acted", c.acted || 0], ["waiting", (c.delayed || 0) + (c.waiting_window || 0)]]
      .forEach(function (pair) {
        var s = el("span", "pl-count", pair[0] + " " + pair[1]);
        s.dataset.kind = pair[0];
        s.dataset.n = String(pair[1]);
        n.appendChild(s);
      });
    li.appendChild(n);
    li.title = kind + " " + id;
    return li;
  }

  function page(stage) {
    var c = P.columns[stage];
    if (!c) return Promise.resolve();
    var gen = P.gen;
    var q = "/api/crm/leads?pipeline=" + enc(P.pipeline) + "&stage=" + enc(stage) + "&limit=" + PAGE + "&offset=" + c.offset;
    c.more.disabled = true;
    return api("GET", q).then(function (res) {
      if (gen !== P.gen || P.columns[stage] !== c) return;
      c.more.disabled = false;
      if (res.status !== 200) { notice(errorText(res)); return; }
      res.body.leads.forEach(function (lead) { c.list.appendChild(card(lead)); });
      c.offset += res.body.leads.length;
      c.count = res.body.total;
      c.total.textContent = String(c.count);
      c.more.hidden = res.body.next_offset === null || res.body.next_offset === undefined;
      c.more.textContent = "More (" + (c.count - c.offset) + ")";
    });
  }

  function card(lead) {
    var li = el("li", "pl-card");
    li.draggable = true;
    li.tabIndex = 0;
    li.dataset.lead = lead.id;
    fillCard(li, lead);
    li.addEventListener("dragstart", function (e) {
      e.dataTransfer.setData("text/plain", lead.id);
      e.dataTransfer.effectAllowed = "move";
    });
    li.addEventListener("click", function () { openLead(lead.id); });
    li.addEventListener("keydown", function (e) { if (e.key === "Enter") openLead(lead.id); });
    return li;
  }

  function fillCard(li, lead) {
    li.textContent = "";
    li.appendChild(el("div", "pl-name", lead.name || "Lead #" + lead.id));
    var contact = lead.contact || null;
    if (contact && (contact.name || contact.phone || contact.email)) {
      li.appendChild(el("div", "muted", contact.name || contact.phone || contact.email));
    }
    var line = el("div", "pl-line");
    line.appendChild(el("span", "pl-price", lead.price ? Number(lead.price).toLocaleString() : "0"));
    if (lead.responsible) line.appendChild(el("span", "chip", lead.responsible));
    var since = lead.stage_since || lead.updated_at;
    if (since) {
      var t = el("span", "muted pl-since", ago(since));
      t.title = (lead.stage_since ? "In this stage since " : "Updated ") + when(since);
      line.appendChild(t);
    }
    li.appendChild(line);
    if ((lead.tags || []).length) {
      var tg = el("div", "tags");
      lead.tags.forEach(function (t) { tg.appendChild(el("span", "tag", t)); });
      li.appendChild(tg);
    }
  }

  // ------------------------------------------------------------------ moving a card
  function move(id, stage) {
    var li = document.querySelector('.pl-card[data-lead="' + CSS.escape(id) + '"]');
    var from = li ? li.closest(".pl-col").dataset.stage : null;
    if (from === stage) return;
    notice(null);
    api("PATCH", "/api/crm/leads/" + enc(id), { pipeline: P.pipeline, stage: stage }).then(function (res) {
      if (res.status !== 200) { notice("Could not move the lead: " + errorText(res)); return; }
      var to = P.columns[stage];
      if (li) li.remove();
      if (from && P.columns[from]) {
        var f = P.columns[from];
        f.count = Math.max(0, f.count - 1); f.offset = Math.max(0, f.offset - 1);
        f.total.textContent = String(f.count);
      }
      if (to) {
        var fresh = card(res.body);
        to.list.insertBefore(fresh, to.list.firstChild);
        to.count += 1; to.offset += 1;
        to.total.textContent = String(to.count);
      }
      notice("Moved " + (res.body.name || id) + " to " + stage + ".");
      if (P.lead === id) openLead(id);
    });
  }

  // ------------------------------------------------------------------ the lead panel
  function openLead(id) {
    P.lead = id;
    var panel = $("pl-lead");
    panel.hidden = false;
    panel.dataset.lead = id;
    return Promise.all([api("GET", "/api/crm/leads/" + enc(id)), api("GET", "/api/leads/" + enc(id) + "/events")])
      .then(function (r) {
        if (P.lead !== id) return;
        renderLead(r[0]);
        renderHistory(r[1]);
      });
  }

  function renderLead(res) {
    var body = $("pl-lead-body");
    body.textContent = "";
    if (res.status !== 200) { body.appendChild(el("p", "error", errorText(res))); return; }
    var l = res.body;
    body.appendChild(el("div", "lead-name", l.name || "Lead #" + l.id));
    var kv = el("dl", "kv");
    function row(k, v) { kv.appendChild(el("dt", null, k)); kv.appendChild(el("dd", null, v)); }
    row("Stage", l.pipeline + " / " + l.stage);
    row("Since", when(l.stage_since || l.updated_at));
    row("Price", String(l.price || 0));
    row("Responsible", l.responsible || "—");
    (l.contacts || []).slice(0, 3).forEach(function (c) {
      row("Contact", [c.name, c.phone, c.email].filter(Boolean).join(" · ") || "#" + c.id);
    });
    body.appendChild(kv);
    if ((l.tags || []).length) {
      var tg = el("div", "tags");
      l.tags.forEach(function (t) { tg.appendChild(el("span", "tag", t)); });
      body.appendChild(tg);
    }
    var main = (l.contacts || [])[0];
    if (main && window.salesbotProcesses) {  // processes.js: the main contact's processes, with Stop
      body.appendChild(el("h4", null, "Processes"));
      var procs = el("ul", "processes");
      body.appendChild(procs);
      window.salesbotProcesses.list(String(main.id), procs);
    }
  }

  function pos(v) { return v && typeof v === "object" ? String(v.stage) : String(v); }

  /* Events and what the rules did, newest first: an automation entry names its rule (or
   * trigger), the outcome and the detail. */
  function renderHistory(res, into) {
    var ol = into || $("pl-history");
    ol.textContent = "";
    if (res.status !== 200) { ol.appendChild(el("li", "error", errorText(res))); return; }
    var events = (res.body.events || []).slice().reverse();
    if (!events.length) ol.appendChild(el("li", "muted", "Nothing yet."));
    events.forEach(function (e) {
      var li = el("li", "pl-h " + (e.role || ""));
      li.appendChild(el("span", "muted pl-when", when(e.at)));
      if (e.role === "automation") {
        li.appendChild(el("strong", null, (e.trigger ? "Trigger " : "Rule ") + (e.rule || e.trigger || "?")));
        li.appendChild(el("span", "chip", e.outcome || ""));
        if (e.detail) li.appendChild(el("span", null, " " + e.detail));
      } else if (e.role === "event") {
        li.appendChild(el("strong", null, e.type));
        var d = e.data || {};
        var what = d.to ? (d.from ? pos(d.from) + " → " + pos(d.to) : "→ " + pos(d.to)) : (d.tag ? d.tag : "");
        if (what) li.appendChild(el("span", null, " " + what));
        if (e.source) li.appendChild(el("span", "muted", " (" + e.source + ")"));
      } else {
        li.appendChild(el("span", null, e.text || e.event || ""));
      }
      ol.appendChild(li);
    });
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", function () {
    $("view-conversations").addEventListener("click", function () { show(false); });
    $("view-pipeline").addEventListener("click", function () { show(true); });
    $("pl-pipeline").addEventListener("change", function () { P.pipeline = this.value; load(); });
    $("pl-reload").addEventListener("click", function () { load(); });
    $("pl-lead-close").addEventListener("click", function () { P.lead = null; $("pl-lead").hidden = true; });
  });

  /* The history of a lead into a list of another view (the conversation's Lead card). */
  function history(id, into) {
    return api("GET", "/api/leads/" + enc(id) + "/events?limit=50").then(function (res) { renderHistory(res, into); });
  }

  window.salesbotPipeline = { load: load, openLead: openLead, history: history };
})();
