import numpy as np
import torch

from engine.backends.torch_backend import TorchBackend
from models.action_model import ModelConfig, build_model
from models.backbone import BackboneConfig, FrameBackbone, previous_frames


def test_previous_frames_shift_in_time_and_restart_after_padding():
    frames = torch.arange(5.0).view(1, 5)
    assert previous_frames(frames).tolist() == [[0, 0, 1, 2, 3]]
    valid = torch.tensor([[False, False, True, True, True]])
    assert previous_frames(frames, valid).tolist() == [[0, 1, 2, 2, 3]]


def test_motion_input_sees_change_and_no_previous_means_no_motion():
    torch.manual_seed(0)
    net = FrameBackbone(BackboneConfig(image_size=16, channels=(4, 8))).eval()
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(a), net(a, a))
        assert not torch.allclose(net(a, b), net(a, a))


def test_streaming_backend_matches_offline_encoding_of_a_sequence():
    model = build_model(ModelConfig(backbone=BackboneConfig(image_size=16, channels=(4, 8))))
    backend = TorchBackend(model)
    frames = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    previous = np.concatenate([frames[:1], frames[:-1]])  # what the detector hands over
    streamed = backend.encode_frames(frames, previous)
    clips = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 255
    with torch.no_grad():
        prev = previous_frames(clips)[0]
        offline = model.eval().backbone(clips[0], prev)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-5)
