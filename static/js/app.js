// Aiemaily's browser code. Every script lives in a static file (CSP: no inline script).
"use strict";
// Marks that static JavaScript ran under the page's CSP (tests/test_browser_csp.py checks it).
document.documentElement.dataset.appJs = "ready";
document.addEventListener("DOMContentLoaded", () => {
  // Confirmation prompts for destructive buttons, declared with data-confirm="...".
  for (const el of document.querySelectorAll("[data-confirm]")) {
    el.addEventListener("click", (event) => {
      if (!window.confirm(el.dataset.confirm)) event.preventDefault();
    });
  }
});
