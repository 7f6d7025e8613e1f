import json

import pytest
from helpers import REPO

from modeling_pvt import PRESETS, PvtConfig, PvtForImageClassification

CONFIG_DIR = REPO / "configuration"
# Parameter counts (millions) in Table 2 of the paper, for 1000 ImageNet classes.
PAPER_PARAMS_M = {"pvt-tiny": 13.2, "pvt-small": 24.5, "pvt-medium": 44.2, "pvt-large": 61.4}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_count_matches_paper(name):
    model = PvtForImageClassification(PvtConfig.from_preset(name, num_labels=1000))
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params_m - PAPER_PARAMS_M[name]) / PAPER_PARAMS_M[name] < 0.005, params_m


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_presets_equal_python_presets(name):
    from_file = PvtConfig.from_json_file(str(CONFIG_DIR / f"{name}.json"))
    from_name = PvtConfig.from_preset(name)
    assert from_file.to_diff_dict() == from_name.to_diff_dict()
    assert json.loads((CONFIG_DIR / f"{name}.json").read_text())["model_type"] == "pvt_v1"


def test_preset_short_name_and_overrides():
    config = PvtConfig.from_preset("small", num_labels=10, drop_path_rate=0.1)
    assert config.depths == [3, 4, 6, 3] and config.num_labels == 10 and config.drop_path_rate == 0.1


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="pvt-tiny, pvt-small, pvt-medium, pvt-large"):
        PvtConfig.from_preset("pvt-huge")


def test_defaults_follow_original_checkpoints():
    config = PvtConfig()
    assert config.layer_norm_eps == 1e-6 and config.conv_layer_norm_eps == 1e-5
    assert config.patch_sizes == [4, 2, 2, 2] and config.sr_ratios == [8, 4, 2, 1]
    assert [config.stage_stride(i) for i in range(4)] == [4, 8, 16, 32]
    assert [config.position_grid(i) for i in range(4)] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert config.min_input_size == 32
    assert PvtConfig(image_size=[192, 256]).position_grid(3) == (6, 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depths": [2, 2, 2]}, "depths has 3 entries but hidden_sizes has 4"),
        ({"hidden_sizes": [64, 128, 321, 512]}, "hidden size 321, which is not divisible by its 5 attention heads"),
        ({"sr_ratios": [8, 4, 0, 1]}, "sr_ratios must be positive"),
        ({"mlp_ratios": [8, -1, 4, 4]}, "mlp_ratios must be positive"),
        ({"depths": [2, 0, 2, 2]}, "depths must be positive"),
        ({"sr_ratios": [8, 4, 2, 2]}, "its sr_ratio must be 1"),
        ({"drop_path_rate": 1.5}, r"drop_path_rate must be in \[0, 1\)"),
        ({"num_channels": 0}, "num_channels"),
    ],
)
def test_inconsistent_config_is_rejected_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PvtConfig(**kwargs)


def test_backbone_outputs_are_validated():
    assert PvtConfig(out_features=["stage2", "stage4"]).out_indices == [1, 3]
    with pytest.raises(ValueError, match="stage_names"):
        PvtConfig(out_features=["stage5"])


def test_save_and_reload_round_trip(tmp_path):
    config = PvtConfig.from_preset("pvt-tiny", image_size=[192, 256], out_indices=[0, 2], num_labels=3)
    config.save_pretrained(tmp_path)
    reloaded = PvtConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.out_features == ["stage1", "stage3"]
