/* Salesbot Live: the processes of a contact on the lead card. Plain JavaScript, no build step.
 *
 * GET /api/contacts/{id}/processes lists them (each with its run's state and step); an active one
 * has a Stop button (POST /api/contacts/{id}/processes/{process}/stop), after which the list is
 * read again. Same safety rule as dashboard.js: text only through textContent, never innerHTML.
 */
(function () {
  "use strict";


  var L = window.SalesbotLive;  // dom.js
  var el = L.el, api = L.api;

  var enc = L.enc;

  /* Fill ``box`` (an element) with the contact's processes. */
  function list(contactId, box) {
    box.dataset.contact = contactId;
    return api("GET", "/api/contacts/" + enc(contactId) + "/processes").then(function (res) {
      if (box.dataset.contact !== String(contactId)) return;  // another contact opened meanwhile
      box.replaceChildren();
      if (res.status !== 200) {
        box.appendChild(el("li", "error", res.body && res.body.error ? res.body.error.message : "Could not load"));
        return;
      }
      var items = res.body.processes || [];
      if (!items.length) { box.appendChild(el("li", "muted", "In no process.")); return; }
      items.forEach(function (p) {
        var li = el("li", "process");
        li.dataset.process = p.process;
        li.appendChild(el("strong", null, p.process));
        li.appendChild(el("span", "chip", p.status));
        if (p.step) li.appendChild(el("span", "muted", " at " + p.step));
        if (p.active) {
          var stop = el("button", "ghost small", "Stop");
          stop.type = "button";
          stop.setAttribute("aria-label", "Stop process " + p.process);
          stop.addEventListener("click", function () {
            stop.disabled = true;
            api("POST", "/api/contacts/" + enc(contactId) + "/processes/" + enc(p.process) + "/stop")
              .then(function () { return list(contactId, box); });
          });
          li.appendChild(stop);
        }
        box.appendChild(li);
      });
    });
  }

  window.salesbotProcesses = { list: list };
})();
