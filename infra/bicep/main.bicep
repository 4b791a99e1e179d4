// BC <-> Dataverse coupling & sync service: everything one environment needs (azd up / az deployment sub create).
//
// Network: every resource keeps its public endpoint (Entra ID + RBAC on every call, shared keys and SAS off).
// `publicNetworkAccess: Disabled` is not offered: it needs VNet integration of the app (a delegated subnet)
// and private endpoints + DNS zones for storage, Service Bus (Premium) and Key Vault, which these templates do
// not create; BC and Dataverse must reach the webhooks over the internet in any case.
//
// Pinned Azure Verified Modules are used where they fit and carry no security-relevant setting we must
// prove here: the user-assigned identity, the Flex Consumption plan, Log Analytics and Application Insights.
// Storage, Service Bus, Key Vault, the function app, RBAC and monitoring are hand-written modules under app/:
// `checkov --skip-download` cannot see into registry modules, and without a Bicep compiler on the build
// machines these are the settings (shared keys, TLS, local auth, purge protection, identity-based app settings)
// that tests/infra and checkov must be able to read and assert.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used in the resource group name and to derive a unique resource token.')
param environmentName string

@minLength(1)
@description('Region for every resource. Must offer the Flex Consumption plan (e.g. eastus, northeurope, westeurope, swedencentral, uksouth).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Optional: object id of whoever runs the deployment (azd sets AZURE_PRINCIPAL_ID); gets the data roles the runbooks need: Key Vault Secrets/Certificates Officer, Azure Service Bus Data Owner. Empty = none.')
param principalId string = ''

@description('Principal type of principalId: User for a person, ServicePrincipal for a pipeline (azd sets AZURE_PRINCIPAL_TYPE).')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Client (application) id of the Entra ID app registration that BC and Dataverse trust (SYNC_CLIENT_ID).')
param syncClientId string

@description('How the app registration proves itself to BC and Dataverse: federated (the managed identity\'s token is its client assertion; nothing to store or rotate) or certificate (a PEM certificate in Key Vault).')
@allowed([
  'federated'
  'certificate'
])
param syncAuthMode string = 'federated'

@description('Name of the Key Vault certificate holding the app registration credential (PEM content type; certificate mode only).')
param syncCertificateName string = 'sync-client-cert'

@description('Optional Key Vault name (3-24 characters); empty = kv<resource token>. Set a new one to start over with a fresh vault.')
@maxLength(24)
param keyVaultName string = ''

@description('default, or recover: re-use the soft-deleted vault of the same name (after azd down; purge protection keeps it 90 days). infra/scripts/preprovision.sh sets it.')
@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string = 'default'

@description('Business Central API host (BC_BASE_URL).')
param bcBaseUrl string = 'https://api.businesscentral.dynamics.com'

@description('Business Central environment name (BC_ENVIRONMENT), e.g. Production or Sandbox.')
param bcEnvironment string = 'Production'

@description('Optional Business Central company id (BC_COMPANY_ID); empty = the service picks the only/first company.')
param bcCompanyId string = ''

@description('Dataverse organization URL (DATAVERSE_URL), e.g. https://contoso.crm4.dynamics.com.')
param dataverseUrl string

@description('Entra ID authority host (SYNC_AUTHORITY_HOST), without a trailing slash.')
param authorityHost string = 'https://login.microsoftonline.com'

@description('Whether the timer runs scheduled syncs and registers webhook subscriptions (SYNC_SCHEDULED_SYNC).')
param scheduledSync bool = true

@description('NCRONTAB schedule of the fan-out timer (SYNC_TIMER_SCHEDULE).')
param timerSchedule string = '0 */5 * * * *'

@description('Flex Consumption instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption maximum instance count (1-1000): caps scale-out and therefore the load on BC and Dataverse.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional resource id of an existing action group that alert rules notify. Empty = alerts fire without notifications.')
param alertActionGroupId string = ''

@description('Hours without a successful sync job of a mapping before the stale-mapping alert fires.')
@minValue(1)
@maxValue(24)
param staleMappingHours int = 6

@description('Failed share of synced records (percent, over 15 minutes) above which the error-rate alert fires.')
@minValue(1)
@maxValue(100)
param errorRatePercent int = 10

@description('Log Analytics retention in days.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}sync-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var queueName = 'sync-work'
var vaultName = !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The one identity of the app: storage, Service Bus, Key Vault references and telemetry all use it.
module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}sync-${resourceToken}'
    location: location
    tags: tags
  }
}

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'plan'
  scope: rg
  params: {
    name: '${abbrs.webServerFarms}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    location: location
    tags: tags
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.7.0' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: logRetentionDays
  }
}

module appInsights 'br/public:avm/res/insights/component:0.4.1' = {
  name: 'appInsights'
  scope: rg
  params: {
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    // Ingestion only with an Entra token (Monitoring Metrics Publisher in rbac.bicep); the iKey alone is useless.
    disableLocalAuth: true
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module serviceBus 'app/servicebus.bicep' = {
  name: 'serviceBus'
  scope: rg
  params: {
    name: '${abbrs.serviceBusNamespaces}${resourceToken}'
    location: location
    tags: tags
    queueName: queueName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: vaultName
    location: location
    tags: tags
    createMode: keyVaultCreateMode
  }
}

module api 'app/function.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    serviceName: 'api'
    planId: plan.outputs.resourceId
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    serviceBusNamespaceName: serviceBus.outputs.name
    queueName: queueName
    keyVaultName: keyVault.outputs.name
    appInsightsName: appInsights.outputs.name
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    syncClientId: syncClientId
    syncAuthMode: syncAuthMode
    syncCertificateName: syncCertificateName
    authorityHost: authorityHost
    bcBaseUrl: bcBaseUrl
    bcEnvironment: bcEnvironment
    bcCompanyId: bcCompanyId
    dataverseUrl: dataverseUrl
    scheduledSync: scheduledSync
    timerSchedule: timerSchedule
  }
  // The app's first start reads Key Vault references and storage with the identity: roles must exist first.
  dependsOn: [
    rbac
  ]
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: appInsights.outputs.name
    principalId: principalId
    principalType: principalType
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appInsightsName: appInsights.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
    queueName: queueName
    actionGroupId: alertActionGroupId
    staleMappingHours: staleMappingHours
    errorRatePercent: errorRatePercent
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.SERVICE_API_NAME
output SERVICE_API_URI string = api.outputs.SERVICE_API_URI
output AZURE_FUNCTION_NAME string = api.outputs.SERVICE_API_NAME
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output SERVICEBUS_QUEUE string = queueName
output TABLES_ENDPOINT string = storage.outputs.tableEndpoint
output SYNC_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output SYNC_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output SYNC_AUTH_MODE string = syncAuthMode
// The federated identity credential the app registration needs (infra/scripts/federated-credential.sh adds it):
// the managed identity's tokens for api://AzureADTokenExchange come from this issuer with this subject.
output SYNC_FEDERATED_CREDENTIAL_ISSUER string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
output SYNC_FEDERATED_CREDENTIAL_SUBJECT string = identity.outputs.principalId
output SYNC_FEDERATED_CREDENTIAL_AUDIENCE string = 'api://AzureADTokenExchange'
output APPLICATIONINSIGHTS_NAME string = appInsights.outputs.name
output WORKBOOK_ID string = monitoring.outputs.WORKBOOK_ID
