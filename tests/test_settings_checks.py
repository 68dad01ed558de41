"""Flag combinations that cannot work are refused where settings are made (issue #28 item 2): by a direct finetune()
call, by DirectRun and by Snakemake while it builds the DAG, with the same message and before any stage runs."""
import pytest

from conftest import paper_section
from lpbert_core.errors import ConfigError
from lpbert_core.config.settings import FinetuneSettings

from test_workflow import snakemake, workdir

BAD = {"all_entity_negatives": True, "self_negatives": True}
MESSAGE = "finetune.all_entity_negatives already scores every entity"


@pytest.mark.parametrize("bad, message", [
    (BAD, MESSAGE),
    ({"entity_bank": 10, "scorer": "pair_linear"}, "finetune.entity_bank scores"),
    ({"infonce_learnable_temperature": True}, "needs loss: infonce"),
    ({"selection": "dev_mrr"}, "finetune.selection must be one of"),
    ({"step_budget": 2, "dev_points": 3}, "exceeds step_budget"),
])
def test_settings_refuse_bad_combinations(bad, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneSettings.from_mapping(paper_section("finetune", **bad))


def test_direct_run_and_snakemake_refuse_before_any_stage(tmp_path):
    from lpbert_core.config.load import load_config, merge
    from lpbert_core.runtime.direct_run import DirectRun
    from lpbert_core.config.resolve import JobSettings
    from test_workflow import REPO

    overlay = {"runs": {"bad": {"model": "lpbert", "pretrain": "none", "in_batch_negatives": True,
                                "finetune": BAD}}}
    config = merge(load_config([REPO / "config.yaml"]), overlay)
    with pytest.raises(ConfigError, match=MESSAGE):
        DirectRun(JobSettings(config), tmp_path / "direct").run("umls", "bad")
    assert not (tmp_path / "direct").exists()  # nothing ran, not even the data stages
    folder = workdir(tmp_path / "sm", overlay) if (tmp_path / "sm").mkdir() is None else None
    done = snakemake("-n", "results/umls/runs/bad/metrics.json", "--configfile", "overlay.yaml", cwd=folder)
    assert done.returncode != 0 and MESSAGE in done.stdout + done.stderr


@pytest.mark.parametrize("overlay, message", [
    ({"encoder": 3}, "config encoder: 3 is not of type 'string'"),
    ({"no_such_key": 1}, "Additional properties are not allowed"),
    ({"datasets": ["umls", "mykg"]}, "datasets: 'mykg' has no entry under sources"),
    ({"tables": {"reproduction": {"authors_code": "lpbert-authors"}}},
     "tables.reproduction.authors_code: no run named 'lpbert-authors'"),
    ({"pretrain": {"lr_head": 1e-4}}, "pretrain.lr_head is now pretrain.lr_new"),
])
def test_direct_run_checks_the_whole_config_as_snakemake_does(tmp_path, overlay, message):
    """The schema and the cross-references (tests/test_workflow.py gives Snakemake the same overlays) are checked by
    DirectRun too, before anything runs."""
    from lpbert_core.config.load import load_config, merge
    from lpbert_core.runtime.direct_run import DirectRun
    from lpbert_core.config.resolve import JobSettings
    from test_workflow import REPO

    config = merge(load_config([REPO / "config.yaml"]), overlay)
    with pytest.raises(ConfigError, match=message):
        DirectRun(JobSettings(config), tmp_path / "direct")
    assert not (tmp_path / "direct").exists()


def test_finetune_settings_group_by_concern():
    """Every fine-tuning key belongs to exactly one concern (loss, negatives, optimiser, selection, runtime, ...)."""
    from dataclasses import fields

    from lpbert_core.config.settings import FINETUNE_CONCERNS

    grouped = [key for keys in FINETUNE_CONCERNS.values() for key in keys]
    assert sorted(grouped) == sorted(f.name for f in fields(FinetuneSettings)) and len(grouped) == len(set(grouped))
    settings = FinetuneSettings.from_mapping(paper_section("finetune"))
    assert settings.by_concern()["negatives"]["self_negatives"] is settings.self_negatives
