from pathlib import Path

import pytest

from faceclip.training.config import ConfigError, Stage1Config, load_config, save_config

CONFIGS = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("stage*.yaml")), ids=lambda p: p.name)
def test_packaged_configs_load(path):
    config = load_config(path.name.split("_")[0], path)
    assert config.run.max_steps > 0


def test_overrides_types_and_round_trip(tmp_path):
    config = load_config("stage1", None, ["optim.lr=1e-3", "model.branches=[g]", "loss.kind=softmax",
                                          "model.init_text_towers_from=null", "run.max_steps=7"])  # fmt: skip
    assert isinstance(config, Stage1Config) and config.optim.lr == 1e-3 and config.model.branches == ["g"]
    save_config(config, tmp_path / "c.yaml", "stage1")
    assert load_config("stage1", tmp_path / "c.yaml") == config
    with pytest.raises(ConfigError, match="stage1 config"):
        load_config("stage2", tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [("optim.lrr=1", "optim.lrr"), ("run.max_steps=many", "run.max_steps"), ("model.branches=l", "model.branches"),
     ("run.seed=true", "run.seed"), ("optim", "KEY=VALUE")],
)  # fmt: skip
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("stage1", None, [override])


@pytest.mark.parametrize(
    ("stage", "override", "message"),
    [("stage1", "data.batch_size=0", "data.batch_size"), ("stage1", "loss.kind=hinge", "loss.kind"),
     ("stage1", "optim.scheduler=step", "optim.scheduler"), ("stage1", "run.checkpoint_every=0", "checkpoint_every"),
     ("stage1", "run.mixed_precision=fp8", "mixed_precision"), ("stage2", "model.condition_dropout=1.5", "dropout"),
     ("stage2", "run.gradient_accumulation_steps=0", "gradient_accumulation")],
)  # fmt: skip
def test_out_of_range_values_are_refused_when_loading(stage, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(stage, None, [override])


def test_values_are_set_as_given_not_parsed_as_yaml():
    config = load_config("stage1", None, [], {"run.output_dir": "runs/x #1", "data.source": "2024-05-01"})
    assert config.run.output_dir == "runs/x #1" and config.data.source == "2024-05-01"
