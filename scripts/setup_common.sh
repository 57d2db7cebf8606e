# Sourced by the simulator set-up scripts (setup_libero.sh, setup_metaworld.sh) after they set
# `name`: messages, the venv argument and its checks, and a quiet, failing-loudly pip install.
die() { echo "$name: error: $*" >&2; exit 1; }
say() { echo "$name: $*"; }

[ $# -eq 1 ] || die "usage: scripts/$name.sh VENV_DIR (e.g. .venv)"
venv=$1
py="$venv/bin/python"
[ -x "$py" ] || die "$py not found: create the virtual environment first (python3 -m venv $venv)"
"$py" -m pip --version >/dev/null 2>&1 || die "pip is not available in $venv"

# pip's own output, less the lines that say nothing happened; any pip failure stops the script.
pip_install() {
  local out
  out=$("$py" -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1) \
    || { echo "$out" >&2; die "pip install $* failed"; }
  echo "$out" | grep -vE '^(Requirement already satisfied|  Using cached|WARNING: Location|Looking in)' || true
}
