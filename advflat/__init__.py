"""advflat: adversarial training and robust flatness (Stutz, Hein, Schiele, ICCV 2021)."""

from advflat.training.checkpoint import load_model

__all__ = ["load_model"]
