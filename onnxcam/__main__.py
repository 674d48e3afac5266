"""``python -m onnxcam`` is the ``onnxcam`` command."""

import sys

from onnxcam.cli.main import main

sys.exit(main())
