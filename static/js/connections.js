// Connection page: while a connection is being checked, poll its status and reload when it changes.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const el = document.querySelector("[data-poll-status]");
  if (!el) return;
  const url = el.dataset.pollStatus;
  const initial = el.dataset.status;
  let tries = 0;
  const poll = async () => {
    tries += 1;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const body = await response.json();
        if (body.status !== initial) { window.location.reload(); return; }
      }
    } catch (error) {
      // Network hiccup: try again on the next tick.
    }
    if (tries < 60) window.setTimeout(poll, 2000);
  };
  window.setTimeout(poll, 1500);
});
