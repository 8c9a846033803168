"""``plantwire console passwd USER [--role operator|read_only]``: print a user-table line with a scrypt
hash of a password read from the terminal (twice) or, with ``--stdin``, from standard input.

The line goes into the secret the console's ``users_credential`` / ``users_env`` names (for systemd:
``systemd-creds encrypt`` it, or a root-only file named by ``LoadCredential=``); the password itself is
never written anywhere.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys

from edge.console.auth import hash_password
from edge.console.settings import Role

__all__ = ["main"]

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_CHARS = 8


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="plantwire console passwd", description=__doc__.splitlines()[0])
    p.add_argument("user")
    p.add_argument("--role", type=Role, choices=list(Role), default=Role.READ_ONLY)
    p.add_argument("--stdin", action="store_true", help="read the password from standard input (one line)")
    args = p.parse_args(argv)
    if not _NAME.match(args.user):
        print("plantwire console passwd: user names are 1-64 of A-Z a-z 0-9 _ . @ -", file=sys.stderr)
        return 2
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("plantwire console passwd: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < MIN_PASSWORD_CHARS:
        print(f"plantwire console passwd: use at least {MIN_PASSWORD_CHARS} characters", file=sys.stderr)
        return 2
    print(f"{args.user} {args.role.value} {hash_password(password)}")
    return 0
