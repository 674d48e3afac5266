#!/usr/bin/env bash
# The environment for the OpenVINO checks (tests/test_ep_check.py, tests/test_portable.py, tools/openvino_compare.py):
# onnxruntime-openvino replaces onnxruntime's files, so it never goes into the main environment. Measured on the
# project's CI machine: 27 s from the package index. Usage: tools/make_openvino_venv.sh [DIR] (default /tmp/ovenv);
# the tests find it at /tmp/ovenv or at $ONNXCAM_OPENVINO_PYTHON.
set -euo pipefail
dir="${1:-/tmp/ovenv}"
python3 -m venv "$dir"
"$dir/bin/python" -m pip install -q --upgrade pip
# onnxcam itself is not installed there: the tests put the checkout on PYTHONPATH. Its own dependencies, then
# the "openvino" extra of pyproject.toml.
# OpenVINO pinned to the versions the checks were measured with (the Conv/ConvTranspose shared-weight workaround and
# the tolerances of tests/test_portable.py are OpenVINO 2026.4 facts).
"$dir/bin/python" -m pip install -q "onnx>=1.16" "numpy>=1.24" "pillow>=10" "onnxruntime-openvino==1.24.1" "openvino==2026.4.1"
"$dir/bin/python" -c "import onnxruntime, openvino; assert 'OpenVINOExecutionProvider' in onnxruntime.get_available_providers()"
echo "OpenVINO environment ready: $dir/bin/python"
