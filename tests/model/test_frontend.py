"""Log-mel frontend (acceptance 7) and SpecAugment (acceptance 6)."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from emonet_dist.config import FrontendConfig
from emonet_dist.model.frontend import POLICIES, LogMelFrontend, SpecAugment, time_mask_intervals, valid_frames


def test_frontend_matches_torchaudio_melspectrogram_and_has_no_trainable_weights(make_waves):
    cfg = FrontendConfig()
    frontend = LogMelFrontend(cfg).eval()
    waves, lengths, _ = make_waves([8000, 5000])
    x, n = frontend(waves, lengths)

    ref = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)(waves)
    ref = torch.log(ref.clamp_min(cfg.log_floor))
    assert x.shape == (2, 1, 64, 1 + 8000 // 256) and x.dtype == torch.float32
    for i in range(2):
        # exact: the frontend runs this very torchaudio transform on the same batch
        torch.testing.assert_close(x[i, 0, :, : n[i]], ref[i, :, : n[i]], rtol=0, atol=0)
        assert (x[i, 0, :, n[i]:] == 0).all()  # padded frames hold the conv padding value
    assert list(frontend.parameters()) == []
    assert all(not b.requires_grad for b in frontend.buffers())


def test_valid_frames_are_exactly_those_unaffected_by_what_follows(make_waves):
    frontend = LogMelFrontend(FrontendConfig()).eval()
    for length in [600, 4096, 4097, 4351, 4352, 7000]:
        zeros, lengths, _ = make_waves([length, 9000], seed=1)
        noise, _, _ = make_waves([length, 9000], seed=1, pad_value=0.7)
        (xz, n), (xn, _) = frontend(zeros, lengths), frontend(noise, lengths)
        assert n[0] == (length - 256) // 256 + 1
        torch.testing.assert_close(xz, xn, rtol=0, atol=0)  # exact: same kernels, padding masked, not added
        # One frame more would read past the utterance, so it must differ with the padding content.
        full_z = torch.log(frontend.melspec(zeros).clamp_min(1e-6))
        full_n = torch.log(frontend.melspec(noise).clamp_min(1e-6))
        assert not torch.equal(full_z[0, :, n[0]], full_n[0, :, n[0]])


def test_valid_frames_clamp_to_at_least_one_frame():
    assert valid_frames(torch.tensor([0, 100, 256, 511, 512]), 512, 256, 10).tolist() == [1, 1, 1, 1, 2]


@pytest.mark.parametrize("policy", ["conservative", "aggressive"])
def test_time_mask_intervals_respect_w_p_and_the_utterance_length(policy):
    pol = POLICIES[policy]
    n = torch.tensor([10, 40, 120, 300, 1000]).repeat(400)
    starts, ends = time_mask_intervals(n, pol.time_param, pol.p, pol.time_masks,
                                       generator=torch.Generator().manual_seed(0))
    assert starts.shape == ends.shape == (n.numel(), 2)
    cap = torch.minimum(torch.tensor(pol.time_param), (n * pol.p).floor().long())
    width = ends - starts
    assert (starts >= 0).all() and (width >= 0).all()
    assert (ends <= n[:, None]).all()
    assert (width <= cap[:, None]).all() and (width < cap[:, None].clamp(min=1)).all()
    # The cap is p * (own frame count) for short utterances and W for long ones, and widths come near it.
    for frames in [120, 1000]:
        rows = n == frames
        assert width[rows].max() == cap[rows][0] - 1


def test_specaugment_masks_counts_and_widths_in_training():
    torch.manual_seed(0)
    aug = SpecAugment("aggressive").train()
    pol = POLICIES["aggressive"]
    n = torch.tensor([200, 90, 150])
    for _ in range(30):
        x = torch.ones(3, 1, 64, 200)
        out = aug(x, n)
        for i in range(3):
            valid = out[i, 0, :, : n[i]]
            zero_rows = (valid == 0).all(dim=1)
            zero_cols = (valid == 0).all(dim=0)
            assert _runs(zero_rows) <= pol.freq_masks and int(zero_rows.sum()) <= pol.freq_masks * pol.freq_param
            cap = min(pol.time_param, int(pol.p * n[i]))
            assert _runs(zero_cols) <= pol.time_masks and int(zero_cols.sum()) <= pol.time_masks * cap
            # Time masks never reach padded frames: a padded column is zero only in frequency-masked rows.
            if n[i] < 200:
                assert ((out[i, 0, :, n[i]:] == 0) == zero_rows[:, None]).all()


def test_specaugment_is_identity_in_eval_mode_and_for_policy_none():
    x = torch.randn(2, 1, 64, 50)
    n = torch.tensor([50, 30])
    assert torch.equal(SpecAugment("aggressive").eval()(x, n), x)
    assert torch.equal(SpecAugment("none").train()(x, n), x)
    frontend = LogMelFrontend(FrontendConfig(), "aggressive").eval()
    waves = torch.randn(2, 8000) * 0.1
    lengths = torch.tensor([8000, 6000])
    # exact: in eval mode SpecAugment is the identity, so both run the same operations
    plain = LogMelFrontend(FrontendConfig())(waves, lengths)[0]
    torch.testing.assert_close(frontend(waves, lengths)[0], plain, rtol=0, atol=0)


def _runs(flags: torch.Tensor) -> int:
    """Number of maximal runs of True in a 1-D bool tensor."""
    f = flags.int()
    return int(f[0]) + int(((f[1:] - f[:-1]) == 1).sum())


def test_utterance_normalisation_gives_each_band_mean_0_and_variance_1_over_the_valid_frames_only(make_waves):
    raw, norm = LogMelFrontend(FrontendConfig()).eval(), LogMelFrontend(FrontendConfig(normalize="utterance")).eval()
    zeros, lengths, _ = make_waves([4000, 9000], seed=2)
    noise, _, _ = make_waves([4000, 9000], seed=2, pad_value=0.7)
    (x, n), (xn, _) = norm(zeros, lengths), norm(noise, lengths)
    torch.testing.assert_close(x, xn, rtol=0, atol=0)  # padding invariance stays exact: padding is not in the stats
    r = raw(zeros, lengths)[0]
    for i in range(2):
        valid = x[i, 0, :, : n[i]].double()
        ref = r[i, 0, :, : n[i]].double()  # the same log-mels, normalised here in float64
        ref = (ref - ref.mean(-1, keepdim=True)) / torch.sqrt(ref.var(-1, unbiased=False, keepdim=True) + 1e-5)
        # float32 sums of at most 35 frames of order-1 values: 1e-5 leaves a decade above their rounding
        torch.testing.assert_close(valid, ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(valid.mean(-1), torch.zeros(64, dtype=torch.float64), rtol=0, atol=1e-5)
        # var / (var + eps), eps = 1e-5, for band variances above 0.01 (these log-mels of noise): within 1e-3 of 1
        assert (r[i, 0, :, : n[i]].var(-1, unbiased=False) > 0.01).all()
        torch.testing.assert_close(valid.var(-1, unbiased=False), torch.ones(64, dtype=torch.float64),
                                   rtol=0, atol=1e-3)
        assert (x[i, 0, :, n[i]:] == 0).all()


def test_utterance_normalisation_removes_a_change_of_gain(make_waves):
    """A gain g adds log(g^2) to every log-mel value, which the per-band mean takes away (bands well above the
    log floor, as in this noise)."""
    raw, norm = LogMelFrontend(FrontendConfig()).eval(), LogMelFrontend(FrontendConfig(normalize="utterance")).eval()
    waves, lengths, _ = make_waves([6000, 6000], seed=3)
    loud = waves * 4.0
    assert not torch.allclose(raw(waves, lengths)[0], raw(loud, lengths)[0])
    # same float32 STFT on scaled input: rounding of order 1e-6 relative, amplified by 1/std of order 1
    torch.testing.assert_close(norm(waves, lengths)[0], norm(loud, lengths)[0], rtol=0, atol=1e-4)


def test_utterance_normalisation_is_off_by_default_as_in_the_paper():
    assert FrontendConfig().normalize == "none"
