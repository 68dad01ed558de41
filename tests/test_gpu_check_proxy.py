"""The prepared GPU call of issue #25 (tools/gpu_check.py --proxy-calibration): the readings it trains are the
proxy's own (configs/proxy.yaml), each at two full WN18RR epochs at the paper's length and batch, with the proxy's dev
diagnostics, and the full test split; the settings resolve (every check of settings.check_finetune passes)."""
from conftest import load_script
from lpbert_core.config.resolve import JobSettings


def test_proxy_calibration_config_resolves_to_two_full_epochs():
    gpu_check = load_script("tools/gpu_check.py", "gpu_check")
    config = gpu_check.proxy_calibration_config(gpu_check.PROXY_READINGS, smoke=False)
    jobs = JobSettings(config)
    for name in gpu_check.PROXY_READINGS:
        cfg = jobs.resolve("finetune", "WN18RR", f"gpu-{name}")
        assert cfg.epochs == 2 and cfg.step_budget is None and cfg.dev_diagnostics
        assert cfg.max_length == 128 and cfg.batch_size == 64  # config.yaml's WN18RR values, not the proxy's 32
    plus = jobs.resolve("finetune", "WN18RR", "gpu-proxy-plus-frozen-lr5e4")
    assert plus.loss == "infonce" and plus.frozen_entity_tower and plus.all_entity_negatives
    assert plus.lr_encoder == 5e-4
    assert jobs.resolve("score", "WN18RR", "gpu-proxy-paper").test_subsample is None
    smoke = JobSettings(gpu_check.proxy_calibration_config(["proxy-paper"], smoke=True))
    assert smoke.resolve("finetune", "WN18RR", "gpu-proxy-paper").train_subsample == 64
