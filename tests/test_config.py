"""Config files, overrides and their errors."""

from pathlib import Path

import pytest

from dymsta.config import (
    RECIPES,
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    recipe_path,
)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_every_shipped_recipe_loads_and_round_trips(recipe: str) -> None:
    cfg = load_config(recipe_path(recipe))
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert "model:" in dump_config(cfg)


def test_required_recipes_exist() -> None:
    names = {p.stem for p in RECIPES.glob("*.yaml")}
    assert {"ucf101_split1", "hmdb51", "kinetics", "folder", "ucf101_mini", "ucf101_mini_dymsta", "demo"} <= names


def test_ucf101_mini_recipes_share_data_and_cache() -> None:
    """The DyMSTA-Net recipe differs from ucf101_mini in the head and its training only, so both read the same
    cached features: the 320 channels before Lite0's last layer on the same grid."""
    recipe, dymsta = load_config(recipe_path("ucf101_mini")), load_config(recipe_path("ucf101_mini_dymsta"))
    assert (recipe.data, recipe.cache) == (dymsta.data, dymsta.cache)
    assert (recipe.model.backbone, recipe.model.head_conv_grid) == (dymsta.model.backbone, dymsta.model.head_conv_grid)
    assert "backbone" not in (recipe.model.head_conv, dymsta.model.head_conv)
    assert not (recipe.model.dynamic or recipe.model.attention or recipe.model.multiscale)  # group CV's pick
    assert dymsta.model.dynamic and dymsta.model.attention and dymsta.model.multiscale  # the paper's modules


def test_paper_recipe_matches_the_paper() -> None:
    cfg = load_config(recipe_path("ucf101_split1"))
    assert cfg.train.epochs == 100
    assert cfg.optim.name == "adamw" and cfg.optim.scheduler == "plateau"
    assert cfg.data.kind == "ucf101" and cfg.data.split == 1 and cfg.data.val_fraction > 0
    assert cfg.model.trainable_stages == 0  # frozen backbone: feature extraction, as in the paper


def test_overrides_are_typed_and_dotted(tmp_path: Path) -> None:
    cfg = load_config(
        recipe_path("demo"),
        ["train.epochs=3", "model.temporal_kernels=[1,3,5]", "data.root=/x/y", "optim.lr=5e-4", "model.dynamic=false"],
    )
    assert cfg.train.epochs == 3
    assert cfg.model.temporal_kernels == (1, 3, 5)
    assert cfg.data.root == "/x/y"
    assert cfg.optim.lr == pytest.approx(5e-4)
    assert cfg.model.dynamic is False


def test_model_frames_follow_data_frames() -> None:
    cfg = load_config(None, ["data.num_frames=8"])
    assert cfg.model.num_frames == 8


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochz=3", "did you mean train.epochs"),
        ("nonsense.x=1", "unknown config key 'nonsense'"),
        ("train.epochs=three", "train.epochs must be an integer"),
        ("model.dynamic=maybe", "model.dynamic must be true or false"),
        ("optim.scheduler=linear", "optim.scheduler must be one of"),
        ("train.batch_size=0", "train.batch_size must be > 0"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("model.temporal_kernels=[3,5]", "model.temporal_kernels must have 3 items"),
        ("train", "must look like key.sub=value"),
    ],
)
def test_bad_settings_fail_with_the_key_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(recipe_path("demo"), [override])


def test_model_validation_surfaces_as_config_error() -> None:
    with pytest.raises(ConfigError, match="temporal"):
        load_config(None, ["model.temporal_kernels=[5,3,7]"])


def test_bad_yaml_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(evil)


def test_unknown_recipe_lists_the_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match="ucf101_split1"):
        recipe_path("no_such_recipe")


def test_defaults_validate() -> None:
    Config().validate()


def test_model_streams_follow_data_modalities() -> None:
    cfg = load_config(None, ["data.modalities=[mv,rgb]", "data.motion.mv_encoding=hist", "data.motion.mv_bins=6"])
    assert cfg.model.streams == ("rgb", "mv") and cfg.model.hist_channels == 7
    assert load_config(None, ["data.modalities=[rgb,rgbdiff]"]).model.hist_channels == 0
    with pytest.raises(ConfigError, match="model.streams"):
        load_config(None, ["data.modalities=[rgb,mv]", "model.streams=[rgb]"])
    with pytest.raises(ConfigError, match="data.modalities"):
        load_config(None, ["data.modalities=[rgb,flow]"])
    with pytest.raises(ConfigError, match="data.motion.mv_encoding"):
        load_config(None, ["data.motion.mv_encoding=arrows"])
    with pytest.raises(ConfigError, match="model.fusion"):
        load_config(None, ["model.fusion=product"])
