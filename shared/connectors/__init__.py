"""HTTP clients of Business Central and Dataverse (both implement ``shared.ports.RecordService``)."""

from shared.connectors.business_central import BusinessCentralClient
from shared.connectors.dataverse import DataverseClient, EntityInfo
from shared.connectors.http import AdaptiveLimiter, CallCounter, SyncRetryPolicy

__all__ = [
    "AdaptiveLimiter",
    "BusinessCentralClient",
    "CallCounter",
    "DataverseClient",
    "EntityInfo",
    "SyncRetryPolicy",
]
