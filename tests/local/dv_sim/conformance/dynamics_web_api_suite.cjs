// Drives the Dataverse simulator with dynamics-web-api, an independent Web API client (npm), and writes
// an exchange log. Usage: node dynamics_web_api_suite.cjs <serverUrl> <logFile>. Exit 1 on any failure.
"use strict";
const fs = require("fs");
const { DynamicsWebApi } = require("dynamics-web-api");

const [serverUrl, logFile] = process.argv.slice(2);
const api = new DynamicsWebApi({
  serverUrl,
  dataApi: { version: "9.2" },
  onTokenRefresh: async () => "no-auth-simulator",
});
const log = [];
const failures = [];

function check(step, cond, detail) {
  if (!cond) failures.push(`${step}: ${JSON.stringify(detail)}`);
}

async function step(name, fn) {
  const entry = { step: name };
  try {
    entry.result = await fn();
  } catch (err) {
    entry.error = { status: err.status, code: err.code, message: err.message };
    failures.push(`${name}: unexpected error ${JSON.stringify(entry.error)}`);
  }
  log.push(entry);
  return entry.result;
}

async function expectError(name, fn) {
  const entry = { step: name };
  try {
    entry.result = await fn();
    failures.push(`${name}: expected an error, got ${JSON.stringify(entry.result)}`);
  } catch (err) {
    const first = Array.isArray(err) ? err[0] || {} : err;  // a failed batch rejects with its responses
    entry.error = { status: first.status, code: first.code, message: first.message, headers: first.headers };
  }
  log.push(entry);
  return entry.error || {};
}

async function sim(path, body) {
  const resp = await fetch(`${serverUrl}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return resp.json();
}

(async () => {
  const tag = Date.now().toString(36).toUpperCase();
  // --- create / retrieve / update with ETags
  const created = await step("create with return=representation", () =>
    api.create({ collection: "accounts", data: { name: `DWA ${tag}`, accountnumber: `DWA-${tag}` }, returnRepresentation: true })
  );
  check("create", created && created.accountid && created["@odata.etag"], created);
  const id = created.accountid;
  const got = await step("retrieve with $select", () => api.retrieve({ collection: "accounts", key: id, select: ["name", "modifiedon"] }));
  // whole seconds (the client re-renders the stamp as a Date: ".000Z")
  check("retrieve", got.name === `DWA ${tag}` && new Date(got.modifiedon).getUTCMilliseconds() === 0, got);
  const byKey = await step("retrieve by alternate key", () =>
    api.retrieve({ collection: "accounts", key: `accountnumber='DWA-${tag}'`, select: ["accountid"] })
  );
  check("alternate key", byKey.accountid === id, byKey);
  const updated = await step("update with the current ETag", () =>
    api.update({ collection: "accounts", key: id, data: { telephone1: "+1 1" }, ifmatch: created["@odata.etag"], returnRepresentation: true })
  );
  check("update", updated && updated["@odata.etag"] !== created["@odata.etag"], updated);
  const stale = await expectError("update with a stale ETag", () =>
    new DynamicsWebApi({ serverUrl, dataApi: { version: "9.2" }, onTokenRefresh: async () => "x", propagateErrors: true }).update({
      collection: "accounts", key: id, data: { telephone1: "+1 2" }, ifmatch: created["@odata.etag"],
    })
  );
  check("stale etag", stale.status === 412 && stale.code === "0x80060882", stale);

  // --- paging
  await step("seed 7 rows", () => sim("/_sim/seed", { entity: "accounts", count: 7, prefix: `P${tag}` }));
  const filter = `startswith(name,'P${tag}')`;
  const page1 = await step("retrieveMultiple page 1", () =>
    api.retrieveMultiple({ collection: "accounts", select: ["name"], filter, maxPageSize: 3 })
  );
  check("page size", page1.value.length === 3 && page1.oDataNextLink, page1);
  const all = await step("retrieveAll follows nextLinks", () =>
    api.retrieveAll({ collection: "accounts", select: ["name"], filter, maxPageSize: 3 })
  );
  check("retrieveAll", all.value.length === 7 && new Set(all.value.map((r) => r.name)).size === 7, all.value.length);
  const count = await step("count via /$count", () => api.count({ collection: "accounts", filter }));
  check("count", Number(count) === 7, count);

  // --- $batch with change sets
  api.startBatch();
  api.create({ collection: "accounts", data: { name: `B1 ${tag}` } });
  api.create({ collection: "accounts", data: { name: `B2 ${tag}` } });
  const batch = await step("batch: one change set, two creates", () => api.executeBatch({ inChangeSet: true }));
  check("batch", Array.isArray(batch) && batch.length === 2, batch);
  api.startBatch();
  api.create({ collection: "accounts", data: { name: `B3 ${tag}` } });
  api.create({ collection: "accounts", data: { name: `B4 ${tag}`, nosuchcolumn: 1 } });
  // without continue-on-error the batch itself answers 400 (Learn "Execute batch operations")
  await expectError("batch: a failing change set", () => api.executeBatch({ inChangeSet: true }));
  const after = await step("the failed change set wrote nothing", () =>
    api.count({ collection: "accounts", filter: `name eq 'B3 ${tag}'` })
  );
  check("atomic change set", Number(after) === 0, after);

  // --- CreateMultiple / UpdateMultiple / UpsertMultiple
  const type = "Microsoft.Dynamics.CRM.account";
  const cm = await step("CreateMultiple", () =>
    api.callAction({ collection: "accounts", actionName: "Microsoft.Dynamics.CRM.CreateMultiple", action: {
      Targets: [1, 2, 3].map((i) => ({ "@odata.type": type, name: `M${i} ${tag}`, accountnumber: `M${i}-${tag}` })),
    } })
  );
  check("CreateMultiple", cm && cm.Ids && cm.Ids.length === 3, cm);
  await step("UpdateMultiple", () =>
    api.callAction({ collection: "accounts", actionName: "Microsoft.Dynamics.CRM.UpdateMultiple", action: {
      Targets: cm.Ids.map((rid) => ({ "@odata.type": type, accountid: rid, telephone1: "+1 9" })),
    } })
  );
  const upd = await step("UpdateMultiple landed", () => api.retrieve({ collection: "accounts", key: cm.Ids[1], select: ["telephone1"] }));
  check("UpdateMultiple", upd.telephone1 === "+1 9", upd);
  const upsert = (name) => api.callAction({ collection: "accounts", actionName: "Microsoft.Dynamics.CRM.UpsertMultiple", action: {
    Targets: [{ "@odata.type": type, "@odata.id": `accounts(accountnumber='U-${tag}')`, name }],
  } });
  const u1 = await step("UpsertMultiple by @odata.id creates", () => upsert(`U1 ${tag}`));
  const u2 = await step("UpsertMultiple by @odata.id updates", () => upsert(`U2 ${tag}`));
  check("UpsertMultiple", u1.Results[0].RecordCreated === true && u2.Results[0].RecordCreated === false, [u1, u2]);
  const ups = await step("one upserted row", () => api.count({ collection: "accounts", filter: `accountnumber eq 'U-${tag}'` }));
  check("no duplicate", Number(ups) === 1, ups);

  // --- change tracking with deletes
  const initial = await step("track changes: initial read", () =>
    api.retrieveAll({ collection: "accounts", select: ["name"], trackChanges: true })
  );
  check("deltaLink", initial.oDataDeltaLink, Object.keys(initial));
  await step("change one row", () => api.update({ collection: "accounts", key: cm.Ids[0], data: { name: `M1x ${tag}` } }));
  await step("delete one row", () => api.deleteRecord({ collection: "accounts", key: cm.Ids[2] }));
  const delta = await step("read the delta", () => api.retrieveMultiple({ collection: "accounts" }, initial.oDataDeltaLink));
  const names = (delta.value || []).filter((r) => r.name).map((r) => r.name);
  const removed = (delta.value || []).filter((r) => r["@odata.context"] && r["@odata.context"].includes("$deletedEntity")).map((r) => r.id);
  check("delta changes", names.includes(`M1x ${tag}`), delta.value);
  check("delta deletes", removed.includes(cm.Ids[2]), delta.value);

  // --- errors and 429
  const missing = await expectError("retrieve a missing row", () =>
    api.retrieve({ collection: "accounts", key: "00000000-0000-0000-0000-000000000001" })
  );
  check("404", missing.status === 404 && missing.code === "0x80040217", missing);
  const badFilter = await expectError("OData 4.01 in operator refused", () =>
    api.retrieveMultiple({ collection: "accounts", filter: `accountid in (${id})` })
  );
  check("in refused", badFilter.status === 400 && badFilter.code === "0x80060888", badFilter);
  const inFn = await step("Microsoft.Dynamics.CRM.In accepted", () =>
    api.retrieveMultiple({ collection: "accounts", select: ["accountid"], filter: `Microsoft.Dynamics.CRM.In(PropertyName='accountid',PropertyValues=['${id}'])` })
  );
  check("In", inFn.value.length === 1, inFn);
  await step("inject a 429", () => sim("/_sim/faults", { status: 429, count: 1, retryAfter: 2, route: "accounts" }));
  const throttled = await expectError("a throttled request", () => api.retrieve({ collection: "accounts", key: id }));
  check("429", throttled.status === 429 && throttled.code === "0x80072322", throttled);
  const again = await step("the next request passes", () => api.retrieve({ collection: "accounts", key: id, select: ["name"] }));
  check("after 429", again.name === `DWA ${tag}`, again);

  fs.writeFileSync(logFile, JSON.stringify({ serverUrl, failures, exchanges: log }, null, 2));
  if (failures.length) {
    console.error(failures.join("\n"));
    process.exit(1);
  }
  console.log(`dynamics-web-api conformance: ${log.length} exchanges, 0 failures`);
})().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
