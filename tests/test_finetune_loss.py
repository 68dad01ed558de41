"""Both loss terms: hand-computed values and non-zero gradients; the literal eq. 12 has none."""
import math

import pytest
import torch

from conftest import plain_loss
from lpbert_core.finetune.finetune_loss import (add_self_column, batch_loss, distance_terms, focal_terms,
                                       infonce_loss, masked_loss, pair_loss)


def test_focal_affine_hand_computed():
    cfg = plain_loss(probability="affine", alpha=0.8, gamma=2.0)
    cos = torch.tensor([0.6, 0.2])
    y = torch.tensor([1.0, 0.0])
    got = focal_terms(cos, y, cfg)
    p_pos, p_neg = 0.8, 0.6
    exp_pos = -0.8 * (1 - p_pos) ** 2 * math.log(p_pos)
    exp_neg = -0.2 * p_neg ** 2 * math.log(1 - p_neg)
    assert got.tolist() == pytest.approx([exp_pos, exp_neg], rel=1e-5)


def test_focal_sigmoid_hand_computed():
    cfg = plain_loss(probability="sigmoid", temperature=0.1, shift=0.0, alpha=0.8, gamma=2.0)
    cos = torch.tensor([0.3, 0.1])
    y = torch.tensor([1.0, 0.0])
    got = focal_terms(cos, y, cfg)
    p1 = 1 / (1 + math.exp(-3.0))
    p0 = 1 / (1 + math.exp(-1.0))
    assert got.tolist() == pytest.approx([-0.8 * (1 - p1) ** 2 * math.log(p1), -0.2 * p0 ** 2 * math.log(1 - p0)],
                                         rel=1e-5)


def test_focal_raw_authors_clip_only_in_log():
    cfg = plain_loss(probability="raw", alpha=0.8, gamma=2.0)
    cos = torch.tensor([-0.5, 0.5])
    y = torch.tensor([1.0, 0.0])
    got = focal_terms(cos, y, cfg)
    # positive with cos=-0.5: factor (1 - (-0.5))^2 = 2.25 unclipped, log(clip(-0.5)) = log(1e-4)
    assert got[0].item() == pytest.approx(-0.8 * 2.25 * math.log(1e-4), rel=1e-5)
    assert got[1].item() == pytest.approx(-0.2 * 0.25 * math.log(0.5), rel=1e-5)


def test_distance_per_pair_hand_computed():
    cfg = plain_loss(distance="per_pair")
    d = torch.tensor([0.0, 2.0])
    y = torch.tensor([1.0, 0.0])
    got = distance_terms(d, y, cfg)
    assert got.tolist() == pytest.approx([0.5, 1 - 1 / (1 + math.exp(-2.0))], rel=1e-6)


def test_batch_loss_values_and_gradients():
    torch.manual_seed(0)
    q = torch.randn(4, 8, requires_grad=True)
    c = torch.randn(4, 8, requires_grad=True)
    y = torch.eye(4)
    cfg = plain_loss(probability="affine", distance="per_pair")
    out = batch_loss(q, c, y, cfg)
    # recompute by hand
    cos = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(c, dim=-1).T
    dist = torch.cdist(q, c)
    p = (1 + cos) / 2
    focal = torch.where(y > 0, -0.8 * (1 - p) ** 2 * torch.log(p), -0.2 * p ** 2 * torch.log(1 - p)).mean()
    distance = torch.where(y > 0, torch.sigmoid(dist), 1 - torch.sigmoid(dist)).mean()
    assert out["focal"].item() == pytest.approx(focal.item(), rel=1e-5)
    assert out["distance"].item() == pytest.approx(distance.item(), rel=1e-4)
    # each term alone produces a gradient
    for term in ("focal", "distance"):
        q.grad = c.grad = None
        batch_loss(q, c, y, cfg)[term].backward()
        assert q.grad.abs().sum() > 0 and c.grad.abs().sum() > 0, term


def test_literal_eq12_has_no_gradient():
    torch.manual_seed(0)
    q = torch.randn(64, 16, requires_grad=True)
    c = torch.randn(64, 16, requires_grad=True)
    cfg = plain_loss(distance="batch_sum")
    out = batch_loss(q, c, torch.eye(64), cfg)
    out["distance"].backward()
    assert q.grad.abs().sum() == 0  # sigmoid of a sum of 4096 distances saturates: a constant, not a loss


def test_learnable_scale_gets_gradient():
    scale = torch.nn.Parameter(torch.tensor(20.0))
    bias = torch.nn.Parameter(torch.tensor(0.0))
    cos = torch.tensor([[0.5, 0.1], [0.2, 0.4]])
    out = pair_loss(cos, torch.ones(2, 2), torch.eye(2), plain_loss(probability="learnable"), scale, bias)
    out["loss"].backward()
    assert scale.grad != 0 and bias.grad != 0


def test_infonce_removes_other_positives():
    cos = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.7, 0.3], [0.1, 0.1, 0.5]])
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    got = infonce_loss(cos, y, plain_loss(loss="infonce", infonce_temperature=1.0))
    r0 = -math.log(math.exp(0.9) / (math.exp(0.9) + math.exp(0.1)))
    r1 = -math.log(math.exp(0.7) / (math.exp(0.2) + math.exp(0.7) + math.exp(0.3)))
    r2 = -math.log(math.exp(0.5) / (math.exp(0.1) + math.exp(0.1) + math.exp(0.5)))
    assert got.item() == pytest.approx((r0 + r1 + r2) / 3, rel=1e-5)


# ------------------------------------------------------------------ self-negatives (SimKGC; not in the paper)

# Two queries, their two tails and their two anchors, as 2-d vectors with hand-readable cosines. Row 1's anchor is a
# known answer of its query (e.g. (h, r, h) in train): its extra column must not count as a negative.
Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
C = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
A = torch.tensor([[0.6, 0.8], [0.0, 2.0]])  # cos(q0, a0) = 0.6, cos(q1, a1) = 1.0
SELF_MASK = [True, False]


def test_self_column_scores_labels_and_mask():
    from lpbert_core.model.siamese import cosine_matrix, distance_matrix

    cos, dist, labels, valid = add_self_column(cosine_matrix(Q, C), distance_matrix(Q, C), torch.eye(2), Q, A,
                                               SELF_MASK)
    # column 2 is new: query i against its own anchor's candidate vector, labelled 0
    assert torch.allclose(cos, torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 1.0]]), atol=1e-6)
    assert dist[:, 2].tolist() == pytest.approx([math.hypot(0.4, 0.8), 1.0], abs=1e-4)
    assert labels.tolist() == [[1, 0, 0], [0, 1, 0]]
    assert valid.tolist() == [[True, True, True], [True, True, False]]  # row 1's anchor: a known answer


def test_self_negative_paper_loss_is_one_more_negative_pair():
    cfg = plain_loss(probability="affine", distance="per_pair", alpha=0.8, gamma=2.0)
    out = batch_loss(Q, C, torch.eye(2), cfg, anchors=A, self_mask=SELF_MASK)
    # by hand: the 4 in-batch pairs + (q0, a0) as a negative; (q1, a1) is not scored
    cos = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.6])
    dist = torch.tensor([0.0, math.sqrt(2), math.sqrt(2), 0.0, math.hypot(0.4, 0.8)])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    p = (1 + cos) / 2
    focal = torch.where(y > 0, -0.8 * (1 - p) ** 2 * torch.log(p.clamp(max=1 - 1e-6)),
                        -0.2 * p ** 2 * torch.log(1 - p)).mean()
    distance = torch.where(y > 0, torch.sigmoid(dist), 1 - torch.sigmoid(dist)).mean()
    assert out["focal"].item() == pytest.approx(focal.item(), rel=1e-4)
    assert out["distance"].item() == pytest.approx(distance.item(), rel=1e-4)
    # the known-answer anchor changes nothing, wherever it points
    moved = batch_loss(Q, C, torch.eye(2), cfg, anchors=torch.tensor([[0.6, 0.8], [1.0, 0.0]]), self_mask=SELF_MASK)
    assert moved["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    # all off: the plain n x n loss
    plain = batch_loss(Q, C, torch.eye(2), cfg)
    off = batch_loss(Q, C, torch.eye(2), cfg, anchors=A, self_mask=[False, False])
    assert off["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-6)


def test_self_negative_infonce_is_one_more_logit():
    cfg = plain_loss(loss="infonce", infonce_temperature=1.0)
    out = batch_loss(Q, C, torch.eye(2), cfg, anchors=A, self_mask=SELF_MASK)
    e = math.exp
    r0 = -math.log(e(1.0) / (e(1.0) + e(0.0) + e(0.6)))  # row 0: positive, other tail, own anchor
    r1 = -math.log(e(1.0) / (e(0.0) + e(1.0)))  # row 1: the anchor (a known answer) is not in the denominator
    assert out["loss"].item() == pytest.approx((r0 + r1) / 2, rel=1e-5)


def test_masked_loss_sampled_layout_positive_in_column_0():
    # sampled mode: rows x [positive, sampled negative, own anchor]; a known sampled negative leaves the denominator
    cfg = plain_loss(loss="infonce", infonce_temperature=1.0)
    cos = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.7, 0.2]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    got = masked_loss(cos, None, labels, valid, torch.zeros(2, dtype=torch.long), cfg)["loss"].item()
    e = math.exp
    r0 = -math.log(e(0.9) / (e(0.9) + e(0.1) + e(0.5)))
    assert got == pytest.approx((r0 + 0.0) / 2, rel=1e-5)


def test_bad_switch_is_rejected():
    with pytest.raises(ValueError):
        plain_loss(probability="softmax")


def test_single_token_type_encoders_get_no_token_types():
    """RoBERTa-style encoders have one token type; the query's type-1 relation segment must not index past it."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    from lpbert_core.model.siamese import SiameseModel

    cfg = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, type_vocab_size=1)
    model = SiameseModel(RobertaModel(cfg), pooling="mean")
    ids = torch.tensor([[0, 5, 6, 2, 7, 2]])
    out = model.encode(ids, torch.ones_like(ids), token_type_ids=torch.tensor([[0, 0, 0, 0, 1, 1]]))
    assert out.shape == (1, 16) and torch.isfinite(out).all()


# ------------------------------------------------------------------ per_pair_normalized, measured shift

def test_distance_per_pair_normalized_is_per_pair_on_unit_vectors():
    """d_ij = ||u_i/|u_i| - v_j/|v_j|||, in the per_pair sigmoid form; blind to the vectors' norms."""
    torch.manual_seed(1)
    q = torch.randn(4, 8, requires_grad=True)
    c = torch.randn(4, 8)
    y = torch.eye(4)
    out = batch_loss(q, c, y, plain_loss(distance="per_pair_normalized"))
    qn, cn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(c, dim=-1)
    per_pair_on_unit = batch_loss(qn, cn, y, plain_loss(distance="per_pair"))
    assert out["distance"].item() == pytest.approx(per_pair_on_unit["distance"].item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(per_pair_on_unit["loss"].item(), rel=1e-5)
    # hand-computed for one pair: unit vectors at 90 degrees are sqrt(2) apart
    d = torch.tensor([[math.sqrt(2.0)]])
    got = pair_loss(torch.tensor([[0.0]]), torch.tensor([[99.0]]), torch.tensor([[0.0]]),
                    plain_loss(distance="per_pair_normalized"))["distance"].item()
    assert got == pytest.approx(1 - torch.sigmoid(d).item(), rel=1e-5)
    # scaling the vectors changes nothing (per_pair would change)
    out10 = batch_loss(q * 10, c * 0.1, y, plain_loss(distance="per_pair_normalized"))
    assert out10["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-5)
    assert batch_loss(q * 10, c, y, plain_loss(distance="per_pair"))["distance"].item() != pytest.approx(
        batch_loss(q, c, y, plain_loss(distance="per_pair"))["distance"].item(), rel=1e-3)
    out["distance"].backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_shift_initial_mean_is_accepted_and_must_be_measured_first():
    cfg = plain_loss(probability="sigmoid", shift="initial_mean", temperature=0.1)
    with pytest.raises(ValueError, match="not been measured"):
        focal_terms(torch.tensor([0.3]), torch.tensor([1.0]), cfg)
    cfg.shift = 0.25  # what finetune_loop does after measuring
    got = focal_terms(torch.tensor([0.35]), torch.tensor([1.0]), cfg).item()
    p = 1 / (1 + math.exp(-1.0))
    assert got == pytest.approx(-0.8 * (1 - p) ** 2 * math.log(p), rel=1e-5)
    with pytest.raises(ValueError, match="finetune.shift"):
        plain_loss(shift="median")
