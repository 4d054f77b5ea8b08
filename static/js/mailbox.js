// The mail list's keyboard shortcuts (help: "?"). Progressive enhancement: every action is also a
// link or a form that works without JavaScript. Static file under the CSP (no inline handlers).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const rows = Array.from(document.querySelectorAll(".mail-row"));
  const help = document.getElementById("shortcuts");
  const actionForm = document.getElementById("mail-action-form");
  let current = rows.findIndex((row) => row.classList.contains("selected"));

  function focusRow(index) {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach((row, i) => row.classList.toggle("focused", i === current));
    rows[current].querySelector("a").focus();
  }

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  function selectedForm(shortcut) {
    return document.querySelector(`.mail-reading-pane [data-shortcut="${shortcut}"]`);
  }

  // New mail: ask how many messages arrived above the newest one shown; offer them, never jump.
  const banner = document.getElementById("new-mail");
  if (banner) {
    const seconds = Math.max(2, Number(banner.dataset.pollSeconds) || 20);
    const poll = async () => {
      try {
        const response = await fetch(banner.dataset.updatesUrl, { credentials: "same-origin",
                                                                  headers: { Accept: "application/json" } });
        if (response.ok) {
          const body = await response.json();
          if (body.new > 0) {
            banner.querySelector("[data-new-count]").textContent = body.new >= 100 ? "100+" : String(body.new);
            banner.hidden = false;
          }
        }
      } catch (error) {
        // Offline for a moment: the next tick tries again.
      }
      window.setTimeout(poll, seconds * 1000);
    };
    window.setTimeout(poll, seconds * 1000);
  }

  for (const opener of document.querySelectorAll("[data-shortcuts-open]")) {
    opener.addEventListener("click", () => help.showModal());
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target) || (help && help.open)) return;
    const row = current >= 0 ? rows[current] : null;
    switch (event.key) {
      case "j": focusRow(current + 1); break;
      case "k": focusRow(current < 0 ? 0 : current - 1); break;
      case "o":
      case "Enter":
        if (!row) return;
        window.location.assign(row.querySelector("a").href);
        break;
      case "e": {
        // The open message's archive form, else the focused row's (same POST, same CSRF token).
        const form = selectedForm("e");
        if (form) { form.submit(); break; }
        if (!row) return;
        actionForm.action = row.dataset.archiveUrl;
        actionForm.submit();
        break;
      }
      case "r": {
        const link = selectedForm("r");
        if (link) { window.location.assign(link.href); break; }
        if (!row) return;
        window.location.assign(row.dataset.replyUrl);
        break;
      }
      case "l":
      case "#": {
        const input = selectedForm("l");
        if (!input) return;
        input.focus();
        break;
      }
      case "/": document.getElementById("mail-search").focus(); break;
      case "?": help.showModal(); break;
      default: return;
    }
    event.preventDefault();
  });
});
