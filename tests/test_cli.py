"""The `streams` command as a whole, discovered from the app itself: every command and sub-command has help and
refuses a bad flag in one line; the README's command table and the app name the same commands; --version and
shell completion work through the real entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.core import TyperGroup

from streams.cli import command, main, parse
from streams.config import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]


def _walk() -> list[tuple[str, ...]]:
    """Every command path of the app, groups and leaves, e.g. ("topics",), ("topics", "create")."""
    out: list[tuple[str, ...]] = []

    def visit(cmd: object, path: tuple[str, ...]) -> None:
        if path:
            out.append(path)
        if isinstance(cmd, TyperGroup):
            for name, sub in cmd.commands.items():
                visit(sub, (*path, name))

    visit(command(), ())
    return out


PATHS = _walk()


def test_the_app_has_every_command_it_had_under_argparse() -> None:
    top = {p[0] for p in PATHS}
    assert top == {"worker", "service", "dev", "demo", "broker", "kafka", "registry", "dashboard", "topics",
                   "schemas", "dlq", "replay", "state", "status", "signal", "lag", "doctor", "acls", "init",
                   "workflow", "bench", "chaos"}
    groups = {p for p in PATHS if len(p) == 2}
    assert {("topics", "create"), ("topics", "list"), ("topics", "describe"), ("kafka", "start"), ("kafka", "stop"),
            ("kafka", "status"), ("schemas", "register"), ("schemas", "check"), ("schemas", "list"),
            ("schemas", "show"), ("dlq", "list"), ("dlq", "show"), ("dlq", "replay"), ("state", "rebuild"),
            ("workflow", "list"), ("workflow", "diagram"), ("workflow", "validate")} == groups


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_help_exits_0_and_names_the_command(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the usage line is not wrapped
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Usage: streams {' '.join(path)} " in out, out
    assert "Examples:" in out and f"$ streams {path[0]}" in out, out  # an example or two per command


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_an_unknown_flag_is_one_line_and_exit_2(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--no-such-flag"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("streams: error: No such option: --no-such-flag"), lines
    assert f"see `streams {' '.join(path)} --help`" in lines[0]
    assert "Traceback" not in captured.err and "╭" not in captured.err and captured.out == ""


@pytest.mark.parametrize(("argv", "words"), [
    (["worker"], "Missing option '--topology'"),
    (["status"], "Missing argument 'key'"),
    (["topics", "nope"], "No such command 'nope'"),
    (["lag", "--interval", "0"], "argument --interval: must be > 0.0, got '0'"),
    (["worker", "--topology", "x", "--processing-guarantee", "twice"], "argument --processing-guarantee: invalid "
     "choice: 'twice' (choose from at_least_once, exactly_once)"),
    (["schemas", "register", "--dir", "a", "--topology", "b"], "argument --dir: not allowed with argument --topology"),
    (["replay", "--topology", "counter"], "argument --from-offset/--from-timestamp/--from-beginning: give exactly one"),
    (["kafka", "start", "--nodes", "2"], "argument --nodes: invalid choice: '2' (choose from 1, 3)"),
    (["bench", "--orders", "many"], "argument --orders:"),
])
def test_usage_errors_are_one_line_naming_the_flag(argv: list[str], words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err
    assert err.startswith("streams: error: ")


def test_a_bad_flag_through_the_real_entry_point_has_no_traceback_and_no_box() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FORCE_COLOR": "1"}
    res = subprocess.run([sys.executable, "-m", "streams", "dlq", "list", "--topic", "t", "--limit", "0"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 2
    assert res.stderr == "streams: error: argument --limit: must be >= 1, got '0' (see `streams dlq list --help`)\n"


def test_debug_shows_the_traceback_that_is_otherwise_one_line(capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["status", "abc", "--url", "notaurl"]
    assert main(argv) == 2
    assert capsys.readouterr().err == ("streams: ConfigError: a worker URL must be http(s)://host[:port], got "
                                       "'notaurl'\n")
    for debug, env in ((["--debug"], None), ([], "1")):
        if env:
            monkeypatch.setenv("STREAMS_DEBUG", env)
        assert main([*debug, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and "raise ConfigError" in err, err
        assert err.endswith("streams: ConfigError: a worker URL must be http(s)://host[:port], got 'notaurl'\n")


def test_no_command_shows_the_commands_and_exits_2(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "Usage: streams [OPTIONS] COMMAND" in out and "worker" in out and "Operate" in out
    assert main(["dlq"]) == 2
    assert "Usage: streams dlq [OPTIONS] COMMAND" in capsys.readouterr().out


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    res = subprocess.run([sys.executable, "-m", "streams", "--version"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    assert (res.returncode, res.stdout) == (0, f"streams {version('streams')}\n"), res.stderr


def _complete(words: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_STREAMS_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}
    res = subprocess.run([sys.executable, "-m", "streams"], capture_output=True, text=True, env=env, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_shell_completion_offers_the_real_commands_sub_commands_and_flags() -> None:
    assert set(_complete("streams ")) >= {"worker", "topics", "replay", "state", "demo", "chaos"}
    assert _complete("streams re") == ["registry", "replay"]
    assert _complete("streams topics ") == ["create", "list", "describe"]
    assert set(_complete("streams replay --from")) == {"--from-offset", "--from-timestamp", "--from-beginning"}


def test_the_completion_script_is_offered_for_bash() -> None:
    res = subprocess.run([sys.executable, "-m", "streams", "--show-completion", "bash"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    assert res.returncode == 0 and "_STREAMS_COMPLETE=complete_bash" in res.stdout, res.stderr


# -- the README's command table ------------------------------------------------------------------------------


def _readme_rows() -> dict[str, str]:
    """command cell -> what-it-does cell, for every row of the table under '## Commands'."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `(streams [^`]+)` \| (.+) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _named(cell: str) -> set[tuple[str, ...]]:
    """The command paths a table cell names: `streams topics create\\|list --topology F` names three."""
    words = cell.replace("\\|", "|").split()
    top = words[1]
    if len(words) > 2 and not words[2].startswith(("-", "[", "(")) and words[2].islower() and \
            any(len(p) == 2 and p[0] == top for p in PATHS):
        return {(top, sub) for sub in words[2].split("|")}
    return {(top,)}


def test_the_readme_command_table_and_the_app_name_the_same_commands() -> None:
    rows = _readme_rows()
    assert len(rows) >= 20
    in_readme = set().union(*(_named(cell) for cell in rows))
    leaves = {p for p in PATHS if not any(len(q) > len(p) and q[:len(p)] == p for q in PATHS)}
    assert leaves - in_readme == set(), "commands missing from the README's table"
    assert in_readme - leaves == set(), "the README's table names commands the CLI does not have"


def test_every_flag_in_the_readme_table_is_a_flag_of_its_command() -> None:
    for cell in _readme_rows():
        paths = _named(cell)
        for flag in set(re.findall(r"(--[a-z0-9-]+)", cell)):
            known = {o for p in paths for o in _options(p)}
            assert flag in known, f"README: `{cell}` names {flag}, which {sorted(paths)} do not take"


def _options(path: tuple[str, ...]) -> set[str]:
    cmd = command()
    for name in path:
        assert isinstance(cmd, TyperGroup)
        cmd = cmd.commands[name]
    return {o for p in cmd.params for o in p.opts if o.startswith("--")}


def test_parse_gives_the_command_path_and_its_options_for_compose_files() -> None:
    path, params = parse(["replay", "--topology", "orders", "--from-beginning", "--partitions", "0", "1", "--yes"])
    assert path == ["replay"] and params["partitions"] == [0, 1] and params["yes"] is True


# -- --json where a command prints data ----------------------------------------------------------------------


def _json(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 0) -> Any:
    assert main(argv) == code, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one JSON document, one line
    return json.loads(out)


@pytest.mark.kafka
def test_topics_and_doctor_print_json(kafka: KafkaSettings, tmp_path: Path, unique: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from support import counter_topology

    bootstrap = ["--bootstrap", kafka.bootstrap_servers]
    topo = str(counter_topology(tmp_path, f"clijson{unique}", partitions=3))
    names = {f"clijson{unique}.in", f"clijson{unique}.out", f"clijson{unique}-counter-changelog"}
    described = _json(["topics", "describe", "--topology", topo, "--json", *bootstrap], capsys)
    assert {r["topic"] for r in described} >= names and not any(r["exists"] for r in described)
    created = _json(["topics", "create", "--topology", topo, "--json", *bootstrap], capsys)
    assert set(created["created"]) >= names and created["existing"] == []
    again = _json(["topics", "create", "--topology", topo, "--json", *bootstrap], capsys)
    assert again["created"] == [] and set(again["existing"]) == set(created["created"])
    listed = _json(["topics", "list", "--json", *bootstrap], capsys)
    assert {t: listed[t] for t in names} == {t: 3 for t in names}
    rows = {r["topic"]: r for r in _json(["topics", "describe", "--topology", topo, "--json", *bootstrap], capsys)}
    assert rows[f"clijson{unique}-counter-changelog"]["cleanup"] == "compact"
    assert all(rows[t]["exists"] and rows[t]["partitions"] == 3 for t in names)
    report = _json(["doctor", "--topology", topo, "--json", *bootstrap], capsys)
    assert report["problems"] == 0 and sorted((p["topic"], p["partition"]) for p in report["partitions"]) == \
        [(f"clijson{unique}.in", p) for p in range(3)]


@pytest.mark.kafka
def test_schemas_list_and_show_print_json(kafka: KafkaSettings, unique: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from streams.registry import RegistryServer

    with RegistryServer(kafka, topic=f"_schemas-{unique}") as server:
        url = ["--registry", server.url]
        assert main(["schemas", "register", *url]) == 0
        capsys.readouterr()
        listed = _json(["schemas", "list", "--json", *url], capsys)
        assert listed and all(r["version"] == 1 and isinstance(r["id"], int) for r in listed)
        first = listed[0]["subject"]
        shown = _json(["schemas", "show", first, "--json", *url], capsys)
        assert (shown["subject"], shown["version"], shown["id"]) == (first, 1, listed[0]["id"])
        assert isinstance(shown["schema"], (dict, list))  # the schema itself, parsed, not its text


def test_workflow_list_and_kafka_status_print_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = _json(["workflow", "list", "--json"], capsys)
    assert "orders" in {f["ref"] for f in flows} and all("states" in f and "input_topic" in f for f in flows)
    status = _json(["kafka", "status", "--dir", str(tmp_path / "none"), "--json"], capsys, code=1)
    assert status == {"dir": str(tmp_path / "none"), "exists": False, "running": False, "nodes": []}
