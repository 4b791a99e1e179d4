"""infra/bicep: the templates pass the static checks, and the checks catch what they claim to catch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra.bicep_checks import REQUIRED_ROLES, app_settings, check_templates, parse_all

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "bicep"


def _edit(path: Path, old: str, new: str, *, regex: bool = False) -> None:
    text = path.read_text()
    changed = re.sub(old, new, text, count=1, flags=re.S) if regex else text.replace(old, new, 1)
    assert changed != text, f"edit did not apply to {path.name}: {old!r}"
    path.write_text(changed)


def test_templates_pass_all_checks() -> None:
    assert check_templates(BICEP) == []


def test_every_bicep_file_parses_and_all_families_exist() -> None:
    templates, problems = parse_all(BICEP)
    assert problems == []
    assert {
        "main.bicep",
        "app/function.bicep",
        "app/rbac.bicep",
        "app/storage.bicep",
        "app/servicebus.bicep",
        "app/keyvault.bicep",
        "app/monitoring.bicep",
    } <= set(templates)
    types = {r["type"] for t in templates.values() for r in t.resources.values()}
    assert {
        "Microsoft.Web/sites",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.ServiceBus/namespaces/queues",
        "Microsoft.KeyVault/vaults",
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.Insights/workbooks",
        "Microsoft.Insights/scheduledQueryRules",
        "Microsoft.Insights/metricAlerts",
    } <= types


def test_workbook_json_is_valid_and_queries_the_telemetry_names() -> None:
    from shared import telemetry

    data = json.loads((BICEP / "app" / "sync-health.workbook.json").read_text())
    assert data["version"] == "Notebook/1.0"
    queries = " ".join(i["content"].get("query", "") for i in data["items"] if i["type"] == 3)
    for name in (
        telemetry.SYNC_RECORDS,
        telemetry.SYNC_CONFLICTS,
        telemetry.SYNC_JOBS,
        telemetry.SYNC_LATENCY_MS,
        telemetry.QUEUE_LAG_MS,
        telemetry.SYNC_THROTTLED,
    ):
        assert f'"{name}"' in queries, name
    assert 'resultCode == "429"' in queries  # throttling from dependencies


def test_alert_queries_use_the_telemetry_names() -> None:
    from shared import telemetry

    text = (BICEP / "app" / "monitoring.bicep").read_text()
    assert f'name == "{telemetry.SYNC_JOBS}"' in text
    assert f'name == "{telemetry.SYNC_RECORDS}"' in text
    assert "customDimensions.mapping" in text


def test_the_error_rate_counts_the_outcomes_a_job_counts_failed() -> None:
    import re

    from shared.domain.model import COUNT_OF

    text = (BICEP / "app" / "monitoring.bicep").read_text()
    (listed,) = re.findall(r'failed = sumif\(valueSum, outcome in \(([^)]*)\)\)', text)
    assert set(re.findall(r'"(\w+)"', listed)) == {o.value for o, key in COUNT_OF.items() if key == "failed"}


def test_app_settings_cover_the_azure_relevant_config_names() -> None:
    templates, _ = parse_all(BICEP)
    ((_, settings),) = app_settings(templates)
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["SERVICEBUS_QUEUE"] == "queueName"
    # Local-only settings (secrets, emulator connection strings) are never set in Azure.
    for name in ("SYNC_CLIENT_SECRET", "SERVICEBUS_CONNECTION_STRING", "TABLES_CONNECTION_STRING", "SYNC_AUTHORITY_CA"):
        assert name not in settings


def test_check_catches_a_removed_role_assignment(broken: Path) -> None:
    # Drop the Service Bus Data Receiver assignment of the app identity.
    _edit(broken / "app" / "rbac.bicep", r"resource identityServiceBusReceiver .*?\n}\n", "", regex=True)
    problems = check_templates(broken)
    assert problems == [
        "rbac.bicep: the app identity lacks role assignment Service Bus Data Receiver "
        "(4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0)"
    ]


@pytest.mark.parametrize("role_id", list(REQUIRED_ROLES))
def test_check_catches_each_missing_role(broken: Path, role_id: str) -> None:
    # Point the role variable elsewhere: that role is then granted to nobody.
    _edit(broken / "app" / "rbac.bicep", f"'{role_id}'", "'00000000-0000-0000-0000-000000000000'")
    problems = check_templates(broken)
    assert any(REQUIRED_ROLES[role_id][0] in p and "lacks" in p for p in problems), problems


def test_check_catches_a_non_deterministic_assignment_name(broken: Path) -> None:
    _edit(
        broken / "app" / "rbac.bicep",
        "name: guid(storage.id, identityPrincipalId, storageTableDataContributorRoleId)",
        "name: guid(storage.id, storageTableDataContributorRoleId)",
    )
    assert any("must be guid(storage.id" in p for p in check_templates(broken))


def test_check_catches_a_removed_identity_based_setting(broken: Path) -> None:
    _edit(broken / "app" / "function.bicep", "    ServiceBusConnection__credential: 'managedidentity'\n", "")
    assert check_templates(broken) == [
        "app/function.bicep: identity-based setting ServiceBusConnection__credential missing"
    ]


def test_check_catches_a_connection_string_setting(broken: Path) -> None:
    _edit(
        broken / "app" / "function.bicep",
        "    AzureWebJobsStorage__credential: 'managedidentity'\n",
        "    AzureWebJobsStorage__credential: 'managedidentity'\n"
        "    AzureWebJobsStorage: 'AccountName=x;AccountKey=${storage.listKeys().keys[0].value}'\n",
    )
    problems = check_templates(broken)
    assert any("secret material (AccountKey=)" in p for p in problems)
    assert any("secret material (listKeys(" in p for p in problems)


def test_check_catches_plain_webhook_secret_and_missing_description(broken: Path) -> None:
    _edit(
        broken / "app" / "function.bicep",
        "BC_WEBHOOK_CLIENT_STATE: '${kvRef}bc-webhook-client-state)'",
        "BC_WEBHOOK_CLIENT_STATE: 'plain-text'",
    )
    _edit(broken / "app" / "storage.bicep", "@description('Replication SKU.')\n", "")
    problems = check_templates(broken)
    assert "app/function.bicep: BC_WEBHOOK_CLIENT_STATE must be a Key Vault reference (got 'plain-text')" in problems
    assert "app/storage.bicep: parameter skuName has no @description" in problems


def test_check_catches_weakened_security_settings(broken: Path) -> None:
    _edit(broken / "app" / "storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true")
    _edit(broken / "app" / "function.bicep", "httpsOnly: true", "httpsOnly: false")
    _edit(broken / "app" / "servicebus.bicep", "minimumTlsVersion: '1.2'", "minimumTlsVersion: '1.0'")
    _edit(broken / "app" / "keyvault.bicep", "    publicNetworkAccess: publicNetworkAccess\n", "")
    problems = check_templates(broken)
    assert set(problems) == {
        "storage: allowSharedKeyAccess must be false",
        "function app: httpsOnly must be true",
        "service bus: minimumTlsVersion must be 1.2",
        "key vault: publicNetworkAccess must be explicit",
    }


def test_check_catches_secret_outputs_and_unpinned_modules(broken: Path) -> None:
    _edit(
        broken / "main.bicep", "output AZURE_LOCATION string = location", "output STORAGE_ACCOUNT_KEY string = location"
    )
    _edit(broken / "main.bicep", "avm/res/web/serverfarm:0.1.1", "avm/res/web/serverfarm:latest")
    problems = check_templates(broken)
    assert "main.bicep: output STORAGE_ACCOUNT_KEY looks like a secret" in problems
    assert any("module plan must be pinned" in p for p in problems)


def test_check_catches_unknown_app_setting(broken: Path) -> None:
    _edit(
        broken / "app" / "function.bicep", "    SERVICEBUS_QUEUE: queueName\n", "    SERVICEBUS_QUEUE_NAME: queueName\n"
    )
    problems = check_templates(broken)
    assert "app/function.bicep: setting SERVICEBUS_QUEUE missing" in problems
    assert (
        "app/function.bicep: app setting SERVICEBUS_QUEUE_NAME is read by nothing (not in shared/config.py)" in problems
    )


def test_azure_yaml_points_at_the_templates() -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert spec["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert (ROOT / spec["infra"]["path"] / f"{spec['infra']['module']}.bicep").is_file()
