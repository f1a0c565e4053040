"""CUDA checks: the same numbers on the GPU, bf16 autocast by default, checkpoints portable.

Deselected by default (``-m "not gpu"`` in pyproject.toml); on a machine with a GPU run
``pytest -m gpu``.
"""

import pytest
import torch

from conftest import needs
from ssast_teach.checkpoints import load_pretrained
from ssast_teach.finetune import FinetuneConfig, finetune
from ssast_teach.masking import cluster_mask
from ssast_teach.model import SSASTModel
from ssast_teach.pretrain import PretrainConfig, pretrain
from ssast_teach.training import resolve_precision

pytestmark = pytest.mark.gpu

# cuDNN runs the patch-embedding convolution in TF32 by default: about 1e-3 relative.
TOL = dict(rtol=2e-3, atol=2e-3)


@pytest.fixture(autouse=True)
def _cuda():
    needs(torch.cuda.is_available(), "CUDA", "run `pytest -m gpu` on a machine with an NVIDIA GPU")


def test_pretraining_objectives_match_cpu():
    model = SSASTModel.for_pretraining("tiny", input_tdim=256).eval()
    x = torch.randn(4, 256, 128)  # (B, T, F)
    ids = cluster_mask(4, model.grid.num_patches, 100, model.grid.t_dim, torch.Generator().manual_seed(0))
    cpu = (*model.mpc(x, ids), model.mpg(x, ids))
    model.cuda()
    gpu = (*model.mpc(x.cuda(), ids.cuda()), model.mpg(x.cuda(), ids.cuda()))
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, **TOL)


def test_finetuning_logits_match_cpu():
    pre = SSASTModel.for_pretraining("tiny", input_tdim=256).state_dict()
    model = SSASTModel.for_finetuning(pre, n_classes=10, fstride=10, tstride=10, input_tdim=256).eval()
    x = torch.randn(3, 256, 128)  # (B, T, F)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, **TOL)


def test_auto_precision_is_bf16_on_cuda():
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"


def test_pretrain_then_finetune_on_cuda_bf16(tmp_path):
    config = PretrainConfig.preset("ci", device="cuda", checkpoint_every=0)
    model, history = pretrain(config, out_dir=tmp_path / "pre")
    assert next(model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(torch.tensor(v)) for v in history.series("loss", kind="step")[1])
    cpu_model = load_pretrained(tmp_path / "pre" / "pretrained.pth")  # saved from the GPU, read on the CPU
    assert next(cpu_model.parameters()).device.type == "cpu"
    ft = FinetuneConfig.preset("synthetic", "ci", device="cuda")
    _, _, results = finetune(ft, pretrained=tmp_path / "pre" / "pretrained.pth", out_dir=tmp_path / "ft")
    assert 0.0 <= results["test"]["acc"] <= 1.0
