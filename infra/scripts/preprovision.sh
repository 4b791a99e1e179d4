#!/usr/bin/env bash
# azd preprovision hook: make `azd up` after `azd down` work with a purge-protected Key Vault.
# `azd down` deletes the resource group; the vault stays soft-deleted (purge protection forbids purging it) and
# its name stays taken. If the vault this environment used is in that state, deploy with createMode=recover
# (the vault comes back with its secrets and certificate); otherwise with createMode=default.
set -euo pipefail

KV="${AZURE_KEY_VAULT_NAME:-}"   # an output of the previous provision, kept in the azd environment
MODE=default
if [[ -n "$KV" ]] && az keyvault show-deleted --name "$KV" --query name -o tsv >/dev/null 2>&1; then
  MODE=recover
  echo "Key Vault $KV is soft-deleted (azd down): this provision recovers it."
fi
azd env set KEY_VAULT_CREATE_MODE "$MODE"
