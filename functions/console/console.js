// Operator console (#22). Every action goes through the public API with the function key the operator
// typed; the key is kept in sessionStorage only (gone when the browser tab closes). Data is shown with
// textContent, never parsed as HTML.
"use strict";

const KEY = "syncFunctionKey";
const API = new URL("./", location.href.replace(/console\/?$/, "")).pathname; // ".../api/"
const $ = (id) => document.getElementById(id);
let mappings = [];
const watched = new Set(); // jobs whose progress is polled

function say(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new Error("Enter the function key first.");
  const res = await fetch(API + path, {
    method,
    headers: { "x-functions-key": key, ...(body ? { "content-type": "application/json" } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new Error(`${data?.code ?? res.status}: ${data?.detail ?? res.statusText}`);
    err.problem = data;
    err.status = res.status;
    throw err;
  }
  return { data, res };
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

const button = (label, fn, extra = {}) =>
  el("button", { type: "button", ...extra, on: { click: () => run(fn) } }, label);

async function run(fn) {
  try {
    await fn();
  } catch (e) {
    say(e.message, true);
  }
}

function fillMappingSelects() {
  for (const id of ["field-mapping", "c-mapping", "e-mapping", "j-mapping"]) {
    const sel = $(id);
    const keep = sel.value;
    [...sel.querySelectorAll("option[data-m]")].forEach((o) => o.remove());
    for (const m of mappings) sel.append(el("option", { value: m.name, "data-m": "1" }, m.name));
    if (keep) sel.value = keep;
  }
}

// ------------------------------------------------------------------ Integration Table Mappings
async function loadMappings() {
  mappings = (await api("mappings")).data.value;
  fillMappingSelects();
  const rows = $("mapping-rows");
  rows.replaceChildren();
  for (const m of mappings) {
    const dir = el("select", { "aria-label": `Direction of ${m.name}`, id: `dir-${m.name}` });
    for (const d of ["bidirectional", "toDataverse", "fromDataverse"]) dir.append(el("option", { value: d }, d));
    dir.value = m.direction;
    dir.addEventListener("change", () =>
      run(async () => {
        await api(`mappings/${encodeURIComponent(m.name)}`, { method: "PATCH", body: { direction: dir.value } });
        say(`${m.name}: direction is now ${dir.value}.`);
        await loadMappings();
      }),
    );
    const pause = m.state === "paused" ? "Resume" : "Pause";
    rows.append(
      el("tr", {},
        el("th", { scope: "row" }, m.name), el("td", {}, m.bcEntity), el("td", {}, m.dataverseTable),
        el("td", {}, dir), el("td", {}, m.state),
        el("td", { class: "code" }, m.tableFilter ?? ""), el("td", { class: "code" }, m.integrationTableFilter ?? ""),
        el("td", {},
          button("Run full sync", () => startJob(m.name, "full"), { "aria-label": `Run full sync of ${m.name}` }),
          " ",
          button("Run incremental sync", () => startJob(m.name, "incremental"),
                 { "aria-label": `Run incremental sync of ${m.name}` }),
          " ",
          button("Plan full sync", () => planJob(m.name), { "aria-label": `Plan full sync of ${m.name}` }),
          " ",
          button(pause, async () => {
            await api(`mappings/${encodeURIComponent(m.name)}`,
                      { method: "PATCH", body: { state: m.state === "paused" ? "running" : "paused" } });
            await loadMappings();
          }, { "aria-label": `${pause} ${m.name}` }),
          " ",
          button("Edit filters", async () => {
            const tableFilter = prompt(`BC table filter of ${m.name} (OData $filter, empty for none)`, m.tableFilter ?? "");
            if (tableFilter === null) return;
            const integrationTableFilter = prompt(`Dataverse integration table filter of ${m.name}`,
                                                  m.integrationTableFilter ?? "");
            if (integrationTableFilter === null) return;
            await api(`mappings/${encodeURIComponent(m.name)}`, { method: "PATCH", body: {
              tableFilter: tableFilter || null, integrationTableFilter: integrationTableFilter || null } });
            say(`${m.name}: filters saved.`);
            await loadMappings();
          }, { "aria-label": `Edit filters of ${m.name}` }),
          " ",
          button("Reset", async () => {
            if (!confirm(`Reset ${m.name} to the shipped settings?`)) return;
            await api(`mappings/${encodeURIComponent(m.name)}/reset`, { method: "POST" });
            await loadMappings();
          }, { "aria-label": `Reset ${m.name}` }),
        ),
      ),
    );
  }
}

async function startJob(name, kind) {
  const { data } = await api(`mappings/${encodeURIComponent(name)}/jobs`, { method: "POST", body: { kind } });
  say(`Job ${data.jobId} queued.`);
  watch(data.jobId);
  show("jobs");
}

async function planJob(name) {
  const { data } = await api(`mappings/${encodeURIComponent(name)}/plan`, { method: "POST", body: { kind: "full" } });
  say(`Plan job ${data.jobId} queued; its items appear under Couplings when it finishes.`);
  watch(data.jobId, async () => {
    const items = (await api(`jobs/${data.jobId}/plan?top=100`)).data.value;
    show("couplings");
    renderPlan(items, null);
  });
}

// ------------------------------------------------------------------ Integration Field Mappings
async function loadFields() {
  const name = $("field-mapping").value || mappings[0]?.name;
  if (!name) return;
  $("field-mapping").value = name;
  const fields = (await api(`mappings/${encodeURIComponent(name)}/fields`)).data.value;
  const rows = $("field-rows");
  rows.replaceChildren();
  for (const f of fields) {
    const label = `${f.bc ?? "(constant)"} ↔ ${f.dataverse ?? "-"}`;
    const toggle = f.status === "enabled" ? "Disable" : "Enable";
    const dir = el("select", { "aria-label": `Direction of ${label}` });
    for (const d of ["bidirectional", "toDataverse", "fromDataverse"]) dir.append(el("option", { value: d }, d));
    dir.value = f.direction;
    dir.addEventListener("change", () => run(async () => {
      await api(`mappings/${encodeURIComponent(name)}/fields/${encodeURIComponent(f.id)}`,
                { method: "PATCH", body: { direction: dir.value } });
      say(`${label}: direction is now ${dir.value}.`);
      await loadFields();
    }));
    rows.append(
      el("tr", {},
        el("td", {}, f.bc ?? ""), el("td", {}, f.dataverse ?? ""), el("td", {}, dir), el("td", {}, f.status),
        el("td", {}, f.userDefined ? "yes" : "no"),
        el("td", {},
          button(toggle, async () => {
            await api(`mappings/${encodeURIComponent(name)}/fields/${encodeURIComponent(f.id)}`,
                      { method: "PATCH", body: { status: f.status === "enabled" ? "disabled" : "enabled" } });
            await loadFields();
          }, { "aria-label": `${toggle} ${label}` }),
          " ",
          f.userDefined
            ? button("Delete", async () => {
                await api(`mappings/${encodeURIComponent(name)}/fields/${encodeURIComponent(f.id)}`, { method: "DELETE" });
                await loadFields();
              }, { "aria-label": `Delete ${label}` })
            : "",
        ),
      ),
    );
  }
}

// ------------------------------------------------------------------ Couplings, plan, sync now, history
let current = null; // {mapping, coupling}

async function findCoupling() {
  const m = $("c-mapping").value || mappings[0]?.name;
  const id = $("c-id").value.trim();
  const path = `mappings/${encodeURIComponent(m)}/couplings`;
  let c = null;
  try {
    if ($("c-side").value === "bc") c = (await api(`${path}/${encodeURIComponent(id)}`)).data;
    else c = (await api(`${path}?dataverseId=${encodeURIComponent(id)}`)).data.value[0] ?? null;
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  current = { mapping: m, coupling: c };
  const box = $("coupling-detail");
  box.replaceChildren();
  $("plan-view").replaceChildren();
  if (!c) {
    box.append(el("p", {}, "The record is not coupled."));
  } else {
    box.append(
      el("dl", {},
        el("dt", {}, "BC id"), el("dd", { class: "code" }, c.bcId),
        el("dt", {}, "Dataverse id"), el("dd", { class: "code" }, c.dataverseId),
        el("dt", {}, "Last synchronized"), el("dd", {}, `${c.lastSyncedAt ?? "never"} (${c.lastSyncResult ?? "-"})`),
        el("dt", {}, "Last error"), el("dd", {}, c.lastError ?? ""),
      ),
      button("Plan", () => planRecord()), " ",
      button("Synchronize now", () => syncRecord()), " ",
      button("Delete coupling", () => deleteCoupling(m, c.bcId)),
    );
  }
  await loadHistory(m, c ? c.bcId : $("c-side").value === "bc" ? id : null);
}

async function loadHistory(m, bcId) {
  const rows = $("history-rows");
  rows.replaceChildren();
  if (!bcId) return;
  let items = [];
  try {
    items = (await api(`mappings/${encodeURIComponent(m)}/couplings/${encodeURIComponent(bcId)}/history`)).data.value;
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  for (const h of items) {
    const changes = h.changes.map((c) => `${c.side}.${c.field}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`);
    rows.append(
      el("tr", {}, el("td", {}, h.at), el("td", {}, h.trigger), el("td", {}, h.action), el("td", {}, h.direction ?? ""),
         el("td", {}, changes.join("; ")), el("td", { class: h.error ? "error" : "" },
                                                h.error ? `${h.error.code}: ${h.error.message}` : "")),
    );
  }
}

// BC's direction prompt: a bidirectional mapping asks which way; the answer repeats the request.
function askDirection(problem) {
  return new Promise((resolve) => {
    const dlg = $("direction-dialog");
    const ch = problem.changes;
    $("dd-text").textContent = ch
      ? `Changed since the last synchronization — Business Central: ${ch.businessCentral ? "yes" : "no"}, ` +
        `Dataverse: ${ch.dataverse ? "yes" : "no"}.` +
        (ch.conflictingFields?.length ? ` Conflicting fields: ${ch.conflictingFields.join(", ")}.` : "")
      : problem.detail;
    for (const r of dlg.querySelectorAll("input[name=dd-dir]")) r.checked = r.value === problem.suggested;
    dlg.returnValue = "";
    dlg.addEventListener("close", () => {
      const chosen = dlg.querySelector("input[name=dd-dir]:checked");
      resolve(dlg.returnValue === "ok" && chosen ? chosen.value : null);
    }, { once: true });
    dlg.showModal();
  });
}

async function withDirection(call) {
  try {
    return await call(undefined);
  } catch (e) {
    if (e.problem?.code !== "direction_required") throw e;
    const direction = await askDirection(e.problem);
    if (!direction) return null;
    return await call(direction);
  }
}

function renderPlan(results, onSync) {
  const box = $("plan-view");
  box.replaceChildren(el("h3", {}, "Plan"));
  const t = el("table", {}, el("thead", {}, el("tr", {}, ...["BC id", "Dataverse id", "Action", "Direction",
    "Reason", "Changes"].map((h) => el("th", { scope: "col" }, h)))));
  const body = el("tbody");
  for (const r of results) {
    const changes = r.changes.map((c) => `${c.side}.${c.field}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`);
    body.append(el("tr", {}, el("td", { class: "code" }, r.bcId ?? ""), el("td", { class: "code" }, r.dataverseId ?? ""),
      el("td", { class: "plan-action" }, r.action), el("td", {}, r.direction ?? ""), el("td", {}, r.reason ?? ""),
      el("td", {}, changes.join("; "))));
  }
  t.append(body);
  box.append(t);
  if (onSync) box.append(button("Synchronize as planned", onSync));
}

async function planRecord() {
  const { mapping, coupling } = current;
  let chosen;
  const answer = await withDirection(async (direction) => {
    chosen = direction;
    return (await api(`mappings/${encodeURIComponent(mapping)}/plan`,
                      { method: "POST", body: { bcIds: [coupling.bcId], ...(direction ? { direction } : {}) } })).data;
  });
  if (answer) renderPlan(answer.results, () => syncRecord(chosen));
}

async function syncRecord(direction) {
  const { mapping, coupling } = current;
  const call = async (d) => (await api(`mappings/${encodeURIComponent(mapping)}/sync`,
    { method: "POST", body: { bcIds: [coupling.bcId], ...(d ? { direction: d } : {}) } })).data;
  const answer = direction ? await call(direction) : await withDirection(call);
  if (!answer) return;
  const r = answer.results[0];
  say(`Synchronized ${r.bcId}: ${r.status}${r.error ? ` (${r.error.code}: ${r.error.message})` : ""}.`, !!r.error);
  await findCoupling();
}

async function deleteCoupling(mapping, bcId) {
  if (!confirm(`Delete the coupling of ${bcId}? The records themselves stay.`)) return;
  await api(`mappings/${encodeURIComponent(mapping)}/couplings/${encodeURIComponent(bcId)}`, { method: "DELETE" });
  say(`Coupling of ${bcId} deleted.`);
}

// ------------------------------------------------------------------ Coupled Data Synchronization Errors
async function loadErrors() {
  const m = $("e-mapping").value;
  const items = (await api(`errors?top=100${m ? `&mapping=${encodeURIComponent(m)}` : ""}`)).data.value;
  const rows = $("error-rows");
  rows.replaceChildren();
  for (const e of items) {
    rows.append(
      el("tr", {},
        el("td", {}, e.mapping), el("td", { class: "code" }, e.bcId ?? ""), el("td", { class: "code" }, e.dataverseId ?? ""),
        el("td", {}, e.direction), el("td", { class: "code" }, e.code), el("td", {}, e.message),
        el("td", {}, e.lastOccurredAt ?? ""),
        el("td", {},
          button("Retry", async () => {
            const { data } = await api("errors/retry", { method: "POST", body: { ids: [e.id] } });
            say(`Retry job ${data.jobId} queued.`);
            watch(data.jobId, loadErrors);
          }, { "aria-label": `Retry error of ${e.bcId ?? e.dataverseId}` }),
          " ",
          e.bcId
            ? button("Delete coupling", async () => {
                await deleteCoupling(e.mapping, e.bcId);
                await loadErrors();
              }, { "aria-label": `Delete coupling of ${e.bcId}` })
            : "",
        ),
      ),
    );
  }
  if (!items.length) rows.append(el("tr", {}, el("td", { colspan: "8" }, "No open errors.")));
}

async function retryAll() {
  const m = $("e-mapping").value || mappings[0]?.name;
  const { data } = await api("errors/retry", { method: "POST", body: { mapping: m, all: true } });
  say(`Retry job ${data.jobId} queued for ${m}.`);
  watch(data.jobId, loadErrors);
}

// ------------------------------------------------------------------ Integration Synchronization Jobs
async function loadJobs() {
  const m = $("j-mapping").value;
  const items = (await api(`jobs?top=50${m ? `&mapping=${encodeURIComponent(m)}` : ""}`)).data.value;
  const rows = $("job-rows");
  rows.replaceChildren();
  for (const j of items) {
    const c = j.counts;
    const progress = j.batches?.expected ? el("progress", { max: String(j.batches.expected),
      value: String(j.batches.completed), "aria-label": `Progress of job ${j.jobId}` }) : "";
    rows.append(el("tr", { "data-job": j.jobId, "data-status": j.status },
      el("td", { class: "code" }, j.jobId), el("td", {}, j.mapping), el("td", {}, j.kind),
      el("td", { class: "job-status" }, j.status, " ", progress), el("td", {}, j.startedAt ?? ""), el("td", {}, j.finishedAt ?? ""),
      ...["inserted", "modified", "unchanged", "skipped", "failed", "coupled"].map((k) => el("td", {}, String(c[k] ?? 0)))));
  }
}

// Live progress: jobs started here are polled until they end, then the pages that show them reload.
function watch(jobId, then) {
  watched.add(jobId);
  const tick = async () => {
    try {
      const j = (await api(`jobs/${jobId}`)).data;
      if (!$("jobs").hidden) await loadJobs();
      if (["succeeded", "partial", "failed"].includes(j.status)) {
        watched.delete(jobId);
        say(`Job ${jobId} ${j.status}.`, j.status !== "succeeded");
        if (then) await then(j);
        return;
      }
    } catch (e) {
      say(e.message, true);
    }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 500);
}

// The jobs page refreshes itself while it is shown and some job on it is still queued or running.
setInterval(() => {
  if ($("jobs").hidden || !sessionStorage.getItem(KEY)) return;
  if (document.querySelector("#job-rows tr[data-status=queued], #job-rows tr[data-status=running]")) run(loadJobs);
}, 2000);

// ------------------------------------------------------------------ navigation and key
const loaders = { mappings: loadMappings, fields: loadFields, couplings: async () => {}, errors: loadErrors, jobs: loadJobs };

function show(page) {
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== page;
  for (const b of document.querySelectorAll("nav button")) {
    if (b.dataset.page === page) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  run(loaders[page]);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key").value);
    $("key").value = "";
    run(async () => {
      await loadMappings();
      say("Connected.");
      show("mappings");
    });
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    say("Key removed from this browser session.");
  });
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.page));
  $("field-mapping").addEventListener("change", () => run(loadFields));
  $("e-mapping").addEventListener("change", () => run(loadErrors));
  $("j-mapping").addEventListener("change", () => run(loadJobs));
  $("retry-all").addEventListener("click", () => run(retryAll));
  $("find-coupling").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(findCoupling);
  });
  $("add-field").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(async () => {
      const name = $("field-mapping").value;
      await api(`mappings/${encodeURIComponent(name)}/fields`,
                { method: "POST", body: { bc: $("new-bc").value, dataverse: $("new-dv").value, direction: $("new-dir").value } });
      say(`Field mapping ${$("new-bc").value} ↔ ${$("new-dv").value} added.`);
      await loadFields();
    });
  });
  if (sessionStorage.getItem(KEY)) run(async () => { await loadMappings(); show("mappings"); });
  else say("Enter the function key to start.");
});
