"""Tests of the runner `main.py`: flags, bad inputs, checkpoints and exact resume, evaluation/attack modes,
TensorBoard tags, `--save-adv` round trip, and `torchrun` on CPU.

Runs on tiny synthetic datasets (a few images per class at 32x32 crops) so every case takes seconds.
    python -m pytest tests/test_main.py
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import custom_dataloader
import main as runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--img-size", "32", "-b", "8", "-j", "0", "--use-simplenet", "--lr", "0.05", "--seed", "3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-class synthetic dataset in MiniPlaces layout (8 train, 4 val images per class)."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    custom_dataloader.build_synthetic_dataset(root, seed=1, num_classes=4, train_per_class=8, val_per_class=4,
                                              test_per_class=1)
    return str(root)


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def run_cli(argv, capsys):
    """Run `main.cli(argv)` in this process; returns (exit code, stdout, stderr)."""
    code = runner.cli(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(argv, timeout=300, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py")] + argv, capture_output=True, text=True,
                          timeout=timeout, cwd=kw.pop("cwd", ROOT), env=env, **kw)


def final_acc(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("******Acc@1")]
    assert lines, f"no final ******Acc@1 line in:\n{stdout}"
    return lines[-1]


def run_folders(log_dir):
    return sorted(glob.glob(os.path.join(str(log_dir), "*_*")))


# ----------------------------------------------------------------------------- flags
@pytest.mark.parametrize("flag,expected", [(["--pgd"], True), (["--pgd=True"], True), (["--pgd=False"], False),
                                           (["--pgd=false"], False), ([], False)])
def test_pgd_flag_forms(flag, expected):
    args = runner.get_args_parser().parse_args(["data"] + flag)
    assert args.pgd is expected


def test_help_states_each_default_once(capsys):
    """`main.py -h`: a help text that states its own default gets no second `(default: None)`."""
    with pytest.raises(SystemExit) as info:
        runner.get_args_parser().parse_args(["-h"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: join them
    assert info.value.code == 0
    assert "(default: None)" not in out and "(default: False)" not in out, out
    assert out.count("(default: 60 on a data folder") == 1 and "(default: 0.9)" in out, out
    assert "(default: 0)" in out, "a numeric default of 0 (--seed) is still shown"


def test_warmup_cosine_schedule():
    values = [runner.warmup_cosine(s, warmup_steps=10, total_steps=110) for s in range(110)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:10])), "warmup must rise linearly"
    assert all(a >= b for a, b in zip(values[10:], values[11:])), "cosine must decay"
    assert values[60] == pytest.approx(0.5, abs=1e-9) and values[-1] < 0.01


# ----------------------------------------------------------------------------- bad inputs
BAD_LIST_CASES = {
    "line without label": ("val.txt", lambda lines: [lines[0].split()[0]] + lines[1:], "val.txt:1"),
    "negative label": ("val.txt", lambda lines: [lines[0].split()[0] + " -1"] + lines[1:], "val.txt:1"),
    "out-of-range label": ("val.txt", lambda lines: lines[:1] + [lines[1].split()[0] + " 99"] + lines[2:],
                           "val.txt:2"),
    "non-integer label": ("train.txt", lambda lines: lines[:2] + [lines[2].split()[0] + " x"] + lines[3:],
                          "train.txt:3"),
}


@pytest.mark.parametrize("case", sorted(BAD_LIST_CASES))
def test_bad_list_lines_give_one_clear_message(case, tiny, tmp_path, capsys):
    list_name, edit, where = BAD_LIST_CASES[case]
    data = copy_dataset(tiny, tmp_path / "data")
    path = os.path.join(data, list_name)
    lines = open(path).read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(edit(lines)) + "\n")
    code, out, err = run_cli([data, "--epochs", "1", "--log-dir", str(tmp_path / "logs")] + FAST, capsys)
    assert code != 0, f"{case}: expected a non-zero exit"
    assert where in err and "Traceback" not in err, f"{case}: message should name {where}; got {err!r}"
    assert len(err.strip().splitlines()) == 1, f"{case}: expected one line, got {err!r}"


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_names_the_file(workers, tiny, tmp_path, capsys):
    data = copy_dataset(tiny, tmp_path / "data")
    rel = open(os.path.join(data, "train.txt")).readline().split()[0]
    with open(os.path.join(data, "images", rel), "wb") as f:
        f.write(b"this is not a jpeg")
    argv = [data, "--epochs", "1", "--log-dir", str(tmp_path / "logs")] + FAST + ["-j", str(workers), "-b", "32"]
    code, out, err = run_cli(argv, capsys)
    assert code != 0 and rel.split("/")[-1] in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_missing_image_and_missing_list(tiny, tmp_path, capsys):
    data = copy_dataset(tiny, tmp_path / "data")
    rel = open(os.path.join(data, "val.txt")).readline().split()[0]
    os.remove(os.path.join(data, "images", rel))
    code, _, err = run_cli([data, "-e"] + FAST, capsys)
    assert code != 0 and rel in err and "not found" in err, err
    os.remove(os.path.join(data, "val.txt"))
    code, _, err = run_cli([data, "-e"] + FAST, capsys)
    assert code != 0 and "val.txt" in err and "Traceback" not in err, err


def test_missing_data_folder_points_to_download_script(tmp_path, capsys):
    code, _, err = run_cli([str(tmp_path / "nowhere"), "--log-dir", str(tmp_path / "logs")] + FAST, capsys)
    assert code != 0 and "download_dataset.sh" in err, err
    assert not run_folders(tmp_path / "logs"), "no run folder should be made for a failed start"


@pytest.mark.parametrize("argv,needle", [
    (["-e", "-a"], "-e/--evaluate and -a/--attack"),
    (["--lr", "-1"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["-b", "0"], "--batch-size"),
    (["--lr", "nan"], "--lr"),
    (["--adv-fraction", "1.5"], "--adv-fraction"),
    (["--attack-eps", "-0.1"], "--attack-eps"),
    (["--resume", "/no/such/checkpoint.pth.tar"], "no checkpoint file"),
    (["--use-vit", "--use-resnet18"], "at most one model flag"),
    (["--use-vit", "--use-custom-conv"], "at most one model flag"),
    (["--save-adv", "x"], "--save-adv needs -a"),
])
def test_bad_flags_give_one_clear_message(argv, needle, tiny, capsys):
    code, _, err = run_cli([tiny] + argv, capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_unparsable_number_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        runner.get_args_parser().parse_args(["--lr", "fast"])
    assert info.value.code == 2 and "invalid float value" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the no-GPU message cannot show")
def test_gpu_flag_without_gpu(tiny, capsys):
    code, _, err = run_cli([tiny, "--gpu", "0", "-j", "0"], capsys)
    assert code == 2 and "no CUDA GPU" in err and "--gpu -1" in err, err


def test_not_implemented_part_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    import student_code

    def stub(conv_op=None, num_classes=100):
        raise NotImplementedError("Part 1b-iii: implement default_cnn_model (see its docstring)")

    monkeypatch.setattr(student_code, "default_cnn_model", stub)
    argv = [tiny, "--img-size", "32", "-j", "0", "--log-dir", str(tmp_path / "logs")]
    code, _, err = run_cli(argv, capsys)
    assert code == 3 and "not implemented yet: Part 1b-iii" in err and "Traceback" not in err, err


def stub_parts(monkeypatch, *parts):
    """Make the pieces of `parts` ("2a", "3a", "3b") raise NotImplementedError as the release's stubs do."""
    import student_code

    def stub(message):
        def raising(*args, **kwargs):
            raise NotImplementedError(f"Part {message} (see its docstring)")
        return raising

    pieces = {"2a": [(student_code.Attention, "forward", "2a: implement Attention.forward")],
              "3a": [(student_code, "default_attack", "3a: implement default_attack"),
                     (student_code, "default_attention", "3a: implement default_attention")],
              "3b": [(student_code, "adversarial_training_step", "3b: implement adversarial_training_step")]}
    for part in parts:
        for owner, name, message in pieces[part]:
            monkeypatch.setattr(owner, name, stub(message))


def notes(err):
    return [line for line in err.splitlines() if line.startswith("note:")]


def test_missing_optional_part_skips_the_final_attack_with_a_note(tiny, tmp_path, capsys, monkeypatch):
    """Part 3 not done yet: the demo trains, saves and ends with exit 0 and one note naming Part 3a
    instead of failing at its final attack (the embedded dataset is replaced by the tiny one)."""
    stub_parts(monkeypatch, "3a", "3b")
    monkeypatch.setattr(custom_dataloader, "ensure_synthetic_dataset", lambda *a, **k: tiny)
    argv = ["--epochs", "1", "--log-dir", str(tmp_path / "logs")] + FAST
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    final_acc(out)
    assert "under attack" not in out
    [note] = notes(err)
    assert "final attack" in note and "Part 3a" in note, err
    [run] = run_folders(tmp_path / "logs")
    assert os.path.isfile(os.path.join(run, "model_best.pth.tar"))


def test_library_attack_needs_no_part_3a(tiny, tmp_path, capsys, monkeypatch):
    """`-a apgd-ce` runs torchattacks' APGD, not the student's PGD: Part 3a missing must not stop it."""
    stub_parts(monkeypatch, "3a")
    skipped = runner.check_parts(runner.get_args_parser().parse_args([tiny, "-a", "apgd-ce"] + FAST), False)
    assert skipped == {}
    with pytest.raises(NotImplementedError, match="Part 3a.*needed by -a"):
        runner.check_parts(runner.get_args_parser().parse_args([tiny, "-a"] + FAST), False)


def test_missing_saliency_skips_the_maps_of_eval_vis(tiny, tmp_path, capsys, monkeypatch):
    stub_parts(monkeypatch, "3a")
    code, out, err = run_cli([tiny, "-e", "-v", "--log-dir", str(tmp_path / "logs")] + FAST, capsys)
    assert code == 0, err
    final_acc(out)
    [note] = notes(err)
    assert "saliency" in note and "Part 3a" in note, err


@pytest.mark.parametrize("flags,parts,needles", [
    (["-a"], ("3a",), ["Part 3a", "needed by -a/--attack"]),
    (["--pgd"], ("3b",), ["Part 3b", "needed by --pgd"]),
    (["--pgd"], ("3a", "3b"), ["Part 3a", "Part 3b", "needed by --pgd"]),
    (["--use-vit"], ("2a",), ["Part 2a", "needed by --use-vit"]),
], ids=["attack", "pgd-3b", "pgd-3a-3b", "vit"])
def test_missing_needed_part_fails_before_training(flags, parts, needles, tiny, tmp_path, capsys, monkeypatch):
    """A part the job needs is checked before any training: exit 3, one line naming every missing part and
    the flag that needs it, no run folder."""
    stub_parts(monkeypatch, *parts)
    argv = [tiny, "--epochs", "1", "--log-dir", str(tmp_path / "logs")] + \
        [a for a in FAST if a != "--use-simplenet" or "--use-vit" not in flags] + flags
    t0 = time.time()
    code, out, err = run_cli(argv, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 3 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("error: not implemented yet: "), err
    for needle in needles:
        assert needle in err, err
    assert not run_folders(tmp_path / "logs") and "epoch 1/1" not in out, "the run started before failing"
    assert time.time() - t0 < 30


def test_missing_resnet_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(runner.UsageError, match="resnet18-f37072fd.pth.*--pretrained-weights"):
        runner.build_resnet18(5)


# ----------------------------------------------------------------------------- training, checkpoints
@pytest.mark.parametrize("num_classes", [3, 7])
def test_trains_on_any_class_count(num_classes, tmp_path, capsys):
    data = tmp_path / "data"
    custom_dataloader.build_synthetic_dataset(data, seed=2, num_classes=num_classes, train_per_class=4,
                                              val_per_class=2, test_per_class=1)
    code, out, err = run_cli([str(data), "--epochs", "1", "--log-dir", str(tmp_path / "logs")] + FAST, capsys)
    assert code == 0, err
    final_acc(out)
    [run] = run_folders(tmp_path / "logs")
    assert os.path.basename(run).startswith("simplenet_") and " " not in run and ":" not in run
    ckpt = torch.load(os.path.join(run, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"epoch", "model_arch", "state_dict", "best_acc1", "optimizer", "scheduler"}
    assert ckpt["state_dict"]["fc.weight"].shape[0] == num_classes and ckpt["epoch"] == 1
    assert os.path.isfile(os.path.join(run, "model_best.pth.tar"))
    assert os.path.isfile(os.path.join(run, "args.json"))
    assert not glob.glob(os.path.join(run, "*.tmp*")), "temporary checkpoint files left behind"


def read_scalars_and_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run, size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"]), set(acc.Tags()["images"])


@pytest.mark.part("3a")  # needs your Part 3 code (points summary)
def test_tensorboard_tags_and_eval_modes(tiny, tmp_path, capsys):
    logs = str(tmp_path / "logs")
    code, out, err = run_cli([tiny, "--epochs", "2", "--log-dir", logs] + FAST, capsys)
    assert code == 0, err
    [run] = run_folders(logs)
    scalars, _ = read_scalars_and_images(run)
    assert {"data/training_loss", "data/learning_rate", "data/top1_accuracy", "data/top5_accuracy"} <= scalars
    best = os.path.join(run, "model_best.pth.tar")

    code, out, err = run_cli([tiny, "-e", "-v", "--tta", "--resume", best, "--log-dir", logs] + FAST, capsys)
    assert code == 0, err
    final_acc(out)
    eval_run = [r for r in run_folders(logs) if r != run][-1]
    assert "Image/Image_Atten" in read_scalars_and_images(eval_run)[1], f"no saliency maps logged: {err}"

    code, out, err = run_cli([tiny, "-a", "-v", "--resume", best, "--log-dir", logs] + FAST, capsys)
    assert code == 0, err
    assert "under attack" in final_acc(out) and "attack success rate" in out
    attack_run = sorted(run_folders(logs), key=os.path.getmtime)[-1]
    scalars, images = read_scalars_and_images(attack_run)
    assert {"Image/Org_Image", "Image/Adv_Image"} <= images
    assert {"data/adv_top1_accuracy", "data/attack_success_rate"} <= scalars


@pytest.mark.part("3a")  # needs your Part 3 code (points summary)
def test_save_adv_png_round_trip(tiny, tmp_path, capsys):
    """Accuracy on the saved 8-bit PNGs matches the in-memory attacked accuracy (lossless up to rounding)."""
    logs = str(tmp_path / "logs")
    code, _, err = run_cli([tiny, "--epochs", "3", "--log-dir", logs] + FAST, capsys)
    assert code == 0, err
    best = os.path.join(run_folders(logs)[0], "model_best.pth.tar")
    adv_dir = str(tmp_path / "adv")
    code, out, err = run_cli([tiny, "-a", "--save-adv", adv_dir, "--resume", best, "--log-dir", logs] + FAST,
                             capsys)
    assert code == 0, err
    in_memory = float(final_acc(out).split()[1])
    pngs = glob.glob(os.path.join(adv_dir, "images", "**", "*.png"), recursive=True)
    assert len(pngs) == len(open(os.path.join(tiny, "val.txt")).read().split("\n")) - 1
    code, out, err = run_cli([adv_dir, "-e", "--resume", best, "--log-dir", logs] + FAST, capsys)
    assert code == 0, err
    reloaded = float(final_acc(out).split()[1])
    # 16 images: one image's flip through 8-bit rounding moves accuracy by 6.25 points
    assert abs(reloaded - in_memory) <= 6.25 + 1e-6, (in_memory, reloaded)


def test_resume_after_sigkill_matches_uninterrupted_run(tiny, tmp_path):
    """Kill a run with SIGKILL once its first checkpoint exists, resume it, and compare with a run that was
    never interrupted: same final validation accuracy and identical weights."""
    common = [tiny, "--epochs", "3"] + FAST
    full = run_subprocess(common + ["--log-dir", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr

    logs = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py")] + common + ["--log-dir", str(logs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 240
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = glob.glob(str(logs / "*" / "checkpoint.pth.tar"))
        if found:
            ckpt = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "the run never wrote a checkpoint"
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert epoch < 3, "the run finished before it could be killed; make it longer"

    resumed = run_subprocess(common + ["--log-dir", str(logs), "--resume", ckpt])
    assert resumed.returncode == 0, resumed.stderr
    assert final_acc(resumed.stdout) == final_acc(full.stdout)
    a = torch.load(glob.glob(str(tmp_path / "full" / "*" / "checkpoint.pth.tar"))[0], weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert b["epoch"] == a["epoch"] == 3
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), f"{name} differs after resume"


def test_torchrun_two_processes_on_cpu(tiny, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", os.path.join(ROOT, "main.py"), tiny, "--gpu", "-1",
           "--epochs", "1", "--log-dir", str(tmp_path / "logs")] + FAST[:-2]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "x2 processes" in res.stdout and res.stdout.count("******Acc@1") == 1, res.stdout
    [run] = run_folders(tmp_path / "logs")  # only rank 0 makes a run folder and saves
    assert os.path.isfile(os.path.join(run, "checkpoint.pth.tar"))


@pytest.mark.part("1b-iv")  # needs your Part 1 code (points summary)
def test_resnet18_with_custom_conv_matches(tmp_path):
    """`--use-resnet18 --use-custom-conv`: every conv swapped for CustomConv2d, same function."""
    import torchvision
    import student_code

    path = str(tmp_path / "r18.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    args = runner.get_args_parser().parse_args(["--use-resnet18", "--use-custom-conv", "--pretrained-weights", path])
    runner.validate_args(args)
    swapped = runner.build_model(args, 5).eval()
    assert runner.model_name(args) == "resnet18_custom_conv"
    assert not any(type(m) is torch.nn.Conv2d for m in swapped.modules())
    assert sum(isinstance(m, student_code.CustomConv2d) for m in swapped.modules()) == 20
    args.use_custom_conv = False
    plain = runner.build_model(args, 5).eval()
    plain.fc.load_state_dict(swapped.fc.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (swapped(x) - plain(x)).abs().max().item()
    assert diff < 1e-4, f"max abs diff {diff}"


@pytest.mark.part("3b")  # needs your Part 3 code (points summary)
def test_adversarial_training_runs(tiny, tmp_path, capsys):
    for extra in (["--pgd"], ["--pgd=True", "--fgsm", "--adv-fraction", "0.5"]):
        code, out, err = run_cli([tiny, "--epochs", "1", "--log-dir", str(tmp_path / "logs")] + FAST + extra, capsys)
        assert code == 0, err
        final_acc(out)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A ResNet-18 state_dict made here (random weights; torchvision's ImageNet file cannot be downloaded)."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


@pytest.mark.parametrize("flags,arch", [  # the rubric item each case needs (points summary), given code otherwise
    pytest.param([], "default_cnn", id="default-cnn", marks=pytest.mark.part("1b-iii")),
    pytest.param(["--use-simplenet", "--use-custom-conv"], "simplenet_custom_conv", id="simplenet-custom-conv",
                 marks=pytest.mark.part("1b-i")),
    pytest.param(["--use-custom-conv"], "custom_conv", id="custom-conv", marks=pytest.mark.part("1b-iii")),
    pytest.param(["--use-vit"], "vit", id="vit", marks=pytest.mark.part("2b")),
    pytest.param(["--use-resnet18"], "resnet18", id="resnet18"),
    pytest.param(["--use-simplenet", "--clip-grad", "0.5"], "simplenet", id="sgd-clip-grad"),
])
def test_every_model_flag_trains_end_to_end(flags, arch, tiny, resnet18_file, tmp_path, capsys):
    """One epoch of each model the runner offers, with its own optimizer (AdamW and gradient clipping for
    the ViT), ending with the final accuracy line and a checkpoint of the right architecture."""
    if "--use-resnet18" in flags:
        flags = flags + ["--pretrained-weights", resnet18_file]
    argv = [tiny, "--epochs", "1", "--log-dir", str(tmp_path / "logs"), "--img-size", "32", "-b", "8", "-j", "0",
            "--seed", "3"] + flags
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    final_acc(out)
    [run] = run_folders(tmp_path / "logs")
    ckpt = torch.load(os.path.join(run, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)
    assert ckpt["model_arch"] == arch, f"checkpoint architecture {ckpt['model_arch']!r}, expected {arch!r}"


@pytest.mark.parametrize("vit", [False, True], ids=["sgd", "adamw"])
def test_clip_grad_clips_before_every_step(vit):
    """`--clip-grad C`: the gradient norm the optimizer steps with is at most C (a step pre-hook)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    argv = ["--clip-grad", "0.25", "--lr", "0.1"] + (["--use-vit"] if vit else ["--use-simplenet"])
    args = runner.get_args_parser().parse_args(argv)
    runner.fill_defaults(args, embedded=True)
    optimizer = runner.build_optimizer(args, model)
    loss = 100 * model(torch.randn(16, 4)).square().sum()
    loss.backward()
    raw = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    optimizer.step()
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    assert raw > 0.25 and clipped == pytest.approx(0.25, rel=1e-4), \
        f"gradient norm {raw:.3g} before the step, {clipped:.3g} after clipping (expected 0.25)"


FAST_PATH = ["--decoded-cache", "--gpu-augment", "--amp", "--channels-last", "--fused-optim"]


@pytest.fixture()
def kit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIPLACES_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("levers", [["--decoded-cache"], FAST_PATH], ids=["cache-opencv", "all-levers"])
def test_fast_path_trains_and_saves_a_plain_checkpoint(levers, tiny, kit_cache, tmp_path, capsys):
    """The fast path's levers on CPU: a run trains, ends with the final line, and its checkpoint is the
    plain model's (no wrapper prefixes) and loads into a run without the levers (`-e`)."""
    logs = str(tmp_path / "logs")
    code, out, err = run_cli([tiny, "--epochs", "2", "--log-dir", logs] + FAST + levers, capsys)
    assert code == 0, err
    final_acc(out)
    assert any(p.suffix == ".u8" for p in (kit_cache / "decoded").iterdir()), "no decoded cache was written"
    [run] = run_folders(logs)
    ckpt = torch.load(os.path.join(run, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)
    bad = [k for k in ckpt["state_dict"] if k.startswith(("module.", "_orig_mod."))]
    assert not bad, f"wrapper prefixes in the checkpoint: {bad[:3]}"
    if "--fused-optim" in levers:
        assert any(g.get("fused") or g.get("foreach") for g in ckpt["optimizer"]["param_groups"])
    code, out, err = run_cli([tiny, "-e", "--resume", os.path.join(run, "model_best.pth.tar"), "--log-dir", logs]
                             + FAST, capsys)
    assert code == 0, err


def test_gpu_augment_resume_is_exact(tiny, kit_cache, tmp_path, capsys, monkeypatch):
    """--gpu-augment keeps `--resume` exact: resuming from the epoch-1 checkpoint of a 3-epoch run ends
    with the same weights as the uninterrupted run (the device batches are seeded per epoch)."""
    saved = []
    original = runner.save_atomic

    def keep_epoch_one(obj, path):
        original(obj, path)
        if obj["epoch"] == 1 and path.endswith("checkpoint.pth.tar"):
            original(obj, str(tmp_path / "epoch1.pth.tar"))
            saved.append(path)

    monkeypatch.setattr(runner, "save_atomic", keep_epoch_one)
    argv = [tiny, "--epochs", "3", "--use-simplenet"] + FAST + FAST_PATH
    code, out, err = run_cli(argv + ["--log-dir", str(tmp_path / "full")], capsys)
    assert code == 0 and saved, err
    full_line = final_acc(out)
    code, out, err = run_cli(argv + ["--log-dir", str(tmp_path / "resumed"), "--resume",
                                     str(tmp_path / "epoch1.pth.tar")], capsys)
    assert code == 0, err
    assert final_acc(out) == full_line
    a = torch.load(glob.glob(str(tmp_path / "full" / "*" / "checkpoint.pth.tar"))[0], weights_only=True)
    b = torch.load(glob.glob(str(tmp_path / "resumed" / "*" / "checkpoint.pth.tar"))[0], weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), \
            f"{name} differs after resume (largest difference {(tensor.float() - b['state_dict'][name].float()).abs().max()})"


def test_gpu_augment_refuses_a_pipeline_it_cannot_run(tiny, kit_cache, tmp_path, capsys, monkeypatch):
    import custom_augment
    import student_code

    monkeypatch.setattr(student_code, "get_train_transforms", lambda img_size=128: custom_augment.Compose(
        [custom_augment.Scale(img_size), custom_augment.CenterCrop(img_size), custom_augment.ToTensor()]))
    code, _, err = run_cli([tiny, "--epochs", "1", "--gpu-augment", "--log-dir", str(tmp_path / "logs")] + FAST,
                           capsys)
    assert code == 2 and err.startswith("error:") and "--gpu-augment" in err and "OpenCV path" in err, err


def test_torchrun_two_processes_with_the_decoded_cache(tiny, tmp_path):
    """DDP with --gpu-augment on CPU: local rank 0 builds the cache while the other waits (one entry per
    split), each rank trains on its shard (see test_decoded_cache.py), rank 0 alone writes the run folder."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", os.path.join(ROOT, "main.py"), tiny, "--gpu", "-1",
           "--epochs", "1", "--log-dir", str(tmp_path / "logs"), "--gpu-augment"] + FAST[:-2]
    env = dict(os.environ, OMP_NUM_THREADS="1", MINIPLACES_KIT_CACHE=str(tmp_path / "cache"))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "x2 processes" in res.stdout and res.stdout.count("******Acc@1") == 1, res.stdout
    metas = glob.glob(str(tmp_path / "cache" / "decoded" / "*.json"))
    assert len(metas) == 2, f"expected one cache entry per split, got {metas}"
    [run] = run_folders(tmp_path / "logs")
    assert os.path.isfile(os.path.join(run, "checkpoint.pth.tar"))


@pytest.mark.slow  # torch.compile builds C++ kernels: about 3 minutes on 2 loaded cores
def test_compile_trains_and_saves_a_plain_checkpoint(tiny, kit_cache, tmp_path, capsys):
    logs = str(tmp_path / "logs")
    code, out, err = run_cli([tiny, "--epochs", "1", "--log-dir", logs, "--compile", "--gpu-augment"] + FAST, capsys)
    assert code == 0, err
    final_acc(out)
    [run] = run_folders(logs)
    ckpt = torch.load(os.path.join(run, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)
    bad = [k for k in ckpt["state_dict"] if k.startswith(("module.", "_orig_mod."))]
    assert not bad, f"wrapper prefixes in the checkpoint: {bad[:3]}"
