// Anvil console: confirmations, live dashboard (polling), live job progress (server-sent events),
// BMC health on blade pages, dry-run and "check" on profile pages. Calls the API with the session
// cookie and the page's CSRF token.
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const api = (path, opts) => {
    const o = Object.assign({ credentials: "same-origin" }, opts || {});
    o.headers = Object.assign({ "Accept": "application/json", "X-CSRF-Token": csrf }, (opts || {}).headers || {});
    return fetch("/api/v1" + path, o);
  };
  const ageText = (s) => s >= 86400 ? Math.floor(s / 86400) + "d" : s >= 3600 ? Math.floor(s / 3600) + "h"
    : s >= 60 ? Math.floor(s / 60) + "m" : s + "s";
  const el = (tag, attrs, text) => { const e = document.createElement(tag); Object.assign(e, attrs || {}); if (text !== undefined) e.textContent = text; return e; };

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (ev) => { if (!window.confirm(form.dataset.confirm)) ev.preventDefault(); });
  });

  // Dashboard: capacity and rack, refreshed every 2 s without reloading.
  const rack = document.getElementById("rack");
  if (rack) {
    const refresh = async () => {
      try {
        const cap = await (await api("/capacity")).json();
        for (const k of ["spare", "stamped", "failed", "maintenance", "total"]) {
          const n = document.getElementById("cap-" + k); if (n && n.textContent !== String(cap[k])) n.textContent = cap[k];
        }
        const chassis = await (await api("/rack")).json();
        for (const ch of chassis) for (const b of ch.blades) {
          const slot = document.getElementById("slot-" + b.name);
          if (!slot) continue;
          if (slot.dataset.state !== b.state) {
            slot.classList.remove("state-" + slot.dataset.state); slot.classList.add("state-" + b.state);
            slot.dataset.state = b.state; slot.querySelector(".bstate").textContent = b.state;
          }
          slot.querySelector(".bprof").textContent = b.profile || "";
          const power = slot.querySelector(".bpower");
          if (power) { power.dataset.power = b.power || ""; power.textContent = b.power ? "power " + b.power : "power ?"; }
          const health = slot.querySelector(".bhealth");
          if (health) health.textContent = b.health || "no sample";
          const age = slot.querySelector(".bage");
          if (age && b.healthAge !== null) age.textContent = ageText(b.healthAge);
          slot.title = b.name + ": " + b.state + (b.profile ? " (" + b.profile + ")" : "");
        }
        document.getElementById("rack-updated").textContent = "updated " + new Date().toLocaleTimeString();
      } catch (e) { /* the next poll tries again */ }
    };
    setInterval(refresh, 2000);
  }

  // Blade page: BMC health and power, read live.
  const bmc = document.getElementById("bmc");
  if (bmc) {
    const name = encodeURIComponent(bmc.dataset.blade);
    api("/blades/" + name + "/health").then((r) => r.json().then((j) => {
      document.getElementById("bmc-health").textContent = r.ok ? j.state + (j.reason ? " (" + j.reason + ")" : "") : (j.detail || "unknown");
    })).catch(() => { document.getElementById("bmc-health").textContent = "unreachable"; });
    api("/blades/" + name + "/power").then((r) => r.json().then((j) => {
      document.getElementById("bmc-power").textContent = r.ok ? j.power : (j.detail || "unknown");
    })).catch(() => { document.getElementById("bmc-power").textContent = "unreachable"; });
  }

  // Jobs list: states and progress bars refreshed every 2 s.
  const jobsTable = document.getElementById("jobs-table");
  if (jobsTable) {
    setInterval(async () => {
      try {
        const { items } = await (await api("/jobs?limit=100")).json();
        for (const j of items) {
          const row = jobsTable.querySelector('tr[data-job="' + j.id + '"]');
          if (!row) continue;
          const badge = row.querySelector(".jstate"); badge.textContent = j.state; badge.className = "badge job-" + j.state + " jstate";
          const bar = row.querySelector("progress"); bar.max = j.progress.of; bar.value = j.steps.filter((s) => s.state === "done").length;
          row.querySelector(".jblade").textContent = j.blade || "–";
          const why = row.querySelector(".jwhy");
          if (why) why.textContent = j.error || (["succeeded", "failed", "rolled_back", "cancelled"].includes(j.state) ? "–"
            : (j.progress.current || "") + (j.progress.waitingFor ? ", waiting for " + j.progress.waitingFor : ""));
          const t = row.querySelector(".jtook");
          if (t) t.textContent = j.durationSeconds < 120 ? j.durationSeconds.toFixed(1) + "s" : (j.durationSeconds / 60).toFixed(1) + "m";
        }
      } catch (e) { /* next time */ }
    }, 2000);
  }

  // Job page: progress over server-sent events.
  const job = document.getElementById("job");
  if (job && job.dataset.final !== "true" && window.EventSource) {
    const src = new EventSource("/api/v1/jobs/" + encodeURIComponent(job.dataset.job) + "/events");
    src.addEventListener("job", (ev) => {
      const j = JSON.parse(ev.data);
      const state = document.getElementById("job-state");
      state.textContent = j.state; state.className = "badge job-" + j.state;
      const done = j.steps.filter((s) => s.state === "done").length;
      const bar = document.getElementById("job-progress"); bar.max = j.progress.of; bar.value = done;
      document.getElementById("job-progress-text").textContent = done + "/" + j.progress.of;
      for (const s of j.steps) {
        const li = job.querySelector('li[data-step="' + s.name + '"]');
        if (li) { li.className = "step-" + s.state; li.querySelector(".sstate").textContent = s.state + (s.error ? ": " + s.error : ""); }
      }
      if (j.blade) {
        const b = document.getElementById("job-blade"); b.textContent = "on blade ";
        b.appendChild(el("a", { href: "/blades/" + encodeURIComponent(j.blade) }, j.blade));
      }
      const err = document.getElementById("job-error");
      if (j.error) { err.hidden = false; err.textContent = j.error; }
    });
    src.addEventListener("end", () => src.close());
  }

  // Profile page: the dry run shows the chosen blade and every rejected one with the reason. It runs
  // whenever the target changes: Assign is enabled only when it found a blade, and the
  // confirmation names that blade.
  const dry = document.getElementById("dry-run-button");
  if (dry) {
    const form = document.getElementById("assign-form");
    const assign = document.getElementById("assign-button");
    const select = document.getElementById("target");
    const run = async () => {
      const target = select.value;
      const body = { tenant: dry.dataset.tenant };
      if (target.startsWith("blade:")) body.blade = target.slice(6); else body.pool = target.slice(5);
      const out = document.getElementById("dry-run"); out.textContent = "checking…";
      assign.disabled = true;
      const r = await api("/profiles/" + encodeURIComponent(dry.dataset.profile) + "/dry-run",
        { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const j = await r.json(); out.textContent = "";
      if (!r.ok) { out.appendChild(el("p", { className: "error" }, j.detail)); return; }
      out.appendChild(el("p", { className: j.best ? "ok" : "error" }, j.best ? "Would stamp blade " + j.best : "No blade meets the requirements"));
      if (j.rejected.length) {
        const ul = el("ul", { id: "rejected" });
        for (const x of j.rejected) ul.appendChild(el("li", {}, x.blade + ": " + x.reason));
        out.appendChild(el("p", {}, "Rejected:")); out.appendChild(ul);
      }
      if (j.best) {
        assign.disabled = false;
        form.dataset.confirm = "Stamp " + form.dataset.profileLabel + " onto blade " + j.best + "?";
      }
    };
    dry.addEventListener("click", run);
    select.addEventListener("change", run);
  }

  // Import form: "Check" validates without importing and lists problems with their lines.
  const check = document.getElementById("check-button");
  if (check) {
    check.addEventListener("click", async () => {
      const text = document.getElementById("document").value;
      const xml = text.trimStart().startsWith("<");
      const r = await api("/profile-validation", { method: "POST", body: text,
        headers: { "Content-Type": xml ? "application/xml" : "application/yaml" } });
      const j = await r.json(); const out = document.getElementById("check-result"); out.textContent = "";
      if (r.ok) { out.appendChild(el("p", { className: "ok" }, "Valid " + j.kind + " " + j.tenant + "/" + j.name)); return; }
      const ul = el("ul", { className: "error" });
      for (const e of (j.errors || [{ path: "", reason: j.detail }])) ul.appendChild(el("li", {}, (e.line ? "line " + e.line + ": " : "") + (e.path ? e.path + ": " : "") + e.reason));
      out.appendChild(ul);
    });
  }
})();
