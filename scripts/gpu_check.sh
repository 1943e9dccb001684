#!/usr/bin/env bash
# The CUDA check: kanmodel on CUDA against the CPU, the layer benchmark on the GPU, and a
# device "cuda" job through the gateway and a Celery worker of the gpu queue.
#
#   bash scripts/gpu_check.sh OUTDIR        (or: make gpu-check OUT=OUTDIR)
#
# On the CUDA machine (Python 3.12 with torch + CUDA, no network) it installs what kanserve
# lacks there from wheels/gpu, made beforehand by `make gpu-wheels` and copied along (the
# folder is git-ignored: a copy of the repository's tracked files lacks it). On a
# machine without CUDA the same script is a dry run: the CUDA steps skip, the wheel folder
# is checked instead of installed, the benchmark's GPU code runs once on the CPU.
#
# Each step has a time limit; all of them together come to 8 minutes, a normal run to
# about half that. OUTDIR receives (at most 8 files):
#   summary.txt        one line per step (pass / fail / skipped), then the measured figures
#   gpu_check.log      everything the steps printed
#   env.txt            GPU, driver, Python, torch and package versions
#   kanmodel_cuda.xml  JUnit of tests/test_cuda.py's kanmodel tests (figures as properties)
#   job_cuda.xml       JUnit of the gpu-queue job test
#   bench_cuda.txt     bench/kan_layer.py --device cuda: JSON lines, then the markdown section
#                      (docs: .venv/bin/python bench/kan_layer.py --render bench_cuda.txt
#                       --command "python3 bench/kan_layer.py --device cuda" --write-docs)
#   bench_cpu_smoke.txt  (dry run only) the benchmark's GPU code run on the CPU
set -uo pipefail

OUTDIR=${1:?usage: bash scripts/gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
# The compiled CPU kernels (setup.py) are not built there: the repository is imported as
# it is, and kanmodel uses its torch path (the only one CUDA has).
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x .venv/bin/python ]] && PYTHON=$ROOT/.venv/bin/python
fi
WHEELS=$ROOT/wheels/gpu
SITE=/tmp/kanserve-gpu-site
LOG=$OUTDIR/gpu_check.log
SUMMARY=$OUTDIR/summary.txt
: >"$LOG"
printf 'step\tstatus\tseconds\tdetail\n' >"$SUMMARY"

# Marks every process this run starts: the job test's gateway and worker run in sessions
# of their own, and one that outlives its step (a step killed at its limit) is stopped.
export GPU_CHECK_RUN_ID="gpu-check-$$-$RANDOM"

log() { echo "$*" | tee -a "$LOG"; }
stop_leftovers() {
    local pid
    for pid in $(grep -lz "^GPU_CHECK_RUN_ID=$GPU_CHECK_RUN_ID\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
        if [[ $pid != "$$" ]] && kill -TERM "$pid" 2>/dev/null; then
            log "stopped process $pid, left running by the step"
        fi
    done
}
trap stop_leftovers EXIT
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"; log "--- $1: $2 ($3 s) $4"; }
status_of() {  # exit code -> pass / timed out / fail
    case $1 in 0) echo pass ;; 124 | 137) echo "fail (timed out)" ;; *) echo "fail (exit $1)" ;; esac
}

# step NAME LIMIT_SECONDS COMMAND...: runs the command under its limit, output to the log.
step() {
    local name=$1 limit=$2 started=$SECONDS rc
    shift 2
    log "=== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    LAST_RC=$rc
    LAST_SECONDS=$((SECONDS - started))
}

# junit_counts FILE -> "P passed, F failed, S skipped (reasons)"
junit_counts() {
    "$PYTHON" - "$1" <<'EOF'
import collections, sys, xml.etree.ElementTree as ET
try:
    cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
except (OSError, ET.ParseError):
    print("no JUnit file"); sys.exit()
counts, reasons = collections.Counter(), collections.Counter()
for case in cases:
    outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
    counts[outcome] += 1
    if outcome == "skipped":
        reasons[case.find("skipped").get("message", "").removeprefix("skipped: ") or "?"] += 1
text = f"{counts['passed']} passed, {counts['failure'] + counts['error']} failed, {counts['skipped']} skipped"
print(text + (f" ({'; '.join(reasons)})" if reasons else ""))
EOF
}

# pytest_step NAME LIMIT JUNIT PYTEST-ARGS...: status from pytest's exit code and the JUnit counts.
pytest_step() {
    local name=$1 limit=$2 junit=$3 detail status
    shift 3
    rm -f "$junit"
    step "$name" "$limit" "$PYTHON" -m pytest -p no:cacheprovider -o junit_family=legacy --junitxml "$junit" "$@"
    stop_leftovers
    detail=$(junit_counts "$junit")
    status=$(status_of "$LAST_RC")
    if [[ $LAST_RC == 0 && $detail == "0 passed, 0 failed, "* ]]; then
        status=skipped
    fi
    record "$name" "$status" "$LAST_SECONDS" "$detail"
}

started_at=$(date -u +%FT%TZ)
log "gpu_check: $started_at in $ROOT, python $PYTHON, results in $OUTDIR"

# 1. What the machine is.
step environment 20 bash -c '
    { if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
      else echo "nvidia-smi: not installed"; fi
      "$0" -c "import sys, torch; print(\"python\", sys.version.split()[0]); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(\"device\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"none (torch sees no CUDA device)\")"
      "$0" -m pip list --format=freeze 2>/dev/null | grep -iE "^(torch|numpy|scipy|sympy|onnx|onnxruntime|safetensors|fastapi|starlette|pydantic|pydantic-core|pydantic-settings|sqlalchemy|alembic|celery|kombu|uvicorn|httpx|pytest|pytest-timeout)=="
    } | tee "$1"' "$PYTHON" "$OUTDIR/env.txt"
record environment "$(status_of $LAST_RC)" "$LAST_SECONDS" "$(grep -m1 '^device' "$OUTDIR/env.txt" 2>/dev/null)"

HAS_CUDA=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>>"$LOG" || echo 0)
NO_CUDA="CUDA not available"

# 2. The packages kanserve needs beyond the machine's own (pyproject's dependencies, torch
#    left out: the machine's CUDA build is used).
REQUIREMENTS=$("$PYTHON" -c '
import tomllib
print("\n".join(r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
                if not r.replace(" ", "").lower().startswith("torch")))')
IMPORTS="import fastapi, sqlalchemy, celery, kombu, alembic, pydantic_settings, uvicorn, httpx, psycopg, redis, \
service.app, service.jobs.queue, workers.tasks"
install_wheels() {
    mapfile -t requirements <<<"$REQUIREMENTS"
    if "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --only-binary=:all: --no-compile -q \
        "${requirements[@]}"; then
        return 0
    fi
    # The interpreter's environment could not take them (read-only, or a preinstalled
    # package pip would have to replace): every wheel whose package is absent goes into
    # a folder of its own on PYTHONPATH instead.
    echo "pip install into the environment failed; installing the absent packages into $SITE"
    "$PYTHON" - "$WHEELS" "$SITE" <<'EOF'
import importlib.metadata, pathlib, re, subprocess, sys
wheels, site = pathlib.Path(sys.argv[1]), sys.argv[2]
def absent(wheel):
    try:
        importlib.metadata.distribution(re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]))
        return False
    except importlib.metadata.PackageNotFoundError:
        return True
chosen = [str(wheel) for wheel in sorted(wheels.glob("*.whl")) if absent(wheel)]
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                "--target", site, *chosen], check=True)
EOF
}
if [[ $HAS_CUDA == 1 ]]; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        export -f install_wheels
        export PYTHON WHEELS SITE REQUIREMENTS
        step install 60 bash -c 'install_wheels'
        install_rc=$LAST_RC
        [[ -d $SITE ]] && export PYTHONPATH="$PYTHONPATH:$SITE"
        "$PYTHON" -m pip check >>"$LOG" 2>&1 || log "(pip check reported conflicts: see above)"
        "$PYTHON" -c "$IMPORTS" >>"$LOG" 2>&1
        import_rc=$?
        if [[ $install_rc == 0 && $import_rc == 0 ]]; then
            record install pass "$LAST_SECONDS" "$(ls "$WHEELS"/*.whl | wc -l) wheels offered; service and worker import"
        else
            record install "fail" "$LAST_SECONDS" "pip exit $install_rc, imports exit $import_rc (see the log)"
        fi
    else
        "$PYTHON" -c "$IMPORTS" >>"$LOG" 2>&1
        if [[ $? == 0 ]]; then
            record install pass 0 "no wheels/gpu, but service and worker import"
        else
            record install fail 0 "no wheels in $WHEELS: run make gpu-wheels where pip works, and carry wheels/gpu"
        fi
    fi
else
    # Dry run: nothing is installed here; the wheel folder must match what the CUDA
    # machine lacks, and this environment must import the service and the worker.
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        step install 60 bash -c '"$0" scripts/gpu_wheels.py --check "$1" && "$0" -c "$2"' "$PYTHON" "$WHEELS" "$IMPORTS"
        record install "$( [[ $LAST_RC == 0 ]] && echo "pass (dry run)" || status_of $LAST_RC)" "$LAST_SECONDS" \
            "$NO_CUDA: $(ls "$WHEELS"/*.whl | wc -l) wheels checked against what that machine lacks, not installed"
    else
        record install skipped 0 "$NO_CUDA; no wheels in $WHEELS (make gpu-wheels)"
    fi
fi

# 3. kanmodel on CUDA against the CPU.
pytest_step kanmodel-cuda 120 "$OUTDIR/kanmodel_cuda.xml" tests/test_cuda.py -k "not gpu_queue" --timeout 100

# 4. The layer benchmark on the GPU.
if [[ $HAS_CUDA == 1 ]]; then
    step bench-cuda 120 bash -c '"$0" bench/kan_layer.py --device cuda \
        --command "python3 bench/kan_layer.py --device cuda" >"$1"' "$PYTHON" "$OUTDIR/bench_cuda.txt"
    record bench-cuda "$(status_of $LAST_RC)" "$LAST_SECONDS" \
        "$(grep -c '^{' "$OUTDIR/bench_cuda.txt" 2>/dev/null) shape/batch results in bench_cuda.txt"
else
    record bench-cuda skipped 0 "$NO_CUDA"
    step bench-cpu-smoke 120 bash -c '"$0" bench/kan_layer.py --device cuda --cpu-smoke \
        --command "bench/kan_layer.py --device cuda --cpu-smoke" >"$1"' "$PYTHON" "$OUTDIR/bench_cpu_smoke.txt"
    record bench-cpu-smoke "$(status_of $LAST_RC)" "$LAST_SECONDS" "the GPU benchmark's code on the CPU, batch 64"
fi

# 5. A device "cuda" job: gateway + gpu-queue worker on SQLite and the SQLAlchemy transport.
pytest_step job-cuda 160 "$OUTDIR/job_cuda.xml" tests/test_cuda.py -k gpu_queue --timeout 140

# The figures the tests recorded, and the benchmark's verdict lines.
{
    echo
    echo "measured (JUnit properties):"
    "$PYTHON" - "$OUTDIR/kanmodel_cuda.xml" "$OUTDIR/job_cuda.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
for path in sys.argv[1:]:
    try:
        cases = list(ET.parse(path).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        continue
    for case in cases:
        properties = [f"{p.get('name')}={p.get('value')[:100]}" for p in case.iter("property")]
        if properties:
            print(f"  {case.get('name')}: {', '.join(properties)}")
EOF
    grep -A8 '^Targets' "$OUTDIR/bench_cuda.txt" 2>/dev/null | sed 's/^/  /'
    echo
    echo "started $started_at, finished $(date -u +%FT%TZ); CUDA available: $HAS_CUDA"
} >>"$SUMMARY"

log "=== summary ($SUMMARY)"
cat "$SUMMARY" | tee -a "$LOG"
grep -qP '\tfail' "$SUMMARY" && exit 1
exit 0
