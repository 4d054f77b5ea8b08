// Connection page: while a connection is checked or synced, poll its status and show progress.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const statusEl = document.querySelector("[data-poll-status]");
  const syncEl = document.querySelector("[data-poll-sync]");
  const url = (statusEl && statusEl.dataset.pollStatus) || (syncEl && syncEl.dataset.pollSync);
  if (!url) return;
  const initialStatus = statusEl ? statusEl.dataset.status : null;
  const bar = document.querySelector("[data-sync-progress]");
  const text = document.querySelector("[data-sync-text]");
  let tries = 0;
  const poll = async () => {
    tries += 1;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const body = await response.json();
        if (initialStatus && body.status !== initialStatus) { window.location.reload(); return; }
        const sync = body.sync || {};
        if (syncEl && bar && text && sync.state === "syncing") {
          bar.max = Math.max(sync.total || 0, 1);
          bar.value = sync.done || 0;
          text.textContent = `Syncing: ${sync.done || 0} of ${sync.total || 0} messages` +
            (sync.rate ? ` (${sync.rate} per second)` : "");
        } else if (syncEl && sync.state && sync.state !== "queued" && sync.state !== "syncing") {
          window.location.reload();
          return;
        }
      }
    } catch (error) {
      // A network hiccup: try again on the next tick.
    }
    if (tries < 600) window.setTimeout(poll, 1500);
  };
  window.setTimeout(poll, 1000);
});
