#!/usr/bin/env python3
"""PyTorch peers for the GPU benchmark (called by bench/gpu/run.sh; runnable on its own).

Times, on the same machine as our kernels and our Java CUDA backend:
  sdpa   F.scaled_dot_product_attention at the U-Nets' attention shapes (tokens, heads, head dim taken from the
         configs below), batch 1 and 64, fp32 and bf16, every SDPA backend tried, the fastest reported;
  gn     F.group_norm (+ SiLU) on channels_last (NHWC) tensors, eager and torch.compile'd, achieved GB/s;
  unet   one denoiser evaluation D(x; sigma) of the same U-Net with the same weights (our safetensors checkpoints,
         loaded into the compact UNet2DModel re-implementation below), batch 1 and 64, in eager mode, eager
         captured as a CUDA graph, torch.compile, and torch.compile mode="reduce-overhead" (CUDA graphs).
Timing: CUDA events around each call (perf_counter on the CPU), warm-up first, median of --reps calls. A single
kernel such as SDPA or a group norm is also timed as a CUDA graph of GRAPH_CALLS calls replayed (events around each
replay, divided by the calls): that takes Python's and the dispatcher's ~20 us a call out of its time, which the events
around one call include for such short kernels; the faster of the two is its "us" (us_call and us_graph give both).
Prints a table last and writes one JSON object per measurement to --jsonl.

  --check-cpu  parity instead of timing: the re-implementation against the diffusers fixtures in
               java/src/test/resources/diffusers (float64) and against the Java engine's `bin/onestep denoise`
               on the committed teacher and student (float32); exits 1 if any difference is over tolerance.
  --write-cifar PATH  writes the issue's CIFAR-size config with random weights as a student checkpoint (for the
               Java step timing on the GPU machine, where nothing big can be carried).

The U-Net follows java/src/test/resources/diffusers/SEMANTICS.md and docs/CHECKPOINTS.md (state-dict names and
PyTorch layouts; the config JSON is the safetensors metadata key "config").
"""
import argparse, json, math, os, statistics, subprocess, sys, tempfile, time

import torch
import torch.nn as nn
import torch.nn.functional as F

SIGMA_DATA = 0.5
CONSISTENCY_EPS = 0.002
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# The issue's CIFAR-size config (3x32x32, 128/256/256/256, two layers per block, attention at 16x16). Random
# weights: timing does not need trained ones.
CIFAR_CONFIG = {
    "_class_name": "UNet2DModel", "sample_size": 32, "in_channels": 3, "out_channels": 3,
    "center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [128, 256, 256, 256], "layers_per_block": 2, "mid_block_scale_factor": 1.0,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 64, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
}


# ----------------------------------------------------------------------------------------------------------------
# The U-Net (diffusers UNet2DModel subset the engine supports; module names = diffusers state-dict names)

def check_config(cfg):
    fixed = {"center_input_sample": False, "act_fn": "silu", "downsample_type": "conv", "upsample_type": "conv",
             "class_embed_type": None, "time_embedding_dim": None}
    for k, v in fixed.items():
        ok = cfg.get(k, v) in ("silu", "swish") if k == "act_fn" else cfg.get(k, v) == v
        if not ok:
            raise ValueError(f"config key {k}={cfg[k]!r} is outside the supported subset")
    if cfg.get("time_embedding_type", "positional") not in ("positional", "fourier"):
        raise ValueError(f"time_embedding_type {cfg['time_embedding_type']!r} is not supported")
    if cfg.get("mid_block_type", "UNetMidBlock2D") is None:
        raise ValueError("mid_block_type null is not supported")


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps, shift, out_scale):
        super().__init__()
        self.groups, self.eps, self.shift, self.out_scale = groups, eps, shift, out_scale
        self.norm1 = nn.GroupNorm(groups, cin, eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, 2 * cout if shift == "scale_shift" else cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, semb):  # semb = SiLU(emb), shared by every resnet
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.time_emb_proj(semb)[:, :, None, None]
        if self.shift == "scale_shift":
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(F.silu(h))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return (skip + h) / self.out_scale if self.out_scale != 1 else skip + h


class Attention(nn.Module):
    def __init__(self, c, head_dim, groups, eps, rescale):
        super().__init__()
        self.head_dim = head_dim if head_dim is not None else c
        self.heads = c // self.head_dim
        inner = self.heads * self.head_dim
        self.rescale = rescale
        self.group_norm = nn.GroupNorm(groups, c, eps) if groups is not None else None
        self.to_q, self.to_k, self.to_v = nn.Linear(c, inner), nn.Linear(c, inner), nn.Linear(c, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, c)])

    def forward(self, x):
        n, c, hh, ww = x.shape
        h = self.group_norm(x) if self.group_norm is not None else x
        tok = h.reshape(n, c, hh * ww).transpose(1, 2)
        q, k, v = (m(tok).reshape(n, hh * ww, self.heads, self.head_dim).transpose(1, 2)
                   for m in (self.to_q, self.to_k, self.to_v))
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, hh * ww, -1)
        o = self.to_out[0](o).transpose(1, 2).reshape(n, c, hh, ww)
        return (o + x) / self.rescale if self.rescale != 1 else o + x


class Sampler2d(nn.Module):  # Downsample2D / Upsample2D with use_conv: parameters under ".conv"
    def __init__(self, c, down, padding):
        super().__init__()
        self.down, self.padding = down, padding
        self.conv = nn.Conv2d(c, c, 3, stride=2 if down else 1, padding=(padding if down else 1))

    def forward(self, x):
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)) if self.padding == 0 else x)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    def __init__(self, resnets, attentions, sampler):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if attentions:
            self.attentions = nn.ModuleList(attentions)
        else:
            self.attentions = None
        if sampler is not None:
            if sampler.down:
                self.downsamplers = nn.ModuleList([sampler])
            else:
                self.upsamplers = nn.ModuleList([sampler])


class UNet2D(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        boc = list(cfg["block_out_channels"])
        c0, n, layers = boc[0], len(boc), cfg.get("layers_per_block", 2)
        groups, eps = cfg.get("norm_num_groups", 32), cfg.get("norm_eps", 1e-5)
        shift = cfg.get("resnet_time_scale_shift", "default")
        hd = cfg.get("attention_head_dim", 8)
        temb = 4 * c0
        self.fourier = cfg.get("time_embedding_type", "positional") == "fourier"
        self.flip, self.freq_shift = cfg.get("flip_sin_to_cos", True), cfg.get("freq_shift", 0)
        self.c0 = c0
        self.conv_in = nn.Conv2d(cfg.get("in_channels", 3), c0, 3, padding=1)
        if self.fourier:
            self.time_proj = nn.Module()
            self.time_proj.weight = nn.Parameter(torch.randn(c0) * 16, requires_grad=False)
        self.time_embedding = nn.Module()
        self.time_embedding.linear_1 = nn.Linear(2 * c0 if self.fourier else c0, temb)
        self.time_embedding.linear_2 = nn.Linear(temb, temb)
        if cfg.get("num_class_embeds") is not None:
            self.class_embedding = nn.Embedding(cfg["num_class_embeds"], temb)
        else:
            self.class_embedding = None
        res = lambda i, o, s=1.0: ResnetBlock(i, o, temb, groups, eps, shift, s)
        att = lambda c, g=groups, s=1.0: Attention(c, hd, g, eps, s)
        self.down_blocks = nn.ModuleList()
        out = c0
        for i, bt in enumerate(cfg["down_block_types"]):
            if bt not in ("DownBlock2D", "AttnDownBlock2D"):
                raise ValueError(f"down block type {bt!r} is not supported")
            inp, out = out, boc[i]
            rs = [res(inp if j == 0 else out, out) for j in range(layers)]
            ats = [att(out) for _ in range(layers)] if bt == "AttnDownBlock2D" else []
            smp = Sampler2d(out, True, cfg.get("downsample_padding", 1)) if i < n - 1 else None
            self.down_blocks.append(Block(rs, ats, smp))
        cm = boc[-1]
        msf = cfg.get("mid_block_scale_factor", 1.0)
        attn_groups = cfg.get("attn_norm_num_groups")
        if attn_groups is None:
            attn_groups = groups if shift == "default" else None
        self.mid_block = Block([res(cm, cm, msf), res(cm, cm, msf)],
                               [att(cm, attn_groups, msf)] if cfg.get("add_attention", True) else [], None)
        rev = list(reversed(boc))
        self.up_blocks = nn.ModuleList()
        for i, bt in enumerate(cfg["up_block_types"]):
            if bt not in ("UpBlock2D", "AttnUpBlock2D"):
                raise ValueError(f"up block type {bt!r} is not supported")
            out, prev, inp = rev[i], rev[max(i - 1, 0)], rev[min(i + 1, n - 1)]
            rs = [res((prev if j == 0 else out) + (inp if j == layers else out), out) for j in range(layers + 1)]
            ats = [att(out) for _ in range(layers + 1)] if bt == "AttnUpBlock2D" else []
            self.up_blocks.append(Block(rs, ats, Sampler2d(out, False, 1) if i < n - 1 else None))
        self.conv_norm_out = nn.GroupNorm(groups, c0, eps)
        self.conv_out = nn.Conv2d(c0, cfg.get("out_channels", 3), 3, padding=1)

    def time_features(self, t):
        if self.fourier:
            arg = torch.log(t)[:, None] * self.time_proj.weight[None] * 2 * math.pi
            return torch.cat([torch.sin(arg), torch.cos(arg)], -1)
        half = self.c0 // 2  # diffusers evaluates the positional embedding in float32 whatever the model's dtype
        ex = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - self.freq_shift)
        arg = t.float()[:, None] * torch.exp(ex)[None]
        e = torch.cat([torch.cos(arg), torch.sin(arg)] if self.flip else [torch.sin(arg), torch.cos(arg)], -1)
        if self.c0 % 2:
            e = F.pad(e, (0, 1))
        return e.to(self.conv_in.weight.dtype)

    def forward(self, x, t, class_labels=None):
        emb = self.time_embedding.linear_2(F.silu(self.time_embedding.linear_1(self.time_features(t))))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels)
        semb = F.silu(emb)
        h = self.conv_in(x)
        skips = [h]
        for b in self.down_blocks:
            for j, r in enumerate(b.resnets):
                h = r(h, semb)
                if b.attentions is not None:
                    h = b.attentions[j](h)
                skips.append(h)
            if hasattr(b, "downsamplers"):
                h = b.downsamplers[0](h)
                skips.append(h)
        m = self.mid_block
        h = m.resnets[0](h, semb)
        if m.attentions is not None:
            h = m.attentions[0](h)
        h = m.resnets[1](h, semb)
        for b in self.up_blocks:
            for j, r in enumerate(b.resnets):
                h = r(torch.cat([h, skips.pop()], 1), semb)
                if b.attentions is not None:
                    h = b.attentions[j](h)
            if hasattr(b, "upsamplers"):
                h = b.upsamplers[0](h)
        h = self.conv_out(F.silu(self.conv_norm_out(h)))
        if self.fourier:
            h = h / t.view(-1, 1, 1, 1).to(h.dtype)
        return h

    def attention_shapes(self):
        """(tokens, heads, head_dim) of every attention layer, for a sample_size x sample_size input."""
        s, shapes = self.cfg["sample_size"], []
        for b in self.down_blocks:
            for a in (b.attentions or []):
                shapes.append((s * s, a.heads, a.head_dim))
            if hasattr(b, "downsamplers"):
                s //= 2
        for a in (self.mid_block.attentions or []):
            shapes.append((s * s, a.heads, a.head_dim))
        for b in self.up_blocks:
            for a in (b.attentions or []):
                shapes.append((s * s, a.heads, a.head_dim))
            if hasattr(b, "upsamplers"):
                s *= 2
        return shapes


def load_checkpoint(path):
    """(config, role, state dict) from one of our safetensors checkpoints or a diffusers model folder."""
    from safetensors import safe_open
    if os.path.isdir(path):
        cfg = json.load(open(os.path.join(path, "config.json")))
        path, role = os.path.join(path, "diffusion_pytorch_model.safetensors"), "teacher"
        meta = {}
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("train/")}
    if "config" in meta:
        cfg = json.loads(meta["config"])
    return cfg, meta.get("onestep.role", "teacher"), sd


def build(path, device="cpu", dtype=torch.float32):
    cfg, role, sd = load_checkpoint(path)
    net = UNet2D(cfg)
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return net.to(device=device, dtype=dtype).eval(), role


class EdmDenoiser(nn.Module):
    """D(x; s) (teacher) or f(x, s) (student) = c_skip x + c_out F(c_in x; t(s)); the coefficients are tensors
    computed once per noise level (like the engine, which bakes them into its captured pass), so teacher and
    student trace to the same graph."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, c_in, c_skip, c_out, t):
        return c_skip * x + c_out * self.net(c_in * x, t)


def coefficients(role, sigma, fourier, n, device, dtype):
    s, sd = float(sigma), SIGMA_DATA
    c_in = 1 / math.sqrt(s * s + sd * sd)
    if role == "student":
        c_skip = sd * sd / ((s - CONSISTENCY_EPS) ** 2 + sd * sd)
        c_out = sd * (s - CONSISTENCY_EPS) / math.sqrt(sd * sd + s * s)
    else:
        c_skip, c_out = sd * sd / (s * s + sd * sd), s * sd / math.sqrt(s * s + sd * sd)
    t = s if fourier else 250 * math.log(s)
    col = lambda v: torch.full((n, 1, 1, 1), v, device=device, dtype=dtype)
    return col(c_in), col(c_skip), col(c_out), torch.full((n,), t, device=device, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Timing

def timer(device, reps, warmup):
    def run(fn):
        for _ in range(warmup):
            fn()
        times = []
        if device == "cuda":
            torch.cuda.synchronize()
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e3)
        else:
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(times), min(times)
    return run


GRAPH_CALLS = 20


def graph_timer(device, reps, warmup):
    """The per-call time of fn as a CUDA graph of GRAPH_CALLS back-to-back calls, replayed (median and min of reps
    replays); None where fn cannot be captured (or on the CPU). The calls reuse fn's inputs, so for small tensors they
    run from L2, as they do in a captured U-Net pass."""
    def run(fn):
        if device != "cuda":
            return None
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs asks
                for _ in range(max(warmup, 3)):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(GRAPH_CALLS):
                    fn()
        except Exception as e:  # a backend that cannot be captured keeps its per-call time
            print(f"  (no graph timing: {type(e).__name__}: {str(e)[:120]})", flush=True)
            return None
        graph.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            graph.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3 / GRAPH_CALLS)
        return statistics.median(times), min(times)
    return run


def bandwidth(device):
    """The memory-bandwidth ceiling the kernel targets are measured against (METHOD.md: measure it, don't take the
    datasheet's): a 2 GiB device-to-device copy, bytes read plus bytes written, median of 20 after 3 warm-ups."""
    n = (1 << 31) // 4 if device == "cuda" else (1 << 26) // 4
    x = torch.rand(n, device=device)
    y = torch.empty_like(x)
    med, mn = timer(device, 20, 3)(lambda: y.copy_(x))
    assert torch.equal(x[-1000:], y[-1000:]), "copy did not copy"
    print(f"memory bandwidth ({device}): {2 * x.numel() * 4 / med / 1e3:.0f} GB/s "
          f"(median of 20 copies of {x.numel() * 4 >> 20} MiB, read + written; best {2 * x.numel() * 4 / mn / 1e3:.0f})")
    return 0


class Results:
    def __init__(self, jsonl, device_name):
        self.rows, self.jsonl, self.device_name = [], jsonl, device_name
        if jsonl:
            open(jsonl, "w").close()

    def add(self, **kw):
        kw["device"] = self.device_name
        self.rows.append(kw)
        line = json.dumps(kw)
        print("  " + line, flush=True)
        if self.jsonl:
            with open(self.jsonl, "a") as f:
                f.write(line + "\n")


def bench_sdpa(args, res, shapes, run):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    graphed = graph_timer(args.device, args.reps, args.warmup)
    backends = [b for b in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH") if hasattr(SDPBackend, b)]
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for (model, tokens, heads, d) in shapes:
        for batch in args.batches:
            for dname in args.dtypes:
                dt = dtypes[dname]
                g = torch.Generator(device=args.device).manual_seed(1)
                q, k, v = (torch.randn(batch, heads, tokens, d, device=args.device, dtype=dt, generator=g)
                           for _ in range(3))
                best = None
                for b in backends:
                    try:
                        with sdpa_kernel(getattr(SDPBackend, b)):
                            F.scaled_dot_product_attention(q, k, v)
                            med, mn = run(lambda: F.scaled_dot_product_attention(q, k, v))
                            g = graphed(lambda: F.scaled_dot_product_attention(q, k, v))
                    except Exception:
                        continue  # backend unavailable for this dtype / shape
                    us = min(med, g[0]) if g else med
                    if best is None or us < best[1]:
                        best = (b, us, med, g[0] if g else None)
                if best is None:
                    continue
                flops = 4 * batch * heads * tokens * tokens * d
                res.add(bench="sdpa", model=model, batch=batch, tokens=tokens, heads=heads, head_dim=d, dtype=dname,
                        backend=best[0], us=best[1], us_call=best[2], us_graph=best[3], tflops=flops / best[1] / 1e6)


def bench_groupnorm(args, res, shapes, run):
    for (n, h, w, c, g) in shapes:
        x = torch.randn(n, c, h, w, device=args.device).contiguous(memory_format=torch.channels_last)
        gamma, beta = torch.randn(c, device=args.device), torch.randn(c, device=args.device)
        variants = [("group_norm", lambda: F.group_norm(x, g, gamma, beta, 1e-5)),
                    ("group_norm+silu", lambda: F.silu(F.group_norm(x, g, gamma, beta, 1e-5)))]
        if args.compile:
            torch._dynamo.reset()
            fused = torch.compile(lambda t: F.silu(F.group_norm(t, g, gamma, beta, 1e-5)), dynamic=False)
            variants.append(("group_norm+silu compiled", lambda: fused(x)))
        graphed = graph_timer(args.device, args.reps, args.warmup)
        for name, fn in variants:
            try:
                med, mn = run(fn)
                gr = graphed(fn)
            except Exception as e:  # a compile failure must not stop the other peers
                print(f"  {name} {n}x{h}x{w}x{c}: {type(e).__name__}: {e}", flush=True)
                continue
            us = min(med, gr[0]) if gr else med
            gbs = 2 * x.numel() * 4 / us / 1e3
            res.add(bench="groupnorm", variant=name, shape=f"{n}x{h}x{w}x{c}", groups=g, us=us, us_call=med,
                    us_graph=gr[0] if gr else None, gbs=gbs)


def bench_unet(args, res, models, run):
    for label, path in models:
        for dname in args.unet_dtypes:
            dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dname]
            net, role = build(path, args.device, dt)
            params = sum(p.numel() for p in net.parameters())
            den = EdmDenoiser(net).eval()
            size, cin = net.cfg["sample_size"], net.cfg["in_channels"]
            for batch in args.batches:
                sigma = 80.0 if role == "student" else 1.5
                coef = coefficients(role, sigma, net.fourier, batch, args.device, dt)
                g = torch.Generator(device=args.device).manual_seed(2)
                x = torch.randn(batch, cin, size, size, device=args.device, generator=g).to(dt) * sigma
                modes = ["eager"]
                if args.device == "cuda":
                    modes.append("eager+cudagraph")
                if args.compile:
                    modes.append("compile")
                    if args.device == "cuda":
                        modes.append("compile+cudagraphs")
                for mode in modes:
                    if time.time() > args.deadline and mode.startswith("compile"):
                        res.add(bench="unet", model=label, role=role, dtype=dname, batch=batch, mode=mode,
                                us=None, note="skipped: --budget-s spent")
                        continue
                    t0 = time.time()
                    try:
                        fn = make_mode(mode, den, x, coef, args)
                        med, mn = run(fn)
                    except Exception as e:
                        print(f"  unet {label} {mode} b{batch}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                        res.add(bench="unet", model=label, role=role, dtype=dname, batch=batch, mode=mode, us=None,
                                note=f"failed: {type(e).__name__}")
                        continue
                    res.add(bench="unet", model=label, role=role, dtype=dname, batch=batch, mode=mode, us=med,
                            min_us=mn, params=params, setup_s=round(time.time() - t0, 1),
                            images_per_s=batch / med * 1e6)
            del net, den
            if args.device == "cuda":
                torch.cuda.empty_cache()


@torch.no_grad()
def make_mode(mode, den, x, coef, args):
    if mode == "eager":
        return lambda: den(x, *coef)
    if mode == "eager+cudagraph":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                den(x, *coef)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = den(x, *coef)
        ref = den(x, *coef)
        graph.replay()
        torch.cuda.synchronize()
        check_close(out, ref, "cuda graph replay vs eager")
        return graph.replay
    # A fresh dynamo state per (model, batch, mode): the shared EdmDenoiser.forward would otherwise pass dynamo's
    # recompile limit after 8 variants and silently run eager. Inductor's on-disk cache still serves repeats.
    torch._dynamo.reset()
    compiled = torch.compile(den, dynamic=False, mode="reduce-overhead" if mode == "compile+cudagraphs" else None)
    ref = den(x, *coef)
    for _ in range(3):  # compile, then (reduce-overhead) record and warm the graphs
        out = compiled(x, *coef)
    check_close(out, ref, mode + " vs eager")
    return lambda: compiled(x, *coef)


def check_close(got, want, what):
    err = ((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30)).item()
    if not err < 2e-2:  # tf32/bf16 reorderings stay far below; NaN fails
        raise RuntimeError(f"{what}: relative L2 error {err:.3e}")


# ----------------------------------------------------------------------------------------------------------------
# Parity on the CPU

def check_cpu(args):
    from safetensors.torch import load_file, save_file
    torch.manual_seed(0)
    worst, lines = [], []
    fx = os.path.join(ROOT, "java/src/test/resources/diffusers")
    for case in ["positional_default", "fourier_scaleshift_class", "positional_noattn_mid", "edm_denoiser"]:
        folder = os.path.join(fx, case)
        if not os.path.isdir(folder):
            continue
        net, _ = build(folder, "cpu", torch.float64)
        io = load_file(os.path.join(folder, "io.safetensors"))
        x = io["x"].double()
        with torch.no_grad():
            if case == "edm_denoiser":
                s = io["sigma"].double().view(-1, 1, 1, 1)
                sd = SIGMA_DATA
                cin, cskip, cout = 1 / torch.sqrt(s ** 2 + sd ** 2), sd ** 2 / (s ** 2 + sd ** 2), s * sd / torch.sqrt(s ** 2 + sd ** 2)
                y = EdmDenoiser(net)(x, cin, cskip, cout, 250 * torch.log(io["sigma"].double()))
            else:
                lab = io["class_labels"].long() if "class_labels" in io else None
                y = net(x, io["t"].double(), lab)
        d = (y.float() - io["y"]).abs().max().item()
        rel = d / io["y"].abs().max().item()
        worst.append((f"diffusers fixture {case} (float64)", d, rel, 1e-5))
    onestep = os.path.join(ROOT, "bin/onestep")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("teacher", "student"):
            path = os.path.join(ROOT, f"models/fmnist-{name}.safetensors")
            if not os.path.exists(path):
                continue
            net, role = build(path, "cpu", torch.float32)
            n, c, s = 4, net.cfg["in_channels"], net.cfg["sample_size"]
            for sigma in args.sigmas:
                x = torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(3)) * math.sqrt(sigma ** 2 + 0.25)
                save_file({"x": x.contiguous()}, os.path.join(tmp, "x.safetensors"))
                out = os.path.join(tmp, "y.safetensors")
                cmd = [onestep, "denoise", "--model", path, "--input", os.path.join(tmp, "x.safetensors"),
                       "--sigma", repr(sigma), "--out", out, "--threads", "1"]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stdout, r.stderr)
                    worst.append((f"java {name} sigma={sigma}: bin/onestep failed", float("nan"), float("nan"), 1e-4))
                    continue
                yj = load_file(out)["y"]
                with torch.no_grad():
                    yt = EdmDenoiser(net)(x, *coefficients(role, sigma, net.fourier, n, "cpu", torch.float32))
                    net64 = net.double()
                    yt64 = EdmDenoiser(net64)(x.double(), *coefficients(role, sigma, net.fourier, n, "cpu", torch.float64))
                    net.float()
                d32, d64 = (yj - yt).abs().max().item(), (yj.double() - yt64).abs().max().item()
                worst.append((f"java {name} sigma={sigma} vs torch fp32", d32, d32 / yt.abs().max().item(), 1e-4))
                worst.append((f"java {name} sigma={sigma} vs torch fp64", d64, d64 / yt64.abs().max().item(), 1e-4))
                worst.append((f"  (torch fp32 vs fp64, same input)", (yt.double() - yt64).abs().max().item(),
                              float("nan"), float("inf")))
    print(f"\n{'parity check':52s} {'max abs diff':>13s} {'rel to max':>11s} {'tol (abs)':>10s}  result")
    bad = 0
    checks = [w for w in worst if w[3] != float("inf")]
    for what, d, rel, tol in worst:
        ok = d <= tol
        bad += 0 if ok else 1
        verdict = "info" if tol == float("inf") else "ok" if ok else "FAIL"
        print(f"{what:52s} {d:13.3e} {rel:11.3e} {tol:10.1e}  {verdict}")
    print(f"parity: {len(checks) - bad} passed, {bad} failed")
    return 1 if bad else 0


def write_cifar(path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    net = UNet2D(CIFAR_CONFIG)
    with torch.no_grad():  # non-trivial weights; conv/linear keep PyTorch's default init scale
        for name, p in net.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    sd = {k: v.float().contiguous() for k, v in net.state_dict().items()}
    # A student's checkpoint stores its multistep re-noising times (api.Sampler reads them; StepTiming's 2-step
    # sample needs one): the 9th of 18 Karras levels (rho 7, sigma 80 to 0.002), where distilled students put it.
    lo, hi, rho = 0.002 ** (1 / 7), 80.0 ** (1 / 7), 7
    tau = (hi + 9 / 17 * (lo - hi)) ** rho
    save_file(sd, path, metadata={"config": json.dumps(CIFAR_CONFIG), "onestep.role": "student",
                                  "onestep.consistency.timepoints": f"2:{tau:.6g}", "onestep.format": "1"})
    print(f"wrote {path}: {sum(v.numel() for v in sd.values())} parameters (random weights)")


# ----------------------------------------------------------------------------------------------------------------

def call_graph(r):
    """A single kernel's two timings (per call, and per call in a CUDA graph), where the graph ran."""
    return f"  (per call {r['us_call']:.1f}, in a graph {r['us_graph']:.1f})" if r.get("us_graph") else ""


def print_table(res):
    print("\nPyTorch peers on", res.device_name)
    rows = res.rows
    for r in (r for r in rows if r["bench"] == "sdpa"):
        print(f"  sdpa {r['model']:7s} b{r['batch']:<3d} T={r['tokens']:<4d} H={r['heads']} D={r['head_dim']:<3d} "
              f"{r['dtype']:4s} {r['us']:10.1f} us  {r['tflops']:7.2f} TFLOP/s  ({r['backend']}){call_graph(r)}")
    for r in (r for r in rows if r["bench"] == "groupnorm"):
        print(f"  {r['variant']:26s} {r['shape']:>14s} G={r['groups']:<3d} {r['us']:10.1f} us  {r['gbs']:7.1f} GB/s"
              f"{call_graph(r)}")
    unet = [r for r in rows if r["bench"] == "unet"]
    if unet:
        modes = list(dict.fromkeys(r["mode"] for r in unet))
        print(f"  {'U-Net denoiser (us per call)':34s}" + "".join(f"{m:>20s}" for m in modes))
        keys = list(dict.fromkeys((r["model"], r["dtype"], r["batch"]) for r in unet))
        for k in keys:
            cells = []
            for m in modes:
                r = next((r for r in unet if (r["model"], r["dtype"], r["batch"]) == k and r["mode"] == m), None)
                cells.append("-" if r is None or r["us"] is None else f"{r['us']:.1f}")
            print(f"  {k[0] + ' ' + k[1] + ' b' + str(k[2]):34s}" + "".join(f"{c:>20s}" for c in cells))


def summary(paths):
    """The combined U-Net table of run.sh: our engine's step (StepTiming's JSON lines) next to PyTorch's modes."""
    rows = []
    for p in paths:
        if os.path.exists(p):
            rows += [json.loads(l) for l in open(p) if l.strip()]
    steps = [r for r in rows if r.get("bench") == "engine-step"]
    # One table per precision: our passes in fp16/bf16/fp32 (StepTiming's "precision"; older lines are fp32) next to
    # PyTorch's U-Net in the same dtype.
    for prec in dict.fromkeys([r.get("precision", "fp32") for r in steps] + ["fp32"]):
        summary_table(prec, [r for r in steps if r.get("precision", "fp32") == prec],
                      [r for r in rows if r.get("bench") == "unet" and r.get("dtype") == prec])
    sd = [r for r in rows if r.get("bench") == "sdpa"]
    if sd:
        print("PyTorch SDPA, fastest backend, the faster of per call and in a CUDA graph (us; per call/in a graph): "
              + "; ".join(
            f"{r['model']} b{r['batch']} T{r['tokens']} H{r['heads']} D{r['head_dim']} {r['dtype']} {r['us']:.1f}"
            + (f" ({r['us_call']:.1f}/{r['us_graph']:.1f})" if r.get("us_graph") else "") for r in sd))
    mem = [r for r in rows if r.get("bench") == "pass-memory"]
    if mem:
        print("captured passes' activations, MiB: planned and shared (one arena per graph, no reuse): " + "; ".join(
            f"{r['model']} b{r['batch']} {r['activations_bytes'] / 2**20:.1f} ({r['unplanned_bytes'] / 2**20:.1f})"
            for r in mem))
    graphs = [r for r in rows if r.get("bench") == "pass-graph"]
    if graphs:
        print("captured graphs: nodes / backend ops / bias kernels left to the readers of cuDNN and cuBLAS results: "
              + "; ".join(f"{r['model']} b{r['batch']} {r['nodes']}/{r['ops']}/{r['bias_kernels_saved']}"
                          for r in graphs))
    unf = [r for r in rows if r.get("bench") == "engine-step-unfolded"]
    if unf:
        ours = {(r["model"], r.get("precision", "fp32"), r["batch"]): r["us"] for r in steps
                if "Heun" not in r["step"] and "2-step" not in r["step"]}
        for variant, what in (("unfolded", "without constant folding (the time path in the graph)"),
                              ("unfused residual", "folded, conv2 and to_out.0 apart from their residual adds"),
                              ("unfused upsampling", "folded, the upsamplers as upsampling + 3x3 convolution"),
                              ("norms apart", "folded, each group norm apart from the convolution it feeds"),
                              ("norm statistics not chained", "folded, each group norm's statistics computed by its reader, not left by the convolution before it"),
                              ("attention and to_out apart", "folded, each attention and its to_out.0 as two launches"),
                              ("resnet blocks apart", "folded, each small-level resnet block as its two norm-convolution ops (no onestep_resnet_block_typed)"),
                              ("heuristic convolutions", "with cuDNN's heuristic algorithms, not its timed search"),
                              ("cuDNN convolutions only", "with every convolution on cuDNN (none on our implicit GEMM)"),
                              ("default attention only", "with every attention on the default kernel (no split-keys, pipelined or wide one)"),
                              ("default group norm only", "with every group norm on the default kernels (no slab kernel)"),
                              ("weights not prefetched", "with the kernels' weights not asked of L2 before their wait"),
                              ("programmatic dependent launch", "with programmatic dependent launch on"),
                              ("programmatic launch, weights not prefetched", "with programmatic dependent launch on and the weights not prefetched"),
                              ("default again", "again as the default, captured anew last (the spread between two timings of one graph)")):
            sel = [r for r in unf if r.get("variant", "unfolded") == variant]
            if sel:
                print(f"first step {what}, us and nodes, vs the default: " + "; ".join(
                    f"{r['model']} {r['precision']} b{r['batch']} {r['us']:.1f} ({r['nodes']} nodes)"
                    + (f" vs {ours[(r['model'], r['precision'], r['batch'])]:.1f}"
                       if (r['model'], r['precision'], r['batch']) in ours else "")
                    for r in sel))
    gn = [r for r in rows if r.get("bench") == "groupnorm"]
    if gn:
        print("PyTorch group norm (GB/s): " + "; ".join(f"{r['variant']} {r['shape']} {r['gbs']:.0f}" for r in gn))
    bad = [r for r in rows if r.get("finite") is False or str(r.get("note", "")).startswith("failed")]
    for r in bad:
        print("  problem:", json.dumps(r))
    return 0


def summary_table(prec, steps, torch_rows):
    ours = {(r["model"], r["batch"]): r for r in steps if "Heun" not in r["step"] and "2-step" not in r["step"]}
    heun = {(r["model"], r["batch"]): r for r in steps if "Heun" in r["step"]}
    two = {(r["model"], r["batch"]): r for r in steps if "2-step" in r["step"]}
    modes = list(dict.fromkeys(r["mode"] for r in torch_rows))
    keys = list(dict.fromkeys(list(ours) + [(r["model"], r["batch"]) for r in torch_rows]))
    if keys:
        backend = next((r["backend"] for r in ours.values()), "-")
        print(f"one denoiser evaluation, {prec}, microseconds (median; student at t=80, teacher at sigma=1.5); "
              f"ours = engine, {backend} backend, host to host")
        print(f"  {'model':16s} {'batch':>5s} {'ours':>10s}" + "".join(f"{m:>19s}" for m in modes)
              + f"{'eager/ours':>11s}{'best torch/ours':>16s}")
        for k in keys:
            o = ours.get(k, {}).get("us")
            t = {r["mode"]: r["us"] for r in torch_rows if (r["model"], r["batch"]) == k}
            cells = "".join(f"{t[m]:19.1f}" if t.get(m) is not None else f"{'-':>19s}" for m in modes)
            done = [v for v in t.values() if v is not None]
            r1 = f"{t['eager'] / o:11.2f}" if o and t.get("eager") else f"{'-':>11s}"
            r2 = f"{min(done) / o:16.2f}" if o and done else f"{'-':>16s}"
            print(f"  {k[0]:16s} {k[1]:5d} " + (f"{o:10.1f}" if o else f"{'-':>10s}") + cells + r1 + r2)
        for k, r in heun.items():
            print(f"  {k[0]} batch {k[1]}: one Heun step (2 NFE + update), ours: {r['us']:.1f} us")
        for k, r in two.items():
            print(f"  {k[0]} batch {k[1]}: whole 2-step sample (2 NFE + re-noising, one graph), ours: {r['us']:.1f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default="sdpa,gn,unet", help="comma list of sdpa, gn, unet")
    ap.add_argument("--quick", action="store_true", help="tiny run (batches 1 and 2, few reps): exercises the code")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--dtypes", default="fp32,fp16,bf16", help="for sdpa")
    ap.add_argument("--unet-dtypes", default="fp16,fp32", help="fp32, fp16, bf16 (our passes run in each)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 matmuls (cuDNN convs use it by default)")
    ap.add_argument("--cifar", action="store_true", default=True)
    ap.add_argument("--no-cifar", dest="cifar", action="store_false")
    ap.add_argument("--budget-s", type=float, default=420, help="skip further compile modes after this many seconds")
    ap.add_argument("--jsonl", default=None)
    ap.add_argument("--check-cpu", action="store_true")
    ap.add_argument("--sigmas", default="1.5,80", help="for --check-cpu")
    ap.add_argument("--write-cifar", metavar="PATH")
    ap.add_argument("--bandwidth", action="store_true", help="measure the device's copy bandwidth and exit")
    ap.add_argument("--summary", nargs="+", metavar="JSONL", help="print run.sh's combined table from these files")
    args = ap.parse_args()
    if args.summary:
        return summary(args.summary)
    if args.write_cifar:
        write_cifar(args.write_cifar)
        return 0
    if args.bandwidth:
        return bandwidth(args.device)
    args.sigmas = [float(s) for s in args.sigmas.split(",")]
    if args.check_cpu:
        torch.set_num_threads(1)
        return check_cpu(args)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.dtypes = args.dtypes.split(",")
    args.unet_dtypes = args.unet_dtypes.split(",")
    if args.quick:
        args.batches, args.reps, args.warmup = [1, 2], 3, 1
    args.deadline = time.time() + args.budget_s
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        args.dtypes = [d for d in args.dtypes if d == "fp32"] or ["fp32"]
        args.unet_dtypes = [d for d in args.unet_dtypes if d == "fp32"] or ["fp32"]
        name = "cpu (%d threads)" % torch.get_num_threads()
    name += f", torch {torch.__version__}"
    print(f"torch_peers on {name}; fp32 matmul tf32={torch.backends.cuda.matmul.allow_tf32}, "
          f"cudnn conv tf32={torch.backends.cudnn.allow_tf32}", flush=True)
    res = Results(args.jsonl, name)
    run = timer(args.device, args.reps, args.warmup)
    # Most important first: the compile modes stop when --budget-s is spent. CIFAR batch 1 against
    # compile+cudagraphs is the issue's target; the student's network is the teacher's (same shapes), last.
    models = [("fmnist-teacher", os.path.join(ROOT, "models/fmnist-teacher.safetensors")),
              ("fmnist-student", os.path.join(ROOT, "models/fmnist-student.safetensors"))]
    if args.cifar:
        cifar = os.environ.get("ONESTEP_CIFAR_CHECKPOINT") or os.path.join(tempfile.gettempdir(), "onestep-cifar.safetensors")
        if not os.path.exists(cifar):
            write_cifar(cifar)
        models.insert(0, ("cifar-random", cifar))
    only = set(args.only.split(","))
    with torch.no_grad():
        if "sdpa" in only:
            shapes = []
            for label, path in [m for m in models if m[0] != "fmnist-student"]:  # the student has the teacher's
                net, _ = build(path, "cpu")
                for s in dict.fromkeys(net.attention_shapes()):
                    shapes.append((label.split("-")[0],) + s)
            print("== sdpa", flush=True)
            bench_sdpa(args, res, shapes, run)
        if "gn" in only:
            print("== group norm", flush=True)
            gn = [(8, 32, 32, 256, 32), (8, 16, 16, 512, 32), (64, 28, 28, 32, 8), (64, 32, 32, 128, 32)]
            if args.quick:
                gn = [(2, 28, 28, 32, 8)]
            bench_groupnorm(args, res, gn, run)
        if "unet" in only:
            print("== unet", flush=True)
            bench_unet(args, res, models, run)
    print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
