"""Scoring every entity with a prepacked table gives the plain matmul's products."""

from __future__ import annotations

import pytest
import torch

from kgweave.models import model_class, products
from kgweave.models.products import EntityProducts, TailScorer

ONEDNN = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
# oneDNN packs bf16 only on CPUs with the instructions for it (AVX-512 BW/VL/DQ or newer)
ONEDNN_BF16 = ONEDNN and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _packs(dtype: torch.dtype) -> bool:
    return ONEDNN_BF16 if dtype == torch.bfloat16 else ONEDNN


def _table(n: int, d: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("n", "d"), [(1, 3), (7, 32), (300, 400), (1031, 17)])
def test_products_equal_matmul(dtype: torch.dtype, n: int, d: int) -> None:
    table = _table(n, d, dtype)
    products = EntityProducts(table)
    assert products.prepacked == _packs(dtype)
    for batch in (1, 5, 130):
        query = _table(batch, d, torch.float32, seed=batch)
        got = products(query)
        want = query.to(dtype) @ table.t()
        assert got.shape == (batch, n)
        assert got.dtype == dtype
        if dtype == torch.float32:
            # another summation order: rounding grows with the length of the dot products
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * d)
        else:  # bf16 outputs: one rounding of the fp32 accumulation apart
            torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


def test_products_without_prepacking_and_with_grad() -> None:
    table = _table(50, 8, torch.float32)
    plain = EntityProducts(table, prepack=False)
    assert not plain.prepacked
    query = _table(4, 8, torch.float32, seed=1).requires_grad_()
    torch.testing.assert_close(plain(query), query @ table.t())
    packed = EntityProducts(table)
    scores = packed(query)  # a query that needs gradients takes the plain product
    assert scores.requires_grad
    scores.sum().backward()
    assert query.grad is not None


@pytest.mark.parametrize(
    "failure",
    [
        AttributeError("no such op: a torch without oneDNN's linear ops"),
        NotImplementedError("no kernel for this backend"),
        RuntimeError("bf16 refused: a CPU without AVX-512"),
    ],
)
def test_a_table_onednn_cannot_pack_is_multiplied_plainly(
    failure: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each way prepacking fails where it is not available falls back to the plain product."""

    def refuse(table: torch.Tensor, batch_hint: int) -> torch.Tensor:
        raise failure

    monkeypatch.setattr(products, "_pack", refuse)
    table = _table(30, 8, torch.float32)
    plain = EntityProducts(table, keep_table=False)  # the table stays: nothing was packed
    assert not plain.prepacked and plain.table is not None
    query = _table(4, 8, torch.float32, seed=2)
    torch.testing.assert_close(plain(query), query @ table.t())


@pytest.mark.skipif(not ONEDNN, reason="torch without oneDNN")
def test_a_prepacked_table_that_disagrees_with_matmul_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    apply = products._apply
    monkeypatch.setattr(products, "_apply", lambda query, packed: apply(query, packed) + 1.0)
    table = _table(30, 8, torch.float32)
    checked = EntityProducts(table)
    assert not checked.prepacked
    assert "disagrees with matmul" in caplog.text
    query = _table(4, 8, torch.float32, seed=2)
    torch.testing.assert_close(checked(query), query @ table.t())


def test_a_converted_table_is_not_kept_once_packed() -> None:
    table = _table(40, 8, torch.bfloat16)
    products = EntityProducts(table, keep_table=False)
    assert (products.table is None) == ONEDNN_BF16  # only the prepacked copy stays
    query = _table(3, 8, torch.float32, seed=3)
    torch.testing.assert_close(
        products(query).float(), (query.bfloat16() @ table.t()).float(), rtol=1e-2, atol=1e-2
    )


@pytest.mark.skipif(not ONEDNN, reason="the prepacked layout is the copy")
def test_prepacked_products_are_a_snapshot() -> None:
    table = _table(20, 8, torch.float32)
    products = EntityProducts(table)
    query = _table(3, 8, torch.float32, seed=2)
    before = products(query).clone()
    with torch.no_grad():
        table.mul_(2.0)
    torch.testing.assert_close(products(query), before)


@pytest.mark.parametrize("name", ["complex", "distmult", "transe", "rotate"])
def test_tail_scorer_matches_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = model_class(name)(257, 12, 24)
    with torch.no_grad():
        model.entity.weight.normal_()
        model.relation.weight.normal_()
    model.train()  # the scorer answers as in eval mode whatever the model's mode
    hr = torch.stack((torch.randint(0, 257, (40,)), torch.randint(0, 12, (40,))), dim=1)
    want = model.predict_t(hr)
    exact = TailScorer(model)
    assert (exact.products is not None) == (name in ("complex", "distmult"))
    torch.testing.assert_close(exact(hr), want, rtol=1e-5, atol=1e-4)
    fast = TailScorer(model, torch.bfloat16)(hr)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), want, rtol=2e-2, atol=0.1)
    assert model.training
    assert not fast.requires_grad
