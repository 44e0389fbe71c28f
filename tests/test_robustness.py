"""Tests of `robustness.py` (`main.py -a` with `--attack apgd-ce|autoattack`, `--eps-sweep`, `--steps-sweep`,
`--transfer-from`): the torchattacks attacks in the kit's normalized units (budget, valid range, model and
random state left as found), AutoAttack at least as strong as the student's PGD on the same model and batch,
sweep points against the runner's own clean and attacked accuracy, transfer numbers against white-box and
clean runs of each model (and against `-e` on the saved images), and the flag errors.

    python -m pytest tests/test_robustness.py
"""
import csv
import json
import os

import pytest
import torch
import torch.nn as nn

import custom_augment
import custom_dataloader
import main as runner
import robustness

FAST = ["--img-size", "32", "-b", "8", "-j", "0", "--lr", "0.05", "--seed", "3"]
SIMPLENET = FAST + ["--use-simplenet"]
pytestmark = pytest.mark.part("3a")  # needs your Part 3 code (points summary): the student's PGD


def small_model(seed=0, num_classes=5):
    """A small conv net with batch norm `(N, 3, 32, 32) -> (N, num_classes)`, fixed random weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, num_classes))


def normalized_batch(n=16, seed=0):
    """8-bit random images, normalized as the data pipeline does `(n, 3, 32, 32)`."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, 32, 32), generator=g).float() / 255
    mean, std = robustness.channel_stats("cpu")
    return (pixels - mean) / std


def model_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, model.training, \
        [(p.requires_grad, p.grad) for p in model.parameters()]


@pytest.mark.parametrize("name", ["apgd-ce", "autoattack"])
def test_library_attack_budget_range_and_side_effects(name):
    model = small_model()
    x = normalized_batch()
    with torch.no_grad():
        labels = model.eval()(x).argmax(1)
    model.train()  # the attack must evaluate in eval mode and give the model back in train mode
    before = model_state(model)
    rng = torch.get_rng_state()
    eps = 0.05
    adv = robustness.LibraryAttack(name, eps, num_classes=5, seed=0).perturb(model, x, labels)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    diff = (adv - x).abs().max().item()
    assert diff <= eps + 1e-6, f"normalized L-inf distance {diff} > eps {eps}"
    std = torch.tensor(custom_augment.IMAGENET_STD).view(1, 3, 1, 1)
    pixel_diff = ((adv - x) * std).abs().max().item()
    assert pixel_diff <= eps * min(custom_augment.IMAGENET_STD) + 1e-6, \
        f"pixel L-inf distance {pixel_diff} > eps * min std {eps * min(custom_augment.IMAGENET_STD)}"
    low, high = (-torch.tensor(custom_augment.IMAGENET_MEAN) / std.flatten()), \
        ((1 - torch.tensor(custom_augment.IMAGENET_MEAN)) / std.flatten())
    assert (adv >= low.view(1, 3, 1, 1) - 1e-5).all() and (adv <= high.view(1, 3, 1, 1) + 1e-5).all(), \
        "adversarial images leave the valid image range"
    after = model_state(model)
    assert after[1] is True, "the model must be given back in train mode"
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]), "parameters or BN statistics changed"
    assert [(f, g) for f, g in after[2]] == [(True, None)] * len(after[2]), "requires_grad or .grad changed"
    assert torch.equal(rng, torch.get_rng_state()), "the global random state changed"
    with torch.no_grad():
        flipped = model.eval()(adv).argmax(1).ne(labels).float().mean().item()
    assert flipped > 0, f"{name} flipped no prediction at eps {eps}"


def test_autoattack_at_most_pgd_accuracy_on_the_same_batch():
    """On one model and batch (labels = the clean predictions, so every image starts correct), AutoAttack's
    accuracy is at most that of the student's PGD-10, least-likely and untargeted, at the same budget."""
    import student_code

    model = small_model(1).eval()
    x = normalized_batch(24, seed=1)
    with torch.no_grad():
        labels = model(x).argmax(1)
    eps = 0.02
    pgd = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=10, step_size=eps / 10, epsilon=eps)
    accs = {}
    with torch.no_grad():
        for mode, target in (("pgd least-likely", None), ("pgd untargeted", labels)):
            adv = pgd.perturb(model, x, target)
            accs[mode] = model(adv).argmax(1).eq(labels).float().mean().item() * 100
    for name in ("apgd-ce", "autoattack"):
        adv = robustness.LibraryAttack(name, eps, num_classes=5, seed=0).perturb(model, x, labels)
        with torch.no_grad():
            accs[name] = model(adv).argmax(1).eq(labels).float().mean().item() * 100
    assert max(accs["pgd least-likely"], accs["pgd untargeted"]) > 0, f"budget too large to compare: {accs}"
    assert accs["autoattack"] <= min(accs["pgd least-likely"], accs["pgd untargeted"]), accs
    assert accs["autoattack"] <= accs["apgd-ce"], f"AutoAttack runs APGD-CE first: {accs}"


def test_zero_budget_is_the_identity():
    x = normalized_batch(4)
    model = small_model()
    labels = torch.zeros(4, dtype=torch.long)
    for name in ("apgd-ce", "autoattack"):
        assert torch.equal(robustness.LibraryAttack(name, 0.0, 5).perturb(model, x, labels), x)


@pytest.mark.parametrize("text,cast,want", [("0,0.02, 0.1", float, [0.0, 0.02, 0.1]), ("1,5,10", int, [1, 5, 10])])
def test_parse_list(text, cast, want):
    assert robustness.parse_list(text, "--x", cast) == want


# ----------------------------------------------------------------------------- through the runner
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-class synthetic dataset (8 train, 6 val per class), a SimpleNet and a default CNN (2 epochs)."""
    base = tmp_path_factory.mktemp("robust")
    root = str(base / "data")
    custom_dataloader.build_synthetic_dataset(root, seed=1, num_classes=4, train_per_class=8, val_per_class=6,
                                              test_per_class=1)
    ckpts = {}
    for name, flags in (("simplenet", SIMPLENET), ("cnn", FAST)):
        logs = str(base / f"logs_{name}")
        assert runner.cli([root, "--epochs", "2", "--log-dir", logs] + flags) == 0
        [run] = os.listdir(logs)
        ckpts[name] = os.path.join(logs, run, "model_best.pth.tar")
    return root, ckpts, str(base / "eval_logs")


def run(argv, capsys):
    """`main.cli(argv)` -> (stdout, run folder); asserts success."""
    logs = argv[argv.index("--log-dir") + 1]
    before = set(os.listdir(logs)) if os.path.isdir(logs) else set()
    capsys.readouterr()
    code = runner.cli(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    [new] = set(os.listdir(logs)) - before
    return out, os.path.join(logs, new)


def final(out):
    line = [line for line in out.splitlines() if line.startswith("******Acc@1")][-1]
    return float(line.split()[1])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def clean_line(out):
    """`clean: Acc@1 X ...` of an attacked run -> X."""
    line = [line for line in out.splitlines() if line.startswith("clean: Acc@1")][-1]
    return float(line.split()[2].rstrip(";"))


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce"])
def test_eps_sweep_endpoints_match_clean_and_attacked_accuracy(attack, trained, capsys):
    root, ckpts, logs = trained
    out, run_dir = run([root, "-a", attack, "--eps-sweep", "0,0.1", "--resume", ckpts["simplenet"],
                        "--log-dir", logs] + SIMPLENET, capsys)
    rows = read_rows(os.path.join(run_dir, "eps_sweep.csv"))
    assert [float(r["eps"]) for r in rows] == [0.0, 0.1]
    zero, full = rows
    assert float(zero["adv_top1"]) == float(zero["clean_top1"]) == clean_line(out), rows
    assert float(zero["adv_top5"]) == float(zero["clean_top5"]) and float(zero["attack_success"]) == 0.0
    assert abs(float(full["adv_top1"]) - final(out)) <= 0.005 + 1e-9, \
        f"the eps 0.1 point {full['adv_top1']} must equal the run's own attacked accuracy {final(out)}"
    assert os.path.getsize(os.path.join(run_dir, "eps_sweep.png")) > 5000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(run_dir, size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert {"Sweep/eps_adv_top1", "Sweep/eps_success"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("Sweep/eps_adv_top1")] == [0, 100]
    assert "Sweep/eps" in acc.Tags()["images"]


def test_steps_sweep_endpoints(trained, capsys):
    root, ckpts, logs = trained
    out, run_dir = run([root, "-a", "--steps-sweep", "0,10", "--resume", ckpts["simplenet"], "--log-dir", logs]
                       + SIMPLENET, capsys)
    zero, ten = read_rows(os.path.join(run_dir, "steps_sweep.csv"))
    assert float(zero["adv_top1"]) == float(zero["clean_top1"]) and float(zero["attack_success"]) == 0.0
    assert abs(float(ten["adv_top1"]) - final(out)) <= 0.005 + 1e-9, (ten, final(out))


def test_transfer_numbers_are_consistent(trained, tmp_path, capsys):
    """CNN -> SimpleNet: the source's numbers equal its own white-box `-a` run, the target's clean accuracy
    its `-e` run, and `-e` on the transferred images saved with --save-adv gives the transferred accuracy
    (up to 8-bit rounding). Same checkpoint as source and target: the transfer is the white-box attack."""
    root, ckpts, logs = trained
    adv_dir = str(tmp_path / "adv")
    out, run_dir = run([root, "-a", "--transfer-from", ckpts["cnn"], "--resume", ckpts["simplenet"],
                        "--save-adv", adv_dir, "--log-dir", logs] + SIMPLENET, capsys)
    t = json.load(open(os.path.join(run_dir, "transfer.json")))
    assert (t["source"], t["target"]) == ("default_cnn", "simplenet")
    assert "transfer default_cnn -> simplenet" in out and abs(t["target_adv_top1"] - final(out)) <= 1e-3

    white_out, _ = run([root, "-a", "--resume", ckpts["cnn"], "--log-dir", logs] + FAST, capsys)
    assert abs(t["source_adv_top1"] - final(white_out)) <= 1e-3, (t, final(white_out))  # printed to 3 decimals
    assert abs(t["source_clean_top1"] - clean_line(white_out)) <= 1e-3, t
    eval_out, _ = run([root, "-e", "--resume", ckpts["simplenet"], "--log-dir", logs] + SIMPLENET, capsys)
    assert abs(t["target_clean_top1"] - final(eval_out)) <= 1e-3, (t, final(eval_out))
    saved_out, _ = run([adv_dir, "-e", "--resume", ckpts["simplenet"], "--log-dir", logs] + SIMPLENET, capsys)
    assert abs(final(saved_out) - t["target_adv_top1"]) <= 100 / 24 * 2 + 1e-6, \
        "-e on the saved transferred images must give the transferred accuracy (up to 8-bit rounding)"
    for k in ("source_clean_top1", "source_adv_top1", "target_clean_top1", "target_adv_top1", "transfer_success"):
        assert 0.0 <= t[k] <= 100.0

    out, run_dir = run([root, "-a", "--transfer-from", ckpts["cnn"], "--resume", ckpts["cnn"], "--log-dir", logs]
                       + FAST, capsys)
    same = json.load(open(os.path.join(run_dir, "transfer.json")))
    assert same["source_clean_top1"] == pytest.approx(same["target_clean_top1"], abs=1e-9)
    assert same["source_adv_top1"] == pytest.approx(same["target_adv_top1"], abs=1e-9)
    assert same["source_attack_success"] == pytest.approx(same["transfer_success"], abs=1e-9)
    assert same["target_adv_top1"] == pytest.approx(final(white_out), abs=1e-3)


@pytest.mark.parametrize("argv,needle", [
    (["--eps-sweep", "0,0.1"], "--eps-sweep needs -a/--attack"),
    (["-e", "--steps-sweep", "1,2"], "--steps-sweep needs -a/--attack"),
    (["--transfer-from", "x.pth"], "--transfer-from needs -a/--attack"),
    (["-a", "--eps-sweep", "0,abc"], "--eps-sweep: 'abc' is not a number"),
    (["-a", "--eps-sweep", "0,-0.1"], "--eps-sweep: values must be non-negative and finite, got -0.1"),
    (["-a", "--steps-sweep", "1.5"], "--steps-sweep: '1.5' is not a whole number"),
    (["-a", "--eps-sweep", "0.1,0.1"], "--eps-sweep: repeated value"),
    (["-a", "autoattack", "--steps-sweep", "1,2"], "--steps-sweep does not apply to --attack autoattack"),
    (["-a", "fgsm"], "-a/--attack: unknown attack 'fgsm'; choose one of pgd, apgd-ce, autoattack"),
    (["-a", "--transfer-from", "/nonexistent.pth"], "--transfer-from: no checkpoint file at /nonexistent.pth"),
    (["-a", "--transfer-from", "x", "--eps-sweep", "0"], "--transfer-from and --eps-sweep/--steps-sweep"),
    (["-e", "-a", "autoattack"], "-e/--evaluate and -a/--attack are separate modes"),
])
def test_flag_errors(argv, needle, capsys):
    code = runner.cli(argv + ["--gpu", "-1"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {needle}"), err


def test_transfer_from_a_checkpoint_of_no_known_model(trained, tmp_path, capsys):
    root, ckpts, _ = trained
    bad = tmp_path / "bad.pth.tar"
    torch.save({"model_arch": "alexnet", "state_dict": {}}, bad)
    code = runner.cli([root, "-a", "--transfer-from", str(bad), "--resume", ckpts["simplenet"],
                       "--log-dir", str(tmp_path / "logs")] + SIMPLENET)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: --transfer-from: ") and "alexnet" in err, err


def test_attack_value_may_be_the_data_folder(tmp_path):
    """`main.py -a ../data` (the course's habit) keeps meaning the default attack on that folder."""
    args = runner.get_args_parser().parse_args(["-a", str(tmp_path)])
    robustness.validate_args(args, ValueError)
    assert (args.attack, args.data_folder) == ("pgd", str(tmp_path))
    args = runner.get_args_parser().parse_args(["-a", "--attack", "autoattack"])
    robustness.validate_args(args, ValueError)
    assert args.attack == "autoattack"
