"""The function app: builds the FunctionApp and registers the blueprints of ``functions/``. Nothing else."""

import azure.functions as func

from functions.http_health import bp as health_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health_bp)
