"""2b of the course's templates, judged by behaviour: the student's ViT through its own forward/backward,
its blocks against the pre-norm block computed here from *their own* weights, its block layout (window
attention where `window_block_indexes` says, stochastic depth rising linearly), training on a fixed batch
and a parameter budget - never through the kit's state_dict names.

Item protocol of tools/grading/items (`inputs`, `run` in the sandbox, `score` here):

- `inputs()`: seeded images and output gradients;
- `run(sc, inp, lib)`: CHILD. Builds `sc.default_vit_model(num_classes=...)` as the template's runner did,
  records each `TransformerBlock`'s input and output with forward hooks (eval mode, float64), returns the
  raw tensors, each block's own weights and settings, the gradients' health, a short training run's losses
  and the parameter count. Uses only its arguments and torch / nn / F (its source is shipped alone).
- `checks(inp, out)`: PARENT. `[(label, points, ok, detail)]`, labels routed by `scoring.component_of`
  (checks naming `TransformerBlock` grade the block; they are dropped where the block was given code).

The template's `TransformerBlock.__init__` (given in every version) names its parts `norm1`, `attn.qkv`,
`attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`: those names are the template's own, so the reference block is
rebuilt from them.
"""
import math

import torch
import torch.nn.functional as F

NUM_CLASSES = 10
PARAM_BUDGET = 8_000_000  # default_vit_model(num_classes=100); the template's default ViT has 1.9M
TRAIN_STEPS = 6
BLOCK_TOL = 1e-8  # float64, per element, relative to the output's scale


def inputs(seed=2610):
    gen = torch.Generator().manual_seed(seed)
    return {"classes": NUM_CLASSES, "budget_classes": 100,
            "x": torch.randn(2, 3, 128, 128, generator=gen, dtype=torch.float64),
            "gout": torch.randn(2, NUM_CLASSES, generator=gen, dtype=torch.float64),
            "train_x": torch.randn(4, 3, 128, 128, generator=gen),
            "train_y": torch.randint(0, NUM_CLASSES, (4,), generator=gen), "steps": TRAIN_STEPS, "lr": 1e-3}


def run(sc, inp, lib):
    import inspect

    res = {}

    def signature():
        params = inspect.signature(sc.SimpleViT.__init__).parameters
        out = {}
        for name in ("depth", "window_size", "drop_path_rate"):
            if name in params and isinstance(params[name].default, (int, float)):
                out[name] = float(params[name].default)
        idx = params["window_block_indexes"].default if "window_block_indexes" in params else None
        if isinstance(idx, (tuple, list)) and all(isinstance(i, int) for i in idx):
            out["window_block_indexes"] = [int(i) for i in idx]
        return out

    def forward_backward():
        torch.manual_seed(0)
        model = sc.default_vit_model(num_classes=inp["classes"]).double().eval()
        blocks = [m for m in model.modules() if type(m).__name__ == "TransformerBlock"]
        records = []
        hooks = [b.register_forward_hook(lambda mod, args, out, i=i: records.append((i, args[0], out)))
                 for i, b in enumerate(blocks)]
        x = inp["x"].clone().requires_grad_(True)
        try:
            out = model(x)
        finally:
            for h in hooks:
                h.remove()
        r = {"out": lib.plain(out)}
        out.backward(inp["gout"])
        r["gx"] = lib.plain(x.grad)
        r["no_grad"] = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None][:20]
        r["nonfinite"] = [n for n, p in model.named_parameters()
                          if p.grad is not None and not bool(torch.isfinite(p.grad).all())][:20]
        r["blocks"] = []
        for i, xin, xout in records[:16]:
            b = blocks[i]
            attn, drop, norm1 = getattr(b, "attn", None), getattr(b, "drop_path", None), getattr(b, "norm1", None)
            r["blocks"].append({
                "index": i, "x": lib.plain(xin), "y": lib.plain(xout),
                "state": {k: lib.plain(v) for k, v in b.state_dict().items()},
                "window_size": int(getattr(b, "window_size", -1)),
                "num_heads": int(getattr(attn, "num_heads", -1)),
                "drop_prob": float(getattr(drop, "drop_prob", 0.0) or 0.0),
                "eps": float(getattr(norm1, "eps", 1e-5))})
        return r

    def train():
        torch.manual_seed(0)
        model = sc.default_vit_model(num_classes=inp["classes"]).train()
        opt = torch.optim.AdamW(model.parameters(), lr=inp["lr"])
        losses = []
        for _ in range(inp["steps"]):
            torch.manual_seed(len(losses))
            loss = F.cross_entropy(model(inp["train_x"]), inp["train_y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return {"losses": torch.tensor(losses, dtype=torch.float64)}

    def budget():
        torch.manual_seed(0)
        model = sc.default_vit_model(num_classes=inp["budget_classes"])
        return {"n_params": int(sum(p.numel() for p in model.parameters()))}

    for name, fn in (("signature", signature), ("pass", forward_backward), ("train", train), ("budget", budget)):
        lib.stage(res, name, fn)
    return res


# ---------------------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------------------
def _pad_windows(x, ws):
    B, H, W, C = x.shape
    ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
    x = F.pad(x, (0, 0, 0, pw, 0, ph))  # (B, Hp, Wp, C)
    Hp, Wp = H + ph, W + pw
    x = x.reshape(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C)
    return x, (Hp, Wp)


def _unpad_windows(win, ws, pad_hw, hw):
    Hp, Wp = pad_hw
    B = win.shape[0] // ((Hp // ws) * (Wp // ws))
    x = win.reshape(B, Hp // ws, Wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :hw[0], :hw[1], :]


def _attention(x, st, heads):
    """Multi-head self-attention of `x (B, H, W, C)` with the block's own qkv / proj weights."""
    B, H, W, C = x.shape
    hd = C // heads
    qkv = F.linear(x, st["attn.qkv.weight"], st.get("attn.qkv.bias"))  # (B, H, W, 3C)
    q, k, v = qkv.reshape(B, H * W, 3, heads, hd).permute(2, 0, 3, 1, 4)  # each (B, h, L, hd)
    a = torch.softmax((q @ k.transpose(-2, -1)) * hd ** -0.5, dim=-1)  # (B, h, L, L)
    y = (a @ v).transpose(1, 2).reshape(B, H, W, C)  # heads merged
    return F.linear(y, st["attn.proj.weight"], st.get("attn.proj.bias"))


def reference_block(x, st, heads, window_size, eps=1e-5):
    """The pre-norm block (eval mode: no stochastic depth) from its own weights `st`: `(B, H, W, C)`."""
    C = x.shape[-1]
    y = F.layer_norm(x, (C,), st["norm1.weight"], st["norm1.bias"], eps)
    if window_size > 0:
        hw = (y.shape[1], y.shape[2])
        win, pad_hw = _pad_windows(y, window_size)
        y = _unpad_windows(_attention(win, st, heads), window_size, pad_hw, hw)
    else:
        y = _attention(y, st, heads)
    x = x + y
    z = F.layer_norm(x, (C,), st["norm2.weight"], st["norm2.bias"], eps)
    z = F.linear(F.gelu(F.linear(z, st["mlp.fc1.weight"], st["mlp.fc1.bias"])), st["mlp.fc2.weight"],
                 st["mlp.fc2.bias"])
    return x + z


_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "norm2.weight", "norm2.bias",
               "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")


def _block_problem(b):
    """None when the recorded block equals the reference block from its own weights, else why not."""
    st = b.get("state") if isinstance(b.get("state"), dict) else {}
    missing = [k for k in _BLOCK_KEYS if not isinstance(st.get(k), torch.Tensor)]
    if missing:
        return f"block {b.get('index')}: no {missing[0]} (keep the template's TransformerBlock.__init__)"
    x, y = b.get("x"), b.get("y")
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 4 and x.shape == y.shape):
        return f"block {b.get('index')}: its output is not a (B, H, W, C) tensor like its input"
    heads = b.get("num_heads")
    if not isinstance(heads, int) or heads <= 0 or x.shape[-1] % heads:
        return f"block {b.get('index')}: attn.num_heads is not a divisor of the channels"
    try:
        want = reference_block(x.double(), {k: v.double() for k, v in st.items()}, heads, int(b["window_size"]),
                               float(b.get("eps", 1e-5)))
    except (RuntimeError, ValueError, KeyError) as exc:
        return f"block {b.get('index')}: its weights do not fit a pre-norm block ({type(exc).__name__})"
    err = float((y.double() - want).abs().max())
    scale = max(1.0, float(want.abs().max()))
    if not math.isfinite(err) or err > BLOCK_TOL * scale:
        kind = f"window {b['window_size']}" if b["window_size"] > 0 else "global"
        return (f"block {b['index']} ({kind} attention) differs from the pre-norm block computed from its own "
                f"weights by {err:.3g}")
    return None


def checks(inp, out):
    """`[(label, points, ok, detail)]` of the 2b behaviour checks from the child's raw `out`."""
    out = out if isinstance(out, dict) else {}
    p = out.get("pass") if isinstance(out.get("pass"), dict) else {}
    result = []
    err = p.get("error")
    y = p.get("out")
    ok = (err is None and isinstance(y, torch.Tensor) and tuple(y.shape) == (inp["x"].shape[0], inp["classes"])
          and bool(torch.isfinite(y).all()) and not p.get("no_grad") and not p.get("nonfinite")
          and isinstance(p.get("gx"), torch.Tensor) and bool(torch.isfinite(p["gx"]).all()))
    if err is not None:
        detail = f"default_vit_model(num_classes={inp['classes']}) on 128x128 raised {err}"
    elif not isinstance(y, torch.Tensor) or tuple(y.shape) != (inp["x"].shape[0], inp["classes"]):
        detail = f"output shape {tuple(y.shape) if isinstance(y, torch.Tensor) else None}, expected (N, num_classes)"
    elif p.get("no_grad"):
        detail = f"no gradient reaches {', '.join(map(str, p['no_grad'][:3]))}"
    elif p.get("nonfinite"):
        detail = f"non-finite gradient in {', '.join(map(str, p['nonfinite'][:3]))}"
    else:
        detail = "" if ok else "non-finite output or input gradient"
    result.append(("SimpleViT: (N, num_classes) logits on 128x128 images, every parameter gets a finite gradient",
                   0.5, ok, detail))

    blocks = [b for b in p.get("blocks", []) if isinstance(b, dict)] if err is None else []
    for kind, want_window in (("global", False), ("window", True)):
        chosen = [b for b in blocks if isinstance(b.get("window_size"), int) and (b["window_size"] > 0) == want_window]
        problems = [q for q in (_block_problem(b) for b in chosen) if q]
        if not chosen:
            ok, detail = False, (f"no {kind}-attention TransformerBlock ran in default_vit_model"
                                 if err is None else "the model did not run")
        else:
            ok, detail = not problems, "; ".join(problems[:2])
        result.append((f"TransformerBlock ({kind} attention{', padding handled' if want_window else ''}) equals "
                       f"the pre-norm block computed from its own weights", 0.5, ok, detail))

    sig = out.get("signature") if isinstance(out.get("signature"), dict) else {}
    layout = []
    if blocks and "window_block_indexes" in sig and "window_size" in sig:
        idx, ws = set(sig["window_block_indexes"]), int(sig["window_size"])
        for b in blocks:
            want = ws if b["index"] in idx else 0
            if b.get("window_size") != want:
                layout.append(f"block {b['index']} has window_size {b.get('window_size')}, expected {want} "
                              f"(window_block_indexes={sorted(idx)})")
        if "drop_path_rate" in sig and len(blocks) > 1:
            n = len(blocks)
            for b in blocks:
                want = sig["drop_path_rate"] * b["index"] / (n - 1)
                if abs(float(b.get("drop_prob", 0.0)) - want) > 1e-6:
                    layout.append(f"block {b['index']} drops paths with {b.get('drop_prob'):.3g}, expected "
                                  f"{want:.3g} (rising linearly to drop_path_rate)")
                    break
        ok, detail = not layout, "; ".join(layout[:2])
    else:
        ok, detail = False, "no TransformerBlock found in default_vit_model" if err is None else "the model did not run"
    result.append(("SimpleViT: window attention in window_block_indexes, stochastic depth rising linearly", 0.25,
                   ok, detail))

    t = out.get("train") if isinstance(out.get("train"), dict) else {}
    losses = t.get("losses")
    ok = (isinstance(losses, torch.Tensor) and losses.numel() == inp["steps"] and bool(torch.isfinite(losses).all())
          and float(losses[-1]) < float(losses[0]))
    if t.get("error"):
        detail = f"training raised {t['error']}"
    elif isinstance(losses, torch.Tensor) and losses.numel():
        detail = f"loss {float(losses[0]):.4f} -> {float(losses[-1]):.4f} in {inp['steps']} AdamW steps"
    else:
        detail = "no losses came back"
    result.append((f"SimpleViT trains: {inp['steps']} AdamW steps on a fixed batch lower the loss", 0.5, ok, detail))

    b = out.get("budget") if isinstance(out.get("budget"), dict) else {}
    n = b.get("n_params")
    ok = isinstance(n, int) and 0 < n <= PARAM_BUDGET
    result.append((f"SimpleViT: default_vit_model(num_classes=100) has at most {PARAM_BUDGET / 1e6:g}M parameters",
                   0.25, ok, f"{n} parameters" if isinstance(n, int) else f"raised {b.get('error')}"))
    return result
