// Hedgerow's dashboard: live updates and filters that apply as they change. The pages work
// without it (the filter forms have a submit button); it only saves reloads.
"use strict";

function refresh() {
  const main = document.getElementById("main");
  if (!main) return Promise.resolve();
  return fetch(window.location.href, { headers: { "X-Hedgerow-Live": "1" }, credentials: "same-origin" })
    .then((response) => {
      if (response.redirected || !response.ok) return null;
      return response.text();
    })
    .then((html) => {
      if (html === null) return;
      const parsed = new DOMParser().parseFromString(html, "text/html");
      const fresh = parsed.getElementById("main");
      if (!fresh) return;
      const active = document.activeElement && document.activeElement.id;
      main.replaceChildren(...fresh.childNodes);
      wireFilters(main);
      if (active) {
        const again = document.getElementById(active);
        if (again) again.focus();
      }
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
  source.onmessage = () => { refresh(); };
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
});
