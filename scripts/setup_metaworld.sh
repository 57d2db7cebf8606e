#!/usr/bin/env bash
# Install the Meta-World benchmark into a virtual environment, from PyPI, pinned.
#
#   scripts/setup_metaworld.sh .venv
#
# Idempotent: a second run only re-checks. Why it is not a plain `pip install metaworld`: metaworld
# 3.1.1 pins mujoco==3.3.0 exactly, while LIBERO's set-up (scripts/setup_libero.sh) pins 3.8.1.
# Meta-World runs its experts and renders under 3.8.1 (its tests here pass against the raw env), so
# it goes in with --no-deps and its real run-time dependencies are listed below. Rendering is
# headless with the GL back-end LIBERO uses (MUJOCO_GL, default egl; see cfgrl.envs.base).
set -euo pipefail

name=setup_metaworld
. "$(dirname "$0")/setup_common.sh"
"$py" -c "import cfgrl" 2>/dev/null || die "cfgrl is not importable in $venv: install cfgrl first"

no_deps=(metaworld==3.1.1)
# What Meta-World imports at run time (the same pins as scripts/setup_libero.sh where both need one).
runtime=(mujoco==3.8.1 gymnasium==1.4.0 scipy==1.17.1 imageio==2.38.1)

start=$SECONDS
say "installing Meta-World (no declared deps): ${no_deps[*]}"
pip_install --no-deps "${no_deps[@]}"
say "installing run-time dependencies: ${runtime[*]}"
pip_install "${runtime[@]}"

say "checking the install: a real Meta-World env resets, renders both cameras and steps (~10-30 s)"
"$py" -c "from cfgrl.envs.metaworld import check_install; print(check_install('reach-v3'))" \
  || die "the Meta-World check failed; see the error above"
say "done in $((SECONDS - start)) s"
