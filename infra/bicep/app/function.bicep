// The function app on Flex Consumption (FC1, Python 3.11), running as the user-assigned identity.
// Every connection is identity-based: no connection string, account key or SAS anywhere in its settings.
@description('Function app name.')
param name string

@description('Region of the app.')
param location string

@description('Tags applied to the app (the azd-service-name tag is added here).')
param tags object = {}

@description('azd service name in azure.yaml that deploys to this app.')
param serviceName string = 'api'

@description('Resource id of the Flex Consumption (FC1) plan.')
param planId string

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Storage account for AzureWebJobsStorage, the deployment package and the service tables.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Service Bus namespace name (without .servicebus.windows.net).')
param serviceBusNamespaceName string

@description('Work queue name (SERVICEBUS_QUEUE).')
param queueName string

@description('Key Vault holding the app credential and webhook secrets.')
param keyVaultName string

@description('Application Insights component name.')
param appInsightsName string

@description('Flex Consumption instance memory in MB.')
param instanceMemoryMB int = 2048

@description('Flex Consumption maximum instance count.')
param maximumInstanceCount int = 40

@description('Client id of the Entra ID app registration trusted by BC and Dataverse (SYNC_CLIENT_ID).')
param syncClientId string

@description('SYNC_AUTH_MODE: federated (the managed identity signs in as the app registration) or certificate.')
@allowed([
  'federated'
  'certificate'
])
param syncAuthMode string

@description('Key Vault certificate name of the app credential.')
param syncCertificateName string

@description('SYNC_AUTHORITY_HOST, without a trailing slash.')
param authorityHost string

@description('BC_BASE_URL.')
param bcBaseUrl string

@description('BC_ENVIRONMENT.')
param bcEnvironment string

@description('BC_COMPANY_ID (may be empty).')
param bcCompanyId string = ''

@description('DATAVERSE_URL.')
param dataverseUrl string

@description('SYNC_SCHEDULED_SYNC.')
param scheduledSync bool = true

@description('SYNC_TIMER_SCHEDULE (NCRONTAB).')
param timerSchedule string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

var kvRef = '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName='

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: client certificates cannot be presented by BC or Dataverse webhooks
  // checkov:skip=CKV_AZURE_222: public access is required: BC and Dataverse call the webhooks over the internet
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales out on demand; there is no fixed instance count to fail over between
  // checkov:skip=CKV_AZURE_213: App Service health check is not supported on Flex Consumption; GET /api/health is probed by availability tests instead
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: planId
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    // Key Vault references resolve with the user-assigned identity (it has Key Vault Secrets User).
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Basic (publishing) credentials off: deployments go through Entra ID only.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads this child as a whole web app; the site-level settings are on `site` above (same reasons):
  // checkov:skip=CKV_AZURE_13: App Service Authentication would break the contract (webhook secrets and function keys authenticate)
  // checkov:skip=CKV_AZURE_222: public access is required: BC and Dataverse call the webhooks over the internet
  // checkov:skip=CKV_AZURE_88: Azure Files mounts are not used (Flex Consumption deploys from a blob container)
  // checkov:skip=CKV_AZURE_63: HTTP logs are an App Service feature; telemetry goes to Application Insights
  // checkov:skip=CKV_AZURE_65: detailed error pages are not available on Flex Consumption
  // checkov:skip=CKV_AZURE_66: failed request tracing is not available on Flex Consumption
  // checkov:skip=CKV_AZURE_80: a Python 3.11 app; no .NET Framework version applies
  parent: site
  name: 'appsettings'
  properties: {
    // Functions host storage: identity-based.
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    // Service Bus trigger binding (connection="ServiceBusConnection") and the service's own sender.
    ServiceBusConnection__fullyQualifiedNamespace: '${serviceBusNamespaceName}.servicebus.windows.net'
    ServiceBusConnection__credential: 'managedidentity'
    ServiceBusConnection__clientId: identityClientId
    SERVICEBUS_QUEUE: queueName
    // Telemetry: the connection string only names the ingestion endpoint; local auth is off, so ingestion
    // needs an Entra token of the managed identity (AUTHENTICATION_STRING, for the host and the worker).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // The Python worker exports the app's logs and spans itself, inside the host's request context (worker
    // logs correlate with requests); shared/telemetry.py then does not configure a second exporter.
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    // Two identities: Azure resources as the managed identity (SYNC_MANAGED_IDENTITY_CLIENT_ID, also the
    // subject of the federated credential); BC and Dataverse as the app registration (SYNC_CLIENT_ID).
    SYNC_AUTH_MODE: syncAuthMode
    SYNC_TENANT_ID: tenant().tenantId
    SYNC_CLIENT_ID: syncClientId
    SYNC_MANAGED_IDENTITY_CLIENT_ID: identityClientId
    SYNC_AUTHORITY_HOST: authorityHost
    // Certificate mode only: the PEM (key + certificate) from Key Vault; federated mode stores nothing.
    SYNC_CLIENT_CERTIFICATE: (syncAuthMode == 'certificate') ? '${kvRef}${syncCertificateName})' : ''
    SYNC_PUBLIC_BASE_URL: 'https://${site.properties.defaultHostName}'
    // Services.
    BC_BASE_URL: bcBaseUrl
    BC_ENVIRONMENT: bcEnvironment
    BC_COMPANY_ID: bcCompanyId
    DATAVERSE_URL: dataverseUrl
    TABLES_ENDPOINT: storage.properties.primaryEndpoints.table
    // Scheduling and webhooks (secrets as Key Vault references, never plain values).
    SYNC_SCHEDULED_SYNC: scheduledSync ? 'true' : 'false'
    SYNC_TIMER_SCHEDULE: timerSchedule
    BC_WEBHOOK_CLIENT_STATE: '${kvRef}bc-webhook-client-state)'
    DATAVERSE_WEBHOOK_KEY: '${kvRef}dataverse-webhook-key)'
  }
}

output SERVICE_API_NAME string = site.name
output SERVICE_API_URI string = 'https://${site.properties.defaultHostName}'
