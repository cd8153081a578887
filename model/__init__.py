"""The KFusion of Dual-Domain model, one module per block of the paper (Sec. 3).

global_domain.py (Eq. 3-6), content_domain.py (Eq. 7), kfusion.py (Eq. 8-12), kan.py
(Eq. 2, the KAN of Eq. 12), build.py (the whole model from the config), loss.py.
"""
from kfusion.model.build import build_model
from kfusion.model.loss import landmark_loss

__all__ = ["build_model", "landmark_loss"]
