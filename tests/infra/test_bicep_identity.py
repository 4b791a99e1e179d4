"""infra/bicep for issue #17: the federated credential step, redeployability, the network choice, roles and
parameters — each check proven to bite on a broken copy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.infra.bicep_checks import body, check_templates, get, parse_all

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "bicep"
SCRIPTS = ROOT / "infra" / "scripts"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_every_main_parameter_is_reachable_from_azd_env() -> None:
    templates, _ = parse_all(BICEP)
    declared = set(templates["main.bicep"].data["parameters"])
    values = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    assert set(values) == declared
    for name, entry in values.items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), (name, entry)
    assert values["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
    assert values["syncAuthMode"]["value"] == "${SYNC_AUTH_MODE=federated}"
    assert values["maximumInstanceCount"]["value"].startswith("${MAXIMUM_INSTANCE_COUNT=")


def test_check_catches_a_parameter_missing_from_main_parameters(broken: Path) -> None:
    path = broken / "main.parameters.json"
    data = json.loads(path.read_text())
    del data["parameters"]["maximumInstanceCount"]
    path.write_text(json.dumps(data))
    assert "main.parameters.json: parameter maximumInstanceCount is not supplied (unreachable from azd env)" in (
        check_templates(broken)
    )


def test_public_network_access_is_not_offered_without_private_endpoints(broken: Path) -> None:
    templates, _ = parse_all(BICEP)
    assert "publicNetworkAccess" not in templates["main.bicep"].data["parameters"]
    types = {r["type"] for t in templates.values() for r in t.resources.values()}
    assert "Microsoft.Network/privateEndpoints" not in types  # so Disabled would cut the app off: not offered
    for rel in ("app/storage.bicep", "app/servicebus.bicep", "app/keyvault.bicep"):
        assert templates[rel].variables["publicNetworkAccess"] == "Enabled", rel
        assert "publicNetworkAccess" not in (templates[rel].data.get("parameters") or {}), rel
    # Offering it again without the network is caught.
    _edit(
        broken / "main.bicep",
        "param logRetentionDays int = 30\n",
        "param logRetentionDays int = 30\n\n@description('x')\nparam publicNetworkAccess string = 'Disabled'\n",
    )
    assert "main.bicep: publicNetworkAccess is offered but no VNet/private endpoints back Disabled" in (
        check_templates(broken)
    )


def test_maximum_instance_count_can_be_set_from_one(broken: Path) -> None:
    _edit(broken / "main.bicep", "@minValue(1)\n@maxValue(1000)\nparam maximumInstanceCount", "@minValue(40)\n"
          "@maxValue(1000)\nparam maximumInstanceCount")  # fmt: skip
    assert any("maximumInstanceCount must allow 1" in p for p in check_templates(broken))


def test_federated_mode_is_the_default_and_stores_no_credential(broken: Path) -> None:
    templates, _ = parse_all(BICEP)
    settings = next(
        body(r)["properties"] for r in templates["app/function.bicep"].resources.values() if r.get("type") ==
        "Microsoft.Web/sites/config"
    )  # fmt: skip
    cert = settings["SYNC_CLIENT_CERTIFICATE"]
    # Only certificate mode gets the Key Vault reference; federated mode leaves it empty.
    assert get(cert, "operator", "type") == "conditional"
    assert get(cert, "operator", "operands", "false_value") == ""
    assert settings["SYNC_AUTH_MODE"] == "syncAuthMode"
    assert settings["SYNC_MANAGED_IDENTITY_CLIENT_ID"] == "identityClientId"
    _edit(broken / "main.bicep", "param syncAuthMode string = 'federated'", "param syncAuthMode string = 'certificate'")
    assert "main.bicep: syncAuthMode must default to federated (federated|certificate)" in check_templates(broken)


def test_certificate_setting_must_stay_a_key_vault_reference(broken: Path) -> None:
    _edit(broken / "app" / "function.bicep", "? '${kvRef}${syncCertificateName})' : ''", "? 'inline-pem' : ''")
    assert "app/function.bicep: SYNC_CLIENT_CERTIFICATE must be a Key Vault reference (got 'inline-pem')" in (
        check_templates(broken)
    )


def test_worker_telemetry_setting_is_required(broken: Path) -> None:
    _edit(broken / "app" / "function.bicep", "    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'\n", "")
    assert "app/function.bicep: PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY must be 'true' (got None)" in (
        check_templates(broken)
    )


def test_federated_credential_step_uses_the_deployment_outputs() -> None:
    templates, _ = parse_all(BICEP)
    outputs = templates["main.bicep"].data["outputs"]
    text = (BICEP / "main.bicep").read_text()
    assert "output SYNC_FEDERATED_CREDENTIAL_SUBJECT string = identity.outputs.principalId" in text
    assert "environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0" in text
    assert "SYNC_FEDERATED_CREDENTIAL_AUDIENCE" in outputs
    spec = yaml.safe_load((ROOT / "azure.yaml").read_text())
    script = SCRIPTS / "federated-credential.sh"
    assert spec["hooks"]["postprovision"]["run"] == f"bash {script.relative_to(ROOT)}"
    body_text = script.read_text()
    assert "az ad app federated-credential create --id" in body_text
    for var in ("SYNC_FEDERATED_CREDENTIAL_ISSUER", "SYNC_FEDERATED_CREDENTIAL_SUBJECT", "SYNC_CLIENT_ID"):
        assert var in body_text
    assert '"audiences": [\\"$AUDIENCE\\"]' in body_text or '\\"audiences\\": [\\"$AUDIENCE\\"]' in body_text
    assert "az ad app federated-credential list" in body_text  # the output check
    readme = (ROOT / "README.md").read_text()
    assert "az ad app federated-credential create" in readme and "federated-credential list" in readme


def test_key_vault_survives_azd_down_and_up(broken: Path) -> None:
    templates, _ = parse_all(BICEP)
    vault = next(body(r) for r in templates["app/keyvault.bicep"].resources.values())
    assert vault["properties"]["enablePurgeProtection"] is True  # kept: secrets survive a mistaken down
    assert vault["properties"]["createMode"] == "createMode"
    spec = yaml.safe_load((ROOT / "azure.yaml").read_text())
    hook = (SCRIPTS / "preprovision.sh").read_text()
    assert spec["hooks"]["preprovision"]["run"] == "bash infra/scripts/preprovision.sh"
    assert "az keyvault show-deleted --name" in hook and "KEY_VAULT_CREATE_MODE" in hook
    values = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    assert values["keyVaultCreateMode"]["value"] == "${KEY_VAULT_CREATE_MODE=default}"
    _edit(broken / "main.bicep", "    createMode: keyVaultCreateMode\n", "")
    assert "main.bicep: keyVault.createMode must come from keyVaultCreateMode (azd down/up)" in check_templates(broken)


def test_service_bus_roles_as_the_flex_consumption_sample() -> None:
    text = (BICEP / "app" / "rbac.bicep").read_text()
    templates, _ = parse_all(BICEP)
    rbac = templates["app/rbac.bicep"]
    roles = {}
    for name, res in rbac.resources.items():
        if res.get("type") != "Microsoft.Authorization/roleAssignments":
            continue
        cfg = body(res)
        role_var = get(cfg, "properties", "roleDefinitionId", "function", "parameters", "resource_name_1")
        roles[name] = (rbac.variables[role_var], cfg.get("scope"), get(cfg, "properties", "principalType"))
    owner, receiver = "090c5cfd-751d-490a-894a-3ce6f1109419", "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
    assert roles["identityServiceBusOwner"] == (owner, "serviceBus", "ServicePrincipal")
    assert roles["identityServiceBusReceiver"] == (receiver, "serviceBus", "ServicePrincipal")
    # Operators: the roles the README's runbooks need, with the principal type azd reports.
    assert roles["operatorServiceBusOwner"] == (owner, "serviceBus", "principalType")
    assert roles["operatorSecretsOfficer"][2] == roles["operatorCertificatesOfficer"][2] == "principalType"
    assert "69a216fc" not in text  # no separate queue-scoped sender any more
