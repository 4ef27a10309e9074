"""``streams init DIR``: a runnable workflow project of one's own, started from a built-in example.

The package with the workflow, its schemas, a topology naming the workflow by reference, Driver tests, a
pyproject.toml and a README; then ``pytest`` and ``streams dev`` in DIR run it. A DIR that is not empty is
refused (exit 2): nothing of the user's is ever overwritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streams.ops.scaffold import default_example, examples, scaffold


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names = list(examples())
    p = sub.add_parser("init", help="start a workflow project of your own from an example")
    p.add_argument("dir", metavar="DIR", help="a new or empty directory")
    p.add_argument("--example", choices=names, default=None,
                   help=f"which example to start from (default: {default_example()})")
    p.add_argument("--package", help="the project's Python package (default: DIR's name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = scaffold(Path(args.dir), args.example, args.package)
    print(f"streams: wrote {project.root} from the {project.example} example: package {project.package}, "
          f"workflow {', '.join(project.workflows)}")
    print(f"  cd {project.root} && pip install -e '.[test]' && pytest && streams dev")
    return 0
