"""The reproduction chapter's inputs: chapter timings recorded by ``localign report``, the machine, the versions."""

from __future__ import annotations

import json

import pytest

from localign.report import PlanEntry, record_timing
from localign.reproduction import chapter_timings, machine_table, package_versions


def test_timings_are_merged_chapter_by_chapter_and_read_in_order(tmp_path):
    (tmp_path / "timings.json").write_text(json.dumps({"01_data": 12.0}))  # the old flat form is dropped
    record_timing(tmp_path, PlanEntry("01_data", "01_data"), 90.0, "params/ci.yaml")
    record_timing(tmp_path, PlanEntry("03_pretrain", "03_pretrain_lovt"), 30.0, "params/ci.yaml")
    record_timing(tmp_path, PlanEntry("01_data", "01_data"), 60.0, "params/ci.yaml")  # an --only rerun replaces its own row
    table = chapter_timings(tmp_path)
    assert list(table.index) == ["03_pretrain_lovt", "01_data"]  # by the time they finished
    assert table.loc["01_data", "minutes"] == 1.0 and table.loc["03_pretrain_lovt", "notebook"] == "03_pretrain"
    assert set(table.columns) >= {"plan", "minutes", "finished", "load_1min"}
    assert (table["load_1min"] >= 0).all()


def test_missing_or_empty_timings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="timings.json"):
        chapter_timings(tmp_path)
    (tmp_path / "timings.json").write_text("{}")
    with pytest.raises(ValueError, match="no chapter timing"):
        chapter_timings(tmp_path)


def test_machine_and_versions():
    machine = machine_table()
    assert {"python", "processor", "cores available", "torch threads", "GPU", "localign commit"} <= set(machine.index)
    assert int(machine.loc["cores available", "value"]) >= 1
    versions = package_versions(("torch", "surely-not-a-distribution-xyz"))
    import torch

    assert versions.loc["torch", "version"] == torch.__version__.split("+")[0] or versions.loc["torch", "version"] == torch.__version__
    assert versions.loc["surely-not-a-distribution-xyz", "version"] == "not installed"
