"""Configuration: defaults < YAML < flags, presets, round trip through the saved config.yaml."""
from __future__ import annotations

import pytest

from freetickets.errors import UserError
from freetickets.train.config import TrainConfig, list_presets, load_yaml, resolve, to_yaml


def test_yaml_then_flags_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: dst\nlr: 0.05\nepochs: 5\nmembers: 2\nupdate-interval: 7\n")
    cfg = resolve(path, {"epochs": 1, "sparsity": 0.9})
    assert (cfg.method, cfg.lr, cfg.members, cfg.update_interval) == ("dst", 0.05, 2, 7)  # from YAML
    assert (cfg.epochs, cfg.sparsity) == (1, 0.9)  # flags win
    assert cfg.batch_size == TrainConfig().batch_size  # defaults fill the rest


def test_resolved_config_round_trips(tmp_path):
    cfg = resolve("mnist1d_edst", {"epochs": 7, "explore_epochs": 1, "model_kwargs": {"width": 16}})
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    again = resolve(path, {})
    assert again == cfg


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_resolves(name):
    cfg = resolve(name, {})
    assert cfg.method in name or name.endswith(cfg.method)
    assert load_yaml(name)  # by name, without a path


def test_paper_recipes_in_presets():
    dst = resolve("cifar10_wrn28x10_dst", {})
    assert (dst.model, dst.epochs, dst.lr, dst.batch_size, dst.sparsity) == ("wrn-28-10", 250, 0.1, 128, 0.8)
    assert (dst.update_interval, dst.prune_fraction, dst.distribution) == (1000, 0.5, "erk")
    edst = resolve("cifar10_wrn28x10_edst", {})
    assert (edst.epochs, edst.explore_epochs, edst.members, edst.jump_fraction) == (450, 150, 3, 0.8)
    assert edst.refine_epochs == 100


@pytest.mark.parametrize("values, flag", [
    ({"members": 0}, "--members"),
    ({"method": "edst", "epochs": 3, "explore_epochs": 3}, "--explore-epochs"),
    ({"method": "edst", "epochs": 4, "explore_epochs": 2, "members": 3}, "--epochs"),
    ({"sparsity": 1.0}, "--sparsity"),
    ({"method": "dst", "update_interval": None}, "--update-interval"),
    ({"method": "dst", "member": 3, "members": 3}, "--member"),
    ({"method": "edst", "member": 0}, "--member"),
    ({"distribution": "erx"}, "--distribution"),
    ({"lr": 0}, "--lr"),
])
def test_bad_values_name_the_flag(values, flag):
    with pytest.raises(UserError) as info:
        resolve(None, values)
    msg = str(info.value)
    assert msg.startswith(flag + ":") and "\n" not in msg


def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lerning_rate: 0.1\nexplore_epoch: 3\n")
    with pytest.raises(UserError, match="unknown key 'lerning_rate'"):
        resolve(path, {})
    with pytest.raises(UserError, match="did you mean 'explore_epochs'"):
        resolve(None, {"explore_epoch": 3})
