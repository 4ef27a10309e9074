"""``streams init``: a runnable project of one's own, copied from a built-in example.

An example is a directory of ``streams/examples`` holding a ``workflow.py`` and a ``topology.yaml`` (beside them
its ``schemas/``, a ``tests/`` directory of Driver tests, and any other modules such as services). The copy is
generic: Python modules go into the project's package, ``schemas/`` and ``tests/`` beside it, and every mention
of the example's package (``streams.examples.NAME``) and workflow alias becomes a reference into the new
package, so the project depends on nothing of the example but the engine. Nothing is imported from the example:
the engine names examples by string.
"""

from __future__ import annotations

import importlib.resources
import keyword
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ConfigError
from streams.topology import load
from streams.workflow.registry import ALIASES

EXAMPLES_PACKAGE = "streams.examples"
PREFERRED = ("loan", "orders")  # the default example: the first of these that is shipped
_SKIP = {"__pycache__", "evolution"}  # bytecode; candidate future schema versions are the example's history
_TEXT = {".py", ".yaml", ".yml", ".md", ".txt", ".avsc", ".json"}


@dataclass(frozen=True)
class Project:
    root: Path
    package: str
    example: str
    workflows: tuple[str, ...]  # the references the topology names, e.g. proj.workflow:order_saga
    processors: tuple[str, ...]  # the workflow processors' names, for ``streams signal --processor``


def examples() -> dict[str, Path]:
    """The shipped examples a project can start from: those with a workflow and a topology."""
    base = Path(str(importlib.resources.files(EXAMPLES_PACKAGE)))
    return {d.name: d for d in sorted(base.iterdir())
            if (d / "workflow.py").is_file() and (d / "topology.yaml").is_file()}


def default_example() -> str:
    found = examples()
    for name in PREFERRED:
        if name in found:
            return name
    return next(iter(found))


def package_name(root: Path, given: str | None = None) -> str:
    """The project's import name: ``--package``, else the directory's name made an identifier."""
    name = given if given is not None else re.sub(r"\W+", "_", root.resolve().name).strip("_").lower()
    what = "--package" if given is not None else f"the directory name {root.name!r}"
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"{what} is no Python package name; give one with --package NAME")
    if name == "streams" or name in sys.stdlib_module_names:
        raise ConfigError(f"{what} would shadow the module {name!r}; give another with --package NAME")
    return name


def scaffold(root: Path, example: str | None = None, package: str | None = None) -> Project:
    """Write the project; refuses a directory that exists and is not empty (nothing is overwritten)."""
    found = examples()
    example = example or default_example()
    if example not in found:
        raise ConfigError(f"no example {example!r} (have: {', '.join(found)})")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root} exists and is not empty; choose a new directory")
    pkg = package_name(root, package)
    source = found[example]
    rewrite = _rewriter(f"{EXAMPLES_PACKAGE}.{example}", pkg)
    root.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_dir() or _SKIP.intersection(rel.parts) or path.suffix == ".pyc":
            continue
        beside = rel.parts[0] in ("schemas", "tests") or rel == Path("topology.yaml")  # the rest: the package
        dest = root / rel if beside else root / pkg / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in _TEXT:
            dest.write_text(rewrite(path.read_text()))
        else:
            shutil.copyfile(path, dest)
    topology = root / "topology.yaml"
    topology.write_text(_name_topology(_resolve_aliases(topology.read_text(), rewrite), pkg))
    topo = load(topology)
    flows = [p for p in topo.processors.values() if "workflow" in p.options]
    refs = tuple(str(p.options["workflow"]) for p in flows)
    if not (root / "tests").is_dir():
        _write(root / "tests" / "test_workflow.py", _fallback_tests())
    project = Project(root, pkg, example, refs, tuple(p.name for p in flows))
    _write(root / "pyproject.toml", _pyproject(pkg))
    _write(root / "README.md", _readme(project, topo.name))
    _write(root / ".gitignore", ".streams/\n__pycache__/\n*.egg-info/\n")
    return project


def _rewriter(old: str, new: str) -> Callable[[str], str]:
    pattern = re.compile(rf"\b{re.escape(old)}\b")
    return lambda text: pattern.sub(new, text)


def _resolve_aliases(text: str, rewrite: Callable[[str], str]) -> str:
    """``workflow: orders`` (a built-in alias) becomes the reference into the project's own package."""

    def sub(m: re.Match[str]) -> str:
        value = m.group(2).strip("\"'")
        ref = rewrite(ALIASES[value]) if value in ALIASES else value
        return f'{m.group(1)}"{ref}"{m.group(3)}'

    return re.sub(r"^([ \t]*workflow:[ \t]*)(\"[^\"]*\"|'[^']*'|[^\s#]+)(.*)$", sub, text, flags=re.MULTILINE)


def _name_topology(text: str, pkg: str) -> str:
    """The topology (and so its consumer groups and changelogs) named after the project, not the example; a
    leading ``${VAR:-}`` namespace stays."""
    return re.sub(r"^name:[ \t]*((?:\$\{[^}]*\})*)[^\s#]*", lambda m: f"name: {m.group(1)}{pkg.replace('_', '-')}",
                  text, count=1, flags=re.MULTILINE)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _pyproject(pkg: str) -> str:
    return f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{pkg.replace('_', '-')}"
version = "0.1.0"
description = "A streams workflow project"
requires-python = ">=3.11"
dependencies = ["streams"]

[project.optional-dependencies]
test = ["pytest>=8"]

[tool.setuptools]
packages = ["{pkg}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""


def _fallback_tests() -> str:
    """For an example that ships no tests: each workflow of the topology builds with the topology's parameters,
    reads the topic the topology feeds it, and runs in the Driver (read from the topology at test time, so the tests
    follow edits to it). A start, to grow into tests of the workflow's paths."""
    return '''"""The project's workflows as the topology runs them, through the in-memory Driver (``pytest``)."""

from pathlib import Path
from typing import Any

import pytest

from streams import Driver
from streams.topology import ProcessorSpec, load
from streams.workflow import create

TOPOLOGY = load(Path(__file__).resolve().parents[1] / "topology.yaml")
FLOWS = [p for p in TOPOLOGY.processors.values() if "workflow" in p.options]


def build(proc: ProcessorSpec) -> Any:
    return create(str(proc.options["workflow"]), proc.options.get("params"))


@pytest.mark.parametrize("proc", FLOWS, ids=lambda p: p.name)
def test_the_workflow_builds_with_the_topology_parameters_and_reads_its_input(proc: ProcessorSpec) -> None:
    assert build(proc).summary()["input_topic"] == proc.inputs[0]


@pytest.mark.parametrize("proc", FLOWS, ids=lambda p: p.name)
def test_an_event_the_workflow_does_not_know_starts_no_entity(proc: ProcessorSpec) -> None:
    driver = Driver(build(proc))
    driver.send("NoSuchEvent", "k1")
    assert driver.state("k1") is None
'''


def _readme(project: Project, name: str) -> str:
    pkg = project.package
    refs = "\n".join(f"- `{r}`" for r in project.workflows)
    return f"""# {pkg}

A streams workflow project, started from the `{project.example}` example
(`streams init --example {project.example}`).

## What is here

| path | what |
| --- | --- |
| `{pkg}/workflow.py` | the workflow: states, events, commands, timers (a `WorkflowBuilder` factory) |
| `schemas/` | the Avro contracts; `schemas/subjects.yaml` says which records travel on which topic |
| `topology.yaml` | topics and processors (`{name}`); the workflow is named by reference |
| `tests/test_workflow.py` | tests through the in-memory `streams.Driver`: no broker needed |
| `pyproject.toml` | so `pip install -e .` makes `{pkg}` importable wherever the workers run |

The workflow, by reference (what `topology.yaml` names):

{refs}

## Run it

```sh
pip install -e '.[test]'
pytest                                  # the Driver tests
streams workflow validate {project.workflows[0] if project.workflows else f"{pkg}.workflow:FACTORY"}
streams workflow diagram {project.workflows[0] if project.workflows else f"{pkg}.workflow:FACTORY"}
streams dev                             # broker, registry, topics, schemas and every worker of topology.yaml
```

`streams dev` prints the Kafka bootstrap address, the registry URL and each worker's URL, then the
workers' logs (prefixed by processor) and a summary of entities per state. In another terminal, run the
`export` line it printed, then:

```sh
streams signal KEY EVENT --data '{{...}}'   # any input event of the workflow, checked against its schema
streams status KEY --url WORKER_URL         # the entity's state, data, timers and history
```

Ctrl-C stops everything. Without `KAFKA_BOOTSTRAP_SERVERS`, `streams dev` starts an embedded broker that keeps
nothing after it stops; set it to run on your Kafka.
"""
