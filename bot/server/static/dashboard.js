/* Salesbot Live: the support dashboard. Plain JavaScript, no build step, no library.
 *
 * Safety rule of this file: text from customers, contacts, bots and flows is only ever put in the
 * page with textContent / createTextNode / setAttribute (never innerHTML), and links only get
 * http(s) URLs. The page's Content-Security-Policy allows no inline script either.
 *
 * Auth: the token lives in this tab's sessionStorage and goes as "Authorization: Bearer" with
 * every API call; POST /live/session also sets the HttpOnly cookie EventSource uses for
 * /api/live (EventSource cannot send headers).
 */
(function () {
  "use strict";

  var TOKEN_KEY = window.SalesbotLive.TOKEN_KEY;  // dom.js
  var PAGE = 50;
  var S = {
    token: null, me: null, role: null, bots: [], channels: [],
    filters: { status: "", channel: "", bot: "", waiting: false, parked: false, q: "" },
    rows: {},            // cid -> summary shown in the list
    nextBefore: null,
    selected: null,      // cid of the open conversation
    detail: null,        // its latest summary + run
    lead: null,
    lastN: 0,            // highest transcript number shown
    listES: null, convES: null,
    graphs: {},          // "bot@version" -> layout
    graphKey: null,
    graphScale: null,    // null: fit the card's width; else the zoom the person chose
    listGen: 0,
    leadTimer: null,
    resumeTimer: null,
    sending: false,      // a reply on its way
  };

  // ------------------------------------------------------------------ helpers
  var L = window.SalesbotLive;  // dom.js
  var $ = L.byId, el = L.el, svg = L.svg, errorText = L.errorText;

  function api(method, path, body) {
    return L.api(method, path, body, S.token).then(function (res) {
      if (res.status === 401) signedOut("Your session has ended. Sign in again.");
      return res;
    });
  }

  function contactName(s) {
    var c = s.contact || {};
    if (c.name) return c.name;
    if (c.phone) return c.phone;
    if (c.email) return c.email;
    var ext = c.external_id || s.id || "";
    return "Visitor " + ext.slice(-6);
  }

  function initial(name) {
    var m = /[\p{L}\p{N}]/u.exec(name || "");
    return m ? m[0].toUpperCase() : "?";
  }

  function hue(text) {
    var h = 0;
    for (var i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) % 360;
    return h;
  }

  function paintAvatar(node, name) {
    node.textContent = initial(name);
    node.style.backgroundColor = "hsl(" + hue(name || "?") + ", 55%, 46%)";
  }

  function ago(ts) {
    if (!ts) return "";
    var s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 45) return "now";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 86400) return Math.round(s / 3600) + " h";
    var d = new Date(ts * 1000);
    return d.toLocaleDateString(undefined, { day: "numeric", month: "short" });
  }

  /* How long since ``ts``: "40 s", "12 min", "2 h 5 min", "3 d 4 h" (the customer's wait). */
  function waited(ts) {
    var s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min";
    var h = Math.floor(m / 60);
    if (h < 24) return h + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
    return Math.floor(h / 24) + " d" + (h % 24 ? " " + (h % 24) + " h" : "");
  }

  function since(ts) {
    var d = new Date(ts * 1000), today = new Date();
    var time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    return d.toDateString() === today.toDateString() ? time :
      d.toLocaleDateString(undefined, { day: "numeric", month: "short" }) + " " + time;
  }

  function clock(ts) {
    if (!ts) return "";
    return new Date(ts * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function mine(d) { return d && d.owner === "human" && d.owner_user === S.me; }

  function notice(text, kind) {
    var n = $("notice");
    if (!text) { n.hidden = true; n.textContent = ""; return; }
    n.textContent = text;
    n.className = "notice " + (kind || "info");
    n.hidden = false;
  }

  // ------------------------------------------------------------------ sign in / out
  function showSignIn(message) {
    $("app").hidden = true;
    $("signin").hidden = false;
    var err = $("signin-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("token").focus();
  }

  function signedOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    S.token = null;
    closeStreams();
    showSignIn(message);
  }

  function closeStreams() {
    if (S.listES) { S.listES.close(); S.listES = null; }
    if (S.convES) { S.convES.close(); S.convES = null; }
  }

  /* Resolves true (signed in) or false (the token is refused: signed out); rejects when the
   * server cannot say (down, its store unreachable: 5xx, 429, no JSON), keeping the token, so a
   * brief outage does not sign the person out. */
  function signIn(token) {
    S.token = token;
    return fetch("/live/session", { method: "POST", credentials: "same-origin", headers: { "Authorization": "Bearer " + token } })
      .then(function (r) {
        if (r.status !== 200 && r.status !== 401 && r.status !== 403) throw new Error("unavailable (" + r.status + ")");
        return r.json().then(function (b) { return { status: r.status, body: b }; });
      })
      .then(function (res) {
        if (res.status !== 200) {
          var msg = res.status === 403 ? "This token may not use the support dashboard." : "Unknown token.";
          S.token = null;
          sessionStorage.removeItem(TOKEN_KEY);
          showSignIn(msg);
          return false;
        }
        sessionStorage.setItem(TOKEN_KEY, token);
        S.me = res.body.user; S.role = res.body.role;
        S.bots = res.body.bots || []; S.channels = res.body.channels || [];
        return true;
      });
  }

  /* The stored token at load: signed in again, or, while the server cannot answer, the
   * sign-in form says so and it is tried again every few seconds (the token kept). */
  function resume(token) {
    signIn(token).then(function (ok) { if (ok) start(); }, function () {
      showSignIn("The server cannot be reached right now; trying again…");
      S.resumeTimer = setTimeout(function () { if (sessionStorage.getItem(TOKEN_KEY) === token) resume(token); }, 3000);
    });
  }

  function start() {
    $("signin").hidden = true;
    $("app").hidden = false;
    $("me-name").textContent = S.me;
    $("me-role").textContent = S.role;
    paintAvatar($("me-avatar"), S.me);
    fillSelect($("channel-filter"), [["", "All channels"]].concat(S.channels.map(function (c) { return [c, c]; })), S.filters.channel);
    fillSelect($("bot-filter"), [["", "All bots"]].concat(S.bots.map(function (b) { return [b.id, b.name || b.id]; })), S.filters.bot);
    fillSelect($("start-bot"), [["", "Choose a bot…"]].concat(S.bots.map(function (b) { return [b.id, botLabel(b.id)]; })), "");
    openListStream();
    loadList(false);
  }

  function botLabel(id) {
    var b = S.bots.filter(function (x) { return x.id === id; })[0];
    return b && b.name && b.name !== b.id ? b.name + " (" + b.id + ")" : id;
  }

  function fillSelect(select, options, value) {
    select.replaceChildren();
    options.forEach(function (o) {
      var opt = el("option", null, o[1]);
      opt.value = o[0];
      select.appendChild(opt);
    });
    select.value = value;
  }

  // ------------------------------------------------------------------ the list
  function listQuery(before) {
    var f = S.filters, p = new URLSearchParams();
    p.set("limit", String(PAGE));
    if (f.status) p.set("status", f.status);
    if (f.channel) p.set("channel", f.channel);
    if (f.bot) p.set("bot", f.bot);
    if (f.waiting) p.set("waiting", "1");
    if (f.parked) p.set("parked", "1");
    if (f.q) p.set("q", f.q);
    if (before) {  // the last row of the previous page: the next one starts right after it
      p.set("before", String(before.at));
      if (before.id != null) p.set("before_id", before.id);
    }
    return "/api/conversations?" + p.toString();
  }

  function loadList(more) {
    var gen = ++S.listGen;
    if (!more) { S.nextBefore = null; }
    return api("GET", listQuery(more ? S.nextBefore : null)).then(function (res) {
      if (gen !== S.listGen || res.status !== 200) return;
      if (!more) { S.rows = {}; $("conversations").replaceChildren(); }
      res.body.conversations.forEach(function (s) { upsertRow(s, false); });
      S.nextBefore = res.body.next_before == null ? null
        : { at: res.body.next_before, id: res.body.next_before_id };
      $("load-more").hidden = !S.nextBefore;
      updateListMeta(res.body.truncated);
    });
  }

  function updateListMeta(truncated) {
    var n = Object.keys(S.rows).length;
    $("list-empty").hidden = n > 0;
    $("list-count").textContent = n + (S.nextBefore ? "+" : "") + " conversation" + (n === 1 ? "" : "s") +
      (truncated ? " (search too broad: showing part)" : "");
  }

  function fold(text) {
    return (text || "").normalize("NFKD").replace(/[\u0300-\u036f]/g, "").replace(/ı/g, "i").toLowerCase();
  }

  function matches(s) {
    var f = S.filters;
    if (f.status && s.status !== f.status) return false;
    if (f.channel && s.channel !== f.channel) return false;
    if (f.bot && s.bot !== f.bot) return false;
    if (f.waiting && !s.waiting) return false;
    if (f.parked && !s.parked) return false;
    if (f.q && !matchesQuery(s, f.q)) return false;
    return true;
  }

  function matchesQuery(s, q) {
    var c = s.contact || {};
    var hay = fold([c.name, c.email].join(" "));
    var digits = (c.phone || "").replace(/\D/g, "");
    return fold(q).split(/\s+/).filter(Boolean).every(function (w) {
      var wd = w.replace(/\D/g, "").replace(/^0+/, "");
      return hay.indexOf(w) >= 0 || (/^[+\d().-]+$/.test(w) && wd !== "" && digits.indexOf(wd) >= 0);
    });
  }

  function ownerLabel(s) {
    if (s.owner === "human") return s.owner_user === S.me ? "You" : (s.owner_user || "A person");
    if (s.status === "bot") return "Bot";
    return "Idle";
  }

  function ownerKind(s) {
    if (s.owner === "human") return s.owner_user === S.me ? "me" : "person";
    return s.status === "bot" ? "bot" : "idle";
  }

  function buildRow(s) {
    var li = el("li", "conv");
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    li.dataset.cid = s.id;
    var av = el("div", "avatar");
    var main = el("div", "conv-main");
    var l1 = el("div", "line1");
    l1.append(el("span", "name"), el("span", "chip channel"), el("span", "time"));
    var l2 = el("div", "line2");
    l2.append(el("span", "owner-badge small"), el("span", "botstep"));
    var l3 = el("div", "line3");
    l3.append(el("span", "preview"), el("span", "flag"));
    main.append(l1, l2, l3);
    li.append(av, main);
    li.addEventListener("click", function () { select(s.id); });
    li.addEventListener("keydown", function (e) { if (e.key === "Enter") select(li.dataset.cid); });
    return li;
  }

  function fillRow(li, s) {
    var name = contactName(s);
    paintAvatar(li.querySelector(".avatar"), name);
    li.querySelector(".name").textContent = name;
    li.querySelector(".channel").textContent = s.channel || "";
    var t = li.querySelector(".time");
    t.textContent = ago(s.last_activity);
    t.dataset.ts = s.last_activity || "";
    var badge = li.querySelector(".owner-badge");
    badge.textContent = ownerLabel(s);
    badge.dataset.owner = ownerKind(s);
    li.querySelector(".botstep").textContent = s.bot ? s.bot + (s.step ? " · " + s.step : "") : "no bot";
    var p = s.preview, prev = li.querySelector(".preview");
    var who = p ? (p.role === "user" ? "" : p.role === "bot" ? "Bot: " : "Support: ") : "";
    prev.textContent = p ? who + p.text : (s.last_message || "");
    var flag = li.querySelector(".flag");
    flag.dataset.since = s.waiting && !s.parked && s.waiting_since ? String(s.waiting_since) : "";
    flag.textContent = s.parked ? "Parked" : s.waiting ? waitingText(s.waiting_since) : (s.unanswered ? "Unanswered" : "");
    flag.title = flag.dataset.since ? "Waiting since " + since(s.waiting_since) : "";
    flag.className = "flag" + (s.parked ? " parked" : s.waiting ? " waiting" : s.unanswered ? " unanswered" : "");
    li.dataset.status = s.status;
    li.dataset.owner = ownerKind(s);
    li.classList.toggle("active", s.id === S.selected);
  }

  function waitingText(ts) { return ts ? "Waiting " + waited(ts) : "Waiting"; }

  function upsertRow(s, live) {
    var list = $("conversations");
    var li = list.querySelector('li.conv[data-cid="' + CSS.escape(s.id) + '"]');
    if (!matches(s)) {
      if (li) { li.remove(); delete S.rows[s.id]; }
      return;
    }
    var last = list.lastElementChild;
    if (!li && live && S.nextBefore && last && (S.rows[last.dataset.cid] || {}).last_activity > (s.last_activity || 0)) {
      return; // older than the loaded pages: "Load more" will bring it
    }
    if (!li) {
      li = buildRow(s);
      if (live) { li.dataset.appeared = String(Date.now()); li.classList.add("fresh"); }
    }
    S.rows[s.id] = s;
    fillRow(li, s);
    // Newest activity first: before the first other row with older activity, else last.
    var before = null;
    var items = list.children;
    for (var i = 0; i < items.length; i++) {
      var other = S.rows[items[i].dataset.cid];
      if (items[i] !== li && other && (other.last_activity || 0) < (s.last_activity || 0)) { before = items[i]; break; }
    }
    if (before) { if (li.nextSibling !== before) list.insertBefore(li, before); }
    else if (li.parentNode !== list || li !== list.lastElementChild) list.appendChild(li);
    updateListMeta(false);
  }

  function openListStream() {
    if (S.listES) S.listES.close();
    var es = new EventSource("/api/live");
    S.listES = es;
    setConn("connecting");
    var opened = 0;
    es.addEventListener("ready", function () {
      setConn("live");
      if (opened++ > 0) loadList(false);  // back after a drop: what changed meanwhile
    });
    es.addEventListener("conversation", function (e) {
      var s = JSON.parse(e.data);
      upsertRow(s, true);
      if (s.id === S.selected && S.detail) { S.detail = Object.assign({}, S.detail, s); renderHeader(); }
    });
    es.addEventListener("resync", function () { loadList(false); });
    es.onerror = function () {
      setConn("reconnecting");
      if (es.readyState === EventSource.CLOSED) reopenAfterSignIn(openListStream, true);
    };
  }

  /* A stream the server closed (its cookie expired or no longer valid, a proxy's 502) is opened
   * again after signing in again. Both streams close together (a restart): each waiting stream
   * is reopened by the one sign-in (the conversation's used to be dropped, its transcript then
   * silent while the list went on). */
  var reopens = null;  // while signing in again: the streams to reopen, and whether the list reloads
  function reopenAfterSignIn(reopen, reloadList) {
    if (!S.token) return;
    if (reopens) { reopens.calls.push(reopen); reopens.reload = reopens.reload || reloadList; return; }
    reopens = { calls: [reopen], reload: reloadList };
    setTimeout(function again() {
      if (!S.token) { reopens = null; return; }  // signed out meanwhile
      signIn(S.token).then(function (ok) {
        var done = reopens;
        reopens = null;
        if (!ok) return;
        done.calls.forEach(function (call) { call(); });
        if (done.reload) loadList(false);
      }, function () { setTimeout(again, 2000); });
    }, 1000);
  }

  function setConn(state) {
    var c = $("conn");
    c.dataset.state = state;
    $("conn-text").textContent = state === "live" ? "Live" : state === "connecting" ? "Connecting…" : "Reconnecting…";
  }

  // ------------------------------------------------------------------ one conversation
  function select(cid) {
    if (S.convES) { S.convES.close(); S.convES = null; }
    S.selected = cid;
    S.detail = null; S.lead = null; S.lastN = 0;
    Array.prototype.forEach.call($("conversations").children, function (li) {
      li.classList.toggle("active", li.dataset.cid === cid);
    });
    $("placeholder").hidden = true;
    $("conversation").hidden = false;
    $("conversation").dataset.cid = cid;
    $("transcript").replaceChildren();
    notice(null);
    closeConfirm();
    $("reply").value = "";
    return api("GET", "/api/conversations/" + encodeURIComponent(cid)).then(function (res) {
      if (S.selected !== cid) return;
      if (res.status !== 200) { notice(errorText(res), "error"); return; }
      var body = res.body;
      S.detail = body;  // who the customer is, for the transcript's labels
      (body.transcript || []).forEach(addEntry);
      S.lead = body;
      setDetail(body);
      renderLead(body);
      openConvStream(cid);
    });
  }

  function openConvStream(cid) {
    var es = new EventSource("/api/live?conversation=" + encodeURIComponent(cid) + "&after=" + S.lastN);
    S.convES = es;
    es.addEventListener("entry", function (e) {
      if (S.selected !== cid) return;
      addEntry(JSON.parse(e.data));
    });
    es.addEventListener("conversation", function (e) {
      if (S.selected !== cid) return;
      var d = JSON.parse(e.data);
      var before = S.detail;
      setDetail(d);
      var changed = !before || !before.run || !d.run || before.run.step !== d.run.step ||
        before.run.status !== d.run.status || before.owner !== d.owner;
      if (changed) scheduleLead(cid);
    });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED && S.selected === cid) {
        reopenAfterSignIn(function () { if (S.selected === cid) openConvStream(cid); }, false);
      }
    };
  }

  function scheduleLead(cid) {
    clearTimeout(S.leadTimer);
    S.leadTimer = setTimeout(function () {
      if (S.selected !== cid) return;
      api("GET", "/api/conversations/" + encodeURIComponent(cid)).then(function (res) {
        if (S.selected === cid && res.status === 200) { S.lead = res.body; renderLead(res.body); }
      });
    }, 800);
  }

  function setDetail(d) {
    S.detail = d;
    renderHeader();
    renderRun();
    loadGraph();
  }

  function renderHeader() {
    var d = S.detail;
    if (!d) return;
    var name = contactName(d);
    paintAvatar($("c-avatar"), name);
    $("c-name").textContent = name;
    var c = d.contact || {};
    var bits = [d.channel + (d.account ? " · " + d.account : "")];
    if (c.phone) bits.push(c.phone);
    if (c.email) bits.push(c.email);
    $("c-sub").textContent = bits.join("  ·  ");  // the raw id: behind the copy button
    $("c-copy-id").title = d.id;
    $("c-copy-id").dataset.cid = d.id;
    var badge = $("c-owner");
    var kind = ownerKind(d);
    badge.dataset.owner = kind;
    badge.textContent = kind === "me" ? "You have this conversation" :
      kind === "person" ? (d.owner_user || "A person") + " has this conversation" :
      kind === "bot" ? "Bot is handling it" : "No bot running";
    var me = mine(d), other = d.owner === "human" && !me;
    var tk = $("btn-takeover");
    tk.disabled = d.owner === "human";
    tk.textContent = other ? "Taken by " + (d.owner_user || "someone") : me ? "Taken over" : "Take over";
    var canRelease = me || (other && S.role === "admin");
    $("btn-release").disabled = !canRelease;
    $("release-step").disabled = !canRelease;
    var active = d.run && (d.run.status === "running" || d.run.status === "waiting");
    // While someone else holds the chat they decide about the bot (an admin may still act).
    var blocked = other && S.role !== "admin";
    var holder = (d.owner_user || "Someone") + " has this conversation";
    $("btn-stop").disabled = !active || blocked;
    $("btn-stop").title = blocked ? holder : "";
    $("start-bot").disabled = blocked;
    $("btn-start").disabled = !$("start-bot").value || blocked;
    $("btn-start").title = blocked ? holder : "";
    if (blocked) closeConfirm("start");
    renderWaiting();
    renderHeld();
    var reply = $("reply");
    reply.disabled = !me;
    $("btn-send").disabled = !me;
    reply.placeholder = me ? "Reply to " + name + "… (Enter sends, Shift+Enter for a new line)" :
      other ? (d.owner_user || "Someone") + " has this conversation" : "Take over to reply";
    var banner = $("parked-banner");
    banner.hidden = !d.parked;
    if (d.parked) {
      $("parked-title").textContent = "Parked after " + d.failures + " failed attempt" + (d.failures === 1 ? "" : "s") + ":";
      $("parked-error").textContent = (d.error || "unknown error") + ". New messages wait until someone retries.";
    }
    var row = $("conversations").querySelector('li.conv[data-cid="' + CSS.escape(d.id) + '"]');
    if (row) { S.rows[d.id] = Object.assign({}, S.rows[d.id] || {}, summaryOf(d)); fillRow(row, S.rows[d.id]); }
  }

  function renderWaiting() {
    var d = S.detail, node = $("c-waiting");
    var on = !!(d && d.waiting && d.waiting_since && !d.parked);
    node.hidden = !on;
    node.dataset.since = on ? String(d.waiting_since) : "";
    node.textContent = on ? "Waiting since " + since(d.waiting_since) + " (" + waited(d.waiting_since) + ")" : "";
  }

  /* The customer's message that came while a person had the chat: nobody has let the bot answer
   * it; at hand-back the person chooses (see handBack). */
  function renderHeld() {
    var d = S.detail, h = d && d.owner === "human" ? d.held_message : null;
    $("held").hidden = !h;
    if (!h) { closeConfirm("handback"); return; }
    $("held-text").textContent = "“" + (h.text || h.payload || "") + "”";
    $("held-hint").textContent = mine(d) ? " At hand-back you choose whether the bot answers it." :
      " " + (d.owner_user || "The person") + " chooses at hand-back whether the bot answers it.";
  }

  // ------------------------------------------------------------------ confirmations
  /* One inline question at a time above the transcript: ``kind`` names it, ``choices`` are
   * [label, className, action]; Cancel is always there. */
  function askConfirm(kind, text, choices) {
    var box = $("confirm"), actions = $("confirm-actions");
    box.dataset.kind = kind;
    $("confirm-text").textContent = text;
    actions.replaceChildren();
    choices.concat([["Cancel", "ghost", null]]).forEach(function (c) {
      var b = el("button", c[1], c[0]);
      b.type = "button";
      b.addEventListener("click", function () { closeConfirm(); if (c[2]) c[2](); });
      actions.appendChild(b);
    });
    box.hidden = false;
    actions.firstChild.focus();
  }

  function closeConfirm(kind) {
    var box = $("confirm");
    if (kind && box.dataset.kind !== kind) return;
    box.hidden = true;
    box.dataset.kind = "";
    $("confirm-actions").replaceChildren();
  }

  function summaryOf(d) {
    var out = {};
    for (var k in d) if (k !== "run" && k !== "transcript" && k !== "lead" && k !== "tasks" && k !== "notes") out[k] = d[k];
    return out;
  }

  // ------------------------------------------------------------------ transcript
  var ROLE_NAMES = { user: "Customer", bot: "Bot", human: "Support", internal: "Internal note", system: "" };

  function addEntry(entry) {
    if (typeof entry.n === "number") {
      if (entry.n <= S.lastN) return;
      S.lastN = entry.n;
    }
    var list = $("transcript");
    if (entry.role === "system" && entry.event === "delivery" && entry.ref) {
      var target = list.querySelector('li[data-ref="' + CSS.escape(entry.ref) + '"] .delivery');
      if (target) {
        target.textContent = deliveryText(entry.status);
        target.dataset.status = entry.status || "";
        return;
      }
    }
    var role = ["user", "bot", "human", "internal", "system"].indexOf(entry.role) >= 0 ? entry.role : "system";
    var li = el("li", "entry role-" + role);
    if (typeof entry.n === "number") li.dataset.n = String(entry.n);
    if (entry.ref) li.dataset.ref = entry.ref;
    if (role === "system") {
      li.appendChild(el("span", "sys-text", entry.text || entry.event || ""));
      li.appendChild(el("time", "at", clock(entry.at)));
      if (entry.event) li.dataset.event = entry.event;
      if (entry.event === "run_start" || entry.event === "run_end") li.classList.add("run-mark");
    } else {
      var head = el("div", "meta");
      var who = role === "human" ? (entry.user || "Support") : role === "bot" ? "Bot" + (entry.bot ? " · " + entry.bot : "") :
        role === "user" ? (S.detail ? contactName(S.detail) : "Customer") : ROLE_NAMES[role];
      head.appendChild(el("span", "who", who));
      if (role === "bot" && entry.step) head.appendChild(el("span", "step", entry.step));
      if (role === "internal" && entry.to && entry.to.length) head.appendChild(el("span", "step", "→ " + entry.to.join(", ")));
      head.appendChild(el("time", "at", clock(entry.at)));
      var bubble = el("div", "bubble");
      bubble.appendChild(el("div", "text", entry.text || (entry.payload ? "[" + entry.payload + "]" : "")));
      if (entry.buttons && entry.buttons.length) {
        var bs = el("div", "buttons");
        entry.buttons.forEach(function (b) { bs.appendChild(el("span", "btn-chip", b.title)); });
        bubble.appendChild(bs);
      }
      if (entry.list && entry.list.sections) {
        var ls = el("div", "buttons");
        entry.list.sections.forEach(function (sec) {
          (sec.rows || []).forEach(function (r) { ls.appendChild(el("span", "btn-chip", r.title)); });
        });
        bubble.appendChild(ls);
      }
      (entry.attachments || []).forEach(function (a) {
        var url = String(a.url || "");
        var label = (a.kind || "file") + ": " + (a.name || url);
        if (/^https?:\/\//i.test(url)) {
          var link = el("a", "attachment", label);
          link.href = url; link.target = "_blank"; link.rel = "noopener noreferrer";
          bubble.appendChild(link);
        } else {
          bubble.appendChild(el("span", "attachment", label));
        }
      });
      if (entry.template) bubble.appendChild(el("div", "tmpl", "template " + entry.template));
      if (role === "bot" || role === "human") bubble.appendChild(el("span", "delivery", ""));
      li.append(head, bubble);
    }
    var stick = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    list.appendChild(li);
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function deliveryText(status) {
    return status === "read" ? "✓✓ read" : status === "delivered" ? "✓✓ delivered" : status === "sent" ? "✓ sent" :
      status === "failed" ? "✗ failed" : (status || "");
  }

  // ------------------------------------------------------------------ run
  function renderRun() {
    var d = S.detail, run = d && d.run;
    $("run-bot").textContent = run ? run.bot + " · v" + run.version : "—";
    $("run-step").textContent = run && run.step ? run.step : "—";
    var st = el("span", "status-chip " + (run ? run.status : "none"), run ? run.status : "no run");
    $("run-status").replaceChildren(st);
    var w = run && run.waiting_for;
    $("run-wait").textContent = w ? describeWait(w) : "—";
    var held = $("run-held");
    if (w && w.held && w.held.length) {
      held.hidden = false;
      held.textContent = "Timer held (" + w.held.join(", ") + "): it fell due while a person had the conversation; it starts again on hand-back.";
    } else {
      held.hidden = true;
      held.textContent = "";
    }
    var err = $("run-error");
    err.hidden = !(run && run.error);
    err.textContent = run && run.error ? run.error : "";
    var vars = $("run-vars");
    vars.replaceChildren();
    var keys = run ? Object.keys(run.variables || {}) : [];
    $("run-vars-count").textContent = "(" + keys.length + ")";
    keys.sort().forEach(function (k) {
      var tr = el("tr");
      var v = run.variables[k];
      tr.append(el("th", null, k), el("td", null, typeof v === "string" ? v : JSON.stringify(v)));
      vars.appendChild(tr);
    });
    tick();
    fillReleaseSteps();
  }

  function describeWait(w) {
    var kinds = { reply: "a reply", pause: "a pause", widget: "a widget", request: "an answer", widget_done: "hand-back (widget answered)" };
    var text = (kinds[w.kind] || w.kind) + " at " + w.step;
    if (w.events && w.events.length) text += " (" + w.events.join(", ") + ")";
    return text;
  }

  function tick() {
    var d = S.detail, w = d && d.run && d.run.waiting_for, node = $("run-countdown");
    if (!w || !w.until) {
      node.textContent = w && w.held && w.held.length ? "held" : "—";
      node.dataset.state = w && w.held && w.held.length ? "held" : "none";
      return;
    }
    var left = Math.round(w.until - Date.now() / 1000);
    if (d.owner === "human") {
      node.textContent = left > 0 ? "in " + fmtDuration(left) + " (held while a person has it)" : "held";
      node.dataset.state = "held";
    } else {
      node.textContent = left > 0 ? "in " + fmtDuration(left) : "due";
      node.dataset.state = left > 0 ? "counting" : "due";
    }
  }

  function fmtDuration(s) {
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var mm = (h ? String(m).padStart(2, "0") : String(m)) + ":" + String(sec).padStart(2, "0");
    return h ? h + ":" + mm : mm;
  }

  // ------------------------------------------------------------------ lead card
  function renderLead(body) {
    var box = $("lead-body");
    box.replaceChildren();
    var lead = body.lead, c = body.contact || {};
    // The contact first: who it is, how to reach them, who at the seller looks after them.
    var contact = el("dl", "kv lead-contact");
    var responsible = c.responsible || (lead && lead.responsible);
    [["Name", c.name || contactName(body), "lead-contact-name"], ["Phone", c.phone, "lead-contact-phone"],
     ["E-mail", c.email, "lead-contact-email"], ["Responsible", responsible, "lead-contact-responsible"]]
      .forEach(function (row) {
        if (row[0] === "E-mail" && !row[1]) return;
        var dd = el("dd", row[1] ? null : "muted", row[1] ? String(row[1]) : "—");
        dd.id = row[2];
        contact.append(el("dt", null, row[0]), dd);
      });
    box.appendChild(contact);
    if (!lead) {
      box.appendChild(el("p", "muted", "No lead linked yet."));
      return;
    }
    var head = el("div", "lead-head");
    head.appendChild(el("span", "lead-name", lead.name || ("Lead " + (lead.id || ""))));
    if (lead.price) head.appendChild(el("span", "price", String(lead.price)));
    box.appendChild(head);
    var stage = el("div", "stage");
    stage.appendChild(el("span", "chip", (lead.pipeline || "") + (lead.stage ? " → " + lead.stage : "")));
    if (lead.responsible && lead.responsible !== responsible) stage.appendChild(el("span", "muted", "· lead: " + lead.responsible));
    box.appendChild(stage);
    var tags = (lead.tags || []).concat(c.tags || []);
    if (tags.length) {
      var tg = el("div", "tags");
      tags.forEach(function (t) { tg.appendChild(el("span", "tag", t)); });
      box.appendChild(tg);
    }
    var fields = Object.assign({}, c.fields || {}, lead.fields || {});
    var names = Object.keys(fields);
    if (names.length) {
      var dl = el("dl", "kv small");
      names.sort().forEach(function (k) {
        var v = fields[k];
        dl.append(el("dt", null, k), el("dd", null, typeof v === "string" ? v : JSON.stringify(v)));
      });
      box.appendChild(dl);
    }
    var tasks = body.tasks || [];
    box.appendChild(el("h4", null, "Tasks (" + tasks.length + ")"));
    if (tasks.length) {
      var tl = el("ul", "tasks");
      tasks.forEach(function (t) {
        var li = el("li", t.completed ? "done" : "");
        li.appendChild(el("span", null, t.text || t.type || "task"));
        if (t.due) li.appendChild(el("span", "muted", " · due " + (typeof t.due === "number" ? clock(t.due) : t.due)));
        tl.appendChild(li);
      });
      box.appendChild(tl);
    }
    var notes = body.notes || [];
    box.appendChild(el("h4", null, "Notes (" + notes.length + ")"));
    notes.slice(0, 10).forEach(function (n) { box.appendChild(el("p", "note", n.text || "")); });
    if (c.id && window.salesbotProcesses) {  // processes.js: the contact's processes, with Stop
      box.appendChild(el("h4", null, "Processes"));
      var procs = el("ul", "processes");
      procs.id = "lead-processes";
      box.appendChild(procs);
      window.salesbotProcesses.list(String(c.id), procs);
    }
    if (lead.id && window.salesbotPipeline) {  // pipeline.js: events and what the rules did
      box.appendChild(el("h4", null, "Automations"));
      var hist = el("ol", "pl-history");
      hist.id = "lead-history";
      box.appendChild(hist);
      window.salesbotPipeline.history(String(lead.id), hist);
    }
  }

  // ------------------------------------------------------------------ flow graph
  function loadGraph() {
    var run = S.detail && S.detail.run;
    if (!run) { drawGraph(null); return; }
    var key = run.bot + "@" + run.version;
    if (S.graphKey === key) { highlight(); return; }
    S.graphKey = key;
    if (S.graphs[key]) { drawGraph(S.graphs[key]); return; }
    api("GET", "/api/bots/" + encodeURIComponent(run.bot) + "/graph?version=" + run.version).then(function (res) {
      if (res.status !== 200) { drawGraph(null); return; }
      S.graphs[key] = res.body;
      if (S.graphKey === key) drawGraph(res.body);
    });
  }

  function drawGraph(g) {
    var box = $("graph");
    box.replaceChildren();
    $("graph-title").textContent = g ? g.id + " v" + g.version : "";
    ["graph-out", "graph-fit", "graph-in", "graph-full"].forEach(function (id) { $(id).disabled = !g; });
    if (!g) { box.appendChild(el("p", "muted", "No bot run.")); fillReleaseSteps(); return; }
    box.appendChild(graphSvg(g, "arrow"));
    if (!$("graph-overlay").hidden) closeFullGraph();  // another bot's graph now
    sizeGraph();
    fillReleaseSteps();
    highlight();
  }

  /* The graph as an SVG, from the server's layout (plain numbers and texts, drawn with DOM calls).
   * Its size is set by sizeGraph (the card) or the full-size view; the viewBox keeps it sharp. */
  function graphSvg(g, markerId) {
    var root = svg("svg", { viewBox: "0 0 " + g.width + " " + g.height, width: g.width, height: g.height,
      role: "img", "aria-label": "Flow graph of " + g.id });
    root.dataset.width = String(g.width);
    root.dataset.height = String(g.height);
    var defs = svg("defs", {});
    var marker = svg("marker", { id: markerId, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.appendChild(svg("path", { d: "M0,0 L10,5 L0,10 z", "class": "arrowhead" }));
    defs.appendChild(marker);
    root.appendChild(defs);
    var labels = svg("g", { "class": "edge-labels" });
    g.edges.forEach(function (e) {
      var p = svg("path", { d: e.path, "class": "edge " + e.when + (e.back ? " back" : ""), "marker-end": "url(#" + markerId + ")" });
      p.dataset.source = e.source; p.dataset.target = e.target;
      root.appendChild(p);
      if (e.label) {  // placed by the server where it covers no other label and no step
        var lab = svg("g", { "class": "edge-label-box" });
        var w = e.lw || e.label.length * 6 + 8;
        lab.appendChild(svg("rect", { x: e.lx - w / 2, y: e.ly - 7, width: w, height: 14, rx: 3 }));
        var t = svg("text", { x: e.lx, y: e.ly, "class": "edge-label", "text-anchor": "middle", "dominant-baseline": "central" });
        t.textContent = e.label;
        var tip = svg("title", {});
        tip.textContent = e.source + " → " + e.target + ": " + e.label;
        lab.append(tip, t);
        labels.appendChild(lab);
      }
    });
    g.nodes.forEach(function (n) {
      var grp = svg("g", { "class": "node type-" + n.type + (n.start ? " start" : ""), transform: "translate(" + n.x + "," + n.y + ")" });
      grp.dataset.step = n.id;
      grp.appendChild(svg("rect", { width: n.w, height: n.h, rx: 8, ry: 8 }));
      var title = svg("text", { x: 10, y: 19, "class": "node-id" });
      title.textContent = n.label;
      var type = svg("text", { x: n.w - 8, y: 19, "class": "node-type", "text-anchor": "end" });
      type.textContent = n.type;
      var txt = svg("text", { x: 10, y: 38, "class": "node-text" });
      txt.textContent = n.text.length > 26 ? n.text.slice(0, 25) + "…" : n.text;
      var tip = svg("title", {});
      tip.textContent = n.id + " (" + n.type + ")" + (n.text ? ": " + n.text : "");
      grp.append(tip, title, type, txt);
      grp.addEventListener("click", function () {
        if (grp.dataset.dragged) return;  // the end of a pan, not a click
        var sel = $("release-step");
        if (!sel.disabled) { sel.value = n.id; notice("Hand back will continue at “" + n.id + "”.", "info"); }
      });
      root.appendChild(grp);
    });
    root.appendChild(labels);  // over the edges and steps
    return root;
  }

  var MIN_SCALE = 0.25, MAX_SCALE = 2;

  /* Fit: the whole width of the flow in the card (never above 1:1); after a zoom, the chosen scale.
   * The card scrolls (and pans by dragging) when the graph is larger than it. */
  function fitScale() {
    var root = $("graph").querySelector("svg");
    if (!root) return 1;
    var room = $("graph").clientWidth - 2;
    return Math.max(MIN_SCALE, Math.min(1, room / Number(root.dataset.width)));
  }

  function sizeGraph() {
    var box = $("graph"), root = box.querySelector("svg");
    if (!root) return;
    var scale = S.graphScale === null ? fitScale() : S.graphScale;
    root.setAttribute("width", String(Math.round(Number(root.dataset.width) * scale)));
    root.setAttribute("height", String(Math.round(Number(root.dataset.height) * scale)));
    box.dataset.scale = scale.toFixed(3);
    box.dataset.fit = S.graphScale === null ? "1" : "";
  }

  function zoomGraph(factor) {
    var box = $("graph");
    var current = S.graphScale === null ? fitScale() : S.graphScale;
    var next = Math.max(MIN_SCALE, Math.min(MAX_SCALE, current * factor));
    // keep the middle of what is shown in the middle
    var cx = (box.scrollLeft + box.clientWidth / 2) / current, cy = (box.scrollTop + box.clientHeight / 2) / current;
    S.graphScale = next;
    sizeGraph();
    box.scrollLeft = cx * next - box.clientWidth / 2;
    box.scrollTop = cy * next - box.clientHeight / 2;
  }

  /* Drag to pan (the box's scroll position), in the card and in the full-size view. */
  function pannable(box) {
    var start = null;
    box.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      start = { x: e.clientX, y: e.clientY, left: box.scrollLeft, top: box.scrollTop, moved: false, target: e.target };
    });
    box.addEventListener("pointermove", function (e) {
      if (!start) return;
      var dx = e.clientX - start.x, dy = e.clientY - start.y;
      if (!start.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      if (!start.moved) { start.moved = true; box.setPointerCapture(e.pointerId); box.classList.add("panning"); }
      box.scrollLeft = start.left - dx;
      box.scrollTop = start.top - dy;
    });
    function end(e) {
      if (!start) return;
      if (start.moved) {
        var node = start.target.closest && start.target.closest("g.node");
        if (node) { node.dataset.dragged = "1"; setTimeout(function () { delete node.dataset.dragged; }, 0); }
        box.classList.remove("panning");
        if (box.hasPointerCapture(e.pointerId)) box.releasePointerCapture(e.pointerId);
      }
      start = null;
    }
    box.addEventListener("pointerup", end);
    box.addEventListener("pointercancel", end);
    box.addEventListener("wheel", function (e) {  // Ctrl/⌘ + wheel zooms the card; the wheel alone scrolls
      if (box.id !== "graph" || !(e.ctrlKey || e.metaKey)) return;
      e.preventDefault();
      zoomGraph(e.deltaY < 0 ? 1.15 : 1 / 1.15);
    }, { passive: false });
  }

  function openFullGraph() {
    var g = S.graphKey ? S.graphs[S.graphKey] : null;
    if (!g) return;
    var big = $("graph-big");
    big.replaceChildren(graphSvg(g, "arrow-big"));  // 1:1, the overlay scrolls and pans
    $("graph-overlay-title").textContent = "Flow " + g.id + " v" + g.version;
    $("graph-overlay").hidden = false;
    highlight();
    var current = big.querySelector("g.node.current");
    if (current) current.scrollIntoView({ block: "center", inline: "center" });
    $("graph-close").focus();
  }

  function closeFullGraph() {
    $("graph-overlay").hidden = true;
    $("graph-big").replaceChildren();
  }

  function highlight() {
    var run = S.detail && S.detail.run;
    var step = run ? run.step : null;
    var nodes = document.querySelectorAll("#graph g.node, #graph-big g.node");
    var current = null;
    Array.prototype.forEach.call(nodes, function (n) {
      var on = n.dataset.step === step;
      n.classList.toggle("current", on);
      if (on && n.closest("#graph")) current = n;
    });
    $("graph").dataset.current = step || "";
    if (current) {  // the current step in view in the card
      var box = $("graph"), bb = current.getBoundingClientRect(), gb = box.getBoundingClientRect();
      if (bb.top < gb.top || bb.bottom > gb.bottom) box.scrollTop += (bb.top - gb.top) - box.clientHeight / 3;
      if (bb.left < gb.left || bb.right > gb.right) box.scrollLeft += (bb.left - gb.left) - (box.clientWidth - bb.width) / 2;
    }
  }

  function fillReleaseSteps() {
    var sel = $("release-step");
    var g = S.graphKey ? S.graphs[S.graphKey] : null;
    var current = sel.value;
    var opts = [["", "…where it was"]];
    if (g) g.nodes.forEach(function (n) { opts.push([n.id, "…at " + n.id]); });
    if (sel.options.length !== opts.length || (g && sel.dataset.graph !== S.graphKey)) {
      fillSelect(sel, opts, "");
      sel.dataset.graph = S.graphKey || "";
      if (current && opts.some(function (o) { return o[0] === current; })) sel.value = current;
    }
  }

  // ------------------------------------------------------------------ actions
  var acting = {};  // "<cid> <path>" -> an action on its way: a double click sends it once
  function act(path, body, okText) {
    var cid = S.selected;
    if (!cid) return Promise.resolve();
    var key = cid + " " + path;
    if (acting[key]) return Promise.resolve(null);
    acting[key] = true;
    var free = function (res) { delete acting[key]; return res; };
    return api("POST", "/api/conversations/" + encodeURIComponent(cid) + path, body).then(free, function (err) {
      free(null);
      throw err;
    }).then(function (res) {
      if (res.status >= 200 && res.status < 300) { if (okText) notice(okText, "ok"); return res; }
      if (res.status === 409) {
        var owner = res.body && res.body.error && res.body.error.details && res.body.error.details[0] ? res.body.error.details[0].owner : null;
        notice(owner ? owner + " has this conversation." : errorText(res), "error");
        if (S.detail && owner) { S.detail = Object.assign({}, S.detail, { owner: "human", owner_user: owner }); renderHeader(); }
      } else {
        notice(errorText(res), "error");
      }
      return res;
    });
  }

  /* Hand back. A customer message that came while the person had the chat is not dropped: the
   * person chooses whether the bot answers it (only when the bot goes on where it was). */
  function handBack() {
    var step = $("release-step").value, d = S.detail;
    var done = function (res) { if (res && res.status === 202) $("release-step").value = ""; };
    var held = d && d.held_message;
    var running = d && d.run && (d.run.status === "running" || d.run.status === "waiting");
    if (step || !held || !running) {  // no bot to answer it: the release line says it is left unanswered
      act("/release", step ? { step: step } : {}, step ? "Handed back: the bot continues at “" + step + "”." :
        running ? "Handed back: the bot continues where it was." :
        "Handed back, but no bot is running: start one, or the customer gets no answer.").then(done);
      return;
    }
    askConfirm("handback", contactName(d) + " wrote “" + (held.text || (typeof held.payload === "string" ? held.payload : "a button")) +
      "” while you had the chat. Should the bot answer it?", [
      ["Hand back, the bot answers it", "success", function () {
        act("/release", { answer: true }, "Handed back: the bot answers the customer's message.").then(done);
      }],
      ["Hand back, no answer from the bot", "", function () {
        act("/release", { answer: false }, "Handed back: the bot continues where it was, without answering.").then(done);
      }]]);
  }

  /* The clipboard API needs a secure context (https or localhost); elsewhere the old way. */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, function () { return legacyCopy(text); });
    }
    return Promise.resolve(legacyCopy(text));
  }

  function legacyCopy(text) {
    var area = el("textarea", "offscreen");
    area.value = text;
    area.setAttribute("readonly", "");
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  function bind() {
    $("signin-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var token = $("token").value.trim();
      if (!token) return;
      clearTimeout(S.resumeTimer);
      signIn(token).then(function (ok) { if (ok) { $("token").value = ""; start(); } }, function () {
        S.token = null;
        showSignIn("The server cannot be reached right now. Try again in a moment.");
      });
    });
    $("signout").addEventListener("click", function () {
      fetch("/live/session", { method: "DELETE", credentials: "same-origin" }).finally(function () { signedOut(null); });
    });
    $("status-filter").addEventListener("click", function (e) {
      var b = e.target.closest("button");
      if (!b) return;
      Array.prototype.forEach.call(this.children, function (x) { x.classList.toggle("on", x === b); });
      S.filters.status = b.dataset.status;
      loadList(false);
    });
    $("channel-filter").addEventListener("change", function () { S.filters.channel = this.value; loadList(false); });
    $("bot-filter").addEventListener("change", function () { S.filters.bot = this.value; loadList(false); });
    $("waiting-filter").addEventListener("change", function () { S.filters.waiting = this.checked; loadList(false); });
    $("parked-filter").addEventListener("change", function () { S.filters.parked = this.checked; loadList(false); });
    var searchTimer = null;
    $("search").addEventListener("input", function () {
      var v = this.value;
      clearTimeout(searchTimer);
      searchTimer = setTimeout(function () { S.filters.q = v.trim(); loadList(false); }, 200);
    });
    $("load-more").addEventListener("click", function () { loadList(true); });
    $("btn-takeover").addEventListener("click", function () {
      act("/takeover", undefined, "You have the conversation: the bot is silent until you hand it back.").then(function () { $("reply").focus(); });
    });
    $("btn-release").addEventListener("click", handBack);
    $("btn-stop").addEventListener("click", function () { act("/stop", undefined, "The bot was stopped."); });
    function retried(res) {
      if (res && res.status === 202 && S.detail) { setDetail(Object.assign({}, S.detail, res.body)); }
    }
    $("btn-retry").addEventListener("click", function () {
      act("/retry", {}, "Retried: the waiting events were handled again.").then(retried);
    });
    $("btn-retry-skip").addEventListener("click", function () {
      act("/retry", { skip: 1 }, "The oldest waiting event was discarded and the rest handled.").then(retried);
    });
    $("start-bot").addEventListener("change", function () { closeConfirm("start"); renderHeader(); });
    $("btn-start").addEventListener("click", function () {
      var bot = $("start-bot").value, d = S.detail;
      if (!bot || !d) return;
      var running = d.run && (d.run.status === "running" || d.run.status === "waiting");
      askConfirm("start", "Start " + botLabel(bot) + " for " + contactName(d) + "?" +
        (running ? " The bot running now (" + d.run.bot + ") is replaced." : ""), [["Start " + bot, "primary", function () {
        act("/start", { bot: bot }, "Started " + bot + ".").then(function (res) {
          if (res && res.status === 202) { $("start-bot").value = ""; renderHeader(); }
        });
      }]]);
    });
    $("c-copy-id").addEventListener("click", function () {
      var cid = this.dataset.cid;
      if (cid) copyText(cid).then(function (ok) {
        notice(ok ? "Conversation id copied." : "Copy failed: the id is " + cid, ok ? "ok" : "error");
      });
    });
    $("graph-in").addEventListener("click", function () { zoomGraph(1.25); });
    $("graph-out").addEventListener("click", function () { zoomGraph(0.8); });
    $("graph-fit").addEventListener("click", function () { S.graphScale = null; sizeGraph(); highlight(); });
    $("graph-full").addEventListener("click", openFullGraph);
    $("graph-close").addEventListener("click", closeFullGraph);
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && !$("graph-overlay").hidden) closeFullGraph();
    });
    pannable($("graph"));
    pannable($("graph-big"));
    window.addEventListener("resize", function () { if (S.graphScale === null) sizeGraph(); });
    $("composer").addEventListener("submit", function (e) {
      e.preventDefault();
      var box = $("reply"), text = box.value;
      // one send at a time: Enter again while the first is on its way (a slow server) sent the
      // reply twice (requestSubmit submits whether or not the button is disabled)
      if (!text.trim() || box.disabled || S.sending) return;
      S.sending = true;
      $("btn-send").disabled = true;
      var sent = function (res) {
        S.sending = false;
        $("btn-send").disabled = !mine(S.detail);
        if (res && res.status === 202 && box.value === text) { box.value = ""; notice(null); }
        box.focus();
      };
      act("/messages", { text: text }).then(sent, function () {
        sent(null);
        notice("The reply could not be sent (no connection); it is still in the box.", "error");
      });
    });
    $("reply").addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
    });
    setInterval(function () {
      tick();
      Array.prototype.forEach.call(document.querySelectorAll(".conv .time"), function (t) {
        if (t.dataset.ts) t.textContent = ago(Number(t.dataset.ts));
      });
      Array.prototype.forEach.call(document.querySelectorAll(".conv .flag"), function (f) {
        if (f.dataset.since) f.textContent = waitingText(Number(f.dataset.since));
      });
      renderWaiting();
    }, 1000);
  }

  window.salesbotLive = {
    selected: function () { return S.selected; },
    lastN: function () { return S.lastN; },
    me: function () { return S.me; },
    open: function (cid) { select(cid); },  // customers.js: a customer's conversation
  };

  document.addEventListener("DOMContentLoaded", function () {
    bind();
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) {
      resume(token);
    } else {
      showSignIn(null);
    }
  });
})();
