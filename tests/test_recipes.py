"""Named training recipes: what ``demo`` and ``paper`` resolve to, and that the CLI, notebook 03
and the README all read the same recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from localign.data.transforms import AUGMENTATIONS
from localign.train.config import TrainConfig, make_train_config, resolve_method
from localign.train.recipes import RECIPES, get_recipe, recipe_differences

ROOT = Path(__file__).resolve().parents[1]


def test_the_paper_recipe_is_the_presets_own_training():
    cfg = make_train_config(method="lovt", out="runs/x")
    assert cfg == TrainConfig(method="lovt", out="runs/x", augment=AUGMENTATIONS["convirt"], overrides={}, recipe="paper")
    m = resolve_method(cfg)
    assert (m.image.arch, m.image.weights, m.optim.lr, m.optim.accumulate, m.text.freeze) == ("resnet50", "imagenet", 1e-4, 16, False)


@pytest.mark.parametrize("method", ["convirt", "clip", "gloria", "lovt", "limitr", "local_mi_cpc"])
def test_the_demo_recipe_locks_the_text_tower_on_identical_small_encoders(method):
    cfg = make_train_config(method=method, recipe="demo", out="runs/x")
    m = resolve_method(cfg)
    # GLoRIA's random crop, except for LIMITR and local MI, whose few epochs it slows.
    expected_augment = "none" if method in ("limitr", "local_mi_cpc") else "gloria"
    assert cfg.recipe == "demo" and cfg.deterministic is True and cfg.augment == AUGMENTATIONS[expected_augment]
    assert cfg.amp == "bf16_native"
    assert (m.image.arch, m.image.input_size, m.image.weights, m.text.model, m.text.freeze) == ("resnet18", 128, None, "minilm", True)
    assert m.text_input.sentence_shuffling is None  # shuffled reports would miss the cache
    assert m.text_input.sentence_sampling is None  # whole reports, not one random sentence
    assert m.optim.schedule == "linear_warmup" and m.optim.accumulate == 1
    train, _ = get_recipe("demo").for_method(method)
    assert m.optim.lr == train["lr"] and m.optim.batch_size == train["batch_size"] and m.optim.max_epochs == train["epochs"]


def test_explicit_arguments_override_the_recipe():
    cfg = make_train_config(method="convirt", recipe="demo", out="runs/x", lr=1e-3, epochs=2, augment="convirt",
                            deterministic=False, overrides={"text.freeze": False})
    m = resolve_method(cfg)
    assert (m.optim.lr, m.optim.max_epochs, cfg.deterministic, m.text.freeze) == (1e-3, 2, False, False)
    assert cfg.augment == AUGMENTATIONS["convirt"]
    # None means "the recipe's value"
    assert resolve_method(make_train_config(method="convirt", recipe="demo", lr=None)).optim.lr == get_recipe("demo").train["lr"]


def test_a_paper_method_keeps_its_random_sentence_outside_the_demo_recipe():
    assert resolve_method(make_train_config(method="convirt", recipe="paper")).text_input.sentence_sampling == "random_sentence"
    assert resolve_method(make_train_config(method="convirt", recipe="demo")).text_input.sentence_sampling is None


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown recipe 'fast'.*demo.*paper"):
        make_train_config(method="lovt", recipe="fast")


def test_recipe_differences_are_what_the_runs_resolve():
    diff = recipe_differences("lovt", "demo")
    assert diff.loc["text.freeze", "demo"] is True and diff.loc["text.freeze", "paper"] is False
    assert diff.loc["image.arch"].tolist() == ["resnet50", "resnet18"]
    assert diff.loc["optim.accumulate"].tolist() == [16, 1]
    assert "loss.temperature" not in diff.index  # the objective is the paper's
    assert recipe_differences("lovt", "paper").empty


def test_the_cli_reads_the_recipe():
    from localign.train.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--method", "convirt", "--recipe", "demo", "--out", "runs/c", "--quiet"])
    assert config_from_args(args) == make_train_config(method="convirt", recipe="demo", out="runs/c", progress=False, early_stopping=True,
                                                       resume=False, device="auto", num_workers=0)
    args = parser.parse_args(["--method", "convirt", "--recipe", "demo", "--out", "runs/c", "--no-deterministic", "--lr", "0.002"])
    cfg = config_from_args(args)
    assert cfg.deterministic is False and resolve_method(cfg).optim.lr == 0.002
    assert parser.parse_args(["--out", "x"]).recipe == "paper"


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_03_reads_the_demo_recipe(monkeypatch, tmp_path):
    from localign import notebook

    monkeypatch.setattr(notebook, "setup", lambda log_file=None, chdir=True: Path(log_file))  # no global logging changes
    cells = _code_cells(ROOT / "notebooks" / "03_pretrain.ipynb")
    ns: dict = {}
    exec(cells[0], ns)  # the parameters cell
    assert ns["recipe"] == "demo"
    exec(cells[1], ns)  # builds `config` without training
    expected = make_train_config(method=ns["method"], recipe="demo", out=ns["out"], seed=ns["seed"], device=ns["device"],
                                 progress=notebook.show_progress())
    assert ns["config"] == expected


def test_readme_and_report_plan_use_the_demo_recipe():
    import yaml

    readme = (ROOT / "README.md").read_text()
    assert "--recipe demo" in readme
    plan = yaml.safe_load((ROOT / "params" / "report.yaml").read_text())
    pretrain = [e for e in plan["notebooks"] if e["notebook"] == "03_pretrain"]
    assert pretrain and all(e["parameters"]["recipe"] == "demo" for e in pretrain)
    assert set(RECIPES) == {"paper", "demo"}


def test_readme_tables_are_what_the_demo_runs_measured():
    """The README's and the benchmarks' demo tables are rendered from the measured CSV, never typed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_runs", ROOT / "benchmarks" / "demo_runs.py")
    demo_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo_runs)
    assert demo_runs.CSV.is_file(), "benchmarks/results/demo_runs.csv is missing: run benchmarks/demo_runs.py"
    df = demo_runs.load()
    assert set(df["method"]) == set(demo_runs.METHODS)
    block = demo_runs.render(df)
    for path in (ROOT / "README.md", ROOT / "benchmarks" / "README.md"):
        text = path.read_text()
        assert demo_runs.splice(text, block) == text, f"{path.name}: the demo-runs table differs from benchmarks/results/demo_runs.csv"


def test_flags_and_notebook_parameters_come_from_one_table():
    """`localign pretrain`'s flags and notebook 03's parameters are the names of TRAIN_OPTIONS, each
    set through its dotted key (the shortcuts are optim overrides, not TrainConfig fields)."""
    from localign.train.cli import add_arguments
    from localign.train.config import TRAIN_OPTIONS

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest for a in parser._actions} - {"help", "set"}
    assert flags == set(TRAIN_OPTIONS)
    ns: dict = {}
    exec(_code_cells(ROOT / "notebooks" / "03_pretrain.ipynb")[0], ns)
    params = {k for k in ns if not k.startswith("__")}
    # data_root is the one parameter every notebook of a report plan shares (the CLI's --data).
    assert params - {"data_root"} <= set(TRAIN_OPTIONS)
    cfg = make_train_config(method="convirt", epochs=3, batch_size=4, lr=0.5, text_lr=0.25, accumulate=2, workers=2, val_pool=7, quiet=True)
    assert cfg.overrides == {"optim.max_epochs": 3, "optim.batch_size": 4, "optim.lr": 0.5, "optim.text_lr": 0.25, "optim.accumulate": 2}
    assert (cfg.num_workers, cfg.val_retrieval_pool, cfg.progress) == (2, 7, False)
    args = parser.parse_args(["--out", "o", "--epochs", "3", "--set", "optim.lr=0.5", "augment.hflip_prob=0.5", "seed=4"])
    from localign.train.cli import config_from_args

    cfg = config_from_args(args)
    assert resolve_method(cfg).optim.max_epochs == 3 and resolve_method(cfg).optim.lr == 0.5
    assert cfg.augment.hflip_prob == 0.5 and cfg.seed == 4


def test_run_folders_with_the_old_shortcut_fields_still_load():
    old = {"method": "convirt", "overrides": {"optim.lr": 1.0}, "out": "runs/x", "epochs": 2, "batch_size": None, "lr": 0.5}
    cfg = TrainConfig.from_dict(old)
    assert cfg.overrides == {"optim.lr": 0.5, "optim.max_epochs": 2}


def test_the_recipe_variant_table_is_what_the_variants_measured():
    """benchmarks/README.md's recipe-variant table is rendered from results/recipe_variants.csv."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("recipe_variants", ROOT / "benchmarks" / "recipe_variants.py")
    variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variants)
    df = pd.read_csv(variants.CSV)
    assert set(df["variant"]) <= set(variants.VARIANTS), "a measured variant is no longer defined"
    df = df.set_index("variant").loc[[v for v in variants.VARIANTS if v in set(df["variant"])]].reset_index()
    text = (ROOT / "benchmarks" / "README.md").read_text()
    block = text.split(variants.START, 1)[1].split(variants.END, 1)[0].strip()
    assert block == variants.render(df)
