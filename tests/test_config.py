import pytest

from tuneline.config import ConfigError, TunelineConfig, apply_overrides, as_params, load_run_config

ROOT_CONFIGS = __import__("pathlib").Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["finetune.yaml", "smoke.yaml"])
def test_shipped_configs_validate(name):
    config, rest = load_run_config(ROOT_CONFIGS / name)
    assert isinstance(config, TunelineConfig)
    assert "parameters" not in rest and rest["model"]["name"]


def test_unknown_key_is_named_with_file(tmp_path):
    p = write(tmp_path, "parameters:\n  training:\n    learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(p)
    assert str(p) in str(err.value) and "parameters.training.learning_rat: unknown key" in str(err.value)


def test_wrong_type_is_named(tmp_path):
    p = write(tmp_path, "parameters:\n  training:\n    batch_size: many\n")
    with pytest.raises(ConfigError, match=r"parameters\.training\.batch_size: .*integer.*'many'"):
        load_run_config(p)


def test_unknown_section_is_named(tmp_path):
    p = write(tmp_path, "parameters:\n  trainer: {}\n")
    with pytest.raises(ConfigError, match=r"parameters\.trainer: unknown key"):
        load_run_config(p)


def test_primary_metric_must_exist_for_task(tmp_path):
    p = write(tmp_path, "parameters:\n  data: {task: text}\n  promotion: {primary_metric: slot_accuracy}\n")
    with pytest.raises(ConfigError, match="slot_accuracy.*not a testable metric of task 'text'"):
        load_run_config(p)


def test_yaml_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "parameters:\n  data: {source: [\n")
    with pytest.raises(ConfigError, match=rf"{p}:\d+: not valid YAML"):
        load_run_config(p)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config("nope.yaml")


def test_overrides_keep_types_and_validate(tmp_path):
    p = write(tmp_path, "parameters:\n  training: {max_steps: 5}\n")
    config, _ = load_run_config(p, ["training.max_steps=7", "lora.target_modules=[q_proj]"])
    assert config.training.max_steps == 7 and config.lora.target_modules == ["q_proj"]
    with pytest.raises(ConfigError, match="parameters.training.max_steps"):
        load_run_config(p, ["training.max_steps=zero"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["training.max_steps"])


def test_as_params():
    flat = as_params(TunelineConfig())
    assert flat["training.learning_rate"] == TunelineConfig().training.learning_rate
    assert "lora.target_modules" in flat


def test_a_loraplus_ratio_below_one_is_named(tmp_path):
    p = write(tmp_path, "parameters:\n  training:\n    loraplus_lr_ratio: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(p)
    assert str(p) in str(err.value) and "parameters.training.loraplus_lr_ratio" in str(err.value)
    p = write(tmp_path, "parameters:\n  tuning:\n    space:\n      loraplus_lr_ratio: [16, 0.5]\n")
    with pytest.raises(ConfigError, match="loraplus_lr_ratio 0.5 cannot train"):
        load_run_config(p)
