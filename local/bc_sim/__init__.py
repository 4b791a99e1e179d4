"""Local simulator of the Business Central API v2.0 (see docs/simulators.md)."""

from local.bc_sim.app import BC_AUDIENCE, bc_limits, create_app

__all__ = ["BC_AUDIENCE", "bc_limits", "create_app"]
