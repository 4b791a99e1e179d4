// Key Vault: the BC/Dataverse app registration credential (a certificate) and the webhook secrets.
// The app reads them through Key Vault references resolved with its user-assigned identity.
@description('Vault name (3-24 characters).')
param name string

@description('Region of the vault.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('default, or recover: take back the soft-deleted vault of the same name (azd down leaves it; purge protection keeps it).')
@allowed([
  'default'
  'recover'
])
param createMode string = 'default'

// Public endpoint, Entra ID only: private networking is not offered by these templates (see main.bicep).
var publicNetworkAccess = 'Enabled'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: firewall default Allow goes with the public endpoint (no private endpoint here, see main.bicep); every call needs an Entra token and an RBAC role
  // checkov:skip=CKV_AZURE_189: no private endpoint in these templates (see main.bicep): Key Vault references resolve over the public endpoint with the managed identity
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    // azd down soft-deletes the vault and purge protection forbids purging it: the next azd up recovers it
    // (secrets and certificate included) instead of failing on the taken name.
    createMode: createMode
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
