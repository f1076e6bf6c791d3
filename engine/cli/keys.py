"""`actstream keys`: a ZeroMQ CURVE key pair for the event socket."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.cli.common import fail


def default_keys_dir() -> Path:
    """~/.config/actstream/keys (under $XDG_CONFIG_HOME when it is set): outside any project."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "actstream" / "keys"


def git_work_tree(directory: Path) -> Path | None:
    """The git working tree `directory` would lie in (its nearest parent holding .git)."""
    for parent in [directory, *directory.parents]:
        if (parent / ".git").exists():
            return parent
    return None


def add_parser(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser(
        "keys",
        help="generate a ZeroMQ CURVE key pair",
        description="Write DIR/NAME.key (public: give it to the other side) and "
        "DIR/NAME.key_secret (keep it; mode 0600). The detector uses its NAME.key_secret with "
        "run --curve-secret-key; each subscriber uses its own with subscribe "
        "--curve-client-key plus the detector's NAME.key with --curve-server-key. A secret "
        "key is never written inside a git working tree unless --force is given.",
    )
    keys.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        help="where to write the key files (default ~/.config/actstream/keys)",
    )
    keys.add_argument("--name", default="actstream", help="file name stem (default actstream)")
    keys.add_argument(
        "--force",
        action="store_true",
        help="write the key pair even inside a git working tree",
    )
    keys.set_defaults(handler=keys_command)


def keys_command(args: argparse.Namespace) -> int:
    from engine.wire.security import KeyFileError, generate_keypair

    directory = Path(args.directory) if args.directory else default_keys_dir()
    tree = git_work_tree(directory.expanduser().resolve())
    if tree is not None and not args.force:
        return fail(
            f"{directory}: inside the git working tree {tree}, where a secret key is one commit "
            "away from being published; give a directory outside it (default "
            f"{default_keys_dir()}) or --force"
        )
    try:
        public, secret = generate_keypair(directory, args.name)
    except KeyFileError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{directory}: cannot write keys ({exc.strerror or exc})")
    print(f"{public}  (public key: give it to the other side)")
    print(f"{secret}  (key pair: keep it secret)")
    return 0
