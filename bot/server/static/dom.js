/* Salesbot Live: the helpers every view of /live shares (loaded first). Plain JavaScript.
 *
 * One copy of the safety rule's tools: el() puts text in with textContent, never innerHTML; api()
 * sends the tab's token as "Authorization: Bearer" and reads the JSON answer (null if none).
 */
(function () {
  "use strict";

  var TOKEN_KEY = "salesbot.live.token";

  function byId(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function authHeaders(given) { return { "Authorization": "Bearer " + (given || token()) }; }

  /* Resolves to {status, body}; a network failure rejects (callers that show "could not load"
   * catch it). ``given`` is a token to use instead of the stored one. */
  function api(method, path, body, given) {
    var headers = authHeaders(given);
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
        return { status: r.status, body: data };
      });
    });
  }

  function errorText(res) {
    return res && res.body && res.body.error ? res.body.error.message : "Request failed (" + (res ? res.status : "network") + ")";
  }

  function enc(v) { return encodeURIComponent(String(v)); }

  window.SalesbotLive = Object.freeze({
    TOKEN_KEY: TOKEN_KEY, byId: byId, el: el, svg: svg, token: token, authHeaders: authHeaders,
    api: api, errorText: errorText, enc: enc,
  });
})();
