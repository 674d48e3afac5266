"""VJP rules, one module per family of ops. Importing this package fills the registry."""

from onnxcam.autodiff.rules import (  # noqa: F401  (imported for their registrations)
    activations,
    conv,
    elementwise,
    matmul,
    normalization,
    output,
    pooling,
    quantization,
    reductions,
    shape_ops,
)
