"""The runner's explanation maps (`main.py -e -v --explain METHOD`, `main.py -a -v --explain METHOD`).

    python main.py DATA -e -v --explain gradcam --resume logs/RUN/model_best.pth.tar
    python main.py DATA -a -v --explain ig --resume logs/RUN/model_best.pth.tar    # clean vs adversarial

Methods (`METHODS`): `saliency` (Part 3a `default_attention`), `smoothgrad` (Part 4a `SmoothGrad`), `gradcam`
and `gradcam++` (Part 4b `GradCAM` / `GradCAMPlusPlus`, CNNs), `ig` (Part 4c `IntegratedGradients`) and
`rollout` (Part 4d `attention_rollout`, `--use-vit`). Every method comes from the student's
`student_code.py`; a missing or unfinished one ends the run with `error: not implemented yet: ...` (exit 3).

On the first `--explain-images` validation images it writes
- with `-e`: `Image/Image_Atten` (maps over the images) to TensorBoard and `explain_<method>.png` (a line of
  8 images, then a line of their maps, ...) to the run folder;
- with `-a`: the same for the clean images and for their adversarial versions (`Image/Image_Atten_Adv`),
  `explain_<method>_clean_vs_adv.png` (lines: clean images, their maps, adversarial images, their maps), and how far
  the explanation moved, per image and on average: the Spearman rank correlation of the two maps and the
  overlap of their top `--explain-topk` share of pixels (`explain/spearman`, `explain/topk_overlap` in
  TensorBoard; `explain_<method>.json` in the run folder; printed).
Runner code (not graded); the comparison metrics are pure functions on `(N, 1, H, W)` maps.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

METHODS = ("saliency", "smoothgrad", "gradcam", "gradcam++", "ig", "rollout")
CNN_ONLY = ("gradcam", "gradcam++")


class ExplainError(ValueError):
    """A `--cam-layer` that does not fit the model (`main.py` reports it as a usage error)."""
PART = {"saliency": ("3a", "default_attention"), "smoothgrad": ("4a", "SmoothGrad"),
        "gradcam": ("4b", "GradCAM"), "gradcam++": ("4b", "GradCAMPlusPlus"),
        "ig": ("4c", "IntegratedGradients"), "rollout": ("4d", "attention_rollout")}


def add_arguments(parser):
    """The `--explain` flags of `main.py`."""
    g = parser.add_argument_group("explanations (with -v and -e or -a)")
    g.add_argument("--explain", choices=METHODS, default=None,
                   help="attribution maps of the first val images (rollout: --use-vit; gradcam: CNNs)")
    g.add_argument("--explain-images", type=int, default=16, help="how many val images to explain")
    g.add_argument("--explain-topk", type=float, default=0.1,
                   help="with -a: share of the pixels compared by the top-k overlap")
    g.add_argument("--cam-layer", default=None, metavar="NAME",
                   help="Grad-CAM layer (a name from model.named_modules(); default: the last feature map)")


def validate(args, usage_error):
    """Flag combinations of the `--explain` flags; raises `usage_error(sentence)`."""
    if args.explain is None:
        for flag, value, default in (("--explain-images", args.explain_images, 16),
                                     ("--explain-topk", args.explain_topk, 0.1), ("--cam-layer", args.cam_layer, None)):
            if value != default:
                raise usage_error(f"{flag} needs --explain METHOD")
        return
    if not args.vis or not (args.evaluate or args.attack):
        raise usage_error("--explain needs -v together with -e/--evaluate or -a/--attack")
    if args.explain_images < 1:
        raise usage_error(f"--explain-images must be at least 1, got {args.explain_images}")
    if not 0.0 < args.explain_topk <= 1.0:
        raise usage_error(f"--explain-topk must be in (0, 1], got {args.explain_topk}")
    if args.explain == "rollout" and not args.use_vit:
        raise usage_error("--explain rollout needs attention maps: use it with --use-vit")
    if args.explain in CNN_ONLY and args.use_vit:
        raise usage_error(f"--explain {args.explain} needs a CNN feature map; with --use-vit use rollout, "
                          f"saliency, smoothgrad or ig")
    if args.cam_layer is not None and args.explain not in CNN_ONLY:
        raise usage_error("--cam-layer applies to --explain gradcam / gradcam++ only")
    student_piece(args.explain)  # a method missing from this release: exit 3 before any work


################################################################################
# Building the explainer from the student's code
################################################################################
def student_piece(method):
    """The student's class or function for `method`; `NotImplementedError` when the release lacks it."""
    import student_code

    part, name = PART[method]
    piece = getattr(student_code, name, None)
    if piece is None:
        raise NotImplementedError(f"Part {part}: student_code.py has no {name} (Part 4 is optional: this "
                                  f"release does not include it); --explain saliency works with Part 3")
    return piece


def feature_maps(model, input):
    """`[(name, module, output shape)]` of every submodule whose output is a 4-D tensor, in the order the
    modules *finish* during `model(input)` (a container finishes after its children)."""
    found, handles = [], []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(
                lambda m, a, out, name=name: found.append((name, m, tuple(out.shape)))
                if torch.is_tensor(out) and out.dim() == 4 else None))
    try:
        with torch.no_grad():
            model(input)
    finally:
        for h in handles:
            h.remove()
    return found


def default_target_layer(model, input, name=None):
    """`(name, module)` of the Grad-CAM layer: `name` from `model.named_modules()` when given, else the last
    module to finish whose output is a feature map `(N, K, h, w)` larger than 1x1 (e.g. the last stage of a
    ResNet, `features` of SimpleNet), else the last 4-D output. Runs `model(input)` once (no grad)."""
    if name is not None:
        modules = dict(model.named_modules())
        if name not in modules:
            raise ExplainError(f"--cam-layer {name!r} is not a module of the model; some names: "
                             f"{', '.join(list(modules)[1:12])} ...")
        return name, modules[name]
    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        found = feature_maps(model, input)
    finally:
        for m, mode in training:
            m.training = mode
    if not found:
        raise ExplainError("the model has no submodule with a 4-D output: Grad-CAM needs a CNN")
    spatial = [f for f in found if f[2][2] * f[2][3] > 1]
    name, module, _ = (spatial or found)[-1]
    return name, module


def windowed_to_global(maps, n, grid_hw):
    """Attention maps of a windowed block `(n * nW, heads, ws*ws, ws*ws)` -> the equivalent token-grid map
    `(n, heads, L, L)`, `L = gh * gw` (block diagonal over the windows of `window_partition`, padded tokens
    dropped and every row renormalized to sum to 1). A global map `(n, heads, L, L)` is returned as is."""
    gh, gw = grid_hw
    if maps.shape[0] == n and maps.shape[-1] == gh * gw:
        return maps
    ws = math.isqrt(maps.shape[-1])
    if ws * ws != maps.shape[-1]:
        raise ValueError(f"cannot read a window size from attention maps {tuple(maps.shape)}")
    hp, wp = -(-gh // ws) * ws, -(-gw // ws) * ws  # padded grid, as window_partition pads
    nwh, nww = hp // ws, wp // ws
    heads = maps.shape[1]
    per_image = maps.reshape(n, nwh * nww, heads, ws * ws, ws * ws)  # window index w = i * nww + j
    full = maps.new_zeros(n, heads, hp * wp, hp * wp)
    r = torch.arange(ws, device=maps.device)
    for i in range(nwh):
        for j in range(nww):
            rows = ((i * ws + r)[:, None] * wp + (j * ws + r)[None, :]).reshape(-1)  # (ws*ws,) global tokens
            full[:, :, rows[:, None], rows[None, :]] = per_image[:, i * nww + j]
    keep = (torch.arange(hp, device=maps.device)[:, None] < gh) & (torch.arange(wp, device=maps.device)[None, :] < gw)
    keep = keep.reshape(-1).nonzero().squeeze(1)  # (L,) real tokens
    full = full[:, :, keep][:, :, :, keep]  # (n, heads, L, L)
    return full / full.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def rollout_map(model, input, rollout_fn):
    """Token map of attention rollout upsampled to the input, `(N, 1, H, W)`: the mean over query tokens of
    `rollout_fn(per-layer maps)` (SimpleViT pools all tokens equally, so each output draws on input token
    `t` by the column mean), bilinear upsampling, scaled to [0, 1] per image."""
    from custom_blocks import attention_maps

    n, _, h, w = input.shape
    stride = model.patch_embed.proj.stride
    grid = (h // stride[0], w // stride[1])
    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        maps = [windowed_to_global(m, n, grid) for m in attention_maps(model, input)]
    finally:
        for m, mode in training:
            m.training = mode
    joint = rollout_fn(maps)  # (N, L, L)
    tokens = joint.mean(dim=1).reshape(n, 1, grid[0], grid[1])  # (N, 1, gh, gw)
    up = F.interpolate(tokens, size=(h, w), mode="bilinear", align_corners=False)  # (N, 1, H, W)
    flat = up.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
    return (up - lo) / (hi - lo + 1e-7)


def make_explainer(method, model, criterion, sample, cam_layer=None):
    """`explain(input) -> (N, 1, H, W)` for `method`, built from the student's code. `sample`: a batch used
    to find the Grad-CAM layer."""
    piece = student_piece(method)
    if method == "saliency":
        att = piece(criterion)
        return lambda x: att.explain(model, x)
    if method == "smoothgrad":
        sg = piece(criterion)
        return lambda x: sg.explain(model, x)
    if method in CNN_ONLY:
        _, layer = default_target_layer(model, sample, cam_layer)
        cam = piece(model, layer)
        return cam.explain
    if method == "ig":
        return piece(model).explain
    return lambda x: rollout_map(model, x, piece)


################################################################################
# How far an explanation moved (pure functions)
################################################################################
def average_ranks(values):
    """Ranks `1..n` of the 1-D tensor `values` (float64), ties sharing their average rank."""
    order = torch.argsort(values, stable=True)
    sorted_vals = values[order]
    _, inverse, counts = torch.unique_consecutive(sorted_vals, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # last 1-based position of each group of ties
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman(a, b):
    """Spearman rank correlation per image of two maps `(N, 1, H, W)` -> `(N,)` float64 (0 where a map is
    constant)."""
    out = []
    for x, y in zip(a.flatten(1).double().cpu(), b.flatten(1).double().cpu()):
        rx, ry = average_ranks(x), average_ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        den = (rx.norm() * ry.norm()).item()
        out.append((rx @ ry).item() / den if den > 0 else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def topk_overlap(a, b, frac=0.1):
    """Share of the top `ceil(frac * H * W)` pixels of map `a` that are also among the top ones of `b`, per
    image: `(N,)` float64 in [0, 1] (ties broken by position)."""
    fa, fb = a.flatten(1).cpu(), b.flatten(1).cpu()
    k = max(1, math.ceil(frac * fa.shape[1]))
    ia, ib = fa.topk(k, dim=1).indices, fb.topk(k, dim=1).indices  # (N, k)
    hits = torch.zeros(fa.shape, dtype=torch.bool)
    hits.scatter_(1, ia, True)
    return hits.gather(1, ib).double().mean(dim=1)


################################################################################
# The runner hook
################################################################################
def first_images(loader, count, device):
    """The first `count` validation images and labels (from as many batches as needed)."""
    xs, ys, have = [], [], 0
    for x, y in loader:
        xs.append(x), ys.append(y)
        have += x.shape[0]
        if have >= count:
            break
    return torch.cat(xs)[:count].to(device), torch.cat(ys)[:count].to(device)


def save_grid(path, rows, nrow):
    """`rows`: list of `(N, 3, H, W)` images in [0, 1] (e.g. images, their maps) -> one PNG: `nrow` images
    per line, the lines of `rows` interleaved (images 0-7, their maps, images 8-15, their maps, ...)."""
    import cv2
    from torchvision.utils import make_grid

    n = rows[0].shape[0]
    lines = [r[i:i + nrow] for i in range(0, n, nrow) for r in rows]
    if n % nrow:  # pad the last group of lines so that every line starts at the left
        lines = [torch.cat([line, line.new_ones((nrow - line.shape[0],) + tuple(line.shape[1:]))])
                 if line.shape[0] < nrow else line for line in lines]
    grid = make_grid(torch.cat(lines).float().cpu(), nrow=nrow, padding=2, pad_value=1.0)  # (3, H', W')
    cv2.imwrite(path, (grid.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype("uint8"))


def overlay(images, maps):
    """Images `(N, 3, H, W)` normalized and maps `(N, 1, H, W)` -> the kit's overlay per image in [0, 1]."""
    import student_code

    n, _, h, w = images.shape
    grid = student_code.default_visfunction(images, maps, nrow=1)  # (3, n*(h+2)+2, w+4) with 2 px padding
    return torch.stack([grid[:, 2 + i * (h + 2):2 + i * (h + 2) + h, 2:2 + w] for i in range(n)])  # (N, 3, H, W)


def plain(images):
    import student_code

    n, _, h, w = images.shape
    grid = student_code.default_visfunction(images, nrow=1)
    return torch.stack([grid[:, 2 + i * (h + 2):2 + i * (h + 2) + h, 2:2 + w] for i in range(n)])


def run(args, model, loader, criterion, writer, run_dir, attacker=None, log=print):
    """The `--explain` hook of `main.py` (main process only). Returns a dict of metrics (empty with `-e`)."""
    import time

    x, y = first_images(loader, args.explain_images, args.device)
    explain = make_explainer(args.explain, model, criterion, x[:1], args.cam_layer)
    t0 = time.time()
    maps = explain(x)  # (N, 1, H, W)
    seconds = time.time() - t0
    nrow = min(len(x), 8)
    rows = [plain(x), overlay(x, maps)]
    if writer is not None:
        writer.add_image("Image/Image_Atten", student_code_grid(x, maps), 0)
    log(f"explain {args.explain}: {len(x)} images in {seconds:.2f} s ({1000 * seconds / len(x):.0f} ms per image)")
    if attacker is None:
        save_grid(os.path.join(run_dir, f"explain_{args.explain}.png"), rows, nrow)
        return {}
    adv = attacker.perturb(model, x, y if args.attack_untargeted else None)
    adv_maps = explain(adv)
    with torch.no_grad():
        clean_pred, adv_pred = model(x).argmax(1), model(adv).argmax(1)
    rho = spearman(maps, adv_maps)
    overlap = topk_overlap(maps, adv_maps, args.explain_topk)
    save_grid(os.path.join(run_dir, f"explain_{args.explain}_clean_vs_adv.png"),
              rows + [plain(adv), overlay(adv, adv_maps)], nrow)
    flipped = clean_pred.ne(adv_pred).cpu()
    result = {"method": args.explain, "images": len(x), "topk_frac": args.explain_topk,
              "spearman_mean": rho.mean().item(), "topk_overlap_mean": overlap.mean().item(),
              "flipped": int(flipped.sum()),
              "spearman_mean_flipped": rho[flipped].mean().item() if flipped.any() else None,
              "per_image": [{"index": i, "label": int(y[i]), "clean_pred": int(clean_pred[i]),
                             "adv_pred": int(adv_pred[i]), "spearman": rho[i].item(),
                             "topk_overlap": overlap[i].item()} for i in range(len(x))]}
    with open(os.path.join(run_dir, f"explain_{args.explain}.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    for r in result["per_image"]:
        log(f"  image {r['index']:>3}: label {r['label']:>3} pred {r['clean_pred']:>3} -> {r['adv_pred']:>3}  "
            f"spearman {r['spearman']:+.3f}  top-{100 * args.explain_topk:g}% overlap {r['topk_overlap']:.3f}")
    log(f"explain {args.explain}, clean vs adversarial over {len(x)} images ({result['flipped']} predictions "
        f"flipped): mean spearman {result['spearman_mean']:+.3f}, mean top-{100 * args.explain_topk:g}% overlap "
        f"{result['topk_overlap_mean']:.3f}")
    if writer is not None:
        writer.add_image("Image/Image_Atten_Adv", student_code_grid(adv, adv_maps), 0)
        writer.add_scalar("explain/spearman", result["spearman_mean"], 0)
        writer.add_scalar("explain/topk_overlap", result["topk_overlap_mean"], 0)
    return result


def student_code_grid(images, maps):
    import student_code

    return student_code.default_visfunction(images, maps)
