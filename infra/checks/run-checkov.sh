#!/usr/bin/env bash
# Static checks of the deployment templates (part of `make deploy-check`):
#   1. checkov (framework bicep, --skip-download) over infra/bicep; any failed check fails the script.
#      Suppressions live inline in the Bicep (`// checkov:skip=CKV_AZURE_x: reason`).
#   2. azure-functions-doctor over the app (from the project's .venv), if installed.
# checkov pins many dependencies, so it gets its own venv (.venv-checkov), created on first run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON_BOOT="${PYTHON_BOOT:-$(command -v python3.11 || command -v python3)}"
CK_VENV="$ROOT/.venv-checkov"
REQS="$ROOT/infra/checks/requirements.txt"
STAMP="$CK_VENV/.installed"

if [[ ! -x "$CK_VENV/bin/checkov" || ! -f "$STAMP" || "$REQS" -nt "$STAMP" ]]; then
  echo "==> installing checkov into $CK_VENV"
  [[ -x "$CK_VENV/bin/python" ]] || "$PYTHON_BOOT" -m venv "$CK_VENV"
  "$CK_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" 2> >(grep -v "^WARNING: Location" >&2)
  touch "$STAMP"
fi

echo "==> checkov $("$CK_VENV/bin/checkov" --version) on infra/bicep"
# No API key, no downloads: only the built-in policies run. Exit code != 0 on any failed check.
"$CK_VENV/bin/checkov" -d infra/bicep --framework bicep --skip-download --quiet --compact

if [[ -x "$ROOT/.venv/bin/azure-functions-doctor" ]]; then
  # Exits non-zero only on failed checks; warnings (e.g. no APPLICATIONINSIGHTS_CONNECTION_STRING locally) pass.
  echo "==> azure-functions-doctor on $ROOT"
  "$ROOT/.venv/bin/azure-functions-doctor" doctor --path "$ROOT"
else
  echo "==> azure-functions-doctor not installed in .venv; skipped"
fi
