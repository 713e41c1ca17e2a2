"""The typed errors: each declares its category and CLI exit code once, as class keywords, and
every transport maps the category the same way."""

from __future__ import annotations

import grpc
import pytest

from kgweave import errors
from kgweave.api.status import from_status, to_grpc
from kgweave.errors import HTTP_STATUS, ErrorCode, KGWeaveError

TYPED = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, KGWeaveError) and cls is not KGWeaveError
]


def test_class_keywords_set_the_category_and_exit_code_and_are_inherited() -> None:
    class GoneError(KGWeaveError, code=ErrorCode.NOT_FOUND, exit_code=42):
        """A test error."""

    class StillGoneError(GoneError):
        """Declares nothing: both come from GoneError."""

    assert (GoneError.code, GoneError.exit_code) == (ErrorCode.NOT_FOUND, 42)
    assert (StillGoneError.code, StillGoneError.exit_code) == (ErrorCode.NOT_FOUND, 42)
    assert (KGWeaveError.code, KGWeaveError.exit_code) == (ErrorCode.INTERNAL, 1)
    assert str(StillGoneError("one line")) == "one line"


@pytest.mark.parametrize("cls", TYPED, ids=lambda cls: cls.__name__)
def test_every_typed_error_has_its_own_category_status_and_exit_code(
    cls: type[KGWeaveError],
) -> None:
    error = cls("message")
    assert cls.code is not ErrorCode.INTERNAL, "a typed error names its category"
    assert cls.exit_code not in (0, 1, 70), "0 is success, 1 a generic failure, 70 internal"
    assert to_grpc(error) == grpc.StatusCode[cls.code.value]
    assert cls.code in HTTP_STATUS
    back = from_status(to_grpc(error), "message")
    assert (back.code, back.message) == (cls.code, "message")


def test_the_twelve_typed_errors_are_all_seen() -> None:
    assert len(TYPED) == 12


def test_suggestions_on_a_large_graph_compare_a_bounded_neighbourhood() -> None:
    """An unknown name among 100k entities is compared with the SUGGEST_SCAN names nearest it
    in sorted order, not with all of them: a typo past the first characters is found."""
    from kgweave.errors import SUGGEST_SCAN, closest_names

    labels = [f"/m/{i:06x}" for i in range(100_000)] + ["alan_turing", "ada_lovelace"]
    assert len(labels) > SUGGEST_SCAN
    assert closest_names("alan_turnig", labels) == ["alan_turing"]
    near = closest_names("/m/00ab1z", labels)
    assert len(near) == 3 and all(n.startswith("/m/00a") for n in near), near
