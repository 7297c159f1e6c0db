/* The quick-order page's cart (GET /order/<token>). Plain JavaScript, no library, no build step.
 *
 * The page is a working form without this file: a quantity field per product and the order
 * button. This adds − / + buttons beside each field and a running count and total in the bar at
 * the bottom. The total here is only a preview: the server prices the order itself.
 * Text only through textContent, never innerHTML.
 */
(function () {
  "use strict";

  var form = document.getElementById("order-form");
  if (!form) { return; }
  var inputs = form.querySelectorAll("input[data-price]");
  var digits = parseInt(form.getAttribute("data-digits"), 10) || 0;
  var money;
  try {
    money = new Intl.NumberFormat(form.getAttribute("data-lang") || "en", {
      style: "currency", currency: form.getAttribute("data-currency"),
      minimumFractionDigits: digits, maximumFractionDigits: digits });
  } catch (e) {
    money = { format: function (n) { return n.toFixed(digits); } };
  }

  function qty(input) {
    var n = parseInt(input.value, 10);
    return isFinite(n) && n > 0 ? Math.min(n, 999) : 0;
  }

  function update() {
    var count = 0, minor = 0;
    for (var i = 0; i < inputs.length; i++) {
      var n = qty(inputs[i]);
      count += n;
      minor += n * (parseInt(inputs[i].getAttribute("data-price"), 10) || 0);
    }
    document.getElementById("cart-count").textContent = String(count);
    document.getElementById("cart-total").textContent = money.format(minor / Math.pow(10, digits));
    document.getElementById("cart-summary").hidden = false;
  }

  function button(input, text, label, delta) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.setAttribute("aria-label", label + ": " + (document.getElementById(
      input.getAttribute("aria-describedby")) || {}).textContent);
    b.addEventListener("click", function () {
      input.value = String(Math.max(0, Math.min(999, qty(input) + delta)));
      update();
    });
    return b;
  }

  for (var i = 0; i < inputs.length; i++) {
    var input = inputs[i];
    input.parentNode.insertBefore(button(input, "\u2212", form.getAttribute("data-less"), -1), input);
    input.parentNode.appendChild(button(input, "+", form.getAttribute("data-more"), 1));
    input.addEventListener("input", update);
  }
  var sent = false;
  form.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }  // one order per tap, however quick the taps
    sent = true;
    document.getElementById("place").disabled = true;
  });
  update();
})();
