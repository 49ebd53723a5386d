"""Configuration: defaults, YAML + overrides, and errors that name the key path before any work."""
import pytest

from ito_sweeps import config as C
from ito_sweeps.config import ConfigError


def test_defaults_are_valid_and_flatten_to_dotted_keys():
    cfg = C.load()
    flat = cfg.flat()
    assert flat["objective.name"] == "ito"
    assert flat["objective.fusion_weight"] == 2.0
    assert flat["data.augment.jitter"] == [0.4, 0.4, 0.4, 0.1]
    assert flat["optim.beta2"] == 0.98 and flat["optim.eps"] == 1e-6 and flat["optim.weight_decay"] == 0.1


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("objective:\n  name: clip\n  fusion_weight: 1\nschedule:\n  steps: 50\n")
    cfg = C.load(path, ["objective.fusion_weight=2", "fusion.readout=mean", "optim.grad_clip=1.5"])
    assert cfg.objective.name == "clip"
    assert cfg.objective.fusion_weight == 2.0 and isinstance(cfg.objective.fusion_weight, float)
    assert cfg.schedule.steps == 50
    assert cfg.fusion.readout == "mean"
    assert cfg.optim.grad_clip == 1.5
    assert C.load(None, ["optim.lr=1e-3"]).optim.lr == 0.001  # YAML 1.1 would leave "1e-3" a string


def test_round_trip_through_dump(tmp_path):
    cfg = C.load(None, ["data.augment.crop_scale=[0.3, 0.9]", "run.seed=7"])
    C.dump(cfg, tmp_path / "c.yaml")
    assert C.load(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("objective.fusion_wieght=2", "objective.fusion_wieght: unknown key"),
        ("modle.name=tiny", "modle: unknown key"),
        ("objective.fusion_weight=abc", "objective.fusion_weight: expected a number"),
        ("schedule.steps=1.5", "schedule.steps: expected an integer"),
        ("run.compile=1", "run.compile: expected true or false"),
        ("fusion.readout=max", "fusion.readout: 'max' is not one of"),
        ("fusion.depth=-1", "fusion.depth: -1 is below the minimum 0"),
        ("data.augment.jitter_p=1.5", "data.augment.jitter_p: 1.5 is above the maximum 1.0"),
        ("objective.name=simclr", "objective.name: unknown objective 'simclr' (valid: clip, cyclip, ito, latent_structure, unialign)"),
        ("schedule.warmup_steps=1000", "schedule.warmup_steps: 1000 exceeds schedule.steps"),
        ("data.augment.crop_scale=[0.9, 0.5]", "data.augment.crop_scale: need 0 < low <= high <= 1"),
        ("data.augment.crop_scale=[0.5]", "data.augment.crop_scale: expected a list of 2 numbers"),
        ("objective=3", "objective: expected a mapping"),
        ("objective.latent_structure.regularizers=gc", "objective.latent_structure.regularizers: expected a list"),
        ("objective.latent_structure.regularizers=[gc, 3]", "objective.latent_structure.regularizers[1]: expected a string"),
        ("objective.latent_structure.regularizers=[sep, brownian]",
         "objective.latent_structure.regularizers: unknown regulariser 'brownian' (valid: sep, br, gc)"),
        ("objective.latent_structure.regularizers=[gc, gc]", "objective.latent_structure.regularizers: ['gc', 'gc'] names one twice"),
        ("objective.unialign.anchor=audio", "objective.unialign.anchor: 'audio' is not one of 'image', 'text'"),
        ("objective.cyclip.cross_weight=-1", "objective.cyclip.cross_weight: -1.0 is below the minimum 0.0"),
        ("fusion_weight", "expected KEY.PATH=VALUE"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        C.load(None, [override])
    assert message in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        C.load(tmp_path / "nope.yaml")
