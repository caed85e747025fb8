// Hedgerow's dashboard: live updates and filters that apply as they change. The pages work
// without it (the filter forms have a submit button); it only saves reloads.
"use strict";

let deferred = false;
let latest = null;  // the fleet's activity version the stream told of last

// Someone typing in a filter keeps what they typed: the page is brought again once they leave
// the field (or submit), never under their cursor.
function editing(main) {
  const active = document.activeElement;
  return active && main.contains(active) && active.matches("input, select, textarea");
}

function refresh(version) {
  const main = document.getElementById("main");
  if (!main) return Promise.resolve();
  if (version !== undefined) latest = version;
  if (editing(main)) {
    deferred = true;
    return Promise.resolve();
  }
  deferred = false;
  const headers = { "X-Hedgerow-Live": "1" };
  if (latest !== null) headers["X-Hedgerow-Version"] = latest;  // rows at least that new
  return fetch(window.location.href, { headers: headers, credentials: "same-origin" })
    .then((response) => {
      if (response.redirected || !response.ok) return null;
      return response.text();
    })
    .then((html) => {
      if (html === null) return;
      const parsed = new DOMParser().parseFromString(html, "text/html");
      const fresh = parsed.getElementById("main");
      if (!fresh) return;
      if (editing(main)) {  // they started typing while the page was on its way
        deferred = true;
        return;
      }
      main.replaceChildren(...fresh.childNodes);
      wireFilters(main);
    })
    .catch(() => {});
}

function live() {
  const url = document.body.dataset.live;
  const status = document.getElementById("live-status");
  if (!url || !window.EventSource) return;
  const source = new EventSource(url);
  // each version the stream sends (the first too: the fleet may have moved since the page was
  // rendered) brings the page's main part again
  source.onmessage = (event) => { refresh(event.data); };
  source.onopen = () => { if (status) status.textContent = "Live."; };
  source.onerror = () => { if (status) status.textContent = "Reconnecting…"; };
}

function wireFilters(root) {
  root.querySelectorAll("form[data-autosubmit]").forEach((form) => {
    form.querySelectorAll("select").forEach((select) => {
      select.addEventListener("change", () => form.requestSubmit());
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wireFilters(document);
  live();
  document.addEventListener("focusout", () => {
    setTimeout(() => { if (deferred) refresh(); }, 0);
  });
});
