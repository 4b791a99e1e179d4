#!/usr/bin/env bash
# azd postprovision hook (and the README's manual step): the federated identity credential that lets the
# function app's managed identity sign in as the app registration (SYNC_AUTH_MODE=federated).
# Needs the right to change the app registration (its owner, or Application Administrator). Idempotent.
set -euo pipefail

if [[ "${SYNC_AUTH_MODE:-federated}" != "federated" ]]; then
  echo "SYNC_AUTH_MODE=${SYNC_AUTH_MODE}: no federated credential needed."
  exit 0
fi
APP="${SYNC_CLIENT_ID:?set SYNC_CLIENT_ID (azd env set SYNC_CLIENT_ID <app id>)}"
ISSUER="${SYNC_FEDERATED_CREDENTIAL_ISSUER:?run azd provision first (output SYNC_FEDERATED_CREDENTIAL_ISSUER)}"
SUBJECT="${SYNC_FEDERATED_CREDENTIAL_SUBJECT:?run azd provision first (output SYNC_FEDERATED_CREDENTIAL_SUBJECT)}"
AUDIENCE="${SYNC_FEDERATED_CREDENTIAL_AUDIENCE:-api://AzureADTokenExchange}"
NAME="sync-function-${AZURE_ENV_NAME:-app}"

existing=$(az ad app federated-credential list --id "$APP" \
  --query "[?issuer=='$ISSUER' && subject=='$SUBJECT'].name" -o tsv)
if [[ -z "$existing" ]]; then
  if ! az ad app federated-credential create --id "$APP" --parameters \
      "{\"name\": \"$NAME\", \"issuer\": \"$ISSUER\", \"subject\": \"$SUBJECT\", \"audiences\": [\"$AUDIENCE\"]}" -o none; then
    echo "Could not add the federated credential (you need to own app $APP). Ask an admin to run:" >&2
    echo "  az ad app federated-credential create --id $APP --parameters '{\"name\": \"$NAME\", \"issuer\": \"$ISSUER\", \"subject\": \"$SUBJECT\", \"audiences\": [\"$AUDIENCE\"]}'" >&2
    exit 0  # provisioning itself succeeded; /api/health names the missing credential until it exists
  fi
fi
# The check: exactly this issuer/subject/audience on the app registration.
az ad app federated-credential list --id "$APP" \
  --query "[?issuer=='$ISSUER' && subject=='$SUBJECT'].{name:name, issuer:issuer, subject:subject, audiences:audiences}" -o table
