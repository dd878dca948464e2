"""Registries: a name in a config or on the command line → the implementation, imported only when used."""

import sys

import pytest

from itool_core.registry import BENCHMARKS, ENGINES, LOADERS, LOSSES, Registry, UnknownName


def test_every_registered_target_imports_and_has_the_protocol():
    for name in LOSSES.names():
        loss = LOSSES.load(name)
        assert loss.name == name and callable(loss.trainer_class) and callable(loss.trl_config)
        assert LOSSES.meta(name, "default_beta") > 0 and isinstance(LOSSES.meta(name, "reference_free"), bool)
    for name in ENGINES.names():
        if name == "vllm" and "vllm" not in sys.modules:
            # the class imports; vllm itself only when an engine is built
            assert ENGINES.load(name).kind == "vllm"
            continue
        assert callable(ENGINES.load(name).build)
    for name in LOADERS.names():
        assert callable(LOADERS.load(name))
    for name in BENCHMARKS.names():
        b = BENCHMARKS.load(name)
        assert b.name == name and callable(b.load) and callable(b.answer) and callable(b.summarise)


def test_unknown_names_say_what_is_known_and_suggest():
    with pytest.raises(UnknownName, match=r"unknown engine 'vlm' \(did you mean 'vllm'\? known: hf, vllm"):
        ENGINES.entry("vlm")
    r = Registry("widget")
    r.register("a", "json:dumps")
    with pytest.raises(ValueError, match="registered twice"):
        r.register("a", "json:loads")
    with pytest.raises(ValueError, match="module:attribute"):
        r.register("b", "json.dumps")


def test_targets_are_imported_lazily():
    r = Registry("widget")
    r.register("fraction", "fractions:Fraction")
    sys.modules.pop("fractions", None)
    assert r.names() == ("fraction",) and "fractions" not in sys.modules
    assert r.load("fraction")(1, 2) == 0.5 and "fractions" in sys.modules


def test_a_new_loader_is_one_registration_line(tmp_path):
    """What a newcomer's loader gets from its one ``LOADERS.register`` line: ``load``, the run config's
    ``data_format`` and ``itool data import --format`` all accept it, with no other file touched."""
    from pathlib import Path

    from itool_core.cli import main
    from itool_core.config import RunConfig
    from itool_core.data.loaders import load

    fixture = str(Path(__file__).parent / "fixtures" / "toolace.json")
    LOADERS.register("my-format", "itool_core.data.toolace:load_toolace")  # stands in for a new module
    try:
        examples, _ = load("my-format", fixture)
        assert examples and examples == load("toolace", fixture)[0]
        assert RunConfig(data=fixture, data_format="my-format").loader() == "my-format"
        assert main(["data", "import", "--format", "my-format", fixture, "-o", str(tmp_path / "t.parquet")]) == 0
        assert load("examples", str(tmp_path / "t.parquet"))[0] == examples
    finally:
        LOADERS._entries.pop("my-format")
