import math

import pytest
import torch

from faceclip.training.heads import AlignmentHeads
from faceclip.training.losses import (
    alignment_loss,
    retrieval_accuracy,
    same_identity_mask,
    sigmoid_loss,
    softmax_loss,
)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sigmoid_loss_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    s, beta = torch.tensor(math.log(2.0)), torch.tensor(-1.0)
    # logits = 2 * a @ b.T - 1 = [[0.2, -1], [0.6, 1]]; diagonal positives, off-diagonal negatives.
    expected = -(_log_sigmoid(0.2) + _log_sigmoid(1.0) + _log_sigmoid(1.0) + _log_sigmoid(-0.6)) / 2
    assert sigmoid_loss(a, b, s, beta).item() == pytest.approx(expected, abs=1e-6)


def test_sigmoid_loss_matches_double_loop_and_masks_pairs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    s, beta = torch.tensor(1.3), torch.tensor(-2.0)
    ignore = torch.zeros(5, 5, dtype=torch.bool)
    ignore[0, 3] = ignore[3, 0] = True
    total, total_masked = 0.0, 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            term = -_log_sigmoid(z * (math.exp(1.3) * float(a[i] @ b[j]) - 2.0))
            total += term
            total_masked += 0.0 if (i, j) in {(0, 3), (3, 0)} else term
    assert sigmoid_loss(a, b, s, beta).item() == pytest.approx(total / 5, rel=1e-5)
    assert sigmoid_loss(a, b, s, beta, ignore).item() == pytest.approx(total_masked / 5, rel=1e-5)


def test_softmax_loss_matches_hand_computation_and_masking():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    s = torch.tensor(0.0)
    logits = [[1, 0, 0], [0, 1, 1], [1, 0, 0]]

    def ce(rows, k):
        return -(rows[k][k] - math.log(sum(math.exp(v) for v in rows[k])))

    cols = [list(r) for r in zip(*logits)]
    expected = (sum(ce(logits, k) for k in range(3)) + sum(ce(cols, k) for k in range(3))) / 6
    assert softmax_loss(a, b, s).item() == pytest.approx(expected, abs=1e-6)
    ignore = same_identity_mask(torch.tensor([0, 1, 0]))
    masked = [[1, 0, -math.inf], [0, 1, 1], [-math.inf, 0, 0]]
    masked_cols = [list(r) for r in zip(*masked)]
    expected = (sum(ce(masked, k) for k in range(3)) + sum(ce(masked_cols, k) for k in range(3))) / 6
    assert softmax_loss(a, b, s, ignore).item() == pytest.approx(expected, abs=1e-6)


def test_same_identity_mask():
    mask = same_identity_mask(torch.tensor([3, 1, 3, -1, -1]))
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True  # unknown (-1) labels never match each other
    assert torch.equal(mask, expected)
    assert same_identity_mask(None) is None


def test_alignment_loss_weights_terms_and_masks_face_term_only():
    g = torch.Generator().manual_seed(1)
    face_pred, face_t = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    text_pred, text_t, image_t = (torch.randn(4, 6, generator=g) for _ in range(3))
    s = torch.tensor(2.0, requires_grad=True)
    beta = torch.tensor(-5.0, requires_grad=True)
    ident = torch.tensor([0, 0, 1, 2])
    out = alignment_loss(
        face_pred, text_pred, face_t, text_t, image_t, s, beta, weights=(0.5, 2.0, 3.0), identity=ident
    )
    n = torch.nn.functional.normalize
    face = sigmoid_loss(n(face_pred, dim=-1), n(face_t, dim=-1), s, beta, same_identity_mask(ident))
    text = sigmoid_loss(n(text_pred, dim=-1), n(text_t, dim=-1), s, beta)
    image = sigmoid_loss(n(text_pred, dim=-1), n(image_t, dim=-1), s, beta)
    assert out.face.item() == pytest.approx(face.item(), rel=1e-6)
    assert out.total.item() == pytest.approx((0.5 * face + 2 * text + 3 * image).item(), rel=1e-6)
    unmasked = alignment_loss(face_pred, text_pred, face_t, text_t, image_t, s, beta, identity=None)
    assert unmasked.face.item() != pytest.approx(out.face.item())
    assert unmasked.text.item() == pytest.approx(text.item(), rel=1e-6)  # text term never masked
    out.total.backward()
    assert s.grad is not None and beta.grad is not None and s.grad != 0 and beta.grad != 0
    no_image = alignment_loss(face_pred, text_pred, face_t, text_t, None, s, beta)
    assert no_image.image is None


def test_bad_loss_kind_names_the_setting():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"loss\.kind"):
        alignment_loss(x, x, x, x, None, torch.tensor(0.0), torch.tensor(0.0), kind="hinge")


def test_retrieval_accuracy():
    keys = torch.eye(4)
    query = torch.eye(4)[[0, 1, 3, 2]]
    assert retrieval_accuracy(query, keys) == 0.5
    assert retrieval_accuracy(query, keys, identity=torch.tensor([0, 1, 2, 2])) == 1.0


def test_heads_shapes_normalisation_and_save_load(tmp_path):
    torch.manual_seed(0)
    heads = AlignmentHeads(width=16, text_dim=12, seq_len=77, face_dim=8)
    out = heads(torch.randn(3, 77, 16))
    assert out.face.shape == (3, 8) and out.text.shape == (3, 12)
    assert torch.allclose(out.face.norm(dim=-1), torch.ones(3), atol=1e-5)
    heads.save_pretrained(tmp_path)
    again = AlignmentHeads.from_pretrained(tmp_path)
    assert torch.equal(again.text.weight, heads.text.weight)
