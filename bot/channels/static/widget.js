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
  var ws = null, wsFailures = 0, polling = false;

  function setStatus(s) { statusDot.className = "sb-dot " + s; statusDot.title = s; root.setAttribute("data-status", s); }
  function scroll() { list.scrollTop = list.scrollHeight; }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }

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
    if (m.n <= last) return;
    last = m.n;
    if (m.role === "user" && m.client_msg_id && pending[m.client_msg_id]) {
      var p = pending[m.client_msg_id]; delete pending[m.client_msg_id];
      p.classList.remove("pending"); p.setAttribute("data-n", m.n); return;
    }
    if (m.role !== "user") { disableChoices(); typing.hidden = true; }
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
    typing.hidden = false;
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
      .then(function (r) { if (r.status >= 500) throw new Error("server " + r.status); })
      .catch(function () { setTimeout(function () { post(body, attempt + 1); }, Math.min(8000, 500 * Math.pow(2, attempt))); });
  }

  function connect() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + location.host + base + "/ws?session=" + session + "&after=" + last);
    ws.onopen = function () { wsFailures = 0; setStatus("online"); };
    ws.onmessage = function (e) {
      var d = JSON.parse(e.data);
      if (d.type === "message") show(d);
      else if (d.type === "ack") delete unacked[d.client_msg_id];
      else if (d.type === "typing") typing.hidden = !d.on && typing.hidden;
    };
    ws.onclose = function () {
      ws = null; setStatus("offline"); wsFailures++;
      // Resend what was not acknowledged through the other path: the server dedupes by client_msg_id.
      Object.keys(unacked).forEach(function (id) { post(toPost(unacked[id]), 0); delete unacked[id]; });
      if (wsFailures >= 3 && !polling) { poll(); return; }
      setTimeout(connect, Math.min(10000, 300 * Math.pow(2, wsFailures)));
    };
  }

  function poll() {
    polling = true; setStatus("online");
    fetch(base + "/messages?session=" + session + "&after=" + last + "&wait=25")
      .then(function (r) { return r.json(); })
      .then(function (d) { (d.messages || []).forEach(show); setTimeout(poll, 50); })
      .catch(function () { setStatus("offline"); setTimeout(poll, 2000); });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text, null);
  });

  window.salesbotChat = { session: session, last: function () { return last; } };
  if ("WebSocket" in window && !/[?&]transport=poll/.test(location.search)) connect(); else poll();
})();
