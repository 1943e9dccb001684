"""The GPU half of bench/kan_layer.py (`--device cuda`).

The four shapes of kan_layer.SHAPES (their widths and grids) at GPU batch sizes, each
implementation timed forward (no_grad) and forward+backward (sum of outputs):
- kanmodel: kanmodel's layers on CUDA, i.e. its torch path (the compiled kernels are CPU-only);
- full-basis: kan_layer.FullBasisLayer (whole Cox-de Boor table, one matmul; efficient-KAN style);
- mlp: an MLP of (about) the same parameter count;
- floor: kan_layer.Floor, the dense basis matmul plus the base matmul on precomputed inputs.
Timings: CUDA events around blocks of calls (about 20 ms each, after one warm-up call),
the implementations interleaved in rotating order, median over rounds. float32 with
TF32 matmuls left at torch's default (off): every implementation does IEEE float32.
Peak memory: torch.cuda.max_memory_allocated during one forward+backward, less what was
allocated before it (model, inputs).

`--cpu-smoke` runs this same code on the CPU at a small batch (perf_counter timing, the
profiler's memory), so a machine without CUDA can check it before a GPU run.
"""
from __future__ import annotations

import platform
import statistics

import torch
from torch import nn

import kanmodel
from kan_layer import K, MODES, SHAPES, Floor, FullBasisLayer, kan_parameter_count, mlp_with_parameters
from kanmodel.grid import uniform_knots
from timing import forward_backward_call, forward_call, peak_memory, time_block

BATCHES = (4096, 65536)
COMPARED = ("full-basis", "floor", "mlp")
# Rows of the input used to check that kanmodel and full-basis compute the same function.
CHECK_ROWS = 4096
# What the issue asks of the GPU path, at the largest batch on the three larger shapes.
SPEEDUP_TARGET = 2.0


def build(width, batch, grid, device):
    """{name: module} on device and the input x (batch, width[0]); as kan_layer.build_local:
    trained-looking coefficients, each layer's uniform grid around its inputs."""
    torch.manual_seed(0)
    model = kanmodel.KAN(width, grid=grid, k=K, seed=0).to(device)
    x = torch.rand(batch, width[0], device=device) * 1.8 - 0.9
    with torch.no_grad():
        z = x
        for layer in model.layers:
            layer.coef.normal_()
            low, high = float(z.min()) - 0.01, float(z.max()) + 0.01
            layer.set_knots(uniform_knots(layer.in_features, grid, K, low, high, device=device), uniform=True)
            z = layer(z)
    ours = nn.Sequential(*model.layers)
    reference = nn.Sequential(*[FullBasisLayer(layer) for layer in model.layers])
    with torch.no_grad():
        torch.testing.assert_close(ours(x[:CHECK_ROWS]), reference(x[:CHECK_ROWS]), atol=1e-4, rtol=1e-4)
    mlp, mlp_sizes = mlp_with_parameters(width, kan_parameter_count(width, grid))
    implementations = {"kanmodel": ours, "full-basis": reference, "mlp": mlp.to(device),
                       "floor": Floor(width, batch, grid, device=device)}
    return implementations, x, mlp_sizes


def cuda_time(fn, seconds: float = 0.02, max_calls: int = 100) -> float:
    """Seconds per call of fn by CUDA events, over a block of calls lasting about `seconds`."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    first = start.elapsed_time(end) / 1e3
    calls = max(1, min(max_calls, int(seconds / max(first, 1e-6))))
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / calls


def cuda_peak(model: nn.Module, fn) -> int:
    """Bytes allocated at the peak of one call of fn above what was allocated before it."""
    fn()                                    # warm: cuBLAS workspaces, cached index tensors
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def bench_shape(width, batch, grid, rounds, device) -> dict:
    on_cuda = device.type == "cuda"
    result = {"device": device.type, "width": width, "batch": batch, "grid": grid, "times": {}, "memory": {},
              "errors": {}}
    try:
        implementations, x, result["mlp_sizes"] = build(width, batch, grid, device)
    except torch.cuda.OutOfMemoryError as error:
        result["errors"]["build"] = f"out of memory: {str(error).splitlines()[0]}"
        return result
    timer = cuda_time if on_cuda else time_block
    names = list(implementations)
    samples = {(name, mode): [] for name in names for mode in MODES}
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for mode in MODES:
            for name in order:
                if name in result["errors"]:
                    continue
                make = forward_call if mode == "forward" else forward_backward_call
                try:
                    samples[(name, mode)].append(timer(make(implementations[name], x)))
                except torch.cuda.OutOfMemoryError as error:
                    result["errors"][name] = f"out of memory: {str(error).splitlines()[0]}"
                    torch.cuda.empty_cache()
    result["times"] = {f"{name}/{mode}": statistics.median(values)
                       for (name, mode), values in samples.items() if values}
    for name, module in implementations.items():
        if name in result["errors"]:
            continue
        call = forward_backward_call(module, x)
        try:
            result["memory"][name] = cuda_peak(module, call) if on_cuda else peak_memory(call)
        except torch.cuda.OutOfMemoryError as error:
            result["errors"][name] = f"out of memory: {str(error).splitlines()[0]}"
            torch.cuda.empty_cache()
    del implementations, x
    if on_cuda:
        torch.cuda.empty_cache()
    return result


def run(shapes, batches, rounds, device, emit) -> list[dict]:
    """Every shape (width, CPU batch, grid) of shapes at every batch; emit(result) as each finishes."""
    results = []
    machine = machine_line(rounds)
    for width, _, grid in shapes:
        for batch in batches:
            result = {**bench_shape(width, batch, grid, rounds, device), "machine": machine}
            results.append(result)
            emit(result)
    return results


def machine_line(rounds: int) -> str:
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        where = (f"{properties.name} ({properties.total_memory / 2 ** 30:.0f} GiB, {properties.multi_processor_count} "
                 f"SMs), CUDA {torch.version.cuda}")
    else:
        where = f"CPU {platform.machine()} (smoke run: not a GPU measurement)"
    return (f"Machine: {where}, torch {torch.__version__}, k = {K}, float32, TF32 matmuls "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}; median of {rounds} interleaved rounds, "
            f"{'CUDA events' if torch.cuda.is_available() else 'perf_counter'}.")


def format_section(results, command: str) -> str:
    lines = [f"Command: `{command}`", "", results[0]["machine"],
             "Ratios are time / kanmodel time (higher = slower than kanmodel).", "",
             "| shape (grid) | batch | mode | kanmodel | " + " | ".join(COMPARED) + " |",
             "|---|---|---|---|" + "---|" * len(COMPARED)]
    for result in results:
        times = result["times"]
        label = f"{result['width']} ({result['grid']})"
        for mode in MODES:
            ours = times.get(f"kanmodel/{mode}")
            cells = ["n/a" if ours is None else f"{ours * 1e3:.3f} ms"]
            for name in COMPARED:
                value = times.get(f"{name}/{mode}")
                if value is None:
                    cells.append("n/a")
                elif ours is None:
                    cells.append(f"{value * 1e3:.3f} ms")
                else:
                    cells.append(f"{value * 1e3:.3f} ms ({value / ours:.2f}x)")
            lines.append(f"| {label} | {result['batch']} | {mode.replace('_', '+')} | " + " | ".join(cells) + " |")
    lines += ["", "Peak memory of one forward+backward (above what was allocated before the call):", "",
              "| shape | batch | kanmodel | " + " | ".join(COMPARED) + " | MLP widths |",
              "|---|---|---|" + "---|" * len(COMPARED) + "---|"]
    for result in results:
        memory = result["memory"]
        cells = [f"{memory[name] / 2 ** 20:.1f} MiB" if name in memory else "n/a" for name in ("kanmodel", *COMPARED)]
        lines.append(f"| {result['width']} | {result['batch']} | " + " | ".join(cells)
                     + f" | {result.get('mlp_sizes', 'n/a')} |")
    lines += ["", *verdicts(results)]
    errors = [f"{result['width']} batch {result['batch']} {name}: {text}"
              for result in results for name, text in result["errors"].items()]
    if errors:
        lines += ["", "Failures: " + "; ".join(errors)]
    return "\n".join(lines) + "\n"


def verdicts(results) -> list[str]:
    """The issue's targets, at the largest batch on the three larger shapes."""
    largest = max(result["batch"] for result in results)
    lines = [f"Targets (forward+backward, batch {largest}, shapes after the first):"]
    for result in results:
        if result["batch"] != largest or result["width"] == SHAPES[0][0]:
            continue
        times, memory = result["times"], result["memory"]
        ours, full = times.get("kanmodel/forward_backward"), times.get("full-basis/forward_backward")
        if ours is None or full is None:
            lines.append(f"- {result['width']}: not measured")
            continue
        speedup = full / ours
        memory_ok = "kanmodel" in memory and "full-basis" in memory and memory["kanmodel"] <= memory["full-basis"]
        lines.append(f"- {result['width']}: {speedup:.2f}x faster than full-basis (target >= {SPEEDUP_TARGET:.0f}x: "
                     f"{'met' if speedup >= SPEEDUP_TARGET else 'missed'}); peak memory <= full-basis: "
                     f"{'met' if memory_ok else 'missed'}")
    return lines
