"""appealnet.optim — optimizers and learning-rate schedules under
torch.optim's names (update loops in C).

    opt = appealnet.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad(); loss.backward(); opt.step()
"""
from . import lr_scheduler
from .optimizer import Optimizer, SGD, Adam, AdamW

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
