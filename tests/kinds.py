"""The array libraries (and devices) the backend tests run on besides numpy:
PyTorch CPU tensors and ``array_api_strict`` on its default device and on a
second one numpy cannot read (``device1``), so a hidden conversion to numpy or a
result on the wrong device fails."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
xp = pytest.importorskip("array_api_strict")

CPU = xp.Device("CPU_DEVICE")
KINDS = ["torch", "strict", "strict-device1"]


class Kind:
    """One array library (and device)."""

    def __init__(self, name):
        self.name = name
        self.device = xp.Device("device1") if name == "strict-device1" else CPU

    def like(self):
        """An empty array of this kind (for ``like=``)."""
        if self.name == "torch":
            return torch.empty(0)
        return xp.empty((0,), device=self.device)

    def asarray(self, a):
        if self.name == "torch":
            return torch.from_numpy(np.array(a, copy=True, order="C"))
        return xp.asarray(np.array(a, copy=True), device=self.device)

    def to_numpy(self, a):
        if self.name == "torch":
            return a.detach().cpu().numpy().copy()
        return np.array(np.from_dlpack(a.to_device(CPU)), copy=True)

    def is_kind(self, a) -> bool:
        """``a`` is an array of this library on this device (a tensor without grad)."""
        if self.name == "torch":
            return type(a) is torch.Tensor and a.device.type == "cpu" and not a.requires_grad
        return type(a) is type(xp.asarray(0.0)) and a.device == self.device

    def native(self, dtype):
        """The library's dtype for numpy ``dtype``."""
        return getattr(torch if self.name == "torch" else xp, np.dtype(dtype).name)
