// bazaar's order page, enhanced: follows an order that is still being processed
// without reloading the page. Every 2 s it fetches this same page, puts the new status
// text into #order-status (a live region, so the change is read out) and swaps
// #order-live (timeline, cancel button); it stops once the order has settled
// (data-settling="false"). Without JavaScript a <noscript> refresh does the same.
"use strict";
(function () {
  var EVERY_MS = 2000;
  var status = document.getElementById("order-status");
  var live = document.getElementById("order-live");
  if (!status || !live || !window.fetch || !window.DOMParser) {
    return;
  }
  // Set when a look finds something other than this order's page: no more looks.
  var stopped = false;
  function settling() {
    return !stopped && live.getAttribute("data-settling") === "true";
  }
  function apply(html) {
    var page = new DOMParser().parseFromString(html, "text/html");
    var nextStatus = page.getElementById("order-status");
    var nextLive = page.getElementById("order-live");
    if (!nextStatus || !nextLive) {
      stopped = true;
      return;
    }
    status.className = nextStatus.className;
    status.setAttribute("data-status", nextStatus.getAttribute("data-status"));
    status.textContent = nextStatus.textContent;
    live.replaceWith(nextLive);
    live = nextLive;
  }
  function poll() {
    fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        if (response.redirected) {
          // Sent elsewhere (the session ended: to sign in): stop, and let the
          // shopper see why by loading that page.
          stopped = true;
          window.location.assign(response.url);
          throw new Error("redirected");
        }
        return response.text();
      })
      .then(apply)
      // A failed look is retried at the next tick: the page still shows the last state.
      .catch(function () {})
      .then(function () {
        if (settling()) {
          window.setTimeout(poll, EVERY_MS);
        }
      });
  }
  if (settling()) {
    window.setTimeout(poll, EVERY_MS);
  }
})();
