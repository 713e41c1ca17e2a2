"""Every scoring path of every model agrees (after LibKGE's test_score_equality)."""

from __future__ import annotations

import pytest
import torch

from kgweave.language.features.coldstart import extend_model
from kgweave.models import MODELS, build_model, model_class, model_from_state

N, R, DIM = 23, 5, 8


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    m = model_class(request.param)(N, 2 * R, DIM)
    # non-trivial values everywhere (default inits can be tiny)
    with torch.no_grad():
        m.entity.weight.normal_()
        m.relation.weight.normal_()
    return m.double()


def _triples(n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.stack(
        (
            torch.randint(N, (n,), generator=g),
            torch.randint(2 * R, (n,), generator=g),
            torch.randint(N, (n,), generator=g),
        ),
        dim=1,
    )


def test_one_triple_equals_pick_from_all_tails(model) -> None:
    triples = _triples()
    single = model.score_hrt(triples)
    all_tails = model.score_t(triples[:, :2])
    assert all_tails.shape == (len(triples), N)
    picked = all_tails.gather(1, triples[:, 2:3]).squeeze(1)
    torch.testing.assert_close(single, picked)


def test_one_triple_equals_pick_from_all_relations(model) -> None:
    triples = _triples()
    all_relations = model.score_r(triples[:, [0, 2]])
    assert all_relations.shape == (len(triples), 2 * R)
    picked = all_relations.gather(1, triples[:, 1:2]).squeeze(1)
    torch.testing.assert_close(model.score_hrt(triples), picked)


def test_chunked_all_tails_equals_unchunked(model) -> None:
    hr = _triples()[:, :2]
    torch.testing.assert_close(model.score_t(hr, chunk_size=4), model.score_t(hr, chunk_size=1000))


def test_head_side_goes_through_reciprocal_relation(model) -> None:
    triples = _triples()
    triples[:, 1] %= R  # base relations only
    all_heads = model.score_h(triples[:, [1, 2]])
    assert all_heads.shape == (len(triples), N)
    reciprocal = torch.stack((triples[:, 2], triples[:, 1] + R, triples[:, 0]), dim=1)
    picked = all_heads.gather(1, triples[:, 0:1]).squeeze(1)
    torch.testing.assert_close(model.score_hrt(reciprocal), picked)


def test_candidates_equal_single_scores(model) -> None:
    triples = _triples(10)
    candidates = torch.randint(N, (10, 7), generator=torch.Generator().manual_seed(2))
    many = model.score_candidates(triples[:, :2], candidates)
    for j in range(7):
        one = model.score_hrt(torch.stack((triples[:, 0], triples[:, 1], candidates[:, j]), 1))
        torch.testing.assert_close(many[:, j], one)


def test_predict_path_is_no_grad_and_matches(model) -> None:
    hr = _triples()[:, :2]
    predicted = model.predict_t(hr)
    assert not predicted.requires_grad
    torch.testing.assert_close(predicted, model.score_t(hr).detach().float())


def test_rebuild_from_config(model) -> None:
    clone = build_model(model.config()).double()
    clone.load_state_dict(model.state_dict())
    hr = _triples()[:, :2]
    torch.testing.assert_close(clone.score_t(hr), model.score_t(hr))


def test_model_from_state_takes_the_state_as_its_parameters(model) -> None:
    """Built on the meta device: nothing initialised, the state's tensors become the
    parameters (trainable, in the model's dtype), and it scores as the original."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rebuilt = model_from_state(model.config(), state)
    assert rebuilt.entity.weight.data_ptr() != model.entity.weight.data_ptr()
    assert all(p.requires_grad and p.dtype == torch.float32 for p in rebuilt.parameters())
    assert not any(p.is_meta for p in rebuilt.parameters())
    hr = _triples()[:, :2]
    torch.testing.assert_close(rebuilt.double().score_t(hr), model.score_t(hr))
    with pytest.raises(RuntimeError):  # strict: a missing table is refused
        model_from_state(model.config(), {"entity.weight": state["entity.weight"]})


def test_an_extended_copy_shares_no_weights(model) -> None:
    """A copy with new entity rows (cold start) can be trained without touching the model it
    was made from (a served version, or the updater's cached base)."""
    model = model.float()
    rows = torch.randn(2, model.entity.weight.shape[1])
    extended = extend_model(model, rows)
    assert extended.entity.weight.shape[0] == N + 2
    torch.testing.assert_close(extended.entity.weight[N:], rows)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in extended.parameters():
            p.add_(1.0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_transe_l1_matches_interaction() -> None:
    m = model_class("transe")(N, 2 * R, DIM, p=1).double()
    triples = _triples()
    picked = m.score_t(triples[:, :2]).gather(1, triples[:, 2:3]).squeeze(1)
    torch.testing.assert_close(m.score_hrt(triples), picked)


def test_odd_relation_count_refused() -> None:
    with pytest.raises(ValueError, match="reciprocal"):
        model_class("distmult")(N, 3, DIM)


@pytest.mark.parametrize("small_graph", [0, 10_000])
@pytest.mark.parametrize("kind", ["n3", "l2"])
def test_dense_regularization_equals_per_triple(
    model, kind: str, small_graph: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kgweave.training import regularizers
    from kgweave.training.regularizers import Penalty, regularization

    monkeypatch.setattr(regularizers, "_SMALL_GRAPH", small_graph)  # both code paths

    triples = _triples()
    per_triple = regularization(model.factors(triples), kind, 0.1)
    dense = Penalty(kind, 0.1).weighted(model, triples)
    torch.testing.assert_close(per_triple, dense)
