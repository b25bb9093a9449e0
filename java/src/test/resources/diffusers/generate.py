"""Golden fixtures for onestep's Java UNet2DModel: outputs and gradients from real diffusers + PyTorch.

Regenerate (from the repository root; diffusers is NOT installed, its source is put on PYTHONPATH):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch==2.13.0 safetensors numpy \
        huggingface_hub regex requests filelock importlib_metadata Pillow
    mkdir -p /tmp/diffusers && git --git-dir=<bare diffusers repo> archive \
        58eb52c0803ea9af3abec60841c2a093bdf1f951 src | tar -x -C /tmp/diffusers
    PYTHONPATH=/tmp/diffusers/src /tmp/venv/bin/python java/src/test/resources/diffusers/generate.py

Versions used for the committed files:
    torch      2.13.0+cpu
    diffusers  0.40.0.dev0, commit 58eb52c0803ea9af3abec60841c2a093bdf1f951 (2026-08-23)
    safetensors 0.8.0, numpy 2.4.6, Python 3.11.7

What it writes, per case folder (see README.md for the contract):
    config.json, diffusion_pytorch_model.safetensors   -- UNet2DModel.save_pretrained, float32
    io.safetensors                                      -- inputs, outputs, gradients (float32)

The reference is computed with model.double() from the float32 weights (so the float64 weights are exactly the
stored float32 ones) and from float32-representable inputs, then rounded once to float32.

Deterministic: every case seeds its own torch.Generator; torch runs single-threaded.
"""

import inspect
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file, load_file

import diffusers
from diffusers import UNet2DModel

HERE = Path(__file__).resolve().parent
DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
SIGMA_DATA = 0.5

torch.set_num_threads(1)

CASE1 = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=8,
    time_embedding_type="positional",
    flip_sin_to_cos=True,
    freq_shift=0,
    resnet_time_scale_shift="default",
)

CASES = {
    "positional_default": dict(
        config=CASE1, batch=2, t=[3.0, 741.25], class_labels=None, seed=1001,
    ),
    "fourier_scaleshift_class": dict(
        config=dict(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 24, 32),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=8,
            time_embedding_type="fourier",
            resnet_time_scale_shift="scale_shift",
            num_class_embeds=10,
        ),
        # Fourier: UNet2DModel builds GaussianFourierProjection with its default log=True, so t must be > 0;
        # the output is divided by t. Both values are exact in float32.
        batch=2, t=[0.25, 17.5], class_labels=[3, 7], seed=2002,
    ),
    "positional_noattn_mid": dict(
        config=dict(
            CASE1,
            add_attention=False,
            freq_shift=1,
            flip_sin_to_cos=False,
            attention_head_dim=None,
            layers_per_block=2,
            norm_eps=1e-6,
        ),
        batch=2, t=[0.0, 999.0], class_labels=None, seed=3003,
    ),
}

EDM = dict(config=CASE1, sigma=[0.002, 0.5, 3.0, 80.0], seed=4004)


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter random and non-trivial, in state-dict order (deterministic for a given diffusers commit)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                full = f"{name}.{pname}" if name else pname
                shape = p.shape
                if isinstance(module, torch.nn.GroupNorm):
                    if pname == "weight":
                        v = 1.0 + 0.2 * torch.randn(shape, generator=gen)
                    else:
                        v = 0.2 * torch.randn(shape, generator=gen)
                elif isinstance(module, torch.nn.Embedding):
                    v = torch.randn(shape, generator=gen)
                elif full == "time_proj.weight":  # GaussianFourierProjection: randn * scale(16), as diffusers does
                    v = 16.0 * torch.randn(shape, generator=gen)
                elif pname == "bias":
                    v = 0.2 * torch.randn(shape, generator=gen)
                elif pname == "weight" and p.dim() >= 2:
                    fan_in = p[0].numel()
                    v = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
                else:
                    raise RuntimeError(f"unhandled parameter {full} {tuple(shape)} in {type(module).__name__}")
                p.copy_(v)


def build(config: dict, seed: int) -> UNet2DModel:
    torch.manual_seed(seed)
    model = UNet2DModel(**config)
    randomize(model, torch.Generator().manual_seed(seed))
    model.eval()
    return model


def f32(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def run_unet(model64: UNet2DModel, x64, t64, labels):
    kw = {}
    if labels is not None:
        kw["class_labels"] = labels
    return model64(x64, t64, **kw).sample


def param_grads(model64, names):
    out = {}
    for n, p in model64.named_parameters():
        assert p.grad is not None, f"no gradient for {n}"
        out[f"grad.{n}"] = p.grad.detach().float().contiguous()
    missing = set(names) - {k[5:] for k in out}
    assert not missing, missing
    return out


def prepare_double(model: UNet2DModel) -> UNet2DModel:
    m = UNet2DModel.from_config(model.config)
    m.load_state_dict(model.state_dict())
    m = m.double().eval()
    for p in m.parameters():
        # time_proj.weight (fourier) is frozen in diffusers (requires_grad=False); we still export its gradient.
        p.requires_grad_(True)
        p.grad = None
    return m


def metadata(case: str) -> dict:
    # One key holding sorted JSON: safetensors writes a multi-key metadata map in hash order, which would make
    # the file bytes differ between otherwise identical runs.
    return {"fixture": json.dumps(_metadata(case), sort_keys=True)}


def _metadata(case: str) -> dict:
    return {
        "case": case,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "diffusers_commit": DIFFUSERS_COMMIT,
        "generator": "java/src/test/resources/diffusers/generate.py",
        "reference_precision": "float64 (model.double()), stored as float32",
    }


def save_model(model: UNet2DModel, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    # the weights file must hold exactly the state dict, float32
    sd = load_file(folder / "diffusion_pytorch_model.safetensors")
    ref = model.state_dict()
    assert set(sd) == set(ref), set(sd) ^ set(ref)
    for k, v in sd.items():
        assert v.dtype == torch.float32 and torch.equal(v, ref[k]), k


def check_reload(folder: Path, io: dict, forward) -> dict:
    """Reload with from_pretrained, re-run the forward; float64 must give the same y within 1e-6."""
    m = UNet2DModel.from_pretrained(folder).eval()
    with torch.no_grad():
        y64 = forward(m.double()).float()
        m32 = UNet2DModel.from_pretrained(folder).eval()
        y32 = forward(m32, dtype=torch.float32)
    d64 = (y64 - io["y"]).abs().max().item()
    d32 = (y32 - io["y"]).abs().max().item()
    scale = io["y"].abs().max().item()
    assert d64 <= 1e-6 * max(1.0, scale), f"{folder.name}: reload differs by {d64}"
    return {"reload_float64_max_abs_diff": d64, "float32_forward_max_abs_diff": d32, "max_abs_y": scale}


def gen_case(name: str, spec: dict) -> dict:
    folder = HERE / name
    model = build(spec["config"], spec["seed"])
    save_model(model, folder)

    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    c = model.config
    n = spec["batch"]
    x = torch.randn(n, c.in_channels, c.sample_size, c.sample_size, generator=gen)
    t = f32(spec["t"])
    labels = None if spec["class_labels"] is None else torch.tensor(spec["class_labels"], dtype=torch.long)

    m64 = prepare_double(model)
    x64 = x.double().requires_grad_(True)
    y64 = run_unet(m64, x64, t.double(), labels)
    r = torch.randn(y64.shape, generator=gen)
    (y64 * r.double()).sum().backward()

    io = {"x": x, "t": t, "y": y64.detach().float(), "r": r, "grad_x": x64.grad.float()}
    if labels is not None:
        io["class_labels"] = labels.float()
    io.update(param_grads(m64, model.state_dict().keys()))
    io = {k: v.contiguous() for k, v in io.items()}
    save_file(io, folder / "io.safetensors", metadata=metadata(name))

    def fwd(m, dtype=torch.float64):
        return run_unet(m, x.to(dtype), t.to(dtype), labels)

    info = check_reload(folder, io, fwd)
    info["params"] = sum(p.numel() for p in model.parameters())
    return info


def edm_denoise(model, x, sigma):
    """D(x; sigma) = c_skip x + c_out F(c_in x, 1000 c_noise), Karras et al. 2022 with sigma_data = 0.5."""
    sd = SIGMA_DATA
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / torch.sqrt(s**2 + sd**2)
    c_in = 1.0 / torch.sqrt(s**2 + sd**2)
    c_noise = torch.log(sigma) / 4.0
    f = model(c_in * x, 1000.0 * c_noise).sample
    return c_skip * x + c_out * f


def gen_edm() -> dict:
    name = "edm_denoiser"
    folder = HERE / name
    model = build(EDM["config"], EDM["seed"])
    save_model(model, folder)

    gen = torch.Generator().manual_seed(EDM["seed"] + 1)
    c = model.config
    sigma = f32(EDM["sigma"])
    n = sigma.numel()
    # a noisy sample at each noise level: std sqrt(sigma^2 + sigma_data^2)
    x = (torch.randn(n, c.in_channels, c.sample_size, c.sample_size, generator=gen)
         * torch.sqrt(sigma.double() ** 2 + SIGMA_DATA**2).float().reshape(-1, 1, 1, 1))
    m64 = prepare_double(model)
    x64 = x.double().requires_grad_(True)
    y64 = edm_denoise(m64, x64, sigma.double())
    r = torch.randn(y64.shape, generator=gen)
    (y64 * r.double()).sum().backward()
    t = (1000.0 * torch.log(sigma.double()) / 4.0).float()
    io = {"x": x, "sigma": sigma, "t": t, "y": y64.detach().float(), "r": r, "grad_x": x64.grad.float()}
    io = {k: v.contiguous() for k, v in io.items()}
    save_file(io, folder / "io.safetensors", metadata=metadata(name))

    def fwd(m, dtype=torch.float64):
        return edm_denoise(m, x.to(dtype), sigma.to(dtype))

    info = check_reload(folder, io, fwd)
    info["params"] = sum(p.numel() for p in model.parameters())
    return info


def main() -> None:
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__} ({DIFFUSERS_COMMIT})")
    keys = [k for k in inspect.signature(UNet2DModel.__init__).parameters if k != "self"]
    print("UNet2DModel.__init__ keys:", ", ".join(keys))
    results = {}
    for name, spec in CASES.items():
        results[name] = gen_case(name, spec)
    results["edm_denoiser"] = gen_edm()
    for name, info in results.items():
        size = sum(f.stat().st_size for f in (HERE / name).iterdir())
        print(f"{name}: {size / 1024:.0f} KiB, " + ", ".join(f"{k}={v:.3g}" for k, v in info.items()))


if __name__ == "__main__":
    main()
