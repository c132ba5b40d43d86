"""freetickets.models: the model registry and the built-in architectures.

``create_model(name, num_classes, input_shape, **options)`` builds a model mapping
``(B, *input_shape)`` to logits ``(B, num_classes)``. Built-in names: ``mlp`` and ``cnn1d``
(MNIST-1D), ``lenet5``, ``vgg16`` and the released FreeTickets variants ``vgg-like``, ``vgg-c``,
``vgg-d``, ``wrn-D-K`` (any D = 6n + 4, K >= 1), ``resnet18``, ``resnet50``. Register your own
factory with ``@register_model("name")``.
"""
from freetickets.models.registry import (
    ModelSpec,
    create_model,
    describe_models,
    list_models,
    model_names_help,
    register_model,
    register_model_pattern,
    resolve_model,
    unregister_model,
)

__all__ = [
    "ModelSpec",
    "create_model",
    "describe_models",
    "list_models",
    "model_names_help",
    "register_model",
    "register_model_pattern",
    "resolve_model",
    "unregister_model",
]
