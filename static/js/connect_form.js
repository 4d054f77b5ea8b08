// IMAP connect form: fill server settings from the address, and one password when SMTP shares it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-autoconfig-url]");
  if (!form) return;
  const field = (name) => form.elements.namedItem(name);
  const status = form.querySelector("[data-autoconfig-status]");
  const same = field("smtp_same_password");
  const smtpPassword = field("smtp_password");

  // One password field while "same password" is ticked; the SMTP one appears when it is not.
  const showSmtpPassword = () => {
    const row = smtpPassword.closest(".field");
    row.hidden = same.checked;
    smtpPassword.required = !same.checked;
  };
  same.addEventListener("change", showSmtpPassword);
  showSmtpPassword();

  // A field the user typed into is never overwritten; one we filled may be refilled for a new address.
  const filled = new Set();
  for (const name of ["imap_host", "imap_port", "imap_security", "smtp_host", "smtp_port", "smtp_security"]) {
    field(name).addEventListener("input", () => filled.delete(name));
  }
  const fill = (name, value) => {
    const el = field(name);
    const untouched = filled.has(name) || el.value === "" || el.value === el.defaultValue;
    if (untouched) { el.value = String(value); filled.add(name); }
  };

  let asked = "";
  const lookup = async () => {
    const email = field("email").value.trim();
    if (!email.includes("@") || email === asked) return;
    asked = email;
    status.textContent = "Looking up the server settings…";
    try {
      const url = `${form.dataset.autoconfigUrl}?email=${encodeURIComponent(email)}`;
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) { status.textContent = (body.error && body.error.message) || "Lookup failed."; return; }
      if (!body.found) { status.textContent = "No settings found for this address: enter them below."; return; }
      for (const kind of ["imap", "smtp"]) {
        fill(`${kind}_host`, body[kind].host);
        fill(`${kind}_port`, body[kind].port);
        fill(`${kind}_security`, body[kind].security);
      }
      if (!field("imap_username").value) field("imap_username").placeholder = body.username;
      status.textContent = body.source === "bundled"
        ? "Server settings filled in for this provider. Check them, then enter your password."
        : "Server settings filled in from your provider's published configuration. Check them.";
    } catch (error) {
      status.textContent = "Could not look up the server settings: enter them below.";
    }
  };
  field("email").addEventListener("change", lookup);
  field("email").addEventListener("blur", lookup);
});
