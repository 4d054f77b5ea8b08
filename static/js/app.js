// Aiemaily's browser code. Every script lives in a static file (CSP: no inline script).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Confirmation prompts for destructive buttons, declared with data-confirm="...".
  for (const el of document.querySelectorAll("[data-confirm]")) {
    el.addEventListener("click", (event) => {
      if (!window.confirm(el.dataset.confirm)) event.preventDefault();
    });
  }
});
