"""`python -m local.authority --port 7443`: run the local token authority over HTTPS."""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from local.authority.app import DEFAULT_IDENTITY_HEADER, FederatedCredential, create_app, local_federated_credential
from local.authority.server import server_ssl_context
from local.certs import ensure_local_certs
from shared.config import LOCAL_DIR, LOCAL_MANAGED_IDENTITY_CLIENT_ID, LOCAL_TENANT_ID


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.authority", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7443)
    parser.add_argument("--tenant", action="append", help=f"tenant id(s) served (default {LOCAL_TENANT_ID})")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds (expires_in)")
    parser.add_argument(
        "--identity-header",
        default=os.environ.get("IDENTITY_HEADER", DEFAULT_IDENTITY_HEADER),
        help="expected X-IDENTITY-HEADER of /msi/token (default: env IDENTITY_HEADER)",
    )
    parser.add_argument("--certs-dir", default=str(LOCAL_DIR))
    parser.add_argument(
        "--managed-identity",
        action="append",
        help=f"user-assigned identity client id(s) the MSI endpoint serves ({LOCAL_MANAGED_IDENTITY_CLIENT_ID})",
    )
    parser.add_argument(
        "--federated-credential",
        action="append",
        type=FederatedCredential.parse,
        help="app_id,subject[,issuer[,audience]] (default: local-sync-app trusts the local managed identity)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s authority %(levelname)s %(message)s")
    from pathlib import Path

    certs = ensure_local_certs(Path(args.certs_dir))
    app = create_app(
        tenant=args.tenant or LOCAL_TENANT_ID,
        token_lifetime=args.token_lifetime,
        certs=certs,
        identity_header=args.identity_header,
        managed_identities=args.managed_identity or [LOCAL_MANAGED_IDENTITY_CLIENT_ID],
        federated=args.federated_credential or [local_federated_credential((args.tenant or [LOCAL_TENANT_ID])[0])],
    )
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        ssl_context=server_ssl_context(certs),
        access_log=None,
        print=lambda _: logging.info("listening on https://%s:%d (CA %s)", args.host, args.port, certs.ca_pem),
    )


if __name__ == "__main__":
    main()
