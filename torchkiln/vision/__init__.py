"""Image classification components: datasets, transforms and models.

Besides its own configs, the pack answers any `torchvision.transforms.v2` transform by
class name (the generic adapter) and any torchvision classification model
(`torchvision/<name>`, in vision/models.py).
"""

from torchkiln.common.generic import install_generic
from torchkiln.data.formats import register_format, register_predictor
from torchkiln.registry import kinds
from torchkiln.vision import datasets, models, transforms

__all__ = ["datasets", "models", "transforms"]

register_format("image_index", "torchkiln.vision.loading:read_image_index")
install_generic(kinds.transforms, "transform")
register_predictor("image", "torchkiln.vision.predict:predict_images")
