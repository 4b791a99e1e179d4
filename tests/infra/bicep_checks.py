"""Static checks of infra/bicep, parsed with pycep-parser (no Bicep compiler can be installed here).

`check_templates(bicep_dir)` returns a list of human-readable problems (empty = all good). The tests run it
on the real templates and on deliberately broken copies, to prove that the checks bite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycep import BicepParser

from shared.config import Settings

# Built-in role ids the function app identity must hold, with the resource each is scoped to (rbac.bicep).
REQUIRED_ROLES: dict[str, tuple[str, str]] = {
    # role id: (name, scope resource type)
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    # As Microsoft's Flex Consumption + Service Bus sample: Data Owner and Data Receiver on the namespace.
    "090c5cfd-751d-490a-894a-3ce6f1109419": ("Service Bus Data Owner", "Microsoft.ServiceBus/namespaces"),
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": ("Service Bus Data Receiver", "Microsoft.ServiceBus/namespaces"),
    "4633458b-17de-408a-b874-0445c86b69e6": ("Key Vault Secrets User", "Microsoft.KeyVault/vaults"),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}
IDENTITY_PRINCIPAL_PARAM = "identityPrincipalId"

# Identity-based connection settings: name -> exact literal value, or None = must be present (an expression).
IDENTITY_SETTINGS: dict[str, str | None] = {
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": None,
    "AzureWebJobsStorage__blobServiceUri": None,
    "ServiceBusConnection__fullyQualifiedNamespace": None,
    "ServiceBusConnection__credential": "managedidentity",
    "ServiceBusConnection__clientId": None,
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": None,
}
# Service settings from shared/config.py that Azure must set (the defaults are the local stack's).
SERVICE_SETTINGS = [
    "SYNC_AUTH_MODE",
    "SYNC_TENANT_ID",
    "SYNC_CLIENT_ID",
    "SYNC_MANAGED_IDENTITY_CLIENT_ID",
    "SYNC_AUTHORITY_HOST",
    "BC_BASE_URL",
    "BC_ENVIRONMENT",
    "DATAVERSE_URL",
    "TABLES_ENDPOINT",
    "SERVICEBUS_QUEUE",
    "SYNC_SCHEDULED_SYNC",
    "SYNC_TIMER_SCHEDULE",
]
# Secrets: only ever Key Vault references (SYNC_CLIENT_CERTIFICATE: or empty, outside certificate mode).
KEY_VAULT_SETTINGS = ["BC_WEBHOOK_CLIENT_STATE", "DATAVERSE_WEBHOOK_KEY", "SYNC_CLIENT_CERTIFICATE"]
# Settings read by the Functions host / Python worker / OTel distro rather than shared/config.py.
HOST_SETTING_PREFIXES = (
    "AzureWebJobsStorage__",
    "ServiceBusConnection__",
    "APPLICATIONINSIGHTS_",
    "PYTHON_APPLICATIONINSIGHTS_",
)
# Literal values Azure must have: the worker's own telemetry (one export, correlated with the host's requests).
LITERAL_SETTINGS = {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}
PENDING_CONFIG_SETTINGS: set[str] = set()
# main.bicep outputs the federated credential step reads (infra/scripts/federated-credential.sh).
FEDERATED_OUTPUTS = (
    "SYNC_FEDERATED_CREDENTIAL_ISSUER",
    "SYNC_FEDERATED_CREDENTIAL_SUBJECT",
    "SYNC_FEDERATED_CREDENTIAL_AUDIENCE",
)
# Not a secret: with disableLocalAuth the instrumentation key alone cannot ingest anything.
ALLOWED_CONNECTION_STRING_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING"}
FORBIDDEN_TEXT = re.compile(
    r"listKeys\(|listConnectionStrings\(|listAccountSas\(|listServiceSas\(|AccountKey=|SharedAccessKey|"
    r"primaryKey|secondaryKey",
    re.IGNORECASE,
)
SECRET_OUTPUT_NAME = re.compile(r"(^|_)KEY($|_(?!VAULT))|SECRET|PASSWORD|CONNECTION|TOKEN|SAS($|_)", re.IGNORECASE)


@dataclass
class Template:
    path: Path
    data: dict[str, Any]

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.data.get("resources") or {}

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        return self.data.get("modules") or {}

    @property
    def variables(self) -> dict[str, Any]:
        return {k: v.get("value") for k, v in (self.data.get("variables") or {}).items()}


def parse_all(bicep_dir: Path) -> tuple[dict[str, Template], list[str]]:
    parser = BicepParser()
    templates: dict[str, Template] = {}
    problems: list[str] = []
    for path in sorted(bicep_dir.rglob("*.bicep")):
        rel = path.relative_to(bicep_dir).as_posix()
        try:
            templates[rel] = Template(path, parser.parse(file_path=path))
        except Exception as e:  # a template pycep (and so checkov) cannot read is itself a finding
            problems.append(f"{rel}: does not parse: {e}")
    return templates, problems


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource/module body, unwrapping `= if (cond) {...}`."""
    cfg = resource.get("config") or {}
    if "condition" in cfg and "config" in cfg:
        return cfg["config"]
    return cfg


def get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def walk(obj: Any) -> Iterator[Any]:
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def resources_of(templates: dict[str, Template], rtype: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (rel, name, res)
        for rel, t in templates.items()
        for name, res in t.resources.items()
        if res.get("type") == rtype and not res.get("existing")
    ]


def check_templates(bicep_dir: Path) -> list[str]:
    templates, problems = parse_all(bicep_dir)
    if "main.bicep" not in templates:
        return [*problems, "main.bicep missing or unparsable"]
    problems += check_main(bicep_dir, templates)
    problems += check_parameters_documented(templates)
    problems += check_resource_families(templates)
    problems += check_app_settings(templates)
    problems += check_no_secrets(bicep_dir, templates)
    problems += check_role_assignments(templates)
    return problems


def check_main(bicep_dir: Path, templates: dict[str, Template]) -> list[str]:
    problems: list[str] = []
    main = templates["main.bicep"]
    if get(main.data, "globals", "scope", "value") != "subscription":
        problems.append("main.bicep: targetScope must be 'subscription'")
    for name, mod in main.modules.items():
        detail = mod.get("detail") or {}
        if mod.get("type") == "local":
            if not (bicep_dir / detail.get("path", "")).is_file():
                problems.append(f"main.bicep: module {name} points to missing file {detail.get('path')}")
        elif not re.fullmatch(r"\d+\.\d+\.\d+", str(detail.get("tag", ""))):
            problems.append(f"main.bicep: registry module {name} must be pinned to a version (got {detail})")
    for out in main.data.get("outputs") or {}:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", out):
            problems.append(f"main.bicep: output {out} is not SCREAMING_CASE")
    # Every parameter azd must supply (no default) is in main.parameters.json, and nothing unknown is.
    params_file = bicep_dir / "main.parameters.json"
    supplied = set(json.loads(params_file.read_text())["parameters"]) if params_file.is_file() else set()
    declared = main.data.get("parameters") or {}
    for pname in declared:
        # Every parameter is reachable from `azd env set` (a ${VAR=default} in main.parameters.json).
        if pname not in supplied:
            problems.append(f"main.parameters.json: parameter {pname} is not supplied (unreachable from azd env)")
    for pname in supplied - set(declared):
        problems.append(f"main.parameters.json: {pname} is not a parameter of main.bicep")
    values = json.loads(params_file.read_text())["parameters"] if params_file.is_file() else {}
    if get(values, "principalType", "value") != "${AZURE_PRINCIPAL_TYPE=User}":
        problems.append("main.parameters.json: principalType must follow azd's AZURE_PRINCIPAL_TYPE")
    if get(values, "principalId", "value") != "${AZURE_PRINCIPAL_ID=}":
        problems.append("main.parameters.json: principalId must follow azd's AZURE_PRINCIPAL_ID")
    if "publicNetworkAccess" in declared:
        problems.append("main.bicep: publicNetworkAccess is offered but no VNet/private endpoints back Disabled")
    minimum = [d.get("argument") for d in get(declared, "maximumInstanceCount", "decorators") or []
               if d.get("type") == "min_value"]  # fmt: skip
    if minimum != [1]:
        problems.append(f"main.bicep: maximumInstanceCount must allow 1 (min {minimum})")
    auth = declared.get("syncAuthMode") or {}
    allowed = [d.get("argument") for d in auth.get("decorators") or [] if d.get("type") == "allowed"]
    if auth.get("default") != "federated" or allowed != [["federated", "certificate"]]:
        problems.append("main.bicep: syncAuthMode must default to federated (federated|certificate)")
    for out in FEDERATED_OUTPUTS:
        if out not in (main.data.get("outputs") or {}):
            problems.append(f"main.bicep: output {out} missing (the federated credential step needs it)")
    kv = body(main.modules.get("keyVault") or {})
    if get(kv, "params", "createMode") != "keyVaultCreateMode":
        problems.append("main.bicep: keyVault.createMode must come from keyVaultCreateMode (azd down/up)")
    # The identity that gets the roles is the one the app runs as.
    rbac = main.modules.get("rbac")
    api = main.modules.get("api")
    ident_refs = json.dumps(get(body(rbac or {}), "params", IDENTITY_PRINCIPAL_PARAM))
    app_refs = json.dumps(get(body(api or {}), "params", "identityId"))
    if '"identity"' not in ident_refs or '"identity"' not in app_refs:
        problems.append("main.bicep: rbac.identityPrincipalId and api.identityId must both come from module identity")
    identity_mod = main.modules.get("identity") or {}
    if "managed-identity/user-assigned-identity" not in json.dumps(identity_mod.get("detail")):
        problems.append("main.bicep: module identity must be a user-assigned managed identity")
    return problems


def check_parameters_documented(templates: dict[str, Template]) -> list[str]:
    problems = []
    for rel, t in templates.items():
        for pname, p in (t.data.get("parameters") or {}).items():
            if not any(d.get("type") == "description" and d.get("argument") for d in p.get("decorators") or []):
                problems.append(f"{rel}: parameter {pname} has no @description")
    return problems


def check_resource_families(templates: dict[str, Template]) -> list[str]:
    problems: list[str] = []

    def one(rtype: str) -> list[dict[str, Any]]:
        found = [body(r) for _, _, r in resources_of(templates, rtype)]
        if not found:
            problems.append(f"missing resource {rtype}")
        return found

    def expect(cond: bool, message: str) -> None:
        if not cond:
            problems.append(message)

    main = templates["main.bicep"]
    avm = {name: json.dumps(m.get("detail")) for name, m in main.modules.items()}
    for needle in ("web/serverfarm", "operational-insights/workspace", "insights/component"):
        expect(any(needle in d for d in avm.values()), f"main.bicep: missing module {needle}")
    plan = next((m for m in main.modules.values() if "web/serverfarm" in json.dumps(m.get("detail"))), {})
    expect(get(body(plan), "params", "sku", "name") == "FC1", "plan must be Flex Consumption (FC1)")
    ai = next((m for m in main.modules.values() if "insights/component" in json.dumps(m.get("detail"))), {})
    expect(get(body(ai), "params", "disableLocalAuth") is True, "Application Insights: disableLocalAuth must be true")

    for sa in one("Microsoft.Storage/storageAccounts"):
        p = sa.get("properties") or {}
        expect(p.get("allowSharedKeyAccess") is False, "storage: allowSharedKeyAccess must be false")
        expect(p.get("minimumTlsVersion") == "TLS1_2", "storage: minimumTlsVersion must be TLS1_2")
        expect(p.get("supportsHttpsTrafficOnly") is True, "storage: supportsHttpsTrafficOnly must be true")
        expect(p.get("allowBlobPublicAccess") is False, "storage: allowBlobPublicAccess must be false")
        expect("publicNetworkAccess" in p, "storage: publicNetworkAccess must be explicit")
    one("Microsoft.Storage/storageAccounts/blobServices/containers")
    one("Microsoft.Storage/storageAccounts/tableServices")

    for ns in one("Microsoft.ServiceBus/namespaces"):
        p = ns.get("properties") or {}
        expect(get(ns, "sku", "name") in ("Standard", "Premium"), "service bus: duplicate detection needs Standard+")
        expect(p.get("disableLocalAuth") is True, "service bus: disableLocalAuth must be true")
        expect(p.get("minimumTlsVersion") == "1.2", "service bus: minimumTlsVersion must be 1.2")
        expect("publicNetworkAccess" in p, "service bus: publicNetworkAccess must be explicit")
    for q in one("Microsoft.ServiceBus/namespaces/queues"):
        p = q.get("properties") or {}
        expect(p.get("requiresDuplicateDetection") is True, "queue: requiresDuplicateDetection must be true")
        expect("duplicateDetectionHistoryTimeWindow" in p, "queue: duplicateDetectionHistoryTimeWindow missing")
        expect(p.get("deadLetteringOnMessageExpiration") is True, "queue: deadLetteringOnMessageExpiration")
        expect("maxDeliveryCount" in p and "lockDuration" in p, "queue: maxDeliveryCount and lockDuration")

    for kv in one("Microsoft.KeyVault/vaults"):
        p = kv.get("properties") or {}
        expect(p.get("enableRbacAuthorization") is True, "key vault: enableRbacAuthorization must be true")
        expect(p.get("enableSoftDelete") is True, "key vault: enableSoftDelete must be true")
        expect(p.get("enablePurgeProtection") is True, "key vault: enablePurgeProtection must be true")
        expect("publicNetworkAccess" in p, "key vault: publicNetworkAccess must be explicit")

    for site in one("Microsoft.Web/sites"):
        p = site.get("properties") or {}
        expect(p.get("httpsOnly") is True, "function app: httpsOnly must be true")
        expect(get(p, "siteConfig", "minTlsVersion") == "1.2", "function app: minTlsVersion must be 1.2")
        expect(get(p, "siteConfig", "ftpsState") == "Disabled", "function app: ftpsState must be Disabled")
        expect("publicNetworkAccess" in p, "function app: publicNetworkAccess must be explicit")
        expect(bool(p.get("keyVaultReferenceIdentity")), "function app: keyVaultReferenceIdentity must be set")
        expect(get(site, "identity", "type") == "UserAssigned", "function app: must run as the user-assigned identity")
        rt = get(p, "functionAppConfig", "runtime") or {}
        expect(rt == {"name": "python", "version": "3.11"}, f"function app: runtime must be python 3.11 (got {rt})")
        auth = get(p, "functionAppConfig", "deployment", "storage", "authentication", "type")
        expect(auth == "UserAssignedIdentity", "function app: deployment storage must use the user-assigned identity")

    one("Microsoft.Insights/workbooks")
    sqr = one("Microsoft.Insights/scheduledQueryRules")
    expect(len(sqr) >= 3, "monitoring: expected alert rules for failed jobs, error rate and stale mappings")
    metric_alerts = one("Microsoft.Insights/metricAlerts")
    expect(
        any("DeadletteredMessages" in json.dumps(a) for a in metric_alerts),
        "monitoring: dead-letter alert (DeadletteredMessages) missing",
    )
    return problems


def app_settings(templates: dict[str, Template]) -> list[tuple[str, dict[str, Any]]]:
    """(file, settings dict) of every Microsoft.Web/sites/config 'appsettings' resource."""
    return [
        (rel, body(r).get("properties") or {})
        for rel, _, r in resources_of(templates, "Microsoft.Web/sites/config")
        if body(r).get("name") == "appsettings"
    ]


def resolve(value: Any, variables: dict[str, Any]) -> Any:
    """Expand `${var}` in a string value where `var` is a plain string variable of the same file."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\$\{(\w+)\}", lambda m: v if isinstance(v := variables.get(m.group(1)), str) else m.group(0), value)


def check_app_settings(templates: dict[str, Template]) -> list[str]:
    found = app_settings(templates)
    if not found:
        return ["function app: no appsettings config resource"]
    problems: list[str] = []
    known = {f.alias for f in Settings.model_fields.values() if f.alias}
    for rel, settings in found:
        variables = templates[rel].variables
        for name, expected in IDENTITY_SETTINGS.items():
            if name not in settings:
                problems.append(f"{rel}: identity-based setting {name} missing")
            elif expected is not None and settings[name] != expected:
                problems.append(f"{rel}: {name} must be {expected!r} (got {settings[name]!r})")
        auth = resolve(settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING"), variables)
        if not (isinstance(auth, str) and "Authorization=AAD" in auth and "ClientId=" in auth):
            problems.append(
                f"{rel}: APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be 'ClientId=...;Authorization=AAD'"
            )
        for name in SERVICE_SETTINGS:
            if name not in settings:
                problems.append(f"{rel}: setting {name} missing")
        for name in KEY_VAULT_SETTINGS:
            raw = settings.get(name)
            branches = get(raw, "operator", "operands") if get(raw, "operator", "type") == "conditional" else None
            values = [branches.get("true_value"), branches.get("false_value")] if branches else [raw]
            literals = [resolve(v, variables) for v in values if v != ""]
            if not literals or not all(isinstance(v, str) and v.startswith("@Microsoft.KeyVault(") for v in literals):
                shown = literals[0] if len(literals) == 1 else literals
                problems.append(f"{rel}: {name} must be a Key Vault reference (got {shown!r})")
        for name, expected in LITERAL_SETTINGS.items():
            if settings.get(name) != expected:
                problems.append(f"{rel}: {name} must be {expected!r} (got {settings.get(name)!r})")
        for name in settings:
            if name.startswith(HOST_SETTING_PREFIXES) or name in known or name in PENDING_CONFIG_SETTINGS:
                continue
            problems.append(f"{rel}: app setting {name} is read by nothing (not in shared/config.py)")
    return problems


def check_no_secrets(bicep_dir: Path, templates: dict[str, Template]) -> list[str]:
    problems: list[str] = []
    for rel, t in templates.items():
        for lineno, line in enumerate(t.path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            for m in FORBIDDEN_TEXT.finditer(code):
                problems.append(f"{rel}:{lineno}: secret material ({m.group(0)}) in a template")
        for out_name, out in (t.data.get("outputs") or {}).items():
            if SECRET_OUTPUT_NAME.search(out_name):
                problems.append(f"{rel}: output {out_name} looks like a secret")
            if "secure" in json.dumps(out.get("decorators")):
                problems.append(f"{rel}: output {out_name} is @secure (outputs must not carry secrets)")
    for rel, settings in app_settings(templates):
        for name, value in settings.items():
            if "connectionstring" in name.lower().replace("_", "") and name not in ALLOWED_CONNECTION_STRING_SETTINGS:
                problems.append(f"{rel}: app setting {name} is a connection string")
            text = json.dumps(value)
            if "connectionString" in text and name not in ALLOWED_CONNECTION_STRING_SETTINGS:
                problems.append(f"{rel}: app setting {name} uses a connection string")
    return problems


def check_role_assignments(templates: dict[str, Template]) -> list[str]:
    problems: list[str] = []
    assignments = resources_of(templates, "Microsoft.Authorization/roleAssignments")
    for rel, name, _ in assignments:
        if rel != "app/rbac.bicep":
            problems.append(f"{rel}: role assignment {name} outside app/rbac.bicep")
    rbac = templates.get("app/rbac.bicep")
    if rbac is None:
        return [*problems, "app/rbac.bicep missing"]
    variables = rbac.variables
    existing_types = {n: r.get("type") for n, r in rbac.resources.items() if r.get("existing")}
    granted: set[str] = set()
    for _, name, res in [a for a in assignments if a[0] == "app/rbac.bicep"]:
        cfg = body(res)
        props = cfg.get("properties") or {}
        role_var = get(props, "roleDefinitionId", "function", "parameters", "resource_name_1")
        role_id = variables.get(role_var) if isinstance(role_var, str) else None
        if not role_id:
            problems.append(f"rbac.bicep: {name}: roleDefinitionId must use a named role variable")
            continue
        scope = cfg.get("scope")
        # Deterministic name: guid(<scope>.id, <principal>, <role var>).
        gparams = get(cfg, "name", "function", "parameters") or {}
        if get(cfg, "name", "function", "type") != "guid" or [
            get(gparams, "base_string", "operator", "operands", "operand_1"),
            gparams.get("extra_string_1"),
            gparams.get("extra_string_2"),
        ] != [scope, props.get("principalId"), role_var]:
            problems.append(f"rbac.bicep: {name}: name must be guid({scope}.id, principalId, {role_var})")
        if props.get("principalId") == IDENTITY_PRINCIPAL_PARAM and "condition" not in (res.get("config") or {}):
            scope_type = existing_types.get(scope, "")
            if role_id in REQUIRED_ROLES and not scope_type.startswith(REQUIRED_ROLES[role_id][1]):
                problems.append(f"rbac.bicep: {name}: {REQUIRED_ROLES[role_id][0]} scoped to {scope_type}")
            granted.add(role_id)
    for role_id, (role_name, _) in REQUIRED_ROLES.items():
        if role_id not in granted:
            problems.append(f"rbac.bicep: the app identity lacks role assignment {role_name} ({role_id})")
    return problems
