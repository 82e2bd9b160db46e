"""The two-head little network of AppealNet (paper Fig. 2, Algorithm 1).

One feature extractor (every layer of a zoo backbone up to its pooled
features z) feeds two heads:

* the approximator head f1: cascaded fully connected layers ending in class
  logits (by default one Linear: the backbone's own classifier);
* the predictor head q(z|x): by default the paper's single Linear(F, 1),
  whose sigmoid is q(1|x), the probability that the edge answer is kept.

    net = TwoHead("mobilenet_v2", num_classes=10)
    logits, q_logit = net(x)            # [N, C], [N];  q = sigmoid(q_logit)

Algorithm 1 starts joint training from a trained single-head model:

    net = TwoHead.from_pretrained(trained_mobilenet)   # backbone + classifier copied
"""
import copy
import numbers

from .. import nn
from .._api import cat
from ..nn import functional as F

PREDICTOR_KINDS = ("linear", "mlp")
PREDICTOR_INPUTS = ("features", "features+logits", "features+softmax")


def _widths(values, what):
    """Hidden-layer widths as a tuple of positive ints (ValueError otherwise)."""
    if isinstance(values, (numbers.Integral, str)) or values is None:
        raise ValueError(f"TwoHead: {what} must be a sequence of positive ints, got {values!r}")
    values = tuple(values)
    for width in values:
        if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
            raise ValueError(f"TwoHead: {what} must be a sequence of positive ints, "
                             f"got {values!r}")
    return tuple(int(width) for width in values)


def _mlp(widths):
    """Linear layers between consecutive widths, ReLU between them (not after the last)."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def _linear_macs(module):
    return sum(layer.in_features * layer.out_features for layer in module.modules()
               if isinstance(layer, nn.Linear))


class ApproximatorHead(nn.Module):
    """Class logits from pooled features: [dropout] -> hidden Linear+ReLU
    layers (``hidden``, may be empty) -> ``linear`` to the classes."""

    def __init__(self, num_features, num_classes, hidden_widths=(), dropout_rate=0.0,
                 linear=None):
        super().__init__()
        self.dropout_rate = float(dropout_rate)
        widths = (num_features,) + tuple(hidden_widths)
        hidden = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            hidden += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.hidden = nn.Sequential(*hidden)
        self.linear = linear if linear is not None else nn.Linear(widths[-1], num_classes)

    def forward(self, features):
        if self.dropout_rate > 0.0 and self.training:
            features = F.dropout(features, self.dropout_rate, True)
        return self.linear(self.hidden(features))

    def macs(self):
        return _linear_macs(self)


class PredictorHead(nn.Module):
    """q-logit [N] from pooled features, optionally joined by the
    approximator's logits or softmax (see TwoHead for why)."""

    def __init__(self, num_features, num_classes, kind="linear", hidden_widths=(64,),
                 input_kind="features"):
        super().__init__()
        self.input_kind = input_kind
        in_features = num_features + (0 if input_kind == "features" else num_classes)
        middle = tuple(hidden_widths) if kind == "mlp" else ()
        self.layers = _mlp((in_features,) + middle + (1,))

    def forward(self, features, logits):
        if self.input_kind == "features+logits":
            features = cat([features, logits], dim=1)
        elif self.input_kind == "features+softmax":
            features = cat([features, F.softmax(logits, 1)], dim=1)
        return self.layers(features).reshape(-1)

    def macs(self):
        return _linear_macs(self)


class TwoHead(nn.Module):
    """A zoo backbone's feature extractor shared by an approximator head
    (class logits) and a predictor head (q-logit); ``forward`` returns both.

    Arguments:
        backbone_or_name: a zoo model (its classifier becomes the
            approximator's last layer; the model is taken over, not copied),
            a model name for ``appealnet.models.create``, or an ``arch`` dict.
        num_classes: classes of a backbone built by name (default 10); for a
            given model it must match the model's classifier or be None.
        approximator_hidden: widths of Linear+ReLU layers before the class
            layer (paper: "several cascaded fully-connected layers"); empty
            means the backbone's own classifier, as in pytorch-cifar.
        predictor: "linear" (the paper's single Linear(F, 1)) or "mlp"
            (Linear+ReLU layers of ``predictor_hidden`` widths, then Linear to 1).
        predictor_input: "features" (the paper), or "features+logits" /
            "features+softmax", which join the approximator's output to the
            features.  Why offer that: a linear function of the features
            cannot express confidence measures such as the maximum softmax
            probability (a max of a softmax of another linear map is far from
            linear in z), so a linear q over features alone must learn
            "difficulty" from scratch; giving it the logits lets even a
            single Linear weigh the approximator's own margin.  The join is
            not detached: q's loss also trains the approximator through it.
        **backbone_kw: further options for a backbone built by name
            (width_mult, net_size, shortcut, ...).
    """

    def __init__(self, backbone_or_name, num_classes=None, approximator_hidden=(),
                 predictor="linear", predictor_hidden=(64,), predictor_input="features",
                 **backbone_kw):
        super().__init__()
        backbone = self._resolve_backbone(backbone_or_name, num_classes, backbone_kw)
        if predictor not in PREDICTOR_KINDS:
            raise ValueError(f"TwoHead: predictor must be one of {PREDICTOR_KINDS}, "
                             f"got {predictor!r}")
        if predictor_input not in PREDICTOR_INPUTS:
            raise ValueError(f"TwoHead: predictor_input must be one of {PREDICTOR_INPUTS}, "
                             f"got {predictor_input!r}")
        approximator_hidden = _widths(approximator_hidden, "approximator_hidden")
        predictor_hidden = _widths(predictor_hidden, "predictor_hidden")
        if predictor == "mlp" and not predictor_hidden:
            raise ValueError("TwoHead: predictor='mlp' needs at least one predictor_hidden "
                             "width (use predictor='linear' for a single layer)")

        classifier = backbone.linear
        self.num_features = int(backbone.num_features)
        self.num_classes = int(classifier.out_features)
        # The classifier moves into the approximator head; the backbone keeps
        # an Identity so its parameters are the feature extractor's only.
        backbone.linear = nn.Identity()
        self.backbone = backbone
        self.approximator = ApproximatorHead(
            self.num_features, self.num_classes, approximator_hidden,
            getattr(backbone, "dropout_rate", 0.0),
            linear=None if approximator_hidden else classifier)
        self.predictor = PredictorHead(self.num_features, self.num_classes, predictor,
                                       predictor_hidden, predictor_input)
        self.arch = {"name": "twohead", "kwargs": {
            "backbone": copy.deepcopy(getattr(backbone, "arch", None)),
            "approximator_hidden": list(approximator_hidden),
            "predictor": predictor,
            "predictor_hidden": list(predictor_hidden),
            "predictor_input": predictor_input}}

    @staticmethod
    def _resolve_backbone(backbone_or_name, num_classes, backbone_kw):
        from . import create, from_arch   # the registry imports this module

        if isinstance(backbone_or_name, str):
            return create(backbone_or_name, 10 if num_classes is None else num_classes,
                          **backbone_kw)
        if isinstance(backbone_or_name, dict):
            backbone = from_arch(backbone_or_name)
        elif isinstance(backbone_or_name, nn.Module):
            backbone = backbone_or_name
        else:
            raise TypeError(f"TwoHead: expected a model, a model name or an arch dict, got "
                            f"{type(backbone_or_name).__name__}")
        if backbone_kw:
            raise ValueError(f"TwoHead: backbone options {sorted(backbone_kw)} only apply when "
                             f"the backbone is built by name")
        for needed in ("forward_features", "num_features", "linear"):
            if not hasattr(backbone, needed):
                raise TypeError(f"TwoHead: the backbone {type(backbone).__name__} has no "
                                f"{needed!r}; use a model from appealnet.models")
        if not isinstance(backbone.linear, nn.Linear):
            raise TypeError("TwoHead: the backbone's classifier (.linear) is not a Linear "
                            "(is it already part of a TwoHead?)")
        if num_classes is not None and num_classes != backbone.linear.out_features:
            raise ValueError(f"TwoHead: num_classes={num_classes} does not match the "
                             f"backbone's classifier ({backbone.linear.out_features} classes)")
        return backbone

    @classmethod
    def from_pretrained(cls, model, **head_options):
        """A TwoHead whose backbone and classifier are copies of a trained
        single-head ``model`` (Algorithm 1, lines 1-2) and whose predictor is
        freshly initialised; ``model`` itself is left untouched."""
        if head_options.get("approximator_hidden"):
            raise ValueError("TwoHead.from_pretrained keeps the model's classifier as the "
                             "approximator head; approximator_hidden must be empty")
        return cls(copy.deepcopy(model), **head_options)

    # ----------------------------------------------------------- forward
    def forward_features(self, x):
        """The shared pooled features z [N, num_features]."""
        return self.backbone.forward_features(x)

    def forward(self, x):
        """(class logits [N, num_classes], predictor logit [N])."""
        features = self.backbone.forward_features(x)
        logits = self.approximator(features)
        return logits, self.predictor(features, logits)

    def q(self, x):
        """q(1|x) = sigmoid(predictor logit) [N]: keep the edge answer when high."""
        return F.sigmoid(self.forward(x)[1])

    @property
    def min_input_size(self):
        return self.backbone.min_input_size

    # -------------------------------------------------- parameter groups
    def backbone_parameters(self):
        """The shared feature extractor's parameters."""
        return list(self.backbone.parameters())

    def approximator_parameters(self):
        """The approximator head's parameters (classifier and hidden layers)."""
        return list(self.approximator.parameters())

    def predictor_parameters(self):
        """The predictor head's parameters."""
        return list(self.predictor.parameters())

    def predictor_macs(self):
        """Multiply-accumulates of the predictor head per input (its Linear layers)."""
        return self.predictor.macs()
