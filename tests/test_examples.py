"""The built-in examples as package data, and a topology's ``schemas:`` key (no broker needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import streams
from streams.contracts import Catalogue
from streams.errors import TopologyError
from streams.processors.avro import default_schemas
from streams.topology import load, locate


@pytest.mark.parametrize("name", ["orders", "loan", "counter"])
def test_a_built_in_example_is_named_and_found_in_the_package(name: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # from anywhere, not only the checkout
    path = locate(name)
    assert path == Path(streams.__file__).parent / "examples" / name / "topology.yaml"
    assert load(name, {}).source == str(path)


def test_the_orders_example_names_its_contracts_beside_it() -> None:
    topo = load("orders", {})
    assert topo.schemas == default_schemas() == Path(topo.source).parent / "schemas"
    assert {p.options["schemas"] for p in topo.processors.values()} == {str(topo.schemas)}
    # the stored-state record is not among them: the engine derives it from the workflow's declared fields
    assert "orders-state" not in Catalogue.load(topo.schemas).topics


def test_a_file_of_the_same_name_wins_over_the_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "orders").write_text("name: mine\ntopics: {a: {}}\n"
                                     "processors: {p: {processor: counter, inputs: [a]}}\n")
    assert load("orders", {}).name == "mine"


def test_schemas_is_relative_to_the_topology_and_checked(tmp_path: Path) -> None:
    (tmp_path / "proj" / "contracts").mkdir(parents=True)
    body = "topics: {a: {}}\nprocessors: {p: {processor: counter, inputs: [a], options: {x: 1}}}\n"
    topo_file = tmp_path / "proj" / "t.yaml"
    topo_file.write_text(f"name: t\nschemas: contracts\n{body}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        topo = load(topo_file, {})
    finally:
        os.chdir(cwd)
    assert topo.schemas == tmp_path / "proj" / "contracts"
    assert dict(topo.processor("p").options) == {"x": 1, "schemas": str(tmp_path / "proj" / "contracts")}
    topo_file.write_text(f"name: t\nschemas: nope\n{body}")
    with pytest.raises(TopologyError, match=r"t\.yaml: schemas: .*/proj/nope is not a directory"):
        load(topo_file, {})
    topo_file.write_text(f"name: t\nschemas: [a]\n{body}")
    with pytest.raises(TopologyError, match=r"t\.yaml: 'schemas' must be a directory path, got \['a'\]"):
        load(topo_file, {})


def test_an_unknown_topology_name_says_what_the_built_ins_are(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TopologyError,
                       match=r"^cannot read topology ordrs: .*\(nor a built-in: orders, loan, counter\)$"):
        load("ordrs", {})


def test_a_project_catalogue_holds_the_engines_records_without_copies(tmp_path: Path) -> None:
    (tmp_path / "Ping.avsc").write_text('{"type": "record", "name": "Ping", "namespace": "p", "fields": '
                                        '[{"name": "envelope", "type": "streams.common.Envelope"}]}')
    cat = Catalogue.load(tmp_path)
    assert cat.messages == ("p.Ping",)  # the engine's records are parts, not the project's messages
    assert {"streams.common.Envelope", "streams.common.TimerFired", "streams.common.WorkflowState"} <= set(cat.names)
