"""Config errors are found when the file is read, before any stage, each naming the file or the key."""

from __future__ import annotations

import pytest

from itool_core.config import ConfigError, load_config, profile, validate_paths


def _write(tmp_path, text: str, name: str = "exp.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "text",
    [
        "sft:\n  lora_r: 8\n   lora_alpha: 16\n",  # bad indentation
        "model: [unclosed\n",
        "sft: {lora_r: 8\n",
        "evaluation:\n  categories: [simple_python\n",
        "key: value\n\tbad: tab\n",
        "a: 'unterminated\n",
    ],
)
def test_yaml_syntax_errors_name_the_file_and_line(tmp_path, text):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"{p.name}: not valid YAML \(line \d+, column \d+\)"):
        load_config(p)


def test_unreadable_config_files_are_config_errors(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml: not UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfiterations: 2\n")
    assert load_config(bom).iterations == 2


@pytest.mark.parametrize(
    "cats, index, bad",
    [
        ("[simple_python, multiple, simple_pyton]", 2, "simple_pyton"),
        ("[Simple_Python]", 0, "Simple_Python"),
        ("[irrelevance, apibank_level3]", 1, "apibank_level3"),
        ("[simple_python, '']", 1, ""),
    ],
)
def test_unknown_evaluation_category_names_its_index(tmp_path, cats, index, bad):
    p = _write(tmp_path, f"evaluation:\n  categories: {cats}\n")
    want = rf"evaluation\.categories\[{index}\]: unknown category {bad!r} \(.*known: simple_python"
    with pytest.raises(ConfigError, match=want):
        load_config(p)


def test_known_categories_including_live_and_multi_turn_load(tmp_path):
    p = _write(tmp_path, "evaluation:\n  categories: [live_simple, multi_turn_base, apibank_level2]\n")
    assert load_config(p).evaluation.categories == ("live_simple", "multi_turn_base", "apibank_level2")


@pytest.mark.parametrize(
    "value",
    [
        "/no/such/model",
        "./models/none",
        "../none",
        "~/no-such-model-xyz",
        "model.safetensors",
        "weights.gguf",
        "runs/x/merged",
        "not-a-model",
    ],
)
def test_model_that_is_no_path_embedded_name_or_hub_id_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^model: "):
        load_config(_write(tmp_path, f"model: '{value}'\n"))


@pytest.mark.parametrize(
    "value", ["smollm2-135m-instruct", "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"]
)
def test_model_embedded_name_or_hub_id_is_accepted(tmp_path, value):
    assert load_config(_write(tmp_path, f"model: {value}\n")).model == value


def test_model_local_folder_accepted_file_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "f.bin").write_bytes(b"x")
    assert load_config(_write(tmp_path, f"model: {tmp_path / 'm'}\n")).model == str(tmp_path / "m")
    with pytest.raises(ConfigError, match="model: .* is a file"):
        load_config(_write(tmp_path, f"model: {tmp_path / 'f.bin'}\n"))


@pytest.mark.parametrize(
    "value", ["/no/such/train.parquet", "data/train.jsonl", "./train.json", "~/nope.json", "a/b/c", "mydata"]
)
def test_data_path_that_does_not_exist_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^data: "):
        load_config(_write(tmp_path, f"data: '{value}'\n"))


def test_data_default_file_and_hub_id_are_accepted_folder_refused(tmp_path):
    f = tmp_path / "train.parquet"
    f.write_bytes(b"PAR1")
    for value in ("default", str(f)):
        assert load_config(_write(tmp_path, f"data: {value}\n")).data == value
    cfg = load_config(_write(tmp_path, "data: Team-ACE/ToolACE\ndata_format: toolace\n"))
    assert (cfg.data, cfg.loader()) == ("Team-ACE/ToolACE", "toolace")
    # any source but the embedded set or our own Parquet table says its format: no guessing it is ToolACE
    with pytest.raises(ConfigError, match="set data_format to one of .*toolace"):
        load_config(_write(tmp_path, "data: Team-ACE/ToolACE\n"))
    with pytest.raises(ConfigError, match="data_format: unknown data format 'toolac' .*did you mean 'toolace'"):
        load_config(_write(tmp_path, "data: Team-ACE/ToolACE\ndata_format: toolac\n"))
    with pytest.raises(ConfigError, match="data: .* is a folder"):
        load_config(_write(tmp_path, f"data: {tmp_path}\n"))
    assert validate_paths(profile("quick")) == profile("quick")
    assert validate_paths(profile("paper")) == profile("paper")


@pytest.mark.parametrize(
    "text, get",
    [
        ("sft:\n  learning_rate: 1e-4\n", lambda c: c.sft.learning_rate),
        ("preference:\n  learning_rate: 5E-5\n", lambda c: c.preference.learning_rate),
        ("sft:\n  learning_rate: +2e-4\n", lambda c: c.sft.learning_rate),
        ("mcts:\n  c_puct: 1e0\n", lambda c: c.mcts.c_puct),
    ],
)
def test_exponent_without_a_dot_is_a_number(tmp_path, text, get):
    v = get(load_config(_write(tmp_path, text)))
    assert isinstance(v, float) and v == float(text.split(":")[-1])


@pytest.mark.parametrize(
    "text", ["sft:\n  learning_rate: fast\n", "sft:\n  learning_rate: '1e-4x'\n", "sft:\n  learning_rate: 1e\n"]
)
def test_non_numbers_are_still_refused(tmp_path, text):
    with pytest.raises(ConfigError, match="sft.learning_rate"):
        load_config(_write(tmp_path, text))


def test_itool_run_fails_on_a_bad_config_before_any_stage(tmp_path, capsys):
    from flows.cli import main  # the installed `itool` command

    p = _write(tmp_path, "evaluation:\n  categories: [simple_pyton]\n")
    assert main(["run", "--config", str(p), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "evaluation.categories[0]: unknown category 'simple_pyton'" in err and "simple_python" in err
    assert not (tmp_path / "run").exists()
