"""Guided backpropagation (Springenberg et al., 2015) and Guided Grad-CAM (Selvaraju et al., section 3).

Guided backprop is the same reverse pass with one rule swapped: at every ReLU
only positive gradients at positive inputs pass. It is a rule override handed
to the one engine, not a second engine. Guided Grad-CAM multiplies that
input-resolution map by the upsampled class-discriminative CAM.
"""

from __future__ import annotations

from onnxcam.autodiff.registry import VJPContext


def vjp_guided_relu(ctx: VJPContext) -> list[str | None]:
    """dx = g where y > 0 and g > 0, else 0 (the guided-backprop ReLU of pytorch-grad-cam)."""
    b, y, g = ctx.b, ctx.outputs[0], ctx.grad_out
    zero = ctx.zero(y)
    keep = b.op("And", b.op("Greater", y, zero), b.op("Greater", g, zero), hint="guided_mask")
    return [b.op("Where", keep, g, zero, hint="guided_relu")]


GUIDED_RULES = {"Relu": vjp_guided_relu}
