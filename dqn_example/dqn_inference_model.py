"""The DQN policy as plain torch: the network that RLlib trains, loadable without Ray.

Why: a trained driver should run where Ray is not installed (an embedded computer, a notebook).
The RLModule (dqn_rl_module.py) builds its layers from this very class, so the weights it holds
load here key for key and both give the same Q-values. Every checkpoint written by dqn_train.py
holds a POLICY_FILE: {"format", "spec": the architecture as plain data, "state_dict": weights}.
This module imports torch and numpy only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

POLICY_FILE = "policy.pt"
POLICY_FORMAT = "carla-rllib/dqn-policy/1"   # bump when the file layout changes
PIXEL_MAX = 255.0                             # uint8 pixels are scaled to [0, 1] inside the network
PADDINGS = ("same", "valid")
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


class PolicyFileError(ValueError):
    """A policy file or checkpoint that cannot be used; the message says what to give instead."""


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"conv filter {name} must be a positive int or [h, w] (got {value!r})")
    return values


@dataclass(frozen=True)
class ConvFilter:
    """One conv layer, as RLlib's conv_filters entry [out_channels, kernel, stride, padding]."""

    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: str = "same"   # "same": output = ceil(input / stride) (TensorFlow's rule); "valid": no padding

    @classmethod
    def parse(cls, entry: Sequence[Any]) -> ConvFilter:
        """From [out_channels, kernel, stride] or [out_channels, kernel, stride, padding]."""
        if not isinstance(entry, (list, tuple)) or len(entry) not in (3, 4):
            raise ValueError(f"a conv filter is [out_channels, kernel, stride(, 'same'|'valid')] (got {entry!r})")
        out_channels, kernel, stride, *rest = entry
        padding = rest[0] if rest else "same"
        if not isinstance(out_channels, int) or out_channels <= 0:
            raise ValueError(f"conv filter out_channels must be a positive int (got {out_channels!r})")
        if padding not in PADDINGS:
            raise ValueError(f"conv filter padding must be 'same' or 'valid' (got {padding!r})")
        return cls(out_channels, _pair(kernel, "kernel"), _pair(stride, "stride"), padding)

    def as_list(self) -> list[Any]:
        return [self.out_channels, list(self.kernel), list(self.stride), self.padding]


@dataclass(frozen=True)
class QNetworkSpec:
    """Everything needed to rebuild the network: plain data, stored next to the weights."""

    observation_shape: tuple[int, int, int]      # (height, width, channels) of the uint8 frame stack
    num_actions: int
    conv_filters: tuple[ConvFilter, ...]
    hiddens: tuple[int, ...] = (256,)            # dense layers of each head (advantage and value)
    conv_activation: str = "relu"
    head_activation: str = "relu"
    dueling: bool = True                         # Q = V + A - mean(A) instead of one Q head

    def __post_init__(self) -> None:
        for name in ("conv_activation", "head_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(f"{name} must be one of {', '.join(ACTIVATIONS)} (got {getattr(self, name)!r})")
        if len(self.observation_shape) != 3:
            raise ValueError(f"observations must be (height, width, channels) images (got {self.observation_shape})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["observation_shape"] = list(self.observation_shape)
        data["conv_filters"] = [f.as_list() for f in self.conv_filters]
        data["hiddens"] = list(self.hiddens)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QNetworkSpec:
        data = dict(data)
        data["observation_shape"] = tuple(data["observation_shape"])
        data["conv_filters"] = tuple(ConvFilter.parse(entry) for entry in data["conv_filters"])
        data["hiddens"] = tuple(data["hiddens"])
        return cls(**data)


class PixelScale(nn.Module):
    """uint8 (B, H, W, C) images to float (B, C, H, W) in [0, 1]: inside the model, so the replay
    buffer keeps 1-byte pixels and every caller feeds the env's observations as they are."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2).float() / PIXEL_MAX


class SamePad(nn.Module):
    """Zero padding for TensorFlow-style "same" convolutions (output = ceil(input / stride)),
    the rule RLlib's conv_filters follow; torch's padding="same" only exists for stride 1."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(images.shape[2:]), reversed(self.kernel), reversed(self.stride)):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.pad(images, pads)


def conv_encoder(spec: QNetworkSpec) -> tuple[nn.Sequential, int]:
    """The image encoder (pixels in, flat features out) and its number of features."""
    layers: list[nn.Module] = [PixelScale()]
    channels = spec.observation_shape[2]
    for conv in spec.conv_filters:
        if conv.padding == "same":
            layers.append(SamePad(conv.kernel, conv.stride))
        layers += [nn.Conv2d(channels, conv.out_channels, conv.kernel, conv.stride),
                   ACTIVATIONS[spec.conv_activation]()]
        channels = conv.out_channels
    layers.append(nn.Flatten())
    encoder = nn.Sequential(*layers)
    with torch.no_grad():
        features = encoder(torch.zeros((1, *spec.observation_shape), dtype=torch.uint8)).shape[1]
    return encoder, int(features)


def mlp_head(inputs: int, hiddens: Sequence[int], outputs: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hiddens:
        layers += [nn.Linear(inputs, width), ACTIVATIONS[activation]()]
        inputs = width
    layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


def dueling_q(features: torch.Tensor, advantage: nn.Module, value: nn.Module | None) -> torch.Tensor:
    """Q-values from encoder features: the advantage head alone, or V + A - mean(A) (dueling)."""
    advantages = advantage(features)
    if value is None:
        return advantages
    return value(features) + advantages - advantages.mean(dim=-1, keepdim=True)


class BirdviewQNetwork(nn.Module):
    """Q-network over uint8 birdview stacks: conv encoder, then an advantage head (`af`) and, when
    dueling, a value head (`vf`). The attribute names are the RLModule's, so state dicts match."""

    def __init__(self, spec: QNetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder, features = conv_encoder(spec)
        self.af = mlp_head(features, spec.hiddens, spec.num_actions, spec.head_activation)
        self.vf = mlp_head(features, spec.hiddens, 1, spec.head_activation) if spec.dueling else None

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) uint8 observations -> (B, num_actions) Q-values."""
        return dueling_q(self.encoder(observations), self.af, self.vf)


def save_policy(path: Path | str, spec: QNetworkSpec, state_dict: dict[str, torch.Tensor]) -> Path:
    """Writes the architecture and the network's weights (only those: no target network)."""
    network = BirdviewQNetwork(spec)
    network.load_state_dict(state_dict)   # fails here, at save time, if the weights do not fit the spec
    path = Path(path)
    torch.save({"format": POLICY_FORMAT, "spec": spec.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()}}, path)
    return path


def policy_file(checkpoint: Path | str) -> Path:
    """The policy file of a checkpoint folder (or the file itself); a clear error otherwise."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        path = path / POLICY_FILE
    if not path.is_file():
        raise PolicyFileError(f"'{checkpoint}' is not a checkpoint: no {POLICY_FILE} in it; give a checkpoint folder "
                              "written by dqn_train.py (e.g. DIR/NAME/best or DIR/NAME/checkpoint_000010)")
    return path


def load_network(checkpoint: Path | str, device: str = "cpu") -> BirdviewQNetwork:
    """The network of a checkpoint folder or policy file, in eval mode on `device`."""
    path = policy_file(checkpoint)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise PolicyFileError(f"'{path}' is not a policy file written by dqn_train.py ({error})") from None
    if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
        raise PolicyFileError(f"'{path}' is not a {POLICY_FORMAT} policy file; "
                              "give a checkpoint written by dqn_train.py")
    network = BirdviewQNetwork(QNetworkSpec.from_dict(data["spec"]))
    network.load_state_dict(data["state_dict"])
    return network.to(device).eval()


def resolve_device(device: str) -> str:
    """'cpu', 'cuda' or 'cuda:N', checked against what torch sees."""
    if device == "cpu":
        return device
    if not device.startswith("cuda"):
        raise ValueError(f"device '{device}' is not 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device '{device}' asked for, but torch sees no CUDA GPU here "
                         f"(torch {torch.__version__}); use --device cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device '{device}': torch sees only {torch.cuda.device_count()} GPU(s)")
    return device


class GreedyPolicy:
    """argmax-Q actions for single observations, as the env returns them."""

    def __init__(self, network: BirdviewQNetwork, device: str = "cpu") -> None:
        self.network = network.to(device).eval()
        self.device = device
        self.spec = network.spec

    @classmethod
    def load(cls, checkpoint: Path | str, device: str = "cpu") -> GreedyPolicy:
        device = resolve_device(device)
        return cls(load_network(checkpoint, device), device)

    @torch.no_grad()
    def q_values(self, observation: np.ndarray) -> np.ndarray:
        batch = torch.as_tensor(np.ascontiguousarray(observation)[None], device=self.device)
        return self.network(batch)[0].cpu().numpy()

    def __call__(self, observation: np.ndarray) -> int:
        return int(self.q_values(observation).argmax())
