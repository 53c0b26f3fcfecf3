#!/usr/bin/env bash
# Usage: scripts/extra-venv.sh EXTRA   (EXTRA: prefect, airflow or ray)
#
# Makes .venv-EXTRA: the project's .venv with the optional extra's packages installed on top, for
# the extras whose pins cannot share the project's venv (Prefect 3 wants FastAPI < 0.151, Airflow 3
# FastAPI < 0.137; the project's venv has a newer one, and the two extras exclude each other), and for
# Ray Serve (large, and optional: the main venv stays without it). The new
# venv sees everything in .venv (a .pth file adds its site-packages, after its own) and holds only
# what the extra adds or pins differently, so it is quick to make and always runs this worktree's code.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:?usage: scripts/extra-venv.sh prefect|airflow|ray}
base=.venv
venv=.venv-$extra
make --quiet "$base/bin/.installed"
if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    "$base/bin/python" -m venv "$venv"
    base_site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$(realpath "$base_site")')" > "$site/zz_modelcanary_base.pth"
    mapfile -t requirements < <("$base/bin/python" -c "import sys, tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies'][sys.argv[1]]))" "$extra")
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
    touch "$venv/.installed"
fi
