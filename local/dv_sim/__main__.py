"""`python -m local.dv_sim --port 7082 [--no-auth] [--jwks-url URL]`: run the Dataverse simulator."""

from __future__ import annotations

from local.dv_sim.app import DV_AUDIENCE, create_app, dataverse_limits
from local.simcore import limits_from_args, run_app, sim_arg_parser, validator_from_args


def main(argv: list[str] | None = None) -> None:
    parser = sim_arg_parser("python -m local.dv_sim", default_port=7082, description=__doc__)
    parser.add_argument("--dop-hint", type=int, default=4, help="x-ms-dop-hint answered on every response")
    args = parser.parse_args(argv)
    auth = validator_from_args(args, default_audience=DV_AUDIENCE)
    app = create_app(auth=auth, limits=limits_from_args(args, dataverse_limits()), dop_hint=args.dop_hint)
    run_app(app, args.host, args.port)


if __name__ == "__main__":
    main()
