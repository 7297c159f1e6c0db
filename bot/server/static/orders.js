/* Salesbot Live: the orders view. Plain JavaScript, no build step, no library.
 *
 * The orders by status (GET /api/orders?status=&payment=&customer=, newest first, "Load more"
 * with next_before), and an order's page: its lines at the prices it was made with, its history,
 * and the moves a person makes (PATCH /api/orders/{id}): the next status (or cancel), mark paid,
 * a tracking number. Live: /api/live/orders (Server-Sent Events, the session cookie) names each
 * order that was created or changed anywhere; the view reads it (GET /api/orders/{id}) and puts
 * it in the list if it matches the filters, so an order a customer places appears at once.
 *
 * Same safety rule as dashboard.js: text only through textContent, never innerHTML.
 */
(function () {
  "use strict";

  var L = window.SalesbotLive;  // dom.js
  var $ = L.byId, el = L.el, enc = L.enc, errorText = L.errorText;
  var FLOW = ["new", "confirmed", "in_production", "shipped", "delivered"];
  var O = { gen: 0, status: "", next: null, open: null, es: null, names: {} };

  function api(method, path, body) {
    return L.api(method, path, body).catch(function () { return { status: 0, body: null }; });
  }

  function notice(text) {
    var n = $("or-notice");
    n.hidden = !text;
    n.textContent = text || "";
  }

  function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : ""; }

  function label(value) { return String(value || "").replace(/_/g, " "); }

  function money(amount, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency }).format(amount);
    } catch (e) {
      return amount + " " + currency;
    }
  }

  /* The statuses an order may move to (bot/shop/orders.py can_move): forward, or cancelled. */
  function moves(status) {
    if (status === "delivered" || status === "cancelled") return [];
    return FLOW.slice(FLOW.indexOf(status) + 1).concat(["cancelled"]);
  }

  // ------------------------------------------------------------------ switching views
  function show(on) {
    $("orders").hidden = !on;
    $("view-orders").classList.toggle("on", on);
    if (!on) return;
    document.querySelector(".main").hidden = true;
    ["pipeline", "analytics", "customers", "products"].forEach(function (id) { if ($(id)) $(id).hidden = true; });
    Array.prototype.forEach.call(document.querySelectorAll(".views button"), function (b) {
      if (b.id !== "view-orders") b.classList.remove("on");
    });
    if (O.es) load(); else stream();  // a new stream loads once subscribed: nothing missed in between
  }

  // ------------------------------------------------------------------ the list
  function query(before) {
    var parts = ["limit=50"];
    if (O.status) parts.push("status=" + enc(O.status));
    if ($("or-payment").value) parts.push("payment=" + enc($("or-payment").value));
    var customer = $("or-customer").value.trim();
    if (customer) parts.push("customer=" + enc(customer));
    if (before) parts.push("before=" + enc(before));
    return "/api/orders?" + parts.join("&");
  }

  function matches(o) {
    if (O.status && o.status !== O.status) return false;
    if ($("or-payment").value && o.payment !== $("or-payment").value) return false;
    var customer = $("or-customer").value.trim();
    return !customer || String(o.customer) === customer;
  }

  function load(before) {
    var gen = before ? O.gen : ++O.gen;
    notice(null);
    return api("GET", query(before)).then(function (res) {
      if (gen !== O.gen) return;
      var rows = $("or-rows");
      if (res.status !== 200) { notice(errorText(res)); return; }
      if (!before) rows.textContent = "";
      known(res.body.customers);
      res.body.orders.forEach(function (o) { rows.appendChild(row(o)); });
      O.next = res.body.next_before;
      $("or-more").hidden = O.next === null || O.next === undefined;
      $("or-empty").hidden = rows.children.length > 0;
    });
  }

  function row(o) {
    var tr = el("tr", "or-row");
    tr.dataset.id = String(o.id);
    tr.tabIndex = 0;
    if (O.open === String(o.id)) tr.classList.add("active");
    tr.appendChild(el("td", "or-number", "#" + (o.number || o.id)));
    var who = el("td", "or-who", O.names[o.customer] || "#" + o.customer);
    who.dataset.customer = String(o.customer);
    tr.appendChild(who);
    var st = el("td"); st.appendChild(el("span", "ostatus ostatus-" + o.status, label(o.status))); tr.appendChild(st);
    var pay = el("td"); pay.appendChild(el("span", "opay opay-" + o.payment, o.payment)); tr.appendChild(pay);
    tr.appendChild(el("td", "or-sum", money(o.total, o.currency)));
    tr.appendChild(el("td", "or-track", o.tracking || ""));
    tr.appendChild(el("td", "muted", when(o.created_at)));
    tr.addEventListener("click", function () { openOrder(String(o.id)); });
    tr.addEventListener("keydown", function (e) { if (e.key === "Enter") openOrder(String(o.id)); });
    return tr;
  }

  /* The names a page of orders came with (``customers``: id -> name or null). */
  function known(customers) {
    Object.keys(customers || {}).forEach(function (cid) { O.names[cid] = customers[cid] || "#" + cid; });
  }

  /* The name of an order's customer not seen yet (an order arriving live), filled into its rows. */
  function names(orders) {
    var missing = [];
    orders.forEach(function (o) { if (!(o.customer in O.names) && missing.indexOf(o.customer) < 0) missing.push(o.customer); });
    missing.forEach(function (cid) {
      O.names[cid] = "#" + cid;
      api("GET", "/api/crm/contacts/" + enc(cid)).then(function (res) {
        if (res.status !== 200) return;
        O.names[cid] = res.body.name || "#" + cid;
        Array.prototype.forEach.call(document.querySelectorAll('.or-who'), function (td) {
          if (td.dataset.customer === String(cid)) td.textContent = O.names[cid];
        });
        if (O.order && String(O.order.customer) === String(cid)) $("or-customer-name").textContent = O.names[cid];
      });
    });
  }

  /* An order created or changed (the live stream): its row replaced, added on top, or removed. */
  function changed(id) {
    return api("GET", "/api/orders/" + enc(id)).then(function (res) {
      if (res.status !== 200) return;
      var o = res.body;
      var rows = $("or-rows");
      var old = rows.querySelector('tr[data-id="' + CSS.escape(String(o.id)) + '"]');
      if (matches(o)) {
        var fresh = row(o);
        fresh.classList.add("fresh");
        if (old) rows.replaceChild(fresh, old);
        else rows.insertBefore(fresh, rows.firstChild);
        names([o]);
      } else if (old) {
        old.remove();
      }
      $("or-empty").hidden = rows.children.length > 0;
      if (O.open === String(o.id)) fillOrder(o);
      if (window.salesbotCustomers) window.salesbotCustomers.orderChanged(o);
    });
  }

  // ------------------------------------------------------------------ the live stream
  function live(state, text) {
    $("or-live").dataset.state = state;
    $("or-live-text").textContent = text;
  }

  function stream() {
    if (O.es) return;
    var es = new EventSource("/api/live/orders");
    O.es = es;
    es.addEventListener("ready", function () { live("live", "Live"); load(); });
    es.addEventListener("order", function (e) {
      var data = JSON.parse(e.data);
      if (!$("orders").hidden || window.salesbotCustomers) changed(data.id);
    });
    es.addEventListener("resync", function () { load(); });
    es.onerror = function () { live("connecting", "Reconnecting…"); };
  }

  // ------------------------------------------------------------------ the order page
  function openOrder(id) {
    O.open = id;
    Array.prototype.forEach.call(document.querySelectorAll(".or-row"), function (tr) {
      tr.classList.toggle("active", tr.dataset.id === id);
    });
    $("or-page").hidden = false;
    orderError(null);
    return api("GET", "/api/orders/" + enc(id)).then(function (res) {
      if (O.open !== id) return;
      if (res.status !== 200) { orderError(errorText(res)); return; }
      fillOrder(res.body);
      names([res.body]);
    });
  }

  function orderError(text) {
    var e = $("or-error");
    e.hidden = !text;
    e.textContent = text || "";
  }

  function fillOrder(o) {
    O.order = o;
    $("or-title").textContent = "Order #" + (o.number || o.id);
    $("or-customer-name").textContent = O.names[o.customer] || "#" + o.customer;
    var st = $("or-status-now"); st.textContent = "";
    st.appendChild(el("span", "ostatus ostatus-" + o.status, label(o.status)));
    var pay = $("or-payment-now"); pay.textContent = "";
    pay.appendChild(el("span", "opay opay-" + o.payment, o.payment));
    $("or-tracking-now").textContent = o.tracking || "—";
    $("or-total").textContent = money(o.total, o.currency) + (o.discount ? " (−" + o.discount + " %)" : "");
    $("or-source").textContent = o.source || "—";
    var items = $("or-items"); items.textContent = "";
    (o.items || []).forEach(function (i) {
      var tr = el("tr");
      tr.appendChild(el("td", null, i.name || i.sku));
      tr.appendChild(el("td", null, i.qty));
      tr.appendChild(el("td", null, money(i.unit_price, o.currency)));
      tr.appendChild(el("td", null, money(i.total, o.currency)));
      items.appendChild(tr);
    });
    var sel = $("or-move"); sel.textContent = "";
    moves(o.status).forEach(function (s) { var opt = el("option", null, label(s)); opt.value = s; sel.appendChild(opt); });
    sel.disabled = $("or-move-btn").disabled = !sel.options.length;
    $("or-paid").disabled = o.payment === "paid";
    $("or-tracking").value = o.tracking || "";
    var hist = $("or-history"); hist.textContent = "";
    (o.history || []).slice().reverse().forEach(function (h) {
      var li = el("li", "pl-h");
      li.appendChild(el("span", "muted pl-when", when(h.at) + (h.by ? " · " + h.by : "")));
      li.appendChild(el("span", null, label(h.field) + ": " + (h.from === null || h.from === undefined ? "—" : label(h.from))
        + " → " + (h.to === null || h.to === undefined ? "—" : label(h.to))));
      hist.appendChild(li);
    });
  }

  function patch(body) {
    var id = O.open;
    if (!id) return;
    return api("PATCH", "/api/orders/" + enc(id), body).then(function (res) {
      if (O.open !== id) return;
      if (res.status !== 200) { orderError(errorText(res)); return; }
      orderError(null);
      fillOrder(res.body);
      changed(id);
    });
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", function () {
    if (!$("view-orders")) return;
    $("view-orders").addEventListener("click", function () { show(true); });
    Array.prototype.forEach.call(document.querySelectorAll(".views button"), function (b) {
      if (b.id !== "view-orders") b.addEventListener("click", function () { show(false); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("#or-status button"), function (b) {
      b.addEventListener("click", function () {
        O.status = b.dataset.status;
        Array.prototype.forEach.call(document.querySelectorAll("#or-status button"), function (x) { x.classList.toggle("on", x === b); });
        load();
      });
    });
    $("or-payment").addEventListener("change", function () { load(); });
    $("or-customer").addEventListener("change", function () { load(); });
    $("or-reload").addEventListener("click", function () { load(); });
    $("or-more").addEventListener("click", function () { load(O.next); });
    $("or-close").addEventListener("click", function () { O.open = null; $("or-page").hidden = true; });
    $("or-move-btn").addEventListener("click", function () {
      var to = $("or-move").value;
      if (to === "cancelled" && !window.confirm("Cancel this order?")) return;
      patch({ status: to });
    });
    $("or-paid").addEventListener("click", function () { patch({ payment: "paid" }); });
    $("or-tracking-form").addEventListener("submit", function (e) {
      e.preventDefault();
      patch({ tracking: $("or-tracking").value.trim() || null });
    });
  });

  window.salesbotOrders = {
    open: function (id) { show(true); return openOrder(String(id)); },
    listen: stream,  // customers.js: the open card's orders follow the changes too
  };
})();
