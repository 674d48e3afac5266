"""Every CAM method, one row each: the one place a method is added.

A row names the method and its paper and says how it gets its per-channel
contributions (see :class:`~onnxcam.methods.spec.MethodSpec`): an ONNX
formula for gradient methods, a host hook for SVD and perturbation methods.
The CLI's ``--method`` choices, the server's list and ``/info``, the
README's and the docs' method tables are all generated from this table
(``python -m tools.method_tables``). Adding a method is a row here plus a parity test
(``tests/test_methods_parity.py`` names the reference of every row).
"""

from __future__ import annotations

from onnxcam.errors import OnnxcamError
import onnxcam.methods.gradient_methods as formulas
from onnxcam.methods.eigen import first_component
from onnxcam.methods.perturbation import ablation_cam, score_cam
from onnxcam.methods.spec import Kind, MethodSpec

_ROWS = (
    MethodSpec(
        "gradcam",
        "Grad-CAM",
        "Selvaraju et al., ICCV 2017",
        "spatial mean of the gradient",
        "gradient",
        "`mean_ij(g_k) * A_k`",
        formula=formulas.gradcam,
    ),
    MethodSpec(
        "gradcam++",
        "Grad-CAM++",
        "Chattopadhyay et al., WACV 2018",
        "positive gradients, second-order weights",
        "gradient",
        "`sum_ij(relu(g_k) * a_k) * A_k`, `a_k = g^2 / (2 g^2 + sum_ij(A_k) g^3 + 1e-6)` (0 where `g = 0`)",
        formula=formulas.gradcam_plus_plus,
    ),
    MethodSpec(
        "xgradcam",
        "XGrad-CAM",
        "Fu et al., BMVC 2020",
        "gradient times activation, normalised",
        "gradient",
        "`sum_ij(g_k * A_k) / (sum_ij(A_k) + 1e-7) * A_k`",
        formula=formulas.xgradcam,
    ),
    MethodSpec(
        "hirescam",
        "HiResCAM",
        "Draelos & Carin, 2020",
        "gradient times activation, per position",
        "gradient",
        "`g_k * A_k` (element-wise, no averaging)",
        formula=formulas.hirescam,
        per_channel=False,
    ),
    MethodSpec(
        "gradcam-elementwise",
        "Element-wise Grad-CAM",
        "pytorch-grad-cam's GradCAMElementWise",
        "`relu(gradient * activation)`",
        "gradient",
        "`relu(g_k * A_k)`",
        formula=formulas.gradcam_elementwise,
        per_channel=False,
    ),
    MethodSpec(
        "layercam",
        "LayerCAM",
        "Jiang et al., IEEE TIP 2021",
        "positive gradient, per position",
        "gradient",
        "`relu(g_k) * A_k`",
        formula=formulas.layercam,
        per_channel=False,
    ),
    MethodSpec(
        "counterfactual",
        "Counterfactual Grad-CAM",
        "Selvaraju et al., ICCV 2017, sec. 3",
        "negative gradient: what would raise the score if removed",
        "gradient",
        "`mean_ij(-g_k) * A_k`: regions whose removal would raise the score",
        formula=formulas.counterfactual,
    ),
    MethodSpec(
        "eigencam",
        "Eigen-CAM",
        "Muhammad & Yeasin, IJCNN 2020",
        "first principal component of the activations",
        "host",
        "first principal component of the centred `(h*w, C)` activations (an SVD per image)",
        host=lambda run: run.activations,
        reduce=first_component,
    ),
    MethodSpec(
        "eigengradcam",
        "Eigen-Grad-CAM",
        "pytorch-grad-cam's EigenGradCAM",
        "the same on gradient times activation",
        "host",
        "the same on `g * A`",
        host=lambda run: run.activations * run.gradients,
        reduce=first_component,
    ),
    MethodSpec(
        "guided-backprop",
        "Guided backprop",
        "Springenberg et al., 2015",
        "Grad-CAM plus the guided input gradient",
        "guided",
        "Grad-CAM, plus `res.guided`: the input gradient with every ReLU passing only positive gradients "
        "at positive inputs (a rule override in the same engine)",
    ),
    MethodSpec(
        "guided-gradcam",
        "Guided Grad-CAM",
        "Selvaraju et al., section 3",
        "guided backprop times Grad-CAM",
        "guided",
        "Grad-CAM, plus `res.guided_gradcam = res.guided * cam` (high-resolution and class-discriminative)",
    ),
    MethodSpec(
        "gradient-rollout",
        "Gradient-weighted attention rollout",
        "Chefer et al., ICCV 2021",
        "vision transformers: attention maps times their gradients, rolled out over the blocks",
        "attention",
        "not per channel: `R = I`, then for each block `R += mean_heads(relu(dS/dP * P)) R` over its attention "
        "probabilities `P` (the Softmax outputs); the map is the class token's row of `R` over the patch tokens (the "
        "mean row without prefix tokens)",
    ),
    MethodSpec(
        "scorecam",
        "Score-CAM",
        "Wang et al., CVPRW 2020",
        "the score of the input masked by each channel",
        "perturbation",
        "`w_k * A_k`, `w = softmax_k(S(x * s(Up(A_k))))`: the score of the input masked by each "
        "channel, upsampled (bilinear, corners aligned) and min-max scaled (`+1e-8`); one forward pass per channel "
        "and image",
        host=score_cam,
    ),
    MethodSpec(
        "ablationcam",
        "Ablation-CAM",
        "Desai & Ramaswamy, WACV 2020",
        "the score drop when each channel is removed",
        "perturbation",
        "`w_k * A_k`, `w_k = (S - S_k) / S`, `S_k` the score with channel `k` of the layer set to 0 "
        "(after a ReLU, where the layer's minimum is 0) or to the image's minimum minus 1e7; one pass of the "
        "layer-to-score tail per channel and image",
        host=ablation_cam,
    ),
)

#: Every method by ``method=`` name, in the order the docs list them.
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _ROWS}


def method_spec(name: str) -> MethodSpec:
    """The row of ``name``, or an error listing the methods there are."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise OnnxcamError(f"unknown method {name!r}; available: {', '.join(METHODS)}") from None


def method_names(*kinds: Kind, served: bool = False) -> tuple[str, ...]:
    """The names of the methods of ``kinds`` (all kinds if none), only the ones ``onnxcam serve`` offers if asked."""
    return tuple(s.name for s in METHODS.values() if (not kinds or s.kind in kinds) and (s.served or not served))
