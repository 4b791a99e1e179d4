"""Use cases (application services): plain functions/classes over the ports of `shared.ports`."""
