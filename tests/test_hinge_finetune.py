"""experiments/hinge_finetune_resnet18.py end to end on a tiny stand-in (a width-4 ResNet18, random-noise JPEGs in
CIFAR-10's layout): every stage runs for real in seconds — splits, original tables, LUT warm start, live training with
distillation, calib selection, executed test evaluation, the re-chosen LUT, the references, records and figures,
resume after a kill, and the combine step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from _archives import noise_jpeg_archive

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = ["0.2", "0.5", "1.0"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("ADAINF_CACHE", str(home / "cache"))
    monkeypatch.chdir(home)
    sys.path.insert(0, str(ROOT / "experiments"))
    yield
    sys.path.remove(str(ROOT / "experiments"))


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> dict[str, Path]:
    """A CIFAR-10-layout archive (12 train / 4 test noise images per class) and a width-4 ResNet18 checkpoint."""
    from adainf_env.backbones import resnet18_cifar
    from adainf_env.data import CIFAR10_CLASSES

    d = tmp_path_factory.mktemp("inputs")
    noise_jpeg_archive(d / "c10.tgz", CIFAR10_CLASSES, {"train": 12, "test": 4})
    torch.manual_seed(0)
    torch.save(resnet18_cifar(width=4).state_dict(), d / "tiny.pt")
    return {"data": d / "c10.tgz", "checkpoint": d / "tiny.pt"}


def _argv(inputs, out, finetune, *extra):
    return ["--finetune", finetune, "--data", str(inputs["data"]), "--checkpoint", str(inputs["checkpoint"]),
            "--width", "4", "--num-calib", "40", "--fit-images", "64", "--batch-size", "16", "--epochs", "2",
            "--calib-images", "40", "--select-images", "20", "--test-images", "40", "--eval-batch", "64",
            "--budgets", *BUDGETS, "--out", str(out), "--checkpoint-every", "1", *extra]


def test_script_smoke_lora_and_combine(tiny_inputs, tmp_path):
    import hinge_finetune_resnet18 as script

    s = script.main(_argv(tiny_inputs, tmp_path / "lora", "lora", "--finetuned-test-table", "True",
                          "--baselines", "lut", "lut_upper", "hinge"))
    run = tmp_path / "lora"
    for f in ("config.json", "results.json", "results.csv", "summary.md", "run_summary.json", "accuracy_vs_budget.png",
              "backbone_finetuned.pt", "policy.pt", "table_calib.npz", "table_test.npz", "checkpoints/last.pt"):
        assert (run / f).is_file(), f
    assert list((run / "tensorboard").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["finetune"] == "lora" and "commit" in cfg["git"]
    recs = json.loads((run / "results.json").read_text())
    names = {r["scheduler"] for r in recs}
    assert names == {"hinge_live_lora", "lut_refit_lora", "lut", "lut_upper", "hinge"}
    for r in recs:
        assert r["num_requests"] == 40 and {"accuracy", "mean_cost", "overrun_rate", "backbone_weights"} <= set(r)
        if r["scheduler"] == "hinge_live_lora":  # hard budgets: g's executed plans never overrun
            assert r["overrun_rate"] == 0 and r["mean_cost"] <= r["budget"] + 1e-9
            assert r["backbone_weights"] == "finetuned" and r["evaluation"] == "executed"
    assert s["lora_layers_merged"] > 0  # inference runs the merged weights: the original MACs
    assert 0 <= s["selected_step"] <= s["steps"] == 8
    assert set(s["full_plan_test_accuracy"]) == {"original", "finetuned"}
    # the fine-tuned backbone's table is a real outcome table other schedulers can use
    from adainf_env.tables.outcomes import load_table

    t = load_table(run / "table_test.npz")
    assert t.num_plans == 256 and t.num_samples == 40

    s2 = script.main(_argv(tiny_inputs, tmp_path / "none", "none", "--baselines", "lut", "--seed", "1",
                           "--no-plots", "--policy-init", "random"))
    assert s2["steps"] == 8
    comb = script.main(["--combine", str(run), str(tmp_path / "none"), "--out", str(tmp_path / "both")])
    assert (tmp_path / "both" / "accuracy_vs_budget.png").is_file()
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    lut = [r for r in summary if r["scheduler"] == "lut"]
    assert len(lut) == len(BUDGETS) and all(r["n_seeds"] == 2 for r in lut)  # seeds 0 and 1
    assert len(comb["runs"]) == 2


def test_resume_after_kill_equals_uninterrupted(tiny_inputs, tmp_path):
    from adainf_lab.cli import parse_config
    from adainf_lab.finetune import FinetuneConfig, run_finetune

    extra = ("--baselines", "lut", "--no-plots")
    ref = run_finetune(parse_config(FinetuneConfig, _argv(tiny_inputs, tmp_path / "ref", "full", *extra)))

    class Killed(Exception):
        pass

    def kill(step):
        if step == 5:  # mid-epoch 2 (4 steps per epoch), after the step-5 checkpoint was written
            raise Killed

    cfg = parse_config(FinetuneConfig, _argv(tiny_inputs, tmp_path / "run", "full", *extra))
    with pytest.raises(Killed):
        run_finetune(cfg, on_step=kill)
    assert not (tmp_path / "run" / "results.json").exists()
    again = run_finetune(parse_config(FinetuneConfig, _argv(tiny_inputs, tmp_path / "run", "full", *extra, "--resume")))
    assert again["steps"] == ref["steps"] == 8 and again["selected_step"] == ref["selected_step"]
    a = torch.load(tmp_path / "ref" / "backbone_finetuned.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "backbone_finetuned.pt", weights_only=True)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6 * (1 + a[k].float().abs().max())), k
    ra = {(r["scheduler"], r["budget"]): r["accuracy"] for r in json.loads((tmp_path / "ref" / "results.json").read_text())}
    rb = {(r["scheduler"], r["budget"]): r["accuracy"] for r in json.loads((tmp_path / "run" / "results.json").read_text())}
    assert ra == pytest.approx(rb)
    # a different configuration in the same run directory is refused before anything is written, not silently mixed
    from adainf_env.errors import ConfigError

    with pytest.raises(ConfigError, match="other arguments"):
        run_finetune(parse_config(FinetuneConfig, _argv(tiny_inputs, tmp_path / "run", "full", *extra,
                                                        "--lam", "3", "--resume"), raise_errors=True))


@pytest.mark.parametrize("argv, message", [
    (["--finetune", "full"], "--data"),
    (["--finetune", "half"], "half"),
    (["--combine", "."], "--combine needs --out"),
    (["--data", "x.tgz", "--checkpoint", "x.pt", "--baselines", "ppo"], "baselines"),
])
def test_bad_input_is_one_error_line(argv, message, capsys):
    import hinge_finetune_resnet18 as script

    from adainf_lab.cli import run_script

    with pytest.raises(SystemExit) as e:
        run_script(script.main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
