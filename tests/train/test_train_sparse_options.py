"""include / exclude / regrow_pruned through TrainConfig, YAML, the CLI and a real run."""
from __future__ import annotations

import pytest
import yaml

from freetickets.cli.main import _Parser, main  # noqa: F401  (the parser is built by main)
from freetickets.errors import UserError
from freetickets.methods import get_recipe
from freetickets.train import train
from freetickets.train.config import check_model, list_presets, load_yaml, resolve, validate, TrainConfig
from freetickets.sparse.run_options import engine_options

from _train_helpers import tiny_config


def test_defaults_and_engine_options():
    cfg = TrainConfig()
    assert cfg.regrow_pruned is True and cfg.include == [] and cfg.exclude == []
    assert engine_options(cfg) == {"include": None, "exclude": None, "regrow_pruned": True}


def test_every_preset_states_regrow_pruned_and_sparse_presets_exclude():
    for name in list_presets():
        raw = load_yaml(name)
        assert raw.get("regrow_pruned") is True, name
        if get_recipe(raw["method"]).sparse:
            assert raw.get("exclude") == [], name


def test_yaml_and_single_string_pattern(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: dst\nexclude: features.0.weight\nregrow-pruned: false\n")
    cfg = resolve(f, {})
    assert cfg.exclude == ["features.0.weight"] and cfg.regrow_pruned is False


@pytest.mark.parametrize("values,match", [
    ({"regrow_pruned": "no"}, "regrow_pruned: expected true or false"),
    ({"exclude": [1]}, "--exclude: expected a list of parameter-name patterns"),
    ({"include": [""]}, "--include: expected a list"),
])
def test_bad_values(values, match):
    with pytest.raises(UserError, match=match):
        validate(TrainConfig(method="dst", **values))


def test_unmatched_pattern_is_a_user_error_before_training():
    with pytest.raises(UserError, match=r"--exclude: exclude pattern 'conv1.weight' matches no sparse parameter; "
                                        r"names that exist: features.0.weight"):
        check_model(tiny_config(method="dst", exclude=["conv1.weight"]))
    with pytest.raises(UserError, match=r"--include: include pattern 'features.1.\*' matches only parameters"):
        check_model(tiny_config(method="dst", include=["features.1.*"]))


def test_cli_flags(tmp_path, monkeypatch):
    seen = {}

    def fake_train(cfg, out, **kw):
        seen["cfg"] = cfg
        return {"tickets": []}

    monkeypatch.setattr("freetickets.train.train", fake_train)
    args = ["train", "--method", "dst", "--out", str(tmp_path / "r"), "--exclude", "features.0.weight",
            "classifier.*", "--no-regrow-pruned", "--set", "model_kwargs={width: 16}"]
    assert main(args) == 0
    assert seen["cfg"].exclude == ["features.0.weight", "classifier.*"] and seen["cfg"].regrow_pruned is False
    assert main(["train", "--method", "dst", "--out", str(tmp_path / "r2"), "--regrow-pruned"]) == 0
    assert seen["cfg"].regrow_pruned is True and seen["cfg"].exclude == []


def test_run_with_exclude_keeps_layer_dense(tmp_path):
    """A real DST run: the excluded first conv has no mask, its ticket is dense, the others exact."""
    cfg = tiny_config(method="dst", members=1, epochs=1, exclude=["features.0.weight"], regrow_pruned=False)
    train(cfg, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["exclude"] == ["features.0.weight"] and saved["regrow_pruned"] is False
    from freetickets.ensembles.tickets import load_ticket

    ticket = load_ticket(tmp_path / "run" / "tickets" / "member_0.pt")
    assert sorted(ticket.masks) == ["classifier.weight", "features.3.weight", "features.6.weight"]
    assert bool((ticket.state_dict["features.0.weight"] != 0).all())
    for name, mask in ticket.masks.items():
        assert bool((ticket.state_dict[name][~mask] == 0).all())
    active = sum(int(m.sum()) for m in ticket.masks.values())
    assert 1 - active / sum(m.numel() for m in ticket.masks.values()) == pytest.approx(0.8, abs=1e-3)
