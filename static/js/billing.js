// Billing success page: Stripe's confirming event arrives a moment after the browser does. Poll our
// own status (never Stripe, never the session id in the address) and reload once the plan changed.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const el = document.querySelector("[data-billing-poll]");
  if (!el) return;
  const url = el.dataset.billingPoll;
  const initial = `${el.dataset.plan}/${el.dataset.status}`;
  let tries = 0;
  const poll = async () => {
    tries += 1;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const body = await response.json();
        if (`${body.plan}/${body.status}` !== initial) { window.location.reload(); return; }
      }
    } catch (error) {
      // A network hiccup: try again on the next tick.
    }
    if (tries < 80) window.setTimeout(poll, 1500);
  };
  window.setTimeout(poll, 1000);
});
