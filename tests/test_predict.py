"""The Python API and console command on a tiny trained run: top-k by id or text, and ranks recomputed from the
saved model agree exactly with the score rule's ranks.parquet / metrics.json."""
import json

import pandas as pd
import pytest
from conftest import paper_section

from lpbert_core.finetune.finetune_loop import run_finetune
from lpbert_core.evaluate.predict import LinkPredictor, main
from lpbert_core.ranking.filtered_ranks import metrics_from_ranks
from lpbert_core.evaluate.scoring import run_score

from test_finetune_loop import toy_kg


@pytest.fixture(scope="module")
def run_dir(tiny_encoder_dir, tmp_path_factory, kg_layout_writer):
    from transformers import AutoTokenizer


    root = tmp_path_factory.mktemp("results") / "toy"
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    kg = toy_kg(tok)
    # text + token tables in the pipeline layout, so from_run finds them next to the run
    text, tokens = kg_layout_writer(kg, tok, root)
    run = root / "runs" / "tiny"
    # the finetune rule's entry point, starting from a "pre-training output" folder (encoder + tokenizer)
    graph = {"triples": text / "triples.parquet", "manifest": tokens / "manifest.json"}
    run_finetune(settings={"dataset": "toy", "run": "tiny",
                           "run_spec": {"pretrain": "mem-mrm-mlm", "in_batch_negatives": True},
                           "finetune": paper_section("finetune", batch_size=8, epochs=1, max_length=16,
                                                     eval_batch_size=8),
                           "encoder_key": "minilm", "encoder_source": "minilm", "head_ranking": "inverse_query"},
                 inputs={**graph, "pretrained": tiny_encoder_dir},
                 outputs={"model": run / "model", "train_log": run / "train_log.csv", "checkpoints": root / "ckpt"})
    run_score(settings=paper_section("score", batch_size=4, chunk_size=3), inputs={**graph, "model": run / "model"},
              outputs={"ranks": run / "ranks.parquet", "metrics": run / "metrics.json"}, log=lambda m: None)
    return run


def test_metrics_recomputed_from_ranks_agree(run_dir):
    frame = pd.read_parquet(run_dir / "ranks.parquet")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert metrics_from_ranks(frame) == saved["metrics"]
    assert saved["scale"]["full_protocol"] is True and saved["scale"]["test_triples_used"] == 1
    assert saved["run"]["initial_weights"].endswith("tiny_bert0") or "tiny_bert" in saved["run"]["initial_weights"]
    assert saved["scale"]["epochs_run"] == 1  # per_dataset overrides the default


def test_api_ranks_agree_with_score_rule(run_dir):
    lp = LinkPredictor.from_run(run_dir)
    frame, metrics = lp.evaluate("test")
    saved = pd.read_parquet(run_dir / "ranks.parquet")
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), saved)
    assert metrics == json.loads((run_dir / "metrics.json").read_text())["metrics"]


def test_top_k_by_id_and_text(run_dir):
    lp = LinkPredictor.from_run(run_dir)
    by_id = lp.top_k(head="e0", relation="r0", k=3)
    by_text = lp.top_k(head="apple", relation="likes", k=3)
    assert [r["entity"] for r in by_id] == [r["entity"] for r in by_text]
    assert len(by_id) == 3 and by_id[0]["score"] >= by_id[1]["score"] >= by_id[2]["score"]
    heads = lp.top_k(relation="r0", tail="e1", k=20, filter_known=True)
    assert "e0" not in [r["entity"] for r in heads]  # the known head of (?, r0, e1) is filtered
    free = lp.top_k(head="a completely new fruit", relation="r0", k=2)
    assert len(free) == 2
    with pytest.raises(ValueError):
        lp.top_k(head="e0", tail="e1", relation="r0")


def test_console(run_dir, capsys):
    main([str(run_dir), "--head", "e0", "--relation", "r0", "-k", "2", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and rows[0]["rank"] == 1


def test_dev_metrics_of_a_run_never_scored_match_its_training_dev_point(run_dir, tmp_path):
    """tools/dev_metrics.py on a run that was trained but never scored (no metrics.json: the inductive dev choice of
    docs/inductive.md): the score settings come from the config, and the dev ranking is fine-tuning's own."""
    import shutil

    from conftest import load_script

    trained_only = tmp_path / "toy" / "runs" / "tiny"
    shutil.copytree(run_dir.parents[1], tmp_path / "toy")
    (trained_only / "metrics.json").unlink()
    from lpbert_core.config.settings import ScoreSettings

    tool = load_script("tools/dev_metrics.py", "dev_metrics")
    score = ScoreSettings.from_mapping(paper_section("score", batch_size=4, chunk_size=3), "test")
    report = tool.dev_report(trained_only, None, 42, score)
    logged = pd.read_csv(trained_only / "train_log.csv").iloc[-1]
    assert report["mrr"] == pytest.approx(logged["dev_mrr"]) and report["hits@10"] == pytest.approx(logged["dev_hits@10"])
    assert report["dev_triples"] > 0
