/* Salesbot Live: the products view (the catalogue). Plain JavaScript, no build step, no library.
 *
 * The products by sku (GET /api/products) with their names, prices per currency and whether they
 * are on sale; a form to add or replace one (PUT /api/products/{sku}: a PUT is the whole
 * product) with translated names and descriptions, an image URL and prices per currency, and to
 * delete one (DELETE /api/products/{sku}). Admins (and operators, through the API) write; a
 * support person sees the catalogue and the server's 403 if they try to change it.
 *
 * Same safety rule as dashboard.js: text only through textContent, never innerHTML.
 */
(function () {
  "use strict";

  var L = window.SalesbotLive;  // dom.js
  var $ = L.byId, el = L.el, enc = L.enc, errorText = L.errorText;
  var P = { gen: 0, editing: null };

  function api(method, path, body) {
    return L.api(method, path, body).catch(function () { return { status: 0, body: null }; });
  }

  function notice(text) {
    var n = $("pr-notice");
    n.hidden = !text;
    n.textContent = text || "";
  }

  function formError(text) {
    var e = $("pr-error");
    e.hidden = !text;
    e.textContent = text || "";
  }

  function firstText(texts) {
    if (!texts) return "";
    if (typeof texts === "string") return texts;
    return texts.en || texts[Object.keys(texts)[0]] || "";
  }

  // ------------------------------------------------------------------ switching views
  function show(on) {
    $("products").hidden = !on;
    $("view-products").classList.toggle("on", on);
    if (!on) return;
    document.querySelector(".main").hidden = true;
    ["pipeline", "analytics", "customers", "orders"].forEach(function (id) { if ($(id)) $(id).hidden = true; });
    Array.prototype.forEach.call(document.querySelectorAll(".views button"), function (b) {
      if (b.id !== "view-products") b.classList.remove("on");
    });
    load();
  }

  // ------------------------------------------------------------------ the list
  function load() {
    var gen = ++P.gen;
    notice(null);
    return api("GET", "/api/products").then(function (res) {
      if (gen !== P.gen) return;
      var rows = $("pr-rows");
      rows.textContent = "";
      if (res.status !== 200) { notice(errorText(res)); return; }
      res.body.products.forEach(function (p) { rows.appendChild(row(p)); });
      $("pr-empty").hidden = res.body.products.length > 0;
    });
  }

  function row(p) {
    var tr = el("tr", "pr-row" + (p.active ? "" : " inactive"));
    tr.dataset.sku = p.sku;
    tr.tabIndex = 0;
    tr.appendChild(el("td", "pr-sku", p.sku));
    tr.appendChild(el("td", "pr-name", firstText(p.name)));
    tr.appendChild(el("td", "pr-prices", Object.keys(p.prices || {}).sort().map(function (c) {
      return p.prices[c] + " " + c;
    }).join(" · ")));
    tr.appendChild(el("td", null, p.active ? "on sale" : "off sale"));
    tr.addEventListener("click", function () { edit(p); });
    tr.addEventListener("keydown", function (e) { if (e.key === "Enter") edit(p); });
    return tr;
  }

  // ------------------------------------------------------------------ the form
  function pairRow(box, cls, key, value, keyLabel, valueLabel) {
    var r = el("div", "pr-pair " + cls);
    var k = el("input", "pr-key"); k.value = key || ""; k.placeholder = keyLabel; k.setAttribute("aria-label", keyLabel);
    var v = el(cls === "pr-desc" ? "textarea" : "input", "pr-value");
    v.value = value === undefined || value === null ? "" : String(value);
    v.placeholder = valueLabel; v.setAttribute("aria-label", valueLabel);
    if (cls === "pr-price") { v.type = "number"; v.min = "0"; v.step = "any"; k.maxLength = 3; }
    var x = el("button", "ghost small", "×"); x.type = "button"; x.setAttribute("aria-label", "Remove");
    x.addEventListener("click", function () { r.remove(); });
    r.appendChild(k); r.appendChild(v); r.appendChild(x);
    box.appendChild(r);
  }

  function texts(value) {
    if (!value) return {};
    return typeof value === "string" ? { en: value } : value;
  }

  function edit(p) {
    P.editing = p ? p.sku : null;
    formError(null);
    $("pr-form-box").hidden = false;
    $("pr-title").textContent = p ? p.sku : "New product";
    var f = $("pr-form");
    f.elements.sku.value = p ? p.sku : "";
    f.elements.sku.readOnly = !!p;
    f.elements.image_url.value = p && p.image_url ? p.image_url : "";
    f.elements.active.checked = p ? !!p.active : true;
    ["pr-names", "pr-descs", "pr-prices-box"].forEach(function (id) { $(id).textContent = ""; });
    var names = texts(p && p.name), descs = texts(p && p.description), prices = (p && p.prices) || {};
    Object.keys(names).forEach(function (l) { pairRow($("pr-names"), "pr-nm", l, names[l], "Language", "Name"); });
    if (!Object.keys(names).length) pairRow($("pr-names"), "pr-nm", "en", "", "Language", "Name");
    Object.keys(descs).forEach(function (l) { pairRow($("pr-descs"), "pr-desc", l, descs[l], "Language", "Description"); });
    Object.keys(prices).forEach(function (c) { pairRow($("pr-prices-box"), "pr-price", c, prices[c], "Currency", "Price"); });
    if (!Object.keys(prices).length) pairRow($("pr-prices-box"), "pr-price", "", "", "Currency", "Price");
    $("pr-delete").hidden = !p;
  }

  function pairs(box, number) {
    var out = {};
    Array.prototype.forEach.call(box.querySelectorAll(".pr-pair"), function (r) {
      var k = r.querySelector(".pr-key").value.trim(), v = r.querySelector(".pr-value").value;
      if (!k || v.trim() === "") return;
      out[number ? k.toUpperCase() : k] = number ? Number(v) : v;
    });
    return out;
  }

  function save(e) {
    e.preventDefault();
    var f = $("pr-form");
    var sku = f.elements.sku.value.trim();
    if (!sku) { formError("A product needs a sku"); return; }
    var descs = pairs($("pr-descs"), false);
    var body = { name: pairs($("pr-names"), false), description: Object.keys(descs).length ? descs : null,
                 image_url: f.elements.image_url.value.trim() || null, prices: pairs($("pr-prices-box"), true),
                 active: f.elements.active.checked };
    api("PUT", "/api/products/" + enc(sku), body).then(function (res) {
      if (res.status !== 200 && res.status !== 201) { formError(errorText(res)); return; }
      formError(null);
      edit(res.body);
      load().then(function () { notice((res.status === 201 ? "Added " : "Saved ") + res.body.sku); });
    });
  }

  function remove() {
    var sku = P.editing;
    if (!sku || !window.confirm("Delete " + sku + "? Orders that have it keep their lines.")) return;
    api("DELETE", "/api/products/" + enc(sku)).then(function (res) {
      if (res.status !== 204 && res.status !== 200) { formError(errorText(res)); return; }
      P.editing = null;
      $("pr-form-box").hidden = true;
      load().then(function () { notice("Deleted " + sku); });
    });
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", function () {
    if (!$("view-products")) return;
    $("view-products").addEventListener("click", function () { show(true); });
    Array.prototype.forEach.call(document.querySelectorAll(".views button"), function (b) {
      if (b.id !== "view-products") b.addEventListener("click", function () { show(false); });
    });
    $("pr-new").addEventListener("click", function () { edit(null); });
    $("pr-reload").addEventListener("click", load);
    $("pr-form").addEventListener("submit", save);
    $("pr-delete").addEventListener("click", remove);
    $("pr-close").addEventListener("click", function () { P.editing = null; $("pr-form-box").hidden = true; });
    $("pr-add-name").addEventListener("click", function () { pairRow($("pr-names"), "pr-nm", "", "", "Language", "Name"); });
    $("pr-add-desc").addEventListener("click", function () { pairRow($("pr-descs"), "pr-desc", "", "", "Language", "Description"); });
    $("pr-add-price").addEventListener("click", function () { pairRow($("pr-prices-box"), "pr-price", "", "", "Currency", "Price"); });
  });
})();
