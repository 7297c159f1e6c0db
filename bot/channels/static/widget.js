// salesbot live chat widget: WebSocket with resume, long-poll fallback, buttons, lists, attachments.
// Every text is inserted with textContent: nothing a customer or a bot sends is ever parsed as HTML.
(function () {
  "use strict";
  var root = document.getElementById("sb-chat");
  var account = JSON.parse(root.getAttribute("data-account"));
  var list = document.getElementById("sb-messages");
  var typing = document.getElementById("sb-typing");
  var statusDot = document.getElementById("sb-status");
  var form = document.getElementById("sb-compose");
  var input = document.getElementById("sb-input");
  var base = "/chat/" + encodeURIComponent(account);

  function randomId(bytes) {
    var a = new Uint8Array(bytes); crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  var storeKey = "salesbot.session." + account;
  var session = localStorage.getItem(storeKey);
  if (!session || !/^[A-Za-z0-9_-]{8,64}$/.test(session)) { session = randomId(16); localStorage.setItem(storeKey, session); }

  var last = 0;            // the highest transcript number shown
  var pending = {};        // client_msg_id -> element of a message not yet echoed
  var unacked = {};        // client_msg_id -> body sent over the WebSocket and not yet acknowledged
  var ws = null, wsFailures = 0, polling = false, held = false, retryTimer = null, typingTimer = null;

  function setStatus(s) { statusDot.className = "sb-dot " + s; statusDot.title = s; root.setAttribute("data-status", s); }
  function scroll() { list.scrollTop = list.scrollHeight; }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }

  // The dots show while a reply is awaited; a bot that stays silent must not leave them on forever.
  function setTyping(on) {
    typing.hidden = !on;
    clearTimeout(typingTimer);
    if (on) typingTimer = setTimeout(function () { typing.hidden = true; }, 15000);
  }

  function markFailed(id, message) {
    var p = pending[id]; if (!p) return;
    delete pending[id];
    p.classList.remove("pending"); p.classList.add("failed"); p.title = message || "not sent";
  }

  function disableChoices() {
    var old = list.querySelectorAll(".sb-buttons button, .sb-list button");
    for (var i = 0; i < old.length; i++) old[i].disabled = true;
  }

  function renderAttachments(li, atts) {
    (atts || []).forEach(function (a) {
      if (!a.url || !/^https?:\/\//i.test(a.url)) return;
      if (a.kind === "image") {
        var img = el("img"); img.src = a.url; img.alt = a.name || "image";
        var wrap = el("span", "sb-attachment"); wrap.appendChild(img); li.appendChild(wrap);
      } else {
        var link = el("a", "sb-attachment", (a.name || a.kind) + " ↗"); link.href = a.url; link.target = "_blank"; link.rel = "noopener noreferrer";
        li.appendChild(link);
      }
    });
  }

  function renderButtons(li, buttons) {
    if (!buttons || !buttons.length) return;
    var box = el("div", "sb-buttons");
    buttons.forEach(function (b) {
      if (b.url) {
        if (!/^https?:\/\//i.test(b.url)) return;
        var a = el("a", null, b.title + " ↗"); a.href = b.url; a.target = "_blank"; a.rel = "noopener noreferrer"; box.appendChild(a);
      } else {
        var btn = el("button", null, b.title); btn.type = "button";
        btn.addEventListener("click", function () { send(b.title, b.payload); });
        box.appendChild(btn);
      }
    });
    li.appendChild(box);
  }

  function renderList(li, l) {
    if (!l) return;
    var toggle = el("button", "sb-list-toggle", l.button); toggle.type = "button";
    var panel = el("div", "sb-list"); panel.hidden = true;
    if (l.header) panel.appendChild(el("h4", null, l.header));
    (l.sections || []).forEach(function (s) {
      panel.appendChild(el("h4", null, s.title));
      s.rows.forEach(function (r) {
        var row = el("button", null, r.title); row.type = "button";
        if (r.description) row.appendChild(el("small", null, r.description));
        row.addEventListener("click", function () { panel.hidden = true; send(r.title, r.id); });
        panel.appendChild(row);
      });
    });
    if (l.footer) panel.appendChild(el("small", null, l.footer));
    toggle.addEventListener("click", function () { panel.hidden = !panel.hidden; scroll(); });
    var box = el("div", "sb-buttons"); box.appendChild(toggle); li.appendChild(box); li.appendChild(panel);
  }

  function show(m) {
    if (typeof m.n !== "number" || m.n <= last) return;
    last = m.n;
    // Buttons answer the latest question only: any later message (the customer's too, as when the
    // history is replayed after a reload) makes the older ones stale.
    disableChoices();
    if (m.role !== "user") setTyping(false);
    if (m.role === "user" && m.client_msg_id && pending[m.client_msg_id]) {
      var p = pending[m.client_msg_id]; delete pending[m.client_msg_id];
      p.classList.remove("pending"); p.setAttribute("data-n", m.n); return;
    }
    var li = el("li", "sb-msg " + m.role);
    li.setAttribute("data-n", m.n);
    if (m.role === "human") li.appendChild(el("span", "sb-who", "Support"));
    li.appendChild(document.createTextNode(m.text || ""));
    renderAttachments(li, m.attachments);
    renderButtons(li, m.buttons);
    renderList(li, m.list);
    list.appendChild(li);
    scroll();
  }

  function send(text, payload) {
    var id = randomId(12);
    var li = el("li", "sb-msg user pending", text); li.setAttribute("data-client-msg-id", id);
    list.appendChild(li); pending[id] = li; scroll();
    disableChoices();
    setTyping(true);
    var body = { type: "message", text: text, client_msg_id: id };
    if (payload) body.payload = payload;
    if (ws && ws.readyState === 1) { unacked[id] = body; ws.send(JSON.stringify(body)); return; }
    post(toPost(body), 0);
  }

  function toPost(body) {
    var b = { session: session, text: body.text, client_msg_id: body.client_msg_id };
    if (body.payload) b.payload = body.payload;
    return b;
  }

  function post(body, attempt) {
    fetch(base + "/messages", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (r) {
        if (r.status >= 500) throw new Error("server " + r.status);
        if (r.status >= 400) markFailed(body.client_msg_id, "rejected (" + r.status + ")");
      })
      .catch(function () { setTimeout(function () { post(body, attempt + 1); }, Math.min(8000, 500 * Math.pow(2, attempt))); });
  }

  function connect() {
    clearTimeout(retryTimer); retryTimer = null;
    if (ws || held || polling) return;
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    // A socket's events only count while it is the current one (a forced reconnect leaves the old
    // one closing in the background: its late onclose must not drop the new socket).
    // The session goes in a subprotocol, not the URL (URLs end up in proxy logs); the server
    // answers with "salesbot.v1" only.
    var sock = new WebSocket(proto + "//" + location.host + base + "/ws?after=" + last,
                             ["salesbot.v1", "sid." + session]);
    ws = sock;
    setStatus("connecting");
    sock.onopen = function () { if (ws !== sock) return; wsFailures = 0; setStatus("online"); };
    sock.onmessage = function (e) {
      if (ws !== sock) return;
      var d; try { d = JSON.parse(e.data); } catch (err) { return; }
      if (d.type === "message") show(d);
      else if (d.type === "ack") {
        delete unacked[d.client_msg_id];
        if (d.status >= 400) markFailed(d.client_msg_id, (d.error && d.error.message) || "rejected");
      }
      else if (d.type === "typing" && d.on) setTyping(true);
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null; setStatus("offline"); wsFailures++;
      // Resend what was not acknowledged through the other path: the server dedupes by client_msg_id.
      Object.keys(unacked).forEach(function (id) { post(toPost(unacked[id]), 0); delete unacked[id]; });
      if (held) return;
      if (wsFailures >= 3 && !polling) { poll(); return; }
      retryTimer = setTimeout(connect, Math.min(10000, 300 * Math.pow(2, wsFailures)));
    };
  }

  // Close the current socket as a network drop would (its unacknowledged messages go by POST).
  function drop() {
    var sock = ws; if (!sock) return;
    sock.onclose();
    try { sock.close(); } catch (err) { /* already closed */ }
  }

  function poll() {
    polling = true; setStatus("online");
    fetch(base + "/messages?after=" + last + "&wait=25", { headers: { "X-Salesbot-Session": session } })
      .then(function (r) { if (!r.ok) throw new Error("server " + r.status); return r.json(); })
      .then(function (d) {
        setStatus("online");
        (d.messages || []).forEach(show);
        if (typeof d.last === "number" && d.last > last) last = d.last;  // skip entries not shown to customers
        setTimeout(poll, 50);
      })
      .catch(function () { setStatus("offline"); setTimeout(poll, 2000); });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text, null);
  });

  // The widget was opened on a page: site.visit / site.returning_visitor for a visitor the CRM
  // knows (the server decides; an anonymous visitor is not recorded). The page is the embedding
  // page's ?page=<address>, else the referrer (the page that framed or linked the widget), else
  // the widget's own address. A failure is not retried: a lost visit is not worth a message.
  function pageUrl() {
    var found = /[?&]page=([^&#]*)/.exec(location.search), url = null;
    try { url = found ? decodeURIComponent(found[1]) : null; } catch (err) { url = null; }
    url = url || document.referrer || location.href;
    return /^https?:\/\//i.test(url) && url.length <= 2048 ? url : location.href;
  }
  var visited = fetch(base + "/visits", { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify({ session: session, url: pageUrl() }) })
    .then(function (r) { return r.ok ? r.json() : { events: [] }; })
    .catch(function () { return { events: [] }; });

  window.salesbotChat = {
    visited: visited,  // resolves to the server's answer ({events: [...]})
    session: session,
    last: function () { return last; },
    transport: function () { return polling ? "poll" : "websocket"; },
    // Test and support hooks: drop the socket and resume at once, or stay offline until connect().
    reconnect: function () { held = false; drop(); wsFailures = 0; connect(); },
    disconnect: function () { held = true; drop(); setStatus("offline"); },
    connect: function () { held = false; wsFailures = 0; connect(); }
  };
  if ("WebSocket" in window && !/[?&]transport=poll/.test(location.search)) connect(); else poll();
})();
