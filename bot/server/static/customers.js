/* Salesbot Live: the customers view. Plain JavaScript, no build step, no library.
 *
 * Two sections, current (has ordered) and potential, from GET /api/customers?status=…: search
 * (name, phone, e-mail), filters by temperature, tag and responsible; each row shows the first
 * note (by priority) and the order count. The card edits every field through
 * PATCH /api/crm/contacts/{id}, lists the notes with their priority colours (add, edit, delete),
 * the customer's orders (GET /api/orders?customer=) and conversations
 * (GET /api/customers/{id}/conversations), and makes a quick-order link
 * (POST /api/customers/{id}/order-link) and copies it. An order of the open customer that
 * changes (orders.js hears /api/live/orders) reloads the card's orders and the lists' counts.
 *
 * Same safety rule as dashboard.js: text only through textContent, never innerHTML.
 */
(function () {
  "use strict";

  var L = window.SalesbotLive;  // dom.js
  var $ = L.byId, el = L.el, enc = L.enc, errorText = L.errorText;
  var SECTIONS = ["current", "potential"];
  var TEMPERATURES = ["hot", "warm", "cold", "not_interested"];
  var PRIORITIES = ["high", "medium", "none"];
  /* Card fields kept as custom fields of the contact (the CRM has no column of their own). */
  var NAMED_FIELDS = [["contact_person", "Contact person"], ["address", "Address"], ["tax_number", "Tax number"]];
  var C = { gen: 0, open: null, users: [], more: {}, searchTimer: null, cardGen: 0 };

  function api(method, path, body) {
    return L.api(method, path, body).catch(function () { return { status: 0, body: null }; });
  }

  function notice(text, kind) {
    var n = $("cu-notice");
    n.hidden = !text;
    n.textContent = text || "";
    n.dataset.kind = kind || "info";
  }

  function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : ""; }

  function label(value) { return String(value || "").replace(/_/g, " "); }

  function userName(id) {
    var u = C.users.filter(function (x) { return x.id === String(id); })[0];
    return u ? u.name : String(id);
  }

  // ------------------------------------------------------------------ switching views
  function show(on) {
    $("customers").hidden = !on;
    $("view-customers").classList.toggle("on", on);
    if (!on) return;
    document.querySelector(".main").hidden = true;
    ["pipeline", "analytics", "orders", "products"].forEach(function (id) { if ($(id)) $(id).hidden = true; });
    Array.prototype.forEach.call(document.querySelectorAll(".views button"), function (b) {
      if (b.id !== "view-customers") b.classList.remove("on");
    });
    if (window.salesbotOrders) window.salesbotOrders.listen();
    loadChoices().then(load);
  }

  // ------------------------------------------------------------------ the lists
  function loadChoices() {
    return Promise.all([api("GET", "/api/crm/users"), api("GET", "/api/crm/tags?entity=contact")]).then(function (r) {
      if (r[0].status === 200) {
        C.users = r[0].body.users || [];
        fillSelect($("cu-responsible"), "Any responsible", C.users.map(function (u) { return [u.id, u.name]; }));
      }
      if (r[1].status === 200) {
        fillSelect($("cu-tag"), "Any tag", (r[1].body.tags || []).map(function (t) { return [t.tag, t.tag + " (" + t.count + ")"]; }));
      }
    });
  }

  function fillSelect(sel, any, options) {
    var keep = sel.value;
    sel.textContent = "";
    sel.appendChild(el("option", null, any)).value = "";
    options.forEach(function (o) { var opt = el("option", null, o[1]); opt.value = o[0]; sel.appendChild(opt); });
    sel.value = keep;
    if (sel.value !== keep) sel.value = "";
  }

  // cursor: null for the first page, else {before, id}: the previous page's last time and id
  function query(status, cursor) {
    var parts = ["status=" + status, "limit=50"];
    var q = $("cu-search").value.trim();
    if (q) parts.push("q=" + enc(q));
    [["temperature", "cu-temperature"], ["tag", "cu-tag"], ["responsible", "cu-responsible"]].forEach(function (f) {
      if ($(f[1]).value) parts.push(f[0] + "=" + enc($(f[1]).value));
    });
    if (cursor) parts.push("before=" + cursor.before, "before_id=" + enc(cursor.id));
    return "/api/customers?" + parts.join("&");
  }

  function load() {
    var gen = ++C.gen;
    notice(null);
    return Promise.all(SECTIONS.map(function (s) { return loadSection(s, null, gen); }));
  }

  function loadSection(status, cursor, gen) {
    return api("GET", query(status, cursor)).then(function (res) {
      if (gen !== C.gen) return;
      var list = $("cu-list-" + status);
      if (res.status !== 200) { notice(errorText(res), "error"); return; }
      if (!cursor) list.textContent = "";
      res.body.customers.forEach(function (c) { list.appendChild(row(c)); });
      $("cu-count-" + status).textContent = String(res.body.total);
      $("cu-empty-" + status).hidden = list.children.length > 0;
      var last = res.body.next_before;
      C.more[status] = last === null || last === undefined ? null : {before: last, id: res.body.next_before_id};
      $("cu-more-" + status).hidden = C.more[status] === null;
    });
  }

  function row(c) {
    var li = el("li", "cu-row");
    li.dataset.id = String(c.id);
    li.tabIndex = 0;
    if (C.open === String(c.id)) li.classList.add("active");
    var line1 = el("div", "cu-line");
    line1.appendChild(el("span", "cu-name", c.name || "#" + c.id));
    if (c.temperature) line1.appendChild(el("span", "temp temp-" + c.temperature, label(c.temperature)));
    var orders = el("span", "cu-orders", c.orders === 1 ? "1 order" : (c.orders || 0) + " orders");
    line1.appendChild(orders);
    li.appendChild(line1);
    var line2 = el("div", "cu-line muted");
    line2.appendChild(el("span", null, [c.phone, c.email].filter(Boolean).join(" · ")));
    if (c.responsible) line2.appendChild(el("span", "cu-resp", userName(c.responsible)));
    li.appendChild(line2);
    if ((c.tags || []).length) {
      var tags = el("div", "tags");
      c.tags.forEach(function (t) { tags.appendChild(el("span", "tag", t)); });
      li.appendChild(tags);
    }
    if (c.last_note) {
      li.appendChild(el("div", "cu-note prio-" + c.last_note.priority, c.last_note.text));
    }
    li.addEventListener("click", function () { openCard(String(c.id)); });
    li.addEventListener("keydown", function (e) { if (e.key === "Enter") openCard(String(c.id)); });
    return li;
  }

  // ------------------------------------------------------------------ the card
  function openCard(id) {
    C.open = id;
    var gen = ++C.cardGen;
    Array.prototype.forEach.call(document.querySelectorAll(".cu-row"), function (li) {
      li.classList.toggle("active", li.dataset.id === id);
    });
    $("cu-card").hidden = false;
    $("cu-card-error").hidden = true;
    $("cu-link").hidden = true;
    return api("GET", "/api/crm/contacts/" + enc(id)).then(function (res) {
      if (gen !== C.cardGen) return;
      if (res.status !== 200) { cardError(errorText(res)); return; }
      fillCard(res.body);
      renderNotes(res.body.notes || []);
      loadOrders(id);
      loadConversations(id);
    });
  }

  function cardError(text) {
    var e = $("cu-card-error");
    e.hidden = !text;
    e.textContent = text || "";
  }

  function fillCard(c) {
    $("cu-card-title").textContent = c.name || "#" + c.id;
    var form = $("cu-form");
    form.elements.name.value = c.name || "";
    form.elements.phone.value = c.phone || "";
    form.elements.email.value = c.email || "";
    form.elements.status.value = c.status || "potential";
    form.elements.temperature.value = c.temperature || "";
    form.elements.discount.value = c.discount === null || c.discount === undefined ? "" : c.discount;
    form.elements.currency.value = c.currency || "";
    form.elements.language.value = c.language || "";
    form.elements.score.value = c.score === null || c.score === undefined ? "" : c.score;
    fillSelect(form.elements.responsible, "Nobody", C.users.map(function (u) { return [u.id, u.name]; }));
    form.elements.responsible.value = c.responsible || "";
    if (c.responsible && form.elements.responsible.value !== String(c.responsible)) {  // a user no longer configured
      var opt = el("option", null, String(c.responsible)); opt.value = String(c.responsible);
      form.elements.responsible.appendChild(opt);
      form.elements.responsible.value = String(c.responsible);
    }
    form.elements.tags.value = (c.tags || []).join(", ");
    form.elements.unsubscribed.checked = !!c.unsubscribed;
    var fields = c.fields || {};
    NAMED_FIELDS.forEach(function (f) { form.elements[f[0]].value = fields[f[0]] === undefined ? "" : fields[f[0]]; });
    var box = $("cu-fields");
    box.textContent = "";
    Object.keys(fields).filter(function (k) { return !NAMED_FIELDS.some(function (f) { return f[0] === k; }); })
      .forEach(function (k) { box.appendChild(fieldRow(k, fields[k])); });
    C.fields = fields;
    C.card = c;
  }

  function fieldRow(name, value) {
    var r = el("div", "cu-field");
    var k = el("input"); k.className = "cu-field-name"; k.value = name; k.placeholder = "Field"; k.setAttribute("aria-label", "Field name");
    var v = el("input"); v.className = "cu-field-value"; v.value = value === undefined || value === null ? "" : String(value);
    v.placeholder = "Value"; v.setAttribute("aria-label", "Field value");
    var x = el("button", "ghost", "×"); x.type = "button"; x.setAttribute("aria-label", "Remove field");
    x.addEventListener("click", function () { r.remove(); });
    r.appendChild(k); r.appendChild(v); r.appendChild(x);
    return r;
  }

  function same(a, b) {
    return (a === null || a === undefined ? "" : String(a)) === (b === null || b === undefined ? "" : String(b));
  }

  /* Only what the person changed: a field someone else saved meanwhile is not overwritten, and a
   * custom field a flow set as a number stays a number unless it is edited. */
  function patchOf(form) {
    var c = C.card || {}, p = {}, v;
    ["name", "phone", "email", "currency", "language"].forEach(function (n) {
      v = form.elements[n].value.trim() || null;
      if (!same(v, c[n])) p[n] = v;
    });
    if (form.elements.status.value !== c.status) p.status = form.elements.status.value;
    v = form.elements.temperature.value || null;
    if (!same(v, c.temperature)) p.temperature = v;
    v = form.elements.discount.value === "" ? null : Number(form.elements.discount.value);
    if (!same(v === null ? 0 : v, c.discount || 0)) p.discount = v;
    v = form.elements.responsible.value || null;
    if (!same(v, c.responsible)) p.responsible = v;
    v = form.elements.tags.value.split(",").map(function (t) { return t.trim(); }).filter(Boolean);
    if (v.join("\n") !== (c.tags || []).join("\n")) p.tags = v;
    if (form.elements.unsubscribed.checked !== !!c.unsubscribed) p.unsubscribed = form.elements.unsubscribed.checked;
    v = form.elements.score.value === "" ? null : Number(form.elements.score.value);
    if (!same(v === null ? 0 : v, c.score || 0)) p.score = v;
    var now = {}, old = C.fields || {}, fields = {};
    NAMED_FIELDS.forEach(function (f) { now[f[0]] = form.elements[f[0]].value.trim() || null; });
    Array.prototype.forEach.call(document.querySelectorAll("#cu-fields .cu-field"), function (r) {
      var k = r.querySelector(".cu-field-name").value.trim();
      if (k) now[k] = r.querySelector(".cu-field-value").value;
    });
    Object.keys(old).forEach(function (k) { if (!(k in now)) fields[k] = null; });  // removed
    Object.keys(now).forEach(function (k) { if (!same(now[k], old[k])) fields[k] = now[k]; });
    if (Object.keys(fields).length) p.fields = fields;
    return p;
  }

  function save(e) {
    e.preventDefault();
    var id = C.open;
    if (!id) return;
    var btn = $("cu-save");
    var body = patchOf($("cu-form"));
    if (!Object.keys(body).length) { notice("Nothing changed", "info"); return; }
    btn.disabled = true;
    api("PATCH", "/api/crm/contacts/" + enc(id), body).then(function (res) {
      btn.disabled = false;
      if (res.status !== 200) { cardError(errorText(res)); return; }
      cardError(null);
      fillCard(res.body);
      load();  // (clears the bar's notice first)
      notice("Saved " + (res.body.name || "#" + id), "ok");
    });
  }

  // ------------------------------------------------------------------ notes
  function renderNotes(notes) {
    var list = $("cu-notes");
    list.textContent = "";
    if (!notes.length) list.appendChild(el("li", "muted", "No notes yet."));
    notes.forEach(function (n) { list.appendChild(noteItem(n)); });
  }

  function prioritySelect(value) {
    var sel = el("select");
    sel.setAttribute("aria-label", "Priority");
    PRIORITIES.forEach(function (p) { var o = el("option", null, p === "none" ? "no priority" : p); o.value = p; sel.appendChild(o); });
    sel.value = value || "none";
    return sel;
  }

  function noteItem(n) {
    var li = el("li", "cu-noteitem prio-" + n.priority);
    li.dataset.id = String(n.id);
    li.appendChild(el("div", "cu-note-text", n.text));
    var meta = el("div", "cu-note-meta muted");
    meta.appendChild(el("span", "prio-chip prio-" + n.priority, n.priority === "none" ? "note" : n.priority));
    meta.appendChild(el("span", null, [n.author, when(n.updated_at || n.created_at)].filter(Boolean).join(" · ")));
    var edit = el("button", "ghost small", "Edit"); edit.type = "button";
    var del = el("button", "danger-ghost small", "Delete"); del.type = "button";
    meta.appendChild(edit); meta.appendChild(del);
    li.appendChild(meta);
    edit.addEventListener("click", function () { editNote(li, n); });
    del.addEventListener("click", function () {
      if (!window.confirm("Delete this note?")) return;
      api("DELETE", "/api/crm/contacts/" + enc(C.open) + "/notes/" + enc(n.id)).then(function (res) {
        if (res.status !== 200) { cardError(errorText(res)); return; }
        reloadNotes();
      });
    });
    return li;
  }

  function editNote(li, n) {
    li.textContent = "";
    var text = el("textarea"); text.value = n.text; text.rows = 3; text.setAttribute("aria-label", "Note");
    var prio = prioritySelect(n.priority);
    var ok = el("button", "primary small", "Save note"); ok.type = "button";
    var cancel = el("button", "ghost small", "Cancel"); cancel.type = "button";
    li.appendChild(text);
    var bar = el("div", "cu-note-meta");
    bar.appendChild(prio); bar.appendChild(ok); bar.appendChild(cancel);
    li.appendChild(bar);
    cancel.addEventListener("click", reloadNotes);
    ok.addEventListener("click", function () {
      api("PATCH", "/api/crm/contacts/" + enc(C.open) + "/notes/" + enc(n.id), { text: text.value, priority: prio.value })
        .then(function (res) {
          if (res.status !== 200) { cardError(errorText(res)); return; }
          reloadNotes();
        });
    });
  }

  function reloadNotes() {
    var id = C.open;
    return api("GET", "/api/crm/contacts/" + enc(id) + "/notes?limit=200").then(function (res) {
      if (id !== C.open) return;
      if (res.status !== 200) { cardError(errorText(res)); return; }
      cardError(null);
      renderNotes(res.body.notes || []);
      load();  // the row's first note may have changed
    });
  }

  function addNote(e) {
    e.preventDefault();
    var text = $("cu-note-text").value;
    if (!text.trim() || !C.open) return;
    api("POST", "/api/crm/contacts/" + enc(C.open) + "/notes", { text: text, priority: $("cu-note-priority").value })
      .then(function (res) {
        if (res.status !== 201) { cardError(errorText(res)); return; }
        $("cu-note-text").value = "";
        reloadNotes();
      });
  }

  // ------------------------------------------------------------------ orders, conversations, link
  function loadOrders(id) {
    var list = $("cu-orders");
    return api("GET", "/api/orders?customer=" + enc(id) + "&limit=50").then(function (res) {
      if (id !== C.open) return;
      list.textContent = "";
      if (res.status !== 200) { list.appendChild(el("li", "muted", res.status === 404 ? "No orders." : errorText(res))); return; }
      if (!res.body.orders.length) list.appendChild(el("li", "muted", "No orders yet."));
      res.body.orders.forEach(function (o) {
        var li = el("li", "cu-order");
        li.dataset.id = String(o.id);
        var a = el("button", "linkish", "#" + (o.number || o.id)); a.type = "button";
        a.addEventListener("click", function () { if (window.salesbotOrders) window.salesbotOrders.open(String(o.id)); });
        li.appendChild(a);
        li.appendChild(el("span", "ostatus ostatus-" + o.status, label(o.status)));
        li.appendChild(el("span", "opay opay-" + o.payment, o.payment));
        li.appendChild(el("span", "ototal", money(o.total, o.currency)));
        li.appendChild(el("span", "muted", when(o.created_at)));
        list.appendChild(li);
      });
    });
  }

  function money(amount, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency }).format(amount);
    } catch (e) {
      return amount + " " + currency;
    }
  }

  function loadConversations(id) {
    var list = $("cu-convs");
    return api("GET", "/api/customers/" + enc(id) + "/conversations").then(function (res) {
      if (id !== C.open) return;
      list.textContent = "";
      if (res.status !== 200) { list.appendChild(el("li", "muted", errorText(res))); return; }
      if (!res.body.conversations.length) list.appendChild(el("li", "muted", "No conversations."));
      res.body.conversations.forEach(function (c) {
        var li = el("li", "cu-conv");
        var a = el("button", "linkish", c.channel + (c.account ? " · " + c.account : "")); a.type = "button";
        a.addEventListener("click", function () { openConversation(c.id); });
        li.appendChild(a);
        li.appendChild(el("span", "muted cu-conv-last", c.last_message || ""));
        li.appendChild(el("span", "muted", when(c.last_activity)));
        list.appendChild(li);
      });
    });
  }

  function openConversation(cid) {
    $("view-conversations").click();
    if (window.salesbotLive && window.salesbotLive.open) window.salesbotLive.open(cid);
  }

  function orderLink() {
    var id = C.open;
    var btn = $("cu-order-link");
    btn.disabled = true;
    api("POST", "/api/customers/" + enc(id) + "/order-link", {}).then(function (res) {
      btn.disabled = false;
      if (res.status !== 201 && res.status !== 200) { cardError(errorText(res)); return; }
      var url = res.body.url;
      var box = $("cu-link");
      box.hidden = false;
      $("cu-link-url").value = url;
      $("cu-link-expires").textContent = res.body.expires_at ? "valid until " + when(res.body.expires_at) : "";
      var copied = navigator.clipboard && window.isSecureContext
        ? navigator.clipboard.writeText(url).then(function () { return true; }, function () { return false; })
        : Promise.resolve(false);
      copied.then(function (ok) {
        $("cu-link-state").textContent = ok ? "Copied to the clipboard" : "Select and copy the link";
        if (!ok) $("cu-link-url").select();
      });
    });
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", function () {
    if (!$("view-customers")) return;
    $("view-customers").addEventListener("click", function () { show(true); });
    Array.prototype.forEach.call(document.querySelectorAll(".views button"), function (b) {
      if (b.id !== "view-customers") b.addEventListener("click", function () { show(false); });
    });
    var temps = $("cu-temperature");
    TEMPERATURES.forEach(function (t) { var o = el("option", null, label(t)); o.value = t; temps.appendChild(o); });
    var cardTemps = $("cu-form").elements.temperature;
    TEMPERATURES.forEach(function (t) { var o = el("option", null, label(t)); o.value = t; cardTemps.appendChild(o); });
    $("cu-note-priority").replaceWith(Object.assign(prioritySelect("none"), { id: "cu-note-priority" }));
    ["cu-temperature", "cu-tag", "cu-responsible"].forEach(function (id) { $(id).addEventListener("change", load); });
    $("cu-search").addEventListener("input", function () {
      clearTimeout(C.searchTimer);
      C.searchTimer = setTimeout(load, 250);
    });
    $("cu-reload").addEventListener("click", function () { loadChoices().then(load); });
    SECTIONS.forEach(function (s) {
      $("cu-more-" + s).addEventListener("click", function () { loadSection(s, C.more[s], C.gen); });
    });
    $("cu-form").addEventListener("submit", save);
    $("cu-add-field").addEventListener("click", function () { $("cu-fields").appendChild(fieldRow("", "")); });
    $("cu-note-form").addEventListener("submit", addNote);
    $("cu-order-link").addEventListener("click", orderLink);
    $("cu-close").addEventListener("click", function () { C.open = null; $("cu-card").hidden = true; });
  });

  window.salesbotCustomers = {
    /* orders.js: an order changed (its customer's card and counts may show it). */
    orderChanged: function (order) {
      if ($("customers").hidden) return;
      if (order && C.open === String(order.customer)) loadOrders(C.open);
      clearTimeout(C.countsTimer);  // a burst of orders: one reload of the lists
      C.countsTimer = setTimeout(load, 500);
    },
    open: function (id) { show(true); return openCard(String(id)); },
  };
})();
