// Service Bus: the work queue between HTTP/timer/webhook functions and the sync worker.
// Standard tier: duplicate detection needs Standard or Premium. Local (SAS) auth is disabled.
@description('Namespace name.')
param name string

@description('Region of the namespace.')
param location string

@description('Tags applied to the namespace.')
param tags object = {}

@description('Name of the work queue (SERVICEBUS_QUEUE).')
param queueName string = 'sync-work'

// Public endpoint, Entra ID only: private networking is not offered by these templates (see main.bicep).
var publicNetworkAccess = 'Enabled'

@description('Peek-lock duration; longer than one page of sync work, at most 5 minutes.')
param lockDuration string = 'PT5M'

@description('Deliveries before a message goes to the dead-letter queue (the outer retry of the service).')
param maxDeliveryCount int = 10

@description('Window in which a message with the same MessageId is dropped as a duplicate.')
param duplicateDetectionWindow string = 'PT10M'

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: publicNetworkAccess
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: queueName
  properties: {
    lockDuration: lockDuration
    maxDeliveryCount: maxDeliveryCount
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    requiresSession: false
    enablePartitioning: false
    enableBatchedOperations: true
  }
}

output name string = namespace.name
output id string = namespace.id
output queueId string = queue.id
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
