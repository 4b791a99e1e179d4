"""The function app: builds the FunctionApp and registers the blueprints of ``functions/``. Nothing else."""

import azure.functions as func

from functions.console import bp as console_bp
from functions.http_couplings import bp as couplings_bp
from functions.http_errors_jobs import bp as errors_jobs_bp
from functions.http_health import bp as health_bp
from functions.http_mapping_fields import bp as mapping_fields_bp
from functions.http_mappings import bp as mappings_bp
from functions.http_openapi import bp as openapi_bp
from functions.http_plans import bp as plans_bp
from functions.http_sync import bp as sync_bp
from functions.http_webhooks import bp as webhooks_bp
from functions.sb_worker import bp as worker_bp
from functions.timer_schedule import bp as timer_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (
    health_bp,
    mappings_bp,
    mapping_fields_bp,
    couplings_bp,
    sync_bp,
    errors_jobs_bp,
    webhooks_bp,
    openapi_bp,
    plans_bp,
    console_bp,
    worker_bp,
    timer_bp,
):
    app.register_functions(blueprint)
