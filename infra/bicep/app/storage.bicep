// Storage account: the Functions host's AzureWebJobsStorage, the Flex Consumption deployment container and the
// service's tables (couplings, jobs, errors, watermarks, mapping settings). Identity-only: no shared keys.
@description('Storage account name (3-24 lower-case letters and digits).')
param name string

@description('Region of the account.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Blob container that Flex Consumption deploys the app package from.')
param deploymentContainerName string

// Public endpoint, Entra ID only: private networking is not offered by these templates (see main.bicep).
var publicNetworkAccess = 'Enabled'

@description('Replication SKU.')
param skuName string = 'Standard_LRS'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: LRS is the cost-conscious default (the sync state is re-creatable from BC and Dataverse by match-coupling); pass skuName Standard_ZRS/GRS in production
  // checkov:skip=CKV_AZURE_59: no private endpoints in these templates (see main.bicep): the public endpoint stays, shared keys are off and every call needs an Entra token with a data role
  // checkov:skip=CKV_AZURE_35: default action Allow goes with the public endpoint (Flex Consumption egress IPs are not fixed); every request needs an Entra token
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The service creates its tables at start-up (create-if-not-exists) with Storage Table Data Contributor.
resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {}
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output tableEndpoint string = account.properties.primaryEndpoints.table
