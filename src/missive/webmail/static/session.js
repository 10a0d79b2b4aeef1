/* Missive webmail — the only script: warns before the idle timeout (WCAG 2.2.1 Timing
   Adjustable) and lets the user stay connected with one button. The pages work without it;
   the footer of every page states the timeout. No inline code (CSP: script-src 'self'). */
(function () {
  "use strict";
  var idleMeta = document.querySelector('meta[name="missive-idle-seconds"]');
  var csrfMeta = document.querySelector('meta[name="missive-csrf"]');
  if (!idleMeta || !csrfMeta) { return; }
  var idle = parseInt(idleMeta.getAttribute("content"), 10) * 1000;
  var warnBefore = Math.min(120000, idle / 2);
  var timer = null;
  var dialog = null;
  var previousFocus = null;

  function close() {
    if (dialog) { dialog.remove(); dialog = null; }
    if (previousFocus && previousFocus.focus) { previousFocus.focus(); }
  }

  function stay() {
    fetch("/session/prolonger", {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfMeta.getAttribute("content") }
    }).then(function (response) {
      if (response.status === 204) { close(); schedule(); }
      else { window.location.assign("/connexion"); }
    }, function () { /* offline: keep the warning */ });
  }

  function warn() {
    previousFocus = document.activeElement;
    dialog = document.createElement("div");
    dialog.className = "session-warning";
    dialog.setAttribute("role", "alertdialog");
    dialog.setAttribute("aria-modal", "true");
    dialog.setAttribute("aria-labelledby", "session-warning-title");
    var title = document.createElement("p");
    title.id = "session-warning-title";
    title.className = "session-warning-title";
    title.textContent = "Vous allez être déconnecté(e) dans 2 minutes faute d'activité.";
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = "Rester connecté(e)";
    button.addEventListener("click", stay);
    dialog.appendChild(title);
    dialog.appendChild(button);
    document.body.appendChild(dialog);
    button.focus();
  }

  function schedule() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(warn, Math.max(1000, idle - warnBefore));
  }

  schedule();
}());
