"""The table of template versions: one `Profile` per published version of the assignment, and the kit.

Every fact here comes from reading the course's published templates (student_code.py, main.py,
custom_blocks.py, custom_transforms.py, utils.py of Fall 2022 to Fall 2025, public on GitHub); what a
version's *runner* did is what its `main.py` did. The stub bodies below are not copied text: they are the
few *given* statements of each stub, written here as data, compared as normalized ASTs (`astnorm`). A
student's function whose statements are all given statements is an unchanged stub and earns nothing.

Versions (how they really split):

| profile | templates | what the student writes | runner calls |
|---|---|---|---|
| `kit` | this kit (current) | every piece of SPEC section 4 | `perturb(model, x, target=None)`, `explain` on any mode, `get_*_transforms(img_size)` |
| `2022-23` | Fall 2022, Fall 2023 | conv fwd/bwd, `SimpleViT`, `default_cnn_model`, `PGDAttack.perturb`, `GradAttention.explain` (`Attention`, `TransformerBlock` given in `custom_blocks`) | `perturb(model, x)`, `model.eval()` then `explain(model, x)`, `get_*_transforms(normalize)` |
| `2024` | Fall 2024 | conv, `Attention.forward`, `SimpleViT`, `default_cnn_model`, `PGDAttack.perturb` (`TransformerBlock.forward` given in student_code; no saliency) | `perturb(model, x)` after `model.eval()`, `get_*_transforms()` |
| `2025` | Fall 2025 | as 2024, plus `TransformerBlock.forward` | as 2024 |

Fall 2022 and Fall 2023 share one interface (same names, signatures, given blocks, main.py calls; they
differ only in a default `window_block_indexes` and docstring wording), so they are one profile.

Points: every version has the course's 12 + 2 bonus, in the kit's item numbers. Where a version has no
student code for an item of the kit, that part's points go to what the version's students did write in
the same part (2022-23: `SimpleViT` carries all 4 points of Part 2; 2024/2025: `PGDAttack` carries 3a).
The course's bonus (adversarial training) was, in every template, code the student placed where they
liked (`SimpleNet.forward`, `main.py`), not a function with an interface: it is not autogradable there, so
3b is listed with `manual=True` (0 automatic points, staff grade it from the write-up).
"""
import collections

# A graded item of one version: `components` are (name, points, stub qualnames) - a component whose stub
# functions are all unchanged scores 0 whatever the checks say.
Item = collections.namedtuple("Item", "number name max_score bonus components manual")
Component = collections.namedtuple("Component", "name points stubs")


def _item(number, name, max_score, components, bonus=False, manual=False):
    return Item(number, name, float(max_score), bonus, tuple(Component(*c) for c in components), manual)


class Profile(collections.namedtuple("Profile", [
        "name",  # "kit", "2022-23", "2024", "2025"
        "label",  # shown in results.json
        "items",  # tuple of Item, in assignment order
        "perturb_takes_target",  # perturb(model, input, target=None) (kit) or perturb(model, input)
        "untargeted_graded",  # the untargeted (target given) attack is part of this version
        "explain",  # None (no saliency in this version), "any_mode" (kit) or "after_eval" (runner evals first)
        "perturb_after_eval",  # the runner put the model in eval mode before perturb
        "transforms_arg",  # "img_size" (kit), "normalize" (2022-23) or "none" (2024/2025)
        "visfunction",  # "overlay": default_visfunction(input, vis_output=None); "grid": default_visfunction(input)
        "image_range_required",  # iterates must stay in the valid (normalized) image range
        "detached_output_required",  # perturb/explain must return tensors that do not require grad
        "compat_modules",  # files of tools/grading/compat placed in the sandbox
        "given",  # qualnames of given code: earns no points; changing SimpleNet costs 1b-i
        "stubs",  # qualname -> tuple of given statements (snippets); "=name" entries: module assignment stubs
        "notes",
])):
    """One template version. `items` follow the kit's numbering (1a ... 3b)."""

    def item(self, number):
        for it in self.items:
            if it.number == number:
                return it
        return None

    @property
    def total(self):
        return sum(i.max_score for i in self.items if not i.bonus)

    @property
    def bonus(self):
        return sum(i.max_score for i in self.items if i.bonus)


# ---------------------------------------------------------------------------------------------- stubs
# The given statements of the course's convolution stubs (identical 2022-2025).
_CONV_FORWARD = (
    "assert weight.size(2) == weight.size(3)",
    "assert input_feats.size(1) == weight.size(1)",
    "assert isinstance(stride, int) and (stride > 0)",
    "assert isinstance(padding, int) and (padding >= 0)",
    "kernel_size = weight.size(2)",
    "ctx.stride = stride",
    "ctx.padding = padding",
    "ctx.input_height = input_feats.size(2)",
    "ctx.input_width = input_feats.size(3)",
    "assert kernel_size <= (input_feats.size(2) + 2 * padding)",
    "assert kernel_size <= (input_feats.size(3) + 2 * padding)",
    "return output",
)
_CONV_BACKWARD = (
    "grad_input = grad_weight = grad_bias = None",
    "kernel_size = weight.size(2)",
    "stride = ctx.stride",
    "padding = ctx.padding",
    "input_height = ctx.input_height",
    "input_width = ctx.input_width",
    "if bias is not None and ctx.needs_input_grad[2]:\n    grad_bias = grad_output.sum((0, 2, 3))",
    "return grad_input, grad_weight, grad_bias, None, None",
)
_PERTURB = (
    "output = input.clone()",
    "input.requires_grad = False",
    "return output",
)
_EXPLAIN = (
    "input.requires_grad = True",
    "if input.grad is not None:\n    input.grad.zero_()",
    "return output",
)
_VIT_INIT_COMMON = (
    "super(SimpleViT, self).__init__()",
    "super().__init__()",
    "if use_abs_pos:\n    self.pos_embed = nn.Parameter(torch.zeros(1, img_size // patch_size, img_size // patch_size, "
    "embed_dim))\nelse:\n    self.pos_embed = None",
    "dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]",
    "if self.pos_embed is not None:\n    trunc_normal_(self.pos_embed, std=0.02)",
    "self.apply(self._init_weights)",
)
_VIT_PATCH_EMBED = (
    "self.patch_embed = PatchEmbed(kernel_size=(patch_size, patch_size), stride=(patch_size, patch_size), "
    "in_chans=in_chans, embed_dim=embed_dim)",
)
_VIT_FORWARD = ("return x",)
_ATTENTION_FORWARD = (
    "B, H, W, _ = x.shape",
    "qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)",
    "q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)",
    "return x",
)
_BLOCK_FORWARD_2025 = (
    "shortcut = x",
    "x = self.norm1(x)",
    "x = shortcut + self.drop_path(x)",
    "x = x + self.drop_path(self.mlp(self.norm2(x)))",
    "return x",
)
# the 2024 template's given TransformerBlock.forward (the same block the 2022-23 custom_blocks gave): a
# submission whose forward is exactly this is a 2024 one (detection), and this code earns nothing
BLOCK_FORWARD_GIVEN_2024 = """
shortcut = x
x = self.norm1(x)
if self.window_size > 0:
    H, W = x.shape[1], x.shape[2]
    x, pad_hw = window_partition(x, self.window_size)
x = self.attn(x)
if self.window_size > 0:
    x = window_unpartition(x, self.window_size, pad_hw, (H, W))
x = shortcut + self.drop_path(x)
x = x + self.drop_path(self.mlp(self.norm2(x)))
return x
"""
# the given SimpleNet's layers (every version, the kit included): the constructor calls of its __init__,
# in order. A default_cnn_model that is the given SimpleNet is an unchanged stub of 1b-iii.
SIMPLENET_LAYERS = """
conv_op(3, 64, kernel_size=7, stride=2, padding=3)
nn.ReLU(inplace=True)
nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
conv_op(64, 64, kernel_size=1, stride=1, padding=0)
nn.ReLU(inplace=True)
conv_op(64, 64, kernel_size=3, stride=1, padding=1)
nn.ReLU(inplace=True)
conv_op(64, 256, kernel_size=1, stride=1, padding=0)
nn.ReLU(inplace=True)
nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
conv_op(256, 128, kernel_size=1, stride=1, padding=0)
nn.ReLU(inplace=True)
conv_op(128, 128, kernel_size=3, stride=1, padding=1)
nn.ReLU(inplace=True)
conv_op(128, 512, kernel_size=1, stride=1, padding=0)
nn.ReLU(inplace=True)
nn.AdaptiveAvgPool2d((1, 1))
nn.Linear(512, num_classes)
"""

_COURSE_CONV_STUBS = {
    "CustomConv2DFunction.forward": _CONV_FORWARD,
    "CustomConv2DFunction.backward": _CONV_BACKWARD,
    # the course's default_cnn_model stub is the assignment `default_cnn_model = SimpleNet`
    "=default_cnn_model": ("SimpleNet",),
    "PGDAttack.perturb": _PERTURB,
}
_CONV = ("CustomConv2DFunction.forward", "CustomConv2DFunction.backward")

# the kit: the given statements of each stub are read from the kit's own release (the reference with its
# solution blocks stripped, tools/release/markers.py), so they follow the reference as it evolves
KIT_STUBS_FROM_RELEASE = None


def _part1(cnn_stub):
    return (
        _item("1a", "1a CustomConv2DFunction: forward and backward", 2, [("convolution", 2.0, _CONV)]),
        _item("1b-i", "1b-i SimpleNet trains with your CustomConv2d", 1, [("training", 1.0, _CONV)]),
        _item("1b-ii", "1b-ii SimpleNet: CustomConv2d equals nn.Conv2d", 1, [("equivalence", 1.0, _CONV)]),
        _item("1b-iii", "1b-iii default_cnn_model", 1, [("design", 1.0, (cnn_stub,))]),
        _item("1b-iv", "1b-iv ResNet-18 on your CustomConv2d", 1, [("resnet18", 1.0, _CONV)]),
    )


_MANUAL_3B = _item("3b", "3b (bonus) adversarial training (graded by staff from the write-up)", 2, [],
                   bonus=True, manual=True)

KIT = Profile(
    name="kit",
    label="this kit (current API)",
    items=_part1("default_cnn_model") + (
        _item("2a", "2a Attention", 2, [("attention", 2.0, ("Attention.forward",))]),
        _item("2b", "2b TransformerBlock, SimpleViT, default_vit_model", 2,
              [("TransformerBlock", 1.0, ("TransformerBlock.__init__", "TransformerBlock.forward")),
               ("SimpleViT", 1.0, ("SimpleViT.__init__", "SimpleViT.forward", "default_vit_model"))]),
        _item("3a", "3a PGDAttack, default_attack, GradAttention", 2,
              [("PGDAttack", 1.5, ("PGDAttack.perturb", "default_attack")),
               ("GradAttention", 0.5, ("GradAttention.explain", "default_attention"))]),
        _item("3b", "3b (bonus) adversarial_training_step", 2,
              [("adversarial_training_step", 2.0, ("adversarial_training_step",))], bonus=True),
    ),
    perturb_takes_target=True,
    untargeted_graded=True,
    explain="any_mode",
    perturb_after_eval=False,
    transforms_arg="img_size",
    visfunction="overlay",
    image_range_required=True,
    detached_output_required=True,
    compat_modules=(),
    given=("CustomConv2d", "SimpleNet", "default_visfunction"),
    stubs=KIT_STUBS_FROM_RELEASE,
    notes="the kit's own API (SPEC section 4); stubs are the release's `raise NotImplementedError`",
)

V2022_23 = Profile(
    name="2022-23",
    label="course template, Fall 2022 / Fall 2023",
    items=_part1("=default_cnn_model") + (
        _item("2b", "2b SimpleViT, default_vit_model (Attention and TransformerBlock are given)", 4,
              [("SimpleViT", 4.0, ("SimpleViT.__init__", "SimpleViT.forward"))]),
        _item("3a", "3a PGDAttack, GradAttention", 2,
              [("PGDAttack", 1.0, ("PGDAttack.perturb",)), ("GradAttention", 1.0, ("GradAttention.explain",))]),
        _MANUAL_3B,
    ),
    perturb_takes_target=False,
    untargeted_graded=False,
    explain="after_eval",
    perturb_after_eval=True,
    transforms_arg="normalize",
    visfunction="overlay",
    image_range_required=False,
    detached_output_required=False,
    compat_modules=("utils.py", "custom_transforms.py", "custom_blocks.py"),
    given=("CustomConv2d", "SimpleNet", "vis_grad_attention", "get_train_transforms", "get_val_transforms"),
    stubs=dict(_COURSE_CONV_STUBS, **{
        "SimpleViT.__init__": _VIT_INIT_COMMON,
        "SimpleViT.forward": _VIT_FORWARD,
        "GradAttention.explain": _EXPLAIN,
    }),
    notes="main.py: validate() calls model.eval(), then attacker.perturb(model, input) and "
          "visualizer.explain(model, input) under torch.set_grad_enabled(True); "
          "get_train_transforms(normalize) with normalize = transforms.Normalize(mean, std); "
          "student_code imports `from custom_blocks import PatchEmbed, TransformerBlock, trunc_normal_`",
)

_V2024_STUBS = dict(_COURSE_CONV_STUBS, **{
    "Attention.forward": _ATTENTION_FORWARD,
    "SimpleViT.__init__": _VIT_INIT_COMMON + _VIT_PATCH_EMBED,
    "SimpleViT.forward": _VIT_FORWARD,
})

V2024 = Profile(
    name="2024",
    label="course template, Fall 2024",
    items=_part1("=default_cnn_model") + (
        _item("2a", "2a Attention", 2, [("attention", 2.0, ("Attention.forward",))]),
        _item("2b", "2b SimpleViT, default_vit_model (TransformerBlock.forward is given)", 2,
              [("SimpleViT", 2.0, ("SimpleViT.__init__", "SimpleViT.forward"))]),
        _item("3a", "3a PGDAttack", 2, [("PGDAttack", 2.0, ("PGDAttack.perturb",))]),
        _MANUAL_3B,
    ),
    perturb_takes_target=False,
    untargeted_graded=False,
    explain=None,
    perturb_after_eval=True,
    transforms_arg="none",
    visfunction="grid",
    image_range_required=False,
    detached_output_required=False,
    compat_modules=("utils.py", "custom_transforms.py", "custom_blocks.py"),
    given=("CustomConv2d", "SimpleNet", "TransformerBlock.forward", "vis_grid", "get_train_transforms",
           "get_val_transforms"),
    stubs=_V2024_STUBS,
    notes="main.py: validate() calls model.eval(), then attacker.perturb(model, input); no saliency "
          "(visualizer = default_visfunction, a plain image grid); get_train_transforms() takes no argument",
)

V2025 = Profile(
    name="2025",
    label="course template, Fall 2025",
    items=_part1("=default_cnn_model") + (
        _item("2a", "2a Attention", 2, [("attention", 2.0, ("Attention.forward",))]),
        _item("2b", "2b TransformerBlock, SimpleViT, default_vit_model", 2,
              [("TransformerBlock", 1.0, ("TransformerBlock.forward",)),
               ("SimpleViT", 1.0, ("SimpleViT.__init__", "SimpleViT.forward"))]),
        _item("3a", "3a PGDAttack", 2, [("PGDAttack", 2.0, ("PGDAttack.perturb",))]),
        _MANUAL_3B,
    ),
    perturb_takes_target=False,
    untargeted_graded=False,
    explain=None,
    perturb_after_eval=True,
    transforms_arg="none",
    visfunction="grid",
    image_range_required=False,
    detached_output_required=False,
    compat_modules=("utils.py", "custom_transforms.py", "custom_blocks.py"),
    given=("CustomConv2d", "SimpleNet", "vis_grid", "get_train_transforms", "get_val_transforms"),
    stubs=dict(_V2024_STUBS, **{"TransformerBlock.forward": _BLOCK_FORWARD_2025}),
    notes="as 2024, but TransformerBlock.forward is a stub (window attention to write)",
)

PROFILES = {p.name: p for p in (KIT, V2022_23, V2024, V2025)}
ORDER = ("kit", "2022-23", "2024", "2025")
