"""``streams init DIR``: a runnable workflow project of one's own, started from a built-in example.

The package with the workflow, its schemas, a topology naming the workflow by reference, Driver tests, a
pyproject.toml and a README; then ``pytest`` and ``streams dev`` in DIR run it. A DIR that is not empty is
refused (exit 2): nothing of the user's is ever overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import DEVELOP, app, examples
from streams.cli.options import choice, one_of
from streams.ops.scaffold import default_example, scaffold
from streams.ops.scaffold import examples as examples_


@app.command(rich_help_panel=DEVELOP, epilog=examples("streams init my-loans --example loan",
                                                      "cd my-loans && pip install -e '.[test]' && pytest"))
def init(
    dir: Annotated[str, typer.Argument(metavar="DIR", help="a new or empty directory")],
    example: Annotated[str | None, typer.Option(
        parser=choice(*examples_()), metavar=one_of(*examples_()),
        help=f"which example to start from (default: {default_example()})")] = None,
    package: Annotated[str | None, typer.Option(help="the project's Python package (default: DIR's name)")] = None,
) -> int:
    """Start a workflow project of your own from an example."""
    project = scaffold(Path(dir), example, package)
    print(f"streams: wrote {project.root} from the {project.example} example: package {project.package}, "
          f"workflow {', '.join(project.workflows)}")
    print(f"  cd {project.root} && pip install -e '.[test]' && pytest && streams dev")
    return 0
