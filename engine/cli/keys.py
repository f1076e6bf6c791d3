"""`actstream keys`: a ZeroMQ CURVE key pair for the event socket."""

from __future__ import annotations

import argparse

from engine.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser(
        "keys",
        help="generate a ZeroMQ CURVE key pair",
        description="Write DIR/NAME.key (public: give it to the other side) and "
        "DIR/NAME.key_secret (keep it; mode 0600). The detector uses its NAME.key_secret with "
        "run --curve-secret-key; each subscriber uses its own with subscribe "
        "--curve-client-key plus the detector's NAME.key with --curve-server-key.",
    )
    keys.add_argument("directory", metavar="DIR", help="where to write the key files")
    keys.add_argument("--name", default="actstream", help="file name stem (default actstream)")
    keys.set_defaults(handler=keys_command)


def keys_command(args: argparse.Namespace) -> int:
    from engine.wire.security import KeyFileError, generate_keypair

    try:
        public, secret = generate_keypair(args.directory, args.name)
    except KeyFileError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{args.directory}: cannot write keys ({exc.strerror or exc})")
    print(f"{public}  (public key: give it to the other side)")
    print(f"{secret}  (key pair: keep it secret)")
    return 0
