"""Template versions without the grader: detection, unchanged-stub comparison, the profile table, the call
adapters and the sandbox compatibility modules (tools/grading/versions, tools/grading/compat).

The import-level checks run each version's corpus in a fresh interpreter (the course's module names -
custom_blocks, utils - must not leak into this test process). Default tier: 86 s wall measured under load
(load average 20 on 2 cores; about 25 s of CPU); the slow tier (`-m slow`) adds the 2b behaviour checks of
five more submissions.

    python -m pytest tests/test_versions.py -q            # default tier
    python -m pytest tests/test_versions.py -q -m slow    # the slow tier only
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from grading_fixtures import versions as corpus
import _staff  # noqa: F401 (puts tools/ on sys.path)
from grading.versions import PROFILES, adapters, astnorm, detect, detect_with_reasons, is_unchanged_stub
from grading.versions import unchanged_components
from grading.versions.stubs import simplenet_is_given

ITEM_NUMBERS = ("1a", "1b-i", "1b-ii", "1b-iii", "1b-iv", "2a", "2b", "3a", "3b")
PYTHON = sys.executable


def _graded(profile):
    return [i.number for i in profile.items if not i.manual]


# ------------------------------------------------------------------------------------------ the table
@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_has_the_courses_12_plus_2(name):
    p = PROFILES[name]
    assert (p.total, p.bonus) == (12.0, 2.0), (name, p.total, p.bonus)
    numbers = [i.number for i in p.items]
    assert numbers == [n for n in ITEM_NUMBERS if n in numbers], f"{name}: items out of order: {numbers}"
    for item in p.items:
        if item.manual:
            assert not item.components
            continue
        assert abs(sum(c.points for c in item.components) - item.max_score) < 1e-9, (name, item.number)


@pytest.mark.parametrize("name", ["2022-23", "2024", "2025"])
def test_every_component_stub_has_data(name):
    p = PROFILES[name]
    for item in p.items:
        for comp in item.components:
            for q in comp.stubs:
                assert q in p.stubs, f"{name} {item.number}/{comp.name}: no stub data for {q}"
    for q, snippets in p.stubs.items():
        for code in snippets:
            if not q.startswith("="):
                assert astnorm.parse_statements(code), f"{name} {q}: empty snippet {code!r}"


# ------------------------------------------------------------------------------------------ detection
@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_corpus_submissions_are_recognised(version):
    profile, reasons = detect_with_reasons(corpus.correct_text(version))
    assert profile.name == version, reasons
    assert reasons, "detection must say why"
    for name in corpus.mutant_names(version):
        assert detect(corpus.mutant_text(version, name)).name == version, name


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_templates_as_handed_out_are_recognised(version):
    assert detect(corpus.stub_text(version)).name == version


def test_kit_reference_is_the_kit():
    with open(os.path.join(corpus.ROOT, "student_code.py")) as f:
        assert detect(f.read()).name == "kit"


def test_detection_rules_on_minimal_sources():
    old = "from custom_blocks import PatchEmbed, TransformerBlock\nclass GradAttention:\n    pass\n"
    assert detect(old).name == "2022-23"
    new = ("class Attention:\n    pass\nclass TransformerBlock:\n    def forward(self, x):\n        return self.attn(x)\n"
           "def vis_grid(input, n_rows=10):\n    pass\n")
    assert detect(new).name == "2025"  # the student wrote TransformerBlock.forward: the 2025 default
    doc_2024 = new + ("class CustomConv2DFunction:\n    def forward(ctx, input_feats, weight, bias, stride=1, padding=0):\n"
                      "        '''We only consider square filters with equal stride/padding in width and height!'''\n")
    assert detect(doc_2024).name == "2024"
    kit = "class PGDAttack:\n    def perturb(self, model, input, target=None):\n        pass\n"
    assert detect(kit).name == "kit"
    assert detect("x = 1\n").name == "kit"
    profile, reasons = detect_with_reasons("def broken(:\n")
    assert profile.name == "kit" and "does not parse" in reasons[0]


def test_2024_given_block_decides_2024_even_with_2025_docstring():
    text = corpus.correct_text("2024").replace("equal stride/padding", "equal stride and padding")
    profile, reasons = detect_with_reasons(text)
    assert profile.name == "2024" and "given in the 2024 template" in reasons[-1]


# ------------------------------------------------------------------------------------------ stubs
@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_template_stubs_score_nothing_and_correct_code_is_not_a_stub(version):
    profile = PROFILES[version]
    stub, correct = corpus.stub_text(version), corpus.correct_text(version)
    for number in _graded(profile):
        assert is_unchanged_stub(profile, number, stub), f"{version} {number}: the template's stub not recognised"
        assert not is_unchanged_stub(profile, number, correct), f"{version} {number}: correct code taken for a stub"
        assert unchanged_components(profile, number, correct) == []
    assert not is_unchanged_stub(profile, "3b", stub) or not profile.item("3b").manual


def test_given_code_only_scores_nothing_in_2024():
    profile = PROFILES["2024"]
    text = corpus.mutant_text("2024", "given_code_only_vit")
    assert [n for n in _graded(profile) if is_unchanged_stub(profile, n, text)] == ["2a", "2b"]


def test_comments_docstrings_and_pass_do_not_make_a_stub_the_students():
    profile = PROFILES["2024"]
    stub = corpus.stub_text("2024")
    decorated = stub.replace("        output = input.clone()\n",
                             "        '''my notes'''\n        # TODO\n        pass\n        output = (input.clone())\n")
    assert decorated != stub
    assert is_unchanged_stub(profile, "3a", decorated)
    changed = stub.replace("        output = input.clone()\n", "        output = input.clone() + 0.01\n")
    assert not is_unchanged_stub(profile, "3a", changed)


def test_a_missing_function_is_an_unchanged_stub():
    profile = PROFILES["2024"]
    text = corpus.correct_text("2024").replace("    def perturb(self, model, input):", "    def perturb_x(self, model, input):")
    assert is_unchanged_stub(profile, "3a", text)


def test_default_cnn_model_stub_is_the_given_simplenet():
    profile = PROFILES["2025"]
    base = corpus.correct_text("2025")
    as_given = base.replace("default_cnn_model = BetterNet", "default_cnn_model = SimpleNet")
    assert is_unchanged_stub(profile, "1b-iii", as_given)
    assert not is_unchanged_stub(profile, "1b-iii", base)
    # a SimpleNet the student improved in place (as the template invited) is the student's design
    improved = corpus.mutant_text("2025", "simplenet_changed").replace("default_cnn_model = BetterNet",
                                                                        "default_cnn_model = SimpleNet")
    assert not is_unchanged_stub(profile, "1b-iii", improved)
    import ast
    assert simplenet_is_given(ast.parse(base)) and not simplenet_is_given(ast.parse(improved))


def test_kit_default_cnn_model_bound_to_a_class():
    kit = PROFILES["kit"]
    text = corpus.correct_text("kit")
    assert is_unchanged_stub(kit, "1b-iii", text + "\ndefault_cnn_model = SimpleNet\n")
    assert not is_unchanged_stub(kit, "1b-iii", text + "\ndefault_cnn_model = CorpusNet\n")


def test_normalized_statements():
    assert astnorm.same_statements("x = (a +\n  b)  # note", "x = a + b")
    assert astnorm.same_statements("raise NotImplementedError('2a: todo')", "raise NotImplementedError")
    assert not astnorm.same_statements("x = a + b", "x = b + a")


# ------------------------------------------------------------------------------------------ manifests
@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_manifests_are_well_formed(version):
    m = corpus.manifest(version)
    assert m["version"] == version
    names = [x["name"] for x in m["mutants"]]
    assert len(names) == len(set(names)), "duplicate mutant names"
    profile = PROFILES[version]
    correct = corpus.correct_text(version)
    for x in m["mutants"]:
        assert x["costs"] is None or profile.item(x["costs"]) is not None, (x["name"], x["costs"])
        assert all(profile.item(a) is not None for a in x["also"]), x["name"]
        assert corpus.mutant_text(version, x["name"]) != correct, f"{x['name']} changes nothing"
    mistakes = " ".join(x["mistake"] for x in m["mutants"])
    for required in ("bias=None", "view", "// 2", "square", "ascent", "argmax", "requires_grad=False", "CUDA",
                     "SimpleNet changed", "normalized"):
        assert required in mistakes, f"{version}: no planted mistake about {required!r}"


# ------------------------------------------------------------------------------------------ adapters
def test_runner_eval_restores_every_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    model[1].eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    with adapters.runner_eval(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before


def test_perturb_adapter_calls_by_version():
    calls = []

    class Attack:
        def perturb(self, *args):
            calls.append((len(args), args[0].training))
            return args[1]

    model = nn.Linear(2, 2).train()
    x = torch.zeros(1, 2)
    adapters.perturb(PROFILES["kit"], Attack(), model, x, torch.zeros(1, dtype=torch.long))
    adapters.perturb(PROFILES["2024"], Attack(), model, x)
    assert calls == [(3, True), (2, False)] and model.training
    with pytest.raises(adapters.NotInVersion):
        adapters.perturb(PROFILES["2022-23"], Attack(), model, x, torch.zeros(1, dtype=torch.long))
    with pytest.raises(adapters.NotInVersion):
        adapters.make_explainer(PROFILES["2025"], object(), None)


_RUN_CORPUS = textwrap.dedent("""
    import json, os, sys
    import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
    sys.path[:0] = [os.getcwd(), TOOLS]
    from grading.versions import PROFILES, adapters as A
    import student_code as sc
    torch.manual_seed(0)
    prof = PROFILES[VERSION]
    out = {}
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    out["conv"] = (sc.custom_conv2d(x, w, b, 2, 1) - F.conv2d(x, w, b, 2, 1)).abs().max().item()
    img = (np.random.RandomState(0).rand(100, 120, 3) * 255).astype(np.uint8)
    out["train_tf"] = list(A.transforms(prof, sc, True)(img).shape)
    out["val_tf"] = list(A.transforms(prof, sc, False)(img).shape)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 30 * 30, 5)).train()
    xi = torch.randn(3, 3, 32, 32)
    adv = A.perturb(prof, A.make_attack(prof, sc, nn.CrossEntropyLoss()), model, xi.clone())
    out["pgd_shape"] = list(adv.shape)
    out["still_train"] = model.training
    if prof.explain:
        sal = A.explain(prof, A.make_explainer(prof, sc, nn.CrossEntropyLoss()), model, xi.clone())
        out["sal_shape"] = list(sal.shape)
    out["grid"] = list(A.visualize(prof, sc, xi).shape)
    vit = sc.default_vit_model(num_classes=10)
    out["vit"] = list(vit(torch.randn(2, 3, 128, 128)).shape)
    import einops  # the sandbox offers it (requirements.txt)
    print(json.dumps(out))
""")


@pytest.mark.parametrize("version", ["2022-23", "2024", "2025"])
def test_corpus_runs_through_the_adapters_in_its_sandbox(version, tmp_path):
    d = corpus.sandbox_dir(version, corpus.correct_text(version), str(tmp_path))
    script = _RUN_CORPUS.replace("TOOLS", repr(os.path.join(corpus.ROOT, "tools"))).replace("VERSION", repr(version))
    res = subprocess.run([PYTHON, "-c", script], cwd=d, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["conv"] < 1e-10, out
    assert out["train_tf"] == [3, 128, 128] and out["val_tf"] == [3, 128, 128]
    assert out["pgd_shape"] == [3, 3, 32, 32] and out["still_train"], "the adapter must restore the mode"
    assert ("sal_shape" in out) == (version == "2022-23")
    assert out["vit"] == [2, 10] and len(out["grid"]) == 3


# ------------------------------------------------------------------------------------------ compat modules
_COMPAT = textwrap.dedent("""
    import json, math, os, sys
    import cv2, numpy as np, torch
    sys.path.insert(0, os.getcwd())
    torch.set_default_dtype(torch.float64)
    import custom_blocks as cb, custom_transforms as T, utils
    import importlib.util
    spec = importlib.util.spec_from_file_location("kit_reference", REFERENCE)
    ref = importlib.util.module_from_spec(spec)
    sys.modules["kit_reference"] = ref
    spec.loader.exec_module(ref)
    out = {}
    torch.manual_seed(0)
    for ws, hw in ((0, (5, 6)), (3, (5, 7)), (4, (8, 8))):
        mine = cb.TransformerBlock(16, 4, mlp_ratio=2.0, window_size=ws).eval()
        kit = ref.TransformerBlock(16, 4, mlp_ratio=2.0, window_size=ws).eval()
        kit.load_state_dict(mine.state_dict())
        x = torch.randn(2, *hw, 16)
        out[f"block_ws{ws}"] = (mine(x) - kit(x)).abs().max().item()
    att = cb.Attention(16, num_heads=4)
    x = torch.randn(2, 3, 5, 16)
    q, k, v = att.qkv(x).reshape(2, 15, 3, 4, 4).permute(2, 0, 3, 1, 4)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 3, 5, 16)
    out["attention"] = (att(x) - att.proj(sdpa)).abs().max().item()
    t = torch.empty(10000)
    cb.trunc_normal_(t, std=0.02, a=-0.03, b=0.03)
    out["trunc"] = [t.abs().max().item(), t.std().item()]
    img = (np.random.RandomState(1).rand(40, 50, 3) * 255).astype(np.uint8)
    out["nearest"] = bool((utils.resize_image(img, (23, 17), cv2.INTER_NEAREST) ==
                           cv2.resize(img, (23, 17), interpolation=cv2.INTER_NEAREST_EXACT)).all())
    out["scale_linear"] = bool((T.Scale((30, 20), interpolations=None)(img) ==
                                cv2.resize(img, (30, 20), interpolation=cv2.INTER_LINEAR)).all())
    ten = T.ToTensor()(img)
    norm = T.Normalize(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], scale=2.0)(ten.clone())
    manual = (ten * 2.0 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    out["normalize"] = (norm - manual).abs().max().item()
    crop = T.RandomSizedCrop(32, area_range=(0.5, 1.0), ratio_range=(0.9, 1.1))(img)
    out["crop"] = list(crop.shape)
    out["rotate"] = list(T.RandomRotate(15)(img).shape)[2:]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = utils.LinearWarmupCosineAnnealingLR(opt, warmup_epochs=5, max_epochs=25, eta_min=1e-3)
    lrs = []
    for _ in range(26):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(); sched.step()
    out["lrs"] = [lrs[0], lrs[4], lrs[15], lrs[25]]
    meter = utils.AverageMeter(); meter.update(1.0, 3); meter.update(3.0, 1)
    out["meter"] = meter.avg
    out["grid"] = list(utils.vis_grad_attention(torch.rand(4, 3, 8, 8), vis_output=torch.rand(4, 1, 8, 8)).shape)
    print(json.dumps(out))
""")


def test_compat_modules_behave_as_the_templates_documented(tmp_path):
    d = corpus.sandbox_dir("2022-23", "", str(tmp_path))
    script = _COMPAT.replace("REFERENCE", repr(os.path.join(corpus.ROOT, "student_code.py")))
    env = dict(os.environ, PYTHONPATH=d)
    res = subprocess.run([PYTHON, "-c", script], cwd=d, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # the 2022-23 given block equals the kit's reference block with the same weights (float64)
    for ws in (0, 3, 4):
        assert out[f"block_ws{ws}"] < 1e-12, out
    assert out["attention"] < 1e-12, out
    assert out["trunc"][0] <= 0.03 and 0.01 < out["trunc"][1] < 0.02, out["trunc"]
    assert out["nearest"] and out["scale_linear"], out
    assert out["normalize"] < 1e-6, out
    assert out["crop"] == [32, 32, 3] and out["rotate"] == [3], out
    lr0, lr_warm, lr_mid, lr_end = out["lrs"]
    assert lr0 == 0.0 and abs(lr_warm - 0.5) < 1e-12, out["lrs"]
    assert abs(lr_mid - (1e-3 + 0.5 * (0.5 - 1e-3))) < 1e-9 and abs(lr_end - 1e-3) < 1e-12, out["lrs"]
    assert out["meter"] == 1.5 and out["grid"][0] == 3


# ------------------------------------------------------------------------------------------ scoring
class _Grade:
    """The shape of the grader's ItemGrade that `scoring.entry` reads."""

    def __init__(self, number, checks, failure=None):
        self.item = type("Item", (), {"number": number})()
        self.components, self.failure, self.forbidden, self.notes = list(checks), failure, [], []


_CHECKS_3A = [("untargeted attack (target given) matches the reference PGD", 0.5, True, ""),
              ("targeted attack (target=None: least-confident class) matches the reference PGD", 0.5, False, "x"),
              ("every attack stays in the epsilon ball; leaves the model as found", 0.5, True, ""),
              ("GradAttention saliency matches autograd; model left as found", 0.5, True, "")]


def test_scoring_keeps_the_kits_score_for_the_kit():
    from grading.versions import scoring

    e = scoring.entry(PROFILES["kit"], _Grade("3a", _CHECKS_3A), corpus.correct_text("kit"))
    assert (e["score"], e["max_score"]) == (1.5, 2.0), e


def test_scoring_drops_what_a_version_lacks_and_rescales():
    from grading.versions import scoring

    e = scoring.entry(PROFILES["2024"], _Grade("3a", _CHECKS_3A), corpus.correct_text("2024"))
    # untargeted and saliency dropped; targeted failed, rules passed: half of 2 points
    assert (e["score"], e["max_score"]) == (1.0, 2.0), e
    assert "GradAttention" not in e["output"] and "untargeted" not in e["output"]
    e = scoring.entry(PROFILES["2022-23"], _Grade("3a", _CHECKS_3A), corpus.correct_text("2022-23"))
    assert (e["score"], e["max_score"]) == (1.5, 2.0), e  # PGD 1 point (half passed), saliency 1 point
    assert "Fall 2022" in e["output"]


def test_scoring_gives_nothing_for_given_code():
    from grading.versions import scoring

    checks = [("TransformerBlock with global attention: output and gradients (eval mode)", 0.5, True, ""),
              ("TransformerBlock with window attention (padding handled): output and gradients", 0.5, True, ""),
              ("SimpleViT: output and gradients", 0.5, True, ""), ("default_vit_model builds", 0.5, True, "")]
    stub_vit = corpus.mutant_text("2024", "given_code_only_vit")
    e = scoring.entry(PROFILES["2024"], _Grade("2b", checks), stub_vit)
    assert e["score"] == 0.0 and "still the template's" in e["output"], e
    e = scoring.entry(PROFILES["2024"], _Grade("2b", checks), corpus.correct_text("2024"))
    assert e["score"] == 2.0 and "TransformerBlock" not in e["output"], e  # given block: not graded
    e = scoring.entry(PROFILES["2025"], _Grade("2b", checks), corpus.correct_text("2025"))
    assert e["score"] == 2.0 and "TransformerBlock" in e["output"], e
    assert scoring.entry(PROFILES["2022-23"], _Grade("2a", checks), "") is None  # no 2a in 2022-23
    e = scoring.entry(PROFILES["2024"], _Grade("3b", []), "")
    assert e["score"] == 0.0 and "staff" in e["output"]
    e = scoring.entry(PROFILES["2025"], _Grade("1b-iii", [("fits a small fixed batch", 1.0, True, "")]),
                      corpus.correct_text("2025").replace("default_cnn_model = BetterNet", "default_cnn_model = SimpleNet"))
    assert e["score"] == 0.0 and "default_cnn_model" in e["output"], e


def test_adapters_accept_the_plain_call_dict():
    calls = adapters.calls(PROFILES["2022-23"])
    assert calls == json.loads(json.dumps(calls))  # plain data: travels in an item's inputs

    class Attack:
        def perturb(self, model, x):
            assert not model.training
            return x + 1

    model = nn.Linear(2, 2).train()
    assert adapters.perturb(calls, Attack(), model, torch.zeros(1, 2)).sum() == 2 and model.training


# ------------------------------------------------------------------------------------------ 2b by behaviour
_CHILD_LIB = textwrap.dedent('''
    import torch
    def plain(t):
        return None if t is None else t.detach().cpu().contiguous().clone()
    def describe(exc):
        return f"{type(exc).__name__}: {exc}"[:300]
    def stage(res, name, fn):
        try:
            res[name] = fn()
        except BaseException as exc:
            res[name] = {"error": describe(exc)}
''')


def _run_item_child(version, text, run_fn, inp, tmp_path):
    """Run an item's `run(sc, inp, lib)` source alone next to `text` in a sandbox-like folder (a fresh
    interpreter, a minimal lib with the childlib helpers it uses); return its raw outputs."""
    import inspect

    d = corpus.sandbox_dir(version, text, str(tmp_path))
    torch.save(inp, os.path.join(d, "inp.pt"))
    with open(os.path.join(d, "_lib.py"), "w") as f:
        f.write(_CHILD_LIB)
    script = ("import sys, torch, torch.nn as nn, torch.nn.functional as F\nsys.path.insert(0, '.')\n"
              "torch.set_num_threads(1)\nimport _lib as lib, student_code as sc\n"
              + textwrap.dedent(inspect.getsource(run_fn))
              + "\ntorch.save(run(sc, torch.load('inp.pt', weights_only=True), lib), 'out.pt')\n")
    res = subprocess.run([PYTHON, "-c", script], cwd=d, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(os.path.join(d, "out.pt"), weights_only=True)


def _vit_entry(version, text, tmp_path):
    from grading.versions import scoring, vit_behaviour

    inp = vit_behaviour.inputs()
    out = _run_item_child(version, text, vit_behaviour.run, inp, tmp_path)
    return scoring.entry(PROFILES[version], _Grade("2b", vit_behaviour.checks(inp, out)), text)


def test_vit_by_behaviour_full_marks_for_own_names(tmp_path):
    # 2022-23's SimpleViT names its parts embed / layers / norm / fc: nothing of the kit's state_dict keys
    e = _vit_entry("2022-23", corpus.correct_text("2022-23"), tmp_path)
    assert (e["score"], e["max_score"]) == (4.0, 4.0), e["output"]


@pytest.mark.slow
@pytest.mark.parametrize("version,name,score", [("2025", None, 2.0), ("2024", None, 2.0),
                                                ("2025", "attn_head_merge", 1.0),
                                                ("2025", "vit_window_everywhere", None),
                                                ("2024", "given_code_only_vit", 0.0)])
def test_vit_by_behaviour(version, name, score, tmp_path):
    text = corpus.correct_text(version) if name is None else corpus.mutant_text(version, name)
    e = _vit_entry(version, text, tmp_path)
    if score is None:
        assert e["score"] < e["max_score"] and "window_size" in e["output"], e["output"]
    else:
        assert e["score"] == score, e["output"]


# ------------------------------------------------------------------------------------------ 3a as the runner called it
def _pgd_entry(version, text, tmp_path):
    from grading.versions import pgd_behaviour, scoring

    inp = pgd_behaviour.inputs(adapters.calls(PROFILES[version]))
    out = _run_item_child(version, text, pgd_behaviour.run, inp, tmp_path)
    return scoring.entry(PROFILES[version], _Grade("3a", pgd_behaviour.checks(inp, out)), text)


def test_course_pgd_and_saliency_full_marks(tmp_path):
    # 2-argument perturb after model.eval(), explain on whatever mode main.py left (eval), no image-range
    # projection, a result that still carries requires_grad=False only: all fine in 2022-23
    e = _pgd_entry("2022-23", corpus.correct_text("2022-23"), tmp_path)
    assert (e["score"], e["max_score"]) == (2.0, 2.0), e["output"]


@pytest.mark.slow
@pytest.mark.parametrize("version,name,says", [
    ("2024", None, None), ("2025", None, None),
    ("2024", "pgd_ascent", "descend"), ("2024", "pgd_argmax", "argmin"), ("2024", "pgd_clamp_normalized", "[0, 1]"),
    ("2025", "pgd_params_frozen", "requires_grad=False"), ("2025", "pgd_cuda_only", "CUDA-only"),
    ("2022-23", "explain_params_frozen", "requires_grad=False")])
def test_course_pgd(version, name, says, tmp_path):
    text = corpus.correct_text(version) if name is None else corpus.mutant_text(version, name)
    e = _pgd_entry(version, text, tmp_path)
    if says is None:
        assert e["score"] == e["max_score"], e["output"]
    else:
        assert e["score"] < e["max_score"] and says in e["output"], e["output"]


def test_pgd_reference_model_is_the_attacked_model():
    from grading.versions import pgd_behaviour

    inp = pgd_behaviour.inputs(adapters.calls(PROFILES["2024"]))
    model = pgd_behaviour.build_model(inp["state"]).eval()
    with torch.no_grad():
        diff = (model(inp["x"]) - pgd_behaviour.eval_forward(inp["state"], inp["x"])).abs().max().item()
    assert diff < 1e-12, diff


# ------------------------------------------------------------------------------------------ the kit corpus
_KIT_CORRECT = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    import torch, torch.nn.functional as F
    import student_code as sc
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = sc.CustomConv2DFunction.apply(x, w, b, 2, 1)
    ref = F.conv2d(x, w, b, stride=2, padding=1)
    g = torch.randn_like(ref)
    mine = torch.autograd.grad(out, (x, w, b), g)
    theirs = torch.autograd.grad(ref, (x, w, b), g)
    diff = max([(out - ref).abs().max().item()] + [(m - t).abs().max().item() for m, t in zip(mine, theirs)])
    attn = sc.Attention(16, num_heads=4).double()
    y = attn(torch.randn(2, 3, 5, 16, dtype=torch.float64))
    vit = sc.default_vit_model(num_classes=10)
    logits = vit(torch.randn(2, 3, 64, 64))
    import json
    print(json.dumps({"diff": diff, "attention": list(y.shape), "logits": list(logits.shape)}))
""")


def test_kit_corpus_submission_runs(tmp_path):
    """The kit's correct corpus submission (corpus bodies spliced into the release) computes, in the fast
    tier: a stub that changes shape (a return moved into the solution block) shows up here, not only in the
    slow tier's grading."""
    (tmp_path / "student_code.py").write_text(corpus.correct_text("kit"), encoding="utf-8")
    proc = subprocess.run([PYTHON, "-c", _KIT_CORRECT, str(tmp_path), corpus.ROOT], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["diff"] < 1e-10, f"conv output/gradients differ from F.conv2d by {out['diff']:.3g}"
    assert (out["attention"], out["logits"]) == ([2, 3, 5, 16], [2, 10]), out
