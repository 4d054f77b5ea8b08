// Assistant: while a summary or draft is being written, poll its status and reload when done.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const el = document.querySelector("[data-ai-poll]");
  if (!el) return;
  const url = el.dataset.aiPoll;
  let tries = 0;
  // Once the reader leaves (a link tapped, a form sent), a reload would cancel where they are going.
  let leaving = false;
  window.addEventListener("beforeunload", () => { leaving = true; });
  window.addEventListener("pagehide", () => { leaving = true; });
  const poll = async () => {
    if (leaving) return;
    tries += 1;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const body = await response.json();
        if (body.status !== "pending") { if (!leaving) window.location.reload(); return; }
      }
    } catch (error) {
      // a dropped request: try again below
    }
    if (tries < 120) setTimeout(poll, 1000);
  };
  setTimeout(poll, 500);
});
