"""Cross-check of SEMANTICS.md: an independent float64 re-implementation of the UNet2DModel forward, written
from SEMANTICS.md alone with plain torch ops (no diffusers import), run against every fixture's y.
At diffusers 58eb52c / torch 2.13.0 it reproduces all four fixtures exactly (max abs diff 0.0).

    /tmp/venv/bin/python java/src/test/resources/diffusers/check_semantics.py java/src/test/resources/diffusers
"""
import json, math, sys, torch
import torch.nn.functional as F
from safetensors.torch import load_file
D = sys.argv[1]
def gn(x, w, b, g, eps):
    N, C = x.shape[:2]
    xs = x.reshape(N, g, -1)
    m = xs.mean(-1, keepdim=True); v = ((xs - m) ** 2).mean(-1, keepdim=True)
    xs = (xs - m) / torch.sqrt(v + eps)
    return xs.reshape(x.shape) * w.view(1, C, *([1] * (x.dim() - 2))) + b.view(1, C, *([1] * (x.dim() - 2)))
silu = lambda x: x * torch.sigmoid(x)
def unet(W, cfg, x, t, labels=None):
    W = {k: v.double() for k, v in W.items()}
    G, eps = cfg["norm_num_groups"], cfg["norm_eps"]
    boc = cfg["block_out_channels"]; C0 = boc[0]; n = len(boc); L = cfg["layers_per_block"]
    hd = cfg["attention_head_dim"]; shift = cfg["resnet_time_scale_shift"]
    conv = lambda h, p, s=1, pad=1: F.conv2d(h, W[p + ".weight"], W[p + ".bias"], stride=s, padding=pad)
    lin = lambda h, p: h @ W[p + ".weight"].T + W[p + ".bias"]
    def resnet(p, h, emb):
        x0 = h
        h = conv(silu(gn(h, W[p+".norm1.weight"], W[p+".norm1.bias"], G, eps)), p + ".conv1")
        e = lin(silu(emb), p + ".time_emb_proj")[:, :, None, None]
        if shift == "default":
            h = gn(h + e, W[p+".norm2.weight"], W[p+".norm2.bias"], G, eps)
        else:
            c = h.shape[1]; sc, sh = e[:, :c], e[:, c:]
            h = gn(h, W[p+".norm2.weight"], W[p+".norm2.bias"], G, eps) * (1 + sc) + sh
        h = conv(silu(h), p + ".conv2")
        if p + ".conv_shortcut.weight" in W: x0 = conv(x0, p + ".conv_shortcut", pad=0)
        return x0 + h
    def attn(p, h):
        N, C, H, Wd = h.shape
        d = hd if hd is not None else C; heads = C // d
        r = h
        if p + ".group_norm.weight" in W: h = gn(h, W[p+".group_norm.weight"], W[p+".group_norm.bias"], G, eps)
        X = h.reshape(N, C, H * Wd).transpose(1, 2)
        q, k, v = (lin(X, p + s).reshape(N, -1, heads, d).transpose(1, 2) for s in (".to_q", ".to_k", ".to_v"))
        A = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)
        O = (A @ v).transpose(1, 2).reshape(N, -1, heads * d)
        O = lin(O, p + ".to_out.0").transpose(1, 2).reshape(N, C, H, Wd)
        return O + r
    if cfg["time_embedding_type"] == "positional":
        half = C0 // 2; fs = cfg["freq_shift"]
        ex = (-math.log(10000) * torch.arange(half, dtype=torch.float32)) / (half - fs)
        arg = t.float()[:, None] * torch.exp(ex)[None]
        te = torch.cat([torch.sin(arg), torch.cos(arg)], -1)
        if cfg["flip_sin_to_cos"]: te = torch.cat([te[:, half:], te[:, :half]], -1)
        te = te.double()
    else:
        arg = torch.log(t)[:, None] * W["time_proj.weight"][None] * 2 * math.pi
        te = torch.cat([torch.sin(arg), torch.cos(arg)], -1)
    emb = lin(silu(lin(te, "time_embedding.linear_1")), "time_embedding.linear_2")
    if labels is not None: emb = emb + W["class_embedding.weight"][labels]
    h = conv(x, "conv_in"); S = [h]
    for i, bt in enumerate(cfg["down_block_types"]):
        for j in range(L):
            h = resnet(f"down_blocks.{i}.resnets.{j}", h, emb)
            if bt == "AttnDownBlock2D": h = attn(f"down_blocks.{i}.attentions.{j}", h)
            S.append(h)
        if i < n - 1:
            h = conv(h, f"down_blocks.{i}.downsamplers.0.conv", s=2, pad=cfg["downsample_padding"]); S.append(h)
    h = resnet("mid_block.resnets.0", h, emb)
    if cfg["add_attention"]: h = attn("mid_block.attentions.0", h)
    h = resnet("mid_block.resnets.1", h, emb)
    for i, bt in enumerate(cfg["up_block_types"]):
        for j in range(L + 1):
            h = torch.cat([h, S.pop()], 1)
            h = resnet(f"up_blocks.{i}.resnets.{j}", h, emb)
            if bt == "AttnUpBlock2D": h = attn(f"up_blocks.{i}.attentions.{j}", h)
        if i < n - 1:
            h = conv(h.repeat_interleave(2, 2).repeat_interleave(2, 3), f"up_blocks.{i}.upsamplers.0.conv")
    assert not S
    h = conv(silu(gn(h, W["conv_norm_out.weight"], W["conv_norm_out.bias"], G, eps)), "conv_out")
    if cfg["time_embedding_type"] == "fourier": h = h / t.view(-1, 1, 1, 1)
    return h
for case in ["positional_default", "fourier_scaleshift_class", "positional_noattn_mid", "edm_denoiser"]:
    cfg = json.load(open(f"{D}/{case}/config.json")); W = load_file(f"{D}/{case}/diffusion_pytorch_model.safetensors")
    io = load_file(f"{D}/{case}/io.safetensors")
    x = io["x"].double()
    if case == "edm_denoiser":
        s = io["sigma"].double(); sd = 0.5; s4 = s.view(-1, 1, 1, 1)
        y = sd**2/(s4**2+sd**2) * x + s4*sd/torch.sqrt(s4**2+sd**2) * unet(W, cfg, x/torch.sqrt(s4**2+sd**2), 1000*torch.log(s)/4)
    else:
        lab = io["class_labels"].long() if "class_labels" in io else None
        y = unet(W, cfg, x, io["t"].double(), lab)
    print(case, "max abs diff vs fixture y:", (y.float() - io["y"]).abs().max().item())
