// Preloaded into Azurite (`NODE_OPTIONS=--require <this file>`, set by local/stack.py): entity point lookups
// by their index, as Table Storage serves them, instead of a scan of the whole partition.
//
// Azurite's table store (LokiTableMetadataStore, Azurite 3.35) finds an entity for every insert, update,
// merge, delete and point read with `collection.findOne({PartitionKey, RowKey})`. LokiJS narrows a
// multi-field query with the binary index of the FIRST field only and filters the rest one by one, so
// every lookup walks the whole partition: inserting N entities into one partition costs O(N²) (20,000
// couplings: minutes of Azurite CPU). Asking for RowKey first gives the same answer (an AND of two
// equalities) through the RowKey index: O(log N) candidates.
"use strict";

const path = require("path");

function lokiOfAzurite() {
  const azurite = path.dirname(require.resolve("azurite/package.json", { paths: [process.cwd()] }));
  return require(require.resolve("lokijs", { paths: [azurite] }));
}

const Loki = lokiOfAzurite();
const original = Loki.Collection.prototype.findOne;

function isPointQuery(query) {
  if (query === null || typeof query !== "object") return false;
  const keys = Object.keys(query);
  return (
    keys.length === 2 &&
    keys[0] === "PartitionKey" &&
    keys[1] === "RowKey" &&
    typeof query.PartitionKey === "string" &&
    typeof query.RowKey === "string"
  );
}

Loki.Collection.prototype.findOne = function findOne(query) {
  if (isPointQuery(query)) {
    return original.call(this, { RowKey: query.RowKey, PartitionKey: query.PartitionKey });
  }
  return original.call(this, query);
};
