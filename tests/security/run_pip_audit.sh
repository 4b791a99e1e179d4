#!/usr/bin/env bash
# Dependency audit of requirements.txt (what is deployed) with pip-audit, in its own venv (.venv-pip-audit,
# created on first run, like infra/checks/run-checkov.sh does for checkov): pip-audit pins its own deps.
#
# Exit codes: 0 = no unknown vulnerability (or the audit was SKIPPED: see below), 1 = a vulnerability
# not listed in tests/security/pip-audit-known.txt, 2 = the tool itself failed.
# SKIPPED: when no vulnerability service answers (no network to OSV, or a PyPI mirror without the
# JSON API), pip-audit would "pass" with every dependency unaudited; this script says SKIPPED instead,
# and exits 0 unless PIP_AUDIT_STRICT=1 (then 3). Known findings: one id per line, `# reason` after it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON_BOOT="${PYTHON_BOOT:-$(command -v python3.11 || command -v python3)}"
PA_VENV="$ROOT/.venv-pip-audit"
PA_VERSION="${PIP_AUDIT_VERSION:-2.10.1}"
KNOWN="$ROOT/tests/security/pip-audit-known.txt"
SERVICE="${PIP_AUDIT_SERVICE:-}"  # osv | pypi; empty: the first one that answers

if [[ ! -x "$PA_VENV/bin/pip-audit" ]] || ! "$PA_VENV/bin/pip-audit" --version | grep -q "$PA_VERSION"; then
  echo "==> installing pip-audit $PA_VERSION into $PA_VENV"
  [[ -x "$PA_VENV/bin/python" ]] || "$PYTHON_BOOT" -m venv "$PA_VENV"
  "$PA_VENV/bin/python" -m pip install -q --disable-pip-version-check "pip-audit==$PA_VERSION" \
    2> >(grep -v "^WARNING: Location" >&2) || { echo "pip-audit could not be installed"; exit 2; }
fi

reachable() {  # does the vulnerability service answer for a package we know is on PyPI?
  case "$1" in
    osv) curl -sf -m 8 -o /dev/null -X POST https://api.osv.dev/v1/query \
           -d '{"package":{"name":"requests","ecosystem":"PyPI"},"version":"2.31.0"}' ;;
    pypi) curl -sf -m 8 -o /dev/null https://pypi.org/pypi/requests/2.31.0/json ;;
  esac
}
if [[ -z "$SERVICE" ]]; then
  for s in osv pypi; do if reachable "$s"; then SERVICE="$s"; break; fi; done
fi
if [[ -z "$SERVICE" ]] || ! reachable "$SERVICE"; then
  echo "SKIPPED: pip-audit: no vulnerability service reachable (api.osv.dev and the PyPI JSON API both unreachable)"
  [[ "${PIP_AUDIT_STRICT:-0}" == "1" ]] && exit 3 || exit 0
fi

ignores=()
if [[ -f "$KNOWN" ]]; then
  while read -r id _; do [[ -n "$id" && "$id" != \#* ]] && ignores+=(--ignore-vuln "$id"); done < "$KNOWN"
fi
echo "==> pip-audit $PA_VERSION (-s $SERVICE) on requirements.txt; known findings ignored: $(( ${#ignores[@]} / 2 ))"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
set +e
"$PA_VENV/bin/pip-audit" -r requirements.txt -s "$SERVICE" --progress-spinner off -f json -o "$out" "${ignores[@]}"
rc=$?
"$PA_VENV/bin/python" - "$out" "$rc" <<'PY'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    deps = json.load(open(path))["dependencies"]
except (OSError, ValueError, KeyError):
    print(f"pip-audit produced no report (exit {rc})"); sys.exit(2)
audited = [d for d in deps if "skip_reason" not in d]
vulns = [(d["name"], d["version"], v["id"], v.get("fix_versions")) for d in deps for v in d.get("vulns", [])]
for name, version, vid, fix in vulns:
    print(f"VULNERABLE {name}=={version}: {vid} (fixed in {', '.join(fix or []) or 'no release'})")
if not audited:
    print(f"SKIPPED: pip-audit: the vulnerability service answered for none of the {len(deps)} dependencies")
    sys.exit(4)
print(f"pip-audit: {len(audited)} of {len(deps)} dependencies audited, {len(vulns)} unknown vulnerabilities")
sys.exit(1 if vulns else 0)
PY
status=$?
set -e
if [[ $status == 4 ]]; then [[ "${PIP_AUDIT_STRICT:-0}" == "1" ]] && exit 3 || exit 0; fi
exit $status
