"""appealnet.nn — layers, containers, losses and initialisers under
PyTorch's names.

    import appealnet as an
    import appealnet.nn as nn
    an.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    loss = nn.CrossEntropyLoss()(model(x), labels)
"""
from . import functional, init, utils
from .module import Module, Parameter
from .containers import Sequential, ModuleList, ModuleDict
from .layers import (Identity, Linear, Conv2d, BatchNorm1d, BatchNorm2d, ReLU, ReLU6, LeakyReLU,
                     SiLU, Hardswish, Hardsigmoid, Sigmoid, Tanh, Softmax, LogSoftmax, Dropout,
                     MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, ChannelShuffle,
                     conv_batch_norm)
from .loss import CrossEntropyLoss, BCEWithLogitsLoss, MSELoss

__all__ = [
    "functional", "init", "utils", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
    "Identity", "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "ReLU", "ReLU6", "LeakyReLU",
    "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "ChannelShuffle",
    "conv_batch_norm", "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss",
]
