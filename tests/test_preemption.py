"""Preemption-safe training (lpbert_core.runtime.preemption): a stop signal makes a training stage checkpoint at the next step
boundary and exit non-zero; the rerun resumes mid-epoch and ends exactly as an uninterrupted run (CPU, tiny encoder).
Also the wall-clock checkpoint interval and the tally of checkpoint bytes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import make_toy_kg, paper_section
from safetensors.torch import load_file

from lpbert_core.runtime import preemption
from lpbert_core.model.encoders import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
WORDS = ["river", "mountain", "city", "forest", "desert", "island", "valley", "lake", "ocean", "plain"]


def test_signals_only_set_the_flag_while_watching():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.watching():
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test process outside the block
        deadline = time.monotonic() + 5
        while not preemption.requested() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert preemption.requested() and preemption.signal_name() == "SIGTERM"
        with preemption.watching():  # nested: one installation
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            assert preemption.signal_name() == "SIGUSR1"
        assert signal.getsignal(signal.SIGTERM) is preemption._handler
    assert signal.getsignal(signal.SIGTERM) == before and not preemption.requested()


def test_clock_interval_stop_and_byte_tally(monkeypatch, tmp_path):
    now = [1000.0]
    monkeypatch.setattr(preemption.time, "monotonic", lambda: now[0])
    progress = {}
    clock = preemption.CheckpointClock(2, progress)  # every 2 minutes
    assert clock.decide(1) == (False, False)
    now[0] += 121
    assert clock.decide(2) == (True, False)
    clock.saved(1000)
    assert clock.decide(3) == (False, False)  # the interval restarts at each write
    preemption.request()
    try:
        assert clock.decide(4) == (True, True)
    finally:
        preemption.clear()
    assert preemption.CheckpointClock(0, {}).due() is False  # 0 = never by time
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / "a").write_bytes(b"x" * 500)
    clock.resumed_from(tmp_path / "last")
    assert (progress["checkpoint_bytes"], progress["checkpoint_writes"]) == (1500, 2)
    assert "checkpoint_bytes=1500 " in clock.summary()


# ---------------------------------------------------------------- cross-encoder: a stop request mid-epoch, in process

def _cross_kg(tok):
    names = ["cat", "dog", "fish", "bird", "tree", "rock", "river", "cloud"]
    entities = {f"e{i}": (n, f"a thing called {n}") for i, n in enumerate(names)}
    relations = {"likes": "likes", "near": "is near"}
    train = [(f"e{i}", "likes" if i % 2 else "near", f"e{(i + 3) % 8}") for i in range(8)]
    train += [(f"e{i}", "near", f"e{(i + 5) % 8}") for i in range(4)]
    return make_toy_kg(tok, entities, relations, {"train": train, "dev": train[:3], "test": train[3:5]})


def _cross_cfg(**kw):
    return paper_section("kgbert", **{"max_length": 32, "negatives": 2, "batch_size": 8, "epochs": 2,
                                      "lr_encoder": 1e-3, "lr_new": 1e-3, "warmup_fraction": 0.1,
                                      "eval_batch_size": 16, "seed": 5, "dev_subsample": None, **kw})


def test_cross_encoder_stops_mid_epoch_and_resumes_exactly(tiny_encoder_dir, tmp_path, monkeypatch):
    from transformers import AutoModel

    from lpbert_core.baselines import cross_encoder_loop as loop

    tok = load_tokenizer(tiny_encoder_dir)
    kg, cpu = _cross_kg(tok), torch.device("cpu")

    def run(name, log=lambda s: None, **cfg):
        return loop.train_cross_encoder(kg, AutoModel.from_pretrained(tiny_encoder_dir), tok, _cross_cfg(**cfg),
                                        tmp_path / name / "model", tmp_path / name / "log.csv",
                                        tmp_path / name / "ckpt", cpu, log=log)

    full = run("a", keep_checkpoint=True)
    real, steps = loop.optimizer_step, [0]

    def step_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        steps[0] += 1
        if steps[0] == 7:  # epoch 2 (5 steps an epoch: 12 positives x 3 / batch 8), its 2nd step
            preemption.request()

    monkeypatch.setattr(loop, "optimizer_step", step_then_signal)
    messages = []
    try:
        with pytest.raises(preemption.Preempted):
            run("b", log=messages.append)
    finally:
        preemption.clear()
    monkeypatch.setattr(loop, "optimizer_step", real)
    state = json.loads((tmp_path / "b" / "ckpt" / "last" / "state.json").read_text())["progress"]
    assert state["partial"]["step"] == 2 and state["epoch"] == 1 and state["global_step"] == 7
    assert any("stopped on SIGTERM" in m for m in messages) and not (tmp_path / "b" / "model").exists()

    messages = []
    resumed = run("b", log=messages.append, keep_checkpoint=True)
    sa, sb = full["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [r["loss"] for r in resumed["progress"]["log"]] == [r["loss"] for r in full["progress"]["log"]]
    assert resumed["progress"]["log"][-1]["steps_timed"] == 3  # the resumed attempt ran 3 of the epoch's 5 steps
    # bytes: the killed attempt's epoch-1 and mid-epoch checkpoints plus the resumed attempt's epoch-2 one
    summary = next(m for m in messages if "checkpoint_bytes=" in m)
    size = preemption.folder_bytes(tmp_path / "b" / "ckpt" / "last")
    assert "checkpoint_writes=3" in summary
    assert abs(int(summary.split("checkpoint_bytes=")[1].split()[0]) - 3 * size) < 0.01 * size


def test_timed_checkpoints_change_nothing(tiny_encoder_dir, tmp_path):
    """checkpoint_every_minutes tiny: a mid-epoch checkpoint after every step; the result is the same."""
    from transformers import AutoModel

    from lpbert_core.baselines.cross_encoder_loop import train_cross_encoder

    tok = load_tokenizer(tiny_encoder_dir)
    kg, cpu = _cross_kg(tok), torch.device("cpu")
    out = {}
    for name, minutes in (("plain", 0), ("timed", 1e-9)):
        messages = []
        out[name] = train_cross_encoder(kg, AutoModel.from_pretrained(tiny_encoder_dir), tok,
                                        _cross_cfg(epochs=1, checkpoint_every_minutes=minutes),
                                        tmp_path / name / "model", tmp_path / name / "log.csv",
                                        tmp_path / name / "ckpt", cpu, log=messages.append)
        out[name]["summary"] = next(m for m in messages if "checkpoint_writes=" in m)
    sa, sb = out["plain"]["model"].state_dict(), out["timed"]["model"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert "checkpoint_writes=1 " in out["plain"]["summary"] and "checkpoint_writes=6 " in out["timed"]["summary"]


# ---------------------------------------------------------------- pre-training: a real SIGTERM to a real process

CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from lpbert_core.runtime import preemption
    from lpbert_core.pretrain import pretrain_loop
    from lpbert_core.runtime.stage_runner import run_stage

    args = json.loads(Path(sys.argv[1]).read_text())
    real, steps = pretrain_loop.optimizer_step, [0]

    def step(*a, **k):  # after step `signal_at`: say so, then wait for the signal (the test sends it)
        real(*a, **k)
        steps[0] += 1
        if steps[0] == args["signal_at"]:
            Path(args["marker"]).write_text("ready")
            deadline = time.monotonic() + 60
            while not preemption.requested() and time.monotonic() < deadline:
                time.sleep(0.01)

    pretrain_loop.optimizer_step = step
    run_stage(args["log"], lambda: pretrain_loop.run_pretrain(settings=args["settings"], inputs=args["inputs"],
                                                              outputs=args["outputs"]))
""")


def _pretrain_settings(encoder):
    return paper_section("pretrain", **{"variant": "mem-mrm-mlm", "encoder_key": "tiny", "encoder_source": encoder,
                                        "max_length": 24, "batch_size": 4, "epochs": 2, "early_stop_patience": 3,
                                        "seed": 7, "threads": 1, "progress_bar": False, "lr_encoder": 1e-3,
                                        "lr_new": 3e-3})


def _rows(path):
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_pretraining_signalled_mid_epoch_resumes_to_the_uninterrupted_result(tiny_encoder_dir, kg_layout_writer,
                                                                              tmp_path):
    """SIGTERM (SIGUSR1 takes the same handler: test_signals_only_set_the_flag_while_watching) to a real stage process
    between two steps of epoch 2: it checkpoints, exits with EXIT_CODE; the rerun ends as the uninterrupted run."""
    from lpbert_core.pretrain.pretrain_loop import run_pretrain

    tok = load_tokenizer("minilm")
    entities = {f"e{i}": (w, f"a {w} in region {i % 3}") for i, w in enumerate(WORDS)}
    relations = {"near": "located near", "part": "is part of", "above": "lies above"}
    rels = list(relations)
    train = [(f"e{i}", rels[i % 3], f"e{(i * 3 + 1) % 10}") for i in range(10)]
    train += [(f"e{i}", rels[(i + 1) % 3], f"e{(i + 4) % 10}") for i in range(10)]
    text, tokens = kg_layout_writer(make_toy_kg(tok, entities, relations, {"train": train, "dev": train[:6]}), tok,
                                    tmp_path / "graph")
    inputs = {"triples": str(text / "triples.parquet"), "manifest": str(tokens / "manifest.json")}
    settings = _pretrain_settings(tiny_encoder_dir)

    def outputs(name):
        folder = tmp_path / name
        return {"model": str(folder / "model"), "log_csv": str(folder / "log.csv"), "checkpoints": str(folder / "ckpt")}

    torch.set_num_threads(1)
    run_pretrain(settings=settings, inputs=inputs, outputs=outputs("a"))  # uninterrupted, in this process

    # 20 train triples, batch 4: 5 steps an epoch; the signal arrives after step 7 = epoch 2, step 2
    marker, spec = tmp_path / "marker", tmp_path / "call.json"
    log = tmp_path / "b" / "job.log"
    spec.write_text(json.dumps({"settings": settings, "inputs": inputs, "outputs": outputs("b"), "log": str(log),
                                "signal_at": 7, "marker": str(marker)}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LPBERT_GPU_COUNT": "0"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(spec)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), child.communicate()[0][-3000:]
    child.send_signal(signal.SIGTERM)
    output = child.communicate(timeout=120)[0]
    assert child.returncode == preemption.EXIT_CODE, output[-3000:]
    progress = json.loads((tmp_path / "b" / "ckpt" / "last" / "state.json").read_text())["progress"]
    assert progress["epoch"] == 1 and progress["partial"]["epoch"] == 2 and progress["partial"]["step"] == 2
    assert not Path(outputs("b")["model"]).exists()
    assert "PREEMPTED: stopped on SIGTERM" in log.read_text()

    spec.write_text(json.dumps({"settings": settings, "inputs": inputs, "outputs": outputs("b"), "log": str(log),
                                "signal_at": -1, "marker": str(marker)}))
    rerun = subprocess.run([sys.executable, "-c", CHILD, str(spec)], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in log.read_text() and "step 2 of epoch 2" in log.read_text()
    assert _rows(tmp_path / "b" / "log.csv") == _rows(tmp_path / "a" / "log.csv")
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "checkpoint_bytes=" in log.read_text()


# ---------------------------------------------------------------- two ranks: one rank gets the signal

def _two_rank_worker(rank: int, port: int, enc_dir: str, out: str) -> None:
    """Each rank: an uninterrupted 2-rank cross-encoder run, then one where only rank 1 is signalled after epoch 2's
    first step (the ranks agree every SYNC_EVERY = 2 steps), then the rerun."""
    import torch.distributed as dist
    from transformers import AutoModel

    from lpbert_core.baselines import cross_encoder_loop as loop

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    preemption.SYNC_EVERY = 2
    tok = load_tokenizer(enc_dir)
    kg, cpu, out = _cross_kg(tok), torch.device("cpu"), Path(out)
    real, steps = loop.optimizer_step, [0]

    def step_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        steps[0] += 1
        if rank == 1 and steps[0] == 6:
            preemption.request()

    def run(name):
        return loop.train_cross_encoder(kg, AutoModel.from_pretrained(enc_dir), tok, _cross_cfg(),
                                        out / name / "model", out / name / "log.csv", out / name / "ckpt", cpu,
                                        log=lambda s: None)

    run("a")
    loop.optimizer_step = step_then_signal
    try:
        run("b")
        raise AssertionError("not preempted")
    except preemption.Preempted:
        (out / f"preempted-rank{rank}-after-{steps[0]}").touch()
    preemption.clear()
    loop.optimizer_step = real
    run("b")
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_stop_together_when_one_is_signalled(tiny_encoder_dir, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_two_rank_worker, args=(port, tiny_encoder_dir, str(tmp_path)), nprocs=2, join=True)
    # both stopped after step 7 (epoch 2, step 2: the first agreement after rank 1's signal), rank 0 saved there
    assert sorted(p.name for p in tmp_path.glob("preempted-*")) == ["preempted-rank0-after-7",
                                                                   "preempted-rank1-after-7"]
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed 2-rank run = the uninterrupted one
    la, lb = (list(csv.DictReader(open(tmp_path / x / "log.csv"))) for x in "ab")
    assert [float(r["loss"]) for r in la] == pytest.approx([float(r["loss"]) for r in lb], rel=1e-12)
