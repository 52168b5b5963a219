"""The command line the space-file scripts share with tune-run: a space file, --smoke-test and --set."""
from __future__ import annotations

import argparse


def space_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the space file, --smoke-test and --set; `doc`'s first line describes the script."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("space", help="a space file, as tune-run takes it")
    parser.add_argument("--smoke-test", action="store_true", help="apply the space file's SMOKE overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix a config key")
    return parser


def pinned(space, args: argparse.Namespace) -> dict:
    """The keys the command line fixes: the space's SMOKE values under --smoke-test, then the --set ones."""
    from search.overrides import parse_sets

    return {**(space.smoke if args.smoke_test else {}), **parse_sets(args.set, space.defaults)}
