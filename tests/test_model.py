"""Chapter 04: the SSAST model against the official layout, objectives and fine-tuning."""

import json
from importlib import resources

import pytest
import timm
import torch
from torch import nn

from ssast_teach.model import (
    MODEL_SIZES,
    ModelSize,
    SSASTConfig,
    SSASTModel,
    adapt_pos_embed,
    strip_module_prefix,
)

MANIFEST = json.loads(
    (resources.files("ssast_teach") / "resources" / "official_state_dict_keys.json").read_text()
)
GEOMETRIES = {"patch": (16, 16), "frame": (128, 2)}


def randomise(model: nn.Module) -> nn.Module:
    """Give every float tensor random values so that no equality holds by accident."""
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.normal_(0, 0.05)
    return model


def module_prefixed(model: nn.Module) -> dict:
    """The state dict as the official code saves it (from ``torch.nn.DataParallel``)."""
    return {f"module.{k}": v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- layout
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_state_dict_equals_official_manifest(size, geometry):
    fshape, tshape = GEOMETRIES[geometry]
    with torch.device("meta"):
        model = SSASTModel.for_pretraining(size=size, fshape=fshape, tshape=tshape)
    got = [
        (k, list(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    ]
    official = MANIFEST[f"{size}-{geometry}"]
    expected = [(k.removeprefix("module."), v["shape"], v["dtype"]) for k, v in official.items()]
    assert got == expected


def test_official_parameter_counts():
    tiny = SSASTModel.for_pretraining(size="tiny")
    assert tiny.num_params() == 6_046_290
    assert tiny.num_params(trainable_only=True) == 6_046_290 - 2
    with torch.device("meta"):
        assert SSASTModel.for_pretraining(size="base").num_params() == 88_763_346


def test_pretraining_input_size_rides_in_the_parameters():
    model = SSASTModel.for_pretraining(size="mini", input_tdim=64)
    params = dict(model.named_parameters())
    for name, value in (("p_input_fdim", 128), ("p_input_tdim", 64)):
        assert params[name].dtype == torch.int64 and params[name].dim() == 0
        assert not params[name].requires_grad and params[name].item() == value
    assert [n for n, _ in model.named_children()] == ["v", "cpredlayer", "gpredlayer"]
    std = model.mask_embed.std().item()
    assert 0.5 / 8 < std < 2 / 8  # xavier normal on (1, 1, 64): std 1 / sqrt(64)


def test_pretraining_rejects_overlapping_strides():
    with pytest.raises(ValueError, match="fstride=10"):
        SSASTModel.for_pretraining(size="mini", fstride=10, tstride=10)


def test_bad_config_names_the_argument():
    with pytest.raises(ValueError, match="size='huge'"):
        SSASTConfig(size="huge")
    with pytest.raises(ValueError, match="tshape"):
        SSASTConfig(size="mini", tshape=2048)


# --------------------------------------------------------------------------- pretraining
def official_masked_outputs(model, x, mask_index, head):
    """The official mpc/mpg encoder path, per clip, restated (given mask ids, no RNG)."""
    grid = model.grid
    x = x.unsqueeze(1).transpose(2, 3)
    unfold = nn.Unfold(kernel_size=(grid.fshape, grid.tshape), stride=(grid.fstride, grid.tstride))
    inputs = unfold(x).transpose(1, 2)
    b, m = mask_index.shape
    x = model.v.patch_embed.proj(x).flatten(2).transpose(1, 2)
    encode_samples = torch.empty((b, m, grid.patch_dim))
    mask_dense = torch.ones_like(x)
    for i in range(b):
        encode_samples[i] = inputs[i, mask_index[i], :].clone().detach()
        mask_dense[i, mask_index[i], :] = 0
    mask_tokens = model.mask_embed.expand(b, x.shape[1], -1)
    x = x * mask_dense + (1 - mask_dense) * mask_tokens
    cls_tokens = model.v.cls_token.expand(b, -1, -1)
    dist_token = model.v.dist_token.expand(b, -1, -1)
    x = torch.cat((cls_tokens, dist_token, x), dim=1)
    x = x + model.v.pos_embed
    x = model.v.pos_drop(x)
    for blk in model.v.blocks:
        x = blk(x)
    x = model.v.norm(x)
    pred = torch.empty((b, m, grid.patch_dim))
    for i in range(b):
        pred[i] = head(x[i, mask_index[i] + 2, :])
    return pred, encode_samples


def official_mpc(model, x, mask_index):
    pred, encode_samples = official_masked_outputs(model, x, mask_index, model.cpredlayer)
    b, m = mask_index.shape
    nce, correct = torch.tensor(0.0), torch.tensor(0.0)
    for i in range(b):
        total = torch.mm(encode_samples[i], torch.transpose(pred[i], 0, 1))
        correct += torch.sum(
            torch.eq(torch.argmax(torch.softmax(total, dim=-1), dim=0), torch.arange(0, m))
        )
        nce += torch.sum(torch.diag(torch.log_softmax(total, dim=-1)))
    return 1.0 * correct / (b * m), nce / (-1.0 * b * m)


def official_mpg(model, x, mask_index):
    pred, target = official_masked_outputs(model, x, mask_index, model.gpredlayer)
    return torch.mean((pred - target) ** 2)


def random_mask_ids(batch, num_patches, mask_patch):
    return torch.stack([torch.randperm(num_patches)[:mask_patch] for _ in range(batch)])


@pytest.fixture
def mini():
    return randomise(SSASTModel.for_pretraining(size="mini", input_tdim=128))


def test_mpc_and_mpg_equal_the_official_per_clip_loop(mini):
    x = torch.randn(3, 128, 128)
    ids = random_mask_ids(3, mini.grid.num_patches, 20)
    acc, nce = mini.mpc(x, ids)
    ref_acc, ref_nce = official_mpc(mini, x, ids)
    assert acc.item() == ref_acc.item()
    torch.testing.assert_close(nce, ref_nce, rtol=1e-5, atol=1e-5)
    nce.backward()
    grads = [p.grad.clone() for p in (mini.mask_embed, mini.v.blocks[0].attn.qkv.weight)]
    mini.zero_grad()
    ref_nce.backward()
    for grad, p in zip(grads, (mini.mask_embed, mini.v.blocks[0].attn.qkv.weight), strict=True):
        torch.testing.assert_close(grad, p.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(mini.mpg(x, ids), official_mpg(mini, x, ids), rtol=1e-5, atol=1e-6)


def test_forward_task_names_route_to_mpc_and_mpg(mini):
    x = torch.randn(2, 128, 128)
    ids = random_mask_ids(2, mini.grid.num_patches, 10)
    assert torch.equal(mini(x, task="pretrain_mpc", mask_ids=ids)[1], mini.mpc(x, ids)[1])
    assert torch.equal(mini(x, task="pretrain_mpg", mask_ids=ids), mini.mpg(x, ids))
    with pytest.raises(ValueError, match="pretraining model"):
        mini(x)
    with pytest.raises(ValueError, match="needs mask_ids"):
        mini(x, task="pretrain_mpc")


def test_softmax_quirk_changes_nce(mini):
    x = torch.randn(2, 128, 128)
    ids = random_mask_ids(2, mini.grid.num_patches, 10)
    assert mini.mpc(x, ids)[1] != mini.mpc(x, ids, softmax_quirk=False)[1]


def test_bad_inputs_are_clear_errors(mini):
    x = torch.randn(2, 128, 128)
    with pytest.raises(ValueError, match="input_tdim=128"):
        mini.mpc(torch.randn(2, 100, 128), random_mask_ids(2, 64, 5))
    with pytest.raises(ValueError, match="LongTensor"):
        mini.mpg(x, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="num_patches=64"):
        mini.mpg(x, torch.full((2, 5), 64))


def test_a_pretraining_step_runs_on_cpu(mini):
    optimiser = torch.optim.Adam(mini.parameters(), lr=1e-4, betas=(0.95, 0.999))
    x = torch.randn(2, 128, 128)
    before = mini.v.blocks[0].mlp.fc1.weight.detach().clone()
    n = mini.grid.num_patches
    _, nce = mini.mpc(x, random_mask_ids(2, n, 16))  # two passes, two independent masks
    mse = mini.mpg(x, random_mask_ids(2, n, 16))
    loss = nce + 10 * mse
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, mini.v.blocks[0].mlp.fc1.weight)
    assert mini.p_input_tdim.item() == 128


def test_single_class_token_backbone(monkeypatch):
    """base_nokd has one class token (the official mpc/mpg would break on it); a mini twin."""
    monkeypatch.setitem(MODEL_SIZES, "mini_nokd", ModelSize("deit_tiny_patch16_224", 64, 4, 4, 1))
    model = SSASTModel.for_pretraining(size="mini_nokd", input_tdim=64)
    assert "v.dist_token" not in model.state_dict()
    assert model.v.pos_embed.shape == (1, 32 + 1, 64)
    x = torch.randn(2, 64, 128)
    ids = random_mask_ids(2, 32, 8)
    acc, nce = model.mpc(x, ids)
    assert torch.isfinite(nce) and torch.isfinite(model.mpg(x, ids))
    ft = SSASTModel.for_finetuning(
        model.state_dict(), n_classes=5, input_tdim=64, pooling="cls", fstride=16, tstride=16
    )
    assert ft.config.size == "mini_nokd" and ft(x).shape == (2, 5)
    torch.testing.assert_close(ft.embed(x, "cls"), ft.tokens(x)[:, 0])


# --------------------------------------------------------------------------- fine-tuning
def official_finetuning_model(sd, size, n_classes, fshape, tshape, fstride, tstride, fdim, tdim):
    """The official ASTModel(pretrain_stage=False) construction, restated with timm 1.x."""
    p_fshape, p_tshape = sd["module.v.patch_embed.proj.weight"].shape[2:]
    p_input_fdim, p_input_tdim = sd["module.p_input_fdim"].item(), sd["module.p_input_tdim"].item()
    spec = MODEL_SIZES[size]
    v = timm.create_model(
        spec.timm_name,
        pretrained=False,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
    )
    d = v.pos_embed.shape[2]
    cls_token_num = 2

    def get_shape(fstride, tstride, input_fdim, input_tdim):
        test_out = nn.Conv2d(1, d, (fshape, tshape), (fstride, tstride))(
            torch.randn(1, 1, input_fdim, input_tdim)
        )
        return test_out.shape[2], test_out.shape[3]

    p_f_dim, p_t_dim = get_shape(p_fshape, p_tshape, p_input_fdim, p_input_tdim)
    v.patch_embed.proj = nn.Conv2d(1, d, (p_fshape, p_tshape), (p_fshape, p_tshape))
    v.pos_embed = nn.Parameter(torch.zeros(1, p_f_dim * p_t_dim + cls_token_num, d))
    v_sd = {k.removeprefix("module.v."): t for k, t in sd.items() if k.startswith("module.v.")}
    v.load_state_dict(v_sd)
    mlp_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_classes))
    f_dim, t_dim = get_shape(fstride, tstride, fdim, tdim)
    num_patches, p_num_patches = f_dim * t_dim, p_f_dim * p_t_dim
    if fstride != p_fshape or tstride != p_tshape:
        new_proj = nn.Conv2d(1, d, kernel_size=(fshape, tshape), stride=(fstride, tstride))
        new_proj.weight = nn.Parameter(torch.sum(v.patch_embed.proj.weight, dim=1).unsqueeze(1))
        new_proj.bias = v.patch_embed.proj.bias
        v.patch_embed.proj = new_proj
    new_pos_embed = (
        v.pos_embed[:, cls_token_num:, :]
        .detach()
        .reshape(1, p_num_patches, d)
        .transpose(1, 2)
        .reshape(1, d, p_f_dim, p_t_dim)
    )
    if t_dim < p_t_dim:
        start = int(p_t_dim / 2) - int(t_dim / 2)
        new_pos_embed = new_pos_embed[:, :, :, start : start + t_dim]
    else:
        new_pos_embed = nn.functional.interpolate(new_pos_embed, size=(8, t_dim), mode="bilinear")
    if f_dim < p_f_dim:
        start = int(p_f_dim / 2) - int(f_dim / 2)
        new_pos_embed = new_pos_embed[:, :, start : start + t_dim, :]
    else:
        new_pos_embed = nn.functional.interpolate(
            new_pos_embed, size=(f_dim, t_dim), mode="bilinear"
        )
    new_pos_embed = new_pos_embed.reshape(1, d, num_patches).transpose(1, 2)
    v.pos_embed = nn.Parameter(
        torch.cat([v.pos_embed[:, :cls_token_num, :].detach(), new_pos_embed], dim=1)
    )
    return v, mlp_head


def official_finetuning_forward(v, mlp_head, x, task):
    x = x.unsqueeze(1).transpose(2, 3)
    b = x.shape[0]
    x = v.patch_embed.proj(x).flatten(2).transpose(1, 2)
    x = torch.cat((v.cls_token.expand(b, -1, -1), v.dist_token.expand(b, -1, -1), x), dim=1)
    x = v.pos_drop(x + v.pos_embed)
    for blk in v.blocks:
        x = blk(x)
    x = v.norm(x)
    x = torch.mean(x[:, 2:, :], dim=1) if task == "ft_avgtok" else (x[:, 0] + x[:, 1]) / 2
    return mlp_head(x)


FINETUNING_CASES = {
    # name: (size, pretraining (fshape, tshape, input_tdim), fine-tuning (fstride, tstride, tdim))
    "patch 16x16 stride 10, 100 frames": ("tiny", (16, 16, 1024), (10, 10, 100)),
    "patch 16x16 stride 10, 512 frames": ("tiny", (16, 16, 1024), (10, 10, 512)),
    "frame 128x2 tstride 1, 128 frames": ("tiny", (128, 2, 1024), (128, 1, 128)),
    "patch, longer than pretraining": ("mini", (16, 16, 128), (10, 10, 200)),
}


@pytest.mark.parametrize("case", list(FINETUNING_CASES))
@pytest.mark.parametrize("task", ["ft_avgtok", "ft_cls"])
def test_finetuning_equals_the_official_construction(case, task):
    size, (fshape, tshape, p_tdim), (fstride, tstride, tdim) = FINETUNING_CASES[case]
    pre = randomise(SSASTModel.for_pretraining(size, fshape, tshape, input_tdim=p_tdim))
    sd = module_prefixed(pre)
    pooling = task.removeprefix("ft_")
    ft = SSASTModel.for_finetuning(
        sd, n_classes=35, fstride=fstride, tstride=tstride, input_tdim=tdim, pooling=pooling
    )
    randomise(ft.mlp_head)
    v, mlp_head = official_finetuning_model(
        sd, size, 35, fshape, tshape, fstride, tstride, 128, tdim
    )
    mlp_head.load_state_dict(ft.mlp_head.state_dict())
    assert [k for k in ft.state_dict() if not k.startswith("v.")] == [
        "mlp_head.0.weight",
        "mlp_head.0.bias",
        "mlp_head.1.weight",
        "mlp_head.1.bias",
    ]
    assert ft.v.pos_embed.shape == v.pos_embed.shape
    torch.testing.assert_close(ft.v.pos_embed, v.pos_embed, rtol=0, atol=0)
    x = torch.randn(2, tdim, 128)
    with torch.no_grad():
        torch.testing.assert_close(
            ft(x), official_finetuning_forward(v, mlp_head, x, task), rtol=1e-5, atol=1e-5
        )


def test_finetuning_accepts_state_dicts_with_or_without_module_prefix(mini):
    sd = module_prefixed(mini)
    a = SSASTModel.for_finetuning(sd, n_classes=3, input_tdim=100)
    b = SSASTModel.for_finetuning(strip_module_prefix(sd), n_classes=3, input_tdim=100)
    b.mlp_head.load_state_dict(a.mlp_head.state_dict())
    x = torch.randn(2, 100, 128)
    assert torch.equal(a(x), b(x))
    assert a.config == SSASTConfig("mini", 16, 16, 10, 10, 128, 100)
    assert (a.grid.f_dim, a.grid.t_dim) == (12, 9)


def test_from_pretrained_state_dict_infers_everything(mini):
    again = SSASTModel.from_pretrained_state_dict(module_prefixed(mini))
    assert again.config == mini.config
    for (k, a), (k2, b) in zip(mini.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    frame = SSASTModel.for_pretraining("mini", 128, 2, input_tdim=64)
    assert SSASTModel.from_pretrained_state_dict(frame.state_dict()).config == frame.config


def test_finetuning_builder_takes_keywords_and_leaves_its_input_alone(mini):
    with pytest.raises(TypeError):
        SSASTModel.for_finetuning(module_prefixed(mini), 3)  # n_classes is keyword-only
    before = {k: v.clone() for k, v in mini.state_dict().items()}
    ft = SSASTModel.for_finetuning(mini, n_classes=3)  # a model works as well as a state dict
    assert ft.config == SSASTConfig("mini", 16, 16, 10, 10, 128, mini.config.input_tdim)
    assert all(torch.equal(v, before[k]) for k, v in mini.state_dict().items())
    assert ft.v is not mini.v


def test_partial_or_foreign_state_dicts_are_refused(mini):
    sd = strip_module_prefix(module_prefixed(mini))
    missing = {k: v for k, v in sd.items() if k != "cpredlayer.0.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['cpredlayer.0.bias'\]"):
        SSASTModel.from_pretrained_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        SSASTModel.from_pretrained_state_dict({**sd, "extra": torch.zeros(1)})
    bad = {**sd, "mask_embed": torch.zeros(1, 1, 65)}
    with pytest.raises(ValueError, match="shape mismatches.*mask_embed"):
        SSASTModel.from_pretrained_state_dict(bad)
    no_size = {k: v for k, v in sd.items() if k != "p_input_tdim"}
    with pytest.raises(ValueError, match="p_input_tdim"):
        SSASTModel.for_finetuning(no_size, n_classes=3)
    odd = {**sd, "v.patch_embed.proj.weight": torch.zeros(48, 1, 16, 16)}
    with pytest.raises(ValueError, match="embed_dim=48"):
        SSASTModel.from_pretrained_state_dict(odd)


def test_base_nokd_layout_has_one_class_token():
    with torch.device("meta"):
        model = SSASTModel.for_pretraining(size="base_nokd")
    sd = model.state_dict()
    assert "v.dist_token" not in sd and "v.head_dist.weight" not in sd
    assert sd["v.pos_embed"].shape == (1, 512 + 1, 768)


# --------------------------------------------------------------------------- pos embedding
def pos_embed_of(p_f_dim, p_t_dim, cls_token_num=2, d=6):
    return torch.randn(1, cls_token_num + p_f_dim * p_t_dim, d)


@pytest.mark.parametrize(
    "p_grid, grid", [((8, 64), (12, 9)), ((8, 64), (12, 50)), ((1, 512), (1, 127))]
)
@pytest.mark.parametrize("quirks", [True, False])
def test_adapt_pos_embed_shapes_and_class_tokens(p_grid, grid, quirks):
    pos = pos_embed_of(*p_grid)
    new = adapt_pos_embed(pos, 2, *p_grid, *grid, pos_embed_quirk=quirks)
    assert new.shape == (1, 2 + grid[0] * grid[1], pos.shape[2])
    assert torch.equal(new[:, :2], pos[:, :2])


def test_adapt_pos_embed_crops_time_and_interpolates_frequency():
    pos = pos_embed_of(8, 64)
    new = adapt_pos_embed(pos, 2, 8, 64, 12, 9)
    image = pos[:, 2:].transpose(1, 2).reshape(1, 6, 8, 64)
    crop = image[..., 28:37]  # centre 9 of 64 columns: 32 - 4 = 28
    expected = nn.functional.interpolate(crop, size=(12, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(new[:, 2:], expected.reshape(1, 6, 108).transpose(1, 2))
    frame = adapt_pos_embed(pos_embed_of(1, 512), 2, 1, 512, 1, 127)
    assert frame.shape == (1, 129, 6)


def test_eight_row_time_interpolation_quirk():
    # harmless where the pretraining grid has 8 rows (16x16 patches on 128 bins) ...
    pos = pos_embed_of(8, 16)
    torch.testing.assert_close(
        adapt_pos_embed(pos, 2, 8, 16, 8, 20),
        adapt_pos_embed(pos, 2, 8, 16, 8, 20, pos_embed_quirk=False),
    )
    # ... but with 4 rows (16x16 patches on 64 bins) the detour through 8 rows blurs frequency
    pos = pos_embed_of(4, 8)
    quirky = adapt_pos_embed(pos, 2, 4, 8, 4, 16)
    fixed = adapt_pos_embed(pos, 2, 4, 8, 4, 16, pos_embed_quirk=False)
    assert quirky.shape == fixed.shape == (1, 2 + 64, 6)
    assert not torch.allclose(quirky, fixed)
    image = pos[:, 2:].transpose(1, 2).reshape(1, 6, 4, 8)
    direct = nn.functional.interpolate(image, size=(4, 16), mode="bilinear")
    torch.testing.assert_close(fixed[:, 2:], direct.reshape(1, 6, 64).transpose(1, 2))


def test_frequency_crop_quirk_uses_t_dim():
    pos = pos_embed_of(8, 64)
    # f_dim = t_dim: "+ t" and "+ f" are the same crop, rows 2..5
    torch.testing.assert_close(
        adapt_pos_embed(pos, 2, 8, 64, 4, 4),
        adapt_pos_embed(pos, 2, 8, 64, 4, 4, pos_embed_quirk=False),
    )
    # f_dim = 4 < t_dim = 10: the official crop takes rows 2..7 (6 rows) and cannot be reshaped
    with pytest.raises(ValueError, match="pos_embed_quirk=False"):
        adapt_pos_embed(pos, 2, 8, 64, 4, 10)
    fixed = adapt_pos_embed(pos, 2, 8, 64, 4, 10, pos_embed_quirk=False)
    image = pos[:, 2:].transpose(1, 2).reshape(1, 6, 8, 64)
    expected = image[:, :, 2:6, 27:37]
    torch.testing.assert_close(fixed[:, 2:], expected.reshape(1, 6, 40).transpose(1, 2))


def test_adapt_pos_embed_checks_its_input():
    with pytest.raises(ValueError, match="p_f_dim\\*p_t_dim = 18"):
        adapt_pos_embed(pos_embed_of(8, 64), 2, 4, 4, 2, 2)


# --------------------------------------------------------------------------- embeddings
@pytest.fixture
def finetuned(mini):
    return SSASTModel.for_finetuning(module_prefixed(mini), n_classes=4, input_tdim=64)


def test_pooling_avgtok_and_cls(finetuned):
    x = torch.randn(2, 64, 128)
    h = finetuned.tokens(x)
    assert h.shape == (2, 2 + finetuned.grid.num_patches, 64)
    torch.testing.assert_close(finetuned.embed(x), h[:, 2:].mean(1))
    torch.testing.assert_close(finetuned.embed(x, "cls"), (h[:, 0] + h[:, 1]) / 2)
    avg, cls = finetuned(x), finetuned(x, task="ft_cls")
    assert avg.shape == cls.shape == (2, 4) and not torch.allclose(avg, cls)
    torch.testing.assert_close(cls, finetuned.mlp_head(finetuned.embed(x, "cls")))
    with pytest.raises(ValueError, match="pooling='max'"):
        SSASTModel(finetuned.config, n_classes=4, pooling="max")


@pytest.mark.parametrize("which", ["pretraining", "fine-tuning"])
def test_embed_shapes_and_layers(mini, finetuned, which):
    model = mini if which == "pretraining" else finetuned
    x = torch.randn(2, model.grid.input_tdim, 128)
    f_dim, t_dim, n = model.grid.f_dim, model.grid.t_dim, model.grid.num_patches
    assert model.embed(x, "avgtok").shape == (2, 64)
    assert model.embed(x, "cls").shape == (2, 64)
    assert model.embed(x, "none").shape == (2, n, 64)
    grid = model.embed(x, "grid")
    assert grid.shape == (2, f_dim, t_dim, 64)
    torch.testing.assert_close(grid[:, 1, 2], model.embed(x, "none")[:, 1 * t_dim + 2])
    last = model.embed(x, layer=-1)
    torch.testing.assert_close(model.embed(x, layer=3), last)  # mini has 4 blocks
    assert not torch.allclose(model.embed(x, layer=0), last)
    # an intermediate layer is the raw block output; only the last one gets the final norm
    raw = model.tokens(x, layer=2)
    torch.testing.assert_close(model.v.norm(model.v.blocks[3](raw)), model.tokens(x))
    with pytest.raises(ValueError, match="layer=4"):
        model.embed(x, layer=4)
    with pytest.raises(ValueError, match="pooling='mean'"):
        model.embed(x, "mean")


def test_attention_maps_rebuild_the_block_output(mini):
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        maps = mini.attention_maps(x)
        length = 2 + mini.grid.num_patches
        assert maps.shape == (2, 4, 4, length, length)
        torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, 4, length))
        for k in (1, 2):  # blocks whose input and output are raw (no final norm)
            blk, h = mini.v.blocks[k], mini.tokens(x, layer=k - 1)
            qkv = blk.attn.qkv(blk.norm1(h)).reshape(2, length, 3, 4, 16).permute(2, 0, 3, 1, 4)
            heads = maps[:, k] @ qkv[2]  # (B, heads, L, head_dim)
            out = h + blk.attn.proj(heads.transpose(1, 2).reshape(2, length, 64))
            out = out + blk.mlp(blk.norm2(out))
            torch.testing.assert_close(out, mini.tokens(x, layer=k), rtol=1e-5, atol=1e-5)


def test_finetuning_input_checks(finetuned):
    with pytest.raises(ValueError, match="input_tdim=64"):
        finetuned(torch.randn(2, 100, 128))
    with pytest.raises(ValueError, match="mpc/mpg need a pretraining model"):
        finetuned.mpc(torch.randn(2, 64, 128), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="n_classes"):
        SSASTModel(finetuned.config, n_classes=0)
