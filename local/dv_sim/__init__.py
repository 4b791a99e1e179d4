"""Local simulator of the Dataverse Web API v9.2 (`python -m local.dv_sim --port 7082 [--no-auth]`)."""

from local.dv_sim.app import DV_AUDIENCE, create_app, dataverse_limits

__all__ = ["DV_AUDIENCE", "create_app", "dataverse_limits"]
