"""CLI: ``python -m local.bc_sim --port 7081 [--no-auth] [--jwks-url URL] [--notify-delay S] [--demo N]``."""

from __future__ import annotations

from local.bc_sim.app import BC_AUDIENCE, STORE, bc_limits, create_app
from local.simcore import limits_from_args, run_app, sim_arg_parser, validator_from_args


def main(argv: list[str] | None = None) -> None:
    parser = sim_arg_parser("python -m local.bc_sim", default_port=7081, description="Business Central API simulator")
    parser.add_argument("--notify-delay", type=float, default=30.0, help="webhook coalescing window in seconds")
    parser.add_argument(
        "--webhook-time-scale", type=float, default=1.0, help="compresses the 36 h retry schedule"
    )
    parser.add_argument("--collection-threshold", type=int, default=1000, help="pending changes -> 'collection'")
    parser.add_argument("--max-running", type=int, default=5, help="requests per user processed at once")
    parser.add_argument("--subscription-lifetime", type=float, default=3 * 24 * 3600, help="seconds")
    parser.add_argument("--tenant", default=None, help="accepted tenant (default: the local tenant)")
    parser.add_argument("--any-tenant", action="store_true", help="accept any tenant in the URL")
    parser.add_argument("--demo", type=int, default=0, help="seed N customers, contacts and items in the first company")
    args = parser.parse_args(argv)
    kwargs = {}
    if args.tenant:
        kwargs["tenant"] = args.tenant
    if args.any_tenant:
        kwargs["tenant"] = None
    app = create_app(
        auth=validator_from_args(args, default_audience=BC_AUDIENCE),
        limits=limits_from_args(args, bc_limits()),
        max_running=args.max_running,
        notify_delay=args.notify_delay,
        webhook_time_scale=args.webhook_time_scale,
        collection_threshold=args.collection_threshold,
        subscription_lifetime_seconds=args.subscription_lifetime,
        **kwargs,
    )
    if args.demo:
        store = app[STORE]
        company = next(iter(store.companies))
        for entity in ("customers", "contacts", "items"):
            store.seed(company, entity, args.demo, "Demo", {})
    run_app(app, args.host, args.port)


if __name__ == "__main__":
    main()
