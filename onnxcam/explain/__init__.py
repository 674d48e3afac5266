"""The explainer graph: the user's model, the gradient tail from the score to the layer and the CAM head, in one."""
