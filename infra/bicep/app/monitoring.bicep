// Monitoring: the sync-health workbook and the alert rules (failed jobs, dead-letter depth, error rate,
// stale mapping). Queries read the metrics and log dimensions written by shared/telemetry.py.
@description('Region for the workbook and log alert rules.')
param location string

@description('Tags applied to monitoring resources.')
param tags object = {}

@description('Unique token used in resource names.')
param resourceToken string

@description('Application Insights component the queries run against.')
param appInsightsName string

@description('Service Bus namespace whose dead-letter count is watched.')
param serviceBusNamespaceName string

@description('Work queue whose dead-letter count is watched.')
param queueName string

@description('Optional action group resource id notified by every alert; empty = no notifications.')
param actionGroupId string = ''

@description('Hours without a successful sync job of a mapping before the stale-mapping alert fires (1-24).')
@minValue(1)
@maxValue(24)
param staleMappingHours int = 6

@description('Failed share of records (percent, per mapping, over 15 minutes) that triggers the error-rate alert.')
param errorRatePercent int = 10

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

var logAlertActions = {
  actionGroups: empty(actionGroupId) ? [] : [
    actionGroupId
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'sync-health-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'BC-Dataverse sync health (${resourceToken})'
    category: 'workbook'
    sourceId: appInsights.id
    version: 'Notebook/1.0'
    serializedData: replace(loadTextContent('sync-health.workbook.json'), '__APP_INSIGHTS_ID__', appInsights.id)
  }
}

var failedJobsQuery = '''
customMetrics
| where name == "sync.jobs" and tostring(customDimensions.outcome) == "failed"
| extend mapping = tostring(customDimensions.mapping)
| summarize failedJobs = sum(valueSum) by mapping
'''

resource failedJobsAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'sqr-sync-failed-jobs-${resourceToken}'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync: failed jobs'
    description: 'A sync job of a mapping finished with status failed (GET /api/jobs?mapping=M for details).'
    severity: 2
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    scopes: [
      appInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: failedJobsQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'failedJobs'
          dimensions: [
            {
              name: 'mapping'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

var errorRateQuery = '''
customMetrics
| where name == "sync.records"
| extend mapping = tostring(customDimensions.mapping), outcome = tostring(customDimensions.outcome)
| summarize total = sum(valueSum), failed = sumif(valueSum, outcome in ("failed", "conflict", "not_found")) by mapping
| where total > 0
| extend failedPercent = 100.0 * failed / total
'''

resource errorRateAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'sqr-sync-error-rate-${resourceToken}'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync: record error rate'
    description: 'More than the configured percentage of a mapping\'s records failed to sync in 15 minutes (GET /api/errors?mapping=M).'
    severity: 2
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    scopes: [
      appInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: errorRateQuery
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failedPercent'
          dimensions: [
            {
              name: 'mapping'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: errorRatePercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

// Looks back two days (the longest log alert window): a mapping seen in that window whose last
// succeeded job is older than staleMappingHours, or that had no succeeded job at all, fires.
var staleMappingQuery = replace('''
customMetrics
| where name == "sync.jobs"
| extend mapping = tostring(customDimensions.mapping), outcome = tostring(customDimensions.outcome)
| summarize lastSuccess = maxif(timestamp, outcome == "succeeded") by mapping
| where isnull(lastSuccess) or lastSuccess < ago(__STALE_HOURS__h)
''', '__STALE_HOURS__', string(staleMappingHours))

resource staleMappingAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'sqr-sync-stale-mapping-${resourceToken}'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync: mapping without a successful sync'
    description: 'A mapping has had no successful sync job for the configured number of hours (paused mappings included; see docs/operations.md).'
    severity: 3
    enabled: true
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    scopes: [
      appInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: staleMappingQuery
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'mapping'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'ma-sync-dead-letters-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages are in the dead-letter queue of ${queueName} (work that failed maxDeliveryCount times); see docs/operations.md to replay.'
    severity: 2
    enabled: true
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadLetteredMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                queueName
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Average'
        }
      ]
    }
    autoMitigate: true
    actions: empty(actionGroupId) ? [] : [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
}

output WORKBOOK_ID string = workbook.id
