"""Speed of the kanmodel KAN against a full-basis reference, PyKAN, an MLP and the floor.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/kan_layer.py --write-docs

Implementations, each timed forward (no_grad) and forward+backward (sum of outputs):
- kanmodel: the KAN layers of kanmodel (k + 1 local basis values, custom autograd op,
  compiled CPU kernels when built);
- torch path: the same layers with the compiled kernels switched off (what CUDA and an
  install without a C++ compiler run);
- full-basis: a reference that builds the whole (batch, in, G + k) Cox-de Boor table
  and does one matmul (the efficient-KAN approach), written here;
- pykan: PyKAN 0.2.8 after model.speed(), in the benchmark venv .bench-venv
  (bench/pykan_worker.py, driven over a pipe so its timings interleave with ours);
- mlp: an MLP of (about) the same parameter count;
- floor: the dense (batch, in (G + k)) x (in (G + k), out) matmul plus the base matmul
  per layer on precomputed inputs, i.e. what no B-spline KAN avoids.
Timings: median over rounds of per-call means of ~30 ms blocks; the implementations are
interleaved in rotating order inside each round, with 2 threads and then 1 thread.
Peak memory: tensors allocated during one forward+backward (torch profiler records).
hellokan against PyKAN (time to test RMSE 1e-3) is bench/hellokan.py.
`--device cuda` compares on a GPU instead (bench/kan_layer_cuda.py; scripts/gpu_check.sh runs it):
    python3 bench/kan_layer.py --device cuda > bench_cuda.txt
    .venv/bin/python bench/kan_layer.py --render bench_cuda.txt --command "..." --write-docs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docs_section import add_docs_arguments, run_command, write_section  # noqa: E402
from timing import forward_backward_call, forward_call, peak_memory, time_block  # noqa: E402

import kanmodel  # noqa: E402
from kanmodel import spline_op  # noqa: E402
from kanmodel.grid import uniform_knots  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_PYTHON = os.path.join(ROOT, ".bench-venv", "bin", "python")
K = 3
SHAPES = [([2, 5, 1], 1000, 5), ([6, 8, 4, 1], 4096, 10), ([14, 64, 32, 2], 512, 5), ([784, 64, 10], 256, 5)]
MODES = ("forward", "forward_backward")


def cox_de_boor(x: torch.Tensor, knots: torch.Tensor, k: int) -> torch.Tensor:
    """Full basis table (batch, in, G + k) by the Cox-de Boor recursion."""
    x = x.unsqueeze(-1)
    basis = ((x >= knots[:, :-1]) & (x < knots[:, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        left = (x - knots[:, : -(p + 1)]) / (knots[:, p:-1] - knots[:, : -(p + 1)]) * basis[..., :-1]
        right = (knots[:, p + 1:] - x) / (knots[:, p + 1:] - knots[:, 1:-p]) * basis[..., 1:]
        basis = left + right
    return basis


class FullBasisLayer(nn.Module):
    """Reference layer: full Cox-de Boor table, then one matmul (efficient-KAN style)."""

    def __init__(self, layer: kanmodel.KANLayer):
        super().__init__()
        self.register_buffer("knots", layer.knots.clone())
        self.k = layer.k
        with torch.no_grad():
            folded = layer.coef * layer.spline_weight.unsqueeze(-1)
            self.weight = nn.Parameter(folded.reshape(layer.out_features, -1).clone())  # (out, in (G + k))
            self.base_weight = nn.Parameter(layer.base_weight.clone())
            self.bias = nn.Parameter(layer.bias.clone())

    def forward(self, x):
        # No clamp: inside the grid (as benchmarked) the table is already right.
        basis = cox_de_boor(x, self.knots, self.k).reshape(len(x), -1)
        return F.linear(F.silu(x), self.base_weight, self.bias) + F.linear(basis, self.weight)


class TorchPath(nn.Module):
    """kanmodel's layers with spline_op.use_kernels off for the call (the backward follows
    the path its forward took)."""

    def __init__(self, layers: nn.Module):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        saved, spline_op.use_kernels = spline_op.use_kernels, False
        try:
            return self.layers(x)
        finally:
            spline_op.use_kernels = saved


class Floor(nn.Module):
    """Per layer: dense basis (batch, in (G + k)) @ W + base(x) @ W_b on fixed inputs.
    Inputs of layers after the first require grad, as a real layer's input would."""

    def __init__(self, width, batch, grid, device=None):
        super().__init__()
        self.inputs, self.weights = [], nn.ParameterList()
        for index, (n_in, n_out) in enumerate(zip(width[:-1], width[1:])):
            needs_grad = index > 0
            dense = torch.rand(batch, n_in * (grid + K), device=device).requires_grad_(needs_grad)
            base = torch.rand(batch, n_in, device=device).requires_grad_(needs_grad)
            self.inputs.append((dense, base))
            self.weights.append(nn.Parameter(torch.randn(n_out, n_in * (grid + K), device=device)))
            self.weights.append(nn.Parameter(torch.randn(n_out, n_in, device=device)))

    def forward(self, x):
        total = 0
        for index, (dense, base) in enumerate(self.inputs):
            out = F.linear(dense, self.weights[2 * index]) + F.linear(base, self.weights[2 * index + 1])
            total = total + out.sum()
        for dense, base in self.inputs:
            dense.grad = base.grad = None
        return total


def kan_parameter_count(width, grid):
    return sum(i * o * (grid + K + 2) + o for i, o in zip(width[:-1], width[1:]))


def mlp_with_parameters(width, target):
    """MLP (SiLU) with the KAN's depth and hidden widths scaled to ~target parameters."""
    def build(scale):
        sizes = [width[0]] + [max(1, round(w * scale)) for w in width[1:-1]] + [width[-1]]
        layers = []
        for index, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(i, o))
            if index < len(sizes) - 2:
                layers.append(nn.SiLU())
        return nn.Sequential(*layers), sizes
    scale = 1.0
    while sum(p.numel() for p in build(scale)[0].parameters()) < target:
        scale *= 1.02
    return build(scale)


class PyKANWorker:
    """bench/pykan_worker.py in the benchmark venv; None-safe if it is unavailable."""

    def __init__(self):
        self.process = None
        self.error = None
        if not os.path.exists(BENCH_PYTHON):
            self.error = f"{BENCH_PYTHON} missing (run `make bench-venv`)"
            return
        self.process = subprocess.Popen(
            [BENCH_PYTHON, os.path.join(ROOT, "bench", "pykan_worker.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def ask(self, **command):
        if self.process is None:
            return {"error": self.error}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.error = "pykan worker exited"
            self.process = None
            return {"error": self.error}
        return json.loads(line)

    def close(self):
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def build_local(width, batch, grid):
    torch.manual_seed(0)
    model = kanmodel.KAN(width, grid=grid, k=K, seed=0)
    x = torch.rand(batch, width[0]) * 1.8 - 0.9
    with torch.no_grad():
        z = x
        for layer in model.layers:
            layer.coef.normal_()            # trained-looking coefficients, not init noise
            # A uniform grid around this layer's inputs: every input inside, as in training.
            low, high = float(z.min()) - 0.01, float(z.max()) + 0.01
            layer.set_knots(uniform_knots(layer.in_features, grid, K, low, high), uniform=True)
            z = layer(z)
    ours = nn.Sequential(*model.layers)
    reference = nn.Sequential(*[FullBasisLayer(layer) for layer in model.layers])
    torch.testing.assert_close(ours(x), reference(x), atol=1e-4, rtol=1e-4)
    mlp, mlp_sizes = mlp_with_parameters(width, kan_parameter_count(width, grid))
    implementations = {"kanmodel": ours, "torch path": TorchPath(ours), "full-basis": reference, "mlp": mlp,
                       "floor": Floor(width, batch, grid)}
    return implementations, x, mlp_sizes


def bench_shape(width, batch, grid, rounds, threads_list, pykan):
    implementations, x, mlp_sizes = build_local(width, batch, grid)
    setup = pykan.ask(cmd="setup", width=width, grid=grid, k=K, batch=batch, seed=0)
    names = list(implementations) + (["pykan"] if "error" not in setup else [])
    results = {"width": width, "batch": batch, "grid": grid, "mlp_sizes": mlp_sizes,
               "pykan_error": setup.get("error"), "times": {}, "memory": {}}
    for threads in threads_list:
        torch.set_num_threads(threads)
        samples = {(name, mode): [] for name in names for mode in MODES}
        for round_index in range(rounds):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for mode in MODES:
                for name in order:
                    if name == "pykan":
                        reply = pykan.ask(cmd="time", mode=mode, threads=threads)
                        if "error" in reply:
                            results["pykan_error"] = reply["error"]
                            continue
                        samples[(name, mode)].append(reply["seconds"])
                    else:
                        make = forward_call if mode == "forward" else forward_backward_call
                        samples[(name, mode)].append(time_block(make(implementations[name], x)))
        results["times"][threads] = {f"{name}/{mode}": statistics.median(values)
                                     for (name, mode), values in samples.items() if values}
    torch.set_num_threads(threads_list[-1])
    for name in names:
        if name == "pykan":
            reply = pykan.ask(cmd="memory", mode="forward_backward")
            if "bytes" in reply:
                results["memory"][name] = reply["bytes"]
        else:
            results["memory"][name] = peak_memory(forward_backward_call(implementations[name], x))
    return results


CUDA_HEADING = "KAN layer on CUDA"
# The columns after kanmodel's in the tables, in order.
COMPARED = ("torch path", "full-basis", "floor", "mlp", "pykan")


LAYER_NOTES = """How kanmodel's layer gets there (kanmodel/spline_op.py): one autograd function per
layer evaluates only the k + 1 non-zero B-spline values per input and does one matmul per
product; nothing of the basis evaluation is kept in an autograd graph. On CPU it runs the
compiled kernels of kanmodel/csrc/spline_kernels.cpp (built at install time): one pass
writes an extended basis (batch, in (G + k + 1)), every (row, input) block holding its
k + 1 non-zero values, zeros and base(x) in the last column, so spline and base term are
one addmm with the extended weight; the basis is evaluated 64 (row, input) elements at a
time (interval by the floor of the knot coordinate on uniform knots, a binary search
otherwise; the Cox-de Boor triangle for any k <= 15, unrolled for k = 3) so that each step
vectorises, and rows are split across threads only in blocks of 32768 entries (a parallel
region costs 0.1-0.5 ms on this shared machine when the other core is busy). Backward:
one matmul grad_out^T @ extended basis for every weight gradient (split by one pass), and
for the input the basis derivatives recomputed from x against grad_out @ weight (for
layers of at most 8 outputs only the k + 2 columns each input needs are formed).
The torch path column is the same layers with the kernels switched off, which is what
CUDA and an install without a C++ compiler run: k + 1 values per input scattered into a
zeroed dense basis (one scatter per plane for large layers, a closed-form cubic), one
matmul each for the spline and the base term, and in backward the k + 1 entries of
grad_out @ weight read back per input. What the kernels remove is that path's fixed
per-op cost (about 30 small torch ops per layer) and its several passes over the dense
basis; the matmuls, which are all the floor does, remain.
Timings on this shared 2-core machine move by 20-50% between runs (other jobs run
alongside); the ratios within one interleaved run are the comparable numbers."""


def format_layer_section(all_results, rounds, threads_list, command):
    lines = [f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
             f"(shared), torch {torch.__version__}, k = {K}, OMP_WAIT_POLICY="
             f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; median of {rounds} interleaved rounds.",
             "Ratios are time / kanmodel time (higher = slower than kanmodel).", ""]
    for threads in threads_list:
        lines += [f"### {threads} thread(s)", "",
                  "| shape (batch, grid) | mode | kanmodel | " + " | ".join(COMPARED) + " |",
                  "|---|---|---|" + "---|" * len(COMPARED)]
        for result in all_results:
            times = result["times"][threads]
            label = f"{result['width']} ({result['batch']}, {result['grid']})"
            for mode in MODES:
                ours = times[f"kanmodel/{mode}"]
                cells = [f"{ours * 1e3:.3f} ms"]
                for name in COMPARED:
                    value = times.get(f"{name}/{mode}")
                    cells.append("n/a" if value is None else f"{value * 1e3:.3f} ms ({value / ours:.2f}x)")
                lines.append(f"| {label} | {mode.replace('_', '+')} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Peak memory of one forward+backward (tensors allocated during the call)", "",
              "| shape | kanmodel | " + " | ".join(COMPARED) + " | MLP widths |",
              "|---|---|" + "---|" * len(COMPARED) + "---|"]
    for result in all_results:
        memory = result["memory"]
        cells = [f"{memory[name] / 2 ** 20:.2f} MiB" if name in memory else "n/a"
                 for name in ("kanmodel", *COMPARED)]
        lines.append(f"| {result['width']} | " + " | ".join(cells) + f" | {result['mlp_sizes']} |")
    lines += ["", "Targets (forward+backward):"]
    for threads in threads_list:
        for result in all_results:
            times = result["times"][threads]
            ours = times["kanmodel/forward_backward"]
            toy = result["width"] == SHAPES[0][0]
            speedup = times["full-basis/forward_backward"] / ours
            goal = 3.0 if toy else 4.0
            verdict = [f"{speedup:.2f}x faster than full-basis (target >= {goal:.0f}x: "
                       f"{'met' if speedup >= goal else 'missed'})"]
            if not toy:
                over_floor = ours / times["floor/forward_backward"]
                verdict.append(f"{over_floor:.2f}x the floor (target <= 2x: "
                               f"{'met' if over_floor <= 2 else 'missed'})")
            lines.append(f"- {threads} thread(s), {result['width']}: " + "; ".join(verdict))
    memory_ok = all(r["memory"]["kanmodel"] <= r["memory"]["full-basis"] for r in all_results)
    lines.append(f"- peak memory <= full-basis on every shape: {'met' if memory_ok else 'missed'}")
    errors = {r["pykan_error"] for r in all_results if r["pykan_error"]}
    if errors:
        lines += ["", "PyKAN failures: " + "; ".join(sorted(errors))]
    lines += ["", LAYER_NOTES]
    return "\n".join(lines) + "\n"


def render_log(path, rounds, command):
    """The layer section (CPU run) or the CUDA section (--device cuda run) from the JSON
    lines of an earlier run's stdout."""
    results = [json.loads(line) for line in open(path) if line.startswith("{")]
    if results and "device" in results[0]:           # written by measure_on_device
        import kan_layer_cuda

        return {CUDA_HEADING: kan_layer_cuda.format_section(results, command)}
    for record in results:
        record["times"] = {int(t): v for t, v in record["times"].items()}
    threads = list(results[0]["times"])
    return {"KAN layer": format_layer_section(results, rounds, threads, command)}


def measure_on_device(args, command):
    """--device cuda (or --cpu-smoke: the same code on the CPU at a small batch)."""
    import kan_layer_cuda

    if args.cpu_smoke:
        device, batches, rounds = torch.device("cpu"), [args.batches[0] if args.batches else 64], 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        device, batches, rounds = torch.device("cuda"), args.batches or list(kan_layer_cuda.BATCHES), args.rounds
    shapes = [SHAPES[index] for index in args.shapes]
    results = kan_layer_cuda.run(shapes, batches, rounds, device,
                                 emit=lambda result: print(json.dumps(result), flush=True))
    return {CUDA_HEADING: kan_layer_cuda.format_section(results, command)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--shapes", type=int, nargs="+", default=list(range(len(SHAPES))),
                        help="indices into SHAPES")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: the GPU comparison of bench/kan_layer_cuda.py instead")
    parser.add_argument("--batches", type=int, nargs="+", help="with --device cuda: batch sizes "
                        "(default 4096 65536)")
    parser.add_argument("--cpu-smoke", action="store_true", help="run the --device cuda code on the CPU "
                        "at one small batch, one round (checks it without a GPU; not a measurement)")
    add_docs_arguments(parser, "tables")
    args = parser.parse_args()
    command = run_command(args)
    if args.render:
        sections = render_log(args.render, args.rounds, command)
    elif args.device == "cuda" or args.cpu_smoke:
        sections = measure_on_device(args, command)
    else:
        pykan = PyKANWorker()
        try:
            results = []
            for index in args.shapes:
                width, batch, grid = SHAPES[index]
                result = bench_shape(width, batch, grid, args.rounds, args.threads, pykan)
                results.append(result)
                print(json.dumps(result), flush=True)
        finally:
            pykan.close()
        sections = {"KAN layer": format_layer_section(results, args.rounds, args.threads, command)}
    for heading, body in sections.items():
        print(f"## {heading}\n\n{body}")
    if args.write_docs:
        for heading, body in sections.items():
            write_section(f"## {heading}\n\n{body}")


if __name__ == "__main__":
    main()
