"""Job settings without Snakemake: lpbert_core.config.load (the --configfile merge) and lpbert_core.config.resolve
(every stage's arguments). That the rules' params are exactly these is checked end to end by
tests/test_whole_dag.py::test_stages_driven_without_snakemake_give_the_same_run."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpbert_core.config.load import load_config, merge
from lpbert_core.errors import ConfigError, InputError
from lpbert_core.config.resolve import JobSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpu_jobs():
    return JobSettings(load_config([REPO / "config.yaml", REPO / "configs/cpu.yaml"]))


def test_merge_is_snakemakes_update_config():
    from snakemake.utils import update_config

    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": 1}
    overlay = {"a": {"c": [3], "d": {"g": 2}}, "f": {"h": 1}, "i": None}
    import copy

    expected = copy.deepcopy(base)
    update_config(expected, overlay)
    assert merge(base, overlay) == expected == {"a": {"b": 1, "c": [3], "d": {"e": 1, "g": 2}}, "f": {"h": 1},
                                                "i": None}
    assert base["a"]["c"] == [1, 2]  # the inputs are not modified


def test_bad_config_files_are_named_with_their_line(tmp_path):
    bad = tmp_path / "overlay.yaml"
    bad.write_text("finetune:\n  epochs: 3\n   seed: [\n")
    with pytest.raises(InputError, match=r"overlay.yaml:3"):
        load_config([REPO / "config.yaml", bad])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="must hold a mapping"):
        load_config([listed])


def test_finetune_params_hold_the_runs_resolved_settings(cpu_jobs):
    from lpbert_core.config.settings import FinetuneSettings

    params = cpu_jobs.finetune_params("umls", "lpbert")
    assert params["dataset"] == "umls" and params["encoder_key"] == "minilm" and params["encoder_source"] == "minilm"
    # plain data (Snakemake stores it to notice a change), every key once: no per_dataset, nothing to merge again
    assert set(params["finetune"]) == set(FinetuneSettings.keys())
    assert params["finetune"] == cpu_jobs.resolve("finetune", "umls", "lpbert").as_dict()
    assert params["finetune"]["epochs"] == 8 and params["finetune"]["batch_size"] == 128  # CPU overlay, config.yaml
    assert params["head_ranking"] == "inverse_query" and params["run_spec"]["pretrain"] == "mem-mrm-mlm"
    # another dataset's entry does not reach this job's params
    edited = JobSettings(merge(cpu_jobs.config, {"finetune": {"per_dataset": {"WN18RR": {"epochs": 3}}}}))
    assert edited.finetune_params("umls", "lpbert") == params
    assert cpu_jobs.training_inputs("umls", "lpbert")["pretrained"] == "results/umls/pretrain/mem-mrm-mlm/model"
    assert "pretrained" not in cpu_jobs.training_inputs("umls", "t4-none")


def test_resolve_gives_typed_frozen_settings_and_refuses_unknown_keys(cpu_jobs):
    import dataclasses

    from lpbert_core.config.settings import ScoreSettings

    s = cpu_jobs.resolve("finetune", "umls", "lpbert")
    assert isinstance(s.lr_encoder, float) and isinstance(s.label_splits, tuple) and s.label_splits == ("train",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.epochs = 3
    section = {k: v for k, v in cpu_jobs.config["score"].items() if k != "per_dataset"}
    assert cpu_jobs.resolve("score", "WN18RR") == ScoreSettings.from_mapping({**section, "test_subsample": 300})
    assert cpu_jobs.resolve("score", "umls").test_subsample is None
    assert cpu_jobs.resolve("pretrain", "umls", variant="mem", threads=2).threads == 2
    bad = JobSettings(merge(cpu_jobs.config, {"runs": {"x": {"model": "lpbert", "pretrain": "none",
                                                              "finetune": {"epochz": 3}}}}))
    with pytest.raises(ConfigError,
                       match=r"unknown setting\(s\) runs\.x\.finetune\.epochz \(finetune \(run x on umls\)\)"):
        bad.resolve("finetune", "umls", "x")
    wrong_type = JobSettings(merge(cpu_jobs.config, {"runs": {"x": {"model": "lpbert", "pretrain": "none",
                                                                     "finetune": {"epochs": "three"}}}}))
    with pytest.raises(ConfigError, match=r"runs\.x\.finetune\.epochs \(finetune \(run x on umls\)\): "
                                          "expected an integer, got 'three'"):
        wrong_type.resolve("finetune", "umls", "x")
    with pytest.raises(ConfigError, match="test_subsample is now score.per_dataset.umls.test_subsample"):
        JobSettings(merge(cpu_jobs.config, {"finetune": {"per_dataset": {"umls": {"test_subsample": 5}}}}))
    with pytest.raises(ConfigError, match="runs.x.finetune.test_subsample is now score.test_subsample"):
        JobSettings(merge(cpu_jobs.config, {"runs": {"x": {"model": "lpbert", "pretrain": "none",
                                                           "finetune": {"test_subsample": 5}}}}))
    wrong_section = JobSettings(merge(cpu_jobs.config, {"score": {"per_dataset": {"umls": {"test_subsample": "all"}}}}))
    with pytest.raises(ConfigError, match=r"score\.per_dataset\.umls\.test_subsample \(score \(umls\)\): "
                                          "expected an integer or null, got 'all'"):
        wrong_section.resolve("score", "umls")
    with pytest.raises(ConfigError, match="need the variant and the job's granted threads"):
        cpu_jobs.resolve("pretrain", "umls")


def test_pretrain_params_take_the_datasets_length_and_hold_every_setting(cpu_jobs):
    from lpbert_core.config.settings import SECTION_KEYS

    params = cpu_jobs.pretrain_params("umls", "mem")
    assert params["max_length"] == 36 and params["variant"] == "mem"
    assert params["encoder_key"] == params["encoder_source"] == "minilm"  # the key `minilm` names the package alias
    # threads: the job's own
    assert set(params) == set(SECTION_KEYS["pretrain"]) - {"threads"} | {"variant", "encoder_key", "encoder_source"}
    assert params["optimizer"] == "adamw" and params["epochs"] == 8  # the CPU overlay's per_dataset entry
    config = merge(cpu_jobs.config, {"pretrain": {"optimizer": "adam"}})
    assert JobSettings(config).pretrain_params("umls", "mem")["optimizer"] == "adam"


def test_run_instances_carry_their_seed(cpu_jobs):
    config = merge(cpu_jobs.config, {"runs": {"t4-none": {"seeds": [42, 7]}}})
    jobs = JobSettings(config)
    assert jobs.run_instances("t4-none") == [("t4-none", 42), ("t4-none.s7", 7)]
    assert jobs.finetune_params("umls", "t4-none")["finetune"]["seed"] == 42
    assert jobs.finetune_params("umls", "t4-none.s7")["finetune"]["seed"] == 7
    assert "seeds" not in jobs.run_entry("t4-none.s7")
    assert jobs.kgbert_params("umls", "kgbert")["settings"]["seed"] == 42


def test_config_errors_name_the_key(cpu_jobs):
    with pytest.raises(ConfigError, match="no run named 'nope'"):
        cpu_jobs.finetune_params("umls", "nope")
    config = merge(cpu_jobs.config, {"runs": {"t4-none": {"seeds": [42, 7]},
                                              "t4-none.s7": {"model": "lpbert", "pretrain": "none"}}})
    with pytest.raises(ConfigError, match="is both a configured run and the instance"):
        JobSettings(config)
    config = merge(cpu_jobs.config, {"runs": {"odd": {"model": "lpbert", "pretrain": "mem", "encoder": "bert-base"}}})
    with pytest.raises(ConfigError, match="pre-training uses the top-level encoder"):
        JobSettings(config).run_settings("odd")
    with pytest.raises(ConfigError, match="inductive test graph"):
        cpu_jobs.training_inputs("WN18RR_v1_ind", "lpbert")


def test_inductive_sources_resolve_their_text_and_training_graph(cpu_jobs):
    source = cpu_jobs.download_params("WN18RR_v1_ind")
    assert "inductive_of" not in source and source["text_from"]["name"] == "WN18RR"
    assert source["text_from"]["archive"] == "resources/datasets/WN18RR.tar.gz"
    assert source["text_from"]["entity_text"] == "entity2text.txt"
    assert cpu_jobs.training_graph("WN18RR_v1_ind") == "WN18RR_v1"
    assert cpu_jobs.score_inputs("WN18RR_v1_ind", "lpbert")["model"] == "results/WN18RR_v1/runs/lpbert/model"
    assert cpu_jobs.text_params("WN18RR_v1")["text_format"] == "comma"
    text = cpu_jobs.resolve("text", "WN18RR_v1")  # WN18RR's text keys (text_from), config.yaml's text: for the rest
    assert (text.entity_text, text.entity_text_required, text.relation_text_required) == ("entity2text.txt", True,
                                                                                          False)
    assert text.relation_text == cpu_jobs.config["text"]["relation_text"]


def test_a_source_without_text_keys_gets_the_text_section(cpu_jobs):
    jobs = JobSettings(merge(cpu_jobs.config, {"sources": {"mykg": {"folder": "data/mykg"},
                                                           "other": {"folder": "x", "entity_text": None,
                                                                     "text_format": "dash"}}}))
    text = jobs.resolve("text", "mykg")
    assert text.as_dict() == {**cpu_jobs.config["text"], "entity_text_required": False, "relation_text_required": False}
    other = jobs.resolve("text", "other")
    assert other.entity_text is None and other.text_format == "dash" and not other.entity_text_required
    bad = JobSettings(merge(cpu_jobs.config, {"sources": {"mykg": {"folder": "x", "text_format": 3}}}))
    with pytest.raises(ConfigError, match=r"sources\.mykg\.text_format \(text \(mykg\)\): expected a string"):
        bad.resolve("text", "mykg")


def test_old_key_names_fail_with_their_new_names(cpu_jobs):
    config = merge(cpu_jobs.config, {"pretrain": {"lr_head": 1e-4, "per_dataset": {"umls": {"train_max_triples": 9}}},
                                     "runs": {"lpbert": {"finetune": {"score_chunk_size": 64}}}})
    with pytest.raises(ConfigError) as err:
        JobSettings(config)
    message = str(err.value)
    assert "pretrain.lr_head is now pretrain.lr_new" in message
    assert "pretrain.per_dataset.umls.train_max_triples is now pretrain.per_dataset.umls.train_subsample" in message
    assert "runs.lpbert.finetune.score_chunk_size is now runs.lpbert.finetune.chunk_size" in message


def test_zero_shot_floor_runs_and_which_floor_a_row_meets(cpu_jobs):
    """tables.floor: the bare and the pre-trained encoder without fine-tuning, scored with the very score settings of
    every run (per dataset: the CPU overlay's test subsample too)."""
    assert cpu_jobs.floor_runs() == ["zero-shot", "zero-shot-pretrained"]
    for dataset in ("umls", "WN18RR", "FB15k-237"):
        for floor in cpu_jobs.floor_runs():
            assert cpu_jobs.finetune_params(dataset, floor)["finetune"]["zero_shot"] is True
            assert (cpu_jobs.score_params(dataset, floor)["settings"]
                    == cpu_jobs.score_params(dataset, "lpbert")["settings"])
    assert cpu_jobs.score_params("WN18RR", "zero-shot")["settings"]["test_subsample"] == 300
    assert cpu_jobs.training_inputs("WN18RR", "zero-shot-pretrained")["pretrained"] == \
        "results/WN18RR/pretrain/mem-mrm-mlm/model"
    assert "pretrained" not in cpu_jobs.training_inputs("WN18RR", "zero-shot")
    # same encoder and pre-training variant, else the bare encoder's floor; a floor has none
    assert cpu_jobs.floor_of("lpbert") == "zero-shot-pretrained" and cpu_jobs.floor_of("t4-none") == "zero-shot"
    assert cpu_jobs.floor_of("t4-mlm") == "zero-shot" and cpu_jobs.floor_of("kgbert") == "zero-shot"
    assert cpu_jobs.floor_of("zero-shot") is None and cpu_jobs.floor_of("lpbert-roberta-base") is None
    assert cpu_jobs.floors_for(["lpbert"]) == ["zero-shot", "zero-shot-pretrained"]
    assert cpu_jobs.floors_for(["lpbert-roberta-base"]) == []
    for floor, message in ((["nope"], "tables.floor: no run named 'nope'"),
                           (["t4-none"], "tables.floor: run 't4-none' must be an lpbert run with finetune"),
                           (["zero-shot", "zs2"], "are both the floor of encoder 'minilm' with pretrain 'none'")):
        config = merge(cpu_jobs.config, {"tables": {"floor": floor}, "runs": {"zs2": {
            "model": "lpbert", "pretrain": "none", "in_batch_negatives": True, "finetune": {"zero_shot": True}}}})
        with pytest.raises(ConfigError, match=message):
            JobSettings(config).floor_runs()
    assert JobSettings(merge(cpu_jobs.config, {"tables": {"floor": []}})).floor_of("lpbert") is None
