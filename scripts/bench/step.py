"""The yardstick: one LoRA fine-tuning step of the JAX port against the PyTorch original,
side by side in one process, on the same weights and the same batch.

    python scripts/bench/step.py [--full] [--batch 1] [--frames 16] [--runs 5] [--out bench.json] [--json]
    python scripts/bench/step.py --first-step      # also: the first step of fresh processes

PyTorch runs as the original recipe does: the reference model on `transformers.LlamaModel`
(eager attention with the dense 4D block-causal mask), LoRA by `peft` (r 16, alpha 32,
dropout 0.05 on the seven projections, adapters float32), bf16 or float32 weights, the
residual as the PyTorch system writes it (`torch_reference.burgers_pde_loss_upwind`:
vectorised, `torch.cat` ghost cells, `torch.where` upwinding, batch-mean nu), AdamW with
a global-norm clip. And as a user seeking speed would run it (`--torch-variants`): the
same model with `attn_implementation="sdpa"` (PyTorch's fused attention kernel, the
block-causal mask passed as SDPA's additive mask), and that with `torch.compile`
(inductor; the whole model when inductor compiles it, else the transformer, the part
that dominates the step; its compile time is the row's first call). JAX runs
`burgers_jax.train.Trainer.train_step` for each precision policy. Both start from one
`best.pt` (converted for JAX by the project's converter).

Reported, JAX and PyTorch interleaved so that both see the same machine load: the
first call (compile), the steady median after warm-up (`block_until_ready`), the step
per policy, the forward pass alone, the residual alone (value, value + gradient), a
per-stage profile (encoder, transformer, decoder, residual; forward and backward), the
measured matmul peak of this machine (a 2048^3 float32 product and a bf16 one with
float32 accumulation, in XLA and in PyTorch) and the FLOP/s each stage and the step
achieve by the analytic count of `scripts/bench/cost_analysis.py`. `--json` ends the output
with one line of JSON: the ratios and utilisation a script reads.
Defaults to the small architecture (hidden 128, 2 layers, 8/2 heads, channels
16/32/64); `--full` for hidden 768, 10 layers, 12/4 heads, channels 64/128/256.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before the imports: a fresh process's first step counts them
# ruff: noqa: E402 (the imports below come after that clock on purpose)

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from common import LORA, batch_for, jax_trainer  # noqa: I001 (scripts/ is on the path)

from burgers_jax.model import param_tree
from burgers_jax.model.config import Policy
from burgers_jax.model.network import Decoder2d, Encoder2d
from burgers_jax.model.transformer import Transformer
from burgers_jax.physics import residual as physics
from burgers_jax.porting import convert_ckpt
from burgers_jax.porting import torch_reference as R
from burgers_jax.porting.torch_checkpoint import load_torch_file

REPO = Path(__file__).resolve().parents[1]

DT = physics.REFERENCE_DT


def model_config(full: bool) -> dict:
    config = R.architecture_config_dict("full" if full else "small")
    config["model"]["use_flash_attention"] = False
    return config


def median_ms(ts) -> float:
    return 1e3 * statistics.median(ts)


def interleaved(fns: dict, runs: int, warmup: int) -> dict:
    """{name: (first call s, [steady s, ...])}, every function called once per round."""
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (first[name], times[name]) for name in fns}


# ----------------------------------------------------------------------------- PyTorch side


def torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TorchRecipe:
    """The PyTorch original's LoRA step, as its fine-tuning script runs it."""

    def __init__(self, best_pt: Path, dtype: torch.dtype, batch: dict, frames: int, attn: str = "eager",
                 compile: bool = False):
        ckpt, _ = load_torch_file(best_pt)  # weights only; named errors
        model = R.build_model(ckpt["config"], attn_implementation=attn)
        model.load_state_dict({k: v.float() for k, v in ckpt["model_state_dict"].items()})
        dev = torch_device()
        model = model.to(dev).to(dtype)
        self.model = R.wrap_lora(model, **LORA)  # adapters float32 on the bf16 base (peft autocast)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=1e-4, betas=(0.9, 0.999))
        self.dtype, self.T = dtype, frames
        self.frames = torch.from_numpy(batch["frames"]).to(dev)
        self.bounds = [torch.from_numpy(batch[k]).to(dev) for k in ("left", "right", "bottom", "top")]
        self.nu = float(np.mean(batch["nu"]))  # the recipe passes the batch-mean nu
        self.compiled = None
        if compile:
            self._compile()

    def _compile(self) -> None:
        """torch.compile (inductor) of the whole model if one step of it runs, else of the
        transformer alone; `self.compiled` says which. The trial step's time (the compile)
        is kept as `self.compile_s`."""
        eager_model = self.model
        t0 = time.perf_counter()
        try:
            self.model = torch.compile(eager_model)
            self.step0_loss = self.step()
            self.compiled = "model"
        except Exception as exc:  # inductor cannot lower some op: compile the part that dominates
            print(f"torch.compile of the whole model failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                  "compiling the transformer only")
            torch._dynamo.reset()
            self.model = eager_model
            self.model.transformer = torch.compile(self.model.transformer)
            t0 = time.perf_counter()
            self.step0_loss = self.step()
            self.compiled = "transformer"
        self.compile_s = time.perf_counter() - t0

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        x = self.frames[:, :self.T].to(self.dtype)
        out = self.model(x)
        pred = torch.cat([x[:, :1], out], dim=1)[..., :2].float()
        loss = R.burgers_pde_loss_upwind(pred, *self.bounds, self.nu, DT)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return loss.detach().item()  # waits for the device

    def forward(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(self.frames[:, :self.T].to(self.dtype))
        sync()
        self.model.train()

    def stages(self) -> dict:
        """Forward and forward+backward of each stage on its own input."""
        m = self.model
        x = self.frames[:, :self.T].to(self.dtype)
        b, t = x.shape[:2]
        with torch.no_grad():
            mean = x.mean(dim=(2, 3), keepdim=True)
            xn = (x - mean) / (x.std(dim=(2, 3), keepdim=True) + 1e-6)
            tokens = m.encoder_2d(xn)
            mask = R.block_causal_mask(t, dtype=tokens.dtype)
            hidden = m.transformer(inputs_embeds=tokens, attention_mask=mask, use_cache=False).last_hidden_state
        pred = torch.cat([x[:, :1].float(), x.float()], dim=1)[..., :2]

        def fb(fn, inp):
            inp = inp.detach().requires_grad_(True)
            out = fn(inp)
            out.backward(torch.ones_like(out))
            sync()

        enc = lambda a: m.encoder_2d(a)  # noqa: E731
        tra = lambda a: m.transformer(inputs_embeds=a, attention_mask=mask, use_cache=False).last_hidden_state  # noqa
        dec = lambda a: m.decoder_2d(a)  # noqa: E731
        res = lambda a: R.burgers_pde_loss_upwind(a, *self.bounds, self.nu, DT)[0]  # noqa: E731

        def nograd(fn, a):
            return lambda: (torch.no_grad()(fn)(a), sync())

        return {"encoder": (nograd(enc, xn), lambda: fb(enc, xn)),
                "transformer": (nograd(tra, tokens), lambda: fb(tra, tokens)),
                "decoder": (nograd(dec, hidden), lambda: fb(dec, hidden)),
                "residual": (nograd(res, pred), lambda: fb(res, pred))}


# ----------------------------------------------------------------------------- JAX side


class JaxStep:
    def __init__(self, trainer, batch: dict):
        self.trainer = trainer
        self.state = trainer.initial_state()
        self.batch = trainer.shard_batch(batch)

    def step(self) -> float:
        self.state, m = self.trainer.train_step(self.state, self.trainer.frozen, self.batch)
        return float(jax.block_until_ready(m["loss"]))


def jax_stages(trainer, trainable, batch: dict) -> dict:
    cfg, model_cfg = trainer.cfg, trainer.model_cfg
    policy = Policy.named(cfg.model.precision)
    dt = policy.compute_dtype
    params = param_tree.merge(trainable, trainer.frozen)
    T = cfg.dataset.temporal_length
    x = jnp.asarray(batch["frames"][:, :T])
    b = x.shape[0]
    enc, tra, dec = Encoder2d(model_cfg, dt), Transformer(model_cfg, dt), Decoder2d(model_cfg, dt, policy.output_dtype)
    xn = ((x - x.mean((2, 3), keepdims=True)) / (x.std((2, 3), ddof=1, keepdims=True) + 1e-6)).astype(dt)
    images = xn.reshape(b * T, 128, 128, 6)
    # Weights and side inputs are arguments, not closed-over constants: XLA would otherwise
    # constant-fold whole convolutions at compile time.
    e_fn = lambda p, a: enc.apply({"params": p}, a, b)  # noqa: E731
    t_fn = lambda p, a: tra.apply({"params": p}, a)  # noqa: E731
    d_fn = lambda p, a: dec.apply({"params": p}, a)  # noqa: E731
    bounds = [jnp.asarray(batch[k]) for k in ("left", "right", "bottom", "top")]
    side = {"bounds": bounds, "nu": jnp.asarray(batch["nu"])}
    r_fn = lambda p, a: physics.burgers_pde_loss(a, *p["bounds"], p["nu"], DT)[0]  # noqa: E731
    tokens = jax.jit(e_fn)(params["encoder_2d"], images)
    hidden = jax.jit(t_fn)(params["transformer"], tokens)
    pred = jnp.asarray(batch["frames"][..., :2])
    out = {}
    for name, fn, p, inp in (("encoder", e_fn, params["encoder_2d"], images),
                             ("transformer", t_fn, params["transformer"], tokens),
                             ("decoder", d_fn, params["decoder_2d"], hidden), ("residual", r_fn, side, pred)):
        f = jax.jit(fn)
        g = jax.jit(jax.grad(lambda p, a, fn=fn: jnp.sum(fn(p, a).astype(jnp.float32)), argnums=1))
        out[name] = (lambda f=f, p=p, inp=inp: jax.block_until_ready(f(p, inp)),
                     lambda g=g, p=p, inp=inp: jax.block_until_ready(g(p, inp)))
    return out


# ----------------------------------------------------------------------------- utilisation


def matmul_peak(n: int = 2048, runs: int = 10) -> dict:
    """GFLOP/s of the best of `runs` n^3 products: float32, and bf16 inputs with float32
    accumulation (the path the bf16 policies take), in XLA and in PyTorch."""
    a32 = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    b32 = jax.random.normal(jax.random.PRNGKey(1), (n, n))
    a16, b16 = a32.astype(jnp.bfloat16), b32.astype(jnp.bfloat16)
    f32 = jax.jit(lambda a, b: a @ b)
    f16 = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    ta, tb = (torch.from_numpy(np.array(a)).to(torch_device()) for a in (a32, b32))  # writable copies
    ta16, tb16 = ta.bfloat16(), tb.bfloat16()

    def torch_mm(x, y):
        return lambda: (x @ y, sync())

    fns = {"xla_float32": lambda: jax.block_until_ready(f32(a32, b32)),
           "xla_bf16_f32acc": lambda: jax.block_until_ready(f16(a16, b16)),
           "torch_float32": torch_mm(ta, tb), "torch_bf16": torch_mm(ta16, tb16)}
    return {k: 2.0 * n ** 3 / min(ts) / 1e9 for k, (_, ts) in interleaved(fns, runs, 2).items()}


def analytic_stages(full: bool, b: int, frames: int) -> dict:
    """FLOPs per profiled stage and for the step, from cost_analysis.analytic. The
    profile's backward is the input gradient (no weight gradients): the linear and conv
    input gradients (the forward's FLOPs again) and attention's 5 units."""
    from cost_analysis import analytic

    from burgers_jax.model.config import architecture

    c = analytic(architecture("full" if full else "small").with_lora(r=LORA["r"], alpha=LORA["alpha"]), b, frames)
    unit = c["attention_forward"] / 2
    transformer_fwd = c["transformer_linear"] + c["adapters"] + c["attention_forward"]
    return {"encoder": (c["encoder"], c["encoder"]), "decoder": (c["decoder"], c["decoder"]),
            "transformer": (transformer_fwd, c["transformer_linear"] + c["adapters"] + 5 * unit),
            "step": c["total"], "forward": c["forward"]}


# ----------------------------------------------------------------------------- fresh processes


def first_step_child(kind: str, best_pt: str, pretrained: str, b: int, frames: int) -> None:
    """Runs in a fresh process: prints JSON with setup and first-step seconds."""
    t0 = time.perf_counter()
    batch = batch_for(b, frames)
    if kind.startswith("torch"):  # torch (the recipe's bf16), torch_bf16, torch_float32: eager
        runner = TorchRecipe(Path(best_pt), torch.float32 if kind == "torch_float32" else torch.bfloat16, batch, frames)
    else:
        runner = JaxStep(jax_trainer(Path(pretrained), kind, b, frames), batch)
    t1 = time.perf_counter()
    runner.step()
    t2 = time.perf_counter()
    runner.step()
    t3 = time.perf_counter()
    print(json.dumps({"imports_s": t0 - PROCESS_START, "setup_s": t1 - t0, "first_step_s": t2 - t1,
                      "second_step_s": t3 - t2}))


def fresh_processes(best_pt: Path, pretrained: Path, b: int, frames: int, cache_dir: str) -> dict:
    def child(kind, env):
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--best-pt", str(best_pt),
                              "--pretrained", str(pretrained), "--batch", str(b), "--frames", str(frames)],
                             capture_output=True, text=True, env=env, cwd=REPO, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    env = dict(os.environ, BURGERS_JAX_CACHE=cache_dir)
    return {"torch_bf16": child("torch", env), "jax_float32_cold_cache": child("float32", env),
            "jax_float32_warm_cache": child("float32", env)}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="the full-size architecture")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--policies", default="float32,reference,fp32_output")
    ap.add_argument("--torch-variants", default="eager,sdpa,sdpa_compile",
                    help="PyTorch rows, comma-separated: eager (the original), sdpa, sdpa_compile, eager_compile")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--first-step", action="store_true", help="also time the first step of fresh processes")
    ap.add_argument("--out", type=Path, default=None, help="JSON with every number")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON: ratios, utilisation")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--best-pt", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pretrained", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        from burgers_jax.io import compilation_cache

        compilation_cache.enable()
        first_step_child(args.child, args.best_pt, args.pretrained, args.batch, args.frames)
        return 0
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench_step_"))
    config = model_config(args.full)
    best_pt = work / "best.pt"
    R.write_best_pt(best_pt, R.randomize_(R.build_model(config), seed=0, scale=0.1), config)
    convert_ckpt.convert_model(best_pt, work / "pretrained", None)
    batch = batch_for(args.batch, args.frames)
    policies = args.policies.split(",")
    info = {"arch": "full" if args.full else "small", "batch": args.batch, "frames": args.frames,
            "jax": jax.__version__, "torch": torch.__version__, "device": jax.devices()[0].device_kind,
            "torch_threads": torch.get_num_threads(), "runs": args.runs, "warmup": args.warmup}
    print(f"bench_step: {info}")

    jax_steps = {p: JaxStep(jax_trainer(work / "pretrained", p, args.batch, args.frames), batch) for p in policies}
    torch_runs = {}
    for variant in args.torch_variants.split(","):
        attn, _, compiled = variant.partition("_")
        if attn not in ("eager", "sdpa") or compiled not in ("", "compile"):
            ap.error(f"--torch-variants: {variant!r} is not one of eager, sdpa, eager_compile, sdpa_compile")
        for d, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
            name = d + ("" if variant == "eager" else f"_{variant}")
            print(f"building PyTorch {name}" + (" (torch.compile: the first step compiles)" if compiled else ""), flush=True)
            torch_runs[name] = TorchRecipe(best_pt, dtype, batch, args.frames, attn, compile=bool(compiled))
    step_fns = {f"jax_{p}": s.step for p, s in jax_steps.items()}
    step_fns.update({f"torch_{d}": r.step for d, r in torch_runs.items()})
    step0 = {}

    def recording(name, fn):  # keeps the loss of the first call (step 0)
        return lambda: step0.setdefault(name, fn()) if name not in step0 else fn()

    step_fns = {k: recording(k, fn) for k, fn in step_fns.items()}
    results = {"info": info, "step": {k: {"first_s": f, "median_ms": median_ms(ts), "times_s": ts}
                                      for k, (f, ts) in interleaved(step_fns, args.runs, args.warmup).items()}}
    for d, r in torch_runs.items():
        if r.compiled:  # the first call timed above ran compiled code already; the compile was the trial step
            results["step"][f"torch_{d}"].update(first_s=r.compile_s, compiled=r.compiled)
            step0[f"torch_{d}"] = r.step0_loss
    # The same work on both sides: the float32 losses at step 0 agree (the adapters' B is zero).
    if "jax_float32" in step0 and "torch_float32" in step0:
        lj, lt = step0["jax_float32"], step0["torch_float32"]
        print(f"step-0 loss, float32: JAX {lj:.6g}, PyTorch {lt:.6g}", flush=True)
        assert abs(lj - lt) <= 1e-3 * abs(lt), f"step-0 losses differ: JAX {lj}, PyTorch {lt}"
    info["step0_loss"] = step0

    fwd_jax = jax_steps.get("float32") or next(iter(jax_steps.values()))
    # The state after the timed steps (the step donates its input state, so the initial one is gone).
    trainable = jax.tree.map(jnp.copy, getattr(fwd_jax.state, "trainable", None) or fwd_jax.state.adapters)
    model, params = fwd_jax.trainer.model, param_tree.merge(trainable, fwd_jax.trainer.frozen)
    x = jnp.asarray(batch["frames"][:, :args.frames])
    apply = jax.jit(lambda p, a: model.apply({"params": p}, a))
    fwd = {"jax_float32": lambda: jax.block_until_ready(apply(params, x))}
    fwd.update({f"torch_{d}": r.forward for d, r in torch_runs.items() if d.startswith("float32") and not r.compiled})
    results["forward"] = {k: {"first_s": f, "median_ms": median_ms(ts)}
                          for k, (f, ts) in interleaved(fwd, args.runs, args.warmup).items()}

    rb = batch_for(4, 16)  # the residual alone: B 4 x 17 frames x 128^2, float32
    pj = jnp.asarray(rb["frames"][..., :2]) + 1e-3
    bj = [jnp.asarray(rb[k]) for k in ("left", "right", "bottom", "top")]
    nu = float(np.mean(rb["nu"]))
    pt = torch.from_numpy(np.array(pj)).to(torch_device())
    bt = [torch.from_numpy(rb[k]).to(torch_device()) for k in ("left", "right", "bottom", "top")]
    j_val = jax.jit(lambda p: physics.burgers_pde_loss(p, *bj, nu, DT)[0])
    j_grad = jax.jit(jax.value_and_grad(lambda p: physics.burgers_pde_loss(p, *bj, nu, DT)[0]))

    def t_val():
        with torch.no_grad():
            out = R.burgers_pde_loss_upwind(pt, *bt, nu, DT)[0]
        sync()
        return out

    def t_grad():
        p = pt.clone().requires_grad_(True)
        R.burgers_pde_loss_upwind(p, *bt, nu, DT)[0].backward()
        sync()

    lj, lt = float(j_val(pj)), float(t_val())
    assert abs(lj - lt) <= 1e-4 * abs(lt), f"residuals disagree: JAX {lj}, PyTorch {lt}"
    res = {"jax_value": lambda: jax.block_until_ready(j_val(pj)), "torch_value": t_val,
           "jax_value_grad": lambda: jax.block_until_ready(j_grad(pj)), "torch_value_grad": t_grad}
    results["residual"] = {k: {"median_ms": median_ms(ts)}
                           for k, (_, ts) in interleaved(res, max(args.runs, 20), 3).items()}

    if not args.no_profile:
        prof = {}
        js = jax_stages(fwd_jax.trainer, trainable, batch)
        ts_ = next(r for d, r in torch_runs.items() if d.startswith("float32") and not r.compiled).stages()
        for stage in js:
            fns = {"jax_fwd": js[stage][0], "jax_fwd_bwd": js[stage][1],
                   "torch_fwd": ts_[stage][0], "torch_fwd_bwd": ts_[stage][1]}
            prof[stage] = {k: median_ms(v[1]) for k, v in interleaved(fns, args.runs, args.warmup).items()}
        results["profile_float32"] = prof
    results["matmul_peak_gflops"] = matmul_peak()
    results["analytic_gflop"] = {k: (tuple(x / 1e9 for x in v) if isinstance(v, tuple) else v / 1e9)
                                 for k, v in analytic_stages(args.full, args.batch, args.frames).items()}
    if args.first_step:
        results["fresh_process"] = fresh_processes(best_pt, work / "pretrained", args.batch, args.frames,
                                                   str(work / "jax_cache"))
    report(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.json:
        print(json.dumps(summary(results)))
    return 0


def fastest(steps: dict, prefix: str) -> tuple[str, float]:
    """(name, median ms) of the fastest row whose name starts with `prefix`."""
    rows = {k: v["median_ms"] for k, v in steps.items() if k.startswith(prefix)}
    name = min(rows, key=rows.get)
    return name, rows[name]


def summary(r: dict) -> dict:
    """The numbers a script compares: speed ratios against the fastest PyTorch rows,
    the step's share of the matmul peak, first steps."""
    s = r["step"]
    out = {"info": r["info"], "median_ms": {k: round(v["median_ms"], 1) for k, v in s.items()}}
    jax32 = s["jax_float32"]["median_ms"] if "jax_float32" in s else None
    t32_name, t32 = fastest(s, "torch_float32")
    tb_name, tb = fastest(s, "torch_bf16")
    out["fastest_torch_float32"], out["fastest_torch_bf16"] = t32_name, tb_name
    if jax32:
        out["float32_vs_fastest_torch_float32"] = t32 / jax32
        if "torch_float32" in s:
            out["float32_vs_torch_eager_float32"] = s["torch_float32"]["median_ms"] / jax32
    bf16_rows = {k: v["median_ms"] for k, v in s.items() if k in ("jax_reference", "jax_fp32_output")}
    if bf16_rows:
        best = min(bf16_rows, key=bf16_rows.get)
        out["best_bf16_policy"], out["bf16_vs_fastest_torch_bf16"] = best, tb / bf16_rows[best]
    peak, flops = r["matmul_peak_gflops"], r["analytic_gflop"]
    best_jax = min(v["median_ms"] for k, v in s.items() if k.startswith("jax_"))
    out["step_gflops"] = {k: flops["step"] / (v["median_ms"] / 1e3) for k, v in s.items()}
    if jax32:
        out["float32_step_share_of_xla_float32_peak"] = flops["step"] / (jax32 / 1e3) / peak["xla_float32"]
    out["best_jax_step_share_of_xla_float32_peak"] = flops["step"] / (best_jax / 1e3) / peak["xla_float32"]
    out["matmul_peak_gflops"] = peak
    if "fresh_process" in r:
        out["fresh_process_first_step_s"] = {k: v["imports_s"] + v["setup_s"] + v["first_step_s"]
                                             for k, v in r["fresh_process"].items()}
    return out


def report(r: dict) -> None:
    s = r["step"]
    t32_name, t32 = fastest(s, "torch_float32")
    tb_name, tb = fastest(s, "torch_bf16")
    flops, peak = r["analytic_gflop"], r["matmul_peak_gflops"]
    print("\nLoRA step (forward, residual, backward, AdamW), median of interleaved runs:")
    print(f"| | first call s | median ms | vs {t32_name} | vs {tb_name} | GFLOP/s | share of XLA float32 peak |")
    print("|---|---|---|---|---|---|---|")
    for k, v in s.items():
        gflops = flops["step"] / (v["median_ms"] / 1e3)
        print(f"| {k} | {v['first_s']:.1f} | {v['median_ms']:.0f} | {t32 / v['median_ms']:.2f}x | "
              f"{tb / v['median_ms']:.2f}x | {gflops:.0f} | {gflops / peak['xla_float32']:.1%} |")
    print("\nmatmul peak (GFLOP/s, 2048^3): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
          + f"; analytic step {flops['step']:.1f} GFLOP")
    f = r["forward"]
    print("\nforward only, float32: " + ", ".join(f"{k} {v['median_ms']:.0f} ms" for k, v in f.items()))
    q = r["residual"]
    print(f"residual B4x17x128^2: value JAX {q['jax_value']['median_ms']:.1f} ms vs PyTorch "
          f"{q['torch_value']['median_ms']:.1f} ms ({q['torch_value']['median_ms'] / q['jax_value']['median_ms']:.2f}x); "
          f"value+grad {q['jax_value_grad']['median_ms']:.1f} vs {q['torch_value_grad']['median_ms']:.1f} ms "
          f"({q['torch_value_grad']['median_ms'] / q['jax_value_grad']['median_ms']:.2f}x)")
    if "profile_float32" in r:
        print("\nper-stage profile, float32, ms (backward = fwd_bwd - fwd; the input gradient), and the JAX "
              "stage's GFLOP/s by the analytic count:")
        print("| stage | JAX fwd | JAX bwd | PyTorch fwd | PyTorch bwd | JAX fwd GFLOP/s | JAX bwd GFLOP/s |")
        print("|---|---|---|---|---|---|---|")
        for stage, p in r["profile_float32"].items():
            bwd = p["jax_fwd_bwd"] - p["jax_fwd"]
            rate = flops.get(stage)
            rates = (f"{rate[0] / p['jax_fwd'] * 1e3:.0f} | {rate[1] / bwd * 1e3:.0f}" if rate else "— | —")
            print(f"| {stage} | {p['jax_fwd']:.0f} | {bwd:.0f} | {p['torch_fwd']:.0f} | "
                  f"{p['torch_fwd_bwd'] - p['torch_fwd']:.0f} | {rates} |")
    if "fresh_process" in r:
        print("\nfirst step of a fresh process (s): " + ", ".join(
            f"{k}: imports {v['imports_s']:.1f} + setup {v['setup_s']:.1f} + first step {v['first_step_s']:.1f}"
            for k, v in r["fresh_process"].items()))


if __name__ == "__main__":
    sys.exit(main())
